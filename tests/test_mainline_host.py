"""Mainline io_uring BPF (`io_uring_bpf_ops`, Linux 7.1+) from this machine's side.

This kernel (6.18) has no io_uring_bpf_ops, so here the loader must say so cleanly: one
diagnosed message (as the CLI prints it) naming each missing piece, no traceback, no fd left
open.  The parts that need no such kernel (the lazy decoder of the kernel's BTF, reading ops
variables and globals from objects, the ring a loop drives used from userspace) are tested here
directly.  And one test boots Debian's 7.2 kernel under QEMU (the project's tools/vm) and runs
the tests/mainline group there, in one boot.
"""
from __future__ import annotations

import ctypes
import errno
import importlib.util
import os
import re
import subprocess
import sys

import probes
import pytest

from pybpf_uring.bpf import btf, kernel, load
from pybpf_uring import mainline
from pybpf_uring.bpf.btf import BtfError, LazyBtf, parse_btf
from pybpf_uring.errors import LoadError
from pybpf_uring.bpf.globals_view import GlobalVar, global_vars, with_globals
from pybpf_uring.mainline import LoopRing, MainlineUnsupportedError
from pybpf_uring.mainline.ops import choose_ops
from pybpf_uring.mainline.support import kernel_ops_from, ring_refusal
from pybpf_uring.bpf.objfile import BpfObject

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
VM_DIR = os.path.join(ROOT, "tools", "vm")
CLANG = [probes.CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3"]
FIXTURES = ("nops", "steps", "cp", "reject")
# hypothesis's plugin alone takes 20 s to import under TCG; the group uses none of these
PYTEST_LEAN = "-p no:cacheprovider -p no:hypothesispytest -p no:benchmark"
VM_BUDGET_S = 300        # a hung guest must not hang the suite (the run itself takes ~50 s)


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> str:
    """tests/data/mainline_*.c compiled by clang-22 into a directory (the VM reads it too), for
    tests marked tools("clang")."""
    out = tmp_path_factory.mktemp("mainline_objects")
    for name in FIXTURES:
        subprocess.run(CLANG + ["-c", os.path.join(DATA, f"mainline_{name}.c"), "-o",
                                str(out / f"mainline_{name}.o")], check=True, capture_output=True)
    # The Python programs too (llvmlite under TCG takes ~15 s); one that does not compile is
    # compiled again in the VM by the test that needs it, which reports why.
    loop_programs().build_all(str(out))
    return str(out)


def loop_programs():
    """tests/mainline/loop_programs.py (the group's directory is not a package)."""
    spec = importlib.util.spec_from_file_location("loop_programs", os.path.join(ROOT, "tests", "mainline",
                                                                                 "loop_programs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def obj_path(objects: str, name: str) -> str:
    return os.path.join(objects, f"mainline_{name}.o")


# --- on a kernel without io_uring_bpf_ops ---------------------------------------------------------
needs_old_kernel = pytest.mark.skipif(mainline.probe().ok,
                                      reason="this kernel has io_uring_bpf_ops (tests/mainline runs here)")


@pytest.mark.tools("clang")
@needs_old_kernel
def test_attach_names_exactly_what_the_kernel_lacks(objects):
    before = open_fds()
    with LoopRing(8) as ring:
        with pytest.raises(MainlineUnsupportedError) as exc:
            ring.attach(obj_path(objects, "nops"), globals={"nops_wanted": 10})
    err = exc.value
    assert isinstance(err, LoadError) and err.kind == "loop_step"
    text = str(err)
    assert text.startswith(f"error: this kernel ({os.uname().release}) cannot run io_uring "
                           "loop_step programs: it lacks ")
    for piece in ("BTF type `struct io_uring_bpf_ops`", "`struct bpf_struct_ops_io_uring_bpf_ops`",
                  "kfunc `bpf_io_uring_submit_sqes`", "kfunc `bpf_io_uring_get_region`"):
        assert piece in text
    assert "note: io_uring_bpf_ops needs Linux 7.1 or later" in text
    assert "Traceback" not in text and len(err.missing) == 4
    assert open_fds() == before


@pytest.mark.kernel
@needs_old_kernel
def test_probe_reports_and_require_raises():
    support = mainline.probe()
    assert not support.ok and support.kernel_ops is None
    assert support.release == os.uname().release
    with pytest.raises(MainlineUnsupportedError, match="cannot run io_uring loop_step programs"):
        support.require()
    # the ring flags are probed by trying them: 6.18 has CQSIZE but not SQ_REWIND (7.0)
    assert support.ring_flags & mainline.IORING_SETUP_CQSIZE


@pytest.mark.kernel("bpf", "vmlinux")
@pytest.mark.uring
@pytest.mark.tools("clang")
def test_cli_style_rendering_has_no_traceback(objects):
    """What `pybpf-uring` prints for a diagnosed error: the rendered diagnostics only."""
    code = ("import sys\nfrom pybpf_uring.mainline import LoopRing\nfrom pybpf_uring.errors "
            "import DiagnosedError\ntry:\n    LoopRing(8).attach(sys.argv[1])\nexcept DiagnosedError as e:\n"
            "    print(e, file=sys.stderr); sys.exit(1)\n")
    run = subprocess.run([sys.executable, "-c", code, obj_path(objects, "nops")], capture_output=True,
                         text=True, cwd=ROOT)
    if mainline.probe().ok:
        assert run.returncode == 0, run.stderr
    else:
        assert run.returncode == 1 and run.stderr.startswith("error: this kernel (")
        assert "Traceback" not in run.stderr


# --- the kernel's BTF, decoded on demand ---------------------------------------------------------
@pytest.mark.kernel("vmlinux")
def test_lazy_decoder_agrees_with_the_full_parser():
    """Every type of the running kernel's BTF decodes on demand to what parse_btf makes of it,
    and names are found (and kinds told apart) as the full parse finds them."""
    with open(btf.VMLINUX_BTF, "rb") as f:
        raw = f.read()
    lazy, full = LazyBtf(raw), parse_btf(raw)
    assert len(lazy) == len(full.types)
    assert all(lazy[i] == full.types[i] for i in range(0, len(full.types), 7))
    for name, kind in [("task_struct", "struct"), ("bpf_cmd", "enum"), ("io_uring_params", "struct"),
                       ("bpf_rcu_read_lock", "func"), ("bpf_prog_type", "enum"), ("u32", None)]:
        type_id = lazy.find(name, kind)
        assert type_id == full.find(name, kind) and type_id is not None
        assert lazy.find_all(name) == full.find_all(name)
        assert lazy[type_id] == full.types[type_id]
    assert lazy.find("task_struct", "union") is None and lazy.find("no_such_type_anywhere") is None
    task = lazy.find("task_struct", "struct")
    assert lazy.size_of(task) == full.size_of(task) and lazy.type_name(task) == "struct task_struct"
    # the numbers kernel.py issues bpf() with are the running kernel's
    assert lazy.enum_value("bpf_cmd", "BPF_LINK_CREATE") == kernel.BPF_LINK_CREATE == 28
    assert lazy.enum_value("bpf_attach_type", "BPF_STRUCT_OPS") == 44
    assert lazy.enum_value("bpf_cmd", "NO_SUCH_VALUE") is None


@pytest.mark.kernel("vmlinux")
@pytest.mark.tools("clang")
def test_lazy_decoder_reads_an_objects_btf(objects):
    obj = BpfObject.read(obj_path(objects, "nops"))
    lazy = LazyBtf(obj.btf.raw)
    assert [lazy[i] for i in range(len(lazy))] == obj.btf.types
    ops_id = lazy.find("io_uring_bpf_ops", "struct")
    assert ops_id == obj.btf.find("io_uring_bpf_ops", "struct")
    assert lazy.is_func_pointer(lazy[ops_id].members[0].type)
    assert not lazy.is_func_pointer(lazy[ops_id].members[1].type)
    assert lazy.has_name("io_uring_bpf_ops") and not lazy.has_name("io_uring_bpf_op")


@pytest.mark.kernel("vmlinux")
@pytest.mark.tools("clang")
def test_lazy_decoder_refuses_malformed_btf(objects):
    """Bad bytes are a BtfError saying where, never a struct.error or an IndexError."""
    raw = BpfObject.read(obj_path(objects, "nops")).btf.raw
    hdr_len, type_len = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[12:16], "little")
    with pytest.raises(BtfError, match="magic"):
        LazyBtf(b"\0\0" + raw[2:])
    with pytest.raises(BtfError, match="truncated"):   # the last record loses its last word
        LazyBtf(raw[:12] + (type_len - 4).to_bytes(4, "little") + raw[16:])
    unknown = bytearray(raw)
    unknown[hdr_len + 7] = 31                          # type 1's kind
    with pytest.raises(BtfError, match="type 1 has unknown kind 31"):
        LazyBtf(bytes(unknown))
    with pytest.raises(BtfError, match="out of range"):
        LazyBtf(raw)[len(LazyBtf(raw))]


@pytest.mark.kernel("vmlinux")
def test_the_loader_and_the_probe_share_one_kernel_btf():
    """vmlinux is read once per process: the loader's kfunc ids and BTF-name checks and the
    mainline probe all answer from btf.kernel_btf()."""
    shared = btf.kernel_btf()
    assert shared is btf.kernel_btf() and shared is not None
    assert load.kfunc_id("bpf_rcu_read_lock", "p") == shared.find("bpf_rcu_read_lock", "func")
    assert load.kernel_has_btf_type("task_struct") and not load.kernel_has_btf_type("no_such_type_anywhere")
    with pytest.raises(LoadError, match="calls kernel function 'no_such_kfunc', which is not in this kernel's BTF"):
        load.kfunc_id("no_such_kfunc", "p")


@pytest.mark.tools("clang")
def test_probe_names_each_missing_piece_of_a_partial_btf(objects):
    """An object's BTF has the ops struct and the kfunc externs but none of the kernel's enums
    or the struct_ops value type: the probe names exactly those, whatever kernel runs this."""
    partial = LazyBtf(BpfObject.read(obj_path(objects, "nops")).btf.raw)
    missing: list[str] = []
    assert kernel_ops_from(partial, missing) is None
    assert missing == [
        "BTF type `struct bpf_struct_ops_io_uring_bpf_ops` with a `data` member (the struct_ops "
        "value type the kernel registers along with the ops)",
        "`BPF_PROG_TYPE_STRUCT_OPS` in BTF `enum bpf_prog_type`",
        "`BPF_MAP_TYPE_STRUCT_OPS` in BTF `enum bpf_map_type`",
        "`BPF_STRUCT_OPS` in BTF `enum bpf_attach_type`"]


@pytest.mark.kernel
def test_link_create_failure_names_the_command_and_errno():
    """kernel.link_create is the one BPF_LINK_CREATE call; a bad fd is the kernel's EBADF."""
    with pytest.raises(OSError) as exc:
        kernel.link_create(1 << 20, 0, 44)
    assert exc.value.errno == errno.EBADF
    assert exc.value.strerror == "BPF_LINK_CREATE failed: EBADF (not an open BPF object fd)"


# --- the object side --------------------------------------------------------------------------------
@pytest.mark.tools("clang")
def test_ops_variable_of_a_clang_object(objects):
    [spec] = mainline.ops_specs(BpfObject.read(obj_path(objects, "nops")))
    assert (spec.name, spec.section, spec.type_name, spec.link) == (
        "nops_ops", ".struct_ops.link", "io_uring_bpf_ops", True)
    assert dict(spec.programs) == {"loop_step": "nops_step"}
    assert [m.name for m in spec.members] == ["loop_step", "ring_fd", "priv"]
    assert spec.sizes == {"loop_step": 8, "ring_fd": 4, "priv": 8} and len(spec.data) == 24


@pytest.mark.tools("clang")
def test_globals_of_a_clang_object_are_set_on_a_copy(objects):
    obj = BpfObject.read(obj_path(objects, "cp"))
    variables = global_vars(obj)
    assert variables["result"] == GlobalVar("result", ".data", variables["result"].offset, 4, ctypes.c_int32)
    assert variables["cq_entries"].section == ".rodata" and variables["cq_entries"].ctype is ctypes.c_uint32
    assert {"input_fd", "buffer", "offset", "requests"} <= set(variables)
    patched = with_globals(obj, {"cq_entries": 64, "result": -5, "buffer": 1 << 40})
    rodata = patched.map(".rodata").data
    at = variables["cq_entries"].offset
    assert rodata[at:at + 4] == (64).to_bytes(4, "little")
    data = patched.map(".data").data
    assert data[variables["result"].offset:][:4] == (-5).to_bytes(4, "little", signed=True)
    assert patched.map(".bss").data[variables["buffer"].offset:][:8] == (1 << 40).to_bytes(8, "little")
    assert obj.map(".rodata").data == bytes(len(rodata))     # the original is untouched
    with pytest.raises(LoadError, match="no global variable 'nope'"):
        with_globals(obj, {"nope": 1})
    with pytest.raises(OverflowError):
        with_globals(obj, {"cq_entries": 1 << 32})


@pytest.mark.tools("clang")
def test_an_object_without_ops_is_diagnosed(objects, tmp_path):
    src = tmp_path / "plain.c"
    src.write_text('int f(void *ctx) __attribute__((section("syscall"), used));\n'
                   'int f(void *ctx) { return 0; }\n'
                   'char LICENSE[] __attribute__((section("license"), used)) = "GPL";\n')
    out = tmp_path / "plain.o"
    subprocess.run(CLANG + ["-c", str(src), "-o", str(out)], check=True, capture_output=True)
    with pytest.raises(LoadError, match=r"has no `struct io_uring_bpf_ops` variables"):
        choose_ops(BpfObject.read(out), None)
    with pytest.raises(LoadError, match="no struct_ops variable 'x'"):
        choose_ops(BpfObject.read(obj_path(objects, "nops")), "x")


@pytest.mark.parametrize("name", ["count", "cp", "mainline_nops"])
def test_compiled_python_programs_have_what_the_loader_needs(name):
    """The compiler's side of the contract: an io_uring_bpf_ops variable in .struct_ops.link
    whose loop_step points at a sleepable struct_ops program, the kfuncs as calls to resolve,
    and the globals the host sets by name."""
    obj = loop_programs().build(name)
    [spec] = mainline.ops_specs(obj)
    assert (spec.section, spec.type_name, list(spec.programs)) == (".struct_ops.link", "io_uring_bpf_ops",
                                                                   ["loop_step"])
    prog = obj.program(spec.programs["loop_step"])
    assert prog.kind == "struct_ops" and prog.sleepable and prog.section == f"struct_ops.s/{prog.name}"
    assert {r.symbol for r in prog.relocations if r.kind == "kfunc"} <= set(mainline.KFUNCS)
    variables = global_vars(obj)
    wanted = {"count": {"steps", "stop_after", "verdict"},
              "cp": {"input_fd", "output_fd", "buffer", "buffer_size", "offset", "result", "requests"},
              "mainline_nops": {"cq_entries", "target", "submitted", "completed"}}[name]
    assert wanted <= set(variables)
    if name == "mainline_nops":   # a Const: the host fills it from the ring, before loading
        assert variables["cq_entries"].section == ".rodata"
        patched = with_globals(obj, {"cq_entries": 64})
        assert patched.map(".rodata").data[:4] == (64).to_bytes(4, "little")


@pytest.mark.tools("clang")
def test_attach_takes_a_decorated_function_a_path_or_bytes(objects, tmp_path):
    module = tmp_path / "one_step.py"
    module.write_text(loop_programs().COUNT)
    namespace: dict = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    from_function = mainline.as_object(namespace["count"])
    assert [p.name for p in from_function.programs] == ["count"]
    path = obj_path(objects, "nops")
    with open(path, "rb") as f:
        raw = f.read()
    for given in (path, raw, BpfObject.read(path)):
        assert [p.name for p in mainline.as_object(given).programs] == ["nops_step"]


@pytest.mark.tools("clang")
def test_region_views_are_read_from_the_code(objects):
    """The constant (region, size) of each get_region call: Python views are sized when compiled;
    the C nops and cp size theirs from .rodata, so they have none."""
    views = {name: [(v.program, v.region, v.size) for v in mainline.region_views(loop_programs().build(name))]
             for name in ("mainline_nops", "cp", "count")}
    cq, sq = mainline.IOU_REGION_CQ, mainline.IOU_REGION_SQ
    assert views == {"mainline_nops": [("nops", cq, 64 + 64 * 16), ("nops", sq, 8 * 64)],
                     "cp": [("cp", cq, 64 + 8 * 16), ("cp", sq, 64)], "count": [("count", cq, 32)]}
    for name in ("nops", "cp"):
        assert mainline.region_views(BpfObject.read(obj_path(objects, name))) == []
    [header] = mainline.region_views(BpfObject.read(obj_path(objects, "steps")))   # a constant 64
    assert (header.program, header.region, header.size) == ("count_step", cq, 64)


@pytest.mark.uring
def test_region_views_are_checked_against_the_ring_here():
    """The check needs only the ring's layout, so it runs on this kernel too."""
    cp, count = loop_programs().build("cp"), loop_programs().build("count")
    with LoopRing(1, 8) as ring:
        mainline.check_region_views(cp, ring)
    for sq, cq in ((1, 16), (2, 4)):
        with LoopRing(sq, cq) as ring:
            with pytest.raises(mainline.UnsuitableRingError, match=f"holds {cq} CQEs") as exc:
                mainline.check_region_views(cp, ring)
            assert exc.value.errno == 0 and f"declare the view's `cqes: Cqe[{cq}]`" in str(exc.value)
            mainline.check_region_views(count, ring)          # a header-only view fits any ring
    assert ring_refusal(mainline.REQUIRED_RING_FLAGS) == ""
    assert ring_refusal(mainline.REQUIRED_RING_FLAGS | mainline.IORING_SETUP_IOPOLL) == \
        "with IORING_SETUP_IOPOLL"
    assert ring_refusal(mainline.IORING_SETUP_SQPOLL) == \
        "with IORING_SETUP_SQPOLL and without IORING_SETUP_DEFER_TASKRUN"


# --- the ring, from userspace ---------------------------------------------------------------------
@pytest.mark.uring
def test_loop_ring_from_userspace_here():
    """The ring a loop drives works on any kernel with the required flags (6.1+); without
    SQ_REWIND, `submit` moves the SQ tail over the same slots."""
    before = open_fds()
    with LoopRing(8, 16) as ring:
        assert ring.flags & mainline.REQUIRED_RING_FLAGS == mainline.REQUIRED_RING_FLAGS
        assert ring.sq_rewind == bool(mainline.probe().ring_flags & mainline.IORING_SETUP_SQ_REWIND)
        seen = []
        for batch in range(5):
            for i in range(8):
                ring.prep_nop(i, batch * 8 + i)
            assert ring.submit(8, wait=8) == 8
            seen += ring.reap()
        assert [c[0] for c in seen] == list(range(40)) and {c[1] for c in seen} == {0}
        assert ring.cq_head == ring.cq_tail == 40 and ring.enter_calls == 5
        assert "SINGLE_ISSUER|DEFER_TASKRUN|NO_SQARRAY" in repr(ring)
    assert ring.closed and open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        ring.run()


@pytest.mark.uring
def test_ring_setup_failure_names_the_flags():
    before = open_fds()
    with pytest.raises(OSError, match=r"io_uring_setup\(8, cq_entries=None, flags=IORING_SETUP_SINGLE_ISSUER"
                       r" \| IORING_SETUP_DEFER_TASKRUN \| IORING_SETUP_NO_SQARRAY \| 0x80000000\) "
                       r"failed: EINVAL") as exc:
        LoopRing(8, flags=mainline.REQUIRED_RING_FLAGS | (1 << 31))
    assert exc.value.errno == errno.EINVAL and open_fds() == before


# --- the tests/mainline group, in Debian's 7.2 kernel ----------------------------------------------
def _ensure_vm() -> None:
    """Prepare the VM once per machine: tools/vm/setup.sh fills ~/.cache/pybpf-uring-vm the first
    time and only checks it afterwards (~0.1 s).  Where the vm probe (tests/probes.py) passed,
    any way this cannot work is a failure with the reason, never a skip: the group only runs here."""
    try:
        run = subprocess.run([os.path.join(VM_DIR, "setup.sh")], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("tools/vm/setup.sh did not finish in 15 minutes (network?)")
    if run.returncode:
        tail = "\n".join((run.stdout + run.stderr).splitlines()[-15:])
        pytest.fail(f"tools/vm/setup.sh failed (exit {run.returncode}); it needs root, apt and "
                    f"network access to deb.debian.org; its output ends:\n{tail}")


@pytest.mark.tools("clang")
@pytest.mark.vm
def test_mainline_group_runs_in_a_72_vm(objects):
    """One boot: the whole tests/mainline group under the 7.2 kernel, with the fixtures compiled
    here (clang under TCG is slow) and the host's own Python (the guest's / is the host's)."""
    _ensure_vm()
    command = (f"PYBPF_URING_MAINLINE_REQUIRED=1 PYBPF_URING_MAINLINE_OBJECTS={objects} "
               f"{sys.executable} -m pytest -q {PYTEST_LEAN} -o addopts= tests/mainline")
    env = dict(os.environ, VMRUN_TIMEOUT=str(VM_BUDGET_S))
    for attempt in (1, 2):
        try:
            run = subprocess.run([os.path.join(VM_DIR, "vmrun"), command], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=VM_BUDGET_S + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the VM run took more than {VM_BUDGET_S + 60} s")
        if run.returncode != 125:   # 125: the guest never reported (it did not boot): once more
            break
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"tests/mainline in the 7.2 VM failed (exit {run.returncode}):\n{output[-6000:]}"
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= 45, output[-3000:]
    assert not re.search(r"\d+ (failed|error|skipped)", output), output[-3000:]
