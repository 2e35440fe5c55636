"""What kernel programs `print()`: bpf_trace_printk's lines, read back from tracefs `trace_pipe`.

A program's `print("x =", x)` is bpf_trace_printk, which writes one record to the kernel's global
trace buffer; tracefs hands the records out as text through `trace_pipe`:

      python3-4242    [001] ...11   422.200751: bpf_trace_printk: x = 7

`TraceReader` opens the pipe without blocking and waits with select(), so a read returns within
its timeout whatever happens, and parses each record into a `TraceLine` (task, pid, cpu,
timestamp, message).  Records of other trace events in the same buffer are skipped.

    with TraceReader() as trace:
        live.programs["say"].test_run(ctx)
        for line in trace.read(timeout=1.0, match="x ="):
            print(line.pid, line.message)

Things to know: reading the pipe consumes the records, for every reader on the machine (two
readers each see part of the lines), and records printed before the reader opened are still
there until someone reads them.  `match` keeps only the lines you are after.  Programs in the
userspace engine do not write here: their lines are in `ring.engine.trace`.
"""
from __future__ import annotations

import os
import re
import select
import time
from dataclasses import dataclass

from . import kernel

__all__ = ["TraceReader", "TraceLine", "trace_lines", "parse_line"]

_EVENT = "bpf_trace_printk"
# task-pid, the tgid column (option record-tgid), [cpu], the irq-info flags, timestamp: event: text.
# The task name may hold spaces and dashes: the last "-pid" before the cpu is the pid.
_RECORD = re.compile(r"^\s*(?P<task>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                     r"(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>[\w:]+?):\s?(?P<message>.*)$")
_READ_SIZE = 1 << 16


@dataclass(frozen=True)
class TraceLine:
    """One line a program printed."""

    task: str         # the command of the task the program ran in ("python3")
    pid: int          # its thread id
    cpu: int
    timestamp: float  # seconds, on the trace clock (trace_clock; "local" by default)
    message: str      # what the program printed, without its newline


def parse_line(text: str) -> TraceLine | None:
    """A `trace_pipe` line as a TraceLine, or None for anything but a bpf_trace_printk record."""
    m = _RECORD.match(text)
    if m is None or m["event"] != _EVENT:
        return None
    return TraceLine(m["task"].strip(), int(m["pid"]), int(m["cpu"]), float(m["ts"]), m["message"])


class TraceReader:
    """tracefs `trace_pipe`, opened for non-blocking reads; see the module docstring.  A context
    manager; `close()` is idempotent."""

    def __init__(self) -> None:
        self._fd = -1
        path = os.path.join(kernel.tracefs_root("what BPF programs print cannot be read"), "trace_pipe")
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            raise PermissionError(f"reading what BPF programs print needs root: {path} is readable "
                                  "only by root") from None
        self._partial = b""              # a record the last read cut in two
        self._ready: list[TraceLine] = []   # parsed, not handed out yet

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("the TraceReader is closed")
        return self._fd

    def read(self, timeout: float = 1.0, *, count: int | None = None,
             match: str | None = None) -> list[TraceLine]:
        """The lines programs printed (those whose message contains `match`, if given), waiting
        at most `timeout` seconds.  With `count`, returns as soon as that many lines came (more
        are kept for the next read); without, as soon as some lines came and no more are
        waiting.  Returns what it has when the timeout passes, possibly nothing."""
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        deadline = time.monotonic() + max(timeout, 0.0)
        found: list[TraceLine] = []
        while True:
            self._drain()
            kept = [line for line in self._ready if match is None or match in line.message]
            self._ready.clear()
            found += kept
            if count is not None and len(found) >= count:
                self._ready, found = found[count:], found[:count]
                return found
            if count is None and found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fileno()], [], [], left)[0]:
                return found

    def _drain(self) -> None:
        """Read everything waiting in the pipe, without blocking."""
        while True:
            try:
                chunk = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return
            if not chunk:
                return
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            for raw in lines:
                line = parse_line(raw.decode(errors="replace"))
                if line is not None:
                    self._ready.append(line)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "TraceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def trace_lines(timeout: float = 1.0, *, count: int | None = None,
                match: str | None = None) -> list[TraceLine]:
    """`TraceReader().read(...)` once: the lines programs have printed (and print within
    `timeout` seconds, if none is there yet)."""
    with TraceReader() as reader:
        return reader.read(timeout, count=count, match=match)
