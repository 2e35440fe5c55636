"""The JIT's cheap memory accesses and budget guards (engine/jit_loops.py, engine/jit_lift.py),
each against the interpreter as the oracle: same r0, same memory, same fault at the same
instruction with the same message, same `executed`, at every budget.

* an address derived from an anchor (`r3 = r7 + index`) is checked against the anchor's region
  only -- including anchors that are not where the address is, and indexes that walk out;
* a loop's translation of an anchor it never writes is made once, on entry, and a helper call
  (which may unmap the region) clears it, even when the loop is re-entered in the middle;
* a loop block with effects runs a copy without budget guards when the budget covers it, and
  the guarded copy otherwise: the budget sweep below runs out on every slot of such loops;
* generated loops of anchored loads, stores and atomics through derived addresses, with helper
  calls (one unmapping a region) and branches, at any budget.
"""
from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpf_uring.conformance import assemble
from pybpf_uring.runtime.engine import BpfFault, Interpreter, Memory
from pybpf_uring.runtime.engine.interpreter import validate
from pybpf_uring.runtime.engine.jit import Jit
from pybpf_uring.runtime.engine.jit_lift import lift
from pybpf_uring.runtime.engine.jit_loops import loop_ranges

M64 = (1 << 64) - 1


def prog(*lines: str) -> bytes:
    return assemble(enumerate(lines, start=1))[0]


def outcome(engine_class, program, *, budget=100_000, helpers=None, mem=None):
    """(r0 or (fault type, slot, message), the region's bytes, the small region's, executed)."""
    memory = Memory()
    region = memory.map(bytearray(mem if mem is not None else bytes(range(256)) * 3), "mem")
    small = memory.map(bytearray(b"\xaa" * 6), "small")
    doomed = memory.map(bytearray(b"\x55" * 64), "doomed")
    table = {1: lambda m, *a: m.unmap(doomed) or 0, 2: lambda m, *a: a[0] * 2}
    table.update(helpers or {})
    engine = engine_class(program, memory=memory, helpers=table, budget=budget)
    try:
        result = engine.run(region.base, small.base, doomed.base, 7)
        executed = engine.executed
    except BpfFault as exc:
        result, executed = (type(exc).__name__, exc.insn_index, str(exc)), None
    return result, bytes(region.buf), bytes(small.buf), executed


def same(program, **kw):
    expected = outcome(Interpreter, program, **kw)
    got = outcome(Jit, program, **kw)
    assert got == expected
    return got


# r1 = a 768-byte region, r2 = a 6-byte one, r3 = a 64-byte one a helper 1 call unmaps, r4 = 7
MEMORY_LOOP = [
    "mov %r0, 0", "mov %r6, 0", "mov %r7, %r1", "add %r7, 32", "mov %r9, %r4",
    "loop:",
    "mov %r3, %r6", "and %r3, 63", "lsh %r3, 3", "add %r3, %r7",
    "ldxdw %r5, [%r3+0]", "mul %r5, %r9", "add %r0, %r5", "stxdw [%r3+0], %r0",
    "add %r6, 1", "jlt %r6, 100, loop",
    "exit",
]


def test_the_benchmark_memory_loop_hoists_its_anchor_and_agrees():
    slots = validate(prog(*MEMORY_LOOP))
    lifted = lift(slots, {})
    assert "%pre5 = " not in lifted.text and "pre5:" in lifted.text      # the loop's entry
    assert "%H5_7_read8" in lifted.text and "%H5_7_write8" in lifted.text
    assert same(prog(*MEMORY_LOOP))[0] != 0


@pytest.mark.parametrize("mask, fault", [(63, False), (127, True)])
def test_an_index_walking_out_of_the_anchors_region_faults_at_the_access(mask, fault):
    # 32 + 127 * 8 + 8 > 768: the anchored check misses and the full path faults exactly
    program = prog(*[line.replace("and %r3, 63", f"and %r3, {mask}") for line in MEMORY_LOOP])
    result = same(program)[0]
    assert isinstance(result, tuple) == fault
    if fault:
        assert result[:2] == ("BpfFault", 9) and "mem+768 is out of bounds" in result[2]


