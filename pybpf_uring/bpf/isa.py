"""The BPF instruction set of RFC 9669 (cpu v4): opcode fields, the `Instruction` record, and
decoding/encoding between bytes and instructions.

An instruction is one 8-byte slot `opcode:8 dst:4 src:4 off:16 imm:32` (little endian), except
the wide `lddw` (LD | IMM | DW), which takes two slots and carries a 64-bit immediate whose high
half is the second slot's imm.  `Instruction` keeps both halves (`imm`, `imm_hi`) so decoding and
encoding round-trip exactly; `imm64` is the assembled constant.

Everything that indexes a program the way the kernel does (verifier logs, line_info, relocation
offsets, jump offsets) counts *slots*, not instructions; `slot_indexes` gives the first slot of
each instruction of a decoded list.

The opcode space is described by small tables, one per family (ALU ops, jump ops, sizes, modes,
atomic ops), in the manner of cilium/ebpf's `asm` package; `mnemonic` names an opcode from them.
The instruction's text is here too (`format_instruction`, llvm-objdump's, which `str()` of an
`Instruction` is), since an instruction that prints itself cannot borrow its text from a module
that builds on this one; whole objects are disassembled by `disasm`.  This module interprets
nothing: semantics live in the engine.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

# src of CALL: what imm names (RFC 9669 §4.3.1: a helper's id, a local function's offset, a
# kfunc's BTF id); src of lddw: how the loader reads imm.  The numbers are the kernel's BPF_PSEUDO_*.
from ..uapi import (BPF_PSEUDO_CALL as CALL_PSEUDO, BPF_PSEUDO_FUNC as PSEUDO_FUNC,
                   BPF_PSEUDO_KFUNC_CALL as CALL_KFUNC, BPF_PSEUDO_MAP_IDX as PSEUDO_MAP_IDX,
                   BPF_PSEUDO_MAP_IDX_VALUE as PSEUDO_MAP_IDX_VALUE, INSN_SIZE)

__all__ = [
    "Instruction", "DecodeError", "decode", "encode", "slot_indexes", "slot_count", "with_slots",
    "mnemonic", "format_instruction", "format_program", "render_instruction", "InstructionText",
    "UNKNOWN", "INSN_SIZE",
]

_SLOT = struct.Struct("<BBhi")
M32 = (1 << 32) - 1
CALL_HELPER = 0   # src of a CALL to a helper by id (the kernel has no name for 0)

# --- opcode fields (RFC 9669 section 3) --------------------------------------------------------
CLASS_MASK = 0x07
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
CLASS_NAMES = {LD: "ld", LDX: "ldx", ST: "st", STX: "stx", ALU: "alu", JMP: "jmp",
               JMP32: "jmp32", ALU64: "alu64"}

# arithmetic and jump classes: op (high 4 bits) | source (bit 3) | class
OP_MASK = 0xF0
SOURCE_MASK = 0x08
K, X = 0x00, 0x08          # immediate / register operand
TO_LE, TO_BE = 0x00, 0x08  # the same bit, for END: target byte order

# load and store classes: mode (high 3 bits) | size (bits 3-4) | class
MODE_MASK = 0xE0
SIZE_MASK = 0x18
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
SIZE_NAMES = {W: "w", H: "h", B: "b", DW: "dw"}
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
MODE_NAMES = {IMM: "imm", ABS: "abs", IND: "ind", MEM: "mem", MEMSX: "memsx", ATOMIC: "atomic"}

# ALU / ALU64 operations.  DIV and MOD with off=1 are the signed forms; MOV with off 8/16/32 is
# MOVSX (register source only); END in ALU64 with source 0 is the unconditional BSWAP.
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
ALU_NAMES = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and", LSH: "lsh",
             RSH: "rsh", NEG: "neg", MOD: "mod", XOR: "xor", MOV: "mov", ARSH: "arsh", END: "end"}
SIGNED_OFF = 1             # off of sdiv / smod
MOVSX_OFFS = (8, 16, 32)   # off of movsx: the source width

# JMP / JMP32 operations.  JA in JMP32 is `gotol` (the target is in imm, not off); JCOND is
# LLVM's `may_goto` (not in RFC 9669 but emitted by clang for bpf_can_loop).
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE, JCOND = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0)
JMP_NAMES = {JA: "ja", JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset", JNE: "jne",
             JSGT: "jsgt", JSGE: "jsge", CALL: "call", EXIT: "exit", JLT: "jlt", JLE: "jle",
             JSLT: "jslt", JSLE: "jsle", JCOND: "jcond"}
CONDITIONAL_JUMPS = frozenset({JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, JLT, JLE, JSLT, JSLE})


# ATOMIC imm: operation, with FETCH or'ed in for the fetching forms (XCHG and CMPXCHG always
# fetch).  LOAD_ACQ / STORE_REL are the newer acquire/release accesses.
FETCH = 0x01
ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR = ADD, OR, AND, XOR
XCHG, CMPXCHG = 0xE0 | FETCH, 0xF0 | FETCH
LOAD_ACQ, STORE_REL = 0x100, 0x110
ATOMIC_NAMES = {ATOMIC_ADD: "add", ATOMIC_OR: "or", ATOMIC_AND: "and", ATOMIC_XOR: "xor",
                ATOMIC_ADD | FETCH: "fetch_add", ATOMIC_OR | FETCH: "fetch_or",
                ATOMIC_AND | FETCH: "fetch_and", ATOMIC_XOR | FETCH: "fetch_xor",
                XCHG: "xchg", CMPXCHG: "cmpxchg", LOAD_ACQ: "load_acquire",
                STORE_REL: "store_release"}

LDDW = LD | IMM | DW       # 0x18, the only two-slot opcode
EXIT_OPCODE = JMP | EXIT   # 0x95
CALL_OPCODE = JMP | CALL   # 0x85


class DecodeError(ValueError):
    """Bytes that are not a sequence of whole instructions (the index says which slot)."""

    def __init__(self, slot: int | None, message: str) -> None:
        self.slot = slot
        self.message = message
        super().__init__(f"slot {slot}: {message}" if slot is not None else message)


@dataclass(frozen=True)
class Instruction:
    """One BPF instruction: the raw fields, signed where RFC 9669 says so (off 16, imm 32).

    `imm_hi` is meaningful only for the wide lddw: the imm of its second slot."""

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm_hi: int = 0

    # -- fields ---------------------------------------------------------------------------------
    @property
    def cls(self) -> int:
        return self.opcode & CLASS_MASK

    @property
    def op(self) -> int:
        """ALU/JMP operation (high 4 bits)."""
        return self.opcode & OP_MASK

    @property
    def source(self) -> int:
        """K (immediate operand) or X (register operand)."""
        return self.opcode & SOURCE_MASK

    @property
    def mode(self) -> int:
        return self.opcode & MODE_MASK

    @property
    def size(self) -> int:
        """Access width in bytes of a load/store."""
        return SIZE_BYTES[self.opcode & SIZE_MASK]

    @property
    def is_wide(self) -> bool:
        return self.opcode == LDDW

    @property
    def slots(self) -> int:
        return 2 if self.is_wide else 1

    @property
    def imm64(self) -> int:
        """The 64-bit constant of a lddw (unsigned); for other instructions, imm sign-extended."""
        if self.is_wide:
            return (self.imm & M32) | ((self.imm_hi & M32) << 32)
        return self.imm

    # -- classification -------------------------------------------------------------------------
    @property
    def is_alu(self) -> bool:
        return self.cls in (ALU, ALU64)

    @property
    def is_jump(self) -> bool:
        """Any JMP/JMP32 instruction other than call and exit."""
        return self.cls in (JMP, JMP32) and self.op not in (CALL, EXIT)

    @property
    def is_call(self) -> bool:
        return self.cls == JMP and self.op == CALL

    @property
    def is_pseudo_call(self) -> bool:
        """A BPF-to-BPF call: imm is the callee's slot relative to the next slot."""
        return self.is_call and self.source == K and self.src == CALL_PSEUDO

    @property
    def is_exit(self) -> bool:
        return self.cls == JMP and self.op == EXIT

    @property
    def is_load(self) -> bool:
        return self.cls == LDX

    @property
    def is_store(self) -> bool:
        return self.cls in (ST, STX) and self.mode == MEM

    @property
    def is_atomic(self) -> bool:
        return self.cls == STX and self.mode == ATOMIC

    def jump_offset(self) -> int | None:
        """Slots to skip after this one when the branch is taken (None if not a jump)."""
        if not self.is_jump:
            return None
        if self.cls == JMP32 and self.op == JA:
            return self.imm  # gotol: 32-bit range
        return self.off

    @property
    def name(self) -> str:
        return mnemonic(self)

    def __str__(self) -> str:
        """llvm-objdump's text (`r1 += 0x2`): the one format of tests, CLI and messages."""
        return format_instruction(self)

    # -- bytes ----------------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The 8 (lddw: 16) bytes of this instruction; ValueError if a field does not fit."""
        if not (0 <= self.dst <= 15 and 0 <= self.src <= 15):
            raise ValueError(f"{self!r} does not fit an 8-byte slot: registers are 4 bits")
        try:
            first = _SLOT.pack(self.opcode, (self.src << 4) | self.dst, self.off, self.imm)
            if self.is_wide:
                return first + _SLOT.pack(0, 0, 0, _signed32(self.imm_hi))
        except struct.error as exc:
            raise ValueError(f"{self!r} does not fit an 8-byte slot: {exc}") from None
        return first

    @classmethod
    def lddw(cls, dst: int, value: int, src: int = 0) -> "Instruction":
        """`dst = value ll` (src != 0 makes it a pseudo load of a map, BTF id, ...)."""
        value &= (1 << 64) - 1
        return cls(LDDW, dst, src, 0, _signed32(value & M32), _signed32(value >> 32))

    def with_imm(self, imm: int) -> "Instruction":
        """The same instruction with another imm (wrapped to 32 bits, as the field holds)."""
        return Instruction(self.opcode, self.dst, self.src, self.off, _signed32(imm), self.imm_hi)


