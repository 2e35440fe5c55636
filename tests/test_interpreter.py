"""The interpreter: a semantics table, faults that name their instruction, calls and frames,
and hypothesis-generated ALU programs checked against a reference model written here.

Programs are written in the conformance suite's assembler syntax (`pybpf_uring.conformance.
assemble`) so a failing case reads like the suite's own files.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from kernel_harness import compiled
from pybpf_uring.conformance import assemble
from pybpf_uring.runtime.engine import (BpfFault, BudgetExceeded, Interpreter, InvalidProgram, Memory,
                                MemoryFault)

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


def prog(*lines: str) -> bytes:
    program, _ = assemble(enumerate(lines, start=1))
    return program


def run(*lines: str, args: tuple[int, ...] = (), **kw) -> int:
    return Interpreter(prog(*lines), **kw).run(*args)


# ---------------------------------------------------------------------------------------------
# Semantics (RFC 9669 section 4), each row one rule interpreters get wrong.

SEMANTICS = [
    ("div64 by zero gives 0", ["mov %r0, 7", "mov %r1, 0", "div %r0, %r1", "exit"], 0),
    ("div32 by zero gives 0", ["lddw %r0, -1", "mov %r1, 0", "div32 %r0, %r1", "exit"], 0),
    ("mod64 by zero leaves dst", ["lddw %r0, 0x1234567800000005", "mov %r1, 0", "mod %r0, %r1",
                                  "exit"], 0x1234567800000005),
    ("mod32 by zero zero-extends dst", ["lddw %r0, 0x1234567800000005", "mov %r1, 0",
                                        "mod32 %r0, %r1", "exit"], 5),
    ("lsh64 count masked to 63", ["mov %r0, 1", "mov %r1, 65", "lsh %r0, %r1", "exit"], 2),
    ("lsh32 count masked to 31", ["mov %r0, 1", "mov %r1, 33", "lsh32 %r0, %r1", "exit"], 2),
    ("rsh64 imm masked", ["lddw %r0, 0x8000000000000000", "rsh %r0, 127", "exit"], 1),
    ("arsh32 sign-extends within 32 bits", ["mov32 %r0, 0x80000000", "arsh32 %r0, 4", "exit"],
     0xF8000000),
    ("arsh64", ["lddw %r0, 0x8000000000000000", "arsh %r0, 63", "exit"], M64),
    ("smod truncates like C (dividend's sign)", ["mov %r0, -7", "smod %r0, 2", "exit"], M64),
    ("smod positive by negative", ["mov %r0, 7", "smod %r0, -2", "exit"], 1),
    ("smod32 truncates", ["mov32 %r0, -7", "smod32 %r0, 2", "exit"], M32),
    ("sdiv truncates towards zero", ["mov %r0, -7", "sdiv %r0, 2", "exit"], (-3) & M64),
    ("sdiv INT_MIN / -1 wraps", ["lddw %r0, 0x8000000000000000", "sdiv %r0, -1", "exit"], 1 << 63),
    ("smod INT_MIN % -1 is 0", ["lddw %r0, 0x8000000000000000", "smod %r0, -1", "exit"], 0),
    ("sdiv by zero gives 0", ["mov %r0, -7", "mov %r1, 0", "sdiv %r0, %r1", "exit"], 0),
    ("smod by zero leaves dst", ["mov %r0, -7", "mov %r1, 0", "smod %r0, %r1", "exit"],
     (-7) & M64),
    ("32-bit add zero-extends", ["lddw %r0, -1", "add32 %r0, 0", "exit"], M32),
    ("mov32 imm zero-extends", ["mov32 %r0, -1", "exit"], M32),
    ("mov64 imm sign-extends", ["mov %r0, -1", "exit"], M64),
    ("add64 imm sign-extends", ["mov %r0, 0", "add %r0, -1", "exit"], M64),
    ("neg32", ["mov32 %r0, 1", "neg32 %r0", "exit"], M32),
    ("mul32 drops the high half", ["mov32 %r0, 0x10000", "mul32 %r0, 0x10000", "exit"], 0),
    ("movsx864", ["mov %r1, 0x80", "movsx864 %r0, %r1", "exit"], M64 ^ 0x7F),
    ("movsx832 zero-extends the 32-bit result", ["mov %r1, 0x180", "movsx832 %r0, %r1", "exit"],
     0xFFFFFF80),
    ("movsx1664", ["mov %r1, 0x8000", "movsx1664 %r0, %r1", "exit"], M64 ^ 0x7FFF),
    ("movsx3264", ["mov32 %r1, 0x80000000", "movsx3264 %r0, %r1", "exit"], M64 ^ 0x7FFFFFFF),
    ("bswap16 keeps only 16 bits", ["lddw %r0, 0x8877665544332211", "bswap16 %r0", "exit"], 0x1122),
    ("bswap32", ["lddw %r0, 0x8877665544332211", "bswap32 %r0", "exit"], 0x11223344),
    ("bswap64", ["lddw %r0, 0x8877665544332211", "bswap64 %r0", "exit"], 0x1122334455667788),
    ("be16", ["lddw %r0, 0x8877665544332211", "be16 %r0", "exit"], 0x1122),
    ("le16 truncates", ["lddw %r0, 0x8877665544332211", "le16 %r0", "exit"], 0x2211),
    ("le64 is identity", ["lddw %r0, 0x8877665544332211", "le64 %r0", "exit"], 0x8877665544332211),
    ("jgt is unsigned", ["mov %r0, 0", "mov %r1, -1", "jgt %r1, 1, +1", "exit", "mov %r0, 1",
                         "exit"], 1),
    ("jsgt is signed", ["mov %r0, 0", "mov %r1, -1", "jsgt %r1, 1, +1", "exit", "mov %r0, 1",
                        "exit"], 0),
    ("jslt32 looks at 32 bits", ["mov %r0, 0", "lddw %r1, 0x80000000", "jslt32 %r1, 0, +1",
                                 "exit", "mov %r0, 1", "exit"], 1),
    ("jset", ["mov %r0, 0", "mov %r1, 6", "jset %r1, 2, +1", "exit", "mov %r0, 1", "exit"], 1),
    ("ldxsb sign-extends", ["stb [%r10-1], 0x80", "ldxsb %r0, [%r10-1]", "exit"], M64 ^ 0x7F),
    ("ldxsw sign-extends", ["stw [%r10-4], -2", "ldxsw %r0, [%r10-4]", "exit"], (-2) & M64),
    ("stdw imm sign-extends", ["stdw [%r10-8], -1", "ldxdw %r0, [%r10-8]", "exit"], M64),
    ("misaligned access is not a fault", ["stdw [%r10-16], -1", "ldxw %r0, [%r10-13]", "exit"],
     M32),
    ("lock add", ["stdw [%r10-8], 40", "mov %r1, 2", "lock add [%r10-8], %r1",
                  "ldxdw %r0, [%r10-8]", "exit"], 42),
    ("lock fetch add returns the old value", ["stdw [%r10-8], 40", "mov %r1, 2",
                                              "lock fetch add [%r10-8], %r1", "mov %r0, %r1",
                                              "exit"], 40),
    ("lock fetch or32 zero-extends", ["stw [%r10-4], -1", "lddw %r1, -1",
                                      "lock fetch or32 [%r10-4], %r1", "mov %r0, %r1", "exit"],
     M32),
    ("lock xchg", ["stdw [%r10-8], 7", "mov %r1, 9", "lock xchg [%r10-8], %r1",
                   "ldxdw %r0, [%r10-8]", "lsh %r0, 8", "or %r0, %r1", "exit"], 0x907),
    ("cmpxchg compares with r0 and stores on match", [
        "stdw [%r10-8], 5", "mov %r0, 5", "mov %r1, 6", "lock cmpxchg [%r10-8], %r1",
        "ldxdw %r2, [%r10-8]", "lsh %r0, 8", "or %r0, %r2", "exit"], 0x506),
    ("cmpxchg leaves memory on mismatch and loads r0", [
        "stdw [%r10-8], 5", "mov %r0, 4", "mov %r1, 6", "lock cmpxchg [%r10-8], %r1",
        "ldxdw %r2, [%r10-8]", "lsh %r0, 8", "or %r0, %r2", "exit"], 0x505),
    ("cmpxchg32 compares only the low half of r0", [
        "stw [%r10-4], 5", "lddw %r0, 0x100000005", "mov %r1, 6",
        "lock cmpxchg32 [%r10-4], %r1", "ldxw %r0, [%r10-4]", "exit"], 6),
    ("gotol (ja32) jumps by imm", ["mov %r0, 1", "ja32 +1", "mov %r0, 2", "exit"], 1),
    ("lddw full 64 bits", ["lddw %r0, 0xfedcba9876543210", "exit"], 0xFEDCBA9876543210),
]


@pytest.mark.parametrize("lines, expected", [row[1:] for row in SEMANTICS],
                         ids=[row[0] for row in SEMANTICS])
def test_semantics(lines, expected):
    assert run(*lines) == expected


# ---------------------------------------------------------------------------------------------
# Pointers and regions

def test_pointer_arithmetic_and_reloading_a_stored_pointer():
    memory = Memory()
    ctx = memory.map(bytearray(struct.pack("<QQ", 11, 22)), "ctx")
    vm = Interpreter(prog(
        "stxdw [%r10-8], %r1",      # spill the ctx pointer
        "mov %r1, 0",
        "ldxdw %r2, [%r10-8]",      # reload it
        "add %r2, 8",
        "ldxdw %r0, [%r2+0]",
        "exit"), memory=memory)
    assert vm.run(ctx.base) == 22


def test_program_writes_ctx_in_place():
    memory = Memory()
    buf = bytearray(16)
    ctx = memory.map(buf, "ctx")
    Interpreter(prog("stw [%r1+12], 7", "mov %r0, 0", "exit"), memory=memory).run(ctx.base)
    assert struct.unpack_from("<I", buf, 12)[0] == 7


def test_field_restricted_region_allows_only_its_fields():
    memory = Memory()
    ctx = memory.map(bytearray(16), "ctx", fields=[(0, 8), (8, 4), (12, 4)])
    assert Interpreter(prog("stw [%r1+8], 3", "ldxw %r0, [%r1+8]", "exit"),
                       memory=memory).run(ctx.base) == 3
    vm = Interpreter(prog("mov %r0, 0", "ldxh %r0, [%r1+8]", "exit"), memory=memory)
    with pytest.raises(BpfFault) as info:
        vm.run(ctx.base)
    assert info.value.insn_index == 1
    assert "may only be accessed at +0 (8 bytes), +8 (4 bytes), +12 (4 bytes)" in info.value.message


def test_read_only_region_refuses_writes():
    memory = Memory()
    ro = memory.map(bytearray(8), "rodata", writable=False)
    vm = Interpreter(prog("mov %r0, 0", "stb [%r1+0], 1", "exit"), memory=memory)
    with pytest.raises(BpfFault, match="rodata is read-only") as info:
        vm.run(ro.base)
    assert info.value.insn_index == 1


# ---------------------------------------------------------------------------------------------
# Faults: each names the instruction that made it.

def _fault(lines, *, args=(), memory=None, **kw) -> BpfFault:
    vm = Interpreter(prog(*lines), memory=memory, **kw)
    with pytest.raises(BpfFault) as info:
        vm.run(*args)
    return info.value


def test_ctx_read_past_the_end():
    memory = Memory()
    ctx = memory.map(bytearray(16), "ctx")
    fault = _fault(["mov %r0, 0", "ldxdw %r0, [%r1+16]", "exit"], args=(ctx.base,), memory=memory)
    assert fault.insn_index == 1
    assert "read of 8 bytes at ctx+16 is out of bounds (ctx is 16 bytes)" in str(fault)
    assert str(fault).startswith("instruction 1 (r0 = *(u64 *)(r1 + 0x10)): ")   # disassembly


def test_ctx_write_straddling_the_end():
    memory = Memory()
    ctx = memory.map(bytearray(16), "ctx")
    fault = _fault(["mov %r0, 0", "mov %r2, 1", "stxdw [%r1+12], %r2", "exit"], args=(ctx.base,),
                   memory=memory)
    assert fault.insn_index == 2
    assert "write of 8 bytes at ctx+12 is out of bounds" in fault.message


def test_ctx_read_before_the_start():
    memory = Memory()
    ctx = memory.map(bytearray(16), "ctx")
    fault = _fault(["ldxb %r0, [%r1-1]", "exit"], args=(ctx.base,), memory=memory)
    assert fault.insn_index == 0
    assert "ctx-1 is out of bounds" in fault.message


def test_stack_read_above_the_frame():
    fault = _fault(["mov %r0, 0", "ldxdw %r0, [%r10+0]", "exit"])
    assert fault.insn_index == 1
    assert "stack frame 0+512 is out of bounds" in fault.message


def test_stack_write_below_the_frame():
    fault = _fault(["mov %r0, 0", "mov %r1, 0", "stxdw [%r10-520], %r1", "exit"])
    assert fault.insn_index == 2
    assert "stack frame 0-8 is out of bounds" in fault.message


def test_map_value_overrun_through_a_helper_pointer():
    memory = Memory()
    value = memory.map(bytearray(8), "map value")
    helpers = {1: lambda mem, *regs: value.base}          # a map_lookup_elem stand-in
    fault = _fault(["call 1", "ldxw %r1, [%r0+4]", "ldxw %r1, [%r0+8]", "exit"], memory=memory,
                   helpers=helpers)
    assert fault.insn_index == 2
    assert "map value+8 is out of bounds (map value is 8 bytes)" in fault.message


def test_null_dereference():
    fault = _fault(["mov %r1, 0", "mov %r0, 0", "ldxw %r0, [%r1+4]", "exit"])
    assert fault.insn_index == 2
    assert "null pointer dereference" in fault.message


def test_integer_used_as_pointer():
    fault = _fault(["lddw %r1, 0x123400000000", "stw [%r1+0], 1", "exit"])
    assert fault.insn_index == 2               # lddw takes slots 0 and 1
    assert "no region is mapped there" in fault.message


def test_atomic_out_of_bounds():
    fault = _fault(["mov %r1, 1", "lock add [%r10+0], %r1", "exit"])
    assert fault.insn_index == 1


def test_helper_fault_names_the_call():
    def read_past(mem, r1, r2, r3, r4, r5):
        return len(mem.read(r1, r2))
    fault = _fault(["mov %r1, %r10", "add %r1, -8", "mov %r2, 16", "call 7", "exit"],
                   helpers={7: read_past})
    assert fault.insn_index == 3
    assert "get_prandom_u32 (7): read of 16 bytes at stack frame 0+504 is out of bounds" in fault.message


def test_stack_overflow_by_deep_recursion():
    fault = _fault(["call local f", "exit", "f:", "call local f", "exit"])
    assert fault.insn_index == 2
    assert "stack overflow" in fault.message and "limit is 8" in fault.message


def test_budget():
    vm = Interpreter(prog("mov %r0, 0", "loop:", "add %r0, 1", "ja loop", "exit"), budget=1001)
    with pytest.raises(BudgetExceeded) as info:
        vm.run()
    assert info.value.insn_index == 1          # 1 + 500 * 2 instructions: stopped before `add`
    assert "budget of 1001" in info.value.message


def test_budget_is_per_run():
    vm = Interpreter(prog("mov %r0, 3", "exit"), budget=2)
    assert vm.run() == 3 and vm.run() == 3 and vm.executed == 2


def test_running_off_the_end():
    fault = _fault(["mov %r0, 0"])
    assert fault.insn_index == 0
    assert "past the last instruction" in fault.message


# ---------------------------------------------------------------------------------------------
# Calls and frames

def test_call_preserves_r6_to_r9_and_passes_r1_to_r5():
    assert run("mov %r6, 6", "mov %r9, 9", "mov %r1, 1", "mov %r5, 5", "call local f",
               "add %r0, %r6", "add %r0, %r9", "exit",
               "f:", "mov %r0, %r1", "add %r0, %r5", "mov %r6, 100", "mov %r9, 100", "exit") == 21


def test_each_frame_has_its_own_stack_and_callees_reach_the_caller_through_pointers():
    assert run(
        "stdw [%r10-8], 40",
        "mov %r1, %r10", "add %r1, -8",     # pointer to the caller's slot
        "call local f",
        "ldxdw %r0, [%r10-8]",              # the callee wrote through the pointer
        "ldxdw %r1, [%r10-16]",             # ... and its own r10-16 was another frame
        "add %r0, %r1",
        "exit",
        "f:",
        "stdw [%r10-16], 1000",
        "ldxdw %r2, [%r1+0]", "add %r2, 2", "stxdw [%r1+0], %r2",
        "mov %r0, 0", "exit") == 42


def test_callee_frame_starts_zeroed_and_r10_is_restored():
    assert run("stdw [%r10-8], 5", "call local f", "ldxdw %r0, [%r10-8]", "exit",
               "f:", "ldxdw %r0, [%r10-8]", "exit") == 5


def test_helpers_get_memory_and_five_arguments():
    seen = []

    def helper(mem, *args):
        seen.append(args)
        mem.write(args[0], b"\x2a")
        return -1

    result = run("mov %r1, %r10", "add %r1, -1", "mov %r2, 2", "mov %r3, 3", "mov %r4, 4",
                 "mov %r5, 5", "call 9", "ldxb %r1, [%r10-1]", "add %r0, %r1", "exit",
                 helpers={9: helper})
    assert result == 41
    assert seen[0][1:] == (2, 3, 4, 5)


# ---------------------------------------------------------------------------------------------
# Refused programs

@pytest.mark.parametrize("program, index, fragment", [
    (bytes.fromhex("0500050000000000" "9500000000000000"), 0, "outside the program"),
    (bytes.fromhex("0500010000000000" "1800000000000000" "0000000000000000" "9500000000000000"),
     0, "into the middle of an lddw"),
    (bytes.fromhex("1800000000000000"), 0, "lddw is missing its second slot"),
    (bytes.fromhex("b70a000000000000" "9500000000000000"), 0, "r10 is the read-only frame pointer"),
    (bytes.fromhex("8d02000000000000" "9500000000000000"), 0, "callx is not part of RFC 9669"),
    (bytes.fromhex("c31a000002000000" "9500000000000000"), 0,
     "atomic32 (opcode 0xc3): imm 0x2 selects no operation"),
    (bytes.fromhex("d700000008000000" "9500000000000000"), 0,
     "bswap (opcode 0xd7): imm 0x8 selects no operation (allowed: 0x10, 0x20, 0x40)"),
    (bytes.fromhex("bc01200000000000" "9500000000000000"), 0, "offset field is 32"),
    (bytes.fromhex("b701000000000000"[:-2]), None, "not a whole number"),
])
def test_invalid_programs(program, index, fragment):
    with pytest.raises(InvalidProgram) as info:
        Interpreter(program)
    assert info.value.insn_index == index
    assert fragment in str(info.value)


def test_unknown_helper_is_refused_at_load():
    with pytest.raises(InvalidProgram, match="unknown helper 99"):
        Interpreter(prog("call 99", "exit"))


def test_memory_helpers_fault_cleanly():
    memory = Memory()
    region = memory.map(bytearray(4), "buf")
    memory.write(region.base, b"ab")
    assert memory.read(region.base, 4) == b"ab\0\0"
    with pytest.raises(MemoryFault, match="out of bounds"):
        memory.read(region.base + 2, 3)
    memory.unmap(region)
    with pytest.raises(MemoryFault, match="no region"):
        memory.read(region.base, 1)


# ---------------------------------------------------------------------------------------------
# Straight-line ALU programs against an independent reference model.
#
# The model works on Python ints with explicit two's-complement conversions and C-style
# truncating division, which is a different route from the interpreter's templates.

def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _model(op: str, bits: int, a: int, b: int, off: int) -> int:
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    sa, sb = _signed(a, bits), _signed(b, bits)
    if op == "add":
        r = a + b
    elif op == "sub":
        r = a - b
    elif op == "mul":
        r = sa * sb
    elif op == "div":
        r = (a // b if b else 0) if off == 0 else (_c_div(sa, sb) if sb else 0)
    elif op == "mod":
        if off == 0:
            r = a % b if b else a
        else:
            r = sa - sb * _c_div(sa, sb) if sb else a
    elif op == "or":
        r = a | b
    elif op == "and":
        r = a & b
    elif op == "xor":
        r = a ^ b
    elif op == "lsh":
        r = a << (b % bits)
    elif op == "rsh":
        r = a >> (b % bits)
    elif op == "arsh":
        r = sa >> (b % bits)
    elif op == "neg":
        r = -sa
    elif op == "mov":
        r = b if off == 0 else _signed(b, off)
    else:
        raise AssertionError(op)
    return r & mask


_OPCODES = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
            "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
            "arsh": 0xC0}


@st.composite
def alu_insn(draw):
    op = draw(st.sampled_from(sorted(_OPCODES)))
    wide = draw(st.booleans())
    use_reg = op != "neg" and draw(st.booleans())
    off = 0
    if op in ("div", "mod"):
        off = draw(st.sampled_from([0, 1]))
    if op == "mov" and use_reg:
        off = draw(st.sampled_from([0, 8, 16, 32] if wide else [0, 8, 16]))
    imm = 0 if op == "neg" or use_reg else draw(st.one_of(
        st.integers(-(1 << 31), (1 << 31) - 1), st.sampled_from([0, -1, 1, 31, 32, 63, 64])))
    return op, wide, use_reg, draw(st.integers(0, 9)), draw(st.integers(0, 9)), off, imm


def _encode(op, wide, use_reg, dst, src, off, imm) -> bytes:
    opcode = (0x07 if wide else 0x04) | _OPCODES[op] | (0x08 if use_reg else 0)
    return struct.pack("<BBhi", opcode, (src if use_reg else 0) << 4 | dst, off, imm)


@settings(max_examples=300, deadline=None)
@given(init=st.lists(st.integers(0, M64) | st.sampled_from([0, 1, M64, 1 << 63, M32, 1 << 31]),
                     min_size=10, max_size=10),
       body=st.lists(alu_insn(), min_size=1, max_size=25))
def test_alu_programs_match_the_reference_model(init, body):
    code = b"".join(struct.pack("<BBhi", 0x18, r, 0, _signed(v, 32)) +
                    struct.pack("<BBhi", 0, 0, 0, _signed(v >> 32, 32)) for r, v in enumerate(init))
    code += b"".join(_encode(*insn) for insn in body) + bytes.fromhex("9500000000000000")
    regs = list(init)
    for op, wide, use_reg, dst, src, off, imm in body:
        bits = 64 if wide else 32
        b = regs[src] if use_reg else imm & M64        # an imm is sign-extended first
        regs[dst] = _model(op, bits, regs[dst], b, off)
    vm = Interpreter(code)
    assert vm.run() == regs[0]
    assert vm.regs[:10] == regs


# ---------------------------------------------------------------------------------------------
# Block compilation against single-stepping: random programs with branches, loops, stack
# accesses (some out of bounds) and small budgets must behave identically in both modes --
# same result or same fault at the same slot, same registers, same stack, same count.

_COND_OPS = [0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0]


@st.composite
def mixed_program(draw):
    init = draw(st.lists(st.integers(0, M64), min_size=10, max_size=10))
    length = draw(st.integers(1, 30))
    base = 20                                    # ten lddw, two slots each
    body = []
    for pc in range(base, base + length):
        kind = draw(st.sampled_from(["alu", "alu", "jump", "load", "store", "atomic", "call"]))
        if kind == "call":
            choice = draw(st.sampled_from(["helper 1", "helper 2", "local"]))
            if choice == "local":     # the subprogram sits right after the final exit
                body.append(struct.pack("<BBhi", 0x85, 0x10, 0, base + length + 1 - pc - 1))
            else:
                body.append(struct.pack("<BBhi", 0x85, 0, 0, int(choice[-1])))
        elif kind == "alu":
            body.append(_encode(*draw(alu_insn())))
        elif kind == "jump":
            target = draw(st.integers(base, base + length))      # backwards too: loops
            op = draw(st.sampled_from(_COND_OPS + [0x00]))
            cls = 0x05 if op == 0x00 or draw(st.booleans()) else 0x06
            use_reg = op != 0x00 and draw(st.booleans())
            opcode = cls | op | (0x08 if use_reg else 0)
            dst = 0 if op == 0x00 else draw(st.integers(0, 9))
            src = draw(st.integers(0, 9)) if use_reg else 0
            imm = 0 if op == 0x00 or use_reg else draw(st.integers(-(1 << 31), (1 << 31) - 1))
            if cls == 0x06 and op == 0x00:       # gotol keeps its offset in imm
                body.append(struct.pack("<BBhi", opcode, 0, 0, target - pc - 1))
            else:
                body.append(struct.pack("<BBhi", opcode, src << 4 | dst, target - pc - 1, imm))
        else:
            size = draw(st.sampled_from([0x00, 0x08, 0x10, 0x18]))
            off = draw(st.integers(-520, 8))
            reg = draw(st.sampled_from([10, 10, 10, 1]))
            if kind == "load":
                mode = draw(st.sampled_from([0x60, 0x80])) if size != 0x18 else 0x60
                dst = draw(st.integers(0, 9))
                body.append(struct.pack("<BBhi", 0x01 | mode | size, reg << 4 | dst, off, 0))
            elif kind == "store":
                if draw(st.booleans()):
                    body.append(struct.pack("<BBhi", 0x62 | size, reg, off, draw(st.integers(-9, 9))))
                else:
                    src = draw(st.integers(0, 9))
                    body.append(struct.pack("<BBhi", 0x63 | size, src << 4 | reg, off, 0))
            else:
                imm = draw(st.sampled_from([0x00, 0x01, 0x40, 0x41, 0x50, 0xA1, 0xE1, 0xF1]))
                body.append(struct.pack("<BBhi", 0xC3 | draw(st.sampled_from([0x00, 0x18])),
                                        draw(st.integers(0, 9)) << 4 | reg, off, imm))
    code = b"".join(struct.pack("<BBhi", 0x18, r, 0, _signed(v, 32)) +
                    struct.pack("<BBhi", 0, 0, 0, _signed(v >> 32, 32)) for r, v in enumerate(init))
    subprogram = prog("stxdw [%r10-8], %r1", "ldxdw %r0, [%r10-8]", "add %r0, %r2",
                      "mov %r6, 0", "exit")
    return code + b"".join(body) + bytes.fromhex("9500000000000000") + subprogram


def _mix(memory, r1, r2, r3, r4, r5):
    return (r1 * 3 + r2 - r5) ^ r4


def _poke(memory, r1, r2, r3, r4, r5):
    memory.write(r1 - 8, struct.pack("<Q", r2))    # faults unless r1 points into a region
    return 0


def _observe(program: bytes, budget: int, compile_blocks: bool):
    vm = Interpreter(program, budget=budget, compile_blocks=compile_blocks,
                     helpers={1: _mix, 2: _poke})
    try:
        outcome = ("exit", vm.run())
    except BpfFault as fault:
        outcome = (type(fault).__name__, fault.insn_index, fault.message)
    executed = vm.executed if outcome[0] != "BpfFault" else None   # a fault stops the count
    return outcome, list(vm.regs) if outcome[0] != "BpfFault" else None, bytes(vm.stack[0].buf), executed


@settings(max_examples=200, deadline=None)
@given(program=mixed_program(), budget=st.integers(1, 300))
def test_blocks_and_single_steps_agree(program, budget):
    assert _observe(program, budget, True) == _observe(program, budget, False)


# ---------------------------------------------------------------------------------------------
# Loader hooks: pseudo lddw forms, kfuncs, tracing

def test_lddw_pseudo_forms_go_through_the_resolver():
    seen = []

    def resolve(src, imm, imm_hi):
        seen.append((src, imm, imm_hi))
        return 0xABC00000000 + imm

    program = (struct.pack("<BBhi", 0x18, 0x10 | 1, 0, 7) + struct.pack("<BBhi", 0, 0, 0, 0)
               + struct.pack("<BBhi", 0xBF, 0x10, 0, 0) + bytes.fromhex("9500000000000000"))
    for blocks in (True, False):
        assert Interpreter(program, resolve_lddw=resolve, compile_blocks=blocks).run() == 0xABC00000007
    assert seen[0] == (1, 7, 0)
    with pytest.raises(InvalidProgram, match="map by fd .* needs a resolver"):
        Interpreter(program)


def test_kfunc_calls_use_their_own_table():
    program = struct.pack("<BBhi", 0x85, 0x20, 0, 1234) + bytes.fromhex("9500000000000000")
    assert Interpreter(program, kfuncs={1234: lambda mem, *r: 99}).run() == 99
    with pytest.raises(InvalidProgram, match="unknown kfunc 1234"):
        Interpreter(program, helpers={1234: lambda mem, *r: 99})


def test_fetching_atomic_into_r10_is_refused():
    program = struct.pack("<BBhi", 0xDB, 0xA1, 0, 0x01) + bytes.fromhex("9500000000000000")
    with pytest.raises(InvalidProgram, match="overwrite r10"):
        Interpreter(program)


def test_trace_sees_every_instruction():
    steps = []
    vm = Interpreter(prog("mov %r0, 2", "loop:", "sub %r0, 1", "jne %r0, 0, loop", "exit"))
    assert vm.run(trace=lambda pc, regs: steps.append((pc, regs[0]))) == 0
    assert steps == [(0, 0), (1, 2), (2, 1), (1, 1), (2, 0), (3, 0)]
    assert vm.executed == 6


@pytest.mark.parametrize("compile_blocks", [True, False])
def test_tight_loop_counts_every_iteration(compile_blocks):
    program = prog("mov %r0, 10", "loop:", "sub %r0, 1", "jne %r0, 0, loop", "exit")
    vm = Interpreter(program, compile_blocks=compile_blocks)
    assert vm.run() == 0 and vm.executed == 22
    assert vm.run(budget=22) == 0
    for budget, index in ((21, 3), (20, 2), (5, 1), (4, 2)):
        with pytest.raises(BudgetExceeded) as info:
            vm.run(budget=budget)
        assert info.value.insn_index == index, budget
        assert vm.executed == budget


def test_package_docstring_example_runs():
    """The usage shown in pybpf_uring.runtime.engine's docstring, with a stand-in emit_cqe."""
    posted = []

    def emit_cqe(memory, ctx, cq_idx, user_data, res, flags):
        posted.append((cq_idx, user_data, res))
        return 0

    program = prog("mov %r6, %r1", "ldxdw %r3, [%r6+0]", "mov %r2, 1", "mov %r4, 7",
                   "mov %r5, 0", "call 165", "stw [%r6+8], 1", "exit")
    memory = Memory()
    ctx = memory.map(bytearray(struct.pack("<QII", 0xFEED, 0, 0)), "ctx",
                     fields=[(0, 8), (8, 4), (12, 4)])
    vm = Interpreter(program, memory=memory, helpers={165: emit_cqe})
    assert vm.run(ctx.base) == 0
    assert posted == [(1, 0xFEED, 7)]
    assert struct.unpack_from("<I", ctx.buf, 8)[0] == 1     # wait_nr written in place


