"""What the JIT's lifter (`jit_lift`) knows of a program's addresses and loops before it emits IR.

Anchors.  A memory access costs the JIT a translation of its address: the region id's entry in
the run's region table (native pointer, bytes it may read and write) and a bounds check.  Most
addresses a program computes are an address plus an index (`r3 = r7 + (i & 63) * 8`), and the
address part is often the same for many accesses and every iteration of a loop.  So the lifter
follows, within a block, which register each register's value was derived from by adding a
number -- its anchor -- and translates the anchor instead of the address: the address is in
bounds when its distance from the start of the anchor's window is below the region's size less
the access's.  The rule (`derive`) is a guess: whatever the anchor, the check says only whether
the address is in the anchor's region, so a wrong guess costs the full check after it, never a
wrong access.

Loops.  A loop's header is the target of a jump back; its range runs from the header to the last
jump back to it.  When no instruction in that range calls anything (a helper may map and unmap
regions, a local call runs code outside the range) and an anchor register is not written in it,
the anchor's value is the same on every iteration: its translation is computed once, on entry
to the loop (`Loop.hoisted`), not once an iteration.  An access through a register with no
anchor in its block is its own anchor there, so a base the loop reads through at fixed offsets
(`r5 = *(u64 *)(r1 + 8)` every iteration) is translated once too.  (LLVM would hoist it with LICM, which the
JIT's short pass pipeline leaves out for its compile time.)
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ...bpf.isa import (ADD, ALU, ALU64, ATOMIC, CMPXCHG, END, FETCH, JMP, JMP32, LD, LDX, MOV,
                        ST, STX, SUB, X, Instruction)
from ...limits import STACK_BYTES
from .semantics import branch_target

__all__ = ["derive", "frame_offset", "in_frame", "written", "accesses", "Loop", "loop_ranges", "in_loops", "find_loops",
           "MAX_HOISTED", "MAX_LOOP_SLOTS"]

# The most translations hoisted in one program: each is a few allocas, set on loop entry and
# cleared by every helper call (a helper may unmap the region behind one).
MAX_HOISTED = 16
MAX_LOOP_SLOTS = 256         # the longest loop range looked at (hoisting, guard-free copies)

Anchor = tuple  # (the register the anchor was read from, its SSA value; None before emission)


def derive(ins: Instruction, anchors: Mapping[int, Anchor], scalars: set[int],
           a: str | None, b: str | None) -> tuple[Anchor | None, bool]:
    """(the anchor, whether a plain number) of an ALU result from its operands' (`a` the
    destination's value, `b` the source's): an address plus or minus a number keeps the
    address's anchor, a number plus an address takes the address's (the address itself when it
    has none), a 64-bit move copies; every other operation makes a number."""
    dst, src, op = ins.dst, ins.src, ins.op
    if ins.cls != ALU64 or op not in (ADD, SUB, MOV) or ins.off:
        return None, True
    if ins.source != X:
        return (None, True) if op == MOV else (anchors.get(dst), dst in scalars)
    if op == MOV:
        return anchors.get(src), src in scalars
    if op == ADD and dst in scalars and src not in scalars:
        return anchors.get(src, (src, b)), False
    if src in scalars and dst not in scalars:
        return anchors.get(dst, (dst, a)), False
    return None, dst in scalars and src in scalars


def frame_offset(ins: Instruction, frame: Mapping[int, int]) -> int | None:
    """The offset from r10 of an ALU result that is r10 plus constants (`r2 = r10; r2 += -8`),
    given those of the registers before (`frame`, r10 itself 0), else None.  Within a block r10
    is its frame's top, so an access through such a register at an offset inside the frame is
    proven at lift time, like one through r10."""
    if ins.cls != ALU64 or ins.off:
        return None
    if ins.op == MOV and ins.source == X:
        return 0 if ins.src == 10 else frame.get(ins.src)
    if ins.op in (ADD, SUB) and ins.source != X and ins.dst in frame:
        return frame[ins.dst] + (ins.imm if ins.op == ADD else -ins.imm)
    return None


def in_frame(offset: int | None, size: int) -> bool:
    """Whether `size` bytes at `offset` from r10 lie inside the frame."""
    return offset is not None and -STACK_BYTES <= offset and offset + size <= 0


def written(ins: Instruction) -> tuple[int, ...]:
    """The registers an instruction writes (a local call's callee is not counted here)."""
    cls = ins.cls
    if cls in (ALU, ALU64, LD, LDX):
        return (ins.dst,)
    if cls == STX and ins.mode == ATOMIC:
        return (0,) if ins.imm == CMPXCHG else (ins.src,) if ins.imm & FETCH else ()
    if cls == JMP and ins.is_call:
        return (0,)
    return ()


_TOP = {10: 0}               # r10 is its frame's top


def accesses(ins: Instruction, frame: Mapping[int, int] = _TOP
             ) -> tuple[tuple[int, str, int], ...]:
    """(register, kind, size) of each access an instruction makes, but for a frame slot the
    lifter resolves statically (through r10, or `frame`'s registers, inside the frame)."""
    cls = ins.cls
    reg = ins.src if cls == LDX else ins.dst
    if cls not in (LDX, ST, STX) or (reg in frame and in_frame(frame[reg] + ins.off, ins.size)):
        return ()
    if cls == LDX:
        return ((reg, "read", ins.size),)
    if cls == STX and ins.mode == ATOMIC:
        return ((reg, "read", ins.size), (reg, "write", ins.size))
    return ((reg, "write", ins.size),)


@dataclass
class Loop:
    """A loop header's range [header, last] and the translations hoisted to its entry:
    (anchor register, kind, size) of each access in the range through an unwritten anchor."""

    header: int
    last: int
    hoisted: set[tuple[int, str, int]] = field(default_factory=set)

    def contains(self, pc: int) -> bool:
        return self.header <= pc <= self.last


def _track(slots: Sequence[Instruction | None], pcs: Sequence[int]):
    """(pc, anchor register, kind, size) of each access in a block: through an anchor, or
    through a register with none (its own anchor: hoisted, a loop-invariant base costs an
    access no translation either)."""
    anchors: dict[int, Anchor] = {}
    scalars: set[int] = set()
    frame = {10: 0}
    for pc in pcs:
        ins = slots[pc]
        for reg, kind, size in accesses(ins, frame):
            yield pc, anchors[reg][0] if reg in anchors else reg, kind, size
        offset = None
        if ins.cls in (ALU, ALU64) and ins.op != END:
            anchor, scalar = derive(ins, anchors, scalars, None, None)
            offset = frame_offset(ins, frame)
        else:
            anchor, scalar = None, False
        for reg in written(ins):
            anchors.pop(reg, None)
            scalars.discard(reg)
            if reg != 10:
                frame.pop(reg, None)
        if anchor is not None:
            anchors[ins.dst] = anchor
        if scalar:
            scalars.add(ins.dst)
        if offset is not None:
            frame[ins.dst] = offset


def loop_ranges(slots: Sequence[Instruction | None]) -> dict[int, int]:
    """header -> the last slot that jumps back to it."""
    last: dict[int, int] = {}
    for pc, ins in enumerate(slots):
        if ins is not None and ins.cls in (JMP, JMP32) and ins.is_jump:
            target = branch_target(pc, ins)
            if target is not None and target <= pc:
                last[target] = max(last.get(target, pc), pc)
    return last


def in_loops(ranges: Mapping[int, int], n: int) -> list[bool]:
    """Per slot: whether it lies in some loop range (linear: a difference array)."""
    depth = [0] * (n + 1)
    for header, end in ranges.items():
        depth[header] += 1
        depth[end + 1] -= 1
    inside, level = [], 0
    for step in depth[:n]:
        level += step
        inside.append(level > 0)
    return inside


def find_loops(slots: Sequence[Instruction | None], blocks: Mapping[int, Sequence[int]],
               last: Mapping[int, int]) -> tuple[dict[int, Loop], dict[int, Loop]]:
    """The loops that hoist a translation, by header, and the loop each of their blocks
    belongs to (the innermost, shortest range holding it).  Only ranges of at most
    MAX_LOOP_SLOTS are looked at, shortest first, until MAX_HOISTED translations are hoisted:
    the analysis stays linear in the program."""
    starts = sorted(blocks)
    owner: dict[int, Loop] = {}
    hoisting: dict[int, Loop] = {}
    budget = MAX_HOISTED
    for header, end in sorted(last.items(), key=lambda item: item[1] - item[0]):
        if end - header >= MAX_LOOP_SLOTS or not budget:
            break
        loop = Loop(header, end)
        mine = [b for b in starts[bisect.bisect_left(starts, header):
                                  bisect.bisect_right(starts, end)] if b not in owner]
        for b in mine:
            owner[b] = loop
        inside = [slots[pc] for pc in range(header, end + 1) if slots[pc] is not None]
        if any(ins.cls == JMP and ins.is_call for ins in inside):
            continue
        changed = {reg for ins in inside for reg in written(ins)}
        for b in mine:
            for _, reg, kind, size in _track(slots, blocks[b]):
                if reg not in changed and (reg, kind, size) not in loop.hoisted and budget:
                    loop.hoisted.add((reg, kind, size))
                    budget -= 1
        if loop.hoisted:
            hoisting[header] = loop
    return hoisting, {b: loop for b, loop in owner.items() if loop.hoisted}
