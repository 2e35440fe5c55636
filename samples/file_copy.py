"""Sample: copy a file with QD read -> write chains in flight, driven by one BPF request.

Each of the QD buffer slots runs a chain: read block b into the slot, and when the read's CQE
arrives, write what it read to the same offset of the destination; when the write completes, the
slot takes the next block.  The program keeps the chains going from the CQEs it reaps on CQ 1;
the host submits one request and waits once.  SQE user_data says which chain and which step a
CQE belongs to: `step << 8 | slot`.

The request's user_data is the address of an `Args` block (fds, buffer, size) in user memory;
the outcome (bytes written, errors) is in the `progress` map.

    python samples/file_copy.py [src] [dst]
"""
from pybpf_uring import iouring, i32, u32, u64, Struct, ArrayMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, copy_from_user
from pybpf_uring.uring import prep_read, prep_write

QD = 4
BLOCK = 65536
READ = 1
WRITE = 2


class Args(Struct):
    src: i32
    dst: i32
    buf: u64            # QD * BLOCK bytes
    size: u64           # bytes to copy


# [0] next block to read, [1] bytes written, [2] errors, [3] chains in flight, [4] deepest,
# [5] program runs
progress = ArrayMap(u64, 8)
slot_block = ArrayMap(u64, QD)          # the block each slot is working on
slot_busy = ArrayMap(u32, QD)


@iouring
def file_copy(ctx: IoUringCtx) -> i32:
    progress[5] += 1
    args = Args()
    if copy_from_user(args, ctx.user_data) != 0:
        progress[2] += 1
        return 0
    cqe = Cqe()
    for i in range(2 * QD):                  # what finished: reads go on to their write
        if reap_cqe(ctx, 1, cqe) != 0:
            break
        slot = cqe.user_data & 0xFF
        step = cqe.user_data >> 8
        if slot >= QD:
            progress[2] += 1
            continue
        if cqe.res < 0:
            progress[2] += 1
            slot_busy[slot] = 0
        elif step == READ:
            sqe = Sqe()
            prep_write(sqe, args.dst, args.buf + slot * BLOCK, u32(cqe.res), slot_block[slot] * BLOCK)
            sqe.user_data = WRITE << 8 | slot
            sqe.cq_idx = 1
            if queue_sqe(ctx, sqe) != 0:
                progress[2] += 1
                slot_busy[slot] = 0
        else:
            progress[1] += u64(cqe.res)
            slot_busy[slot] = 0
    in_flight: u64 = 0
    for s in range(QD):                      # free slots start the next blocks
        if slot_busy[s] == 0 and progress[2] == 0:
            block = progress[0]
            if block * BLOCK < args.size:
                length = args.size - block * BLOCK
                if length > BLOCK:
                    length = BLOCK
                sqe = Sqe()
                prep_read(sqe, args.src, args.buf + s * BLOCK, u32(length), block * BLOCK)
                sqe.user_data = READ << 8 | s
                sqe.cq_idx = 1
                if queue_sqe(ctx, sqe) == 0:
                    slot_block[s] = block
                    slot_busy[s] = 1
                    progress[0] = block + 1
                else:
                    progress[2] += 1
        if slot_busy[s] != 0:
            in_flight += 1
    progress[3] = in_flight
    if in_flight > progress[4]:
        progress[4] = in_flight
    if in_flight == 0:
        return 0                     # every chain ended: the copy is done (or failed)
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0


if __name__ == "__main__":
    import ctypes
    import hashlib
    import os
    import sys
    import tempfile
    import time

    from pybpf_uring import Ring, compile_file

    if len(sys.argv) > 2:
        src_path, dst_path = sys.argv[1], sys.argv[2]
    else:
        tmp = tempfile.mkdtemp()
        src_path, dst_path = os.path.join(tmp, "src.bin"), os.path.join(tmp, "dst.bin")
        with open(src_path, "wb") as f:
            f.write(os.urandom(3 * 1024 * 1024 + 12345))
    size = os.path.getsize(src_path)
    buf = ctypes.create_string_buffer(QD * BLOCK)
    obj = compile_file(__file__)
    src = os.open(src_path, os.O_RDONLY)
    dst = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        args = Args(src=src, dst=dst, buf=ctypes.addressof(buf), size=size)
        with Ring(entries=16, cq_sizes=(64,)) as ring:
            ring.register(obj)
            start = time.monotonic()
            ring.submit_bpf("file_copy", user_data=ctypes.addressof(args))
            cqe = ring.wait_cqe(0, timeout=30)
            elapsed = time.monotonic() - start
            p = ring.maps["progress"]
            print(f"request done: res={cqe.res}")
            print(f"copied {p[1]} of {size} bytes, errors {p[2]}, deepest {p[4]} chains, "
                  f"program runs {p[5]}")
            print(f"elapsed {elapsed * 1000:.0f} ms ({size / elapsed / 1e6:.0f} MB/s)")
    finally:
        os.close(src)
        os.close(dst)

    def digest(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    print("identical:", digest(src_path) == digest(dst_path))