# Arbitrary instructions: construction either refuses the program (InvalidProgram) or the run
# ends in r0, a BpfFault or BudgetExceeded -- never another exception -- identically in both
# execution modes.
from pybpf_uring.runtime.engine.interpreter import _RULES  # noqa: E402


@st.composite
def arbitrary_program(draw):
    """Mostly well-formed instructions (the engine's own rule table says which fields must be
    zero), with a sprinkle of arbitrary opcodes and fields so refusals are exercised too."""
    count = draw(st.integers(1, 12))
    slots = []
    for i in range(count):
        wild = draw(st.integers(0, 9)) == 0
        opcode = draw(st.integers(0, 255)) if wild else draw(st.sampled_from(sorted(_RULES)))
        rule = _RULES.get(opcode)
        fields = {
            "dst": draw(st.integers(0, 9 if rule and rule.writes_dst else 10)),
            "src": draw(st.integers(0, 10)),
            "off": draw(st.sampled_from(sorted(rule.offsets)) if rule and rule.offsets and not wild
                        else st.integers(-i - 1, count - i)),
            "imm": draw(st.sampled_from([0, 1, -1, 2, 5, 16, 32, 64, 0x01, 0x41, 0xE1, 0xF1])
                        | st.integers(-i - 1, count - i)),
        }
        for name in (rule.zero if rule and not wild else ()):
            fields[name] = 0
        slots.append(struct.pack("<BBhi", opcode, fields["src"] << 4 | fields["dst"],
                                 fields["off"], fields["imm"]))
    return b"".join(slots) + bytes.fromhex("9500000000000000")


