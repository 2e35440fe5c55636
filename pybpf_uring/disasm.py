"""Disassembly text identical to `llvm-objdump -d` of LLVM 22 (one format for CLI, tests, errors).

Entry points:

* `format_instruction(ins)` — the text of one instruction (`r2 = *(u64 *)(r1 + 0x8)`,
  `if w1 s> 0x3 goto +0x2`), or `<unknown>` for an encoding LLVM's decoder rejects.
* `disassemble(obj)` — a whole `BpfObject` (or the `ElfRecords` of any BPF ELF) as
  `llvm-objdump -d` prints it — `-dr` with `relocations=True`: every non-empty executable
  section, a header per symbol, `index:\\tbytes\\ttext` per instruction, branch targets
  labelled `<symbol+0xoff>`.  `disassemble_file(path)` adds llvm-objdump's file-name line.
* `disassemble_program(prog)` — one (linked) program, optionally with its source lines.
* `format_program(insns)` — `slot: text` lines for messages, without symbols.

The rules were read off llvm-objdump-22 output and checked by differential fuzzing against it
(tests/test_disasm.py keeps them honest):

* Which fields an instruction uses decides validity, as in LLVM's decoder tables: a field the
  text does not show is mostly ignored (`exit` with dst=2 is still `exit`), but `off` must be
  0 in ALU instructions other than neg/byte swaps and in lddw, `imm` must be 0 in `exit`, and
  registers above r11 are invalid.
* Loads and stores narrower than 64 bits show the 32-bit register (`w1 = *(u8 *)...`) at every
  cpu level; `be`/`le` always show `r`.  Immediates and offsets print as signed hex, except
  the unsigned imm of `ld_pseudo`.
* Atomic operations are read from imm bits 0 (fetch), 4-7 (operation) and 8 (acquire/release),
  the rest ignored, in the order LLVM's decoder tries them (`_atomic_op`).
* Symbols of a section are sorted by (address, name); at an address shared by several, the
  last one names it.  A section without a symbol at 0 gets its own name there.  A branch label
  is the last such symbol at or before the (64-bit wrapping) target address.
* A run of 8 or more zero bytes where an instruction would start is printed as `\\t\\t...`
  (llvm-objdump's --disassemble-zeroes default), skipping the run rounded down to 4 bytes.
* Fewer than 8 bytes left, or a valid lddw without its second slot: one byte, `<unknown>`.
"""
from __future__ import annotations

import bisect
import struct
from typing import Callable, NamedTuple, Sequence

from . import isa
from .isa import (ALU, ALU64, JMP, JMP32, LD, LDX, ST, STX, K, X, MEM, MEMSX, ATOMIC, ABS, IND,
                  W, H, B, DW, Instruction)

__all__ = ["format_instruction", "disassemble", "disassemble_file", "disassemble_program",
           "disassemble_section",
           "format_program", "UNKNOWN", "RELOCATION_TYPES"]

UNKNOWN = "<unknown>"
_SLOT = struct.Struct("<BBhi")
MAX_REG = 11   # LLVM's BPF register class is r0-r11
ADDR_SPACE_CAST_OFF = 1   # MOV64 X with off=1: addr_space_cast (BPF arena)


class _Text(NamedTuple):
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

_ALU_OPS = {isa.ADD: "+=", isa.SUB: "-=", isa.MUL: "*=", isa.DIV: "/=", isa.OR: "|=",
            isa.AND: "&=", isa.LSH: "<<=", isa.RSH: ">>=", isa.MOD: "%=", isa.XOR: "^=",
            isa.MOV: "=", isa.ARSH: "s>>="}
_SIGNED_ALU = {isa.DIV: "s/=", isa.MOD: "s%="}
_CONDITIONS = {isa.JEQ: "==", isa.JGT: ">", isa.JGE: ">=", isa.JSET: "&", isa.JNE: "!=",
               isa.JSGT: "s>", isa.JSGE: "s>=", isa.JLT: "<", isa.JLE: "<=", isa.JSLT: "s<",
               isa.JSLE: "s<="}
