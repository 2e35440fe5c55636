/* C twins of programs.py: the same semantics, written as a C programmer would. */
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
#define SEC(n) __attribute__((section(n), used))
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, u64 flags) = (void *)2;

struct { int (*type)[2]; int (*max_entries)[8]; u32 *key; u64 *value; } counts SEC(".maps");
struct { int (*type)[1]; int (*max_entries)[1024]; u32 *key; u64 *value; } seen SEC(".maps");

struct args { i64 a; i64 b; u32 key; u32 n; u32 data[16]; i64 out; };

SEC("syscall") int arith(struct args *ctx)
{
	i64 a = ctx->a, b = ctx->b;
	ctx->out = (a * 3 + b) ^ (a >> 2) | (b << 5) & 0xFFFF;
	return 0;
}

SEC("syscall") int count(struct args *ctx)
{
	u32 k = ctx->key % 8;
	u64 *v = bpf_map_lookup_elem(&counts, &k);
	if (v) {
		*v += 1;
	} else {
		u64 one = 1;
		bpf_map_update_elem(&counts, &k, &one, 1);
	}
	return 0;
}

SEC("syscall") int hash_add(struct args *ctx)
{
	u32 k = ctx->key;
	u64 *v = bpf_map_lookup_elem(&seen, &k);
	if (v) {
		*v += (u64)ctx->b;
	} else {
		u64 init = (u64)ctx->b;
		bpf_map_update_elem(&seen, &k, &init, 1);
	}
	return 0;
}

SEC("syscall") int loop_sum(struct args *ctx)
{
	u32 data[16];
	i64 total = 0;
	__builtin_memcpy(data, ctx->data, sizeof(data));
	for (int i = 0; i < 16; i++) {
		if (data[i] > ctx->n)
			break;
		total += data[i];
	}
	ctx->out = total;
	return 0;
}

#if __BPF_CPU_VERSION__ >= 4
#define SDIV(a, b) ((a) / (b))
#define SREM(a, b) ((a) % (b))
#else /* no signed division before v4: divide the magnitudes */
static i64 SDIV(i64 a, i64 b)
{
	u64 q = (u64)(a < 0 ? -a : a) / (u64)(b < 0 ? -b : b);
	return (a < 0) != (b < 0) ? -(i64)q : (i64)q;
}
static i64 SREM(i64 a, i64 b)
{
	u64 r = (u64)(a < 0 ? -a : a) % (u64)(b < 0 ? -b : b);
	return a < 0 ? -(i64)r : (i64)r;
}
#endif

static i64 floordiv(i64 a, i64 b)
{
	if (b == 0)
		return 0;
	if (b == -1)
		return -(u64)a;
	i64 q = SDIV(a, b);
	if (SREM(a, b) != 0 && ((a ^ b) < 0))
		q--;
	return q;
}

static i64 floormod10(i64 a)
{
	i64 r = SREM(a, 10);
	return r < 0 ? r + 10 : r;
}

SEC("syscall") int floor_div(struct args *ctx)
{
	ctx->out = floordiv(ctx->a, ctx->b) + floormod10(ctx->a);
	return 0;
}

static __attribute__((noinline)) i64 clamp(i64 x, i64 lo, i64 hi)
{
	if (x < lo)
		return lo;
	if (x > hi)
		return hi;
	return x;
}

SEC("syscall") int subprog(struct args *ctx)
{
	ctx->out = clamp(ctx->a, -100, 100) + clamp(ctx->b, 0, 10);
	return 0;
}

char _license[] SEC("license") = "GPL";
