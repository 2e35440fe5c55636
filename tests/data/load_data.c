/* Global data for tests/test_load.py: .rodata, .data and .bss become single-entry array maps
 * (as libbpf makes them) and the program reaches them through BPF_PSEUDO_MAP_VALUE. */
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

const volatile __u64 limit = 100;   /* .rodata: frozen after loading */
__u64 bonus = 5;                    /* .data */
__u64 total;                        /* .bss */
__u64 calls;                        /* .bss, at offset 8 */

struct args {
	__u64 value;
	__u64 out;
};

/* out = min(value, limit) + bonus; totals what it returned. */
SEC("syscall")
int accumulate(struct args *ctx)
{
	__u64 v = ctx->value;

	if (v > limit)
		v = limit;
	v += bonus;
	total += v;
	calls++;
	ctx->out = v;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
