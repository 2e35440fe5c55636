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