def test_an_anchor_in_another_window_than_the_address():
    # r7 = the last byte of the window before mem's: r3 = r7 + index lands in mem's window, and
    # anything the anchor's (unmapped) region says must not be believed
    program = prog("mov %r7, %r1", "lddw %r8, 0x80000001", "sub %r7, %r8",
                   "mov %r3, %r4", "and %r3, 15", "add %r3, %r7", "ldxb %r0, [%r3+2]", "exit")
    assert same(program)[0] == ("BpfFault", 7, same(program)[0][2])
    program = prog("mov %r7, %r1", "sub %r7, 9", "mov %r3, %r4", "and %r3, 15",
                   "add %r3, %r7", "ldxb %r0, [%r3+1]", "exit")   # before the region: a fault
    assert same(program)[0][:2] == ("BpfFault", 5)
    program = prog("mov %r7, %r1", "sub %r7, 9", "mov %r3, %r4", "and %r3, 15",
                   "add %r3, %r7", "ldxb %r0, [%r3+9]", "exit")   # back inside: r4 = 7 -> mem[7]
    assert same(program)[0] == 7


@pytest.mark.parametrize("size, op", [(1, "ldxb"), (2, "ldxh"), (4, "ldxw"), (8, "ldxdw")])
def test_an_anchored_access_larger_than_its_region(size, op):
    # the 6-byte region: bound = 6 - size + 1, 0 for the 8-byte access
    for offset in range(0, 8):
        program = prog("mov %r3, %r4", "and %r3, 0", f"add %r3, {offset}", "add %r3, %r2",
                       f"{op} %r0, [%r3+0]", "exit")
        result = same(program)[0]
        assert isinstance(result, tuple) == (offset + size > 6)


def test_a_helper_call_clears_a_hoisted_translation_even_on_a_jump_into_the_loop():
    # The loop (slots 4-11) hoists r7 = the doomed region; after it, helper 1 unmaps the region
    # and a jump re-enters the loop's middle (not its header): the access must fault there
    program = prog(
        "mov %r7, %r3", "mov %r6, 0", "mov %r0, 0", "mov %r8, 0",
        "loop:",
        "add %r6, 0",
        "middle:",
        "mov %r5, %r6", "and %r5, 7", "add %r5, %r7", "ldxb %r2, [%r5+0]", "add %r0, %r2",
        "add %r6, 1", "jlt %r6, 8, loop",
        "jne %r8, 0, out", "mov %r8, 1", "mov %r9, %r0", "call 1", "mov %r0, %r9",
        "ja middle",
        "out:",
        "exit")
    slots = validate(program)
    assert loop_ranges(slots) == {4: 11, 5: 17}
    text = lift(slots, {}).text
    assert "%H4_7_read1 = alloca" in text and "br label %b5" in text   # hoisted; entered at 5
    result = same(program)[0]
    assert result[:2] == ("BpfFault", 8) and "no region is mapped" in result[2]


BASE_LOOP = ["mov %r6, 0", "mov %r0, 0",
             "loop:",
             "ldxdw %r5, [%r1+8]", "add %r0, %r5", "stxw [%r1+600], %r6",
             "ldxb %r5, [%r2+5]", "add %r0, %r5",
             "add %r6, 1", "jlt %r6, 30, loop", "exit"]


def test_a_base_read_at_fixed_offsets_in_a_loop_is_translated_once():
    text = lift(validate(prog(*BASE_LOOP)), {}).text
    assert all(f"%H2_{name} = alloca" in text for name in ("1_read8", "1_write4", "2_read1"))
    assert isinstance(same(prog(*BASE_LOOP))[0], int)
    past = BASE_LOOP[:7] + ["ldxb %r5, [%r2+6]"] + BASE_LOOP[7:]      # one byte past small
    assert same(prog(*past))[0][:2] == ("BpfFault", 6)


@pytest.mark.parametrize("offset, fault", [(-16, None), (-512, None), (-8, None), (-4, 4),
                                           (-520, 4), (0, 4)])
def test_a_pointer_made_from_r10_is_a_frame_slot_when_it_stays_inside(offset, fault):
    # r2 = r10 + offset; an 8-byte store at r2+0, a load at r2+0: inside the frame they are
    # native frame accesses, proven at lift time; outside, the full path faults exactly
    program = prog("mov %r2, %r10", f"add %r2, {offset}", "mov %r3, %r2", "sub %r3, 0",
                   "stxdw [%r3+0], %r4", "ldxdw %r0, [%r2+0]", "add %r0, 1", "exit")
    text = lift(validate(program), {}).text
    assert ("fn_slow_store" in text) == (fault is not None or offset > -8)
    result = same(program)[0]
    assert result == 8 if fault is None else result[:2] == ("BpfFault", fault)


def test_a_loop_calling_helpers_is_not_hoisted_and_agrees():
    program = prog("mov %r7, %r1", "mov %r6, 0", "mov %r0, 0",
                   "loop:",
                   "mov %r5, %r6", "and %r5, 7", "add %r5, %r7", "ldxb %r8, [%r5+0]",
                   "add %r0, %r8", "mov %r1, %r8", "call 2", "add %r0, %r0",
                   "add %r6, 1", "jlt %r6, 20, loop", "exit")
    slots = validate(program)
    assert "%H" not in lift(slots, {}).text
    same(program)


