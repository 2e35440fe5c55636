/* Golden-disassembly fixture (tests/test_disasm.py), compiled at -mcpu=v1..v4: what clang emits
 * for plain C over every instruction family.  v4-only forms (signed division, sign-extending
 * loads and moves, bswap) are behind __BPF_CPU_VERSION__, since LLVM refuses signed division
 * below v4. */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;

struct rec {
	__u8 b;
	__s8 sb;
	__u16 h;
	__s16 sh;
	__u32 w;
	__s32 sw;
	__u64 d;
	__s64 sd;
};

struct {
	__uint(type, 2);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct rec);
} recs SEC(".maps");

__attribute__((noinline)) __u64 mix(__u64 a, __u64 b)
{
	return (a << 7) ^ (b >> 3) ^ ((__s64)a >> 11) ^ (a * 0x9e3779b97f4a7c15ULL);
}

SEC("syscall")
int alu(struct rec *r)
{
	__u64 a = r->d, b = r->sd | 1;
	__u32 x = r->w, y = r->sw | 1;
	a += b; a -= 3; a *= b; a /= b; a %= 7; a |= 0x100; a &= ~b; a ^= 0x55;
	a <<= (b & 63); a >>= 2; a = (__u64)((__s64)a >> (x & 31)); a = -a;
	x += y; x -= 3; x *= y; x /= y; x %= 7; x |= 0x100; x &= ~y; x ^= 0x55;
	x <<= (y & 31); x >>= 2; x = (__u32)((__s32)x >> 3); x = -x;
	r->d = a + 0x123456789abcdefULL;
	r->w = x;
	return (int)(a ^ x);
}

SEC("syscall")
int memory(struct rec *r)
{
	struct rec local = *r;
	local.b += 1; local.h += 2; local.w += 3; local.d += 4;
	r->b = 7; r->h = 0x1234; r->w = 0xfffffff0; r->d = 1;
	r->sd = local.sb + local.sh + local.sw;
	return local.b + local.h + local.w + (int)local.d;
}

SEC("syscall")
int branches(struct rec *r)
{
	__u64 a = r->d;
	__s64 s = r->sd;
	__u32 w = r->w;
	__s32 sw = r->sw;
	int n = 0;
	if (a == 3) n += 1;
	if (a != r->sd) n += 2;
	if (a > 10) n += 3;
	if (a >= r->d + 5) n += 4;
	if (a < 100) n += 5;
	if (s > -3) n += 6;
	if (s >= (__s64)r->d) n += 7;
	if (s < 9) n += 8;
	if (s <= -1000) n += 9;
	if (a & 0x10) n += 10;
	if (w == 7) n += 11;
	if (w < 99) n += 12;
	if (sw > -5) n += 13;
	if (sw <= 40) n += 14;
	if (w & 4) n += 15;
	for (int i = 0; i < 10 && i < (int)w; i++)
		n += i * sw;
	return n;
}

SEC("syscall")
int calls(struct rec *r)
{
	__u32 k = r->w & 3;
	struct rec *v = bpf_map_lookup_elem(&recs, &k);
	if (!v)
		return -1;
	v->d = mix(r->d, bpf_ktime_get_ns());
	return 0;
}

SEC("syscall")
int atomics(struct rec *r)
{
	__u64 *d = &r->d;
	__u32 *w = &r->w;
	__sync_fetch_and_add(d, 1);
	__sync_fetch_and_add(w, 2);
#if __BPF_CPU_VERSION__ >= 3
	__u64 old = __sync_fetch_and_add(d, 5);
	old += __sync_fetch_and_or(d, 8);
	old += __sync_fetch_and_and(d, 0xff);
	old += __sync_fetch_and_xor(w, 3);
	__sync_fetch_and_or(d, 16);
	__sync_fetch_and_and(w, 7);
	__sync_fetch_and_xor(d, 9);
	old += __sync_lock_test_and_set(d, 42);
	old += __sync_val_compare_and_swap(d, 42, 43);
	old += __sync_val_compare_and_swap(w, 1, 2);
	old += __atomic_exchange_n(w, 5, __ATOMIC_SEQ_CST);
	return (int)old;
#else
	return 0;
#endif
}

SEC("syscall")
int swaps(struct rec *r)
{
	r->d = __builtin_bswap64(r->d);
	r->w = __builtin_bswap32(r->w);
	r->h = __builtin_bswap16(r->h);
	return 0;
}

#if __BPF_CPU_VERSION__ >= 4
SEC("syscall")
int signed_ops(struct rec *r)
{
	__s64 a = r->sd, b = r->sd >> 3 | 1;
	__s32 x = r->sw, y = r->sw >> 3 | 1;
	a = a / b + a % b + a / 7 + a % -5;
	x = x / y + x % y + x / 3 + x % -9;
	__s64 e = (__s8)r->d + (__s16)r->d + (__s32)r->d;  /* movsx */
	__s32 f = (__s8)r->w + (__s16)r->w;                 /* movsx in 32 bits */
	return (int)(a + x + e + f + r->sb + r->sh + r->sw);  /* sign-extending loads */
}
#endif

char LICENSE[] SEC("license") = "GPL";
