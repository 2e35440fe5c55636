"""The JIT (pybpf_uring.runtime.engine.jit): the conformance suite, and the interpreter as the oracle.

Every case of the bpf_conformance suite runs through the JIT (read from where BPF_CONFORMANCE_TESTS
says, never copied; without it those tests skip and say so).
Hypothesis-generated programs -- ALU of every width and form, loads/stores/atomics that may
fault, forward and backward jumps, helper calls, local calls -- must give the same r0, the same
memory, the same fault (type, instruction index and message) in both engines, at any budget.
Programs compiled by this project run in both, and a few in the kernel as a third opinion.
"""
from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernel_harness import compiled
from pybpf_uring.bpf import isa
from pybpf_uring import conformance
from pybpf_uring.conformance import assemble, read_case
from pybpf_uring.runtime.engine import (BpfFault, BudgetExceeded, Interpreter, InvalidProgram,
                                Memory)
from pybpf_uring.runtime.engine import jit as jit_module
from pybpf_uring.runtime.engine.jit import Jit, select_engine

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
SUITE = conformance.cases_dir()
CASES = sorted(SUITE.glob("*.data")) if SUITE else []
needs_suite = pytest.mark.skipif(SUITE is None, reason=conformance.CASES_MISSING)
I = isa.Instruction


def prog(*lines: str) -> bytes:
    return assemble(enumerate(lines, start=1))[0]


# ---------------------------------------------------------------------------------------------
# The conformance suite

@needs_suite
@pytest.mark.parametrize("path", CASES or [None], ids=lambda p: p.stem if p else "no-suite")
def test_conformance_case(path):
    case = read_case(path)
    if case.needs_callx:
        pytest.skip("callx is not part of RFC 9669")
    outcome = conformance.run_case(case, engine=jit_module.execute)
    assert outcome.passed, outcome.describe()


@needs_suite
def test_conformance_score_is_312_of_312():
    result = conformance.run_suite(SUITE, engine=jit_module.execute)
    assert result.score == "312/312", [o.describe() for o in result.failures]
    assert [p.name for p in result.skipped] == ["callx.data"]


def test_plugin_protocol():
    program = prog("ldxb %r0, [%r1+1]", "add %r0, %r2", "exit")
    out, err = io.StringIO(), io.StringIO()
    hexed = " ".join(f"{b:02x}" for b in program)
    assert conformance.plugin_main(["05 07 09", "--jit"], io.StringIO(hexed), out, err) == 0
    assert out.getvalue().strip() == "a" and err.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert conformance.plugin_main(["--jit"], io.StringIO(hexed), out, err) == 1
    assert "null pointer" in err.getvalue()


# ---------------------------------------------------------------------------------------------
# Both engines on one program: the comparison every test below makes

def outcome(engine_class, program, *, mem: bytes = bytes(64), budget: int = 10_000,
            helpers=None, args=None, **kw):
    """(r0 or the fault as (type, index, message), the memory afterwards, executed)."""
    memory = Memory()
    region = memory.map(bytearray(mem), "mem")
    ro = memory.map(b"\x11\x22\x33\x44\x55\x66\x77\x88", "rodata", writable=False)
    ctx = memory.map(bytearray(16), "ctx", fields=[(0, 8), (8, 4), (12, 4)])
    engine = engine_class(program, memory=memory, helpers=helpers or _helpers(), budget=budget,
                          **kw)
    try:
        result = engine.run(*(args or (region.base, len(mem), ro.base, ctx.base)))
        executed = engine.executed
    except BpfFault as exc:
        result, executed = (type(exc).__name__, exc.insn_index, str(exc)), None
    return result, bytes(region.buf), bytes(ctx.buf), executed


def _helpers():
    def write_r2_at_r1(memory, r1, r2, r3, r4, r5):
        memory.write(r1, struct.pack("<Q", r2))
        return (r2 * 3 + r3) & M64

    def sum_args(memory, r1, r2, r3, r4, r5):
        return (r1 + 2 * r2 + 3 * r3 + 5 * r4 + 7 * r5) & M64

    return {1: write_r2_at_r1, 2: sum_args}


def same(program, **kw):
    expected = outcome(Interpreter, program, **kw)
    got = outcome(Jit, program, **kw)
    assert got == expected
    return got


# ---------------------------------------------------------------------------------------------
# Semantics that interpreters get wrong, each checked against the interpreter

