"""A Ring's hot path in native code: JIT-compiled requests chained without a Python call.

Why.  In a BPF-driven chain each round is: the kernel posts a CQE, the runtime routes it to its
CQ, the parked request's program runs, reaps it and queues the next SQE, and one io_uring_enter
submits that and waits.  Done from Python, the runtime's bookkeeping and the helper callbacks
cost ~40 us a round against ~0.55 us for the same loop in C (bench/ring.py).  Here the whole
round is native: `native_ring_ir` routes CQEs, queues SQEs, runs the parked requests'
JIT-compiled programs (their RFC helpers, map lookups and the clock are native functions too)
and calls io_uring_enter itself.
Python wakes only when a CQE reaches the CQ the application waits on, or for a case only the
Python ring handles.

How it fits the Python ring, which stays the reference.  `Ring.wait_cqe` hands a wait to
`NativeRing.wait` when requests are parked and every registered program is JIT-compiled.  A
wait *exports* the ring's state (SQ tail, tag table, every CQ's entries, the parked requests) into
native arrays, runs `nr_wait`, and *imports* it back, so between waits the Python ring's own
structures are the only truth and every Python path (timed waits, peeks, faults, close) is
unchanged.  `nr_wait` returns a code instead of doing anything unusual (ABI notes in
native_ring_ir); a helper's uncommon case calls back into Python (`_slow`), which imports the
CQ/tag/SQ state, runs the Python helper and exports it again.

A program is run natively when it is JIT-compiled; other programs' requests are run by the
Python ring when they become runnable.  Maps: array elements and hash values are found through
the maps table the engine instance builds (`HashIndex` for hash keys); a hash value a native run
deletes is freed when that run ends (`_end_run`), as after a Python run.  Not re-entrant; one
thread, as the Ring.
"""
from __future__ import annotations

import ctypes
import functools
import os
import struct
import time
import weakref
from collections import deque
from typing import Any, Sequence

from ... import helpers as registry
from ...uapi import IORING_ENTER_REGISTERED_RING
from .. import ring_sys
from ..ring_protocol import BpfRequest, CompletionQueue, NativeHost, RingState
from . import native_helpers_ir as helpers_ir
from . import native_ring_ir as ir
from . import native_run_ir as run_ir
from .jit import Jit, compile_module

__all__ = ["NativeRing", "NativeProgram", "FastRun", "HashIndex", "native_helpers", "MAP_WORDS",
           "RUN_WORDS", "MAX_INDEXED",
           "READY", "MORE", "PYTHON", "FAULTED", "COMPLETE", "BAD_WAIT", "STALLED", "TIMED_OUT"]

READY, MORE, PYTHON, FAULTED, COMPLETE, BAD_WAIT, STALLED, TIMED_OUT = (
    ir.READY, ir.MORE, ir.PYTHON, ir.FAULTED, ir.COMPLETE, ir.BAD_WAIT, ir.STALLED, ir.TIMED_OUT)

_U64 = ctypes.c_uint64
_VP = ctypes.c_void_p
_W = {name: i for i, name in enumerate(ir.RING_WORDS)}
_CQ = {name: i for i, name in enumerate(ir.CQ_WORDS)}
_PG = {name: i for i, name in enumerate(ir.PROGRAM_WORDS)}
MAP_WORDS = ir.MAP_WORDS
RUN_WORDS = run_ir.RUN_WORDS
_RN = {name: i for i, name in enumerate(RUN_WORDS)}
_MP = {name: i for i, name in enumerate(MAP_WORDS)}
_NCQ, _NRQ, _NPG = len(ir.CQ_WORDS), len(ir.REQUEST_WORDS), len(ir.PROGRAM_WORDS)
_CQE = struct.Struct("<QiI")
_REQUEST = struct.Struct(f"<{_NRQ}Q")      # a parked request's record (BpfRequest's fields)
_HELPER = ctypes.CFUNCTYPE(_U64, _VP, _U64, _U64, _U64, _U64, _U64, _U64)
_WAIT = ctypes.CFUNCTYPE(ctypes.c_int64, _VP, _U64)
_END_RUN = ctypes.CFUNCTYPE(None, _VP)
_FREE = ir.FREE
_M64 = (1 << 64) - 1
_RUN_BUDGET = 4096          # program runs per nr_wait call, as Ring._progress
_NATIVE_CQ = 1024           # CQEs a CQ's native buffer holds
_FAST_CHUNK = 1 << 20       # instructions a level-0 program runs natively between counts (FastRun)
_LINE = 64                  # a cache line
_FRESH = 256                # fresh tag slots a wait may take beyond the Python table (more: _slow)


