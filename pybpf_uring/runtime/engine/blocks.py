"""The interpreter's fast path: each basic block of a program compiled to one Python function.

A basic block (a run of slots entered only at its first and left only at its last) becomes
`b<pc>(rem)`, whose registers live in locals: a register is read from `regs` the first time
the block uses it and written back once, before the block returns the next pc.  The semantic
tables (semantics.py) drive it with operands that are locals and constants that are literals.
Helper calls and atomics run inline (helpers take values; atomics use the checked slow path);
local calls and exit, which work on the frames, end a block and run their per-slot closure.
Faults inside a block raise with the faulting slot's own index, exactly as single-stepping
would.  The run loop (interpreter.py) charges a block's whole instruction count to the budget
before calling it.

Loops.  A block that jumps back to its own start (a tight loop) iterates inside its function,
as many times as the budget `rem` left after its first iteration allows, and returns ~pc
(negative) after storing the instructions of the extra iterations in `spent[0]`.  A loop whose
blocks lie between its header and its last back edge (LLVM lays loops out that way) becomes one
function `loop<header>(rem)`: its registers stay in locals across iterations and blocks, and a
local `pc_` picks the next block.  Each block charges its instructions before running and hands
control back to the dispatcher -- with the count in `spent[0]` and ~pc returned -- when the
budget would not cover it or when control leaves the loop.  Blocks ending in a local call or
exit (which need the frames) stay outside: reaching one leaves the function.  Very large loops,
whose `if pc_ ==` chain would be long, keep the block-by-block path.

The source is written with `codegen.fill` templates (the package's one form of generated code;
codegen.py says why) whose every constant is named: memory's address layout (semantics.ADDRESS),
the width masks, the slots.
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ...bpf import isa
from ...bpf.isa import (ALU, ALU64, CALL, CMPXCHG, EXIT, FETCH, JA, JMP, LDDW, LDX, MEM, MEMSX,
                   ST, STX, XCHG, X, Instruction)
from .codegen import fill
from .memory import Memory
from .semantics import (ADDRESS, ALU_EXPR, ALU_READS, ATOMIC, BIASED, CALLS, COND_EXPR, END, M32,
                        M64, MASKED, S32, S64, SIGNED, UNSIGNED, branch_target, bswap,
                        is_helper_call, leaders, literal, width)

__all__ = ["Closures", "Blocks", "compile_blocks", "MAX_REGION_BLOCKS"]

MAX_REGION_BLOCKS = 12
"""The most blocks a loop function dispatches between; a longer loop runs block by block."""

# -- templates: the function shapes ------------------------------------------------------------

BLOCK = """
def b$PC(rem):
$BODY"""

TIGHT_LOOP = """
def b$START(rem):
$HOISTED    n_ = rem // $COST
    i_ = 0
    while True:
$BODY$LEAVE        if i_ == n_:
$FLUSH            spent[0] = i_ * $COST
            return ~$START
        i_ += 1
"""

TIGHT_LOOP_EXIT = """        if not ($COND):
$FLUSH            spent[0] = i_ * $COST
            return ~$FALL
"""

REGION_HEAD = """
def loop$HEADER(rem):
$LOADS    used_ = -$COST
    pc_ = $HEADER
    while True:
"""

REGION_ARM = """        $KEYWORD pc_ == $START:
            used_ += $COST
            if used_ > rem:
                used_ -= $COST
                break
"""

REGION_TAIL = """        else:
            break
$STORES    spent[0] = used_
    return ~pc_