SEMANTICS = [
    ["mov %r0, 7", "mov %r1, 0", "div %r0, %r1", "exit"],
    ["lddw %r0, -1", "mov %r1, 0", "div32 %r0, %r1", "exit"],
    ["lddw %r0, 0x1234567800000005", "mov %r1, 0", "mod %r0, %r1", "exit"],
    ["lddw %r0, 0x1234567800000005", "mov %r1, 0", "mod32 %r0, %r1", "exit"],
    ["mov %r0, 1", "mov %r1, 65", "lsh %r0, %r1", "exit"],
    ["mov %r0, 1", "mov %r1, 33", "lsh32 %r0, %r1", "exit"],
    ["lddw %r0, 0x8000000000000000", "rsh %r0, 127", "exit"],
    ["mov32 %r0, 0x80000000", "arsh32 %r0, 4", "exit"],
    ["mov %r0, -7", "smod %r0, 2", "exit"],
    ["mov32 %r0, -7", "smod32 %r0, 2", "exit"],
    ["lddw %r0, 0x8000000000000000", "sdiv %r0, -1", "exit"],
    ["lddw %r0, 0x8000000000000000", "smod %r0, -1", "exit"],
    ["mov32 %r0, 0x80000000", "sdiv32 %r0, -1", "exit"],
    ["mov %r0, -7", "mov %r1, 0", "smod %r0, %r1", "exit"],
    ["mov32 %r0, -1", "exit"],
    ["mov %r0, 0", "add %r0, -1", "exit"],
    ["mov32 %r0, 1", "neg32 %r0", "exit"],
    ["mov %r1, 0x1ff", "movsx864 %r0, %r1", "exit"],
    ["mov %r1, 0x18000", "movsx1632 %r0, %r1", "exit"],
    ["lddw %r1, 0x80000000", "movsx3264 %r0, %r1", "exit"],
    ["lddw %r0, 0x0102030405060708", "be16 %r0", "exit"],
    ["lddw %r0, 0x0102030405060708", "le32 %r0", "exit"],
    ["lddw %r0, 0x0102030405060708", "bswap64 %r0", "exit"],
    ["mov %r0, 5", "stxdw [%r10-8], %r0", "mov %r0, 9", "mov %r2, 5",
     "lock cmpxchg [%r10-8], %r2", "exit"],
    ["mov %r0, 0", "lddw %r2, 0x100000001", "jeq32 %r2, 1, +1", "exit", "mov %r0, 1", "exit"],
    ["mov %r0, 0", "mov %r2, -1", "jsgt %r2, 0, +1", "mov %r0, 2", "exit"],
    ["mov %r0, 0", "mov %r2, 3", "jset32 %r2, 2, +1", "exit", "mov %r0, 9", "exit"],
]


@pytest.mark.parametrize("lines", SEMANTICS, ids=lambda lines: " / ".join(lines[:3]))
def test_semantics_match_the_interpreter(lines):
    same(prog(*lines))


def test_gotol_and_sign_extending_loads():
    gotol = isa.encode([I(isa.ALU64 | isa.MOV, 0, imm=1), I(isa.JMP32 | isa.JA, imm=1),
                        I(isa.ALU64 | isa.MOV, 0, imm=2), I(isa.EXIT_OPCODE)])
    assert same(gotol)[0] == 1
    same(prog("ldxsb %r0, [%r1+0]", "ldxsh %r2, [%r1+2]", "add %r0, %r2", "ldxsw %r2, [%r1+4]",
              "add %r0, %r2", "exit"), mem=b"\x80\x00\x01\x90\xff\xff\xff\xf0" + bytes(56))


def test_a_loop_no_run_can_enter_is_not_lifted():
    """Found by test_random_programs_match_the_interpreter: slots 0-2 loop for ever, so the loop
    at slots 3-8 (a memory access through r9, which hoists its translation) is unreachable; its
    entry block branched to a header block that was never emitted, and LLVM refused the IR."""
    same(prog("mov %r9, %r1", "add32 %r0, 0", "ja -3", "add32 %r0, 0", "jeq %r0, 0, -5",
              "add32 %r0, 0", "ldxb %r0, [%r9+0]", "add32 %r0, %r0", "jeq %r0, 0, -6",
              "add32 %r0, 0", "exit"), budget=10_000)


