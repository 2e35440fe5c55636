"""A JIT for the userspace engine: BPF bytecode lifted to LLVM IR (`jit_lift`) and compiled in
process by llvmlite's MCJIT, with the interpreter's semantics, faults and budget.

    jit = Jit(program, memory=memory, helpers=table, budget=1_000_000)
    r0 = jit.run(ctx.base)

`Jit` takes what `Interpreter` takes and runs the same way: the same `Memory` (so helpers get
the same addresses and `memory.read/write`), the same helper functions `fn(memory, r1..r5)`
(called through ctypes callbacks), `BpfFault` / `BudgetExceeded` naming the same instruction
with the same message, `executed` after a successful run.  It lifts the linked instruction
list, not Python source, so clang's objects run too.

Differences from the interpreter, all by design:
* no `trace=` (there is no per-instruction hook in native code): `select_engine` falls back;
* registers after a fault are not observable (the interpreter's are "unspecified" too);
* stores to the stack frame at offsets from r10 known at lift time (r10, or a register the block
  made r10 plus constants, at an offset inside the frame) are not held back when the
  budget runs out mid-block, so a frame may hold a few more bytes than the interpreter's after
  a BudgetExceeded (frames are scratch; every other effect stops at the same instruction);
* `executed` is set on success and on BudgetExceeded (= the budget), not after other faults;
* frame 0 is zeroed before a run only when the program mentions r10 (a program that never
  does cannot reach its frame -- unless it forges the frame's address from a constant);
* while a Jit holds a memory, the regions' bytearrays are exported to native code: writes of
  the same length work, resizing one raises BufferError until `close()`.

`unchecked=True` drops the bounds checks: every load and store goes straight to the region its
address names.  It is only for programs the caller asserts were proven safe (by the kernel's
verifier or an equivalent): a program that reaches memory it was not given then reads or
corrupts host memory instead of faulting.

`select_engine(...)` picks the JIT and falls back to the interpreter with a reason when the JIT
cannot run the request (llvmlite missing, a trace requested, LLVM refusing the IR).

`bind_natives` / `enter_native_wait` let the engine serve some helpers (jit_lift.NATIVE_HELPERS) with
native code instead of the Python `helpers` (engine/native_ring.py): map lookups, the RFC ring
helpers while a Ring's native wait runs the program.  A Jit nobody binds calls Python for all.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ...bpf import isa
from ...errors import RingError
from ...limits import MAX_CALL_DEPTH, STACK_BYTES
from .interpreter import (DEFAULT_BUDGET, MAX_BUDGET, BpfFault, BudgetExceeded, Helper,
                          Interpreter, InvalidProgram, LddwResolver, call_label, check_budget,
                          slot_disassembly, unknown_call, validate)
from .jit_lift import (ENTRY_FIELDS, STATE_FIELDS, STATUS_BUDGET, STATUS_DEPTH, STATUS_FELL_OFF, STATUS_HOST,
                       lift)
from .jit_loops import loop_ranges
from .memory import Memory, MemoryFault, Region
from .semantics import LDDW_SOURCES
from .suite_helpers import default_helpers

__all__ = ["Jit", "JitUnavailable", "select_engine", "EngineChoice", "jit_available",
           "execute", "compile_stats", "compile_module", "JIT_MAX_SLOTS"]

M64 = (1 << 64) - 1
_U64 = ctypes.c_uint64
_VP = ctypes.c_void_p
_SLOW_LOAD = ctypes.CFUNCTYPE(_U64, _VP, _U64, _U64, _U64)
_SLOW_STORE = ctypes.CFUNCTYPE(None, _VP, _U64, _U64, _U64, _U64)
_HELPER = ctypes.CFUNCTYPE(_U64, _VP, _U64, _U64, _U64, _U64, _U64, _U64)
_STATE = _U64 * len(STATE_FIELDS)
_WORDS = len(ENTRY_FIELDS)
_EMPTY = [0] * _WORDS
_S = {name: i for i, name in enumerate(STATE_FIELDS)}
_STATUS, _BUDGET = _S["status"], _S["budget"]


class JitUnavailable(RingError, RuntimeError):
    """The JIT cannot run this request (the reason is the message); the interpreter can."""


# ---------------------------------------------------------------------------------------------
# The compiler: an MCJIT engine per code-generation tier, modules added as programs arrive,
# compiled code cached by the IR's identity (the same program bound twice compiles once).
#
# Tiers.  Machine-code generation is most of a compile, and MCJIT's code generator has a fixed
# cost per module besides: ~0.25 ms at level 0 (FastISel, the fast register allocator) against
# ~1 ms at level 1, for a one-line function (measured 2026-12 on this machine).  Level 0 code is
# 2-3x slower, which matters where code runs many times, so a program that will (`runs_hot`: a
# loop, or helper calls) compiles at level 1 at once while its IR is small (TIER_LINES); every
# other program -- one that computes once over its input, and a large one -- starts at level 0
# and is recompiled at level 1 when it has executed HOT_INSTRUCTIONS in all its runs.
#
# Build time.  Lifting, parsing, sroa and code generation are linear in the program; the folding
# passes (instcombine, NewGVN) are not on one big function (a random 4000-instruction program
# with loops and calls: 3.3 s of passes, 4x the 2000-instruction one).  So level 0 runs only
# sroa and simplifycfg, a program tiers up only while its IR is at most TIER_UP_LINES, and
# `select_engine` leaves programs of more than JIT_MAX_SLOTS to the interpreter: build time and
# memory then stay linear and bounded (docs/runtime.md has the measured table).

TIER_LINES = 900             # IR lines up to which a program with a loop compiles at level 1 at once
HOT_INSTRUCTIONS = 2_000_000  # instructions a level-0 program runs before it is recompiled
TIER_UP_LINES = 30_000       # IR lines (~2500 instructions) beyond which level 0 is final
JIT_MAX_SLOTS = 8192         # the largest program `select_engine` compiles (~2 s, ~250 MB)


class _Compiler:
    def __init__(self) -> None:
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.llvm = llvm
        target = llvm.Target.from_default_triple()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        # codegen level 1 measured as fast as 2 and 3 on the benchmark loops, 15% less time
        # (once, 2026-11, when the level was chosen)
        self.tms = [target.create_target_machine(cpu=cpu, features=features, opt=level,
                                                 jit=True) for level in (0, 1)]
        self.tm = self.tms[1]
        self.engines = [llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
                        for tm in self.tms]
        self.cache: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()
        self.compiles = 0
        self.seconds = 0.0

    def compile(self, text: str, name: str, level: int = 1) -> int:
        return self.compile_module(text, (name,), level)[name]

    def compile_module(self, text: str, names: Sequence[str], level: int = 1,
                       inline: bool = False) -> dict[str, int]:
        """Addresses of `names` in the module `text`, compiled once per process (keyed by the
        first name); `inline` runs LLVM's always-inliner first (for hand-written modules)."""
        import time
        with self.lock:
            address = self.cache.get((names[0], level))
            if address is not None:
                return {name: self.cache[(name, level)] for name in names}
            start = time.perf_counter()
            llvm = self.llvm
            module = llvm.parse_assembly(text)
            module.verify()
            self.optimize(module, inline, level)
            engine = self.engines[level]
            engine.add_module(module)
            engine.finalize_object()
            for name in names:
                self.cache[(name, level)] = engine.get_function_address(name)
            self.compiles += 1
            self.seconds += time.perf_counter() - start
            return {name: self.cache[(name, level)] for name in names}

    def optimize(self, module, inline: bool = False, level: int = 1) -> None:
        """A short pipeline instead of -O2: registers out of allocas (sroa), folding and
        redundancy elimination.  -O2 took 2-3x as long for the same speed on the benchmark
        loops (measured once, 2026-11), and its loop passes turn loops whose inputs they can see
        into closed forms -- which makes benchmarks lie and real programs no faster.  Level 0
        keeps only the linear-time passes (see "Build time" above)."""
        llvm = self.llvm
        mpm = llvm.create_new_module_pass_manager()
        if inline:
            mpm.add_always_inliner_pass()
        passes = ((mpm.add_sroa_pass, mpm.add_simplify_cfg_pass) if level == 0 else
                  (mpm.add_sroa_pass, mpm.add_instruction_combine_pass,
                   mpm.add_simplify_cfg_pass, mpm.add_new_gvn_pass,
                   mpm.add_instruction_combine_pass, mpm.add_dead_code_elimination_pass,
                   mpm.add_simplify_cfg_pass))
        for add in passes:
            add()
        mpm.run(module, llvm.create_pass_builder(
            self.tm, llvm.create_pipeline_tuning_options(speed_level=1)))


