"""Subprograms that receive the program's ctx: the io_uring helpers called from undecorated
functions, the object they compile to, runs on a real Ring (interpreter and JIT), and the kernel
kinds (socket filter, syscall) loaded into the running kernel's verifier."""
from __future__ import annotations

import ctypes
import subprocess

import pytest

from kernel_harness import compiled, loaded
from probes import CLANG
from pybpf_uring import Ring, compile_source
from pybpf_uring.diagnostics import CompileError
from pybpf_uring.runtime.engine import instantiate

RELAY = """
from pybpf_uring import iouring, i32, i64, u64, Struct, ArrayMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, emit_cqe, reap_cqe
from pybpf_uring.uring import copy_from_user, copy_to_user, prep_nop

runs = ArrayMap(u64, 1)


class Args(Struct):
    limit: u64
    done: u64


def kick(ctx: IoUringCtx, ud: u64) -> i32:
    sqe = Sqe()
    prep_nop(sqe)
    sqe.user_data = ud
    sqe.cq_idx = 1
    return queue_sqe(ctx, sqe)


def wait_one(ctx: IoUringCtx) -> None:          # writes the ctx through the reference
    ctx.wait_idx = 1
    ctx.wait_nr = 1


def load_args(ctx: IoUringCtx, args: Args) -> i64:
    return copy_from_user(args, ctx.user_data)   # reads a ctx field through the reference


def report(uptr: u64, args: Args) -> i64:      # no ctx: only @iouring programs call it
    return copy_to_user(uptr, args)


def step(ctx: IoUringCtx, args: Args) -> i32:  # passes its ctx on to kick
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) != 0:
        return 0
    emit_cqe(ctx, 2, cqe.user_data, cqe.res, 0)
    args.done = cqe.user_data
    if cqe.user_data < args.limit:
        kick(ctx, cqe.user_data + 1)
        return 1
    return 0


@iouring
def relay(ctx: IoUringCtx) -> i32:
    runs[0] += 1
    args = Args()
    if load_args(ctx, args) != 0:
        return -1
    if runs[0] == 1:
        kick(ctx, 1)
        wait_one(ctx)
        return 0
    if step(ctx, args) != 0:
        wait_one(ctx)
        return 0
    report(ctx.user_data, args)
    return 0
"""


def kick_source(extra: str = "") -> str:
    return RELAY + extra


def calls_of(prog):
    return [(ins.is_pseudo_call, ins.imm) for ins in prog.instructions if ins is not None and ins.is_call]


def test_the_subprogram_makes_the_helper_call_and_the_program_a_bpf_to_bpf_call():
    obj = compile_source(RELAY, "relay.py")
    subs = {f.name: f for f in obj.subprograms}
    assert set(subs) == {"kick", "wait_one", "load_args", "report", "step"}
    assert (False, 164) in calls_of(subs["kick"])                   # iouring_queue_sqe
    assert (False, 148) in calls_of(subs["load_args"])              # copy_from_user
    assert (False, 167) in calls_of(subs["report"])                 # copy_to_user
    step = calls_of(subs["step"])
    assert (False, 166) in step and (False, 165) in step            # reap_cqe, emit_cqe
    assert any(pseudo for pseudo, _ in step)                        # step -> kick
    relay = calls_of(obj.program("relay"))
    assert any(pseudo for pseudo, _ in relay)                      # BPF-to-BPF calls
    assert not any(not pseudo and imm in (164, 165, 166, 167, 148) for pseudo, imm in relay)
    # the ctx reaches the helper unchanged: r1 of kick is the r1 queue_sqe gets
    text = subs["kick"].disasm()
    assert "r1 =" not in text and "r1 +=" not in text, text


def test_ctx_fields_through_the_reference_keep_their_own_offsets_and_sizes():
    obj = compile_source(RELAY, "relay.py")
    wait = [ins for ins in obj.subprograms if ins.name == "wait_one"][0]
    stores = [(ins.off, ins.size) for ins in wait.instructions if ins is not None and ins.cls in (2, 3)]
    # two 4-byte stores at 12 and 8, never merged into one 8-byte store at 8
    assert sorted(stores) == [(8, 4), (12, 4)], wait.disasm()


@pytest.mark.uring
@pytest.mark.parametrize("backend", ["interpreter", "jit"])
def test_the_relay_runs_on_a_real_ring(backend):
    obj, ns = compiled(RELAY, "relay.py")
    args = ns["Args"](limit=3)
    with Ring(entries=8, cq_sizes=(8, 8)) as ring:
        ring.register(obj, engine=lambda o: instantiate(o, backend=backend))
        ring.submit_bpf("relay", user_data=ctypes.addressof(args))
        done = ring.wait_cqe(0, timeout=5)
        relayed = [ring.wait_cqe(2, timeout=1) for _ in range(3)]
        assert (done.user_data, done.res) == (ctypes.addressof(args), 0)
        assert [(c.user_data, c.res) for c in relayed] == [(1, 0), (2, 0), (3, 0)]
        assert ring.maps["runs"][0] == 4
        assert list(ring.faults) == []
    assert (args.limit, args.done) == (3, 3)             # copied back by report()


