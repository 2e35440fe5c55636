"""Maps read the way people read tracing results: log2 histograms with bars, counts sorted.

A tracing tool counts into maps; this module turns a map's entries into what bpftrace prints at
exit (and what Jupyter shows):

* a map whose key is a Struct with a field named `log2` is a set of log2 histograms, one per
  value of the other key fields.  The program fills it with the `log2(v)` intrinsic: bucket 0
  holds the zeros, bucket k the values in [2**(k-1), 2**k).

      class LatKey(Struct):
          opcode: u32
          log2: u32
      ...
      lat[LatKey(opcode=ctx.opcode, log2=log2(delta))] += 1

  prints

      @lat[opcode=NOP]:
      [256, 512)            3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
      [512, 1K)             1 |@@@@@@@@@@@@@@@@@                                   |

* a key with a field named `linear` (a u64 the `linear(v, lo, hi, step)` intrinsic fills) is a
  set of linear histograms, bpftrace's lhist: `(..., lo)`, `[lo, lo+step)`, ..., `[hi, ...)`;

* any other map prints its entries sorted by value, largest last (`@ops[comm=fio, opcode=READ]: 9`):
  an array's slots that are 0 are left out (a hash map has no entry for them), a per-CPU value
  is summed, a `u8[N]` field (a command name from get_current_comm) is text and a field named
  `opcode` is the io_uring opcode's name.

`report(m)` gives the Histogram/Counts objects (each `str()` is the text, `_repr_html_` an SVG or
table for Jupyter); `format_maps(maps)` is the text of every map of a loaded object, as
`pybpf-uring run` prints it at each interval and at exit.
"""
from __future__ import annotations

import ctypes
import html
from dataclasses import dataclass
from typing import Any

from .. import display, uapi
from . import values
from .values import ctype_from_btf, unpack
from ..uapi import BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF

__all__ = ["Histogram", "LinearHistogram", "Counts", "report", "format_maps", "bucket_label",
           "linear_bucket", "SLOT_FIELD", "LINEAR_FIELD"]

SLOT_FIELD = "log2"     # the key field that makes a map a log2 histogram
# The key field that makes a map a linear histogram.  The linear(v, lo, hi, step) intrinsic
# fills it with a u64 that says all the host needs to print it: the bucket's lower bound in the
# low 32 bits, the step in bits 32-61, and a flag for the values below lo (bit 63) or at or past
# hi (bit 62), whose "lower bound" is lo or hi.
LINEAR_FIELD = "linear"
LINEAR_BELOW, LINEAR_ABOVE = 1 << 63, 1 << 62
LINEAR_BOUND_MAX, LINEAR_STEP_MAX = (1 << 32) - 1, (1 << 30) - 1
BAR_WIDTH = 52          # bpftrace's
_SUFFIXES = ["", "K", "M", "G", "T", "P", "E"]
# A key field named `opcode` shows the io_uring opcode's name (the RFC's IORING_OP_BPF, a number
# mainline gave another opcode, is left out).
OPCODE_NAMES = {v: k[len("IORING_OP_"):] for k, v in vars(uapi).items()
                if k.startswith("IORING_OP_") and k != "IORING_OP_BPF"}


def bucket_label(slot: int) -> str:
    """The range of log2 bucket `slot`: [0] for 0, [1] for 1, then [2, 4), ..., [1K, 2K)."""
    if slot <= 1:
        return f"[{slot}]"
    return f"[{_short(1 << (slot - 1))}, {_short(1 << slot)})"


def linear_bucket(v: int, lo: int, hi: int, step: int) -> int:
    """What linear(v, lo, hi, step) computes in a program (v read as a u64), for the host."""
    v &= (1 << 64) - 1
    if v < lo:
        bucket = lo | LINEAR_BELOW
    elif v >= hi:
        bucket = hi | LINEAR_ABOVE
    else:
        bucket = lo + (v - lo) // step * step
    return bucket | step << 32


def _short(n: int) -> str:
    """A power of two as bpftrace writes it: 512, 1K, 2M."""
    i = 0
    while n >= 1024 and n % 1024 == 0 and i + 1 < len(_SUFFIXES):
        n //= 1024
        i += 1
    return f"{n}{_SUFFIXES[i]}"


