"""The engine's maps and object instances (`engine/maps.py`, `engine/instance.py`).

Map semantics are checked against the kernel's (arraymap.c / hashtab.c return codes), programs
compiled by this project run on a real Ring with `register(obj)` and no engine argument, and
faults must name the instruction and the source line.
"""
from __future__ import annotations

import ctypes
import errno
import os
import textwrap
import time

import pytest
from kernel_harness import clang_object
from probes import require

from pybpf_uring import Ring
from pybpf_uring.runtime.engine import Memory, MemoryFault, instantiate
from pybpf_uring.runtime.engine.instance import EngineError, format_trace
from pybpf_uring.runtime.engine.maps import BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, ArrayMap, HashMap, make_map
from pybpf_uring.bpf.objfile import MapSpec

from pybpf_uring import compile_source



def key(n: int, size: int = 4) -> bytes:
    return n.to_bytes(size, "little")


def array(n=4, value_size=8, **kw) -> ArrayMap:
    return make_map(MapSpec("a", 2, 4, value_size, n, **kw), Memory())


def hashmap(n=2, value_size=8) -> HashMap:
    return make_map(MapSpec("h", 1, 4, value_size, n), Memory())


# --- kernel return codes ----------------------------------------------------------------------
def test_array_update_flags_and_bounds():
    a = array()
    v = key(5, 8)
    assert a.update(key(0), v, BPF_ANY) == 0
    assert a.update(key(1), v, BPF_EXIST) == 0               # every element exists
    assert a.update(key(1), v, BPF_NOEXIST) == -errno.EEXIST
    assert a.update(key(4), v, BPF_ANY) == -errno.E2BIG      # past max_entries
    assert a.update(key(0), v, 3) == -errno.EINVAL
    assert a.update(key(0), v, BPF_F_LOCK) == -errno.EINVAL  # no spin lock in the value
    assert a.update(key(9), v, BPF_F_LOCK) == -errno.E2BIG   # ...checked after the index (helper)
    assert a.update(key(0), v, BPF_F_LOCK | BPF_NOEXIST) == -errno.EEXIST
    assert a.delete(key(0)) == -errno.EINVAL                 # array elements cannot be deleted
    assert a.lookup(key(4)) == 0
    assert a[0] == 5 and a[1] == 5 and a[2] == 0 and len(a) == 4
    with pytest.raises(KeyError):
        a[4]


def test_hash_update_flags_full_map_and_delete():
    h = hashmap(n=2)
    assert h.update(key(1), key(10, 8), BPF_EXIST) == -errno.ENOENT
    assert h.update(key(1), key(10, 8), BPF_NOEXIST) == 0
    assert h.update(key(1), key(11, 8), BPF_NOEXIST) == -errno.EEXIST
    assert h.update(key(1), key(12, 8), BPF_EXIST) == 0
    assert h.update(key(2), key(20, 8), BPF_ANY) == 0
    assert h.update(key(3), key(30, 8), BPF_ANY) == -errno.E2BIG   # full
    assert h.update(key(2), key(21, 8), BPF_ANY) == 0                # replacing still works
    assert h.delete(key(3)) == -errno.ENOENT
    assert dict(h.items()) == {1: 12, 2: 21}
    assert h.delete(key(1)) == 0
    assert h.update(key(3), key(30, 8), BPF_ANY) == 0                # room again
    assert sorted(h.keys()) == [2, 3]


def test_host_side_raises_like_the_bpf_syscall():
    h = hashmap()
    h[7] = 70
    with pytest.raises(FileExistsError):
        h.set(7, 1, BPF_NOEXIST)
    with pytest.raises(FileNotFoundError):
        h.set(8, 1, BPF_EXIST)
    with pytest.raises(KeyError):
        del h[8]
    assert h.get(8, "none") == "none" and 7 in h and 8 not in h
    a = array()
    with pytest.raises(OSError) as exc:
        del a[0]
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OverflowError):
        a[0] = 1 << 64


def test_value_regions_are_stable_and_retired_only_after_the_run():
    h = hashmap()
    h[1] = 5
    address = h.lookup(key(1))
    h[1] = 6                                   # an update keeps the element in place
    assert h.lookup(key(1)) == address and h.memory.load(address, 8) == 6
    h.running = True                           # a program holds `address`...
    assert h.delete(key(1)) == 0
    assert h.memory.load(address, 8) == 6      # ...and may still use it until it ends
    h.memory.store(address, 8, 9)
    h.running = False
    h.end_run()
    with pytest.raises(MemoryFault, match="no region is mapped"):
        h.memory.load(address, 8)              # a pointer kept past the run faults, never aliases
    h[1] = 1
    assert h.lookup(key(1)) != address


