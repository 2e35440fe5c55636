"""The ring's hot path as LLVM IR: route kernel CQEs, queue SQEs, run parked requests, wait.

`native_ring.py` compiles this module once per process with the JIT's compiler and drives it; this
file is only the IR and the layouts it shares with ctypes.  Every function mirrors a method of
`ring.Ring` (named beside it) and does only that method's common case: anything else -- a CQ with
a backlog, a cancel that names another request, an SQE with CQE_SKIP_SUCCESS, a program that
runs in Python, an io_uring_enter error -- returns a code that hands the moment back to the
Python ring, which is the reference and does it exactly as it always has.

Layouts (all words are i64; pointers are host addresses):

* the ring block, `RING_WORDS`: the mapped SQ/CQ rings, the object's flag saying a run deleted
  hash-map values (and the callback that frees them, as a Python run's end_run does), the tag table (`tag_ud`, `tag_cq` with
  `FREE` for a free slot, a stack of free slots), the CQ descriptors, the parked requests, the
  program records, libc's `syscall` and `__errno_location`, and the `slow` callback;
* a CQ descriptor, `CQ_WORDS`: a ring buffer of 16-byte CQEs {u64 user_data, i32 res, u32 flags}
  at `buf`, `size` slots, `count` CQEs from `head`, the Python backlog's length, the overflow
  count and the CQ's own size `limit` (a CQ with a backlog is left to Python; so is one holding
  more CQEs than its buffer, shown as a backlog of all of them);
* a parked request, `REQUEST_WORDS`, as `ring_protocol.BpfRequest`;
* a program record, `PROGRAM_WORDS`: a JIT-compiled program's entry and state block, its ctx
  region (host pointer and engine address), frame 0 to zero per run (or 0), its budget, and
  counters the engine reads back (`runs`, `executed` by the last run, `spent` by all, which
  tiers the program up); `native` = 0 sends its requests to Python.

The helpers native code serves are in native_helpers_ir, which uses this module's layouts and
`CONSTANTS`; their uncommon cases call the Python helper instead -- `slow` for the ring helpers
(which first brings the Python ring up to date), the state block's `helper` for the others.

Templates are filled by codegen.fill (`$NAME`; see there why); every number in them comes from
`CONSTANTS`, which takes each from its home (uapi, errno, the registry's widths, limits, the
layouts here), so no errno, opcode or return code is written as a literal.
"""
from __future__ import annotations

import errno
import time

from ... import uapi
from ...limits import STACK_BYTES
from ..ring_protocol import MAX_COPY, TAG_BASE
from ...uring import IoUringCtx, Sqe
from .codegen import fill
from .jit_lift import ENTRY_FIELDS, STATE_FIELDS
from .memory import BIAS, REGION_SHIFT

# Hot words first: a round reads them all, and this guest's syscalls leave the L1 cache cold, so
# every cache line a round touches costs (~1.4 ns each, measured 2026-12 with a C NOP loop)
RING_WORDS = (
    "sq_local", "sq_head", "sq_tail", "sq_flags", "sq_mask", "sq_entries", "sqes", "enter_calls",
    "cq_head", "cq_tail", "cq_mask", "cqes", "tag_ud", "tag_cq", "tag_cap", "free",
    "nfree", "fresh", "in_flight", "cqs", "ncqs", "version", "parked", "nparked", "wakes",
    "programs", "runs_left", "active", "py_work", "retired", "backoff", "deadline", "syscall",
    "enter_fd", "enter_flags",            # the fd io_uring_enter takes (a registered index) and its flag
    # (backoff: submit-and-wait enters left before a round submits alone again)
    "fd", "errno", "slow", "out",
    # (wakes: CQEs pushed to CQs and requests parked on a condition that already holds -- what
    # can make a parked request runnable; a pass that changed neither leaves none to run)
    "rec0", "rec1", "rec2", "rec3", "rec4", "rec5",      # the request a code hands back
    "clock",                              # (deadline: a timed wait's CLOCK_MONOTONIC deadline, ns; 0: none)
    "arg_sigmask", "arg_sz", "arg_ts",    # struct io_uring_getevents_arg for a timed enter
    "ts_sec", "ts_nsec", "now_sec", "now_nsec",
    "end_run",                            # the callback when `retired` (the instance's flag) is set
    "pid", "vm_readv", "vm_writev",       # for copy_from_user / copy_to_user
)
CQ_WORDS = ("buf", "size", "head", "count", "backlog", "overflow", "limit")
REQUEST_WORDS = ("prog", "user_data", "cq_idx", "wait_nr", "wait_idx", "runs")
PROGRAM_WORDS = ("entry", "state", "ctx", "ctx_addr", "frame", "budget", "runs", "executed",
                 "native", "spent")
# A map's record in the maps table: for arrays (kind 2) the cached element addresses and the
# values; for hashes (kind 1) the open-addressing index `HashIndex` keeps in step with the map.
MAP_WORDS = ("handle", "kind", "max_entries", "key_size", "value_size", "addrs", "data",
             "mask", "slots", "stride")
FREE = (1 << 64) - 1        # tag_cq of a free tag slot

# nr_wait / nr_scan codes
READY = 0        # the waited CQ holds a CQE
MORE = 1         # the run budget is spent: come back (Python gets to see signals)
PYTHON = 2       # something only the Python ring does is due: one pass of its loop
FAULTED = 3      # rec* faulted in its program (removed from the parked list)
COMPLETE = 4     # rec* finished; its completion needs the Python ring (removed)
BAD_WAIT = 5     # rec* set wait_idx to a CQ that does not exist (removed; rec3/rec4 = its wait)
STALLED = 6      # nothing can ever post to the waited CQ
TIMED_OUT = 7    # a timed wait's deadline passed with the CQ still empty

BACKOFF = 16       # nr_wait: submit-and-wait rounds after a submit alone brought no CQE
DRAIN_PYTHON = 1   # nr_drain: the CQE at the head needs the Python ring
QUEUE_PYTHON = 1   # nr_queue: the Python ring must queue this SQE
# HashIndex slot states (a value's address is never either) and its hash, FNV-1a 64
SLOT_EMPTY, SLOT_TOMB = 0, 1
FNV_BASIS, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def _prologue(name: str, words: tuple[str, ...], base: str) -> str:
    return "\n".join(f"  %{name}.{w} = getelementptr i64, ptr {base}, i64 {i}"
                     for i, w in enumerate(words))


