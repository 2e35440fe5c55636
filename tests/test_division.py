"""`//` and `%` at their edges, on every cpu, in the kernel and in the engines, against Python.

A variable divisor reaches the BPF division instruction unguarded (lower_div.py): the
instruction's own results for a zero divisor (x // 0 == 0, x % 0 == x) and for MIN // -1 (MIN)
are the language's, and the floor step must leave them so.  Every pair of edge values of every
integer type -- 0, 1, -1, 2, -2, 7, -7, the type's MIN and MAX and their neighbours -- is
divided both ways, by a variable and by each constant, and each result compared with the model
(kernel_harness.floordiv/floormod, Python's floor with BPF's zero-divisor results).
"""
from __future__ import annotations

import ctypes
import itertools
import re

import pytest

from kernel_harness import floordiv, floormod, wrap
from probes import engine_backends
from pybpf_uring import compile_source
from pybpf_uring.runtime.engine import instantiate

pytestmark = pytest.mark.kernel("syscall_programs")

TYPES = [(8, False), (8, True), (16, False), (16, True), (32, False), (32, True), (64, False), (64, True)]
CONSTANTS = (1, 3, 7, 10, -1, -3, -7, 16)


def name(bits: int, signed: bool) -> str:
    return f"{'i' if signed else 'u'}{bits}"


def edges(bits: int, signed: bool) -> list[int]:
    lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if signed else (0, (1 << bits) - 1)
    values = {0, 1, -1, 2, -2, 3, -3, 7, -7, 10, -10, lo, lo + 1, hi, hi - 1}
    return sorted({wrap(v, bits, signed) for v in values})


def source(bits: int, signed: bool) -> str:
    t = name(bits, signed)
    constants = [c for c in CONSTANTS if signed or c > 0]
    lines = [f"    ctx.out[0] = i64(ctx.a // ctx.b)", f"    ctx.out[1] = i64(ctx.a % ctx.b)"]
    for i, c in enumerate(constants):
        lines += [f"    ctx.out[{2 + 2 * i}] = i64(ctx.a // {t}({c}))",
                  f"    ctx.out[{3 + 2 * i}] = i64(ctx.a % {t}({c}))"]
    return (f"from pybpf_uring import syscall, Struct, i32, i64, {t}\n\n"
            f"class Ctx(Struct):\n    a: {t}\n    b: {t}\n    out: i64[{len(lines)}]\n\n"
            f"@syscall\ndef divide(ctx: Ctx) -> i32:\n" + "\n".join(lines) + "\n    return 0\n"), constants


def want(a: int, b: int, constants, bits: int, signed: bool) -> list[int]:
    results = [floordiv(a, b), floormod(a, b)]
    for c in constants:
        results += [floordiv(a, c), floormod(a, c)]
    return [wrap(wrap(r, bits, signed), 64, True) for r in results]


@pytest.mark.parametrize("cpu", ["v1", "v2", "v3", "v4"])
@pytest.mark.parametrize("bits,signed", TYPES, ids=[name(*t) for t in TYPES])
def test_division_edges_match_python(cpu, bits, signed):
    text, constants = source(bits, signed)
    obj = compile_source(text, "divide.py", cpu)
    ctype = getattr(ctypes, f"c_{'' if signed else 'u'}int{bits}")
    n = 2 + 2 * len(constants)

    class Ctx(ctypes.Structure):
        _fields_ = [("a", ctype), ("b", ctype), ("out", ctypes.c_int64 * n)]

    engines = [instantiate(obj, backend=b) for b in engine_backends()]
    with obj.load() as live:
        prog = live.programs["divide"]
        for a, b in itertools.product(edges(bits, signed), repeat=2):
            ctx = Ctx(a=a, b=b)
            got = prog.test_run(ctx=ctx).ctx
            assert list(got.out) == want(a, b, constants, bits, signed), (cpu, name(bits, signed), a, b)
            for engine in engines:
                _, out = engine.runner("divide").run(bytes(ctx))
                assert bytes(out) == bytes(got), (engine.backend, cpu, name(bits, signed), a, b)


ALIASED = """
from pybpf_uring import syscall, Struct, i32, i64, {t}

class Ctx(Struct):
    a: {t}
    out: i64[6]

@syscall
def aliased(ctx: Ctx) -> i32:
    a = ctx.a
    z: {t} = 0
    x = {t}(0) if a > 5 else {t}(4)
    ctx.out[0] = i64(a // a)
    ctx.out[1] = i64(a % a)
    ctx.out[2] = i64(a // z)
    ctx.out[3] = i64(a % z)
    ctx.out[4] = i64({t}(100) // x)
    ctx.out[5] = i64({t}(100) % x)
    return 0
"""


@pytest.mark.parametrize("cpu", ["v1", "v3", "v4"])
@pytest.mark.parametrize("bits,signed", [(32, False), (32, True), (64, False), (64, True)],
                         ids=["u32", "i32", "u64", "i64"])