def test_a_reachable_block_in_an_unreachable_loop_hoists_nothing():
    """Slot 2 lies in the range of the loop that slot 4 jumps back to (slots 1-4) and is reached
    by slot 0's jump, but the loop's header is not: its access through r1 read the translation
    the loop's entry would have made, and LLVM refused the IR (use of undefined value)."""
    same(prog("ja +1", "mov %r0, 0", "ldxdw %r0, [%r1+0]", "exit", "ja -4"),
         mem=b"\x07" + bytes(63))


# ---------------------------------------------------------------------------------------------
# Faults: same type, instruction and words

FAULTS = [
    ("null", ["ldxdw %r0, [%r5+0]", "exit"]),
    ("out of bounds read", ["ldxdw %r0, [%r1+60]", "exit"]),
    ("below a region", ["ldxb %r0, [%r1-1]", "exit"]),
    ("out of bounds store", ["mov %r0, 1", "stw [%r1+62], 7", "exit"]),
    ("read-only", ["stb [%r3+0], 1", "exit"]),
    ("read-only data reads fine", ["ldxw %r0, [%r3+4]", "exit"]),
    ("ctx field-exact ok", ["ldxw %r0, [%r4+8]", "stxdw [%r4+0], %r1", "exit"]),
    ("ctx misaligned field", ["ldxw %r0, [%r4+4]", "exit"]),
    ("stack overrun", ["ldxdw %r0, [%r10+0]", "exit"]),
    ("stack via pointer", ["mov %r6, %r10", "add %r6, -600", "ldxdw %r0, [%r6+0]", "exit"]),
    ("atomic on read-only", ["mov %r2, 1", "lock add [%r3+0], %r2", "exit"]),
    ("atomic out of bounds", ["mov %r2, 1", "lock fetch add [%r1+64], %r2", "exit"]),
    ("helper gets bad buffer", ["mov %r1, 8", "call 1", "exit"]),
    ("ran off the end", ["mov %r0, 1"]),
]


