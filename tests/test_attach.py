"""Kernel programs attached where they run, and what they print: a socket filter on a real UDP
socket (`attach_socket`), a tracepoint program on real getpid(2) calls (`attach`), and the lines
their `print()` writes, read back from tracefs (`trace.TraceReader`).  The kernel decides every
outcome: which datagrams arrive, how many calls were counted, what was printed."""
from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from pybpf_uring import compile_source
from pybpf_uring.bpf import kernel
from pybpf_uring.bpf import trace as tracemod
from pybpf_uring.bpf.load import UnsupportedProgramError
from pybpf_uring.bpf.trace import TraceLine, TraceReader, parse_line, trace_lines


bpf = pytest.mark.kernel
tracefs = pytest.mark.kernel("tracefs")


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


FILTER_SRC = '''
from pybpf_uring import socket_filter, syscall, SkBuff, skb_load_bytes, Struct, i32, u32, u64

UDP_HEADER = 8          # a UDP socket's filter sees the datagram from its UDP header on
seen: u64 = 0

class Nothing(Struct):
    pad: u64

@socket_filter
def gate(ctx: SkBuff) -> i32:
    seen += 1
    tag: u32 = 0
    skb_load_bytes(ctx, UDP_HEADER, tag)
    if tag == 0x504F5244:          # "DROP"
        return 0
    if tag == 0x434E5254:          # "TRNC": keep the header and these 4 bytes
        return UDP_HEADER + 4
    return ctx.len

@syscall
def not_a_filter(ctx: Nothing) -> i32:
    return 0
'''


@pytest.fixture
def udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.3)
    yield rx, tx
    rx.close()
    tx.close()


def exchange(rx: socket.socket, tx: socket.socket, *payloads: bytes) -> list[bytes]:
    """Send each payload to rx and return what rx received, in order (a datagram the filter
    dropped is simply absent)."""
    for p in payloads:
        tx.sendto(p, rx.getsockname())
    got = []
    try:
        while True:
            got.append(rx.recv(4096))
    except socket.timeout:
        return got


@bpf
def test_socket_filter_drops_and_truncates_datagrams_by_content(udp_pair):
    rx, tx = udp_pair
    before = open_fds()
    with compile_source(FILTER_SRC, "<bpf module>").load() as live:
        gate = live.programs["gate"]
        with gate.attach_socket(rx) as att:
            assert att.attached and "socket fd" in repr(att)
            got = exchange(rx, tx, b"hello", b"DROP this one", b"TRNCated payload", b"last")
            assert got == [b"hello", b"TRNC", b"last"] and live.globals.seen == 4
        assert not att.attached and repr(att).endswith("detached>")
        assert exchange(rx, tx, b"DROP after detach") == [b"DROP after detach"]
        assert live.globals.seen == 4                       # the program no longer runs

        by_fd = gate.attach_socket(rx.fileno())             # an fd works as well
        assert exchange(rx, tx, b"DROP", b"kept") == [b"kept"]
    assert not by_fd.attached                               # detached when the object closed
    assert exchange(rx, tx, b"DROP after close") == [b"DROP after close"]
    assert open_fds() == before
    by_fd.close()                                           # harmless afterwards


@bpf
def test_socket_attachment_survives_the_user_closing_their_socket_object(udp_pair):
    """The attachment detaches through its own duplicate of the fd: closing the caller's socket
    object first, and an fd number reused by something else, cannot misdirect it."""
    rx, tx = udp_pair
    with compile_source(FILTER_SRC, "<bpf module>").load() as live:
        twin = socket.socket(fileno=os.dup(rx.fileno()))
        att = live.programs["gate"].attach_socket(twin)
        twin.close()
        assert exchange(rx, tx, b"DROP", b"ok") == [b"ok"]   # the same socket, still filtered
        att.close()
        assert exchange(rx, tx, b"DROP") == [b"DROP"]


@bpf
def test_attach_socket_refuses_what_it_cannot_attach(udp_pair, tmp_path):
    rx, _ = udp_pair
    before = open_fds()
    with compile_source(FILTER_SRC, "<bpf module>").load() as live:
        with pytest.raises(UnsupportedProgramError, match="'not_a_filter' .*is not a socket filter"):
            live.programs["not_a_filter"].attach_socket(rx)
        with pytest.raises(UnsupportedProgramError, match="no tracepoint to attach to"):
            live.programs["gate"].attach()
        r, w = os.pipe()
        try:
            with pytest.raises(OSError, match=f"fd {r} is not a socket"):
                live.programs["gate"].attach_socket(r)
        finally:
            os.close(r)
            os.close(w)
        with pytest.raises(OSError, match="fd 999 is not open"):
            live.programs["gate"].attach_socket(999)
        with pytest.raises(TypeError, match="takes a socket or its fd, not str"):
            live.programs["gate"].attach_socket("eth0")
    assert open_fds() == before


TRACE_SRC = '''
from pybpf_uring import tracepoint, Struct, get_current_pid_tgid, i32, u8, u16, u64

class SysEnterGetpid(Struct):  # /sys/kernel/tracing/events/syscalls/sys_enter_getpid/format
    common_type: u16
    common_flags: u8
    common_preempt_count: u8
    common_pid: i32
    __syscall_nr: i32            # a program reading past the record is refused at attach time

target_pid: u64 = 0
calls: u64 = 0

@tracepoint("syscalls/sys_enter_getpid")
def count_getpid(ctx: SysEnterGetpid) -> i32:
    if get_current_pid_tgid() >> 32 == target_pid:
        calls += 1
        if calls == TOKEN_AT:
            print("TOKEN", calls, ctx.__syscall_nr)   # the common fields are not the program's
    return 0
'''


