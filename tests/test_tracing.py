"""Tracing programs on this kernel: tracepoint records read from the kernel (tracefs or BTF, or a
BTF file given at compile time), hand-written records checked against them, unknown events named
with their near misses, and the other tracing kinds (raw tracepoints, tp_btf, fentry/fexit,
kprobes) loaded and attached to real io_uring events this test issues itself."""
from __future__ import annotations

import errno
import os
import re
import subprocess
import sys

import pytest

from pybpf_uring import CompileError, Ring
from pybpf_uring.bpf import kernel
from pybpf_uring.bpf.btf import VMLINUX_BTF, kernel_btf
from pybpf_uring.bpf.tracepoints import kernel_types, layout_mismatches, parse_format
from pybpf_uring.compiler.pipeline import compile_source
from pybpf_uring.uapi import BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY
from pybpf_uring.uring import prep_nop, prep_read

bpf = pytest.mark.kernel("bpf", "tracefs", "vmlinux")
tracefs = pytest.mark.kernel("tracefs")
vmlinux = pytest.mark.kernel("vmlinux")
uring = pytest.mark.uring

HEAD = "from pybpf_uring import tracepoint, Struct, HashMap, get_current_pid_tgid, i32, u8, u16, u32, u64\n"


# ----- records from the kernel --------------------------------------------------------------------
@vmlinux
@pytest.mark.parametrize("decorator", ['@tracepoint("io_uring", "io_uring_complete")',
                                       '@tracepoint("io_uring/io_uring_complete")'])
def test_an_unannotated_ctx_is_the_kernels_record(decorator):
    """ctx.res is the int at offset 32 and ctx.user_data the u64 at 24 (after the 8-byte common
    header and two pointers), as the kernel lays io_uring_complete out."""
    obj = compile_source(HEAD + f"""
{decorator}
def f(ctx) -> i32:
    return ctx.res + (ctx.user_data & 1)
""", "tp.py")
    assert [p.section for p in obj.programs] == ["tracepoint/io_uring/io_uring_complete"]
    text = obj.disasm()
    assert "*(s32 *)(r1 + 0x20)" in text or "*(u32 *)(r1 + 0x20)" in text, text
    assert "*(u64 *)(r1 + 0x18)" in text, text


@vmlinux
def test_a_btf_file_gives_the_same_record_as_the_running_kernel(tmp_path):
    """btf= (--btf) reads the layout from that file only: here a copy of this kernel's BTF."""
    copy = tmp_path / "vmlinux.btf"
    copy.write_bytes(open(VMLINUX_BTF, "rb").read())
    src = HEAD + '@tracepoint("io_uring", "io_uring_submit_req")\ndef f(ctx) -> i32:\n    return ctx.opcode\n'
    a = compile_source(src, "tp.py")
    b = compile_source(src, "tp.py", btf=str(copy))
    assert a.disasm() == b.disasm() and "*(u8 *)(r1 + 0x20)" in b.disasm()
    ours = kernel_types(str(copy)).record("io_uring", "io_uring_submit_req")
    assert [(f.name, f.offset, f.size) for f in ours.fields][:6] == [
        ("common_type", 0, 2), ("common_flags", 2, 1), ("common_preempt_count", 3, 1),
        ("common_pid", 4, 4), ("ctx", 8, 8), ("req", 16, 8)]


def test_a_file_that_is_not_btf_is_a_located_error(tmp_path):
    bad = tmp_path / "not.btf"
    bad.write_bytes(b"hello")
    with pytest.raises(CompileError) as err:
        compile_source(HEAD + '@tracepoint("io_uring", "io_uring_complete")\ndef f(ctx) -> i32:\n'
                       '    return 0\n', "tp.py", btf=str(bad))
    assert str(err.value).startswith("tp.py:2:25: error: cannot read the BTF file: "), str(err.value)


