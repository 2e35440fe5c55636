/* Object-reader fixture (tests/test_objfile.py): a recursive .text subprogram (the verifier
 * refuses recursion, but linking must still terminate and keep one copy of it). */
#define SEC(name) __attribute__((section(name), used))

__attribute__((noinline)) int fib(int n)
{
	return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

SEC("socket")
int prog(void *ctx)
{
	return fib(5);
}

char LICENSE[] SEC("license") = "GPL";
