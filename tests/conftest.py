"""Settings every test module sees before it is collected.

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

from pybpf_uring.conformance import CASES_ENV

ROOT = Path(__file__).resolve().parents[1]
SIBLING_CASES = ROOT.parent / "shared" / "conformance" / "tests"

if CASES_ENV not in os.environ and SIBLING_CASES.is_dir():
    os.environ[CASES_ENV] = str(SIBLING_CASES)
