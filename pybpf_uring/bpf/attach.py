"""Attaching loaded kernel programs where they run: a tracepoint or a socket.

`load.KernelProgram.attach()` (tracepoint programs) and `.attach_socket(sock)` (socket filters)
check the program's kind and hand the mechanics to this module:

* a tracepoint program hangs off the tracepoint through a perf event (`kernel.attach_tracepoint`);
  closing the event's fd detaches it;
* a socket filter is attached with setsockopt(SOL_SOCKET, SO_ATTACH_BPF, prog fd) and detached
  with SO_DETACH_BPF.  The socket keeps its own reference to the program, so closing the program's
  fd would leave it filtering: detaching is explicit.  The attachment works on its own duplicate of
  the socket's fd, so detaching never reaches another socket that took over the user's fd number
  after the user closed theirs.

An attachment belongs to the loaded object that holds its program: it is detached by its
`close()` (or `with` exit), when the object closes, or when both are garbage-collected.
"""
from __future__ import annotations

import os
import socket
import weakref
from typing import Any

from . import kernel

__all__ = ["Attachment", "SocketAttachment", "SO_ATTACH_BPF", "SO_DETACH_BPF"]

SO_ATTACH_BPF = 50   # asm-generic/socket.h; the same number on every architecture Linux has BPF on
SO_DETACH_BPF = 27   # = SO_DETACH_FILTER: removes a classic or a BPF filter


class Attachment:
    """A program attached to a tracepoint (`fd` is the perf event's); `close()` detaches it."""

    def __init__(self, target: str, fd: int, owner: Any) -> None:
        self.target, self.fd = target, fd
        self._detach = weakref.finalize(self, kernel.close, fd)
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
