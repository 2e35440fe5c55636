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
import shutil
import subprocess

import pytest

from pybpf_uring.engine import Memory, MemoryFault, instantiate
from pybpf_uring.engine.maps import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, LruHashMap, PercpuArrayMap,
                                     PercpuHashMap, make_map)
from pybpf_uring.objfile import MapSpec

CLANG = shutil.which("clang-22")
BACKENDS = ["interpreter", "jit"]


def key(n: int, size: int = 4) -> bytes:
    return n.to_bytes(size, "little")


def _jit_or_skip(backend: str) -> None:
    if backend == "jit":
        from pybpf_uring.engine.jit import jit_available
        if (reason := jit_available()) is not None:
            pytest.skip(reason)


def _compile(tmp_path, name: str, source: str):
    from pybpf_uring.objfile import BpfObject
    (tmp_path / f"{name}.c").write_text(source)
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c", str(tmp_path / f"{name}.c"),
                    "-o", str(tmp_path / f"{name}.o")], check=True)
    return BpfObject.read(tmp_path / f"{name}.o")


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


@pytest.mark.skipif(CLANG is None or os.geteuid() != 0, reason="needs clang-22 and root")
@pytest.mark.parametrize("backend", BACKENDS)
def test_per_cpu_and_lru_maps_behave_as_the_kernel_s(tmp_path, backend):
    """Random program and host operations on per-CPU array, per-CPU hash and LRU hash maps:
    helper return codes, what the program found (and incremented in place), host-side errors
    and the host's reads (the kernel's value on our CPU against the engine's one value)."""
    _jit_or_skip(backend)
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st
    obj = _compile(tmp_path, "ops", MAP_OPS_C)
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
