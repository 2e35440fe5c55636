"""Sample: failed io_uring completions by opcode and errno.

io_uring_complete's record has the result but not the opcode, so io_uring_submit_req notes each
request's opcode under its pointer, and io_uring_complete counts the negative results by
(opcode, errno) and forgets the request.  Run it as root, stop it with Ctrl-C or --duration:

    python3 samples/iouring_errors.py --duration 10 [--pid PID] [--interval 1]

    @errors[opcode=READ, errno=9]: 2           (9: EBADF)
"""
from pybpf_uring import tracepoint, Struct, HashMap, get_current_pid_tgid, i32, u32, u64

pid: u64 = 0                          # the process to trace (its tgid); 0: every process


class ErrKey(Struct):
    opcode: u32
    errno: u32


opcode_of = HashMap(u64, u32, 16384)  # request pointer -> its opcode
errors = HashMap(ErrKey, u64, 1024)


@tracepoint("io_uring", "io_uring_submit_req")
def submit(ctx) -> i32:
    if pid == 0 or get_current_pid_tgid() >> 32 == pid:
        opcode_of[ctx.req] = ctx.opcode
    return 0


@tracepoint("io_uring", "io_uring_complete")
def complete(ctx) -> i32:
    op = opcode_of.lookup(ctx.req)
    if op is not None:
        if ctx.res < 0:
            errors[ErrKey(opcode=op[0], errno=-ctx.res)] += 1
        del opcode_of[ctx.req]
    return 0


if __name__ == "__main__":
    from pybpf_uring import compile_file
    from pybpf_uring.bpf.hist import run_tool, tool_args

    args = tool_args(__doc__)
    run_tool(compile_file(__file__), args.duration, args.interval, globals={"pid": args.pid})
