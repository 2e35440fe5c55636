"""What Jupyter shows for the project's objects: the `_repr_html_` of compiled objects and
programs, loaded objects, maps, rings and test-run results, rendered here in one place.

Each class only names its renderer (`_repr_html_ = display.map_html`), so the markup (and its
escaping) has one home and the classes stay about what they do.  The functions read
the objects duck-typed, through their public attributes (a Ring's queues through
`Ring.snapshot()`, a copy: its other public calls would run programs), and import nothing from the
project: objfile, load, ring and engine all call down into this module, never the
other way, so there is no import cycle.

A display must not change what it shows.  Maps are read with the host's lookups (a hash map's
keys walked once, an array's first elements by index), never consumed; a ring is read as its
queues stand, without `ready()` or `peek_cqe()`, which would run parked programs.  Everything
that comes from a name, a value or the kernel is HTML-escaped.
"""
from __future__ import annotations

import ctypes
import html
from typing import Any, Callable, Iterable

__all__ = ["ROWS", "object_html", "program_html", "disasm_html", "loaded_html", "map_html",
           "ring_html", "test_run_html", "value_text"]

ROWS = 16          # map entries shown before the "N more" note
_BYTES_SHOWN = 64  # bytes values longer than this are cut, with their length said
_DENSE = ("array", "percpu_array")   # every index below max_entries exists: no key walk needed
_RECORDS = ("ringbuf", "user_ringbuf", "queue", "stack", "bloom_filter", "perf_event_array")
_SOURCE_STYLE = "color:#6a737d;font-style:italic"

_e = html.escape


