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
* a parked request, `REQUEST_WORDS`, as `ring._BpfRequest`;
* a program record, `PROGRAM_WORDS`: a JIT-compiled program's entry and state block, its ctx
  region (host pointer and engine address), frame 0 to zero per run (or 0), its budget, and
  counters the engine reads back (`runs`, `executed` by the last run, `spent` by all, which
  tiers the program up); `native` = 0 sends its requests to Python.

The RFC helpers (164 queue_sqe, 165 emit_cqe, 166 reap_cqe, 148 copy_from_user, 167 copy_to_user),
map lookup and update (1, 2) and ktime_get_ns (5) are here too,
with the JIT's helper signature `i64 (ptr state, i64 pc, i64 r1..r5)`: the lifted program calls
them directly through its state block's `natives` table (jit_lift.NATIVE_HELPERS).  Their
uncommon cases call the Python helper instead -- `slow` for the ring helpers (which first
brings the Python ring up to date), the state block's `helper` for map lookups.
"""
from __future__ import annotations

from .jit_lift import ENTRY_FIELDS, STATE_FIELDS

RING_WORDS = (
    "fd", "sq_head", "sq_tail", "sq_flags", "sq_mask", "sq_entries", "sqes", "sq_local",
    "cq_head", "cq_tail", "cq_mask", "cqes",
    "tag_ud", "tag_cq", "tag_cap", "free", "nfree", "in_flight",
    "cqs", "ncqs", "version", "enter_calls",
    "parked", "nparked", "programs", "runs_left",
    "syscall", "errno", "slow", "active", "py_work", "out",
    "rec0", "rec1", "rec2", "rec3", "rec4", "rec5",      # the request a code hands back
    "deadline", "clock",                  # a timed wait's CLOCK_MONOTONIC deadline (ns; 0: none)
    "arg_sigmask", "arg_sz", "arg_ts",    # struct io_uring_getevents_arg for a timed enter
    "ts_sec", "ts_nsec", "now_sec", "now_nsec",
    "retired", "end_run",                 # the instance's retired-values flag; its callback
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
FREE = (1 << 64) - 1
TAG_BASE = 0xB9F5_0000_0000_0000

# nr_wait / nr_scan codes
READY = 0        # the waited CQ holds a CQE
MORE = 1         # the run budget is spent: come back (Python gets to see signals)
PYTHON = 2       # something only the Python ring does is due: one pass of its loop
FAULTED = 3      # rec* faulted in its program (removed from the parked list)
COMPLETE = 4     # rec* finished; its completion needs the Python ring (removed)
BAD_WAIT = 5     # rec* set wait_idx to a CQ that does not exist (removed; rec3/rec4 = its wait)
STALLED = 6      # nothing can ever post to the waited CQ
TIMED_OUT = 7    # a timed wait's deadline passed with the CQ still empty

_NR_ENTER, _GETEVENTS = 426, 1
_EINTR, _EAGAIN, _EBUSY, _ENOENT, _ENOMEM, _EINVAL = 4, 11, 16, 2, 12, 22
_OP_BPF, _OP_POLL_REMOVE, _OP_TIMEOUT_REMOVE, _OP_ASYNC_CANCEL = 37, 7, 12, 14
_SKIP_SUCCESS, _F_MORE, _HELD_BACK = 1 << 6, 1 << 1, (1 << 1) | (1 << 2)


def _prologue(name: str, words: tuple[str, ...], base: str) -> str:
    return "\n".join(f"  %{name}.{w} = getelementptr i64, ptr {base}, i64 {i}"
                     for i, w in enumerate(words))


_RING = _prologue("W", RING_WORDS, "%r")
_ST = {name: i for i, name in enumerate(STATE_FIELDS)}
_CQ = {name: i for i, name in enumerate(CQ_WORDS)}
_RQ = {name: i for i, name in enumerate(REQUEST_WORDS)}
_PG = {name: i for i, name in enumerate(PROGRAM_WORDS)}


def _fill(text: str) -> str:
    """Substitute {W} (the ring prologue) and #NAME# constants."""
    constants = {
        "ENTRY_WORDS": len(ENTRY_FIELDS), "CQD": 8 * len(CQ_WORDS), "RQD": 8 * len(REQUEST_WORDS),
        "PGD": 8 * len(PROGRAM_WORDS), "MPD": 8 * len(MAP_WORDS), "TAG_BASE": TAG_BASE - (1 << 64),
        "ST_STATUS": _ST["status"], "ST_BUDGET": _ST["budget"], "ST_TABLE": _ST["table"],
        "ST_TLEN": _ST["table_len"], "ST_HELPER": _ST["helper"], "ST_RING": _ST["ring"],
        "ST_MAPS": _ST["maps"], "FREE": -1,
        **{f"RG_{name.upper()}": i for i, name in enumerate(RING_WORDS)},
        **{f"CQ_{k.upper()}": v for k, v in _CQ.items()},
        **{f"RQ_{k.upper()}": v for k, v in _RQ.items()},
        **{f"PG_{k.upper()}": v for k, v in _PG.items()},
        **{f"MP_{name.upper()}": i for i, name in enumerate(MAP_WORDS)},
    }
    text = text.replace("{W}", _RING)
    for name, value in constants.items():
        text = text.replace(f"#{name}#", str(value))
    return text


