"""Sample: the RFC's `test` program -- every io_uring BPF helper once, on a real ring.

One BPF request emits a CQE to CQ 0 and two to CQ 1, reaps both back from CQ 1, queues a NOP
through the kernel, increments a counter that lives in *user* memory (copy_from_user, +1,
copy_to_user: `ctx.user_data` is its address), and parks until CQ 0 holds its two CQEs (the
emitted one and the NOP's).  Its second run finds them there and completes the request.

    python samples/rfc_helpers.py

The block under `if __name__ == "__main__":` is host code; the compiler skips it.
"""
from pybpf_uring import iouring, i32, u64, ArrayMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, emit_cqe, reap_cqe
from pybpf_uring.uring import copy_from_user, copy_to_user, prep_nop

runs = ArrayMap(u64, 1)
reaped = ArrayMap(u64, 4)      # what the first run reaped from CQ 1: user_data, res, user_data, res


@iouring
def test(ctx: IoUringCtx) -> i32:
    runs[0] += 1
    if runs[0] > 1:
        return 0                              # second run: CQ 0 holds both CQEs; complete
    emit_cqe(ctx, 1, 3, 11, 0)
    emit_cqe(ctx, 1, 4, 12, 0)
    emit_cqe(ctx, 0, 5, 13, 0)
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) == 0:
        reaped[0] = cqe.user_data
        reaped[1] = u64(cqe.res)
    if reap_cqe(ctx, 1, cqe) == 0:
        reaped[2] = cqe.user_data
        reaped[3] = u64(cqe.res)
    sqe = Sqe()
    prep_nop(sqe)
    sqe.user_data = 2
    queue_sqe(ctx, sqe)
    v: u64 = 0
    copy_from_user(v, ctx.user_data)
    v += 1
    copy_to_user(ctx.user_data, v)
    print("test: user counter now", v)          # bpf_trace_printk: the host reads ring.maps.trace
    ctx.wait_idx = 0
    ctx.wait_nr = 2
    return 0


if __name__ == "__main__":
    import ctypes

    from pybpf_uring import Ring, compile_file

    obj = compile_file(__file__)
    counter = ctypes.c_uint64(41)
    with Ring(entries=8, cq_sizes=(128, 128)) as ring:
        ring.register(obj)
        ring.submit_bpf("test", user_data=ctypes.addressof(counter))
        for _ in range(3):
            cqe = ring.wait_cqe(0, timeout=2)
            print(f"CQ0: user_data={cqe.user_data if cqe.user_data < 1 << 32 else 'request'} res={cqe.res}")
        print("reaped from CQ1:", ring.maps["reaped"].values())
        print("runs:", ring.maps["runs"][0], "counter in user memory:", counter.value)
        print("CQ1 left:", ring.ready(1), "faults:", list(ring.faults))
        print("trace:", list(ring.maps.trace))
