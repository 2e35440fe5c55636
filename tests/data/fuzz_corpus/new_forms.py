"""The language's newer forms in one module, for the mutation fuzzer (tests/test_bad_input.py):
every map kind, a ring buffer's output/reserve/submit/discard, setdefault, `global`, list
initialisers, ?:, min/max/abs/len, a Const size and the tracing kinds with their helpers."""
from pybpf_uring import (syscall, tracepoint, raw_tracepoint, tp_btf, kprobe, kretprobe, Struct, Const,
                         ArrayMap, HashMap, PercpuArrayMap, PercpuHashMap, LruHashMap, LruPercpuHashMap,
                         RingBuf, get_current_comm, get_current_pid_tgid, probe_read_kernel,
                         probe_read_user_str, ktime_get_ns, log2, linear)
from pybpf_uring import i32, u8, u32, u64

slots: Const[u32] = 8
total: u64 = 0
history: u64[8] = [0] * 8
grid: u32[3][2] = [[0] * 3] * 2


class Args(Struct):
    a: u64
    b: u32[4]


class Event(Struct):
    pid: u32
    n: u64
    comm: u8[16]


class HistKey(Struct):
    kind: u32
    log2: u32


class SizeKey(Struct):
    kind: u32
    linear: u64


counts = PercpuArrayMap(u64, 16)
per_key = PercpuHashMap(u32, u64, 64)
recent = LruHashMap(u64, Event, 128)
recent_cpu = LruPercpuHashMap(u32, u64, 32)
plain = ArrayMap(u64, slots)
hist = HashMap(HistKey, u64, 256)
sizes = HashMap(SizeKey, u64, 256)
events = RingBuf(4096)


def clamp(v: u64, lo: u64, hi: u64) -> u64:
    return min(max(v, lo), hi)


@syscall
def forms(ctx: Args) -> i32:
    global total
    total += 1
    history[total % 8] = ctx.a
    k = ctx.b[0] if ctx.a > 3 else ctx.b[1]
    counts[k % 16] += abs(ctx.b[2] - 7)
    per_key[k] = clamp(ctx.a, 1, 100) + len(ctx.b) + grid[1][2]
    e = recent.setdefault(ctx.a, Event(pid=1, n=0))
    if e is not None:
        e.n += 1
    v = recent_cpu.setdefault(k, 0)
    if v:
        v[0] += 1
    plain[k % slots] = max(ctx.a, 2)
    events.output(ctx.a)
    r = events.reserve(Event)
    if r is None:
        return 1
    r.pid = k
    r.n = total
    if ctx.a == 0:
        events.discard(r)
        return 0
    events.submit(r)
    return 0


@tracepoint("io_uring", "io_uring_complete")
def complete(ctx) -> i32:
    hist[HistKey(kind=1, log2=log2(ctx.res if ctx.res > 0 else 0))] += 1
    sizes[SizeKey(kind=2, linear=linear(ctx.res, 0, 4096, 512))] += 1
    return 0


@raw_tracepoint("io_uring_complete")
def raw_complete(ctx) -> i32:
    ev = Event(pid=get_current_pid_tgid() >> 32, n=ktime_get_ns())
    get_current_comm(ev.comm)
    n = u64(0)
    if probe_read_kernel(n, ctx.arg2) == 0:
        ev.n = n
    events.output(ev)
    return 0


@tp_btf("io_uring_submit_req")
def btf_submit(ctx) -> i32:
    if ctx.arg0 != 0:                 # a kernel pointer: compared and a key, never computed with
        recent[ctx.arg0] = Event(pid=3, n=ktime_get_ns())
    return 0


@kprobe("io_submit_sqes")
def enter(ctx) -> i32:
    name: u8[32] = [0] * 32
    probe_read_user_str(name, ctx.si)
    hist[HistKey(kind=4, log2=log2(ctx.di))] += 1
    return 0


@kretprobe("io_submit_sqes")
def leave(ctx) -> i32:
    sizes[SizeKey(kind=5, linear=linear(ctx.ax, 0, 64, 8))] += 1
    return 0
