/* Object-reader fixture (tests/test_objfile.py): a program the verifier rejects in a
 * subprogram (a read through a pointer that may be NULL), so the failing instruction of the
 * verifier log maps back, through line_info, to the C line that caused it. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
	__uint(type, 1); /* hash: a lookup may miss */
	__uint(max_entries, 4);
	__type(key, int);
	__type(value, long);
} values SEC(".maps");

static __attribute__((noinline)) long read_value(int key)
{
	long *v = bpf_map_lookup_elem(&values, &key);
	return *v + 1; /* no NULL check */
}

SEC("syscall")
int reject_me(void *ctx)
{
	return read_value(0);
}

char LICENSE[] SEC("license") = "GPL";
