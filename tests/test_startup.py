"""What a cold `pybpf-uring compile` imports: only the compiler's own stages.

Start-up is most of a cold compile (bench/compile.py measures it against clang-22), and an import
at the top of a module on the compile path is paid by every compile whether it needs it or not.
The object reader (pyelftools), BTF and the kernel layer, the ring runtime and its engines are
for reading, loading and running objects; tracing layouts only for tracing programs; the
`regex` module lark looks for serves an option the parser does not use.  This checks the modules
a fresh process has imported after compiling a sample, not a time; and that the parser a start
unpickles (parse.py) parses as the one built from the grammar does.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from pybpf_uring.compiler import parse
from pybpf_uring.compiler.parse import parse_source
from pybpf_uring.diagnostics import CompileError, Span

ROOT = Path(__file__).resolve().parents[1]

NOT_FOR_COMPILING = ("elftools", "pybpf_uring.bpf.objfile", "pybpf_uring.bpf.btf", "pybpf_uring.bpf.kernel",
                     "pybpf_uring.bpf.load", "pybpf_uring.bpf.tracepoints", "pybpf_uring.runtime",
                     "pybpf_uring.mainline", "pybpf_uring.display", "importlib.metadata", "regex")

# as the console script runs it: main() reads the command line itself
CHILD = """
import json, sys
from pybpf_uring.cli import main
sys.argv = ["pybpf-uring", "compile", sys.argv[1], "-o", sys.argv[2]]
status = main()
import gc
print(json.dumps([status, sorted(m for m, module in sys.modules.items() if module is not None),
                  gc.isenabled(), gc.get_freeze_count()]))
"""


def test_a_cold_compile_imports_only_the_compiler(tmp_path):
    run = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "samples" / "packet_stats.py"),
                          str(tmp_path / "p.o")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    status, modules, collecting, frozen = json.loads(run.stdout.splitlines()[-1])
    assert status == 0 and (tmp_path / "p.o").read_bytes()[:4] == b"\x7fELF"
    assert not collecting and frozen > 0  # cli._start_own_process: no collector walks, at exit neither
    assert "pybpf_uring.compiler.emit" in modules       # it did compile, in this process
    loaded = [m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_FOR_COMPILING)]
    assert not loaded, f"a cold compile imported {loaded}"


def test_main_called_from_python_leaves_the_process_as_it_was(tmp_path):
    """The command's own-process settings (no `regex`, no cyclic collector) are not made for a
    caller's process."""
    import gc
    from pybpf_uring.cli import main
    assert main(["compile", str(ROOT / "samples" / "packet_stats.py"), "-o", str(tmp_path / "p.o")]) == 0
    assert gc.isenabled() and sys.modules.get("regex", "absent") is not None


def test_a_command_with_several_inputs_compiles_each_as_alone(tmp_path):
    """Between inputs the command process collects the last one's cycles; each object is the
    one the input compiles to alone."""
    names = ("packet_stats", "counting")
    for name in names:
        (tmp_path / f"{name}.py").write_text((ROOT / "samples" / f"{name}.py").read_text())
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "compile", *(f"{n}.py" for n in names)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    for name in names:
        alone = subprocess.run([sys.executable, "-m", "pybpf_uring", "compile", f"{name}.py", "-o", "-"],
                               capture_output=True, cwd=tmp_path, timeout=120)
        assert alone.returncode == 0 and alone.stdout == (tmp_path / f"{name}.o").read_bytes()


BAD = "def f(x: u32) -> u32:\n    y = (x +\n    return y\n"


def _parsed(text: str) -> list:
    """What users see of a parse: every node with its whole span, or the diagnostics."""
    try:
        return _nodes(parse_source(text, "p.py").body)
    except CompileError as e:
        return [d.render() for d in e.diagnostics]


def _nodes(node) -> list:
    if isinstance(node, tuple):
        return [_nodes(item) for item in node]
    if isinstance(node, Span):
        return [node.line, node.col, node.end_line, node.end_col]
    if dataclasses.is_dataclass(node):
        return [type(node).__name__, *(_nodes(getattr(node, f.name)) for f in dataclasses.fields(node))]
    return repr(node)


