"""The program's views of the ring's regions, read from its code and checked against a ring.

`bpf_io_uring_get_region(ctx, region, size)` returns NULL only when `size` is larger than the
whole (page-rounded) region, so a view that does not match the ring's layout would load and
then misbehave.  A Python `get_region(ctx, IOU_REGION_CQ, View)` passes sizeof(View), a
constant in the code: `region_views` finds those constants, `check_region_views` refuses a
ring they do not fit before anything is loaded, and `LoopRing.fitting` sizes a ring for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..bpf import isa
from ..diagnostics import Diagnostic
from ..uapi import CQE_SIZE, IOU_REGION_CQ, IOU_REGION_MEM, IOU_REGION_SQ, SQE_SIZE
from .support import UnsuitableRingError

if TYPE_CHECKING:
    from .loop_ring import LoopRing


@dataclass(frozen=True)
class RegionView:
    """A `bpf_io_uring_get_region(ctx, region, size)` call whose region and size are constants
    in the code: a Python `get_region(ctx, IOU_REGION_CQ, View)` passes sizeof(View), fixed when
    the program was compiled.  (A C program that sizes its view from `.rodata` globals has no
    such call: the loader fills those from the ring, so they fit it by construction.)"""

    program: str
    region: int
    size: int
    slot: int


_REGION_NAMES = {IOU_REGION_MEM: "MEM", IOU_REGION_CQ: "CQ", IOU_REGION_SQ: "SQ"}


def region_views(obj: Any, programs: set[str] | None = None) -> list[RegionView]:
    """The constant-size region views of `obj`'s struct_ops programs (of `programs`, if given).

    For each get_region call, r2 and r3 are traced back through the straight-line code before
    it: a `mov` of an immediate (or a lddw) is a constant; anything else, a jump or a call in
    between, or a jump into that stretch from elsewhere, leaves the call out."""
    out = []
    for prog in obj.programs:
        if prog.kind != "struct_ops" or (programs is not None and prog.name not in programs):
            continue
        linked = prog.linked()
        slots = list(isa.with_slots(linked.instructions))
        targets = {at + 1 + ins.jump_offset() for at, ins in slots if ins.is_jump}
        for rel in linked.relocations:
            if rel.kind == "kfunc" and rel.symbol == "bpf_io_uring_get_region":
                args = _constant_args(slots, targets, rel.insn_index, (2, 3))
                if None not in args:
                    out.append(RegionView(prog.name, args[0], args[1], rel.insn_index))
    return out


def _constant_args(slots: list, targets: set[int], call: int, regs: tuple[int, ...]) -> list[int | None]:
    found: dict[int, int | None] = {}
    before = [(at, ins) for at, ins in slots if at < call]
    boundary = call
    for at, ins in reversed(before):
        if boundary in targets or ins.cls in (isa.JMP, isa.JMP32) or len(found) == len(regs):
            break
        boundary = at
        written = _written_register(ins)
        if written not in regs or written in found:
            continue
        if ins.cls in (isa.ALU, isa.ALU64) and ins.op == isa.MOV and ins.source == isa.K and not ins.off:
            found[written] = ins.imm & isa.M32 if ins.cls == isa.ALU else ins.imm & ((1 << 64) - 1)
        elif ins.cls == isa.LD and ins.mode == isa.IMM and ins.src == 0:
            found[written] = (ins.imm & isa.M32) | (ins.imm_hi & isa.M32) << 32
        else:
            found[written] = None
    return [found.get(r) for r in regs]


def _written_register(ins: Any) -> int | None:
    if ins.cls in (isa.ALU, isa.ALU64, isa.LD, isa.LDX):
        return ins.dst
    if ins.cls == isa.STX and ins.mode == isa.ATOMIC and ins.imm & isa.FETCH:
        return 0 if ins.imm == isa.CMPXCHG else ins.src
    return None


def check_region_views(obj: Any, ring: "LoopRing", programs: set[str] | None = None) -> None:
    """Refuse (UnsuitableRingError, errno 0) a program whose constant-size view of the CQ or SQ
    region does not fit `ring`, before anything is loaded.

    The kfunc only returns NULL when a view is larger than the whole region (page-rounded), so
    a mismatch would otherwise run: a CQ view with fewer CQEs than the ring makes cq_reap fail
    with -EINVAL once the head passes its last CQE; one with more, indexed with its own mask,
    reads slots that are not CQEs.  So a CQ view that reaches into the CQEs must hold exactly
    the ring's `cq_entries` (a view of the header alone fits any ring), and an SQ view at most
    the ring's `sq_entries` SQEs."""
    problems = [d for v in region_views(obj, programs) if (d := _view_problem(v, ring)) is not None]
    if problems:
        raise UnsuitableRingError(problems, 0)


def _view_problem(view: RegionView, ring: "LoopRing") -> Diagnostic | None:
    where = f"program {view.program!r} views the {_REGION_NAMES[view.region]} region as {view.size} bytes"
    if view.region == IOU_REGION_CQ:
        header, entries = ring.cq_off.cqes, ring.cq_entries
        if view.size <= header or view.size == header + entries * CQE_SIZE:
            return None
        cqes, odd = divmod(view.size - header, CQE_SIZE)
        declared = f"{cqes} CQEs after the {header}-byte header" + (f" and {odd} bytes more" if odd else "")
        fix = f"create the ring with LoopRing(..., cq_entries={cqes}) or " if not odd and cqes & (cqes - 1) == 0 else ""
        return Diagnostic(None, f"{where} ({declared}), but this ring's CQ holds {entries} CQEs "
                          f"({header + entries * CQE_SIZE} bytes)",
                          f"a CQ view's size is fixed when the program is compiled: {fix}declare the "
                          f"view's `cqes: Cqe[{entries}]`")
    if view.region == IOU_REGION_SQ and view.size > ring.sq_entries * SQE_SIZE:
        sqes = -(-view.size // SQE_SIZE)
        return Diagnostic(None, f"{where} ({sqes} SQEs), but this ring has {ring.sq_entries} SQ entries "
                          f"({ring.sq_entries * SQE_SIZE} bytes)",
                          f"create the ring with LoopRing({sqes}, ...) or view at most Sqe[{ring.sq_entries}]")
    return None