@pytest.mark.parametrize("lines", [f[1] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_faults_match_the_interpreter(lines):
    same(prog(*lines))


def test_budget_exceeded_at_the_interpreters_instruction_for_every_budget():
    """Stores, helper calls and atomics before the point happen; after it they do not."""
    program = prog("mov %r6, %r1", "mov %r7, 0", "loop:", "stxdw [%r6+0], %r7",
                   "add %r7, 1", "mov %r1, %r6", "add %r1, 8", "mov %r2, %r7", "call 1",
                   "lock add [%r6+16], %r7", "stxb [%r6+24], %r7", "jlt %r7, 5, loop",
                   "mov %r0, %r7", "exit")
    for budget in range(0, 60):
        same(program, budget=budget)


def test_local_calls_frames_and_depth():
    # r6-r9 preserved, r1-r5 and r0 are the callee's, each frame its own zeroed stack.
    program = prog("mov %r6, 6", "mov %r0, 1", "stdw [%r10-8], 77", "call local sub",
                   "ldxdw %r7, [%r10-8]", "add %r0, %r7", "add %r0, %r6", "add %r0, %r1",
                   "exit", "sub:", "ldxdw %r3, [%r10-8]", "mov %r6, 100", "add %r0, %r3",
                   "mov %r1, 1000", "stdw [%r10-8], 5", "exit")
    assert same(program)[0] == 1 + 77 + 6 + 1000
    recursive = prog("f:", "add %r0, 1", "call local f", "exit")
    result = same(recursive)[0]
    assert result[0] == "BpfFault" and "stack overflow" in result[2]


def test_helper_errors_propagate():
    class Boom(Exception):
        pass

    def boom(memory, *args):
        raise Boom("helper exploded")
    with pytest.raises(Boom):
        Jit(prog("call 1", "exit"), helpers={1: boom}).run()
    with pytest.raises(InvalidProgram, match="unknown helper 9"):
        Jit(prog("call 9", "exit"))


def test_kfuncs_are_called_like_helpers():
    program = isa.encode([I(isa.ALU64 | isa.MOV, 1, imm=20),
                          I(isa.CALL_OPCODE, src=isa.CALL_KFUNC, imm=77), I(isa.EXIT_OPCODE)])
    kfuncs = {77: lambda memory, r1, *_: r1 + 1}
    assert Jit(program, kfuncs=kfuncs).run() == 21 == Interpreter(program, kfuncs=kfuncs).run()
    with pytest.raises(InvalidProgram, match="unknown kfunc 77"):
        Jit(program)


def test_helper_that_maps_a_region_is_seen_by_the_program():
    memory = Memory()

    def make_buffer(mem, *args):
        return mem.map(bytearray(b"\x2a" + bytes(7)), "fresh").base
    jit = Jit(prog("call 1", "ldxb %r0, [%r0+0]", "exit"), memory=memory,
              helpers={1: make_buffer})
    assert jit.run() == 42


def test_helpers_that_map_and_unmap_regions_mid_run():
    """A hash map's churn: every new key maps a region, a delete unmaps one."""
    def helpers():
        made = []

        def make(memory, r1, *_):
            made.append(memory.map(bytearray([r1 & 0xFF] * 8), f"value {len(made)}"))
            return made[-1].base

        def drop(memory, *_):
            memory.unmap(made.pop(0))
            return 0
        return {3: make, 4: drop}
    program = prog("mov %r6, 0", "mov %r7, 0", "loop:", "mov %r1, %r6", "call 3",
                   "ldxb %r2, [%r0+7]", "add %r7, %r2", "mov %r8, %r0", "call 4",
                   "add %r6, 1", "jlt %r6, 50, loop", "ldxb %r0, [%r8+0]", "exit")
    for budget in (77, 300, 10_000):
        results = [outcome(engine, program, helpers=helpers(), budget=budget)
                   for engine in (Interpreter, Jit)]
        assert results[1] == results[0]
    assert "no region is mapped" in results[0][0][2]


def test_regions_mapped_between_runs_and_close_releases_buffers():
    memory = Memory()
    first = memory.map(bytearray(b"\x01" + bytes(7)), "first")
    jit = Jit(prog("ldxb %r0, [%r1+0]", "exit"), memory=memory)
    assert jit.run(first.base) == 1
    first.buf[:] = b"\x05" + bytes(7)          # same-length writes while the JIT holds it
    assert jit.run(first.base) == 5
    second = memory.map(bytearray(b"\x07"), "second")
    assert jit.run(second.base) == 7
    memory.unmap(second)
    with pytest.raises(BpfFault, match="no region is mapped"):
        jit.run(second.base)
    jit.close()
    first.buf.extend(b"more")                   # no export left behind


def test_ctx_fields_are_served_without_the_host(monkeypatch):
    memory = Memory()
    ctx = memory.map(bytearray(range(16)), "ctx", fields=[(0, 8), (8, 4), (12, 4)])
    jit = Jit(prog("ldxw %r0, [%r1+8]", "stxw [%r1+12], %r0", "ldxdw %r2, [%r1+0]",
                   "add %r0, %r2", "exit"), memory=memory)

    def no_host(*args):
        raise AssertionError("a field access went to the host")
    monkeypatch.setattr(memory, "load", no_host)
    monkeypatch.setattr(memory, "store", no_host)
    assert jit.run(ctx.base) == 0x0B0A0908 + 0x0706050403020100
    assert ctx.buf[12:] == bytes([8, 9, 10, 11])


def test_unchecked_runs_proven_programs_the_same():
    program = prog("mov %r0, 0", "mov %r6, 0", "loop:", "mov %r2, %r6", "lsh %r2, 3",
                   "mov %r3, %r1", "add %r3, %r2", "ldxdw %r4, [%r3+0]", "add %r0, %r4",
                   "add %r4, 1", "stxdw [%r3+0], %r4", "add %r6, 1", "jlt %r6, 8, loop", "exit")
    mem = bytes(range(64))
    expected = outcome(Interpreter, program, mem=mem)
    assert outcome(Jit, program, mem=mem, unchecked=True) == expected
    assert outcome(Jit, program, mem=mem) == expected


def test_select_engine():
    program = prog("mov %r0, 3", "exit")
    choice = select_engine(program)
    assert choice.kind == "jit" and choice.reason is None and choice.engine.run() == 3
    traced = select_engine(program, trace=True)
    assert traced.kind == "interpreter" and "tracing" in traced.reason
    assert traced.engine.run() == 3
    with pytest.raises(InvalidProgram):          # both engines refuse it: no fallback
        select_engine(b"\xff" + bytes(7))


def test_select_engine_falls_back_with_the_reason(monkeypatch):
    program = prog("mov %r0, 4", "exit")
    monkeypatch.setattr(jit_module, "jit_available", lambda: "llvmlite is not installed (test)")
    choice = select_engine(program)
    assert (choice.kind, choice.reason) == ("interpreter", "llvmlite is not installed (test)")
    monkeypatch.undo()

    def refuse(self, text, name, level=1):
        raise RuntimeError("LLVM ERROR: (test)")
    monkeypatch.setattr(jit_module._Compiler, "compile", refuse)
    choice = select_engine(program)
    assert choice.kind == "interpreter" and "LLVM refused" in choice.reason
    assert choice.engine.run() == 4


def test_lddw_forms_need_a_resolver():
    program = isa.encode([I.lddw(0, 3, src=isa.PSEUDO_MAP_IDX), I(isa.EXIT_OPCODE)])
    with pytest.raises(InvalidProgram, match="resolver"):
        Jit(program)
    assert Jit(program, resolve_lddw=lambda src, imm, hi: 0xABC).run() == 0xABC


def test_large_programs_start_at_tier_0_and_tier_up_when_hot(monkeypatch):
    monkeypatch.setattr(jit_module, "TIER_LINES", 0)
    monkeypatch.setattr(jit_module, "HOT_INSTRUCTIONS", 1000)
    program = prog("mov %r0, 0", "loop:", "add %r0, 3", "sub %r1, 1", "jne %r1, 0, loop", "exit")
    jit = Jit(program, cache=False)
    assert jit.tier == 0
    assert jit.run(100) == 300 and jit.tier == 0
    assert jit.run(400) == 1200 and jit.tier == 1      # 1500 instructions so far: hot
    assert jit.run(5) == 15 and jit.executed == 17
    with pytest.raises(BudgetExceeded):
        Jit(program, cache=False, budget=50).run(1 << 40)


def test_stages_can_be_dumped():
    jit = Jit(prog("mov %r0, 2", "add %r0, 3", "exit"))
    assert "define i64 @" in jit.dump("ir") and "alloca" in jit.dump("ir")
    assert "alloca" not in jit.dump("ir-opt")
    assert "ret" in jit.dump("asm")
    with pytest.raises(ValueError, match="stage"):
        jit.dump("bytes")


def test_compile_time_is_small():
    """Not the benchmark: a floor far above the ~10 ms measured, so only a regression fails."""
    jit = Jit(prog("mov %r0, 0", "mov %r2, 41", "loop:", "add %r0, %r2", "sub %r2, 1",
                   "jne %r2, 0, loop", "exit"))
    assert jit.run() == sum(range(42)) and jit.compile_seconds < 1.0


# ---------------------------------------------------------------------------------------------
# Hypothesis: random programs, the interpreter as oracle

_VALUES = st.integers(0, M64) | st.sampled_from(
    [0, 1, 2, 7, M64, M64 - 1, 1 << 63, (1 << 63) - 1, M32, 1 << 31, (1 << 31) - 1, 0x80])
_IMMS = st.integers(-(1 << 31), (1 << 31) - 1) | st.sampled_from([0, 1, -1, 31, 32, 63, 64, 8])
_ALU_FORMS = [(op, off) for op in (isa.ADD, isa.SUB, isa.MUL, isa.OR, isa.AND, isa.LSH, isa.RSH,
                                   isa.XOR, isa.MOV, isa.ARSH) for off in (0,)]
_ALU_FORMS += [(isa.DIV, 0), (isa.DIV, 1), (isa.MOD, 0), (isa.MOD, 1)]
_JUMPS = sorted(isa.CONDITIONAL_JUMPS) + [isa.JA]


@st.composite
def _alu(draw):
    cls = draw(st.sampled_from([isa.ALU, isa.ALU64]))
    dst = draw(st.integers(0, 8))
    kind = draw(st.sampled_from(["op", "op", "op", "neg", "movsx", "end"]))
    if kind == "neg":
        return [I(cls | isa.NEG, dst)]
    if kind == "end":
        src = draw(st.sampled_from([isa.K, isa.X])) if cls == isa.ALU else isa.K
        return [I(cls | isa.END | src, dst, imm=draw(st.sampled_from([16, 32, 64])))]
    if kind == "movsx":
        widths = [8, 16, 32] if cls == isa.ALU64 else [8, 16]
        return [I(cls | isa.MOV | isa.X, dst, draw(st.integers(0, 10)),
                  off=draw(st.sampled_from(widths)))]
    op, off = draw(st.sampled_from(_ALU_FORMS))
    if draw(st.booleans()):
        return [I(cls | op | isa.X, dst, draw(st.integers(0, 10)), off=off)]
    return [I(cls | op, dst, off=off, imm=draw(_IMMS))]


@st.composite
def _memory(draw):
    size = draw(st.sampled_from([isa.B, isa.H, isa.W, isa.DW]))
    width = isa.SIZE_BYTES[size]
    base = draw(st.sampled_from([9, 9, 9, 10, 10, 3, 4, draw(st.integers(0, 8))]))
    if base == 10:
        off = draw(st.integers(-520, 8))
    else:
        off = draw(st.integers(0, 56) | st.integers(0, 56) | st.integers(-4, 68))
    form = draw(st.sampled_from(["ldx", "ldxs", "st", "stx", "atomic"]))
    reg = draw(st.integers(0, 8))
    if form == "ldx":
        return [I(isa.LDX | isa.MEM | size, reg, base, off)]
    if form == "ldxs" and width < 8:
        return [I(isa.LDX | isa.MEMSX | size, reg, base, off)]
    if form == "st":
        return [I(isa.ST | isa.MEM | size, base, 0, off, draw(_IMMS))]
    if form == "atomic" and width >= 4:
        imm = draw(st.sampled_from([0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1, 0xF1]))
        return [I(isa.STX | isa.ATOMIC | size, base, reg, off, imm)]
    return [I(isa.STX | isa.MEM | size, base, reg, off)]


@st.composite
def _other(draw):
    kind = draw(st.sampled_from(["lddw", "call", "call"]))
    if kind == "lddw":
        return [I.lddw(draw(st.integers(0, 8)), draw(_VALUES))]
    # helper 1 writes r2 at r1 (r1 is often not a buffer: a helper fault), 2 sums r1-r5
    prep = [I(isa.ALU64 | isa.MOV | isa.X, 1, 9), I(isa.ALU64 | isa.ADD, 1, imm=draw(
        st.integers(-8, 64)))] if draw(st.booleans()) else []
    return prep + [I(isa.CALL_OPCODE, imm=draw(st.sampled_from([1, 2])))]


@st.composite
def random_program(draw):
    """Straight-line pieces plus jumps anywhere (backward ones make loops the budget stops)."""
    pieces = draw(st.lists(st.one_of(_alu(), _alu(), _memory(), _memory(), _other(),
                                     st.just(["jump"])), min_size=1, max_size=30))
    prologue = [I(isa.ALU64 | isa.MOV | isa.X, 9, 1)]
    prologue += [I.lddw(r, draw(_VALUES)) for r in range(0, 9) if r != 1 and draw(st.booleans())]
    flat: list = list(prologue)
    for piece in pieces:
        flat.extend(piece)
    flat.append(I(isa.EXIT_OPCODE))
    slots = isa.slot_indexes([i if i != "jump" else I(0) for i in flat])
    out = []
    for index, item in enumerate(flat):
        if item == "jump":
            target = slots[draw(st.integers(0, len(flat) - 1))]
            op = draw(st.sampled_from(_JUMPS))
            if op == isa.JA:
                item = I(isa.JMP | isa.JA, off=target - slots[index] - 1)
            else:
                cls = draw(st.sampled_from([isa.JMP, isa.JMP32]))
                if draw(st.booleans()):
                    item = I(cls | op | isa.X, draw(st.integers(0, 9)), draw(st.integers(0, 10)),
                             off=target - slots[index] - 1)
                else:
                    item = I(cls | op, draw(st.integers(0, 9)), off=target - slots[index] - 1,
                             imm=draw(_IMMS))
        out.append(item)
    return isa.encode(out)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=random_program(), budget=st.one_of(st.just(10_000), st.integers(2, 150)),
       mem=st.binary(min_size=64, max_size=64))
def test_random_programs_match_the_interpreter(program, budget, mem):
    same(program, budget=budget, mem=mem)


@st.composite
def program_with_calls(draw):
    """A main function and two subprograms calling each other (and themselves) at random."""
    def body(n):
        return [x for piece in draw(st.lists(st.one_of(_alu(), _memory()), max_size=n))
                for x in piece]
    main, f, g = body(6), body(5), body(5)
    layout = [("main", main), ("f", f), ("g", g)]
    starts, slot = {}, 0
    for name, insns in layout:
        starts[name] = slot
        slot += isa.slot_count(insns) + 2      # a call and an exit per function
    out, slot = [], 0
    for name, insns in layout:
        out.extend(insns)
        slot += isa.slot_count(insns)
        callee = draw(st.sampled_from(["f", "g"]))
        out.append(I(isa.CALL_OPCODE, src=isa.CALL_PSEUDO, imm=starts[callee] - slot - 1))
        out.append(I(isa.EXIT_OPCODE))
        slot += 2
    return isa.encode(out)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=program_with_calls(), budget=st.one_of(st.just(10_000), st.integers(2, 80)))
