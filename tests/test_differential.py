"""Differential testing: the kernel and the engine run the same compiled program and must agree.

Hypothesis writes small programs in the language -- integer expressions over ctx fields of every
width and signedness, locals, if/else, a `for` loop with an early break, a bounded `while`, a map
update -- which are compiled once as `@syscall` and run

* in the kernel: `obj.load()` and BPF_PROG_TEST_RUN on the ctx (the verifier accepted them);
* in the engine: `engine.instantiate(obj)` on the same linked instructions, the ctx as a region,
  on the interpreter and (when llvmlite can) on the JIT.

The return value (the kernel reports its low 32 bits), the ctx written back and the map must be
the same.  No Python model is involved: whatever the compiler made of a program, both machines
must execute it identically, so this checks the interpreter, the relocation of map references
and the map helpers, on code shapes the hand-written tests do not think of.
"""
from __future__ import annotations

import ctypes
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes import engine_backends
from pybpf_uring import compile_source
from pybpf_uring.runtime.engine import instantiate

pytestmark = pytest.mark.kernel("syscall_programs")

BACKENDS = engine_backends()

TYPES = ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64"]
FIELDS = {"a": "u8", "b": "i8", "c": "u16", "d": "i16", "e": "u32", "f": "i32", "g": "u64", "h": "i64"}
ARITH = ["+", "-", "*", "//", "%", "&", "|", "^"]
COMPARE = ["<", "<=", ">", ">=", "==", "!="]
HEADER = """\
from pybpf_uring import syscall, Struct, ArrayMap, u8, i8, u16, i16, u32, i32, u64, i64

class Ctx(Struct):
    a: u8
    b: i8
    c: u16
    d: i16
    e: u32
    f: i32
    g: u64
    h: i64
    out: u64[4]

m = ArrayMap(u64, 4)

@syscall
def prog(ctx: Ctx) -> i32:
"""


class Ctx(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_int8), ("c", ctypes.c_uint16),
                ("d", ctypes.c_int16), ("e", ctypes.c_uint32), ("f", ctypes.c_int32),
                ("g", ctypes.c_uint64), ("h", ctypes.c_int64), ("out", ctypes.c_uint64 * 4)]