def _bar(count: int, most: int) -> str:
    width = count * BAR_WIDTH // most if most else 0
    return "@" * width + " " * (BAR_WIDTH - width)


@dataclass(frozen=True)
class Histogram:
    """One log2 histogram: `buckets` maps a slot to its count; `group` names the other key
    fields' values ("opcode=22"), empty for a map keyed only by the slot."""

    name: str
    group: str
    buckets: dict[int, int]

    @property
    def rows(self) -> list[tuple[str, int]]:
        """(range, count) from the lowest to the highest bucket with a count, empty ones between."""
        if not self.buckets:
            return []
        lo, hi = min(self.buckets), max(self.buckets)
        return [(bucket_label(s), self.buckets.get(s, 0)) for s in range(lo, hi + 1)]

    @property
    def total(self) -> int:
        return sum(self.buckets.values())

    def __str__(self) -> str:
        rows = self.rows
        most = max((c for _, c in rows), default=0)
        head = f"@{self.name}[{self.group}]:" if self.group else f"@{self.name}:"
        return "\n".join([head] + [f"{label:<16}{count:>8} |{_bar(count, most)}|" for label, count in rows])

    def _repr_html_(self) -> str:
        """An SVG bar chart: a bar per bucket, its range and count beside it."""
        rows = self.rows
        most = max((c for _, c in rows), default=0) or 1
        line, width = 18, 300
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 200}" '
                 f'height="{line * (len(rows) + 1)}" font-family="monospace" font-size="12">',
                 f'<text x="0" y="13">{html.escape(str(self).splitlines()[0])}</text>']
        for i, (label, count) in enumerate(rows, 1):
            y = i * line
            parts.append(f'<text x="0" y="{y + 13}">{html.escape(label)}</text>'
                         f'<rect x="110" y="{y + 3}" width="{count * width // most}" height="12" '
                         f'fill="#4c72b0"/><text x="{115 + count * width // most}" y="{y + 13}">{count}</text>')
        return "".join(parts) + "</svg>"


@dataclass(frozen=True)
class LinearHistogram(Histogram):
    """One linear histogram: `buckets` maps linear()'s packed bucket to its count.  Rows run
    from the lowest bucket with a count to the highest, a step apart, like bpftrace's lhist:
    (..., lo) for the values below lo, [a, a + step), and [hi, ...) for those at or past hi."""

    @property
    def rows(self) -> list[tuple[str, int]]:
        if not self.buckets:
            return []
        step = max(b >> 32 & LINEAR_STEP_MAX for b in self.buckets) or 1
        bounds = {b & LINEAR_BOUND_MAX: c for b, c in self.buckets.items()
                  if not b & (LINEAR_BELOW | LINEAR_ABOVE)}
        rows = [(f"(..., {b & LINEAR_BOUND_MAX})", c) for b, c in self.buckets.items() if b & LINEAR_BELOW]
        if bounds:
            first, last = min(bounds), max(bounds)
            rows += [(f"[{a}, {a + step})", bounds.get(a, 0)) for a in range(first, last + 1, step)]
        rows += [(f"[{b & LINEAR_BOUND_MAX}, ...)", c) for b, c in self.buckets.items() if b & LINEAR_ABOVE]
        return rows


@dataclass(frozen=True)
class Counts:
    """A map's entries as (key text, value), sorted by value ascending (largest last)."""

    name: str
    rows: list[tuple[str, int]]

    def __str__(self) -> str:
        if not self.rows:
            return f"@{self.name}: (empty)"
        return "\n".join(f"@{self.name}[{k}]: {v}" if k else f"@{self.name}: {v}" for k, v in self.rows)

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v}</td></tr>"
                        for k, v in self.rows)
        return f"<table><caption>@{html.escape(self.name)}</caption>{cells}</table>"


def key_type(m: Any) -> Any:
    """The ctypes type of a loaded map's key, from the object's BTF (the loader reads struct keys
    as bytes, which cannot be told apart)."""
    btf = getattr(getattr(getattr(m, "_owner", None), "spec", None), "btf", None)
    type_id = getattr(getattr(m, "spec", None), "key_type_id", 0)
    if btf is None or isinstance(btf, (bytes, bytearray)) or not type_id:
        return m.key_type
    return ctype_from_btf(btf, type_id) or m.key_type


