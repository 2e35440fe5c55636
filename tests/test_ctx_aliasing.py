"""The ctx's fields carry struct-path TBAA tags (lower_values.CtxAliasing), which tell LLVM that
two scalar fields at different offsets never overlap, as clang's tags do for C.

What that buys: a store to one field no longer makes LLVM reload the others, so
`ctx.out = ctx.a // ctx.b` then `ctx.b = ctx.a % ctx.b` divides once.  What it must not cost:
every write that may reach a field -- the field itself, an array or a struct copied in, a
subprogram given the ctx -- is still seen by the reads after it, and a field written is seen
by a copy of its array, in the kernel and in the engines.
"""
from __future__ import annotations

import pytest

from kernel_harness import floordiv, floormod, module
from probes import engine_backends
from pybpf_uring import compile_source
from pybpf_uring.runtime.engine import instantiate

CPUS = ("v1", "v2", "v3", "v4")

DIVMOD = """
from pybpf_uring import syscall, Struct, i32, i64

class Args(Struct):
    a: i64
    b: i64
    out: i64

@syscall
def divmod_store(ctx: Args) -> i32:
    ctx.out = ctx.a // ctx.b
    ctx.b = ctx.a % ctx.b
    return 0
"""

WRITES = """
from pybpf_uring import syscall, Struct, i32, i64, u32

class Inner(Struct):
    x: u32
    y: u32

class Args(Struct):
    a: i64
    b: i64
    i: u32
    n: u32
    data: u32[4]
    inner: Inner
    out: i64[6]

def bump(ctx: Args) -> None:
    ctx.a += 100

@syscall
def writes(ctx: Args) -> i32:
    q = ctx.a // ctx.b
    ctx.b = 7
    ctx.out[0] = q
    ctx.out[1] = ctx.a % ctx.b
    arr = ctx.data
    arr[ctx.i % 4] = 99
    ctx.data = arr
    ctx.out[2] = i64(ctx.data[2])
    bump(ctx)
    ctx.out[3] = ctx.a
    local = Inner(x=5, y=ctx.n)
    ctx.inner = local
    ctx.out[4] = i64(ctx.inner.y)
    ctx.data[2] = ctx.n
    again = ctx.data
    ctx.out[5] = i64(again[ctx.i % 4])
    return 0
"""


def divisions(obj, name: str) -> int:
    return sum("/=" in line for line in obj.program(name).disasm().splitlines())


@pytest.mark.parametrize("cpu", CPUS)
def test_a_field_store_does_not_reload_the_other_fields(cpu):
    """The quotient and the remainder of ctx.a and ctx.b come from one division: the store to
    ctx.out between them does not clobber ctx.a or ctx.b."""
    assert divisions(compile_source(DIVMOD, "divmod.py", cpu), "divmod_store") == 1


def writes_model(a: int, b: int, i: int, n: int, data: list[int]) -> list[int]:
    data = list(data)
    data[i % 4] = 99
    d2 = data[2]
    data[2] = n
    return [floordiv(a, b), floormod(a, 7), d2, a + 100, n, data[i % 4]]


@pytest.mark.kernel("syscall_programs")
@pytest.mark.parametrize("cpu", CPUS)
def test_writes_that_may_reach_a_field_are_seen(cpu):
    """Each write is seen by the reads after it.  The array copied out of the ctx and back in
    around a store at a variable index is also what a memcpy to the ctx got wrong: LLVM shared
    the field's address between the two copies, and the verifier refused the moved ctx pointer
    ("dereference of modified ctx ptr"); copies to and from the ctx are words now."""
    ns = module(WRITES, "writes.py")
    obj = compile_source(WRITES, "writes.py", cpu)
    engines = [instantiate(obj, backend=b) for b in engine_backends()]
    cases = [(a, b, i, n) for a in (-9, 0, 13, 2**62) for b in (0, -1, 4, 7) for i in range(5) for n in (0, 3)]
    with obj.load() as live:
        for a, b, i, n in cases:
            data = [10, 11, 12, 13]
            ctx = ns["Args"](a=a, b=b, i=i, n=n, data=data)
            got = live.programs["writes"].test_run(ctx=ctx).ctx
            assert list(got.out) == writes_model(a, b, i, n, data), (cpu, a, b, i, n)
            assert (got.a, got.b, got.inner.x, got.inner.y) == (a + 100, 7, 5, n)
            for engine in engines:
                _, out = engine.runner("writes").run(bytes(ctx))
                assert bytes(out) == bytes(got), (engine.backend, cpu, a, b, i, n)