@tracefs
@vmlinux
def test_tracefs_and_btf_agree_on_every_io_uring_record():
    """The two sources the compiler reads describe each io_uring event's record alike."""
    root = kernel.tracefs_root("test")
    events = sorted(e for e in os.listdir(os.path.join(root, "events", "io_uring"))
                    if e not in ("enable", "filter"))
    btf = kernel_types(VMLINUX_BTF)
    assert "io_uring_complete" in events and "io_uring_submit_req" in events
    for event in events:
        with open(os.path.join(root, "events", "io_uring", event, "format")) as f:
            fmt = parse_format(f.read(), event, "format")
        from_btf = btf.record("io_uring", event)
        if from_btf is None:       # an event of a shared class: no record struct of its own
            continue
        assert [(f.name, f.offset, f.size, f.signed, f.count) for f in fmt.fields] == \
            [(f.name, f.offset, f.size, f.signed, f.count) for f in from_btf.fields], event


@vmlinux
def test_a_record_without_the_common_header_says_so():
    with pytest.raises(CompileError) as err:
        compile_source(HEAD + """
class Complete(Struct):
    ctx: u64
    req: u64
    user_data: u64
    res: i32

@tracepoint("io_uring", "io_uring_complete")
def f(ctx: Complete) -> i32:
    return ctx.res
""", "tp.py")
    text = str(err.value)
    assert text.startswith("tp.py:4:5: error: Complete: the record starts with the 8-byte common "
                           "header (common_type, common_flags, common_preempt_count, common_pid): "
                           "every field here is 8 bytes before the kernel's (ctx is at 8)"), text
    assert "note: add `_common: u64` as the first field" in text


@vmlinux
def test_a_hand_written_field_of_the_wrong_size_or_name_is_located():
    with pytest.raises(CompileError) as err:
        compile_source(HEAD + """
class Complete(Struct):
    _common: u64
    ctx: u64
    req: u64
    user_data: u64
    res: u64
    flags: u32

@tracepoint("io_uring", "io_uring_complete")
def f(ctx: Complete) -> i32:
    return 0
""", "tp.py")
    text = str(err.value)
    assert "tp.py:8:5: error: Complete: res is 8 bytes at offset 32, but the kernel's is 4 bytes " \
           "at offset 32 (int)" in text, text
    assert "tp.py:9:5: error: Complete: the kernel's trace_event_raw_io_uring_complete has no " \
           "field 'flags'" in text and "the kernel's field at offset 40 is 'extra1'" in text, text


@vmlinux
def test_a_matching_hand_written_record_compiles():
    compile_source(HEAD + """
class Complete(Struct):
    common_type: u16
    common_flags: u8
    common_preempt_count: u8
    common_pid: i32
    pad: u64[2]
    user_data: u64
    res: i32

@tracepoint("io_uring", "io_uring_complete")
def f(ctx: Complete) -> i32:
    return ctx.res
""", "tp.py")


@vmlinux
@pytest.mark.parametrize("decorator, message, near", [
    ('@tracepoint("io_uring", "io_uring_complet")', "no tracepoint io_uring/io_uring_complet in ",
     "did you mean 'io_uring_complete'"),
    ('@raw_tracepoint("io_uring_submit_reqs")', "no tracepoint io_uring_submit_reqs in ",
     "did you mean 'io_uring_submit_req'"),
    ('@fentry("io_submit_sqe")', "no kernel function 'io_submit_sqe' in ", "did you mean 'io_submit_sqes'"),
])
def test_an_unknown_event_is_named_at_the_decorator_with_near_misses(decorator, message, near):
    with pytest.raises(CompileError) as err:
        compile_source(HEAD.replace("tracepoint,", "tracepoint, raw_tracepoint, fentry,") +
                       f"{decorator}\ndef f(ctx) -> i32:\n    return 0\n", "tp.py")
    text = str(err.value)
    assert text.startswith("tp.py:2:") and message in text and near in text, text


@tracefs
def test_an_unknown_category_is_named_with_near_misses():
    with pytest.raises(CompileError, match=r"no tracepoint category 'io_urin' in this kernel(.|\n)*"
                                           r"did you mean 'io_uring'"):
        compile_source(HEAD + '@tracepoint("io_urin", "io_uring_complete")\ndef f(ctx) -> i32:\n'
                       '    return 0\n', "tp.py")


def test_a_tracepoint_decorator_needs_category_and_event():
    with pytest.raises(CompileError, match="@tracepoint needs the category and the event"):
        compile_source(HEAD + '@tracepoint("io_uring_complete")\ndef f(ctx) -> i32:\n    return 0\n', "tp.py")


