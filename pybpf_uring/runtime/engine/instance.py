"""An object made live in the userspace engine: its maps, its programs, their helpers and ctx.

`instantiate(obj)` is the engine's loader, the counterpart of `load.load` for programs the
running kernel cannot take (the RFC's io_uring programs, docs/abi.md §A).  It does what libbpf and the
RFC kernel would do, in the same order:

1. every map of the object (`.maps` and the `.data`/`.rodata`/`.bss` arrays) becomes an engine
   map (`maps.py`) whose values are regions of one shared `Memory`;
2. every program is linked (`ProgramSpec.linked()`: subprograms appended, calls fixed) and each
   map reference -- an ld_imm64 the compiler left as 0 with a relocation -- is rewritten to the
   kernel's "map by index" forms (src 5 for the map, src 6 for a value + offset), which the
   interpreter resolves to the map's *handle* (a unique, empty region the map helpers recognise)
   or to the address of the data map's value;
3. each program gets an `Interpreter` (or the JIT: `backend=`) over that memory with the helper
   table below, and a 16-byte ctx region that only admits the RFC's fields at their exact
   offsets and sizes (user_data u64 at 0, wait_nr u32 at 8, wait_idx u32 at 12), as the RFC
   verifier's `is_valid_access` does.  io_uring programs are made at once, so `Ring.register`
   reports what the engine cannot run; other kinds in the object when first asked for.

Helpers: every helper of the registry (helpers.py) with an `engine` implementation, bound by
that name in `_helper_table` and given its arguments narrowed to the registry's widths; what each
does here is the table in docs/runtime.md.  The RFC helpers (164-167, 148) go to the request's
`ring.Helpers` (see ring.py); the map and ring buffer helpers to the maps of maps.py.

A fault (bad memory access, runaway loop, a helper given a bad pointer) becomes a
`ring.ProgramFault` whose message names the program, the instruction (slot and disassembly) and
the Python line it came from (the program's BTF line_info), so the Ring fails the request with
-EFAULT and records the message in `ring.faults`.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Callable, Iterator

from ... import helpers as registry
from ...bpf import isa
from ...errors import RingError
from ...bpf.isa import Instruction
from ...bpf.objfile import ProgramSpec
from ..ring_protocol import CTX_SIZE, ProgramFault
from .interpreter import DEFAULT_BUDGET, BpfFault, Interpreter, InvalidProgram
from .maps import ArrayMap, EngineMap, HashMap, PercpuHashMap, RingbufMap, make_map
from .memory import BIAS, OFFSET_MASK, REGION_SHIFT, Memory, MemoryFault
from .printk import format_trace

__all__ = ["instantiate", "EngineInstance", "EngineProgram", "EngineError", "MapTable",
           "CTX_FIELDS", "BACKENDS"]

M64 = (1 << 64) - 1
CTX_FIELDS = ((0, 8), (8, 4), (12, 4))     # struct io_uring_bpf_ctx {u64 user_data; u32 wait_nr, wait_idx}
BACKENDS = ("interpreter", "jit", "auto")
TRACE_LINES = 10_000                       # like a trace_pipe buffer: the newest lines are kept

class EngineError(RingError):
    """The object cannot run in the engine (a map type, relocation or program it lacks)."""


class MapTable(Mapping):
    """`ring.maps`: the instance's maps by name.  `.instance` leads back to the engine instance
    (for `ring.maps.instance.trace`, the lines programs printed)."""

    def __init__(self, maps: dict[str, EngineMap], instance: "EngineInstance") -> None:
        self._maps, self.instance = maps, instance

    def __getitem__(self, name: str) -> EngineMap:
        try:
            return self._maps[name]
        except KeyError:
            known = ", ".join(self._maps) or "none"
            raise KeyError(f"no map named {name!r} (maps: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)

    def __repr__(self) -> str:
        return f"MapTable({list(self._maps)})"

    @property
    def trace(self) -> deque[str]:
        return self.instance.trace


class EngineInstance:
    """One object live in the engine: `maps` (a `MapTable`), `memory`, `trace` (printed lines),
    and a runner per program (`runner(spec_or_name)`)."""

    def __init__(self, obj: Any, *, budget: int = DEFAULT_BUDGET,
                 on_trace: Callable[[str], None] | None = None, backend: str = "auto",
                 native_waits: bool = True) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.backend = backend
        self.native_waits = native_waits
        self.obj = obj
        self.memory = Memory()
        self.trace: deque[str] = deque(maxlen=TRACE_LINES)
        self.on_trace = on_trace
        self.budget = budget
        btf = getattr(obj, "btf", None)
        self._map_list: list[EngineMap] = []
        for spec in obj.maps:
            try:
                self._map_list.append(make_map(spec, self.memory, btf))
            except ValueError as exc:
                raise EngineError(str(exc)) from None
        self.maps = MapTable({m.name: m for m in self._map_list}, self)
        self._by_handle = {m.handle.base: m for m in self._map_list}
        self._hash_maps = [m for m in self._map_list if isinstance(m, HashMap)]
        # maps with something to do when a run ends: retired hash values, unreleased records
        self._run_maps = [m for m in self._map_list if isinstance(m, (HashMap, RingbufMap))]
        # Set when a run deletes a hash-map value or reserves a record: a native wait calls
        # end_run (release_retired) when the run ends.
        self.retired = (ctypes.c_uint64 * 1)()
        for m in self._run_maps:
            m.retired_flag = self.retired
        # io_uring programs are made now, so what the engine cannot run fails at register time;
        # other kinds (a socket filter beside them, a syscall program under test) on first use,
        # so an object mixing kinds registers even if their helpers are not the engine's.
        self._specs = {spec.name: spec for spec in obj.programs}
        self._natives: Any = None         # native_tables(): helper table, maps table, their buffers
        self.programs: dict[str, EngineProgram] = {
            spec.name: EngineProgram(self, spec) for spec in obj.programs if spec.kind == "iouring"}

    def __repr__(self) -> str:
        return f"<EngineInstance programs={list(self.programs)} maps={list(self.maps)}>"

    def runner(self, program: ProgramSpec | str) -> "EngineProgram":
        """The runner of a program (its spec, as `Ring.register` passes it, or its name)."""
        name = program if isinstance(program, str) else program.name
        runner = self.programs.get(name)
        if runner is None:
            spec = self._specs.get(name)
            if spec is None:
                raise KeyError(f"no program named {name!r} (programs: {', '.join(self._specs)})")
            runner = self.programs[name] = EngineProgram(self, spec)
        return runner

    # -- map references -------------------------------------------------------------------------
    def map_index(self, name: str, program: str) -> int:
        for i, m in enumerate(self._map_list):
            if m.name == name:
                return i
        raise EngineError(f"program {program!r} refers to map {name!r}, which the object does not define")

    def resolve_lddw(self, src: int, imm: int, imm_hi: int) -> int:
        """The value of a relocated ld_imm64: a map's handle (src 5) or a value address (src 6)."""
        if src in (isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_IDX_VALUE) and 0 <= imm < len(self._map_list):
            m = self._map_list[imm]
            if src == isa.PSEUDO_MAP_IDX:
                return m.handle.base
            if isinstance(m, ArrayMap):     # global data: one-element arrays
                return m.element_address(0) + imm_hi
        raise EngineError(f"ld_imm64 with src {src} and imm {imm}: the engine resolves only the map "
                          "references it wrote itself (src 5/6, by map index)")

    def map_at(self, memory: Memory, address: int, arg: str) -> EngineMap:
        m = self._by_handle.get(address & M64)
        if m is None:
            raise MemoryFault(f"{arg} = {memory.describe(address)} is not a map (pass a map itself, "
                              "as ld_imm64 of a map gives it)", address)
        return m

    def native_tables(self) -> tuple[int, int]:
        """(native helper table, maps table) addresses for a JIT'd program's state block.

        The helper table stays empty (every helper a Python call) until a Ring registers the
        object (`enable_native_helpers`): compiling the native module costs ~100 ms once per
        process, which a program run outside a ring need not pay.  The maps table is {count,
        then a record per map (native_ring_ir.MAP_WORDS)}: an array's element addresses, cached
        the first time the Python lookup makes the element's region, and its values, which
        updates write in place as ArrayMap.update does; a hash map's index of keys and value
        addresses (native_ring.HashIndex), kept in step by HashMap.update/delete."""
        if self._natives is None:
            from .native_ring import MAP_WORDS, MAX_INDEXED, HashIndex
            n = len(MAP_WORDS)
            # exact types: a per-CPU array's kind is not the native code's array kind (2), and an
            # LRU hash's lookups must reach Python to count as uses
            arrays = [m for m in self._map_list if type(m) is ArrayMap]
            hashes = [m for m in self._hash_maps if type(m) in _NATIVE_HASHES and m.max_entries <= MAX_INDEXED]
            maps = (ctypes.c_uint64 * (1 + n * (len(arrays) + len(hashes))))()
            maps[0] = len(arrays) + len(hashes)
            keep: list = []
            for i, m in enumerate(arrays + hashes):
                base = 1 + n * i
                maps[base:base + 5] = [m.handle.base, m.type, m.max_entries, m.key_size, m.value_size]
                if isinstance(m, ArrayMap):
                    cache = (ctypes.c_uint64 * m.max_entries)()
                    data = (ctypes.c_char * len(m.data)).from_buffer(m.data)
                    maps[base + 5:base + 7] = [ctypes.addressof(cache), ctypes.addressof(data)]
                    keep += [cache, data]
                else:
                    m.index = HashIndex(m, maps, base)
            self._natives = ((ctypes.c_void_p * 256)(), maps, keep)
        table, maps, _ = self._natives
        return ctypes.addressof(table), ctypes.addressof(maps)

    def enable_native_helpers(self) -> None:
        """Fill the native helper table (engine.native_ring): from now on this object's JIT'd
        programs call the helpers of jit_lift.NATIVE_HELPERS as native code."""
        self.native_tables()
        from .native_ring import native_helpers
        table = self._natives[0]
        for helper, address in native_helpers().items():
            table[helper] = address

    def begin_run(self) -> None:
        for m in self._run_maps:
            m.running = True

    def end_run(self) -> None:
        for m in self._run_maps:
            m.running = False
            m.end_run()
        self.retired[0] = 0

    def release_retired(self) -> None:
        """Between two runs of a native wait (maps stay `running`): free the hash-map values
        the last run deleted, and drop the records it left reserved, as end_run would."""
        for m in self._run_maps:
            m.end_run()
        self.retired[0] = 0

    def emit_trace(self, line: str) -> None:
        self.trace.append(line)
        if self.on_trace is not None:
            self.on_trace(line)


