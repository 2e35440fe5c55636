"""Engine maps beyond array and hash (`engine/maps.py`): per-CPU arrays and hashes, LRU hashes,
ring buffers.

Each is checked against the kernel where the kernel's behaviour is deterministic: the same
clang object runs in the kernel (BPF_PROG_TEST_RUN, the process pinned to one CPU so per-CPU
values are one CPU's) and in the engine on both backends, and every helper's return code, what
the program found and what the host reads afterwards must agree.
"""
from __future__ import annotations

import ctypes
import errno
import os

import pytest
from kernel_harness import clang_object
from probes import require

from pybpf_uring.runtime.engine import Memory, MemoryFault, instantiate
from pybpf_uring.runtime.engine.maps import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, LruHashMap, PercpuArrayMap,
                                     PercpuHashMap, make_map)
from pybpf_uring.bpf.objfile import MapSpec

BACKENDS = ["interpreter", "jit"]


def key(n: int, size: int = 4) -> bytes:
    return n.to_bytes(size, "little")


def _jit_or_skip(backend: str) -> None:
    if backend == "jit":
        require("jit")


class _one_cpu:
    """Pin this process to one CPU (so a syscall program's per-CPU values are that CPU's)."""

    def __enter__(self) -> int:
        self.saved = os.sched_getaffinity(0)
        self.cpu = min(self.saved)
        os.sched_setaffinity(0, {self.cpu})
        return self.cpu

    def __exit__(self, *exc) -> None:
        os.sched_setaffinity(0, self.saved)


# --- per-CPU maps -------------------------------------------------------------------------------
def test_per_cpu_maps_read_as_one_value_per_engine_cpu():
    a = make_map(MapSpec("pa", 6, 4, 8, 4), Memory())
    h = make_map(MapSpec("ph", 5, 4, 8, 2), Memory())
    assert isinstance(a, PercpuArrayMap) and isinstance(h, PercpuHashMap)
    assert a[1] == [0] and a.values() == [[0]] * 4
    a[1] = 5                       # one value: every CPU's, as KernelMap takes it
    a.set(2, [6])                  # or one per CPU
    assert a[1] == [5] and a[2] == [6] and a.memory.load(a.lookup(key(2)), 8) == 6
    with pytest.raises(ValueError, match=r"one value per engine CPU \(1\), got 2"):
        a[0] = [1, 2]
    h[7] = [70]
    assert dict(h.items()) == {7: [70]} and h.get(8) is None
    h[8] = 80
    with pytest.raises(OSError) as exc:
        h[9] = 90
    assert exc.value.errno == errno.E2BIG
    assert a.update(key(4), key(1, 8), BPF_ANY) == -errno.E2BIG
    assert h.update(key(7), key(1, 8), BPF_NOEXIST) == -errno.EEXIST


# --- LRU hash -----------------------------------------------------------------------------------
def test_lru_evicts_the_least_recently_used_key():
    m = make_map(MapSpec("lru", 9, 4, 8, 3), Memory())
    assert isinstance(m, LruHashMap)
    for k in (1, 2, 3):
        assert m.update(key(k), key(k * 10, 8), BPF_ANY) == 0
    assert m.lookup(key(1))                              # a program's lookup: 1 is now newest
    assert m[2] == 20 and m.address(2) and bytes(m.view(2))   # the host's reads are not uses
    assert m.update(key(4), key(40, 8), BPF_ANY) == 0    # full: evicts 2, not -E2BIG
    assert sorted(m.keys()) == [1, 3, 4] and m.evictions == 1
    assert m.update(key(3), key(31, 8), BPF_EXIST) == 0  # an update is a use
    m[5] = 50                                            # the host's too: evicts 1
    assert sorted(m.keys()) == [3, 4, 5]
    assert m.update(key(6), key(0, 8), BPF_EXIST) == -errno.ENOENT   # nothing evicted
    assert m.update(key(3), key(0, 8), BPF_NOEXIST) == -errno.EEXIST
    assert m.update(key(3), key(0, 8), 4) == -errno.EINVAL
    assert sorted(m.keys()) == [3, 4, 5] and m.evictions == 2