def test_layout_mismatches_passes_padding_and_flags_a_shifted_record():
    rec = parse_format("""
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:u64 a;\toffset:8;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:16;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:32;\tsize:4;\tsigned:0;
""", "ev", "format")
    assert [(f.name, f.count) for f in rec.fields][-2:] == [("comm", 16), ("__data_loc_name", 0)]
    assert layout_mismatches([("_x", 0, 8), ("a", 8, 8), ("comm", 16, 16)], rec) == []
    [(name, message, _)] = layout_mismatches([("a", 0, 8), ("comm", 8, 16)], rec)
    assert name == "a" and "8-byte common header" in message


@vmlinux
def test_the_record_is_read_only():
    with pytest.raises(CompileError, match="a tracepoint's record is read-only"):
        compile_source(HEAD + '@tracepoint("io_uring", "io_uring_complete")\ndef f(ctx) -> i32:\n'
                       '    ctx.res = 1\n    return 0\n', "tp.py")


@vmlinux
def test_cli_check_and_compile_take_btf(tmp_path):
    src = tmp_path / "tool.py"
    src.write_text(HEAD + '@tracepoint("io_uring", "io_uring_complete")\ndef f(ctx) -> i32:\n'
                   '    return ctx.res\n')
    for cmd in (["check", str(src)], ["compile", str(src), "-o", str(tmp_path / "t.o")]):
        run = subprocess.run([sys.executable, "-m", "pybpf_uring", *cmd, "--btf", VMLINUX_BTF],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert "f (tracepoint/io_uring/io_uring_complete)" in subprocess.run(
        [sys.executable, "-m", "pybpf_uring", "check", str(src)], capture_output=True, text=True).stdout
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "check", str(src), "--btf",
                          str(tmp_path / "missing")], capture_output=True, text=True)
    assert run.returncode == 1 and "error: cannot read the BTF file" in run.stderr


# ----- on the kernel: counts of a workload this test issues ----------------------------------------
def nops_and_a_bad_read(n: int) -> None:
    """`n` NOPs, then a read of an fd that is not open (-EBADF), each waited for."""
    with Ring(8) as ring:
        for i in range(n):
            sqe = ring.sqe()
            prep_nop(sqe)
            sqe.user_data = i
            ring.submit(sqe)
            ring.wait_cqe()
        sqe = ring.sqe()
        prep_read(sqe, 1 << 20, 0, 0, 0)
        ring.submit(sqe)
        assert ring.wait_cqe().res == -9


COUNTING = HEAD.replace("tracepoint,", "tracepoint, raw_tracepoint, tp_btf,") + """
me: u64 = 0
raw_hits: u64 = 0
typed_hits: u64 = 0
results = HashMap(i32, u64, 64)

def mine() -> u64:
    return get_current_pid_tgid() >> 32 == me

@tracepoint("io_uring", "io_uring_complete")
def complete(ctx) -> i32:
    if mine():
        results[ctx.res] += 1
    return 0

@raw_tracepoint("io_uring_complete")
def raw(ctx) -> i32:
    if mine() and ctx.arg0 != 0:
        raw_hits += 1
    return 0

@tp_btf("io_uring_complete")
def typed(ctx) -> i32:
    if mine():
        typed_hits += 1
    return 0
"""


@bpf
@tracefs
@vmlinux
@uring
def test_tracepoint_raw_tracepoint_and_tp_btf_count_a_real_ring():
    obj = compile_source(COUNTING, "count.py")
    assert {p.name: p.section for p in obj.programs} == {
        "complete": "tracepoint/io_uring/io_uring_complete", "raw": "raw_tp/io_uring_complete",
        "typed": "tp_btf/io_uring_complete"}
    with obj.load() as live:
        live.globals.me = os.getpid()
        atts = [live.programs[n].attach() for n in ("complete", "raw", "typed")]
        assert [a.target for a in atts] == ["io_uring/io_uring_complete", "raw_tp/io_uring_complete",
                                            "tp_btf/io_uring_complete"]
        nops_and_a_bad_read(7)
        assert dict(live.maps["results"].items()) == {0: 7, -9: 1}
        assert (live.globals.raw_hits, live.globals.typed_hits) == (8, 8)
        for a in atts:
            a.close()
        nops_and_a_bad_read(2)
        assert (live.globals.raw_hits, live.globals.typed_hits) == (8, 8)   # detached


