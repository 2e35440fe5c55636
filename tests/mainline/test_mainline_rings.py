"""Rings a loop cannot drive, and programs whose view of a ring region does not fit the ring.

What the 7.2 kernel refuses (io_uring/bpf-ops.c, io_install_bpf(), reached from the struct_ops
link's reg callback at BPF_LINK_CREATE): a ring with IORING_SETUP_SQPOLL or IORING_SETUP_IOPOLL,
or one without IORING_SETUP_DEFER_TASKRUN, with EOPNOTSUPP.  io_uring_setup itself already
refuses SQPOLL together with DEFER_TASKRUN or SQ_REWIND (EINVAL), so an SQPOLL ring reaches the
attach only without DEFER_TASKRUN; IOPOLL | DEFER_TASKRUN rings are set up fine and refused at
attach by the IOPOLL check alone.  Each refusal is an UnsuitableRingError (a LoadError: the
CLI prints it without a traceback) naming the flags, with the rule as its note.

A CQ view compiled for one CQ size is refused on a ring of another (`check_region_views`) before
anything is loaded; a C program that sizes its view from `.rodata` globals fits every ring,
because the verifier reads frozen `.rodata` as known constants (the kfunc's size argument must
be one)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from pybpf_uring import mainline
from pybpf_uring.errors import LoadError
from pybpf_uring.mainline import LoopRing, UnsuitableRingError
from pybpf_uring.mainline.support import flag_names

pytestmark = [pytest.mark.kernel("bpf", "mainline"), pytest.mark.uring]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
M = mainline
RULE = ("  note: a BPF loop needs a ring set up with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN "
        "and without IORING_SETUP_SQPOLL or IORING_SETUP_IOPOLL (the loop runs in the task that calls "
        "io_uring_enter and polls nothing); LoopRing() without flags= sets up such a ring, with "
        "NO_SQARRAY and SQ_REWIND")
LOOP_FLAGS = M.REQUIRED_RING_FLAGS | M.IORING_SETUP_SQ_REWIND


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def refused(ring: LoopRing, why: str) -> str:
    return (f"error: the kernel refused to attach the loop to ring fd {ring.fd} (BPF_LINK_CREATE: "
            f"EOPNOTSUPP): the ring was set up {why}\n{RULE}")


# --- setup flags the kernel refuses ----------------------------------------------------------------
@pytest.mark.parametrize("flags,why", [
    (LOOP_FLAGS | M.IORING_SETUP_IOPOLL, "with IORING_SETUP_IOPOLL"),
    (M.IORING_SETUP_IOPOLL, "with IORING_SETUP_IOPOLL and without IORING_SETUP_DEFER_TASKRUN"),
    (M.IORING_SETUP_SQPOLL | M.IORING_SETUP_SINGLE_ISSUER | M.IORING_SETUP_NO_SQARRAY,
     "with IORING_SETUP_SQPOLL and without IORING_SETUP_DEFER_TASKRUN"),
    (M.IORING_SETUP_SQPOLL | M.IORING_SETUP_IOPOLL,
     "with IORING_SETUP_IOPOLL | IORING_SETUP_SQPOLL and without IORING_SETUP_DEFER_TASKRUN"),
    (M.IORING_SETUP_SINGLE_ISSUER | M.IORING_SETUP_NO_SQARRAY | M.IORING_SETUP_SQ_REWIND,
     "without IORING_SETUP_DEFER_TASKRUN"),
])
def test_the_kernel_refuses_the_ring_and_the_error_names_the_flags(c_object, flags, why):
    before = open_fds()
    with LoopRing(8, flags=flags) as ring:        # io_uring_setup takes these: only the attach fails
        with pytest.raises(UnsuitableRingError) as exc:
            ring.attach(c_object("nops"), globals={"nops_wanted": 8})
        assert exc.value.errno == errno.EOPNOTSUPP and isinstance(exc.value, LoadError)
        assert str(exc.value) == refused(ring, why)
        assert ring.attachments == []
    assert open_fds() == before


def test_an_iopoll_ring_is_refused_only_for_iopoll(c_object):
    """IOPOLL | DEFER_TASKRUN passes io_uring_setup and every other check of io_install_bpf():
    the same flags without IOPOLL attach and run."""
    with LoopRing(8, 16, flags=LOOP_FLAGS | M.IORING_SETUP_CQSIZE | M.IORING_SETUP_IOPOLL) as ring:
        assert ring.flags & M.IORING_SETUP_IOPOLL and "IOPOLL" in repr(ring)
        with pytest.raises(UnsuitableRingError, match="with IORING_SETUP_IOPOLL\n"):
            ring.attach(c_object("nops"))
    with LoopRing(8, 16, flags=LOOP_FLAGS | M.IORING_SETUP_CQSIZE) as ring, \
            ring.attach(c_object("nops"), globals={"nops_wanted": 8}) as att:
        assert ring.run(timeout=30) == 0 and att.globals["nops_done"] == 8


@pytest.mark.parametrize("extra,named", [
    (M.IORING_SETUP_DEFER_TASKRUN, "IORING_SETUP_DEFER_TASKRUN"),
    (M.IORING_SETUP_DEFER_TASKRUN | M.IORING_SETUP_SQ_REWIND, "IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SQ_REWIND"),
    (M.IORING_SETUP_SQ_REWIND, "IORING_SETUP_SQ_REWIND"),
])
def test_sqpoll_with_loop_flags_is_refused_at_setup(extra, named):
    flags = M.IORING_SETUP_SQPOLL | M.IORING_SETUP_SINGLE_ISSUER | M.IORING_SETUP_NO_SQARRAY | extra
    before = open_fds()
    with pytest.raises(UnsuitableRingError) as exc:
        LoopRing(8, flags=flags)
    assert exc.value.errno == errno.EINVAL
    assert str(exc.value) == (f"error: io_uring_setup(8, cq_entries=None, flags={flag_names(flags)}) "
                              f"failed: EINVAL: the kernel takes no IORING_SETUP_SQPOLL with {named}\n{RULE}")
    assert open_fds() == before


def test_the_kernel_does_not_ask_for_no_sqarray(c_object):
    """io_install_bpf() checks only SQPOLL, IOPOLL and DEFER_TASKRUN: a ring with an SQ array
    attaches (LoopRing asks for NO_SQARRAY because SQ_REWIND, which the programs rely on, needs it)."""
    with LoopRing(8, flags=M.IORING_SETUP_SINGLE_ISSUER | M.IORING_SETUP_DEFER_TASKRUN) as ring:
        with ring.attach(c_object("nops")) as att:
            assert att.attached


def test_cli_run_prints_the_refusal_without_a_traceback(c_object, tmp_path):
    script = tmp_path / "iopoll_loop.py"
    script.write_text(
        "import sys\nfrom pybpf_uring import mainline\n"
        "if __name__ == '__main__':\n"
        "    flags = mainline.REQUIRED_RING_FLAGS | mainline.IORING_SETUP_IOPOLL\n"
        "    with mainline.LoopRing(8, flags=flags) as ring:\n"
        f"        ring.attach({c_object('nops')!r})\n")
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "run", str(script)], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == ("error: the kernel refused to attach the loop to ring fd 3 (BPF_LINK_CREATE: "
                          f"EOPNOTSUPP): the ring was set up with IORING_SETUP_IOPOLL\n{RULE}\n")


def test_cli_run_sizes_the_ring_for_the_samples_views():
    """`pybpf-uring run` gives a module a ring its constant-size views fit (LoopRing.fitting):
    the NOP sample's CQ view holds 64 CQEs, more than a default ring's CQ."""
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "run", "samples/mainline_nops.py"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    values = dict(line.split(" = ") for line in run.stdout.splitlines())
    assert values["target"] == values["submitted"] == values["completed"] == "1000"


# --- region views ------------------------------------------------------------------------------------
def test_a_cq_view_for_another_cq_size_is_refused_before_loading(python_object):
    obj = python_object("cp")                          # its view: 8 CQEs
    before = open_fds()
    with LoopRing(1, 16) as ring:
        opened = open_fds()
        with pytest.raises(UnsuitableRingError) as exc:
            ring.attach(obj, globals={"buffer_size": 64})
        assert exc.value.errno == 0 and open_fds() == opened   # nothing was loaded
        assert str(exc.value) == (
            "error: program 'cp' views the CQ region as 192 bytes (8 CQEs after the 64-byte header), "
            "but this ring's CQ holds 16 CQEs (320 bytes)\n"
            "  note: a CQ view's size is fixed when the program is compiled: create the ring with "
            "LoopRing(..., cq_entries=8) or declare the view's `cqes: Cqe[16]`")
    assert open_fds() == before


def test_the_sample_needs_the_cq_size_it_was_compiled_for(python_object):
    obj = python_object("mainline_nops")              # CQ_SLOTS = 64, BATCH = 8
    with LoopRing(8, 16) as ring, pytest.raises(UnsuitableRingError, match=r"holds 16 CQEs \(320 bytes\)"):
        ring.attach(obj)
    with LoopRing(4, 64) as ring, pytest.raises(UnsuitableRingError) as exc:
        ring.attach(obj)
    assert str(exc.value) == (
        "error: program 'nops' views the SQ region as 512 bytes (8 SQEs), but this ring has 4 SQ "
        "entries (256 bytes)\n  note: create the ring with LoopRing(8, ...) or view at most Sqe[4]")
    with LoopRing(8, 64) as ring, ring.attach(obj) as att:
        assert ring.run(timeout=60) == 0 and att.globals["completed"] == 1000


@pytest.mark.parametrize("cq", [8, 256, 4096])
def test_a_view_sized_from_rodata_fits_every_ring(c_object, cq):
    """mainline_nops.c asks for `cqes_offset + cq_entries * 16` bytes, both `const volatile`
    globals the loader fills from the ring: the verifier takes loads from frozen .rodata as
    known constants, so the kfunc's `rdwr_buf_size` (which must be one) follows the ring; a
    4096-entry CQ spans 17 pages."""
    with LoopRing(8, cq) as ring:
        assert mainline.region_views(mainline.as_object(c_object("nops"))) == []
        with ring.attach(c_object("nops"), globals={"nops_wanted": 300}) as att:
            assert ring.run(timeout=60) == 0
            assert (att.globals["nops_done"], att.globals["bad_cqes"], att.globals["cq_entries"]) == (300, 0, cq)
