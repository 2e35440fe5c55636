"""The benchmark programs: each has a C twin in programs.c with the same semantics."""
from pybpf_uring import syscall, Struct, ArrayMap, HashMap, i32, i64, u32, u64

counts = ArrayMap(u64, 8)
seen = HashMap(u32, u64, 1024)


class Args(Struct):
    a: i64
    b: i64
    key: u32
    n: u32
    data: u32[16]
    out: i64


@syscall
def arith(ctx: Args) -> i32:
    a = ctx.a
    b = ctx.b
    ctx.out = (a * 3 + b) ^ (a >> 2) | (b << 5) & 0xFFFF
    return 0


@syscall
def count(ctx: Args) -> i32:
    counts[ctx.key % 8] += 1
    return 0


@syscall
def hash_add(ctx: Args) -> i32:
    seen[ctx.key] += u64(ctx.b)
    return 0


@syscall
def loop_sum(ctx: Args) -> i32:
    data = ctx.data
    total = 0
    for i in range(16):
        if data[i] > ctx.n:
            break
        total += data[i]
    ctx.out = total
    return 0


@syscall
def floor_div(ctx: Args) -> i32:
    ctx.out = ctx.a // ctx.b + ctx.a % 10
    return 0


def clamp(x: i64, lo: i64, hi: i64) -> i64:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


@syscall
def subprog(ctx: Args) -> i32:
    ctx.out = clamp(ctx.a, -100, 100) + clamp(ctx.b, 0, 10)
    return 0
