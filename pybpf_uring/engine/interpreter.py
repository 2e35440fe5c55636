"""An interpreter of the RFC 9669 BPF instruction set (cpu v4) with every memory access checked.

Algorithm.  A program is validated (`validate`) and translated once, two ways, from the same
semantic tables (`_ALU`, `_COND`, `_END`, `_ATOMIC`):

* per-slot closures -- `pc = code[pc]()` -- each made by a factory compiled from a small source
  template (the shape of an instruction family) with the instruction's fields as closure
  constants.  This is the exact path: it runs the last instructions of a budget, traces, and
  is what a compiled block hands local calls and exit to (they work on the frames).
* per-basic-block functions (`_BlockCompiler`): the straight-line code of a block becomes one
  Python function whose registers are locals and whose constants are literals; the run loop
  charges a block's whole instruction count to the budget before calling it.  A loop (a block
  that jumps back to itself, or the blocks between a header and its last back edge) becomes
  one function that iterates in place, charging the budget block by block.

So decoding never happens at run time and instructions create no objects beyond Python ints; a
multiply/add loop runs at ~30 M insn/s, a loop with a branch and a memory load at ~25 M, and
the closures alone at ~12-15 M.

Registers hold unsigned 64-bit Python ints; signed views are taken with `(x ^ S) - S`.
32-bit ALU results are computed on masked operands, which is the zero extension RFC 9669 asks
for.  Semantics that are easy to get wrong (RFC 9669 section 4.1): division by zero gives 0;
modulo by zero leaves dst (ALU64) or its zero-extended low half (ALU); shift counts are masked
to 63/31; signed division and modulo truncate towards zero like C; MOVSX has a register form
only; CMPXCHG compares with r0 and always loads the old value into r0.

Memory is the region table of `memory.Memory` (address = id << 32 | 2 GiB + offset).  Loads and
stores inline the common case (a plain region, in bounds) and defer everything else to
`Memory.load`/`store`, whose MemoryFault becomes a `BpfFault` naming the instruction.

BPF-to-BPF calls get a fresh 512-byte stack region per frame (so overrunning a frame faults
instead of corrupting the caller) and save r6-r9 and r10, as the kernel's interpreter does.
"""
from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .. import helpers as registry
from .. import isa
from ..errors import RingError
from ..isa import (ADD, ALU, ALU64, AND, ARSH, ATOMIC, CALL, CMPXCHG, DIV, END, EXIT, FETCH,
                   JA, JEQ, JGE, JGT, JLE, JLT, JMP, JMP32, JNE, JSET, JSGE, JSGT, JSLE, JSLT, LD,
                   LDDW, LDX, LSH, MEM, MEMSX, MOD, MOV, MUL, NEG, OR, RSH, SIZE_BYTES,
                   SIZE_NAMES, ST, STX, SUB, XCHG, XOR, X, DecodeError, Instruction)
from ..limits import MAX_CALL_DEPTH, STACK_BYTES
from .memory import Memory, MemoryFault, Region

__all__ = [
    "Interpreter", "BpfFault", "BudgetExceeded", "InvalidProgram", "Helper", "validate",
    "DEFAULT_BUDGET", "call_label", "unknown_call",
]

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
S64 = 1 << 63
S32 = 1 << 31
DEFAULT_BUDGET = 1_000_000     # the verifier's complexity limit, reused as a run-time bound

Helper = Callable[..., int]
"""`helper(memory, r1, r2, r3, r4, r5) -> r0`; a MemoryFault it raises faults the call."""


def call_label(kind: str, imm: int) -> str:
    """How faults name what a call instruction calls: a helper as the registry names it
    ("emit_cqe (165)", "helper 99" when the registry has no such id), a kfunc by its number."""
    return registry.label(imm) if kind == "helper" else f"{kind} {imm}"


def unknown_call(kind: str, imm: int, table: Mapping[int, object]) -> str:
    """Why a call to `imm` is refused when `table` (the helpers or kfuncs given) lacks it."""
    known = ", ".join(map(str, sorted(table))) or "none"
    if kind == "helper" and imm in registry.HELPERS:
        return f"call to {registry.label(imm)}, a helper this engine does not have (known: {known})"
    return f"call to unknown {kind} {imm} (known: {known})"


class InvalidProgram(RingError, ValueError):
    """A program the engine refuses before running it (what a verifier would reject outright)."""

    def __init__(self, insn_index: int | None, message: str) -> None:
        self.insn_index = insn_index
        self.message = message
        super().__init__(f"instruction {insn_index}: {message}" if insn_index is not None else message)


class BpfFault(RingError, RuntimeError):
    """A run-time fault: the program did something it may not; `insn_index` says where."""

    def __init__(self, insn_index: int, message: str, disassembly: str = "") -> None:
        self.insn_index = insn_index
        self.message = message
        self.disassembly = disassembly
        where = f"instruction {insn_index}" + (f" ({disassembly})" if disassembly else "")
        super().__init__(f"{where}: {message}")


class BudgetExceeded(BpfFault):
    """The run executed its whole instruction budget without exiting (a runaway loop)."""


class _Halt(Exception):
    """Raised by the outermost `exit`; cheaper than testing for a sentinel pc on every step."""


# ---------------------------------------------------------------------------------------------
# Semantic tables.  `{a}`/`{b}` are the operands (already masked to the operation's width),
# `{M}` the width mask, `{S}` the sign bit, `{W}` the shift mask.  Keys are (op, offset): the
# offset field selects the signed division/modulo and the MOVSX widths.


def _sdiv(a: int, b: int, sign: int, mask: int) -> int:
    sa, sb = (a ^ sign) - sign, (b ^ sign) - sign
    if sb == 0:
        return 0
    q = abs(sa) // abs(sb)
    return (-q if (sa < 0) != (sb < 0) else q) & mask   # truncation, not Python's floor


def _smod(a: int, b: int, sign: int, mask: int) -> int:
    sa, sb = (a ^ sign) - sign, (b ^ sign) - sign
    if sb == 0:
        return a
    r = abs(sa) % abs(sb)
    return (-r if sa < 0 else r) & mask                 # sign of the dividend, like C