def _fentry_refused() -> str | None:
    """Why this kernel will not load an fentry program (None: it will)."""
    btf = kernel_btf()
    target = btf.find("io_submit_sqes", "func") if btf else None
    if target is None:
        return "no io_submit_sqes in this kernel's BTF"
    ret0_exit = bytes.fromhex("b700000000000000" "9500000000000000")
    res = kernel.prog_load(BPF_PROG_TYPE_TRACING, ret0_exit, "GPL", "probe",
                           expected_attach_type=BPF_TRACE_FENTRY, attach_btf_id=target)
    if res.fd < 0:
        return f"this kernel refuses fentry programs ({kernel.errno_name(res.errno)})"
    os.close(res.fd)
    return None


FENTRY = HEAD.replace("tracepoint,", "fentry, fexit,") + """
me: u64 = 0
calls: u64 = 0
asked: u64 = 0
done: u64 = 0

@fentry("io_submit_sqes")
def enter(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        calls += 1
        asked += ctx.nr
    return 0

@fexit("io_submit_sqes")
def leave(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        done += ctx.ret
    return 0
"""


@vmlinux
def test_fentry_and_fexit_ctx_are_the_functions_arguments_and_return_value():
    """io_submit_sqes(struct io_ring_ctx *ctx, unsigned int nr): ctx.nr is the second u64 slot,
    and fexit's ctx.ret the third."""
    obj = compile_source(FENTRY, "fentry.py")
    text = obj.disasm()
    assert re.search(r"\*\(u64 \*\)\(r\d \+ 0x8\)", text) and re.search(r"\*\(u64 \*\)\(r\d \+ 0x10\)", text), text
    assert [p.section for p in obj.programs] == ["fentry/io_submit_sqes", "fexit/io_submit_sqes"]


@bpf
@vmlinux
@uring
def test_fentry_and_fexit_count_submissions():
    reason = _fentry_refused()
    if reason:
        pytest.skip(reason)
    obj = compile_source(FENTRY, "fentry.py")
    with obj.load() as live:
        live.globals.me = os.getpid()
        with live.programs["enter"].attach(), live.programs["leave"].attach():
            nops_and_a_bad_read(4)
        assert (live.globals.calls, live.globals.asked, live.globals.done) == (5, 5, 5)


KPROBE = HEAD.replace("tracepoint,", "kprobe, kretprobe,") + """
me: u64 = 0
calls: u64 = 0
submitted: u64 = 0

@kprobe("io_submit_sqes")
def enter(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        calls += 1
    return 0

@kretprobe("io_submit_sqes")
def leave(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        submitted += ctx.ax
    return 0
"""


@bpf
@vmlinux
@uring
def test_kprobes_load_and_count_or_say_the_kernel_has_none():
    """A kprobe's ctx is the kernel's pt_regs; the programs pass the verifier here, and attach
    through the kprobe PMU -- or, on a kernel built without kprobes, the error says so."""
    obj = compile_source(KPROBE, "kp.py")
    assert {p.kind for p in obj.programs} == {"kprobe"}
    with obj.load() as live:
        live.globals.me = os.getpid()
        if not os.path.isdir("/sys/bus/event_source/devices/kprobe"):
            with pytest.raises(OSError, match="has no kprobe PMU .*CONFIG_KPROBES"):
                live.programs["enter"].attach()
            return
        with live.programs["enter"].attach(), live.programs["leave"].attach():
            nops_and_a_bad_read(3)
        assert (live.globals.calls, live.globals.submitted) == (4, 4)