def _functions() -> dict[str, int]:
    """The compiled module's function addresses (compiled once per process)."""
    return compile_module(ir.TEXT + helpers_ir.TEXT, ir.FUNCTIONS + helpers_ir.SYMBOLS, inline=True)


def native_helpers() -> dict[int, int]:
    """Helper id -> address of its native version (the registry's `native` symbols)."""
    fns = _functions()
    return {helper: fns[symbol] for helper, symbol in registry.native_symbols().items()}


_EMPTY, _TOMB = ir.SLOT_EMPTY, ir.SLOT_TOMB
MAX_INDEXED = 1 << 16       # larger hash maps are looked up in Python


def _fnv(key: bytes) -> int:
    h = ir.FNV_BASIS
    for b in key:
        h = ((h ^ b) * ir.FNV_PRIME) & _M64
    return h


class HashIndex:
    """A hash map's keys and value addresses in an open-addressing table native lookups probe
    (native_ring_ir @hash_find: FNV-1a, linear probing, tombstones).  `HashMap.update` and
    `.delete` keep it in step; it is rebuilt, and its record in the maps table repointed, when
    tombstones and keys fill three quarters of it."""

    def __init__(self, m: Any, record: Any, base: int) -> None:
        self.map, self.record, self.base = m, record, base
        self.key_size = m.key_size
        self.stride = 8 + (m.key_size + 7) // 8 * 8
        self.capacity = 8
        while self.capacity < 2 * m.max_entries:
            self.capacity *= 2
        self.rebuild()

    def rebuild(self) -> None:
        self.slots = ctypes.create_string_buffer(self.capacity * self.stride)
        self.used = 0
        for key in self.map.raw_keys():
            self.put(key, self.map.lookup(key))
        word = self.base + _MP["mask"]
        self.record[word:word + 3] = [self.capacity - 1, ctypes.addressof(self.slots), self.stride]

    def _find(self, key: bytes) -> tuple[int, int | None, bool]:
        """(slot of the key or -1, first reusable slot on the way, whether that one is empty
        rather than a tombstone)"""
        mask, stride, buf = self.capacity - 1, self.stride, self.slots
        i, reusable = _fnv(key) & mask, None
        for _ in range(self.capacity):
            addr = int.from_bytes(buf[i * stride:i * stride + 8], "little")
            if addr == _EMPTY:
                return (-1, i, True) if reusable is None else (-1, reusable, False)
            if addr == _TOMB:
                reusable = i if reusable is None else reusable
            elif buf[i * stride + 8:i * stride + 8 + self.key_size] == key:
                return i, reusable, False
            i = (i + 1) & mask
        return -1, reusable, False

    def put(self, key: bytes, address: int) -> None:
        found, free, empty = self._find(key)
        slot = found if found >= 0 else free
        if found < 0:
            # `used` counts keys and tombstones: probes end only at an empty slot
            if free is None or (empty and 4 * (self.used + 1) > 3 * self.capacity):
                self.rebuild()            # (rebuild puts every key again, this one included)
                return
            self.used += empty
        offset = slot * self.stride
        self.slots[offset + 8:offset + 8 + self.key_size] = key
        self._store(offset, address)

    def remove(self, key: bytes) -> None:
        found, _, _ = self._find(key)
        if found >= 0:
            self._store(found * self.stride, _TOMB)

    def _store(self, offset: int, address: int) -> None:
        _U64.from_buffer(self.slots, offset).value = address


