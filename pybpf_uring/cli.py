"""`pybpf-uring`: compile, disassemble, check, verify and run BPF programs written in Python.

Exit status: 0 success, 1 a diagnosed error in the user's program, object or script, 2 bad usage
(with the subcommand's usage line).  Errors go to stderr as `path:line:col: error: …` with the
source line and a caret, or `FILE: error: …` for a whole file; a traceback of pybpf_uring's own
frames is never shown for a user's input.  `run` of a script is the one place a traceback
appears: the script's own, as `python FILE` would print it.

The conventions are clang's and bpftool's: `-V`/`--version`, `-o -` for stdout, several inputs
per command (an error in one does not stop the others, the status is 1 if any failed), and a
closed stdout (`| head`) ends the command quietly.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ast
    import types

EXIT_OK, EXIT_ERROR = 0, 1  # bad usage exits 2, as argparse does
EXIT_INTERRUPTED = 128 + 2  # the shell's status for a command ended by SIGINT
STAGES = ("ast", "ir", "ir-opt", "asm")
CPUS = ("v1", "v2", "v3", "v4")
STDOUT = "-"  # `-o -`


class InputError(Exception):
    """An input file that cannot be used as a whole (unreadable, not UTF-8): `FILE: error: …`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: error: {message}")


class _Version(argparse.Action):
    """`-V`/`--version`, read from the installed package's metadata only when asked for."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib.metadata import PackageNotFoundError, version
        try:
            print(f"pybpf-uring {version('pybpf_uring')}")
            parser.exit(EXIT_OK)
        except PackageNotFoundError:
            parser.exit(EXIT_ERROR, "pybpf-uring: error: no version: the package is not installed "
                                    "(pip install -e .)\n")


def _count(what: str, lo: int, hi: int):
    """An argparse type: an integer in lo..hi (a bad one is a usage error naming the range)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, not {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in {lo}..{hi}, not {value}")
        return value
    return parse


def _cq_sizes(text: str) -> tuple[int, ...]:
    """`--cq-sizes A,B,…`: the extra CQs' sizes, each checked against the ring's own limits."""
    from .limits import MAX_CQ_SIZE, MAX_EXTRA_CQS
    size = _count("a CQ size", 1, MAX_CQ_SIZE)
    sizes = tuple(size(part.strip()) for part in text.split(",") if part.strip())
    if len(sizes) > MAX_EXTRA_CQS:
        raise argparse.ArgumentTypeError(f"at most {MAX_EXTRA_CQS} extra CQs, not {len(sizes)}")
    return sizes


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a timeout is a number of seconds, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a timeout must be finite and not negative, not {text}")
    return value


def _add_cpu(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", choices=CPUS, default="v3", help="BPF instruction set version (default v3)")


def _add_btf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--btf", metavar="FILE", help="BTF of the kernel tracing programs are for "
                        "(their ctx layouts; default: this kernel's tracefs and BTF)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pybpf-uring", description="Write io_uring BPF programs in Python.")
    p.add_argument("-V", "--version", action=_Version)
    # the metavar keeps the list of commands (and the hidden conformance-plugin) out of the usage
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, target: str = "FILE.py"):
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("files", metavar=target, nargs="+")
        _add_cpu(c)
        c.set_defaults(parser=c)
        return c

    c = command("compile", "compile BPF modules to ELF objects")
    c.add_argument("-o", "--output", metavar="FILE.o",
                   help="output object, `-` for stdout (one input only; default: FILE.o beside FILE.py)")
    c.add_argument("--dump", choices=STAGES, action="append", default=[],
                   help="print a stage's output to stdout (repeatable)")
    _add_btf(c)
    d = command("disasm", "disassemble objects (as llvm-objdump -d), or modules after compiling them",
                "FILE.o|FILE.py")
    d.add_argument("-r", "--relocations", action="store_true", help="show relocations (llvm-objdump -dr)")
    d.add_argument("-S", "--source", action="store_true",
                   help="each program linked as loaded, with its source lines (from .BTF.ext)")
    _add_btf(command("check", "parse and check BPF modules without emitting code"))
    command("verify", "load objects' kernel programs through the verifier", "FILE.o|FILE.py")
    r = sub.add_parser(
        "run", usage="%(prog)s [options] FILE [ARGS ...]",
        help="run a script as python would, or each io_uring program of a module once",
        description="Run FILE as `python FILE ARGS...` when it has an `if __name__ == \"__main__\":` "
                    "block; otherwise submit each of its io_uring programs once on a real ring and "
                    "print the CQEs and maps (a mainline loop_step module runs on a LoopRing).  "
                    "The options are for a module without a main block and come before FILE: "
                    "everything after FILE is the script's.")
    r.add_argument("--user-data", type=_count("user_data", 0, (1 << 64) - 1), default=0,
                   metavar="N", help="the BPF requests' user_data (default 0)")
    r.add_argument("--cq-sizes", type=_cq_sizes, default=(128, 128), metavar="A,B",
                   help="sizes of the extra CQs (default 128,128)")
    r.add_argument("--timeout", type=_seconds, default=5.0, metavar="S",
                   help="seconds to wait for the programs to finish (default 5)")
    r.add_argument("--duration", type=_seconds, default=None, metavar="S",
                   help="a tracing module: stop after S seconds (default: at Ctrl-C)")
    r.add_argument("--interval", type=_seconds, default=None, metavar="S",
                   help="a tracing module: print its maps every S seconds too")
    _add_cpu(r)
    # one REMAINDER, not FILE then ARGS: argparse would drop a `--` that follows FILE
    r.add_argument("script", nargs=argparse.REMAINDER, metavar="FILE ARGS", help="the file, then its arguments")
    r.set_defaults(parser=r)
    # no help=: argparse lists a command only when it has one, and this one is for the runner
    plugin = sub.add_parser("conformance-plugin", description="bpf_conformance plugin: program hex on stdin")
    plugin.add_argument("memory", nargs="?", default="", help="memory as hex bytes")
    plugin.add_argument("--jit", action="store_true", help="run the program on the JIT")
    return p


