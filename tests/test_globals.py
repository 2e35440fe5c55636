"""Globals by name (`globals_view`): one mechanism for objects loaded into the kernel
(`live.globals`), engine rings (`ring.globals`) and specs before loading (`load(globals=...)`,
which mainline's `attach(globals=...)` uses too).  Values go in from the host and come back out of
programs the kernel or the engine ran, so each test checks both directions."""
from __future__ import annotations

import ctypes
import dataclasses
import os

import probes
import pytest

from pybpf_uring import Ring, compile_source
from pybpf_uring.errors import LoadError
from pybpf_uring.bpf.globals_view import ArrayView, FrozenGlobalError, StructView, global_vars

from kernel_harness import clang_object, module


bpf = pytest.mark.kernel

KERNEL_SRC = '''
from pybpf_uring import syscall, Struct, Const, i16, i32, u8, u32, u64

class Pt(Struct):
    x: i32
    y: u64
    tags: u32[3]

class Args(Struct):
    which: u32

count: u64 = 5
neg: i16 = -3
small: u8 = 200
pt: Pt
arr: i32[4]
limit: Const[u32] = 7

@syscall
def read_back(ctx: Args) -> i32:
    count += 1
    if ctx.which == 0:
        return limit
    if ctx.which == 1:
        return neg
    if ctx.which == 2:
        return pt.x + pt.tags[2]
    if ctx.which == 3:
        return arr[0] + arr[1] + arr[2] + arr[3]
    if ctx.which == 4:
        return pt.y >> 32
    return small
'''


def run(live, which: int) -> int:
    return live.programs["read_back"].test_run(which.to_bytes(4, "little")).signed_retval


@bpf
def test_kernel_globals_read_and_write_typed_values_the_program_sees():
    ns = module(KERNEL_SRC)
    Pt = ns["Pt"]
    with compile_source(KERNEL_SRC, "<bpf module>").load() as live:
        g = live.globals
        assert (g.count, g.neg, g.small, g.limit) == (5, -3, 200, 7)     # widths and signedness
        assert run(live, 0) == 7 and run(live, 1) == -3 and run(live, 5) == 200
        assert g.count == 8 and g["count"] == 8                          # the program counted
        g.neg = -32768
        g["small"] = 255
        assert run(live, 1) == -32768 and run(live, 5) == 255

        assert isinstance(g.pt, StructView) and g.pt == Pt() and g.pt.tags == [0, 0, 0]
        g.pt = Pt(x=-40, y=3 << 32, tags=[1, 2, 3])                      # a whole struct
        assert run(live, 2) == -37 and run(live, 4) == 3
        g.pt.x = 100                                                    # one field, in place
        g.pt.tags[2] = -1 & 0xFFFFFFFF
        assert run(live, 2) == 99 and g.pt.y == 3 << 32
        g.pt = {"x": 5}                                                 # a dict: the rest zeroed
        assert g.pt.copy().y == 0 and run(live, 2) == 5
        snapshot = g.pt.copy()
        assert isinstance(snapshot, ctypes.Structure) and bytes(snapshot) == bytes(Pt(x=5))
        assert repr(g.pt) == "Pt(x=5, y=0, tags=[0, 0, 0])"

        assert isinstance(g.arr, ArrayView) and len(g.arr) == 4
        g.arr = [10, -20, 30, 40]                                        # a whole array
        assert run(live, 3) == 60 and list(g.arr) == [10, -20, 30, 40]
        g.arr[1] = 2                                                    # one element, in place
        g.arr[-1] = -1
        assert run(live, 3) == 41 and g.arr[1:3] == [2, 30] and g.arr == [10, 2, 30, -1]
        g.arr[2:] = [0, 0]
        assert run(live, 3) == 12
        assert repr(g) == ("Globals(count=17, neg=-32768, pt=Pt(x=5, y=0, tags=[0, 0, 0]), "
                           "arr=[10, 2, 0, 0], limit=7, small=255)")


