/* Golden-disassembly fixture (tests/test_disasm.py), -mcpu=v4: a branch over more than 32767
 * instructions, which only `gotol` (JMP32 | JA, 32-bit offset in imm) can express. */
#define SEC(name) __attribute__((section(name), used))
#define X4(s) s s s s
#define X16(s) X4(X4(s))
#define X256(s) X16(X16(s))

SEC("syscall")
int far_jump(unsigned long long *ctx)
{
	volatile unsigned long long *p = ctx;
	if (*p == 0)
		return 1;
	/* 36864 stores of distinct constants: too far for a 16-bit branch offset */
	X16(X16(X16(X4(*p = __LINE__ + __COUNTER__;))) X4(X16(X4(*p = __LINE__ + __COUNTER__;))))
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