"""

# -- templates: statements (one or more lines of a block body) -----------------------------------

LOAD_REG = "r$REG = regs[$REG]"
STORE_REG = "regs[$REG] = r$REG"
LOCAL = "r$REG"
ASSIGN = "$DST = $VALUE"

# Filled once, at import: register loads, stores and reads are most of a block's lines.
LOADS = [fill(LOAD_REG, {"REG": reg}) for reg in range(11)]
STORES = [fill(STORE_REG, {"REG": reg}) for reg in range(11)]
LOCALS = [fill(LOCAL, {"REG": reg}) for reg in range(11)]
LOW_HALVES = [fill(MASKED, {"VALUE": local, "MASK": literal(M32)}) for local in LOCALS]
REGISTER_LOADS = frozenset(LOADS)
WIDTHS = {wide: width(ALU64 if wide else ALU) for wide in (False, True)}
ALU_STATEMENTS = {key: fill(ASSIGN, {"DST": "$DST", "VALUE": text})
                  for key, text in ALU_EXPR.items()}
"""Each operation as a block statement, still a template of $DST, the operands and the width."""

END_OP = "$DST = $FN($VALUE, $BITS)"
HELPER_CALL = "$DST = h$PC($ARGS)"
HELPER_NAME = "h$PC"
RETURN = "return $TARGET"
BRANCH = "return $TARGET if $COND else $NEXT"
STEP = "return code[$PC]()"
GOTO = "pc_ = $TARGET"
GOTO_IF = "pc_ = $TARGET if $COND else $NEXT"

ADDRESS_LINES = """a_ = ($BASE + $OFF) & $M64
o_ = (a_ & $OFFSET_MASK) - $BIAS"""

LOAD = ADDRESS_LINES + """
b_ = rget(a_ >> $REGION_SHIFT, b"")
if 0 <= o_ <= len(b_) - $SIZE:
    $DST = U$SIZE(b_, o_)[0]
else:
    $DST = slow_load($PC, a_, $SIZE)"""

LOAD_SIGNED = ADDRESS_LINES + """
b_ = rget(a_ >> $REGION_SHIFT, b"")
if 0 <= o_ <= len(b_) - $SIZE:
    $DST = S$SIZE(b_, o_)[0] & $M64
else:
    $DST = ((slow_load($PC, a_, $SIZE) ^ $SIGN) - $SIGN) & $M64"""

STORE = ADDRESS_LINES + """
b_ = wget(a_ >> $REGION_SHIFT, b"")
if 0 <= o_ <= len(b_) - $SIZE:
    P$SIZE(b_, o_, $VALUE)
else:
    slow_store($PC, a_, $SIZE, $VALUE)"""

# Atomics read and write through the checked slow path, as the closures do.
CMPXCHG_LINES = ADDRESS_LINES + """
old_ = slow_load($PC, a_, $SIZE)
if old_ == $R0 & $MASK:
    slow_store($PC, a_, $SIZE, $SRC & $MASK)