def _i64(value: int) -> int:
    """An unsigned 64-bit constant as LLVM writes an i64 literal (signed)."""
    return value - (1 << 64) if value >> 63 else value


def _indices(prefix: str, names: tuple[str, ...]) -> dict[str, int]:
    return {f"{prefix}_{name.upper()}": i for i, name in enumerate(names)}


_ST = {name: i for i, name in enumerate(STATE_FIELDS)}
_ERRNOS = ("EINTR", "EAGAIN", "EBUSY", "ETIME", "ENOENT", "ENOMEM", "EINVAL", "EFAULT", "E2BIG",
           "EPERM", "ENOSYS", "EACCES")
# Every name the templates use (native_helpers_ir's too), from its one home.
CONSTANTS: dict[str, object] = {
    "W": _prologue("W", RING_WORDS, "%r"),
    **_indices("RG", RING_WORDS), **_indices("CQ", CQ_WORDS), **_indices("RQ", REQUEST_WORDS),
    **_indices("PG", PROGRAM_WORDS), **_indices("MP", MAP_WORDS),
    "CQD": 8 * len(CQ_WORDS), "RQD": 8 * len(REQUEST_WORDS), "PGD": 8 * len(PROGRAM_WORDS),
    "MPD": 8 * len(MAP_WORDS), "ENTRY_WORDS": len(ENTRY_FIELDS),
    "READABLE": ENTRY_FIELDS.index("rsize"), "WRITABLE": ENTRY_FIELDS.index("wsize"),
    **{f"ST_{name.upper()}": _ST[field] for name, field in (
        ("status", "status"), ("budget", "budget"), ("table", "table"), ("tlen", "table_len"),
        ("helper", "helper"), ("ring", "ring"), ("maps", "maps"))},
    "TAG_BASE": _i64(TAG_BASE), "FREE": _i64(FREE), "U32": (1 << 32) - 1,
    "REGION_SHIFT": REGION_SHIFT, "BIAS32": BIAS - (1 << 32),
    "READY": READY, "MORE": MORE, "PYTHON": PYTHON, "FAULTED": FAULTED, "COMPLETE": COMPLETE,
    "BAD_WAIT": BAD_WAIT, "STALLED": STALLED, "TIMED_OUT": TIMED_OUT,
    "DRAIN_PYTHON": DRAIN_PYTHON, "BACKOFF": BACKOFF, "QUEUE_PYTHON": QUEUE_PYTHON,
    **{name: getattr(errno, name) for name in _ERRNOS},
    **{f"NEG_{name}": -getattr(errno, name) for name in _ERRNOS},
    "NR_ENTER": uapi.NR_IO_URING_ENTER, "GETEVENTS": uapi.IORING_ENTER_GETEVENTS,
    "GETEVENTS_EXT_ARG": uapi.IORING_ENTER_GETEVENTS | uapi.IORING_ENTER_EXT_ARG,
    "GETEVENTS_ARG_SIZE": 24,             # sizeof(struct io_uring_getevents_arg)
    "HELD_BACK": uapi.IORING_SQ_CQ_OVERFLOW | uapi.IORING_SQ_TASKRUN,
    "F_MORE": uapi.IORING_CQE_F_MORE, "SKIP_SUCCESS": uapi.IOSQE_CQE_SKIP_SUCCESS,
    "OP_BPF": uapi.IORING_OP_BPF, "OP_POLL_REMOVE": uapi.IORING_OP_POLL_REMOVE,
    "OP_TIMEOUT_REMOVE": uapi.IORING_OP_TIMEOUT_REMOVE,
    "OP_ASYNC_CANCEL": uapi.IORING_OP_ASYNC_CANCEL,
    "SQE_SIZE": uapi.SQE_SIZE, "CQE_SIZE": uapi.CQE_SIZE,
    "SQE_FLAGS": Sqe.flags.offset, "SQE_USER_DATA": Sqe.user_data.offset,
    "SQE_CQ_IDX": Sqe.cq_idx.offset,
    "CQE_RES": 8, "CQE_FLAGS": 12,        # struct io_uring_cqe {u64 user_data; s32 res; u32 flags}
    "CTX_WAIT_NR": IoUringCtx.wait_nr.offset, "CTX_WAIT_IDX": IoUringCtx.wait_idx.offset,
    "STACK_BYTES": STACK_BYTES, "MAX_COPY": MAX_COPY,
    "CLOCK_MONOTONIC": time.CLOCK_MONOTONIC, "NS_PER_S": 1_000_000_000,
    "BPF_ANY": uapi.BPF_ANY, "NOT_BPF_EXIST": ~uapi.BPF_EXIST,
    "BPF_MAP_TYPE_ARRAY": uapi.BPF_MAP_TYPE_ARRAY,
    "SLOT_EMPTY": SLOT_EMPTY, "SLOT_TOMB": SLOT_TOMB,
    "FNV_BASIS": _i64(FNV_BASIS), "FNV_PRIME": FNV_PRIME,
}


# A JIT entry's run, as the native ring runs a parked request's program (@nr_wait, from its
# PROGRAM_WORDS record) and FastRun a program run from Python (native_run_ir's @nr_run, from its
# RUN_WORDS block): one text for both, so that the two stay the same run.  Frame 0 is zeroed when
# the program has one, the state block's fault status cleared and its budget set, the entry called
# on the ctx's engine address; what follows reads %st, %statusp, %bg, %stbp and %r0.
_ENTER = r"""
  %frp = getelementptr i64, ptr ${BLOCK}, i64 ${FRAME}
  %frame = load ptr, ptr %frp
  %hasframe = icmp ne ptr %frame, null
  br i1 %hasframe, label %zero, label %call
zero:
  call void @llvm.memset.p0.i64(ptr %frame, i8 0, i64 ${STACK_BYTES}, i1 false)
  br label %call
call:
  %stp = getelementptr i64, ptr ${BLOCK}, i64 ${STATE}
  %st = load ptr, ptr %stp
  %statusp = getelementptr i64, ptr %st, i64 ${ST_STATUS}
  store i64 0, ptr %statusp
  %bgp = getelementptr i64, ptr ${BLOCK}, i64 ${BUDGET}
  %bg = load i64, ptr %bgp
  %stbp = getelementptr i64, ptr %st, i64 ${ST_BUDGET}
  store i64 %bg, ptr %stbp
  %entp = getelementptr i64, ptr ${BLOCK}, i64 ${ENTRY}
  %fn = load ptr, ptr %entp
  %cap = getelementptr i64, ptr ${BLOCK}, i64 ${CTX_ADDR}
  %ctxaddr = load i64, ptr %cap
  %r0 = call i64 %fn(ptr %st, i64 %ctxaddr, i64 0, i64 0, i64 0, i64 0)
"""