def test_array_regions_share_the_host_bytes():
    a = array(n=1024)
    addr = a.lookup(key(3))
    assert a.lookup(key(3)) == addr            # one region per element, made on first use
    a.memory.store(addr, 8, 77)
    assert a[3] == 77
    a[3] = 78
    assert a.memory.load(addr, 8) == 78
    with pytest.raises(MemoryFault, match="out of bounds"):
        a.memory.load(addr + 8, 8)             # the neighbour is not reachable from element 3
    assert len(a.memory.regions) == 2          # the handle and element 3


def test_rodata_is_read_only_to_programs_only():
    a = array(n=1, value_size=4, flags=0x80, data=b"\x01\x00\x00\x00")
    assert a[0] == 1
    addr = a.lookup(key(0))
    with pytest.raises(MemoryFault, match="read-only"):
        a.memory.store(addr, 4, 2)
    a[0] = 2
    assert a.memory.load(addr, 4) == 2


def test_unsupported_map_types_are_named():
    with pytest.raises(ValueError, match="queue map; the engine has hash, array, .* maps only"):
        make_map(MapSpec("q", 22, 0, 8, 16), Memory())


def test_trace_formats_like_the_kernel():
    mem = Memory()
    s = mem.map(bytearray(b"abc\0"), "s")
    assert format_trace(mem, b"x=%d u=%u %llx", (-1 & (2**64 - 1), 2**32 + 3, 255)).text == "x=-1 u=3 ff"
    assert format_trace(mem, b"%s!", (s.base, 0, 0)).text == "abc!"
    assert format_trace(mem, b"%lld %%", (2**64 - 2, 0, 0)).text == "-2 %"
    assert format_trace(mem, b"%d %d %d %d", (1, 2, 3)) == -errno.EINVAL     # four conversions
    assert format_trace(mem, b"%q", (1, 2, 3)) == -errno.EINVAL


# --- objects on a real ring -------------------------------------------------------------------
COUNTER = textwrap.dedent("""
    from pybpf_uring import iouring, i32, u32, u64, ArrayMap, HashMap, ktime_get_ns, get_prandom_u32
    from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe

    hits = ArrayMap(u64, 4)
    seen = HashMap(u64, u64, 4)
    LIMIT = 3

    @iouring
    def count(ctx: IoUringCtx) -> i32:
        hits[0] += 1
        extra = hits[2]                          # the host writes hits[2]
        hits[1] += extra
        hits[3] = ktime_get_ns()
        if seen.lookup(ctx.user_data) is None:
            seen[ctx.user_data] = 1
        else:
            v = seen.lookup(ctx.user_data)
            if v is not None:
                v[0] += 1
                if v[0] > LIMIT:
                    del seen[ctx.user_data]
        print("run", hits[0], ctx.user_data)
        r = get_prandom_u32()
        emit_cqe(ctx, 1, ctx.user_data, i32(r & 1), 0)
        return 0
""")


@pytest.mark.uring
@pytest.mark.parametrize("backend", ["interpreter", "jit"])
def test_register_shares_maps_with_the_host(backend):
    if backend == "jit":
        require("jit")
    obj = compile_source(COUNTER, "counter.py")
    with Ring(entries=8, cq_sizes=(16,)) as ring:
        if backend == "interpreter":
            ring.register(obj)                    # the default engine: engine.instantiate
        else:
            ring.register(obj, engine=lambda o: instantiate(o, backend=backend))
            assert ring.maps.instance.runner("count").backend == "jit"
        ring.maps["hits"][2] = 10
        for ud in (5, 5, 6, 5, 5):
            ring.submit_bpf("count", user_data=ud)
            assert ring.wait_cqe(0, timeout=1).res == 0
            assert ring.wait_cqe(1, timeout=1).user_data == ud
        hits = ring.maps["hits"]
        assert hits[0] == 5 and hits[1] == 50
        assert 0 < hits[3] and abs(hits[3] - time.monotonic_ns()) < 10**10
        assert dict(ring.maps["seen"].items()) == {6: 1}    # 5 reached 4 and was deleted
        assert list(ring.maps.trace) == ["run 1 5", "run 2 5", "run 3 6", "run 4 5", "run 5 5"]
        assert not ring.faults


