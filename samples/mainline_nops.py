"""Sample (mainline Linux 7.1+): liburing's NOP test as a Python `io_uring_bpf_ops` loop.

Each step reaps the CQEs that arrived (`cq_reap` copies the CQE at the head and advances it, as
the RFC's reap_cqe), writes up to BATCH NOP SQEs into the SQ region, submits them, and sleeps
until they complete (`cq_wait`); it stops after `target` NOPs.  Globals: `target` (.data) the host may change, `submitted`/`completed` (.bss) the host
reads back, `cq_entries` (.rodata) set by the host before loading.
"""
from pybpf_uring import loop_step, Struct, Const, i32, u8, u32, u64
from pybpf_uring.uring import Sqe, Cqe, prep_nop
from pybpf_uring.iou import IouCtx, IouLoopParams, CqRing, get_region, submit_sqes, cq_reap, cq_wait
from pybpf_uring.iou import IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_SQ, IOU_REGION_CQ

BATCH = 8
CQ_SLOTS = 64
cq_entries: Const[u32] = CQ_SLOTS   # the loader sets it from the ring
target: u64 = 1000
submitted: u64 = 0
completed: u64 = 0
last: u64 = 0                       # user_data of the last CQE reaped


class CqView(Struct):               # the CQ region: its header, then the CQEs
    ring: CqRing
    pad: u8[32]
    cqes: Cqe[cq_entries]           # a Const as a size: the value it is declared with


@loop_step
def nops(ctx: IouCtx, lp: IouLoopParams) -> i32:
    global submitted, completed, last
    cq = get_region(ctx, IOU_REGION_CQ, CqView)
    sqes = get_region(ctx, IOU_REGION_SQ, Sqe[BATCH])
    if cq is None or sqes is None:
        return IOU_LOOP_STOP
    cqe = Cqe()
    for k in range(len(cq.cqes)):
        if k >= cq_entries or cq_reap(cq, cqe) != 0:
            break
        completed += 1
        last = cqe.user_data
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
    cq_wait(lp, cq, n)
    return IOU_LOOP_CONTINUE


if __name__ == "__main__":
    import sys

    from pybpf_uring import compile_file
    from pybpf_uring.mainline import LoopRing, MainlineUnsupportedError

    obj = compile_file(__file__)
    with LoopRing.fitting(obj) as ring:          # a CQ of CQ_SLOTS entries, as CqView expects
        try:
            loop = ring.attach(obj)
        except MainlineUnsupportedError as exc:  # before Linux 7.1: what the kernel lacks, no traceback
            sys.exit(str(exc))
        with loop:
            ring.run(timeout=10)
            for name in loop.globals:
                print(f"{name} = {loop.globals[name]}")
