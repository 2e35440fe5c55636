"""The bpf_conformance suite's test-data format, its assembler syntax, and its plugin protocol.

A case file is a list of sections (`-- asm`, `-- raw`, `-- mem`, `-- result`, `-- error`, plus
`-- c` and `-- no register offset`, which carry prose and are ignored).  `read_case` turns one
file into a `ConformanceCase` holding the program already assembled to bytes, so every runner
(in-process, through the plugin protocol, or a future JIT) executes exactly the same bytes.

The reader is strict on purpose: the suite ships deliberately broken files (`negative/`) and a
reader that guesses would turn them into silently wrong tests.  Every problem becomes a
`ConformanceFormatError` naming the file, the line and what is wrong -- never a traceback.

The assembler follows the suite's syntax (`mov %r0, 1`, `ldxw %r0, [%r1+4]`, `lock fetch add
[%r10-8], %r1`, labels, `exit` as an implicit label of the first exit) but is stricter than the
suite's own C++ assembler about ranges: an immediate must fit its field (a decimal one as a
signed 32-bit value, a hex one as 32 bits), an offset 16 bits, and registers are r0-r10 only.

`run_case` / `run_suite` run cases in-process on the engine (r1 = the case's memory, r2 = its
length); `plugin_main` speaks the bpf_conformance plugin protocol: program bytes in hex on
stdin, memory in the same form as argv[0] when there is any, r0 printed in hex on stdout,
non-zero exit and a message on stderr on error (`python -m pybpf_uring.conformance` is one).
Raw programs are checked with the engine's `validate`, so a file whose instructions set fields
RFC 9669 requires to be zero is refused at read time, naming its line.

The suite itself is not part of this project: `cases_dir()` is where its `*.data` cases are, as
named by the BPF_CONFORMANCE_TESTS environment variable (a bpf_conformance checkout's `tests/`),
so every reader of the suite -- tests and benches -- finds it in one way.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from .bpf import isa
from .runtime.engine.suite_helpers import default_helpers

__all__ = [
    "ConformanceCase", "ConformanceFormatError", "CaseOutcome", "read_case", "assemble",
    "parse_hex_bytes", "run_case", "run_suite", "SuiteResult", "execute", "plugin_main",
    "default_helpers", "CASES_ENV", "CASES_MISSING", "cases_dir",
]

# Sections the format knows; the prose ones are kept but never interpreted.
_SECTIONS = ("asm", "raw", "mem", "result", "error", "c", "no register offset")
_PROSE_SECTIONS = frozenset({"c", "no register offset"})

CASES_ENV = "BPF_CONFORMANCE_TESTS"
CASES_MISSING = (f"{CASES_ENV} does not name a directory of bpf_conformance cases "
                 "(the tests/ directory of a bpf_conformance checkout)")


def cases_dir() -> Path | None:
    """The directory of the suite's `*.data` cases named by $BPF_CONFORMANCE_TESTS, or None when
    the variable is unset or names no directory (what needs the suite then skips, saying
    CASES_MISSING).  The suite's deliberately broken files, when present, are its sibling
    `negative/`."""
    value = os.environ.get(CASES_ENV)
    return Path(value) if value and Path(value).is_dir() else None


class ConformanceFormatError(ValueError):
    """A case file the reader refuses: `path:line: message` (line 0 when the whole file is wrong)."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