_LOCK_OPS = {isa.ATOMIC_ADD: "+=", isa.ATOMIC_OR: "|=", isa.ATOMIC_AND: "&=", isa.ATOMIC_XOR: "^="}
_FETCH_OPS = {isa.ATOMIC_ADD | isa.FETCH: "add", isa.ATOMIC_OR | isa.FETCH: "or",
              isa.ATOMIC_AND | isa.FETCH: "and", isa.ATOMIC_XOR | isa.FETCH: "xor"}


class _Invalid(Exception):
    """The encoding is not an instruction LLVM's decoder knows."""


def _reg(n: int, wide: bool = True) -> str:
    if n > MAX_REG:
        raise _Invalid
    return f"{'r' if wide else 'w'}{n}"


# --- one formatter per class -------------------------------------------------------------------
def _alu(ins: Instruction) -> _Text:
    wide = ins.cls == ALU64
    op, d = ins.op, ins.dst
    if op == isa.NEG:
        if ins.source != K:
            raise _Invalid
        r = _reg(d, wide)
        return _Text(f"{r} = -{r}")
    if op == isa.END:
        if ins.imm not in (16, 32, 64):
            raise _Invalid
        if wide:
            if ins.source != K:
                raise _Invalid
            name = "bswap"
        else:
            name = "be" if ins.source == isa.TO_BE else "le"
        r = _reg(d)
        return _Text(f"{r} = {name}{ins.imm} {r}")
    if op not in _ALU_OPS:
        raise _Invalid
    symbol = _ALU_OPS[op]
    if op in _SIGNED_ALU and ins.off == isa.SIGNED_OFF:
        symbol = _SIGNED_ALU[op]
    elif op == isa.MOV and ins.source == X and ins.off in ((8, 16, 32) if wide else (8, 16)):
        return _Text(f"{_reg(d, wide)} = (s{ins.off}){_reg(ins.src, wide)}")
    elif op == isa.MOV and ins.source == X and wide and ins.off == ADDR_SPACE_CAST_OFF:
        # arena pointers: imm holds the destination (high half) and source address spaces
        dst_as, src_as = (ins.imm >> 16) & 0xFFFF, ins.imm & 0xFFFF
        return _Text(f"{_reg(d)} = addr_space_cast({_reg(ins.src)}, {dst_as:#x}, {src_as:#x})")
    elif ins.off:
        raise _Invalid
    operand = _reg(ins.src, wide) if ins.source == X else _hex(ins.imm)
    return _Text(f"{_reg(d, wide)} {symbol} {operand}")


def _jmp(ins: Instruction) -> _Text:
    wide = ins.cls == JMP
    op = ins.op
    if op == isa.JA:
        if ins.source == X:
            if not wide:
                raise _Invalid
            return _Text(f"gotox {_reg(ins.dst)}")   # indirect jump (LLVM 22)
        if wide:
            return _Text(f"goto {_rel(ins.off)}", ins.off)
        return _Text(f"gotol {_rel(ins.imm)}", ins.imm)
    if op in _CONDITIONS:
        operand = _reg(ins.src, wide) if ins.source == X else _hex(ins.imm)
        return _Text(f"if {_reg(ins.dst, wide)} {_CONDITIONS[op]} {operand} goto {_rel(ins.off)}",
                     ins.off)
    if not wide:
        raise _Invalid
    if op == isa.CALL:
        return _Text(f"call {_hex(ins.imm)}" if ins.source == K else f"callx {_reg(ins.dst)}")
    if op == isa.EXIT and ins.source == K and ins.imm == 0:
        return _Text("exit")
    if op == isa.JCOND and ins.source == K:
        return _Text(f"may_goto {_rel(ins.off)}", ins.off)
    raise _Invalid


def _ld(ins: Instruction) -> _Text:
    size = ins.opcode & isa.SIZE_MASK
    if ins.mode == isa.IMM and size == DW:
        if ins.off:
            raise _Invalid
        if ins.src == 0:
            value = ins.imm64 - (1 << 64) if ins.imm64 >> 63 else ins.imm64
            return _Text(f"{_reg(ins.dst)} = {_hex(value)} ll")
        return _Text(f"ld_pseudo\t{_reg(ins.dst)}, {ins.src:#x}, {ins.imm & 0xFFFFFFFF:#x}")
    if size == DW:
        raise _Invalid
    if ins.mode == ABS:
        return _Text(f"r0 = *({_SIZE_TYPE[size]} *)skb[{_hex(ins.imm)}]")
    if ins.mode == IND:
        return _Text(f"r0 = *({_SIZE_TYPE[size]} *)skb[{_reg(ins.src)}]")
    raise _Invalid