def test_an_evicted_value_is_retired_like_a_deleted_one():
    m = make_map(MapSpec("lru", 9, 4, 8, 1), Memory())
    m[1] = 11
    address = m.lookup(key(1))
    m.running = True
    assert m.update(key(2), key(22, 8), BPF_ANY) == 0
    assert m.memory.load(address, 8) == 11               # the program may still use it
    m.running = False
    m.end_run()
    with pytest.raises(MemoryFault, match="no region is mapped"):
        m.memory.load(address, 8)
    assert dict(m.items()) == {2: 22}


def test_native_tables_index_plain_and_per_cpu_hashes_only():
    """An LRU hash must not get a native index: its lookups have to reach Python to count as uses."""
    specs = [MapSpec("h", 1, 4, 8, 4), MapSpec("ph", 5, 4, 8, 4), MapSpec("lru", 9, 4, 8, 4),
             MapSpec("a", 2, 4, 8, 4), MapSpec("pa", 6, 4, 8, 4)]
    inst = instantiate(_object_of(specs))
    inst.native_tables()
    m = inst.maps
    assert m["h"].index is not None and m["ph"].index is not None and m["lru"].index is None
    assert inst._natives[1][0] == 3                      # a, h, ph
    assert all(x in inst._hash_maps for x in (m["h"], m["ph"], m["lru"]))   # all retire on delete


def _object_of(maps: list[MapSpec]):
    """What instantiate reads of an object: its maps, programs and BTF."""
    class Obj:
        btf = None
        programs: list = []
    obj = Obj()
    obj.maps = maps
    return obj


MAP_OPS_C = r"""
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;
struct { __uint(type, 6); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); }
    pa SEC(".maps");
struct { __uint(type, 5); __uint(max_entries, 3); __type(key, __u32); __type(value, __u64); }
    ph SEC(".maps");
struct { __uint(type, 9); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); }
    lru SEC(".maps");
static void *(*lookup)(void *map, const void *key) = (void *)1;
static long (*update)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*delete)(void *map, const void *key) = (void *)3;
struct args { __u32 op, which, key, pad; __u64 value, flags; __s64 ret; __u64 found; };

SEC("syscall")
int ops(struct args *a)
{
    __u32 k = a->key;
    __u64 v = a->value;
    void *map = a->which == 0 ? (void *)&pa : a->which == 1 ? (void *)&ph : (void *)&lru;
    __u64 *p;
    if (a->op == 0)
        a->ret = update(map, &k, &v, a->flags);
    else if (a->op == 1)
        a->ret = delete(map, &k);
    p = lookup(map, &k);
    if (p && a->op == 2)
        *p += v;                       /* in place, on this CPU's value */
    a->found = p ? *p : 0xdead;
    return 0;
}
char _license[] SEC("license") = "GPL";
"""

MAP_NAMES = ("pa", "ph", "lru")
KEYS = {"pa": 6, "ph": 6, "lru": 3}    # the LRU's keys fit: the kernel never has to evict


class MapArgs(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint32), ("which", ctypes.c_uint32), ("key", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("ret", ctypes.c_int64), ("found", ctypes.c_uint64)]


def _result(call) -> int:
    try:
        call()
        return 0
    except KeyError:
        return -errno.ENOENT
    except OSError as exc:
        return -exc.errno


@pytest.mark.tools("clang")
@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_per_cpu_and_lru_maps_behave_as_the_kernel_s(tmp_path, backend):
    """Random program and host operations on per-CPU array, per-CPU hash and LRU hash maps:
    helper return codes, what the program found (and incremented in place), host-side errors
    and the host's reads (the kernel's value on our CPU against the engine's one value)."""
    _jit_or_skip(backend)
    import hypothesis
    from hypothesis import strategies as st
    obj = clang_object(tmp_path, "ops", MAP_OPS_C)
    op = st.tuples(st.integers(0, 4), st.integers(0, 2), st.integers(0, 5),
                   st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2, 3, 4]))

    @hypothesis.settings(max_examples=20, deadline=None, database=None)
    @hypothesis.given(st.lists(op, max_size=25))
    def check(ops):
        inst = instantiate(obj, backend=backend)
        engine = inst.runner("ops")
        with obj.load() as live, _one_cpu() as cpu:
            prog = live.programs["ops"]
            for o, which, k, v, flags in ops:
                name = MAP_NAMES[which]
                k %= KEYS[name]
                if o < 3:                              # in the program
                    args = MapArgs(op=o, which=which, key=k, value=v, flags=flags)
                    want = MapArgs.from_buffer_copy(bytes(prog.test_run(ctx=args).ctx))
                    got = MapArgs.from_buffer_copy(engine.run(bytes(args))[1])
                    assert (got.ret, got.found) == (want.ret, want.found), (o, name, k, flags)
                else:                                  # from the host, as bpf() would
                    km, em = live.maps[name], inst.maps[name]
                    if o == 3:
                        want = _result(lambda: km.set(k, v, flags))
                        got = _result(lambda: em.set(k, v, flags))
                    else:
                        want = _result(lambda: km.__delitem__(k))
                        got = _result(lambda: em.__delitem__(k))
                    assert got == want, (o, name, k, flags)
            for name in MAP_NAMES:
                km, em = live.maps[name], inst.maps[name]
                for k in range(6):
                    want, got = km.get(k), em.get(k)
                    assert (got is None) == (want is None), (name, k)
                    if want is not None:
                        assert got == ([want[cpu]] if km.per_cpu else want), (name, k)
                assert sorted(em.keys()) == sorted(km.keys()), name

    check()


