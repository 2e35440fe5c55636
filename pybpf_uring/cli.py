"""`pybpf-uring`: compile, disassemble, check and verify BPF programs written in Python.

Exit status (SPEC.md): 0 success, 1 a diagnosed error in the user's program or object,
2 bad usage.  Errors go to stderr as `path:line:col: error: …` with the source line and a caret;
a Python traceback is never shown for a user's input.
"""
from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_ERROR = 0, 1  # bad usage exits 2, as argparse does
STAGES = ("ast", "ir", "ir-opt", "asm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pybpf-uring", description="Write io_uring BPF programs in Python.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, target: str = "FILE.py"):
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("file", metavar=target)
        c.add_argument("--cpu", choices=("v1", "v2", "v3", "v4"), default="v3",
                       help="BPF instruction set version (default v3)")
        return c

    c = command("compile", "compile a BPF module to an ELF object")
    c.add_argument("-o", "--output", metavar="FILE.o", help="output object (default: FILE.o beside FILE.py)")
    c.add_argument("--dump", choices=STAGES, action="append", default=[],
                   help="print a stage's output to stdout (repeatable)")
    d = command("disasm", "disassemble an object (as llvm-objdump -d), or a module after compiling it",
                "FILE.o|FILE.py")
    d.add_argument("-r", "--relocations", action="store_true", help="show relocations (llvm-objdump -dr)")
    d.add_argument("-S", "--source", action="store_true",
                   help="each program linked as loaded, with its source lines (from .BTF.ext)")
    command("check", "parse and check a BPF module without emitting code")
    command("verify", "load an object's kernel programs through the verifier", "FILE.o|FILE.py")
    r = command("run", "run a BPF module: its `__main__` block if it has one, else each of its "
                "io_uring programs once on a real ring")
    r.add_argument("--user-data", type=int, default=0, help="the BPF requests' user_data (default 0)")
    r.add_argument("--cq-sizes", default="128,128", help="sizes of the extra CQs (default 128,128)")
    r.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the programs to finish")
    plugin = sub.add_parser("conformance-plugin", help="bpf_conformance plugin: program hex on stdin")
    plugin.add_argument("memory", nargs="?", default="", help="memory as hex bytes")
    plugin.add_argument("--jit", action="store_true", help="run the program on the JIT")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the one place user-facing errors are rendered
        return report(exc)


def report(exc: Exception) -> int:
    from .diagnostics import CompileError
    if isinstance(exc, CompileError):
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    if isinstance(exc, OSError) and exc.filename:
        print(f"{exc.filename}: error: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    if type(exc).__name__ in ("ObjectError", "LoadError", "VerifierError"):
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if os.environ.get("PYBPF_URING_DEBUG"):
        raise exc
    print(f"internal error in pybpf_uring: {type(exc).__name__}: {exc}\n"
          "  (this is a bug in pybpf_uring, not in your program; PYBPF_URING_DEBUG=1 shows the "
          "traceback)", file=sys.stderr)
    return EXIT_ERROR


def read_source(path: str):
    from .parse import parse_source
    with open(path, encoding="utf-8") as f:
        return parse_source(f.read(), path)


def load_object(path: str, cpu: str):
    """An object file as it is, or a Python module compiled first."""
    if path.endswith(".py"):
        from .pipeline import compile_tree
        return compile_tree(read_source(path), cpu).object
    from .objfile import BpfObject
    return BpfObject.read(path)


def cmd_compile(args) -> int:
    from .pipeline import compile_tree
    result = compile_tree(read_source(args.file), args.cpu)
    for w in result.warnings:
        print(w.render(), file=sys.stderr)
    dumps = {"ast": lambda: dump_tree(result.tree), "ir": lambda: result.ir,
             "ir-opt": lambda: result.ir_opt, "asm": lambda: result.object.disasm()}
    for stage in args.dump:
        print(dumps[stage]())
    out = args.output or os.path.splitext(args.file)[0] + ".o"
    with open(out, "wb") as f:
        f.write(result.elf)
    return EXIT_OK


def cmd_disasm(args) -> int:
    if args.source:
        obj = load_object(args.file, args.cpu)
        print("\n".join(p.linked().disasm(source=True, relocations=args.relocations) for p in obj.programs), end="")
    elif args.file.endswith(".py"):
        print(load_object(args.file, args.cpu).disasm(relocations=args.relocations), end="")
    else:  # any BPF ELF, valid program or not, with llvm-objdump's file-name line
        from .disasm import disassemble_file
        print(disassemble_file(args.file, args.relocations), end="")
    return EXIT_OK


def cmd_check(args) -> int:
    from .check import check
    checked = check(read_source(args.file))
    for w in checked.warnings:
        print(w.render(), file=sys.stderr)
    names = ", ".join(f"{p.name} ({p.section})" for p in checked.programs)
    print(f"{args.file}: ok: {names}")
    return EXIT_OK


def cmd_verify(args) -> int:
    obj = load_object(args.file, args.cpu)
    with obj.load() as loaded:
        for name in loaded.programs:
            print(f"{name}: verified")
    return EXIT_OK


def cmd_run(args) -> int:
    """A module with a `__main__` block is its own runner; otherwise every io_uring program is
    submitted once and the ring is drained until none is parked, printing each CQ's CQEs."""
    import re
    import runpy
    with open(args.file, encoding="utf-8") as f:
        text = f.read()
    if re.search(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:""", text, re.M):
        runpy.run_path(args.file, run_name="__main__")
        return EXIT_OK
    import time
    from .pipeline import compile_tree
    from .ring import Ring
    obj = compile_tree(read_source(args.file), args.cpu).object
    names = [p.name for p in obj.programs if p.kind == "iouring"]
    if not names and any(p.kind == "struct_ops" for p in obj.programs):
        return run_loop_step(obj, args)
    if not names:
        print(f"{args.file}: error: no @iouring program to run (kernel program types are run from "
              "Python: obj.load().programs[name].test_run(...))", file=sys.stderr)
        return EXIT_ERROR
    sizes = tuple(int(n) for n in args.cq_sizes.split(",") if n)
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
        for name, m in ring.maps.items():
            print(f"map {name}: {dict(m.items())}")
        if ring.parked:
            print(f"{args.file}: error: {ring.parked} program(s) still waiting after {args.timeout} s",
                  file=sys.stderr)
        return EXIT_ERROR if ring.faults or ring.parked else EXIT_OK


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
