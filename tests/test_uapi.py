"""uapi.py is the one home of the kernel's numbers, and its numbers are the kernel's.

- every name the system headers define has the headers' value: a C program built with gcc prints
  them from <linux/bpf.h>, <linux/io_uring.h>, <asm/unistd.h> and <errno.h>.  A name the headers
  lack must be one this file lists with its reason (newer than the headers, kernel-internal, the
  RFC's or mainline io_uring BPF's), so a misspelt name cannot pass as merely absent;
- the name tables are derived from the definitions;
- no other module of the package assigns a name uapi defines (an `ast` walk), and uapi imports
  nothing from the package;
- programs import IORING_OP_* and IOSQE_* from pybpf_uring.uring: the checker folds them, and a
  program that links a failing read to a NOP sees the kernel cancel the NOP on a real ring.
"""
from __future__ import annotations

import ast
import errno
import os
import re
import shutil
import subprocess
import textwrap

import pytest

from pybpf_uring import Ring, compile_source, uapi, uring

PACKAGE = os.path.dirname(uapi.__file__)

# Names uapi defines that the installed headers may lack, and why.
NOT_IN_HEADERS = {
    "ENOTSUPP": "kernel-internal (include/linux/errno.h), yet bpf() returns it",
    "BPF_LOG_LEVEL1": "include/linux/bpf_verifier.h, not uapi",
    "BPF_LOG_LEVEL2": "include/linux/bpf_verifier.h, not uapi",
    "BPF_LOG_STATS": "include/linux/bpf_verifier.h, not uapi",
    "IORING_OP_BPF": "the 2021 RFC's opcode, never merged",
    "IOU_LOOP_CONTINUE": "mainline io_uring BPF (7.1+)",
    "IOU_LOOP_STOP": "mainline io_uring BPF (7.1+)",
    "IOU_REGION_MEM": "mainline io_uring BPF (7.1+)",
    "IOU_REGION_CQ": "mainline io_uring BPF (7.1+)",
    "IOU_REGION_SQ": "mainline io_uring BPF (7.1+)",
    "IORING_SETUP_SQ_REWIND": "newer than 6.18",
    "IORING_SETUP_NO_SQARRAY": "6.6",
    "BPF_F_LINK": "6.4",
    "BPF_STRUCT_OPS": "6.4",
    "BPF_PROG_TYPE_NETFILTER": "6.4",
    "BPF_MAP_TYPE_CGRP_STORAGE": "6.2",
    "BPF_MAP_TYPE_ARENA": "6.9",
}
# uapi names whose C spelling differs (a size or a syscall number has no #define of that name)
C_SPELLING = {
    "INSN_SIZE": "sizeof(struct bpf_insn)",
    "SQE_SIZE": "sizeof(struct io_uring_sqe)",
    "CQE_SIZE": "sizeof(struct io_uring_cqe)",
    "NR_IO_URING_SETUP": "__NR_io_uring_setup",
    "NR_IO_URING_ENTER": "__NR_io_uring_enter",
    "NR_IO_URING_REGISTER": "__NR_io_uring_register",
}
HEADERS = ("stdio.h", "errno.h", "linux/bpf.h", "linux/io_uring.h", "asm/unistd.h")


def constants() -> dict[str, int]:
    """uapi's integer constants (the name tables and helpers aside)."""
    return {name: value for name, value in vars(uapi).items()
            if name.isupper() and isinstance(value, int) and not name.startswith("_")}


