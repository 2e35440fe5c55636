# BTF gives member offsets in bits, in 32 bits: a 4 GiB array cannot be described.
from pybpf_uring import syscall, Struct, i32, u8, u32


class S(Struct):
    x: u32
    blob: u8[1 << 32]


@syscall
def f(ctx: S) -> i32:
    return 0
