"""Programs compiled by pybpf_uring, loaded into the running kernel and run with test_run on many
inputs; every result is compared with a Python reference of the DSL's semantics."""
from __future__ import annotations

import itertools
import random

import pytest

from kernel_harness import floordiv, floormod, loaded, wrap

CPUS = ["v1", "v2", "v3", "v4"]
WIDTHS = [(bits, signed) for bits in (8, 16, 32, 64) for signed in (False, True)]


def tname(bits: int, signed: bool) -> str:
    return f"{'i' if signed else 'u'}{bits}"


def edge_values(bits: int, signed: bool, n_random: int = 6) -> list[int]:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    rnd = random.Random(bits * 2 + signed)
    vals = {0, 1, 2, 3, 7, hi, hi - 1, lo, lo + 1} | ({-1, -2, -3, -7} if signed else set())
    vals |= {rnd.randint(lo, hi) for _ in range(n_random)}
    return sorted(v for v in vals if lo <= v <= hi)


ARITH = """
from pybpf_uring import syscall, Struct, i32, {T}

class Args(Struct):
    a: {T}
    b: {T}
    r: {T}[10]

@syscall
def ops(ctx: Args) -> i32:
    a = ctx.a
    b = ctx.b
    r = ctx.r
    r[0] = a + b
    r[1] = a - b
    r[2] = a * b
    r[3] = a // b
    r[4] = a % b
    r[5] = a & b
    r[6] = a | b
    r[7] = a ^ b
    r[8] = ~a
    r[9] = -a
    ctx.r = r
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("bits,signed", WIDTHS, ids=[tname(*w) for w in WIDTHS])
def test_arithmetic_wraps_at_every_width(bits, signed, cpu):
    with loaded(ARITH.format(T=tname(bits, signed)), cpu) as (live, ns):
        prog = live.programs["ops"]
        for a, b in itertools.product(edge_values(bits, signed), repeat=2):
            out = prog.test_run(ctx=ns["Args"](a=a, b=b)).ctx
            want = [a + b, a - b, a * b, floordiv(a, b), floormod(a, b), a & b, a | b, a ^ b, ~a, -a]
            assert list(out.r) == [wrap(v, bits, signed) for v in want], (a, b)


SHIFTS = """
from pybpf_uring import syscall, Struct, i32, u8, {T}

class Args(Struct):
    a: {T}
    n: u8
    r: {T}[4]

@syscall
def shifts(ctx: Args) -> i32:
    ctx.r[0] = ctx.a << ctx.n
    ctx.r[1] = ctx.a >> ctx.n
    ctx.r[2] = ctx.a << 3
    ctx.r[3] = ctx.a >> 3
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", ["v1", "v4"])
@pytest.mark.parametrize("bits,signed", WIDTHS, ids=[tname(*w) for w in WIDTHS])
def test_shifts_mask_the_count_and_keep_the_sign(bits, signed, cpu):
    with loaded(SHIFTS.format(T=tname(bits, signed)), cpu) as (live, ns):
        prog = live.programs["shifts"]
        for a in edge_values(bits, signed):
            for n in (0, 1, 3, bits - 1, bits, bits + 5, 255):
                out = prog.test_run(ctx=ns["Args"](a=a, n=n)).ctx
                count = n & (bits - 1)
                want = [a << count, a >> count, a << 3, a >> 3]
                assert list(out.r) == [wrap(v, bits, signed) for v in want], (a, n)