@st.composite
def expr(draw, t: str, names: tuple[str, ...], depth: int = 3) -> str:
    """An expression of type `t`: every operand is cast to `t`, so no mixed-type rule applies."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        kinds = ["field", "field", "local", "literal"] if names else ["field", "literal"]
        kind = draw(st.sampled_from(kinds))
        if kind == "field":
            return f"{t}(ctx.{draw(st.sampled_from(sorted(FIELDS)))})"
        if kind == "local":
            return f"{t}({draw(st.sampled_from(names))})"
        return f"{t}({draw(st.integers(-300, 70000))})"
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return f"(~{draw(expr(t, names, depth - 1))})"
    if shape == 1:   # a shift by a run-time count (a constant one out of range is an error)
        op = draw(st.sampled_from(["<<", ">>"]))
        return f"({draw(expr(t, names, depth - 1))} {op} {t}(ctx.{draw(st.sampled_from(sorted(FIELDS)))}))"
    op = draw(st.sampled_from(ARITH))
    return f"({draw(expr(t, names, depth - 1))} {op} {draw(expr(t, names, depth - 1))})"


@st.composite
def condition(draw, names: tuple[str, ...]) -> str:
    t = draw(st.sampled_from(TYPES))
    c = f"{draw(expr(t, names, 2))} {draw(st.sampled_from(COMPARE))} {draw(expr(t, names, 2))}"
    if draw(st.booleans()):
        t2 = draw(st.sampled_from(TYPES))
        c2 = f"{draw(expr(t2, names, 1))} {draw(st.sampled_from(COMPARE))} {draw(expr(t2, names, 1))}"
        c = f"({c}) {draw(st.sampled_from(['and', 'or']))} not ({c2})"
    return c


@st.composite
def program(draw) -> str:
    t0, t1, t2 = (draw(st.sampled_from(TYPES)) for _ in range(3))
    body = [f"v0: {t0} = {draw(expr(t0, ()))}",
            f"v1: {t1} = {draw(expr(t1, ('v0',)))}",
            f"if {draw(condition(('v0', 'v1')))}:",
            f"    v1 = {draw(expr(t1, ('v0', 'v1')))}",
            "else:",
            f"    v1 = {draw(expr(t1, ('v0',)))}",
            f"acc: {t2} = {draw(expr(t2, ('v0', 'v1'), 2))}",
            f"for i in range({draw(st.integers(1, 6))}):",
            f"    acc = {t2}(acc {draw(st.sampled_from(ARITH))} {draw(expr(t2, ('i', 'v0', 'acc'), 2))})"]
    if draw(st.booleans()):
        body += [f"    if {draw(condition(('i', 'acc')))}:", "        break"]
    if draw(st.booleans()):     # a while loop with a provable bound: `name < constant`, constant step
        step = draw(expr(t2, ("j", "acc", "v1"), 2))
        body += ["j: i64 = 0",
                 f"while j < {draw(st.integers(1, 12))}:",
                 f"    j += {draw(st.integers(1, 4))}",
                 f"    acc = {t2}(acc {draw(st.sampled_from(ARITH))} {step})"]
    body += ["m[u32(ctx.a) & 3] += u64(acc)",
             "ctx.out[0] = u64(v0)", "ctx.out[1] = u64(v1)", "ctx.out[2] = u64(acc)",
             f"return i32({draw(expr('i64', ('v0', 'v1', 'acc')))})"]
    return HEADER + "".join(f"    {line}\n" for line in body)


def ctx_values():
    return st.tuples(st.integers(0, 255), st.integers(-128, 127), st.integers(0, 65535),
                     st.integers(-32768, 32767), st.integers(0, 2**32 - 1),
                     st.integers(-2**31, 2**31 - 1), st.integers(0, 2**64 - 1),
                     st.integers(-2**63, 2**63 - 1))


@settings(max_examples=int(os.environ.get("DIFFERENTIAL_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(program(), st.lists(ctx_values(), min_size=3, max_size=3))
def test_kernel_and_engine_agree(source, inputs):
    obj = compile_source(source, "generated.py")
    engines = [instantiate(obj, backend=b) for b in BACKENDS]
    with obj.load() as live:
        kernel_prog = live.programs["prog"]
        for values in inputs:
            ctx = Ctx(*values)
            got = kernel_prog.test_run(ctx=ctx)
            for engine in engines:
                r0, out = engine.runner("prog").run(bytes(ctx))
                assert (r0 & 0xFFFFFFFF, bytes(out)) == (got.retval, bytes(got.ctx)), (
                    f"kernel and engine ({engine.backend}) differ on ctx {values}:\n{source}")
        kernel_map = [live.maps["m"][i] for i in range(4)]
    for engine in engines:
        assert engine.maps["m"].values() == kernel_map, (engine.backend, source)


def test_the_generator_covers_the_language():
    """Sanity: generated programs use every width, both branches and the loop's break."""
    seen = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(program())
    def collect(source):
        seen.update(t for t in TYPES if f"{t}(" in source)
        seen.update(op for op in ARITH + ["<<", ">>", "break", "else:", "while"] if op in source)

    collect()
    assert set(TYPES) <= seen and {"//", "%", "<<", ">>", "break", "else:", "while"} <= seen


# Programs that once went wrong in the compiler, kept as fixed cases: a divisor that folds to
# zero (LLVM replaced the program by a trap), and a field chosen by a branch (LLVM loaded it at
# `ctx + select(...)`, which the verifier refuses).
FIXED_CASES = {
    "zero divisor": """\
    v1: u8 = u8(ctx.a)
    if u8(ctx.a) < (~(u8(ctx.a) // u8(0))):
        v1 = u8(ctx.c)
    ctx.out[0] = u64(v1)
    ctx.out[1] = u64(i16(ctx.d) % i16(0))
    return i32(u8(ctx.a) // u8(256))
""",
    "field chosen by a branch": """\
    v1: u8 = u8(ctx.a)
    if u8(ctx.c) < u8(ctx.d):
        v1 = u8(ctx.a)
    else:
        v1 = u8(ctx.b)
    ctx.out[1] = u64(v1)
    return 0
""",
}


@pytest.mark.parametrize("body", list(FIXED_CASES.values()), ids=list(FIXED_CASES))
def test_fixed_cases_agree(body):
    obj = compile_source(HEADER + body, "fixed.py")
    engines = [instantiate(obj, backend=b) for b in BACKENDS]
    with obj.load() as live:
        for values in [(0, 0, 0, 0, 0, 0, 0, 0), (200, -3, 7, -9, 1, -1, 5, -5), (1, 2, 300, 4, 5, 6, 7, 8)]:
            ctx = Ctx(*values)
            got = live.programs["prog"].test_run(ctx=ctx)
            for engine in engines:
                r0, out = engine.runner("prog").run(bytes(ctx))
                assert (r0 & 0xFFFFFFFF, bytes(out)) == (got.retval, bytes(got.ctx)), engine.backend
