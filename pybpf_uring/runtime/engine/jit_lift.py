"""Lifting validated BPF slots (cpu v4) to LLVM IR text, for the engine's JIT (`jit.py`).

Algorithm.  The slots are cut into basic blocks at the interpreter's leaders (slot 0, every jump
and local-call target, the slot after every jump, local call and exit).  The whole program is
one LLVM function with one LLVM block per BPF block reachable from slot 0 (along jumps,
fall-through, calls and their continuations), so each BPF instruction is lifted exactly once
and the IR, and LLVM's time and memory, grow linearly with the program.  (An LLVM function per
BPF function would copy every block each function reaches: quadratic for a program whose
subprograms share code, 400k IR lines for 1000 random instructions.)  Registers are allocas
(mem2reg makes them SSA), conditional jumps are `icmp` + `br`.

Semantics come from small tables keyed by opcode family (`_ALU_OPS`, `_CONDITIONS`, `_LIFT`),
each entry giving the IR of the interpreter's rule: division by zero gives 0, modulo by zero
leaves dst, INT_MIN / -1 wraps, shift counts are masked, 32-bit results are zero-extended, MOVSX
truncates then sign-extends, CMPXCHG compares with r0.  LLVM would treat a zero divisor or an
over-wide shift as undefined behaviour, so every such operand is made safe first.

Calls.  A local call works as the interpreter's does, on a frame stack in the function: it saves
r6-r9 and its own slot in the frame's save record, moves r10 (and the native frame pointer) to
the next frame, and jumps to the callee's block; an exit at depth 0 returns r0, at any other
depth it restores r6-r9 and r10 and switches on the saved slot to the block after that call.
So the callee sees the caller's r0-r5, the caller gets them back as the callee left them, and
r6-r9 stay the caller's.
Helpers and kfuncs, and memory the inline path cannot serve, go through function pointers in
the run's state block (`STATE_FIELDS`) to ctypes callbacks that run the interpreter's own Python
code; a callback that faults sets `status` and every frame returns at once.  The helpers in
`NATIVE_HELPERS` are looked up first in the state's `natives` table: when the engine filled it
(native_ring_ir: the RFC ring helpers, map lookups, copies, the clock), the call stays native.

Memory.  An address is `region id << 32 | 2 GiB + offset` (memory.py).  The checked path looks
the id up in the run's region table (`{ptr, readable bytes, writable bytes}` per id, 0 bytes for
regions the fast path may not serve) and does one unsigned compare; anything else calls the
host, whose `Memory.load/store` either serves the access (field-exact ctx, read-only data) or
raises the interpreter's exact fault.  The table is replaced, never mutated, when the memory
changes during a run, so its loads are `!invariant.load` (but no pass of the JIT's pipeline
hoists loads out of loops: jit_loops does what matters of that).  Accesses through r10, or
through a register the block made r10 plus constants, at an offset inside the 512-byte frame
are checked here, at lift time, and become plain native accesses.  An address derived from an anchor (jit_loops) is first
checked against the anchor's translation, made once a block or once on entry to a loop
(`anchored`); a miss takes the full path.  `unchecked=True` drops the table bounds checks (and
trusts no anchor: a wrong guess there would be a wrong access).

Budget.  Each block subtracts its instruction count on entry.  Before an instruction with an
effect the host could see (a store, a helper call, an atomic, the slow path of a load, which
may fault) and before the block's last instruction, a compare against a constant says whether
the budget ran out earlier in the block; if so the run stops with status BUDGET, naming the
block and the position in it where the budget ran out -- the slot the interpreter reports.  So
effects before that point happen and effects after it do not, as in the interpreter.  (Only
stores to the stack frame at offsets known at lift time are not held back: a frame is scratch,
invisible after the run.)  On the hot path a guard is a compare and a predicted branch, and a
block in a short loop with effects has a second copy without guards, run when one compare at its
start says the budget covers the whole block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ... import helpers as registry
from ...bpf import isa
from ...bpf.isa import (ADD, ALU, ALU64, AND, ARSH, ATOMIC, CMPXCHG, DIV, END, FETCH, JA,
                   JEQ, JGE, JGT, JLE, JLT, JMP, JMP32, JNE, JSET, JSGE, JSGT, JSLE, JSLT, LD, LDX,
                   LSH, MEMSX, MOD, MOV, MUL, NEG, OR, RSH, ST, STX, SUB, XCHG, XOR, X, Instruction)
from ...limits import MAX_CALL_DEPTH, STACK_BYTES
from .jit_loops import (MAX_LOOP_SLOTS, accesses, derive, find_loops, frame_offset, in_frame,
                        in_loops, loop_ranges)
from .semantics import branch_target, is_helper_call, leaders

__all__ = ["lift", "Lifted", "STATE_FIELDS", "NATIVE_HELPERS", "STATUS_OK", "STATUS_HOST", "STATUS_BUDGET",
           "STATUS_DEPTH", "STATUS_FELL_OFF", "ENTRY_FIELDS"]

# The run's state block: one i64/pointer per field, in this order (jit.py mirrors it in ctypes).
STATE_FIELDS = ("table", "table_len", "status", "fault_slot", "fault_aux", "budget",
                "slow_load", "slow_store", "helper", "stack_ptrs", "stack_tops",
                "natives", "ring", "maps")
# Helpers a program may call as native code (the registry's helpers with a `native` symbol in
# native_ring_ir): `natives` points to a table of 256 function pointers by helper id; a null
# entry, or a helper not listed here, goes to `helper`.
NATIVE_HELPERS = frozenset(registry.native_symbols())
_F = {name: i for i, name in enumerate(STATE_FIELDS)}
# One region-table entry: the native pointer, the bytes the fast path may read and write, then
# for field-exact regions (the io_uring ctx) of at most 64 bytes, for each access size 1/2/4/8 a
# bit per offset where a read (then a write) of that size is allowed.
ENTRY_FIELDS = ("ptr", "rsize", "wsize", "read1", "read2", "read4", "read8",
                "write1", "write2", "write4", "write8")
_ENTRY = f"[{len(ENTRY_FIELDS)} x i64]"
_LOG2 = {1: 0, 2: 1, 4: 2, 8: 3}

STATUS_OK = 0
STATUS_HOST = 1       # a callback recorded an exception (fault, helper error) on the host
STATUS_BUDGET = 2     # fault_slot = block start, fault_aux = position in the block
STATUS_DEPTH = 3      # fault_slot = the call, fault_aux = the depth it needed
STATUS_FELL_OFF = 4   # ran past the last slot

M32 = (1 << 32) - 1
_TY = {1: "i8", 2: "i16", 4: "i32", 8: "i64"}
_SAVED = "[5 x i64]"        # a frame's save record: the caller's r6-r9, the call's slot


def _s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


# ---------------------------------------------------------------------------------------------
# Semantic tables.  An ALU rule gets the emitter, the LLVM type (i32/i64), the operands and the
# bit width, and returns the result value of that type.

def _binop(name: str) -> Callable:
    return lambda e, t, a, b, w: e.val(f"{name} {t} {a}, {b}")


def _shift(name: str) -> Callable:
    return lambda e, t, a, b, w: e.val(f"{name} {t} {a}, {e.val(f'and {t} {b}, {w - 1}')}")


def _udiv(e, t, a, b, w):
    zero = e.val(f"icmp eq {t} {b}, 0")
    safe = e.val(f"select i1 {zero}, {t} 1, {t} {b}")
    return e.val(f"select i1 {zero}, {t} 0, {t} {e.val(f'udiv {t} {a}, {safe}')}")


def _umod(e, t, a, b, w):
    zero = e.val(f"icmp eq {t} {b}, 0")
    safe = e.val(f"select i1 {zero}, {t} 1, {t} {b}")
    return e.val(f"select i1 {zero}, {t} {a}, {t} {e.val(f'urem {t} {a}, {safe}')}")


def _signed_safe(e, t, b):
    """(b == 0, b == -1, a divisor that is neither): sdiv/srem trap or are UB on both."""
    zero = e.val(f"icmp eq {t} {b}, 0")
    minus = e.val(f"icmp eq {t} {b}, -1")
    either = e.val(f"or i1 {zero}, {minus}")
    return zero, minus, e.val(f"select i1 {either}, {t} 1, {t} {b}")


def _sdiv(e, t, a, b, w):
    zero, minus, safe = _signed_safe(e, t, b)
    q = e.val(f"select i1 {zero}, {t} 0, {t} {e.val(f'sdiv {t} {a}, {safe}')}")
    return e.val(f"select i1 {minus}, {t} {e.val(f'sub {t} 0, {a}')}, {t} {q}")  # INT_MIN wraps


def _smod(e, t, a, b, w):
    zero, minus, safe = _signed_safe(e, t, b)
    r = e.val(f"select i1 {zero}, {t} {a}, {t} {e.val(f'srem {t} {a}, {safe}')}")
    return e.val(f"select i1 {minus}, {t} 0, {t} {r}")


def _movsx(bits: int) -> Callable:
    def rule(e, t, a, b, w):
        narrow = e.val(f"trunc {t} {b} to i{bits}") if bits < w else b
        return e.val(f"sext i{bits} {narrow} to {t}") if bits < w else narrow
    return rule


_ALU_OPS: dict[tuple[int, int], Callable] = {
    (ADD, 0): _binop("add"), (SUB, 0): _binop("sub"), (MUL, 0): _binop("mul"),
    (OR, 0): _binop("or"), (AND, 0): _binop("and"), (XOR, 0): _binop("xor"),
    (LSH, 0): _shift("shl"), (RSH, 0): _shift("lshr"), (ARSH, 0): _shift("ashr"),
    (NEG, 0): lambda e, t, a, b, w: e.val(f"sub {t} 0, {a}"),
    (MOV, 0): lambda e, t, a, b, w: b,
    (MOV, 8): _movsx(8), (MOV, 16): _movsx(16), (MOV, 32): _movsx(32),
    (DIV, 0): _udiv, (DIV, 1): _sdiv, (MOD, 0): _umod, (MOD, 1): _smod,
}
_READS_DST = {key for key in _ALU_OPS if key[0] != MOV}

# Conditional jumps: the icmp predicate (JSET tests `a & b != 0`).
_CONDITIONS = {JEQ: "eq", JGT: "ugt", JGE: "uge", JNE: "ne", JSGT: "sgt", JSGE: "sge",
               JLT: "ult", JLE: "ule", JSLT: "slt", JSLE: "sle", JSET: None}

# Atomic read-modify-write: new value from (old, src) at the access width.
_ATOMIC_OPS = {isa.ATOMIC_ADD: "add", isa.ATOMIC_OR: "or", isa.ATOMIC_AND: "and",
               isa.ATOMIC_XOR: "xor"}


# ---------------------------------------------------------------------------------------------
# Program structure

@dataclass
class Lifted:
    """The IR of one program and what the host needs to interpret its exits."""

    text: str
    entry: str                                   # the exported function's symbol
    positions: dict[int, list[int]]              # block start -> the slot at each position
    helper_slots: list[int] = field(default_factory=list)


class _Program:
    def __init__(self, slots: Sequence[Instruction | None]) -> None:
        self.slots = slots
        self.n = len(slots)
        starts = leaders(slots)
        self.blocks: dict[int, list[int]] = {}       # start -> slots of its instructions
        for start, end in zip(starts, starts[1:] + [self.n]):
            self.blocks[start] = [p for p in range(start, end) if slots[p] is not None]
        self.blocks[self.n] = [self.n]                # running off the end: a one-slot block
        self.call_targets = sorted({branch_target(pc, ins) for pc, ins in enumerate(slots)
                                    if ins is not None and ins.is_pseudo_call})
        # loops that hoist address translations (jit_loops), by header, and by block; whether
        # a slot is in a short loop (where a block's budget guards get a copy without them:
        # only short ones, so a program of long jumps back is not lifted twice)
        ranges = loop_ranges(slots)
        # only loops a run can enter hoist: an unreachable header's block is never emitted, so
        # its entry (`pre<header>`) would branch to nothing, and a reachable block in its range
        # (entered by a jump from outside) would read translations no entry made
        self.reached = self.reachable()          # (the blocks emitted, in order)
        reached = set(self.reached)
        self.loops, self.loop_of = find_loops(
            slots, {b: pcs for b, pcs in self.blocks.items() if b < self.n},
            {h: end for h, end in ranges.items() if h in reached})
        self.in_loop = in_loops({h: end for h, end in ranges.items()
                                 if end - h < MAX_LOOP_SLOTS}, self.n)

    def successors(self, start: int) -> list[int]:
        if start == self.n:
            return []
        last_pc = self.blocks[start][-1]
        last = self.slots[last_pc]
        nxt = last_pc + last.slots
        if last.is_exit:
            return []
        if last.is_pseudo_call:
            return [nxt, branch_target(last_pc, last)]
        if last.is_jump:
            target = branch_target(last_pc, last)
            return [target] if last.op == JA else [target, nxt]
        return [nxt]

    def reachable(self) -> list[int]:
        """The blocks reachable from slot 0 along jumps, fall-through, calls and returns."""
        seen, todo = {0}, [0]
        while todo:
            for succ in self.successors(todo.pop()):
                if succ not in seen:
                    seen.add(succ)
                    todo.append(succ)
        return sorted(seen)


# ---------------------------------------------------------------------------------------------
# Emission

class _Function:
    """The IR text of the program: one LLVM function (see the module docstring)."""

    def __init__(self, lifter: "_Lifter") -> None:
        self.lifter = lifter
        self.returns: list[int] = []              # the slots of the local calls
        self.lines: list[str] = []
        self.counter = 0
        self.blocks = lifter.program.blocks
        self.current = "entry"                     # the LLVM block being emitted
        self.budget_exits: list[tuple[str, int, str]] = []   # (from block, start, position)
        # What this BPF block knows of its registers (see `anchored`): reg -> its anchor
        # (jit_loops: the register and SSA value of the address it was derived from); regs
        # holding plain numbers; anchor value -> its translation, (value, kind, size) -> bound
        self.anchors: dict[int, tuple] = {}
        self.scalars: set[int] = set()
        self.translations: dict = {}
        self.frame: dict[int, int] = {10: 0}       # reg -> its offset from r10 (this block)
        self.quick = False                         # emitting a block's copy without guards
        self.fields: set[str] = set()              # the state block's fields the IR uses
        self.callbacks: set[str] = set()           # ... and its function pointers

    # -- low level ------------------------------------------------------------------------------
    def val(self, expr: str) -> str:
        self.counter += 1
        name = f"%v{self.counter}"
        self.lines.append(f"  {name} = {expr}")
        return name

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")
        self.current = name

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def goto(self, target: int, source: int | None = None) -> str:
        """The label a jump from slot `source` (default: the current one) to `target` takes: a
        loop's entry block (`loop_entries`) when it comes from outside the loop."""
        loop = self.lifter.program.loops.get(target)
        source = self.pc if source is None else source
        if loop is not None and not loop.contains(source):
            return f"%pre{target}"
        return f"%b{target}"

    def get(self, reg: int) -> str:
        return self.val(f"load i64, ptr %R{reg}")

    def get32(self, reg: int) -> str:
        return self.val(f"trunc i64 {self.get(reg)} to i32")

    def set(self, reg: int, value: str) -> None:
        self.emit(f"store i64 {value}, ptr %R{reg}")
        self.anchors.pop(reg, None)
        self.scalars.discard(reg)
        if reg != 10:
            self.frame.pop(reg, None)

    def field(self, name: str, ty: str = "i64") -> str:
        self.fields.add(name)
        return self.val(f"load {ty}, ptr %p_{name}")

    def put_field(self, name: str, value: str) -> None:
        self.fields.add(name)
        self.emit(f"store i64 {value}, ptr %p_{name}")

    def callback(self, name: str) -> str:
        """The state block's function pointer `name` (slow_load, slow_store, helper), loaded
        once in the entry block."""
        self.fields.add(name)
        self.callbacks.add(name)
        return f"%fn_{name}"

    def leave(self) -> None:
        """Return after a fault: every caller sees status != 0 and returns too."""
        self.emit("ret i64 0")

    def stop(self, status: int, slot: int | str, aux: int | str = 0) -> None:
        self.put_field("status", str(status))
        self.put_field("fault_slot", str(slot))
        self.put_field("fault_aux", str(aux))
        self.leave()

    def check_status(self) -> None:
        """After a host call: leave when it failed (every frame shares one `fail` block)."""
        bad = self.val(f"icmp ne i64 {self.field('status')}, 0")
        ok = self.fresh("ok")
        self.emit(f"br i1 {bad}, label %fail, label %{ok}, !prof !0")
        self.label(ok)

    # -- budget -----------------------------------------------------------------------------------
    def guard(self, position: int) -> None:
        """Stop unless the budget covered this block up to and including `position` (in a
        block's `quick` copy it covers the whole block: nothing to check)."""
        if self.quick:
            return
        short = self.val(f"icmp slt i64 {self.rem}, {position + 1 - self.cost}")
        ok = self.fresh("ok")
        self.budget_exits.append((self.current, self.start, self.rem, self.cost))
        self.emit(f"br i1 {short}, label %budget_out, label %{ok}, !prof !0")
        self.label(ok)

    def shared_exits(self) -> None:
        """One block per function for each way out, so a guard costs a compare and a branch
        and little IR: `fail` (a host call failed) and `budget_out` (phis say where)."""
        self.label("fail")
        self.leave()
        if not self.budget_exits:
            return
        self.label("budget_out")
        starts = ", ".join(f"[{start}, %{block}]" for block, start, _, _ in self.budget_exits)
        rems = ", ".join(f"[{rem}, %{block}]" for block, _, rem, _ in self.budget_exits)
        costs = ", ".join(f"[{cost}, %{block}]" for block, _, _, cost in self.budget_exits)
        start = self.val(f"phi i64 {starts}")
        rem = self.val(f"phi i64 {rems}")
        aux = self.val(f"add i64 {rem}, {self.val(f'phi i64 {costs}')}")
        self.stop(STATUS_BUDGET, start, aux)

    # -- the function ---------------------------------------------------------------------------
    def text(self) -> str:
        lifter = self.lifter
        head = (f"define i64 @{lifter.name}(ptr noalias %st, i64 %a1, i64 %a2, i64 %a3, "
                "i64 %a4, i64 %a5) #0 {")
        self.label("entry")
        for reg in range(11):
            self.emit(f"%R{reg} = alloca i64")
        for name, ty in (("REM", "i64"), ("TAB", "ptr"), ("TLEN", "i64"), ("DEPTH", "i64"),
                         ("FP", "ptr"), ("SAVE", f"[{MAX_CALL_DEPTH} x {_SAVED}]")):
            self.emit(f"%{name} = alloca {ty}")
        prologue = len(self.lines)          # the state fields the program uses go here
        self.reload_table()
        self.emit(f"store i64 {self.field('budget')}, ptr %REM")
        for reg in range(10):
            self.set(reg, f"%a{reg}" if 1 <= reg <= 5 else "0")
        self.enter_frame("0")
        self.hoisted_slots()
        self.emit(f"br label {self.goto(0, -1)}")
        for start in lifter.program.reached:
            self.block(start)
        self.loop_entries()
        self.returns_block()
        self.shared_exits()
        fields = [f"  %p_{name} = getelementptr i64, ptr %st, i64 {index}"
                  for name, index in _F.items() if name in self.fields]
        fields += [f"  %fn_{name} = load ptr, ptr %p_{name}"        # fixed for the run
                   for name in _F if name in self.callbacks]
        return "\n".join([head, *self.lines[:prologue], *fields, *self.lines[prologue:], "}"])

    # -- hoisted translations (jit_loops) -------------------------------------------------------
    def hoisted_slots(self) -> None:
        """Allocas for each loop's hoisted translations, their bounds 0 (every access misses)
        until the loop is entered."""
        for h, loop in self.lifter.program.loops.items():
            for k in sorted({k for k, _, _ in loop.hoisted}):
                self.emit(f"%H{h}_{k}_lo = alloca i64")
                self.emit(f"%H{h}_{k}_base = alloca ptr")
            for k, kind, size in sorted(loop.hoisted):
                self.emit(f"%H{h}_{k}_{kind}{size} = alloca i64")
        self.clear_hoisted()

    def clear_hoisted(self) -> None:
        """A helper may have unmapped a region a hoisted translation points into: clear them
        all (the loop's entry makes them again)."""
        for h, loop in self.lifter.program.loops.items():
            for k, kind, size in sorted(loop.hoisted):
                self.emit(f"store i64 0, ptr %H{h}_{k}_{kind}{size}")

    def loop_entries(self) -> None:
        """`pre<header>`, where jumps into a loop from outside go: the translations of the
        anchors the loop never writes, then the header."""
        for h, loop in self.lifter.program.loops.items():
            self.label(f"pre{h}")
            self.translations = {}
            for k, kind, size in sorted(loop.hoisted):
                anchor = self.get(k)
                entry, base, lo = self.translate(anchor)
                self.emit(f"store i64 {lo}, ptr %H{h}_{k}_lo")
                self.emit(f"store ptr {base}, ptr %H{h}_{k}_base")
                self.emit(f"store i64 {self.bound(anchor, entry, kind, size)}, "
                          f"ptr %H{h}_{k}_{kind}{size}")
            self.emit(f"br label %b{h}")

    def enter_frame(self, depth: str) -> None:
        """Make frame `depth` current: DEPTH, r10 (its top as a BPF address) and FP (its top as
        a native pointer, for the r10 accesses proven inside the frame at lift time)."""
        self.emit(f"store i64 {depth}, ptr %DEPTH")
        tops = self.field("stack_tops", "ptr")
        top = self.val(f"load i64, ptr {self.val(f'getelementptr i64, ptr {tops}, i64 {depth}')}")
        self.set(10, top)
        stacks = self.field("stack_ptrs", "ptr")
        base = self.val(f"load ptr, ptr {self.val(f'getelementptr ptr, ptr {stacks}, i64 {depth}')}")
        self.emit(f"store ptr {self.val(f'getelementptr i8, ptr {base}, i64 {STACK_BYTES}')}, ptr %FP")

    def reload_table(self) -> None:
        """The region table changes only inside helpers (which may map regions)."""
        self.emit(f"store ptr {self.field('table', 'ptr')}, ptr %TAB")
        self.emit(f"store i64 {self.field('table_len')}, ptr %TLEN")

    def block(self, start: int) -> None:
        pcs = self.blocks[start]
        self.start, self.cost = start, len(pcs)
        self.label(f"b{start}")
        self.loop = self.lifter.program.loop_of.get(start)
        self.rem = self.val(f"sub i64 {self.val('load i64, ptr %REM')}, {self.cost}")
        self.emit(f"store i64 {self.rem}, ptr %REM")
        if start == self.lifter.program.n:
            self.guard(0)
            self.stop(STATUS_FELL_OFF, self.lifter.program.n - 1)
            return
        program = self.lifter.program
        if program.in_loop[start] and any(
                accesses(program.slots[pc]) or is_helper_call(program.slots[pc])
                for pc in pcs):
            # A block in a loop with effects has several guards; when the budget covers the
            # whole block (one compare) a copy without them runs instead.
            covered = self.val(f"icmp sge i64 {self.rem}, 0")
            quick, exact = self.fresh("quick"), self.fresh("exact")
            self.emit(f"br i1 {covered}, label %{quick}, label %{exact}, !prof !2")
            self.label(quick)
            self.quick = True
            self.body(pcs)
            self.quick = False
            self.label(exact)
        self.body(pcs)

    def body(self, pcs: list[int]) -> None:
        """The instructions of a block (after its budget is charged)."""
        slots = self.lifter.program.slots
        self.anchors, self.scalars, self.translations = {}, set(), {}
        self.frame = {10: 0}
        for position, pc in enumerate(pcs):
            ins = slots[pc]
            self.position, self.pc = position, pc
            if position == len(pcs) - 1:
                self.guard(position)        # the budget covers the block: the end is reached
            _LIFT[ins.cls](self, ins)
        last = slots[pcs[-1]]
        if not (last.is_jump or last.is_exit or last.is_pseudo_call):   # fell into the next leader
            self.emit(f"br label {self.goto(pcs[-1] + last.slots)}")

    # -- families -------------------------------------------------------------------------------
    def alu(self, ins: Instruction) -> None:
        wide = ins.cls == ALU64
        w, t = (64, "i64") if wide else (32, "i32")
        if ins.op == END:
            self.set(ins.dst, self.byteswap(ins, wide))
            return
        key = (ins.op, ins.off)
        a = (self.get(ins.dst) if wide else self.get32(ins.dst)) if key in _READS_DST else None
        if ins.source == X:
            b = self.get(ins.src) if wide else self.get32(ins.src)
        else:
            b = str(ins.imm)            # sign-extended to 64 bits, or the low 32 bits as i32
        result = _ALU_OPS[key](self, t, a, b, w)
        anchor, scalar = derive(ins, self.anchors, self.scalars, a, b)
        offset = frame_offset(ins, self.frame)
        self.set(ins.dst, result if wide else self.val(f"zext i32 {result} to i64"))
        if anchor is not None:
            self.anchors[ins.dst] = anchor
        if scalar:
            self.scalars.add(ins.dst)
        if offset is not None:
            self.frame[ins.dst] = offset

    def byteswap(self, ins: Instruction, wide: bool) -> str:
        width, value = ins.imm, self.get(ins.dst)
        narrow = self.val(f"trunc i64 {value} to i{width}") if width < 64 else value
        if wide or ins.source == X:      # bswap (ALU64) / to big endian: the host is little
            narrow = self.val(f"call i{width} @llvm.bswap.i{width}(i{width} {narrow})")
        return self.val(f"zext i{width} {narrow} to i64") if width < 64 else narrow

    def jump(self, ins: Instruction) -> None:
        pc = self.pc
        if ins.is_exit:
            self.exit()
        elif ins.is_call:
            self.local_call(ins) if ins.is_pseudo_call else self.helper_call(ins)
        elif ins.op == JA:
            self.emit(f"br label {self.goto(branch_target(pc, ins))}")
        else:
            self.emit(f"br i1 {self.condition(ins)}, label {self.goto(branch_target(pc, ins))}, "
                      f"label {self.goto(pc + 1)}")

    def condition(self, ins: Instruction) -> str:
        wide = ins.cls == JMP
        t = "i64" if wide else "i32"
        a = self.get(ins.dst) if wide else self.get32(ins.dst)
        if ins.source == X:
            b = self.get(ins.src) if wide else self.get32(ins.src)
        else:
            b = str(ins.imm)
        predicate = _CONDITIONS[ins.op]
        if predicate is None:
            return self.val(f"icmp ne {t} {self.val(f'and {t} {a}, {b}')}, 0")
        return self.val(f"icmp {predicate} {t} {a}, {b}")

    def exit(self) -> None:
        """Return r0 from frame 0; from a deeper frame, go back to the caller (`returns_block`)."""
        if not self.lifter.program.call_targets:
            self.put_field("budget", self.val("load i64, ptr %REM"))
            self.emit(f"ret i64 {self.get(0)}")
            return
        done = self.fresh("done")
        top = self.val(f"icmp eq i64 {self.val('load i64, ptr %DEPTH')}, 0")
        self.emit(f"br i1 {top}, label %{done}, label %return")
        self.label(done)
        self.put_field("budget", self.val("load i64, ptr %REM"))
        self.emit(f"ret i64 {self.get(0)}")

    def saved(self, depth: str, index: int) -> str:
        """The address of word `index` of frame `depth`'s save record (r6-r9, the call's slot)."""
        return self.val(f"getelementptr [{MAX_CALL_DEPTH} x {_SAVED}], ptr %SAVE, i64 0, "
                        f"i64 {depth}, i64 {index}")

    def local_call(self, ins: Instruction) -> None:
        pc, target = self.pc, branch_target(self.pc, ins)
        caller = self.val("load i64, ptr %DEPTH")
        depth = self.val(f"add i64 {caller}, 1")
        deep = self.val(f"icmp sge i64 {depth}, {MAX_CALL_DEPTH}")
        fail, ok = self.fresh("deep"), self.fresh("ok")
        self.emit(f"br i1 {deep}, label %{fail}, label %{ok}, !prof !0")
        self.label(fail)
        self.stop(STATUS_DEPTH, pc, depth)
        self.label(ok)
        for index, reg in enumerate((6, 7, 8, 9)):
            self.emit(f"store i64 {self.get(reg)}, ptr {self.saved(caller, index)}")
        self.emit(f"store i64 {pc}, ptr {self.saved(caller, 4)}")
        self.enter_frame(depth)
        frame = self.val(f"getelementptr i8, ptr {self.val('load ptr, ptr %FP')}, i64 -{STACK_BYTES}")
        self.emit(f"call void @llvm.memset.p0.i64(ptr {frame}, i8 0, i64 {STACK_BYTES}, i1 false)")
        self.returns.append(pc)
        self.emit(f"br label {self.goto(target)}")

    def returns_block(self) -> None:
        """`return`: an exit below frame 0 restores the caller's frame and r6-r9 and resumes
        after the call that made the frame (one block and one switch for every exit)."""
        if not self.lifter.program.call_targets:
            return
        self.label("return")
        caller = self.val(f"sub i64 {self.val('load i64, ptr %DEPTH')}, 1")
        for index, reg in enumerate((6, 7, 8, 9)):
            self.set(reg, self.val(f"load i64, ptr {self.saved(caller, index)}"))
        slot = self.val(f"load i64, ptr {self.saved(caller, 4)}")
        self.enter_frame(caller)
        cases = " ".join(f"i64 {pc}, label {self.goto(pc + 1, pc)}"
                         for pc in dict.fromkeys(self.returns))     # (a block's two copies)
        self.emit(f"switch i64 {slot}, label %nowhere [ {cases} ]")
        self.label("nowhere")
        self.emit("unreachable")

    def helper_call(self, ins: Instruction) -> None:
        self.guard(self.position)
        args = ", ".join(f"i64 {self.get(r)}" for r in range(1, 6))
        target = self.callback("helper")
        if ins.src == isa.CALL_HELPER and ins.imm in NATIVE_HELPERS:
            table = self.field("natives", "ptr")
            native = self.val(f"load ptr, ptr {self.val(f'getelementptr ptr, ptr {table}, i64 {ins.imm}')}")
            missing = self.val(f"icmp eq ptr {native}, null")
            target = self.val(f"select i1 {missing}, ptr {self.callback('helper')}, ptr {native}")
        r0 = self.val(f"call i64 {target}(ptr %st, i64 {self.pc}, {args})")
        self.check_status()
        self.reload_table()
        self.translations = {}                     # made from the table before the call
        self.clear_hoisted()
        self.set(0, r0)

    def lddw(self, ins: Instruction) -> None:
        self.set(ins.dst, str(_s64(self.lifter.lddw_values[self.pc])))

    # -- memory ---------------------------------------------------------------------------------
    def address(self, reg: int, off: int) -> str:
        return self.val(f"add i64 {self.get(reg)}, {off}")

    def stack_slot(self, reg: int, off: int, size: int) -> str | None:
        """A native pointer for an access proven inside the frame at lift time: through r10,
        or a register this block made r10 plus constants (jit_loops.frame_offset)."""
        base = self.frame.get(reg)
        if base is None or not in_frame(base + off, size):
            return None
        return self.val(f"getelementptr i8, ptr {self.val('load ptr, ptr %FP')}, i64 {base + off}")

    def host_pointer(self, addr: str, size: int, kind: str) -> tuple[str, str]:
        """(i1 in bounds of a fast region, native pointer) -- pointer valid only when in bounds.
        Unchecked programs get a constant true."""
        table = self.val("load ptr, ptr %TAB")
        rid = self.val(f"lshr i64 {addr}, 32")
        if not self.lifter.unchecked:
            inside = self.val(f"icmp ult i64 {rid}, {self.val('load i64, ptr %TLEN')}")
            rid = self.val(f"select i1 {inside}, i64 {rid}, i64 0")   # entry 0 serves nothing
        entry = self.val(f"getelementptr {_ENTRY}, ptr {table}, i64 {rid}")
        low = self.val(f"trunc i64 {addr} to i32")
        offset = self.val(f"zext i32 {self.val(f'xor i32 {low}, -2147483648')} to i64")
        base = self.val(f"load ptr, ptr {entry}, !invariant.load !1")
        pointer = self.val(f"getelementptr i8, ptr {base}, i64 {offset}")
        if self.lifter.unchecked:
            return "true", pointer
        limit_at = self.val(f"getelementptr i64, ptr {entry}, i64 {1 if kind == 'read' else 2}")
        limit = self.val(f"load i64, ptr {limit_at}, !invariant.load !1")
        end = self.val(f"add i64 {offset}, {size}")
        self.entry, self.offset = entry, offset
        return self.val(f"icmp ule i64 {end}, {limit}"), pointer

    def anchored(self, reg: int, addr: str, size: int, kind: str) -> tuple[str, str] | None:
        """(i1 in bounds, native pointer) for an access through a register this block derived
        from an anchor (jit_loops: an address plus an index, as `r3 = r7 + (i & 63) * 8`), else
        None.

        The anchor V is translated, not the address: its window's start `lo` = V's region id
        << 32 | 2 GiB, its region's native pointer and, per access kind and size, the bound
        `limit - size + 1` (0 when the region is smaller than the access).  The address is in
        bounds when `addr - lo` is below the bound, and is then in V's region at that offset --
        whatever V is, so a wrong guess only costs the full check after it.  A translation is
        made once a block, or once on entry to a loop that never writes V (`loop_entries`):
        what is left per access is a subtract, a compare and a branch."""
        if self.lifter.unchecked:
            return None
        known = self.anchors.get(reg)
        if known is None:                  # its own anchor, worth it only when hoisted
            if self.loop is None or (reg, kind, size) not in self.loop.hoisted:
                return None
            known = (reg, None)
        k, anchor = known
        if self.loop is not None and (k, kind, size) in self.loop.hoisted:
            h = self.loop.header          # k is the same on every iteration: translated on entry
            lo = self.val(f"load i64, ptr %H{h}_{k}_lo")
            base = self.val(f"load ptr, ptr %H{h}_{k}_base")
            bound = self.val(f"load i64, ptr %H{h}_{k}_{kind}{size}")
        else:
            entry, base, lo = self.translate(anchor)
            bound = self.bound(anchor, entry, kind, size)
        offset = self.val(f"sub i64 {addr}, {lo}")
        return (self.val(f"icmp ult i64 {offset}, {bound}"),
                self.val(f"getelementptr i8, ptr {base}, i64 {offset}"))

    def translate(self, anchor: str) -> tuple[str, str, str]:
        """(table entry, native pointer, window start) of the region an address is in, once a
        block per address."""
        known = self.translations.get(anchor)
        if known is None:
            rid = self.val(f"lshr i64 {anchor}, 32")
            inside = self.val(f"icmp ult i64 {rid}, {self.val('load i64, ptr %TLEN')}")
            rid = self.val(f"select i1 {inside}, i64 {rid}, i64 0")   # entry 0 serves nothing
            entry = self.val(f"getelementptr {_ENTRY}, ptr {self.val('load ptr, ptr %TAB')}, "
                             f"i64 {rid}")
            base = self.val(f"load ptr, ptr {entry}, !invariant.load !1")
            lo = self.val(f"or i64 {self.val(f'and i64 {anchor}, -4294967296')}, 2147483648")
            known = self.translations[anchor] = (entry, base, lo)
        return known

    def bound(self, anchor: str, entry: str, kind: str, size: int) -> str:
        """The bytes a region may be `kind`-accessed at, less `size - 1` (0 when the region is
        smaller than the access): an offset below it is in bounds."""
        bound = self.translations.get((anchor, kind, size))
        if bound is None:
            at = self.val(f"getelementptr i64, ptr {entry}, i64 {1 if kind == 'read' else 2}")
            limit = self.val(f"load i64, ptr {at}, !invariant.load !1")
            fits = self.val(f"icmp uge i64 {limit}, {size}")
            bound = self.val(f"select i1 {fits}, i64 {self.val(f'sub i64 {limit}, {size - 1}')}, "
                             "i64 0")
            self.translations[(anchor, kind, size)] = bound
        return bound

    def field_ok(self, size: int, kind: str) -> str:
        """i1: a field-exact region allows this (offset, size) -- the mask test that saves a
        call to the host for every io_uring ctx access."""
        word = 3 + _LOG2[size] + (4 if kind == "write" else 0)
        at = self.val(f"getelementptr i64, ptr {self.entry}, i64 {word}")
        mask = self.val(f"load i64, ptr {at}, !invariant.load !1")
        inside = self.val(f"icmp ult i64 {self.offset}, 64")
        shift = self.val(f"select i1 {inside}, i64 {self.offset}, i64 0")
        bit = self.val(f"and i64 {self.val(f'lshr i64 {mask}, {shift}')}, 1")
        return self.val(f"and i1 {inside}, {self.val(f'icmp ne i64 {bit}, 0')}")

    def load(self, reg: int, off: int, size: int) -> str:
        """The unsigned value (i64) of a checked load; faults leave through the host."""
        t = _TY[size]
        native = self.stack_slot(reg, off, size)
        if native is not None:
            return self._widen(self.val(f"load {t}, ptr {native}, align 1"), size)
        # An in-bounds load has no effect to hold back, so only the slow path (which may
        # fault) is guarded by the budget.
        addr = self.address(reg, off)
        join = self.fresh("join")
        hit = self.anchored_access(reg, addr, size, "read", join)
        ok, pointer = self.host_pointer(addr, size, "read")
        if ok == "true":
            return self._widen(self.val(f"load {t}, ptr {pointer}, align 1"), size)
        fast, slow = self.begin_access(ok)
        quick = self._widen(self.val(f"load {t}, ptr {pointer}, align 1"), size)
        self.emit(f"br label %{join}")
        self.label(slow)
        self.guard(self.position)
        field, call = self.fresh("field"), self.fresh("call")
        self.emit(f"br i1 {self.field_ok(size, 'read')}, label %{field}, label %{call}")
        self.label(field)
        exact = self._widen(self.val(f"load {t}, ptr {pointer}, align 1"), size)
        self.emit(f"br label %{join}")
        self.label(call)
        value = self.val(f"call i64 {self.callback('slow_load')}(ptr %st, i64 {self.pc}, "
                         f"i64 {addr}, i64 {size})")
        self.end_access(join)
        anchored = f"[{hit[0]}, %{hit[1]}], " if hit else ""
        return self.val(f"phi i64 {anchored}[{quick}, %{fast}], [{exact}, %{field}], "
                        f"[{value}, %{call}]")

    def store(self, reg: int, off: int, size: int, value: str) -> None:
        t = _TY[size]
        narrow = self.val(f"trunc i64 {value} to {t}") if size < 8 else value
        native = self.stack_slot(reg, off, size)
        if native is not None:
            self.emit(f"store {t} {narrow}, ptr {native}, align 1")
            return
        self.guard(self.position)
        addr = self.address(reg, off)
        join = self.fresh("join")
        self.anchored_access(reg, addr, size, "write", join, narrow)
        ok, pointer = self.host_pointer(addr, size, "write")
        if ok == "true":
            self.emit(f"store {t} {narrow}, ptr {pointer}, align 1")
            return
        _, slow = self.begin_access(ok)
        self.emit(f"store {t} {narrow}, ptr {pointer}, align 1")
        self.emit(f"br label %{join}")
        self.label(slow)
        field, call = self.fresh("field"), self.fresh("call")
        self.emit(f"br i1 {self.field_ok(size, 'write')}, label %{field}, label %{call}")
        self.label(field)
        self.emit(f"store {t} {narrow}, ptr {pointer}, align 1")
        self.emit(f"br label %{join}")
        self.label(call)
        self.emit(f"call void {self.callback('slow_store')}(ptr %st, i64 {self.pc}, i64 {addr}, i64 {size}, "
                  f"i64 {value})")
        self.end_access(join)

    def anchored_access(self, reg: int, addr: str, size: int, kind: str, join: str,
                        value: str | None = None) -> tuple[str, str] | None:
        """The access through its anchor (`anchored`) when the register has one: on a hit it
        is done (a load's (value, block) returned) and goes to `join`; on a miss the caller
        emits the full check."""
        anchored = self.anchored(reg, addr, size, kind)
        if anchored is None:
            return None
        ok, pointer = anchored
        hit, miss = self.fresh("hit"), self.fresh("miss")
        self.emit(f"br i1 {ok}, label %{hit}, label %{miss}, !prof !2")
        self.label(hit)
        t = _TY[size]
        if kind == "read":
            loaded = (self._widen(self.val(f"load {t}, ptr {pointer}, align 1"), size), hit)
        else:
            self.emit(f"store {t} {value}, ptr {pointer}, align 1")
            loaded = None
        self.emit(f"br label %{join}")
        self.label(miss)
        return loaded

    def begin_access(self, ok: str) -> tuple[str, str]:
        """Fast (in bounds of a plain region) or slow (the host's Memory), the slow one leaving
        for `fail` when the host recorded a fault."""
        fast, slow = self.fresh("fast"), self.fresh("slow")
        self.emit(f"br i1 {ok}, label %{fast}, label %{slow}, !prof !2")
        self.label(fast)
        return fast, slow

    def end_access(self, join: str) -> None:
        bad = self.val(f"icmp ne i64 {self.field('status')}, 0")
        self.emit(f"br i1 {bad}, label %fail, label %{join}, !prof !0")
        self.label(join)

    def _widen(self, value: str, size: int, signed: bool = False) -> str:
        if size == 8:
            return value
        return self.val(f"{'sext' if signed else 'zext'} {_TY[size]} {value} to i64")

    def ldx(self, ins: Instruction) -> None:
        value = self.load(ins.src, ins.off, ins.size)
        if ins.mode == MEMSX:
            bits = 8 * ins.size
            value = self.val(f"sext i{bits} {self.val(f'trunc i64 {value} to i{bits}')} to i64")
        self.set(ins.dst, value)

    def st(self, ins: Instruction) -> None:
        self.store(ins.dst, ins.off, ins.size, str(ins.imm))

    def stx(self, ins: Instruction) -> None:
        if ins.mode == ATOMIC:
            self.atomic(ins)
        else:
            self.store(ins.dst, ins.off, ins.size, self.get(ins.src))

    def atomic(self, ins: Instruction) -> None:
        """A read then a write, as the interpreter does (one thread: atomicity is free), each
        through `load`/`store` so faults name the instruction with the interpreter's words."""
        size, imm, mask = ins.size, ins.imm, (1 << (8 * ins.size)) - 1
        old = self.load(ins.dst, ins.off, size)
        src = self.get(ins.src)
        if imm == CMPXCHG:
            r0 = self.val(f"and i64 {self.get(0)}, {_s64(mask)}")
            same = self.val(f"icmp eq i64 {old}, {r0}")
            write, done = self.fresh("cas"), self.fresh("casdone")
            self.emit(f"br i1 {same}, label %{write}, label %{done}")
            self.label(write)
            known, self.translations = self.translations, dict(self.translations)
            self.store(ins.dst, ins.off, size, src)     # (what it translates stays inside)
            self.translations = known
            self.emit(f"br label %{done}")
            self.label(done)
            self.set(0, old)
            return
        new = src if imm == XCHG else self.val(f"{_ATOMIC_OPS[imm & ~FETCH]} i64 {old}, {src}")
        self.store(ins.dst, ins.off, size, new)
        if imm & FETCH:
            self.set(ins.src, old)