@dataclass(frozen=True)
class ConformanceCase:
    """One test case, program already assembled.

    `insn_lines[i]` is the file line of instruction slot i (both slots of an lddw point at the
    same line), so a fault at slot i can quote the source the suite author wrote.
    """

    path: Path
    asm: str | None
    program: bytes
    memory: bytes
    result: int | None
    error: str | None
    insn_lines: tuple[int, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def needs_callx(self) -> bool:
        """True for the callx group, which RFC 9669 leaves out and the project does not run."""
        return any(ins.opcode == isa.JMP | isa.CALL | isa.X for ins in isa.decode(self.program))


# ---------------------------------------------------------------------------------------------
# Section splitting

@dataclass
class _Section:
    name: str
    header_line: int
    lines: list[tuple[int, str]]   # (line number, text)


def _split_sections(path: Path, text: str) -> dict[str, _Section]:
    sections: dict[str, _Section] = {}
    current: _Section | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith("--"):
            name = line[2:].strip()
            if name not in _SECTIONS:
                raise ConformanceFormatError(
                    path, lineno, f"unknown section '-- {name}'; sections are "
                    + ", ".join(f"'-- {s}'" for s in _SECTIONS))
            if name in sections:
                raise ConformanceFormatError(
                    path, lineno, f"section '-- {name}' appears twice "
                    f"(first at line {sections[name].header_line})")
            current = sections[name] = _Section(name, lineno, [])
            continue
        if current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise ConformanceFormatError(
                    path, lineno, f"text before the first section: {line.strip()!r} "
                    "(only '#' comments may precede '-- asm')")
            continue
        current.lines.append((lineno, line))
    return sections


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


# ---------------------------------------------------------------------------------------------
# Numbers

_DEC = re.compile(r"[+-]?[0-9]+\Z")
_HEX = re.compile(r"[+-]?0[xX][0-9a-fA-F]+\Z")


def _parse_int(token: str) -> int | None:
    if _HEX.match(token):
        return int(token, 16)
    if _DEC.match(token):
        return int(token, 10)
    return None


def _is_hex(token: str) -> bool:
    return bool(_HEX.match(token))


class _AsmError(Exception):
    """Raised inside the assembler; `assemble` adds the file and line."""


def _ranged(token: str, bits: int, what: str) -> int:
    """A signed field of `bits` bits: decimal must fit signed, hex must fit unsigned (then wraps).

    That is how the suite writes them (`-3` and `0xfffffffd` mean the same imm) and why
    `2147483648` and `0x100000000` are refused for a 32-bit field.
    """
    value = _parse_int(token)
    if value is None:
        raise _AsmError(f"{what} {token!r} is not a number (decimal or 0x hex)")
    if _is_hex(token) and not token.startswith("-"):
        if not 0 <= value < 1 << bits:
            raise _AsmError(f"{what} {token} does not fit in {bits} bits")
        return value - (1 << bits) if value >> (bits - 1) else value
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= value <= hi:
        raise _AsmError(f"{what} {token} is outside the signed {bits}-bit range [{lo}, {hi}]")
    return value


def _imm64(token: str) -> int:
    value = _parse_int(token)
    if value is None:
        raise _AsmError(f"immediate {token!r} is not a number (decimal or 0x hex)")
    if not -(1 << 63) <= value < 1 << 64:
        raise _AsmError(f"immediate {token} does not fit in 64 bits")
    return value & ((1 << 64) - 1)


# ---------------------------------------------------------------------------------------------
# Assembler (the suite's syntax)

_REG = re.compile(r"%r([0-9]+)\Z")
_MEM = re.compile(r"\[\s*(%r[0-9]+)\s*(?:([+-])\s*((?:0[xX])?[0-9a-fA-F]+))?\s*\]\Z")
_LABEL = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*\Z")

# Mnemonic pieces -> RFC 9669 opcode fields, from pybpf_uring.bpf.isa's tables.
_ALU_OPS = {name: op for op, name in isa.ALU_NAMES.items() if op != isa.END}
_ALU_OPS.update(sdiv=isa.DIV, smod=isa.MOD)
_SIGNED_ALU = frozenset({"sdiv", "smod"})     # offset 1 selects the signed variant
_JMP_OPS = {isa.JMP_NAMES[op]: op for op in isa.CONDITIONAL_JUMPS}
_SIZE = {name: bits for bits, name in isa.SIZE_NAMES.items()}
_ATOMIC_OPS = {"add": isa.ATOMIC_ADD, "or": isa.ATOMIC_OR, "and": isa.ATOMIC_AND, "xor": isa.ATOMIC_XOR}
_LDX, _ST, _STX, _ALU, _JMP, _JMP32, _ALU64 = (isa.LDX, isa.ST, isa.STX, isa.ALU,
                                                     isa.JMP, isa.JMP32, isa.ALU64)
_K, _X, _END = isa.K, isa.X, isa.END
_MEMM, _MEMSX, _ATOMIC = isa.MEM, isa.MEMSX, isa.ATOMIC
_JA, _CALL, _EXIT = isa.JA, isa.CALL, isa.EXIT
_FETCH, _XCHG, _CMPXCHG = isa.FETCH, isa.XCHG, isa.CMPXCHG


@dataclass
class _Insn:
    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None      # label to resolve into off (jumps) or imm (ja32, call local)
    target_in_imm: bool = False
    wide_imm: int | None = None    # lddw's second slot


def _reg(token: str) -> int:
    m = _REG.match(token)
    if not m or int(m.group(1)) > 10:
        raise _AsmError(f"invalid register {token!r}; registers are %r0 to %r10")
    return int(m.group(1))


def _mem(token: str) -> tuple[int, int]:
    m = _MEM.match(token)
    if not m:
        raise _AsmError(f"expected a memory operand like [%r1+8], got {token!r}")
    reg = _reg(m.group(1))
    if m.group(2) is None:
        return reg, 0
    return reg, _ranged(m.group(2) + m.group(3), 16, "offset")


def _target(token: str, insn: _Insn, in_imm: bool = False) -> _Insn:
    """A jump target is `+N`/`-N` (relative) or a label, resolved after the whole program."""
    if token[:1] in "+-":
        value = _ranged(token, 32 if in_imm else 16, "jump offset")
        if in_imm:
            insn.imm = value
        else:
            insn.off = value
    elif _LABEL.match(token):
        insn.target, insn.target_in_imm = token, in_imm
    else:
        raise _AsmError(f"invalid jump target {token!r}; expected a label or +N/-N")
    return insn


def _want(mnemonic: str, operands: list[str], count: int) -> None:
    if len(operands) != count:
        raise _AsmError(f"'{mnemonic}' takes {count} operand{'s' if count != 1 else ''}, "
                        f"got {len(operands)}")


def _asm_alu(mnemonic: str, operands: list[str]) -> _Insn:
    base, cls = (mnemonic[:-2], _ALU) if mnemonic.endswith("32") else (
        mnemonic[:-2] if mnemonic.endswith("64") else mnemonic, _ALU64)
    code = _ALU_OPS[base]
    off = 1 if base in _SIGNED_ALU else 0
    if base == "neg":
        _want(mnemonic, operands, 1)
        return _Insn(cls | code, dst=_reg(operands[0]))
    _want(mnemonic, operands, 2)
    dst = _reg(operands[0])
    if operands[1].startswith("%"):
        return _Insn(cls | code | _X, dst=dst, src=_reg(operands[1]), off=off)
    return _Insn(cls | code | _K, dst=dst, off=off, imm=_ranged(operands[1], 32, "immediate"))


def _asm_movsx(mnemonic: str, operands: list[str]) -> _Insn:
    # movsx<from><to>: movsx832 sign-extends the low 8 bits into a 32-bit result (RFC 9669 4.1).
    from_bits, to_bits = {"movsx832": (8, 32), "movsx1632": (16, 32), "movsx864": (8, 64),
                          "movsx1664": (16, 64), "movsx3264": (32, 64)}[mnemonic]
    _want(mnemonic, operands, 2)
    cls = _ALU if to_bits == 32 else _ALU64
    return _Insn(cls | 0xB0 | _X, dst=_reg(operands[0]), src=_reg(operands[1]), off=from_bits)


def _asm_end(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 1)
    kind, width = re.match(r"(le|be|bswap|swap)(16|32|64)\Z", mnemonic).groups()
    opcode = {"le": _ALU | _END | _K, "be": _ALU | _END | _X}.get(kind, _ALU64 | _END | _K)
    return _Insn(opcode, dst=_reg(operands[0]), imm=int(width))


def _asm_jmp(mnemonic: str, operands: list[str]) -> _Insn:
    base, cls = (mnemonic[:-2], _JMP32) if mnemonic.endswith("32") else (mnemonic, _JMP)
    _want(mnemonic, operands, 3)
    dst = _reg(operands[0])
    if operands[1].startswith("%"):
        insn = _Insn(cls | _JMP_OPS[base] | _X, dst=dst, src=_reg(operands[1]))
    else:
        insn = _Insn(cls | _JMP_OPS[base] | _K, dst=dst, imm=_ranged(operands[1], 32, "immediate"))
    return _target(operands[2], insn)


def _asm_ja(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 1)
    if mnemonic == "ja32":   # gotol: JMP32 | JA with the offset in imm (RFC 9669 4.3)
        return _target(operands[0], _Insn(_JMP32 | _JA), in_imm=True)
    return _target(operands[0], _Insn(_JMP | _JA))


def _asm_exit(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 0)
    return _Insn(_JMP | _EXIT)


def _asm_call(mnemonic: str, operands: list[str]) -> _Insn:
    if len(operands) == 1 and operands[0].startswith("%"):
        # callx (not in RFC 9669): register in dst, as LLVM encodes it.
        return _Insn(_JMP | _CALL | _X, dst=_reg(operands[0]))
    if len(operands) == 1:
        operands = ["helper", operands[0]]
    _want(mnemonic, operands, 2)
    mode, target = operands
    if mode == "helper":
        return _Insn(_JMP | _CALL, imm=_ranged(target, 32, "helper id"))
    if mode == "local":
        return _target(target, _Insn(_JMP | _CALL, src=1), in_imm=True)
    if mode == "runtime":
        return _Insn(_JMP | _CALL, src=2, imm=_ranged(target, 32, "BTF id"))
    raise _AsmError(f"invalid call mode {mode!r}; expected 'helper', 'local' or 'runtime'")


def _asm_lddw(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 2)
    value = _imm64(operands[1])
    low = value & 0xFFFFFFFF
    return _Insn(isa.LDDW, dst=_reg(operands[0]),
                 imm=low - (1 << 32) if low >> 31 else low, wide_imm=value >> 32)


def _asm_ldx(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 2)
    signed = mnemonic.startswith("ldxs")
    size = mnemonic[4:] if signed else mnemonic[3:]
    src, off = _mem(operands[1])
    return _Insn(_LDX | (_MEMSX if signed else _MEMM) | _SIZE[size],
                 dst=_reg(operands[0]), src=src, off=off)


def _asm_st(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 2)
    dst, off = _mem(operands[0])
    return _Insn(_ST | _MEMM | _SIZE[mnemonic[2:]], dst=dst, off=off,
                 imm=_ranged(operands[1], 32, "immediate"))


def _asm_stx(mnemonic: str, operands: list[str]) -> _Insn:
    _want(mnemonic, operands, 2)
    dst, off = _mem(operands[0])
    return _Insn(_STX | _MEMM | _SIZE[mnemonic[3:]], dst=dst, off=off, src=_reg(operands[1]))


def _asm_lock(words: list[str], operands: list[str]) -> _Insn:
    """`lock [fetch] OP[32] [%rD+off], %rS` -- `words` are the tokens before the first comma."""
    if not words:
        raise _AsmError("invalid number of operands for lock: expected "
                        "'lock [fetch] OP [%rD+off], %rS'")
    fetch = words[0] == "fetch"
    rest = words[1:] if fetch else words
    if len(rest) != 2 or len(operands) != 1:
        raise _AsmError("invalid number of operands for lock: expected "
                        "'lock [fetch] OP [%rD+off], %rS'")
    op, mem = rest
    size = _SIZE["w"] if op.endswith("32") else _SIZE["dw"]
    base = op[:-2] if op.endswith("32") else op
    if base in _ATOMIC_OPS:
        imm = _ATOMIC_OPS[base] | (_FETCH if fetch else 0)
    elif base in ("xchg", "cmpxchg") and not fetch:   # both always fetch; 'fetch' is redundant
        imm = _XCHG if base == "xchg" else _CMPXCHG
    else:
        raise _AsmError(f"invalid atomic operation {'fetch ' if fetch else ''}{op!r}; expected "
                        "add, and, or, xor (optionally 'fetch'), xchg or cmpxchg, with 32 suffix "
                        "for 32 bits")
    dst, off = _mem(mem)
    return _Insn(_STX | _ATOMIC | size, dst=dst, src=_reg(operands[0]), off=off, imm=imm)


def _mnemonic_table() -> dict[str, Callable[[str, list[str]], _Insn]]:
    table: dict[str, Callable[[str, list[str]], _Insn]] = {}
    for op in _ALU_OPS:
        for suffix in ("", "32", "64"):
            table[op + suffix] = _asm_alu
    for name in ("movsx832", "movsx1632", "movsx864", "movsx1664", "movsx3264"):
        table[name] = _asm_movsx
    for kind in ("le", "be", "bswap", "swap"):
        for width in ("16", "32", "64"):
            table[kind + width] = _asm_end
    for op in _JMP_OPS:
        table[op] = table[op + "32"] = _asm_jmp
    table.update(ja=_asm_ja, ja32=_asm_ja, exit=_asm_exit, call=_asm_call, lddw=_asm_lddw)
    for size in _SIZE:
        table["ldx" + size] = _asm_ldx
        table["st" + size] = _asm_st
        table["stx" + size] = _asm_stx
    for size in ("b", "h", "w"):
        table["ldxs" + size] = _asm_ldx
    return table


_MNEMONICS = _mnemonic_table()


def _split_operands(rest: str) -> list[str]:
    return [part.strip() for part in rest.split(",")] if rest.strip() else []


def assemble(lines: Iterable[tuple[int, str]], path: str | Path = "<asm>") -> tuple[bytes, tuple[int, ...]]:
    """Assemble `(line number, text)` pairs; returns the program and each slot's line number."""
    insns: list[tuple[int, _Insn]] = []
    labels: dict[str, tuple[int, int]] = {}     # label -> (slot, line)
    slot = 0
    first_exit: int | None = None
    for lineno, raw in lines:
        text = _strip_comment(raw)
        if not text:
            continue
        if text.endswith(":") and " " not in text:
            label = text[:-1]
            if not _LABEL.match(label):
                raise ConformanceFormatError(path, lineno, f"invalid label name {label!r}")
            if label in labels:
                raise ConformanceFormatError(
                    path, lineno, f"label {label!r} defined twice (first at line {labels[label][1]})")
            labels[label] = (slot, lineno)
            continue
        mnemonic, _, rest = text.partition(" ")
        try:
            if mnemonic == "lock":
                head, _, tail = rest.partition(",")
                insn = _asm_lock(head.split(), _split_operands(tail) if "," in rest else [])
            elif mnemonic == "call":   # `call local NAME`, `call helper 5`: words, not commas
                insn = _asm_call(mnemonic, rest.split())
            elif mnemonic in _MNEMONICS:
                insn = _MNEMONICS[mnemonic](mnemonic, _split_operands(rest))
            else:
                raise _AsmError(f"invalid mnemonic {mnemonic!r}")
        except _AsmError as exc:
            raise ConformanceFormatError(path, lineno, str(exc)) from None
        if mnemonic == "exit" and first_exit is None:
            first_exit = slot
        insns.append((lineno, insn))
        slot += 2 if insn.wide_imm is not None else 1
    if not insns:
        raise ConformanceFormatError(path, 0, "the asm section holds no instructions")
    if first_exit is not None:
        labels.setdefault("exit", (first_exit, 0))   # the suite's implicit label
    out: list[isa.Instruction] = []
    slot_lines: list[int] = []
    for lineno, insn in insns:
        here = len(slot_lines)
        if insn.target is not None:
            if insn.target not in labels:
                raise ConformanceFormatError(path, lineno, f"undefined label {insn.target!r}")
            delta = labels[insn.target][0] - here - 1
            if insn.target_in_imm:
                insn.imm = delta
            elif not -(1 << 15) <= delta < 1 << 15:
                raise ConformanceFormatError(path, lineno, f"jump to {insn.target!r} is "
                                             f"{delta} instructions away; offsets hold 16 bits")
            else:
                insn.off = delta
        wide = insn.wide_imm or 0
        out.append(isa.Instruction(insn.opcode, insn.dst, insn.src, insn.off, insn.imm,
                                   wide - (1 << 32) if wide >> 31 else wide))
        slot_lines.extend([lineno] * out[-1].slots)
    return isa.encode(out), tuple(slot_lines)


# ---------------------------------------------------------------------------------------------
# Hex bytes (mem sections, raw sections, and the plugin protocol)

def parse_hex_bytes(text: str) -> bytes:
    """`"00 01 ff"` (any whitespace) -> bytes; ValueError with the bad token otherwise."""
    out = bytearray()
    for token in text.split():
        if not re.fullmatch(r"[0-9a-fA-F]{2}", token):
            raise ValueError(f"{token!r} is not a hex byte (two hex digits)")
        out.append(int(token, 16))
    return bytes(out)


def _read_mem(path: Path, section: _Section) -> bytes:
    out = bytearray()
    for lineno, line in section.lines:
        try:
            out += parse_hex_bytes(_strip_comment(line))
        except ValueError as exc:
            raise ConformanceFormatError(path, lineno, f"in '-- mem': {exc}") from None
    return bytes(out)


def _read_raw(path: Path, section: _Section) -> tuple[bytes, tuple[int, ...]]:
    """Raw words are either `0x` 64-bit values (little-endian instructions) or 8 hex bytes."""
    out = bytearray()
    lines: list[int] = []
    for lineno, line in section.lines:
        text = _strip_comment(line)
        if not text:
            continue
        if re.fullmatch(r"0[xX][0-9a-fA-F]{1,16}", text):
            chunk = struct.pack("<Q", int(text, 16))
        else:
            try:
                chunk = parse_hex_bytes(text)
            except ValueError as exc:
                raise ConformanceFormatError(path, lineno, f"in '-- raw': {exc}") from None
            if len(chunk) != 8:
                raise ConformanceFormatError(
                    path, lineno, f"in '-- raw': an instruction is 8 bytes, this line has {len(chunk)}")
        out += chunk
        lines.append(lineno)
    if not out:
        raise ConformanceFormatError(path, section.header_line, "the raw section holds no instructions")
    return bytes(out), tuple(lines)


def _read_result(path: Path, section: _Section) -> int:
    values = [(n, _strip_comment(t)) for n, t in section.lines if _strip_comment(t)]
    if len(values) != 1:
        raise ConformanceFormatError(
            path, section.header_line, f"'-- result' must hold exactly one value, found {len(values)}")
    lineno, token = values[0]
    value = _parse_int(token)
    if value is None or not -(1 << 63) <= value < 1 << 64:
        raise ConformanceFormatError(path, lineno, f"result {token!r} is not a 64-bit number")
    return value & ((1 << 64) - 1)


def read_case(path: str | Path) -> ConformanceCase:
    """Read and assemble one case file; every malformation is a `ConformanceFormatError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConformanceFormatError(path, 0, f"cannot read: {exc}") from None
    if not text.strip():
        raise ConformanceFormatError(path, 0, "empty file: a case needs '-- asm' (or '-- raw') "
                                     "and '-- result' (or '-- error')")
    sections = _split_sections(path, text)
    if not sections:
        raise ConformanceFormatError(path, 0, "no sections, only comments: a case needs '-- asm' "
                                     "(or '-- raw') and '-- result' (or '-- error')")
    if "asm" not in sections and "raw" not in sections:
        raise ConformanceFormatError(path, 0, "no program: the file has neither '-- asm' nor '-- raw'")
    if "result" not in sections and "error" not in sections:
        raise ConformanceFormatError(path, 0, "no expectation: the file has neither '-- result' "
                                     "nor '-- error'")
    asm_text = None
    program, lines = b"", ()
    if "asm" in sections:
        asm = sections["asm"]
        asm_text = "\n".join(t for _, t in asm.lines)
        program, lines = assemble(asm.lines, path)
    if "raw" in sections:
        raw, raw_lines = _read_raw(path, sections["raw"])
        if asm_text is not None and raw != program:
            raise ConformanceFormatError(
                path, sections["raw"].header_line, "'-- raw' and '-- asm' disagree: the asm "
                "assembles to different bytes than the raw words")
        program, lines = raw, raw_lines
    _check_program(path, program, lines)
    memory = _read_mem(path, sections["mem"]) if "mem" in sections else b""
    result = _read_result(path, sections["result"]) if "result" in sections else None
    error = ("\n".join(_strip_comment(t) for _, t in sections["error"].lines).strip()
             if "error" in sections else None)
    notes = {name: "\n".join(t for _, t in s.lines) for name, s in sections.items()
             if name in _PROSE_SECTIONS}
    return ConformanceCase(path, asm_text, program, memory, result, error, lines, notes)


def _check_program(path: Path, program: bytes, lines: tuple[int, ...]) -> None:
    """Refuse programs the engine would refuse (unused fields set, unknown opcodes)."""
    from .runtime.engine import InvalidProgram, validate
    try:
        validate(program, allow_callx=True)
    except InvalidProgram as exc:
        line = lines[exc.insn_index] if exc.insn_index is not None and exc.insn_index < len(lines) else 0
        raise ConformanceFormatError(path, line, str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Running cases

@dataclass(frozen=True)
class CaseOutcome:
    """What running a case gave, next to what the case expects."""

    case: ConformanceCase
    r0: int | None
    error: str | None

    @property
    def passed(self) -> bool:
        if self.case.error is not None:
            return self.error is not None and self.case.error in self.error
        return self.error is None and self.r0 == self.case.result

    def describe(self) -> str:
        got = f"error {self.error!r}" if self.error is not None else f"r0 = {self.r0:#x}"
        want = (f"error containing {self.case.error!r}" if self.case.error is not None
                else f"r0 = {self.case.result:#x}")
        return f"{self.case.path.name}: {'pass' if self.passed else 'FAIL'}: got {got}, expected {want}"


def execute(program: bytes, memory: bytes, *, budget: int | None = None) -> int:
    """Run `program` as the suite does: r1 = address of a copy of `memory`, r2 = its length.

    Raises the engine's InvalidProgram / BpfFault; returns r0.
    """
    from .runtime.engine import DEFAULT_BUDGET, Interpreter, Memory
    mem = Memory()
    address = mem.map(bytearray(memory), "mem").base if memory else 0
    vm = Interpreter(program, memory=mem, helpers=default_helpers(),
                     budget=budget or DEFAULT_BUDGET)
    return vm.run(address, len(memory))


def run_case(case: ConformanceCase, *, budget: int | None = None, engine=None) -> CaseOutcome:
    """Run one case in-process (on the interpreter, or on `engine`, an `execute` of the same
    shape such as the JIT's); refusals and faults become the outcome's error."""
    from .runtime.engine import BpfFault, InvalidProgram
    try:
        return CaseOutcome(case, (engine or execute)(case.program, case.memory, budget=budget), None)
    except (InvalidProgram, BpfFault) as exc:
        return CaseOutcome(case, None, _with_source_line(case, exc))


def _with_source_line(case: ConformanceCase, exc: Exception) -> str:
    """Prefix an engine error with the case file's line, so a failure reads like the suite."""
    index = getattr(exc, "insn_index", None)
    if index is None or not 0 <= index < len(case.insn_lines):
        return str(exc)
    return f"{case.path.name}:{case.insn_lines[index]}: {exc}"


@dataclass(frozen=True)
class SuiteResult:
    """The outcome of every case of a directory; `score` is what the README quotes."""

    outcomes: tuple[CaseOutcome, ...]
    skipped: tuple[Path, ...]            # the callx group, outside RFC 9669

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def failures(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def score(self) -> str:
        return f"{self.passed}/{len(self.outcomes)}"


def run_suite(directory: str | Path, engine=None) -> SuiteResult:
    """Read and run every `*.data` case of `directory` (a malformed one raises)."""
    outcomes, skipped = [], []
    for path in sorted(Path(directory).glob("*.data")):
        case = read_case(path)
        if case.needs_callx:
            skipped.append(path)
            continue
        outcomes.append(run_case(case, engine=engine))
    return SuiteResult(tuple(outcomes), tuple(skipped))


# ---------------------------------------------------------------------------------------------
# The bpf_conformance plugin protocol

def plugin_main(argv: Sequence[str], stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """One plugin invocation: program hex on stdin, memory hex as argv[0], r0 in hex on stdout.

    `argv` excludes the program name.  The runner passes the memory argument even when it is
    empty and may add plugin options: `--jit` runs the program on the JIT instead of the
    interpreter.  Exit status 0 with r0 printed, or 1 with a one-line reason on stderr (bad
    input, a program the engine refuses, a run-time fault).
    """
    from .runtime.engine import BpfFault, InvalidProgram
    options = [a for a in argv if a.startswith("--")]
    argv = [a for a in argv if not a.startswith("--")]
    unknown = [o for o in options if o != "--jit"]
    if unknown:
        print(f"error: unknown option {unknown[0]} (the plugin knows --jit)", file=stderr)
        return 1
    run = execute
    errors: tuple = (InvalidProgram, BpfFault)
    if "--jit" in options:
        from .runtime.engine import jit
        run, errors = jit.execute, errors + (jit.JitUnavailable,)
    try:
        program = parse_hex_bytes(stdin.read())
        memory = parse_hex_bytes(argv[0]) if argv else b""
    except ValueError as exc:
        print(f"error: malformed input: {exc}", file=stderr)
        return 1
    try:
        r0 = run(program, memory)
    except errors as exc:
        print(f"error: {exc}", file=stderr)
        return 1
    print(f"{r0:x}", file=stdout)
    return 0


if __name__ == "__main__":     # `python -m pybpf_uring.conformance` is a working plugin
    import sys
    sys.exit(plugin_main(sys.argv[1:], sys.stdin, sys.stdout, sys.stderr))