def enter(block: str, words: tuple[str, ...]) -> str:
    """_ENTER filled for a block of `words` (`block`: the IR value pointing to it)."""
    return fill(_ENTER, {**CONSTANTS, "BLOCK": block,
                         **{name: words.index(name.lower()) for name in
                            ("FRAME", "STATE", "BUDGET", "ENTRY", "CTX_ADDR")}}).strip()


# Small pieces, always inlined.
_PIECES = r"""
; libc's syscall(2): the result, or -errno
define internal i64 @enter(ptr %r, i64 %submit, i64 %min, i64 %flags, ptr %arg, i64 %argsz) alwaysinline {
${W}
  %n = load i64, ptr %W.enter_calls
  %n1 = add i64 %n, 1
  store i64 %n1, ptr %W.enter_calls
  %fn = load ptr, ptr %W.syscall
  %fd = load i64, ptr %W.enter_fd
  %how = load i64, ptr %W.enter_flags
  %all = or i64 %flags, %how
  %res = call i64 (i64, ...) %fn(i64 ${NR_ENTER}, i64 %fd, i64 %submit, i64 %min, i64 %all, ptr %arg, i64 %argsz)
  %bad = icmp slt i64 %res, 0
  br i1 %bad, label %err, label %ok
ok:
  ret i64 %res
err:
  %neg = call i64 @neg_errno(ptr %r)
  ret i64 %neg
}

; -errno after a libc call failed: errno read through libc's __errno_location (the error path of
; both libc calls, @enter here and @vm_copy in native_helpers_ir)
define internal i64 @neg_errno(ptr %r) alwaysinline {
${W}
  %loc = load ptr, ptr %W.errno
  %ep = call ptr %loc()
  %e = load i32, ptr %ep
  %e64 = sext i32 %e to i64
  %neg = sub i64 0, %e64
  ret i64 %neg
}

; SQEs written but not yet consumed by the kernel (Ring._pending)
define internal i64 @pending(ptr %r) alwaysinline {
${W}
  %local = load i64, ptr %W.sq_local
  %hp = load ptr, ptr %W.sq_head
  %h = load atomic i32, ptr %hp acquire, align 4
  %h64 = zext i32 %h to i64
  %d = sub i64 %local, %h64
  %p = and i64 %d, ${U32}
  ret i64 %p
}

; the descriptor of CQ i
define internal ptr @cq(ptr %r, i64 %i) alwaysinline {
${W}
  %base = load ptr, ptr %W.cqs
  %off = mul i64 %i, ${CQD}
  %q = getelementptr i8, ptr %base, i64 %off
  ret ptr %q
}

; true when the CQ takes one more CQE natively (no backlog, not full)
define internal i1 @has_room(ptr %q) alwaysinline {
  %bp = getelementptr i64, ptr %q, i64 ${CQ_BACKLOG}
  %b = load i64, ptr %bp
  %cp = getelementptr i64, ptr %q, i64 ${CQ_COUNT}
  %c = load i64, ptr %cp
  %sp = getelementptr i64, ptr %q, i64 ${CQ_SIZE}
  %s = load i64, ptr %sp
  %nob = icmp eq i64 %b, 0
  %free = icmp ult i64 %c, %s
  %ok = and i1 %nob, %free
  ret i1 %ok
}

; append a CQE (the caller checked has_room): a wake
define internal void @push(ptr %r, ptr %q, i64 %ud, i32 %res, i32 %flags) alwaysinline {
${W}
  %k = load i64, ptr %W.wakes
  %k1 = add i64 %k, 1
  store i64 %k1, ptr %W.wakes
  %hp = getelementptr i64, ptr %q, i64 ${CQ_HEAD}
  %h = load i64, ptr %hp
  %cp = getelementptr i64, ptr %q, i64 ${CQ_COUNT}
  %c = load i64, ptr %cp
  %sp = getelementptr i64, ptr %q, i64 ${CQ_SIZE}
  %s = load i64, ptr %sp
  %t0 = add i64 %h, %c
  %wrap = icmp uge i64 %t0, %s
  %t1 = sub i64 %t0, %s
  %t = select i1 %wrap, i64 %t1, i64 %t0
  %bufp = getelementptr i64, ptr %q, i64 ${CQ_BUF}
  %buf = load ptr, ptr %bufp
  %off = mul i64 %t, ${CQE_SIZE}
  %e = getelementptr i8, ptr %buf, i64 %off
  store i64 %ud, ptr %e
  %rp = getelementptr i8, ptr %e, i64 ${CQE_RES}
  store i32 %res, ptr %rp
  %fp = getelementptr i8, ptr %e, i64 ${CQE_FLAGS}
  store i32 %flags, ptr %fp
  %c1 = add i64 %c, 1
  store i64 %c1, ptr %cp
  ret void
}

; nr_drain when the kernel has something for it (a CQE at the head, CQEs or task work held
; back), else 0 at the cost of three loads: most drains of a round (the helpers', the settling
; pass's) find nothing, and nr_drain in that case does nothing either
define internal i64 @drain(ptr %r) alwaysinline {
${W}
  %sqfp = load ptr, ptr %W.sq_flags
  %f = load atomic i32, ptr %sqfp acquire, align 4
  %held = and i32 %f, ${HELD_BACK}
  %headp = load ptr, ptr %W.cq_head
  %h = load i32, ptr %headp
  %tailp = load ptr, ptr %W.cq_tail
  %t = load atomic i32, ptr %tailp acquire, align 4
  %new = xor i32 %h, %t
  %any = or i32 %held, %new
  %idle = icmp eq i32 %any, 0
  br i1 %idle, label %none, label %work
none:
  ret i64 0
work:
  %d = call i64 @nr_drain(ptr %r)
  ret i64 %d
}

define internal void @bump(ptr %r) alwaysinline {
${W}
  %v = load i64, ptr %W.version
  %v1 = add i64 %v, 1
  store i64 %v1, ptr %W.version
  ret void
}

; a host pointer for `size` bytes at engine address `addr` the JIT's fast path may read
; (word 1) or write (word 2), or null -- the region table rule of jit_lift.host_pointer
define internal ptr @host(ptr %st, i64 %addr, i64 %size, i64 %word) alwaysinline {
  %tabp = getelementptr i64, ptr %st, i64 ${ST_TABLE}
  %tab = load ptr, ptr %tabp
  %tlp = getelementptr i64, ptr %st, i64 ${ST_TLEN}
  %tlen = load i64, ptr %tlp
  %rid = lshr i64 %addr, ${REGION_SHIFT}
  %in = icmp ult i64 %rid, %tlen
  br i1 %in, label %look, label %none
look:
  %eoff = mul i64 %rid, ${ENTRY_WORDS}
  %entry = getelementptr i64, ptr %tab, i64 %eoff
  %low = trunc i64 %addr to i32
  %o32 = xor i32 %low, ${BIAS32}
  %off = zext i32 %o32 to i64
  %lp = getelementptr i64, ptr %entry, i64 %word
  %limit = load i64, ptr %lp
  %end = add i64 %off, %size
  %fits = icmp ule i64 %end, %limit
  br i1 %fits, label %yes, label %none
yes:
  %base = load ptr, ptr %entry
  %p = getelementptr i8, ptr %base, i64 %off
  ret ptr %p
none:
  ret ptr null
}

define internal i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) alwaysinline {
  %hp = getelementptr i64, ptr %st, i64 ${ST_HELPER}
  %h = load ptr, ptr %hp
  %v = call i64 %h(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %v
}

; the ring of a program's state block while a native wait runs, else null
define internal ptr @session(ptr %st) alwaysinline {
  %rp = getelementptr i64, ptr %st, i64 ${ST_RING}
  %r = load ptr, ptr %rp
  %has = icmp ne ptr %r, null
  br i1 %has, label %check, label %no
check:
  %ap = getelementptr i64, ptr %r, i64 ${RG_ACTIVE}
  %a = load i64, ptr %ap
  %on = icmp ne i64 %a, 0
  br i1 %on, label %yes, label %no
yes:
  ret ptr %r
no:
  ret ptr null
}

; the Python helper may post to any CQ: a wake
define internal i64 @slow(ptr %r, ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) alwaysinline {
${W}
  %f = load ptr, ptr %W.slow
  %v = call i64 %f(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  %k = load i64, ptr %W.wakes
  %k1 = add i64 %k, 1
  store i64 %k1, ptr %W.wakes
  ret i64 %v
}
"""