MIXED = """
from pybpf_uring import syscall, Struct, i32, u8, u32, u64, i8, i64

class Args(Struct):
    s: i32
    u: u32
    b: i8
    big: u64
    r: i64[8]

@syscall
def mixed(ctx: Args) -> i32:
    ctx.r[0] = ctx.s + ctx.u          # i32 + u32 -> u32 (C: unsigned wins at equal width)
    ctx.r[1] = ctx.b + ctx.s          # i8 + i32 -> i32
    ctx.r[2] = ctx.s < ctx.u          # compared as u32
    ctx.r[3] = ctx.b * 3              # a literal takes the type of the other operand: i8
    ctx.r[4] = i64(ctx.b) * 3
    ctx.r[5] = u8(ctx.s)
    ctx.r[6] = i8(ctx.u)
    ctx.r[7] = ctx.big > ctx.s        # i32 converted to u64
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_signed_unsigned_mixing_follows_c(cpu):
    rnd = random.Random(7)
    with loaded(MIXED, cpu) as (live, ns):
        prog = live.programs["mixed"]
        cases = [(-1, 1, -1, 5), (5, 7, 100, 2**63), (-2**31, 2**32 - 1, -128, 0)]
        cases += [(rnd.randint(-2**31, 2**31 - 1), rnd.randint(0, 2**32 - 1), rnd.randint(-128, 127),
                   rnd.randint(0, 2**64 - 1)) for _ in range(40)]
        for s, u, b, big in cases:
            out = prog.test_run(ctx=ns["Args"](s=s, u=u, b=b, big=big)).ctx
            want = [wrap(s + u, 32, False), wrap(b + s, 32, True), int(wrap(s, 32, False) < u),
                    wrap(b * 3, 8, True), b * 3, wrap(s, 8, False), wrap(u, 8, True),
                    int(big > wrap(s, 64, False))]
            assert list(out.r) == want, (s, u, b, big)


DIVISION = """
from pybpf_uring import syscall, Struct, i32, i64

class Args(Struct):
    a: i64
    b: i64
    r: i64[6]