@pytest.mark.uring
def test_the_relay_runs_with_the_rings_own_engine():
    obj, ns = compiled(RELAY, "relay.py")
    args = ns["Args"](limit=5)
    with Ring(entries=8, cq_sizes=(8, 8)) as ring:
        ring.register(obj)
        ring.submit_bpf("relay", user_data=ctypes.addressof(args))
        assert ring.wait_cqe(0, timeout=5).res == 0
        assert [ring.wait_cqe(2, timeout=1).user_data for _ in range(5)] == [1, 2, 3, 4, 5]
    assert args.done == 5


# ----- kernel kinds: the verifier sees the ctx reach the subprogram ------------------------
SOCKET = """
from pybpf_uring import socket_filter, SkBuff, Struct, i32, u8, u16, u32, skb_load_bytes

class Header(Struct):
    version_ihl: u8
    tos: u8
    length: u16

def big(skb: SkBuff, limit: u32) -> i32:
    h = Header()
    if skb_load_bytes(skb, 0, h) != 0:
        return 0
    if h.version_ihl >> 4 != 4:
        return 0
    if skb.len > limit:
        return skb.len
    return 0

def outer(skb: SkBuff) -> i32:          # passes the ctx on
    if skb.protocol == 0:
        return big(skb, 200)
    return big(skb, 100)

@socket_filter
def keep_big(ctx: SkBuff) -> i32:
    return outer(ctx)
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", ["v1", "v3"])
def test_a_socket_filter_subprogram_takes_the_skb(cpu):
    with loaded(SOCKET, cpu) as (live, ns):
        prog = live.programs["keep_big"]
        eth = bytes(12) + b"\x08\x00"
        for version, size in [(4, 40), (4, 200), (6, 200), (4, 101), (4, 100)]:
            payload = bytes([version << 4 | 5, 0]) + size.to_bytes(2, "big") + bytes(size - 4)
            res = prog.test_run(data=eth + payload)
            want = size if version == 4 and size > 100 else 0
            assert res.retval == want, (version, size)


SYSCALL = """
from pybpf_uring import syscall, Struct, i32, u32, u64

class Args(Struct):
    a: u64
    b: u64
    c: u32[4]
    r: u64

def pick(args: Args, v: u64) -> u64:     # LLVM would select between two ctx addresses here
    x: u64 = 0
    if v > 3:
        x = args.a
    else:
        x = args.b
    return x + args.c[2]

def store(args: Args, v: u64) -> None:
    args.r = pick(args, v)

def twice(args: Args, v: u64) -> u64:        # passes the ctx on, twice
    return pick(args, v) + pick(args, 0)

@syscall
def choose(ctx: Args) -> i32:
    store(ctx, ctx.r)
    ctx.a = twice(ctx, 9)
    return 0
"""


@pytest.mark.kernel
@pytest.mark.parametrize("cpu", ["v1", "v3"])
def test_a_syscall_subprogram_takes_the_ctx_and_keeps_constant_offsets(cpu):
    with loaded(SYSCALL, cpu) as (live, ns):
        prog = live.programs["choose"]
        for a, b, r in [(7, 5, 9), (7, 5, 2), (0, 1, 4)]:
            out = prog.test_run(ctx=ns["Args"](a=a, b=b, c=[0, 0, 30, 0], r=r)).ctx
            picked = (a if r > 3 else b) + 30
            assert out.r == picked
            assert out.a == (a + 30) + (b + 30)


def test_a_variable_index_into_a_ctx_received_by_a_subprogram_is_refused():
    src = SYSCALL.replace("return x + args.c[2]", "return x + args.c[v % 4]")
    with pytest.raises(CompileError, match="the ctx cannot be indexed by a variable"):
        compile_source(src, "choose.py")


def test_a_subprogram_only_called_with_stack_structs_may_index_them_by_a_variable():
    src = SYSCALL.replace("return x + args.c[2]", "return x + args.c[v % 4]") \
        .replace("    store(ctx, ctx.r)\n    ctx.a = twice(ctx, 9)\n",
                 "    c: Args = ctx\n    store(c, ctx.r)\n    ctx.a = twice(c, 9)\n    ctx.r = c.r\n")
    compile_source(src, "choose.py")


def test_a_parameter_that_gets_the_ctx_gets_it_at_every_call():
    src = SYSCALL.replace("    ctx.a = twice(ctx, 9)\n", "    c: Args = ctx\n    ctx.a = twice(c, 9)\n")
    with pytest.raises(CompileError, match=r"pick\(\) gets the program's ctx as 'args' at another call"):
        compile_source(src, "choose.py")


def test_a_tracepoint_record_passed_to_a_subprogram_stays_read_only():
    src = """
from pybpf_uring import tracepoint, Struct, i32, u64

class Rec(Struct):
    pad: u64[4]
    res: i32

def clear(rec: Rec) -> None:
    rec.res = 0

@tracepoint("io_uring/io_uring_complete")
def t(ctx: Rec) -> i32:
    clear(ctx)
    return 0
