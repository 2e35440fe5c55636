# Valid: a comparison of two literals (lowering looked up an untyped constant).
from pybpf_uring import syscall, Struct, i32, u32


class S(Struct):
    x: u32


@syscall
def f(ctx: S) -> i32:
    if 1 < 2:
        return 7
    return 0
