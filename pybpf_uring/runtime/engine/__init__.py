"""The project's own userspace BPF engine: runs RFC io_uring programs over a real kernel ring.

`Interpreter` executes a program (RFC 9669, cpu v4) against a `Memory` of bounds-checked
regions; faults name the instruction (`BpfFault`), runaway loops stop at a budget
(`BudgetExceeded`), and programs no kernel would accept are refused up front (`InvalidProgram`).

    memory = Memory()
    ctx = memory.map(bytearray(16), "ctx", fields=[(0, 8), (8, 4), (12, 4)])
    vm = Interpreter(program_bytes, memory=memory, helpers=table)
    r0 = vm.run(ctx.base)            # the program reads and writes the bytearray in place

`table` maps a helper id (as helpers.py numbers them) to `fn(memory, r1, r2, r3, r4, r5) -> int`,
which reaches program buffers through `memory.read/write/view(address, ...)`, whose
MemoryFault becomes a BpfFault at the call.
Map values, helper buffers and anything else a program may touch are regions mapped the same
way; their `base` is the pointer the program sees.
"""
from .interpreter import (DEFAULT_BUDGET, BpfFault, BudgetExceeded, Helper, Interpreter,
                          InvalidProgram, validate)
from .memory import Memory, MemoryFault, Region
from .instance import instantiate
from .jit import EngineChoice, Jit, JitUnavailable, select_engine  # llvmlite loads on first compile

__all__ = [
    "Interpreter", "BpfFault", "BudgetExceeded", "InvalidProgram", "Helper", "validate",
    "DEFAULT_BUDGET", "Memory", "MemoryFault", "Region", "instantiate",
    "Jit", "JitUnavailable", "EngineChoice", "select_engine",
]
