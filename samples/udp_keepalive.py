"""Sample: a UDP keep-alive offload -- the program pings idle peers and swallows their PONGs.

Many idle "connections" (UDP sockets on 127.0.0.1, each connected to a peer) must each send a
PING every interval and get a PONG back.  Done by the application, that is a wakeup per PING and
per PONG.  Here one BPF request does it all inside the ring: a kernel timeout on CQ 1 ticks every
interval and the program sends a PING on every connection (IORING_OP_SEND through the fixed-file
table); every connection always has an IORING_OP_RECV in flight, and when it completes the
program reads the datagram: a PONG is counted and dropped, anything else is copied to the
connection's inbox slot and posted to CQ 2, the application's queue.  The application sleeps on
CQ 2 and wakes only for real traffic.  It stops the offload by posting a STOP CQE to CQ 1.

Addresses the kernel needs (receive buffers, the PING text, the timespec, the inboxes) are host
memory, passed in the `config` map.

    python samples/udp_keepalive.py [connections] [interval_ms]
"""
from pybpf_uring import iouring, i32, u8, u32, u64, Struct, ArrayMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, emit_cqe, reap_cqe
from pybpf_uring.uring import copy_from_user, copy_to_user, prep_timeout, prep_send, prep_recv

MAX_CONN = 64
MSG = 64                        # bytes per receive buffer and inbox slot
from pybpf_uring.uring import IOSQE_FIXED_FILE
TIMER = 1                       # SQE/CQE user_data = kind << 16 | connection
SEND = 2
RECV = 3
STOP = 4
PONG = 0x474E4F50               # b"PONG" read as a little-endian u32

# [0] connections, [1] receive buffers (MAX_CONN * MSG), [2] the PING text (4 bytes),
# [3] the interval's timespec, [4] inboxes (MAX_CONN * MSG)
config = ArrayMap(u64, 8)
pings = ArrayMap(u64, MAX_CONN)          # PINGs sent, per connection
pongs = ArrayMap(u64, MAX_CONN)          # PONGs absorbed, per connection
# [0] started, [1] ticks, [2] send errors, [3] receive errors, [4] application wakeups,
# [5] program runs, [6] queue errors, [7] stopped
stats = ArrayMap(u64, 8)


class Msg(Struct):
    word: u32
    rest: u8[60]


def queue(ctx: IoUringCtx, sqe: Sqe, kind: u32, conn: u32) -> None:
    """Every request of the offload completes on CQ 1, tagged with its kind and connection; a
    full submission queue is counted, not fatal."""
    sqe.user_data = kind << 16 | conn
    sqe.cq_idx = 1
    if queue_sqe(ctx, sqe) != 0:
        stats[6] += 1


def arm_timer(ctx: IoUringCtx) -> None:
    """The next tick: a kernel timeout of one interval."""
    sqe = Sqe()
    prep_timeout(sqe, config[3], 0, 0)
    queue(ctx, sqe, TIMER, 0)


def arm_recv(ctx: IoUringCtx, conn: u32) -> None:
    """A receive on connection `conn` into its buffer."""
    sqe = Sqe()
    prep_recv(sqe, i32(conn), config[1] + conn * MSG, MSG, 0)
    sqe.flags = IOSQE_FIXED_FILE
    queue(ctx, sqe, RECV, conn)


def send_ping(ctx: IoUringCtx, conn: u32) -> None:
    """A PING on connection `conn`."""
    sqe = Sqe()
    prep_send(sqe, i32(conn), config[2], 4, 0)
    sqe.flags = IOSQE_FIXED_FILE
    queue(ctx, sqe, SEND, conn)