# ----- helpers of tracing programs ------------------------------------------------------------------
HELPERS_SRC = """
from pybpf_uring import tracepoint, raw_tracepoint, Struct, get_current_pid_tgid, get_current_comm
from pybpf_uring import probe_read_kernel, probe_read_user_str, i32, i64, u8, u32, u64

class Cqe(Struct):
    user_data: u64
    res: i32
    flags: u32

me: u64 = 0
comm: u8[16]
res_sum: i64 = 0
reads: u64 = 0
faulted: i64 = 0
path: u8[64]
path_len: i64 = 0

@tracepoint("io_uring", "io_uring_submit_req")
def submit(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        name: u8[16]
        get_current_comm(name)
        comm = name
    return 0

@raw_tracepoint("io_uring_complete")
def complete(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        cqe = Cqe()
        if probe_read_kernel(cqe, ctx.arg2) == 0:     # io_uring_complete(ctx, req, cqe)
            res_sum += cqe.res
            reads += 1
        faulted = probe_read_kernel(cqe, 8)           # no kernel memory there
    return 0

@tracepoint("syscalls", "sys_enter_openat")
def opening(ctx) -> i32:
    if get_current_pid_tgid() >> 32 == me:
        buf: u8[64]
        n = probe_read_user_str(buf, ctx.filename)
        if n > 0:
            path = buf
            path_len = n
    return 0
"""


@vmlinux
def test_tracing_helpers_are_for_tracing_programs_only():
    with pytest.raises(CompileError, match=r"get_current_comm\(\) cannot be called from a @syscall program"):
        compile_source(HELPERS_SRC.replace("tracepoint, raw_tracepoint,", "tracepoint, raw_tracepoint, syscall,")
                       + "\n@syscall\ndef s(ctx: Cqe) -> i32:\n    n: u8[16]\n    return get_current_comm(n)\n",
                       "h.py")


@bpf
@uring
def test_comm_probe_read_kernel_and_probe_read_user_str_on_real_events():
    """comm is this process's; the CQE read through the raw tracepoint's pointer holds the
    results the ring returned (7 NOPs: 0, the bad read: -EBADF); a read of address 8 fails; the
    path openat(2) got is read from this process's memory."""
    obj = compile_source(HELPERS_SRC, "helpers.py")
    target = f"/tmp/pbu-{os.getpid()}"          # shorter than the program's 64-byte buffer
    with obj.load() as live:
        g = live.globals
        g.me = os.getpid()
        atts = [live.programs[n].attach() for n in ("submit", "complete", "opening")]
        nops_and_a_bad_read(7)
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT))
        os.unlink(target)
        for a in atts:
            a.close()
        with open("/proc/self/comm", "rb") as f:
            own = f.read().strip()
        assert bytes(g.comm.copy()).rstrip(b"\0") == own
        assert (g.res_sum, g.reads) == (-9, 8)
        assert g.faulted < 0
        assert bytes(g.path.copy())[:g.path_len] == target.encode() + b"\0"


@vmlinux
def test_a_syscall_event_without_tracefs_takes_a_hand_written_record(tmp_path):
    """BTF has no record of the syscall events (the syscall table makes them, not TRACE_EVENT):
    compiling for a BTF file, a hand-written record is taken as written and an unannotated ctx
    is one error saying where the layout would come from."""
    btf = str(tmp_path / "vmlinux.btf")
    with open(VMLINUX_BTF, "rb") as src, open(btf, "wb") as dst:
        dst.write(src.read())
    src = HEAD + """
class Enter(Struct):
    _common: u64
    nr: i32

@tracepoint("syscalls", "sys_enter_getpid")
def f(ctx: Enter) -> i32:
    return ctx.nr
"""
    assert [p.section for p in compile_source(src, "sc.py", btf=btf).programs] == \
        ["tracepoint/syscalls/sys_enter_getpid"]
    with pytest.raises(CompileError) as err:
        compile_source(src.replace("ctx: Enter", "ctx"), "sc.py", btf=btf)
    assert str(err.value).count("error:") == 1 and str(err.value).startswith(
        f"sc.py:8:7: error: no layout for the ctx of tracepoint/syscalls/sys_enter_getpid: --btf {btf}")


