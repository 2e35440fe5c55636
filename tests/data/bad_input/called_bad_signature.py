# A subprogram whose signature is refused, called by a program: the call graph checks skipped it
# (found by the 10,000-mutant campaign: KeyError in check).
from pybpf_uring import syscall, Struct, i32, u32


class P(Struct):
    a: u32


def f(x: u32) -> 5:
    return x


@syscall
def g(ctx: P) -> i32:
    return f(ctx.a)
