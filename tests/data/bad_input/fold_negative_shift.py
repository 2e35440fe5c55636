# Folding `1 + -1` computed every operator, `1 << -1` among them, and raised.
from pybpf_uring import syscall, Struct, i32, u32

N = 1 + -1


class S(Struct):
    x: u32


@syscall
def f(ctx: S) -> i32:
    return ctx.x << (N - 1)
