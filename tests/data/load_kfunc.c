/* A syscall program calling kernel functions (kfuncs) for tests/test_load.py: the loader finds
 * their BTF ids in the running kernel's BTF (/sys/kernel/btf/vmlinux). */
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))

extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

struct args {
	__u64 a;
	__u64 out;
};

SEC("syscall")
int under_rcu(struct args *ctx)
{
	bpf_rcu_read_lock();
	ctx->out = ctx->a * 3;
	bpf_rcu_read_unlock();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