def _ldx(ins: Instruction) -> _Text:
    size = ins.opcode & isa.SIZE_MASK
    if ins.mode == MEM:
        return _Text(f"{_reg(ins.dst, size == DW)} = *({_SIZE_TYPE[size]} *){_mem(_reg(ins.src), ins.off)}")
    if ins.mode == MEMSX and size != DW:
        return _Text(f"{_reg(ins.dst)} = *({_SIGNED_TYPE[size]} *){_mem(_reg(ins.src), ins.off)}")
    raise _Invalid


def _st(ins: Instruction) -> _Text:
    size = ins.opcode & isa.SIZE_MASK
    if ins.mode != MEM:
        raise _Invalid
    return _Text(f"*({_SIZE_TYPE[size]} *){_mem(_reg(ins.dst), ins.off)} = {_hex(ins.imm)}")


def _stx(ins: Instruction) -> _Text:
    size = ins.opcode & isa.SIZE_MASK
    wide = size == DW
    t = _SIZE_TYPE[size]
    if ins.mode == MEM:
        return _Text(f"*({t} *){_mem(_reg(ins.dst), ins.off)} = {_reg(ins.src, wide)}")
    if ins.mode != ATOMIC:
        raise _Invalid
    op = _atomic_op(ins.imm, size in (W, DW))
    addr = _mem(_reg(ins.dst), ins.off)
    s = _reg(ins.src, wide)
    if op == isa.LOAD_ACQ:
        # the one atomic that loads: dst receives, src holds the address
        return _Text(f"{_reg(ins.dst, wide)} = load_acquire(({t} *){_mem(_reg(ins.src), ins.off)})")
    if op == isa.STORE_REL:
        return _Text(f"store_release(({t} *){addr}, {s})")
    if op in _LOCK_OPS:
        return _Text(f"lock *({t} *){addr} {_LOCK_OPS[op]} {s}")
    if op in _FETCH_OPS:
        return _Text(f"{s} = atomic_fetch_{_FETCH_OPS[op]}(({t} *){addr}, {s})")
    suffix = "_64" if wide else "32_32"
    inner = addr[1:-1]   # xchg/cmpxchg print the address without parentheses
    if op == isa.XCHG:
        return _Text(f"{s} = xchg{suffix}({inner}, {s})")
    r0 = _reg(0, wide)
    return _Text(f"{r0} = cmpxchg{suffix}({inner}, {r0}, {s})")


def _atomic_op(imm: int, word: bool) -> int:
    """The atomic operation LLVM's decoder reads from imm (the fields it does not check are
    ignored): bits 4-7 are the operation, bit 0 FETCH, bit 8 the acquire/release family.
    Only W and DW have read-modify-write forms."""
    op, fetch, acq_rel = (imm >> 4) & 0xF, imm & 0xF == isa.FETCH, imm >> 8 & 1
    if word and fetch and op in (0x0, 0x4, 0x5, 0xA, 0xE, 0xF):
        return op << 4 | isa.FETCH
    if op == 0x0 and acq_rel:
        return isa.LOAD_ACQ
    if op == 0x1 and acq_rel:
        return isa.STORE_REL
    if word and (op in (0x4, 0x5, 0xA) or op == 0x0 and not acq_rel):
        return op << 4
    raise _Invalid


_CLASSES: dict[int, Callable[[Instruction], _Text]] = {
    ALU: _alu, ALU64: _alu, JMP: _jmp, JMP32: _jmp, LD: _ld, LDX: _ldx, ST: _st, STX: _stx,
}


def _render(ins: Instruction) -> _Text:
    try:
        return _CLASSES[ins.cls](ins)
    except _Invalid:
        return _Text(UNKNOWN)