def tracepoint_module(token: str, at: int = 3) -> str:
    return TRACE_SRC.replace("TOKEN_AT", str(at)).replace("TOKEN", token)


@bpf
@tracefs
def test_tracepoint_program_counts_real_calls_and_detaches_on_close():
    obj = compile_source(tracepoint_module("tp-" + uuid.uuid4().hex), "<bpf module>")
    before = open_fds()
    with obj.load() as live:
        live.globals.target_pid = os.getpid()
        prog = live.programs["count_getpid"]
        with prog.attach() as att:
            assert att.target == "syscalls/sys_enter_getpid" and att.attached
            for _ in range(40):
                os.getpid()                  # CPython does not cache it: each is a getpid(2)
            assert live.globals.calls == 40
        os.getpid()
        assert live.globals.calls == 40      # detached by the with block
        left = prog.attach()                 # left attached: closing the object detaches it
    assert not left.attached and left.fd == -1
    assert open_fds() == before


@bpf
@tracefs
def test_print_of_a_tracepoint_program_is_read_back():
    token = "tp-" + uuid.uuid4().hex
    obj = compile_source(tracepoint_module(token), "<bpf module>")
    with TraceReader() as trace, obj.load() as live:
        live.globals.target_pid = os.getpid()
        with live.programs["count_getpid"].attach():
            for _ in range(5):
                os.getpid()
        lines = trace.read(timeout=5, match=token)
    assert len(lines) == 1                   # printed at the third call only
    line = lines[0]
    nr_getpid = {"x86_64": 39, "aarch64": 172, "riscv64": 172}.get(os.uname().machine)
    token_, calls, nr = line.message.split()
    assert (token_, calls) == (token, "3") and (nr_getpid is None or nr == str(nr_getpid))
    assert line.pid == os.getpid() and 0 <= line.cpu < os.cpu_count() and line.timestamp > 0


PRINT_SRC = '''
from pybpf_uring import syscall, Struct, i32, u64

class Args(Struct):
    v: u64

@syscall
def say(ctx: Args) -> i32:
    print("TOKEN", ctx.v)
    return 0
'''


@bpf
@tracefs
def test_trace_reader_returns_printed_lines_by_count_and_timeout():
    token = "say-" + uuid.uuid4().hex
    obj = compile_source(PRINT_SRC.replace("TOKEN", token), "<bpf module>")
    with TraceReader() as trace, obj.load() as live:
        for v in (1, 2, 3):
            live.programs["say"].test_run((v).to_bytes(8, "little"))
        first = trace.read(timeout=5, count=2, match=token)
        assert [line.message for line in first] == [f"{token} 1", f"{token} 2"]
        assert [line.message for line in trace.read(timeout=5, match=token)] == [f"{token} 3"]
        assert first[0].timestamp <= first[1].timestamp
        start = time.monotonic()
        assert trace.read(timeout=0.3, match=token) == []      # nothing more: back in time
        assert 0.25 <= time.monotonic() - start < 2
        live.programs["say"].test_run((9).to_bytes(8, "little"))
    assert [line.message for line in trace_lines(timeout=5, match=token)] == [f"{token} 9"]
    with pytest.raises(ValueError, match="closed"):
        trace.read(timeout=0)


def test_trace_lines_are_parsed():
    assert parse_line("         python3-19221   [000] ...11   422.200751: bpf_trace_printk: hi 77") == \
        TraceLine("python3", 19221, 0, 422.200751, "hi 77")
    # a task name with spaces and dashes, the tgid column, no irq-info flags
    assert parse_line(" my task-v2-77 (   70) [013]   9.5: bpf_trace_printk: a: b") == \
        TraceLine("my task-v2", 77, 13, 9.5, "a: b")
    assert parse_line("           <...>-5       [001] d..2.    1.000001: bpf_trace_printk: ") == \
        TraceLine("<...>", 5, 1, 1.000001, "")
    assert parse_line("  bash-1 [000] .....  2.0: sys_enter_getpid: NR 39 ()") is None   # another event
    assert parse_line("") is None and parse_line("# tracer: nop") is None


def test_missing_tracefs_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "TRACEFS_ROOTS", (str(tmp_path / "none"),))
    with pytest.raises(FileNotFoundError, match="tracefs is not mounted .*what BPF programs print cannot be read"):
        TraceReader()
    with pytest.raises(FileNotFoundError, match="tracefs is not mounted"):
        tracemod.trace_lines(timeout=0)


@tracefs
def test_root_mounts_tracefs_where_it_is_missing():
    """A machine that booted without tracefs mounted: root's first tracing call mounts it (in a
    mount namespace of its own here, so the test leaves the host's mounts as they were)."""
    import shutil
    import subprocess
    import sys
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    script = ("from pybpf_uring.bpf import kernel\n"
              "print(kernel.tracefs_root('t'))\n"
              "print(any(l.split()[1:3] == ['/sys/kernel/tracing', 'tracefs'] for l in open('/proc/self/mounts')))\n")
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; '
         'grep -c " tracefs " /proc/self/mounts; exec "$0" -c "$1"', sys.executable, script],
        capture_output=True, text=True, timeout=60)
    assert run.returncode in (0,), run.stderr
    before, root, mounted = run.stdout.split()
    assert before == "0"          # no tracefs left in the namespace before the call
    assert (root, mounted) == ("/sys/kernel/tracing", "True")