def main(argv: list[str] | None = None) -> int:
    """`argv` None: this process is the command (the console script, `python -m pybpf_uring`)."""
    args = build_parser().parse_args(argv)
    own_process = argv is None and args.command in RUN_NO_USER_CODE
    if own_process:
        _start_own_process()
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows up here, while it can still be handled
        return status
    except BrokenPipeError:
        return _closed_stdout()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place user-facing errors are rendered
        return report(exc)
    finally:
        if own_process:
            gc.freeze()  # what is left is freed by the exit; the collector need not walk it first


# The commands whose process runs no code of the user's: they read and compile it, or load objects.
RUN_NO_USER_CODE = ("compile", "disasm", "check", "verify")


def _start_own_process() -> None:
    """Two settings for a command's own process, which runs none of the user's code that could
    want otherwise; not made when main() is called from Python, whose process is the caller's.

    - lark imports the third-party `regex` module when it is installed, for its `regex=True`
      option, which the parser does not use; that import is a twentieth of a cold compile.  It
      is marked absent (None in sys.modules: `import regex` raises ImportError, as lark expects).
    - Python's cyclic garbage collector would walk the parser's tables, LLVM's wrappers and the
      syntax trees again and again while a compile builds them, and once more at exit, a fifth
      of a cold compile, to find little: a compile's cycles are a couple of MB for a file of 18
      programs.  It is off; each_file collects between inputs, and main() freezes what is left
      for the exit."""
    sys.modules.setdefault("regex", None)
    gc.disable()


