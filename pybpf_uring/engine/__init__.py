"""The project's own userspace BPF engine: runs RFC io_uring programs over a real kernel ring.

`Interpreter` executes a program (RFC 9669, cpu v4) against a `Memory` of bounds-checked
regions; faults name the instruction (`BpfFault`), runaway loops stop at a budget
(`BudgetExceeded`), and programs no kernel would accept are refused up front (`InvalidProgram`).
"""
from .interpreter import (DEFAULT_BUDGET, BpfFault, BudgetExceeded, Helper, Interpreter,
                          InvalidProgram, validate)
from .memory import Memory, MemoryFault, Region

__all__ = [
    "Interpreter", "BpfFault", "BudgetExceeded", "InvalidProgram", "Helper", "validate",
    "DEFAULT_BUDGET", "Memory", "MemoryFault", "Region",
]