RUNAWAY = textwrap.dedent("""
    from pybpf_uring import iouring, i32, u64, ArrayMap
    from pybpf_uring.uring import IoUringCtx

    n = ArrayMap(u64, 1)

    @iouring
    def spin(ctx: IoUringCtx) -> i32:
        i = 0
        while i < 1000000:
            i += 1
            n[0] += 1
        return 0
""")


@pytest.mark.uring
@pytest.mark.parametrize("backend", ["interpreter", "auto"])
def test_a_fault_fails_the_request_and_names_instruction_and_python_line(backend):
    obj = compile_source(RUNAWAY, "runaway.py")
    with Ring(entries=4) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, budget=5000, backend=backend))
        ring.submit_bpf("spin", user_data=3)
        cqe = ring.wait_cqe(0, timeout=1)
        assert (cqe.user_data, cqe.res) == (3, -errno.EFAULT)
        fault = ring.faults[-1]
        assert fault.program == "spin" and fault.res == -errno.EFAULT
        assert "instruction budget of 5000 exhausted" in fault.message
        assert "instruction " in fault.message and "runaway.py:" in fault.message
        line = int(fault.message.split("runaway.py:")[1].split(":")[0])
        assert RUNAWAY.splitlines()[line - 1].strip() in fault.message
        # the map kept what the runs did before the fault
        assert ring.maps["n"][0] > 0


C_PROGRAM = r"""
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
#define SEC(n) __attribute__((section(n), used))
struct io_uring_bpf_ctx { __u64 user_data; __u32 wait_nr; __u32 wait_idx; };
static long (*bpf_trace_printk)(const char *fmt, __u32 size, ...) = (void *)6;
static long (*emit_cqe)(void *ctx, __u32 cq, __u64 ud, __s32 res, __u32 flags) = (void *)165;
volatile const __u32 step = 7;
__u64 total;
__u64 scratch[2];

SEC("iouring.s/acc")
int acc(struct io_uring_bpf_ctx *ctx)
{
    total += step;
    scratch[1] = total;
    emit_cqe(ctx, 0, total, 0, 0);
    return 0;
}

SEC("iouring.s/wild")
int wild(struct io_uring_bpf_ctx *ctx)
{
    return *(__u64 *)ctx->user_data;        /* a user pointer is not program memory */
}

SEC("iouring.s/trap")
int trap(struct io_uring_bpf_ctx *ctx)
{
    if (ctx->user_data == 7)
        __builtin_trap();
    return 0;
}

SEC("iouring.s/badctx")
int badctx(struct io_uring_bpf_ctx *ctx)
{
    return *((volatile __u16 *)ctx + 1);     /* inside user_data: not a field */
}
char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def c_object(tmp_path_factory):
    return clang_object(tmp_path_factory.mktemp("c"), "p", C_PROGRAM)


@pytest.mark.tools("clang")
@pytest.mark.uring
def test_global_data_of_a_clang_object(c_object):
    assert {m.name for m in c_object.maps} >= {".rodata", ".bss"}
    with Ring(entries=4) as ring:
        ring.register(c_object)
        for _ in range(3):
            ring.submit_bpf("acc")
        got = [ring.wait_cqe(0, timeout=1) for _ in range(6)]
        assert [c.user_data for c in got if c.user_data] == [7, 14, 21]
        bss = ring.maps[".bss"][0]
        assert int.from_bytes(bytes(bss)[:8], "little") == 21 if not isinstance(bss, int) else bss == 21


@pytest.mark.tools("clang")
@pytest.mark.uring
def test_faults_in_c_programs_name_the_c_line(c_object):
    with Ring(entries=4) as ring:
        ring.register(c_object)
        ring.submit_bpf("wild", user_data=ctypes.addressof(ctypes.c_uint64(1)))
        assert ring.wait_cqe(0, timeout=1).res == -errno.EFAULT
        msg = ring.faults[-1].message
        assert "no region is mapped there" in msg and "p.c:" in msg and "ctx->user_data" in msg
        ring.submit_bpf("badctx")
        assert ring.wait_cqe(0, timeout=1).res == -errno.EFAULT
        message = ring.faults[-1].message
        assert "ctx may only be accessed at +0 (8 bytes), +8 (4 bytes), +12 (4 bytes)" in message


@pytest.mark.tools("clang")
@pytest.mark.uring
def test_a_trap_faults_when_it_is_reached(c_object):
    assert any(r.symbol == "__bpf_trap" for r in c_object.program("trap").relocations)
    with Ring(entries=4) as ring:
        ring.register(c_object)
        ring.submit_bpf("trap", user_data=6)
        assert ring.wait_cqe(0, timeout=1).res == 0
        ring.submit_bpf("trap", user_data=7)
        assert ring.wait_cqe(0, timeout=1).res == -errno.EFAULT
        message = ring.faults[-1].message
        assert "(call __bpf_trap): kfunc 1: __bpf_trap: the program reached a trap" in message
        assert "p.c:" in message and "__builtin_trap();" in message


def test_objects_the_engine_cannot_run_are_refused():
    obj = compile_source(COUNTER, "counter.py")
    from dataclasses import replace
    bad = replace(obj, maps=[replace(m, type=22) if m.name == "hits" else m for m in obj.maps])
    with pytest.raises(EngineError, match="queue"):
        instantiate(bad)
    missing = replace(obj, maps=[m for m in obj.maps if m.name != "seen"])
    with pytest.raises(EngineError, match="refers to map 'seen'"):
        instantiate(missing)


def test_backends_are_named():
    with pytest.raises(ValueError, match="backend must be one of interpreter, jit, auto"):
        instantiate(compile_source(COUNTER, "counter.py"), backend="fast")


def test_runner_without_a_ring_faults_on_rfc_helpers():
    inst = instantiate(compile_source(COUNTER, "counter.py"))
    from pybpf_uring.runtime.ring import ProgramFault
    with pytest.raises(ProgramFault, match=r"emit_cqe \(165\) needs an io_uring request"):
        inst.runner("count").run(bytes(16))
    assert inst.maps["hits"][0] == 1          # the run got that far


MIXED = textwrap.dedent("""
    from pybpf_uring import iouring, socket_filter, i32, u32, u64, ArrayMap, SkBuff, skb_load_bytes
    from pybpf_uring.uring import IoUringCtx

    seen = ArrayMap(u64, 1)

    @socket_filter
    def filt(ctx: SkBuff) -> i32:
        b: u32 = 0
        skb_load_bytes(ctx, 0, b)
        seen[0] += 1
        return 0

    @iouring
    def bump(ctx: IoUringCtx) -> i32:
        seen[0] += 10
        return 0