def header_values(tmp_path, names: list[str]) -> tuple[dict[str, int], set[str]]:
    """(name → value as the headers define it, the names they do not define).  gcc names each
    undeclared identifier; those are dropped and the program built again."""
    absent: set[str] = set()
    while True:
        present = [n for n in names if n not in absent]
        lines = "\n".join(f'    printf("{n} %lld\\n", (long long)({C_SPELLING.get(n, n)}));' for n in present)
        src = tmp_path / "uapi.c"
        src.write_text("".join(f"#include <{h}>\n" for h in HEADERS)
                       + f"int main(void)\n{{\n{lines}\n    return 0;\n}}\n")
        run = subprocess.run(["gcc", "-o", str(tmp_path / "uapi"), str(src)], capture_output=True, text=True)
        if run.returncode == 0:
            break
        undeclared = set(re.findall(r"[‘'](\w+)[’'] undeclared", run.stderr))
        if not undeclared:
            pytest.skip(f"gcc cannot build against the kernel headers: {run.stderr.strip()[:300]}")
        absent |= undeclared
    out = subprocess.run([str(tmp_path / "uapi")], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}, absent


@pytest.mark.tools("gcc")
def test_every_number_is_the_one_the_system_headers_define(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    for header in ("linux/bpf.h", "linux/io_uring.h"):
        if not os.path.exists(os.path.join("/usr/include", header)):
            pytest.skip(f"/usr/include/{header} is not installed (linux-libc-dev)")
    ours = constants()
    theirs, absent = header_values(tmp_path, sorted(ours))
    assert absent <= set(NOT_IN_HEADERS), f"not in the headers, with no reason given: {absent - set(NOT_IN_HEADERS)}"
    assert len(theirs) > 150                      # the check covers the module, not a handful
    assert {n: (ours[n], v) for n, v in theirs.items() if ours[n] != v} == {}


def test_errnos_are_pythons():
    for name, value in constants().items():
        if name.startswith("E") and name != "ENOTSUPP":
            assert getattr(errno, name) == value, name
    assert uapi.ENOTSUPP not in errno.errorcode      # why uapi spells it out


def test_name_tables_are_derived_from_the_definitions():
    defined = constants()
    map_types = {v: n for n, v in defined.items() if n.startswith("BPF_MAP_TYPE_")}
    assert uapi.MAP_TYPE_NAMES == {v: n.removeprefix("BPF_MAP_TYPE_").lower() for v, n in map_types.items()}
    assert sorted(uapi.MAP_TYPE_NAMES) == list(range(len(uapi.MAP_TYPE_NAMES)))   # the whole enum
    assert uapi.MAP_TYPE_NAMES[uapi.BPF_MAP_TYPE_PERCPU_ARRAY] == "percpu_array"
    assert uapi.PROG_TYPE_NAMES[uapi.BPF_PROG_TYPE_SYSCALL] == "syscall"
    assert uapi.COMMAND_NAMES[uapi.BPF_PROG_LOAD] == "BPF_PROG_LOAD"
    commands = {n for n in uapi.COMMAND_NAMES.values()}
    assert all(defined[n] == v for v, n in uapi.COMMAND_NAMES.items())
    assert not {n for n in commands if n.startswith(("BPF_MAP_TYPE_", "BPF_PROG_TYPE_", "BPF_F_"))}
    opcodes = sorted(v for n, v in defined.items() if n.startswith("IORING_OP_"))
    assert opcodes == list(range(len(opcodes)))   # the RFC kernel's enum, then IORING_OP_BPF


def assigned_names(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            yield node.id, node.lineno


def test_no_other_module_defines_a_uapi_name():
    ours = {n for n in vars(uapi) if n.isupper() and not n.startswith("_")}
    found = []
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.endswith(".py") or path == uapi.__file__:
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            found += [f"{os.path.relpath(path, PACKAGE)}:{line}: {n}" for n, line in assigned_names(tree)
                      if n in ours]
    assert found == []


def test_uapi_imports_nothing_from_the_package():
    with open(uapi.__file__) as f:
        tree = ast.parse(f.read())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports and all(isinstance(n, ast.ImportFrom) and n.level == 0 and n.module in ("__future__", "errno")
                           for n in imports)


def test_uring_offers_every_opcode_and_sqe_flag():
    names = [n for n in vars(uapi) if n.startswith(("IORING_OP_", "IOSQE_"))]
    assert len(names) == 38 + 7
    assert {n: getattr(uring, n, None) for n in names} == {n: getattr(uapi, n) for n in names}


LINKED = textwrap.dedent("""
    from pybpf_uring import iouring, i32, i64, ArrayMap
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe
    from pybpf_uring.uring import IORING_OP_NOP, IORING_OP_READ, IOSQE_IO_LINK, IOSQE_ASYNC

    out = ArrayMap(i64, 4)        # [0] runs; [i]: res of the CQE with user_data i

    def queue(ctx: IoUringCtx, sqe: Sqe, opcode: i32, flags: i32, user_data: i32) -> None:
        sqe.opcode = opcode
        sqe.flags = flags
        sqe.fd = -1
        sqe.user_data = user_data
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)

    @iouring
    def linked(ctx: IoUringCtx) -> i32:
        out[0] += 1
        if out[0] == 1:
            sqe = Sqe()
            queue(ctx, sqe, IORING_OP_READ, IOSQE_IO_LINK, 1)     # fails: fd -1
            queue(ctx, sqe, IORING_OP_NOP, 0, 2)                  # so the kernel cancels this
            queue(ctx, sqe, IORING_OP_NOP, IOSQE_ASYNC, 3)        # not linked: completes
            ctx.wait_idx = 1
            ctx.wait_nr = 3
            return 0
        cqe = Cqe()
        for i in range(3):
            if reap_cqe(ctx, 1, cqe) == 0 and cqe.user_data < 4:
                out[cqe.user_data] = cqe.res
        return 0
""")


@pytest.mark.uring
def test_a_program_links_sqes_with_the_imported_names_on_a_real_ring():
    with Ring(entries=8, cq_sizes=(8,)) as ring:
        ring.register(compile_source(LINKED, "linked.py"))
        ring.submit_bpf("linked", user_data=7)
        done = ring.wait_cqe(0, timeout=5)
        assert (done.user_data, done.res) == (7, 0) and not ring.faults
        assert list(ring.maps["out"].values()) == [2, -errno.EBADF, -errno.ECANCELED, 0]


def test_an_unknown_opcode_name_is_a_located_error():
    src = LINKED.replace("IOSQE_IO_LINK, IOSQE_ASYNC", "IOSQE_IO_LINK, IOSQE_LINKED")
    with pytest.raises(Exception) as err:
        compile_source(src, "linked.py")
    assert "linked.py:4:1: error: pybpf_uring.uring has no name 'IOSQE_LINKED'" in str(err.value)


def test_language_md_lists_every_name_a_program_imports():
    with open(os.path.join(os.path.dirname(PACKAGE), "docs", "language.md")) as f:
        section = f.read().split("## Constants", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(IORING_OP_\w+|IOSQE_\w+|IOU_\w+)`", section))
    assert listed == {n for n in vars(uapi) if n.startswith(("IORING_OP_", "IOSQE_", "IOU_"))}


@pytest.mark.parametrize("name, module", [("IOSQE_IO_LINK", "pybpf_uring.uring"),
                                          ("IORING_OP_NOP", "pybpf_uring.uring"),
                                          ("IOU_LOOP_STOP", "pybpf_uring.iou")])
def test_a_kernel_name_used_without_its_import_says_where_it_is(name, module):
    src = ("from pybpf_uring import iouring, i32\nfrom pybpf_uring.uring import IoUringCtx\n\n"
           f"@iouring\ndef p(ctx: IoUringCtx) -> i32:\n    return {name}\n")
    with pytest.raises(Exception) as err:
        compile_source(src, "p.py")
    assert str(err.value) == (f"p.py:6:12: error: name '{name}' is not defined\n    return {name}\n"
                              f"           ^{'~' * (len(name) - 1)}\n  note: import it: from {module} import {name}")
