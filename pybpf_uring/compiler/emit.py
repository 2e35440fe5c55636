"""Emit: LLVM IR → optimised IR → BPF ELF object, in-process with llvmlite's LLVM.

The -O2 pipeline is LLVM's own (new pass manager); the BPF backend then writes the sections,
`.BTF` and `.BTF.ext` from the debug metadata.  LLVM is initialised once per process.
"""
from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

import llvmlite.binding as llvm

from ..diagnostics import CompileError, Diagnostic
from ..limits import (JUMP_RANGE, MAX_COPY_STORES, STACK_BYTES, STACK_FRAME_ALIGN, copy_stores,
                      frame_in_chain)
from .lower import CPUS, LoweredModule


@dataclass(frozen=True)
class Emitted:
    elf: bytes
    ir_opt: str
    # The object as read back, when measuring its stack already read it (a module whose
    # frames could add up past the limit: any of more than a few functions), so the pipeline
    # does not read it a second time.
    object: object = None


@lru_cache(maxsize=None)
def target_machine(cpu: str):
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    # Past 512 bytes of stack the BPF backend reports through LLVM's fatal error handler, which
    # ends the process (a notebook's kernel with it).  Let it emit; the stack is measured on
    # the emitted code instead.
    llvm.set_option("pybpf_uring", "-bpf-stack-size=65536")
    return llvm.Target.from_triple("bpfel").create_target_machine(cpu=cpu, opt=2)


def emit(lowered: LoweredModule) -> Emitted:
    if lowered.cpu not in CPUS:
        raise CompileError([Diagnostic(None, f"unknown cpu {lowered.cpu!r}", "use v1, v2, v3 or v4")])
    with LLVM:
        modules = []
        try:
            elf, ir_opt = _emit(lowered, modules)
        finally:
            # freeing a module touches the one global context: here, under the lock, not
            # wherever the last reference happens to go (another thread's compile may be in LLVM)
            for mod in modules:
                mod.close()
    obj = None
    if sum(frame + SPILL_MARGIN for frame in lowered.frames.values()) > STACK_BYTES or COPY.search(ir_opt):
        obj = check_stack(elf, lowered.path)
    return Emitted(elf, ir_opt, obj)


# IndVarSimplify replaces a loop's exit value by its closed form: a constant-trip sum of squares
# becomes one constant, as clang makes it.  For some loops (a quadratic sum from a runtime start)
# the closed form multiplies wider than 64 bits (an i65 product, halved), which the BPF backend
# can only lower to a call of __multi3 -- and it reports that call through LLVM's fatal error
# handler, ending the process.  Our lowering has no integer wider than 64 bits, so one in a
# function body is such a closed form: the module is then optimised again with the loops' exit
# values left as they are.
# Only instructions are searched (the lines indented two spaces, in function bodies): the
# source text travels in the debug metadata and format strings in globals, and a comment
# "an i65 product" must not change the code.  (A type stands between spaces, commas and
# brackets: not a %name or the datalayout's "i128:128".)
def _emit(lowered: LoweredModule, modules: list) -> tuple[bytes, str]:
    """The object and its optimised IR (under the LLVM lock); each module made goes in `modules`."""
    tm = target_machine(lowered.cpu)
    mod = optimise(lowered.ir, tm, replace_exit_values=True, modules=modules)
    ir_opt = str(mod)
    wide, large = WIDE.search(ir_opt), large_copies(ir_opt)
    if wide or large:
        mod = optimise(without_builtins(lowered.ir) if large else lowered.ir, tm,
                       replace_exit_values=not wide, modules=modules)
        ir_opt = str(mod)
        refuse_large_copies(ir_opt, lowered)
    if lowered.cpu != LONG_JUMP_CPU and code_estimate(ir_opt) > JUMP_RANGE:
        check_branches(tm.emit_assembly(mod), lowered)
    try:
        return tm.emit_object(mod), ir_opt
    except RuntimeError as exc:  # the BPF backend's own refusals
        raise CompileError([Diagnostic(None, "the BPF backend refused the program: " + str(exc).strip())]) from None


WIDE = re.compile(r"^  .*?(?<=[\s(<\[{,])i(?:6[5-9]|[7-9][0-9]|[1-9][0-9]{2,})(?=[\s,)>\]}*])", re.M)
# The checker refuses a struct or array assigned whole past what the backend expands
# (limits.copy_stores), but LLVM's -O2 makes memcpy and memset calls of its own: a loop copying
# or zeroing an array element by element (LoopIdiomRecognize; of a variable length when the
# loop stops early), and neighbouring copies and zeroings merged into one (MemCpyOpt: two
# 600-byte fields zeroed one after the other).  Past the limit the backend can only call
# memcpy, which BPF has not, and it says so through LLVM's fatal error handler, ending the
# process.  Such a module is optimised again with its functions marked "no-builtins", as
# clang's -fno-builtin marks them: the loops then stay loops.  What is still too large (copies
# MemCpyOpt merged all the same) is an error at its function and line.
LARGE_COPY = re.compile(r"^  .*call void @llvm\.mem(?:cpy|set|move)\.[\w.]+\(.*, i64 ([^,\s]+), i1 \w+\)"
                        r"(?:.*!dbg !(\d+))?", re.M)


