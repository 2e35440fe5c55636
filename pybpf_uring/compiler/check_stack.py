"""Stack rules, reported at what spends the stack: the local that takes a frame past
STACK_BYTES, and the call that takes a call chain's frames together past it.

The verifier limits each function's frame to STACK_BYTES and, walking every chain of calls
from a program, the frames of the chain together too ("combined stack size of 2 calls is 544.
Too large"), each rounded up to STACK_FRAME_ALIGN.  The checker knows a frame's structs and
arrays (scalars live in registers, and the emitted code's frames are measured after
optimisation: emit.check_stack), so it adds those up the way the verifier does and names
each local and frame in the sum.
"""
from __future__ import annotations

from . import syntax as S
from .check_loops import nodes
from ..diagnostics import Span
from ..limits import STACK_BYTES, STACK_FRAME_ALIGN, frame_in_chain
from .typesys import ArrayT, StructT

MAP_HINT = "keep large data in a map value (m.lookup(k)) instead of locals"


def frame(mod, name: str) -> list[tuple[str, object, Span]]:
    """The struct and array locals of function `name`: (local, type, where it is first
    assigned), in source order."""
    info = mod.out.functions[name]
    params = {p for p, _ in info.params}
    first: dict[str, Span] = {}
    for n in nodes(*info.node.body):
        if isinstance(n, S.Assign) and isinstance(n.target, S.Name) and n.target.id not in params:
            at = first.get(n.target.id)
            if at is None or (n.span.line, n.span.col) < (at.line, at.col):
                first[n.target.id] = n.span
    found = [(local, t, first[local]) for local, t in info.locals.items()
             if isinstance(t, (StructT, ArrayT)) and local in first]
    return sorted(found, key=lambda x: (x[2].line, x[2].col))


def check_stack(mod, sites: dict[tuple[str, str], Span]) -> None:
    """Each frame, then each call chain from a program (the call graph has no cycle here:
    recursion is already an error)."""
    funcs = mod.out.functions
    frames = {name: frame(mod, name) for name in funcs}
    sizes = {}
    for name, items in frames.items():
        total = 0
        for local, t, span in items:
            total += t.size
            if total > STACK_BYTES:
                parts = "; ".join(f"{n}: {ty}, {ty.size} bytes (line {s.line})" for n, ty, s in items
                                  if (s.line, s.col) <= (span.line, span.col))
                mod.error(span, f"{local!r} ({t}, {t.size} bytes) takes {name}'s stack to {total} "
                          f"bytes; BPF allows {STACK_BYTES}",
                          f"{name}'s structs and arrays: {parts}; {MAP_HINT}")
                break
        sizes[name] = sum(t.size for _, t, _ in items)
    if any(size > STACK_BYTES for size in sizes.values()):
        return  # a frame too large on its own: its error says so, chains would repeat it

    def walk(name: str, path: tuple[str, ...], total: int) -> None:
        for callee in funcs[name].calls:
            if callee not in funcs or callee in path:
                continue
            chain = path + (callee,)
            combined = total + frame_in_chain(sizes[callee])
            if combined > STACK_BYTES:
                parts = ", ".join(f"{n} {frame_in_chain(sizes[n])}" for n in chain)
                mod.error(sites.get((name, callee)),
                          f"this call takes the stack of {' -> '.join(chain)} to {combined} bytes; the "
                          f"verifier allows {STACK_BYTES} for a chain of calls together",
                          f"bytes per frame, each rounded up to {STACK_FRAME_ALIGN} as the verifier "
                          f"does: {parts}; {MAP_HINT}, or call {callee} from a shallower frame")
            else:
                walk(callee, chain, combined)

    for p in mod.out.programs:
        walk(p.name, (p.name,), frame_in_chain(sizes[p.name]))