def _closed_stdout() -> int:
    """The reader went away (`| head`): stop without a traceback, and point stdout at /dev/null
    so the interpreter's last flush at exit does not fail again (Python's documented recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_ERROR


def report(exc: Exception, path: str | None = None) -> int:
    """Print a user-facing error (by its family in errors.py) and return status 1; `path` is the
    input being processed, named when the error does not name it.  Anything else is a bug in
    pybpf_uring: say so, or re-raise it with PYBPF_URING_DEBUG set."""
    from .errors import DiagnosedError, ObjectError, PybpfUringError, debugging
    if isinstance(exc, DiagnosedError):  # CompileError, and LoadErrors such as VerifierError
        text = str(exc)
        # about the whole object (a map): name the file, unless the message already does (emit's
        # measure of the stack after optimisation starts `error: FILE: ...`)
        if path and text.startswith("error: ") and not text.startswith(f"error: {path}: "):
            text = f"{path}: {text}"
        print(text, file=sys.stderr)
    elif isinstance(exc, ObjectError):
        where = exc.path or path
        print(f"{where}: error: {exc.message}" if where else f"error: {exc.message}", file=sys.stderr)
    elif isinstance(exc, InputError):
        print(exc, file=sys.stderr)
    elif isinstance(exc, PybpfUringError):  # the RingErrors: the ring, the engine, a mainline loop
        print(f"error: {exc}", file=sys.stderr)
    elif isinstance(exc, OSError) and exc.filename:  # an output file
        print(f"{exc.filename}: error: cannot write: {exc.strerror}", file=sys.stderr)
    elif debugging():
        raise exc
    else:
        print(f"internal error in pybpf_uring: {type(exc).__name__}: {exc}\n"
              "  (this is a bug in pybpf_uring, not in your program; PYBPF_URING_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
    return EXIT_ERROR


def each_file(args, one) -> int:
    """Run `one(path)` for every input; an error in one is reported and the others still run."""
    status = EXIT_OK
    for i, path in enumerate(args.files):
        if i and not gc.isenabled():  # the collector is off (_start_own_process): the last input's cycles
            gc.collect()
        try:
            status = max(status, one(path))
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - report() renders user errors and flags bugs
            sys.stdout.flush()  # this file's output so far comes before its error
            status = max(status, report(exc, path))
    return status


# --- inputs -------------------------------------------------------------------------------------
def read_text(path: str) -> str:
    """A source file's text, or `FILE: error: cannot read: …` for every reason it cannot be read
    (an InputError, or the compiler's CompileError for text that is not UTF-8)."""
    from .compiler.pipeline import source_text
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    return source_text(data, path)


def read_source(path: str):
    from .compiler.parse import parse_source
    return parse_source(read_text(path), path)


def load_object(path: str, cpu: str):
    """An object file as it is, or a Python module compiled first."""
    if path.endswith(".py"):
        from .compiler.pipeline import compile_tree
        return compile_tree(read_source(path), cpu).object
    from .bpf.objfile import BpfObject
    return BpfObject.read(path)


# --- compile, disasm, check, verify -------------------------------------------------------------
def cmd_compile(args) -> int:
    if args.output is not None and len(args.files) > 1:
        args.parser.error(f"-o names one output, but there are {len(args.files)} inputs")
    return each_file(args, lambda path: compile_one(path, args))


def compile_one(path: str, args) -> int:
    from .compiler.pipeline import compile_tree
    result = compile_tree(read_source(path), args.cpu, btf=args.btf)
    for w in result.warnings:
        print(w.render(), file=sys.stderr)
    dumps = {"ast": lambda: dump_tree(result.tree), "ir": lambda: result.ir,
             "ir-opt": lambda: result.ir_opt, "asm": lambda: result.object.disasm()}
    for stage in args.dump:
        print(dumps[stage]())
    out = args.output or os.path.splitext(path)[0] + ".o"
    if out == STDOUT:
        sys.stdout.flush()  # any dump first, then the object's bytes
        sys.stdout.buffer.write(result.elf)
    else:
        with open(out, "wb") as f:
            f.write(result.elf)
    return EXIT_OK


def cmd_disasm(args) -> int:
    # one input prints as before; several get llvm-objdump's file-name line each, as it does
    headed = len(args.files) > 1
    return each_file(args, lambda path: disasm_one(path, args, headed))


def disasm_one(path: str, args, headed: bool) -> int:
    if args.source:
        obj = load_object(path, args.cpu)
        text = obj.disasm(relocations=args.relocations, source=True)
        if headed:
            text = f"\n{path}:\tfile format elf64-bpf\n" + text
    elif path.endswith(".py"):
        from .bpf.disasm import disassemble
        text = disassemble(load_object(path, args.cpu), path if headed else None, args.relocations)
    else:  # any BPF ELF, valid program or not, with llvm-objdump's file-name line
        from .bpf.disasm import disassemble
        from .bpf.objfile import read_elf
        text = disassemble(read_elf(path), path, args.relocations)
    print(text, end="")
    return EXIT_OK


def cmd_check(args) -> int:
    return each_file(args, lambda path: check_one(path, args.btf))


def check_one(path: str, btf: str | None = None) -> int:
    from .compiler.check import check
    checked = check(read_source(path), btf=btf)
    for w in checked.warnings:
        print(w.render(), file=sys.stderr)
    names = ", ".join(f"{p.name} ({p.section})" for p in checked.programs)
    print(f"{path}: ok: {names}")
    return EXIT_OK


# Program kinds the kernel does not load on their own, and where they run instead.
ENGINE_ONLY = {
    "iouring": "runs in the engine (Ring), not loadable by this kernel",
    "struct_ops": "a mainline io_uring loop: LoopRing attaches it to a ring on Linux 7.1+, "
                  "not loaded on its own",
}


def cmd_verify(args) -> int:
    return each_file(args, lambda path: verify_one(path, args.cpu))


def verify_one(path: str, cpu: str) -> int:
    """Every other program through the verifier (with the maps, as the loader creates them); the
    io_uring ones say where they run.  A kind nobody runs (an object's xdp program) is named by
    the loader's UnsupportedProgramError."""
    obj = load_object(path, cpu)
    if kernel := {p.name for p in obj.programs if p.kind not in ENGINE_ONLY}:
        with obj.load(only=kernel):
            pass
    for p in obj.programs:
        print(f"{p.name}: {ENGINE_ONLY.get(p.kind, 'verified')}")
    return EXIT_OK


# --- run ----------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    """A file with a `__main__` block runs as `python FILE ARGS...`; any other module has each of
    its io_uring programs submitted once (or its loop_step attached) and what happened printed."""
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        args.parser.error("the following arguments are required: FILE")
    path, argv = script[0], script[1:]
    text = read_text(path)
    code = python_code(text, path)
    if has_main_block(code.tree):
        return run_script(path, code.compiled, argv)
    if argv:
        args.parser.error(f"{path} has no `if __name__ == \"__main__\":` block to take arguments "
                          f"({' '.join(argv)}); run's own options go before FILE")
    return run_module(path, text, args)


@dataclass(frozen=True)
class PythonCode:
    """A file as python reads it: its tree says how `run` treats it, `compiled` is what runs (named by the file's absolute path, as python names a script's code)."""
    tree: ast.Module
    compiled: types.CodeType


def python_code(text: str, path: str) -> PythonCode:
    """The file as python sees it.  A syntax error is the user's, shown with its line and caret
    (compiling the tree also catches what the parser lets through, e.g. `return` outside a def)."""
    import ast
    from .diagnostics import CompileError, Diagnostic, Source, Span
    try:
        tree = ast.parse(text, path)
        # dont_inherit: this module's `from __future__` imports are not the script's
        return PythonCode(tree, compile(tree, os.path.abspath(path), "exec", dont_inherit=True))
    except SyntaxError as exc:
        line, col = exc.lineno or 1, exc.offset or 1
        end_line = exc.end_lineno or line
        end_col = exc.end_offset if exc.end_offset and end_line == line and exc.end_offset > col else col + 1
        span = Span(Source(path, text), line, col, end_line, end_col)
        raise CompileError([Diagnostic(span, exc.msg)]) from None


def has_main_block(tree: ast.Module) -> bool:
    """Whether the module has a top-level `if __name__ == "__main__":` (either operand order)."""
    import ast

    def is_main_test(test) -> bool:
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
            return False
        sides = [test.left, test.comparators[0]]
        names = [s.id for s in sides if isinstance(s, ast.Name)]
        constants = [s.value for s in sides if isinstance(s, ast.Constant)]
        return names == ["__name__"] and constants == ["__main__"]

    return any(isinstance(node, ast.If) and is_main_test(node.test) for node in tree.body)


def run_script(path: str, code: types.CodeType, argv: list[str]) -> int:
    """`python FILE ARGS...` in this process: `sys.argv` is [FILE, ARGS...], the module is
    `__main__` with an absolute `__file__`, and the script's directory is `sys.path[0]`.

    SystemExit passes through, so the interpreter ends the process with the script's status (and
    prints a string one) exactly as python does.  An error with diagnostics (a CompileError, a
    VerifierError or another LoadError) is a diagnosed error in the user's program or object and
    prints as the CLI prints it; any other exception prints as python would
    print it, through `sys.excepthook`, from the script's first frame (none of the CLI's)."""
    import types
    from .errors import DiagnosedError
    module = types.ModuleType("__main__")
    module.__file__ = code.co_filename
    saved_argv, saved_path, saved_main = sys.argv, list(sys.path), sys.modules["__main__"]
    sys.argv = [path, *argv]
    sys.path[:1] = [os.path.dirname(os.path.realpath(path))]   # python's entry for a script
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    except DiagnosedError as exc:
        return report(exc)
    except Exception as exc:  # noqa: BLE001 - the script's own error, shown as its own
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)  # the hook prints __traceback__
        return EXIT_ERROR
    finally:
        sys.argv, sys.path[:], sys.modules["__main__"] = saved_argv, saved_path, saved_main
    return EXIT_OK


def run_module(path: str, text: str, args) -> int:
    """Submit every io_uring program once and drain the ring until none is parked, printing each
    CQ's CQEs, the trace and the maps; a loop_step module goes to `run_loop_step`."""
    import time
    from .compiler.parse import parse_source
    from .compiler.pipeline import compile_tree
    from .runtime.ring import Ring
    from .uapi import BPF_MAP_TYPE_RINGBUF
    obj = compile_tree(parse_source(text, path), args.cpu).object
    names = [p.name for p in obj.programs if p.kind == "iouring"]
    if not names and any(p.kind == "struct_ops" for p in obj.programs):
        return run_loop_step(obj, args)
    from .bpf.hist import TRACING_KINDS
    if not names and any(p.kind in TRACING_KINDS for p in obj.programs):
        return run_tracing(obj, args)
    if not names:
        print(f"{path}: error: no @iouring program to run (kernel program types are run from "
              "Python: obj.load().programs[name].test_run(...))", file=sys.stderr)
        return EXIT_ERROR
    sizes = args.cq_sizes
    with Ring(entries=64, cq_sizes=sizes) as ring:
        ring.register(obj)
        for name in names:
            ring.submit_bpf(name, user_data=args.user_data)
        deadline = time.monotonic() + args.timeout
        while ring.parked and time.monotonic() < deadline:
            for cq in range(len(sizes) + 1):
                ring.ready(cq)
            time.sleep(0.001)
        for cq in range(len(sizes) + 1):
            while (cqe := ring.peek_cqe(cq)) is not None:
                print(f"cq {cq}: user_data={cqe.user_data} res={cqe.res} flags={cqe.flags}")
        for line in ring.engine.trace:
            print(f"trace: {line}")
        for fault in ring.faults:
            print(f"fault: {fault}", file=sys.stderr)
        for name, m in ring.maps.items():   # a ring buffer's records, the others' entries
            print(f"map {name}: {list(m.records()) if m.type == BPF_MAP_TYPE_RINGBUF else dict(m.items())}")
        if ring.parked:
            print(f"{path}: error: {ring.parked} program(s) still waiting after {args.timeout} s",
                  file=sys.stderr)
        return EXIT_ERROR if ring.faults or ring.parked else EXIT_OK


