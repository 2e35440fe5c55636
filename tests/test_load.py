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


# --- load: live maps, without an object ---------------------------------------------------------
from pybpf_uring import load as loadmod  # noqa: E402
from pybpf_uring.diagnostics import CompileError  # noqa: E402


@pytest.fixture
def hash_map():
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_HASH, 4, 8, 8, name="h")
    m = loadmod.KernelMap("h", fd, kernel.BPF_MAP_TYPE_HASH, 4, 8, 8)
    yield m
    kernel.close(fd)


def test_kernel_map_is_dict_like(hash_map):
    m = hash_map
    assert len(m) == 0 and m.get(1) is None and m.get(1, -1) == -1 and 1 not in m
    for k in range(5):
        m[k] = k * k
    assert sorted(m.keys()) == list(range(5)) and sorted(m) == list(range(5))
    assert sorted(m.items()) == [(k, k * k) for k in range(5)]
    assert sorted(m.values()) == [0, 1, 4, 9, 16]
    assert m[3] == 9 and 3 in m and len(m) == 5
    del m[3]
    with pytest.raises(KeyError):
        m[3]
    with pytest.raises(KeyError):
        del m[3]
    m[-1] = -2  # negative ints wrap to the map's width
    assert m[0xFFFFFFFF] == 0xFFFFFFFFFFFFFFFE


def test_kernel_map_update_flags(hash_map):
    m = hash_map
    m.set(1, 10, kernel.BPF_NOEXIST)
    with pytest.raises(FileExistsError, match="EEXIST.*BPF_NOEXIST"):
        m.set(1, 11, kernel.BPF_NOEXIST)
    m.set(1, 12, kernel.BPF_EXIST)
    with pytest.raises(FileNotFoundError, match="ENOENT.*BPF_EXIST"):
        m.set(2, 13, kernel.BPF_EXIST)
    assert dict(m.items()) == {1: 12}


def test_kernel_map_full_hash_is_e2big(hash_map):
    for k in range(8):
        hash_map[k] = k
    with pytest.raises(OSError, match="E2BIG.*full") as info:
        hash_map[100] = 1
    assert info.value.errno == errno.E2BIG


def test_kernel_map_rejects_wrong_sizes(hash_map):
    with pytest.raises(OverflowError, match="does not fit in 4 bytes"):
        hash_map[1 << 32] = 0
    with pytest.raises(ValueError, match="3 bytes but the map's key size is 4"):
        hash_map[b"abc"] = 0
    with pytest.raises(TypeError, match="not str"):
        hash_map["k"] = 0


def test_array_map_struct_values_and_index_errors():
    import ctypes

    class Pair(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint64), ("b", ctypes.c_uint32 * 2)]

    fd = kernel.map_create(kernel.BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(Pair), 3)
    try:
        m = loadmod.KernelMap("arr", fd, kernel.BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(Pair), 3)
        assert m[2] == bytes(16)  # arrays have every index, zeroed; 16 bytes read as bytes
        m[1] = Pair(7, (8, 9))
        m.value_type = Pair
        got = m[1]
        assert isinstance(got, Pair) and (got.a, list(got.b)) == (7, [8, 9])
        with pytest.raises(KeyError):
            m[3]  # past max_entries
        with pytest.raises(OSError, match="EINVAL.*cannot be deleted"):
            del m[1]
        with pytest.raises(FileExistsError, match="EEXIST"):  # every array index exists
            m.set(0, bytes(16), kernel.BPF_NOEXIST)
        with pytest.raises(OSError, match="E2BIG.*past max_entries"):
            m[3] = bytes(16)
        assert len(m) == 3
    finally:
        kernel.close(fd)


def test_map_values_decode_as_declared_int_type():
    from pybpf_uring import i32
    assert loadmod.unpack(b"\xff\xff\xff\xff", i32) == -1
    assert loadmod.unpack(b"\xff\xff\xff\xff", None) == 0xFFFFFFFF
    assert loadmod.unpack(b"\x01\x02\x03", None) == b"\x01\x02\x03"


