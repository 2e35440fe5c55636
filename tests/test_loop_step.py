"""The mainline io_uring BPF language (`@loop_step`, docs/abi.md §B) as the compiler emits it: the
object libbpf and the 7.1+ kernel expect.  Running it needs a 7.1+ kernel: tests/mainline/."""
from __future__ import annotations

import os
import subprocess

import pytest

from kernel_harness import compiled
from pybpf_uring import compile_file, compile_source
from pybpf_uring.diagnostics import CompileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOPS = os.path.join(ROOT, "samples", "mainline_nops.py")


def btf_dump(obj, tmp_path) -> str:
    path = tmp_path / "o.o"
    obj.write(path)
    return subprocess.run(["bpftool", "btf", "dump", "file", str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.tools("bpftool")
@pytest.mark.kernel
def test_loop_step_object_has_struct_ops_kfuncs_and_globals(tmp_path):
    obj = compile_file(NOPS)
    prog = obj.program("nops")
    assert (prog.section, prog.kind, prog.sleepable) == ("struct_ops.s/nops", "struct_ops", True)
    text = btf_dump(obj, tmp_path)
    for expected in ("STRUCT 'io_uring_bpf_ops' size=24 vlen=3", "'loop_step' type_id=",
                     "'ring_fd' type_id=", "'priv' type_id=", "FWD 'iou_ctx' fwd_kind=struct",
                     "STRUCT 'iou_loop_params' size=4 vlen=1",
                     "FUNC 'bpf_io_uring_get_region' type_id=", "linkage=extern",
                     "FUNC 'bpf_io_uring_submit_sqes' type_id=",
                     "DATASEC '.struct_ops.link'", "(VAR 'nops_ops')", "DATASEC '.ksyms'",
                     "(VAR 'cq_entries')", "(VAR 'target')", "(VAR 'submitted')", "(VAR 'completed')",
                     "(VAR 'last')"):
        assert expected in text, expected
    datasecs = {line.split("'")[1]: line for line in text.splitlines() if "DATASEC" in line}
    assert {".rodata", ".data", ".bss", ".ksyms", ".struct_ops.link"} <= set(datasecs)
    kfunc_calls = [r.symbol for r in prog.relocations if r.kind == "kfunc"]
    assert sorted(set(kfunc_calls)) == ["bpf_io_uring_get_region", "bpf_io_uring_submit_sqes"]


def test_globals_hold_their_initial_values_in_their_sections():
    from elftools.elf.elffile import ELFFile
    import io
    obj = compile_file(NOPS)
    elf = ELFFile(io.BytesIO(obj.elf))
    assert elf.get_section_by_name(".rodata").data() == (64).to_bytes(4, "little")
    assert elf.get_section_by_name(".data").data() == (1000).to_bytes(8, "little")
    assert elf.get_section_by_name(".bss").data_size == 24   # submitted, completed, last


def test_const_globals_are_re_read_not_folded():
    """The host sets a Const before loading, so the program must load it, never fold 64."""
    obj = compile_file(NOPS)
    loads = [r for r in obj.program("nops").relocations if r.variable == "cq_entries"]
    assert loads


BASE = """
from pybpf_uring import loop_step, syscall, iouring, Struct, Const, i32, u32, u64
from pybpf_uring.iou import IouCtx, IouLoopParams, submit_sqes, get_region, cq_reap, cq_wait
from pybpf_uring.iou import IOU_REGION_SQ, IOU_REGION_CQ, CqRing
from pybpf_uring.uring import Sqe, Cqe, IoUringCtx

limit: Const[u32] = 4
count: u64 = 0

class Args(Struct):
    a: u64
"""

ERRORS = {
    "const_assigned": ("@loop_step\ndef f(ctx: IouCtx, lp: IouLoopParams) -> i32:\n    limit = 5\n    return 0\n",
                       "error: 'limit' is a read-only global (Const)"),
    "wrong_params": ("@loop_step\ndef f(ctx: IouCtx) -> i32:\n    return 0\n",
                     "error: a @loop_step program takes the loop's ctx and its parameters"),
    "kfunc_elsewhere": ("@syscall\ndef f(ctx: Args) -> i32:\n    return submit_sqes(ctx, 1)\n",
                        "error: submit_sqes() cannot be called from a @syscall program"),
    "cq_reap_in_an_rfc_program": ("@iouring\ndef f(ctx: IoUringCtx) -> i32:\n    c = Cqe()\n"
                                  "    return cq_reap(ctx, c)\n",
                                  "error: cq_reap() works on a @loop_step program's CQ region"),
    "cq_view_unchecked": ("@loop_step\ndef f(ctx: IouCtx, lp: IouLoopParams) -> i32:\n"
                          "    cq = get_region(ctx, IOU_REGION_CQ, CqRing)\n    c = Cqe()\n"
                          "    return cq_reap(cq, c)\n", "error: cq may be None here"),
    "cq_not_a_view": ("@loop_step\ndef f(ctx: IouCtx, lp: IouLoopParams) -> i32:\n"
                      "    cq = get_region(ctx, IOU_REGION_CQ, CqRing)\n    if cq is None:\n        return 1\n"
                      "    c = Cqe()\n    return cq_reap(cq, c)\n",
                      "error: expected the CQ region's view"),
    "region_unchecked": ("@loop_step\ndef f(ctx: IouCtx, lp: IouLoopParams) -> i32:\n"
                         "    s = get_region(ctx, IOU_REGION_SQ, Sqe[4])\n    s[0].opcode = 0\n    return 0\n",
                         "error: s may be None here"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_loop_step_rules(name):
    body, message = ERRORS[name]
    with pytest.raises(CompileError) as info:
        compile_source(BASE + body, f"{name}.py")
    assert message in str(info.value)


@pytest.mark.kernel
def test_globals_work_in_kernel_programs_too():
    src = BASE + """
@syscall
def bump(ctx: Args) -> i32:
    count += ctx.a
    ctx.a = count + limit
    return 0
"""
    obj, ns = compiled(src, "g.py")
    with obj.load() as live:
        prog = live.programs["bump"]
        assert prog.test_run(ctx=ns["Args"](a=5)).ctx.a == 5 + 4
        assert prog.test_run(ctx=ns["Args"](a=7)).ctx.a == 12 + 4


@pytest.mark.uring
def test_the_side_by_side_programs_of_docs_mainline_compile_and_the_rfc_one_runs(tmp_path):
    """docs/mainline.md's two NOP loops: both compile; the RFC one completes 1000 NOPs on a real
    ring in the engine (the mainline one runs in tests/mainline, in a 7.2 kernel)."""
    import re
    from pybpf_uring import Ring
    with open(os.path.join(ROOT, "docs", "mainline.md")) as f:
        rfc, mainline = re.findall(r"```python\n(.*?)```", f.read(), re.S)[:2]
    assert compile_source(mainline, "mainline.py").program("nops").kind == "struct_ops"
    obj = compile_source(rfc, "rfc.py")
    with Ring(entries=64, cq_sizes=(128, 128)) as ring:
        ring.register(obj)
        ring.submit_bpf("nops")
        done = ring.wait_cqe(timeout=10)
        assert (done.res, ring.maps["state"][0], ring.maps["state"][1], list(ring.faults)) == (0, 1000, 1000, [])