@pytest.mark.parametrize("decorator, message", [
    ("@tracepoint(1, 2)", "@tracepoint needs the name of what it traces"),
    ("@kprobe()", "@kprobe needs the name of what it traces"),
    ("@kprobe", "@kprobe needs the name of what it traces"),
    ('@fentry(name="x")', "@fentry needs the name of what it traces"),
    ('@tracepoint("a", "b", "c")', "@tracepoint needs the category and the event"),
    ('@tracepoint("io_uring", "")', "@tracepoint needs the category and the event"),
    ('@raw_tracepoint("a/b")', "@raw_tracepoint takes one name"),
])
def test_a_tracing_decorator_without_its_target_is_located(decorator, message):
    with pytest.raises(CompileError) as err:
        compile_source("from pybpf_uring import tracepoint, raw_tracepoint, kprobe, fentry, i32\n"
                       f"{decorator}\ndef f(ctx) -> i32:\n    return 0\n", "d.py")
    assert str(err.value).startswith(f"d.py:2:2: error: {message}\n"), str(err.value)


@vmlinux
def test_program_compile_takes_btf(tmp_path, monkeypatch):
    """`prog.compile(btf=...)` on a decorated function of an imported module."""
    (tmp_path / "tp_mod.py").write_text(HEAD + '@tracepoint("io_uring", "io_uring_complete")\n'
                                        "def f(ctx) -> i32:\n    return ctx.res\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tp_mod
    assert "(r1 + 0x20)" in tp_mod.f.compile(btf=VMLINUX_BTF).disasm()
    with pytest.raises(CompileError, match="cannot read the BTF file"):
        tp_mod.f.compile(btf=str(tmp_path / "missing"))


def test_odd_fields_of_a_format_file_become_bytes():
    """Arrays of structs, a struct, a 128-bit integer and an array length tracefs left as a
    macro are read as bytes (u8[size]): named, at their offsets, never a crash."""
    from pybpf_uring.compiler.check_trace import record_struct
    rec = parse_format("""
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:struct pair pairs[2];\toffset:8;\tsize:24;\tsigned:0;
\tfield:char comm[TASK_COMM_LEN];\toffset:32;\tsize:16;\tsigned:1;
\tfield:unsigned long args[6];\toffset:48;\tsize:48;\tsigned:0;
\tfield:__int128 wide;\toffset:96;\tsize:16;\tsigned:1;
""", "ev", "format")
    st = record_struct(rec)
    assert [(f.name, str(f.type), f.offset) for f in st.fields] == [
        ("common_type", "u16", 0), ("pairs", "u8[24]", 8), ("comm", "u8[16]", 32),
        ("args", "u64[6]", 48), ("wide", "u8[16]", 96)]
    assert st.size == 112


@bpf
@uring
def test_a_kernel_without_perf_links_gets_the_program_set_on_the_perf_event(monkeypatch):
    """Before 5.15 BPF_LINK_CREATE refuses perf events (EINVAL): the tracepoint program is then
    set on its perf event with PERF_EVENT_IOC_SET_BPF, and counts the same."""
    from pybpf_uring.bpf import attach

    def no_perf_links(prog_fd, target_fd, attach_type, flags=0):
        raise OSError(errno.EINVAL, "BPF_LINK_CREATE failed: EINVAL")

    monkeypatch.setattr(attach.kernel, "link_create", no_perf_links)
    obj = compile_source(COUNTING, "count.py")
    with obj.load(only={"complete"}) as live:
        live.globals.me = os.getpid()
        with live.programs["complete"].attach():
            nops_and_a_bad_read(3)
        nops_and_a_bad_read(1)                 # detached
        assert dict(live.maps["results"].items()) == {0: 3, -9: 1}


POINTERS = HEAD.replace("tracepoint,", "tp_btf, log2,") + """
seen = HashMap(u64, u64, 64)

def shifted(x: u64) -> u64:
    return x >> 3

@tp_btf("io_uring_submit_req")
def typed(ctx) -> i32:
    req = ctx.arg0
    if req != 0:
        seen[req] += 1
        seen[ctx.arg0] = req
    BODY
    return 0
"""


@vmlinux
def test_a_btf_typed_kernel_pointer_is_refused_as_an_operand_of_arithmetic():
    """A tp_btf (fentry, fexit) argument that points to a kernel struct is a pointer the verifier
    tracks, and it refuses any arithmetic on it ("R2 pointer arithmetic with >>= operator
    prohibited" for log2(ctx.arg0)): the checker says so at the operand, read from the ctx or
    from a local holding it, and where it would escape its reach: a subprogram's argument, a
    local struct or array (the verifier keeps a pointer spilled to the stack a pointer)."""
    from kernel_harness import diagnostic
    src = POINTERS.replace("BODY", "seen[1] = log2(ctx.arg0) + (req >> 4)")
    assert diagnostic(src, "ptr.py") == (
        "ptr.py:14:20: error: ctx.arg0 (struct io_kiocb *) is a kernel pointer in a @tp_btf program: "
        "the verifier allows no arithmetic on it\n"
        "    seen[1] = log2(ctx.arg0) + (req >> 4)\n                   ^~~~~~~~\n"
        "  note: compare it, store it or use it as a map key as it is; for a number to compute with, "
        "trace with @raw_tracepoint or @kprobe, whose arguments are plain u64 values\n"
        "ptr.py:14:33: error: req, a copy of ctx.arg0 (struct io_kiocb *), is a kernel pointer in a "
        "@tp_btf program: the verifier allows no arithmetic on it\n"
        "    seen[1] = log2(ctx.arg0) + (req >> 4)\n                                ^~~\n"
        "  note: compare it, store it or use it as a map key as it is; for a number to compute with, "
        "trace with @raw_tracepoint or @kprobe, whose arguments are plain u64 values")
    for body in ("req += 1", "seen[2] = min(req, 5)", "seen[3] = -ctx.arg0", "seen[u32(req)] = 1",
                 "low: u32 = ctx.arg0", "seen[3] = shifted(req)", "a: u64[2] = [req, 0]",
                 "a: u64[2] = [0, 0]\n    a[1] = ctx.arg0", "seen[(req if ctx.arg0 else 0) >> 3] = 1",
                 "p = u64(0)\n    for i in range(2):\n        seen[p >> 1] = 1\n        p = ctx.arg0"):
        with pytest.raises(CompileError, match="is a kernel pointer in a @tp_btf program"):
            compile_source(POINTERS.replace("BODY", body), "ptr.py")


@bpf
def test_what_the_pointer_rule_accepts_loads_and_what_it_refuses_the_verifier_refuses(monkeypatch):
    """A kernel pointer compared, copied, used as a map key, or stored in a map and read back
    (a number then) loads; with the rule switched off, its log2, its low 32 bits, a subprogram
    shifting it and a shift of its copy on the stack are programs the verifier refuses."""
    from pybpf_uring import VerifierError
    from pybpf_uring.compiler.check_trace import TracingRules
    compile_source(POINTERS.replace("BODY", "seen[2] = req if ctx.arg0 == req else 0\n"
                                    "    seen[5] = req\n    seen[6] = seen[5] >> 3"), "ok.py").load().close()
    monkeypatch.setattr(TracingRules, "no_pointer_arithmetic", lambda self, *operands, where="": None)
    monkeypatch.setattr(TracingRules, "no_pointer_on_stack", lambda self, e, value, where: None)
    for body in ("seen[1] = log2(ctx.arg0)", "seen[u32(req)] = 1", "seen[3] = shifted(req)",
                 "a: u64[2] = [0, 0]\n    a[1] = ctx.arg0\n    seen[a[1] >> 3] = 1",
                 "seen[(req if ctx.arg0 else 0) >> 3] = 1",
                 "p = u64(0)\n    for i in range(2):\n        seen[p >> 1] = 1\n        p = ctx.arg0"):
        obj = compile_source(POINTERS.replace("BODY", body), "ptr.py")
        with pytest.raises(VerifierError, match="pointer arithmetic"):
            obj.load().close()


@tracefs
def test_a_tracepoint_string_named_without_its_data_loc_says_where_it_is():
    from kernel_harness import diagnostic
    src = HEAD + ('h = HashMap(u32, u64, 16)\n\n@tracepoint("io_uring", "io_uring_submit_req")\n'
                  'def p(ctx) -> i32:\n    h[ctx.op_str] += 1\n    return 0\n')
    assert "error: struct trace_event_raw_io_uring_submit_req has no field 'op_str'\n" \
           "    h[ctx.op_str] += 1\n      ^~~~~~~~~~\n" \
           "  note: op_str is a string stored after the record: ctx.__data_loc_op_str is its offset in " \
           "the record (low 16 bits) and length (high 16 bits); its fields are: " in diagnostic(src, "s.py")
