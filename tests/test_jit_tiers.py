"""The JIT's compile tiers and its code cache (pybpf_uring.runtime.engine.jit).

A program that will run its code many times soon (a loop, helper calls) compiles at codegen
level 1 at once; one that computes once over its input starts at level 0, whose code generator
costs a quarter of level 1's, and tiers up when hot.  The same program bound again in a process
is neither lifted nor compiled again.
"""
from __future__ import annotations

from pybpf_uring.conformance import assemble
from pybpf_uring.runtime.engine import Memory
from pybpf_uring.runtime.engine import jit as jit_module
from pybpf_uring.runtime.engine.jit import Jit, compile_stats, runs_hot
from pybpf_uring.runtime.engine.interpreter import validate


def prog(*lines: str) -> bytes:
    return assemble(enumerate(lines, start=1))[0]


STRAIGHT = prog("mov %r0, %r1", "mul %r0, 3", "jgt %r0, 10, big", "add %r0, 1", "big:", "exit")
LOOP = prog("mov %r0, 0", "loop:", "add %r0, 3", "sub %r1, 1", "jne %r1, 0, loop", "exit")
HELPER = prog("mov %r1, 7", "call 5", "exit")
RECURSE = prog("call local sub", "exit", "sub:", "mov %r0, 1", "exit")


def test_which_programs_run_hot():
    assert [runs_hot(validate(p)) for p in (STRAIGHT, LOOP, HELPER, RECURSE)] == [
        False, True, True, False]


def test_a_loop_free_program_starts_at_level_0_and_tiers_up_when_hot(monkeypatch):
    monkeypatch.setattr(jit_module, "HOT_INSTRUCTIONS", 30)
    jit = Jit(STRAIGHT, cache=False)
    assert jit.tier == 0
    for n in range(7):                     # 5 then 4 instructions a run: hot after the 7th
        assert jit.tier == 0 and jit.run(n) == 3 * n + (n * 3 <= 10)
    assert jit.tier == 1
    assert (jit.run(2), jit.run(9), jit.executed) == (7, 27, 4)


def test_a_loop_compiles_at_level_1_at_once():
    assert Jit(LOOP, cache=False).tier == 1
    assert Jit(HELPER, cache=False, helpers={5: lambda memory, *args: args[0] + 1}).tier == 1


def test_the_same_program_is_lifted_and_compiled_once_per_process():
    program = prog("mov %r0, %r1", "add %r0, 12345", "exit")
    first = Jit(program)
    compiles = compile_stats()[0]
    second = Jit(program, memory=Memory())
    assert second.lifted is first.lifted and compile_stats()[0] == compiles
    assert (first.run(1), second.run(2)) == (12346, 12347)
    fresh = Jit(program, cache=False)             # what a compile-time benchmark asks for
    assert fresh.lifted is not first.lifted and compile_stats()[0] == compiles + 1
    assert Jit(program, unchecked=True).lifted is not first.lifted   # another program
