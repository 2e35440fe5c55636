/* C twins of programs.py: the same semantics, written as a C programmer would. */
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef int i32;
#define SEC(n) __attribute__((section(n), used))
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;

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

struct point { i32 x; i32 y; u64 z; };
struct boxes { struct point lo; struct point hi; struct point pts[4]; };

SEC("syscall") int sum_squares(struct args *ctx)
{
	u64 total = 0;
	for (i64 i = 0; i < 100; i++)
		total += i * i;
	ctx->out = total;
	return 0;
}

SEC("syscall") int weighted(struct args *ctx)
{
	u32 data[16];
	u64 total = 0;
	__builtin_memcpy(data, ctx->data, sizeof(data));
	for (int i = 0; i < 16; i++)
		total += (u64)data[i] * (i + 1);
	ctx->out = total;
	return 0;
}

SEC("syscall") int array_max(struct args *ctx)
{
	u32 data[16];
	u32 best = 0;
	__builtin_memcpy(data, ctx->data, sizeof(data));
	for (int i = 0; i < 16; i++)
		if (data[i] > best)
			best = data[i];
	ctx->out = best;
	return 0;
}

SEC("syscall") int struct_copy(struct boxes *ctx)
{
	ctx->hi = ctx->lo;
	ctx->pts[3] = ctx->pts[0];
	return 0;
}

SEC("syscall") int map_update(struct args *ctx)
{
	u32 k = ctx->key;
	u64 v = ctx->a;
	bpf_map_update_elem(&seen, &k, &v, 0 /* BPF_ANY */);
	u32 next = ctx->key + 1;
	bpf_map_delete_elem(&seen, &next);
	return 0;
}

SEC("syscall") int nested_branches(struct args *ctx)
{
	i64 a = ctx->a, b = ctx->b;
	if (a > 0) {
		if (b > 0)
			ctx->out = 1;
		else if (b < -10)
			ctx->out = 2;
		else
			ctx->out = 3;
	} else if (a == 0) {
		ctx->out = b != 0 ? 4 : 5;
	} else {
		ctx->out = a + b;
	}
	return 0;
}

static i64 floormod(i64 a, i64 b)
{
	if (b == 0)
		return a;
	if (b == -1)
		return 0;
	i64 r = SREM(a, b);
	if (r != 0 && ((r ^ b) < 0))
		r += b;
	return r;
}

SEC("syscall") int div_const(struct args *ctx)
{
	i64 a = ctx->a;
	i64 q = SDIV(a, 7), r = SREM(a, 13);
	ctx->out = (q - (SREM(a, 7) < 0)) + (r < 0 ? r + 13 : r) + (i64)((u64)ctx->b / 10);
	return 0;
}

SEC("syscall") int floor_mod(struct args *ctx)
{
	ctx->out = floormod(ctx->a, ctx->b);
	return 0;
}

SEC("syscall") int floor_divmod(struct args *ctx)
{
	ctx->out = floordiv(ctx->a, ctx->b) * 1000 + floormod(ctx->a, ctx->b);
	return 0;
}

SEC("syscall") int divmod_store(struct args *ctx)
{
	i64 a = ctx->a, b = ctx->b;
	ctx->out = floordiv(a, b);
	ctx->b = floormod(a, b);
	return 0;
}

SEC("syscall") int udiv(struct args *ctx)
{
	u32 k = ctx->key, n = ctx->n;
	ctx->out = n ? k / n + k % n : k;
	return 0;
}

SEC("syscall") int bit_count(struct args *ctx)
{
	u64 x = ctx->a, n = 0;
	for (int i = 0; i < 64; i++)
		n += (x >> i) & 1;
	ctx->out = n;
	return 0;
}

char _license[] SEC("license") = "GPL";
