"""What each BPF instruction computes, once, for both forms of the interpreter's generated code.

The interpreter translates a program twice -- per-slot closures (interpreter.py) and per-block
functions (blocks.py) -- and both write Python source from the tables here, so an operation's
meaning has one home: `ALU` and `COND` give an instruction family's expression as a
`codegen.fill` template, `ATOMIC` and `END` the value transforms the generated code calls.
The JIT (jit_lift.py) lowers the same rules to LLVM IR and is held to them by the differential
and conformance tests.

Placeholders: `$A`/`$B` are the operands (already masked to the operation's width), `$MASK` the
width mask, `$SIGN` the sign bit, `$SHIFT` the shift-count mask; `$SA`/`$SB` in a condition are
the operands biased by the sign bit (x ^ SIGN), whose unsigned order is the signed order of x.
ALU keys are (op, off): the offset field selects signed division and modulo and MOVSX's width.

Semantics easy to get wrong (RFC 9669 section 4.1): division by zero gives 0; modulo by zero
leaves dst (ALU64) or its zero-extended low half (ALU); shift counts are masked to 63/31;
signed division and modulo truncate towards zero like C; MOVSX has a register form only;
CMPXCHG compares with r0 and always loads the old value into r0.
"""
from __future__ import annotations

from typing import Callable, Sequence

from ...bpf import isa
from ...bpf.isa import (ADD, ALU, ALU64, AND, ARSH, CALL, CMPXCHG, DIV, EXIT, FETCH, JA, JEQ, JGE,
                   JGT, JLE, JLT, JMP, JMP32, JNE, JSET, JSGE, JSGT, JSLE, JSLT, LSH, MOD, MOV,
                   MUL, NEG, OR, RSH, SUB, XCHG, XOR, X, Instruction)
from .codegen import uses
from .memory import BIAS, OFFSET_MASK, REGION_SHIFT

__all__ = [
    "M64", "M32", "S64", "S32", "sdiv", "smod", "bswap", "ALU_EXPR", "ALU_READS", "X_ONLY", "ALU32_EXCLUDED",
    "UNARY", "COND_EXPR", "SIGNED_JUMPS", "ATOMIC", "ATOMIC_IMMS", "END", "UNSIGNED", "SIGNED", "LDDW_SOURCES",
    "CALL_FORMS", "width", "literal", "MASKED", "BIASED", "ADDRESS", "CALLS", "branch_target", "is_helper_call",
]

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
S64 = 1 << 63
S32 = 1 << 31


def sdiv(a: int, b: int, sign: int, mask: int) -> int:
    """Signed division of two `mask`-wide values; truncates towards zero, as C (not Python)."""
    sa, sb = (a ^ sign) - sign, (b ^ sign) - sign
    if sb == 0:
        return 0
    q = abs(sa) // abs(sb)
    return (-q if (sa < 0) != (sb < 0) else q) & mask


def smod(a: int, b: int, sign: int, mask: int) -> int:
    """Signed modulo with the sign of the dividend, as C; modulo by zero leaves `a`."""
    sa, sb = (a ^ sign) - sign, (b ^ sign) - sign
    if sb == 0:
        return a
    r = abs(sa) % abs(sb)
    return (-r if sa < 0 else r) & mask


def bswap(value: int, width: int) -> int:
    """The low `width` bits of `value` with their bytes reversed."""
    n = width // 8
    return int.from_bytes((value & ((1 << width) - 1)).to_bytes(n, "little"), "big")


CALLS = {"_sdiv": sdiv, "_smod": smod}
"""The functions ALU_EXPR's expressions call, by the names they use: the generated code's globals."""

ALU_EXPR: dict[tuple[int, int], str] = {
    (ADD, 0): "($A + $B) & $MASK",
    (SUB, 0): "($A - $B) & $MASK",
    (MUL, 0): "($A * $B) & $MASK",
    (DIV, 0): "($A // $B if $B else 0)",
    (DIV, isa.SIGNED_OFF): "_sdiv($A, $B, $SIGN, $MASK)",
    (OR, 0): "$A | $B",
    (AND, 0): "$A & $B",
    (LSH, 0): "($A << ($B & $SHIFT)) & $MASK",
    (RSH, 0): "$A >> ($B & $SHIFT)",
    (NEG, 0): "-$A & $MASK",
    (MOD, 0): "($A % $B if $B else $A)",
    (MOD, isa.SIGNED_OFF): "_smod($A, $B, $SIGN, $MASK)",
    (XOR, 0): "$A ^ $B",
    (MOV, 0): "$B",
    (MOV, 8): "((($B & 0xFF) ^ 0x80) - 0x80) & $MASK",
    (MOV, 16): "((($B & 0xFFFF) ^ 0x8000) - 0x8000) & $MASK",
    (MOV, 32): "((($B & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & $MASK",
    (ARSH, 0): "((($A ^ $SIGN) - $SIGN) >> ($B & $SHIFT)) & $MASK",
}
ALU_READS = {key: (uses(text, "A") > 0, uses(text, "B") > 0) for key, text in ALU_EXPR.items()}
"""Whether an operation reads dst ($A) and its source ($B): mov never reads dst, neg no source."""
assert {off for (op, off) in ALU_EXPR if op == MOV} - {0} == set(isa.MOVSX_OFFS)
X_ONLY = {(MOV, off) for off in isa.MOVSX_OFFS}   # MOVSX has no immediate form
ALU32_EXCLUDED = {(MOV, 32)}                      # movsx from 32 bits into 32 bits is no insn
UNARY = {(NEG, 0)}                                # NEG: K form only, src and imm unused

