"""loop_step programs on a real ring (Linux 7.1+, io_uring_bpf_ops): attach, run inside one
io_uring_enter(), stop/continue, errors, detach and fd hygiene.  Fixtures are the C programs
tests/data/mainline_*.c (liburing's nops/cp shapes) and the Python sample the compiler builds.

Runs where `mainline.probe()` is ok: in practice inside the 7.2 VM (see conftest.py)."""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading

import pytest

from pybpf_uring.bpf import btf, kernel
from pybpf_uring import mainline
from pybpf_uring.errors import LoadError
from pybpf_uring.bpf.load import VerifierError
from pybpf_uring.mainline import LoopError, LoopRing

pytestmark = [pytest.mark.kernel("bpf", "mainline"), pytest.mark.uring]


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


# --- what the kernel offers ---------------------------------------------------------------------
def test_probe_reads_the_ops_layout_from_kernel_btf():
    support = mainline.probe()
    kops = support.require()
    assert [m.name for m in kops.ops.members][:3] == ["loop_step", "ring_fd", "priv"]
    assert kops.func_members == {"loop_step"}
    assert kops.data_offset % 8 == 0 and kops.data_offset + kops.ops.size <= kops.value_size
    assert set(kops.kfunc_ids) == set(mainline.KFUNCS)
    # the numbers come from the kernel's enums; these are their long-stable uapi values, and the
    # command kernel.link_create issues is the kernel's BPF_LINK_CREATE
    assert dict(kops.numbers) == {"prog_type": 27, "map_type": 26, "attach_type": 44}
    assert btf.kernel_btf().enum_value("bpf_cmd", "BPF_LINK_CREATE") == kernel.BPF_LINK_CREATE == 28
    assert support.ring_flags & mainline.IORING_SETUP_SQ_REWIND


def test_ring_has_the_flags_the_loop_needs():
    with LoopRing(8, 16) as ring:
        assert ring.flags & mainline.REQUIRED_RING_FLAGS == mainline.REQUIRED_RING_FLAGS
        assert ring.sq_rewind and ring.flags & mainline.IORING_SETUP_CQSIZE
        assert (ring.sq_entries, ring.cq_entries) == (8, 16)
        layout = ring.layout()
        assert layout["cq_mask"] == 15 and layout["cqes_offset"] >= 32