class _MethodDef(ctypes.Structure):
    """struct PyMethodDef: what a builtin function object points to (and must outlive it)."""
    _fields_ = [("name", ctypes.c_char_p), ("meth", _VP), ("flags", ctypes.c_int), ("doc", ctypes.c_char_p)]


_METH_O = 0x0008
_api = ctypes.pythonapi
_new_builtin = _api.PyCFunction_NewEx
_new_builtin.restype, _new_builtin.argtypes = ctypes.py_object, (_VP, ctypes.py_object, ctypes.py_object)
_new_capsule = _api.PyCapsule_New
_new_capsule.restype, _new_capsule.argtypes = ctypes.py_object, (_VP, ctypes.c_char_p, _VP)
_API_DATA = ("PyBytes_Type", "_Py_NoneStruct")


@functools.cache
def _run_function() -> int:
    """The address of @nr_run, compiled once per process with this interpreter's C API (cached
    here too: every FastRun asks, and the module's text is ~25 us to build before the
    compiler's cache finds it)."""
    api = {name: ctypes.addressof(ctypes.c_char.in_dll(_api, name)) if name in _API_DATA
           else ctypes.cast(getattr(_api, name), _VP).value for name in run_ir.RUN_API}
    return compile_module(run_ir.run_text(api), ("nr_run",))["nr_run"]


class FastRun:
    """A JIT-compiled program's run from Python as one builtin call: `call(ctx)`.

    Why.  `Jit.run` through ctypes costs ~2.7 us a run of a 5-instruction program: a ctypes call
    with six u64 arguments is ~0.75 us alone, and the run's bookkeeping in Python the rest.
    Here the run -- the ctx copied in, frame 0 zeroed, status and budget set, the program
    called, the counters kept, the result built -- is native_ring_ir's @nr_run, made a builtin
    function (METH_O) bound to a capsule of this runner's `block` (RUN_WORDS), so a run is one
    call of a C function from the interpreter with nothing allocated but its result.

    It returns (r0, ctx after the run) like `EngineProgram.run`; an int, the JIT's status, when
    the run faulted (the caller raises the fault from the JIT, `Jit.last_fault`); or None when it
    did not run: a ctx that is not `bytes` of the region's size, or memory mapped or unmapped
    since the program's region table was built (the memory's `generation` word moved), which
    the caller's full path handles and then `sync`s.  Only for programs that call no helper:
    the full path keeps a run's helper bookkeeping (ring helpers, map runs, table rebuilds under
    a running program)."""

    def __init__(self, jit: Jit, region: Any, memory: Any, block: ctypes.Array) -> None:
        self.block = block
        self._ctx = (ctypes.c_char * len(region.buf)).from_buffer(region.buf)
        self._memory = memory
        for name, value in {"gen": ctypes.addressof(memory.generation), "ctx": ctypes.addressof(self._ctx),
                            "ctx_addr": region.base, "size": len(region.buf)}.items():
            block[_RN[name]] = value
        self._bind(jit)
        self._def = _MethodDef(b"run", _run_function(), _METH_O, None)
        self._capsule = _new_capsule(ctypes.addressof(block), None, None)
        self.call = _new_builtin(ctypes.addressof(self._def), self._capsule, None)

    def _bind(self, jit: Jit) -> None:
        b = self.block
        entry, state, frame, budget = jit.native_call()     # (brings the region table up to date)
        b[_RN["gen_seen"]] = self._memory.generation[0]
        b[_RN["entry"]], b[_RN["state"]], b[_RN["frame"]], b[_RN["budget"]] = entry, state, frame, budget
        b[_RN["spent"]] = 0
        b[_RN["limit"]] = _FAST_CHUNK if jit.tier == 0 else _M64

    def sync(self, jit: Jit) -> None:
        """After a run by the full path: the instructions the native runs spent counted (which
        tiers a level-0 program up, as its own runs do: Jit.leave_native_wait), the entry and
        the region table up to date, and the table's generation noted."""
        spent = self.block[_RN["spent"]]
        if spent:
            jit.leave_native_wait(jit.executed, spent)
        self._bind(jit)


