"""The load stage against the real kernel: the bpf() layer (`kernel`), and loading whole objects
(`load`) compiled from C fixtures in tests/data/load_*.c with clang-22.

Every test talks to the running kernel; they skip as a group where bpf() is not permitted.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import random
import struct
import subprocess
from types import SimpleNamespace as NS

import pytest
from probes import CLANG

from pybpf_uring import BpfObject
from pybpf_uring.bpf import isa, kernel
from pybpf_uring.bpf import load as loadmod
from pybpf_uring.errors import CompileError, LoadError
from pybpf_uring.bpf.isa import Instruction as I

# r0 = 42; exit — the smallest program every type accepts.
RET42 = bytes([0xB7, 0, 0, 0, 42, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


pytestmark = pytest.mark.kernel


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
    assert isinstance(err, LoadError) and not isinstance(err, CompileError) and err.insn == 3 and err.program == "f"
    text = str(err).splitlines()
    assert text[0] == (f"{src}:3:9: error: the kernel verifier rejected program 'f': EACCES (the "
                       "verifier found an unsafe operation): variable ctx access var_off=(0x0; 0x7) "
                       "disallowed")
    assert text[1] == " return ((char *)ctx)[i];"
    assert text[2] == "        ^"
    assert text[3] == ("  note: a ctx can only be read at constant offsets: copy the field to a "
                       "local first")
    assert text[4] == "  at instruction 3: (71) r0 = *(u8 *)(r1 +0)"
    assert text[5] == "  verifier log (tail):" and text[6] == "      func#0 @0"
    assert "processed 4 insns" in text[-1]


def test_verifier_error_without_line_info_still_names_program_and_errno():
    err = loadmod.verifier_error("g", errno.EINVAL, "bad insn\nprocessed 0 insns\n", [])
    assert str(err).startswith("error: the kernel verifier rejected program 'g': EINVAL")
    assert err.insn is None


# --- load: whole objects, fd ownership ----------------------------------------------------------


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
    with pytest.raises(LoadError, match="cannot create map 'broken': BPF_MAP_CREATE failed: EINVAL"):
        loadmod.load(obj)
    assert open_fds() == before


def test_iouring_program_is_refused_with_what_is_missing():
    before = open_fds()
    obj = NS(maps=[map_spec("hits")], programs=[prog_spec("pingpong", "iouring")], license="GPL")
    with pytest.raises(loadmod.UnsupportedProgramError) as info:
        loadmod.load(obj)
    text = str(info.value)
    assert "'pingpong'" in text and "never merged" in text and "BPF_PROG_TYPE_SYSCALL" in text
    assert "Ring" in text and isinstance(info.value, LoadError)
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


# --- load: clang-compiled objects in the kernel -------------------------------------------------

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
@pytest.fixture(scope="module")
def c_object(tmp_path_factory):
    """`c_object("load_syscall")` → the BpfObject clang-22 makes of tests/data/load_syscall.c
    (for tests marked tools("clang"))."""
    out = tmp_path_factory.mktemp("objs")
    cache: dict = {}

    def build(name: str):
        if name not in cache:
            path = out / f"{name}.o"
            subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c",
                            os.path.join(DATA, f"{name}.c"), "-o", str(path)], check=True)
            cache[name] = BpfObject.read(str(path))
        return cache[name]
    return build


class Args(ctypes.Structure):
    """struct args of load_syscall.c."""
    _fields_ = [("a", ctypes.c_uint64), ("b", ctypes.c_uint64), ("op", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("out", ctypes.c_uint64)]


M64 = (1 << 64) - 1


def calc_reference(a: int, b: int, op: int) -> int:
    """What calc() in load_syscall.c computes, in Python."""
    if op == 0:
        return (a + b) & M64
    if op == 1:
        return (a - b) & M64
    if op == 2:
        return (a * b) & M64
    if op == 3:
        return a // b if b else 0
    if op == 4:
        return a ^ b
    if op == 5:
        return (a << (b & 63)) & M64
    if op == 6:
        signed = a - (1 << 64) if a >> 63 else a
        return (signed >> (b & 63)) & M64
    return M64


def calc_inputs(n: int = 300) -> list[tuple[int, int, int]]:
    rnd = random.Random(1234)
    edges = [0, 1, 2, 63, 64, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 63, M64, M64 - 1]
    cases = [(a, b, op) for op in range(8) for a in edges[::3] for b in edges[::4]]
    cases += [(rnd.getrandbits(64), rnd.getrandbits(rnd.choice((3, 6, 32, 64))), rnd.randrange(9))
              for _ in range(n)]
    return cases


@pytest.mark.tools("clang")
def test_syscall_program_matches_python_reference(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        calc = live.programs["calc"]
        assert calc.kind == "syscall" and calc.info().type == kernel.BPF_PROG_TYPE_SYSCALL
        counts = [0] * 8
        last = {}
        for a, b, op in calc_inputs():
            ctx = Args(a=a, b=b, op=op, flags=0xABCD, out=0)
            res = calc.test_run(ctx)
            want = calc_reference(a, b, op)
            assert isinstance(res.ctx, Args) and res.ctx is not ctx
            assert (res.ctx.out, res.ctx.a, res.ctx.b, res.ctx.flags) == (want, a, b, 0xABCD), (a, b, op)
            assert ctx.out == 0  # the caller's ctx is left as it was
            assert res.retval == (want ^ (want >> 32)) & 0xFFFFFFFF
            counts[op & 7] += 1
            last[op] = (a, b)
        # the program's map writes, read from the host
        assert live.maps["counters"].items() == list(enumerate(counts))
        # values decode through the map's BTF value type, struct pair
        assert {k: (v.a, v.b) for k, v in live.maps["last"].items()} == last
        assert type(live.maps["last"][op]).__name__ == "pair"


@pytest.mark.tools("clang")
def test_ctx_as_bytes_comes_back_as_bytes(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        raw = bytes(Args(a=40, b=2, op=0))
        res = live.programs["calc"].test_run(raw)
        assert isinstance(res.ctx, bytes) and Args.from_buffer_copy(res.ctx).out == 42
        assert res.retval == 42 and res.signed_retval == 42


@pytest.mark.tools("clang")
def test_negative_return_value_is_32_bits(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        res = live.programs["calc"].test_run(Args(a=0, b=1, op=1))  # 0 - 1 = ~0
        assert res.ctx.out == M64 and res.retval == 0 and res.signed_retval == 0
        res = live.programs["calc"].test_run(Args(a=0xFFFFFFFF, b=0, op=0))
        assert res.retval == 0xFFFFFFFF and res.signed_retval == -1


@pytest.mark.tools("clang")
def test_program_reads_what_the_host_wrote(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        counters = live.maps["counters"]
        values = {0: 5, 3: 1 << 40, 7: 11}
        for k, v in values.items():
            counters[k] = v
        res = live.programs["sum_counters"].test_run(Args())
        assert res.ctx.out == sum(values.values()) and res.retval == len(values)
        counters.set(3, 0, kernel.BPF_EXIST)
        assert live.programs["sum_counters"].test_run(Args()).retval == 2


@pytest.mark.tools("clang")
def test_update_flags_on_a_loaded_hash_map(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        last = live.maps["last"]
        live.programs["calc"].test_run(Args(a=1, b=2, op=4))  # the program inserts key 4
        with pytest.raises(FileExistsError, match="EEXIST.*BPF_NOEXIST"):
            last.set(4, bytes(16), kernel.BPF_NOEXIST)
        with pytest.raises(FileNotFoundError, match="ENOENT.*BPF_EXIST"):
            last.set(5, bytes(16), kernel.BPF_EXIST)
        del last[4]
        assert 4 not in last and len(last) == 0


@pytest.mark.tools("clang")
def test_maps_are_created_as_declared(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        def shape(name):
            info = live.maps[name].info()
            return info.type, info.key_size, info.value_size, info.max_entries

        assert shape("counters") == (kernel.BPF_MAP_TYPE_ARRAY, 4, 8, 8)
        assert shape("last") == (kernel.BPF_MAP_TYPE_HASH, 4, 16, 64)
        info = live.maps["counters"].info()
        assert info.btf_id != 0 and info.btf_value_type_id != 0  # bpftool can print its values


@pytest.mark.tools("clang")
def test_socket_filter_on_packets(c_object):
    def frame(proto: int, payload: bytes) -> bytes:
        ip = bytes([0x45, 0, 0, 20 + len(payload), 0, 0, 0, 0, 64, proto, 0, 0]) + bytes(8)
        return bytes(12) + b"\x08\x00" + ip + payload

    with loadmod.load(c_object("load_socket")) as live:
        keep = live.programs["keep_udp"]
        assert keep.info().type == kernel.BPF_PROG_TYPE_SOCKET_FILTER
        rnd = random.Random(7)
        for _ in range(50):
            proto = rnd.choice((6, 17, 1))
            pkt = frame(proto, rnd.randbytes(rnd.randrange(0, 200)))
            res = keep.test_run(data=pkt)
            assert res.retval == (len(pkt) - 14 if proto == 17 else 0)
            # the packet comes back from the network header on as it went in (the kernel
            # rebuilds the Ethernet header it had pulled, without the EtherType)
            assert len(res.data) == len(pkt) and res.data[14:] == pkt[14:]
        with pytest.raises(ValueError, match="at least 14 bytes"):
            keep.test_run(data=b"short")


@pytest.mark.tools("clang")
def test_tracepoint_program_loads_but_cannot_be_test_run(c_object):
    with loadmod.load(c_object("load_trace")) as live:
        prog = live.programs["count_completions"]
        assert prog.info().type == kernel.BPF_PROG_TYPE_TRACEPOINT
        assert live.maps["completions"][0] == 0
        with pytest.raises(loadmod.UnsupportedProgramError, match="cannot test-run tracepoint"):
            prog.test_run()


@pytest.mark.tools("clang")
def test_loaded_object_closes_every_fd(c_object):
    obj = c_object("load_syscall")
    before = open_fds()
    live = loadmod.load(obj)
    # two maps, two programs, and the object's BTF
    assert len(open_fds() - before) == 4 + (live.btf is not None)
    live.close()
    assert open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        live.programs["calc"].test_run(Args())


@pytest.mark.tools("clang")
def test_verifier_rejection_names_the_c_source_line(c_object):
    obj = c_object("load_reject")
    before = open_fds()
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(obj, only={"variable_ctx"})
    assert open_fds() == before
    err = info.value
    assert isinstance(err, LoadError) and err.program == "variable_ctx" and err.errno == errno.EACCES
    lines = str(err).splitlines()
    assert lines[0].split(":")[0].endswith("load_reject.c") and ":20:" in lines[0]
    assert "rejected program 'variable_ctx': EACCES" in lines[0]
    assert "variable ctx access" in lines[0] and "disallowed" in lines[0]
    assert lines[1].strip() == "return ((__u8 *)ctx)[i];"
    assert lines[2].strip().startswith("^")
    assert "verifier log (tail)" in str(err) and "processed" in str(err)


@pytest.mark.tools("clang")
def test_unbounded_loop_is_rejected_at_its_line(c_object):
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(c_object("load_reject"), only={"spin"})
    text = str(info.value)
    assert "infinite loop detected" in text and "load_reject.c:28:" in text
    assert "while (*(volatile __u64 *)&ctx->a)" in text


@pytest.mark.tools("clang")
def test_the_first_rejection_stops_the_load_and_frees_everything(c_object):
    obj = c_object("load_reject")
    before = open_fds()
    with pytest.raises(loadmod.VerifierError):
        loadmod.load(obj)
    assert open_fds() == before


def test_frozen_map_refuses_host_writes():
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_ARRAY, 4, 8, 1, flags=kernel.BPF_F_RDONLY_PROG)
    try:
        kernel.map_update_elem(fd, bytes(4), struct.pack("<Q", 5))
        kernel.map_freeze(fd)
        with pytest.raises(PermissionError, match="BPF_MAP_UPDATE_ELEM failed: EPERM.*frozen"):
            kernel.map_update_elem(fd, bytes(4), struct.pack("<Q", 6))
        assert kernel.map_lookup_elem(fd, bytes(4), 8) == struct.pack("<Q", 5)
    finally:
        kernel.close(fd)


def test_xlated_program_is_what_was_loaded():
    res = kernel.prog_load(kernel.BPF_PROG_TYPE_SOCKET_FILTER, RET42, name="x")
    try:
        assert kernel.prog_xlated(res.fd) == RET42
    finally:
        kernel.close(res.fd)


def test_refusal_without_a_log_says_so():
    err = loadmod.verifier_error("h", errno.EPERM, "", [])
    assert str(err) == ("error: the kernel refused to load program 'h': EPERM (operation not "
                        "permitted (needs CAP_BPF/CAP_SYS_ADMIN, or a GPL license))")


@pytest.mark.parametrize("given", [2, "array", "ARRAY", "BPF_MAP_TYPE_ARRAY"])
def test_map_type_spellings(given):
    assert loadmod.map_type_number(given) == kernel.BPF_MAP_TYPE_ARRAY


def test_unknown_map_type_is_a_diagnosed_error():
    with pytest.raises(LoadError, match="unknown map type 'treemap'"):
        loadmod.map_type_number("treemap")


# --- load: hand-assembled programs through load() (no ELF) --------------------------------------


def store_1234_in_map() -> list:
    """m[0] = 1234 through bpf_map_lookup_elem, after a lddw that makes slot ≠ list index."""
    return [
        I.lddw(6, 0x1122334455667788),   # slots 0-1
        I(0x62, 10, 0, -4, 0),           # 2: *(u32 *)(r10 - 4) = 0
        I(0xBF, 2, 10),                  # 3: r2 = r10
        I(0x07, 2, 0, 0, -4),            # 4: r2 += -4
        I.lddw(1, 0),                    # 5-6: r1 = map m   (relocated)
        I(0x85, 0, 0, 0, 1),             # 7: call bpf_map_lookup_elem
        I(0x15, 0, 0, 2, 0),             # 8: if r0 == 0 goto +2
        I(0xB7, 1, 0, 0, 1234),          # 9: r1 = 1234
        I(0x7B, 0, 1, 0, 0),             # 10: *(u64 *)(r0 + 0) = r1
        I(0xB7, 0, 0, 0, 0),             # 11: r0 = 0
        I(0x95),                         # 12: exit
    ]


def hand_prog(name, kind, insns, relocations=()):
    spec = NS(name=name, kind=kind, section=kind, sleepable=False, instructions=insns,
              relocations=list(relocations), line_info=[], func_info=[])
    spec.linked = lambda: spec
    return spec


def test_map_relocation_binds_the_map_fd():
    prog = hand_prog("store", "syscall", store_1234_in_map(), [NS(insn_index=5, symbol="m", kind="map")])
    obj = NS(maps=[map_spec("m", "array", entries=1)], programs=[prog], license="GPL")
    with loadmod.load(obj) as live:
        assert live.maps["m"][0] == 0
        assert live.programs["store"].test_run().retval == 0
        assert live.maps["m"][0] == 1234
        info = live.programs["store"].info()
        assert info.nr_map_ids == 1


def test_reference_to_a_missing_map_is_diagnosed():
    prog = hand_prog("store", "syscall", store_1234_in_map(), [NS(insn_index=5, symbol="nope", kind="map")])
    obj = NS(maps=[map_spec("m", "array", entries=1)], programs=[prog], license="GPL")
    before = open_fds()
    with pytest.raises(LoadError, match="refers to map 'nope'"):
        loadmod.load(obj)
    assert open_fds() == before


def test_relocation_that_is_not_a_lddw_is_diagnosed():
    prog = hand_prog("store", "syscall", store_1234_in_map(), [NS(insn_index=4, symbol="m", kind="map")])
    obj = NS(maps=[map_spec("m", "array", entries=1)], programs=[prog], license="GPL")
    with pytest.raises(LoadError, match="not an ld_imm64"):
        loadmod.load(obj)


def test_mixed_object_loads_kernel_programs_and_explains_the_rest():
    ret42 = isa.decode(RET42)
    obj = NS(maps=[], license="GPL",
             programs=[prog_spec("pingpong", "iouring"), hand_prog("add", "syscall", ret42),
                       hand_prog("pkt", "socket_filter", ret42)])
    with loadmod.load(obj) as live:
        assert sorted(live.programs) == ["add", "pkt"]
        assert live.programs["add"].test_run(b"").retval == 42
        with pytest.raises(loadmod.UnsupportedProgramError, match="'pingpong'.*never merged"):
            live.programs["pingpong"]
        assert "pingpong" in live.programs.skipped
    with pytest.raises(loadmod.UnsupportedProgramError, match="'pingpong'"):
        loadmod.load(obj, only={"pingpong"})
    with pytest.raises(KeyError, match="no program named 'nothere'|nothere"):
        loadmod.load(obj, only={"nothere"})


def test_accepted_program_keeps_its_log_when_asked():
    obj = NS(maps=[], license="GPL", programs=[hand_prog("add", "syscall", isa.decode(RET42))])
    with loadmod.load(obj, log_level=kernel.BPF_LOG_LEVEL1 | kernel.BPF_LOG_STATS) as live:
        assert "processed 2 insns" in live.programs["add"].verifier_log
        assert live.programs["add"].verified_insns == 2
    with loadmod.load(obj) as live:
        assert live.programs["add"].verifier_log == ""


def test_syscall_test_run_refuses_packet_data():
    obj = NS(maps=[], license="GPL", programs=[hand_prog("add", "syscall", isa.decode(RET42))])
    with loadmod.load(obj) as live:
        with pytest.raises(ValueError, match="ctx only"):
            live.programs["add"].test_run(data=b"x" * 20)


def test_rejected_hand_program_without_line_info():
    # r0 = *(u64 *)(r9 + 0): r9 was never written
    bad = [I(0x79, 0, 9, 0, 0), I(0x95)]
    obj = NS(maps=[map_spec("m")], license="GPL", programs=[hand_prog("bad", "syscall", bad)])
    before = open_fds()
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(obj)
    assert open_fds() == before
    assert "R9 !read_ok" in str(info.value) and info.value.insn == 0
    assert str(info.value).startswith("error: the kernel verifier rejected program 'bad': EACCES")


# --- global data and BTF ------------------------------------------------------------------------
@pytest.mark.tools("clang")
def test_global_data_sections_are_maps_the_program_uses(c_object):
    with loadmod.load(c_object("load_data")) as live:
        prog = live.programs["accumulate"]
        total = 0
        values = [0, 1, 99, 100, 101, 5000, 7]
        for v in values:
            out = struct.unpack("<QQ", prog.test_run(struct.pack("<QQ", v, 0)).ctx)[1]
            assert out == min(v, 100) + 5
            total += out
        bss = live.maps[".bss"][0]
        assert struct.unpack("<QQ", bss) == (total, len(values))
        assert live.maps[".rodata"][0] == 100 and live.maps[".data"][0] == 5
        live.maps[".data"][0] = 1000  # host writes reach the program
        assert struct.unpack("<QQ", prog.test_run(struct.pack("<QQ", 1, 0)).ctx)[1] == 1001
        with pytest.raises(PermissionError, match="EPERM"):  # .rodata is frozen
            live.maps[".rodata"][0] = 1


@pytest.mark.tools("clang")
def test_programs_carry_the_objects_btf(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        assert live.btf is not None and live.btf_error == ""
        info = live.programs["calc"].info()
        assert info.btf_id != 0 and info.nr_func_info == 1 and info.nr_line_info > 10


@pytest.mark.tools("clang")
def test_rejection_log_quotes_source_lines_from_btf(c_object):
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(c_object("load_reject"), only={"variable_ctx"})
    assert "; return ((__u8 *)ctx)[i]; @ load_reject.c:20" in info.value.log


@pytest.mark.tools("clang")
def test_program_whose_btf_the_kernel_refuses_loads_without_it(c_object):
    obj = c_object("load_syscall")
    calc = obj.program("calc")
    # func_info naming a type that is not a FUNC: the kernel refuses the records, not the code
    broken = dataclasses.replace(calc, func_info=(dataclasses.replace(calc.func_info[0], type_id=1),))
    mixed = dataclasses.replace(obj, programs=[broken])
    before = open_fds()
    with loadmod.load(mixed) as live:
        assert live.btf_error.endswith("'calc' was loaded without BTF, which the kernel refused: EINVAL "
                                       "(the kernel rejected an argument or instruction as invalid): "
                                       "invalid type id 1 in func info")
        assert live.programs["calc"].info().btf_id == 0
        assert live.programs["calc"].test_run(Args(a=2, b=3, op=2)).ctx.out == 6
    assert open_fds() == before


@pytest.fixture
def prog_loads(monkeypatch):
    """Every BPF_PROG_LOAD the loader makes, as (log_level, with BTF?, errno)."""
    calls, real = [], kernel.prog_load

    def counted(*args, **kw):
        res = real(*args, **kw)
        calls.append((args[5], bool(kw.get("btf_fd")), res.errno))
        return res
    monkeypatch.setattr(kernel, "prog_load", counted)
    return calls


@pytest.mark.tools("clang")
def test_a_rejection_costs_one_walk_with_a_log(c_object, prog_loads):
    """The fast attempt without a log, then one logged walk with the same BTF to explain it; no
    attempt without BTF, since the verifier walked the program (its BTF was not the problem)."""
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(c_object("load_reject"), only={"variable_ctx"})
    assert prog_loads == [(0, True, errno.EACCES), (1, True, errno.EACCES)]
    assert "variable ctx access" in str(info.value)


@pytest.mark.tools("clang")
def test_a_walk_to_the_verifiers_limit_is_explained_from_the_logs_tail(c_object, prog_loads):
    """fib() is global with BTF, so the verifier walks it to its 1M-instruction limit: a whole
    log of that walk is ~180 MB.  The explanation keeps the kernel's tail of it, and the errno
    is the refusal's (E2BIG), not the ENOSPC of a log that did not fit."""
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(c_object("read_recursion"))
    err = info.value
    assert err.errno == errno.E2BIG and "BPF program is too large" in str(err)
    assert "read_recursion.c:7:" in str(err) and len(err.log) <= loadmod.DEFAULT_LOG_SIZE
    assert [level for level, _, _ in prog_loads] == [0, 1]