""")


@pytest.mark.uring
def test_an_object_mixing_kinds_registers_its_iouring_programs():
    obj = compile_source(MIXED, "mixed.py")
    with Ring(entries=4) as ring:
        ring.register(obj)                       # the filter's helper 26 is not the engine's
        assert ring.programs == ("bump",)
        ring.submit_bpf("bump")
        assert ring.wait_cqe(0, timeout=1).res == 0
        assert ring.maps["seen"][0] == 10
        with pytest.raises(EngineError, match=r"skb_load_bytes \(26\), a helper this engine does not have"):
            ring.maps.instance.runner("filt")


DELETE_THEN_USE = textwrap.dedent("""
    from pybpf_uring import iouring, i32, u64, HashMap
    from pybpf_uring.uring import IoUringCtx

    seen = HashMap(u64, u64, 4)

    @iouring
    def take(ctx: IoUringCtx) -> i32:
        v = seen.lookup(ctx.user_data)
        if v is not None:
            del seen[ctx.user_data]
            v[0] += 1                    # still valid: the element is freed after the run
            seen[ctx.user_data + 1] = v[0]
        return 0
""")


@pytest.mark.uring
def test_a_deleted_value_stays_usable_until_the_run_ends():
    obj = compile_source(DELETE_THEN_USE, "take.py")
    with Ring(entries=4) as ring:
        ring.register(obj)
        ring.maps["seen"][7] = 41
        ring.submit_bpf("take", user_data=7)
        assert ring.wait_cqe(0, timeout=1).res == 0
        assert not ring.faults
        assert dict(ring.maps["seen"].items()) == {8: 42}
        names = [r.name for r in ring.maps.instance.memory.regions.values()]
        assert "map 'seen' value [0700000000000000]" not in names      # retired after the run
        assert "map 'seen' value [0800000000000000]" in names


RHS_KEYS = textwrap.dedent("""
    from pybpf_uring import iouring, i32, u64, ArrayMap
    from pybpf_uring.uring import IoUringCtx

    hits = ArrayMap(u64, 4)

    @iouring
    def add(ctx: IoUringCtx) -> i32:
        hits[1] = hits[1] + hits[2]
        return 0