_ALU: dict[tuple[int, int], str] = {
    (ADD, 0): "({a} + {b}) & {M}",
    (SUB, 0): "({a} - {b}) & {M}",
    (MUL, 0): "({a} * {b}) & {M}",
    (DIV, 0): "({a} // {b} if {b} else 0)",
    (DIV, 1): "_sdiv({a}, {b}, {S}, {M})",
    (OR, 0): "{a} | {b}",
    (AND, 0): "{a} & {b}",
    (LSH, 0): "({a} << ({b} & {W})) & {M}",
    (RSH, 0): "{a} >> ({b} & {W})",
    (NEG, 0): "-{a} & {M}",
    (MOD, 0): "({a} % {b} if {b} else {a})",
    (MOD, 1): "_smod({a}, {b}, {S}, {M})",
    (XOR, 0): "{a} ^ {b}",
    (MOV, 0): "{b}",
    (MOV, 8): "((({b} & 0xFF) ^ 0x80) - 0x80) & {M}",
    (MOV, 16): "((({b} & 0xFFFF) ^ 0x8000) - 0x8000) & {M}",
    (MOV, 32): "((({b} & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & {M}",
    (ARSH, 0): "((({a} ^ {S}) - {S}) >> ({b} & {W})) & {M}",
}
_X_ONLY = {(MOV, 8), (MOV, 16), (MOV, 32)}   # MOVSX has no immediate form
_ALU32_EXCLUDED = {(MOV, 32)}                  # movsx from 32 bits into 32 bits is no insn
_UNARY = {(NEG, 0)}                            # NEG: K form only, src and imm unused

# Conditional jumps: `{a}`/`{b}` unsigned operands, `{sa}`/`{sb}` operands biased by the sign bit
# (x ^ S), whose unsigned order is the signed order of x.
_COND: dict[int, str] = {
    JEQ: "{a} == {b}", JGT: "{a} > {b}", JGE: "{a} >= {b}", JSET: "{a} & {b}",
    JNE: "{a} != {b}", JSGT: "{sa} > {sb}", JSGE: "{sa} >= {sb}", JLT: "{a} < {b}",
    JLE: "{a} <= {b}", JSLT: "{sa} < {sb}", JSLE: "{sa} <= {sb}",
}

# Atomic operations (imm without the FETCH bit): new memory value from (old, src).
_ATOMIC: dict[int, Callable[[int, int], int]] = {
    isa.ATOMIC_ADD: lambda old, src: old + src,
    isa.ATOMIC_OR: lambda old, src: old | src,
    isa.ATOMIC_AND: lambda old, src: old & src,
    isa.ATOMIC_XOR: lambda old, src: old ^ src,
}

_UNSIGNED = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SIGNED = {1: "b", 2: "h", 4: "i"}


def _bswap(value: int, width: int) -> int:
    n = width // 8
    return int.from_bytes((value & ((1 << width) - 1)).to_bytes(n, "little"), "big")


# Byte-order operations: (class, source bit) -> value transform for an imm width.
_END: dict[tuple[int, int], Callable[[int, int], int]] = {
    (ALU, 0): lambda v, w: v & ((1 << w) - 1),          # to little endian: truncate only (host LE)
    (ALU, X): _bswap,                                # to big endian
    (ALU64, 0): _bswap,                                  # unconditional bswap (cpu v4)
}

# ---------------------------------------------------------------------------------------------
# Templates.  Compiled once per distinct source text; each yields a factory
# `make(**fields) -> op` whose op returns the next pc.

_TEMPLATE_GLOBALS = {"_sdiv": _sdiv, "_smod": _smod}
_FACTORIES: dict[str, Callable[..., Callable[[], int]]] = {}


def _factory(source: str) -> Callable[..., Callable[[], int]]:
    factory = _FACTORIES.get(source)
    if factory is None:
        namespace: dict = {}
        exec(compile(source, "<bpf-template>", "exec"), dict(_TEMPLATE_GLOBALS), namespace)
        factory = _FACTORIES[source] = namespace["make"]
    return factory


def _operand(text: str, name: str, expr: str, binding: str) -> tuple[str, str]:
    """Inline `expr` for `{name}` when used once (or when it is a bare name), else bind it to a
    local first so a repeated operand is read from the register file once."""
    if text.count("{" + name + "}") <= 1 or expr.isidentifier():
        return text.replace("{" + name + "}", expr), ""
    return text.replace("{" + name + "}", binding), f"        {binding} = {expr}\n"


def _width(cls: int) -> dict[str, str]:
    wide = cls in (ALU64, JMP)
    return {"{M}": hex(M64 if wide else M32), "{S}": hex(S64 if wide else S32),
            "{W}": "63" if wide else "31"}


def _fill(text: str, cls: int) -> str:
    for key, value in _width(cls).items():
        text = text.replace(key, value)
    return text


_ALU_TEMPLATE = """
def make(regs, d, s, k, nxt):
    def op():
{prelude}        regs[d] = {expr}
        return nxt
    return op
"""

_COND_TEMPLATE = """
def make(regs, d, s, k, nxt, target):
    def op():
        return target if {expr} else nxt
    return op
"""

_LOAD_TEMPLATE = """
def make(regs, readable, d, s, off, nxt, slow, pc):
    unpack = STRUCT.unpack_from
    get = readable.get
    def op():
        addr = (regs[s] + off) & 0xFFFFFFFFFFFFFFFF
        o = (addr & 0xFFFFFFFF) - 0x80000000
        buf = get(addr >> 32, b"")
        if 0 <= o <= len(buf) - SIZE:
            regs[d] = unpack(buf, o)[0]{extend}
        else:
            regs[d] = {slow_value}
        return nxt
    return op
"""

_STORE_TEMPLATE = """
def make(regs, writable, d, s, k, off, nxt, slow, pc):
    pack = STRUCT.pack_into
    get = writable.get
    def op():
        addr = (regs[d] + off) & 0xFFFFFFFFFFFFFFFF
        o = (addr & 0xFFFFFFFF) - 0x80000000
        buf = get(addr >> 32, b"")
        if 0 <= o <= len(buf) - SIZE:
            pack(buf, o, {value})
        else:
            slow(pc, addr, SIZE, {value})
        return nxt
    return op
"""


def _alu_source(cls: int, op: int, off: int, use_x: bool) -> str:
    expr = _fill(_ALU[(op, off)], cls)
    a = "regs[d]" if cls == ALU64 else "(regs[d] & 0xFFFFFFFF)"
    b = ("regs[s]" if cls == ALU64 else "(regs[s] & 0xFFFFFFFF)") if use_x else "k"
    expr, pre_a = _operand(expr, "a", a, "a")
    expr, pre_b = _operand(expr, "b", b, "b")
    return _ALU_TEMPLATE.format(prelude=pre_a + pre_b, expr=expr)


