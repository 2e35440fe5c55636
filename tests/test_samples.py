"""Every sample in samples/ runs as a script (its `if __name__ == "__main__":` host block on a real
Ring) and prints what happened; these tests run them as a user would and check the outcome, both
as `python FILE ARGS` and as `pybpf-uring run FILE ARGS` (which must behave the same)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


RUNNERS = {"python": [sys.executable], "pybpf-uring run": [sys.executable, "-m", "pybpf_uring", "run"]}


@pytest.fixture(params=list(RUNNERS))
def runner(request) -> list[str]:
    """How a sample is started: the command line before FILE."""
    return RUNNERS[request.param]


def start(runner: list[str], name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([*runner, str(SAMPLES / name), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


def run(runner: list[str], name: str, *args: str) -> str:
    proc = start(runner, name, *args)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_runtime_sample_is_a_bpf_module_that_compiles():
    from pybpf_uring import compile_file
    names = ["rfc_helpers.py", "counting.py", "pingpong.py", "write_file.py", "read_open.py",
             "file_copy.py", "udp_keepalive.py"]
    for name in names:
        obj = compile_file(SAMPLES / name)
        assert obj.programs, name


@pytest.mark.uring
def test_rfc_helpers(runner):
    out = run(runner, "rfc_helpers.py")
    assert out.splitlines()[:3] == ["CQ0: user_data=5 res=13", "CQ0: user_data=2 res=0",
                                    "CQ0: user_data=request res=0"]
    assert "reaped from CQ1: [3, 11, 4, 12]" in out
    assert "runs: 2 counter in user memory: 42" in out
    assert "CQ1 left: 0 faults: []" in out
    assert "trace: ['test: user counter now 42']" in out


@pytest.mark.uring
def test_counting(runner):
    out = run(runner, "counting.py", "20")
    assert "request done: res=0" in out
    assert "rounds: 11 (other than -ETIME: 0)" in out
    elapsed = int(re.search(r"elapsed: (\d+) ms", out).group(1))
    assert 11 * 20 <= elapsed < 11 * 20 * 5          # the timeouts really ran, one after another


@pytest.mark.uring
def test_pingpong(runner):
    out = run(runner, "pingpong.py")
    assert "parked before the kick-off: 2" in out
    assert "completed requests: [1, 2]" in out
    assert "reaped on CQ1: 11 on CQ2: 10" in out      # counts 0..20, alternating sides
    assert "last count: 20" in out
    assert "io_uring_enter calls for the rally: 1" in out
    assert "left on CQ1/CQ2: 0 0 faults: []" in out


@pytest.mark.uring
def test_write_file(runner, tmp_path):
    out = run(runner, "write_file.py", str(tmp_path / "out.bin"))
    assert "request done: res=0" in out
    assert re.search(r"blocks queued 16, done 16, failed 0, program runs \d+, deepest queue 4", out)
    assert "file: 262144 bytes, matches the buffer: True" in out
    data = (tmp_path / "out.bin").read_bytes()
    assert [data[i * 16384] for i in range(16)] == [ord("A") + i for i in range(16)]


@pytest.mark.uring
def test_read_open(runner, tmp_path):
    path = tmp_path / "hello.txt"
    path.write_text("hello from a file\nsecond line\n")
    out = run(runner, "read_open.py", str(path))
    assert "request done: res=0" in out
    assert re.search(r"open -> fd \d+, read -> 30 bytes, close -> 0", out)
    assert "first line: hello from a file" in out
    assert "requests in flight (map): 0 faults: []" in out


@pytest.mark.uring
def test_read_open_of_a_missing_file_reports_enoent_and_fails(runner, tmp_path):
    missing = tmp_path / "missing"
    proc = start(runner, "read_open.py", str(missing))
    assert proc.returncode == 1          # as cat's: the file was not read
    assert "open -> fd -2, read -> -1 bytes, close -> -1" in proc.stdout
    assert "requests in flight (map): 0" in proc.stdout
    assert proc.stderr == f"{SAMPLES / 'read_open.py'}: open {missing}: No such file or directory\n"


@pytest.mark.uring
def test_file_copy(runner, tmp_path):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = os.urandom(5 * 65536 + 777)
    src.write_bytes(data)
    out = run(runner, "file_copy.py", str(src), str(dst))
    assert "request done: res=0" in out
    assert re.search(rf"copied {len(data)} of {len(data)} bytes, errors 0, deepest 4 chains", out)
    assert "identical: True" in out
    assert dst.read_bytes() == data


@pytest.mark.uring
def test_udp_keepalive_wakes_the_application_only_for_real_traffic(runner):
    out = run(runner, "udp_keepalive.py", "16", "20")
    assert "request done: res=0" in out
    m = re.search(r"connections 16, ticks (\d+)", out)
    ticks = int(m.group(1))
    assert ticks >= 10
    m = re.search(r"PINGs sent (\d+) \(each connection at least (\d+)\), seen by peers (\d+)", out)
    sent, least, seen = map(int, m.groups())
    # the last round's send CQEs or the peers' reads may land after the STOP: a round of slack
    assert 16 * (ticks - 1) <= sent <= 16 * ticks and least >= ticks - 1 and abs(seen - sent) <= 16
    m = re.search(r"PONGs absorbed (\d+) \(each connection at least (\d+)\)", out)
    absorbed, least_pongs = map(int, m.groups())
    assert sent - 16 <= absorbed <= sent and least_pongs >= ticks - 1   # the last round may be in flight
    assert "application wakeups 1: [(8, 'hello, application')]" in out
    assert "errors: send 0, receive 0, queue 0; faults []" in out


@pytest.mark.kernel
def test_packet_stats_buckets_and_sums_in_the_kernel(runner):
    out = run(runner, "packet_stats.py")
    assert out == ("port    53 length    80 -> bucket 6\n"       # log2, capped at BUCKETS - 1
                   "port   443 length  1400 -> bucket 7\n"
                   "port   443 length    60 -> bucket 5\n"
                   "port    53 length   512 -> bucket 7\n"
                   "port  8080 length  9000 -> bucket 7\n"
                   "sizes: [0, 0, 0, 0, 0, 1, 1, 3]\n"
                   "bytes by port: {53: 592, 443: 1460, 8080: 9000}\n")


@pytest.mark.uring
@pytest.mark.kernel
def test_mainline_nops_says_what_a_kernel_before_7_1_lacks(runner):
    from pybpf_uring import mainline
    if mainline.probe().ok:
        pytest.skip("this kernel has io_uring_bpf_ops: tests/mainline runs the sample in the 7.2 VM")
    proc = start(runner, "mainline_nops.py")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith(f"error: this kernel ({os.uname().release}) cannot run io_uring "
                                  "loop_step programs: it lacks BTF type `struct io_uring_bpf_ops`")
    assert "\n  note: io_uring_bpf_ops needs Linux 7.1 or later" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.kernel("bpf", "tracefs", "vmlinux")
@pytest.mark.parametrize("name", ["iouring_latency.py", "iouring_top.py", "iouring_errors.py"])
def test_io_uring_tracing_tools_run_for_their_duration(runner, name):
    """Each tool attaches, prints its maps when its --duration ends, and exits 0 (what they
    count is checked against a known workload in tests/test_tracing_tools.py)."""
    proc = start(runner, name, "--pid", str(os.getpid()), "--duration", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("attached submit")
    assert re.search(r"^--- at exit \(duration, 0\.\d s\) ---$", proc.stdout, re.M), proc.stdout
