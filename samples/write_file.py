"""Sample: the RFC's `write_file` -- 16 blocks of 16 KiB written with at most 4 in flight.

One BPF request keeps a queue of depth QD full: each run reaps the writes that completed on
CQ 1, checks each wrote a whole block, and queues the next blocks (IORING_OP_WRITE through the
ring's fixed file 0, as the RFC example does), then parks until another write completes.  The
data comes from a host buffer of BLOCKS x BLOCK bytes whose address is the request's user_data;
block i is written from `user_data + i * BLOCK` to file offset `i * BLOCK`.

    python samples/write_file.py [path]
"""
from pybpf_uring import iouring, i32, u64, ArrayMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_write

BLOCKS = 16
BLOCK = 16384
QD = 4
from pybpf_uring.uring import IOSQE_FIXED_FILE

state = ArrayMap(u64, 4)     # [0] blocks queued, [1] blocks done, [2] short or failed writes, [3] runs
depth = ArrayMap(u64, 1)     # the deepest the queue got


@iouring
def write_file(ctx: IoUringCtx) -> i32:
    state[3] += 1
    cqe = Cqe()
    for i in range(QD):
        if reap_cqe(ctx, 1, cqe) != 0:
            break
        state[1] += 1
        if cqe.res != BLOCK:
            state[2] += 1
    queued = state[0]
    done = state[1]
    for i in range(QD):
        if queued >= BLOCKS or queued - done >= QD:
            break
        sqe = Sqe()
        prep_write(sqe, 0, ctx.user_data + queued * BLOCK, BLOCK, queued * BLOCK)
        sqe.flags = IOSQE_FIXED_FILE
        sqe.user_data = queued
        sqe.cq_idx = 1
        if queue_sqe(ctx, sqe) != 0:
            break
        queued += 1
    state[0] = queued
    if queued - done > depth[0]:
        depth[0] = queued - done
    if done >= BLOCKS or state[2] > 0:
        return 0
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0


if __name__ == "__main__":
    import ctypes
    import os
    import sys
    import tempfile

    from pybpf_uring import Ring, compile_file

    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "blocks.bin")
    data = b"".join(bytes([ord("A") + i]) * BLOCK for i in range(BLOCKS))    # block i is all "A"+i
    buf = ctypes.create_string_buffer(data, len(data))
    obj = compile_file(__file__)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with Ring(entries=8, cq_sizes=(128, 128)) as ring:
            ring.register_files([fd])
            ring.register(obj)
            ring.submit_bpf("write_file", user_data=ctypes.addressof(buf))
            cqe = ring.wait_cqe(0, timeout=5)
            s = ring.maps["state"]
            print(f"request done: res={cqe.res}")
            print(f"blocks queued {s[0]}, done {s[1]}, failed {s[2]}, program runs {s[3]}, "
                  f"deepest queue {ring.maps['depth'][0]}")
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        written = f.read()
    print(f"file: {len(written)} bytes, matches the buffer: {written == data}")