@settings(max_examples=200, deadline=None)
@given(program=arbitrary_program())
def test_arbitrary_instructions_never_escape_as_other_exceptions(program):
    helpers = {1: _mix, 2: _poke, 5: _mix, 16: _mix, 32: _mix, 64: _mix}
    try:
        Interpreter(program, helpers=helpers, resolve_lddw=lambda src, imm, hi: imm)
    except InvalidProgram:
        return
    results = []
    for blocks in (True, False):
        vm = Interpreter(program, helpers=helpers, resolve_lddw=lambda src, imm, hi: imm,
                         budget=200, compile_blocks=blocks)
        try:
            results.append(("exit", vm.run(), vm.executed))
        except BpfFault as fault:
            results.append((type(fault).__name__, fault.insn_index, fault.message))
    assert results[0] == results[1]


def test_refused_program_leaves_shared_memory_unchanged():
    memory = Memory()
    with pytest.raises(InvalidProgram):
        Interpreter(prog("call 99", "exit"), memory=memory)
    assert memory.regions == {}


# ---------------------------------------------------------------------------------------------
# The real kernel as the reference: random ALU programs (with byte swaps) run as syscall
# programs through BPF_PROG_TEST_RUN, every register written back into the ctx, and the same
# bytes run in this engine must leave the same ctx.  Marked kernel("syscall_programs").