def _n(count: int, noun: str) -> str:
    """`1 CQE`, `2 CQEs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def table(head: list[str] | None, rows: Iterable[Iterable[Any]]) -> str:
    """An HTML table (without a header row if `head` is None); every cell is escaped."""
    th = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" if head else ""
    trs = "".join("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{th}{trs}</table>"


def value_text(value: Any) -> str:
    """A decoded key or value as a user reads it: ints in decimal, bytes in hex (long ones cut,
    with their length), per-CPU values and arrays as lists, structs by their own repr."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if not raw:
            return "(empty)"
        cut = f" … ({len(raw)} bytes)" if len(raw) > _BYTES_SHOWN else ""
        return raw[:_BYTES_SHOWN].hex(" ") + cut
    if isinstance(value, (list, tuple, ctypes.Array)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return repr(value) if isinstance(value, (ctypes.Structure, ctypes.Union)) else str(value)


# --- compiled objects --------------------------------------------------------------------------
def disasm_html(text: str) -> str:
    """Disassembly text in a <pre>, the source lines (`; …`, as `disasm(source=True)` puts them
    before their instructions) set apart from the instructions."""
    lines = []
    for line in text.splitlines():
        escaped = _e(line)
        lines.append(f'<span style="{_SOURCE_STYLE}">{escaped}</span>' if line.startswith(";") else escaped)
    return "<pre>" + "\n".join(lines) + "</pre>"


def _program_disasm(prog: Any) -> str:
    """A program as the kernel gets it (its .text subprograms linked in), with source lines.
    A program as read keeps the object's .text functions in `subprograms`; `linked()` empties
    them, and its calls already point into itself, so a linked program is shown as it is."""
    return (prog.linked() if prog.subprograms else prog).disasm(source=True)


def program_html(prog: Any) -> str:
    """A ProgramSpec: what it is, then its linked disassembly with source lines interleaved."""
    kind = prog.kind + (", sleepable" if prog.sleepable else "")
    return (f"<div><b>BPF program</b> {_e(prog.name)} (section {_e(prog.section)}, {_e(kind)}: "
            f"{prog.slot_count} slots, {len(prog.relocations)} relocations)"
            f"{disasm_html(_program_disasm(prog))}</div>")


def object_html(obj: Any) -> str:
    """A BpfObject: its programs, maps (with their BTF key/value types) and sections, and each
    program's disassembly with source lines interleaved."""
    def type_of(size: int, type_id: int) -> str:
        named = obj.btf.type_name(type_id) if obj.btf is not None and type_id else ""
        return f"{size} ({named})" if named else str(size)

    progs = table(["program", "section", "kind", "slots", "relocations"],
                  ([p.name, p.section, p.kind + (" (sleepable)" if p.sleepable else ""),
                    p.slot_count, len(p.relocations)] for p in obj.programs))
    maps = table(["map", "type", "key", "value", "entries", "flags"],
                 ([m.name, m.type_name, type_of(m.key_size, m.key_type_id),
                   type_of(m.value_size, m.value_type_id), m.max_entries, hex(m.flags)]
                  for m in obj.maps))
    sections = table(["section", "bytes"], ([s.name, s.size] for s in obj.sections if s.name))
    code = "".join(disasm_html(_program_disasm(p)) for p in obj.programs) or disasm_html(obj.disasm())
    return (f"<div><b>BPF object</b> (license {_e(obj.license or '-')}){progs}{maps}"
            f"<details><summary>sections</summary>{sections}</details>"
            f"<details open><summary>disassembly (with source lines)</summary>{code}</details></div>")


# --- the kernel side ---------------------------------------------------------------------------
def _map_type(m: Any) -> str:
    spec_name = getattr(getattr(m, "spec", None), "type_name", None)
    return spec_name or f"type {m.type}"


def _closed(thing: Any) -> bool:
    """A KernelMap or KernelProgram whose object was closed: its `fd` says so (an engine map
    has no fd)."""
    try:
        getattr(thing, "fd", None)
    except ValueError:
        return True
    return False


def _in_order(keys: list) -> list:
    """A hash map's keys smallest first (the kernel walks them in bucket order, which tells a
    reader nothing); keys that do not compare (structs) stay in the walk's order."""
    try:
        return sorted(keys)
    except TypeError:
        return keys


def map_html(m: Any, rows: int = ROWS, key_text: Callable[[Any], str] = value_text) -> str:
    """A KernelMap or an engine map: what it is, then its first `rows` entries (by key) decoded
    as the host reads them (`m.get`), and how many more there are.  `key_text` writes a key: the
    host hands a struct key out as bytes (or an int when it fits in 8), which only a caller that
    knows the key's type from the object's BTF can spell by its fields (hist.map_html)."""
    per_cpu = getattr(m, "per_cpu", False)
    kind = _map_type(m)
    head = (f"<b>map</b> {_e(m.name)} ({_e(kind)}, key {m.key_size} B, value {m.value_size} B, "
            f"max_entries {m.max_entries}{', per-CPU' if per_cpu else ''})")
    if _closed(m):
        return f"<div>{head}: closed</div>"
    if kind in _RECORDS:
        ready = f": {len(m)} records ready to consume" if hasattr(m, "consume") else ""
        return f"<div>{head}{_e(ready)} (a {_e(kind)} holds records, not keyed entries)</div>"
    try:
        if kind in _DENSE:
            keys, total = list(range(min(rows, m.max_entries))), m.max_entries
        else:
            keys = _in_order(m.keys())
            total = len(keys)
        entries = [(k, v) for k in keys[:rows] if (v := m.get(k)) is not None]
    except (OSError, ValueError) as exc:
        return f"<div>{head}: entries cannot be read: {_e(str(exc))}</div>"
    value_head = "value per CPU" if per_cpu else "value"
    body = table(["key", value_head], ([key_text(k), value_text(v)] for k, v in entries))
    more = total - len(keys[:rows])
    note = f"<p>… {more} more entr{'y' if more == 1 else 'ies'} ({total} in all)</p>" if more > 0 else ""
    if not total:
        note = "<p>(no entries)</p>"
    return f"<div>{head}{body}{note}</div>"


def loaded_html(live: Any) -> str:
    """A LoadedObject: each program the kernel verified (kind, fd, instructions the verifier
    processed), the programs left out and why, and each map with its first entries."""
    progs = table(["program", "kind", "fd", "verified insns"],
                  ([p.name, p.kind, "closed", "-"] if _closed(p) else [p.name, p.kind, p.fd, p.verified_insns]
                   for p in live.programs.values()))
    skipped = ""
    if live.programs.skipped:
        skipped = "<p>not loaded:</p>" + table(["program", "why"], live.programs.skipped.items())
    btf = f"<p>{_e(live.btf_error)}</p>" if live.btf_error else ""
    # each map as it shows itself: a kernel map knows its key type from the object's BTF, so its
    # own view (hist.map_html) draws its histograms and writes its struct keys by their fields
    maps = "".join(m._repr_html_() for m in live.maps.values())
    return (f"<div><b>loaded BPF object</b>{progs}{skipped}{btf}"
            f"<details open><summary>maps</summary>{maps or '(none)'}</details></div>")


def test_run_html(result: Any) -> str:
    """A TestRunResult: r0 (unsigned and as the i32 a program returns), the kernel's time, the
    ctx written back and the packet after the run."""
    rows = [["retval", f"{result.retval} ({result.retval:#x})"],
            ["signed retval", result.signed_retval],
            ["duration", f"{result.duration} ns"]]
    if result.ctx is not None:
        rows.append(["ctx", value_text(result.ctx)])
    if result.data:
        rows.append(["data", value_text(result.data)])
    return f"<div><b>test run</b>{table(None, rows)}</div>"


# --- the ring ----------------------------------------------------------------------------------
def ring_html(ring: Any, rows: int = ROWS) -> str:
    """A Ring: its SQ and CQs (the kernel's head and tail, and what each userspace CQ holds),
    the kernel requests in flight, the BPF requests runnable or parked on a CQ, the registered
    programs and their maps.  Read from `ring.snapshot()` (a copy of the queues as they stand),
    so showing a ring runs nothing."""
    head = f"<b>io_uring ring</b> {_e(repr(ring))}"
    if ring.closed:
        return f"<div>{head}</div>"
    snap = ring.snapshot()
    sq = (f"<p>SQ: {snap.entries} entries, head {snap.sq_head}, tail {snap.sq_tail}, "
          f"{_n(snap.sq_pending, 'SQE')} not yet submitted; kernel CQ ring: head {snap.cq_head}, "
          f"tail {snap.cq_tail} ({_n((snap.cq_tail - snap.cq_head) & 0xFFFFFFFF, 'CQE')} not yet "
          f"drained); {_n(snap.enter_calls, 'io_uring_enter call')}</p>")
    cqs = table(["CQ", "size", "CQEs held", "backlog", "overflows"],
                ([q.index, q.size, q.held, q.backlog, q.overflows] for q in snap.cqs))
    tags = snap.in_flight
    flight = table(["user_data", "CQ"], tags[:rows])
    more = f"<p>… {len(tags) - rows} more</p>" if len(tags) > rows else ""
    programs = snap.programs
    requests = ([(r.program, r.user_data, r.cq_idx, "runnable", r.runs) for r in snap.runnable]
                + [(r.program, r.user_data, r.cq_idx,
                    f"parked: waits for {_n(r.wait_nr, 'CQE')} on CQ {r.wait_idx}", r.runs)
                   for r in snap.parked])
    bpf = table(["program", "user_data", "completes on CQ", "state", "runs"], requests)
    progs = table(["index", "program", "backend", "runs"],
                  ([i, p.name, p.backend, "" if p.runs is None else p.runs]
                   for i, p in enumerate(programs)))
    faults = ""
    if ring.faults:
        faults = "<p>faults:</p>" + table(["program", "user_data", "res", "message"],
                                          ([f.program, f.user_data, f.res, f.message] for f in ring.faults))
    maps = "".join(map_html(m, rows) for m in ring.maps.values())
    return (f"<div>{head}{sq}{cqs}"
            f"<p>kernel requests in flight (last CQE not routed yet): {len(tags)}</p>{flight if tags else ''}{more}"
            f"<p>BPF requests: {len(snap.runnable)} runnable, {len(snap.parked)} parked</p>"
            f"{bpf if requests else ''}"
            f"<p>registered programs: {len(programs)}</p>{progs if programs else ''}{faults}"
            f"{'<details open><summary>maps</summary>' + maps + '</details>' if maps else ''}</div>")