COND_EXPR: dict[int, str] = {
    JEQ: "$A == $B", JGT: "$A > $B", JGE: "$A >= $B", JSET: "$A & $B",
    JNE: "$A != $B", JSGT: "$SA > $SB", JSGE: "$SA >= $SB", JLT: "$A < $B",
    JLE: "$A <= $B", JSLT: "$SA < $SB", JSLE: "$SA <= $SB",
}
SIGNED_JUMPS = frozenset({JSGT, JSGE, JSLT, JSLE})   # a K form compares with k ^ SIGN
assert set(COND_EXPR) == set(isa.CONDITIONAL_JUMPS), "isa's conditional jumps and COND_EXPR disagree"

# Atomic operations (imm without the FETCH bit): new memory value from (old, src).
ATOMIC: dict[int, Callable[[int, int], int]] = {
    isa.ATOMIC_ADD: lambda old, src: old + src,
    isa.ATOMIC_OR: lambda old, src: old | src,
    isa.ATOMIC_AND: lambda old, src: old & src,
    isa.ATOMIC_XOR: lambda old, src: old ^ src,
}
ATOMIC_IMMS = frozenset({*ATOMIC, *(op | FETCH for op in ATOMIC), XCHG, CMPXCHG})

# Byte-order operations: (class, source bit) -> value transform for an imm width.
END: dict[tuple[int, int], Callable[[int, int], int]] = {
    (ALU, 0): lambda v, w: v & ((1 << w) - 1),          # to little endian: truncate only (host LE)
    (ALU, X): bswap,                                     # to big endian
    (ALU64, 0): bswap,                                   # unconditional bswap (cpu v4)
}

UNSIGNED = {1: "B", 2: "H", 4: "I", 8: "Q"}             # struct formats by access size
SIGNED = {1: "b", 2: "h", 4: "i"}

LDDW_SOURCES = {0: "imm64", 1: "map by fd", 2: "map value by fd", 3: "variable address",
                4: "code address", 5: "map by index", 6: "map value by index"}
CALL_FORMS = {isa.CALL_HELPER: "helper", isa.CALL_PSEUDO: "local", isa.CALL_KFUNC: "kfunc"}


def literal(value: int) -> str:
    """How generated code spells a mask or bias: upper-case hex, as a reader checks it."""
    return f"0x{value:X}"


def width(cls: int) -> dict[str, str]:
    """$MASK, $SIGN and $SHIFT for an instruction class (64-bit: ALU64 and JMP)."""
    wide = cls in (ALU64, JMP)
    return {"MASK": hex(M64 if wide else M32), "SIGN": hex(S64 if wide else S32),
            "SHIFT": "63" if wide else "31"}


MASKED = "($VALUE & $MASK)"
"""An operand of a narrower operation (the low half of a register) or a stored value's bytes."""
BIASED = "($VALUE ^ $SIGN)"
"""An operand biased by its sign bit: unsigned order of the result is the signed order."""

ADDRESS = {"M64": literal(M64), "M32": literal(M32), "OFFSET_MASK": literal(OFFSET_MASK),
           "BIAS": literal(BIAS), "REGION_SHIFT": str(REGION_SHIFT)}
"""The named constants of the inlined memory access in generated code (memory.py's layout):
address = (base + off) & M64; region id = address >> REGION_SHIFT; offset in the region's
buffer = (address & OFFSET_MASK) - BIAS."""


def branch_target(i: int, ins: Instruction) -> int | None:
    """The slot a jump (or a local call) at slot `i` may go to; None for anything else."""
    cls, op = ins.cls, ins.op
    if ins.opcode == JMP | CALL:
        return i + 1 + ins.imm if ins.src == isa.CALL_PSEUDO else None
    if ins.opcode == JMP32 | JA:
        return i + 1 + ins.imm
    if cls in (JMP, JMP32) and op not in (CALL, EXIT):
        return i + 1 + ins.off
    return None


def is_helper_call(ins: Instruction) -> bool:
    """A call to a helper or kfunc: it takes values, not the frames, so a block runs it inline."""
    return ins.opcode == JMP | CALL and ins.src != isa.CALL_PSEUDO


def leaders(slots: Sequence[Instruction | None]) -> list[int]:
    """Where the basic blocks of `slots` start, for the interpreter's compiled blocks and the
    JIT alike: slot 0, every branch target, and the slot after every jump, local call and exit
    (a helper call runs inline and ends nothing)."""
    starts = {0}
    for i, ins in enumerate(slots):
        if ins is None:
            continue
        target = branch_target(i, ins)
        if target is not None:
            starts.add(target)
        if ins.cls in (JMP, JMP32) and not is_helper_call(ins):
            starts.add(i + ins.slots)
    return sorted(s for s in starts if s < len(slots))