class NativeProgram:
    """What `nr_scan` needs to run one program: filled from its JIT at every export."""

    def __init__(self, program: Any, jit: Jit, ctx_region: Any) -> None:
        self.program, self.jit, self.ctx_region = program, jit, ctx_region
        self._ctx = (ctypes.c_char * len(ctx_region.buf)).from_buffer(ctx_region.buf)

    def record(self) -> list[int]:
        values = [0] * _NPG
        (values[_PG["entry"]], values[_PG["state"]], values[_PG["frame"]],
         values[_PG["budget"]]) = self.jit.native_call()
        values[_PG["ctx"]] = ctypes.addressof(self._ctx)
        values[_PG["ctx_addr"]] = self.ctx_region.base
        values[_PG["native"]] = 1
        return values


class NativeRing:
    """The native state of one `ring.Ring` and the calls that use it (see the module docstring).

    `host` is the ring (ring_protocol.NativeHost: it exports and imports its `RingState`),
    `raw` its kernel ring, `cqs` its CQs, `instance` the registered object's engine instance;
    `programs[i]` is the NativeProgram of the ring's program i, or None when the Python ring
    must run it."""

    def __init__(self, host: NativeHost, raw: ring_sys.RawRing, cqs: Sequence[CompletionQueue],
                 instance: Any, programs: Sequence[NativeProgram | None]) -> None:
        fns = _functions()
        self._wait = _WAIT(fns["nr_wait"])
        self.host = weakref.proxy(host)       # the ring owns this; no cycle to keep its fd open
        self.programs = list(programs)
        # on a cache line of its own: the hot words (native_ring_ir.RING_WORDS) fill the first few
        self._block = ctypes.create_string_buffer(8 * len(ir.RING_WORDS) + _LINE)
        skew = -ctypes.addressof(self._block) % _LINE
        self.words = (_U64 * len(ir.RING_WORDS)).from_buffer(self._block, skew)
        self.address = ctypes.addressof(self.words)
        w, W = self.words, _W
        w[W["fd"]] = w[W["enter_fd"]] = raw.fd
        self.raw = raw
        w[W["sq_head"]] = raw.sq_address + 4 * raw.sq_head
        w[W["sq_tail"]] = raw.sq_address + 4 * raw.sq_tail
        w[W["sq_flags"]] = raw.sq_address + 4 * raw.sq_flags
        w[W["sq_mask"]], w[W["sq_entries"]] = raw.sq_u32[raw.sq_mask], raw.sq_entries
        w[W["sqes"]] = raw.sqes_address
        w[W["cq_head"]] = raw.cq_address + 4 * raw.cq_head
        w[W["cq_tail"]] = raw.cq_address + 4 * raw.cq_tail
        w[W["cq_mask"]], w[W["cqes"]] = raw.cq_u32[raw.cq_mask], raw.cq_address + raw.cqes_off
        libc = ring_sys.libc
        w[W["syscall"]] = ctypes.cast(libc.syscall, _VP).value
        w[W["errno"]] = ctypes.cast(getattr(libc, "__errno_location"), _VP).value
        w[W["clock"]] = ctypes.cast(libc.clock_gettime, _VP).value
        w[W["vm_readv"]] = ctypes.cast(libc.process_vm_readv, _VP).value
        w[W["vm_writev"]] = ctypes.cast(libc.process_vm_writev, _VP).value
        w[W["arg_sz"]] = 8                                # sigmask_sz (no sigmask), pad 0
        w[W["arg_ts"]] = self.address + 8 * W["ts_sec"]
        self._slow_cb = _HELPER(self._slow)
        w[W["slow"]] = ctypes.cast(self._slow_cb, _VP).value
        self._end_run_cb = _END_RUN(self._end_run)
        w[W["end_run"]] = ctypes.cast(self._end_run_cb, _VP).value
        self.instance = instance
        w[W["retired"]] = ctypes.addressof(self.instance.retired)
        # CQs: a ring buffer per CQ, as large as the CQ up to _NATIVE_CQ entries (1024 CQs of
        # 65536 would be a gigabyte): past that, the CQ is the Python ring's (see _export)
        self.cqs = list(cqs)
        self._cq_caps = [min(q.size, _NATIVE_CQ) for q in cqs]
        self._cq_bufs = [ctypes.create_string_buffer(cap * 16) for cap in self._cq_caps]
        self._cq_desc = (_U64 * (_NCQ * len(cqs)))()
        for i, (q, cap, buf) in enumerate(zip(cqs, self._cq_caps, self._cq_bufs)):
            self._cq_desc[i * _NCQ + _CQ["buf"]] = ctypes.addressof(buf)
            self._cq_desc[i * _NCQ + _CQ["size"]] = cap
            self._cq_desc[i * _NCQ + _CQ["limit"]] = q.size
        self._held: set[int] = set()         # CQs left to Python for the current wait
        w[W["cqs"]], w[W["ncqs"]] = ctypes.addressof(self._cq_desc), len(cqs)
        self._programs = (_U64 * (_NPG * max(1, len(programs))))()
        w[W["programs"]] = ctypes.addressof(self._programs)
        self._by_state = {p.jit.state_address: p for p in programs if p is not None}
        for p in self._by_state.values():
            p.program.instance.enable_native_helpers()
        self._tag_cap = 0
        self._cq_shown: set[int] = set()     # CQs whose native copy may hold something
        self._parked = None
        self._parked_bytes: memoryview | None = None
        self._parked_cap = 0
        self._tiering = False
        self._registers = True               # until the kernel refuses a registered ring fd
        self.handed_back: tuple | None = None
        self.settled = False                  # the last wait ended on a pass that changed nothing

    # -- moving state between the Python ring and the native arrays ----------------------------
    # Cost matters: a wait exports and imports once, so each is O(tags in use + CQs holding
    # CQEs), with slice copies where ctypes has them.
    def _export(self, full: bool) -> None:
        state, w, W = self.host.native_state(full), self.words, _W
        w[W["sq_local"]] = state.sq_tail
        self._export_tags(state)
        desc, shown, held = self._cq_desc, self._cq_shown, self._held
        held.clear()
        for i, q in enumerate(state.cqs):
            if not (q.entries or q.backlog or q.overflow or i in shown):
                continue
            base, n = i * _NCQ, len(q.entries)
            if n > self._cq_caps[i]:
                # more CQEs than the native buffer holds: shown as a backlog of them all, which
                # native code counts for wait_nr and otherwise leaves to Python
                desc[base + _CQ["head"]:base + _CQ["overflow"] + 1] = [0, 0, len(q), q.overflow]
                held.add(i)
                continue
            buf = self._cq_bufs[i]
            for k, cqe in enumerate(q.entries):
                _CQE.pack_into(buf, 16 * k, *cqe)
            desc[base + _CQ["head"]:base + _CQ["overflow"] + 1] = [0, n, len(q.backlog), q.overflow]
            shown.add(i)
        w[W["version"]], w[W["enter_calls"]] = state.version, state.enter_calls
        w[W["py_work"]] = 1 if state.python_work else 0
        if full:
            self._export_parked(state.parked)
            programs = self._programs
            helpers = self.host.session_helpers()
            for i, p in enumerate(self.programs):
                if p is None:
                    programs[i * _NPG + _PG["native"]] = 0
                    continue
                programs[i * _NPG:(i + 1) * _NPG] = p.record()
                p.jit.enter_native_wait(self.address)
                p.program.bind_ring_helpers(helpers)
            w[W["runs_left"]] = _RUN_BUDGET
            # a level-0 program is recompiled when a wait ends (leave_native_wait): a spent run
            # budget ends the wait while one runs, so a hot one is recompiled
            self._tiering = any(p is not None and p.jit.tier == 0 for p in self.programs)
            w[W["pid"]] = os.getpid()          # (read per wait: a forked child is another pid)
            self.instance.begin_run()
        w[W["active"]] = 1

    def _export_tags(self, state: RingState) -> None:
        """Slots below len(state.tags) are written; the ones above are free in the native
        arrays already (set so when allocated, and left so by every import).  nr_queue takes
        the Python free list's slots first, then fresh ones from len(state.tags) up (`fresh`), so
        an export and an import cost the tags in use, not the table's capacity."""
        w, W = self.words, _W
        tags = state.tags
        used = len(tags)
        if used + _FRESH > self._tag_cap:
            cap = used + 2 * _FRESH
            self._tag_ud, self._tag_cq, self._free_stack = (_U64 * cap)(), (_U64 * cap)(), (_U64 * cap)()
            ctypes.memset(self._tag_cq, 0xFF, 8 * cap)          # all FREE
            self._tag_cap = cap
            w[W["tag_ud"]] = ctypes.addressof(self._tag_ud)
            w[W["tag_cq"]] = ctypes.addressof(self._tag_cq)
            w[W["free"]] = ctypes.addressof(self._free_stack)
            w[W["tag_cap"]] = cap
        if used:
            self._tag_cq[:used] = [_FREE if e is None else e[1] for e in tags]
            self._tag_ud[:used] = [0 if e is None else e[0] for e in tags]
        free = state.free
        if free:
            self._free_stack[:len(free)] = free
        w[W["nfree"]], w[W["fresh"]], w[W["in_flight"]] = len(free), used, state.in_flight

    def _export_parked(self, parked: Sequence[BpfRequest]) -> None:
        w, W = self.words, _W
        if len(parked) >= self._parked_cap:    # one more: nr_scan appends a runnable that parks
            self._parked_cap = 2 * len(parked) + 1
            self._parked = (_U64 * (_NRQ * self._parked_cap))()
            self._parked_bytes = memoryview(self._parked).cast("B")
            w[W["parked"]] = ctypes.addressof(self._parked)
        pack, into = _REQUEST.pack_into, self._parked_bytes
        for k, req in enumerate(parked):
            pack(into, k * _REQUEST.size, req.prog, req.user_data, req.cq_idx, req.wait_nr,
                 req.wait_idx, req.runs)
        w[W["nparked"]] = len(parked)

    def _import(self, full: bool) -> None:
        w, W = self.words, _W
        w[W["active"]] = 0
        desc, shown, cqs = self._cq_desc, self._cq_shown, self.cqs
        # native code posts to any CQ, and counts overflows on any (a CQ it filled and emptied)
        counts, overflows = desc[_CQ["count"]::_NCQ], desc[_CQ["overflow"]::_NCQ]
        changed = [i for i, (count, overflow, q) in enumerate(zip(counts, overflows, cqs))
                   if count or overflow != q.overflow]
        for i in shown.union(changed) - self._held:
            q, buf, base = cqs[i], self._cq_bufs[i], i * _NCQ
            head, count = desc[base + _CQ["head"]], counts[i]
            size = self._cq_caps[i]
            q.entries = deque(_CQE.unpack_from(buf, ((head + k) % size) * 16) for k in range(count))
            q.overflow = desc[base + _CQ["overflow"]]
            if count or q.backlog or q.overflow:
                shown.add(i)
            else:
                shown.discard(i)
        parked = None
        if full:
            parked = [] if self._parked is None else [BpfRequest(*r) for r in _REQUEST.iter_unpack(
                self._parked_bytes[:_REQUEST.size * w[W["nparked"]]])]
        tags, free, in_flight = self._import_tags()
        self.host.adopt_native_state(RingState(
            w[W["sq_local"]], tags, free, in_flight, cqs, w[W["version"]], w[W["enter_calls"]],
            bool(w[W["py_work"]]), parked))
        if full:
            programs = self._programs
            for i, p in enumerate(self.programs):
                if p is None:
                    continue
                runs = programs[i * _NPG + _PG["runs"]]
                executed = programs[i * _NPG + _PG["executed"]] if runs else None
                if runs:
                    p.program.runs += runs
                    p.program.executed = executed
                # a large program compiled at codegen level 0 tiers up once hot (jit.py)
                p.jit.leave_native_wait(executed, programs[i * _NPG + _PG["spent"]])
                p.program.bind_ring_helpers(None)
            self.instance.end_run()

    def _import_tags(self) -> tuple[list, list[int], int]:
        """The tag table, free list and in-flight count as the Python ring keeps them."""
        w, W = self.words, _W
        targets = self._tag_cq[:w[W["fresh"]]]      # no slot above was ever taken
        live = [slot for slot, cq in enumerate(targets) if cq != _FREE]
        top = live[-1] + 1 if live else 0
        tags: list = [None] * top
        ud = self._tag_ud[:top]
        for slot in live:
            tags[slot] = (ud[slot], targets[slot])
        free = [s for s in self._free_stack[:w[W["nfree"]]] if s < top]
        return tags, free, w[W["in_flight"]]

    # -- the calls ------------------------------------------------------------------------------
    def wait(self, cq: int, deadline_ns: int = 0) -> int:
        """One native wait on CQ `cq`, until `deadline_ns` (time.monotonic_ns) if given: READY,
        or a code for the Python ring.  For FAULTED, COMPLETE and BAD_WAIT, `handed_back` is the
        request's fields (ring_protocol.BpfRequest order)."""
        w = self.words
        w[_W["deadline"]] = deadline_ns
        self._export(full=True)
        registered = None
        try:
            code = self._wait(self.address, cq)
            # A spent run budget is a chance for Python to see signals, not work for the Python
            # ring: the loop's own bytecode runs pending signal handlers (a KeyboardInterrupt
            # raised here still imports the state), and native code goes on with the state it
            # has -- no import and export, whose cost every 4096 runs was ~14 ns a NOP.  Only a
            # CQE on the waited CQ, a passed deadline or a program that may tier up ends it.
            while code == MORE and not self._tiering and not self._cq_count(cq):
                if deadline_ns and time.monotonic_ns() >= deadline_ns:
                    break
                if registered is None and self._registers:
                    # a wait this long enters through a registered ring fd (ring_sys), this
                    # thread's, until the wait ends: two io_uring_register calls per wait
                    try:
                        registered = self.raw.register_ring_fd()
                    except OSError:             # a kernel before 5.18, or a full table
                        self._registers = False
                    else:
                        w[_W["enter_fd"]] = registered
                        w[_W["enter_flags"]] = IORING_ENTER_REGISTERED_RING
                w[_W["runs_left"]] = _RUN_BUDGET
                code = self._wait(self.address, cq)
        finally:
            try:
                self._import(full=True)
            finally:
                if registered is not None:
                    w[_W["enter_fd"]], w[_W["enter_flags"]] = self.raw.fd, 0
                    self.raw.unregister_ring_fd(registered)
        self.settled = code in (READY, STALLED, TIMED_OUT)
        if code in (FAULTED, COMPLETE, BAD_WAIT):
            w, start = self.words, _W["rec0"]
            self.handed_back = tuple(w[start:start + _NRQ])
        return code

    def _cq_count(self, cq: int) -> int:
        """CQEs CQ `cq` holds in the native arrays (its entries and any Python backlog)."""
        base = cq * _NCQ
        return self._cq_desc[base + _CQ["count"]] + self._cq_desc[base + _CQ["backlog"]]

    def _slow(self, state: int, pc: int, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        """A ring helper's uncommon case, inside a native wait: the Python helper on the Python
        ring's state, brought up to date and handed back."""
        jit = self._by_state[state].jit
        try:
            self._import(full=False)
        except BaseException as exc:      # noqa: BLE001 -- surfaces as the run's fault
            jit.fail(exc)
            return 0
        try:
            return jit.call_helper(pc, r1, r2, r3, r4, r5)
        finally:
            try:
                self._export(full=False)
            except BaseException as exc:  # noqa: BLE001
                jit.fail(exc)

    def _end_run(self, state: int) -> None:
        """After a native run that deleted hash-map values: free them, and give the programs
        tables without their regions, so a later run faults on them as after a Python run."""
        try:
            self.instance.release_retired()
            for p in self._by_state.values():
                p.jit.refresh_table()
        except BaseException as exc:      # noqa: BLE001 -- a callback must not raise into C
            self._by_state[state].jit.fail(exc)
