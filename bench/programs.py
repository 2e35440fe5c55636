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


class Point(Struct):
    x: i32
    y: i32
    z: u64


class Boxes(Struct):
    lo: Point
    hi: Point
    pts: Point[4]


@syscall
def sum_squares(ctx: Args) -> i32:
    total: u64 = 0
    for i in range(100):
        total += u64(i * i)
    ctx.out = total
    return 0


@syscall
def weighted(ctx: Args) -> i32:
    data = ctx.data
    total: u64 = 0
    for i in range(16):
        total += u64(data[i]) * u64(i + 1)
    ctx.out = total
    return 0


@syscall
def array_max(ctx: Args) -> i32:
    data = ctx.data
    best: u32 = 0
    for i in range(16):
        if data[i] > best:
            best = data[i]
    ctx.out = best
    return 0


@syscall
def struct_copy(ctx: Boxes) -> i32:
    ctx.hi = ctx.lo
    ctx.pts[3] = ctx.pts[0]
    return 0


@syscall
def map_update(ctx: Args) -> i32:
    seen[ctx.key] = u64(ctx.a)
    del seen[ctx.key + 1]
    return 0


@syscall
def nested_branches(ctx: Args) -> i32:
    a = ctx.a
    b = ctx.b
    if a > 0:
        if b > 0:
            ctx.out = 1
        elif b < -10:
            ctx.out = 2
        else:
            ctx.out = 3
    elif a == 0:
        if b != 0:
            ctx.out = 4
        else:
            ctx.out = 5
    else:
        ctx.out = a + b
    return 0


@syscall
def div_const(ctx: Args) -> i32:
    ctx.out = ctx.a // 7 + ctx.a % 13 + i64(u64(ctx.b) // 10)
    return 0


@syscall
def floor_mod(ctx: Args) -> i32:
    ctx.out = ctx.a % ctx.b
    return 0


@syscall
def floor_divmod(ctx: Args) -> i32:
    ctx.out = ctx.a // ctx.b * 1000 + ctx.a % ctx.b
    return 0


@syscall
def udiv(ctx: Args) -> i32:
    ctx.out = ctx.key // ctx.n + ctx.key % ctx.n
    return 0


@syscall
def bit_count(ctx: Args) -> i32:
    x = u64(ctx.a)
    n: u64 = 0
    for i in range(64):
        n += (x >> i) & 1
    ctx.out = n
    return 0


@syscall
def divmod_store(ctx: Args) -> i32:
    ctx.out = ctx.a // ctx.b
    ctx.b = ctx.a % ctx.b
    return 0