def test_btf_the_kernel_refuses_is_skipped_not_fatal():
    obj = NS(maps=[], license="GPL", kernel_btf=lambda: b"not btf at all",
             programs=[hand_prog("add", "syscall", isa.decode(RET42))])
    with loadmod.load(obj) as live:
        assert live.btf is None and "BTF was not loaded" in live.btf_error
        assert live.programs["add"].test_run().retval == 42


@pytest.mark.tools("clang")
def test_ctypes_from_btf_follow_the_c_layout():
    from pybpf_uring.bpf import btf as btfmod
    src = ("struct inner { unsigned char tag; long long v; };\n"
           "struct outer { short s; struct inner in[2]; unsigned int u; char pad[3]; };\n"
           "struct outer o; union u { int i; unsigned long long l; } un; enum e { A = -1 } en;\n"
           "struct bits { int a : 3; } bf;\n")
    raw = subprocess.run([CLANG, "-g", "-target", "bpf", "-c", "-x", "c", "-", "-o", "-"],
                         input=src.encode(), check=True, capture_output=True).stdout
    obj = BpfObject.read(raw)
    b = obj.btf
    outer = loadmod.ctype_from_btf(b, b.find("outer", "struct"))
    assert ctypes.sizeof(outer) == 48
    assert [(n, getattr(outer, n).offset) for n in ("s", "in", "u", "pad")] == \
        [("s", 0), ("in", 8), ("u", 40), ("pad", 44)]
    value = outer.from_buffer_copy(struct.pack("<h6x", -2) + struct.pack("<B7xq", 9, -5) * 2 +
                                   struct.pack("<I3s1x", 7, b"abc"))
    inner = getattr(value, "in")  # a C member may be a Python keyword
    assert (value.s, inner[1].tag, inner[1].v, value.u) == (-2, 9, -5, 7)
    assert repr(value).startswith("outer(s=-2, in=[inner(tag=9, v=-5)")
    assert ctypes.sizeof(loadmod.ctype_from_btf(b, b.find("u", "union"))) == 8
    assert loadmod.ctype_from_btf(b, b.find("e", "enum")) is ctypes.c_int32
    assert loadmod.ctype_from_btf(b, b.find("bits", "struct")) is None  # bitfields: bytes


