/* Syscall programs for tests/test_load.py: run with BPF_PROG_TEST_RUN on a ctx the test packs,
 * compared with a Python reference.  Self-contained (no libbpf headers on this machine). */
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;

struct pair {
	__u64 a;
	__u64 b;
};

struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, 1); /* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct pair);
} last SEC(".maps");

struct args {
	__u64 a;
	__u64 b;
	__u32 op;
	__u32 flags;
	__u64 out;
};

/* out = a OP b, written back into the ctx; counts ops per kind; remembers operands per op. */
SEC("syscall")
int calc(struct args *ctx)
{
	__u64 a = ctx->a, b = ctx->b, r;
	__u32 op = ctx->op;

	switch (op) {
	case 0: r = a + b; break;
	case 1: r = a - b; break;
	case 2: r = a * b; break;
	case 3: r = b ? a / b : 0; break;
	case 4: r = a ^ b; break;
	case 5: r = a << (b & 63); break;
	case 6: r = (__u64)((__s64)a >> (b & 63)); break;
	default: r = ~0ULL; break;
	}
	ctx->out = r;

	__u32 slot = op & 7;
	__u64 *count = bpf_map_lookup_elem(&counters, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	struct pair p = { a, b };
	bpf_map_update_elem(&last, &op, &p, 0);
	return (int)(r ^ (r >> 32));
}

/* Sum of the counters the host wrote, into ctx->out; returns how many were non-zero. */
SEC("syscall")
int sum_counters(struct args *ctx)
{
	__u64 total = 0;
	int nonzero = 0;
	for (int i = 0; i < 8; i++) {
		__u32 key = i; /* the loop counter stays in a register so the verifier can bound it */
		__u64 *v = bpf_map_lookup_elem(&counters, &key);
		if (v && *v) {
			total += *v;
			nonzero++;
		}
	}
	ctx->out = total;
	return nonzero;
}

char LICENSE[] SEC("license") = "GPL";
