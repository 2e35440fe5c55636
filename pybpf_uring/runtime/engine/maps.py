"""Maps of the userspace engine: the maps a program and its host share -- arrays and hashes,
their per-CPU and LRU variants, and ring buffers (`RingbufMap`, records rather than keys).

A program reaches a map through the kernel's helper contract (map_lookup_elem 1, update 2,
delete 3): lookup gives a *pointer* to the value, which the program then reads and writes in
place.  So every value lives in a region of the engine's `Memory`, and the host's dict-like view
(`ring.maps[name][k]`) reads and writes the very same bytes -- a counter the program bumps is the
counter the host sees, with no copy in between.

Semantics follow the kernel's `arraymap.c`, `hashtab.c` and `ringbuf.c` where a program can
observe them (per-CPU maps: the engine is one CPU; LRU: see `LruHashMap`):

* update flags: BPF_ANY (0) creates or replaces, BPF_NOEXIST (1) fails with -EEXIST on a
  present key, BPF_EXIST (2) with -ENOENT on a missing one; other flags are -EINVAL (BPF_F_LOCK
  too: no engine map has a spin lock).  An array's elements always exist (NOEXIST is always
  -EEXIST), an index past max_entries is -E2BIG, and array elements cannot be deleted (-EINVAL).
  A full hash map refuses a new key with -E2BIG.
* pointers stay valid while the program that got them runs.  An array element's region is made
  on first use and never goes away.  A hash element updated in place keeps its region (the kernel
  swaps in a new element, but a program holding the old pointer keeps reading valid memory until
  it ends; writing in place is the closest a single-copy engine gets, and never faults).  A
  deleted element's region is *retired*: it stays mapped until the run ends (the kernel frees
  it after an RCU grace period, which outlasts the program), then it is unmapped, so a pointer
  kept across runs -- which the verifier would never allow -- faults instead of aliasing.
* `.rodata` maps are read-only to programs (`BPF_F_RDONLY_PROG`, as libbpf creates them) and
  writable from the host, like the kernel's; `.data` / `.bss` are plain one-element arrays.

Keys and values from the host are ints (little-endian, to the map's sizes), bytes or ctypes
objects (`values.pack`); reads decode with the BTF type of the map's value when the object has
one (a `Struct` value reads back as a ctypes structure with its fields), else as an int for
1/2/4/8-byte values and bytes otherwise -- the same conventions as the kernel-side `KernelMap`.
"""
from __future__ import annotations

import errno as _errno
import mmap
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

from ... import display
from ...bpf.mapview import MapView
from ...bpf.ringbuf import decode_record, iterate, record_length
from ...bpf.values import ctype_from_btf, pack, pack_per_cpu, unpack, unpack_per_cpu
from ...bpf.objfile import MapSpec
from ...uapi import (BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_F_RDONLY_PROG, BPF_MAP_TYPE_ARRAY,  # noqa: F401
                    BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH,
                    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_RINGBUF,
                    BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP,
                    BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS, BPF_RB_RING_SIZE, E2BIG, EAGAIN, EEXIST, EINVAL,
                    ENOENT, MAP_TYPE_NAMES)
from ...limits import MAX_RINGBUF_BYTES, ringbuf_size_problem
from .memory import Memory, MemoryFault, Region

__all__ = ["EngineMap", "ArrayMap", "HashMap", "PercpuArrayMap", "PercpuHashMap", "LruHashMap",
           "PercpuLruHashMap", "RingbufMap", "make_map", "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST",
           "BPF_F_LOCK", "BPF_F_RDONLY_PROG", "SUPPORTED_MAP_TYPES"]

ENGINE_CPUS = 1           # get_smp_processor_id() is always 0
_MAX_ENTRIES = 1 << 24    # far more than any sample needs, and a guard against a corrupt spec


