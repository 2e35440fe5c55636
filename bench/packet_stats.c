/* C twin of samples/packet_stats.py, the small file bench/compile.py compiles cold. */
typedef unsigned int u32;
typedef unsigned long long u64;
#define SEC(n) __attribute__((section(n), used))
#define BUCKETS 8
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, u64 flags) = (void *)2;

struct { int (*type)[2]; int (*max_entries)[BUCKETS]; u32 *key; u64 *value; } sizes SEC(".maps");
struct { int (*type)[1]; int (*max_entries)[256]; u32 *key; u64 *value; } by_port SEC(".maps");

struct packet { u32 port; u32 length; u32 bucket; };

static __attribute__((noinline)) u32 log2(u32 x)
{
	u32 n = 0;
	for (int i = 0; i < BUCKETS - 1; i++) {
		if (x <= 1)
			break;
		x >>= 1;
		n++;
	}
	return n;
}

static void add(void *map, u32 key, u64 delta)
{
	u64 *v = bpf_map_lookup_elem(map, &key);
	if (v) {
		*v += delta;
	} else {
		bpf_map_update_elem(map, &key, &delta, 1 /* BPF_NOEXIST */);
	}
}

SEC("syscall") int stats(struct packet *ctx)
{
	u32 b = log2(ctx->length);
	add(&sizes, b, 1);
	add(&by_port, ctx->port, ctx->length);
	ctx->bucket = b;
	return 0;
}

char _license[] SEC("license") = "GPL";