# --- NOPs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("wanted,batch", [(1000, 8), (100, 1), (257, 16), (1, 8)])
def test_nops_run_inside_one_enter(c_object, wanted, batch):
    with LoopRing(16, 32) as ring:
        with ring.attach(c_object("nops"), globals={"nops_wanted": wanted, "batch": batch}) as att:
            assert ring.run() == 0
            g = att.globals
            assert (g["nops_done"], g["nops_queued"], g["bad_cqes"], g["submit_error"]) == (wanted, wanted, 0, 0)
            # one step per batch (each waits for its whole batch), plus the one that sees the end
            assert g["steps"] == -(-wanted // batch) + 1
            assert ring.enter_calls == 1
            assert ring.cq_head == ring.cq_tail == wanted
            assert g["cq_entries"] == 32 and g["sq_entries"] == 16   # filled from the ring
            prog = att.programs["nops_step"]
            assert prog.verified_insns > 0 and prog.info().type == 27   # BPF_PROG_TYPE_STRUCT_OPS


def test_loop_state_survives_between_runs(c_object):
    with LoopRing(8, 16) as ring, ring.attach(c_object("nops"), globals={"nops_wanted": 40}) as att:
        ring.run()
        assert att.globals["nops_done"] == 40
        att.globals["nops_wanted"] = 100       # .bss: the host may change it between runs
        ring.run()
        assert att.globals["nops_done"] == 100 and ring.cq_head == 100
        assert ring.enter_calls == 2


def test_detach_unregisters_the_ops(c_object):
    with LoopRing(8, 16) as ring:
        att = ring.attach(c_object("nops"), globals={"nops_wanted": 10})
        ring.run()
        att.detach()
        assert not att.attached and ring.attachments == []
        assert ring.run() == 0 and ring.cq_head == 10        # no loop runs now
        with ring.attach(c_object("nops"), globals={"nops_wanted": 5}) as again:
            ring.run()                                       # the slot was freed
            assert again.globals["nops_done"] == 5


def test_one_ops_per_ring(c_object):
    with LoopRing(8, 16) as ring, ring.attach(c_object("nops")):
        before = open_fds()
        with pytest.raises(OSError, match="one per ring") as exc:
            ring.attach(c_object("nops"))
        assert exc.value.errno == errno.EBUSY
        assert open_fds() == before


def test_each_ring_gets_its_own_instance_of_the_object(c_object):
    """Attaching loads the object again: two rings, two sets of globals, no shared state."""
    with LoopRing(8, 16) as a, LoopRing(8, 16) as b:
        with a.attach(c_object("nops"), globals={"nops_wanted": 30}) as att_a, \
                b.attach(c_object("nops"), globals={"nops_wanted": 70}) as att_b:
            a.run()
            b.run()
            assert (att_a.globals["nops_done"], att_b.globals["nops_done"]) == (30, 70)
            assert (a.cq_head, b.cq_head) == (30, 70)


def test_ring_without_defer_taskrun_is_refused(c_object):
    flags = mainline.IORING_SETUP_SINGLE_ISSUER | mainline.IORING_SETUP_NO_SQARRAY | mainline.IORING_SETUP_SQ_REWIND
    with LoopRing(8, flags=flags) as ring:
        with pytest.raises(mainline.UnsuitableRingError, match="without IORING_SETUP_DEFER_TASKRUN") as exc:
            ring.attach(c_object("nops"))
        assert exc.value.errno == errno.EOPNOTSUPP


def test_only_the_creating_thread_runs_the_loop(c_object):
    """SINGLE_ISSUER | DEFER_TASKRUN: another thread's io_uring_enter is refused, and says why."""
    with LoopRing(8, 16) as ring, ring.attach(c_object("nops"), globals={"nops_wanted": 8}) as att:
        caught: list[BaseException] = []

        def other() -> None:
            try:
                ring.run()
            except LoopError as exc:
                caught.append(exc)
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        assert len(caught) == 1 and caught[0].errno == errno.EEXIST
        assert "SINGLE_ISSUER" in str(caught[0])
        assert att.globals["steps"] == 0
        assert ring.run() == 0 and att.globals["nops_done"] == 8


def test_userspace_loop_on_the_same_ring_type():
    """The benchmark's baseline: NOPs written at slots 0..n (SQ_REWIND), one enter per batch."""
    with LoopRing(8, 16) as ring:
        done = 0
        while done < 64:
            for i in range(8):
                ring.prep_nop(i, done + i)
            assert ring.submit(8, wait=8) == 8
            cqes = ring.reap()
            assert [c[0] for c in cqes] == list(range(done, done + 8)) and {c[1] for c in cqes} == {0}
            done += 8
        assert ring.enter_calls == 8


# --- stop / continue ----------------------------------------------------------------------------
def test_continue_until_stop(c_object):
    with LoopRing(4) as ring, ring.attach(c_object("steps"), globals={"stop_after": 50}) as att:
        assert ring.run() == 0
        assert att.globals["steps"] == 50
        ring.run()                                           # steps >= stop_after: stops at once
        assert att.globals["steps"] == 51 and ring.enter_calls == 2
        # the program's .maps array counted each step in slot step % 4
        assert [att.maps["step_slots"][i] for i in range(4)] == [12, 13, 13, 13]


@pytest.mark.parametrize("verdict", [2, -1, 0x100])
def test_a_verdict_other_than_continue_or_stop_is_einval(c_object, verdict):
    with LoopRing(4) as ring:
        with ring.attach(c_object("steps"), globals={"stop_after": 3, "verdict": verdict}) as att:
            with pytest.raises(LoopError, match="returned a value other than") as exc:
                ring.run()
            assert exc.value.errno == errno.EINVAL
            assert att.globals["steps"] == 3


def test_a_signal_ends_a_sleeping_loop_with_eintr(c_object):
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        with LoopRing(4) as ring, ring.attach(c_object("steps"), globals={"sleep_forever": 1}) as att:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(LoopError, match="signal") as exc:
                ring.run()
            assert exc.value.errno == errno.EINTR
            assert att.globals["steps"] >= 1
            att.globals["sleep_forever"] = 0               # the same attachment runs on
            att.globals["stop_after"] = 0
            assert ring.run() == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_run_timeout_ends_a_loop_that_never_stops(c_object):
    with LoopRing(4) as ring, ring.attach(c_object("steps"), globals={"sleep_forever": 1}) as att:
        with pytest.raises(LoopError, match=r"did not stop within 0.2 s") as exc:
            ring.run(timeout=0.2)
        assert exc.value.errno == errno.ETIME
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        att.globals["sleep_forever"] = 0
        att.globals["stop_after"] = 0
        assert ring.run(timeout=5) == 0                    # stops by itself: no error


# --- file copy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 4096, 100_003, 1 << 20])
def test_cp_copies_every_byte(c_object, tmp_path, size):
    data = os.urandom(size)
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    buf = ctypes.create_string_buffer(4096)
    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with LoopRing(4, 8) as ring:
            with ring.attach(c_object("cp"), globals={"input_fd": fin, "output_fd": fout,
                                                      "buffer": ctypes.addressof(buf),
                                                      "buffer_size": len(buf)}) as att:
                assert ring.run() == 0 and ring.enter_calls == 1
                assert att.globals["result"] == 0
                assert att.globals["offset"] == size
                chunks = -(-size // 4096)
                assert att.globals["requests"] == 2 * chunks + 1   # read+write per chunk, final read
    finally:
        os.close(fin)
        os.close(fout)
    assert dst.read_bytes() == data


def test_cp_reports_a_failed_request(c_object, tmp_path):
    (tmp_path / "in").write_bytes(b"x" * 10)
    fin = os.open(tmp_path / "in", os.O_WRONLY)             # a READ on it fails with EBADF
    buf = ctypes.create_string_buffer(64)
    try:
        with LoopRing(4, 8) as ring, ring.attach(c_object("cp"), globals={
                "input_fd": fin, "output_fd": fin, "buffer": ctypes.addressof(buf), "buffer_size": 64}) as att:
            assert ring.run() == 0
            assert att.globals["result"] == -errno.EBADF
    finally:
        os.close(fin)


# --- errors -------------------------------------------------------------------------------------
def test_verifier_rejection_points_at_the_c_line(c_object):
    before = open_fds()
    with LoopRing(8) as ring:
        with pytest.raises(VerifierError) as exc:
            ring.attach(c_object("reject"))
        err = exc.value
        assert isinstance(err, LoadError) and err.program == "wild_step"
        span = err.diagnostics[0].span
        assert span is not None and span.source.path.endswith("mainline_reject.c")
        assert "unbounded: the verifier must reject this line" in span.source.line(span.line)
        assert "Traceback" not in str(err) and "the kernel verifier rejected program 'wild_step'" in str(err)
        assert ring.attachments == []
    assert open_fds() == before


def test_globals_errors_are_diagnosed(c_object):
    with LoopRing(8, 16) as ring:
        with pytest.raises(LoadError, match="no global variable 'nope'") as exc:
            ring.attach(c_object("nops"), globals={"nope": 1})
        assert "nops_wanted" in str(exc.value)
        with ring.attach(c_object("nops")) as att:
            with pytest.raises(LoadError, match="frozen"):
                att.globals["batch"] = 4
            with pytest.raises(KeyError):
                att.globals["nope"]


def test_fds_are_all_closed(c_object):
    before = open_fds()
    ring = LoopRing(8, 16)
    att = ring.attach(c_object("nops"), globals={"nops_wanted": 16})
    ring.run()
    assert len(open_fds() - before) >= 5     # ring, BTF, .rodata, .bss, program, map, link
    ring.close()                             # detaches first
    assert not att.attached and open_fds() == before
    ring.close()
    att.close()


# --- Python programs (the compiler's @loop_step) ------------------------------------------------
def test_python_sample_runs_in_the_kernel(python_object):
    obj = python_object("mainline_nops")
    with LoopRing(8, 64) as ring, ring.attach(obj) as att:
        assert ring.run() == 0 and ring.enter_calls == 1
        g = att.globals
        assert g["completed"] == g["target"] == 1000 and g["submitted"] == 1000
        assert g["last"] == 999      # cq_reap copied each CQE, in order
        assert ring.cq_head == ring.cq_tail == 1000


@pytest.mark.parametrize("verdict,stop_after", [(1, 25), (3, 4)])
def test_python_loop_continues_then_stops(python_object, verdict, stop_after):
    with LoopRing(4) as ring:
        with ring.attach(python_object("count"), globals={"stop_after": stop_after, "verdict": verdict}) as att:
            if verdict == 1:
                assert ring.run(timeout=30) == 0
            else:
                with pytest.raises(LoopError) as exc:
                    ring.run(timeout=30)
                assert exc.value.errno == errno.EINVAL
            assert att.globals["steps"] == stop_after


@pytest.mark.parametrize("size", [0, 5000, 100_003])
def test_python_cp_copies_every_byte(python_object, tmp_path, size):
    data = os.urandom(size)
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    buf = ctypes.create_string_buffer(4096)
    fin, fout = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with LoopRing(1, 8) as ring, ring.attach(python_object("cp"), globals={
                "input_fd": fin, "output_fd": fout, "buffer": ctypes.addressof(buf), "buffer_size": 4096}) as att:
            assert ring.run(timeout=60) == 0 and ring.enter_calls == 1
            assert (att.globals["result"], att.globals["offset"]) == (0, size)
            assert att.globals["requests"] == 2 * -(-size // 4096) + 1
    finally:
        os.close(fin)
        os.close(fout)
    assert dst.read_bytes() == data