@iouring
def keepalive(ctx: IoUringCtx) -> i32:
    stats[5] += 1
    n = config[0]
    if stats[0] == 0:
        stats[0] = 1
        for i in range(MAX_CONN):          # a receive in flight on every connection
            if i >= n:
                break
            arm_recv(ctx, i)
        arm_timer(ctx)
    cqe = Cqe()
    msg = Msg()
    for k in range(2 * MAX_CONN + 2):
        if reap_cqe(ctx, 1, cqe) != 0:
            break
        kind = cqe.user_data >> 16
        conn = cqe.user_data & 0xFFFF
        if kind == STOP:
            stats[7] = 1
        elif kind == TIMER and stats[7] == 0:
            stats[1] += 1
            for i in range(MAX_CONN):
                if i >= n:
                    break
                send_ping(ctx, i)
            arm_timer(ctx)
        elif kind == SEND:
            if cqe.res < 0:
                stats[2] += 1
            elif conn < MAX_CONN:
                pings[conn] += 1
        elif kind == RECV and conn < MAX_CONN:
            if cqe.res < 0:
                stats[3] += 1
            else:
                copy_from_user(msg, config[1] + conn * MSG)
                if cqe.res == 4 and msg.word == PONG:
                    pongs[conn] += 1
                else:                                   # real traffic: wake the application
                    copy_to_user(config[4] + conn * MSG, msg)
                    emit_cqe(ctx, 2, conn, cqe.res, 0)
                    stats[4] += 1
                if stats[7] == 0:
                    arm_recv(ctx, u32(conn))
    if stats[7] != 0:
        return 0                  # stopped: the request completes; close() cancels the receives
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0


if __name__ == "__main__":
    import ctypes
    import select
    import socket
    import sys
    import threading
    import time

    from pybpf_uring import Ring, compile_file
    from pybpf_uring.uring import prep_nop

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]

    conns = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    interval_ms = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    ticks_wanted = 10
    talker = conns // 2                     # the one peer that also sends real data

    clients, peers = [], []
    for _ in range(conns):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.bind(("127.0.0.1", 0))
        p.bind(("127.0.0.1", 0))
        c.connect(p.getsockname())
        p.connect(c.getsockname())
        clients.append(c)
        peers.append(p)

    stop = threading.Event()
    seen_pings = [0] * conns

    def peer_loop():
        """The far ends: answer every PING with a PONG; one peer also says something real."""
        index = {p.fileno(): i for i, p in enumerate(peers)}
        said = False
        while not stop.is_set():
            ready, _, _ = select.select(peers, [], [], 0.01)
            for p in ready:
                i = index[p.fileno()]
                if p.recv(64) == b"PING":
                    seen_pings[i] += 1
                    p.send(b"PONG")
                    if i == talker and seen_pings[i] == 3 and not said:
                        p.send(b"hello, application")
                        said = True

    recv_bufs = ctypes.create_string_buffer(MAX_CONN * MSG)
    inbox = ctypes.create_string_buffer(MAX_CONN * MSG)
    ping = ctypes.create_string_buffer(b"PING", 4)
    ts = Timespec(0, interval_ms * 1_000_000)
    obj = compile_file(__file__)
    with Ring(entries=256, cq_sizes=(1024, 64)) as ring:
        ring.register_files([c.fileno() for c in clients])
        ring.register(obj)
        cfg = ring.maps["config"]
        for i, v in enumerate((conns, ctypes.addressof(recv_bufs), ctypes.addressof(ping),
                               ctypes.addressof(ts), ctypes.addressof(inbox))):
            cfg[i] = v
        peer = threading.Thread(target=peer_loop, daemon=True)
        peer.start()
        ring.submit_bpf("keepalive", user_data=1)
        wakeups = []
        deadline = time.monotonic() + ticks_wanted * interval_ms / 1000 * 5 + 2
        while ring.maps["stats"][1] < ticks_wanted and time.monotonic() < deadline:
            try:
                cqe = ring.wait_cqe(2, timeout=interval_ms / 1000)
            except TimeoutError:
                continue
            start = cqe.user_data * MSG
            wakeups.append((cqe.user_data, inbox.raw[start:start + cqe.res].decode()))
        stop_sqe = ring.sqe()
        prep_nop(stop_sqe)
        stop_sqe.user_data, stop_sqe.cq_idx = STOP << 16, 1
        ring.submit(stop_sqe)
        done = ring.wait_cqe(0, timeout=2)
        stop.set()
        peer.join()
        s = ring.maps["stats"]
        sent = ring.maps["pings"].values()[:conns]
        absorbed = ring.maps["pongs"].values()[:conns]
        print(f"request done: res={done.res}")
        print(f"connections {conns}, ticks {s[1]}, interval {interval_ms} ms, program runs {s[5]}")
        print(f"PINGs sent {sum(sent)} (each connection at least {min(sent)}), "
              f"seen by peers {sum(seen_pings)}")
        print(f"PONGs absorbed {sum(absorbed)} (each connection at least {min(absorbed)})")
        print(f"application wakeups {len(wakeups)}: {wakeups}")
        print(f"errors: send {s[2]}, receive {s[3]}, queue {s[6]}; faults {list(ring.faults)}")
    for sock in clients + peers:
        sock.close()