def run_tracing(obj, args) -> int:
    """A tracing tool: load it, attach every program, and print its maps at each --interval and
    when it stops (--duration, or Ctrl-C), as bpftrace does (bpf/hist.py)."""
    from .bpf.hist import run_tool
    run_tool(obj, args.duration, args.interval, write=lambda text: print(text, flush=True))
    return EXIT_OK


def run_loop_step(obj, args) -> int:
    """A mainline module: attach its loop to a ring of a 7.1+ kernel, run it until it stops,
    and print its globals (on an older kernel the probe says what is missing)."""
    from .mainline import LoopRing
    with LoopRing.fitting(obj) as ring:
        attachment = ring.attach(obj)
        ring.run(timeout=args.timeout)
        for name in attachment.globals:
            print(f"{name} = {attachment.globals[name]}")
    return EXIT_OK


def cmd_conformance_plugin(args) -> int:
    from .conformance import plugin_main
    argv = ([args.memory] if args.memory else []) + (["--jit"] if args.jit else [])
    return plugin_main(argv, sys.stdin, sys.stdout, sys.stderr)


def dump_tree(node, indent: int = 0) -> str:
    """The syntax tree, one node per line, with each node's line:col."""
    from dataclasses import fields, is_dataclass
    pad = "  " * indent
    if not is_dataclass(node):
        return f"{pad}{node!r}"
    span = getattr(node, "span", None)
    head = f"{pad}{type(node).__name__}" + (f" @{span.line}:{span.col}" if span is not None else "")
    scalars, children = [], []
    for f in fields(node):
        if f.name in ("span", "source", "environment"):  # the environment is the program's globals
            continue
        v = getattr(node, f.name)
        if is_dataclass(v):
            children.append(dump_tree(v, indent + 1))
        elif isinstance(v, tuple) and v and all(is_dataclass(x) for x in v):
            children.extend(dump_tree(x, indent + 1) for x in v)
        else:
            scalars.append(f"{f.name}={v!r}")
    return "\n".join([head + (" " + " ".join(scalars) if scalars else "")] + children)


COMMANDS = {"compile": cmd_compile, "disasm": cmd_disasm, "check": cmd_check, "verify": cmd_verify,
            "run": cmd_run, "conformance-plugin": cmd_conformance_plugin}