@syscall
def div(ctx: Args) -> i32:
    ctx.r[0] = ctx.a // ctx.b
    ctx.r[1] = ctx.a % ctx.b
    ctx.r[2] = ctx.a // 7
    ctx.r[3] = ctx.a % 7
    ctx.r[4] = ctx.a // -3
    ctx.r[5] = ctx.a % -1
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_signed_division_floors_like_python_on_every_cpu(cpu):
    with loaded(DIVISION, cpu) as (live, ns):
        prog = live.programs["div"]
        vals = edge_values(64, True, 20) + [-7, 7, -14, 14, -9, 9]
        for a, b in itertools.product(vals, [0, 1, -1, 2, -2, 3, -3, 7, -7, 2**63 - 1, -2**63]):
            out = prog.test_run(ctx=ns["Args"](a=a, b=b)).ctx
            want = [floordiv(a, b), floormod(a, b), a // 7, a % 7, a // -3, a % -1]
            assert list(out.r) == [wrap(v, 64, True) for v in want], (a, b)


LOOPS = """
from pybpf_uring import syscall, Struct, i32, u32, i64

N = 16

class Args(Struct):
    data: u32[N]
    stop: u32
    skip: u32
    total: i64
    count: i64
    steps: i64

@syscall
def loops(ctx: Args) -> i32:
    data = ctx.data
    total = 0
    count = 0
    for i in range(N):
        if data[i] == ctx.stop:
            break
        if data[i] % ctx.skip == 0:
            continue
        total += data[i]
        count += 1
    ctx.total = total
    ctx.count = count
    j = 0
    steps = 0
    while j < 100:
        steps += j
        j += 3
    for k in range(10, 0, -2):
        steps += k
    ctx.steps = steps
    return count
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_loops_with_break_and_continue(cpu):
    rnd = random.Random(3)
    with loaded(LOOPS, cpu) as (live, ns):
        prog = live.programs["loops"]
        for _ in range(60):
            data = [rnd.randint(0, 20) for _ in range(16)]
            stop, skip = rnd.randint(0, 25), rnd.randint(1, 5)
            total = count = 0
            for d in data:
                if d == stop:
                    break
                if d % skip == 0:
                    continue
                total, count = total + d, count + 1
            res = prog.test_run(ctx=ns["Args"](data=(ns["u32"].ctype * 16)(*data), stop=stop, skip=skip))
            assert (res.ctx.total, res.ctx.count, res.retval) == (total, count, count)
            assert res.ctx.steps == sum(range(0, 100, 3)) + sum(range(10, 0, -2))


STRUCTS = """
from pybpf_uring import syscall, Struct, i32, u8, u16, u32, u64

class Point(Struct):
    x: i32
    y: i32

class Shape(Struct):
    tag: u8
    corners: Point[4]
    weight: u16
    scale: u64

class Args(Struct):
    shape: Shape
    i: u32
    out: Shape
    area: i32
    picked: i32

def area(s: Shape) -> i32:
    w = s.corners[1].x - s.corners[0].x
    h = s.corners[2].y - s.corners[0].y
    return w * h

@syscall
def shapes(ctx: Args) -> i32:
    s: Shape = ctx.shape            # a copy on the stack
    s.tag += 1
    s.corners[3] = s.corners[0]     # struct value copy inside an array
    s.scale = s.scale * 2 + s.weight
    ctx.out = s                     # and back into the ctx
    ctx.area = area(s)
    i = ctx.i
    ctx.picked = s.corners[i].y     # a variable index on a stack copy; outside 0..3 it reads 0
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_nested_structs_arrays_and_value_copies(cpu):
    with loaded(STRUCTS, cpu) as (live, ns):
        Args, Shape, Point = ns["Args"], ns["Shape"], ns["Point"]
        prog = live.programs["shapes"]
        for i in range(6):
            pts = [Point(x=10 * k - 5, y=-3 * k + i) for k in range(4)]
            shape = Shape(tag=250 + i, corners=(Point * 4)(*pts), weight=1000 + i, scale=2**62 + i)
            out = prog.test_run(ctx=Args(shape=shape, i=i)).ctx
            assert out.out.tag == (251 + i) % 256
            assert [(p.x, p.y) for p in out.out.corners] == [(p.x, p.y) for p in pts[:3]] + [(pts[0].x, pts[0].y)]
            assert out.out.scale == wrap((2**62 + i) * 2 + 1000 + i, 64, False)
            assert out.area == (pts[1].x - pts[0].x) * (pts[2].y - pts[0].y)
            assert out.picked == (out.out.corners[i].y if i < 4 else 0)
            assert out.shape.tag == 250 + i  # the ctx's own copy is untouched


MAPS = """
from pybpf_uring import syscall, Struct, ArrayMap, HashMap, i32, u32, u64

counts = ArrayMap(u64, 8)
seen = HashMap(u32, u64, 64)

class Stat(Struct):
    hits: u64
    last: u32

stats = HashMap(u32, Stat, 16)

class Args(Struct):
    key: u32
    value: u64
    got: u64
    missing: u64
    had: u32

@syscall
def maps(ctx: Args) -> i32:
    counts[ctx.key % 8] += 1
    seen[ctx.key] += ctx.value
    ctx.got = seen[ctx.key]
    ctx.missing = seen[ctx.key + 1000]
    s = stats.lookup(ctx.key % 4)
    if s is None:
        stats[ctx.key % 4] = Stat(hits=1, last=ctx.key)
        ctx.had = 0
    else:
        s.hits += 1
        s.last = ctx.key
        ctx.had = 1
    if ctx.value == 0:
        del seen[ctx.key]
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_maps_from_programs_and_from_the_host(cpu):
    rnd = random.Random(11)
    with loaded(MAPS, cpu) as (live, ns):
        prog = live.programs["maps"]
        counts, seen, stats = {}, {}, {}
        live.maps["seen"][500] = 40  # the host writes first; the program adds to it
        seen[500] = 40
        for step in range(80):
            key = rnd.choice([500, rnd.randint(0, 20)])
            value = rnd.choice([0, rnd.randint(1, 1000)])
            out = prog.test_run(ctx=ns["Args"](key=key, value=value)).ctx
            counts[key % 8] = counts.get(key % 8, 0) + 1
            seen[key] = seen.get(key, 0) + value
            assert out.got == seen[key] and out.missing == 0
            assert out.had == int(key % 4 in stats)
            stats[key % 4] = (stats.get(key % 4, (0,))[0] + 1, key)
            if value == 0:
                del seen[key]
        assert {k: live.maps["counts"][k] for k in range(8)} == {k: counts.get(k, 0) for k in range(8)}
        assert dict(live.maps["seen"].items()) == seen
        host_stats = {k: (v.hits, v.last) for k, v in
                      ((k, ns["Stat"].from_buffer_copy(bytes(v)) if isinstance(v, (bytes, bytearray)) else v)
                       for k, v in live.maps["stats"].items())}
        assert host_stats == stats


SUBPROGRAMS = """
from pybpf_uring import syscall, Struct, i32, i64, u64

class Acc(Struct):
    total: i64
    calls: u64

class Args(Struct):
    a: i64
    b: i64
    acc: Acc
    r: i64

def clamp(x: i64, lo: i64, hi: i64) -> i64:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x

def add_to(acc: Acc, v: i64) -> i64:
    acc.total += v
    acc.calls += 1
    return acc.total

def combine(a: i64, b: i64) -> i64:
    return clamp(a * b, -1000, 1000) + clamp(a - b, 0, 50)

@syscall
def subprogs(ctx: Args) -> i32:
    acc: Acc = ctx.acc
    add_to(acc, ctx.a)
    add_to(acc, ctx.b)
    ctx.r = combine(ctx.a, ctx.b) + add_to(acc, 1)
    ctx.acc = acc
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_subprograms_are_bpf_to_bpf_calls(cpu):
    clamp = lambda x, lo, hi: max(lo, min(hi, x))  # noqa: E731
    with loaded(SUBPROGRAMS, cpu) as (live, ns):
        prog = live.programs["subprogs"]
        for a, b in itertools.product([-100, -3, 0, 2, 45, 999], [-7, 0, 1, 30]):
            acc = ns["Acc"](total=5, calls=1)
            out = prog.test_run(ctx=ns["Args"](a=a, b=b, acc=acc)).ctx
            total = 5 + a + b + 1
            assert (out.acc.total, out.acc.calls) == (total, 4)
            assert out.r == clamp(a * b, -1000, 1000) + clamp(a - b, 0, 50) + total
    assert "call" in live_disasm(SUBPROGRAMS, cpu)


def live_disasm(src: str, cpu: str) -> str:
    from pybpf_uring import compile_source
    return compile_source(src, "<bpf module>", cpu).disasm()


LOGIC = """
from pybpf_uring import syscall, Struct, i32, u32

class Args(Struct):
    a: i32
    b: i32
    c: i32
    r: u32[6]

@syscall
def logic(ctx: Args) -> i32:
    a = ctx.a
    b = ctx.b
    c = ctx.c
    ctx.r[0] = a < b < c
    ctx.r[1] = a == b or b == c
    ctx.r[2] = a != 0 and b // a > 1
    ctx.r[3] = not (a > b)
    if a > 0 and (b > 0 or c > 0):
        ctx.r[4] = 1
    elif a == 0:
        ctx.r[4] = 2
    else:
        ctx.r[4] = 3
    ctx.r[5] = a - b
    return a > b
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", CPUS)
def test_comparisons_and_short_circuit_logic(cpu):
    with loaded(LOGIC, cpu) as (live, ns):
        prog = live.programs["logic"]
        vals = [-5, -1, 0, 1, 2, 7]
        for a, b, c in itertools.product(vals, repeat=3):
            res = prog.test_run(ctx=ns["Args"](a=a, b=b, c=c))
            r4 = 1 if a > 0 and (b > 0 or c > 0) else 2 if a == 0 else 3
            want = [a < b < c, a == b or b == c, a != 0 and floordiv(b, a) > 1, not a > b, r4, wrap(a - b, 32, False)]
            assert list(res.ctx.r) == [int(w) for w in want], (a, b, c)
            assert res.retval == int(a > b)


SOCKET = """
from pybpf_uring import socket_filter, SkBuff, Struct, i32, u8, u16, u32, skb_load_bytes

class Header(Struct):
    version_ihl: u8
    tos: u8
    length: u16

@socket_filter
def keep_big(ctx: SkBuff) -> i32:
    h = Header()
    if skb_load_bytes(ctx, 0, h) != 0:
        return 0
    if h.version_ihl >> 4 != 4:
        return 0
    if ctx.len > 100:
        return ctx.len
    return 0
"""


@pytest.mark.kernel
def test_socket_filter_reads_packet_bytes_and_skb_fields():
    with loaded(SOCKET) as (live, ns):
        prog = live.programs["keep_big"]
        eth = bytes(12) + b"\x08\x00"
        for version, size in [(4, 40), (4, 200), (6, 200), (4, 101), (4, 100)]:
            payload = bytes([version << 4 | 5, 0]) + size.to_bytes(2, "big") + bytes(size - 4)
            res = prog.test_run(data=eth + payload)
            assert res.retval == (size if version == 4 and size > 100 else 0), (version, size)


PRINT = """
from pybpf_uring import syscall, Struct, i32, u32, i64

class Args(Struct):
    token: u32
    value: i64

@syscall
def say(ctx: Args) -> i32:
    print("pybpf-uring token", ctx.token, "value", ctx.value)
    return 0
"""


@pytest.mark.kernel
def test_print_reaches_the_kernel_trace_buffer():
    import os
    import select
    trace = "/sys/kernel/tracing/trace_pipe"
    if not os.path.exists(trace):
        os.system("mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null")
    fd = os.open(trace, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with loaded(PRINT) as (live, ns):
            token = random.Random().randint(1, 2**31)
            live.programs["say"].test_run(ctx=ns["Args"](token=token, value=-42))
            want = f"pybpf-uring token {token} value -42"
            text = ""
            for _ in range(50):
                if select.select([fd], [], [], 0.1)[0]:
                    text += os.read(fd, 65536).decode(errors="replace")
                if want in text:
                    break
            assert want in text
    finally:
        os.close(fd)


INDEXES = """
from pybpf_uring import syscall, Struct, i32, u64

class Inner(Struct):
    v: u64[40]

class Args(Struct):
    a: u64
    b: u64
    c: u64
    got: u64
    outside: u64

@syscall
def indexes(ctx: Args) -> i32:
    inner = Inner()
    inner.v[ctx.a % 40] = ctx.b        # LLVM proves this in range; the verifier must see it too
    inner.v[ctx.c] += 7                # an index outside 0..39 writes nothing
    ctx.got = inner.v[ctx.a % 40]
    ctx.outside = inner.v[ctx.c]       # and reads 0
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", ["v1", "v3", "v4"])
def test_variable_indexes_are_bounded_for_the_verifier(cpu):
    with loaded(INDEXES, cpu) as (live, ns):
        prog = live.programs["indexes"]
        for a, c in [(0, 0), (5, 5), (45, 5), (39, 40), (3, 2**64 - 1), (1000, 39)]:
            out = prog.test_run(ctx=ns["Args"](a=a, b=99, c=c)).ctx
            v = [0] * 40
            v[a % 40] = 99
            if c < 40:
                v[c] += 7
            assert (out.got, out.outside) == (v[a % 40], v[c] if c < 40 else 0), (a, c)


CONSTANT_DIVISORS = """
from pybpf_uring import syscall, Struct, i32, u8, i64

class Args(Struct):
    a: u8
    b: i64
    r: i64[4]

@syscall
def constant_divisors(ctx: Args) -> i32:
    ctx.r[0] = u8(ctx.a) // u8(0)      # a divisor that folds to zero: BPF's x // 0 == 0
    ctx.r[1] = u8(ctx.a) % u8(0)       # and x % 0 == x
    v = u8(ctx.a)
    if ctx.b < 5:
        v = u8(ctx.a)
    else:
        v = u8(ctx.b)                  # a field chosen by a branch: still a constant ctx offset
    ctx.r[2] = v
    return 2
"""


@pytest.mark.kernel
def test_constant_zero_divisors_and_branch_chosen_fields():
    with loaded(CONSTANT_DIVISORS) as (live, ns):
        for a, b in [(7, 1), (200, 9), (0, -3)]:
            res = live.programs["constant_divisors"].test_run(ctx=ns["Args"](a=a, b=b))
            assert res.retval == 2
            assert list(res.ctx.r)[:3] == [0, a, a if b < 5 else b % 256]


MAP_KEYS = """
from pybpf_uring import syscall, Struct, HashMap, i32, u32, u64

m = HashMap(u32, u64, 16)

class Args(Struct):
    k: u32

@syscall
def keys(ctx: Args) -> i32:
    m[1] = m[ctx.k] + m[2]        # the value reads other keys before the update's key is used
    m[ctx.k] += m[3] + m[4]       # and the key of m[k] op= v survives the reads in v
    return 0
"""


@pytest.mark.kernel
def test_map_updates_keep_their_own_key_while_the_value_reads_others():
    with loaded(MAP_KEYS) as (live, ns):
        m = live.maps["m"]
        for k, v in {1: 10, 2: 20, 3: 30, 4: 40, 5: 50}.items():
            m[k] = v
        live.programs["keys"].test_run(ctx=ns["Args"](k=5))
        assert dict(m.items()) == {1: 50 + 20, 2: 20, 3: 30, 4: 40, 5: 50 + 30 + 40}