def large_copies(ir_opt: str) -> list[re.Match]:
    """The memcpy, memset and memmove calls the backend cannot expand: of a variable length, or
    of more than MAX_COPY_STORES stores."""
    return [m for m in LARGE_COPY.finditer(ir_opt)
            if not m[1].isdigit() or copy_stores(int(m[1])) > MAX_COPY_STORES]


def without_builtins(ir_text: str) -> str:
    """The module's functions marked "no-builtins" (each is `define ... nounwind`, lower.py)."""
    return re.sub(r"^(define .*?\) nounwind)", r'\1 "no-builtins"', ir_text, flags=re.M)


def refuse_large_copies(ir_opt: str, lowered: LoweredModule) -> None:
    """A large copy left after optimising without builtins, as an error at its function rather
    than the end of the process: LLVM merged copies the program wrote one after the other."""
    errors = []
    for m in large_copies(ir_opt):
        function = re.findall(r'^define [^@]*@"?([\w.]+)', ir_opt[:m.start()], re.M)[-1]
        line = re.search(rf"^!{m[2]} = !DILocation\(line: (\d+)", ir_opt, re.M) if m[2] else None
        errors.append(Diagnostic(
            lowered.spans.get(function), f"{function}: LLVM merged the copies or zeroings ending at line "
            f"{line[1] if line else '?'} into one of {m[1]} bytes, more than the BPF backend copies in one go "
            f"(at most {MAX_COPY_STORES} words of up to 8 bytes)",
            "copy or zero one of them an element at a time in a loop"))
    if errors:
        raise CompileError(errors)


# LLVM lets one thread at a time into a context, and llvmlite parses every module into its one
# global context, releasing the GIL in each call; -replexitval is a process-wide option the pass
# reads as it runs.  A compile holds this lock from parsing its IR to writing the object, so
# threads compiling at once neither race inside LLVM nor run with each other's setting.
LLVM = threading.Lock()


def optimise(ir_text: str, tm, replace_exit_values: bool, modules: list | None = None):
    """The module parsed and run through LLVM's -O2 pipeline (under the LLVM lock); put in
    `modules` as soon as it exists, so the caller closes it under the lock whatever happens."""
    mod = llvm.parse_assembly(ir_text)
    if modules is not None:
        modules.append(mod)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=2)
    pb = llvm.create_pass_builder(tm, pto)
    llvm.set_option("pybpf_uring", "-replexitval=" + ("cheap" if replace_exit_values else "never"))
    pb.getModulePassManager().run(mod, pb)
    return mod


# A jump's offset is 16 bits of instructions before cpu v4.  Writing the object, the BPF
# backend meets a longer one as "Branch target out of insn range" through LLVM's fatal error
# handler, which ends the process; its assembly printer resolves no offsets, so a module that
# might be that long is printed as assembly first and measured.  At v4 the backend turns a long
# jump into gotol (a 32-bit offset) itself.
LONG_JUMP_CPU = "v4"
# Machine instructions one line of optimised IR can become, at most: a memcpy or memset of a
# constant size (the backend expands up to 128 stores, each with its load) or anything else.
PER_MEMORY_INTRINSIC, PER_IR_LINE = 300, 8


def code_estimate(ir_opt: str) -> int:
    """An upper bound on the module's instructions, from its optimised IR's lines."""
    lines = ir_opt.count("\n  ")
    memory = ir_opt.count("@llvm.memcpy.") + ir_opt.count("@llvm.memset.") + ir_opt.count("@llvm.memmove.")
    return lines * PER_IR_LINE + memory * PER_MEMORY_INTRINSIC


