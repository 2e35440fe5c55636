"""Emit: LLVM IR → optimised IR → BPF ELF object, in-process with llvmlite's LLVM.

The -O2 pipeline is LLVM's own (new pass manager); the BPF backend then writes the sections,
`.BTF` and `.BTF.ext` from the debug metadata.  LLVM is initialised once per process.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import llvmlite.binding as llvm

from .diagnostics import CompileError, Diagnostic
from .lower import CPUS, LoweredModule


@dataclass(frozen=True)
class Emitted:
    elf: bytes
    ir_opt: str


@lru_cache(maxsize=None)
def target_machine(cpu: str):
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    # IndVarSimplify would replace a loop's exit value by a closed form needing a 128-bit
    # multiply (__multi3), which BPF cannot call: keep the loop instead.
    llvm.set_option("pybpf_uring", "-replexitval=never")
    # Past 512 bytes of stack the BPF backend reports through LLVM's fatal error handler, which
    # ends the process (a notebook's kernel with it).  Let it emit; the stack is measured on
    # the emitted code instead.
    llvm.set_option("pybpf_uring", "-bpf-stack-size=65536")
    return llvm.Target.from_triple("bpfel").create_target_machine(cpu=cpu, opt=2)


def emit(lowered: LoweredModule) -> Emitted:
    if lowered.cpu not in CPUS:
        raise CompileError([Diagnostic(None, f"unknown cpu {lowered.cpu!r}", "use v1, v2, v3 or v4")])
    tm = target_machine(lowered.cpu)
    mod = llvm.parse_assembly(lowered.ir)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=2)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    try:
        elf = tm.emit_object(mod)
    except RuntimeError as exc:  # the BPF backend's own refusals (stack size, unsupported calls)
        raise CompileError([Diagnostic(None, backend_message(str(exc)))]) from None
    return Emitted(elf, str(mod))


def backend_message(text: str) -> str:
    if "stack limit" in text.lower():
        return "the program needs more than 512 bytes of BPF stack after optimisation: " + text.strip()
    return "the BPF backend refused the program: " + text.strip()
