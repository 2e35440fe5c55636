"""Sample: io_uring operations per process and opcode, as they are submitted.

One tracepoint program on io_uring_submit_req counts each request by the submitting process
(its pid and command, from get_current_comm) and the request's opcode.  Run it as root, stop it
with Ctrl-C or --duration; the busiest come last:

    python3 samples/iouring_top.py --duration 10 [--pid PID] [--interval 1]

    @ops[pid=4242, comm=fio, opcode=READ]: 120331
"""
from pybpf_uring import tracepoint, Struct, HashMap, get_current_pid_tgid, get_current_comm
from pybpf_uring import i32, u8, u32, u64

pid: u64 = 0                          # the process to trace (its tgid); 0: every process


class OpKey(Struct):
    pid: u32
    comm: u8[16]
    opcode: u32


ops = HashMap(OpKey, u64, 4096)


@tracepoint("io_uring", "io_uring_submit_req")
def submit(ctx) -> i32:
    tgid = get_current_pid_tgid() >> 32
    if pid == 0 or tgid == pid:
        k = OpKey(pid=tgid, opcode=ctx.opcode)
        get_current_comm(k.comm)
        ops[k] += 1
    return 0


if __name__ == "__main__":
    from pybpf_uring import compile_file
    from pybpf_uring.bpf.hist import run_tool, tool_args

    args = tool_args(__doc__)
    run_tool(compile_file(__file__), args.duration, args.interval, globals={"pid": args.pid})