class EngineProgram:
    """A linked, relocated program on the instance's memory: a `ring.ProgramRunner`.

    `run(ctx, helpers)` -> (r0, ctx as the program left it).  For an io_uring program the ctx is
    16 bytes and field-exact; any other kind gets a plain region of the ctx's size (a syscall
    program's struct), so the same runner serves differential tests against the kernel.
    `helpers` is the request's `ring.Helpers`; without it the RFC helpers fault.
    """

    fault_types = ()    # faults arrive as ring.ProgramFault

    def __init__(self, instance: EngineInstance, spec: ProgramSpec) -> None:
        self.instance, self.spec, self.name = instance, spec, spec.name
        self._shown: dict[int, str] = {}          # relocated slot -> how a fault shows it
        self.linked = self._relocated(spec.linked())
        self._ring_helpers: Any = None
        # runs and the last run's instruction count live in the words a native run from Python
        # counts in (native_ring.FastRun), whichever path ran
        from .native_run_ir import RUN_WORDS       # (not native_ring: ~9 ms to import)
        self._counts = (ctypes.c_uint64 * len(RUN_WORDS))()
        self._runs_i, self._executed_i = RUN_WORDS.index("runs"), RUN_WORDS.index("executed")
        self._fast: Any = None      # FastRun.call once the program has run on the JIT, if it may
        self._fast_run: Any = None
        self._ctx_regions: dict[int, Any] = {}
        options = dict(memory=instance.memory, helpers=self._helper_table(),
                       kfuncs={_TRAP_ID: _bpf_trap}, resolve_lddw=instance.resolve_lddw,
                       budget=instance.budget, disassemble=self.disassemble)
        self.backend_reason: str | None = None    # why the JIT was not used, when it was asked for
        try:
            if instance.backend == "interpreter":
                self.vm = Interpreter(self.linked.instructions, **options)
                self.backend = "interpreter"
            else:
                from .jit import JIT_MAX_SLOTS, select_engine
                # "auto" keeps the JIT's build budget (jit.JIT_MAX_SLOTS); "jit" was asked for
                choice = select_engine(self.linked.instructions, **options,
                                       max_slots=None if instance.backend == "jit" else JIT_MAX_SLOTS)
                if choice.reason is not None and instance.backend == "jit":
                    raise EngineError(f"program {spec.name!r}: the JIT cannot run it: {choice.reason}")
                self.vm, self.backend, self.backend_reason = choice.engine, choice.kind, choice.reason
                if self.backend == "jit":
                    self.vm.bind_natives(*instance.native_tables())
        except InvalidProgram as exc:
            raise EngineError(f"program {spec.name!r}: {self._where(exc.insn_index, exc.message)}") from None
        # A program that calls no helper or kfunc runs from Python through FastRun after its
        # first run: its run has no bookkeeping a native call cannot do.
        self._fast_ok = self.backend == "jit" and not any(
            ins.is_call and not ins.is_pseudo_call for ins in self.linked.instructions)

    @property
    def runs(self) -> int:
        return self._counts[self._runs_i]

    @runs.setter
    def runs(self, value: int) -> None:
        self._counts[self._runs_i] = value

    @property
    def executed(self) -> int:
        """Instructions of the last run."""
        return self._counts[self._executed_i]

    @executed.setter
    def executed(self, value: int) -> None:
        self._counts[self._executed_i] = value

    def __repr__(self) -> str:
        return f"<EngineProgram {self.name!r} ({self.spec.kind}), {self.runs} runs>"

    # -- linking --------------------------------------------------------------------------------
    def _relocated(self, linked: ProgramSpec) -> ProgramSpec:
        insns = list(linked.instructions)
        index_of = {slot: i for i, slot in enumerate(isa.slot_indexes(insns))}
        for rel in linked.relocations:
            if rel.kind in ("call", "func"):
                continue        # resolved by linked()
            if rel.kind == "kfunc" and rel.symbol == "__bpf_trap":
                # LLVM's lowering of __builtin_trap() and of undefined behaviour it proved: the
                # kernel refuses the program; the engine runs it and faults if it gets there
                i = index_of[rel.insn_index]
                ins = insns[i]
                insns[i] = Instruction(ins.opcode, ins.dst, isa.CALL_KFUNC, 0, _TRAP_ID, 0)
                self._shown[rel.insn_index] = "call __bpf_trap"
                continue
            if rel.kind not in ("map", "data"):
                raise EngineError(f"program {linked.name!r} refers to {rel.kind} {rel.symbol!r}: the "
                                  "engine resolves maps, global data and subprograms only")
            i = index_of[rel.insn_index]
            ins = insns[i]
            map_index = self.instance.map_index(rel.symbol, linked.name)
            loads = (f"map {rel.symbol!r}" if rel.kind == "map" else
                     f"{rel.variable or rel.symbol} in map {rel.symbol!r}")
            self._shown[rel.insn_index] = f"r{ins.dst} = {loads} ll"
            if rel.kind == "map":
                insns[i] = Instruction(ins.opcode, ins.dst, isa.PSEUDO_MAP_IDX, 0, map_index, 0)
            else:   # the byte offset in the section, as load.py moves it to the second imm
                insns[i] = Instruction(ins.opcode, ins.dst, isa.PSEUDO_MAP_IDX_VALUE, 0, map_index,
                                       ins.imm + ins.imm_hi)
        return replace(linked, instructions=tuple(insns))

    def disassemble(self, slot: int) -> str:
        """The slot's instruction as `pybpf-uring disasm` prints it; a relocated instruction shows
        what it refers to (a map, a variable, __bpf_trap) rather than the engine's internal form."""
        from ...bpf.disasm import format_instruction
        by_slot = dict(zip(isa.slot_indexes(self.linked.instructions), self.linked.instructions))
        if slot not in by_slot and slot - 1 in by_slot:    # the second half of a lddw
            slot -= 1
        ins = by_slot.get(slot)
        if ins is None:
            return ""
        return self._shown.get(slot) or format_instruction(ins)

    # -- running --------------------------------------------------------------------------------
    def _ctx_region(self, size: int):
        region = self._ctx_regions.get(size)
        if region is None:
            fields = CTX_FIELDS if self.spec.kind == "iouring" else None
            region = self.instance.memory.map(bytearray(size), "ctx", fields=fields)
            self._ctx_regions[size] = region
        return region

    def run(self, ctx: bytes, helpers: Any = None) -> tuple[int, bytes]:
        """One run from slot 0 with r1 = the ctx; faults raise `ProgramFault` (see the module)."""
        fast = self._fast
        if fast is not None:
            out = fast(ctx)
            if out.__class__ is tuple:
                return out
            if out is not None:
                self._fast_fault()
        return self._run(ctx, helpers)

    def _fast_fault(self) -> None:
        """Raise what a FastRun run faulted with, as the full path would have raised it."""
        fault = self.vm.last_fault()
        self.executed = self.vm.executed
        if isinstance(fault, BpfFault):
            where = self._where(fault.insn_index, fault.message, fault.disassembly)
            raise ProgramFault(f"program {self.name!r}: {where}", _errno.EFAULT) from None
        raise fault

    def _run(self, ctx: bytes, helpers: Any) -> tuple[int, bytes]:
        if self.spec.kind == "iouring" and len(ctx) != CTX_SIZE:
            raise ValueError(f"an io_uring program's ctx is {CTX_SIZE} bytes, not {len(ctx)}")
        region = self._ctx_region(len(ctx))
        region.buf[:] = ctx
        self._ring_helpers = helpers
        self.runs += 1
        instance = self.instance
        instance.begin_run()
        try:
            r0 = self.vm.run(region.base)
        except BpfFault as exc:
            where = self._where(exc.insn_index, exc.message, exc.disassembly)
            raise ProgramFault(f"program {self.name!r}: {where}", _errno.EFAULT) from None
        finally:
            self.executed = self.vm.executed
            self._ring_helpers = None
            instance.end_run()
            if self._fast_run is not None:
                self._fast_run.sync(self.vm)
            elif self._fast_ok:
                from .native_ring import FastRun
                self._fast_run = FastRun(self.vm, region, instance.memory, self._counts)
                self._fast = self._fast_run.call
        return r0, bytes(region.buf)

    # -- native waits (engine.native_ring) ------------------------------------------------------
    def native(self):
        """A `NativeProgram` for a Ring's native waits, or None when this program must run in
        Python (the interpreter, or native_waits=False)."""
        if self.backend != "jit" or self.spec.kind != "iouring" or not self.instance.native_waits:
            return None
        from .native_ring import NativeProgram
        return NativeProgram(self, self.vm, self._ctx_region(CTX_SIZE))

    def bind_ring_helpers(self, helpers: Any) -> None:
        """The ring helpers the program's Python helper calls use outside `run` (a native wait)."""
        self._ring_helpers = helpers

    def native_fault(self) -> None:
        """Raise what the last native run ended with, as `run` would have raised it."""
        fault = self.vm.last_fault()
        if isinstance(fault, BpfFault):
            where = self._where(fault.insn_index, fault.message, fault.disassembly)
            raise ProgramFault(f"program {self.name!r}: {where}", _errno.EFAULT)
        raise fault

    def _where(self, slot: int | None, message: str, disassembly: str = "") -> str:
        if slot is None:
            return message
        text = f"instruction {slot}" + (f" ({disassembly})" if disassembly else "") + f": {message}"
        line = self.linked.line_at(slot)
        if line is not None and line.line > 0:
            source = line.text.strip() if line.text else ""
            text += f"\n  at {line.file or '<unknown>'}:{line.line}" + (f": {source}" if source else "")
        return text

    # -- helpers --------------------------------------------------------------------------------
    def _ring(self, helper: str):
        helpers = self._ring_helpers
        if helpers is None:
            raise MemoryFault(f"{registry.BY_NAME[helper].label} needs an io_uring request: this run has no "
                              "ring (only programs run by a Ring's BPF requests can call it)")
        return helpers

    def _helper_table(self) -> dict[int, Callable[..., int]]:
        """Helper id -> implementation, for every registry helper the engine implements: the
        functions below by the registry's `engine` name, integer arguments narrowed to its widths."""
        inst = self.instance
        maps = inst._by_handle
        map_at = inst.map_at
        readable = inst.memory.readable

        def read(mem, address: int, size: int) -> bytes:
            # keys and values are nearly always on the stack: the interpreter's own fast path
            buf = readable.get(address >> REGION_SHIFT)
            offset = (address & OFFSET_MASK) - BIAS
            if buf is not None and 0 <= offset and offset + size <= len(buf):
                return bytes(buf[offset:offset + size])
            return mem.read(address, size)

        def map_lookup_elem(mem, r1, r2, *_):
            m = maps.get(r1) or map_at(mem, r1, "r1")
            return m.lookup(read(mem, r2, m.key_size))

        def map_update_elem(mem, r1, r2, r3, r4, _):
            m = maps.get(r1) or map_at(mem, r1, "r1")
            return m.update(read(mem, r2, m.key_size), read(mem, r3, m.value_size), r4)

        def map_delete_elem(mem, r1, r2, *_):
            m = maps.get(r1) or map_at(mem, r1, "r1")
            return m.delete(read(mem, r2, m.key_size))

        def ktime_get_ns(*_):
            return time.monotonic_ns()

        def trace_printk(mem, r1, r2, r3, r4, r5):
            fmt = mem.read(r1, r2)
            if 0 not in fmt:
                return -_errno.EINVAL          # the kernel wants a NUL within the format's size
            line = format_trace(mem, fmt[:fmt.index(0)], (r3, r4, r5))
            if isinstance(line, int):
                return line                    # the kernel's -EINVAL or -ENOSPC
            inst.emit_trace(line.text.rstrip("\n"))
            return line.length

        def get_prandom_u32(*_):
            return random.getrandbits(32)

        def get_smp_processor_id(*_):
            return 0

        def get_current_pid_tgid(*_):
            return os.getpid() << 32 | threading.get_native_id()

        ringbufs = [m for m in inst._map_list if isinstance(m, RingbufMap)]

        def ringbuf_at(mem, address: int) -> RingbufMap:
            m = maps.get(address) or map_at(mem, address, "r1")
            if not isinstance(m, RingbufMap):
                raise MemoryFault(f"r1 = map {m.name!r} is not a ringbuf map (the verifier allows "
                                  "only a BPF_MAP_TYPE_RINGBUF here)", address)
            return m

        def ringbuf_output(mem, r1, data, size, flags, _):
            m = ringbuf_at(mem, r1)
            return m.output(mem.read(data, size), flags)

        def ringbuf_reserve(mem, r1, size, flags, *_):
            return ringbuf_at(mem, r1).reserve(size, flags)

        def ringbuf_commit(name: str, discard: bool):
            def commit(mem, sample, *_):
                if not any(m.commit(sample, discard) for m in ringbufs):
                    raise MemoryFault(f"r1 = {mem.describe(sample)} is not a record reserved by "
                                      f"bpf_ringbuf_reserve and not yet submitted or discarded "
                                      f"(the verifier allows {name} only on those)", sample)
                return 0
            commit.__name__ = name
            return commit

        ringbuf_submit = ringbuf_commit("ringbuf_submit", False)
        ringbuf_discard = ringbuf_commit("ringbuf_discard", True)

        def ringbuf_query(mem, r1, flags, *_):
            return ringbuf_at(mem, r1).query(flags)

        def queue_sqe(mem, ctx, sqe, length, *_):
            return self._ring("queue_sqe").queue_sqe(mem.read(sqe, length))

        def emit_cqe(mem, ctx, cq, user_data, res, flags):
            return self._ring("emit_cqe").emit_cqe(cq, user_data, res, flags)

        def reap_cqe(mem, ctx, cq, out, length, _):
            mem.view(out, length)               # the verifier checks out/len before the call
            ret, data = self._ring("reap_cqe").reap_cqe(cq, length)
            mem.write(out, data[:length])
            return ret

        def copy_to_user(mem, uptr, src, size, *_):
            return self._ring("copy_to_user").copy_to_user(uptr, mem.read(src, size))

        def copy_from_user(mem, dst, size, uptr, *_):
            mem.view(dst, size)
            ret, data = self._ring("copy_from_user").copy_from_user(uptr, size)
            mem.write(dst, data[:size])
            return ret

        impls = locals()                 # the functions above, by the registry's `engine` names
        return {h.id: _narrowed(impls[h.engine], h.masks)
                for h in registry.HELPERS.values() if h.engine is not None}


