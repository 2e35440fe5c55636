"""The helpers the BPF conformance suite's programs call, for every engine that runs its cases
(`conformance.run_case` on the interpreter, `jit.execute` on the JIT, bench/engine.py).

It lives in the engine, not in the conformance harness, so the engine never imports the harness:
the harness reads the suite's files and imports the engine to run them.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["default_helpers"]


def default_helpers() -> dict[int, Callable[..., int]]:
    """The helpers the suite's programs call.

    Only `call 5` appears (call_unwind_fail): uBPF's plugin registers helper 5 as "unwind",
    which returns its argument; the suite checks that a call with r1 = -1 returns and the
    program goes on.  (uBPF also stops the program when unwind returns 0; no case exercises it.)
    """
    return {5: lambda memory, r1, r2, r3, r4, r5: r1}
