# The checker walked every value of the range to find its least and greatest.
from pybpf_uring import syscall, Struct, i32, u32


class S(Struct):
    x: u32


@syscall
def f(ctx: S) -> i32:
    for i in range((1 << 63) - 1):
        ctx.x += 1
    return 0