def _signed32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def decode(data: bytes | bytearray | memoryview) -> list[Instruction]:
    """Bytes → instructions; a lddw consumes two slots (see `slot_indexes`).

    Raises DecodeError if the length is not a multiple of 8 or a lddw lacks its second slot
    or that slot is not the zero pseudo-instruction the kernel requires."""
    data = bytes(data)
    if len(data) % INSN_SIZE:
        raise DecodeError(None, f"{len(data)} bytes is not a whole number of 8-byte instructions")
    n = len(data) // INSN_SIZE
    out: list[Instruction] = []
    slot = 0
    while slot < n:
        opcode, regs, off, imm = _SLOT.unpack_from(data, slot * INSN_SIZE)
        if opcode == LDDW:
            if slot + 1 >= n:
                raise DecodeError(slot, "lddw is missing its second slot")
            op2, regs2, off2, imm_hi = _SLOT.unpack_from(data, (slot + 1) * INSN_SIZE)
            if op2 or regs2 or off2:
                raise DecodeError(slot + 1, "the second slot of a lddw must have opcode, "
                                  f"registers and offset 0 (got opcode {op2:#04x})")
            out.append(Instruction(opcode, regs & 0xF, regs >> 4, off, imm, imm_hi))
            slot += 2
        else:
            out.append(Instruction(opcode, regs & 0xF, regs >> 4, off, imm))
            slot += 1
    return out


