/* Programs the verifier must reject, for tests/test_load.py. */
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

struct args {
	__u64 a;
	__u32 idx;
	__u32 pad;
};

/* A syscall ctx cannot be read at a variable offset: the verifier says
 * "dereference of modified ctx ptr ... disallowed". */
SEC("syscall")
int variable_ctx(struct args *ctx)
{
	__u32 i = ctx->idx & 7;
	return ((__u8 *)ctx)[i];
}

/* Never terminates when ctx->a != 0: the verifier sees the same state again at the loop head
 * ("infinite loop detected"). */
SEC("syscall")
int spin(struct args *ctx)
{
	while (*(volatile __u64 *)&ctx->a)
		;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
