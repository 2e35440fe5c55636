"""What Jupyter shows (`_repr_html_`, rendered by pybpf_uring.display) for real objects: a
program's disassembly with its source lines, an object loaded into the kernel with maps a
program filled there, a test run's result, a real ring after BPF requests ran on it, and engine
maps -- checked for the values a user reads, escaping, and the note on long maps."""
from __future__ import annotations

import ctypes
import html
import re

import pytest

from pybpf_uring.bpf import kernel
from pybpf_uring.display import ROWS, map_html
from pybpf_uring.runtime.engine.maps import make_map
from pybpf_uring.runtime.engine.memory import Memory
from pybpf_uring.bpf.load import KernelMap, possible_cpus
from pybpf_uring.bpf.objfile import MapSpec
from pybpf_uring.runtime.ring import Ring
from pybpf_uring.uring import prep_nop, prep_timeout

from kernel_harness import loaded

COUNTERS = '''
from pybpf_uring import syscall, Struct, ArrayMap, HashMap, i32, u32, u64

class Point(Struct):
    x: u64
    y: u32

class Args(Struct):
    base: u32
    n: u32
    x: u64

hits = ArrayMap(u64, 40)
squares = HashMap(u32, u64, 64)
points = HashMap(u32, Point, 4)

def square(v: u64) -> u64:
    return v * v

@syscall
def fill(ctx: Args) -> i32:
    hits[0] += 1
    hits[ctx.n] += ctx.x
    for i in range(20):
        squares[ctx.base + i] = square(ctx.base + i)
    p = Point()
    p.x = ctx.x
    p.y = ctx.n
    points[7] = p
    return 0 - ctx.n
'''


def cells(page: str) -> list[str]:
    """The text of every table cell, unescaped, in order."""
    return [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", page)]


def rows(page: str) -> dict[str, str]:
    """A two-column table as {first cell: second cell}."""
    c = cells(page)
    return dict(zip(c[::2], c[1::2]))


@pytest.fixture(scope="module")
def filled():
    """The object loaded into the kernel, after one test run of `fill` wrote its maps there."""
    with loaded(COUNTERS) as (live, ns):
        result = live.programs["fill"].test_run(ctx=ns["Args"](base=100, n=3, x=5))
        yield live, result


@pytest.mark.kernel
def test_the_kernel_map_table_shows_what_the_program_wrote(filled):
    live, _ = filled
    page = live.maps["squares"]._repr_html_()
    assert "squares (hash, key 4 B, value 8 B, max_entries 64)" in page
    table = rows(page)
    # 20 keys written in the kernel; the first ROWS shown, each with the square the program computed
    assert list(table) == [str(k) for k in range(100, 100 + ROWS)]     # smallest keys first
    assert all(int(v) == int(k) ** 2 for k, v in table.items())
    assert f"… {20 - ROWS} more entries (20 in all)" in page


@pytest.mark.kernel
def test_an_array_shows_its_first_elements_and_how_many_more(filled):
    live, _ = filled
    page = live.maps["hits"]._repr_html_()
    table = rows(page)
    assert list(table) == [str(i) for i in range(ROWS)]
    assert table["0"] == "1" and table["3"] == "5" and table["1"] == "0"
    assert "… 24 more entries (40 in all)" in page
    short = map_html(live.maps["hits"], rows=4)
    assert list(rows(short)) == ["0", "1", "2", "3"] and "… 36 more entries (40 in all)" in short


@pytest.mark.kernel
def test_struct_values_read_back_by_field(filled):
    live, _ = filled
    assert rows(live.maps["points"]._repr_html_()) == {"7": "Point(x=5, y=3)"}


@pytest.mark.kernel
def test_the_loaded_object_lists_verified_programs_and_every_map(filled):
    live, _ = filled
    page = live._repr_html_()
    c = cells(page)
    i = c.index("fill")
    assert c[i + 1] == "syscall" and c[i + 2] == str(live.programs["fill"].fd)
    assert int(c[i + 3]) == live.programs["fill"].verified_insns > 20
    for name in ("hits", "squares", "points"):
        assert f"<b>map</b> {name} (" in page
    assert "Point(x=5, y=3)" in html.unescape(page)


@pytest.mark.kernel
def test_a_test_run_shows_retval_signed_retval_duration_and_ctx(filled):
    _, result = filled
    table = rows(result._repr_html_())
    assert table["retval"] == f"{(1 << 32) - 3} ({(1 << 32) - 3:#x})"
    assert table["signed retval"] == "-3"
    assert table["duration"] == f"{result.duration} ns"
    assert table["ctx"] == "Args(base=100, n=3, x=5)"


@pytest.mark.kernel
def test_disassembly_interleaves_source_lines_and_links_subprograms(filled):
    live, _ = filled
    prog = live.spec.program("fill")
    page = prog._repr_html_()
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    listing = prog.linked().disasm(source=True)
    assert listing.rstrip("\n") in text     # the whole listing, source lines and all
    assert "; hits[0] += 1" in listing and "<square>:" in listing and "; return v * v" in listing
    # source lines set apart from the instructions, and the listing escaped
    assert '<span style="color:#6a737d;font-style:italic">; return v * v</span>' in page
    assert "&lt;square&gt;:" in page and "<square>" not in page
    assert prog.linked()._repr_html_() == page.replace("83 slots, 7 relocations", "86 slots, 7 relocations")
    whole = live.spec._repr_html_()
    assert "&lt;fill&gt;:" in whole and "; hits[0] += 1" in html.unescape(whole)


@pytest.mark.kernel
def test_a_closed_object_says_so_instead_of_failing():
    with loaded(COUNTERS) as (live, _):
        pass
    page = live._repr_html_()
    assert rows(page)["fill"] == "syscall"
    assert "closed" in cells(page) and "hits (array, key 4 B, value 8 B, max_entries 40): closed" in page


@pytest.mark.kernel
def test_per_cpu_kernel_values_are_lists_one_per_possible_cpu():
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 3)
    try:
        m = KernelMap("per<cpu>&", fd, kernel.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 3)
        n = possible_cpus()
        m[1] = [10 * (cpu + 1) for cpu in range(n)]
        page = m._repr_html_()
    finally:
        kernel.close(fd)
    assert "per&lt;cpu&gt;&amp;" in page and "<cpu>" not in page
    assert "<th>value per CPU</th>" in page
    assert rows(page) == {"0": "[" + ", ".join(["0"] * n) + "]",
                          "1": "[" + ", ".join(str(10 * (c + 1)) for c in range(n)) + "]",
                          "2": "[" + ", ".join(["0"] * n) + "]"}