def encode(insns: Iterable[Instruction]) -> bytes:
    return b"".join(i.encode() for i in insns)


def slot_indexes(insns: Sequence[Instruction]) -> list[int]:
    """The first slot of each instruction (what the kernel calls its index)."""
    out, slot = [], 0
    for ins in insns:
        out.append(slot)
        slot += ins.slots
    return out


def with_slots(insns: Iterable[Instruction]) -> Iterator[tuple[int, Instruction]]:
    """(first slot, instruction) pairs: `enumerate` in the kernel's numbering."""
    slot = 0
    for ins in insns:
        yield slot, ins
        slot += ins.slots


def slot_count(insns: Iterable[Instruction]) -> int:
    return sum(i.slots for i in insns)


def mnemonic(ins: Instruction) -> str:
    """A short ubpf-style name for the opcode (`add64`, `ldxw`, `jsgt32`, `lddw`, `atomic64`):
    for error messages and tables; `format_instruction` renders the llvm-objdump text."""
    cls = ins.cls
    if cls in (ALU, ALU64):
        name = ALU_NAMES.get(ins.op, f"op{ins.op:#x}-")
        if ins.op in (DIV, MOD) and ins.off == SIGNED_OFF:
            name = "s" + name
        elif ins.op == MOV and ins.off in MOVSX_OFFS:
            name = "movsx"
        elif ins.op == END:
            order = "bswap" if cls == ALU64 else ("be" if ins.source == TO_BE else "le")
            return order + str(ins.imm)
        return name + ("64" if cls == ALU64 else "32")
    if cls in (JMP, JMP32):
        if cls == JMP and ins.op == JA and ins.source == X:
            return "gotox"   # indirect jump through a register (LLVM 22)
        name = JMP_NAMES.get(ins.op, f"jmp-op{ins.op:#x}-")
        if cls == JMP32:
            return "gotol" if ins.op == JA else name + "32"
        return name
    size = SIZE_NAMES[ins.opcode & SIZE_MASK]
    if cls == LD:
        if ins.mode == IMM:
            return "lddw"
        return {ABS: "ldabs", IND: "ldind"}.get(ins.mode, "ld") + size
    if cls == LDX:
        return ("ldxs" if ins.mode == MEMSX else "ldx") + size
    if ins.mode == ATOMIC:
        return "atomic" + ("64" if size == "dw" else "32")
    return ("st" if cls == ST else "stx") + size


