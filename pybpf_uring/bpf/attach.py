"""Attaching loaded kernel programs where they run: a tracepoint, a kernel function or a socket.

`load.KernelProgram.attach()` (tracing programs) and `.attach_socket(sock)` (socket filters)
check the program's kind and hand the mechanics to this module; the section says where:

* `tracepoint/<category>/<event>` hangs off the tracepoint through a perf event, the program
  linked to it (BPF_LINK_CREATE, BPF_PERF_EVENT; on kernels before 5.15, which have no perf
  links, set on it with PERF_EVENT_IOC_SET_BPF); closing the attachment detaches it;
* `raw_tp/<event>` is a BPF link from BPF_RAW_TRACEPOINT_OPEN, and so are `tp_btf/<event>`,
  `fentry/<function>` and `fexit/<function>`, BPF_PROG_TYPE_TRACING programs the kernel loads
  against the BTF id of their target (`load_attrs`: a BPF trampoline is built for them);
* `kprobe/<function>` and `kretprobe/<function>` open a perf event of the kprobe PMU and link
  the program to it (BPF_LINK_CREATE, BPF_PERF_EVENT); a kernel built without CONFIG_KPROBES
  has no such PMU, which the error says;
* a socket filter is attached with setsockopt(SOL_SOCKET, SO_ATTACH_BPF, prog fd) and detached
  with SO_DETACH_BPF.  The socket keeps its own reference to the program, so closing the program's
  fd would leave it filtering: detaching is explicit.  The attachment works on its own duplicate of
  the socket's fd, so detaching never reaches another socket that took over the user's fd number
  after the user closed theirs.

An attachment belongs to the loaded object that holds its program: it is detached by its
`close()` (or `with` exit), when the object closes, or when both are garbage-collected.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import weakref
from typing import Any

from . import kernel
from .btf import kernel_btf
from ..uapi import BPF_PERF_EVENT, BPF_TRACE_FENTRY, BPF_TRACE_FEXIT, BPF_TRACE_RAW_TP

__all__ = ["Attachment", "SocketAttachment", "SO_ATTACH_BPF", "SO_DETACH_BPF", "load_attrs",
           "attach_tracing", "TRACING_PREFIXES", "KPROBE_PMU"]

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
# section prefix → (expected_attach_type, the BTF name of the target, its BTF kind) for the
# BPF_PROG_TYPE_TRACING programs, which the kernel loads against their target's BTF id.
TRACING_TARGETS = {"tp_btf": (BPF_TRACE_RAW_TP, "btf_trace_{}", "typedef"),
                   "fentry": (BPF_TRACE_FENTRY, "{}", "func"),
                   "fexit": (BPF_TRACE_FEXIT, "{}", "func")}
TRACING_PREFIXES = ("tracepoint", "raw_tp", "kprobe", "kretprobe", *TRACING_TARGETS)

SO_ATTACH_BPF = 50   # asm-generic/socket.h; the same number on every architecture Linux has BPF on
SO_DETACH_BPF = 27   # = SO_DETACH_FILTER: removes a classic or a BPF filter


class Attachment:
    """A program attached where it traces (`fd` is the perf event's or the BPF link's; `also`
    fds closed after it, a kprobe's perf event under its link); `close()` detaches it."""

    def __init__(self, target: str, fd: int, owner: Any, also: tuple[int, ...] = ()) -> None:
        self.target, self.fd = target, fd
        self._detach = weakref.finalize(self, _close_all, (fd, *also))
        self._owner = owner
        owner.attachments.append(self)    # detached with everything else when the object closes

    @property
    def attached(self) -> bool:
        return self._detach.alive

    def close(self) -> None:
        if not self._detach.alive:
            return
        self._detach()
        self.fd = -1
        if self in self._owner.attachments:
            self._owner.attachments.remove(self)

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target} {'attached' if self.attached else 'detached'}>"


class SocketAttachment(Attachment):
    """A socket filter attached to a socket (SO_ATTACH_BPF); `close()` detaches it (SO_DETACH_BPF).
    `fd` is the attachment's own duplicate of the socket's fd."""

    def __init__(self, sock: Any, prog_fd: int, program: str, owner: Any) -> None:
        own = _own_socket(sock, program)
        try:
            own.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
        except OSError as exc:
            own.close()
            raise OSError(exc.errno, f"attaching socket filter {program!r} to socket fd "
                                     f"{_fileno(sock)} failed: {kernel.errno_name(exc.errno)} "
                                     f"({os.strerror(exc.errno)})") from None
        self._socket = own
        self.target, self.fd = f"socket fd {_fileno(sock)}", own.fileno()
        self._detach = weakref.finalize(self, _detach_socket, own)
        self._owner = owner
        owner.attachments.append(self)


def _fileno(sock: Any) -> int:
    return sock if isinstance(sock, int) else sock.fileno()


