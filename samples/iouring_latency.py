"""Sample: how long each io_uring request takes, submission to completion, per opcode.

Two tracepoint programs: io_uring_submit_req notes when each request (keyed by the kernel's
request pointer) was submitted and its opcode; io_uring_complete takes the difference and counts
it in a log2 histogram per opcode.  Their ctx is the kernel's record of each event, read from
this kernel (docs/tracing.md).  Run it as root and stop it with Ctrl-C, or give --duration:

    python3 samples/iouring_latency.py --duration 10 [--pid PID] [--interval 1]

    @lat_ns[opcode=READ]:
    [1K, 2K)              12 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
    [2K, 4K)               3 |@@@@@@@@@@@@@                                       |
"""
from pybpf_uring import tracepoint, Struct, HashMap, get_current_pid_tgid, ktime_get_ns, log2
from pybpf_uring import i32, u32, u64

pid: u64 = 0                          # the process to trace (its tgid); 0: every process


class Start(Struct):
    ns: u64
    opcode: u32


class LatKey(Struct):
    opcode: u32
    log2: u32                         # a `log2` field: the map prints as log2 histograms


start = HashMap(u64, Start, 16384)    # request pointer -> when it was submitted
lat_ns = HashMap(LatKey, u64, 4096)


@tracepoint("io_uring", "io_uring_submit_req")
def submit(ctx) -> i32:
    if pid == 0 or get_current_pid_tgid() >> 32 == pid:
        start[ctx.req] = Start(ns=ktime_get_ns(), opcode=ctx.opcode)
    return 0


@tracepoint("io_uring", "io_uring_complete")
def complete(ctx) -> i32:
    s = start.lookup(ctx.req)
    if s is not None:
        lat_ns[LatKey(opcode=s.opcode, log2=log2(ktime_get_ns() - s.ns))] += 1
        del start[ctx.req]
    return 0


if __name__ == "__main__":
    from pybpf_uring import compile_file
    from pybpf_uring.bpf.hist import run_tool, tool_args

    args = tool_args(__doc__)
    run_tool(compile_file(__file__), args.duration, args.interval, globals={"pid": args.pid})