# --- text: llvm-objdump's, one format for the CLI, tests, messages and `str(instruction)` ---------
# The rules were read off llvm-objdump-22 output and checked by differential fuzzing against it
# (tests/test_disasm.py keeps them honest):
# * Which fields an instruction uses decides validity, as in LLVM's decoder tables: a field the
#   text does not show is mostly ignored (`exit` with dst=2 is still `exit`), but `off` must be
#   0 in ALU instructions other than neg/byte swaps and in lddw, `imm` must be 0 in `exit`, and
#   registers above r11 are invalid.
# * Loads and stores narrower than 64 bits show the 32-bit register (`w1 = *(u8 *)...`) at every
#   cpu level; `be`/`le` always show `r`.  Immediates and offsets print as signed hex, except
#   the unsigned imm of `ld_pseudo`.
# * Atomic operations are read from imm bits 0 (fetch), 4-7 (operation) and 8 (acquire/release),
#   the rest ignored, in the order LLVM's decoder tries them (`_atomic_op`).
# Whole sections and objects (symbols, labels, relocations, zero runs) are disasm's.
UNKNOWN = "<unknown>"
MAX_REG = 11   # LLVM's BPF register class is r0-r11
ADDR_SPACE_CAST_OFF = 1   # MOV64 X with off=1: addr_space_cast (BPF arena)


class InstructionText(NamedTuple):
    """An instruction's llvm-objdump text, and for a branch the slots after the next one it
    lands on (disasm labels the target with a symbol, format_program with a slot)."""

    text: str
    branch: int | None = None   # slots after the next one a taken branch lands on


def _hex(v: int) -> str:
    return f"-{-v:#x}" if v < 0 else f"{v:#x}"


def _rel(v: int) -> str:
    return f"-{-v:#x}" if v < 0 else f"+{v:#x}"


def _mem(reg: str, off: int) -> str:
    return f"({reg} - {-off:#x})" if off < 0 else f"({reg} + {off:#x})"


_SIZE_TYPE = {W: "u32", H: "u16", B: "u8", DW: "u64"}
_SIGNED_TYPE = {W: "s32", H: "s16", B: "s8"}

_ALU_OPS = {ADD: "+=", SUB: "-=", MUL: "*=", DIV: "/=", OR: "|=",
            AND: "&=", LSH: "<<=", RSH: ">>=", MOD: "%=", XOR: "^=",
            MOV: "=", ARSH: "s>>="}
_SIGNED_ALU = {DIV: "s/=", MOD: "s%="}
_CONDITIONS = {JEQ: "==", JGT: ">", JGE: ">=", JSET: "&", JNE: "!=",
               JSGT: "s>", JSGE: "s>=", JLT: "<", JLE: "<=", JSLT: "s<",
               JSLE: "s<="}
_LOCK_OPS = {ATOMIC_ADD: "+=", ATOMIC_OR: "|=", ATOMIC_AND: "&=", ATOMIC_XOR: "^="}
_FETCH_OPS = {ATOMIC_ADD | FETCH: "add", ATOMIC_OR | FETCH: "or",
              ATOMIC_AND | FETCH: "and", ATOMIC_XOR | FETCH: "xor"}


class _Invalid(Exception):
    """The encoding is not an instruction LLVM's decoder knows."""


def _reg(n: int, wide: bool = True) -> str:
    if n > MAX_REG:
        raise _Invalid
    return f"{'r' if wide else 'w'}{n}"


