"""The test layers, and settings every test module sees before it is collected.

Markers (declared in pyproject.toml, --strict-markers) say what a test needs beyond Python:
  unit     nothing: no kernel, no external tool (every test without one of the others)
  tools    external programs, named: tools("clang", "objdump", "bpftool", "gcc", "git", "setpriv")
  kernel   the running kernel: kernel() is bpf(); kernel("tracefs", "vmlinux",
           "syscall_programs", "mainline") names more
  uring    a real io_uring
  vm       the Linux 7.2 VM (tools/vm), booted by one test
A test carries every marker it needs (`pytestmark` at a module's top, or on the test), so
`pytest -m unit` runs in seconds anywhere and `pytest -m "not vm"` never boots the VM.  Before a
marked test runs, each capability it names is checked by tests/probes.py (probed once), which
skips the test with the reason or, where the run guarantees it (CI=true for what .ci/run
installs), fails it.

The bpf_conformance cases are not part of this repository (pybpf_uring.conformance.cases_dir
reads their location from BPF_CONFORMANCE_TESTS).  When the variable is unset and a checkout of
the project's reference material sits beside this repository, its copy of the cases is the
default, so a developer with that layout runs the whole suite without setting anything; without
either, the tests that need the cases skip and say which variable to set.  Set here, before the
test modules compute their case lists, and inherited by the subprocesses they start.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import probes
from pybpf_uring.conformance import CASES_ENV

ROOT = Path(__file__).resolve().parents[1]
SIBLING_CASES = ROOT.parent / "shared" / "conformance" / "tests"

if CASES_ENV not in os.environ and SIBLING_CASES.is_dir():
    os.environ[CASES_ENV] = str(SIBLING_CASES)

# A marker's probes when it names none; `tools` always names its programs.
DEFAULT_PROBES = {"kernel": ("bpf",), "uring": ("io_uring",), "vm": ("vm",)}
LAYERS = ("tools", "kernel", "uring", "vm")


@pytest.hookimpl(tryfirst=True)   # before -m selects: a new test without markers is a unit test
def pytest_collection_modifyitems(config, items):
    for item in items:
        if not needed_probes(item):   # also checks every marker's names here, not mid-run
            item.add_marker(pytest.mark.unit)


def needed_probes(item) -> list[str]:
    names: list[str] = []
    for layer in LAYERS:
        for mark in item.iter_markers(layer):
            if layer == "tools" and not mark.args:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.tools needs the programs' names")
            for name in mark.args or DEFAULT_PROBES[layer]:
                if name not in probes.PROBES:
                    raise pytest.UsageError(f"{item.nodeid}: unknown probe {name!r} in "
                                            f"@pytest.mark.{layer} (tests/probes.py has {sorted(probes.PROBES)})")
                if name not in names:
                    names.append(name)
    return names


@pytest.hookimpl(tryfirst=True)   # before fixtures: a fixture may run the tool the test needs
def pytest_runtest_setup(item):
    for name in needed_probes(item):
        probes.require(name)
