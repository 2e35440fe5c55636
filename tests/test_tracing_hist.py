"""Histograms and counts: the log2(v) intrinsic computed by the kernel, and maps printed the way
bpftrace prints them (bars, ranges, counts sorted) and shown in Jupyter."""
from __future__ import annotations

import ctypes

import pytest

from pybpf_uring import CompileError
from pybpf_uring.bpf.hist import Counts, Histogram, bucket_label, format_maps, report
from pybpf_uring.compiler.pipeline import compile_source

bpf = pytest.mark.kernel("bpf", "syscall_programs")

LOG2 = """
from pybpf_uring import syscall, Struct, ArrayMap, HashMap, log2, i32, u8, u32, u64

class Args(Struct):
    v: u64
    slot: u32
    opcode: u32

class LatKey(Struct):
    opcode: u32
    log2: u32

class OpKey(Struct):
    comm: u8[8]
    opcode: u32

lat = HashMap(LatKey, u64, 256)
ops = HashMap(OpKey, u64, 16)
per_opcode = ArrayMap(u64, 32)

@syscall
def add(ctx: Args) -> i32:
    ctx.slot = log2(ctx.v)
    lat[LatKey(opcode=ctx.opcode, log2=log2(ctx.v))] += 1
    k = OpKey(opcode=ctx.opcode)
    k.comm[0] = 102
    k.comm[1] = 105
    k.comm[2] = 111
    ops[k] += ctx.v
    per_opcode[ctx.opcode] += 1
    return 0
"""


def args_type():
    class Args(ctypes.Structure):
        _fields_ = [("v", ctypes.c_uint64), ("slot", ctypes.c_uint32), ("opcode", ctypes.c_uint32)]
    return Args


def test_bucket_labels_are_bpftraces():
    assert [bucket_label(s) for s in (0, 1, 2, 3, 10, 11, 12, 21, 64)] == [
        "[0]", "[1]", "[2, 4)", "[4, 8)", "[512, 1K)", "[1K, 2K)", "[2K, 4K)", "[1M, 2M)", "[8E, 16E)"]


def test_a_histogram_prints_every_bucket_between_its_lowest_and_highest():
    h = Histogram("lat", "opcode=NOP", {3: 4, 5: 1})
    assert str(h) == "\n".join([
        "@lat[opcode=NOP]:",
        "[4, 8)                 4 |" + "@" * 52 + "|",
        "[8, 16)                0 |" + " " * 52 + "|",
        "[16, 32)               1 |" + "@" * 13 + " " * 39 + "|"])
    svg = h._repr_html_()
    assert svg.startswith("<svg") and svg.count("<rect") == 3 and "[8, 16)" in svg


def test_counts_sort_by_value_largest_last():
    c = Counts("ops", [("comm=a", 1), ("comm=b", 9)])
    assert str(c) == "@ops[comm=a]: 1\n@ops[comm=b]: 9"
    assert "<table>" in c._repr_html_()


def test_log2_takes_one_integer():
    with pytest.raises(CompileError, match=r"x.py:\d+:\d+: error: log2\(\) takes one integer"):
        compile_source(LOG2.replace("log2(ctx.v))]", "log2(ctx.v, 2))]"), "x.py")


@bpf
def test_log2_in_the_kernel_and_the_maps_as_bpftrace_prints_them():
    """log2(v) is 0 for 0 and k for 2**(k-1) <= v < 2**k, up to 64; the map keyed by it prints
    as one histogram per opcode, and the other map as counts with the command name as text."""
    obj = compile_source(LOG2, "hist.py")
    Args = args_type()
    values = [0, 1, 2, 3, 4, 7, 8, 1000, 1 << 20, (1 << 63) + 5, (1 << 64) - 1]
    with obj.load() as live:
        prog = live.programs["add"]
        slots = [prog.test_run(ctx=Args(v=v, opcode=22)).ctx.slot for v in values]
        assert slots == [0 if v == 0 else v.bit_length() for v in values]
        for v in (5, 6, 200):
            prog.test_run(ctx=Args(v=v, opcode=0))
        [nop, read] = report(live.maps["lat"])
        assert (nop.group, nop.buckets) == ("opcode=NOP", {3: 2, 8: 1})
        assert read.group == "opcode=READ" and read.total == len(values)
        text = format_maps(live.maps)
    assert text.startswith("@lat[opcode=NOP]:\n[4, 8)                 2 |" + "@" * 52 + "|\n"
                           "[8, 16)                0 |"), text
    assert "\n\n@ops[comm=fio, opcode=NOP]: 211\n@ops[comm=fio, opcode=READ]: " in text, text
    assert ".bss" not in text
    assert f"\n\n@per_opcode[0]: 3\n@per_opcode[22]: {len(values)}" in text, text   # the other 30 slots are 0