BUDGET_LOOPS = {
    "memory": MEMORY_LOOP,
    "two blocks with stores and a helper": [
        "mov %r6, 0", "mov %r7, %r1",
        "loop:",
        "mov %r3, %r6", "and %r3, 31", "add %r3, %r7", "stxb [%r3+0], %r6",
        "jset %r6, 1, odd",
        "stxh [%r3+64], %r6", "mov %r1, %r6", "call 2", "stxdw [%r3+128], %r0",
        "odd:",
        "stw [%r3+256], 77", "add %r6, 1", "jlt %r6, 40, loop",
        "mov %r0, %r6", "exit"],
}


@pytest.mark.parametrize("name", list(BUDGET_LOOPS))
def test_the_budget_runs_out_on_every_slot_of_a_loop_as_in_the_interpreter(name):
    program = prog(*BUDGET_LOOPS[name])
    full = outcome(Interpreter, program)[3]
    assert full is not None
    for budget in list(range(0, 60)) + list(range(full - 40, full + 2)):
        same(program, budget=budget)


def test_a_stale_anchor_value_in_a_hoisted_loop_still_checks_its_region():
    # r7 changes between two entries of the loop only through its header: both agree
    program = prog("mov %r7, %r1", "mov %r8, 2",
                   "outer:", "mov %r6, 0",
                   "loop:", "mov %r5, %r6", "lsh %r5, 3", "add %r5, %r7",
                   "ldxdw %r0, [%r5+0]", "stxdw [%r5+0], %r6", "add %r6, 1", "jlt %r6, 4, loop",
                   "mov %r7, %r2", "sub %r8, 1", "jne %r8, 0, outer", "exit")
    result = same(program)[0]
    assert result[:2] == ("BpfFault", 6) and "small+0 is out of bounds" in result[2]


# ---------------------------------------------------------------------------------------------
# Generated loops of anchored accesses: every shape the anchors, the hoisting and the copies
# take, against the interpreter at any budget

_OPS = {1: "b", 2: "h", 4: "w", 8: "dw"}


@st.composite
def anchored_loops(draw):
    lines = ["mov %r0, 0", "mov %r6, 0"]
    for reg in (7, 8):
        source = draw(st.sampled_from([1, 2, 3, 10]))
        lines += [f"mov %r{reg}, %r{source}",
                  f"add %r{reg}, {draw(st.integers(-530, 16) if source == 10 else st.integers(-16, 800))}"]
    lines.append("loop:")
    body = draw(st.integers(1, 6))
    for i in range(body):
        target = draw(st.sampled_from([5, 9]))
        base = draw(st.sampled_from([7, 8, 1, 2, 4]))
        lines += [f"mov %r{target}, %r6", f"and %r{target}, {draw(st.sampled_from([0, 3, 7, 63, 255]))}",
                  f"lsh %r{target}, {draw(st.integers(0, 3))}"]
        lines.append(f"add %r{target}, %r{base}" if draw(st.booleans())
                     else f"add %r{base}, %r{target}")
        if draw(st.booleans()):
            target = base                  # through the base itself (its own anchor)
        size, off = draw(st.sampled_from(list(_OPS))), draw(st.integers(-8, 16))
        kind = draw(st.sampled_from(["load", "store", "imm", "atomic", "helper", "skip"]))
        if kind == "load":
            lines += [f"ldx{_OPS[size]} %r3, [%r{target}{off:+d}]", "add %r0, %r3"]
        elif kind == "store":
            lines.append(f"stx{_OPS[size]} [%r{target}{off:+d}], %r0")
        elif kind == "imm":
            lines.append(f"st{_OPS[size]} [%r{target}{off:+d}], {draw(st.integers(-5, 5))}")
        elif kind == "atomic" and size >= 4:
            lines.append(f"lock add{'32' if size == 4 else ''} [%r{target}{off:+d}], %r6")
        elif kind == "helper":
            lines += ["mov %r9, %r0", "mov %r1, %r6", f"call {draw(st.sampled_from([1, 2]))}",
                      "mov %r0, %r9"]
        if draw(st.booleans()):
            lines += [f"jset %r6, {draw(st.integers(1, 7))}, skip{i}", "add %r0, 1", f"skip{i}:"]
    lines += ["add %r6, 1", f"jlt %r6, {draw(st.integers(1, 40))}, loop", "exit"]
    return lines, draw(st.one_of(st.integers(0, 400), st.just(100_000)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(anchored_loops())
def test_generated_loops_of_anchored_accesses_agree_with_the_interpreter(case):
    lines, budget = case
    same(prog(*lines), budget=budget)