def _cond_source(cls: int, op: int, use_x: bool) -> str:
    expr = _COND[op]
    wide = cls == JMP
    sign = hex(S64 if wide else S32)
    a = "regs[d]" if wide else "(regs[d] & 0xFFFFFFFF)"
    b = ("regs[s]" if wide else "(regs[s] & 0xFFFFFFFF)") if use_x else "k"
    # For the K form the caller pre-biases k when the comparison is signed.
    expr = expr.replace("{a}", a).replace("{b}", b)
    expr = expr.replace("{sa}", f"({a} ^ {sign})")
    expr = expr.replace("{sb}", f"({b} ^ {sign})" if use_x else "k")
    return _COND_TEMPLATE.format(expr=expr)


def _mem_source(template: str, size: int, fmt: str, **parts: str) -> tuple[str, dict]:
    source = template.format(**parts).replace("SIZE", str(size))
    return source, {"STRUCT": struct.Struct("<" + fmt)}


_MEM_FACTORIES: dict[tuple, Callable[..., Callable[[], int]]] = {}


def _mem_factory(key: tuple, source: str, extra: dict) -> Callable[..., Callable[[], int]]:
    factory = _MEM_FACTORIES.get(key)
    if factory is None:
        namespace: dict = {}
        exec(compile(source, "<bpf-template>", "exec"), {**_TEMPLATE_GLOBALS, **extra}, namespace)
        factory = _MEM_FACTORIES[key] = namespace["make"]
    return factory


# ---------------------------------------------------------------------------------------------
# Validation: which (opcode, fields) combinations exist.  A rule names the fields that must be
# zero; anything not in the table is an unknown opcode.

@dataclass(frozen=True)
class _Rule:
    name: str
    zero: tuple[str, ...] = ()          # fields that must be 0
    offsets: frozenset[int] = frozenset({0})   # allowed values of `off` when it is not a jump
    writes_dst: bool = False
    imms: frozenset[int] | None = None  # allowed values of `imm` when it selects an operation
    srcs: frozenset[int] | None = None  # allowed values of `src` when it selects a form


def _rules() -> dict[int, _Rule]:
    rules: dict[int, _Rule] = {}
    alu_names = {op: name for op, name in isa.ALU_NAMES.items() if op != END}
    for cls, suffix in ((ALU, "32"), (ALU64, "")):
        for op, name in alu_names.items():
            offs = {off for (o, off) in _ALU if o == op}
            if cls == ALU:
                offs -= {off for (o, off) in _ALU32_EXCLUDED if o == op}
            k_offs = frozenset(off for off in offs if (op, off) not in _X_ONLY)
            if (op, 0) in _UNARY:
                rules[cls | op] = _Rule(name + suffix, ("src", "imm"), frozenset({0}), True)
                continue
            rules[cls | op] = _Rule(name + suffix, ("src",), k_offs, True)
            rules[cls | op | X] = _Rule(name + suffix, ("imm",), frozenset(offs), True)
        for src_bit in (0, X):
            if (cls, src_bit) in _END:
                kind = {(ALU, 0): "le", (ALU, X): "be", (ALU64, 0): "bswap"}[(cls, src_bit)]
                rules[cls | END | src_bit] = _Rule(kind, ("src",), frozenset({0}), True,
                                                   imms=frozenset({16, 32, 64}))
    cond_names = {op: isa.JMP_NAMES[op] for op in isa.CONDITIONAL_JUMPS}
    assert set(cond_names) == set(_COND), "isa's conditional jumps and _COND disagree"
    for cls, suffix in ((JMP, ""), (JMP32, "32")):
        for op, name in cond_names.items():
            rules[cls | op] = _Rule(name + suffix, ("src",), frozenset())
            rules[cls | op | X] = _Rule(name + suffix, ("imm",), frozenset())
    rules[JMP | JA] = _Rule("ja", ("dst", "src", "imm"), frozenset())
    rules[JMP32 | JA] = _Rule("gotol", ("dst", "src"), frozenset({0}))
    rules[JMP | CALL] = _Rule("call", ("dst",), frozenset({0}), srcs=frozenset(_CALL_FORMS))
    rules[JMP | EXIT] = _Rule("exit", ("dst", "src", "imm"), frozenset({0}))
    rules[LDDW] = _Rule("lddw", (), frozenset({0}), True, srcs=frozenset(_LDDW_SOURCES))
    for size_bits, size in SIZE_BYTES.items():
        sname = SIZE_NAMES[size_bits]
        rules[LDX | MEM | size_bits] = _Rule("ldx" + sname, ("imm",), frozenset(), True)
        rules[ST | MEM | size_bits] = _Rule("st" + sname, ("src",), frozenset())
        rules[STX | MEM | size_bits] = _Rule("stx" + sname, ("imm",), frozenset())
        if size != 8:
            rules[LDX | MEMSX | size_bits] = _Rule("ldxs" + sname, ("imm",), frozenset(), True)
        if size in (4, 8):
            rules[STX | ATOMIC | size_bits] = _Rule("atomic" + ("32" if size == 4 else ""),
                                                    (), frozenset(), imms=_ATOMIC_IMMS)
    return rules


_ATOMIC_IMMS = frozenset({*_ATOMIC, *(op | FETCH for op in _ATOMIC), XCHG, CMPXCHG})
_LDDW_SOURCES = {0: "imm64", 1: "map by fd", 2: "map value by fd", 3: "variable address",
                 4: "code address", 5: "map by index", 6: "map value by index"}
_CALL_FORMS = {isa.CALL_HELPER: "helper", isa.CALL_PSEUDO: "local", isa.CALL_KFUNC: "kfunc"}
_RULES = _rules()
CALLX = JMP | CALL | X


def validate(program: bytes | Sequence[Instruction], *,
             allow_callx: bool = False) -> list[Instruction | None]:
    """Check every instruction against RFC 9669; returns them indexed by slot (the second slot
    of an lddw is None), or raises InvalidProgram naming the slot.

    Unused fields must be zero (RFC 9669 section 3: "unused fields ... SHALL be cleared to
    zero"), jumps and local calls must land on an instruction (not past the end, not in the
    second half of an lddw), and r10 is never a destination.
    """
    if isinstance(program, (bytes, bytearray, memoryview)):
        try:
            insns = isa.decode(program)
        except DecodeError as exc:
            raise InvalidProgram(exc.slot, exc.message) from None
    else:
        insns = list(program)
    if not insns:
        raise InvalidProgram(None, "program is empty")
    slots: list[Instruction | None] = []
    for ins in insns:
        _check_slot(len(slots), ins, allow_callx)
        slots.append(ins)
        if ins.is_wide:
            slots.append(None)
    n = len(slots)
    for i, ins in enumerate(slots):
        target = _branch_target(i, ins) if ins is not None else None
        if target is not None and (not 0 <= target < n or slots[target] is None):
            where = "outside the program" if not 0 <= target < n else "into the middle of an lddw"
            raise InvalidProgram(i, f"{_RULES[ins.opcode].name} jumps to slot {target}, {where} "
                                 f"(program has {n} slots)")
    return slots


