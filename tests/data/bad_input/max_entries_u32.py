# max_entries is a u32 in the kernel: 1 << 32 was written as 0.
from pybpf_uring import syscall, Struct, ArrayMap, i32, u32, u64

hits = ArrayMap(u64, 1 << 32)


class S(Struct):
    x: u32


@syscall
def f(ctx: S) -> i32:
    return 0