# --- ring buffers -------------------------------------------------------------------------------
RINGBUF_C = r"""
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;
struct { __uint(type, 27); __uint(max_entries, 4096); } rb SEC(".maps");
static long (*rb_output)(void *map, void *data, __u64 size, __u64 flags) = (void *)130;
static void *(*rb_reserve)(void *map, __u64 size, __u64 flags) = (void *)131;
static void (*rb_submit)(void *data, __u64 flags) = (void *)132;
static void (*rb_discard)(void *data, __u64 flags) = (void *)133;
static __u64 (*rb_query)(void *map, __u64 flags) = (void *)134;
char buf[4096];
struct args { __u32 op, size, size2, flags; __u64 seq; __s64 ret, ret2; __u64 q[5]; };

/* the verifier wants a constant size for every reservation */
static __attribute__((always_inline)) __u64 *reserve(__u32 which, __u64 flags)
{
    switch (which) {
    case 0: return rb_reserve(&rb, 8, flags);
    case 1: return rb_reserve(&rb, 13, flags);
    case 2: return rb_reserve(&rb, 100, flags);
    case 3: return rb_reserve(&rb, 1000, flags);
    case 4: return rb_reserve(&rb, 2040, flags);
    case 5: return rb_reserve(&rb, 4080, flags);
    case 6: return rb_reserve(&rb, 4088, flags);
    default: return rb_reserve(&rb, 5000, flags);
    }
}

SEC("syscall")
int ops(struct args *a)
{
    __u64 *p, *q, seq = a->seq, flags = a->flags;
    __u32 op = a->op, size = a->size, size2 = a->size2;
    __s64 ret = -1, ret2 = -1;     /* one store each at the end: clang merges ctx stores otherwise */
    if (op == 0) {
        *(__u64 *)buf = seq;
        ret = rb_output(&rb, buf, size & 4095, flags);
    } else if (op == 1 || op == 2) {
        p = reserve(size, flags);
        if (p) {
            p[0] = seq;
            if (op == 1)
                rb_submit(p, flags);
            else
                rb_discard(p, flags);
            ret = 0;
        }
    } else if (op == 3) {          /* two at once, released newest first */
        p = reserve(size, 0);
        q = reserve(size2, 0);
        if (q) {
            q[0] = seq + 1;
            rb_submit(q, 0);
            ret2 = 0;
        }
        if (p) {
            p[0] = seq;
            rb_submit(p, 0);
            ret = 0;
        }
    }
    a->ret = ret;
    a->ret2 = ret2;
    for (int i = 0; i < 5; i++)
        a->q[i] = rb_query(&rb, i);
    return 0;
}
char _license[] SEC("license") = "GPL";
"""
RESERVED = (8, 13, 100, 1000, 2040, 4080, 4088, 5000)


class RingArgs(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint32), ("size", ctypes.c_uint32), ("size2", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("seq", ctypes.c_uint64), ("ret", ctypes.c_int64),
                ("ret2", ctypes.c_int64), ("q", ctypes.c_uint64 * 5)]


