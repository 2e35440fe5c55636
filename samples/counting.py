"""Sample: the RFC's `counting` -- a program that re-arms a kernel timeout and waits for it.

One BPF request queues an IORING_OP_TIMEOUT whose CQE goes to CQ 1 and parks on CQ 1.  Each
expiry runs it again: it reaps the CQE, counts the round in a map and re-arms, until ROUNDS
rounds have passed; then it completes.  The host sleeps in one wait for the whole thing.

The timeout's `struct __kernel_timespec` must be in memory the *kernel* can read (an SQE carries a
user address); a program cannot take the address of its own memory for that, so the host owns
the timespec and passes its address in the request's user_data.

    python samples/counting.py [interval_ms]
"""
from pybpf_uring import iouring, i32, u64, ArrayMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_timeout

ROUNDS = 11
ETIME = 62

rounds = ArrayMap(u64, 2)          # [0] expiries seen, [1] expiries that were not -ETIME


@iouring
def counting(ctx: IoUringCtx) -> i32:
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) == 0:
        rounds[0] += 1
        if cqe.res != -ETIME:
            rounds[1] += 1
    if rounds[0] >= ROUNDS:
        return 0                          # wait_nr stays 0: the request completes
    sqe = Sqe()
    prep_timeout(sqe, ctx.user_data, 0, 0)
    sqe.user_data = rounds[0]
    sqe.cq_idx = 1
    queue_sqe(ctx, sqe)
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0


if __name__ == "__main__":
    import ctypes
    import sys
    import time

    from pybpf_uring import Ring, compile_file

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]

    interval_ms = int(sys.argv[1]) if len(sys.argv) > 1 else 200     # the RFC's 200 ms
    ts = Timespec(0, interval_ms * 1_000_000)
    obj = compile_file(__file__)
    with Ring(entries=8, cq_sizes=(128, 128)) as ring:
        ring.register(obj)
        start = time.monotonic()
        ring.submit_bpf("counting", user_data=ctypes.addressof(ts))
        cqe = ring.wait_cqe(0, timeout=ROUNDS * interval_ms / 1000 * 4 + 2)
        elapsed = time.monotonic() - start
        print(f"request done: res={cqe.res}")
        print(f"rounds: {ring.maps['rounds'][0]} (other than -ETIME: {ring.maps['rounds'][1]})")
        print(f"elapsed: {elapsed * 1000:.0f} ms for {ROUNDS} x {interval_ms} ms")
        print(f"io_uring_enter calls: {ring.enter_calls}")
