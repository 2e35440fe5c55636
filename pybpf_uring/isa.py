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
This module interprets nothing: semantics live in the engine, text in `disasm`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

# src of CALL: what imm names (RFC 9669 §4.3.1: a helper's id, a local function's offset, a
# kfunc's BTF id); src of lddw: how the loader reads imm.  The numbers are the kernel's BPF_PSEUDO_*.
from .uapi import (BPF_PSEUDO_CALL as CALL_PSEUDO, BPF_PSEUDO_FUNC as PSEUDO_FUNC,
                   BPF_PSEUDO_KFUNC_CALL as CALL_KFUNC, BPF_PSEUDO_MAP_IDX as PSEUDO_MAP_IDX,
                   BPF_PSEUDO_MAP_IDX_VALUE as PSEUDO_MAP_IDX_VALUE, INSN_SIZE)

__all__ = [
    "Instruction", "DecodeError", "decode", "encode", "slot_indexes", "slot_count", "with_slots",
    "mnemonic",
    "INSN_SIZE",
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
        from .disasm import format_instruction   # disasm builds on this module
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
    for error messages and tables; `disasm` renders the llvm-objdump text."""
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