@bpf
def test_jupyter_shows_a_log2_map_as_bars_above_its_entries():
    obj = compile_source(LOG2, "hist.py")
    Args = args_type()
    with obj.load() as live:
        for v in (5, 6, 200):
            live.programs["add"].test_run(ctx=Args(v=v, opcode=0))
        page = live.maps["lat"]._repr_html_()
        plain = live.maps["ops"]._repr_html_()
        whole = live._repr_html_()
    assert page.startswith("<svg") and page.count("<rect") == 6 and "<table" in page   # [4, 8) .. [128, 256)
    assert not plain.startswith("<svg") and "<table" in plain
    # struct keys by their fields, as the text prints them: the host reads them as bytes (or an
    # int when they fit in 8), which the table showed as hex and as 34359738368
    assert "<td>opcode=NOP, log2=3</td><td>2</td>" in page and "<td>opcode=NOP, log2=8</td><td>1</td>" in page
    assert "<td>comm=fio, opcode=NOP</td><td>211</td>" in plain
    assert page in whole and plain in whole        # the loaded object shows each map as it shows itself


LINEAR = """
from pybpf_uring import syscall, Struct, HashMap, linear, i32, u32, u64

class Args(Struct):
    v: u64
    bucket: u64
    opcode: u32

class LatKey(Struct):
    opcode: u32
    linear: u64

lat = HashMap(LatKey, u64, 256)

@syscall
def add(ctx: Args) -> i32:
    ctx.bucket = linear(ctx.v, 100, 1000, 100)
    lat[LatKey(opcode=ctx.opcode, linear=linear(ctx.v, 100, 1000, 100))] += 1
    return 0
"""


@bpf
def test_linear_in_the_kernel_and_its_histogram_as_bpftraces_lhist():
    """linear(v, lo, hi, step) in the kernel is linear_bucket's value for every kind of v, and
    the map keyed by it prints bpftrace's lhist: (..., lo), [a, a+step) between, [hi, ...)."""
    from pybpf_uring.bpf.hist import linear_bucket

    class Args(ctypes.Structure):
        _fields_ = [("v", ctypes.c_uint64), ("bucket", ctypes.c_uint64), ("opcode", ctypes.c_uint32)]
    obj = compile_source(LINEAR, "lin.py")
    values = [0, 99, 100, 101, 199, 200, 450, 999, 1000, 1001, (1 << 64) - 1]
    with obj.load() as live:
        prog = live.programs["add"]
        got = [prog.test_run(ctx=Args(v=v, opcode=22)).ctx.bucket for v in values]
        assert got == [linear_bucket(v, 100, 1000, 100) for v in values]
        [h] = report(live.maps["lat"])
    rows = str(h).splitlines()
    assert rows[0] == "@lat[opcode=READ]:"
    assert [(r[:16].strip(), int(r[16:24])) for r in rows[1:]] == [
        ("(..., 100)", 2), ("[100, 200)", 3), ("[200, 300)", 1), ("[300, 400)", 0), ("[400, 500)", 1),
        ("[500, 600)", 0), ("[600, 700)", 0), ("[700, 800)", 0), ("[800, 900)", 0), ("[900, 1000)", 1),
        ("[1000, ...)", 3)]
    assert rows[2].endswith("|" + "@" * 52 + "|") and rows[3].endswith("|" + "@" * 17 + " " * 35 + "|")


@pytest.mark.parametrize("call, message", [
    ("linear(ctx.v, 0, 1000)", r"linear\(\) takes an integer and three constants"),
    ("linear(ctx.v, ctx.v, 1000, 10)", r"linear\(\)'s lo must be an integer constant"),
    ("linear(ctx.v, 10, 10, 1)", r"linear\(\) needs 0 <= lo < hi <= 4294967295, not lo=10, hi=10"),
    ("linear(ctx.v, 0, 100, 0)", r"linear\(\)'s step must be from 1 to hi - lo \(100\), not 0"),
])
def test_linear_takes_constant_bounds(call, message):
    with pytest.raises(CompileError, match=message):
        compile_source(LINEAR.replace("linear(ctx.v, 100, 1000, 100)", call, 1), "lin.py")