def _check_slot(i: int, ins, allow_callx: bool) -> None:
    if ins.opcode == CALLX and allow_callx:
        return
    rule = _RULES.get(ins.opcode)
    if rule is None:
        extra = " (callx is not part of RFC 9669)" if ins.opcode == CALLX else ""
        raise InvalidProgram(i, f"unknown opcode {ins.opcode:#04x}{extra}")
    for reg_field in ("dst", "src"):
        if getattr(ins, reg_field) > 10:
            raise InvalidProgram(i, f"{rule.name}: {reg_field} register r{getattr(ins, reg_field)}"
                                 " does not exist (r0-r10)")
    for name in rule.zero:
        value = getattr(ins, name)
        if value:
            raise InvalidProgram(i, f"{rule.name} (opcode {ins.opcode:#04x}): {name} field is "
                                 f"{value} but must be 0")
    if rule.offsets and ins.off not in rule.offsets:
        allowed = ", ".join(map(str, sorted(rule.offsets)))
        raise InvalidProgram(i, f"{rule.name} (opcode {ins.opcode:#04x}): offset field is "
                             f"{ins.off} but must be {allowed}")
    if rule.writes_dst and ins.dst == 10:
        raise InvalidProgram(i, f"{rule.name}: r10 is the read-only frame pointer")
    if ins.cls == STX and ins.mode == ATOMIC and ins.imm & FETCH and ins.src == 10:
        raise InvalidProgram(i, f"{rule.name}: a fetching atomic would overwrite r10, the "
                             "read-only frame pointer")
    if rule.imms is not None and ins.imm not in rule.imms:
        allowed = ", ".join(f"{v:#x}" for v in sorted(rule.imms))
        raise InvalidProgram(i, f"{rule.name} (opcode {ins.opcode:#04x}): imm {ins.imm:#x} "
                             f"selects no operation (allowed: {allowed})")
    if rule.srcs is not None and ins.src not in rule.srcs:
        raise InvalidProgram(i, f"{rule.name} (opcode {ins.opcode:#04x}): src {ins.src} "
                             f"selects no form (allowed: {', '.join(map(str, sorted(rule.srcs)))})")


def _branch_target(i: int, ins) -> int | None:
    cls, op = ins.cls, ins.op
    if ins.opcode == JMP | CALL:
        return i + 1 + ins.imm if ins.src == 1 else None
    if ins.opcode == JMP32 | JA:
        return i + 1 + ins.imm
    if cls in (JMP, JMP32) and op not in (CALL, EXIT):
        return i + 1 + ins.off
    return None


# ---------------------------------------------------------------------------------------------
# The interpreter

LddwResolver = Callable[[int, int, int], int]
"""`resolve(src, imm, imm_hi) -> value` for lddw forms other than the plain imm64 (maps...)."""