# Small pieces, always inlined.
_PIECES = r"""
; libc's syscall(2): the result, or -errno
define internal i64 @enter(ptr %r, i64 %submit, i64 %min, i64 %flags, ptr %arg, i64 %argsz) alwaysinline {
{W}
  %n = load i64, ptr %W.enter_calls
  %n1 = add i64 %n, 1
  store i64 %n1, ptr %W.enter_calls
  %fn = load ptr, ptr %W.syscall
  %fd = load i64, ptr %W.fd
  %res = call i64 (i64, ...) %fn(i64 426, i64 %fd, i64 %submit, i64 %min, i64 %flags, ptr %arg, i64 %argsz)
  %bad = icmp slt i64 %res, 0
  br i1 %bad, label %err, label %ok
ok:
  ret i64 %res
err:
  %loc = load ptr, ptr %W.errno
  %ep = call ptr %loc()
  %e = load i32, ptr %ep
  %e64 = sext i32 %e to i64
  %neg = sub i64 0, %e64
  ret i64 %neg
}

; SQEs written but not yet consumed by the kernel (Ring._pending)
define internal i64 @pending(ptr %r) alwaysinline {
{W}
  %local = load i64, ptr %W.sq_local
  %hp = load ptr, ptr %W.sq_head
  %h = load atomic i32, ptr %hp acquire, align 4
  %h64 = zext i32 %h to i64
  %d = sub i64 %local, %h64
  %p = and i64 %d, 4294967295
  ret i64 %p
}

; the descriptor of CQ i
define internal ptr @cq(ptr %r, i64 %i) alwaysinline {
{W}
  %base = load ptr, ptr %W.cqs
  %off = mul i64 %i, #CQD#
  %q = getelementptr i8, ptr %base, i64 %off
  ret ptr %q
}

; true when the CQ takes one more CQE natively (no backlog, not full)
define internal i1 @has_room(ptr %q) alwaysinline {
  %bp = getelementptr i64, ptr %q, i64 #CQ_BACKLOG#
  %b = load i64, ptr %bp
  %cp = getelementptr i64, ptr %q, i64 #CQ_COUNT#
  %c = load i64, ptr %cp
  %sp = getelementptr i64, ptr %q, i64 #CQ_SIZE#
  %s = load i64, ptr %sp
  %nob = icmp eq i64 %b, 0
  %free = icmp ult i64 %c, %s
  %ok = and i1 %nob, %free
  ret i1 %ok
}

; append a CQE (the caller checked has_room)
define internal void @push(ptr %q, i64 %ud, i32 %res, i32 %flags) alwaysinline {
  %hp = getelementptr i64, ptr %q, i64 #CQ_HEAD#
  %h = load i64, ptr %hp
  %cp = getelementptr i64, ptr %q, i64 #CQ_COUNT#
  %c = load i64, ptr %cp
  %sp = getelementptr i64, ptr %q, i64 #CQ_SIZE#
  %s = load i64, ptr %sp
  %t0 = add i64 %h, %c
  %wrap = icmp uge i64 %t0, %s
  %t1 = sub i64 %t0, %s
  %t = select i1 %wrap, i64 %t1, i64 %t0
  %bufp = getelementptr i64, ptr %q, i64 #CQ_BUF#
  %buf = load ptr, ptr %bufp
  %off = mul i64 %t, 16
  %e = getelementptr i8, ptr %buf, i64 %off
  store i64 %ud, ptr %e
  %rp = getelementptr i8, ptr %e, i64 8
  store i32 %res, ptr %rp
  %fp = getelementptr i8, ptr %e, i64 12
  store i32 %flags, ptr %fp
  %c1 = add i64 %c, 1
  store i64 %c1, ptr %cp
  ret void
}

define internal void @bump(ptr %r) alwaysinline {
{W}
  %v = load i64, ptr %W.version
  %v1 = add i64 %v, 1
  store i64 %v1, ptr %W.version
  ret void
}

; a host pointer for `size` bytes at engine address `addr` the JIT's fast path may read
; (word 1) or write (word 2), or null -- the region table rule of jit_lift.host_pointer
define internal ptr @host(ptr %st, i64 %addr, i64 %size, i64 %word) alwaysinline {
  %tabp = getelementptr i64, ptr %st, i64 #ST_TABLE#
  %tab = load ptr, ptr %tabp
  %tlp = getelementptr i64, ptr %st, i64 #ST_TLEN#
  %tlen = load i64, ptr %tlp
  %rid = lshr i64 %addr, 32
  %in = icmp ult i64 %rid, %tlen
  br i1 %in, label %look, label %none
look:
  %eoff = mul i64 %rid, #ENTRY_WORDS#
  %entry = getelementptr i64, ptr %tab, i64 %eoff
  %low = trunc i64 %addr to i32
  %o32 = xor i32 %low, -2147483648
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
  %hp = getelementptr i64, ptr %st, i64 #ST_HELPER#
  %h = load ptr, ptr %hp
  %v = call i64 %h(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %v
}

; the ring of a program's state block while a native wait runs, else null
define internal ptr @session(ptr %st) alwaysinline {
  %rp = getelementptr i64, ptr %st, i64 #ST_RING#
  %r = load ptr, ptr %rp
  %has = icmp ne ptr %r, null
  br i1 %has, label %check, label %no
check:
  %ap = getelementptr i64, ptr %r, i64 #RG_ACTIVE#
  %a = load i64, ptr %ap
  %on = icmp ne i64 %a, 0
  br i1 %on, label %yes, label %no
yes:
  ret ptr %r
no:
  ret ptr null
}

define internal i64 @slow(ptr %r, ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) alwaysinline {
{W}
  %f = load ptr, ptr %W.slow
  %v = call i64 %f(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %v
}
"""

