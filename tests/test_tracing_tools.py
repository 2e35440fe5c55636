"""The io_uring tracing tools (samples/iouring_latency.py, iouring_top.py, iouring_errors.py) and
`pybpf-uring run` on a tracing module: each runs as a user runs it, in its own process, filtered
to this test's pid, while the test issues a workload with known counts on its own ring -- so many
NOPs, reads of a file, reads of an fd that is not open -- and the counts printed at exit must be
exactly those."""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pybpf_uring import Ring, compile_file
from pybpf_uring.bpf.hist import watch
from pybpf_uring.uring import prep_nop, prep_read

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TOOLS = ["iouring_latency.py", "iouring_top.py", "iouring_errors.py"]
RUNNERS = {"python": [sys.executable], "pybpf-uring run": [sys.executable, "-m", "pybpf_uring", "run"]}
NOPS, READS, BAD_READS = 10, 3, 2
EBADF = 9

kernel = pytest.mark.kernel("bpf", "tracefs", "vmlinux")
uring = pytest.mark.uring


def test_every_tool_compiles_to_io_uring_tracepoints():
    for name in TOOLS:
        sections = {p.section for p in compile_file(SAMPLES / name).programs}
        assert sections <= {"tracepoint/io_uring/io_uring_submit_req",
                            "tracepoint/io_uring/io_uring_complete"}, name


def workload() -> None:
    """NOPS NOPs, READS reads of 4 bytes of a file, BAD_READS reads of an fd that is not open."""
    with tempfile.TemporaryFile() as f, Ring(8) as ring:
        f.write(b"data")
        f.flush()
        buf = ctypes.create_string_buffer(4)
        for i in range(NOPS + READS + BAD_READS):
            sqe = ring.sqe()
            if i < NOPS:
                prep_nop(sqe)
            else:
                fd = f.fileno() if i < NOPS + READS else 1 << 20
                prep_read(sqe, fd, ctypes.addressof(buf), 4, 0)
            ring.submit(sqe)
            res = ring.wait_cqe().res
            assert res == (0 if i < NOPS else 4 if i < NOPS + READS else -EBADF)


def traced(cmd: list[str], linger: float = 0) -> str:
    """Start a tool, wait until it has attached, run the workload, wait `linger` seconds, stop it
    with Ctrl-C (SIGINT) and return what it printed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=str(ROOT))
    try:
        line = proc.stderr.readline()
        assert line.startswith("attached "), line + proc.stderr.read()
        workload()
        time.sleep(linger)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    return out


def at_exit(out: str) -> str:
    head, _, tail = out.partition("--- at exit (interrupt, ")
    assert tail, out
    return tail.split("\n", 1)[1]


def histogram_total(text: str, group: str) -> int:
    block = text.split(f"@lat_ns[{group}]:\n", 1)[1].split("\n@", 1)[0]
    return sum(int(m) for m in re.findall(r"^\[.*?[\])]\s+(\d+) \|", block, re.M))


@kernel
@uring
@pytest.mark.parametrize("runner", list(RUNNERS))
def test_iouring_latency_counts_each_request_in_its_opcodes_histogram(runner):
    out = at_exit(traced([*RUNNERS[runner], str(SAMPLES / "iouring_latency.py"), "--pid", str(os.getpid()),
                          "--duration", "120"]))
    assert histogram_total(out, "opcode=NOP") == NOPS, out
    assert histogram_total(out, "opcode=READ") == READS + BAD_READS, out
    assert "@start: (empty)" in out         # every request completed and was forgotten


@kernel
@uring
def test_iouring_top_counts_operations_per_process_and_opcode():
    out = at_exit(traced([sys.executable, str(SAMPLES / "iouring_top.py"), "--pid", str(os.getpid())]))
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    me = f"pid={os.getpid()}, comm={comm}"
    assert out.strip().splitlines() == [f"@ops[{me}, opcode=READ]: {READS + BAD_READS}",
                                        f"@ops[{me}, opcode=NOP]: {NOPS}"], out


@kernel
@uring
def test_iouring_errors_counts_failures_by_opcode_and_errno():
    out = at_exit(traced([sys.executable, str(SAMPLES / "iouring_errors.py"), "--pid", str(os.getpid())]))
    assert f"@errors[opcode=READ, errno={EBADF}]: {BAD_READS}" in out.splitlines(), out
    assert "@opcode_of: (empty)" in out and out.count("@errors[") == 1, out


TOOL = """
from pybpf_uring import tracepoint, HashMap, get_current_pid_tgid, i32, u32, u64

ME = {pid}
submitted = HashMap(u32, u64, 64)

@tracepoint("io_uring", "io_uring_submit_req")
def submit(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == ME:
        submitted[ctx.opcode] += 1
    return 0
"""


@kernel
@uring
def test_run_attaches_a_tracing_module_and_prints_its_maps_at_intervals_and_at_exit(tmp_path):
    """`pybpf-uring run --interval S tool.py` for a module without a main block: every program
    attached, the maps printed at each interval and at Ctrl-C."""
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL.format(pid=os.getpid()))
    out = traced([sys.executable, "-m", "pybpf_uring", "run", "--interval", "0.2", str(tool)], linger=0.7)
    assert at_exit(out).strip() == f"@submitted[22]: {READS + BAD_READS}\n@submitted[0]: {NOPS}", out
    assert re.search(r"^--- 0\.\d s ---\n@submitted\[", out, re.M), out


@kernel
def test_run_stops_after_its_duration(tmp_path):
    tool = tmp_path / "tool.py"
    tool.write_text(TOOL.format(pid=os.getpid()))
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "run", "--duration", "0.5", str(tool)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "attached submit; for 0.5 s" in run.stderr
    assert re.search(r"^--- at exit \(duration, 0\.\d s\) ---\n@submitted: \(empty\)$", run.stdout, re.M), run.stdout


def test_watch_prints_at_each_interval_and_at_the_end_on_a_clock_it_is_given():
    """watch's schedule, on a fake clock: prints at 1, 2, 3 s of a 3.5 s duration, then at exit."""
    now = [0.0]
    lines = []

    class Maps(dict):
        pass

    assert watch(Maps(), 3.5, 1.0, lines.append, clock=lambda: now[0],
                 sleep=lambda s: now.__setitem__(0, now[0] + s)) == "duration"
    assert lines == ["--- 1.0 s ---", "--- 2.0 s ---", "--- 3.0 s ---", "--- at exit (duration, 3.5 s) ---"]


def test_a_signal_just_before_the_wait_ends_it():
    """Ctrl-C landing after the interpreter last looked for signals and before the sleep's system
    call (a tool stopped right after it attached, on a loaded machine) must still end the wait:
    the signal handler's byte on the wakeup pipe, written here as the handler writes it, ends a
    60 s sleep at once; and the process's wakeup fd is put back after."""
    import signal as sig
    from pybpf_uring.bpf.hist import _Waker
    before = sig.set_wakeup_fd(-1)
    sig.set_wakeup_fd(before)
    waker = _Waker()
    try:
        os.write(waker._fds[1], bytes([sig.SIGINT]))
        start = time.monotonic()
        waker.sleep(60)
        assert time.monotonic() - start < 30
    finally:
        waker.close()
    assert sig.set_wakeup_fd(before) == before