# Ring._drain + Ring._route
_DRAIN = r"""
; 0: the kernel CQ is empty; DRAIN_PYTHON: the CQE at the head needs the Python ring (its CQ has a backlog
; or is full); < 0: io_uring_enter failed (-errno).  Inlined into nr_wait, whose round starts
; with it; the helpers' drains call nr_drain.
define i64 @nr_drain(ptr %r) {
  %d = call i64 @route(ptr %r)
  ret i64 %d
}

define internal i64 @route(ptr %r) alwaysinline {
${W}
  br label %top
top:
  %sqfp = load ptr, ptr %W.sq_flags
  %f = load atomic i32, ptr %sqfp acquire, align 4
  %held = and i32 %f, ${HELD_BACK}
  %isheld = icmp ne i32 %held, 0
  br i1 %isheld, label %flush, label %read
flush:
  %res = call i64 @enter(ptr %r, i64 0, i64 0, i64 ${GETEVENTS}, ptr null, i64 0)
  %failed = icmp slt i64 %res, 0
  %e = sub i64 0, %res
  %benign1 = icmp eq i64 %e, ${EINTR}
  %benign2 = icmp eq i64 %e, ${EBUSY}
  %benign3 = icmp eq i64 %e, ${EAGAIN}
  %b12 = or i1 %benign1, %benign2
  %benign = or i1 %b12, %benign3
  %nb = xor i1 %benign, true
  %fatal = and i1 %failed, %nb
  br i1 %fatal, label %error, label %read
error:
  ret i64 %res
read:
  %headp = load ptr, ptr %W.cq_head
  %tailp = load ptr, ptr %W.cq_tail
  %h32 = load i32, ptr %headp
  %t32 = load atomic i32, ptr %tailp acquire, align 4
  %empty = icmp eq i32 %h32, %t32
  br i1 %empty, label %done, label %route
done:
  ret i64 0
route:
  %mask = load i64, ptr %W.cq_mask
  %cqes = load ptr, ptr %W.cqes
  %cap = load i64, ptr %W.tag_cap
  %tud = load ptr, ptr %W.tag_ud
  %tcq = load ptr, ptr %W.tag_cq
  br label %loop
loop:
  %h = phi i32 [%h32, %route], [%h1, %next]
  %at = icmp eq i32 %h, %t32
  br i1 %at, label %routed, label %one
one:
  %h64 = zext i32 %h to i64
  %idx = and i64 %h64, %mask
  %eoff = mul i64 %idx, ${CQE_SIZE}
  %cqe = getelementptr i8, ptr %cqes, i64 %eoff
  %ud = load i64, ptr %cqe
  %resp = getelementptr i8, ptr %cqe, i64 ${CQE_RES}
  %cres = load i32, ptr %resp
  %flp = getelementptr i8, ptr %cqe, i64 ${CQE_FLAGS}
  %cfl = load i32, ptr %flp
  %slot = sub i64 %ud, ${TAG_BASE}
  %inr = icmp ult i64 %slot, %cap
  br i1 %inr, label %lookup, label %foreign
lookup:
  %tcqp = getelementptr i64, ptr %tcq, i64 %slot
  %target = load i64, ptr %tcqp
  %live = icmp ne i64 %target, ${FREE}
  br i1 %live, label %tagged, label %foreign
tagged:
  %tudp = getelementptr i64, ptr %tud, i64 %slot
  %oud = load i64, ptr %tudp
  %q = call ptr @cq(ptr %r, i64 %target)
  %room = call i1 @has_room(ptr %q)
  br i1 %room, label %post_tagged, label %stop
post_tagged:
  call void @push(ptr %r, ptr %q, i64 %oud, i32 %cres, i32 %cfl)
  %more = and i32 %cfl, ${F_MORE}
  %last = icmp eq i32 %more, 0
  br i1 %last, label %untag, label %next
untag:
  store i64 ${FREE}, ptr %tcqp
  %nf = load i64, ptr %W.nfree
  %fr = load ptr, ptr %W.free
  %frp = getelementptr i64, ptr %fr, i64 %nf
  store i64 %slot, ptr %frp
  %nf1 = add i64 %nf, 1
  store i64 %nf1, ptr %W.nfree
  %inf = load i64, ptr %W.in_flight
  %inf1 = sub i64 %inf, 1
  store i64 %inf1, ptr %W.in_flight
  br label %next
foreign:
  %q0 = call ptr @cq(ptr %r, i64 0)
  %room0 = call i1 @has_room(ptr %q0)
  br i1 %room0, label %post_foreign, label %stop
post_foreign:
  call void @push(ptr %r, ptr %q0, i64 %ud, i32 %cres, i32 %cfl)
  br label %next
next:
  %h1 = add i32 %h, 1
  br label %loop
stop:
  store atomic i32 %h, ptr %headp release, align 4
  call void @bump(ptr %r)
  ret i64 ${DRAIN_PYTHON}
routed:
  store atomic i32 %t32, ptr %headp release, align 4
  call void @bump(ptr %r)
  br i1 %isheld, label %top, label %recheck
recheck:
  %f2 = load atomic i32, ptr %sqfp acquire, align 4
  %held2 = and i32 %f2, ${HELD_BACK}
  %again = icmp ne i32 %held2, 0
  br i1 %again, label %top, label %done
}
"""