def test_engine_maps_render_like_kernel_maps():
    h = make_map(MapSpec("<script>x</script>", 1, 4, 16, 64), Memory())
    for k in range(ROWS + 5):
        h[k] = bytes([k]) * 16
    page = h._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    table = rows(page)
    assert len(table) == ROWS and table["2"] == "02 " * 15 + "02"
    assert "… 5 more entries (21 in all)" in page

    per_cpu = make_map(MapSpec("pc", 6, 4, 4, 2), Memory())
    per_cpu[0] = 7
    assert rows(per_cpu._repr_html_()) == {"0": "[7]", "1": "[0]"}

    big = make_map(MapSpec("big", 2, 4, 100, 1), Memory())
    big[0] = bytes(range(100))
    assert rows(big._repr_html_()) == {"0": bytes(range(64)).hex(" ") + " … (100 bytes)"}

    empty = make_map(MapSpec("e", 1, 4, 4, 8), Memory())
    assert "(no entries)" in empty._repr_html_()

    ringbuf = make_map(MapSpec("events", 27, 0, 0, 4096), Memory())
    ringbuf.output(b"abcd", 0)
    page = ringbuf._repr_html_()
    assert "1 records ready to consume" in page and len(ringbuf) == 1   # shown, not consumed


ECHO = '''
from pybpf_uring import iouring, ArrayMap, HashMap, i32, u64
from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

seen = ArrayMap(u64, 1)
by_user_data = HashMap(u64, u64, 8)

@iouring
def echo(ctx: IoUringCtx) -> i32:
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) == 0:
        seen[0] += 1
        by_user_data[cqe.user_data] = cqe.user_data * 10
        emit_cqe(ctx, 2, cqe.user_data * 10, cqe.res, 0)
        return 0
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0
'''


@pytest.mark.uring
def test_a_ring_shows_its_queues_requests_programs_and_maps_and_runs_nothing():
    from pybpf_uring import compile_source
    obj = compile_source(ECHO, "<echo>")

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_int64)]

    forever = Timespec(3600, 0)
    with Ring(entries=8, cq_sizes=(8, 4)) as ring:
        ring.register(obj)
        ring.submit_bpf("echo", user_data=5)          # runs once, parks on CQ 1
        sqe = ring.sqe()
        prep_timeout(sqe, ctypes.addressof(forever), 0, 0)
        sqe.user_data, sqe.cq_idx = 99, 2             # a kernel request that stays in flight
        ring.queue(sqe)
        sqe = ring.sqe()
        prep_nop(sqe)
        sqe.user_data, sqe.cq_idx = 4, 1
        ring.queue(sqe)
        ring.flush()                                  # the NOP's CQE waits in the kernel's CQ ring

        page = ring._repr_html_()
        assert ring._repr_html_() == page and ring.parked == 1   # showing it ran nothing
        text = html.unescape(page)
        assert "kernel CQ ring: head 0, tail 1 (1 CQE not yet drained)" in text
        assert "SQ: 8 entries, head 2, tail 2, 0 SQEs not yet submitted" in text
        c = cells(page)
        assert c[:15] == ["0", "16", "0", "0", "0", "1", "8", "0", "0", "0", "2", "4", "0", "0", "0"]
        # the timeout, and the NOP whose CQE the ring has not drained yet
        assert "kernel requests in flight (last CQE not routed yet): 2" in text
        assert c[15:19] == ["99", "2", "4", "1"]
        assert "BPF requests: 0 runnable, 1 parked" in text
        assert c[19:24] == ["echo", "5", "0", "parked: waits for 1 CQE on CQ 1", "1"]
        assert c[24:26] == ["0", "echo"] and c[27] == "1"

        got = ring.wait_cqe(2, timeout=5)
        assert (got.user_data, got.res) == (40, 0)
        assert ring.wait_cqe(0, timeout=5).user_data == 5
        after = ring._repr_html_()
        c = cells(after)
        assert c[:15] == ["0", "16", "0", "0", "0", "1", "8", "0", "0", "0", "2", "4", "0", "0", "0"]
        assert "kernel requests in flight (last CQE not routed yet): 1" in after
        assert c[15:17] == ["99", "2"]
        assert "BPF requests: 0 runnable, 0 parked" in after
        assert c[17:19] == ["0", "echo"] and c[20] == "2"     # the program ran twice
        assert "seen (array, key 4 B, value 8 B, max_entries 1)" in after
        assert ["0", "1", "4", "40"] == c[-4:]    # seen[0] = 1; by_user_data[4] = 40
    assert html.unescape(ring._repr_html_()).endswith("closed)</div>")