def _narrowed(fn: Callable[..., int], masks: tuple[int, ...]) -> Callable[..., int]:
    """`fn` given its arguments cut to the helper's widths (a u32 `cq` arrives as the low 32
    bits of r2, as the kernel's C prototype receives it); `fn` itself where all are 64-bit."""
    if all(m == M64 for m in masks):
        return fn
    m1, m2, m3, m4, m5 = masks

    @functools.wraps(fn)
    def call(mem, r1, r2, r3, r4, r5):
        return fn(mem, r1 & m1, r2 & m2, r3 & m3, r4 & m4, r5 & m5)
    return call


_NATIVE_HASHES = (HashMap, PercpuHashMap)     # lookups and in-place updates exactly a hash map's
_TRAP_ID = 1     # the engine's own number for __bpf_trap (it has no vmlinux BTF ids)


def _bpf_trap(*_):
    raise MemoryFault("__bpf_trap: the program reached a trap (LLVM emits one for __builtin_trap() "
                      "and where it proved the code undefined)")


def instantiate(obj: Any, *, budget: int = DEFAULT_BUDGET,
                on_trace: Callable[[str], None] | None = None,
                backend: str = "auto", native_waits: bool = True) -> EngineInstance:
    """Make `obj` (a `BpfObject`) live in the engine; what `Ring.register(obj)` calls.

    `budget` bounds the instructions of one run (a runaway loop faults instead of hanging the
    host); `on_trace(line)` is called for every line a program prints, as well as the line
    being kept in `instance.trace`.  `backend` runs the programs on "auto" (the default: the JIT
    where it can, else the interpreter; `runner.backend` and `runner.backend_reason` say which
    and why), the "jit" (llvmlite; EngineError if it cannot take a program), or the
    "interpreter" (no compile time: for a program run only a few times).  `native_waits=False`
    keeps a Ring's rounds in Python even for JIT-compiled programs (engine/native_ring.py: by
    default a wait with parked requests runs natively until the application has a CQE).
    EngineError when the object needs something the engine does not have.

        ring.register(obj, engine=lambda o: instantiate(o, backend="jit"))
    """
    return EngineInstance(obj, budget=budget, on_trace=on_trace, backend=backend,
                          native_waits=native_waits)
