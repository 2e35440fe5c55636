"""An interpreter of the RFC 9669 BPF instruction set (cpu v4) with every memory access checked.

Algorithm.  A program is validated (`validate`) and translated once, two ways, from the same
semantic tables (semantics.py):

* per-slot closures -- `pc = code[pc]()` -- each made by a factory compiled from a small
  `codegen.fill` template (the shape of an instruction family) with the instruction's fields
  as closure constants.  This is the exact path: it runs the last instructions of a budget,
  traces, and is what a compiled block hands local calls and exit to (they work on the frames).
* per-basic-block functions (blocks.py): the straight-line code of a block becomes one Python
  function whose registers are locals and whose constants are literals; the run loop charges a
  block's whole instruction count to the budget before calling it.  A loop becomes one function
  that iterates in place, charging the budget block by block.

So decoding never happens at run time and instructions create no objects beyond Python ints; a
multiply/add loop runs at ~30 M insn/s, a loop with a branch and a memory load at ~25 M, and
the closures alone at ~12-15 M.

Registers hold unsigned 64-bit Python ints; signed views are taken with `(x ^ S) - S`.
32-bit ALU results are computed on masked operands, which is the zero extension RFC 9669 asks
for; semantics.py lists the rules that are easy to get wrong.

Memory is the region table of `memory.Memory` (address = id << 32 | 2 GiB + offset).  Loads and
stores inline the common case (a plain region, in bounds) and defer everything else to
`Memory.load`/`store`, whose MemoryFault becomes a `BpfFault` naming the instruction.

BPF-to-BPF calls get a fresh 512-byte stack region per frame (so overrunning a frame faults
instead of corrupting the caller) and save r6-r9 and r10, as the kernel's interpreter does.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ... import helpers as registry
from ...bpf import isa
from ...errors import RingError
from ...bpf.isa import (ALU, ALU64, ATOMIC, CALL, CMPXCHG, END, EXIT, FETCH, JA, JMP, JMP32, LD,
                   LDDW, LDX, MEM, MEMSX, SIZE_BYTES, SIZE_NAMES, ST, STX, XCHG, X, DecodeError,
                   Instruction)
from ...limits import MAX_CALL_DEPTH, STACK_BYTES
from . import blocks as block_compiler
from .codegen import fill, uses
from .memory import Memory, MemoryFault, Region
from .semantics import (ADDRESS, ALU32_EXCLUDED, ALU_EXPR, ATOMIC_IMMS, BIASED, CALL_FORMS,
                        CALLS, COND_EXPR, LDDW_SOURCES, M32, M64, MASKED, S32, S64,
                        SIGNED, SIGNED_JUMPS, UNARY, UNSIGNED, X_ONLY, branch_target, literal,
                        width)
from .semantics import ATOMIC as ATOMIC_OPS
from .semantics import END as END_OPS

__all__ = [
    "Interpreter", "BpfFault", "BudgetExceeded", "InvalidProgram", "Helper", "validate",
    "DEFAULT_BUDGET", "MAX_BUDGET", "check_budget", "call_label", "unknown_call", "LddwResolver",
    "slot_disassembly",
]

DEFAULT_BUDGET = 1_000_000     # the verifier's complexity limit, reused as a run-time bound
MAX_BUDGET = 1 << 62           # the JIT counts down a signed 64-bit budget; more is forever


def check_budget(budget: object) -> int:
    """`budget` if it is an instruction count both engines can run (0..MAX_BUDGET; 0 stops a
    run at its first instruction), else a ValueError naming the parameter and the range: the
    interpreter and the JIT take the same arguments, so a bad one fails the same way before
    any run."""
    if type(budget) is not int or not 0 <= budget <= MAX_BUDGET:
        raise ValueError(f"budget must be an integer from 0 to {MAX_BUDGET} (instructions per "
                         f"run), not {budget!r}")
    return budget

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
# Closure templates.  Each compiles once per distinct text into a factory
# `make(**fields) -> op` whose op returns the next pc; the fields become closure constants.

CLOSURE_ALU = """
def make(regs, d, s, k, nxt):
    def op():
$PRELUDE        regs[d] = $EXPR
        return nxt
    return op