_COMPILER: _Compiler | None = None
_FRESH = itertools.count()
# program key -> (its Lifted, IR lines, runs_hot): a program bound again (another instance of
# an object, the same conformance case) is neither lifted nor compiled again in this process
_LIFTED: dict[str, tuple] = {}
_COMPILER_ERROR: str | None = None


_INIT_LOCK = threading.Lock()


def _compiler() -> _Compiler:
    if _COMPILER is not None:
        return _COMPILER
    with _INIT_LOCK:              # one compiler per process, even when threads race to it
        return _make_compiler()


def _make_compiler() -> _Compiler:
    global _COMPILER, _COMPILER_ERROR
    if _COMPILER is None:
        if _COMPILER_ERROR is not None:
            raise JitUnavailable(_COMPILER_ERROR)
        try:
            _COMPILER = _Compiler()
        except ImportError as exc:
            _COMPILER_ERROR = f"llvmlite is not installed ({exc})"
            raise JitUnavailable(_COMPILER_ERROR) from None
    return _COMPILER


def runs_hot(slots: Sequence) -> bool:
    """Whether a program's code is likely to run many times soon: it has a loop (a jump back;
    a local call back is none, the call depth bounds it) or calls helpers (an engine program,
    bound to maps and rings and run per event -- by a ring's native wait, millions of times).
    A program with neither computes once over its input per run.  (Its loops are the lifter's:
    jit_loops.loop_ranges.)"""
    return (any(ins is not None and ins.is_call and not ins.is_pseudo_call for ins in slots)
            or bool(loop_ranges(slots)))


