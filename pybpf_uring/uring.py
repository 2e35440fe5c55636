"""io_uring names for RFC programs (docs/abi.md §A): the ctx, SQE and CQE layouts, helpers, preps.

The structs are real `Struct`s, so host code builds SQEs with the same `prep_*` functions that
programs call (the compiler inlines them as field stores).  The RFC helpers only run inside a
program; calling one from Python says so.
"""
from __future__ import annotations

import ctypes

from .types import Struct, program_only, i32, u8, u16, u32, u64

# Every opcode and SQE flag under the kernel's name, from uapi (their one home), so host code and
# programs alike write `from pybpf_uring.uring import IORING_OP_NOP, IOSQE_IO_LINK`; the checker
# folds them as integer constants.  tests/test_uapi.py checks that none is missing here.
from .uapi import (IORING_OP_NOP, IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
                   IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IORING_OP_POLL_ADD,
                   IORING_OP_POLL_REMOVE, IORING_OP_SYNC_FILE_RANGE, IORING_OP_SENDMSG,
                   IORING_OP_RECVMSG, IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE,
                   IORING_OP_ACCEPT, IORING_OP_ASYNC_CANCEL, IORING_OP_LINK_TIMEOUT,
                   IORING_OP_CONNECT, IORING_OP_FALLOCATE, IORING_OP_OPENAT, IORING_OP_CLOSE,
                   IORING_OP_FILES_UPDATE, IORING_OP_STATX, IORING_OP_READ, IORING_OP_WRITE,
                   IORING_OP_FADVISE, IORING_OP_MADVISE, IORING_OP_SEND, IORING_OP_RECV,
                   IORING_OP_OPENAT2, IORING_OP_EPOLL_CTL, IORING_OP_SPLICE,
                   IORING_OP_PROVIDE_BUFFERS, IORING_OP_REMOVE_BUFFERS, IORING_OP_TEE,
                   IORING_OP_SHUTDOWN, IORING_OP_RENAMEAT, IORING_OP_UNLINKAT, IORING_OP_BPF,
                   IOSQE_FIXED_FILE, IOSQE_IO_DRAIN, IOSQE_IO_LINK, IOSQE_IO_HARDLINK, IOSQE_ASYNC,
                   IOSQE_BUFFER_SELECT, IOSQE_CQE_SKIP_SUCCESS)  # noqa: F401 (re-exported)


class IoUringCtx(Struct):
    """`struct io_uring_bpf_ctx` of the RFC."""

    _btf_name_ = "io_uring_bpf_ctx"

    user_data: u64
    wait_nr: u32
    wait_idx: u32


class Sqe(Struct):
    """`struct io_uring_sqe` with the RFC's `cq_idx` at offset 48."""

    _btf_name_ = "io_uring_sqe"

    opcode: u8
    flags: u8
    ioprio: u16
    fd: i32
    off: u64
    addr: u64
    len: u32
    rw_flags: u32
    user_data: u64
    buf_index: u16
    personality: u16
    splice_fd_in: i32
    cq_idx: u16
    pad0: u16
    pad1: u32
    pad2: u64


class Cqe(Struct):
    """`struct io_uring_cqe`."""

    _btf_name_ = "io_uring_cqe"

    user_data: u64
    res: i32
    flags: u32


def _clear(sqe: Sqe) -> None:
    """Every prep starts from a zeroed SQE, as liburing's do: a reused slot keeps nothing."""
    ctypes.memset(ctypes.addressof(sqe), 0, ctypes.sizeof(sqe))


def _rw(sqe: Sqe, op: int, fd: int, addr: int, length: int, offset: int) -> None:
    _clear(sqe)
    sqe.opcode, sqe.fd, sqe.addr, sqe.len, sqe.off = op, fd, addr, length, offset


def prep_nop(sqe: Sqe) -> None:
    _clear(sqe)
    sqe.opcode = IORING_OP_NOP


def prep_read(sqe: Sqe, fd: int, buf: int, length: int, offset: int) -> None:
    _rw(sqe, IORING_OP_READ, fd, buf, length, offset)


def prep_write(sqe: Sqe, fd: int, buf: int, length: int, offset: int) -> None:
    _rw(sqe, IORING_OP_WRITE, fd, buf, length, offset)


def prep_timeout(sqe: Sqe, ts: int, count: int, flags: int) -> None:
    """`ts` is the address of a `struct __kernel_timespec`."""
    _rw(sqe, IORING_OP_TIMEOUT, -1, ts, 1, count)
    sqe.rw_flags = flags


def prep_openat(sqe: Sqe, dfd: int, path: int, flags: int, mode: int) -> None:
    """`path` is the address of a NUL-terminated path; `dfd` a directory fd or AT_FDCWD (-100)."""
    _rw(sqe, IORING_OP_OPENAT, dfd, path, mode, 0)
    sqe.rw_flags = flags  # the kernel's open_flags: the same u32 at offset 28


def prep_close(sqe: Sqe, fd: int) -> None:
    _rw(sqe, IORING_OP_CLOSE, fd, 0, 0, 0)


def prep_send(sqe: Sqe, fd: int, buf: int, length: int, flags: int) -> None:
    _rw(sqe, IORING_OP_SEND, fd, buf, length, 0)
    sqe.rw_flags = flags  # msg_flags (MSG_*), at offset 28


def prep_recv(sqe: Sqe, fd: int, buf: int, length: int, flags: int) -> None:
    _rw(sqe, IORING_OP_RECV, fd, buf, length, 0)
    sqe.rw_flags = flags  # msg_flags (MSG_*), at offset 28


queue_sqe = program_only("queue_sqe")
emit_cqe = program_only("emit_cqe")
reap_cqe = program_only("reap_cqe")
copy_from_user = program_only("copy_from_user")
copy_to_user = program_only("copy_to_user")