# Ring._queue_raw's common case (inlined into nh_queue_sqe, its one caller: a call, its register
# saves and restores were a fifth of the instructions of a queued SQE)
_QUEUE = r"""
; 0 queued; -EINVAL: cq_idx names no CQ; QUEUE_PYTHON: the Python ring must queue it (a BPF request, a
; cancel that names another request, CQE_SKIP_SUCCESS, a full SQ, no tag slot left below tag_cap)
define internal i64 @nr_queue(ptr %r, ptr %sqe) alwaysinline {
${W}
  %op = load i8, ptr %sqe
  %flp = getelementptr i8, ptr %sqe, i64 ${SQE_FLAGS}
  %fl = load i8, ptr %flp
  %udp = getelementptr i8, ptr %sqe, i64 ${SQE_USER_DATA}
  %ud = load i64, ptr %udp
  %cip = getelementptr i8, ptr %sqe, i64 ${SQE_CQ_IDX}
  %ci16 = load i16, ptr %cip
  %ci = zext i16 %ci16 to i64
  %ncqs = load i64, ptr %W.ncqs
  %badcq = icmp uge i64 %ci, %ncqs
  br i1 %badcq, label %einval, label %kind
einval:
  ret i64 ${NEG_EINVAL}
kind:
  switch i8 %op, label %plain [ i8 ${OP_BPF}, label %python
                               i8 ${OP_POLL_REMOVE}, label %python
                               i8 ${OP_TIMEOUT_REMOVE}, label %python
                               i8 ${OP_ASYNC_CANCEL}, label %python ]
plain:
  %skip = and i8 %fl, ${SKIP_SUCCESS}
  %isskip = icmp ne i8 %skip, 0
  br i1 %isskip, label %python, label %room
room:
  %pend = call i64 @pending(ptr %r)
  %ent = load i64, ptr %W.sq_entries
  %full = icmp uge i64 %pend, %ent
  br i1 %full, label %python, label %pick
python:
  ret i64 ${QUEUE_PYTHON}
pick:
  ; a freed slot (the top of the free stack, as Ring._new_tag pops its list), else the next
  ; fresh one (as it appends)
  %nf = load i64, ptr %W.nfree
  %notag = icmp eq i64 %nf, 0
  br i1 %notag, label %fresh, label %reuse
reuse:
  %nf1 = sub i64 %nf, 1
  store i64 %nf1, ptr %W.nfree
  %fr = load ptr, ptr %W.free
  %frp = getelementptr i64, ptr %fr, i64 %nf1
  %freed = load i64, ptr %frp
  br label %queue
fresh:
  %next = load i64, ptr %W.fresh
  %cap = load i64, ptr %W.tag_cap
  %over = icmp uge i64 %next, %cap
  br i1 %over, label %python, label %take
take:
  %next1 = add i64 %next, 1
  store i64 %next1, ptr %W.fresh
  br label %queue
queue:
  %slot = phi i64 [%freed, %reuse], [%next, %take]
  %tud = load ptr, ptr %W.tag_ud
  %tudp = getelementptr i64, ptr %tud, i64 %slot
  store i64 %ud, ptr %tudp
  %tcq = load ptr, ptr %W.tag_cq
  %tcqp = getelementptr i64, ptr %tcq, i64 %slot
  store i64 %ci, ptr %tcqp
  %inf = load i64, ptr %W.in_flight
  %inf1 = add i64 %inf, 1
  store i64 %inf1, ptr %W.in_flight
  %local = load i64, ptr %W.sq_local
  %mask = load i64, ptr %W.sq_mask
  %idx = and i64 %local, %mask
  %soff = mul i64 %idx, ${SQE_SIZE}
  %sqes = load ptr, ptr %W.sqes
  %dst = getelementptr i8, ptr %sqes, i64 %soff
  call void @llvm.memcpy.p0.p0.i64(ptr %dst, ptr %sqe, i64 ${SQE_SIZE}, i1 false)
  %tag = or i64 %slot, ${TAG_BASE}
  %dud = getelementptr i8, ptr %dst, i64 ${SQE_USER_DATA}
  store i64 %tag, ptr %dud
  %dci = getelementptr i8, ptr %dst, i64 ${SQE_CQ_IDX}
  store i16 0, ptr %dci
  %l1 = add i64 %local, 1
  %l2 = and i64 %l1, ${U32}
  store i64 %l2, ptr %W.sq_local
  %tailp = load ptr, ptr %W.sq_tail
  %l32 = trunc i64 %l2 to i32
  store atomic i32 %l32, ptr %tailp release, align 4
  call void @bump(ptr %r)
  ret i64 0
}
"""