def compile_module(text: str, names: Sequence[str], inline: bool = False) -> dict[str, int]:
    """The addresses of `names` in the IR module `text`, compiled once per process by the JIT's
    compiler (engine.native_ring's hand-written module: `inline` runs the always-inliner)."""
    return _compiler().compile_module(text, names, inline=inline)


def jit_available() -> str | None:
    """None when the JIT can compile here, else why not."""
    try:
        _compiler()
    except JitUnavailable as exc:
        return str(exc)
    return None


def compile_stats() -> tuple[int, float]:
    """(programs compiled, seconds spent compiling them) in this process."""
    return (0, 0.0) if _COMPILER is None else (_COMPILER.compiles, _COMPILER.seconds)


# ---------------------------------------------------------------------------------------------

class Jit:
    """A validated program compiled to native code, bound to a memory; `run` executes it.

    Arguments are the Interpreter's (`memory`, `helpers`, `kfuncs`, `resolve_lddw`, `budget`,
    `disassemble`), plus `unchecked`: see the module docstring -- only for programs proven
    safe -- and `cache`: False compiles anew even when the same program was compiled before
    (what a compile-time benchmark needs; the process keeps every compiled module and the
    lifted IR of every cached one).  `tier` is the code-generation level in use (see
    TIER_LINES): 1 at once for small programs that `runs_hot`, 0 first for the others until
    they have run HOT_INSTRUCTIONS.  Construction validates
    (InvalidProgram, as the interpreter), lifts and compiles (`compile_seconds`;
    JitUnavailable if LLVM refuses).  Not re-entrant, like the interpreter.
    """

    def __init__(self, program: bytes | Sequence, *, memory: Memory | None = None,
                 helpers: Mapping[int, Helper] | None = None,
                 kfuncs: Mapping[int, Helper] | None = None,
                 resolve_lddw: LddwResolver | None = None,
                 budget: int = DEFAULT_BUDGET, disassemble: Callable[[int], str] | None = None,
                 unchecked: bool = False, cache: bool = True) -> None:
        import time
        self.budget = check_budget(budget)
        self.slots = validate(program)
        self.memory = memory if memory is not None else Memory()
        self.helpers = dict(helpers or {})
        self.kfuncs = dict(kfuncs or {})
        self.unchecked = unchecked
        self.executed = 0
        self._disassemble = disassemble or functools.partial(slot_disassembly, self.slots)
        self._calls = self._bind_calls()
        lddw_values = self._lddw_values(resolve_lddw)
        start = time.perf_counter()
        key = hashlib.sha1(repr((isa.encode(i for i in self.slots if i is not None),
                                 sorted(lddw_values.items()), unchecked)).encode()).hexdigest()
        known = _LIFTED.get(key) if cache else None
        if known is None:
            name = f"bpf_{key[:20]}" if cache else f"bpf_{key[:12]}{next(_FRESH):08d}"
            lifted = lift(self.slots, lddw_values, unchecked=unchecked, name=name)
            known = (lifted, lifted.text.count("\n"), runs_hot(self.slots))
            if cache:
                _LIFTED[key] = known
        self.lifted, lines, hot = known
        self.tier = 1 if hot and lines <= TIER_LINES else 0
        self._can_tier_up = lines <= TIER_UP_LINES
        self._hot = 0                 # instructions run at tier 0
        self._entry = self._compile(self.tier)
        self.compile_seconds = time.perf_counter() - start
        self.stack: list[Region] = [self.memory.map(bytearray(STACK_BYTES), f"stack frame {d}")
                                    for d in range(MAX_CALL_DEPTH)]
        self._tops = (_U64 * MAX_CALL_DEPTH)(*(r.base + STACK_BYTES for r in self.stack))
        self._stack_ptrs = (_VP * MAX_CALL_DEPTH)()
        self._state = _STATE()
        self._callbacks = (_SLOW_LOAD(self._slow_load), _SLOW_STORE(self._slow_store),
                           _HELPER(self._helper))
        for name, fn in zip(("slow_load", "slow_store", "helper"), self._callbacks):
            self._state[_S[name]] = ctypes.cast(fn, _VP).value
        self._state[_S["stack_ptrs"]] = ctypes.addressof(self._stack_ptrs)
        self._state[_S["stack_tops"]] = ctypes.addressof(self._tops)
        self._natives = (_VP * 256)()        # no native helpers until the engine binds its own
        self._state[_S["natives"]] = ctypes.addressof(self._natives)
        self._state_address = ctypes.addressof(self._state)
        self._entries: dict[int, tuple] = {}     # region id -> _entry_for(...)
        self._tables: list = []
        self._table_key = None
        self._pending: BaseException | None = None
        self._in_run = False
        # Frame 0 is zeroed per run (as the interpreter does) only if the program can reach it:
        # without r10 no instruction and no helper can get a stack address.
        self._uses_frame = any(ins is not None and 10 in (ins.dst, ins.src) for ins in self.slots)

    def bind_natives(self, natives: int, maps: int) -> None:
        """Point the state block at native helpers (a 256-entry table by helper id) and the
        array maps they serve (engine.native_ring)."""
        self._state[_S["natives"]], self._state[_S["maps"]] = natives, maps

    # -- native waits (engine.native_ring) -------------------------------------------------------
    @property
    def state_address(self) -> int:
        """The host address of the state block native code calls the program with."""
        return self._state_address

    def native_call(self) -> tuple[int, int, int, int]:
        """What native code needs to run the program as `run` does: (entry address, state block
        address, frame 0's host address to zero before a run -- 0 when the program cannot reach
        its frame --, budget), with the region table brought up to date first."""
        self.refresh_table()
        frame = self._stack_ptrs[0] if self._uses_frame else 0
        return (ctypes.cast(self._entry, _VP).value, self._state_address, frame or 0,
                min(self.budget, MAX_BUDGET))

    def enter_native_wait(self, ring: int) -> None:
        """A native wait on the ring block at `ring` runs this program from now on: its ring
        helpers go native, and region tables native code may hold are kept."""
        self._state[_S["ring"]] = ring
        self._in_run = True

    def leave_native_wait(self, executed: int | None, spent: int) -> None:
        """The wait is over: `executed` by its last run (None: it ran none), `spent` by all its
        runs (which tiers a level-0 program up, as `run` does)."""
        if executed is not None:
            self.executed = executed
            self._count(spent)
        self._state[_S["ring"]] = 0
        self._in_run = False

    def refresh_table(self) -> None:
        """Rebuild the region table if regions were mapped or unmapped since it was built."""
        if self._memory_key() != self._table_key:
            self._build_table()

    def call_helper(self, pc: int, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        """The Python helper of the call at `pc`, as the lifted program's callback runs it."""
        return self._helper(None, pc, r1, r2, r3, r4, r5)

    def fail(self, exc: BaseException) -> None:
        """End the running native code's run with `exc` (raised by `last_fault`/`run`)."""
        self._fail(exc)

    def last_fault(self) -> BaseException:
        """What the last native run (one the caller ran through `native_call`) ended with."""
        return self._exit_fault(self._state[_STATUS], self.budget)

    def _compile(self, level: int):
        try:
            address = _compiler().compile(self.lifted.text, self.lifted.entry, level)
        except RuntimeError as exc:
            if isinstance(exc, JitUnavailable):
                raise
            raise JitUnavailable(f"LLVM refused the lifted program: {exc}") from None
        return ctypes.CFUNCTYPE(_U64, _VP, _U64, _U64, _U64, _U64, _U64)(address)

    def tier_up(self) -> None:
        """Recompile a level-0 program at level 1 now, as `run` does once it has run
        HOT_INSTRUCTIONS (bench/engine.py times this); at level 1 already, nothing to do."""
        if self.tier == 0:
            self._entry, self.tier = self._compile(1), 1

    def _count(self, executed: int) -> None:
        """Tier up a level-0 program once it has proven hot (see TIER_LINES), unless it is too
        large for level 1's passes to stay linear (TIER_UP_LINES)."""
        if self.tier == 0 and self._can_tier_up:
            self._hot += executed
            if self._hot >= HOT_INSTRUCTIONS:
                self.tier_up()

    # -- binding ----------------------------------------------------------------------------------
    def _bind_calls(self) -> dict[int, Callable[..., int]]:
        """slot -> invoke(r1..r5): the helper or kfunc, unknown ones refused as the interpreter
        refuses them, MemoryFaults worded as its faults."""
        calls = {}
        for pc, ins in enumerate(self.slots):
            if ins is None or not ins.is_call or ins.is_pseudo_call:
                continue
            table, kind = ((self.helpers, "helper") if ins.src == isa.CALL_HELPER
                           else (self.kfuncs, "kfunc"))
            fn = table.get(ins.imm)
            if fn is None:
                raise InvalidProgram(pc, unknown_call(kind, ins.imm, table))
            calls[pc] = (fn, call_label(kind, ins.imm))
        return calls

    def _lddw_values(self, resolve: LddwResolver | None) -> dict[int, int]:
        values = {}
        for pc, ins in enumerate(self.slots):
            if ins is None or not ins.is_wide:
                continue
            if ins.src == 0:
                values[pc] = ins.imm64
            elif resolve is None:
                raise InvalidProgram(pc, f"lddw {LDDW_SOURCES[ins.src]} (src {ins.src}) needs a "
                                     "resolver; none was given")
            else:
                values[pc] = resolve(ins.src, ins.imm, ins.imm_hi) & M64
        return values

    # -- the region table -----------------------------------------------------------------------
    def _memory_key(self) -> tuple:
        memory = self.memory
        return (memory.next_id, len(memory.regions),
                len(memory.readable), len(memory.writable))

    def _build_table(self) -> None:
        """A new table of every mapped region: {native pointer, bytes the checked fast path may
        read, bytes it may write}.  Field-exact and read-only regions get 0 where the fast path
        must not serve them, so those accesses go to `Memory` exactly as the interpreter's do.

        Incremental: the previous table is copied and only regions mapped or unmapped since are
        patched, so a hash map that maps a region per new key costs a copy, not a rebuild.  A
        table is never changed once native code may hold it (its loads are invariant), and the
        buffer exports behind it (a bytearray cannot be resized while exported; same-length
        slice assignment still works) are kept across runs.  `close()` releases them."""
        memory = self.memory
        known, live = self._entries, memory.regions
        count = max(live, default=0) + 1
        table = ((_U64 * _WORDS) * count)()
        old = self._tables[-1] if self._tables else None
        if old is not None:
            ctypes.memmove(table, old, min(ctypes.sizeof(old), ctypes.sizeof(table)))
        for rid in known.keys() - live.keys():
            del known[rid]
            if rid < count:
                table[rid][:] = _EMPTY
        for rid in live.keys() - known.keys():
            known[rid] = self._entry_for(rid, live[rid])
            table[rid][:] = known[rid][1]
        if not self._in_run:
            self._tables.clear()                # nothing native holds the old ones now
        self._tables.append(table)
        self._state[_S["table"]] = ctypes.addressof(table)
        self._state[_S["table_len"]] = count
        for depth, region in enumerate(self.stack):
            self._stack_ptrs[depth] = table[region.base >> 32][0]
        self._table_key = self._memory_key()

    def _entry_for(self, rid: int, region: Region) -> tuple:
        """(the pinned native buffer, the table words: see jit_lift.ENTRY_FIELDS)."""
        buf, memory = region.buf, self.memory
        size = len(buf)
        if size == 0:
            return (None, _EMPTY)
        shared = True
        try:
            native = (ctypes.c_char * size).from_buffer(buf)
        except TypeError:                        # immutable: reads only, from a copy
            native, shared = (ctypes.c_char * size).from_buffer_copy(buf), False
        readable = memory.readable.get(rid) is buf
        writable = shared and memory.writable.get(rid) is buf
        masks = [0] * 8
        if region.fields is not None and size <= 64:
            for offset, width in region.fields:
                if width in (1, 2, 4, 8) and offset + width <= size:
                    slot = {1: 0, 2: 1, 4: 2, 8: 3}[width]
                    masks[slot] |= 1 << offset
                    if region.writable and shared:
                        masks[4 + slot] |= 1 << offset
        return (native, [ctypes.addressof(native), size if readable else 0,
                         size if writable else 0, *masks])

    def _release(self) -> None:
        """Drop the tables and the buffer exports behind them."""
        self._tables.clear()
        self._entries.clear()
        self._table_key = None

    # -- callbacks (run on the host, inside native code) ----------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self._pending is None:
            self._pending = exc
        self._state[_S["status"]] = STATUS_HOST

    def _slow_load(self, state, pc: int, address: int, size: int) -> int:
        try:
            return self.memory.load(address, size)
        except MemoryFault as exc:
            self._fail(self.fault(pc, exc.message))
        except BaseException as exc:      # noqa: BLE001 -- re-raised by run()
            self._fail(exc)
        return 0

    def _slow_store(self, state, pc: int, address: int, size: int, value: int) -> None:
        try:
            self.memory.store(address, size, value)
        except MemoryFault as exc:
            self._fail(self.fault(pc, exc.message))
        except BaseException as exc:      # noqa: BLE001
            self._fail(exc)

    def _helper(self, state, pc: int, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        fn, what = self._calls[pc]
        try:
            r0 = fn(self.memory, r1, r2, r3, r4, r5) & M64
        except MemoryFault as exc:
            self._fail(self.fault(pc, f"{what}: {exc.message}"))
            return 0
        except BaseException as exc:      # noqa: BLE001
            self._fail(exc)
            return 0
        self.refresh_table()                           # the helper may have mapped regions
        return r0

    # -- running --------------------------------------------------------------------------------
    def run(self, *args: int, budget: int | None = None) -> int:
        """Run from slot 0 with r1..r5 = args; returns r0 (unsigned 64-bit), as Interpreter.run."""
        if len(args) > 5:
            raise TypeError(f"a BPF program takes at most 5 arguments (r1-r5), got {len(args)}")
        values = [a & M64 for a in args] + [0] * (5 - len(args))
        limit = self.budget if budget is None else check_budget(budget)
        state = self._state
        state[_STATUS] = 0
        start = min(limit, MAX_BUDGET)
        state[_BUDGET] = start
        self._pending = None
        if self._memory_key() != self._table_key:
            self._build_table()
        if self._uses_frame:
            ctypes.memset(self._stack_ptrs[0], 0, STACK_BYTES)
        self._in_run = True
        try:
            r0 = self._entry(self._state_address, *values)
        finally:
            self._in_run = False
        status = state[_STATUS]
        if status == 0:
            left = state[_BUDGET]
            self.executed = start - (left - (1 << 64) if left >> 63 else left)
            if self.tier == 0:
                self._count(self.executed)
            return r0
        fault = self._exit_fault(status, limit)
        self._count(self.executed if isinstance(fault, BudgetExceeded) else 0)
        raise fault

    def _exit_fault(self, status: int, limit: int) -> BaseException:
        state = self._state
        slot, aux = state[_S["fault_slot"]], state[_S["fault_aux"]]
        if status == STATUS_HOST:
            pending, self._pending = self._pending, None
            return pending
        if status == STATUS_BUDGET:
            pc = self.lifted.positions[slot][aux]
            self.executed = limit
            return BudgetExceeded(pc, f"instruction budget of {limit} exhausted before exit "
                                  "(an unbounded loop?)", self._disassemble(pc))
        if status == STATUS_DEPTH:
            return self.fault(slot, f"stack overflow: a call from frame {aux - 1} needs "
                              f"{aux + 1} frames; the limit is {MAX_CALL_DEPTH}")
        if status == STATUS_FELL_OFF:
            return self.fault(slot, "execution ran past the last instruction without exit")
        return RuntimeError(f"JIT returned unknown status {status}")

    def fault(self, pc: int, message: str) -> BpfFault:
        return BpfFault(pc, message, self._disassemble(pc))

    def dump(self, stage: str = "ir") -> str:
        """The program at a stage of the JIT: "ir" (as lifted), "ir-opt" (after the pipeline)
        or "asm" (the host code at the current tier) -- for reading what a program became."""
        if stage == "ir":
            return self.lifted.text
        if stage not in ("ir-opt", "asm"):
            raise ValueError(f"stage must be ir, ir-opt or asm, not {stage!r}")
        compiler = _compiler()
        module = compiler.llvm.parse_assembly(self.lifted.text)
        compiler.optimize(module, level=self.tier)
        return str(module) if stage == "ir-opt" else compiler.tms[self.tier].emit_assembly(module)

    def close(self) -> None:
        """Release the region buffers and unmap the stack frames from the memory (the
        compiled code stays cached for the next Jit of the same program)."""
        self._release()
        for region in self.stack:
            self.memory.unmap(region)
        self.stack = []


# ---------------------------------------------------------------------------------------------
# Choosing an engine

@dataclass(frozen=True)
class EngineChoice:
    """What `select_engine` built: `engine` (a Jit or an Interpreter), its `kind`, and why the
    interpreter was chosen when it was (`reason` is None for the JIT)."""

    engine: Jit | Interpreter
    kind: str
    reason: str | None = None


def select_engine(program: bytes | Sequence, *, prefer: str = "jit", trace: bool = False,
                  unchecked: bool = False, max_slots: int | None = JIT_MAX_SLOTS,
                  **options) -> EngineChoice:
    """The JIT when it can run the program, else the interpreter with the reason.

    `options` are the engines' shared keyword arguments (memory, helpers, kfuncs,
    resolve_lddw, budget, disassemble).  InvalidProgram propagates: both engines refuse the
    same programs.  `trace=True` (single-stepping) and `prefer="interpreter"` pick the
    interpreter; so do a missing llvmlite, IR that LLVM refuses and a program of more than
    `max_slots` instructions (the JIT's build budget, JIT_MAX_SLOTS; None: no limit).
    """
    reason = None
    slots = len(program) // 8 if isinstance(program, (bytes, bytearray)) else isa.slot_count(program)
    if prefer == "interpreter":
        reason = "the interpreter was asked for"
    elif trace:
        reason = "tracing single-steps instructions; only the interpreter can"
    elif max_slots is not None and slots > max_slots:
        reason = (f"the program has {slots} instructions, more than the {max_slots} the JIT "
                  "compiles (its build time and memory grow with the program; the interpreter "
                  "starts at once)")
    else:
        reason = jit_available()
    if reason is None:
        try:
            return EngineChoice(Jit(program, unchecked=unchecked, **options), "jit")
        except JitUnavailable as exc:
            reason = str(exc)
    return EngineChoice(Interpreter(program, **options), "interpreter", reason)


# ---------------------------------------------------------------------------------------------
# The conformance suite's `execute` on the JIT (conformance.run_case/run_suite/plugin_main take it)

def execute(program: bytes, memory: bytes, *, budget: int | None = None,
            unchecked: bool = False) -> int:
    """Run `program` as the suite does (r1 = a copy of `memory`, r2 = its length) on the JIT."""
    mem = Memory()
    address = mem.map(bytearray(memory), "mem").base if memory else 0
    jit = Jit(program, memory=mem, helpers=default_helpers(), budget=budget or DEFAULT_BUDGET,
              unchecked=unchecked)
    return jit.run(address, len(memory))