class Interpreter:
    """One validated, translated program bound to a memory; `run` executes it.

    `helpers` maps helper ids (call src 0) and `kfuncs` BTF ids (call src 2) to callables
    `fn(memory, r1, r2, r3, r4, r5) -> int`.  `resolve_lddw` gives the value of the pseudo lddw
    forms (map references, code addresses) -- whoever loaded the ELF knows what they are.
    A run is not re-entrant: the registers and frames belong to the instance.
    """

    def __init__(self, program: bytes | Sequence, *, memory: Memory | None = None,
                 helpers: Mapping[int, Helper] | None = None,
                 kfuncs: Mapping[int, Helper] | None = None,
                 resolve_lddw: LddwResolver | None = None,
                 budget: int = DEFAULT_BUDGET, disassemble: Callable[[int], str] | None = None,
                 compile_blocks: bool = True) -> None:
        self.slots = validate(program)
        self.memory = memory if memory is not None else Memory()
        self.helpers = dict(helpers or {})
        self.kfuncs = dict(kfuncs or {})
        self.budget = budget
        self.executed = 0                       # instructions the last run executed
        self._resolve_lddw = resolve_lddw
        self._disassemble = disassemble or self._default_disassembly
        self.regs = [0] * 11
        self._frames: list[tuple[int, int, int, int, int, int]] = []
        self._lddw_values: dict[int, int] = {}      # slot -> resolved 64-bit value
        self._helper_calls: dict[int, Callable[..., int]] = {}   # slot -> invoke(r1..r5)
        self._spent = [0]          # instructions a tight-loop block ran beyond its first pass
        self.stack: list[Region] = [
            self.memory.map(bytearray(STACK_BYTES), f"stack frame {depth}")
            for depth in range(MAX_CALL_DEPTH)]
        self._stack_tops = [region.base + STACK_BYTES for region in self.stack]
        try:
            self.code = self._translate()
            # Blocks are the fast path; single-stepping the closures is the exact one.
            self._blocks, self._costs, self.block_source = (
                _BlockCompiler(self).compile() if compile_blocks else (None, None, ""))
        except InvalidProgram:
            for region in self.stack:           # a refused program leaves the memory as it was
                self.memory.unmap(region)
            raise

    # -- running --------------------------------------------------------------------------------

    def run(self, *args: int, budget: int | None = None,
            trace: Callable[[int, list[int]], None] | None = None) -> int:
        """Run from slot 0 with r1..r5 = args; returns r0 (unsigned 64-bit).

        `trace(slot, regs)` is called before every instruction (single-stepping, for debugging
        a program); `regs` is the live register file, so copy it to keep it.  After the run,
        `executed` holds the number of instructions it took.  When a fault ends a run the
        registers are unspecified: compiled blocks keep them in locals until they return.
        """
        if len(args) > 5:
            raise TypeError(f"a BPF program takes at most 5 arguments (r1-r5), got {len(args)}")
        regs = self.regs
        regs[:] = [0] * 11
        for i, value in enumerate(args, start=1):
            regs[i] = value & M64
        regs[10] = self._stack_tops[0]
        self.stack[0].buf[:] = bytes(STACK_BYTES)
        self._frames.clear()
        limit = self.budget if budget is None else budget
        blocks, costs, code, spent = self._blocks, self._costs, self.code, self._spent
        pc, remaining, stepping = 0, limit, False
        if trace is not None:
            blocks = None
        try:
            if blocks is not None:
                while True:                      # whole blocks while the budget covers them
                    cost = costs[pc]
                    if cost > remaining:
                        break
                    remaining -= cost
                    pc = blocks[pc](remaining)
                    if pc < 0:                   # a tight loop ran more iterations itself
                        pc = ~pc
                        remaining -= spent[0]
            stepping = True                      # then one slot at a time, to the exact end
            if trace is None:
                for remaining in range(remaining, 0, -1):
                    pc = code[pc]()
            else:
                for remaining in range(remaining, 0, -1):
                    trace(pc, regs)
                    pc = code[pc]()
        except _Halt:
            self.executed = limit - remaining + stepping
            return regs[0]
        self.executed = limit
        raise BudgetExceeded(pc, f"instruction budget of {limit} exhausted before exit "
                             "(an unbounded loop?)", self._disassemble(pc))

    # -- faults -------------------------------------------------------------------------------------

    def fault(self, pc: int, message: str) -> BpfFault:
        return BpfFault(pc, message, self._disassemble(pc))

    def _default_disassembly(self, pc: int) -> str:
        """llvm-objdump's text of the slot's instruction (the second slot of an lddw shows the
        lddw), as `pybpf-uring disasm` prints it."""
        from ..disasm import format_instruction
        ins = self.slots[pc] if 0 <= pc < len(self.slots) else None
        if ins is None and 0 < pc <= len(self.slots):
            ins = self.slots[pc - 1]
        return format_instruction(ins) if ins is not None else ""

    def _slow_load(self, pc: int, address: int, size: int) -> int:
        try:
            return self.memory.load(address, size)
        except MemoryFault as exc:
            raise self.fault(pc, exc.message) from None

    def _slow_store(self, pc: int, address: int, size: int, value: int) -> None:
        try:
            self.memory.store(address, size, value)
        except MemoryFault as exc:
            raise self.fault(pc, exc.message) from None

    # -- translation --------------------------------------------------------------------------------

    def _translate(self) -> list[Callable[[], int]]:
        code: list[Callable[[], int]] = []
        for i, ins in enumerate(self.slots):
            if ins is None:    # validation keeps jumps out; this only guards the invariant
                code.append(self._unreachable(i, "jump into the second half of an lddw"))
            else:
                code.append(_TRANSLATORS[ins.cls](self, i, ins))
        code.append(self._unreachable(len(self.slots) - 1, "execution ran past the last instruction "
                                      "without exit"))
        return code

    def _unreachable(self, pc: int, message: str) -> Callable[[], int]:
        def op() -> int:
            raise self.fault(pc, message)
        return op

    def _alu(self, i: int, ins) -> Callable[[], int]:
        cls, op, use_x = ins.cls, ins.op, ins.source == X
        if op == END:
            return self._end(i, ins, cls, use_x)
        k = ins.imm & (M64 if cls == ALU64 else M32)      # imm is sign-extended, then truncated
        source = _alu_source(cls, op, ins.off, use_x)
        return _factory(source)(self.regs, ins.dst, ins.src, k, i + 1)

    def _end(self, i: int, ins, cls: int, use_x: bool) -> Callable[[], int]:
        transform = _END[(cls, X if use_x else 0)]
        width, regs, d, nxt = ins.imm, self.regs, ins.dst, i + 1

        def op() -> int:
            regs[d] = transform(regs[d], width)
            return nxt
        return op

    def _jmp(self, i: int, ins) -> Callable[[], int]:
        cls, op, use_x = ins.cls, ins.op, ins.source == X
        nxt = i + 1
        if op == JA:
            target = i + 1 + (ins.imm if cls == JMP32 else ins.off)
            return lambda: target
        if op == EXIT:
            return self._exit()
        if op == CALL:
            return self._call(i, ins)
        wide = cls == JMP
        k = ins.imm & (M64 if wide else M32)
        if op in (JSGT, JSGE, JSLT, JSLE) and not use_x:
            k ^= S64 if wide else S32
        return _factory(_cond_source(cls, op, use_x))(self.regs, ins.dst, ins.src, k, nxt,
                                                       i + 1 + ins.off)

    def _exit(self) -> Callable[[], int]:
        regs, frames = self.regs, self._frames

        def op() -> int:
            if frames:
                ret, regs[6], regs[7], regs[8], regs[9], regs[10] = frames.pop()
                return ret
            raise _Halt
        return op

    def _call(self, i: int, ins) -> Callable[[], int]:
        regs, frames, nxt = self.regs, self._frames, i + 1
        if ins.src == isa.CALL_PSEUDO:
            target, tops, stack = i + 1 + ins.imm, self._stack_tops, self.stack

            def call_local() -> int:
                depth = len(frames) + 1
                if depth >= MAX_CALL_DEPTH:
                    raise self.fault(i, f"stack overflow: a call from frame {depth - 1} needs "
                                     f"{depth + 1} frames; the limit is {MAX_CALL_DEPTH}")
                frames.append((nxt, regs[6], regs[7], regs[8], regs[9], regs[10]))
                regs[10] = tops[depth]
                stack[depth].buf[:] = bytes(STACK_BYTES)
                return target
            return call_local
        table, kind = ((self.helpers, "helper") if ins.src == isa.CALL_HELPER
                       else (self.kfuncs, "kfunc"))
        fn = table.get(ins.imm)
        if fn is None:
            raise InvalidProgram(i, unknown_call(kind, ins.imm, table))
        memory, what = self.memory, call_label(kind, ins.imm)

        def invoke(r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
            try:
                return fn(memory, r1, r2, r3, r4, r5) & M64
            except MemoryFault as exc:
                raise self.fault(i, f"{what}: {exc.message}") from None
        self._helper_calls[i] = invoke

        def call_helper() -> int:
            regs[0] = invoke(regs[1], regs[2], regs[3], regs[4], regs[5])
            return nxt
        return call_helper

    def _lddw(self, i: int, ins) -> Callable[[], int]:
        if ins.src == 0:
            value = ins.imm64
        elif self._resolve_lddw is None:
            raise InvalidProgram(i, f"lddw {_LDDW_SOURCES[ins.src]} (src {ins.src}) needs a "
                                 "resolver; none was given")
        else:
            value = self._resolve_lddw(ins.src, ins.imm, ins.imm_hi) & M64
        self._lddw_values[i] = value
        regs, d, nxt = self.regs, ins.dst, i + 2

        def op() -> int:
            regs[d] = value
            return nxt
        return op

    def _ldx(self, i: int, ins) -> Callable[[], int]:
        size = ins.size
        signed = ins.mode == MEMSX
        fmt = _SIGNED[size] if signed else _UNSIGNED[size]
        extend = " & 0xFFFFFFFFFFFFFFFF" if signed else ""
        slow_value = "slow(pc, addr, SIZE)"
        if signed:   # the slow path returns the unsigned bits; sign-extend them here
            sign = hex(1 << (8 * size - 1))
            slow_value = f"((slow(pc, addr, SIZE) ^ {sign}) - {sign}) & 0xFFFFFFFFFFFFFFFF"
        source, extra = _mem_source(_LOAD_TEMPLATE, size, fmt, extend=extend, slow_value=slow_value)
        factory = _mem_factory(("ldx", size, signed), source, extra)
        return factory(self.regs, self.memory.readable, ins.dst, ins.src, ins.off, i + 1,
                       self._slow_load, i)

    def _st(self, i: int, ins) -> Callable[[], int]:
        size = ins.size
        value = ins.imm & ((1 << (8 * size)) - 1)
        source, extra = _mem_source(_STORE_TEMPLATE, size, _UNSIGNED[size], value="k")
        factory = _mem_factory(("st", size), source, extra)
        return factory(self.regs, self.memory.writable, ins.dst, ins.src, value, ins.off, i + 1,
                       self._slow_store, i)

    def _stx(self, i: int, ins) -> Callable[[], int]:
        size = ins.size
        if ins.mode == ATOMIC:
            return self._atomic(i, ins, size)
        source, extra = _mem_source(_STORE_TEMPLATE, size, _UNSIGNED[size],
                                    value=f"regs[s] & {(1 << (8 * size)) - 1:#x}")
        factory = _mem_factory(("stx", size), source, extra)
        return factory(self.regs, self.memory.writable, ins.dst, ins.src, 0, ins.off, i + 1,
                       self._slow_store, i)

    def _atomic(self, i: int, ins, size: int) -> Callable[[], int]:
        """Read-modify-write through the checked slow path; the engine is single-threaded, so
        atomicity is automatic and only the fetch/xchg/cmpxchg register effects matter."""
        regs, d, s, off, nxt, mask = self.regs, ins.dst, ins.src, ins.off, i + 1, (1 << (8 * size)) - 1
        load, store = self._slow_load, self._slow_store
        imm = ins.imm
        if imm == CMPXCHG:
            def op() -> int:
                addr = (regs[d] + off) & M64
                old = load(i, addr, size)
                if old == regs[0] & mask:
                    store(i, addr, size, regs[s] & mask)
                regs[0] = old
                return nxt
            return op
        if imm == XCHG:
            def op() -> int:
                addr = (regs[d] + off) & M64
                old = load(i, addr, size)
                store(i, addr, size, regs[s] & mask)
                regs[s] = old
                return nxt
            return op
        combine, fetch = _ATOMIC[imm & ~FETCH], bool(imm & FETCH)

        def op() -> int:
            addr = (regs[d] + off) & M64
            old = load(i, addr, size)
            store(i, addr, size, combine(old, regs[s]) & mask)
            if fetch:
                regs[s] = old
            return nxt
        return op


_TRANSLATORS: dict[int, Callable[[Interpreter, int, object], Callable[[], int]]] = {
    LD: Interpreter._lddw, LDX: Interpreter._ldx, ST: Interpreter._st, STX: Interpreter._stx,
    ALU: Interpreter._alu, JMP: Interpreter._jmp, JMP32: Interpreter._jmp, ALU64: Interpreter._alu,
}


# ---------------------------------------------------------------------------------------------
# Block compilation: the fast path.
#
# A basic block (a run of slots entered only at its first and left only at its last) becomes
# one Python function whose registers live in locals: a register is read from `regs` the first
# time the block uses it and written back once, before the block returns.  The same semantic
# tables drive it, with operands that are locals and constants that are literals.  Helper calls
# and atomics run inline (helpers take values; atomics use the checked slow path); local calls
# and exit, which work on the frames, end a block and run their per-slot closure.  Faults
# inside a block raise with the faulting slot's own index, exactly as single-stepping would.

_BLOCK_PRELUDE = """
def b{pc}(rem):
"""

# A block that ends by jumping back to its own start (a tight loop) iterates inside its
# function, as many times as the budget `rem` left after its first iteration allows; it returns
# ~pc (negative) after storing the instructions of the extra iterations in `spent[0]`.
_LOOP_TEMPLATE = """
def b{start}(rem):
{hoisted}    n_ = rem // {cost}
    i_ = 0
    while True:
{body}{leave}        if i_ == n_:
{flush}            spent[0] = i_ * {cost}
            return ~{start}
        i_ += 1
"""

_LOOP_EXIT = """        if not ({cond}):
{flush}            spent[0] = i_ * {cost}
            return ~{fall}
"""

_MAX_REGION_BLOCKS = 12

_REGISTER_LOAD = re.compile(r"r\d+ = regs\[\d+\]\Z")


@functools.lru_cache(maxsize=256)
def _compile_blocks(source: str):
    """Compiling is most of an Interpreter's construction; the same program (a ring's program
    re-registered, a conformance case run twice) yields the same source, so keep its code."""
    return compile(source, "<bpf-blocks>", "exec")


def _is_helper_call(ins: Instruction) -> bool:
    return ins.opcode == JMP | CALL and ins.src != 1


class _BlockCompiler:
    """Translates an Interpreter's validated slots into `blocks[pc]` functions and costs."""

    def __init__(self, vm: Interpreter) -> None:
        self.vm = vm
        self.slots = vm.slots
        self.namespace: dict = {
            "regs": vm.regs, "code": vm.code, "rget": vm.memory.readable.get,
            "wget": vm.memory.writable.get, "slow_load": vm._slow_load,
            "slow_store": vm._slow_store, "spent": vm._spent,
            "_sdiv": _sdiv, "_smod": _smod, "_bswap": _bswap,
            "_truncate": _END[(ALU, 0)], "atomic_ops": _ATOMIC,
        }
        for size, fmt in _UNSIGNED.items():
            self.namespace[f"U{size}"] = struct.Struct("<" + fmt).unpack_from
            self.namespace[f"P{size}"] = struct.Struct("<" + fmt).pack_into
        for size, fmt in _SIGNED.items():
            self.namespace[f"S{size}"] = struct.Struct("<" + fmt).unpack_from

    def leaders(self) -> list[int]:
        n = len(self.slots)
        starts = {0}
        for i, ins in enumerate(self.slots):
            if ins is None:
                continue
            target = _branch_target(i, ins)
            if target is not None:
                starts.add(target)
            if ins.cls in (JMP, JMP32) and not _is_helper_call(ins):
                starts.add(i + ins.slots)        # every jump, local call and exit ends a block
        return sorted(s for s in starts if s < n)

    def compile(self) -> tuple[list, list[int], str]:
        """`blocks[pc]` for every block start, their instruction counts, and the Python source
        (kept as `Interpreter.block_source`, the engine's dump stage)."""
        n = len(self.slots)
        leaders = self.leaders()
        bounds = list(zip(leaders, leaders[1:] + [n]))
        source = "".join(self._block(start, end) for start, end in bounds)
        regions = self._regions(bounds)
        source += "".join(self._region(header, members) for header, members in regions.items())
        exec(_compile_blocks(source), self.namespace)
        blocks: list = [None] * (n + 1)
        costs = [0] * (n + 1)
        for start, end in bounds:
            blocks[start] = self.namespace[f"b{start}"]
            costs[start] = self._cost(start, end)
        for header in regions:                 # entering a loop at its header runs it whole
            blocks[header] = self.namespace[f"loop{header}"]
        fall_off = self.vm.code[n]
        blocks[n] = lambda rem: fall_off()     # running off the end faults
        costs[n] = 1
        return blocks, costs, source

    def _cost(self, start: int, end: int) -> int:
        return sum(1 for ins in self.slots[start:end] if ins is not None)

    # -- loop regions -----------------------------------------------------------------------------
    #
    # A loop whose blocks lie between its header and its last back edge (LLVM lays loops out
    # that way) becomes one function: its registers stay in locals across iterations and
    # blocks, and a local `pc_` picks the next block.  Each block charges its instructions
    # before running and hands control back to the dispatcher -- with the count in `spent[0]`
    # and ~pc returned -- when the budget would not cover it or when control leaves the loop.
    # Blocks ending in a local call or exit (which need the frames) stay outside: reaching one
    # leaves the function.  Very large loops, whose `if pc_ ==` chain would be long, keep the
    # block-by-block path.

    def _regions(self, bounds: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
        last_source: dict[int, int] = {}
        for start, end in bounds:
            pc = max(p for p in range(start, end) if self.slots[p] is not None)
            target = _branch_target(pc, self.slots[pc])
            if target is not None and target <= start and not self.slots[pc].is_call:
                last_source[target] = max(last_source.get(target, start), start)
        regions = {}
        for header, source in sorted(last_source.items()):
            # Blocks ending in a local call or exit need the frames: reaching one leaves the
            # loop function, and the dispatcher runs it.
            members = [(s, e) for s, e in bounds if header <= s <= source and self._inline(s, e)]
            if members and members[0][0] == header and 2 <= len(members) <= _MAX_REGION_BLOCKS:
                regions[header] = members
        return regions

    def _inline(self, start: int, end: int) -> bool:
        last = self.slots[max(p for p in range(start, end) if self.slots[p] is not None)]
        return not (last.is_exit or last.is_pseudo_call)

    def _region(self, header: int, members: list[tuple[int, int]]) -> str:
        # Pass 1 learns which registers the loop touches; pass 2 emits with all of them
        # loaded once up front.
        self.loaded, self.dirty, self.lines = set(), set(), []
        for start, end in members:
            self._region_block(start, end)
        touched, written = set(self.loaded), set(self.dirty)
        self.loaded, self.dirty, self.lines = set(touched), set(), []
        out = [f"\ndef loop{header}(rem):\n"]
        out += [f"    r{reg} = regs[{reg}]\n" for reg in sorted(touched)]
        out.append(f"    used_ = -{self._cost(*members[0])}\n    pc_ = {header}\n    while True:\n")
        for index, (start, end) in enumerate(members):
            cost = self._cost(start, end)
            self.lines = []
            self._region_block(start, end)
            out.append(f"        {'if' if index == 0 else 'elif'} pc_ == {start}:\n"
                       f"            used_ += {cost}\n"
                       f"            if used_ > rem:\n"
                       f"                used_ -= {cost}\n"
                       f"                break\n")
            out += [f"            {line}\n" for line in self.lines]
        out.append("        else:\n            break\n")
        out += [f"    regs[{reg}] = r{reg}\n" for reg in sorted(written)]
        out.append("    spent[0] = used_\n    return ~pc_\n")
        return "".join(out)

    def _region_block(self, start: int, end: int) -> None:
        pcs = [pc for pc in range(start, end) if self.slots[pc] is not None]
        for pc in pcs[:-1]:
            self._insn(pc, self.slots[pc])
        pc, last = pcs[-1], self.slots[pcs[-1]]
        if last.is_jump:
            target = _branch_target(pc, last)
            if last.op == JA:
                self.lines.append(f"pc_ = {target}")
            else:
                self.lines.append(f"pc_ = {target} if {self._condition(last)} else {pc + 1}")
        else:
            self._insn(pc, last)
            self.lines.append(f"pc_ = {end}")

    # -- one block ------------------------------------------------------------------------------

    def _block(self, start: int, end: int) -> str:
        self.lines: list[str] = []
        self.loaded: set[int] = set()
        self.dirty: set[int] = set()
        pcs = [pc for pc in range(start, end) if self.slots[pc] is not None]
        last = self.slots[pcs[-1]]
        if self._is_tight_loop(start, pcs, last):
            return self._loop(start, pcs, last)
        ended = False
        for pc in pcs:
            ended = self._insn(pc, self.slots[pc])
        if not ended:
            self._flush()
            self.lines.append(f"return {end}")
        body = "".join(f"    {line}\n" for line in self.lines)
        return _BLOCK_PRELUDE.format(pc=start) + body

    def _is_tight_loop(self, start: int, pcs: list[int], last: Instruction) -> bool:
        return last.is_jump and _branch_target(pcs[-1], last) == start

    def _loop(self, start: int, pcs: list[int], last: Instruction) -> str:
        for pc in pcs[:-1]:
            self._insn(pc, self.slots[pc])
        cond = None if last.op == JA else self._condition(last)
        # Each register is loaded once, before the loop; inside it they are locals.
        hoisted = [line for line in self.lines if _REGISTER_LOAD.match(line)]
        body = [line for line in self.lines if not _REGISTER_LOAD.match(line)]
        flush = "".join(f"            regs[{reg}] = r{reg}\n" for reg in sorted(self.dirty))
        cost = len(pcs)
        leave = "" if cond is None else _LOOP_EXIT.format(
            cond=cond, flush=flush, cost=cost, fall=pcs[-1] + 1)
        return _LOOP_TEMPLATE.format(
            start=start, cost=cost, flush=flush, leave=leave,
            hoisted="".join(f"    {line}\n" for line in hoisted),
            body="".join(f"        {line}\n" for line in body))

    def _use(self, reg: int) -> str:
        if reg not in self.loaded:
            self.lines.append(f"r{reg} = regs[{reg}]")
            self.loaded.add(reg)
        return f"r{reg}"

    def _def(self, reg: int) -> str:
        self.loaded.add(reg)
        self.dirty.add(reg)
        return f"r{reg}"

    def _flush(self) -> None:
        for reg in sorted(self.dirty):
            self.lines.append(f"regs[{reg}] = r{reg}")
        self.dirty.clear()

    def _step(self, pc: int) -> None:
        """End the block with the slot's closure (local call, exit): it works on `regs`."""
        self._flush()
        self.lines.append(f"return code[{pc}]()")

    def _insn(self, pc: int, ins: Instruction) -> bool:
        """Emit one instruction; True when it ended the block (it returned a pc)."""
        cls = ins.cls
        if cls in (ALU, ALU64):
            self._alu(ins)
        elif ins.opcode == LDDW:
            self._lddw(pc, ins)
        elif cls == LDX:
            self._load(pc, ins)
        elif cls == ST or (cls == STX and ins.mode == MEM):
            self._store(pc, ins)
        elif cls == STX:
            self._atomic(pc, ins)
        elif _is_helper_call(ins):
            self._helper_call(pc)
        else:
            self._jump(pc, ins)
            return True
        return False

    def _alu(self, ins: Instruction) -> None:
        cls, op, wide = ins.cls, ins.op, ins.cls == ALU64
        if op == END:
            value = self._use(ins.dst)
            fn = "_truncate" if (cls, ins.source) == (ALU, 0) else "_bswap"
            self.lines.append(f"{self._def(ins.dst)} = {fn}({value}, {ins.imm})")
            return
        mask = "" if wide else " & 0xFFFFFFFF"
        template = _fill(_ALU[(op, ins.off)], cls)
        if "{a}" in template:                    # mov and movsx never read dst
            a = f"({self._use(ins.dst)}{mask})" if mask else self._use(ins.dst)
            template = template.replace("{a}", a)
        if "{b}" in template:                    # neg never reads an operand
            if ins.source == X:
                b = f"({self._use(ins.src)}{mask})" if mask else self._use(ins.src)
            else:
                b = str(ins.imm & (M64 if wide else M32))
            template = template.replace("{b}", b)
        self.lines.append(f"{self._def(ins.dst)} = {template}")

    def _helper_call(self, pc: int) -> None:
        """Helpers take values, not the register file, so the block keeps going after one."""
        self.namespace[f"h{pc}"] = self.vm._helper_calls[pc]
        args = ", ".join(self._use(reg) for reg in range(1, 6))
        self.lines.append(f"{self._def(0)} = h{pc}({args})")

    def _lddw(self, pc: int, ins: Instruction) -> None:
        # Translation to closures already resolved the value (maps, code addresses).
        self.lines.append(f"{self._def(ins.dst)} = {self.vm._lddw_values[pc]}")

    def _address(self, reg: int, off: int) -> None:
        self.lines.append(f"a_ = ({self._use(reg)} + {off}) & 0xFFFFFFFFFFFFFFFF")
        self.lines.append("o_ = (a_ & 0xFFFFFFFF) - 0x80000000")

    def _load(self, pc: int, ins: Instruction) -> None:
        size, signed = ins.size, ins.mode == MEMSX
        self._address(ins.src, ins.off)
        dst = self._def(ins.dst)
        self.lines.append('b_ = rget(a_ >> 32, b"")')
        self.lines.append(f"if 0 <= o_ <= len(b_) - {size}:")
        if signed:
            sign = 1 << (8 * size - 1)
            self.lines.append(f"    {dst} = S{size}(b_, o_)[0] & 0xFFFFFFFFFFFFFFFF")
            self.lines.append("else:")
            self.lines.append(f"    {dst} = ((slow_load({pc}, a_, {size}) ^ {sign}) - {sign})"
                              " & 0xFFFFFFFFFFFFFFFF")
        else:
            self.lines.append(f"    {dst} = U{size}(b_, o_)[0]")
            self.lines.append("else:")
            self.lines.append(f"    {dst} = slow_load({pc}, a_, {size})")

    def _store(self, pc: int, ins: Instruction) -> None:
        size = ins.size
        mask = (1 << (8 * size)) - 1
        if ins.cls == ST:
            value = str(ins.imm & mask)
        else:
            value = f"({self._use(ins.src)} & {mask:#x})" if size < 8 else self._use(ins.src)
        self._address(ins.dst, ins.off)
        self.lines.append('b_ = wget(a_ >> 32, b"")')
        self.lines.append(f"if 0 <= o_ <= len(b_) - {size}:")
        self.lines.append(f"    P{size}(b_, o_, {value})")
        self.lines.append("else:")
        self.lines.append(f"    slow_store({pc}, a_, {size}, {value})")

    def _atomic(self, pc: int, ins: Instruction) -> None:
        """Read-modify-write through the checked slow path, as the closure does."""
        size, imm = ins.size, ins.imm
        mask = hex((1 << (8 * size)) - 1)
        self._address(ins.dst, ins.off)
        src = self._use(ins.src)
        self.lines.append(f"old_ = slow_load({pc}, a_, {size})")
        if imm == CMPXCHG:
            r0 = self._use(0)
            self.lines.append(f"if old_ == {r0} & {mask}:")
            self.lines.append(f"    slow_store({pc}, a_, {size}, {src} & {mask})")
            self.lines.append(f"{self._def(0)} = old_")
            return
        if imm == XCHG:
            self.lines.append(f"slow_store({pc}, a_, {size}, {src} & {mask})")
        else:
            self.lines.append(f"slow_store({pc}, a_, {size}, "
                              f"atomic_ops[{imm & ~FETCH}](old_, {src}) & {mask})")
        if imm & FETCH:
            self.lines.append(f"{self._def(ins.src)} = old_")

    def _jump(self, pc: int, ins: Instruction) -> None:
        op = ins.op
        if op in (CALL, EXIT):
            self._step(pc)
            return
        target = _branch_target(pc, ins)
        if op == JA:
            self._flush()
            self.lines.append(f"return {target}")
            return
        cond = self._condition(ins)
        self._flush()
        self.lines.append(f"return {target} if {cond} else {pc + 1}")

    def _condition(self, ins: Instruction) -> str:
        """The Python expression of a conditional jump's test, on register locals."""
        wide = ins.cls == JMP
        mask, sign = ("", S64) if wide else (" & 0xFFFFFFFF", S32)
        a = f"({self._use(ins.dst)}{mask})" if mask else self._use(ins.dst)
        if ins.source == X:
            b = f"({self._use(ins.src)}{mask})" if mask else self._use(ins.src)
            sb = f"({b} ^ {sign:#x})"
        else:
            k = ins.imm & (M64 if wide else M32)
            b, sb = str(k), str(k ^ sign)
        return (_COND[ins.op].replace("{a}", a).replace("{b}", b)
                .replace("{sa}", f"({a} ^ {sign:#x})").replace("{sb}", sb))