def test_programs_with_local_calls_match_the_interpreter(program, budget):
    same(program, budget=budget)


# ---------------------------------------------------------------------------------------------
# Programs compiled by this project (and the kernel as a third opinion)

from test_interpreter import COMPILED  # noqa: E402 - one program, both engines judged on it


DIGEST = """
from pybpf_uring import syscall, Struct, i32, i64, u8, u32, u64

class Buf(Struct):
    data: u8[32]
    seed: u64
    out: u64[4]

@syscall
def digest(ctx: Buf) -> i32:
    data = ctx.data
    h = ctx.seed
    rot = 0
    for i in range(32):
        h = (h ^ data[i]) * 1099511628211
        rot += h >> 59
    out = ctx.out
    out[0] = h
    out[1] = rot
    out[2] = h % 1000003
    out[3] = h >> 7
    ctx.out = out
    return i32(h & 0x7fffffff)
"""



def _args(namespace, rnd):
    return namespace["Args"](
        data=(namespace["u32"].ctype * 12)(*(rnd.choice([0, 1, 2, 7, M32, rnd.getrandbits(32)])
                                             for _ in range(12))),
        k=rnd.choice([0, 1, -1, -7, 2**63 - 1, -2**63, rnd.getrandbits(63)]),
        small=rnd.getrandbits(8))