# Ring._drain + Ring._route
_DRAIN = r"""
; 0: the kernel CQ is empty; 1: the CQE at the head needs the Python ring (its CQ has a backlog
; or is full); < 0: io_uring_enter failed (-errno)
define i64 @nr_drain(ptr %r) {
{W}
  br label %top
top:
  %sqfp = load ptr, ptr %W.sq_flags
  %f = load atomic i32, ptr %sqfp acquire, align 4
  %held = and i32 %f, 6
  %isheld = icmp ne i32 %held, 0
  br i1 %isheld, label %flush, label %read
flush:
  %res = call i64 @enter(ptr %r, i64 0, i64 0, i64 1, ptr null, i64 0)
  %failed = icmp slt i64 %res, 0
  %e = sub i64 0, %res
  %benign1 = icmp eq i64 %e, 4
  %benign2 = icmp eq i64 %e, 16
  %benign3 = icmp eq i64 %e, 11
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
  %eoff = mul i64 %idx, 16
  %cqe = getelementptr i8, ptr %cqes, i64 %eoff
  %ud = load i64, ptr %cqe
  %resp = getelementptr i8, ptr %cqe, i64 8
  %cres = load i32, ptr %resp
  %flp = getelementptr i8, ptr %cqe, i64 12
  %cfl = load i32, ptr %flp
  %slot = sub i64 %ud, #TAG_BASE#
  %inr = icmp ult i64 %slot, %cap
  br i1 %inr, label %lookup, label %foreign
lookup:
  %tcqp = getelementptr i64, ptr %tcq, i64 %slot
  %target = load i64, ptr %tcqp
  %live = icmp ne i64 %target, #FREE#
  br i1 %live, label %tagged, label %foreign
tagged:
  %tudp = getelementptr i64, ptr %tud, i64 %slot
  %oud = load i64, ptr %tudp
  %q = call ptr @cq(ptr %r, i64 %target)
  %room = call i1 @has_room(ptr %q)
  br i1 %room, label %post_tagged, label %stop
post_tagged:
  call void @push(ptr %q, i64 %oud, i32 %cres, i32 %cfl)
  %more = and i32 %cfl, 2
  %last = icmp eq i32 %more, 0
  br i1 %last, label %untag, label %next
untag:
  store i64 #FREE#, ptr %tcqp
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
  call void @push(ptr %q0, i64 %ud, i32 %cres, i32 %cfl)
  br label %next
next:
  %h1 = add i32 %h, 1
  br label %loop
stop:
  store atomic i32 %h, ptr %headp release, align 4
  call void @bump(ptr %r)
  ret i64 1
routed:
  store atomic i32 %t32, ptr %headp release, align 4
  call void @bump(ptr %r)
  br i1 %isheld, label %top, label %recheck
recheck:
  %f2 = load atomic i32, ptr %sqfp acquire, align 4
  %held2 = and i32 %f2, 6
  %again = icmp ne i32 %held2, 0
  br i1 %again, label %top, label %done
}
"""

# Ring._queue_raw's common case
_QUEUE = r"""
; 0 queued; -EINVAL: cq_idx names no CQ; 1: the Python ring must queue it (a BPF request, a
; cancel that names another request, CQE_SKIP_SUCCESS, a full SQ, no free tag slot)
define i64 @nr_queue(ptr %r, ptr %sqe) {
{W}
  %op = load i8, ptr %sqe
  %flp = getelementptr i8, ptr %sqe, i64 1
  %fl = load i8, ptr %flp
  %udp = getelementptr i8, ptr %sqe, i64 32
  %ud = load i64, ptr %udp
  %cip = getelementptr i8, ptr %sqe, i64 48
  %ci16 = load i16, ptr %cip
  %ci = zext i16 %ci16 to i64
  %ncqs = load i64, ptr %W.ncqs
  %badcq = icmp uge i64 %ci, %ncqs
  br i1 %badcq, label %einval, label %kind
einval:
  ret i64 -22
kind:
  switch i8 %op, label %plain [ i8 37, label %python
                               i8 7, label %python
                               i8 12, label %python
                               i8 14, label %python ]
plain:
  %skip = and i8 %fl, 64
  %isskip = icmp ne i8 %skip, 0
  br i1 %isskip, label %python, label %room
room:
  %pend = call i64 @pending(ptr %r)
  %ent = load i64, ptr %W.sq_entries
  %full = icmp uge i64 %pend, %ent
  %nf = load i64, ptr %W.nfree
  %notag = icmp eq i64 %nf, 0
  %cannot = or i1 %full, %notag
  br i1 %cannot, label %python, label %queue
python:
  ret i64 1
queue:
  %nf1 = sub i64 %nf, 1
  store i64 %nf1, ptr %W.nfree
  %fr = load ptr, ptr %W.free
  %frp = getelementptr i64, ptr %fr, i64 %nf1
  %slot = load i64, ptr %frp
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
  %soff = mul i64 %idx, 64
  %sqes = load ptr, ptr %W.sqes
  %dst = getelementptr i8, ptr %sqes, i64 %soff
  call void @llvm.memcpy.p0.p0.i64(ptr %dst, ptr %sqe, i64 64, i1 false)
  %tag = or i64 %slot, #TAG_BASE#
  %dud = getelementptr i8, ptr %dst, i64 32
  store i64 %tag, ptr %dud
  %dci = getelementptr i8, ptr %dst, i64 48
  store i16 0, ptr %dci
  %l1 = add i64 %local, 1
  %l2 = and i64 %l1, 4294967295
  store i64 %l2, ptr %W.sq_local
  %tailp = load ptr, ptr %W.sq_tail
  %l32 = trunc i64 %l2 to i32
  store atomic i32 %l32, ptr %tailp release, align 4
  call void @bump(ptr %r)
  ret i64 0
}
"""