def _field(key: Any, name: str) -> str:
    value = getattr(key, name)
    if name == "opcode" and isinstance(value, int) and value in OPCODE_NAMES:
        return f"{name}={OPCODE_NAMES[value]}"
    return f"{name}={_text(value)}"


def _text(value: Any) -> str:
    if isinstance(value, ctypes.Array) and ctypes.sizeof(value._type_) == 1:
        return bytes(value).split(b"\0", 1)[0].decode(errors="replace")
    if isinstance(value, ctypes.Array):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, ctypes.Structure):
        return "{" + ", ".join(f"{n}={_text(getattr(value, n))}" for n, *_ in value._fields_) + "}"
    return str(value)


def _number(value: Any) -> int:
    """A value as one count: an integer, a per-CPU list summed, a struct's first field."""
    if isinstance(value, list):
        return sum(_number(v) for v in value)
    if isinstance(value, ctypes.Structure):
        return _number(getattr(value, value._fields_[0][0]))
    return int(value)


def _key(key: Any, ktype: Any, size: int) -> Any:
    """A key as its struct when it is one (the loader hands struct keys out as bytes, or as an
    int when they fit in 8 bytes)."""
    if not (isinstance(ktype, type) and issubclass(ktype, ctypes.Structure)):
        return key
    if isinstance(key, int):
        key = key.to_bytes(size, "little", signed=key < 0)
    return unpack(bytes(key), ktype)


def report(m: Any, name: str | None = None) -> list:
    """What a map holds, as Histograms (a key with a `log2` field) or one Counts."""
    name = name or getattr(m, "name", "map")
    ktype = key_type(m)
    entries = [(_key(k, ktype, m.key_size), v) for k, v in m.items()]
    struct_key = isinstance(ktype, type) and issubclass(ktype, ctypes.Structure)
    fields = [name for name, *_ in values.fields(ktype)] if struct_key else []
    for field, kind in ((SLOT_FIELD, Histogram), (LINEAR_FIELD, LinearHistogram)):
        if field not in fields:
            continue
        groups: dict[str, dict[int, int]] = {}
        for key, value in entries:
            others = ", ".join(_field(key, f) for f in fields if f != field)
            slots = groups.setdefault(others, {})
            slot = int(getattr(key, field))
            slots[slot] = slots.get(slot, 0) + _number(value)
        return [kind(name, group, groups[group]) for group in sorted(groups)]
    rows = []
    dense = getattr(m, "type", None) in (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY)
    for key, value in entries:
        if isinstance(key, ctypes.Structure):
            text = ", ".join(_field(key, f) for f in fields)
        else:
            text = _text(key)
        if not (dense and _number(value) == 0):     # an array's every slot exists: show those set
            rows.append((text, _number(value)))
    rows.sort(key=lambda r: (r[1], r[0]))
    return [Counts(name, rows)]


def format_maps(maps: Any, skip: tuple[str, ...] = (".data", ".bss", ".rodata")) -> str:
    """Every map of a loaded object (`live.maps`) as text, histograms and counts, a blank line
    between maps; the data sections (the globals) are left out."""
    out = []
    for name in maps:
        if name.startswith(skip) or getattr(maps[name], "type", None) == BPF_MAP_TYPE_RINGBUF:
            continue
        out.append("\n".join(str(r) for r in report(maps[name], name)))
    return "\n\n".join(out)


def watch(maps: Any, duration: float | None, interval: float | None, write=print,
          clock=None, sleep=None, ready=None) -> str:
    """Print the maps every `interval` seconds until `duration` has passed or Ctrl-C, then once
    more at the end, as bpftrace does at exit; returns how it ended ("duration", "interrupt").
    Each interval's print starts with the time since the start.  `ready()` runs first, where a
    Ctrl-C already ends the watch as it should (a caller announces the start there)."""
    import time
    clock = clock or time.monotonic
    waker = _Waker() if sleep is None else None
    sleep = sleep or waker.sleep
    start = clock()
    end = start + duration if duration is not None else None
    next_print = start + interval if interval else None
    try:
        if ready is not None:
            ready()
        while True:
            now = clock()
            wake = min(t for t in (end, next_print, now + 3600) if t is not None)
            if end is not None and now >= end:
                break
            sleep(max(wake - now, 0))
            now = clock()
            if next_print is not None and now >= next_print and (end is None or now < end):
                write(f"--- {now - start:.1f} s ---")
                text = format_maps(maps)
                if text:
                    write(text)
                next_print += interval
    except KeyboardInterrupt:
        how = "interrupt"
    else:
        how = "duration"
    finally:
        if waker is not None:
            waker.close()
    write(f"--- at exit ({how}, {clock() - start:.1f} s) ---")
    text = format_maps(maps)
    if text:
        write(text)
    return how


