"""The package's shape: dependencies point one way and every module stays readable.

An import anywhere in a module counts, inside a function too (a function-local import is still a
dependency, only a later one); an import under `if TYPE_CHECKING:` does not, since it never runs.
The imports are read with `ast`, so the test sees the package as its source says, whatever is
imported at the time it runs."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pybpf_uring"
MAX_LINES = 1000


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not `__init__`)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in known:      # `from . import isa`: the module
                    found.add(f"{target}.{alias.name}")
                elif target in known:                      # `from .isa import decode`
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def a_cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One import path around a component, `a -> b -> ... -> a`, to say where to cut."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        back = [m for m in nxt if m == start]
        if back and len(path) > 1:
            return path + [start]
        fresh = [m for m in nxt if m not in seen]
        if not fresh:
            return path + [nxt[0]]
        path.append(fresh[0])
        seen.add(fresh[0])


def test_the_reader_resolves_relative_absolute_and_function_local_imports(tmp_path):
    """The rules the cycle test depends on, on a package written for the purpose."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import x\n",
        "a.py": "from . import b\nx = 1\n",
        "b.py": "def f():\n    from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n"
                    "from ..b import f\nimport pkg.a\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    known = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py",
             "pkg.sub": pkg / "sub" / "__init__.py", "pkg.sub.c": pkg / "sub" / "c.py"}
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.sub.c"}, "pkg.sub": set(),
                     "pkg.sub.c": {"pkg.b", "pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert a_cycle_in(["pkg.a", "pkg.b", "pkg.sub.c"], graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    graph["pkg.sub.c"] = {"pkg.b"}                           # the TYPE_CHECKING import alone
    assert cycles(graph) == [["pkg.b", "pkg.sub.c"]]


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert "pybpf_uring.bpf.isa" in graph and "pybpf_uring.runtime.engine" in graph   # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles (counting imports inside functions):\n" + "\n".join(
        " -> ".join(a_cycle_in(c, graph)) + f"   ({len(c)} modules: {', '.join(c)})" for c in found)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_a_thousand_lines(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} is {lines} lines (the limit is {MAX_LINES}): split it by what it does"


# The layers, lowest first.  A module may import its own layer and the layers below it, never
# one above: the base (errors, limits, the ABI numbers, the helper registry, diagnostics) is
# imported by everything; the language's names sit on it; the object model and kernel access
# (`bpf`) know nothing of the compiler or the runtime that build on them; mainline loops use the
# runtime's raw ring; the command line and the conformance harness sit on top.
LAYERS = [
    {"errors", "diagnostics", "uapi", "limits", "helpers", "hooks", "cells", "display"},
    {"types", "decorators", "uring", "iou"},
    {"bpf"},
    {"compiler", "runtime"},
    {"mainline"},
    {"cli", "conformance", "__main__", ""},
]


def layer_of(name: str) -> int:
    """The layer of module `pybpf_uring.X[.Y]`: that of X (the package itself is the top)."""
    first = name.split(".")[1] if "." in name else ""
    for i, members in enumerate(LAYERS):
        if first in members:
            return i
    raise AssertionError(f"{name} is in no layer: add {first!r} to LAYERS in {__file__}")


def test_every_import_points_down_the_layers():
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, targets in import_graph().items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert not upward, "\n".join(upward)


def test_the_compiler_and_the_runtime_never_import_each_other():
    crossing = sorted(f"{a} imports {b}" for a, targets in import_graph().items() for b in targets
                      if {a.split(".")[1:2][0] if "." in a else "", b.split(".")[1]} == {"compiler", "runtime"})
    assert not crossing, "\n".join(crossing)
