"""Ring buffer records on the host, for kernel maps and engine maps alike.

A BPF_MAP_TYPE_RINGBUF holds records a program reserves and submits (or outputs); the host
consumes them in order.  What both map families share lives here, once:

* the framing: a record takes `record_length(size)` bytes of the ring -- its 8-byte header
  (the length, with the BUSY and DISCARD bits, then a page offset) and its data, rounded up to 8;
* a record's decoding (`decode_record`: bytes, or a ctypes type / int type read from its start);
* the iterator with a timeout (`iterate`), over any source that can take its oldest record and
  wait for more: `for rec in m.records(timeout=1.0)` yields every record, and ends once none
  has arrived for `timeout` seconds (0: only what is there now; None: wait for ever).

`KernelRingBuffer` is the kernel's side, as libbpf's ring_buffer reads it: the consumer page
mapped read-write at offset 0 (the host advances consumer_pos there), the producer page and
the data mapped read-only after it, the data twice in a row so a record that wraps around the
end reads as one piece, and epoll on the map's fd to wait (the kernel wakes it when a record
is submitted).  The engine's ring buffer (`engine.maps.RingbufMap`) keeps records rather than
bytes, and its waits are the engine's own.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import select
import time
from typing import Any, Callable, Iterator

from ..uapi import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ
from .values import unpack

__all__ = ["record_length", "decode_record", "iterate", "KernelRingBuffer"]

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


def record_length(size: int) -> int:
    """Bytes of the ring a record of `size` data bytes takes: header and data, rounded up to 8."""
    return (size + BPF_RINGBUF_HDR_SZ + 7) & ~7


def decode_record(raw: bytes, as_type: Any, name: str) -> Any:
    """A record as `as_type`: bytes (None), a ctypes Structure/Union/Array read from the record's
    first sizeof bytes, or an int type / `int` read from the whole record."""
    if as_type is None:
        return raw
    if isinstance(as_type, type) and issubclass(as_type, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        size = ctypes.sizeof(as_type)
        if len(raw) < size:
            raise ValueError(f"ringbuf {name!r}: a record of {len(raw)} bytes is too short for "
                             f"{as_type.__name__} ({size} bytes)")
        return as_type.from_buffer_copy(raw[:size])
    return unpack(raw, as_type)


def iterate(take: Callable[[], bytes | None], wait: Callable[[float | None], None],
            timeout: float | None, as_type: Any, name: str) -> Iterator:
    """Records from `take()` (the oldest record that has arrived, consumed, or None) until none
    arrives for `timeout` seconds; `wait(seconds)` blocks until more may have arrived or the
    time is up.  One record is consumed per step, so a loop that stops early leaves the rest
    in the ring."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or at least 0, not {timeout}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        raw = take()
        if raw is not None:
            yield decode_record(raw, as_type, name)
            deadline = None       # the idle time counts from the first look that finds nothing
            continue
        if timeout is None:
            wait(None)
            continue
        now = time.monotonic()
        if deadline is None:
            deadline = now + timeout
        if now >= deadline:
            return
        wait(deadline - now)


class KernelRingBuffer:
    """One kernel ring buffer map mapped into this process; see the module docstring."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.name, self.size, self.mask = name, size, size - 1
        self.page = mmap.PAGESIZE
        self._consumer = self._map(fd, self.page, mmap.PROT_READ | mmap.PROT_WRITE, 0)
        try:
            self._producer = self._map(fd, self.page + 2 * size, mmap.PROT_READ, self.page)
        except OSError:
            _munmap(self._consumer, self.page)
            raise
        self._data = self._producer + self.page
        # the two positions as ctypes words made once: each read is then one load
        self._cons = ctypes.c_uint64.from_address(self._consumer)
        self._prod = ctypes.c_uint64.from_address(self._producer)
        # the data (mapped twice in a row) as 32-bit words for the headers, and as bytes
        self._words = (ctypes.c_uint32 * (size // 2)).from_address(self._data)
        self._bytes = (ctypes.c_char * (2 * size)).from_address(self._data)
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)

    def _map(self, fd: int, length: int, prot: int, offset: int) -> int:
        address = _mmap(None, length, prot, mmap.MAP_SHARED, fd, offset)
        if address in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of ringbuf {self.name!r}: {os.strerror(err)}")
        return address

    def ready(self) -> int:
        """How many records take() would return one by one now (submitted ones before the first
        still reserved, discarded ones left out), without consuming them."""
        count, cons, prod = 0, self._positions(), self._prod.value
        while cons < prod:
            header = self._words[(cons & self.mask) >> 2]
            if header & BPF_RINGBUF_BUSY_BIT:
                break
            count += not header & BPF_RINGBUF_DISCARD_BIT
            cons += record_length(header & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT))
        return count

    def take(self) -> bytes | None:
        """The oldest submitted record, consumed (the consumer position moves past it, which
        gives its space back to the producer; discarded ones are skipped), or None when there
        is none (yet)."""
        cons, prod = self._positions(), self._prod.value
        while cons < prod:
            at = cons & self.mask
            header = self._words[at >> 2]   # one aligned load, as the kernel writes it
            if header & BPF_RINGBUF_BUSY_BIT:
                return None
            length = header & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
            cons += record_length(length)
            self._cons.value = cons
            if not header & BPF_RINGBUF_DISCARD_BIT:
                start = at + BPF_RINGBUF_HDR_SZ
                return self._bytes[start:start + length]
        return None

    def _positions(self) -> int:
        if self._consumer is None:
            raise ValueError(f"ringbuf {self.name!r} is closed")
        return self._cons.value

    def wait(self, timeout: float | None) -> None:
        """Until the kernel signals a record (epoll on the map fd) or `timeout` seconds pass."""
        self._epoll.poll(-1 if timeout is None else timeout)

    def records(self, timeout: float | None = 0, as_type: Any = None) -> Iterator:
        return iterate(self.take, self.wait, timeout, as_type, self.name)

    def close(self) -> None:
        if self._consumer is not None:
            self._epoll.close()
            _munmap(self._producer, self.page + 2 * self.size)
            _munmap(self._consumer, self.page)
            self._consumer = self._producer = self._cons = self._prod = self._words = self._bytes = None
