/* Object-reader fixture (tests/test_objfile.py): relocations against *section* symbols —
 * static data (.bss, merged strings in .rodata.str1.1) and a static function called through
 * the `.text` symbol with the callee's slot in imm — which libbpf resolves differently from
 * relocations against named symbols. */
#define SEC(name) __attribute__((section(name), used))

static const char msg[] = "hello";
static int counter;

static __attribute__((noinline)) int first(int x)
{
	return msg[x & 3] + counter++;
}

static __attribute__((noinline)) int second(int x)
{
	return first(x) * 2;
}

SEC("socket")
int prog(void *ctx)
{
	return first(1) + second(2);
}

char LICENSE[] SEC("license") = "GPL";