def _run_both(instructions, raw: bytes):
    results = []
    for engine_class in (Interpreter, Jit):
        memory = Memory()
        ctx = memory.map(bytearray(raw), "ctx")
        results.append((engine_class(instructions, memory=memory).run(ctx.base), bytes(ctx.buf)))
    return results


@pytest.mark.parametrize("cpu", ["v3", "v4"])
def test_compiled_programs_match_the_interpreter(cpu):
    import random
    obj, namespace = compiled(COMPILED, cpu=cpu)
    instructions = obj.program("crunch").linked().instructions
    rnd = random.Random(11)
    for _ in range(25):
        interpreted, jitted = _run_both(instructions, bytes(_args(namespace, rnd)))
        assert jitted == interpreted


@pytest.mark.kernel("syscall_programs")
def test_compiled_program_matches_the_kernel_and_the_interpreter():
    import random
    obj, namespace = compiled(COMPILED, cpu="v4")
    instructions = obj.program("crunch").linked().instructions
    rnd = random.Random(5)
    with obj.load() as live:
        program = live.programs["crunch"]
        for _ in range(15):
            args = _args(namespace, rnd)
            raw = bytes(args)
            expected = program.test_run(ctx=args)
            interpreted, jitted = _run_both(instructions, raw)
            assert jitted == interpreted
            assert jitted[0] & M32 == expected.retval
            assert jitted[1] == bytes(expected.ctx)


@pytest.mark.kernel("syscall_programs")
@pytest.mark.parametrize("cpu", ["v3", "v4"])
def test_hash_loop_matches_the_kernel_and_the_interpreter(cpu):
    import random
    obj, namespace = compiled(DIGEST, cpu=cpu)
    instructions = obj.program("digest").linked().instructions
    rnd = random.Random(9)
    with obj.load() as live:
        program = live.programs["digest"]
        for _ in range(10):
            args = namespace["Buf"](data=(namespace["u8"].ctype * 32)(*rnd.randbytes(32)),
                                    seed=rnd.getrandbits(64))
            expected = program.test_run(ctx=args)
            interpreted, jitted = _run_both(instructions, bytes(args))
            assert jitted == interpreted
            assert (jitted[0] & M32, jitted[1]) == (expected.retval, bytes(expected.ctx))
