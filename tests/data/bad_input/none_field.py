# A Struct field annotated with None: LLVM's BTF writer asserted on the void member.
from pybpf_uring import syscall, Struct, i32, u32


class Pair(Struct):
    a: u32
    b: None


@syscall
def f(ctx: Pair) -> i32:
    return ctx.a