# The helpers of jit_lift.NATIVE_HELPERS, with the JIT's helper signature
_HELPERS = r"""
; 164 iouring_queue_sqe(ctx, sqe, len)  (Helpers.queue_sqe)
define i64 @nh_queue_sqe(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
  %r = call ptr @session(ptr %st)
  %on = icmp ne ptr %r, null
  br i1 %on, label %fast, label %python
fast:
  %len = and i64 %a3, 4294967295
  %is64 = icmp eq i64 %len, 64
  br i1 %is64, label %find, label %slow
find:
  %p = call ptr @host(ptr %st, i64 %a2, i64 64, i64 1)
  %found = icmp ne ptr %p, null
  br i1 %found, label %queue, label %slow
queue:
  %rc = call i64 @nr_queue(ptr %r, ptr %p)
  %py = icmp eq i64 %rc, 1
  br i1 %py, label %slow, label %done
done:
  ret i64 %rc
slow:
  %v = call i64 @slow(ptr %r, ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %v
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; 165 iouring_emit_cqe(ctx, cq, user_data, res, flags)  (Helpers.emit_cqe)
define i64 @nh_emit_cqe(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
  %r = call ptr @session(ptr %st)
{W}
  %on = icmp ne ptr %r, null
  br i1 %on, label %fast, label %python
fast:
  %ci = and i64 %a2, 4294967295
  %ncqs = load i64, ptr %W.ncqs
  %bad = icmp uge i64 %ci, %ncqs
  br i1 %bad, label %einval, label %drain
einval:
  ret i64 -22
drain:
  %d = call i64 @nr_drain(ptr %r)
  %drained = icmp eq i64 %d, 0
  br i1 %drained, label %post, label %slow
post:
  %q = call ptr @cq(ptr %r, i64 %ci)
  %bp = getelementptr i64, ptr %q, i64 #CQ_BACKLOG#
  %b = load i64, ptr %bp
  %hasb = icmp ne i64 %b, 0
  br i1 %hasb, label %slow, label %room
room:
  %ok = call i1 @has_room(ptr %q)
  br i1 %ok, label %push, label %no_room
no_room:
  ; the CQ is full (-ENOMEM), or only its native buffer is (the Python ring posts it)
  %cp = getelementptr i64, ptr %q, i64 #CQ_COUNT#
  %c = load i64, ptr %cp
  %lp = getelementptr i64, ptr %q, i64 #CQ_LIMIT#
  %limit = load i64, ptr %lp
  %really = icmp uge i64 %c, %limit
  br i1 %really, label %full, label %slow
full:
  %op = getelementptr i64, ptr %q, i64 #CQ_OVERFLOW#
  %o = load i64, ptr %op
  %o1 = add i64 %o, 1
  store i64 %o1, ptr %op
  ret i64 -12
push:
  %res = trunc i64 %a4 to i32
  %fl = trunc i64 %a5 to i32
  call void @push(ptr %q, i64 %a3, i32 %res, i32 %fl)
  call void @bump(ptr %r)
  ret i64 0
slow:
  %v = call i64 @slow(ptr %r, ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %v
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; 166 iouring_reap_cqe(ctx, cq, out, len)  (Helpers.reap_cqe)
define i64 @nh_reap_cqe(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
  %r = call ptr @session(ptr %st)
{W}
  %on = icmp ne ptr %r, null
  br i1 %on, label %fast, label %python
fast:
  %ci = and i64 %a2, 4294967295
  %len = and i64 %a4, 4294967295
  %ncqs = load i64, ptr %W.ncqs
  %okcq = icmp ult i64 %ci, %ncqs
  %is16 = icmp eq i64 %len, 16
  %okargs = and i1 %okcq, %is16
  br i1 %okargs, label %find, label %slow
find:
  %out = call ptr @host(ptr %st, i64 %a3, i64 16, i64 2)
  %found = icmp ne ptr %out, null
  br i1 %found, label %drain, label %slow
drain:
  %d = call i64 @nr_drain(ptr %r)
  %drained = icmp eq i64 %d, 0
  br i1 %drained, label %take, label %slow
take:
  %q = call ptr @cq(ptr %r, i64 %ci)
  %bp = getelementptr i64, ptr %q, i64 #CQ_BACKLOG#
  %b = load i64, ptr %bp
  %hasb = icmp ne i64 %b, 0
  br i1 %hasb, label %slow, label %count
count:
  %cp = getelementptr i64, ptr %q, i64 #CQ_COUNT#
  %c = load i64, ptr %cp
  %empty = icmp eq i64 %c, 0
  br i1 %empty, label %enoent, label %pop
enoent:
  call void @llvm.memset.p0.i64(ptr %out, i8 0, i64 16, i1 false)
  ret i64 -2
pop:
  %hp = getelementptr i64, ptr %q, i64 #CQ_HEAD#
  %h = load i64, ptr %hp
  %bufp = getelementptr i64, ptr %q, i64 #CQ_BUF#
  %buf = load ptr, ptr %bufp
  %off = mul i64 %h, 16
  %e = getelementptr i8, ptr %buf, i64 %off
  call void @llvm.memcpy.p0.p0.i64(ptr %out, ptr %e, i64 16, i1 false)
  %h1 = add i64 %h, 1
  %sp = getelementptr i64, ptr %q, i64 #CQ_SIZE#
  %s = load i64, ptr %sp
  %wrap = icmp eq i64 %h1, %s
  %h2 = select i1 %wrap, i64 0, i64 %h1
  store i64 %h2, ptr %hp
  %c1 = sub i64 %c, 1
  store i64 %c1, ptr %cp
  call void @bump(ptr %r)
  ret i64 0
slow:
  %v = call i64 @slow(ptr %r, ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %v
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; process_vm_readv/writev of this process: `size` bytes between `local` and user address
; `user`; the bytes moved, or -errno
define internal i64 @vm_copy(ptr %r, ptr %fn, ptr %local, i64 %user, i64 %size) alwaysinline {
{W}
  %liov = alloca [2 x i64]
  %riov = alloca [2 x i64]
  %laddr = ptrtoint ptr %local to i64
  store i64 %laddr, ptr %liov
  %llen = getelementptr i64, ptr %liov, i64 1
  store i64 %size, ptr %llen
  store i64 %user, ptr %riov
  %rlen = getelementptr i64, ptr %riov, i64 1
  store i64 %size, ptr %rlen
  %pid = load i64, ptr %W.pid
  %n = call i64 %fn(i64 %pid, ptr %liov, i64 1, ptr %riov, i64 1, i64 0)
  %bad = icmp slt i64 %n, 0
  br i1 %bad, label %err, label %ok
ok:
  ret i64 %n
err:
  %loc = load ptr, ptr %W.errno
  %ep = call ptr %loc()
  %e = load i32, ptr %ep
  %e64 = sext i32 %e to i64
  %neg = sub i64 0, %e64
  ret i64 %neg
}

; a sandbox refusing the call (EPERM, ENOSYS, EACCES) is not a bad pointer: Python raises it
define internal i1 @refused(i64 %n) alwaysinline {
  %perm = icmp eq i64 %n, -1
  %nosys = icmp eq i64 %n, -38
  %acces = icmp eq i64 %n, -13
  %a = or i1 %perm, %nosys
  %b = or i1 %a, %acces
  ret i1 %b
}

; `size` bytes between program memory at `local` (engine address) and user address `user`,
; with process_vm_readv (`into_program`, which zeroes the buffer on a fault) or process_vm_writev:
; 0, -EFAULT, or 1 when the Python helper must do it (no session, a size it checks, a buffer
; the region table does not serve, a sandbox refusing the call -- the Python helper raises)
define internal i64 @copy_user(ptr %st, i64 %local, i64 %user, i64 %size, i1 %into_program) alwaysinline {
entry:
  %r = call ptr @session(ptr %st)
  %on = icmp ne ptr %r, null
  %some = icmp ne i64 %size, 0
  %small = icmp ule i64 %size, 16777216
  %sized = and i1 %some, %small
  %go = and i1 %on, %sized
  br i1 %go, label %find, label %python
find:
  %access = select i1 %into_program, i64 2, i64 1
  %buf = call ptr @host(ptr %st, i64 %local, i64 %size, i64 %access)
  %found = icmp ne ptr %buf, null
  br i1 %found, label %copy, label %python
copy:
  %which = select i1 %into_program, i64 #RG_VM_READV#, i64 #RG_VM_WRITEV#
  %fnp = getelementptr i64, ptr %r, i64 %which
  %fn = load ptr, ptr %fnp
  %n = call i64 @vm_copy(ptr %r, ptr %fn, ptr %buf, i64 %user, i64 %size)
  %all = icmp eq i64 %n, %size
  br i1 %all, label %done, label %short
done:
  ret i64 0
short:
  %sandbox = call i1 @refused(i64 %n)
  br i1 %sandbox, label %python, label %fault
fault:
  br i1 %into_program, label %zero, label %efault
zero:
  call void @llvm.memset.p0.i64(ptr %buf, i8 0, i64 %size, i1 false)
  br label %efault
efault:
  ret i64 -14
python:
  ret i64 1
}

; 148 bpf_copy_from_user(dst, size, uptr)  (Helpers.copy_from_user)
define i64 @nh_copy_from_user(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
entry:
  %size = and i64 %a2, 4294967295
  %rc = call i64 @copy_user(ptr %st, i64 %a1, i64 %a3, i64 %size, i1 true)
  %py = icmp eq i64 %rc, 1
  br i1 %py, label %python, label %done
done:
  ret i64 %rc
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; 167 bpf_copy_to_user(uptr, src, size)  (Helpers.copy_to_user)
define i64 @nh_copy_to_user(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
entry:
  %size = and i64 %a3, 4294967295
  %rc = call i64 @copy_user(ptr %st, i64 %a2, i64 %a1, i64 %size, i1 false)
  %py = icmp eq i64 %rc, 1
  br i1 %py, label %python, label %done
done:
  ret i64 %rc
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; 5 ktime_get_ns(): CLOCK_MONOTONIC, as time.monotonic_ns()
define i64 @nh_ktime_get_ns(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
entry:
  %r = call ptr @session(ptr %st)
  %on = icmp ne ptr %r, null
  br i1 %on, label %clock, label %python
clock:
  %ts = alloca [2 x i64]
  %cp = getelementptr i64, ptr %r, i64 #RG_CLOCK#
  %gettime = load ptr, ptr %cp
  call i32 %gettime(i32 1, ptr %ts)
  %sec = load i64, ptr %ts
  %nsp = getelementptr i64, ptr %ts, i64 1
  %nsec = load i64, ptr %nsp
  %secns = mul i64 %sec, 1000000000
  %now = add i64 %secns, %nsec
  ret i64 %now
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; the record of the map whose handle is `handle`, or null
define internal ptr @find_map(ptr %st, i64 %handle) alwaysinline {
entry:
  %mp = getelementptr i64, ptr %st, i64 #ST_MAPS#
  %maps = load ptr, ptr %mp
  %none = icmp eq ptr %maps, null
  br i1 %none, label %missing, label %scan
scan:
  %n = load i64, ptr %maps
  %recs = getelementptr i64, ptr %maps, i64 1
  br label %loop
loop:
  %i = phi i64 [0, %scan], [%i1, %next]
  %end = icmp eq i64 %i, %n
  br i1 %end, label %missing, label %test
test:
  %roff = mul i64 %i, #MPD#
  %rec = getelementptr i8, ptr %recs, i64 %roff
  %h = load i64, ptr %rec
  %hit = icmp eq i64 %h, %handle
  br i1 %hit, label %found, label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
found:
  ret ptr %rec
missing:
  ret ptr null
}

define internal i64 @word(ptr %rec, i64 %i) alwaysinline {
  %p = getelementptr i64, ptr %rec, i64 %i
  %v = load i64, ptr %p
  ret i64 %v
}

; a hash map's value address for the key at host pointer `key` (HashIndex): 0 when the key is
; absent, 1 when the index cannot say (the caller asks Python)
define internal i64 @hash_find(ptr %rec, ptr %key) alwaysinline {
entry:
  %ks = call i64 @word(ptr %rec, i64 #MP_KEY_SIZE#)
  %mask = call i64 @word(ptr %rec, i64 #MP_MASK#)
  %slotsw = call i64 @word(ptr %rec, i64 #MP_SLOTS#)
  %slots = inttoptr i64 %slotsw to ptr
  %stride = call i64 @word(ptr %rec, i64 #MP_STRIDE#)
  br label %hash
hash:
  %hi = phi i64 [0, %entry], [%hi1, %hash]
  %hv = phi i64 [-3750763034362895579, %entry], [%hv2, %hash]
  %bp = getelementptr i8, ptr %key, i64 %hi
  %b = load i8, ptr %bp
  %b64 = zext i8 %b to i64
  %hv1 = xor i64 %hv, %b64
  %hv2 = mul i64 %hv1, 1099511628211
  %hi1 = add i64 %hi, 1
  %hdone = icmp eq i64 %hi1, %ks
  br i1 %hdone, label %probe_start, label %hash
probe_start:
  %start = and i64 %hv2, %mask
  br label %probe
probe:
  %idx = phi i64 [%start, %probe_start], [%idx1, %next]
  %tries = phi i64 [0, %probe_start], [%tries1, %next]
  %soff = mul i64 %idx, %stride
  %slot = getelementptr i8, ptr %slots, i64 %soff
  %addr = load i64, ptr %slot
  %empty = icmp eq i64 %addr, 0
  br i1 %empty, label %absent, label %live
absent:
  ret i64 0
live:
  %tomb = icmp eq i64 %addr, 1
  br i1 %tomb, label %next, label %compare
compare:
  %skey = getelementptr i8, ptr %slot, i64 8
  br label %cmp
cmp:
  %ci = phi i64 [0, %compare], [%ci1, %cmp_next]
  %ap = getelementptr i8, ptr %skey, i64 %ci
  %a = load i8, ptr %ap
  %kp = getelementptr i8, ptr %key, i64 %ci
  %k = load i8, ptr %kp
  %same = icmp eq i8 %a, %k
  br i1 %same, label %cmp_next, label %next
cmp_next:
  %ci1 = add i64 %ci, 1
  %all = icmp eq i64 %ci1, %ks
  br i1 %all, label %match, label %cmp
match:
  ret i64 %addr
next:
  %idx2 = add i64 %idx, 1
  %idx1 = and i64 %idx2, %mask
  %tries1 = add i64 %tries, 1
  %wrapped = icmp ugt i64 %tries1, %mask
  br i1 %wrapped, label %unsure, label %probe
unsure:
  ret i64 1
}

; 2 map_update_elem(map, key, value, flags) with flags BPF_ANY or BPF_EXIST: an array element,
; or a hash value whose key exists, written in place (ArrayMap.update / HashMap.update)
define i64 @nh_map_update(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
entry:
  %rec = call ptr @find_map(ptr %st, i64 %a1)
  %known = icmp ne ptr %rec, null
  %plain = and i64 %a4, -3
  %simple = icmp eq i64 %plain, 0
  %ok = and i1 %known, %simple
  br i1 %ok, label %key, label %python
key:
  %ks = call i64 @word(ptr %rec, i64 #MP_KEY_SIZE#)
  %kp = call ptr @host(ptr %st, i64 %a2, i64 %ks, i64 1)
  %vs = call i64 @word(ptr %rec, i64 #MP_VALUE_SIZE#)
  %vp = call ptr @host(ptr %st, i64 %a3, i64 %vs, i64 1)
  %kok = icmp ne ptr %kp, null
  %vok = icmp ne ptr %vp, null
  %both = and i1 %kok, %vok
  br i1 %both, label %kind, label %python
kind:
  %kd = call i64 @word(ptr %rec, i64 #MP_KIND#)
  %isarray = icmp eq i64 %kd, 2
  br i1 %isarray, label %index, label %hashed
index:
  %k32 = load i32, ptr %kp, align 1
  %k = zext i32 %k32 to i64
  %max = call i64 @word(ptr %rec, i64 #MP_MAX_ENTRIES#)
  %inside = icmp ult i64 %k, %max
  br i1 %inside, label %store, label %e2big
e2big:
  ret i64 -7
store:
  %dw = call i64 @word(ptr %rec, i64 #MP_DATA#)
  %data = inttoptr i64 %dw to ptr
  %off = mul i64 %k, %vs
  %dst = getelementptr i8, ptr %data, i64 %off
  call void @llvm.memmove.p0.p0.i64(ptr %dst, ptr %vp, i64 %vs, i1 false)
  ret i64 0
hashed:
  %addr = call i64 @hash_find(ptr %rec, ptr %kp)
  %present = icmp ugt i64 %addr, 1
  br i1 %present, label %in_place, label %python
in_place:
  %hdst = call ptr @host(ptr %st, i64 %addr, i64 %vs, i64 2)
  %writable = icmp ne ptr %hdst, null
  br i1 %writable, label %hstore, label %python
hstore:
  call void @llvm.memmove.p0.p0.i64(ptr %hdst, ptr %vp, i64 %vs, i1 false)
  ret i64 0
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}

; 1 map_lookup_elem(map, key): an array element whose region exists, or a hash value
; (ArrayMap.lookup / HashMap.lookup)
define i64 @nh_map_lookup(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5) {
entry:
  %rec = call ptr @find_map(ptr %st, i64 %a1)
  %known = icmp ne ptr %rec, null
  br i1 %known, label %key, label %python
key:
  %ks = call i64 @word(ptr %rec, i64 #MP_KEY_SIZE#)
  %kp = call ptr @host(ptr %st, i64 %a2, i64 %ks, i64 1)
  %found = icmp ne ptr %kp, null
  br i1 %found, label %kind, label %python
kind:
  %kd = call i64 @word(ptr %rec, i64 #MP_KIND#)
  %isarray = icmp eq i64 %kd, 2
  br i1 %isarray, label %index, label %hashed
hashed:
  %haddr = call i64 @hash_find(ptr %rec, ptr %kp)
  %unsure = icmp eq i64 %haddr, 1
  br i1 %unsure, label %python, label %hdone
hdone:
  ret i64 %haddr
index:
  %k32 = load i32, ptr %kp, align 1
  %k = zext i32 %k32 to i64
  %max = call i64 @word(ptr %rec, i64 #MP_MAX_ENTRIES#)
  %inside = icmp ult i64 %k, %max
  br i1 %inside, label %element, label %nokey
nokey:
  ret i64 0
element:
  %aw = call i64 @word(ptr %rec, i64 #MP_ADDRS#)
  %addrs = inttoptr i64 %aw to ptr
  %slotp = getelementptr i64, ptr %addrs, i64 %k
  %addr = load i64, ptr %slotp
  %cached = icmp ne i64 %addr, 0
  br i1 %cached, label %done, label %first
done:
  ret i64 %addr
first:
  %v = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  %sp = getelementptr i64, ptr %st, i64 #ST_STATUS#
  %status = load i64, ptr %sp
  %ok = icmp eq i64 %status, 0
  br i1 %ok, label %remember, label %failed
remember:
  store i64 %v, ptr %slotp
  ret i64 %v
failed:
  ret i64 %v
python:
  %w = call i64 @python_helper(ptr %st, i64 %pc, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5)
  ret i64 %w
}
"""