# --- verifier logs ------------------------------------------------------------------------------
LOG = """\
func#0 @0
0: R1=ctx() R10=fp0
0: (61) r2 = *(u32 *)(r1 +8)          ; R1=ctx() R2=scalar()
1: (54) w2 &= 7                       ; R2=scalar(smin=0,smax=7)
2: (0f) r1 += r2                      ; R1=ctx(smin=0,smax=7)
3: (71) r0 = *(u8 *)(r1 +0)
variable ctx access var_off=(0x0; 0x7) disallowed
processed 4 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""


def test_failing_instruction_is_the_last_numbered_line():
    assert loadmod.failing_insn(LOG) == (3, "3: (71) r0 = *(u8 *)(r1 +0)")
    assert loadmod.failing_insn("nothing numbered\n") is None


def test_verifier_reason_skips_bookkeeping():
    assert loadmod.verifier_reason(LOG) == "variable ctx access var_off=(0x0; 0x7) disallowed"


def test_log_tail_says_what_it_left_out():
    tail = loadmod.log_tail("\n".join(str(i) for i in range(100)), 3)
    assert tail.splitlines() == ["... (97 earlier lines of the log omitted)", "97", "98", "99"]


def test_verifier_error_points_at_the_source_line(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text("int f(void)\n{\n\treturn ((char *)ctx)[i];\n}\n")
    line_info = [(0, str(src), 2, 1, ""), (2, str(src), 3, 9, "")]
    err = loadmod.verifier_error("f", errno.EACCES, LOG, line_info)
    assert isinstance(err, CompileError) and err.insn == 3 and err.program == "f"
    text = str(err).splitlines()
    assert text[0] == (f"{src}:3:9: error: the kernel verifier rejected program 'f': EACCES (the "
                       "verifier found an unsafe operation): variable ctx access var_off=(0x0; 0x7) "
                       "disallowed")
    assert text[1] == " return ((char *)ctx)[i];"
    assert text[2] == "        ^"
    assert text[3] == "  note: at instruction 3: (71) r0 = *(u8 *)(r1 +0)"
    assert "processed 4 insns" in text[-1]


def test_verifier_error_without_line_info_still_names_program_and_errno():
    err = loadmod.verifier_error("g", errno.EINVAL, "bad insn\nprocessed 0 insns\n", [])
    assert str(err).startswith("error: the kernel verifier rejected program 'g': EINVAL")
    assert err.insn is None


# --- load: whole objects, fd ownership ----------------------------------------------------------
from types import SimpleNamespace as NS  # noqa: E402


def map_spec(name, type_="hash", key=4, value=8, entries=16):
    return NS(name=name, type=type_, key_size=key, value_size=value, max_entries=entries, flags=0)


def prog_spec(name, kind):
    return NS(name=name, kind=kind, section=kind, sleepable=False, line_info=[], relocations=[],
              linked=lambda: pytest.fail("an unloadable program must not be linked"))


def test_object_of_maps_loads_and_closes_every_fd():
    before = open_fds()
    obj = NS(maps=[map_spec("a"), map_spec("b", "array", value=16, entries=4)], programs=[], license="GPL")
    with loadmod.load(obj) as loaded:
        assert set(loaded.maps) == {"a", "b"} and len(open_fds() - before) == 2
        loaded.maps["a"][1] = 2
        assert loaded.maps["b"].info().max_entries == 4
    assert open_fds() == before
    with pytest.raises(ValueError, match="map 'a' is closed"):
        loaded.maps["a"][1]
    loaded.close()  # twice is harmless


def test_failure_half_way_closes_what_was_created():
    before = open_fds()
    obj = NS(maps=[map_spec("ok1"), map_spec("ok2"), map_spec("broken", entries=0)], programs=[],
             license="GPL")
    with pytest.raises(OSError, match="BPF_MAP_CREATE failed: EINVAL.*'broken'"):
        loadmod.load(obj)
    assert open_fds() == before


def test_iouring_program_is_refused_with_what_is_missing():
    before = open_fds()
    obj = NS(maps=[map_spec("hits")], programs=[prog_spec("pingpong", "iouring")], license="GPL")
    with pytest.raises(loadmod.UnsupportedProgramError) as info:
        loadmod.load(obj)
    text = str(info.value)
    assert "'pingpong'" in text and "never merged" in text and "BPF_PROG_TYPE_SYSCALL" in text
    assert "Ring" in text and isinstance(info.value, CompileError)
    assert open_fds() == before


def test_loop_step_needs_io_uring_bpf_ops_in_kernel_btf():
    obj = NS(maps=[], programs=[prog_spec("step", "struct_ops")], license="GPL")
    with pytest.raises(loadmod.UnsupportedProgramError, match="'step'.*io_uring_bpf_ops|struct_ops"):
        loadmod.load(obj)


LOOP_LOG = """\
0: R1=ctx() R10=fp0
0: (79) r2 = *(u64 *)(r1 +0)          ; R1=ctx() R2=scalar()
1: (55) if r2 != 0x0 goto pc-2 0: R1=ctx() R2=scalar(umin=1) R10=fp0
0: (79) r2 = *(u64 *)(r1 +0)          ; R1=ctx() R2=scalar()
1: (55) if r2 != 0x0 goto pc-2 infinite loop detected at insn 0
cur state: R1=ctx() R2=scalar(umin=1) R10=fp0
old state: R1=ctx() R2=scalar(umin=1) R10=fp0
processed 13 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0
"""


def test_reason_written_after_an_instruction_is_found():
    assert loadmod.verifier_reason(LOOP_LOG) == "infinite loop detected at insn 0"
    assert loadmod.failing_insn(LOOP_LOG) == (1, "1: (55) if r2 != 0x0 goto pc-2")