"""
    with pytest.raises(CompileError, match="a tracepoint's record is read-only"):
        compile_source(src, "t.py")


# ----- mainline loop_step: the same rule for kfuncs and the CQ intrinsics -----------------
LOOP = """
from pybpf_uring import loop_step, Struct, i32, u8, u32
from pybpf_uring.uring import Sqe, Cqe, prep_nop
from pybpf_uring.iou import IouCtx, IouLoopParams, CqRing, get_region, submit_sqes, cq_reap, cq_wait
from pybpf_uring.iou import IOU_LOOP_CONTINUE, IOU_LOOP_STOP, IOU_REGION_SQ, IOU_REGION_CQ

class CqView(Struct):
    ring: CqRing
    pad: u8[32]
    cqes: Cqe[16]

def drain(cq: CqView) -> u32:               # no ctx: only @loop_step programs call it
    cqe = Cqe()
    n: u32 = 0
    for k in range(16):
        if cq_reap(cq, cqe) != 0:
            break
        n += 1
    return n

def refill(ctx: IouCtx, lp: IouLoopParams, cq: CqView) -> i32:
    sqes = get_region(ctx, IOU_REGION_SQ, Sqe[4])
    if sqes is None:
        return IOU_LOOP_STOP
    for i in range(4):
        prep_nop(sqes[i])
    submit_sqes(ctx, 4)
    cq_wait(lp, cq, 4)
    return IOU_LOOP_CONTINUE

@loop_step
def nops(ctx: IouCtx, lp: IouLoopParams) -> i32:
    cq = get_region(ctx, IOU_REGION_CQ, CqView)
    if cq is None:
        return IOU_LOOP_STOP
    drain(cq)
    return refill(ctx, lp, cq)
"""


def test_loop_step_subprograms_call_the_kfuncs_with_the_loop_ctx():
    obj = compile_source(LOOP, "loop.py")
    refill = next(f for f in obj.subprograms if f.name == "refill")
    text = refill.disasm(relocations=True)
    assert "bpf_io_uring_get_region" in text and "bpf_io_uring_submit_sqes" in text, text
    with pytest.raises(CompileError, match=r"cq_reap\(\) cannot be called from a @syscall program"):
        compile_source(LOOP.replace("loop_step, ", "loop_step, syscall, ") + """
@syscall
def s(ctx: CqView) -> i32:
    return drain(ctx)
""", "loop.py")


# ----- against clang ----------------------------------------------------------------------
C_TWIN = r"""
typedef unsigned long long __u64;
typedef unsigned int __u32;
typedef unsigned short __u16;
typedef unsigned char __u8;
typedef int __s32;
#define SEC(n) __attribute__((section(n), used))
struct io_uring_bpf_ctx { __u64 user_data; __u32 wait_nr; __u32 wait_idx; };
struct io_uring_sqe { __u8 opcode, flags; __u16 ioprio; __s32 fd; __u64 off, addr; __u32 len, rw_flags;
                      __u64 user_data; __u16 buf_index, personality; __s32 splice_fd_in;
                      __u16 cq_idx, pad0; __u32 pad1; __u64 pad2; };
static long (*iouring_queue_sqe)(void *ctx, void *sqe, __u32 len) = (void *)164;

static __attribute__((noinline)) int kick(struct io_uring_bpf_ctx *ctx, __u64 ud)
{
    struct io_uring_sqe sqe = {};
    sqe.opcode = 0;
    sqe.user_data = ud;
    return iouring_queue_sqe(ctx, &sqe, sizeof(sqe));
}

SEC("iouring.s/p") int p(struct io_uring_bpf_ctx *ctx)
{
    kick(ctx, ctx->user_data);
    kick(ctx, 2);
    return 0;
}
char _license[] SEC("license") = "GPL";
"""
PY_TWIN = """
from pybpf_uring import iouring, i32, u64
from pybpf_uring.uring import IoUringCtx, Sqe, prep_nop, queue_sqe

def kick(ctx: IoUringCtx, ud: u64) -> i32:
    sqe = Sqe()
    prep_nop(sqe)
    sqe.user_data = ud
    return queue_sqe(ctx, sqe)

@iouring
def p(ctx: IoUringCtx) -> i32:
    kick(ctx, ctx.user_data)
    kick(ctx, 2)
    return 0
"""


@pytest.mark.tools("clang")
def test_instruction_counts_match_a_clang_twin(tmp_path):
    from pybpf_uring.bpf.objfile import BpfObject
    (tmp_path / "p.c").write_text(C_TWIN)
    subprocess.run([CLANG, "-O2", "-target", "bpf", "-mcpu=v3", "-c", str(tmp_path / "p.c"),
                    "-o", str(tmp_path / "p.o")], check=True)
    c = BpfObject.read(tmp_path / "p.o")
    py = compile_source(PY_TWIN, "p.py")
    count = lambda o, name: next(f for f in o.programs + o.subprograms if f.name == name).slot_count  # noqa: E731
    for name in ("p", "kick"):
        assert count(py, name) <= count(c, name), (name, py.disasm(), c.disasm())