$DST = old_"""

XCHG_LINES = ADDRESS_LINES + """
old_ = slow_load($PC, a_, $SIZE)
slow_store($PC, a_, $SIZE, $SRC & $MASK)"""

ATOMIC_LINES = ADDRESS_LINES + """
old_ = slow_load($PC, a_, $SIZE)
slow_store($PC, a_, $SIZE, atomic_ops[$OP](old_, $SRC) & $MASK)"""

FETCHED = "$DST = old_"


@dataclass(frozen=True)
class Closures:
    """A program as the interpreter translated it to per-slot closures: what the generated
    functions share with them (registers, the closures themselves, the memory's fast-path
    tables, the checked slow paths) and the values translation resolved."""

    slots: Sequence[Instruction | None]
    regs: list[int]
    code: Sequence[Callable[[], int]]
    memory: Memory
    slow_load: Callable[[int, int, int], int]
    slow_store: Callable[[int, int, int, int], None]
    spent: list[int]                              # a tight loop's extra instructions
    helper_calls: Mapping[int, Callable[..., int]]    # slot -> invoke(r1..r5)
    lddw_values: Mapping[int, int]                # slot -> resolved 64-bit value


@dataclass(frozen=True)
class Blocks:
    """`functions[pc]` for every block start (and the fall-off past the end), the instruction
    count each charges, and the Python source they were compiled from (the engine's dump)."""

    functions: list
    costs: list[int]
    source: str


def compile_blocks(closures: Closures) -> Blocks:
    """Compile the blocks of a translated program."""
    return _BlockCompiler(closures).compile()


@functools.lru_cache(maxsize=256)
def _compile_source(source: str):
    """Compiling is most of an Interpreter's construction; the same program (a ring's program
    re-registered, a conformance case run twice) yields the same source, so keep its code."""
    return compile(source, "<bpf-blocks>", "exec")


def _indent(lines: list[str], depth: int) -> str:
    pad = " " * depth
    return "".join(f"{pad}{line}\n" for line in lines)


class _BlockCompiler:
    def __init__(self, closures: Closures) -> None:
        self.closures = closures
        self.slots = closures.slots
        memory = closures.memory
        self.namespace: dict = {
            "regs": closures.regs, "code": closures.code, "rget": memory.readable.get,
            "wget": memory.writable.get, "slow_load": closures.slow_load,
            "slow_store": closures.slow_store, "spent": closures.spent, **CALLS,
            "_bswap": bswap, "_truncate": END[(ALU, 0)], "atomic_ops": ATOMIC,
        }
        for size, fmt in UNSIGNED.items():
            self.namespace[f"U{size}"] = struct.Struct("<" + fmt).unpack_from
            self.namespace[f"P{size}"] = struct.Struct("<" + fmt).pack_into
        for size, fmt in SIGNED.items():
            self.namespace[f"S{size}"] = struct.Struct("<" + fmt).unpack_from
        self.lines: list[str] = []
        self.loaded: set[int] = set()
        self.dirty: set[int] = set()

    def compile(self) -> Blocks:
        n = len(self.slots)
        starts = leaders(self.slots)
        bounds = list(zip(starts, starts[1:] + [n]))
        source = "".join(self._block(start, end) for start, end in bounds)
        regions = self._regions(bounds)
        source += "".join(self._region(header, members) for header, members in regions.items())
        exec(_compile_source(source), self.namespace)
        functions: list = [None] * (n + 1)
        costs = [0] * (n + 1)
        for start, end in bounds:
            functions[start] = self.namespace[f"b{start}"]
            costs[start] = self._cost(start, end)
        for header in regions:                 # entering a loop at its header runs it whole
            functions[header] = self.namespace[f"loop{header}"]
        fall_off = self.closures.code[n]
        functions[n] = lambda rem: fall_off()  # running off the end faults
        costs[n] = 1
        return Blocks(functions, costs, source)

    def _cost(self, start: int, end: int) -> int:
        return sum(1 for ins in self.slots[start:end] if ins is not None)

    # -- loop regions -----------------------------------------------------------------------------

    def _regions(self, bounds: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
        last_source: dict[int, int] = {}
        for start, end in bounds:
            pc = max(p for p in range(start, end) if self.slots[p] is not None)
            target = branch_target(pc, self.slots[pc])
            if target is not None and target <= start and not self.slots[pc].is_call:
                last_source[target] = max(last_source.get(target, start), start)
        regions = {}
        for header, source in sorted(last_source.items()):
            members = [(s, e) for s, e in bounds if header <= s <= source and self._inline(s, e)]
            if members and members[0][0] == header and 2 <= len(members) <= MAX_REGION_BLOCKS:
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
        self.loaded, self.dirty = set(touched), set()
        out = [fill(REGION_HEAD, {
            "HEADER": header, "COST": self._cost(*members[0]),
            "LOADS": _indent([LOADS[reg] for reg in sorted(touched)], 4)})]
        for index, (start, end) in enumerate(members):
            self.lines = []
            self._region_block(start, end)
            out.append(fill(REGION_ARM, {"KEYWORD": "if" if index == 0 else "elif",
                                         "START": start, "COST": self._cost(start, end)}))
            out.append(_indent(self.lines, 12))
        out.append(fill(REGION_TAIL, {
            "STORES": _indent([STORES[reg] for reg in sorted(written)], 4)}))
        return "".join(out)

    def _region_block(self, start: int, end: int) -> None:
        pcs = [pc for pc in range(start, end) if self.slots[pc] is not None]
        for pc in pcs[:-1]:
            self._insn(pc, self.slots[pc])
        pc, last = pcs[-1], self.slots[pcs[-1]]
        if last.is_jump:
            target = branch_target(pc, last)
            if last.op == JA:
                self.lines.append(fill(GOTO, {"TARGET": target}))
            else:
                self.lines.append(fill(GOTO_IF, {"TARGET": target, "COND": self._condition(last),
                                                 "NEXT": pc + 1}))
        else:
            self._insn(pc, last)
            self.lines.append(fill(GOTO, {"TARGET": end}))

    # -- one block ------------------------------------------------------------------------------

    def _block(self, start: int, end: int) -> str:
        self.lines, self.loaded, self.dirty = [], set(), set()
        pcs = [pc for pc in range(start, end) if self.slots[pc] is not None]
        last = self.slots[pcs[-1]]
        if last.is_jump and branch_target(pcs[-1], last) == start:
            return self._tight_loop(start, pcs, last)
        ended = False
        for pc in pcs:
            ended = self._insn(pc, self.slots[pc])
        if not ended:
            self._flush()
            self.lines.append(fill(RETURN, {"TARGET": end}))
        return fill(BLOCK, {"PC": start, "BODY": _indent(self.lines, 4)})

    def _tight_loop(self, start: int, pcs: list[int], last: Instruction) -> str:
        for pc in pcs[:-1]:
            self._insn(pc, self.slots[pc])
        cond = None if last.op == JA else self._condition(last)
        # Each register is loaded once, before the loop; inside it they are locals.
        hoisted = [line for line in self.lines if line in REGISTER_LOADS]
        self.lines = [line for line in self.lines if line not in REGISTER_LOADS]
        flush = _indent([STORES[reg] for reg in sorted(self.dirty)], 12)
        cost = len(pcs)
        leave = "" if cond is None else fill(TIGHT_LOOP_EXIT, {
            "COND": cond, "FLUSH": flush, "COST": cost, "FALL": pcs[-1] + 1})
        return fill(TIGHT_LOOP, {"START": start, "COST": cost, "FLUSH": flush, "LEAVE": leave,
                                 "HOISTED": _indent(hoisted, 4), "BODY": _indent(self.lines, 8)})

    # -- registers ------------------------------------------------------------------------------

    def _use(self, reg: int) -> str:
        if reg not in self.loaded:
            self.lines.append(LOADS[reg])
            self.loaded.add(reg)
        return LOCALS[reg]

    def _def(self, reg: int) -> str:
        self.loaded.add(reg)
        self.dirty.add(reg)
        return LOCALS[reg]

    def _flush(self) -> None:
        self.lines += [STORES[reg] for reg in sorted(self.dirty)]
        self.dirty.clear()

    def _operand(self, reg: int, wide: bool) -> str:
        """A register as an operation of that width reads it."""
        local = self._use(reg)
        return local if wide else LOW_HALVES[reg]

    # -- instructions ---------------------------------------------------------------------------

    def _insn(self, pc: int, ins: Instruction) -> bool:
        """Emit one instruction; True when it ended the block (it returned a pc)."""
        cls = ins.cls
        if cls in (ALU, ALU64):
            self._alu(ins)
        elif ins.opcode == LDDW:
            # Translation to closures already resolved the value (maps, code addresses).
            self.lines.append(fill(ASSIGN, {"DST": self._def(ins.dst),
                                            "VALUE": self.closures.lddw_values[pc]}))
        elif cls == LDX:
            self._load(pc, ins)
        elif cls == ST or (cls == STX and ins.mode == MEM):
            self._store(pc, ins)
        elif cls == STX:
            self._atomic(pc, ins)
        elif is_helper_call(ins):
            self._helper_call(pc)
        else:
            self._jump(pc, ins)
            return True
        return False

    def _alu(self, ins: Instruction) -> None:
        cls, op, wide = ins.cls, ins.op, ins.cls == ALU64
        if op == isa.END:
            value = self._use(ins.dst)
            fn = "_truncate" if (cls, ins.source) == (ALU, 0) else "_bswap"
            self.lines.append(fill(END_OP, {"DST": self._def(ins.dst), "FN": fn,
                                            "VALUE": value, "BITS": ins.imm}))
            return
        values = dict(WIDTHS[wide])
        reads_a, reads_b = ALU_READS[(op, ins.off)]
        if reads_a:                              # mov and movsx never read dst
            values["A"] = self._operand(ins.dst, wide)
        if reads_b:                              # neg never reads an operand
            values["B"] = (self._operand(ins.src, wide) if ins.source == X
                           else ins.imm & (M64 if wide else M32))
        values["DST"] = self._def(ins.dst)
        self.lines.append(fill(ALU_STATEMENTS[(op, ins.off)], values))

    def _helper_call(self, pc: int) -> None:
        """Helpers take values, not the register file, so the block keeps going after one."""
        self.namespace[fill(HELPER_NAME, {"PC": pc})] = self.closures.helper_calls[pc]
        args = ", ".join(self._use(reg) for reg in range(1, 6))
        self.lines.append(fill(HELPER_CALL, {"DST": self._def(0), "PC": pc, "ARGS": args}))

    def _access(self, template: str, pc: int, ins: Instruction, base: str, **values) -> None:
        """Append a memory access's lines; `base` is the address register's local, read (and
        so loaded) before the caller defined any register the access writes."""
        values.update(ADDRESS, BASE=base, OFF=ins.off, PC=pc, SIZE=ins.size)
        self.lines += fill(template, values).split("\n")

    def _load(self, pc: int, ins: Instruction) -> None:
        base = self._use(ins.src)
        if ins.mode == MEMSX:
            self._access(LOAD_SIGNED, pc, ins, base, DST=self._def(ins.dst),
                         SIGN=1 << (8 * ins.size - 1))
        else:
            self._access(LOAD, pc, ins, base, DST=self._def(ins.dst))

    def _store(self, pc: int, ins: Instruction) -> None:
        size = ins.size
        mask = (1 << (8 * size)) - 1
        if ins.cls == ST:
            value = str(ins.imm & mask)
        elif size < 8:
            value = fill(MASKED, {"VALUE": self._use(ins.src), "MASK": f"{mask:#x}"})
        else:
            value = self._use(ins.src)
        self._access(STORE, pc, ins, self._use(ins.dst), VALUE=value)

    def _atomic(self, pc: int, ins: Instruction) -> None:
        """Read-modify-write through the checked slow path, as the closure does; every
        register the statement reads is loaded before it."""
        mask, imm = hex((1 << (8 * ins.size)) - 1), ins.imm
        base, src = self._use(ins.dst), self._use(ins.src)
        if imm == CMPXCHG:
            r0 = self._use(0)
            self._access(CMPXCHG_LINES, pc, ins, base, MASK=mask, SRC=src, R0=r0,
                         DST=self._def(0))
            return
        if imm == XCHG:
            self._access(XCHG_LINES, pc, ins, base, MASK=mask, SRC=src)
        else:
            self._access(ATOMIC_LINES, pc, ins, base, MASK=mask, OP=imm & ~FETCH, SRC=src)
        if imm & FETCH:
            self.lines.append(fill(FETCHED, {"DST": self._def(ins.src)}))

    def _jump(self, pc: int, ins: Instruction) -> None:
        op = ins.op
        if op in (CALL, EXIT):             # they work on `regs` and the frames
            self._flush()
            self.lines.append(fill(STEP, {"PC": pc}))
            return
        target = branch_target(pc, ins)
        cond = None if op == JA else self._condition(ins)
        self._flush()
        if cond is None:
            self.lines.append(fill(RETURN, {"TARGET": target}))
        else:
            self.lines.append(fill(BRANCH, {"TARGET": target, "COND": cond, "NEXT": pc + 1}))

    def _condition(self, ins: Instruction) -> str:
        """The Python expression of a conditional jump's test, on register locals."""
        wide = ins.cls == JMP
        sign = S64 if wide else S32
        a = self._operand(ins.dst, wide)
        if ins.source == X:
            b = self._operand(ins.src, wide)
            sb = fill(BIASED, {"VALUE": b, "SIGN": hex(sign)})
        else:
            k = ins.imm & (M64 if wide else M32)
            b, sb = str(k), str(k ^ sign)
        return fill(COND_EXPR[ins.op], {"A": a, "B": b, "SB": sb,
                                        "SA": fill(BIASED, {"VALUE": a, "SIGN": hex(sign)})})