def _own_socket(sock: Any, program: str) -> socket.socket:
    """A socket object on a duplicate of `sock`'s fd (a socket object or an fd number)."""
    if isinstance(sock, bool) or not (isinstance(sock, int) or hasattr(sock, "fileno")):
        raise TypeError(f"attach_socket({program!r}) takes a socket or its fd, not {type(sock).__name__}")
    fd = _fileno(sock)
    try:
        dup = os.dup(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot attach socket filter {program!r}: fd {fd} is not open") from None
    try:
        return socket.socket(fileno=dup)
    except OSError as exc:
        os.close(dup)
        raise OSError(exc.errno, f"cannot attach socket filter {program!r}: fd {fd} is not a "
                                 f"socket ({os.strerror(exc.errno)})") from None


def _detach_socket(own: socket.socket) -> None:
    try:
        own.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
    except OSError:   # the filter was replaced or removed by someone else: nothing of ours is left
        pass
    finally:
        own.close()


def load_attrs(section: str) -> dict:
    """What BPF_PROG_LOAD needs beyond the program type for a tp_btf, fentry or fexit program:
    its attach type and the BTF id (in the running kernel) of what it attaches to."""
    prefix, _, target = section.partition("/")
    if prefix not in TRACING_TARGETS:
        return {}
    attach_type, name, kind = TRACING_TARGETS[prefix]
    btf = kernel_btf()
    found = btf.find(name.format(target), kind) if btf is not None else None
    if found is None:
        raise FileNotFoundError(f"section {section!r}: {name.format(target)!r} is not in this "
                                "kernel's BTF, so the program has nothing to attach to")
    return {"expected_attach_type": attach_type, "attach_btf_id": found}


def attach_tracing(prog_fd: int, section: str, owner: Any) -> Attachment:
    """Attach a loaded tracing program where its section says (the module docstring)."""
    prefix, _, target = section.partition("/")
    if prefix == "tracepoint":
        category, _, name = target.partition("/")
        attr = kernel.PerfEventAttr(type=kernel.PERF_TYPE_TRACEPOINT, size=ctypes.sizeof(kernel.PerfEventAttr),
                                    config=kernel.tracepoint_id(category, name), sample_period=1,
                                    wakeup_events=1)
        return _perf_link(prog_fd, attr, target, owner)
    if prefix == "raw_tp":
        return Attachment(f"raw_tp/{target}", _raw_open(prog_fd, target, section), owner)
    if prefix in TRACING_TARGETS:
        return Attachment(section, _raw_open(prog_fd, None, section), owner)
    return _attach_kprobe(prog_fd, target, prefix == "kretprobe", owner)


def _raw_open(prog_fd: int, name: str | None, section: str) -> int:
    try:
        return kernel.raw_tracepoint_open(prog_fd, name)
    except OSError as exc:
        raise OSError(exc.errno, f"attaching {section} failed: {exc.strerror}") from None


def _attach_kprobe(prog_fd: int, function: str, ret: bool, owner: Any) -> Attachment:
    """A kprobe (kretprobe) perf event on `function`, the program linked to it."""
    what = f"{'kretprobe' if ret else 'kprobe'}/{function}"
    try:
        with open(os.path.join(KPROBE_PMU, "type")) as f:
            pmu = int(f.read())
        with open(os.path.join(KPROBE_PMU, "format", "retprobe")) as f:   # "config:0"
            ret_bit = int(f.read().strip().partition(":")[2])
    except (OSError, ValueError):
        raise OSError(2, f"cannot attach {what}: this kernel ({os.uname().release}) has no kprobe "
                         f"PMU ({KPROBE_PMU}; a kernel built without CONFIG_KPROBES has none): trace "
                         "a tracepoint instead, or the function with @fentry/@fexit") from None
    name = ctypes.create_string_buffer(function.encode())
    attr = kernel.PerfEventAttr(type=pmu, size=ctypes.sizeof(kernel.PerfEventAttr),
                                config=(1 << ret_bit) if ret else 0,
                                config1=ctypes.addressof(name), config2=0)
    return _perf_link(prog_fd, attr, what, owner)


def _perf_link(prog_fd: int, attr: Any, what: str, owner: Any) -> Attachment:
    """A perf event for `attr` with the program linked to it (BPF_LINK_CREATE, BPF_PERF_EVENT:
    Linux 5.15+); a kernel without perf links (EINVAL) gets the program set on the event with
    PERF_EVENT_IOC_SET_BPF, as before links.  Either way closing the attachment detaches."""
    perf = kernel.perf_event_open(attr, what)
    try:
        try:
            link = kernel.link_create(prog_fd, perf, BPF_PERF_EVENT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            fcntl.ioctl(perf, kernel.PERF_EVENT_IOC_SET_BPF, prog_fd)
            fcntl.ioctl(perf, kernel.PERF_EVENT_IOC_ENABLE, 0)
            return Attachment(what, perf, owner)
    except OSError as exc:
        os.close(perf)
        raise OSError(exc.errno, f"attaching to {what} failed: {kernel.errno_name(exc.errno)} "
                                 f"({os.strerror(exc.errno)})") from None
    return Attachment(what, link, owner, also=(perf,))


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        kernel.close(fd)