# --- one formatter per class -------------------------------------------------------------------
def _alu(ins: Instruction) -> InstructionText:
    wide = ins.cls == ALU64
    op, d = ins.op, ins.dst
    if op == NEG:
        if ins.source != K:
            raise _Invalid
        r = _reg(d, wide)
        return InstructionText(f"{r} = -{r}")
    if op == END:
        if ins.imm not in (16, 32, 64):
            raise _Invalid
        if wide:
            if ins.source != K:
                raise _Invalid
            name = "bswap"
        else:
            name = "be" if ins.source == TO_BE else "le"
        r = _reg(d)
        return InstructionText(f"{r} = {name}{ins.imm} {r}")
    if op not in _ALU_OPS:
        raise _Invalid
    symbol = _ALU_OPS[op]
    if op in _SIGNED_ALU and ins.off == SIGNED_OFF:
        symbol = _SIGNED_ALU[op]
    elif op == MOV and ins.source == X and ins.off in ((8, 16, 32) if wide else (8, 16)):
        return InstructionText(f"{_reg(d, wide)} = (s{ins.off}){_reg(ins.src, wide)}")
    elif op == MOV and ins.source == X and wide and ins.off == ADDR_SPACE_CAST_OFF:
        # arena pointers: imm holds the destination (high half) and source address spaces
        dst_as, src_as = (ins.imm >> 16) & 0xFFFF, ins.imm & 0xFFFF
        return InstructionText(f"{_reg(d)} = addr_space_cast({_reg(ins.src)}, {dst_as:#x}, {src_as:#x})")
    elif ins.off:
        raise _Invalid
    operand = _reg(ins.src, wide) if ins.source == X else _hex(ins.imm)
    return InstructionText(f"{_reg(d, wide)} {symbol} {operand}")


def _jmp(ins: Instruction) -> InstructionText:
    wide = ins.cls == JMP
    op = ins.op
    if op == JA:
        if ins.source == X:
            if not wide:
                raise _Invalid
            return InstructionText(f"gotox {_reg(ins.dst)}")   # indirect jump (LLVM 22)
        if wide:
            return InstructionText(f"goto {_rel(ins.off)}", ins.off)
        return InstructionText(f"gotol {_rel(ins.imm)}", ins.imm)
    if op in _CONDITIONS:
        operand = _reg(ins.src, wide) if ins.source == X else _hex(ins.imm)
        return InstructionText(f"if {_reg(ins.dst, wide)} {_CONDITIONS[op]} {operand} goto {_rel(ins.off)}",
                     ins.off)
    if not wide:
        raise _Invalid
    if op == CALL:
        return InstructionText(f"call {_hex(ins.imm)}" if ins.source == K else f"callx {_reg(ins.dst)}")
    if op == EXIT and ins.source == K and ins.imm == 0:
        return InstructionText("exit")
    if op == JCOND and ins.source == K:
        return InstructionText(f"may_goto {_rel(ins.off)}", ins.off)
    raise _Invalid


def _ld(ins: Instruction) -> InstructionText:
    size = ins.opcode & SIZE_MASK
    if ins.mode == IMM and size == DW:
        if ins.off:
            raise _Invalid
        if ins.src == 0:
            value = ins.imm64 - (1 << 64) if ins.imm64 >> 63 else ins.imm64
            return InstructionText(f"{_reg(ins.dst)} = {_hex(value)} ll")
        return InstructionText(f"ld_pseudo\t{_reg(ins.dst)}, {ins.src:#x}, {ins.imm & 0xFFFFFFFF:#x}")
    if size == DW:
        raise _Invalid
    if ins.mode == ABS:
        return InstructionText(f"r0 = *({_SIZE_TYPE[size]} *)skb[{_hex(ins.imm)}]")
    if ins.mode == IND:
        return InstructionText(f"r0 = *({_SIZE_TYPE[size]} *)skb[{_reg(ins.src)}]")
    raise _Invalid


def _ldx(ins: Instruction) -> InstructionText:
    size = ins.opcode & SIZE_MASK
    if ins.mode == MEM:
        return InstructionText(f"{_reg(ins.dst, size == DW)} = *({_SIZE_TYPE[size]} *){_mem(_reg(ins.src), ins.off)}")
    if ins.mode == MEMSX and size != DW:
        return InstructionText(f"{_reg(ins.dst)} = *({_SIGNED_TYPE[size]} *){_mem(_reg(ins.src), ins.off)}")
    raise _Invalid