_SLEEPABLE = 1 << 4          # BPF_F_SLEEPABLE: the kernel runs syscall programs only sleepable
# Register values where the edge cases live (zero divisors, INT_MIN / -1, sign bits).
_INTERESTING = st.integers(0, M64) | st.sampled_from(
    [0, 1, 2, M64, M64 - 1, 1 << 63, (1 << 63) - 1, M32, 1 << 31, (1 << 31) - 1, 0xFF, 0x80])


@st.composite
def verifiable_insn(draw):
    """An ALU or byte-swap instruction the verifier accepts on scalars: immediate shift counts
    below the width and immediate divisors other than 0 (it rejects both at load time)."""
    if draw(st.integers(0, 6)) == 0:
        opcode = draw(st.sampled_from([0xD4, 0xDC, 0xD7]))
        return struct.pack("<BBhi", opcode, draw(st.integers(0, 9)), 0,
                           draw(st.sampled_from([16, 32, 64])))
    op, wide, use_reg, dst, src, off, imm = draw(alu_insn())
    if not use_reg and op in ("lsh", "rsh", "arsh"):
        imm = draw(st.integers(0, 63 if wide else 31))
    if not use_reg and op in ("div", "mod") and imm == 0:
        imm = 1
    return _encode(op, wide, use_reg, dst, src, off, imm)