def check_branches(asm: str, lowered: LoweredModule) -> None:
    """Each function's jumps, measured in the assembly: an error naming the function and the
    source line of its first jump past JUMP_RANGE instructions."""
    errors, function, pos, labels, jumps, line = [], "", 0, {}, [], 0

    def finish():
        for at, target, src_line in jumps:
            distance = labels.get(target, at + 1) - (at + 1)
            if not -JUMP_RANGE - 1 <= distance <= JUMP_RANGE:
                errors.append(Diagnostic(
                    lowered.spans.get(function), f"{function} is too long for cpu {lowered.cpu}: the "
                    f"jump at line {src_line} spans {abs(distance)} instructions, and a jump "
                    f"reaches at most {JUMP_RANGE} before cpu v4",
                    "split the function into subprograms (functions it calls), or compile with "
                    "--cpu v4 (compile_file(path, cpu=\"v4\")), whose long jumps reach any distance"))
                return

    for text in asm.splitlines():
        if text.startswith("\t.type\t") and text.endswith(",@function"):
            finish()
            function, pos, labels, jumps = text[7:-10].strip(), 0, {}, []
        elif text.startswith("\t.loc\t"):
            line = int(text.split()[2])
        elif text.endswith(":") and not text.startswith("\t"):
            labels[text[:-1]] = pos
        elif text.startswith("\t") and not text.startswith("\t."):
            words = text.split()
            if "goto" in words:
                jumps.append((pos, words[-1], line))
            pos += 2 if words[-1] == "ll" else 1
    finish()
    if errors:
        raise CompileError(errors)


SPILL_MARGIN = 64  # below 512 minus this, slots plus LLVM's spills cannot reach the limit
# ... but for a copy: the backend expands a memcpy as runs of loads, then the stores, and a run
# longer than the registers spills each value (a 200-byte copy of bytes: over 1000 bytes of
# stack, where the slots were 400), so a module with one is measured.
COPY = re.compile(r"^  .*call void @llvm\.mem(?:cpy|move)\.", re.M)


def check_stack(elf: bytes, path: str):
    """Measure each function's frame on the emitted code (the deepest r10-relative slot), and
    each chain of calls from a program as the verifier adds them up: each frame rounded up to
    STACK_FRAME_ALIGN, at most STACK_BYTES together ("combined stack size of 2 calls is 544").
    Returns the object read back (a BpfObject) when it fits."""
    from ..bpf.objfile import BpfObject
    obj = BpfObject.read(elf)
    functions = {p.name: p for p in obj.programs}
    text = {}
    for p in obj.programs:
        functions.update((s.name, s) for s in p.subprograms)
        text.update((s.offset, s.name) for s in p.subprograms)
    depths = {name: frame_depth(fn.instructions) for name, fn in functions.items()}
    errors = []
    for name, depth in depths.items():
        if depth > STACK_BYTES:
            errors.append(Diagnostic(None, f"{path}: {name} uses {depth} bytes of stack after "
                                     f"optimisation; BPF allows {STACK_BYTES}", STACK_HINT))
    if errors:
        raise CompileError(errors)
    starts = sorted(text)

    def callees(name: str) -> list[str]:
        found = []
        for rel in functions[name].relocations:
            at = bisect.bisect_right(starts, rel.target) - 1 if rel.kind == "call" else -1
            if at >= 0 and text[starts[at]] not in found:
                found.append(text[starts[at]])
        return found

    def chain(path_: tuple[str, ...], total: int) -> tuple[tuple[str, ...], int] | None:
        if total > STACK_BYTES:
            return path_, total
        for callee in callees(path_[-1]):
            if callee not in path_:
                found = chain(path_ + (callee,), total + frame_in_chain(depths[callee]))
                if found is not None:
                    return found
        return None

    for p in obj.programs:
        found = chain((p.name,), frame_in_chain(depths[p.name]))
        if found is not None:
            names, total = found
            sizes = ", ".join(f"{n} {frame_in_chain(depths[n])}" for n in names)
            errors.append(Diagnostic(None, f"{path}: the calls {' -> '.join(names)} use {total} bytes of "
                                     f"stack together after optimisation; the verifier allows {STACK_BYTES}",
                                     f"bytes per frame, each rounded up to {STACK_FRAME_ALIGN} as the verifier "
                                     f"does: {sizes}; {STACK_HINT}"))
    if errors:
        raise CompileError(errors)
    return obj


STACK_HINT = "keep large structs in a map value (m.lookup(k)) instead of locals"


def frame_depth(insns) -> int:
    """Bytes below r10 that the code reaches: loads and stores at r10 - off, and addresses
    formed as `rX = r10; rX += -off` (how LLVM passes a stack slot to a helper)."""
    from ..bpf import isa
    depth, copies = 0, set()
    for ins in insns:
        cls = ins.cls
        if cls in (isa.ST, isa.STX) and ins.dst == 10 or cls == isa.LDX and ins.src == 10:
            depth = max(depth, -ins.off)
        elif cls == isa.ALU64 and ins.op == isa.MOV and ins.opcode & isa.SOURCE_MASK and ins.src == 10:
            copies.add(ins.dst)
        elif cls == isa.ALU64 and ins.op == isa.ADD and ins.dst in copies and not ins.opcode & isa.SOURCE_MASK:
            depth = max(depth, -ins.imm)
            copies.discard(ins.dst)
        elif cls in (isa.ALU, isa.ALU64, isa.LDX, isa.LD):
            copies.discard(ins.dst)
    return depth