def _st(ins: Instruction) -> InstructionText:
    size = ins.opcode & SIZE_MASK
    if ins.mode != MEM:
        raise _Invalid
    return InstructionText(f"*({_SIZE_TYPE[size]} *){_mem(_reg(ins.dst), ins.off)} = {_hex(ins.imm)}")


def _stx(ins: Instruction) -> InstructionText:
    size = ins.opcode & SIZE_MASK
    wide = size == DW
    t = _SIZE_TYPE[size]
    if ins.mode == MEM:
        return InstructionText(f"*({t} *){_mem(_reg(ins.dst), ins.off)} = {_reg(ins.src, wide)}")
    if ins.mode != ATOMIC:
        raise _Invalid
    op = _atomic_op(ins.imm, size in (W, DW))
    addr = _mem(_reg(ins.dst), ins.off)
    s = _reg(ins.src, wide)
    if op == LOAD_ACQ:
        # the one atomic that loads: dst receives, src holds the address
        return InstructionText(f"{_reg(ins.dst, wide)} = load_acquire(({t} *){_mem(_reg(ins.src), ins.off)})")
    if op == STORE_REL:
        return InstructionText(f"store_release(({t} *){addr}, {s})")
    if op in _LOCK_OPS:
        return InstructionText(f"lock *({t} *){addr} {_LOCK_OPS[op]} {s}")
    if op in _FETCH_OPS:
        return InstructionText(f"{s} = atomic_fetch_{_FETCH_OPS[op]}(({t} *){addr}, {s})")
    suffix = "_64" if wide else "32_32"
    inner = addr[1:-1]   # xchg/cmpxchg print the address without parentheses
    if op == XCHG:
        return InstructionText(f"{s} = xchg{suffix}({inner}, {s})")
    r0 = _reg(0, wide)
    return InstructionText(f"{r0} = cmpxchg{suffix}({inner}, {r0}, {s})")


def _atomic_op(imm: int, word: bool) -> int:
    """The atomic operation LLVM's decoder reads from imm (the fields it does not check are
    ignored): bits 4-7 are the operation, bit 0 FETCH, bit 8 the acquire/release family.
    Only W and DW have read-modify-write forms."""
    op, fetch, acq_rel = (imm >> 4) & 0xF, imm & 0xF == FETCH, imm >> 8 & 1
    if word and fetch and op in (0x0, 0x4, 0x5, 0xA, 0xE, 0xF):
        return op << 4 | FETCH
    if op == 0x0 and acq_rel:
        return LOAD_ACQ
    if op == 0x1 and acq_rel:
        return STORE_REL
    if word and (op in (0x4, 0x5, 0xA) or op == 0x0 and not acq_rel):
        return op << 4
    raise _Invalid


_CLASSES: dict[int, Callable[[Instruction], InstructionText]] = {
    ALU: _alu, ALU64: _alu, JMP: _jmp, JMP32: _jmp, LD: _ld, LDX: _ldx, ST: _st, STX: _stx,
}


def render_instruction(ins: Instruction) -> InstructionText:
    """The text and branch of `ins`; `<unknown>` for an encoding LLVM's decoder rejects."""
    try:
        return _CLASSES[ins.cls](ins)
    except _Invalid:
        return InstructionText(UNKNOWN)


def format_instruction(ins) -> str:
    """llvm-objdump's text for one instruction (without the branch-target label).

    Accepts an `Instruction` or anything with opcode/dst/src/off/imm (and imm_hi for a
    lddw), e.g. the interpreter's slot records."""
    if not isinstance(ins, Instruction):
        ins = Instruction(ins.opcode, ins.dst, ins.src, ins.off, ins.imm, getattr(ins, "imm_hi", 0))
    return render_instruction(ins).text


def format_program(insns: Sequence[Instruction]) -> str:
    """One line per instruction, `slot: text`, jump targets as slot numbers: for messages and
    the engine's dumps, where there are no symbols to name targets."""
    lines = []
    for slot, ins in with_slots(insns):
        text, branch = render_instruction(ins)
        if branch is not None:
            text += f" <{slot + 1 + branch}>"
        lines.append(f"{slot:>5}: {text}")
    return "\n".join(lines) + ("\n" if lines else "")
