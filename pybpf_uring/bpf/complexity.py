"""What the verifier's complexity refusals mean for one program: its loops, read from its code.

The verifier proves a bounded loop ends by walking every pass of it, each path through the body
separately, and refuses a program whose walk passes its limits ("BPF program is too large.
Processed 1000001 insn", "The sequence of 8193 jumps is too complex").  The same words come
from a loop with no bound it can prove (`for (i = 0; i < ctx->n; i++)`: it walks until the
limit) and from a bounded loop that is simply too big, and the two need opposite advice: a
constant bound for the first, fewer passes or less work per pass for the second.  So the code
is read for its loops -- each back-edge -- and for whether a loop's exit compares a counter it
steps by a constant with a constant (what a compiler makes of `range(N)` or `i < N; i++`).
The program's line_info then puts the advice at the loop's header line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import isa

# The verifier's words for a walk that went past its limits (kernel/bpf/verifier.c).
TOO_COMPLEX = re.compile(r"BPF program is too large|The sequence of \d+ jumps is too complex")


@dataclass(frozen=True)
class Loop:
    head: int              # slot the back-edge jumps to
    latch: int             # slot of the back-edge
    body: frozenset[int]   # the slots of the natural loop: those that reach the latch from the head
    exit: int              # slot of the test that leaves the loop (the latch when none is found)
    bound: int | None      # the constant the exit compares a stepped counter with, None if none


def slots(insns) -> dict[int, isa.Instruction]:
    """Each instruction by its slot (a lddw takes two), as the verifier and line_info count."""
    out, at = {}, 0
    for ins in insns:
        out[at] = ins
        at += ins.slots
    return out


def successors(at: int, ins: isa.Instruction) -> list[int]:
    """Where control goes after the instruction at `at` (a call returns to the next one)."""
    if ins.is_exit:
        return []
    after = at + ins.slots
    off = ins.jump_offset()
    if off is None:
        return [after]
    return [after + off] if ins.op == isa.JA else [after, after + off]


def find_loops(insns) -> list[Loop]:
    """Every loop of the code: a jump back to a slot at or before it closes one, and its body
    is what reaches that jump from the slot it jumps to."""
    code = slots(insns)
    preds: dict[int, list[int]] = {}
    for at, ins in code.items():
        for nxt in successors(at, ins):
            preds.setdefault(nxt, []).append(at)
    loops = []
    for at, ins in code.items():
        off = ins.jump_offset()
        if off is None or off >= 0:
            continue
        head = at + ins.slots + off
        body, todo = {head, at}, [at]
        while todo:
            for p in preds.get(todo.pop(), []):
                if p not in body:
                    body.add(p)
                    todo.append(p)
        exit_at, bound = exit_test(code, frozenset(body), head, at)
        loops.append(Loop(head, at, frozenset(body), exit_at, bound))
    return loops


def exit_test(code, body: frozenset[int], head: int, latch: int) -> tuple[int, int | None]:
    """The conditional jump that leaves the loop comparing a counter the body steps by a
    constant with a constant (an immediate, or a register set to one before the loop and not
    written in it): its slot and the constant.  Otherwise the latch, and None."""
    inside = [(at, code[at]) for at in sorted(body)]
    stepped = {i.dst for _, i in inside if i.is_alu and i.op in (isa.ADD, isa.SUB) and i.source == isa.K}
    written = {i.dst for _, i in inside if i.is_alu or i.is_load or i.is_wide}
    for at, ins in inside:
        if ins.jump_offset() is None or ins.op == isa.JA \
                or all(nxt in body for nxt in successors(at, ins)):
            continue
        for counter, other in ((ins.dst, ins.src), (ins.src, ins.dst)):
            if counter not in stepped:
                continue
            if ins.source == isa.K and counter == ins.dst:
                return at, ins.imm
            if ins.source == isa.X and other not in written:
                value = constant_before(code, head, other)
                if value is not None:
                    return at, value
    return latch, None


def constant_before(code, head: int, reg: int) -> int | None:
    """The constant `reg` holds on entering the loop at `head`, when the straight-line code just
    before it sets it with a move or a lddw (a jump in between ends the search)."""
    for at in sorted((s for s in code if s < head), reverse=True):
        ins = code[at]
        if ins.is_jump or ins.is_call or ins.is_exit:
            return None
        if ins.dst == reg and (ins.is_alu or ins.is_load or ins.is_wide):
            if ins.is_wide:
                return ins.imm64
            return ins.imm if ins.is_alu and ins.op == isa.MOV and ins.source == isa.K else None
    return None


def culprit(insns, failing: int | None) -> Loop | None:
    """The loop whose walk the verifier gave up in: the outermost loop that holds the failing
    slot, directly or through the functions it calls (its passes multiply all of theirs)."""
    loops = find_loops(insns)
    if not loops:
        return None
    if failing is None:
        return max(loops, key=lambda lp: len(lp.body))
    code = slots(insns)
    starts = sorted({0} | {at + ins.slots + ins.imm for at, ins in code.items() if ins.is_pseudo_call})
    end = max(code) + 1 if code else 0

    def function_of(slot: int) -> range:
        first = max(s for s in starts if s <= slot)
        later = [s for s in starts if s > first]
        return range(first, later[0] if later else end)

    def reaches(held, seen: set) -> bool:
        if failing in held:
            return True
        for at in held:
            ins = code.get(at)
            if ins is not None and ins.is_pseudo_call:
                callee = function_of(at + ins.slots + ins.imm)
                if callee not in seen:
                    seen.add(callee)
                    if reaches(callee, seen):
                        return True
        return False

    holding = [lp for lp in loops if reaches(lp.body, set())]
    return max(holding, key=lambda lp: len(lp.body)) if holding else None


def advice(reason: str, insns, failing: int | None) -> tuple[int, str] | None:
    """For a refusal of the verifier's limits: the slot of the loop's exit test (its header
    line in the source) and what to do, by whether the loop has a constant bound."""
    if not TOO_COMPLEX.search(reason):
        return None
    loop = culprit(insns, failing)
    if loop is None:
        return None
    if loop.bound is None:
        return loop.exit, ("the verifier walks this loop pass by pass and cannot see it end: give it a "
                           "constant bound it can prove (loop to a constant maximum and stop early)")
    return loop.exit, (f"this loop has a constant bound (its counter stops at {loop.bound}), but walking "
                       "every pass of it, "
                       "each path through its body separately, takes the verifier past its limit: "
                       "lower the bound, take branches out of the body, or split the work across calls "
                       "(keep where to resume in a map and do a bounded share per call)")
