"""Mainline io_uring BPF (`struct io_uring_bpf_ops`, Linux 7.1+, docs/abi.md §B): probe, ring, attach, run.

A `loop_step` program is a struct_ops program.  The kernel runs it from inside
`io_uring_enter(GETEVENTS)`: each step writes SQEs into the SQ region, submits them with the
`bpf_io_uring_submit_sqes` kfunc, reads CQEs from the CQ region and advances the CQ head itself,
then says how long to sleep (`cq_wait_idx`) and whether to go on.  Getting there takes what
libbpf does for `bpf_map__attach_struct_ops`, done over the package's lower layers (`btf` for
the kernel's types, `ring_sys` for the ring, `load` and `kernel` for bpf(), `isa` for the code):

1. `support`: what the running kernel offers (`probe()`), read from its BTF or tried with
   io_uring_setup; what is missing is named in a `MainlineUnsupportedError`;
2. `loop_ring`: a ring the loop can drive (`LoopRing`) and `run`;
3. `ops`: the object's ops variables (`ops_specs`), pure data;
4. `regions`: the program's constant-size views of the ring's regions, checked against a ring;
5. `struct_ops`: attaching (`LoopRing.attach`): programs, the struct_ops map and its link.

    from pybpf_uring.mainline import LoopRing
    with LoopRing(sq_entries=8, cq_entries=16) as ring:
        with ring.attach("nops.o", globals={"nops_wanted": 1000}) as att:   # or a BpfObject
            ring.run(timeout=10)                 # every NOP runs inside this one call
            print(att.globals["nops_done"])      # .data/.bss read back by name

Globals named in RING_LAYOUT_GLOBALS (`cq_entries`, `cq_head_offset`, ...) that the object
declares are filled from the ring unless `globals` gives them.
"""
from __future__ import annotations

from ..uapi import (IORING_SETUP_CQSIZE, IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_IOPOLL,
                    IORING_SETUP_NO_SQARRAY, IORING_SETUP_SINGLE_ISSUER, IORING_SETUP_SQ_REWIND,
                    IORING_SETUP_SQPOLL, IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_CQ,
                    IOU_REGION_MEM, IOU_REGION_SQ)
from .loop_ring import RING_LAYOUT_GLOBALS, LoopError, LoopRing
from .ops import OPS_SECTIONS, OpsSpec, as_object, ops_specs
from .regions import RegionView, check_region_views, region_views
from .struct_ops import LoopAttachment
from .support import (KFUNCS, OPS_TYPE, REFUSED_RING_FLAGS, REQUIRED_RING_FLAGS, VALUE_TYPE,
                      KernelOps, MainlineUnsupportedError, Support, UnsuitableRingError, probe)

__all__ = ["probe", "Support", "KernelOps", "LoopRing", "LoopAttachment", "OpsSpec", "ops_specs",
           "as_object", "MainlineUnsupportedError", "LoopError", "UnsuitableRingError",
           "RING_LAYOUT_GLOBALS", "RegionView", "region_views", "check_region_views",
           "REQUIRED_RING_FLAGS", "REFUSED_RING_FLAGS", "OPS_TYPE", "VALUE_TYPE", "KFUNCS",
           "OPS_SECTIONS", "IOU_LOOP_CONTINUE", "IOU_LOOP_STOP", "IOU_REGION_MEM", "IOU_REGION_CQ",
           "IOU_REGION_SQ", "IORING_SETUP_IOPOLL", "IORING_SETUP_SQPOLL", "IORING_SETUP_CQSIZE",
           "IORING_SETUP_SINGLE_ISSUER", "IORING_SETUP_DEFER_TASKRUN", "IORING_SETUP_NO_SQARRAY",
           "IORING_SETUP_SQ_REWIND"]
