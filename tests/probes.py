"""What this machine offers the tests: each capability probed once, and one rule for a missing one.

A test says what it needs with markers (see tests/conftest.py): `tools("clang", ...)`,
`kernel(...)`, `uring`, `vm`.  The names it may give are the keys of PROBES; each maps to a
function that returns None when the capability is here and otherwise the reason it is not,
computed on first use and cached, so `pytest -m unit` never touches the kernel and a suite that
needs bpf() in 800 tests asks the kernel once.

The rule for a missing capability (`require`): the test skips with the probe's reason, except
where a skip would hide a broken setup, and then it fails with the same reason:
- the tools .ci/run installs (clang-22, llvm-22's llvm-objdump, bpftool, gcc with liburing) and
  the VM the README promises, when CI=true: in CI those tests must run, never quietly skip;
- the mainline kernel when PYBPF_URING_MAINLINE_REQUIRED=1, which the VM run sets: the point of
  booting a 7.2 kernel is that the tests/mainline group runs there.

tests/kernel_harness.py and the test modules import this module (a conftest cannot be imported
by name); it imports only the standard library at the top, and the package inside the probes
that need it, so importing it costs nothing.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable

import pytest

CLANG_NAME = "clang-22"
CLANG = shutil.which(CLANG_NAME) or CLANG_NAME
OBJDUMP = "/usr/lib/llvm-22/bin/llvm-objdump"   # llvm-22's own path: the llvm-objdump-22 link is optional
BPFTOOL = shutil.which("bpftool") or "bpftool"
GCC = shutil.which("gcc") or "gcc"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
MAINLINE_REQUIRED = "PYBPF_URING_MAINLINE_REQUIRED"


def _tool(name: str, path: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        return None if shutil.which(path) else f"{name} is not installed"
    return probe


def _gcc_liburing() -> str | None:
    """gcc builds a program against liburing (test_preps compares our preps with liburing's)."""
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write("#include <liburing.h>\nint main(void) { return 0; }\n")
        run = subprocess.run(["gcc", "-fsyntax-only", src], capture_output=True, text=True)
    return None if run.returncode == 0 else "liburing.h is not installed (liburing-dev)"


def _bpf() -> str | None:
    """bpf() permitted: creating a one-entry array map is what any loaded object does first."""
    from pybpf_uring.bpf import kernel
    try:
        kernel.close(kernel.map_create(kernel.BPF_MAP_TYPE_ARRAY, 4, 4, 1))
    except OSError as exc:
        return f"bpf() not permitted here: {exc}"
    return None


def _syscall_programs() -> str | None:
    """A sleepable BPF_PROG_TYPE_SYSCALL program (r0 = 0; exit) loads: test_run differential
    tests run the engine's programs in the kernel as these."""
    if reason := missing("bpf"):
        return reason
    from pybpf_uring.bpf import kernel
    sleepable = 1 << 4   # BPF_F_SLEEPABLE: the kernel accepts syscall programs only as sleepable
    try:
        loaded = kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL,
                                  bytes.fromhex("b700000000000000" "9500000000000000"), prog_flags=sleepable)
    except Exception as exc:   # noqa: BLE001 - any refusal means the same: not here
        return f"bpf() syscall programs unavailable here: {exc}"
    if loaded.fd < 0:
        return "bpf() syscall programs unavailable here: the kernel refused one"
    os.close(loaded.fd)
    return None


def _vmlinux() -> str | None:
    return None if os.path.exists(VMLINUX_BTF) else f"no {VMLINUX_BTF} (a kernel built without BTF)"


def _tracefs() -> str | None:
    from pybpf_uring.bpf import kernel
    try:
        kernel.tracefs_root("tracing tests cannot run")   # mounts it as root, as users get it
    except FileNotFoundError as exc:
        return str(exc)
    return None


def _io_uring() -> str | None:
    from pybpf_uring import Ring
    try:
        Ring(8).close()
    except OSError as exc:
        return f"io_uring is not usable here: {exc}"
    return None


def _mainline() -> str | None:
    from pybpf_uring import mainline
    support = mainline.probe()
    if support.ok:
        return None
    return (f"needs io_uring_bpf_ops; this kernel ({support.release}) lacks " + "; ".join(support.missing)
            + " (tests/test_mainline_host.py runs this group in a 7.2 VM)")


def _vm() -> str | None:
    """What tools/vm/setup.sh needs before it can fetch the rest: root, and QEMU or apt to get it."""
    if os.geteuid() != 0:
        return "the 7.2 VM needs root (tools/vm/setup.sh installs QEMU with apt)"
    if shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None:
        return "the 7.2 VM needs qemu-system-x86_64, or apt-get to install it"
    return None


def _jit() -> str | None:
    from pybpf_uring.runtime.engine.jit import jit_available
    return jit_available()


@dataclass(frozen=True)
class Probe:
    check: Callable[[], str | None]
    guaranteed_by: tuple[str, str] | None = None   # (variable, value): set so, missing is a failure


CI = ("CI", "true")        # .ci/run installs every tool the README lists: none may be missing


PROBES: dict[str, Probe] = {
    "clang": Probe(_tool(CLANG_NAME, CLANG_NAME), CI),
    "objdump": Probe(_tool("llvm-objdump (llvm-22)", OBJDUMP), CI),
    "bpftool": Probe(_tool("bpftool", "bpftool"), CI),
    "gcc": Probe(_gcc_liburing, CI),
    "git": Probe(_tool("git", "git")),
    "setpriv": Probe(_tool("setpriv", "setpriv")),
    "bpf": Probe(_bpf),
    "syscall_programs": Probe(_syscall_programs),
    "vmlinux": Probe(_vmlinux),
    "tracefs": Probe(_tracefs),
    "io_uring": Probe(_io_uring),
    "jit": Probe(_jit),
    "mainline": Probe(_mainline, (MAINLINE_REQUIRED, "1")),
    "vm": Probe(_vm, CI),
}


@functools.cache
def missing(name: str) -> str | None:
    """Why capability `name` is not here, or None when it is (probed once per process)."""
    return PROBES[name].check()


def require(name: str) -> None:
    """Skip the running test when `name` is missing, or fail it where it is guaranteed."""
    reason = missing(name)
    if reason is None:
        return
    guard = PROBES[name].guaranteed_by
    if guard is not None and os.environ.get(guard[0]) == guard[1]:
        pytest.fail(f"{reason}, and {guard[0]}={guard[1]} says this run must have it", pytrace=False)
    pytest.skip(reason)


def engine_backends() -> list[str]:
    """The userspace engine's backends this machine runs: the interpreter always, the JIT where
    its probe finds llvmlite's JIT working (the differential tests run every one)."""
    return ["interpreter"] + (["jit"] if missing("jit") is None else [])