class _Waker:
    """A sleep that Ctrl-C always ends.  time.sleep misses a SIGINT that lands after the
    interpreter last looked for signals and before the sleep's system call (under load a tool
    stopped right after it attached slept on for its whole interval): the signal's handler also
    writes to a pipe (signal.set_wakeup_fd), and the sleep waits on that pipe, so a signal from
    just before the wait ends it at once.  Off the main thread, where no handler runs, it is
    time.sleep."""

    def __init__(self) -> None:
        import os
        import signal
        import threading
        import time
        self._fds = self._old = None
        if threading.current_thread() is threading.main_thread():
            self._fds = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._old = signal.set_wakeup_fd(self._fds[1], warn_on_full_buffer=False)
        self._time_sleep = time.sleep

    def sleep(self, seconds: float) -> None:
        import os
        import select
        if self._fds is None:
            self._time_sleep(seconds)
            return
        if select.select([self._fds[0]], [], [], seconds)[0]:
            try:
                os.read(self._fds[0], 512)
            except BlockingIOError:
                pass

    def close(self) -> None:
        import os
        import signal
        if self._fds is not None:
            signal.set_wakeup_fd(self._old)
            for fd in self._fds:
                os.close(fd)
            self._fds = None


# Program kinds, as an object names them, that run_tool attaches.
TRACING_KINDS = ("tracepoint", "raw_tracepoint", "tracing", "kprobe")


def run_tool(obj: Any, duration: float | None = None, interval: float | None = None,
             globals: dict | None = None, write=print) -> str:
    """A tracing tool: load `obj` (a compiled BpfObject; `globals` its initial values, e.g. a pid
    filter), attach every tracing program, and `watch` its maps; detached and closed on return.
    Says on stderr what it attached, once everything is attached (a caller may wait for it)."""
    import sys
    with obj.load(globals=globals) as live:
        names = [p.name for p in obj.programs if p.kind in TRACING_KINDS]
        for name in names:
            live.programs[name].attach()
        announce = f"attached {', '.join(names)}; " + (f"for {duration} s" if duration is not None
                                                       else "Ctrl-C to stop")
        return watch(live.maps, duration, interval, write,
                     ready=lambda: print(announce, file=sys.stderr, flush=True))


def tool_args(description: str | None, argv: list[str] | None = None):
    """The options of the sample tools: --pid (0: every process), --duration, --interval."""
    import argparse
    p = argparse.ArgumentParser(description=description.splitlines()[0] if description else None)
    p.add_argument("--pid", type=int, default=0, help="trace only this process (default: all)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--interval", type=float, default=None, metavar="S", help="print every S seconds")
    return p.parse_args(argv)


def key_fields(m: Any):
    """How to write a key of `m` for a reader: a struct key (from the object's BTF) by its fields
    as the text reports write them (`pid=4242, comm=fio, opcode=READ`); None for any other key."""
    ktype = key_type(m)
    if not (isinstance(ktype, type) and issubclass(ktype, ctypes.Structure)):
        return None
    fields = [name for name, *_ in values.fields(ktype)]
    return lambda key: ", ".join(_field(_key(key, ktype, m.key_size), f) for f in fields)


def map_html(m: Any) -> str:
    """Jupyter's view of a loaded map: a map keyed by a `log2` field as its histograms (SVG),
    above the entries table every map gets (display.map_html), whose struct keys are written by
    their fields (the host reads them as bytes, which a reader cannot tell apart)."""
    spell = key_fields(m)
    table = display.map_html(m) if spell is None else display.map_html(m, key_text=spell)
    try:
        shown = [r for r in report(m) if isinstance(r, Histogram)]
    except (OSError, ValueError):          # closed, or entries that cannot be read: the table says
        return table
    return "".join(h._repr_html_() for h in shown) + table