class EngineMap(MapView):
    """What the host and the helpers share for one map; see the module docstring.

    The helper side (`lookup`, `update`, `delete` on raw key bytes) returns the kernel's
    numbers: a value address or 0, and 0 or -errno.  The host side is the dict of
    `bpf.mapview.MapView`, which `KernelMap` shares: `m[k]`, `m.get(k)`, `k in m`, `keys()`,
    `items()`, `len()`, ..., with `m.set(k, v, flags)` (FileExistsError / FileNotFoundError /
    OSError like the bpf() syscall) and `del m[k]` here.
    """

    def __init__(self, spec: MapSpec, memory: Memory, btf: Any = None) -> None:
        self._check_sizes(spec)
        self.spec, self.name, self.memory = spec, spec.name, memory
        self.key_size, self.value_size, self.max_entries = spec.key_size, spec.value_size, spec.max_entries
        self.type = spec.type
        self.flags = spec.flags
        self.program_writable = not spec.flags & BPF_F_RDONLY_PROG
        self.key_type = ctype_from_btf(btf, spec.key_type_id) if btf is not None else None
        self.value_type = ctype_from_btf(btf, spec.value_type_id) if btf is not None else None
        # The handle a program's ld_imm64 of this map loads: an empty read-only region, so its
        # address is unique and any load or store through it faults with the map's name.
        self.handle: Region = memory.map(bytearray(0), f"map {spec.name!r} (the map itself, not a value)",
                                         writable=False)

    @staticmethod
    def _check_sizes(spec: MapSpec) -> None:
        if spec.key_size <= 0 or spec.value_size <= 0 or not 0 < spec.max_entries <= _MAX_ENTRIES:
            raise ValueError(f"map {spec.name!r}: key size {spec.key_size}, value size "
                             f"{spec.value_size} and max_entries {spec.max_entries} must be positive "
                             f"(max_entries at most {_MAX_ENTRIES})")

    def __repr__(self) -> str:
        kind = MAP_TYPE_NAMES.get(self.type, str(self.type))
        return (f"<EngineMap {self.name!r} {kind} key {self.key_size} B value {self.value_size} B "
                f"x{self.max_entries}>")

    # -- helper side (raw bytes, kernel return codes) -------------------------------------------
    def lookup(self, key: bytes) -> int:
        raise NotImplementedError

    def update(self, key: bytes, value: bytes, flags: int) -> int:
        raise NotImplementedError

    def delete(self, key: bytes) -> int:
        raise NotImplementedError

    def raw_keys(self) -> list[bytes]:
        raise NotImplementedError

    def raw_value(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def end_run(self) -> None:
        """Called when a program run ends: what only had to outlive the run can go."""

    def _host_lookup(self, key: bytes) -> int:
        """A lookup on the host's behalf: the syscall's, which (unlike a program's) does not
        count as a use of an LRU map's key."""
        return self.lookup(key)

    def _value_region(self, buf: bytearray | memoryview, what: str) -> Region:
        return self.memory.map(buf, f"map {self.name!r} value {what}", writable=self.program_writable)

    # -- host side ------------------------------------------------------------------------------
    def _key(self, key: Any) -> bytes:
        return pack(key, self.key_size, f"map {self.name!r} key")

    def _value(self, value: Any) -> bytes:
        return pack(value, self.value_size, f"map {self.name!r} value")

    def _decode(self, raw: bytes) -> Any:
        return unpack(raw, self.value_type)

    def set(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Update with the kernel's flags; errors raise as the bpf() syscall's would."""
        # the syscall refuses BPF_F_LOCK on a value without a spin lock before the map sees it
        res = -EINVAL if flags & BPF_F_LOCK else self.update(self._key(key), self._value(value), flags)
        if res < 0:
            raise _os_error(-res, f"map {self.name!r} update of key {key!r} (flags {flags})")

    def __delitem__(self, key: Any) -> None:
        res = self.delete(self._key(key))
        if res == -ENOENT:
            raise KeyError(key)
        if res < 0:
            raise _os_error(-res, f"map {self.name!r} delete of key {key!r}")

    def view(self, key: Any) -> memoryview:
        """The live bytes of one value (writes show at once in the program's view); KeyError if
        the key is missing.  For host code that shares a buffer with a program."""
        address = self._host_lookup(self._key(key))
        if not address:
            raise KeyError(key)
        region, offset = self.memory.resolve(address, self.value_size, "read")
        return memoryview(region.buf)[offset:offset + self.value_size]

    def address(self, key: Any) -> int:
        """The engine address of a value (what a program's lookup returns); KeyError if missing."""
        address = self._host_lookup(self._key(key))
        if not address:
            raise KeyError(key)
        return address

    _repr_html_ = display.map_html   # Jupyter's view: the first entries, decoded


class ArrayMap(EngineMap):
    """BPF_MAP_TYPE_ARRAY: u32 keys 0..max_entries-1, all present, zero-filled at creation.

    One bytearray holds every value (host reads index into it); an element's region is a
    memoryview of its slice, made the first time a program asks for it, so a 64k-entry map a
    program touches at three indexes costs three regions."""

    def __init__(self, spec: MapSpec, memory: Memory, btf: Any = None) -> None:
        super().__init__(spec, memory, btf)
        if spec.key_size != 4:
            raise ValueError(f"array map {spec.name!r}: key size is {spec.key_size}; arrays take u32 keys")
        self.data = bytearray(spec.value_size * spec.max_entries)
        if spec.data:
            initial = bytes(spec.data)[:spec.value_size]
            self.data[:len(initial)] = initial
        self._regions: dict[int, Region] = {}

    def _index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")

    def element_address(self, index: int) -> int:
        """The region base of element `index` (made on first use)."""
        region = self._regions.get(index)
        if region is None:
            start = index * self.value_size
            view = memoryview(self.data)[start:start + self.value_size]
            region = self._regions[index] = self._value_region(view, f"[{index}]")
        return region.base

    def lookup(self, key: bytes) -> int:
        index = self._index(key)
        return self.element_address(index) if index < self.max_entries else 0

    def update(self, key: bytes, value: bytes, flags: int) -> int:
        # array_map_update_elem's order of checks: a program sees E2BIG / EEXIST before the
        # EINVAL of a BPF_F_LOCK without a spin lock (the bpf() syscall checks the lock first)
        if flags & ~BPF_F_LOCK > BPF_EXIST:
            return -EINVAL
        index = self._index(key)
        if index >= self.max_entries:
            return -E2BIG
        if flags & BPF_NOEXIST:
            return -EEXIST      # every element of an array exists
        if flags & BPF_F_LOCK:
            return -EINVAL
        start = index * self.value_size
        self.data[start:start + self.value_size] = value
        return 0

    def delete(self, key: bytes) -> int:
        return -EINVAL

    def raw_keys(self) -> list[bytes]:
        return [i.to_bytes(4, "little") for i in range(self.max_entries)]

    def raw_value(self, key: bytes) -> bytes | None:
        index = self._index(key)
        if index >= self.max_entries:
            return None
        start = index * self.value_size
        return bytes(self.data[start:start + self.value_size])

    def __len__(self) -> int:
        return self.max_entries


class HashMap(EngineMap):
    """BPF_MAP_TYPE_HASH: at most max_entries keys, each value its own region."""

    def __init__(self, spec: MapSpec, memory: Memory, btf: Any = None) -> None:
        super().__init__(spec, memory, btf)
        self._elements: dict[bytes, Region] = {}
        self._retired: list[Region] = []
        self.running = False      # set by the instance while a program runs
        self.retired_flag: Any = None   # the instance's: set to 1 when a value is retired
        self.index: Any = None          # native_ring.HashIndex, kept in step for native lookups

    def lookup(self, key: bytes) -> int:
        region = self._elements.get(key)
        return region.base if region is not None else 0

    def update(self, key: bytes, value: bytes, flags: int) -> int:
        if flags & ~BPF_F_LOCK > BPF_EXIST or flags & BPF_F_LOCK:
            return -EINVAL
        region = self._elements.get(key)
        if region is not None:
            if flags == BPF_NOEXIST:
                return -EEXIST
            region.buf[:] = value
            return 0
        if flags == BPF_EXIST:
            return -ENOENT
        if len(self._elements) >= self.max_entries:
            return -E2BIG
        region = self._elements[bytes(key)] = self._value_region(bytearray(value), f"[{key.hex()}]")
        if self.index is not None:
            self.index.put(bytes(key), region.base)
        return 0

    def delete(self, key: bytes) -> int:
        region = self._elements.pop(key, None)
        if region is None:
            return -ENOENT
        if self.index is not None:
            self.index.remove(bytes(key))
        if self.running:
            self._retired.append(region)     # the program may still hold a pointer to it
            if self.retired_flag is not None:
                self.retired_flag[0] = 1
        else:
            self.memory.unmap(region)
        return 0

    def end_run(self) -> None:
        for region in self._retired:
            self.memory.unmap(region)
        self._retired.clear()

    def raw_keys(self) -> list[bytes]:
        return list(self._elements)

    def raw_value(self, key: bytes) -> bytes | None:
        region = self._elements.get(key)
        return bytes(region.buf) if region is not None else None


class _PerCpu:
    """The host side of a per-CPU map on the one-CPU engine.  `KernelMap` reads a per-CPU value
    as a list with one value per possible CPU and writes a list of as many, or one value every
    CPU gets; the engine's reads are a list of ENGINE_CPUS (1) values, and its writes take a
    value or a list of one.  A program sees one value per key, this CPU's, as in the kernel."""

    per_cpu = True
    name: str
    value_size: int
    value_type: Any

    def _decode(self, raw: bytes) -> list:
        return unpack_per_cpu(raw, self.value_size, self.value_size, self.value_type)

    def _value(self, value: Any) -> bytes:
        return pack_per_cpu(value, ENGINE_CPUS, self.value_size, self.value_size, self.name, "engine CPU")


class PercpuArrayMap(_PerCpu, ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY: an array whose one CPU's values are the program's; host
    values are lists (see `_PerCpu`)."""


class PercpuHashMap(_PerCpu, HashMap):
    """BPF_MAP_TYPE_PERCPU_HASH: a hash map whose one CPU's values are the program's; host
    values are lists (see `_PerCpu`).  Lookups are a hash map's, so native lookups serve it."""


class LruHashMap(HashMap):
    """BPF_MAP_TYPE_LRU_HASH: a hash map that makes room for a new key by evicting the least
    recently used one, where a plain hash map says -E2BIG.

    A program's lookup and any update (program or host) count as a use; the host's reads do not
    (the syscall's lookup is `htab_lru_map_lookup_elem_sys`, which leaves the LRU alone).  The
    engine's order is exact; the kernel's is an approximation (an active and an inactive list
    with a reference bit, per-CPU free lists) that may evict before the map is full or keep a
    less recent key -- a program can rely on neither, nor on the engine's exact choice.  The
    evicted value is retired like a deleted one.  `evictions` counts them."""

    def __init__(self, spec: MapSpec, memory: Memory, btf: Any = None) -> None:
        super().__init__(spec, memory, btf)
        self.evictions = 0

    def _touch(self, key: bytes) -> Region | None:
        region = self._elements.pop(key, None)     # dicts keep insertion order: the end is newest
        if region is not None:
            self._elements[key] = region
        return region

    def lookup(self, key: bytes) -> int:
        region = self._touch(key)
        return region.base if region is not None else 0

    def _host_lookup(self, key: bytes) -> int:
        return HashMap.lookup(self, key)

    def update(self, key: bytes, value: bytes, flags: int) -> int:
        if flags & ~BPF_F_LOCK > BPF_EXIST or flags & BPF_F_LOCK:
            return -EINVAL
        key = bytes(key)
        present = key in self._elements
        if present and flags == BPF_NOEXIST:
            return -EEXIST
        if not present and flags == BPF_EXIST:
            return -ENOENT
        if not present and len(self._elements) >= self.max_entries:
            self.delete(next(iter(self._elements)))
            self.evictions += 1
        res = super().update(key, value, flags)
        if res == 0:
            self._touch(key)
        return res


class PercpuLruHashMap(_PerCpu, LruHashMap):
    """BPF_MAP_TYPE_LRU_PERCPU_HASH: an LRU hash with per-CPU values (BPF_F_NO_COMMON_LRU, a
    list per CPU, is the same thing on one CPU)."""


RINGBUF_MAX_RECORD_SZ = 0xFFFFFFFF // 4      # kernel/bpf/ringbuf.c


@dataclass
class _Record:
    pos: int                    # where its header starts, in the ring's running byte count
    length: int                 # header and data, rounded up to 8: what it takes of the ring
    region: Region | None       # while reserved: the bytes the program fills
    data: bytes = b""
    state: str = "busy"         # busy (reserved), committed or discarded


class RingbufMap(EngineMap):
    """BPF_MAP_TYPE_RINGBUF: records a program reserves and submits, which the host consumes in
    the order they were reserved.

    The ring is kept as kernel/bpf/ringbuf.c's positions, not its bytes: a record takes
    round_up(size + 8, 8) of the max_entries bytes (its 8-byte header and its data), and a
    reservation fails -- reserve returns NULL, output -EAGAIN -- when the producer would get a
    whole ring ahead of the consumer or of the oldest record still reserved.  A reserved record
    is a region of exactly the requested size; submit or discard unmaps it (the verifier forbids
    using the pointer afterwards, so the engine faults).  The host consumes committed records up
    to the first still-reserved one, skipping discarded ones, as libbpf's ring_buffer__consume
    does.  A record a run neither submitted nor discarded (the verifier refuses such a program:
    an unreleased reference) is discarded when the run ends and counted in `unreleased`, so one
    faulty run cannot block the ring for good."""

    def __init__(self, spec: MapSpec, memory: Memory, btf: Any = None) -> None:
        super().__init__(spec, memory, btf)
        self.size = spec.max_entries
        self.mask = self.size - 1
        self.consumer_pos = self.producer_pos = 0
        self._records: deque[_Record] = deque()       # reserved and not consumed, in order
        self._reserved: dict[int, _Record] = {}       # region base -> busy record
        self.unreleased = 0
        self.running = False
        self.retired_flag: Any = None    # the instance's: set so a native run's end reaches end_run
        self._arrival = threading.Condition()   # records() waits on it while another thread runs
        self._waiters = 0                       # programs (a Ring driven elsewhere)

    @staticmethod
    def _check_sizes(spec: MapSpec) -> None:
        if spec.key_size or spec.value_size or ringbuf_size_problem(spec.max_entries, mmap.PAGESIZE):
            raise ValueError(f"ringbuf map {spec.name!r}: key size {spec.key_size}, value size "
                             f"{spec.value_size}, max_entries {spec.max_entries}: the kernel wants sizes 0 "
                             f"and a byte size that is a power of 2 and a multiple of the page "
                             f"({mmap.PAGESIZE}), at most {MAX_RINGBUF_BYTES}")

    def __repr__(self) -> str:
        return (f"<EngineMap {self.name!r} ringbuf {self.size} B, {self.producer_pos - self.consumer_pos} "
                f"B unconsumed>")

    # -- helper side ----------------------------------------------------------------------------
    def _space(self, size: int) -> int | None:
        """The position of a new record of `size` data bytes, or None if it does not fit."""
        if size > RINGBUF_MAX_RECORD_SZ:
            return None
        length = record_length(size)
        if length > self.size:
            return None
        # the oldest record still reserved (dicts keep reservation order), as the kernel's
        # pending_pos walks to it
        pending = next((r.pos for r in self._reserved.values()), self.producer_pos)
        new = self.producer_pos + length
        if new - self.consumer_pos > self.mask or new - pending > self.mask:
            return None
        pos, self.producer_pos = self.producer_pos, new
        return pos

    def reserve(self, size: int, flags: int) -> int:
        """bpf_ringbuf_reserve: the address of `size` bytes to fill, or 0 (NULL)."""
        if flags:
            return 0
        pos = self._space(size)
        if pos is None:
            return 0
        region = self.memory.map(bytearray(size), f"ringbuf {self.name!r} record at {pos}")
        record = _Record(pos, self.producer_pos - pos, region)
        self._records.append(record)
        self._reserved[region.base] = record
        if self.retired_flag is not None:
            self.retired_flag[0] = 1
        return region.base

    def commit(self, address: int, discard: bool) -> bool:
        """bpf_ringbuf_submit / _discard of a reserved record; False if `address` is not one."""
        record = self._reserved.pop(address & ((1 << 64) - 1), None)
        if record is None:
            return False
        assert record.region is not None
        record.data = b"" if discard else bytes(record.region.buf)
        record.state = "discarded" if discard else "committed"
        self.memory.unmap(record.region)
        record.region = None
        self._arrived()
        return True

    def output(self, data: bytes, flags: int) -> int:
        """bpf_ringbuf_output: 0, -EINVAL (flags other than the wakeup ones), -EAGAIN (full)."""
        if flags & ~(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP):
            return -EINVAL
        pos = self._space(len(data))
        if pos is None:
            return -EAGAIN
        self._records.append(_Record(pos, self.producer_pos - pos, None, bytes(data), "committed"))
        self._arrived()
        return 0

    def _arrived(self) -> None:
        """Wake a host thread waiting in records() (after the record is in: see `wait`)."""
        if self._waiters:
            with self._arrival:
                self._arrival.notify_all()

    def query(self, flags: int) -> int:
        """bpf_ringbuf_query: available bytes, ring size, consumer or producer position; 0 for
        any other flag."""
        return {BPF_RB_AVAIL_DATA: self.producer_pos - self.consumer_pos, BPF_RB_RING_SIZE: self.size,
                BPF_RB_CONS_POS: self.consumer_pos, BPF_RB_PROD_POS: self.producer_pos}.get(flags, 0)

    def end_run(self) -> None:
        for address in list(self._reserved):
            self.commit(address, discard=True)
            self.unreleased += 1

    def _not_keyed(self, what: str) -> Exception:
        return MemoryFault(f"map {self.name!r} is a ringbuf: {what} does not take it (the verifier "
                           "refuses the call); use bpf_ringbuf_reserve/submit or bpf_ringbuf_output")

    def lookup(self, key: bytes) -> int:
        raise self._not_keyed("map_lookup_elem")

    def update(self, key: bytes, value: bytes, flags: int) -> int:
        raise self._not_keyed("map_update_elem")

    def delete(self, key: bytes) -> int:
        raise self._not_keyed("map_delete_elem")

    # -- host side ------------------------------------------------------------------------------
    def consume(self, as_type: Any = None, limit: int | None = None) -> list:
        """The committed records, oldest first, up to the first one still reserved (at most
        `limit`); they leave the ring.  Bytes, or decoded as `as_type` (a ctypes type reads the
        record's first sizeof bytes; an int type or `int` the whole record)."""
        out: list = []
        records = self._records
        while records and records[0].state != "busy" and (limit is None or len(out) < limit):
            record = records.popleft()
            self.consumer_pos = record.pos + record.length
            if record.state == "committed":
                out.append(decode_record(record.data, as_type, self.name))
        return out

    def records(self, timeout: float | None = 0, as_type: Any = None) -> Iterator:
        """The records, oldest first, as `KernelMap.records` gives a kernel ring buffer's: bytes
        or each decoded `as_type`, until none has arrived for `timeout` seconds (0: what is
        there now, None: wait for ever).  Records arrive while programs run, so a wait is worth
        it only while another thread drives the ring; the iteration shares `ringbuf.iterate`."""
        return iterate(lambda: next(iter(self.consume(limit=1)), None), self.wait, timeout, as_type, self.name)

    def wait(self, timeout: float | None) -> None:
        """Until a record is committed or `timeout` seconds pass.  The waiter is counted before
        it looks for records, and a producer adds its record before it looks for waiters, so a
        record is never missed between the two."""
        with self._arrival:
            self._waiters += 1
            try:
                if not len(self):
                    self._arrival.wait(timeout)
            finally:
                self._waiters -= 1

    def __iter__(self) -> Iterator:
        """Consume the records one by one: `for raw in ring.maps["events"]: ...`."""
        while batch := self.consume(limit=1):
            yield batch[0]

    def __len__(self) -> int:
        """How many committed records a consume() would return now."""
        n = 0
        for record in self._records:
            if record.state == "busy":
                break
            n += record.state == "committed"
        return n

    def __bool__(self) -> bool:
        return True          # a map is a map, records or not

    def _not_a_dict(self) -> TypeError:
        return TypeError(f"map {self.name!r} is a ringbuf: it has records, not keys (consume() them)")

    def _key(self, key: Any) -> bytes:
        raise self._not_a_dict()

    def raw_keys(self) -> list[bytes]:
        raise self._not_a_dict()

    def raw_value(self, key: bytes) -> bytes | None:
        raise self._not_a_dict()


def make_map(spec: MapSpec, memory: Memory, btf: Any = None) -> EngineMap:
    """The engine map for `spec`; ValueError naming the type for kinds the engine lacks."""
    cls = _MAP_CLASSES.get(spec.type)
    if cls is None:
        kind = MAP_TYPE_NAMES.get(spec.type, str(spec.type))
        raise ValueError(f"map {spec.name!r} is a {kind} map; the engine has "
                         f"{', '.join(SUPPORTED_MAP_TYPES.values())} maps only")
    return cls(spec, memory, btf)


def _os_error(err: int, what: str) -> OSError:
    """OSError(err) is FileExistsError / FileNotFoundError for EEXIST / ENOENT, as bpf() raises."""
    return OSError(err, f"{what}: {_errno.errorcode.get(err, err)}: {os.strerror(err)}")


_MAP_CLASSES: dict[int, type[EngineMap]] = {
    BPF_MAP_TYPE_HASH: HashMap, BPF_MAP_TYPE_ARRAY: ArrayMap,
    BPF_MAP_TYPE_PERCPU_HASH: PercpuHashMap, BPF_MAP_TYPE_PERCPU_ARRAY: PercpuArrayMap,
    BPF_MAP_TYPE_LRU_HASH: LruHashMap, BPF_MAP_TYPE_LRU_PERCPU_HASH: PercpuLruHashMap,
    BPF_MAP_TYPE_RINGBUF: RingbufMap,
}
SUPPORTED_MAP_TYPES = {t: MAP_TYPE_NAMES[t] for t in _MAP_CLASSES}