def format_instruction(ins) -> str:
    """llvm-objdump's text for one instruction (without the branch-target label).

    Accepts an `isa.Instruction` or anything with opcode/dst/src/off/imm (and imm_hi for a
    lddw), e.g. the interpreter's slot records."""
    if not isinstance(ins, Instruction):
        ins = Instruction(ins.opcode, ins.dst, ins.src, ins.off, ins.imm, getattr(ins, "imm_hi", 0))
    return _render(ins).text


def format_program(insns: Sequence[Instruction]) -> str:
    """One line per instruction, `slot: text`, jump targets as slot numbers: for messages and
    the engine's dumps, where there are no symbols to name targets."""
    lines = []
    for slot, ins in isa.with_slots(insns):
        text, branch = _render(ins)
        if branch is not None:
            text += f" <{slot + 1 + branch}>"
        lines.append(f"{slot:>5}: {text}")
    return "\n".join(lines) + ("\n" if lines else "")


# --- whole objects ----------------------------------------------------------------------------
class _Sym(NamedTuple):
    addr: int
    name: str
    type: int


_SYM_TYPE_ORDER = {"notype": 0, "object": 1, "func": 2, "section": 3, "file": 4}


def _section_symbols(obj, sec) -> list[_Sym]:
    syms = sorted(_Sym(s.value, s.name, _SYM_TYPE_ORDER.get(s.type, 5)) for s in obj.symbols
                  if s.section == sec.index and s.type not in ("section", "file"))
    if not syms or syms[0].addr != 0:
        syms.insert(0, _Sym(0, sec.name, _SYM_TYPE_ORDER["func"]))
    return syms


def _label(syms: list[_Sym], addrs: list[int], target: int) -> str:
    """` <name+0xoff>` for a branch target: the last symbol (in sorted order) at or before it."""
    at = bisect.bisect_right(addrs, target)
    if at == 0:
        return ""
    best = syms[at - 1]
    return f" <{best.name}>" if best.addr == target else f" <{best.name}+{target - best.addr:#x}>"


# ELF relocation types of the BPF target (llvm/BinaryFormat/ELFRelocs/BPF.def)
RELOCATION_TYPES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32",
                    4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}


def disassemble_section(data: bytes, symbols: list[_Sym],
                        relocs: Sequence[tuple[int, str]] | None = None,
                        before: dict[int, list[str]] | None = None) -> list[str]:
    """The lines llvm-objdump prints for one section's bytes, from its first symbol header.

    `relocs`, (offset, text) sorted by offset, are printed after the instruction they patch
    (as `-r` does); zero runs then stop at the next one, so a relocated zero slot is shown."""
    out: list[str] = []
    addrs = [s.addr for s in symbols]
    pending = list(relocs or [])
    pending.reverse()   # pop() from the front
    for i, sym in enumerate(symbols):
        end = len(data) if i + 1 == len(symbols) else min(len(data), symbols[i + 1].addr)
        if sym.addr >= end:
            continue  # several symbols at one address: the last one names it
        out.append("")
        out.append(f"{sym.addr:016x} <{sym.name}>:")
        pos = sym.addr
        while pos < end:
            limit = min(end, pending[-1][0]) if pending and pending[-1][0] >= pos else end
            zeros = _zero_run(data, pos, limit)
            if zeros:
                out.append("\t\t...")
                pos += zeros
                continue
            if before and pos in before:
                out.extend(before[pos])
            # LLVM decodes 8 bytes first; a valid lddw then wants its second slot too, and
            # without 8 (or 16) bytes left only one byte is skipped
            text, branch = _render(_instruction_at(data, pos)) if pos + 8 <= len(data) else (UNKNOWN, None)
            size = 16 if text != UNKNOWN and data[pos] == isa.LDDW else 8
            if pos + size > len(data):
                text, branch, size = UNKNOWN, None, 1
            if branch is not None:
                text += _label(symbols, addrs, (pos + 8 + branch * 8) & ((1 << 64) - 1))
            out.append(f"{pos // 8:>8}:\t{data[pos:pos + size].hex(' ')}\t{text}")
            pos += size
            while pending and pending[-1][0] < pos:
                offset, what = pending.pop()
                out.append(f"\t\t{offset:016x}:  {what}")
    return out


def _zero_run(data: bytes, pos: int, end: int) -> int:
    n = pos
    while n < end and data[n] == 0:
        n += 1
    n -= pos
    return n & ~3 if n >= 8 else 0


