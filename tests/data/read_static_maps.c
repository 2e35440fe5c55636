/* Object-reader fixture (tests/test_objfile.py): static maps and static variables, which clang
 * reaches through the *section* symbol with the offset in the lddw's imm. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

static struct {
	__uint(type, 2);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long);
} first_map SEC(".maps");

static struct {
	__uint(type, 2);
	__uint(max_entries, 2);
	__type(key, int);
	__type(value, long);
} second_map SEC(".maps");

static volatile int hits, misses;

SEC("socket")
int prog(void *ctx)
{
	int k = 0;
	long *v = bpf_map_lookup_elem(&second_map, &k);
	long *w = bpf_map_lookup_elem(&first_map, &k);
	if (!v || !w) {
		misses++;
		return 0;
	}
	hits++;
	return *v + *w;
}

char LICENSE[] SEC("license") = "GPL";
