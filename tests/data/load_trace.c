/* A tracepoint program for tests/test_load.py: the kernel loads it (no attach needed to verify)
 * but cannot test-run it. */
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} completions SEC(".maps");

SEC("tracepoint/io_uring/io_uring_complete")
int count_completions(void *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&completions, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
