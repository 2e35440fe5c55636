"""prep_openat, prep_close, prep_send, prep_recv: byte-exact against C liburing, on both sides.

The host versions (uring.py) and the compiler's inlined ones (builtins.PREPS) must write the very
SQE liburing's io_uring_prep_* write into a zeroed SQE; a tiny C program built here with gcc and
liburing.h is the reference.  Then the preps drive a real kernel io_uring: openat/read/close and
send/recv, from a BPF program and from the host.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import subprocess
import textwrap

import pytest
from kernel_harness import diagnostic
from probes import GCC

from pybpf_uring import Ring, compile_source
from pybpf_uring.runtime.engine import instantiate
from pybpf_uring.uring import Sqe, prep_close, prep_openat, prep_recv, prep_send

AT_FDCWD = -100
MSG_OOB, MSG_PEEK, MSG_WAITALL = 0x1, 0x2, 0x100

# (prep, its arguments after the sqe): edge values included -- negative fds, a flags word with
# bit 31 set, a length past 32 bits (size_t in C, truncated to the u32 `len` by both sides).
CASES = [
    ("openat", (AT_FDCWD, 0x7FFF_1234_5678, os.O_RDONLY | os.O_CLOEXEC, 0)),
    ("openat", (7, 0xFFFF_FFFF_FFFF_FFF0, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)),
    ("openat", (-1, 0, 0x8000_0001, 0xFFFF_FFFF)),
    ("close", (3,)),
    ("close", (-1,)),
    ("close", (0x7FFF_FFFF,)),
    ("send", (5, 0x7FFF_0000_1000, 64, 0)),
    ("send", (-2, 0xFFFF_FFFF_FFFF_FFFF, (1 << 32) + 5, MSG_OOB | 0x4000)),
    ("recv", (5, 0x7FFF_0000_2000, 4096, MSG_WAITALL)),
    ("recv", (0, 1, 0xFFFF_FFFF, 0x8000_0000 | MSG_PEEK)),
]

C_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <liburing.h>

/* argv: groups of "op a b c d"; prints each SQE (64 bytes) as hex, one line per group */
int main(int argc, char **argv) {
    for (int i = 1; i + 4 < argc; i += 5) {
        struct io_uring_sqe sqe;
        long long a = strtoll(argv[i + 1], 0, 0);
        unsigned long long b = strtoull(argv[i + 2], 0, 0);
        long long c = strtoll(argv[i + 3], 0, 0), d = strtoll(argv[i + 4], 0, 0);
        memset(&sqe, 0, sizeof sqe);
        if (!strcmp(argv[i], "openat"))
            io_uring_prep_openat(&sqe, (int)a, (const char *)b, (int)c, (mode_t)d);
        else if (!strcmp(argv[i], "close"))
            io_uring_prep_close(&sqe, (int)a);
        else if (!strcmp(argv[i], "send"))
            io_uring_prep_send(&sqe, (int)a, (const void *)b, (size_t)c, (int)d);
        else if (!strcmp(argv[i], "recv"))
            io_uring_prep_recv(&sqe, (int)a, (void *)b, (size_t)c, (int)d);
        else
            return 2;
        for (size_t j = 0; j < sizeof sqe; j++)
            printf("%02x", ((unsigned char *)&sqe)[j]);
        printf("\n");
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def liburing_sqes(tmp_path_factory) -> list[bytes]:
    """What C liburing's preps write for CASES, in order (for tests marked tools("gcc"))."""
    d = tmp_path_factory.mktemp("liburing")
    (d / "preps.c").write_text(C_SOURCE)
    built = subprocess.run([GCC, "-O1", "-o", str(d / "preps"), str(d / "preps.c")],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    argv = []
    for op, args in CASES:
        argv += [op] + [str(a) for a in (args + (0, 0, 0))[:4]]
    out = subprocess.run([str(d / "preps")] + argv, capture_output=True, text=True, check=True).stdout
    sqes = [bytes.fromhex(line) for line in out.split()]
    assert len(sqes) == len(CASES) and all(len(s) == 64 for s in sqes)
    return sqes


HOST_PREPS = {"openat": prep_openat, "close": prep_close, "send": prep_send, "recv": prep_recv}


@pytest.mark.tools("gcc")
@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{op}-{i}" for i, (op, _) in enumerate(CASES)])
def test_host_prep_writes_what_liburing_writes(liburing_sqes, i):
    op, args = CASES[i]
    sqe = Sqe.from_buffer_copy(b"\xa5" * 64)     # a reused slot: the prep must clear it all
    HOST_PREPS[op](sqe, *args)
    assert bytes(sqe) == liburing_sqes[i]


def test_opcodes_and_the_offset_28_union():
    """The fields liburing sets by name, read back at their ABI offsets."""
    sqe = Sqe()
    prep_openat(sqe, AT_FDCWD, 0x1000, os.O_RDONLY | os.O_CLOEXEC, 0o600)
    raw = bytes(sqe)
    assert raw[0] == 18 and int.from_bytes(raw[4:8], "little", signed=True) == AT_FDCWD
    assert int.from_bytes(raw[16:24], "little") == 0x1000                  # addr: the path
    assert int.from_bytes(raw[24:28], "little") == 0o600                   # len: the mode
    assert int.from_bytes(raw[28:32], "little") == os.O_RDONLY | os.O_CLOEXEC  # open_flags
    prep_close(sqe, 9)
    assert bytes(sqe) == bytes([19, 0, 0, 0, 9, 0, 0, 0]) + bytes(56)
    for prep, opcode in ((prep_send, 26), (prep_recv, 27)):
        prep(sqe, 4, 0x2000, 100, MSG_WAITALL)
        raw = bytes(sqe)
        assert raw[0] == opcode and int.from_bytes(raw[28:32], "little") == MSG_WAITALL  # msg_flags
        assert int.from_bytes(raw[24:28], "little") == 100 and raw[8:16] == bytes(8)


# --- the same preps compiled into a BPF program, run by the engine ------------------------------

# One program per prep takes its arguments from `args` at run time (u64s, converted to each
# field's width by the prep as a C call would); `constants` makes the same calls with literals.
PROGRAMS = textwrap.dedent("""
    from pybpf_uring import iouring, i32, u64, ArrayMap
    from pybpf_uring.uring import IoUringCtx, Sqe, queue_sqe
    from pybpf_uring.uring import prep_openat, prep_close, prep_send, prep_recv

    args = ArrayMap(u64, 4)


    def dirty() -> u64:
        return 0xA5A5A5A5A5A5A5A5


    @iouring
    def openat(ctx: IoUringCtx) -> i32:
        sqe = Sqe(user_data=dirty(), off=dirty(), cq_idx=3, flags=1, buf_index=7, pad2=dirty())
        prep_openat(sqe, args[0], args[1], args[2], args[3])
        queue_sqe(ctx, sqe)
        return 0


    @iouring
    def close(ctx: IoUringCtx) -> i32:
        sqe = Sqe(user_data=dirty(), addr=dirty(), len=9, rw_flags=9, splice_fd_in=-1)
        prep_close(sqe, args[0])
        queue_sqe(ctx, sqe)
        return 0


    @iouring
    def send(ctx: IoUringCtx) -> i32:
        sqe = Sqe(user_data=dirty(), off=dirty(), personality=2, pad1=5)
        prep_send(sqe, args[0], args[1], args[2], args[3])
        queue_sqe(ctx, sqe)
        return 0


    @iouring
    def recv(ctx: IoUringCtx) -> i32:
        sqe = Sqe(user_data=dirty(), ioprio=3, cq_idx=1)
        prep_recv(sqe, args[0], args[1], args[2], args[3])
        queue_sqe(ctx, sqe)
        return 0


    @iouring
    def constants(ctx: IoUringCtx) -> i32:
        sqe = Sqe()
        prep_openat(sqe, -100, 0x7FFF12345678, 0o2000000, 0)
        queue_sqe(ctx, sqe)
        prep_openat(sqe, 7, 0xFFFFFFFFFFFFFFF0, 0o1101, 0o640)
        queue_sqe(ctx, sqe)
        prep_close(sqe, -1)
        queue_sqe(ctx, sqe)
        prep_send(sqe, 5, 0x7FFF00001000, 64, 0)
        queue_sqe(ctx, sqe)
        prep_recv(sqe, 5, 0x7FFF00002000, 4096, 0x100)
        queue_sqe(ctx, sqe)
        return 0
""")

# `constants`, as CASES indices
CONSTANT_CASES = [0, 1, 4, 6, 8]


class Recorder:
    """The ring helpers a run sees: keeps every SQE the program queues."""

    def __init__(self) -> None:
        self.sqes: list[bytes] = []

    def queue_sqe(self, sqe: bytes) -> int:
        self.sqes.append(bytes(sqe))
        return 0


@pytest.fixture(scope="module")
def preps_object():
    return compile_source(PROGRAMS, "preps.py")


def backends() -> list:
    from pybpf_uring.runtime.engine.jit import jit_available
    reason = jit_available()
    return ["interpreter", pytest.param("jit", marks=pytest.mark.skipif(reason is not None,
                                                                        reason=str(reason)))]


@pytest.mark.tools("gcc")
@pytest.mark.parametrize("backend", backends())
def test_compiled_preps_queue_what_liburing_writes(preps_object, liburing_sqes, backend):
    inst = instantiate(preps_object, backend=backend)
    for i, (op, args) in enumerate(CASES):
        for k, v in enumerate(args):
            inst.maps["args"][k] = v & (1 << 64) - 1
        rec = Recorder()
        assert inst.runner(op).run(bytes(16), rec)[0] == 0
        assert rec.sqes == [liburing_sqes[i]], f"{op}{args}"
    rec = Recorder()
    inst.runner("constants").run(bytes(16), rec)
    assert rec.sqes == [liburing_sqes[i] for i in CONSTANT_CASES]


# --- errors ------------------------------------------------------------------------------------

def check_error(body: str) -> str:
    src = ("from pybpf_uring import iouring, i32, u64\n"
           "from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, prep_openat, prep_close, prep_send, prep_recv\n\n"
           "@iouring\ndef f(ctx: IoUringCtx) -> i32:\n    sqe = Sqe()\n    cqe = Cqe()\n"
           f"    {body}\n    return 0\n")
    return diagnostic(src, "bad.py")


@pytest.mark.parametrize("body, message", [
    ("prep_openat(sqe, -100, 0, 0)",
     "bad.py:8:5: error: prep_openat() takes 5 arguments (sqe, dfd, path, flags, mode), got 4\n"
     "    prep_openat(sqe, -100, 0, 0)\n    ^~~~~~~~~~~~~~~~~~~~~~~~~~~~\n"
     "  note: the same arguments as liburing's io_uring_prep_openat"),
    ("prep_close(sqe)",
     "bad.py:8:5: error: prep_close() takes 2 arguments (sqe, fd), got 1\n    prep_close(sqe)\n"
     "    ^~~~~~~~~~~~~~~\n  note: the same arguments as liburing's io_uring_prep_close"),
    ("prep_send(sqe, 3, 0, 4, 0, 0)",
     "bad.py:8:5: error: prep_send() takes 5 arguments (sqe, fd, buf, length, flags), got 6\n"
     "    prep_send(sqe, 3, 0, 4, 0, 0)\n    ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n"
     "  note: the same arguments as liburing's io_uring_prep_send"),
    ("prep_send(sqe, 3, cqe, 4, 0)",
     "bad.py:8:23: error: buf has type Cqe, expected u64\n    prep_send(sqe, 3, cqe, 4, 0)\n"
     "                      ^~~"),
    ("prep_recv(cqe, 3, 0, 4, 0)",
     "bad.py:8:15: error: prep_recv() needs a Sqe, not Cqe\n    prep_recv(cqe, 3, 0, 4, 0)\n"
     "              ^~~\n  note: e.g. `buf = Sqe()` then prep_recv(..., buf)"),
    ("prep_close(sqe, cqe)",
     "bad.py:8:21: error: fd has type Cqe, expected i32\n    prep_close(sqe, cqe)\n                    ^~~"),
])
def test_wrong_arguments_are_diagnosed_like_the_other_preps(body, message):
    assert check_error(body) == message


# --- on a real kernel io_uring -----------------------------------------------------------------

CAT = textwrap.dedent("""
    from pybpf_uring import iouring, i32, i64, u64, ArrayMap
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe
    from pybpf_uring.uring import prep_openat, prep_read, prep_close

    AT_FDCWD = -100
    config = ArrayMap(u64, 4)     # path address, buffer address, buffer size, open flags
    out = ArrayMap(i64, 4)        # stage, then what openat, read and close returned


    @iouring
    def cat(ctx: IoUringCtx) -> i32:
        sqe = Sqe()
        stage = out[0]
        if stage == 0:
            prep_openat(sqe, AT_FDCWD, config[0], config[3], 0)
        else:
            cqe = Cqe()
            if reap_cqe(ctx, 1, cqe) != 0:
                ctx.wait_idx = 1
                ctx.wait_nr = 1
                return 0
            out[stage] = cqe.res
            if stage == 1 and cqe.res >= 0:
                prep_read(sqe, cqe.res, config[1], config[2], 0)
            elif stage == 2:
                prep_close(sqe, out[1])
            else:
                return 0
        out[0] = stage + 1
        sqe.user_data = ctx.user_data
        sqe.cq_idx = 1
        queue_sqe(ctx, sqe)
        ctx.wait_idx = 1
        ctx.wait_nr = 1
        return 0
""")


def run_cat(path: bytes, flags: int = os.O_RDONLY | os.O_CLOEXEC) -> tuple[list[int], bytes]:
    name = ctypes.create_string_buffer(path)
    buf = ctypes.create_string_buffer(256)
    with Ring(entries=8, cq_sizes=(8,)) as ring:
        ring.register(compile_source(CAT, "cat.py"))
        for i, v in enumerate((ctypes.addressof(name), ctypes.addressof(buf), len(buf), flags)):
            ring.maps["config"][i] = v
        ring.submit_bpf("cat", user_data=42)
        done = ring.wait_cqe(0, timeout=5)
        assert (done.user_data, done.res) == (42, 0) and not ring.faults
        return list(ring.maps["out"].values()), buf.raw


@pytest.mark.kernel
def test_bpf_openat_read_close_on_a_real_ring(tmp_path):
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello from openat\n")
    (stages, fd, nread, closed), data = run_cat(bytes(f))
    assert stages == 3 and fd >= 0 and nread == 18 and closed == 0
    assert data[:nread] == b"hello from openat\n"
    with pytest.raises(OSError) as gone:                  # the program closed what it opened
        os.fstat(fd)
    assert gone.value.errno == errno.EBADF


@pytest.mark.kernel
def test_bpf_openat_of_a_missing_file_and_open_flags_reach_the_kernel(tmp_path):
    (stages, fd, *_), _ = run_cat(bytes(tmp_path / "missing"))
    assert (stages, fd) == (1, -errno.ENOENT)
    (stages, fd, *_), _ = run_cat(bytes(tmp_path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    assert stages == 3 and fd >= 0                         # a directory opens...
    (stages, fd, nread, closed), _ = run_cat(bytes(tmp_path), os.O_WRONLY)
    assert (stages, fd) == (1, -errno.EISDIR)              # ...but not for writing


PINGPONG = textwrap.dedent("""
    from pybpf_uring import iouring, i32, i64, u64, ArrayMap
    from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, reap_cqe, prep_send, prep_recv

    MSG_PEEK = 2
    config = ArrayMap(u64, 6)     # send fd, recv fd, message address, its length, two buffers
    out = ArrayMap(i64, 4)        # [0] runs; [1 + i]: res of the CQE with user_data i


    @iouring
    def pingpong(ctx: IoUringCtx) -> i32:
        out[0] += 1
        sqe = Sqe()
        if out[0] == 1:
            prep_send(sqe, config[0], config[2], config[3], 0)
            sqe.cq_idx = 1
            queue_sqe(ctx, sqe)
            prep_recv(sqe, config[1], config[4], 64, MSG_PEEK)   # leaves it queued...
            sqe.user_data = 1
            sqe.cq_idx = 1
            queue_sqe(ctx, sqe)
            prep_recv(sqe, config[1], config[5], 64, 0)          # ...for this one
            sqe.user_data = 2
            sqe.cq_idx = 1
            queue_sqe(ctx, sqe)
            ctx.wait_idx = 1
            ctx.wait_nr = 3
            return 0
        cqe = Cqe()
        for i in range(3):
            if reap_cqe(ctx, 1, cqe) == 0 and cqe.user_data < 3:
                out[1 + cqe.user_data] = cqe.res
        return 0
""")


@pytest.mark.uring
def test_bpf_send_and_recv_over_a_socketpair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    msg = ctypes.create_string_buffer(b"ping over io_uring", 18)
    peek, got = ctypes.create_string_buffer(64), ctypes.create_string_buffer(64)
    with a, b, Ring(entries=8, cq_sizes=(8,)) as ring:
        ring.register(compile_source(PINGPONG, "pingpong.py"))
        for i, v in enumerate((a.fileno(), b.fileno(), ctypes.addressof(msg), len(msg),
                               ctypes.addressof(peek), ctypes.addressof(got))):
            ring.maps["config"][i] = v
        ring.submit_bpf("pingpong", user_data=7)
        done = ring.wait_cqe(0, timeout=5)
        assert (done.user_data, done.res) == (7, 0) and not ring.faults
        assert list(ring.maps["out"].values()) == [2, 18, 18, 18]   # send, peek, recv
        assert peek.raw[:18] == got.raw[:18] == b"ping over io_uring"
        b.setblocking(False)
        with pytest.raises(BlockingIOError):                      # the recv consumed it
            b.recv(64)


@pytest.mark.uring
def test_host_preps_on_a_real_ring(tmp_path):
    """ring.sqe() + the host preps: openat's mode and flags, close, send's and recv's msg_flags."""
    path = ctypes.create_string_buffer(bytes(tmp_path / "made"))
    umask = os.umask(0o022)
    os.umask(umask)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    data = ctypes.create_string_buffer(b"datagram", 8)
    buf = ctypes.create_string_buffer(64)
    with a, b, Ring(entries=8) as ring:
        def run(prep, *args, user_data=1):
            sqe = ring.sqe()
            prep(sqe, *args)
            sqe.user_data = user_data
            ring.submit(sqe)
            cqe = ring.wait_cqe(0, timeout=5)
            assert cqe.user_data == user_data
            return cqe.res

        fd = run(prep_openat, AT_FDCWD, ctypes.addressof(path),
                 os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o640)
        assert fd >= 0 and os.stat(tmp_path / "made").st_mode & 0o777 == 0o640 & ~umask
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert run(prep_openat, AT_FDCWD, ctypes.addressof(path),
                   os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640) == -errno.EEXIST
        assert run(prep_close, fd) == 0
        assert run(prep_close, fd) == -errno.EBADF

        assert run(prep_send, a.fileno(), ctypes.addressof(data), 8, MSG_OOB) == -errno.EOPNOTSUPP
        assert run(prep_send, a.fileno(), ctypes.addressof(data), 8, 0) == 8
        assert run(prep_recv, b.fileno(), ctypes.addressof(buf), 64, MSG_PEEK) == 8
        assert run(prep_recv, b.fileno(), ctypes.addressof(buf), 3, 0) == 3    # truncated datagram
        assert buf.raw[:8] == b"datagram"                                       # peek left it whole
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(64)
