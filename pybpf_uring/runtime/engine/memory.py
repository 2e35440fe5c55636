"""Bounds-checked memory for the userspace engine: the only bytes a BPF program may touch.

A program sees 64-bit addresses; the engine gives every region (ctx, each stack frame, each map
value, each helper buffer) its own 4 GiB window and places the region in the middle of it:
address = region id << 32 | (2 GiB + offset).  Addresses are therefore plain integers -- `r1 + 8`,
storing a pointer to the stack and reloading it, and comparing pointers all work with no
provenance tracking -- and resolving one is a shift, a dict lookup and a range test.  An address
that walks off either end of a region stays inside its own window (regions are at most 1 GiB),
so the fault can say "stack frame 0-8" rather than blaming a neighbour.  Region id 0 is never
mapped, so NULL and small integers fault as null dereferences.  What this cannot catch, having
no provenance: arithmetic that moves a pointer by a multiple of 4 GiB lands in another region's
window (the verifier would have refused such a program; the host's memory stays safe either
way, since every access goes through a Python buffer of the region's own size).

The interpreter inlines the fast path (plain regions, found in `readable` / `writable`);
everything else -- read-only regions, regions that allow only some (offset, size) fields, and
every fault message -- goes through `load`/`store` here, which also serve helpers.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Iterable

from ...errors import RingError

__all__ = ["Memory", "MemoryFault", "Region", "REGION_SHIFT", "OFFSET_MASK", "BIAS"]

REGION_SHIFT = 32
OFFSET_MASK = (1 << REGION_SHIFT) - 1
BIAS = 1 << 31                       # a region starts in the middle of its window
_MAX_REGION_BYTES = 1 << 30          # so under- and overruns up to 1 GiB stay in the window
_NULL_WINDOW = 1 << REGION_SHIFT

_UNSIGNED = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}


class MemoryFault(RingError):
    """An access the program may not make; the interpreter adds the instruction that made it."""

    def __init__(self, message: str, address: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.address = address


@dataclass(eq=False)
class Region:
    """A named buffer mapped at `base`.

    `fields`, when set, is the exact set of (offset, size) accesses allowed -- how the RFC's
    `io_uring_bpf_ctx` may only be read or written at its declared members.
    """

    name: str
    buf: bytearray | memoryview
    base: int
    writable: bool = True
    fields: frozenset[tuple[int, int]] | None = None

    @property
    def size(self) -> int:
        return len(self.buf)

    def address(self, offset: int = 0) -> int:
        return self.base + offset


@dataclass(eq=False)
class Memory:
    """The region table of one engine instance; see the module docstring for the address layout."""

    regions: dict[int, Region] = field(default_factory=dict)
    # Fast-path tables read by the interpreter's generated code (plain regions only).
    readable: dict[int, bytearray | memoryview] = field(default_factory=dict)
    writable: dict[int, bytearray | memoryview] = field(default_factory=dict)
    _next_id: int = 1
    # Bumped by every map and unmap, in a word native code can read: a native run from Python
    # (engine.native_ring.FastRun) checks it instead of asking Python whether its region table
    # is stale.
    generation: ctypes.Array = field(default_factory=lambda: (ctypes.c_uint64 * 1)())

    @property
    def next_id(self) -> int:
        """The id the next mapped region gets: every map changes it, so with the tables' sizes
        it tells a copy of the region table (the JIT's) when to rebuild."""
        return self._next_id

    def map(self, buf: bytearray | memoryview, name: str, *, writable: bool = True,
            fields: Iterable[tuple[int, int]] | None = None) -> Region:
        """Make `buf` addressable; the program then reads and writes it in place."""
        if isinstance(buf, (bytes,)) and writable:
            raise TypeError(f"region {name!r}: bytes are immutable; pass a bytearray to make it writable")
        if len(buf) > _MAX_REGION_BYTES:
            raise ValueError(f"region {name!r} is {len(buf)} bytes; the limit is {_MAX_REGION_BYTES}")
        rid = self._next_id
        self._next_id += 1
        self.generation[0] += 1
        region = Region(name, buf, rid << REGION_SHIFT | BIAS, writable,
                        frozenset(fields) if fields is not None else None)
        self.regions[rid] = region
        if region.fields is None:
            self.readable[rid] = buf
            if writable:
                self.writable[rid] = buf
        return region

    def unmap(self, region: Region) -> None:
        """Forget a region; its ids are never reused, so stale pointers fault instead of aliasing."""
        rid = region.base >> REGION_SHIFT
        self.generation[0] += 1
        self.regions.pop(rid, None)
        self.readable.pop(rid, None)
        self.writable.pop(rid, None)

    # -- resolution ---------------------------------------------------------------------------

    def describe(self, address: int) -> str:
        """`stack frame 0+504` / `ctx+16` / `0x10` -- how fault messages name an address."""
        region = self.regions.get(address >> REGION_SHIFT)
        if region is None:
            return hex(address)
        offset = (address & OFFSET_MASK) - BIAS
        return f"{region.name}{offset:+d}"

    def resolve(self, address: int, size: int, access: str) -> tuple[Region, int]:
        """The region and offset of an access of `size` bytes, or the MemoryFault explaining why not."""
        address &= (1 << 64) - 1
        if address < _NULL_WINDOW:
            raise MemoryFault(f"{access} of {size} bytes at {address:#x}: null pointer dereference "
                              "(no region is mapped below 4 GiB)", address)
        region = self.regions.get(address >> REGION_SHIFT)
        if region is None:
            raise MemoryFault(f"{access} of {size} bytes at {address:#x}: no region is mapped there "
                              "(a dangling pointer or an integer used as a pointer)", address)
        offset = (address & OFFSET_MASK) - BIAS
        if offset < 0 or offset + size > len(region.buf):
            raise MemoryFault(
                f"{access} of {size} bytes at {region.name}{offset:+d} is out of bounds "
                f"({region.name} is {len(region.buf)} bytes)", address)
        if access == "write" and not region.writable:
            raise MemoryFault(f"write of {size} bytes at {region.name}+{offset}: "
                              f"{region.name} is read-only", address)
        if region.fields is not None and (offset, size) not in region.fields:
            allowed = ", ".join(f"+{o} ({s} bytes)" for o, s in sorted(region.fields))
            raise MemoryFault(f"{access} of {size} bytes at {region.name}+{offset}: {region.name} "
                              f"may only be accessed at {allowed}", address)
        return region, offset

    # -- scalar accesses (the interpreter's slow path) ----------------------------------------

    def load(self, address: int, size: int) -> int:
        region, offset = self.resolve(address, size, "read")
        return _UNSIGNED[size].unpack_from(region.buf, offset)[0]

    def store(self, address: int, size: int, value: int) -> None:
        region, offset = self.resolve(address, size, "write")
        _UNSIGNED[size].pack_into(region.buf, offset, value & ((1 << (8 * size)) - 1))

    # -- byte ranges (helpers) ----------------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        """Copy `size` bytes out (helpers reading a program buffer); size 0 reads nothing."""
        if size == 0:
            return b""
        region, offset = self._span(address, size, "read")
        return bytes(region.buf[offset:offset + size])

    def write(self, address: int, data: bytes) -> None:
        """Copy `data` in (helpers filling a program buffer)."""
        if not data:
            return
        region, offset = self._span(address, len(data), "write")
        region.buf[offset:offset + len(data)] = data

    def view(self, address: int, size: int) -> memoryview:
        """A writable view of program memory, for helpers that fill it in place."""
        region, offset = self._span(address, size, "write")
        return memoryview(region.buf)[offset:offset + size]

    def _span(self, address: int, size: int, access: str) -> tuple[Region, int]:
        # Field-restricted regions (ctx) are never valid helper buffers: the kernel's verifier
        # refuses ctx as ARG_PTR_TO_MEM for the same reason.
        region = self.regions.get((address & ((1 << 64) - 1)) >> REGION_SHIFT)
        if region is not None and region.fields is not None:
            raise MemoryFault(f"{access} of {size} bytes at {self.describe(address)}: "
                              f"{region.name} cannot be used as a buffer", address)
        return self.resolve(address, size, access)