def _s64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


_LIFT: dict[int, Callable[[_Function, Instruction], None]] = {
    ALU: _Function.alu, ALU64: _Function.alu, JMP: _Function.jump, JMP32: _Function.jump,
    LD: _Function.lddw, LDX: _Function.ldx, ST: _Function.st, STX: _Function.stx,
}

_PRELUDE = """
declare i16 @llvm.bswap.i16(i16)
declare i32 @llvm.bswap.i32(i32)
declare i64 @llvm.bswap.i64(i64)
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
attributes #0 = { nounwind }
!0 = !{!"branch_weights", i32 1, i32 2000}
!1 = !{}
!2 = !{!"branch_weights", i32 2000, i32 1}
"""


class _Lifter:
    def __init__(self, slots, lddw_values: dict[int, int], unchecked: bool, name: str) -> None:
        self.program = _Program(slots)
        self.lddw_values = lddw_values
        self.unchecked = unchecked
        self.name = name

    def lift(self) -> Lifted:
        body = _Function(self).text()
        positions = {start: pcs for start, pcs in self.program.blocks.items()}
        helpers = [pc for pc, ins in enumerate(self.program.slots)
                   if ins is not None and ins.is_call and not ins.is_pseudo_call]
        return Lifted(body + "\n" + _PRELUDE, self.name, positions, helpers)


def lift(slots: Sequence[Instruction | None], lddw_values: dict[int, int], *,
         unchecked: bool = False, name: str = "bpf") -> Lifted:
    """IR text for validated `slots` (the interpreter's `validate` output); `lddw_values` maps
    each lddw slot to its resolved 64-bit value.  The exported function is
    `i64 @name(ptr state, i64 r1..r5)`; see the module docstring for the state block."""
    return _Lifter(slots, lddw_values, unchecked, name).lift()
