"""Sample: read(open(path)) as one BPF request -- openat, read, close, then one wakeup.

The program is a small state machine kept in a map (a request runs again each time the CQE it
waits for arrives on CQ 1): it queues IORING_OP_OPENAT, then an IORING_OP_READ of the fd the open
returned into the caller's buffer, then IORING_OP_CLOSE of that fd, and completes.  The host
submits one request and sleeps until its completion on CQ 0: three kernel operations, one wakeup.

The request's user_data is the address of an `Args` block in user memory (path, buffer, size);
the program reads it with copy_from_user and reports the outcome with copy_to_user into the
same block, since the RFC completes a BPF request with res 0 whatever happened.

    python samples/read_open.py [path]

As `cat` does, it exits 1 (with the reason on stderr) when the file could not be read.
"""
from pybpf_uring import iouring, i32, i64, u32, u64, Struct, HashMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, copy_from_user, copy_to_user
from pybpf_uring.uring import prep_openat, prep_read, prep_close

AT_FDCWD = -100
O_RDONLY = 0
OPENING = 0
READING = 1
CLOSING = 2


class Args(Struct):
    path: u64          # address of a NUL-terminated path
    buf: u64           # address of the buffer
    size: u32          # its size
    fd: i32            # out: the fd the open gave (or -errno)
    nread: i64         # out: what the read returned (-errno on failure)
    closed: i64        # out: what the close returned


class State(Struct):
    stage: u32
    fd: i32


# Per request, keyed by its user_data.  Run one request at a time, though: a request reaps
# whatever CQE is at the head of CQ 1, so two at once would take each other's completions
# (each would need its own CQ, or a dispatch on the CQE's user_data).
states = HashMap(u64, State, 64)


@iouring
def read_open(ctx: IoUringCtx) -> i32:
    args = Args()
    if copy_from_user(args, ctx.user_data) != 0:
        return 0
    sqe = Sqe()
    st = states.lookup(ctx.user_data)
    if st is None:
        prep_openat(sqe, AT_FDCWD, args.path, O_RDONLY, 0)
        fresh = State()
        fresh.stage = OPENING
        states[ctx.user_data] = fresh
    else:
        cqe = Cqe()
        if reap_cqe(ctx, 1, cqe) != 0:
            ctx.wait_idx = 1
            ctx.wait_nr = 1
            return 0
        if st.stage == OPENING:
            args.fd = cqe.res
            if cqe.res < 0:
                del states[ctx.user_data]
                copy_to_user(ctx.user_data, args)
                return 0
            st.fd = cqe.res
            st.stage = READING
            prep_read(sqe, cqe.res, args.buf, args.size, 0)
        elif st.stage == READING:
            args.nread = cqe.res
            st.stage = CLOSING
            prep_close(sqe, st.fd)
        else:
            args.closed = cqe.res
            del states[ctx.user_data]
            copy_to_user(ctx.user_data, args)
            return 0
        copy_to_user(ctx.user_data, args)
    sqe.user_data = ctx.user_data        # after the prep, which clears the whole SQE
    sqe.cq_idx = 1
    queue_sqe(ctx, sqe)
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0


if __name__ == "__main__":
    import ctypes
    import os
    import sys

    from pybpf_uring import Ring, compile_file

    path = (sys.argv[1] if len(sys.argv) > 1 else __file__).encode() + b"\0"
    path_buf = ctypes.create_string_buffer(path, len(path))
    buf = ctypes.create_string_buffer(4096)
    args = Args(path=ctypes.addressof(path_buf), buf=ctypes.addressof(buf), size=len(buf),
                fd=-1, nread=-1, closed=-1)
    obj = compile_file(__file__)
    with Ring(entries=8, cq_sizes=(128,)) as ring:
        ring.register(obj)
        ring.submit_bpf("read_open", user_data=ctypes.addressof(args))
        calls = ring.enter_calls
        cqe = ring.wait_cqe(0, timeout=5)
        print(f"request done: res={cqe.res}; io_uring_enter calls while waiting: {ring.enter_calls - calls}")
        print(f"open -> fd {args.fd}, read -> {args.nread} bytes, close -> {args.closed}")
        print("first line:", buf.raw[:args.nread].split(b"\n", 1)[0].decode() if args.nread > 0 else "")
        print("requests in flight (map):", len(ring.maps["states"]), "faults:", list(ring.faults))
    for step, res in (("open", args.fd), ("read", args.nread), ("close", args.closed)):
        if res < 0:           # the first step that failed; the ones after it never ran
            sys.exit(f"{sys.argv[0]}: {step} {path[:-1].decode()}: {os.strerror(-res)}")