def _instruction_at(data: bytes, pos: int) -> Instruction:
    """The instruction at byte `pos`, reading a lddw's second slot only for its imm (LLVM
    ignores the rest of it)."""
    opcode, regs, off, imm = _SLOT.unpack_from(data, pos)
    imm_hi = _SLOT.unpack_from(data, pos + 8)[3] if opcode == isa.LDDW and pos + 16 <= len(data) else 0
    return Instruction(opcode, regs & 0xF, regs >> 4, off, imm, imm_hi)


def _relocation_lines(obj, sec) -> list[tuple[int, str]]:
    records = getattr(obj, "relocation_records", None) or getattr(obj, "relocations", {})
    out = []
    for offset, sym_index, rtype in records.get(sec.index, []):
        sym = obj.symbols[sym_index] if 0 <= sym_index < len(obj.symbols) else None
        name = "*ABS*"
        if sym is not None:
            name = sym.name
            if sym.type == "section" and 0 < sym.section < len(obj.sections):
                name = obj.sections[sym.section].name
        out.append((offset, f"{RELOCATION_TYPES.get(rtype, f'Unknown ({rtype})')}\t{name}"))
    return sorted(out, key=lambda r: r[0])


def disassemble(obj, filename: str | None = None, relocations: bool = False) -> str:
    """`llvm-objdump -d` (with `relocations`, `-dr`) of a BpfObject or `objfile.ElfRecords`.

    With `filename`, the output starts with the same `\\nNAME:\\tfile format elf64-bpf\\n`
    header as llvm-objdump's; without, from the first section header."""
    lines: list[str] = []
    if filename is not None:
        lines += ["", f"{filename}:\tfile format elf64-bpf"]
    for sec in obj.sections:
        if not sec.executable or not sec.size:
            continue
        lines += ["", f"Disassembly of section {sec.name}:"]
        relocs = _relocation_lines(obj, sec) if relocations else None
        lines += disassemble_section(sec.data, _section_symbols(obj, sec), relocs)
    return "\n".join(lines) + "\n" if lines else ""


_RELOCATION_OF_KIND = {"map": "R_BPF_64_64", "data": "R_BPF_64_64", "func": "R_BPF_64_64",
                       "extern": "R_BPF_64_64", "call": "R_BPF_64_32", "kfunc": "R_BPF_64_32"}


def disassemble_program(prog, source: bool = False, relocations: bool = False) -> str:
    """One ProgramSpec (as read, or `linked()`) in llvm-objdump's format: a header for the
    program and for each subprogram its func_info names, branch labels relative to them.
    With `source`, the line_info text precedes the instructions it starts (`; text`), which is
    how a verifier error at slot N is read against the program; with `relocations`, each
    relocation follows its instruction as `-dr` shows it (offsets within the program, the
    variable's name for data)."""
    data = isa.encode(prog.instructions)
    names = {0: prog.name}
    for fi in getattr(prog, "func_info", ()):
        if fi.insn and fi.name:
            names.setdefault(fi.insn * 8, fi.name)
    symbols = sorted(_Sym(addr, name, 2) for addr, name in names.items())
    before: dict[int, list[str]] = {}
    if source:
        last = None
        for li in sorted(getattr(prog, "line_info", ()), key=lambda li: li.insn):
            # one record per statement *column*: show a line when it changes, as objdump -S
            if li.text.strip() and (li.file, li.line) != last:
                before.setdefault(li.insn * 8, []).append(f"; {li.text.strip()}")
            last = (li.file, li.line)
    relocs = None
    if relocations:
        relocs = sorted((r.insn_index * 8, f"{_RELOCATION_OF_KIND.get(r.kind, r.kind)}\t"
                         f"{r.variable or r.symbol}") for r in getattr(prog, "relocations", ()))
    lines = disassemble_section(data, symbols, relocs, before)
    return "\n".join(lines[1:]) + "\n" if data else ""


def disassemble_file(path: str, relocations: bool = False) -> str:
    """llvm-objdump's output for any BPF ELF file, including objects that are not valid
    programs (it reads only sections and symbols, see `objfile.read_elf`)."""
    from .objfile import read_elf
    return disassemble(read_elf(path), path, relocations)
