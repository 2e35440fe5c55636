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

SOURCES = {"count": COUNT}
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