def test_divisors_llvm_could_fold(cpu, bits, signed):
    """Divisors LLVM knows more about than the checker: the dividend itself (LLVM's instruction
    selection folds x / x to 1, which is 0 for x == 0 here), a local holding 0, and a value that
    is 0 on one side of a branch (x / 0 is anything to LLVM)."""
    t = name(bits, signed)
    obj = compile_source(ALIASED.format(t=t), "aliased.py", cpu)
    ctype = getattr(ctypes, f"c_{'' if signed else 'u'}int{bits}")

    class Ctx(ctypes.Structure):
        _fields_ = [("a", ctype), ("out", ctypes.c_int64 * 6)]

    with obj.load() as live:
        for a in edges(bits, signed):
            x = 0 if a > 5 else 4
            model = [floordiv(a, a), floormod(a, a), floordiv(a, 0), floormod(a, 0),
                     floordiv(100, x), floormod(100, x)]
            got = live.programs["aliased"].test_run(ctx=Ctx(a=a)).ctx
            assert list(got.out) == [wrap(wrap(v, bits, signed), 64, True) for v in model], (cpu, t, a)


SHARED = """
from pybpf_uring import syscall, Struct, i32, i64, {t}

class Ctx(Struct):
    a: {t}
    b: {t}
    c: {t}
    out: i64[5]

@syscall
def shared(ctx: Ctx) -> i32:
    a = ctx.a
    ctx.out[0] = i64(a // ctx.b + a % ctx.b)
    ctx.out[1] = i64((a % ctx.b) // ctx.b - ctx.c % ctx.b * a)
    ctx.out[2] = i64(-(a // ctx.b) ^ ctx.b // ctx.b)
    ctx.out[3] = i64(a // ctx.b + a % ctx.c)
    ctx.out[4] = i64(ctx.c // (a + ctx.b) + ctx.c % (ctx.b + a) + ctx.c % (a + ctx.b))
    return 0
"""


def shared_model(a: int, b: int, c: int, bits: int, signed: bool) -> list[int]:
    """SHARED's outputs, each operation wrapped to the type as the program computes it."""
    def w(v):
        return wrap(v, bits, signed)

    def fd(x, y):
        return w(floordiv(x, y))

    def fm(x, y):
        return w(floormod(x, y))

    s = w(a + b)
    results = [w(fd(a, b) + fm(a, b)), w(fd(fm(a, b), b) - w(fm(c, b) * a)), w(-fd(a, b)) ^ fd(b, b),
               w(fd(a, b) + fm(a, c)), w(w(fd(c, s) + fm(c, w(b + a))) + fm(c, s))]
    return [wrap(r, 64, True) for r in results]


@pytest.mark.parametrize("cpu", ["v1", "v2", "v3", "v4"])
@pytest.mark.parametrize("bits,signed", TYPES, ids=[name(*t) for t in TYPES])
def test_divisions_by_one_divisor_share_its_tests(cpu, bits, signed):
    """Divisions by one divisor in one expression test it once and the expression is lowered
    per outcome (lower_div.split): each result is still the model's at every edge, the divisor
    itself as dividend, nested in another division, beside a second divisor, and a divisor
    that is a sum (`a + b` and `b + a` are tested apart)."""
    t = name(bits, signed)
    obj = compile_source(SHARED.format(t=t), "shared.py", cpu)
    ctype = getattr(ctypes, f"c_{'' if signed else 'u'}int{bits}")

    class Ctx(ctypes.Structure):
        _fields_ = [("a", ctype), ("b", ctype), ("c", ctype), ("out", ctypes.c_int64 * 5)]

    values = edges(bits, signed)
    engines = [instantiate(obj, backend=b) for b in engine_backends()]
    with obj.load() as live:
        prog = live.programs["shared"]
        for i, (a, b) in enumerate(itertools.product(values, repeat=2)):
            c = values[i * 7 % len(values)]
            ctx = Ctx(a=a, b=b, c=c)
            got = prog.test_run(ctx=ctx).ctx
            assert list(got.out) == shared_model(a, b, c, bits, signed), (cpu, t, a, b, c)
            for engine in engines:
                _, out = engine.runner("shared").run(bytes(ctx))
                assert bytes(out) == bytes(got), (engine.backend, cpu, t, a, b, c)


QUOTIENT_AND_REMAINDER = """
from pybpf_uring import syscall, Struct, i32, u32, u64

class Ctx(Struct):
    k: u32
    n: u32
    out: u64

@syscall
def both(ctx: Ctx) -> i32:
    ctx.out = ctx.k // ctx.n + ctx.k % ctx.n
    return 0
"""


@pytest.mark.parametrize("cpu", ["v1", "v2", "v3", "v4"])
def test_quotient_and_remainder_test_the_divisor_once(cpu):
    """k // n + k % n: one test of n, one division (the remainder is k - q * n), and the zero
    side stores k as it is -- clang's code for `n ? k / n + k % n : k` -- where a join per
    division would first set a register to the quotient's 0."""
    obj = compile_source(QUOTIENT_AND_REMAINDER, "both.py", cpu)
    lines = obj.disasm().splitlines()
    jumps = [line for line in lines if re.search(r"\sif\s", line)]
    divisions = [line for line in lines if "/=" in line]
    zeros = [line for line in lines if re.search(r"\s[rw][1-9] = 0x0$", line)]
    assert (len(jumps), len(divisions), zeros) == (1, 1, []), "\n".join(lines)
