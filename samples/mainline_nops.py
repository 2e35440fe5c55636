"""Sample (mainline Linux 7.1+): liburing's NOP test as a Python `io_uring_bpf_ops` loop.

Each step reaps the CQEs that arrived (advancing the CQ head itself), queues up to BATCH NOP
SQEs into the SQ region, submits them, and sleeps until they complete; it stops after `target`
NOPs.  Globals: `target` (.data) the host may change, `submitted`/`completed` (.bss) the host
reads back, `cq_entries` (.rodata) set by the host before loading.
"""
from pybpf_uring import loop_step, Struct, Const, i32, u8, u32, u64
from pybpf_uring.uring import Sqe, Cqe, prep_nop
from pybpf_uring.iou import IouCtx, IouLoopParams, CqRing, get_region, submit_sqes
from pybpf_uring.iou import IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_SQ, IOU_REGION_CQ

BATCH = 8
CQ_SLOTS = 64
cq_entries: Const[u32] = CQ_SLOTS
target: u64 = 1000
submitted: u64 = 0
completed: u64 = 0

class CqView(Struct):
    ring: CqRing
    pad: u8[32]
    cqes: Cqe[CQ_SLOTS]

@loop_step
def nops(ctx: IouCtx, lp: IouLoopParams) -> i32:
    cq = get_region(ctx, IOU_REGION_CQ, CqView)
    sqes = get_region(ctx, IOU_REGION_SQ, Sqe[BATCH])
    if cq is None or sqes is None:
        return IOU_LOOP_STOP
    head = cq.ring.cq_head
    tail = cq.ring.cq_tail
    for k in range(CQ_SLOTS):
        if head == tail or k >= cq_entries:
            break
        completed += 1
        head += 1
    cq.ring.cq_head = head
    if completed >= target:
        return IOU_LOOP_STOP
    n: u32 = 0
    for i in range(BATCH):
        if submitted + n >= target:
            break
        prep_nop(sqes[i])
        sqes[i].user_data = submitted + n
        n += 1
    submitted += n
    submit_sqes(ctx, n)
    lp.cq_wait_idx = head + n
    return IOU_LOOP_CONTINUE
