"""Sample: the RFC's `pingpong` -- two BPF requests bounce a CQE between CQ 1 and CQ 2.

The same program is submitted twice: the request with user_data 1 waits on CQ 1 and answers on
CQ 2, the one with user_data 2 the other way round.  A CQE's user_data is the ball's count; each
side reaps it, counts the hit and sends it back plus one, until the count reaches LIMIT.  The
side that sends LIMIT completes; the other completes when it receives it.  The host only kicks
off (a NOP whose CQE goes to CQ 1) and waits for the two completions: every bounce runs inside
the ring's task work, with no io_uring_enter per bounce.

    python samples/pingpong.py
"""
from pybpf_uring import iouring, i32, u32, u64, ArrayMap
from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

LIMIT = 20

hits = ArrayMap(u64, 3)            # per CQ: balls reaped from it
last = ArrayMap(u64, 1)            # the highest count seen


@iouring
def pingpong(ctx: IoUringCtx) -> i32:
    mine = u32(ctx.user_data)
    other = 3 - mine
    cqe = Cqe()
    if reap_cqe(ctx, mine, cqe) == 0:
        hits[mine] += 1
        n = cqe.user_data
        if n > last[0]:
            last[0] = n
        if n >= LIMIT:
            return 0
        emit_cqe(ctx, other, n + 1, 0, 0)
        if n + 1 >= LIMIT:
            return 0
    ctx.wait_idx = mine
    ctx.wait_nr = 1
    return 0


if __name__ == "__main__":
    from pybpf_uring import Ring, compile_file
    from pybpf_uring.uring import prep_nop

    obj = compile_file(__file__)
    with Ring(entries=8, cq_sizes=(128, 128)) as ring:
        ring.register(obj)
        ring.submit_bpf("pingpong", user_data=1)
        ring.submit_bpf("pingpong", user_data=2)
        print("parked before the kick-off:", ring.parked)
        calls = ring.enter_calls
        kick = ring.sqe()
        prep_nop(kick)
        kick.user_data, kick.cq_idx = 0, 1          # the ball, count 0, lands on CQ 1
        ring.submit(kick)
        done = sorted(ring.wait_cqe(0, timeout=2).user_data for _ in range(2))
        print("completed requests:", done)
        print("reaped on CQ1:", ring.maps["hits"][1], "on CQ2:", ring.maps["hits"][2])
        print("last count:", ring.maps["last"][0])
        print("io_uring_enter calls for the rally:", ring.enter_calls - calls)
        print("left on CQ1/CQ2:", ring.ready(1), ring.ready(2), "faults:", list(ring.faults))