@bpf
def test_kernel_globals_refuse_what_cannot_be_done():
    with compile_source(KERNEL_SRC, "<bpf module>").load() as live:
        g = live.globals
        with pytest.raises(AttributeError, match=r"no global variable 'nope' \(globals: count, neg, pt, arr, limit, small\)"):
            g.nope
        with pytest.raises(KeyError, match="no global variable 'nope'.*small"):
            g["nope"]
        with pytest.raises(AttributeError, match="no global variable 'nope'"):
            g.nope = 1
        with pytest.raises(FrozenGlobalError, match=r"'limit' is in \.rodata, which is frozen.*load\(obj, globals="):
            g.limit = 9
        assert isinstance(FrozenGlobalError([]), LoadError)
        assert g.limit == 7 and run(live, 0) == 7
        with pytest.raises(OverflowError, match="'small' value 256 does not fit in 1 bytes"):
            g.small = 256
        with pytest.raises(AttributeError, match=r"pt \(Pt\) has no field 'z' \(fields: x, y, tags\)"):
            g.pt.z = 1
        with pytest.raises(ValueError, match="'arr' holds 4 elements, the value has 3"):
            g.arr = [1, 2, 3]
        with pytest.raises(IndexError, match=r"arr\[4\]: the array has 4 elements"):
            g.arr[4] = 0
        with pytest.raises(ValueError, match="'pt' value is 8 bytes but"):
            g.pt = b"\0" * 8
        assert g.arr == [0, 0, 0, 0] and g.pt.x == 0 and g.small == 200   # nothing was written


@bpf
def test_load_sets_initial_values_rodata_included():
    obj = compile_source(KERNEL_SRC, "<bpf module>")
    with obj.load(globals={"limit": 1234, "pt": {"x": 7, "tags": [0, 0, 5]}, "arr": [1, 1, 1, 1]}) as live:
        assert run(live, 0) == 1234 and run(live, 2) == 12 and run(live, 3) == 4
        assert live.globals.limit == 1234
    assert obj.map(".rodata").data == (7).to_bytes(4, "little")        # the spec is unchanged
    with pytest.raises(LoadError, match="no global variable 'lmit'") as exc:
        obj.load(globals={"lmit": 1})
    assert "limit" in str(exc.value)


C_SOURCE = r'''
struct pt { int x; unsigned long long y; unsigned short tags[3]; };
struct pt pt;
long long arr[3] = {1, -2, 3};
const volatile unsigned char mode = 2;

__attribute__((section("syscall"), used)) int fill(void *ctx)
{
    pt.x = -mode;
    pt.y = 0x1122334455667788ULL;
    pt.tags[1] = 0xbeef;
    arr[2] = arr[0] - 100;
    return 0;
}
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
'''


@pytest.mark.tools("clang")
@bpf
def test_globals_of_a_clang_object_the_kernel_wrote(tmp_path):
    """Struct and array globals written by a C program (clang's BTF: padding, u16 array)."""
    obj = clang_object(tmp_path, "fill", C_SOURCE)
    with obj.load(globals={"mode": 9}) as live:
        assert live.programs["fill"].test_run(b"").retval == 0
        g = live.globals
        assert (g.pt.x, g.pt.y, g.pt.tags) == (-9, 0x1122334455667788, [0, 0xBEEF, 0])
        assert g.arr == [1, -2, -99] and g.mode == 9
        assert g.variable("pt").ctype.__name__ == "pt" and ctypes.sizeof(g.variable("pt").ctype) == 24
        g.pt.tags[0] = 7
        assert g.pt.copy().tags[0] == 7 and g.pt.tags[1] == 0xBEEF


