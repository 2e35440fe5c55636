"""A run from Python of a program that calls no helper goes through one builtin call
(engine.native_ring.FastRun) after its first run: the same results, faults and counts as the full
path (the interpreter's, and the JIT's own `run`), a table that follows memory mapped and unmapped
between runs, and a level-0 program that still tiers up when hot.

Each test checks that the fast path was really taken (`runner._fast`), so a change that silently
stops using it fails here."""
from __future__ import annotations

import struct
import textwrap

import pytest
from kernel_harness import clang_object

from pybpf_uring import ProgramFault, compile_source
from pybpf_uring.runtime.engine import instantiate
from pybpf_uring.runtime.engine import native_ring

# The ctx's fields in, a mix of them out: r0 and every byte of the ctx are compared.
SHORT = """
    from pybpf_uring import syscall, Struct, i32, u32, u64

    class Args(Struct):
        a: u64
        b: u32
        c: u32

    @syscall
    def mix(ctx: Args) -> i32:
        ctx.c = ctx.b * 3 + u32(ctx.a)
        ctx.a = ctx.a ^ (u64(ctx.b) << 7)
        return ctx.b - 100
"""

# Loops ctx.a times: runs out of a small budget for a large ctx.a.
LOOP = """
    from pybpf_uring import syscall, Struct, i32, u64

    class Args(Struct):
        a: u64
        out: u64

    @syscall
    def spin(ctx: Args) -> i32:
        total = 0
        for i in range(1000):
            if i >= ctx.a:
                break
            total += i
        ctx.out = total
        return 0
"""

# Loads through a pointer the ctx carries: what a table that missed an unmap would let through.
DEREF_C = r"""
__attribute__((section("syscall"), used))
int deref(unsigned long long *ctx) { return *(unsigned long long *)ctx[0]; }
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
"""


def runner(source: str, name: str, **options):
    obj = compile_source(textwrap.dedent(source), f"{name}.py")
    return instantiate(obj, backend="jit", **options).runner(name)


def reference(source: str, name: str, **options):
    obj = compile_source(textwrap.dedent(source), f"{name}.py")
    return instantiate(obj, backend="interpreter", **options).runner(name)


def test_short_program_runs_fast_with_the_interpreters_results_and_counts():
    fast, ref = runner(SHORT, "mix"), reference(SHORT, "mix")
    for k in range(300):
        ctx = struct.pack("<QII", (k * 0x9E3779B97F4A7C15) & (1 << 64) - 1, k * 7919, k)
        assert fast.run(ctx) == ref.run(ctx)
        assert fast.executed == ref.executed
    assert fast._fast is not None, "the runs did not go through FastRun"
    assert fast.runs == ref.runs == 300
    # a ctx of another size, or not bytes, takes the full path and gets the same answer
    for ctx in (bytearray(16), bytes(24)):
        assert fast.run(ctx) == ref.run(ctx)
    assert fast.runs == 302


def test_a_budget_fault_on_the_fast_path_is_the_full_paths():
    fast, ref = runner(LOOP, "spin", budget=200), reference(LOOP, "spin", budget=200)
    ok = struct.pack("<QQ", 10, 0)
    assert fast.run(ok) == ref.run(ok) == (0, struct.pack("<QQ", 10, 45))
    assert fast._fast is not None
    for _ in range(3):                       # faults go on coming from the fast path
        with pytest.raises(ProgramFault) as got:
            fast.run(struct.pack("<QQ", 900, 0))
        with pytest.raises(ProgramFault) as want:
            ref.run(struct.pack("<QQ", 900, 0))
        assert str(got.value) == str(want.value)
        assert "budget of 200" in str(got.value) and fast.executed == ref.executed == 200
    assert fast.run(ok) == (0, struct.pack("<QQ", 10, 45)) and fast.runs == 5


@pytest.mark.tools("clang")
def test_memory_unmapped_between_fast_runs_faults_as_in_the_full_path(tmp_path):
    obj = clang_object(tmp_path, "deref", DEREF_C)
    inst = instantiate(obj, backend="jit")
    run = inst.runner("deref")
    value = inst.memory.map(bytearray(struct.pack("<Q", 41)), "value")
    ctx = struct.pack("<Q", value.address())
    assert run.run(ctx)[0] == 41 and run.run(ctx)[0] == 41
    assert run._fast is not None
    later = inst.memory.map(bytearray(struct.pack("<Q", 42)), "later")    # mapped after
    assert run.run(struct.pack("<Q", later.address()))[0] == 42
    inst.memory.unmap(value)
    with pytest.raises(ProgramFault, match="no region is mapped there"):
        run.run(ctx)
    assert run.run(struct.pack("<Q", later.address()))[0] == 42
    assert run._fast_run.block[native_ring.RUN_WORDS.index("gen_seen")] == inst.memory.generation[0]


def test_a_level_0_program_run_fast_tiers_up_when_hot():
    fast = runner(SHORT, "mix")
    assert fast.vm.tier == 0, "a straight-line program starts at level 0 (jit.py)"
    ctx = struct.pack("<QII", 5, 6, 7)
    want = fast.run(ctx)
    runs = 0
    while fast.vm.tier == 0 and runs < 2_000_000:
        assert fast.run(ctx) == want
        runs += 1
    assert fast.vm.tier == 1 and fast._fast is not None
    assert fast.run(ctx) == want and fast.runs == runs + 2