def test_the_unpickled_parser_parses_as_the_built_one(tmp_path, monkeypatch):
    """A start that finds the pickled parser neither builds nor loads lark's grammar, and its
    trees, spans and diagnostics are those of a parser built from the grammar."""
    from lark import Lark
    sample = (ROOT / "samples" / "packet_stats.py").read_text()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parse._lark.cache_clear()
    try:
        built = [_parsed(sample), _parsed(BAD)]  # no cache yet: built, then pickled
        (pickled,) = (tmp_path / "pybpf_uring").iterdir()
        assert pickled.suffix == ".pickle" and pickled.stat().st_size > 0
        parse._lark.cache_clear()

        def no_building(*args, **kwargs):
            raise AssertionError("the parser was built again instead of unpickled")
        monkeypatch.setattr(Lark, "__init__", no_building)
        assert [_parsed(sample), _parsed(BAD)] == built
    finally:
        parse._lark.cache_clear()
    assert "p.py:3:5: error: invalid syntax: unexpected 'return'" in built[1][0]
    assert built[0][-1][0] == "FunctionDef" and len(built[0][-1][1]) == 4  # a span, start to end


def test_a_damaged_pickle_is_built_again(tmp_path, monkeypatch):
    """A parser file cut short (a crash while writing, a full disk) is not an error: the parser
    is built again and the file rewritten whole."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parse._lark.cache_clear()
    try:
        expected = _parsed(BAD)
        (pickled,) = (tmp_path / "pybpf_uring").iterdir()
        whole = pickled.read_bytes()
        pickled.write_bytes(whole[:len(whole) // 2])
        parse._lark.cache_clear()
        assert _parsed(BAD) == expected
        assert parse._read_parser(str(pickled)) is not None  # whole again
    finally:
        parse._lark.cache_clear()


def test_without_a_temporary_directory_the_parser_is_still_built_and_pickled(tmp_path, monkeypatch):
    """The leaner form goes through a temporary directory; without one (a read-only /tmp) the
    parser is pickled as built, and parses the same."""
    import tempfile

    def no_tmp(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "first"))
    parse._lark.cache_clear()
    try:
        expected = _parsed(BAD)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "second"))
        monkeypatch.setattr(tempfile, "TemporaryDirectory", no_tmp)
        parse._lark.cache_clear()
        assert _parsed(BAD) == expected
        (pickled,) = (tmp_path / "second" / "pybpf_uring").iterdir()
        parse._lark.cache_clear()
        assert _parsed(BAD) == expected and parse._read_parser(str(pickled)) is not None
    finally:
        parse._lark.cache_clear()


def test_a_compile_reads_its_object_back_once(monkeypatch):
    """A module of many functions has its stack measured on the emitted object (emit reads it
    back); the object compile_file returns is that one, not a second reading of the same ELF."""
    from pybpf_uring import compile_file
    from pybpf_uring.bpf.objfile import BpfObject
    reads = []
    read = BpfObject.read.__func__
    monkeypatch.setattr(BpfObject, "read", classmethod(lambda cls, *a, **k: reads.append(a) or read(cls, *a, **k)))
    obj = compile_file(ROOT / "bench" / "programs.py")
    assert len(reads) == 1 and obj.elf == reads[0][0]
    assert {"arith", "subprog", "divmod_store"} <= {p.name for p in obj.programs}
    reads.clear()
    assert compile_file(ROOT / "samples" / "packet_stats.py").programs and len(reads) == 1


def test_the_lean_position_bookkeeping_gives_lark_s_spans(monkeypatch):
    """The `?rule` levels a child passes through unchanged skip lark's position bookkeeping
    (parse._lean_positions): every node's whole span and every diagnostic stay those of the
    parser lark builds, over every sample, the bench programs, parenthesised and chained
    expressions and bad input."""
    texts = [p.read_text() for p in sorted((ROOT / "samples").glob("*.py"))]
    texts += [(ROOT / "bench" / "programs.py").read_text(), BAD,
              "x: u64 = ((1 + 2) * (3)) << (4 if not a and (b or c) else -(5))\n",
              "def f() -> u32:\n    return (a < b) == (not c)\n", "y = [1, (2), ((3))] ; z = (y)[0]\n",
              "def g(:\n", "x = (1 +\n"]
    parse._lark.cache_clear()
    try:
        lean = [_parsed(text) for text in texts]
        assert parse._pass_through in parse._lark().parser.parser.parser.callbacks.values()
        parse._lark.cache_clear()
        monkeypatch.setattr(parse, "_lean_positions", lambda parser: parser)
        assert parse._pass_through not in parse._lark().parser.parser.parser.callbacks.values()
        assert [_parsed(text) for text in texts] == lean
    finally:
        parse._lark.cache_clear()