class KernelRing:
    """A kernel ring buffer read as libbpf's consumer reads it: the consumer page mapped
    read-write, the producer page and the (twice mapped) data read-only."""

    BUSY, DISCARD = 1 << 31, 1 << 30

    def __init__(self, fd: int, size: int) -> None:
        import mmap
        self.page, self.size = mmap.PAGESIZE, size
        self.cons = mmap.mmap(fd, self.page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.prod = mmap.mmap(fd, self.page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self.page)

    def consume(self) -> list[bytes]:
        out = []
        cons = int.from_bytes(self.cons[:8], "little")
        prod = int.from_bytes(self.prod[:8], "little")
        while cons < prod:
            at = self.page + (cons & (self.size - 1))
            length = int.from_bytes(self.prod[at:at + 4], "little")
            if length & self.BUSY:
                break
            size = length & ~(self.BUSY | self.DISCARD)
            if not length & self.DISCARD:
                out.append(bytes(self.prod[at + 8:at + 8 + size]))
            cons += (size + 8 + 7) & ~7
        self.cons[:8] = cons.to_bytes(8, "little")
        return out

    def close(self) -> None:
        self.cons.close()
        self.prod.close()


def _same_records(got: list[bytes], want: list[bytes]) -> None:
    """Lengths and the first 8 bytes (the seq the program wrote); an output record's every byte
    (a reserved record's other bytes are whatever the kernel's ring held before)."""
    assert [len(r) for r in got] == [len(r) for r in want]
    for g, w in zip(got, want):
        assert g[:8] == w[:8]
        if int.from_bytes(g[:8].ljust(8, b"\0"), "little") % 4 == 1:   # an output record's seq
            assert g == w


@pytest.mark.tools("clang")
@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_ringbuf_helpers_and_consumer_behave_as_the_kernel_s(tmp_path, backend):
    """Random outputs, reservations (submitted, discarded, two at once), bad flags and host
    consumption on a 4096-byte ring: every helper's return code, every bpf_ringbuf_query value
    (0-4) after each run and the records consumed agree with the kernel's."""
    _jit_or_skip(backend)
    import hypothesis
    from hypothesis import strategies as st
    obj = clang_object(tmp_path, "rb", RINGBUF_C)
    op = st.tuples(st.integers(0, 4), st.integers(0, 7), st.integers(0, 7), st.integers(0, 4100),
                   st.sampled_from([0, 0, 0, 1, 2, 3, 4]))

    @hypothesis.settings(max_examples=40, deadline=None, database=None)
    @hypothesis.given(st.lists(op, max_size=30))
    def check(ops):
        inst = instantiate(obj, backend=backend)
        engine, ering = inst.runner("ops"), inst.maps["rb"]
        with obj.load() as live:
            prog, kring = live.programs["ops"], KernelRing(live.maps["rb"].fd, 4096)
            try:
                for i, (o, which, which2, size, flags) in enumerate(ops):
                    if o == 4:
                        _same_records(ering.consume(), kring.consume())
                        continue
                    # seq 4i+1: output; 4i+2: reserved (4i+3: the second of two)
                    args = RingArgs(op=o, size=size if o == 0 else which, size2=which2, flags=flags,
                                    seq=4 * i + 2 if o else 4 * i + 1)
                    want = RingArgs.from_buffer_copy(bytes(prog.test_run(ctx=args).ctx))
                    got = RingArgs.from_buffer_copy(engine.run(bytes(args))[1])
                    assert (got.ret, got.ret2, list(got.q)) == (want.ret, want.ret2, list(want.q)), \
                        (o, which, which2, size, flags)
                _same_records(ering.consume(), kring.consume())
            finally:
                kring.close()

    check()


def ringbuf(size: int = 4096):
    return make_map(MapSpec("rb", 27, 0, 0, size), Memory())


def test_ringbuf_positions_and_consumer_in_the_engine():
    rb = ringbuf()
    a = rb.reserve(100, 0)
    rb.memory.store(a, 8, 7)
    assert rb.output(b"xyz", 0) == 0
    assert rb.query(0) == 2 * 8 + 104 + 8 and rb.query(3) == 128 and rb.query(1) == 4096
    assert rb.consume() == [] and len(rb) == 0           # the oldest record is still reserved
    assert rb.commit(a, discard=False) and not rb.commit(a, discard=False)
    assert len(rb) == 2
    first, second = rb.consume()
    assert first[:8] == key(7, 8) and len(first) == 100 and second == b"xyz"
    assert rb.query(2) == 128 and rb.query(0) == 0
    with pytest.raises(MemoryFault, match="no region is mapped"):
        rb.memory.load(a, 8)                             # a submitted record is the consumer's
    # full: a record may take at most size - 8 bytes past the consumer (the kernel's mask check)
    assert rb.reserve(4088, 0) == 0 and rb.output(bytes(4096), 0) == -errno.EAGAIN
    assert rb.output(bytes(4080), 0) == 0 and rb.output(b"", 0) == -errno.EAGAIN
    assert rb.reserve(8, 1) == 0 and rb.output(b"", 4) == -errno.EINVAL   # flags
    assert [len(r) for r in rb] == [4080]                # iterating consumes
    assert rb.output(b"", 3) == 0 and rb.consume() == [b""]


def test_ringbuf_records_decode_as_a_ctypes_type_and_discards_are_skipped():
    class Event(ctypes.Structure):
        _fields_ = [("pid", ctypes.c_uint32), ("n", ctypes.c_uint32)]
    rb = ringbuf()
    rb.output(bytes(Event(5, 1)), 0)
    rb.commit(rb.reserve(8, 0), discard=True)
    rb.output(bytes(Event(6, 2)) + b"tail", 0)
    got = rb.consume(Event)
    assert [(e.pid, e.n) for e in got] == [(5, 1), (6, 2)]
    rb.output(b"abc", 0)
    with pytest.raises(ValueError, match="3 bytes is too short for Event"):
        rb.consume(Event)
    rb.output(key(9), 0)
    assert rb.consume(int) == [9]


def test_ringbuf_specs_the_kernel_refuses_are_refused():
    for spec in (MapSpec("rb", 27, 0, 0, 3 * 4096), MapSpec("rb", 27, 0, 0, 2048),
                 MapSpec("rb", 27, 4, 0, 4096)):
        with pytest.raises(ValueError, match="power of 2 and a multiple of the page"):
            make_map(spec, Memory())
    rb = ringbuf()
    with pytest.raises(TypeError, match="records, not keys"):
        rb[0]
    with pytest.raises(MemoryFault, match="map_lookup_elem does not take it"):
        rb.lookup(b"")


RINGBUF_IOURING_C = r"""
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
struct io_uring_bpf_ctx { __u64 user_data; __u32 wait_nr; __u32 wait_idx; };
struct { __uint(type, 27); __uint(max_entries, 4096); } events SEC(".maps");
static void *(*rb_reserve)(void *map, __u64 size, __u64 flags) = (void *)131;
static void (*rb_submit)(void *data, __u64 flags) = (void *)132;
static long (*emit_cqe)(void *ctx, __u32 cq, __u64 ud, __s32 res, __u32 flags) = (void *)165;
struct event { __u64 user_data; __u32 n, pad; };
__u32 count;

SEC("iouring.s/log_event")
int log_event(struct io_uring_bpf_ctx *ctx)
{
    struct event *e = rb_reserve(&events, sizeof(*e), 0);
    if (!e) {
        emit_cqe(ctx, 1, ctx->user_data, -1, 0);
        return 0;
    }
    e->user_data = ctx->user_data;
    e->n = ++count;
    rb_submit(e, 0);
    emit_cqe(ctx, 1, ctx->user_data, 0, 0);
    return 0;
}

SEC("iouring.s/leak")
int leak(struct io_uring_bpf_ctx *ctx)    /* the verifier refuses it: the record is never released */
{
    struct event *e = rb_reserve(&events, sizeof(*e), 0);
    if (e)
        e->user_data = 99;
    emit_cqe(ctx, 1, ctx->user_data, e ? 0 : -1, 0);
    return 0;
}

SEC("iouring.s/twice")
int twice(struct io_uring_bpf_ctx *ctx)
{
    struct event *e = rb_reserve(&events, sizeof(*e), 0);
    if (e) {
        rb_submit(e, 0);
        rb_submit(e, 0);
    }
    return 0;
}
char _license[] SEC("license") = "GPL";
"""


class Event(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint64), ("n", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


@pytest.mark.tools("clang")
@pytest.mark.uring
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_iouring_program_logs_to_a_ringbuf_the_host_consumes(tmp_path, backend):
    _jit_or_skip(backend)
    from pybpf_uring import Ring
    obj = clang_object(tmp_path, "events", RINGBUF_IOURING_C)
    with Ring(entries=8, cq_sizes=(256,)) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, backend=backend))
        events = ring.maps["events"]

        def run(name: str, user_data: int = 0) -> int:
            """The res the program emitted on CQ 1 (CQ 0 gets the request's own CQE)."""
            ring.submit_bpf(name, user_data=user_data)
            assert ring.wait_cqe(0, timeout=1).res == 0
            return ring.wait_cqe(1, timeout=1).res

        assert run("log_event", 10) == 0 and run("log_event", 11) == 0
        assert run("leak", 12) == 0
        assert events.unreleased == 1                    # dropped when the run ended...
        assert run("log_event", 13) == 0                 # ...so the ring goes on
        assert [(e.user_data, e.n) for e in events.consume(Event)] == [(10, 1), (11, 2), (13, 3)]
        # 4096 bytes hold 170 records of 8 + 16 bytes: the 171st finds the ring full
        assert [run("log_event", ud) for ud in range(171)] == [0] * 170 + [-1]
        assert len(events.consume(Event)) == 170 and not ring.faults
        ring.submit_bpf("twice")
        ring.wait_cqe(0, timeout=1)
        assert "is not a record reserved by bpf_ringbuf_reserve and not yet submitted" in ring.faults[-1].message
        assert "events.c:" in ring.faults[-1].message
        assert len(events.consume()) == 1                # the first submit stands