"""

BINDING = "        $NAME = $VALUE\n"
"""An operand a template reads twice, read from the register file once (CLOSURE_ALU's prelude)."""

CLOSURE_COND = """
def make(regs, d, s, k, nxt, target):
    def op():
        return target if $COND else nxt
    return op
"""

CLOSURE_LOAD = """
def make(regs, readable, d, s, off, nxt, slow, pc):
    unpack = STRUCT.unpack_from
    get = readable.get
    def op():
        addr = (regs[s] + off) & $M64
        o = (addr & $OFFSET_MASK) - $BIAS
        buf = get(addr >> $REGION_SHIFT, b"")
        if 0 <= o <= len(buf) - $SIZE:
            regs[d] = $VALUE
        else:
            regs[d] = $SLOW_VALUE
        return nxt
    return op
"""

LOADED = "unpack(buf, o)[0]"
SLOW_LOADED = "slow(pc, addr, $SIZE)"
SIGN_EXTENDED = "(($VALUE ^ $SIGN) - $SIGN) & $M64"
"""The slow path returns a signed load's unsigned bits; this extends them."""

CLOSURE_STORE = """
def make(regs, writable, d, s, k, off, nxt, slow, pc):
    pack = STRUCT.pack_into
    get = writable.get
    def op():
        addr = (regs[d] + off) & $M64
        o = (addr & $OFFSET_MASK) - $BIAS
        buf = get(addr >> $REGION_SHIFT, b"")
        if 0 <= o <= len(buf) - $SIZE:
            pack(buf, o, $VALUE)
        else:
            slow(pc, addr, $SIZE, $VALUE)
        return nxt
    return op
"""

_FACTORIES: dict[object, Callable[..., Callable[[], int]]] = {}


def _factory(source: str, key: object = None,
             extra: Mapping[str, object] | None = None) -> Callable[..., Callable[[], int]]:
    """The `make` of `source`, compiled once per `key` (the source itself by default)."""
    key = source if key is None else key
    factory = _FACTORIES.get(key)
    if factory is None:
        namespace: dict = {}
        exec(compile(source, "<bpf-template>", "exec"), {**CALLS, **(extra or {})}, namespace)
        factory = _FACTORIES[key] = namespace["make"]
    return factory


def _register(field: str, wide: bool) -> str:
    """A register field of the closure, as an operation of that width reads it."""
    value = f"regs[{field}]"
    return value if wide else fill(MASKED, {"VALUE": value, "MASK": literal(M32)})


@functools.lru_cache(maxsize=None)
def _alu_source(cls: int, op: int, off: int, use_x: bool) -> str:
    template, wide = ALU_EXPR[(op, off)], cls == ALU64
    values, prelude = width(cls), ""
    operands = {"A": _register("d", wide), "B": _register("s", wide) if use_x else "k"}
    for name, expr in operands.items():
        # Inline an operand used once (or a bare name), else bind it to a local first.
        if uses(template, name) <= 1 or expr.isidentifier():
            values[name] = expr
        else:
            values[name] = name.lower()
            prelude += fill(BINDING, {"NAME": name.lower(), "VALUE": expr})
    return fill(CLOSURE_ALU, {"PRELUDE": prelude, "EXPR": fill(template, values)})


@functools.lru_cache(maxsize=None)
def _cond_source(cls: int, op: int, use_x: bool) -> str:
    wide = cls == JMP
    sign = hex(S64 if wide else S32)
    a = _register("d", wide)
    b = _register("s", wide) if use_x else "k"
    # For the K form the caller pre-biases k when the comparison is signed.
    sb = fill(BIASED, {"VALUE": b, "SIGN": sign}) if use_x else "k"
    expr = fill(COND_EXPR[op], {"A": a, "B": b, "SA": fill(BIASED, {"VALUE": a, "SIGN": sign}),
                                "SB": sb})
    return fill(CLOSURE_COND, {"COND": expr})


def _mem_factory(key: tuple, template: str, size: int, fmt: str,
                 **values: object) -> Callable[..., Callable[[], int]]:
    """A load or store factory: `key` names the access (kind, size, signedness), which fixes
    its text, so the text is written only the first time."""
    factory = _FACTORIES.get(key)
    if factory is None:
        source = fill(template, {**ADDRESS, "SIZE": size, **values})
        factory = _factory(source, key, {"STRUCT": struct.Struct("<" + fmt)})
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
            offs = {off for (o, off) in ALU_EXPR if o == op}
            if cls == ALU:
                offs -= {off for (o, off) in ALU32_EXCLUDED if o == op}
            k_offs = frozenset(off for off in offs if (op, off) not in X_ONLY)
            if (op, 0) in UNARY:
                rules[cls | op] = _Rule(name + suffix, ("src", "imm"), frozenset({0}), True)
                continue
            rules[cls | op] = _Rule(name + suffix, ("src",), k_offs, True)
            rules[cls | op | X] = _Rule(name + suffix, ("imm",), frozenset(offs), True)
        for src_bit in (0, X):
            if (cls, src_bit) in END_OPS:
                kind = {(ALU, 0): "le", (ALU, X): "be", (ALU64, 0): "bswap"}[(cls, src_bit)]
                rules[cls | END | src_bit] = _Rule(kind, ("src",), frozenset({0}), True,
                                                   imms=frozenset({16, 32, 64}))
    cond_names = {op: isa.JMP_NAMES[op] for op in isa.CONDITIONAL_JUMPS}
    for cls, suffix in ((JMP, ""), (JMP32, "32")):
        for op, name in cond_names.items():
            rules[cls | op] = _Rule(name + suffix, ("src",), frozenset())
            rules[cls | op | X] = _Rule(name + suffix, ("imm",), frozenset())
    rules[JMP | JA] = _Rule("ja", ("dst", "src", "imm"), frozenset())
    rules[JMP32 | JA] = _Rule("gotol", ("dst", "src"), frozenset({0}))
    rules[JMP | CALL] = _Rule("call", ("dst",), frozenset({0}), srcs=frozenset(CALL_FORMS))
    rules[JMP | EXIT] = _Rule("exit", ("dst", "src", "imm"), frozenset({0}))
    rules[LDDW] = _Rule("lddw", (), frozenset({0}), True, srcs=frozenset(LDDW_SOURCES))
    for size_bits, size in SIZE_BYTES.items():
        sname = SIZE_NAMES[size_bits]
        rules[LDX | MEM | size_bits] = _Rule("ldx" + sname, ("imm",), frozenset(), True)
        rules[ST | MEM | size_bits] = _Rule("st" + sname, ("src",), frozenset())
        rules[STX | MEM | size_bits] = _Rule("stx" + sname, ("imm",), frozenset())
        if size != 8:
            rules[LDX | MEMSX | size_bits] = _Rule("ldxs" + sname, ("imm",), frozenset(), True)
        if size in (4, 8):
            rules[STX | ATOMIC | size_bits] = _Rule("atomic" + ("32" if size == 4 else ""),
                                                    (), frozenset(), imms=ATOMIC_IMMS)
    return rules


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
        target = branch_target(i, ins) if ins is not None else None
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


# ---------------------------------------------------------------------------------------------
# The interpreter


def slot_disassembly(slots: Sequence[Instruction | None], pc: int) -> str:
    """llvm-objdump's text of validated slot `pc` (the second slot of an lddw shows the lddw),
    as `pybpf-uring disasm` prints it: how faults show the instruction."""
    ins = slots[pc] if 0 <= pc < len(slots) else None
    if ins is None and 0 < pc <= len(slots):
        ins = slots[pc - 1]
    return isa.format_instruction(ins) if ins is not None else ""


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
        self.budget = check_budget(budget)
        self.executed = 0                       # instructions the last run executed
        self._resolve_lddw = resolve_lddw
        self._disassemble = disassemble or functools.partial(slot_disassembly, self.slots)
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
            self._blocks = self._costs = None
            self.block_source = ""             # the blocks' Python source, the engine's dump
            if compile_blocks:
                blocks = block_compiler.compile_blocks(block_compiler.Closures(
                    self.slots, self.regs, self.code, self.memory, self._slow_load,
                    self._slow_store, self._spent, self._helper_calls, self._lddw_values))
                self._blocks, self._costs, self.block_source = (
                    blocks.functions, blocks.costs, blocks.source)
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
        limit = self.budget if budget is None else check_budget(budget)
        regs = self.regs
        regs[:] = [0] * 11
        for i, value in enumerate(args, start=1):
            regs[i] = value & M64
        regs[10] = self._stack_tops[0]
        self.stack[0].buf[:] = bytes(STACK_BYTES)
        self._frames.clear()
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
        transform = END_OPS[(cls, X if use_x else 0)]
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
        if op in SIGNED_JUMPS and not use_x:
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
            raise InvalidProgram(i, f"lddw {LDDW_SOURCES[ins.src]} (src {ins.src}) needs a "
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
        size, signed = ins.size, ins.mode == MEMSX
        slow = fill(SLOW_LOADED, {"SIZE": size})
        if signed:
            sign = {"SIGN": hex(1 << (8 * size - 1)), "M64": ADDRESS["M64"]}
            loaded = fill(SIGN_EXTENDED, {**sign, "VALUE": LOADED})
            slow = fill(SIGN_EXTENDED, {**sign, "VALUE": slow})
        else:
            loaded = LOADED
        factory = _mem_factory(("ldx", size, signed), CLOSURE_LOAD, size,
                               (SIGNED if signed else UNSIGNED)[size], VALUE=loaded,
                               SLOW_VALUE=slow)
        return factory(self.regs, self.memory.readable, ins.dst, ins.src, ins.off, i + 1,
                       self._slow_load, i)

    def _st(self, i: int, ins) -> Callable[[], int]:
        size = ins.size
        value = ins.imm & ((1 << (8 * size)) - 1)
        factory = _mem_factory(("st", size), CLOSURE_STORE, size, UNSIGNED[size], VALUE="k")
        return factory(self.regs, self.memory.writable, ins.dst, ins.src, value, ins.off, i + 1,
                       self._slow_store, i)

    def _stx(self, i: int, ins) -> Callable[[], int]:
        size = ins.size
        if ins.mode == ATOMIC:
            return self._atomic(i, ins, size)
        value = fill(MASKED, {"VALUE": "regs[s]", "MASK": hex((1 << (8 * size)) - 1)})
        factory = _mem_factory(("stx", size), CLOSURE_STORE, size, UNSIGNED[size], VALUE=value)
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
        combine, fetch = ATOMIC_OPS[imm & ~FETCH], bool(imm & FETCH)

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
