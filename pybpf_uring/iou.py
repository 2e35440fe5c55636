"""Names for mainline io_uring BPF (`io_uring_bpf_ops`, Linux 7.1+; docs/abi.md §B) in `@loop_step`
programs: the loop's arguments, the kfuncs, and the constants of the kernel's enums.

    @loop_step
    def nops(ctx: IouCtx, lp: IouLoopParams) -> i32:
        sqes = get_region(ctx, IOU_REGION_SQ, Sqe[8])     # a typed view of the SQ region, or None
        ...
        submit_sqes(ctx, n)
        lp.cq_wait_idx = head + n
        return IOU_LOOP_CONTINUE

Struct names in BTF are the kernel's (`_btf_name_`), which the kernel matches against its own.
"""
from __future__ import annotations

from .types import Struct, program_only, u32

# the kernel's enum values, from uapi; the checker folds them as integer constants
from .uapi import IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_CQ, IOU_REGION_MEM, IOU_REGION_SQ  # noqa: F401


class IouCtx(Struct):
    """`struct iou_ctx`: opaque; a loop_step program only passes it to the kfuncs."""

    _btf_name_ = "iou_ctx"
    _fields_ = []


class IouLoopParams(Struct):
    """`struct iou_loop_params`: the loop sleeps until the CQ tail reaches `cq_wait_idx`."""

    _btf_name_ = "iou_loop_params"
    cq_wait_idx: u32


class CqRing(Struct):
    """The head of the CQ region (`struct io_rings` up to its CQE array, which starts at
    `cqes_offset`): the program reads `cq_tail` and advances `cq_head` itself."""

    sq_head: u32
    sq_tail: u32
    cq_head: u32
    cq_tail: u32
    sq_ring_mask: u32
    cq_ring_mask: u32
    sq_ring_entries: u32
    cq_ring_entries: u32


submit_sqes = program_only("submit_sqes")
get_region = program_only("get_region")
# The RFC's reap and wait, on a CQ view (a Struct with `ring: CqRing` and `cqes: Cqe[N]`):
# cq_reap(cq, cqe) copies the CQE at the head into `cqe` and advances the head: 0, or -ENOENT
# when the CQ is empty (-EINVAL when the ring's mask reaches past the view's N CQEs);
# cq_wait(lp, cq, n) sleeps the loop until n more CQEs arrived after the head.
cq_reap = program_only("cq_reap")
cq_wait = program_only("cq_wait")