def _epilogue() -> bytes:
    # Spill r1, fetch the ctx pointer saved by the prologue, store r0-r9 at ctx+8*i.
    lines = ["stxdw [%r10-16], %r1", "ldxdw %r1, [%r10-8]"]
    lines += [f"stxdw [%r1+{8 * r}], %r{r}" for r in (0, 2, 3, 4, 5, 6, 7, 8, 9)]
    lines += ["ldxdw %r2, [%r10-16]", "stxdw [%r1+8], %r2", "mov %r0, 0", "exit"]
    return prog(*lines)


@pytest.mark.kernel("syscall_programs")
@settings(max_examples=150, deadline=None)
@given(init=st.lists(_INTERESTING, min_size=10, max_size=10),
       body=st.lists(verifiable_insn(), min_size=1, max_size=20))
def test_alu_programs_match_the_kernel(init, body):
    import os
    from pybpf_uring.bpf import kernel
    program = (prog("stxdw [%r10-8], %r1")
               + b"".join(struct.pack("<BBhi", 0x18, r, 0, _signed(v, 32)) +
                          struct.pack("<BBhi", 0, 0, 0, _signed(v >> 32, 32))
                          for r, v in enumerate(init))
               + b"".join(body) + _epilogue())
    loaded = kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL, program, prog_flags=_SLEEPABLE,
                              log_level=1)
    assert loaded.fd >= 0, loaded.log[-500:]
    try:
        expected = kernel.prog_test_run(loaded.fd, ctx=bytes(80)).ctx
    finally:
        os.close(loaded.fd)
    memory = Memory()
    ctx = memory.map(bytearray(80), "ctx")
    assert Interpreter(program, memory=memory).run(ctx.base) == 0
    assert struct.unpack("<10Q", ctx.buf) == struct.unpack("<10Q", expected)


