/* Object-reader fixture (tests/test_objfile.py): every program section kind, BTF-defined maps
 * of several shapes, global data, BPF-to-BPF calls (global, static, nested), a callback
 * address and a kfunc.  Self-contained: no libbpf headers on this machine. */
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __ksym __attribute__((section(".ksyms")))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_loop)(__u32 nr, void *fn, void *ctx, __u64 flags) = (void *)181;
extern void bpf_rcu_read_lock(void) __ksym;

struct point {
	int x;
	int y;
	__u8 tag[3];
};

struct {
	__uint(type, 1); /* hash */
	__uint(max_entries, 128);
	__type(key, __u64);
	__type(value, struct point);
	__uint(map_flags, 1); /* BPF_F_NO_PREALLOC */
} points SEC(".maps");

struct {
	__uint(type, 2); /* array */
	__uint(key_size, 4);
	__uint(value_size, 24);
	__uint(max_entries, 3);
} sized SEC(".maps");

struct {
	__uint(type, 27); /* ringbuf */
	__uint(max_entries, 4096);
} events SEC(".maps");

__u64 counter = 7;
const volatile __u32 limit = 42;
__u32 scratch[4];

__attribute__((noinline)) int leaf(int v)
{
	return v * 3 + (int)limit;
}

static __attribute__((noinline)) int helper_static(int v)
{
	return leaf(v) + 1;
}

__attribute__((noinline)) int middle(int v)
{
	return helper_static(v) ^ 5;
}

static int step(__u32 i, void *ctx)
{
	*(__u64 *)ctx += i;
	return 0;
}

SEC("syscall")
int sys_prog(void *ctx)
{
	__u64 k = 1;
	struct point *p = bpf_map_lookup_elem(&points, &k);
	counter++;
	scratch[1] = 3;
	return middle(p ? p->x : 0);
}

SEC("socket")
int sock_prog(void *skb)
{
	return leaf(2);
}

SEC("tracepoint/io_uring/io_uring_complete")
int tp_prog(void *ctx)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&sized, &k) != 0;
}

SEC("tp/syscalls/sys_enter_read")
int tp_short(void *ctx)
{
	return 0;
}

SEC("iouring/plain")
int ring_prog(void *ctx)
{
	__u64 acc = 0;
	bpf_loop(4, step, &acc, 0);
	return acc;
}

SEC("iouring.s/sleepy")
int ring_sleepy(void *ctx)
{
	return middle(1) + leaf(1);
}

SEC("struct_ops/loop_step")
int ops_prog(void *ctx)
{
	bpf_rcu_read_lock();
	return 1;
}

SEC("struct_ops.s/loop_step_s")
int ops_sleepy(void *ctx)
{
	return 2;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