@pytest.mark.tools("clang")
@bpf
def test_without_btf_globals_are_ints_or_bytes(tmp_path):
    obj = dataclasses.replace(clang_object(tmp_path, "fill", C_SOURCE), btf=None)
    variables = global_vars(obj)
    assert {v.ctype for v in variables.values()} == {None}
    with obj.load() as live:
        live.programs["fill"].test_run(b"")
        g = live.globals
        assert g.mode == 2                         # 1 byte: an int (unsigned: no BTF to say)
        assert g.arr[16:] == (-99 & (1 << 64) - 1).to_bytes(8, "little")   # 24 bytes: bytes
        g.arr = bytes(24)
        assert g.arr == bytes(24)


ENGINE_SRC = '''
from pybpf_uring import iouring, Struct, Const, i32, i64, u32, u64
from pybpf_uring.uring import IoUringCtx

class Acc(Struct):
    runs: u64
    last: i64
    seen: u32[4]

acc: Acc
step: i64 = 3
total: i64 = 0
scale: Const[u32] = 2

@iouring
def bump(ctx: IoUringCtx) -> i32:
    total += step * scale + acc.last + acc.seen[1]
    return 0
'''


@pytest.mark.uring
def test_ring_globals_are_the_engines_data_maps():
    obj = compile_source(ENGINE_SRC, "<bpf module>")
    with Ring(entries=8) as ring:
        assert len(ring.globals) == 0
        with pytest.raises(KeyError, match=r"globals: none"):
            ring.globals["total"]
        ring.register(obj)
        g = ring.globals
        assert dict(g.items()).keys() == {"acc", "step", "total", "scale"}
        ring.submit_bpf("bump", 1)
        assert ring.wait_cqe(0, timeout=5).res == 0 and g.total == 6
        g.step, g.scale = -10, 3              # the engine reads .rodata from memory: writable
        g.acc.last = 100
        g.acc.seen[1] = 7
        ring.submit_bpf("bump", 2)
        assert ring.wait_cqe(0, timeout=5).res == 0
        assert g.total == 6 - 30 + 100 + 7
        # the very bytes the maps show: one mechanism, no copy
        assert ring.maps[".bss"].view(0)[g.variable("total").offset:][:8] == (83).to_bytes(8, "little")
        assert repr(g) == "Globals(total=83, acc=Acc(runs=0, last=100, seen=[0, 7, 0, 0]), step=-10, scale=3)"
        ring.unregister()
        assert len(ring.globals) == 0


@pytest.mark.uring
def test_ring_globals_from_initial_values():
    obj = compile_source(ENGINE_SRC, "<bpf module>")
    from pybpf_uring.bpf.globals_view import with_globals
    with Ring(entries=8) as ring:
        ring.register(with_globals(obj, {"scale": 5, "acc": {"seen": [0, 1, 0, 0]}}))
        ring.submit_bpf("bump", 1)
        ring.wait_cqe(0, timeout=5)
        assert ring.globals.total == 3 * 5 + 1


@pytest.mark.uring
def test_views_compare_and_iterate_like_their_values():
    obj = compile_source(ENGINE_SRC, "<bpf module>")
    ns = module(ENGINE_SRC)
    with Ring(entries=8) as ring:
        ring.register(obj)
        g = ring.globals
        g.acc = ns["Acc"](runs=1, last=-1, seen=[4, 3, 2, 1])
        assert g.acc == ns["Acc"](runs=1, last=-1, seen=[4, 3, 2, 1]) and g.acc != ns["Acc"]()
        assert sorted(g.acc.seen) == [1, 2, 3, 4] and g.acc["last"] == -1
        assert "seen" in dir(g.acc) and "total" in dir(g)
        before = g.acc.copy()
        g.acc.runs = 2
        assert before.runs == 1 and g.acc.runs == 2       # a copy is a snapshot, a view is live
        with pytest.raises(TypeError):
            hash(g.acc)


def test_no_fd_is_left_open():
    before = set(os.listdir("/proc/self/fd"))
    if probes.missing("bpf") is None:
        with compile_source(KERNEL_SRC, "<bpf module>").load() as live:
            live.globals.pt.x = 1
    assert set(os.listdir("/proc/self/fd")) == before