RALLY_C = r"""
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
struct io_uring_bpf_ctx { __u64 user_data; __u32 wait_nr; __u32 wait_idx; };
struct sqe { unsigned char opcode, flags; __u16 ioprio; __s32 fd; __u64 off, addr; __u32 len, rw_flags;
             __u64 user_data; __u16 buf_index, personality; __s32 splice_fd_in; __u16 cq_idx, pad0;
             __u32 pad1; __u64 pad2; };
struct cqe { __u64 user_data; __s32 res; __u32 flags; };
struct { __uint(type, 27); __uint(max_entries, 4096); } events SEC(".maps");
static void *(*rb_reserve)(void *map, __u64 size, __u64 flags) = (void *)131;
static void (*rb_submit)(void *data, __u64 flags) = (void *)132;
static void (*rb_discard)(void *data, __u64 flags) = (void *)133;
static long (*queue_sqe)(void *ctx, void *sqe, __u32 len) = (void *)164;
static long (*reap_cqe)(void *ctx, __u32 cq, void *out, __u32 len) = (void *)166;
struct event { __u64 user_data; __u32 n, pad; };
__u32 rounds;

SEC("iouring.s/rally")
int rally(struct io_uring_bpf_ctx *ctx)
{
    struct cqe cqe;
    struct sqe sqe = {};
    struct event *e;
    reap_cqe(ctx, 1, &cqe, sizeof(cqe));
    e = rb_reserve(&events, sizeof(*e), 0);
    if (e) {
        e->user_data = ctx->user_data;
        e->n = ++rounds;
        if (rounds % 3 == 1)
            rb_submit(e, 0);
        else if (rounds % 3 == 2)
            rb_discard(e, 0);
        /* else: left reserved, which the verifier would refuse; the engine drops it */
    }
    if (rounds >= 20)
        return 0;
    sqe.user_data = rounds;
    sqe.cq_idx = 1;
    queue_sqe(ctx, &sqe, sizeof(sqe));
    *(volatile __u32 *)&ctx->wait_idx = 1;
    *(volatile __u32 *)&ctx->wait_nr = 1;
    return 0;
}
char _license[] SEC("license") = "GPL";
"""


@pytest.mark.tools("clang")
@pytest.mark.uring
@pytest.mark.parametrize("native", [True, False], ids=["native-waits", "python-ring"])
def test_ringbuf_records_across_the_runs_of_a_wait(tmp_path, native):
    """A request re-run 20 times inside one wait (natively, on the JIT, or by the Python ring):
    every run's submitted record is there in order, discards are skipped, and the records runs
    left reserved were dropped as each run ended (else the rest would never be consumed)."""
    _jit_or_skip("jit")
    from pybpf_uring import Ring
    obj = clang_object(tmp_path, "rally", RALLY_C)
    with Ring(entries=8, cq_sizes=(8,)) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, backend="jit", native_waits=native))
        ring.submit_bpf("rally", user_data=7)
        cqe = ring.wait_cqe(0, timeout=5)
        assert (cqe.user_data, cqe.res) == (7, 0) and not ring.faults
        events = ring.maps["events"]
        assert [(e.user_data, e.n) for e in events.consume(Event)] == [(7, n) for n in range(1, 21, 3)]
        assert events.unreleased == 6 and events.query(0) == 0
        assert ring.maps.instance.runner("rally").runs == 20