# Ring._progress (one pass over the parked requests), Ring._run, Ring._complete, Ring.wait_cqe
_SCAN = r"""
; move parked[k..n) down to parked[w..) and set nparked
define internal void @close_gap(ptr %r, i64 %w, i64 %k) alwaysinline {
${W}
  %n = load i64, ptr %W.nparked
  %base = load ptr, ptr %W.parked
  %left = sub i64 %n, %k
  %same = icmp eq i64 %w, %k
  br i1 %same, label %done, label %move
move:
  %doff = mul i64 %w, ${RQD}
  %dst = getelementptr i8, ptr %base, i64 %doff
  %soff = mul i64 %k, ${RQD}
  %src = getelementptr i8, ptr %base, i64 %soff
  %bytes = mul i64 %left, ${RQD}
  call void @llvm.memmove.p0.p0.i64(ptr %dst, ptr %src, i64 %bytes, i1 false)
  br label %done
done:
  %n1 = add i64 %w, %left
  store i64 %n1, ptr %W.nparked
  ret void
}

define internal void @hand_back(ptr %r, ptr %rec) alwaysinline {
${W}
  call void @llvm.memcpy.p0.p0.i64(ptr %W.rec0, ptr %rec, i64 ${RQD}, i1 false)
  ret void
}

; post a finished request's completion (Ring._complete): false when the Python ring must
define internal i1 @complete(ptr %r, i64 %ud, i64 %ci) alwaysinline {
${W}
  %p = call i64 @pending(ptr %r)
  %any = icmp ne i64 %p, 0
  br i1 %any, label %submit, label %drain
submit:
  %res = call i64 @enter(ptr %r, i64 %p, i64 0, i64 0, ptr null, i64 0)
  %bad = icmp slt i64 %res, 0
  br i1 %bad, label %no, label %drain
drain:
  %d = call i64 @drain(ptr %r)
  %drained = icmp eq i64 %d, 0
  br i1 %drained, label %post, label %no
post:
  %q = call ptr @cq(ptr %r, i64 %ci)
  %room = call i1 @has_room(ptr %q)
  br i1 %room, label %yes, label %no
yes:
  call void @push(ptr %r, ptr %q, i64 %ud, i32 0, i32 0)
  call void @bump(ptr %r)
  ret i1 true
no:
  ret i1 false
}

; one pass over the parked requests: run each whose CQ holds wait_nr CQEs.  A record with
; wait_nr 0 is a runnable request (Ring.submit_bpf exports a new one first): it runs, and if it
; parks, it moves to the end of the list, where this pass reaches it again -- as Ring._progress
; runs its runnable requests, appending those that park, before it scans the parked ones.
define internal i64 @nr_scan(ptr %r) alwaysinline {
entry:
${W}
  %base = load ptr, ptr %W.parked
  %progs = load ptr, ptr %W.programs
  %ncqs = load i64, ptr %W.ncqs
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1k, %kept], [%i1, %completed], [%i1a, %appended]
  %w = phi i64 [0, %entry], [%w1, %kept], [%w, %completed], [%w, %appended]
  %n = load i64, ptr %W.nparked
  %end = icmp eq i64 %i, %n
  br i1 %end, label %finished, label %look
finished:
  store i64 %w, ptr %W.nparked
  ret i64 0
look:
  %roff = mul i64 %i, ${RQD}
  %rec = getelementptr i8, ptr %base, i64 %roff
  %wnp = getelementptr i64, ptr %rec, i64 ${RQ_WAIT_NR}
  %wn = load i64, ptr %wnp
  %wip = getelementptr i64, ptr %rec, i64 ${RQ_WAIT_IDX}
  %wi = load i64, ptr %wip
  %q = call ptr @cq(ptr %r, i64 %wi)
  %cp = getelementptr i64, ptr %q, i64 ${CQ_COUNT}
  %c = load i64, ptr %cp
  %bp = getelementptr i64, ptr %q, i64 ${CQ_BACKLOG}
  %b = load i64, ptr %bp
  %have = add i64 %c, %b
  %ready = icmp uge i64 %have, %wn
  br i1 %ready, label %runnable, label %keep_same
keep_same:
  br label %keep
runnable:
  %pi = load i64, ptr %rec
  %poff = mul i64 %pi, ${PGD}
  %prog = getelementptr i8, ptr %progs, i64 %poff
  %natp = getelementptr i64, ptr %prog, i64 ${PG_NATIVE}
  %nat = load i64, ptr %natp
  %isnat = icmp ne i64 %nat, 0
  br i1 %isnat, label %budget, label %to_python
to_python:
  call void @close_gap(ptr %r, i64 %w, i64 %i)
  ret i64 ${PYTHON}
budget:
  %rl = load i64, ptr %W.runs_left
  %spent = icmp eq i64 %rl, 0
  br i1 %spent, label %out_of_runs, label %run
out_of_runs:
  call void @close_gap(ptr %r, i64 %w, i64 %i)
  ret i64 ${MORE}
run:
  %rl1 = sub i64 %rl, 1
  store i64 %rl1, ptr %W.runs_left
  %udp = getelementptr i64, ptr %rec, i64 ${RQ_USER_DATA}
  %ud = load i64, ptr %udp
  %ctxp = getelementptr i64, ptr %prog, i64 ${PG_CTX}
  %ctx = load ptr, ptr %ctxp
  store i64 %ud, ptr %ctx
  %waitf = getelementptr i8, ptr %ctx, i64 ${CTX_WAIT_NR}
  store i64 0, ptr %waitf
  ${ENTER_PROGRAM}
  %retp = load ptr, ptr %W.retired
  %ret = load i64, ptr %retp
  %deleted = icmp ne i64 %ret, 0
  br i1 %deleted, label %release, label %counted
release:
  %er = load ptr, ptr %W.end_run
  call void %er(ptr %st)
  br label %counted
counted:
  %runsp = getelementptr i64, ptr %rec, i64 ${RQ_RUNS}
  %runs = load i64, ptr %runsp
  %runs1 = add i64 %runs, 1
  store i64 %runs1, ptr %runsp
  %pruns = getelementptr i64, ptr %prog, i64 ${PG_RUNS}
  %pr = load i64, ptr %pruns
  %pr1 = add i64 %pr, 1
  store i64 %pr1, ptr %pruns
  %status = load i64, ptr %statusp
  %faulted = icmp ne i64 %status, 0
  br i1 %faulted, label %fault, label %ran
fault:
  call void @hand_back(ptr %r, ptr %rec)
  %after = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after)
  ret i64 ${FAULTED}
ran:
  %left = load i64, ptr %stbp
  %used = sub i64 %bg, %left
  %exp = getelementptr i64, ptr %prog, i64 ${PG_EXECUTED}
  store i64 %used, ptr %exp
  %spp = getelementptr i64, ptr %prog, i64 ${PG_SPENT}
  %sp0 = load i64, ptr %spp
  %sp1 = add i64 %sp0, %used
  store i64 %sp1, ptr %spp
  %nr32p = getelementptr i8, ptr %ctx, i64 ${CTX_WAIT_NR}
  %nr32 = load i32, ptr %nr32p
  %wi32p = getelementptr i8, ptr %ctx, i64 ${CTX_WAIT_IDX}
  %wi32 = load i32, ptr %wi32p
  %nr = zext i32 %nr32 to i64
  %nwi = zext i32 %wi32 to i64
  %finishedreq = icmp eq i64 %nr, 0
  br i1 %finishedreq, label %finish, label %repark
finish:
  %cip = getelementptr i64, ptr %rec, i64 ${RQ_CQ_IDX}
  %ci = load i64, ptr %cip
  %posted = call i1 @complete(ptr %r, i64 %ud, i64 %ci)
  br i1 %posted, label %completed_check, label %complete_python
completed_check:
  %pw = load i64, ptr %W.py_work
  %busy = icmp ne i64 %pw, 0
  br i1 %busy, label %work_after_complete, label %completed
work_after_complete:
  %after2 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after2)
  ret i64 ${PYTHON}
completed:
  %i1 = add i64 %i, 1
  br label %loop
complete_python:
  call void @hand_back(ptr %r, ptr %rec)
  %after3 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after3)
  ret i64 ${COMPLETE}
repark:
  %badwait = icmp uge i64 %nwi, %ncqs
  br i1 %badwait, label %bad, label %park
bad:
  store i64 %nr, ptr %wnp
  store i64 %nwi, ptr %wip
  call void @hand_back(ptr %r, ptr %rec)
  %after4 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after4)
  ret i64 ${BAD_WAIT}
park:
  store i64 %nr, ptr %wnp
  store i64 %nwi, ptr %wip
  ; parked on a condition that already holds: a wake (Ring._progress runs it again when the
  ; pass changed anything)
  %pq = call ptr @cq(ptr %r, i64 %nwi)
  %pcp = getelementptr i64, ptr %pq, i64 ${CQ_COUNT}
  %pc = load i64, ptr %pcp
  %pbp = getelementptr i64, ptr %pq, i64 ${CQ_BACKLOG}
  %pb = load i64, ptr %pbp
  %phave = add i64 %pc, %pb
  %pready = icmp uge i64 %phave, %nr
  %pk = load i64, ptr %W.wakes
  %pk1 = add i64 %pk, 1
  %pk2 = select i1 %pready, i64 %pk1, i64 %pk
  store i64 %pk2, ptr %W.wakes
  %wasrunnable = icmp eq i64 %wn, 0
  br i1 %wasrunnable, label %append, label %parked_here
append:
  ; (room for it: native_ring exports the list into an array one record longer)
  %aoff = mul i64 %n, ${RQD}
  %adst = getelementptr i8, ptr %base, i64 %aoff
  call void @llvm.memcpy.p0.p0.i64(ptr %adst, ptr %rec, i64 ${RQD}, i1 false)
  %n1 = add i64 %n, 1
  store i64 %n1, ptr %W.nparked
  %pw3 = load i64, ptr %W.py_work
  %busy3 = icmp ne i64 %pw3, 0
  br i1 %busy3, label %work_after_append, label %appended
work_after_append:
  %after6 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after6)
  ret i64 ${PYTHON}
appended:
  %i1a = add i64 %i, 1
  br label %loop
parked_here:
  %pw2 = load i64, ptr %W.py_work
  %busy2 = icmp ne i64 %pw2, 0
  br i1 %busy2, label %work_after_park, label %keep
work_after_park:
  %dst2off = mul i64 %w, ${RQD}
  %dst2 = getelementptr i8, ptr %base, i64 %dst2off
  call void @llvm.memmove.p0.p0.i64(ptr %dst2, ptr %rec, i64 ${RQD}, i1 false)
  %w2 = add i64 %w, 1
  %after5 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w2, i64 %after5)
  ret i64 ${PYTHON}
keep:
  %dstoff = mul i64 %w, ${RQD}
  %dst = getelementptr i8, ptr %base, i64 %dstoff
  %moved = icmp ne i64 %w, %i
  br i1 %moved, label %copy, label %kept
copy:
  call void @llvm.memmove.p0.p0.i64(ptr %dst, ptr %rec, i64 ${RQD}, i1 false)
  br label %kept
kept:
  %w1 = add i64 %w, 1
  %i1k = add i64 %i, 1
  br label %loop
}

; Ring.wait_cqe's loop for CQ `ci` (and _wait_timed's, until `deadline`): READY, or a code that
; hands over to the Python ring.
;
; A round submits what the programs queued.  Operations that complete inline (a NOP, a read from
; the page cache) have posted their CQEs when a submit returns, so an untimed wait's round (a
; timed one, and a poll, submit and wait once, as the Python ring) submits alone --
; without IORING_ENTER_GETEVENTS, whose wait path the kernel then skips -- and enters again to
; wait only if nothing arrived; when that happens (`tried` and still nothing to do: the ring's
; operations go async), the next BACKOFF rounds submit and wait in one enter, as the Python ring
; does, before submitting alone is tried again.  Either way one enter a round when ops complete
; inline, and at most one more per BACKOFF rounds when they do not.
define i64 @nr_wait(ptr %r, i64 %ci) {
entry:
${W}
  br label %top
top:
  %tried = phi i1 [false, %entry], [%tr, %entered], [false, %failed]
  %d = call i64 @route(ptr %r)
  %drained = icmp eq i64 %d, 0
  br i1 %drained, label %parked, label %python
python:
  ret i64 ${PYTHON}
parked:
  %np = load i64, ptr %W.nparked
  %none = icmp eq i64 %np, 0
  br i1 %none, label %check, label %progress
progress:
  %before = load i64, ptr %W.version
  %woken = load i64, ptr %W.wakes
  %s = call i64 @nr_scan(ptr %r)
  %scanned = icmp eq i64 %s, 0
  br i1 %scanned, label %settled, label %handback
handback:
  ret i64 %s
settled:
  %after = load i64, ptr %W.version
  %same = icmp eq i64 %after, %before
  br i1 %same, label %check, label %again
again:
  ; Ring._progress passes again when the pass changed a CQ or the SQ; the pass finds something
  ; to run only after a wake (the drain's CQEs included), else it is skipped
  %d2 = call i64 @drain(ptr %r)
  %drained2 = icmp eq i64 %d2, 0
  br i1 %drained2, label %woke, label %python
woke:
  %wakes = load i64, ptr %W.wakes
  %asleep = icmp eq i64 %wakes, %woken
  br i1 %asleep, label %check, label %progress
check:
  %q = call ptr @cq(ptr %r, i64 %ci)
  %cp = getelementptr i64, ptr %q, i64 ${CQ_COUNT}
  %c = load i64, ptr %cp
  %bkp = getelementptr i64, ptr %q, i64 ${CQ_BACKLOG}
  %bk = load i64, ptr %bkp
  %all = or i64 %c, %bk
  %has = icmp ne i64 %all, 0
  br i1 %has, label %ready, label %block
ready:
  ret i64 ${READY}
block:
  %p = call i64 @pending(ptr %r)
  %inf = load i64, ptr %W.in_flight
  %idle = or i64 %p, %inf
  %dead = icmp eq i64 %idle, 0
  br i1 %dead, label %stalled, label %how
stalled:
  ret i64 ${STALLED}
how:
  %bo = load i64, ptr %W.backoff
  %dl = load i64, ptr %W.deadline
  %queued = icmp ne i64 %p, 0
  %eager = icmp eq i64 %bo, 0
  %untimed = icmp eq i64 %dl, 0
  %alone1 = and i1 %queued, %eager
  %alone = and i1 %alone1, %untimed
  br i1 %alone, label %submit, label %count
submit:
  %sres = call i64 @enter(ptr %r, i64 %p, i64 0, i64 0, ptr null, i64 0)
  br label %entered
count:
  ; a submit alone that brought nothing starts a backoff; each enter that waits spends one
  %missed = and i1 %tried, %eager
  %bo1 = sub i64 %bo, 1
  %spend = select i1 %eager, i64 0, i64 %bo1
  %bo2 = select i1 %missed, i64 ${BACKOFF}, i64 %spend
  store i64 %bo2, ptr %W.backoff
  %timed = icmp ne i64 %dl, 0
  br i1 %timed, label %clock, label %forever
forever:
  %res = call i64 @enter(ptr %r, i64 %p, i64 1, i64 ${GETEVENTS}, ptr null, i64 0)
  br label %entered
clock:
  %gettime = load ptr, ptr %W.clock
  call i32 %gettime(i32 ${CLOCK_MONOTONIC}, ptr %W.now_sec)
  %sec = load i64, ptr %W.now_sec
  %nsec = load i64, ptr %W.now_nsec
  %secns = mul i64 %sec, ${NS_PER_S}
  %now = add i64 %secns, %nsec
  %left = sub i64 %dl, %now
  %over = icmp sle i64 %left, 0
  br i1 %over, label %timed_out, label %timed_enter
timed_out:
  ret i64 ${TIMED_OUT}
timed_enter:
  %lsec = udiv i64 %left, ${NS_PER_S}
  %lnsec = urem i64 %left, ${NS_PER_S}
  store i64 %lsec, ptr %W.ts_sec
  store i64 %lnsec, ptr %W.ts_nsec
  %tres = call i64 @enter(ptr %r, i64 %p, i64 1, i64 ${GETEVENTS_EXT_ARG}, ptr %W.arg_sigmask, i64 ${GETEVENTS_ARG_SIZE})
  br label %entered
entered:
  %rv = phi i64 [%res, %forever], [%tres, %timed_enter], [%sres, %submit]
  %tr = phi i1 [false, %forever], [false, %timed_enter], [true, %submit]
  %ok = icmp sge i64 %rv, 0
  br i1 %ok, label %top, label %failed
failed:
  %e = sub i64 0, %rv
  %busy = icmp eq i64 %e, ${EBUSY}
  %again2 = icmp eq i64 %e, ${EAGAIN}
  %expired = icmp eq i64 %e, ${ETIME}
  %retry1 = or i1 %busy, %again2
  %retry = or i1 %retry1, %expired
  br i1 %retry, label %top, label %python
}
"""

# the intrinsics the hand-written modules call (native_run_ir's too)
DECLS = """
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare void @llvm.memmove.p0.p0.i64(ptr, ptr, i64, i1)
"""

FUNCTIONS = ("nr_drain", "nr_wait")
TEXT = fill(_PIECES + _DRAIN + _QUEUE + _SCAN + DECLS,
            {**CONSTANTS, "ENTER_PROGRAM": enter("%prog", PROGRAM_WORDS)})
