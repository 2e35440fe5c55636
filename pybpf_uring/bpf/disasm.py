"""Disassembly text identical to `llvm-objdump -d` of LLVM 22 (one format for CLI, tests, errors).

Entry points:

* `format_instruction(ins)` — the text of one instruction (`r2 = *(u64 *)(r1 + 0x8)`,
  `if w1 s> 0x3 goto +0x2`), or `<unknown>` for an encoding LLVM's decoder rejects.  It is
  the instruction's own text, so it lives with `Instruction` in isa (whose `str()` it is);
  the rules it follows are written there.
* `disassemble(obj)` — a whole `BpfObject` (or the `ElfRecords` of any BPF ELF, which
  `objfile.read_elf` reads from any file) as `llvm-objdump -d` prints it — `-dr` with
  `relocations=True`: every non-empty executable section, a header per symbol,
  `index:\\tbytes\\ttext` per instruction, branch targets labelled `<symbol+0xoff>`;
  `disassemble(obj, path)` adds llvm-objdump's file-name line.
* `disassemble_program(prog)` — one (linked) program, optionally with its source lines.
* `format_program(insns)` — `slot: text` lines for messages, without symbols.

The rules for whole sections were read off llvm-objdump-22 output and checked by differential
fuzzing against it (tests/test_disasm.py keeps them honest):

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
from typing import NamedTuple, Sequence

from . import isa
from .isa import UNKNOWN, Instruction, format_instruction, format_program, render_instruction

# format_instruction, format_program and UNKNOWN are the instruction's own text (isa), named here
# too because this is where a reader of disassembly looks for them
__all__ = ["format_instruction", "disassemble", "disassemble_program", "disassemble_section",
           "format_program", "UNKNOWN", "RELOCATION_TYPES"]

_SLOT = struct.Struct("<BBhi")


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
            text, branch = render_instruction(_instruction_at(data, pos)) if pos + 8 <= len(data) else (UNKNOWN, None)
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
