"""The load stage against the real kernel: the bpf() layer (`kernel`), and loading whole objects
(`load`) compiled from C fixtures in tests/data/load_*.c with clang-22.

Every test talks to the running kernel; they skip as a group where bpf() is not permitted.
"""
from __future__ import annotations

import errno
import os
import struct

import pytest

from pybpf_uring import kernel

# r0 = 42; exit — the smallest program every type accepts.
RET42 = bytes([0xB7, 0, 0, 0, 42, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


def _bpf_usable() -> bool:
    try:
        kernel.close(kernel.map_create(kernel.BPF_MAP_TYPE_ARRAY, 4, 4, 1))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _bpf_usable(), reason="bpf() not permitted here")


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


# --- kernel: the syscall layer ------------------------------------------------------------------
def test_hash_map_lookup_update_delete_next_key():
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_HASH, 4, 8, 16, name="t_hash")
    try:
        key = struct.pack("<I", 7)
        assert kernel.map_lookup_elem(fd, key, 8) is None
        kernel.map_update_elem(fd, key, struct.pack("<Q", 99))
        assert kernel.map_lookup_elem(fd, key, 8) == struct.pack("<Q", 99)
        assert kernel.map_get_next_key(fd, None, 4) == key
        assert kernel.map_get_next_key(fd, key, 4) is None
        kernel.map_delete_elem(fd, key)
        with pytest.raises(FileNotFoundError, match="BPF_MAP_DELETE_ELEM failed: ENOENT"):
            kernel.map_delete_elem(fd, key)
    finally:
        kernel.close(fd)


@pytest.mark.parametrize("present, flags, error", [
    (True, kernel.BPF_NOEXIST, FileExistsError),
    (False, kernel.BPF_EXIST, FileNotFoundError),
    (True, kernel.BPF_EXIST, None),
    (False, kernel.BPF_NOEXIST, None),
    (True, kernel.BPF_ANY, None),
    (False, kernel.BPF_ANY, None),
])
def test_update_flags_on_hash(present, flags, error):
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_HASH, 4, 4, 4)
    try:
        key = b"\1\0\0\0"
        if present:
            kernel.map_update_elem(fd, key, b"old!")
        if error:
            with pytest.raises(error, match="EEXIST|ENOENT") as info:
                kernel.map_update_elem(fd, key, b"new!", flags)
            assert "BPF_EXIST" in str(info.value) or "BPF_NOEXIST" in str(info.value)
        else:
            kernel.map_update_elem(fd, key, b"new!", flags)
            assert kernel.map_lookup_elem(fd, key, 4) == b"new!"
    finally:
        kernel.close(fd)


def test_map_create_error_names_the_map_and_errno():
    with pytest.raises(OSError, match=r"BPF_MAP_CREATE failed: EINVAL .*'bad'") as info:
        kernel.map_create(kernel.BPF_MAP_TYPE_ARRAY, 4, 8, 0, name="bad")  # zero entries
    assert info.value.errno == errno.EINVAL


def test_object_info_of_a_map():
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_ARRAY, 4, 16, 3, name="info.me")
    try:
        info = kernel.map_info(fd)
        assert (info.type, info.key_size, info.value_size, info.max_entries, info.name) == \
            (kernel.BPF_MAP_TYPE_ARRAY, 4, 16, 3, b"info.me")
    finally:
        kernel.close(fd)


def test_prog_load_and_test_run_syscall_program():
    res = kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL, RET42, name="ret42",
                           prog_flags=kernel.BPF_F_SLEEPABLE, log_level=1)
    assert res.errno == 0 and res.fd >= 0, res.log
    try:
        assert "processed 2 insns" in res.log
        run = kernel.prog_test_run(res.fd, ctx=b"12345678")
        assert run.retval == 42 and run.ctx == b"12345678"
        info = kernel.prog_info(res.fd)
        assert info.type == kernel.BPF_PROG_TYPE_SYSCALL and info.name == b"ret42"
    finally:
        kernel.close(res.fd)


def test_prog_load_rejection_is_returned_with_log():
    res = kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL, RET42, name="not_sleepable", log_level=1)
    assert res.fd == -1 and res.errno == errno.EINVAL
    assert "Syscall programs can only be sleepable" in res.log


def test_prog_load_refuses_partial_instructions():
    with pytest.raises(ValueError, match="whole number of instructions"):
        kernel.prog_load(kernel.BPF_PROG_TYPE_SYSCALL, RET42[:12])


def test_errno_meaning_names_the_errno():
    assert kernel.errno_meaning(errno.EACCES).startswith("EACCES (the verifier")
    assert kernel.errno_meaning(524).startswith("ENOTSUPP")
