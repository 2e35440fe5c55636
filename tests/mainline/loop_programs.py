"""Python loop_step programs for the mainline group, kept as sources so the host can compile
them before booting the VM (llvmlite under TCG takes ~15 s per process) and the group can
compile them itself when run on a 7.1+ machine directly.

`build(name)` → BpfObject; `build_all(directory)` writes python_<name>.o for each and returns
the errors of those that did not compile (reported by the tests that use them, not here)."""
from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The Python twin of tests/data/mainline_steps.c: CONTINUE without sleeping until `stop_after`
# steps, then return `verdict` (1 = STOP; anything else makes io_uring_enter fail with EINVAL).
COUNT = '''
from pybpf_uring import loop_step, i32, u64
from pybpf_uring.iou import IouCtx, IouLoopParams, CqRing, get_region
from pybpf_uring.iou import IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_CQ

steps: u64 = 0
stop_after: u64 = 1
verdict: i32 = IOU_LOOP_STOP

@loop_step
def count(ctx: IouCtx, lp: IouLoopParams) -> i32:
    cq = get_region(ctx, IOU_REGION_CQ, CqRing)
    if cq is None:
        return IOU_LOOP_STOP
    steps += 1
    if steps >= stop_after:
        return verdict
    lp.cq_wait_idx = cq.cq_head
    return IOU_LOOP_CONTINUE
'''

# The Python twin of tests/data/mainline_cp.c: one request in flight, READ into the host's
# buffer, WRITE what was read at the same offset, next READ; `result` 0 at the end of the input,
# or the failed request's -errno.  Its CQ view is for an 8-entry CQ (the ring must match).
CP = '''
from pybpf_uring import loop_step, Struct, i32, u8, u32, u64
from pybpf_uring.uring import Sqe, Cqe, prep_read, prep_write
from pybpf_uring.iou import IouCtx, IouLoopParams, CqRing, get_region, submit_sqes
from pybpf_uring.iou import IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_SQ, IOU_REGION_CQ

CQ_SLOTS = 8
TAG_READ = 1
TAG_WRITE = 2
EPROTO = 71
input_fd: i32 = 0
output_fd: i32 = 0
buffer: u64 = 0
buffer_size: u32 = 0
offset: u64 = 0
result: i32 = 1
requests: u64 = 0
started: u32 = 0

class CqView(Struct):
    ring: CqRing
    pad: u8[32]
    cqes: Cqe[CQ_SLOTS]

@loop_step
def cp(ctx: IouCtx, lp: IouLoopParams) -> i32:
    cq = get_region(ctx, IOU_REGION_CQ, CqView)
    sqes = get_region(ctx, IOU_REGION_SQ, Sqe[1])
    if cq is None or sqes is None:
        result = -EPROTO
        return IOU_LOOP_STOP
    head = cq.ring.cq_head
    if started == 0:
        started = 1
        prep_read(sqes[0], input_fd, buffer, buffer_size, offset)
        sqes[0].user_data = TAG_READ
    elif head != cq.ring.cq_tail:
        slot = head & (CQ_SLOTS - 1)
        res = cq.cqes[slot].res
        tag = cq.cqes[slot].user_data
        head += 1
        cq.ring.cq_head = head
        if res < 0:
            result = res
            return IOU_LOOP_STOP
        if tag == TAG_READ:
            if res == 0:
                result = 0
                return IOU_LOOP_STOP
            prep_write(sqes[0], output_fd, buffer, res, offset)
            sqes[0].user_data = TAG_WRITE
        else:
            offset += res
            prep_read(sqes[0], input_fd, buffer, buffer_size, offset)
            sqes[0].user_data = TAG_READ
    else:
        lp.cq_wait_idx = head + 1
        return IOU_LOOP_CONTINUE
    requests += 1
    if submit_sqes(ctx, 1) != 1:
        result = -EPROTO
        return IOU_LOOP_STOP
    lp.cq_wait_idx = head + 1
    return IOU_LOOP_CONTINUE
'''

SOURCES = {"count": COUNT, "cp": CP}
SAMPLES = {"mainline_nops": os.path.join(ROOT, "samples", "mainline_nops.py")}


def build(name: str):
    from pybpf_uring import compile_file, compile_source
    if name in SAMPLES:
        return compile_file(SAMPLES[name])
    return compile_source(SOURCES[name], f"<tests/mainline/loop_programs.py:{name}>")


def build_all(directory: str) -> dict[str, Exception]:
    errors = {}
    for name in (*SOURCES, *SAMPLES):
        try:
            build(name).write(os.path.join(directory, f"python_{name}.o"))
        except Exception as exc:   # noqa: BLE001 - reported by the test that needs the program
            errors[name] = exc
    return errors