@st.composite
def verifiable_program(draw):
    """ALU, byte swaps, aligned stack loads/stores/atomics below the two spill slots, and
    forward conditional jumps: what the verifier accepts once the stack is initialised."""
    items: list = []
    count = draw(st.integers(1, 24))
    for index in range(count):
        kind = draw(st.sampled_from(["alu", "alu", "mem", "jump"]))
        if kind == "alu":
            items.append(draw(verifiable_insn()))
        elif kind == "jump":
            op = draw(st.sampled_from(_COND_OPS))
            cls = draw(st.sampled_from([0x05, 0x06]))
            use_reg = draw(st.booleans())
            items.append((cls | op | (0x08 if use_reg else 0), draw(st.integers(0, 9)),
                          draw(st.integers(0, 9)) if use_reg else 0,
                          0 if use_reg else draw(st.integers(-(1 << 31), (1 << 31) - 1)),
                          draw(st.integers(index + 1, count))))
        else:
            size = draw(st.sampled_from([0x00, 0x08, 0x10, 0x18]))
            width = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}[size]
            off = -width * draw(st.integers(24 // width + 1, 512 // width))
            reg = draw(st.integers(0, 9))
            form = draw(st.sampled_from(["ldx", "ldxs", "st", "stx", "atomic"]))
            if form == "ldxs" and width == 8:
                form = "ldx"
            if form == "atomic" and width in (1, 2):
                form = "stx"
            if form in ("ldx", "ldxs"):
                mode = 0x60 if form == "ldx" else 0x80
                items.append(struct.pack("<BBhi", 0x01 | mode | size, 10 << 4 | reg, off, 0))
            elif form == "st":
                items.append(struct.pack("<BBhi", 0x62 | size, 10, off,
                                         draw(st.integers(-(1 << 31), (1 << 31) - 1))))
            elif form == "stx":
                items.append(struct.pack("<BBhi", 0x63 | size, reg << 4 | 10, off, 0))
            else:
                imm = draw(st.sampled_from([0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1,
                                            0xE1, 0xF1]))
                items.append(struct.pack("<BBhi", 0xC3 | size, reg << 4 | 10, off, imm))
    out = []
    for index, item in enumerate(items):
        if isinstance(item, tuple):
            opcode, dst, src, imm, target = item
            item = struct.pack("<BBhi", opcode, src << 4 | dst, target - index - 1, imm)
        out.append(item)
    return b"".join(out)


@pytest.mark.kernel("syscall_programs")
@settings(max_examples=100, deadline=None)
@given(init=st.lists(_INTERESTING, min_size=10, max_size=10), body=verifiable_program())
def test_programs_with_stack_and_branches_match_the_kernel(init, body):
    import os
    from pybpf_uring.bpf import kernel
    zero_stack = b"".join(struct.pack("<BBhi", 0x7A, 10, -8 * k, 0) for k in range(3, 65))
    program = (prog("stxdw [%r10-8], %r1") + zero_stack
               + b"".join(struct.pack("<BBhi", 0x18, r, 0, _signed(v, 32)) +
                          struct.pack("<BBhi", 0, 0, 0, _signed(v >> 32, 32))
                          for r, v in enumerate(init))
               + body + _epilogue())
    loaded = kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL, program, prog_flags=_SLEEPABLE,
                              log_level=1)
    assert loaded.fd >= 0, loaded.log[-800:]
    try:
        expected = kernel.prog_test_run(loaded.fd, ctx=bytes(80)).ctx
    finally:
        os.close(loaded.fd)
    memory = Memory()
    ctx = memory.map(bytearray(80), "ctx")
    assert Interpreter(program, memory=memory).run(ctx.base) == 0
    assert struct.unpack("<10Q", ctx.buf) == struct.unpack("<10Q", expected)


LOOPS = {
    # header, two arms, latch, with a helper call inside
    "branchy": (["mov %r0, 0", "mov %r6, 0",
                 "loop:", "mov %r1, %r6", "call 1", "add %r7, %r0", "jset %r6, 1, odd",
                 "add %r8, %r6", "ja next",
                 "odd:", "sub %r8, 1",
                 "next:", "add %r6, 1", "jlt %r6, 7, loop",
                 "mov %r0, %r8", "add %r0, %r7", "exit"],
                (0 + 2 + 4 + 6) - 3 + 10 * sum(range(7))),
    # an atomic in a one-block loop
    "tight atomic": (["stdw [%r10-8], 0", "mov %r6, 10",
                      "loop:", "mov %r1, 3", "lock add [%r10-8], %r1", "sub %r6, 1",
                      "jne %r6, 0, loop",
                      "ldxdw %r0, [%r10-8]", "exit"], 30),
    # an early exit inside the loop's range, and a fetching atomic
    "early exit": (["stdw [%r10-8], 0", "mov %r6, 0",
                    "loop:", "mov %r1, 1", "lock fetch add [%r10-8], %r1", "jne %r6, 5, cont",
                    "ldxdw %r0, [%r10-8]", "add %r0, %r1", "exit",
                    "cont:", "add %r6, 1", "jlt %r6, 9, loop",
                    "mov %r0, 99", "exit"], 6 + 5),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_match_single_steps_at_every_budget(name):
    """Compiled loops run under every budget from 1 to their full length: same result or the
    same stopping slot and count as single-stepping."""
    lines, expected = LOOPS[name]
    program = prog(*lines)
    helpers = {1: lambda mem, r1, *rest: r1 * 10}
    full = Interpreter(program, helpers=helpers, compile_blocks=False)
    assert full.run() == expected
    total = full.executed
    for budget in range(1, total + 2):
        outcomes = []
        for blocks in (True, False):
            vm = Interpreter(program, helpers=helpers, budget=budget, compile_blocks=blocks)
            try:
                outcomes.append(("exit", vm.run(), vm.executed))
            except BudgetExceeded as exc:
                outcomes.append(("budget", exc.insn_index, vm.executed))
        assert outcomes[0] == outcomes[1], budget
    assert outcomes[0] == ("exit", expected, total)


@pytest.mark.parametrize("compile_blocks", [True, False])
def test_regions_mapped_by_a_helper_mid_run_are_visible_at_once(compile_blocks):
    """map_lookup_elem-style helpers may map a value lazily and return its address; the very
    next load in the same compiled block must see it."""
    memory = Memory()

    def lookup(mem, *regs):
        return mem.map(bytearray(struct.pack("<Q", 1234)), "map value").base

    vm = Interpreter(prog("call 1", "ldxdw %r0, [%r0+0]", "exit"), memory=memory,
                     helpers={1: lookup}, compile_blocks=compile_blocks)
    assert vm.run() == 1234


def test_read_only_bytes_region_and_helper_views():
    memory = Memory()
    ro = memory.map(b"\x01\x02\x03\x04", "rodata", writable=False)
    buf = memory.map(bytearray(4), "out")
    assert Interpreter(prog("ldxw %r0, [%r1+0]", "exit"), memory=memory).run(ro.base) == 0x04030201
    memory.view(buf.base + 1, 2)[:] = b"\xAA\xBB"
    assert buf.buf == bytearray(b"\x00\xAA\xBB\x00")
    with pytest.raises(MemoryFault, match="rodata is read-only"):
        memory.view(ro.base, 1)
    with pytest.raises(TypeError, match="immutable"):
        memory.map(b"x", "bad")
    assert memory.describe(buf.base + 3) == "out+3" and memory.describe(5) == "0x5"


def test_a_long_loop_runs_to_the_end():
    """800k instructions in one run: no budget or step limit cuts a legitimate loop short."""
    vm = Interpreter(prog("mov %r0, 0", "mov %r1, 200000", "mov %r2, 3", "loop:",
                          "mul %r0, %r2", "add %r0, %r1", "sub %r1, 1", "jne %r1, 0, loop",
                          "exit"))
    vm.run()
    assert vm.executed == 800004


# ---------------------------------------------------------------------------------------------
# Programs this project compiles, run in the kernel and in the engine on the same ctx bytes.

COMPILED = """
from pybpf_uring import syscall, Struct, i32, i64, u8, u32, u64

N = 12

class Args(Struct):
    data: u32[N]
    k: i64
    small: u8
    out: i64[6]

def mix(a: i64, b: i64) -> i64:
    if a < b:
        return b // 3 - a % 7
    return a * b - (a >> 2)

@syscall
def crunch(ctx: Args) -> i32:
    data = ctx.data
    out = ctx.out
    total = 0
    odd = 0
    for i in range(N):
        if data[i] == 0:
            continue
        if data[i] & 1:
            odd += 1
        total += mix(data[i], ctx.k)
    out[0] = total
    out[1] = odd
    out[2] = ctx.k // 7
    out[3] = ctx.k % -5
    out[4] = i64(ctx.small) * 300
    j = 0
    steps = 0
    while j < 50:
        steps += ctx.small % 5 + 1
        j += 1
    out[5] = steps
    ctx.out = out
    return odd
"""


@pytest.mark.kernel("syscall_programs")
@pytest.mark.parametrize("cpu", ["v3", "v4"])
def test_compiled_programs_match_the_kernel(cpu):
    import random
    obj, namespace = compiled(COMPILED, cpu=cpu)
    spec = next(p for p in obj.programs if p.name == "crunch")
    rnd = random.Random(7)
    with obj.load() as live:
        program = live.programs["crunch"]
        for _ in range(40):
            args = namespace["Args"](
                data=(namespace["u32"].ctype * 12)(*(rnd.choice([0, 1, 2, 7, 0xFFFFFFFF,
                                                                 rnd.getrandbits(32)])
                                                     for _ in range(12))),
                k=rnd.choice([0, 1, -1, -7, 2**63 - 1, -2**63, rnd.getrandbits(63)]),
                small=rnd.getrandbits(8))
            raw = bytes(args)
            expected = program.test_run(ctx=args)
            memory = Memory()
            ctx = memory.map(bytearray(raw), "ctx")
            r0 = Interpreter(spec.linked().instructions, memory=memory).run(ctx.base)
            assert r0 & M32 == expected.retval
            assert bytes(ctx.buf) == bytes(expected.ctx)


def test_block_source_is_kept_for_inspection():
    vm = Interpreter(prog("mov %r0, 2", "loop:", "sub %r0, 1", "jne %r0, 0, loop", "exit"))
    assert "def b0(rem):" in vm.block_source and "while True:" in vm.block_source
    assert Interpreter(prog("exit"), compile_blocks=False).block_source == ""