# Ring._progress (one pass over the parked requests), Ring._run, Ring._complete, Ring.wait_cqe
_SCAN = r"""
; move parked[k..n) down to parked[w..) and set nparked
define internal void @close_gap(ptr %r, i64 %w, i64 %k) alwaysinline {
{W}
  %n = load i64, ptr %W.nparked
  %base = load ptr, ptr %W.parked
  %left = sub i64 %n, %k
  %same = icmp eq i64 %w, %k
  br i1 %same, label %done, label %move
move:
  %doff = mul i64 %w, #RQD#
  %dst = getelementptr i8, ptr %base, i64 %doff
  %soff = mul i64 %k, #RQD#
  %src = getelementptr i8, ptr %base, i64 %soff
  %bytes = mul i64 %left, #RQD#
  call void @llvm.memmove.p0.p0.i64(ptr %dst, ptr %src, i64 %bytes, i1 false)
  br label %done
done:
  %n1 = add i64 %w, %left
  store i64 %n1, ptr %W.nparked
  ret void
}

define internal void @hand_back(ptr %r, ptr %rec) alwaysinline {
{W}
  call void @llvm.memcpy.p0.p0.i64(ptr %W.rec0, ptr %rec, i64 #RQD#, i1 false)
  ret void
}

; post a finished request's completion (Ring._complete): false when the Python ring must
define internal i1 @complete(ptr %r, i64 %ud, i64 %ci) alwaysinline {
{W}
  %p = call i64 @pending(ptr %r)
  %any = icmp ne i64 %p, 0
  br i1 %any, label %submit, label %drain
submit:
  %res = call i64 @enter(ptr %r, i64 %p, i64 0, i64 0, ptr null, i64 0)
  %bad = icmp slt i64 %res, 0
  br i1 %bad, label %no, label %drain
drain:
  %d = call i64 @nr_drain(ptr %r)
  %drained = icmp eq i64 %d, 0
  br i1 %drained, label %post, label %no
post:
  %q = call ptr @cq(ptr %r, i64 %ci)
  %room = call i1 @has_room(ptr %q)
  br i1 %room, label %yes, label %no
yes:
  call void @push(ptr %q, i64 %ud, i32 0, i32 0)
  call void @bump(ptr %r)
  ret i1 true
no:
  ret i1 false
}

; one pass over the parked requests: run each whose CQ holds wait_nr CQEs
define i64 @nr_scan(ptr %r) {
entry:
{W}
  %n = load i64, ptr %W.nparked
  %base = load ptr, ptr %W.parked
  %progs = load ptr, ptr %W.programs
  %ncqs = load i64, ptr %W.ncqs
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1k, %kept], [%i1, %completed]
  %w = phi i64 [0, %entry], [%w1, %kept], [%w, %completed]
  %end = icmp eq i64 %i, %n
  br i1 %end, label %finished, label %look
finished:
  store i64 %w, ptr %W.nparked
  ret i64 0
look:
  %roff = mul i64 %i, #RQD#
  %rec = getelementptr i8, ptr %base, i64 %roff
  %wnp = getelementptr i64, ptr %rec, i64 #RQ_WAIT_NR#
  %wn = load i64, ptr %wnp
  %wip = getelementptr i64, ptr %rec, i64 #RQ_WAIT_IDX#
  %wi = load i64, ptr %wip
  %q = call ptr @cq(ptr %r, i64 %wi)
  %cp = getelementptr i64, ptr %q, i64 #CQ_COUNT#
  %c = load i64, ptr %cp
  %bp = getelementptr i64, ptr %q, i64 #CQ_BACKLOG#
  %b = load i64, ptr %bp
  %have = add i64 %c, %b
  %ready = icmp uge i64 %have, %wn
  br i1 %ready, label %runnable, label %keep_same
keep_same:
  br label %keep
runnable:
  %pi = load i64, ptr %rec
  %poff = mul i64 %pi, #PGD#
  %prog = getelementptr i8, ptr %progs, i64 %poff
  %natp = getelementptr i64, ptr %prog, i64 #PG_NATIVE#
  %nat = load i64, ptr %natp
  %isnat = icmp ne i64 %nat, 0
  br i1 %isnat, label %budget, label %to_python
to_python:
  call void @close_gap(ptr %r, i64 %w, i64 %i)
  ret i64 2
budget:
  %rl = load i64, ptr %W.runs_left
  %spent = icmp eq i64 %rl, 0
  br i1 %spent, label %out_of_runs, label %run
out_of_runs:
  call void @close_gap(ptr %r, i64 %w, i64 %i)
  ret i64 1
run:
  %rl1 = sub i64 %rl, 1
  store i64 %rl1, ptr %W.runs_left
  %udp = getelementptr i64, ptr %rec, i64 #RQ_USER_DATA#
  %ud = load i64, ptr %udp
  %ctxp = getelementptr i64, ptr %prog, i64 #PG_CTX#
  %ctx = load ptr, ptr %ctxp
  store i64 %ud, ptr %ctx
  %waitf = getelementptr i8, ptr %ctx, i64 8
  store i64 0, ptr %waitf
  %frp = getelementptr i64, ptr %prog, i64 #PG_FRAME#
  %frame = load ptr, ptr %frp
  %hasframe = icmp ne ptr %frame, null
  br i1 %hasframe, label %zero, label %call
zero:
  call void @llvm.memset.p0.i64(ptr %frame, i8 0, i64 512, i1 false)
  br label %call
call:
  %stp = getelementptr i64, ptr %prog, i64 #PG_STATE#
  %st = load ptr, ptr %stp
  %statusp = getelementptr i64, ptr %st, i64 #ST_STATUS#
  store i64 0, ptr %statusp
  %bgp = getelementptr i64, ptr %prog, i64 #PG_BUDGET#
  %bg = load i64, ptr %bgp
  %stbp = getelementptr i64, ptr %st, i64 #ST_BUDGET#
  store i64 %bg, ptr %stbp
  %entp = getelementptr i64, ptr %prog, i64 #PG_ENTRY#
  %fn = load ptr, ptr %entp
  %cap = getelementptr i64, ptr %prog, i64 #PG_CTX_ADDR#
  %ctxaddr = load i64, ptr %cap
  %r0 = call i64 %fn(ptr %st, i64 %ctxaddr, i64 0, i64 0, i64 0, i64 0)
  %retp = load ptr, ptr %W.retired
  %ret = load i64, ptr %retp
  %deleted = icmp ne i64 %ret, 0
  br i1 %deleted, label %release, label %counted
release:
  %er = load ptr, ptr %W.end_run
  call void %er(ptr %st)
  br label %counted
counted:
  %runsp = getelementptr i64, ptr %rec, i64 #RQ_RUNS#
  %runs = load i64, ptr %runsp
  %runs1 = add i64 %runs, 1
  store i64 %runs1, ptr %runsp
  %pruns = getelementptr i64, ptr %prog, i64 #PG_RUNS#
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
  ret i64 3
ran:
  %left = load i64, ptr %stbp
  %used = sub i64 %bg, %left
  %exp = getelementptr i64, ptr %prog, i64 #PG_EXECUTED#
  store i64 %used, ptr %exp
  %spp = getelementptr i64, ptr %prog, i64 #PG_SPENT#
  %sp0 = load i64, ptr %spp
  %sp1 = add i64 %sp0, %used
  store i64 %sp1, ptr %spp
  %nr32p = getelementptr i8, ptr %ctx, i64 8
  %nr32 = load i32, ptr %nr32p
  %wi32p = getelementptr i8, ptr %ctx, i64 12
  %wi32 = load i32, ptr %wi32p
  %nr = zext i32 %nr32 to i64
  %nwi = zext i32 %wi32 to i64
  %finishedreq = icmp eq i64 %nr, 0
  br i1 %finishedreq, label %finish, label %repark
finish:
  %cip = getelementptr i64, ptr %rec, i64 #RQ_CQ_IDX#
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
  ret i64 2
completed:
  %i1 = add i64 %i, 1
  br label %loop
complete_python:
  call void @hand_back(ptr %r, ptr %rec)
  %after3 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after3)
  ret i64 4
repark:
  %badwait = icmp uge i64 %nwi, %ncqs
  br i1 %badwait, label %bad, label %park
bad:
  store i64 %nr, ptr %wnp
  store i64 %nwi, ptr %wip
  call void @hand_back(ptr %r, ptr %rec)
  %after4 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w, i64 %after4)
  ret i64 5
park:
  store i64 %nr, ptr %wnp
  store i64 %nwi, ptr %wip
  %pw2 = load i64, ptr %W.py_work
  %busy2 = icmp ne i64 %pw2, 0
  br i1 %busy2, label %work_after_park, label %keep
work_after_park:
  %dst2off = mul i64 %w, #RQD#
  %dst2 = getelementptr i8, ptr %base, i64 %dst2off
  call void @llvm.memmove.p0.p0.i64(ptr %dst2, ptr %rec, i64 #RQD#, i1 false)
  %w2 = add i64 %w, 1
  %after5 = add i64 %i, 1
  call void @close_gap(ptr %r, i64 %w2, i64 %after5)
  ret i64 2
keep:
  %dstoff = mul i64 %w, #RQD#
  %dst = getelementptr i8, ptr %base, i64 %dstoff
  %moved = icmp ne i64 %w, %i
  br i1 %moved, label %copy, label %kept
copy:
  call void @llvm.memmove.p0.p0.i64(ptr %dst, ptr %rec, i64 #RQD#, i1 false)
  br label %kept
kept:
  %w1 = add i64 %w, 1
  %i1k = add i64 %i, 1
  br label %loop
}

; Ring.wait_cqe's loop for CQ `ci` (and _wait_timed's, until `deadline`): READY, or a code that
; hands over to the Python ring
define i64 @nr_wait(ptr %r, i64 %ci) {
{W}
  br label %top
top:
  %d = call i64 @nr_drain(ptr %r)
  %drained = icmp eq i64 %d, 0
  br i1 %drained, label %parked, label %python
python:
  ret i64 2
parked:
  %np = load i64, ptr %W.nparked
  %none = icmp eq i64 %np, 0
  br i1 %none, label %check, label %progress
progress:
  %before = load i64, ptr %W.version
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
  %d2 = call i64 @nr_drain(ptr %r)
  %drained2 = icmp eq i64 %d2, 0
  br i1 %drained2, label %progress, label %python
check:
  %q = call ptr @cq(ptr %r, i64 %ci)
  %cp = getelementptr i64, ptr %q, i64 #CQ_COUNT#
  %c = load i64, ptr %cp
  %bkp = getelementptr i64, ptr %q, i64 #CQ_BACKLOG#
  %bk = load i64, ptr %bkp
  %all = or i64 %c, %bk
  %has = icmp ne i64 %all, 0
  br i1 %has, label %ready, label %block
ready:
  ret i64 0
block:
  %p = call i64 @pending(ptr %r)
  %inf = load i64, ptr %W.in_flight
  %idle = or i64 %p, %inf
  %dead = icmp eq i64 %idle, 0
  br i1 %dead, label %stalled, label %enter
stalled:
  ret i64 6
enter:
  %dl = load i64, ptr %W.deadline
  %timed = icmp ne i64 %dl, 0
  br i1 %timed, label %clock, label %forever
forever:
  %res = call i64 @enter(ptr %r, i64 %p, i64 1, i64 1, ptr null, i64 0)
  br label %entered
clock:
  %gettime = load ptr, ptr %W.clock
  call i32 %gettime(i32 1, ptr %W.now_sec)
  %sec = load i64, ptr %W.now_sec
  %nsec = load i64, ptr %W.now_nsec
  %secns = mul i64 %sec, 1000000000
  %now = add i64 %secns, %nsec
  %left = sub i64 %dl, %now
  %over = icmp sle i64 %left, 0
  br i1 %over, label %timed_out, label %timed_enter
timed_out:
  ret i64 7
timed_enter:
  %lsec = udiv i64 %left, 1000000000
  %lnsec = urem i64 %left, 1000000000
  store i64 %lsec, ptr %W.ts_sec
  store i64 %lnsec, ptr %W.ts_nsec
  %tres = call i64 @enter(ptr %r, i64 %p, i64 1, i64 9, ptr %W.arg_sigmask, i64 24)
  br label %entered
entered:
  %rv = phi i64 [%res, %forever], [%tres, %timed_enter]
  %ok = icmp sge i64 %rv, 0
  br i1 %ok, label %top, label %failed
failed:
  %e = sub i64 0, %rv
  %busy = icmp eq i64 %e, 16
  %again2 = icmp eq i64 %e, 11
  %expired = icmp eq i64 %e, 62
  %retry1 = or i1 %busy, %again2
  %retry = or i1 %retry1, %expired
  br i1 %retry, label %top, label %python
}
"""

_DECLS = """
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare void @llvm.memmove.p0.p0.i64(ptr, ptr, i64, i1)
"""

FUNCTIONS = ("nr_drain", "nr_queue", "nr_scan", "nr_wait",
             "nh_queue_sqe", "nh_emit_cqe", "nh_reap_cqe", "nh_map_lookup", "nh_map_update",
             "nh_copy_from_user", "nh_copy_to_user", "nh_ktime_get_ns")
TEXT = _fill(_PIECES + _DRAIN + _QUEUE + _HELPERS + _SCAN + _DECLS)
