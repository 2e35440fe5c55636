"""Writes into struct and array globals: a field, an element, an augmented assignment, nested
either way (an array field of a struct global, a struct element of an array global), a whole
struct copied into an element, and a global element handed to a subprogram by reference.

They lower as the same writes into a local do.  (They once crashed the compiler: the address
of a global kept llvmlite's typed pointer, `[N x i8]*`, and a store of a field at offset 0
through it was refused.)  One module holds a `@syscall` program, run by the kernel through
test_run, and an `@iouring` program doing the same writes, run by the engine on a real ring;
both must leave the same values in the globals, read back by name."""
from __future__ import annotations

import struct

import pytest
from kernel_harness import module
from probes import require

from pybpf_uring import Ring, compile_source
from pybpf_uring.cli import main as cli_main
from pybpf_uring.runtime.engine import instantiate


# Every write reads its inputs as {x} (an i32), {v} (a u32) and {i} (a u32 index, which may
# be outside the arrays: the write at a variable index then does nothing).
WRITES = '''
    pt.x = {x}                    # a field at offset 0
    pt.small -= 1                 # a u8: wraps to 255 on the first run
    pt.y += {v}
    pt.tags[2] = {v}              # an array field of a struct global
    pt.tags[{i}] += 1
    arr[0] += 1
    arr[1] = {v}
    arr[{i}] = {x}                # i32 into u32
    pts[1].y = {v}                # a struct element of an array global
    pts[{i}].tags[{i}] = {x}
    grow(pts[1], {v})             # by reference into a subprogram
    pts[0] = pt                   # a whole struct into an element
    runs += 1
'''

SRC = f'''
from pybpf_uring import iouring, syscall, Struct, i32, u8, u32, u64
from pybpf_uring.uring import IoUringCtx

class Point(Struct):
    x: i32
    small: u8
    y: u64
    tags: u32[3]

class Args(Struct):
    x: i32
    v: u32
    i: u32

pt: Point
arr: u32[4]
pts: Point[2]
runs: u64 = 0

def grow(p: Point, v: u32) -> None:
    p.y += v
    p.tags[0] = p.tags[0] * 2 + 1

@syscall
def record(ctx: Args) -> i32:
{WRITES.format(x="ctx.x", v="ctx.v", i="ctx.i")}
    return 0

@iouring
def record_ring(ctx: IoUringCtx) -> i32:
    x = i32(ctx.user_data)
    v = u32(ctx.user_data >> 32) & 0xFFFF
    i = u32(ctx.user_data >> 48)
{WRITES.format(x="x", v="v", i="i")}
    return 0
'''

# (x, v, i) of each run, and the globals after it, worked out by hand from WRITES.
RUNS = [
    ((-5, 7, 1), dict(
        pt=dict(x=-5, small=255, y=7, tags=[0, 1, 7]),
        arr=[1, (-5) & 0xFFFFFFFF, 0, 0],
        pts1=dict(x=0, small=0, y=14, tags=[1, (-5) & 0xFFFFFFFF, 0]))),
    ((9, 3, 2), dict(                                  # pts[2] is outside pts: no write there
        pt=dict(x=9, small=254, y=10, tags=[0, 1, 4]),
        arr=[2, 3, 9, 0],
        pts1=dict(x=0, small=0, y=6, tags=[3, (-5) & 0xFFFFFFFF, 0]))),
    ((4, 100, 9), dict(                                # 9 is outside every array
        pt=dict(x=4, small=253, y=110, tags=[0, 1, 100]),
        arr=[3, 100, 9, 0],
        pts1=dict(x=0, small=0, y=200, tags=[7, (-5) & 0xFFFFFFFF, 0]))),
]


def host_class(name: str) -> type:
    """A class of SRC as the host has it (a Struct is a ctypes structure)."""
    return module(SRC)[name]


Point = host_class("Point")


def check(g, run: int, expected: dict) -> None:
    assert g.pt == Point(**expected["pt"])
    assert g.pts[0] == g.pt                                   # copied whole, after the writes
    assert g.pts[1] == Point(**expected["pts1"])
    assert g.arr == expected["arr"]
    assert g.runs == run


@pytest.mark.kernel
def test_kernel_program_writes_fields_and_elements_of_globals():
    with compile_source(SRC, "<bpf module>").load() as live:
        assert "record_ring" in live.programs.skipped                # the engine's, not the kernel's
        program = live.programs["record"]
        for run, ((x, v, i), expected) in enumerate(RUNS, 1):
            assert program.test_run(struct.pack("<iII", x, v, i)).retval == 0
            check(live.globals, run, expected)


@pytest.mark.uring
@pytest.mark.parametrize("backend", ["interpreter", "jit"])
def test_engine_program_writes_fields_and_elements_of_globals(backend):
    if backend == "jit":
        require("jit")
    obj = compile_source(SRC, "<bpf module>")
    with Ring(entries=8) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, backend=backend))
        assert ring.engine.runner("record_ring").backend == backend
        for run, ((x, v, i), expected) in enumerate(RUNS, 1):
            ring.submit_bpf("record_ring", (i << 48) | (v << 32) | (x & 0xFFFFFFFF))
            assert ring.wait_cqe(0, timeout=5).res == 0
            check(ring.globals, run, expected)


def test_cli_compiles_a_module_writing_into_globals(tmp_path, capsys):
    source = tmp_path / "writes.py"
    source.write_text(SRC)
    assert cli_main(["compile", str(source), "-o", str(tmp_path / "writes.o")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "writes.o").read_bytes() == compile_source(SRC, str(source)).elf