""")


def test_map_assignment_whose_value_reads_other_keys():
    """Once a compiler bug: the update reused the stack slot of the last key read and wrote m[2]."""
    inst = instantiate(compile_source(RHS_KEYS, "rhs.py"))
    inst.maps["hits"][2] = 10
    inst.runner("add").run(bytes(16))
    assert inst.maps["hits"].values() == [0, 10, 10, 0]


# --- the same operations on a kernel map --------------------------------------------------------
def _kernel_result(call) -> int:
    try:
        call()
        return 0
    except OSError as exc:
        return -exc.errno


@pytest.mark.kernel
@pytest.mark.parametrize("map_type,max_entries", [(2, 4), (1, 3)], ids=["array", "hash"])
def test_update_and_delete_return_what_the_kernel_returns(map_type, max_entries):
    import hypothesis
    from hypothesis import strategies as st

    from pybpf_uring.bpf import kernel
    ops_strategy = st.lists(st.tuples(st.sampled_from(["update", "delete"]), st.integers(0, 5),
                                      st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2, 3, 4, 5, 6])),
                            max_size=30)

    @hypothesis.settings(max_examples=60, deadline=None, database=None)
    @hypothesis.given(ops_strategy)
    def check(ops):
        engine = make_map(MapSpec("m", map_type, 4, 8, max_entries), Memory())
        fd = kernel.map_create(map_type, 4, 8, max_entries, name="m")
        try:
            for op, k, v, flags in ops:
                if op == "update":
                    want = _kernel_result(lambda: kernel.map_update_elem(fd, key(k), key(v, 8), flags))
                    got = _kernel_result(lambda: engine.set(k, v, flags))   # the syscall path
                else:
                    want = _kernel_result(lambda: kernel.map_delete_elem(fd, key(k)))
                    got = engine.delete(key(k))
                assert got == want, (op, k, flags)
            for k in range(6):
                raw = kernel.map_lookup_elem(fd, key(k), 8)
                assert engine.raw_value(key(k)) == raw, k
                assert bool(engine.lookup(key(k))) == (raw is not None)
        finally:
            os.close(fd)

    check()


MAP_OPS_C = r"""
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;
struct { __uint(type, 2); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); }
    arr SEC(".maps");
struct { __uint(type, 1); __uint(max_entries, 3); __type(key, __u32); __type(value, __u64); }
    hash SEC(".maps");
static void *(*lookup)(void *map, const void *key) = (void *)1;
static long (*update)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*delete)(void *map, const void *key) = (void *)3;
struct args { __u32 op, which, key, pad; __u64 value, flags; __s64 ret; __u64 found; };

SEC("syscall")
int ops(struct args *a)
{
    __u32 k = a->key;
    __u64 v = a->value;
    void *map = a->which ? (void *)&hash : (void *)&arr;
    __u64 *p;
    if (a->op == 0)
        a->ret = update(map, &k, &v, a->flags);
    else if (a->op == 1)
        a->ret = delete(map, &k);
    p = lookup(map, &k);
    a->found = p ? *p : 0xdead;
    return 0;
}
char _license[] SEC("license") = "GPL";
"""


class MapArgs(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint32), ("which", ctypes.c_uint32), ("key", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("ret", ctypes.c_int64), ("found", ctypes.c_uint64)]


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_helper_calls_return_what_the_kernel_helpers_return(tmp_path):
    """The same clang object, run by the kernel (test_run) and by the engine: every helper call's
    return code and the value found afterwards agree, for random operation sequences."""
    import hypothesis
    from hypothesis import strategies as st

    obj = clang_object(tmp_path, "ops", MAP_OPS_C)
    op = st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 5),
                   st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2, 3, 4, 5, 6]))

    @hypothesis.settings(max_examples=25, deadline=None, database=None)
    @hypothesis.given(st.lists(op, max_size=25))
    def check(ops):
        engine = instantiate(obj).runner("ops")
        with obj.load() as live:
            prog = live.programs["ops"]
            for o, which, k, v, flags in ops:
                args = MapArgs(op=o, which=which, key=k, value=v, flags=flags)
                want = MapArgs.from_buffer_copy(bytes(prog.test_run(ctx=args).ctx))
                _, out = engine.run(bytes(args))
                got = MapArgs.from_buffer_copy(out)
                assert (got.ret, got.found) == (want.ret, want.found), (o, which, k, flags)

    check()