@pytest.mark.tools("clang")
def test_ctx_shorter_than_what_the_program_reads(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        with pytest.raises(OSError, match="EINVAL.*'calc'.*must cover every ctx field") as info:
            live.programs["calc"].test_run(b"\0" * 8)
        assert info.value.errno == errno.EINVAL
        with pytest.raises(ValueError, match="65535"):
            live.programs["calc"].test_run(b"\0" * 70000)


def test_per_cpu_maps_hold_one_value_per_possible_cpu():
    ncpu = loadmod.possible_cpus()
    assert ncpu >= 1
    fd = kernel.map_create(kernel.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 2)
    try:
        m = loadmod.KernelMap("pc", fd, kernel.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 2)
        assert m.per_cpu and m[0] == [0] * ncpu
        m[1] = list(range(ncpu))
        assert m[1] == list(range(ncpu))
        m[0] = 7  # one value for every CPU
        assert m.items() == [(0, [7] * ncpu), (1, list(range(ncpu)))]
        with pytest.raises(ValueError, match=f"one value per possible CPU \\({ncpu}\\)"):
            m[0] = [1] * (ncpu + 1)
    finally:
        kernel.close(fd)


@pytest.mark.tools("clang")
def test_every_rejected_program_is_reported_at_once(c_object):
    obj = c_object("load_reject")
    before = open_fds()
    with pytest.raises(loadmod.VerifierError) as info:
        loadmod.load(obj)
    assert open_fds() == before
    err = info.value
    assert [e.program for e in err.rejections] == ["variable_ctx", "spin"]
    assert len(err.diagnostics) == 2 and err.program == "variable_ctx"
    text = str(err)
    assert "load_reject.c:20:" in text and "load_reject.c:28:" in text


# --- a program written in Python ----------------------------------------------------------------
DSL = '''
from pybpf_uring import syscall, Struct, i32, i64, u64, u32, ArrayMap, HashMap

hits = ArrayMap(u64, 4)
balance = HashMap(u32, i64, 8)

class Args(Struct):
    a: u64
    b: u64

def twice(x: u64) -> u64:
    return x * 2

@syscall
def add(ctx: Args) -> i32:
    hits[1] += 1
    balance[u32(ctx.a)] = 0 - i64(ctx.a)
    ctx.b = twice(ctx.a)
    return 7
'''


@pytest.mark.tools("clang")
def test_python_program_loads_with_its_subprogram_and_btf(tmp_path):
    from pybpf_uring import compile_source
    path = tmp_path / "prog.py"
    path.write_text(DSL)
    try:
        obj = compile_source(DSL, str(path))
    except Exception as exc:  # the compiler's own tests own its failures
        pytest.skip(f"the compiler cannot build the sample here: {exc}")
    namespace: dict = {}
    exec(compile(DSL, str(path), "exec", dont_inherit=True), namespace)  # not our __future__
    before = open_fds()
    with loadmod.load(obj) as live:
        add = live.programs["add"]
        for a in (1, 2, 3, 21):
            res = add.test_run(namespace["Args"](a=a))
            assert res.retval == 7 and isinstance(res.ctx, namespace["Args"]) and res.ctx.b == 2 * a
        assert live.maps["hits"][1] == 4
        assert dict(live.maps["balance"].items()) == {1: -1, 2: -2, 3: -3, 21: -21}  # i64, signed
        assert live.btf_error == "" and add.info().nr_line_info > 3
    assert open_fds() == before


@pytest.mark.parametrize("reason, hint", [
    ("math between fp pointer and register with unbounded min value is not allowed", "mask it"),
    ("R0 invalid mem access 'map_value_or_null'", "can return NULL"),
    ("infinite loop detected at insn 0", "constant bound"),
    ("combined stack size of 2 calls is 544. Too large", "512 bytes"),
    ("R9 !read_ok", "read before anything was written"),
    ("something new in a future kernel", ""),
])
def test_verifier_hints(reason, hint):
    assert (hint in loadmod.verifier_hint(reason)) if hint else loadmod.verifier_hint(reason) == ""


@pytest.mark.tools("clang")
@pytest.mark.kernel("tracefs")
def test_tracepoint_program_attached_counts_real_events(c_object):
    before = open_fds()
    with loadmod.load(c_object("load_trace")) as live:
        seen = live.maps["getpid_seen"]
        seen[0] = os.getpid()
        try:
            attachment = live.programs["getpid_calls"].attach()
        except FileNotFoundError as exc:  # tracefs not mounted, or no syscall tracepoints
            pytest.skip(str(exc))
        with attachment:
            for _ in range(25):
                os.getpid()  # CPython does not cache it: each is a real getpid(2)
        assert seen[1] == 25
        os.getpid()
        assert seen[1] == 25  # detached
        left = live.programs["getpid_calls"].attach()  # left attached: close() must detach it
    assert open_fds() == before
    assert left.fd == -1
    left.close()  # harmless: must not close whatever now has its old fd number


@pytest.mark.tools("clang")
def test_only_tracepoint_programs_attach(c_object):
    with loadmod.load(c_object("load_syscall")) as live:
        with pytest.raises(loadmod.UnsupportedProgramError, match="no tracepoint to attach to"):
            live.programs["calc"].attach()


@pytest.mark.kernel("tracefs")
def test_unknown_tracepoint_is_named():
    with pytest.raises(FileNotFoundError, match="no tracepoint nosuch/event in this kernel"):
        kernel.tracepoint_id("nosuch", "event")


# --- kernel functions ---------------------------------------------------------------------------
@pytest.mark.tools("clang")
def test_kfunc_calls_are_resolved_in_the_kernels_btf(c_object):
    with loadmod.load(c_object("load_kfunc")) as live:
        assert live.btf_error == ""  # .ksyms externs fixed up as libbpf does
        prog = live.programs["under_rcu"]
        for a in (0, 1, 14, 1 << 40):
            out = struct.unpack("<QQ", prog.test_run(struct.pack("<QQ", a, 0)).ctx)[1]
            assert out == (a * 3) & M64


def test_unknown_kfunc_is_diagnosed():
    call = [I(0x85, 0, 1, 0, -1), I(0xB7), I(0x95)]
    prog = hand_prog("k", "syscall", call, [NS(insn_index=0, symbol="no_such_kfunc", kind="kfunc")])
    before = open_fds()
    with pytest.raises(LoadError, match="calls kernel function 'no_such_kfunc', which is not in"):
        loadmod.load(NS(maps=[], programs=[prog], license="GPL"))
    assert open_fds() == before


def test_a_map_keeps_its_object_alive():
    import gc
    before = open_fds()
    m = loadmod.load(NS(maps=[map_spec("solo")], programs=[], license="GPL")).maps["solo"]
    gc.collect()
    m[1] = 2  # the LoadedObject is unreferenced but must not have closed the fd
    assert m[1] == 2
    del m
    gc.collect()
    assert open_fds() == before  # and once nothing refers to it, its fds are closed


def test_translated_program_names_the_map_by_id():
    prog = hand_prog("store", "syscall", store_1234_in_map(), [NS(insn_index=5, symbol="m", kind="map")])
    obj = NS(maps=[map_spec("m", "array", entries=1)], programs=[prog], license="GPL")
    with loadmod.load(obj) as live:
        xlated = live.programs["store"].xlated()
        lddw = [i for i in xlated if i.is_wide and i.src == kernel.BPF_PSEUDO_MAP_FD]
        # the kernel dumps the map reference as the map's id (the fd meant nothing to it)
        assert [i.imm64 for i in lddw] == [live.maps["m"].info().id]


@pytest.mark.tools("clang")
@pytest.mark.kernel("tracefs")
@pytest.mark.uring
def test_kernel_tracepoint_counts_completions_of_a_real_ring(c_object):
    """The kernel side and the io_uring side together: a tracepoint program loaded here counts
    the CQEs a `pybpf_uring.Ring` gets from the kernel."""
    from pybpf_uring.runtime import ring as ring_mod
    from pybpf_uring.uring import prep_nop
    with loadmod.load(c_object("load_trace")) as live:
        completions = live.maps["completions"]
        completions[0] = os.getpid()
        try:
            attachment = live.programs["count_completions"].attach()
        except FileNotFoundError as exc:
            pytest.skip(str(exc))
        with attachment, ring_mod.Ring(entries=8) as ring:
            for i in range(12):
                sqe = ring.sqe()
                prep_nop(sqe)
                sqe.user_data = i
                ring.submit(sqe)
                assert ring.wait_cqe(timeout=5).user_data == i
        assert completions[1] == 12
