"""The kernel's ABI numbers, each defined once under the kernel's own name.

Everything here is a number the kernel fixes in its uapi headers (<linux/bpf.h>,
<linux/io_uring.h>, <errno.h>) or in the io_uring BPF RFC this project implements in userspace;
nothing here is a choice of this project (those are in `limits`).  Every other module takes its
numbers from here, so a number has one place to be checked against the headers
(tests/test_uapi.py does, with gcc) and one place to be looked up.  This is the lowest layer: it
imports nothing from the package, and any module may import it.

The names are the kernel's so that a reader can grep the headers for them, and so that a BPF
program can use them as a C program would: `from pybpf_uring.uring import IORING_OP_NOP,
IOSQE_IO_LINK` (uring and iou re-export the io_uring ones, which the checker folds as integer
constants).  Name tables (`MAP_TYPE_NAMES`, ...) are derived from the definitions, never typed
twice.
"""
from __future__ import annotations

# Errnos: Python's, under their usual names, for the modules that return or compare them.
# ENOTSUPP is kernel-internal (include/linux/errno.h), yet bpf() returns it; Python lacks it.
from errno import (E2BIG, EACCES, EAGAIN, EBADF, EBUSY, ECANCELED, EEXIST, EFAULT, EINTR,  # noqa: F401
                   EINVAL, ENOENT, ENOMEM, ENOSPC, ENOSYS, ENXIO, EOPNOTSUPP, EPERM, ETIME)

ENOTSUPP = 524


def _named(prefix: str, names: dict[str, object], strip: bool = False) -> dict[int, str]:
    """value → name for the integer names starting with `prefix` among `names`; with `strip`,
    the name without the prefix in lower case ("array" for BPF_MAP_TYPE_ARRAY), as bpftool says it."""
    return {v: k[len(prefix):].lower() if strip else k for k, v in names.items()
            if k.startswith(prefix) and isinstance(v, int)}


# ============================================================================================
# <linux/bpf.h>
# ============================================================================================

# --- commands (enum bpf_cmd) -----------------------------------------------------------------
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_BTF_LOAD = 18
BPF_MAP_FREEZE = 22
BPF_LINK_CREATE = 28

# Taken before any other BPF_ name is defined: every BPF_ name so far is a command.
COMMAND_NAMES = _named("BPF_", dict(globals()))

# --- program types (enum bpf_prog_type) ------------------------------------------------------
BPF_PROG_TYPE_UNSPEC = 0
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_XDP = 6
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_STRUCT_OPS = 27
# Mainline gave 31 to SYSCALL.  The io_uring RFC series also numbered its type 31; it was never
# merged, so 31 must never be used for an io_uring program on a mainline kernel.
BPF_PROG_TYPE_SYSCALL = 31
BPF_PROG_TYPE_NETFILTER = 32

PROG_TYPE_NAMES = _named("BPF_PROG_TYPE_", dict(globals()), strip=True)   # 31: "syscall"

# --- map types (enum bpf_map_type), every one, so any object's maps can be named -------------
BPF_MAP_TYPE_UNSPEC = 0
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_STACK_TRACE = 7
BPF_MAP_TYPE_CGROUP_ARRAY = 8
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_MAP_TYPE_DEVMAP = 14
BPF_MAP_TYPE_SOCKMAP = 15
BPF_MAP_TYPE_CPUMAP = 16
BPF_MAP_TYPE_XSKMAP = 17
BPF_MAP_TYPE_SOCKHASH = 18
BPF_MAP_TYPE_CGROUP_STORAGE = 19
BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 20
BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21
BPF_MAP_TYPE_QUEUE = 22
BPF_MAP_TYPE_STACK = 23
BPF_MAP_TYPE_SK_STORAGE = 24
BPF_MAP_TYPE_DEVMAP_HASH = 25
BPF_MAP_TYPE_STRUCT_OPS = 26
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_INODE_STORAGE = 28
BPF_MAP_TYPE_TASK_STORAGE = 29
BPF_MAP_TYPE_BLOOM_FILTER = 30
BPF_MAP_TYPE_USER_RINGBUF = 31
BPF_MAP_TYPE_CGRP_STORAGE = 32
BPF_MAP_TYPE_ARENA = 33

MAP_TYPE_NAMES = _named("BPF_MAP_TYPE_", dict(globals()), strip=True)     # 2: "array"

# --- attach and link types (enum bpf_attach_type, enum bpf_link_type) ------------------------
BPF_TRACE_RAW_TP = 23      # tp_btf: a raw tracepoint with BTF-typed arguments
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_PERF_EVENT = 41        # a kprobe's perf event, linked with BPF_LINK_CREATE
BPF_STRUCT_OPS = 44
BPF_LINK_TYPE_STRUCT_OPS = 9

# --- flags -----------------------------------------------------------------------------------
BPF_ANY = 0        # map update: create or replace
BPF_NOEXIST = 1    # map update: create only (EEXIST if present)
BPF_EXIST = 2      # map update: replace only (ENOENT if absent)
BPF_F_LOCK = 4     # map update: take the value's spin lock

BPF_F_RDONLY_PROG = 1 << 7   # map_flags: programs may only read (libbpf's .rodata)
BPF_F_LINK = 1 << 13         # map_flags: a struct_ops map is attached by a link, not its update

BPF_F_SLEEPABLE = 1 << 4     # prog_flags: required for SYSCALL programs that call sleepable helpers

# log_level bits (include/linux/bpf_verifier.h: the kernel's, though not in its uapi headers)
BPF_LOG_LEVEL1 = 1
BPF_LOG_LEVEL2 = 2
BPF_LOG_STATS = 4

# bpf_ringbuf_output / bpf_ringbuf_query
BPF_RB_NO_WAKEUP = 1
BPF_RB_FORCE_WAKEUP = 2
BPF_RB_AVAIL_DATA = 0
BPF_RB_RING_SIZE = 1
BPF_RB_CONS_POS = 2
BPF_RB_PROD_POS = 3
# a ring buffer record's 8-byte header: its length (u32, with these two bits) and page offset
BPF_RINGBUF_BUSY_BIT = 1 << 31      # reserved, not yet submitted or discarded
BPF_RINGBUF_DISCARD_BIT = 1 << 30   # discarded: the consumer skips it
BPF_RINGBUF_HDR_SZ = 8

# --- instructions ----------------------------------------------------------------------------
INSN_SIZE = 8      # sizeof(struct bpf_insn): one slot; lddw takes two
BPF_OBJ_NAME_LEN = 16

# src_reg of an ld_imm64: how the loader and the verifier read its imm
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_MAP_IDX = 5
BPF_PSEUDO_MAP_IDX_VALUE = 6
# src_reg of a call (0: a helper by its id)
BPF_PSEUDO_CALL = 1         # bpf-to-bpf: imm is the callee's offset
BPF_PSEUDO_KFUNC_CALL = 2   # a kernel function: imm is its BTF id

# ============================================================================================
# <linux/io_uring.h> and <asm/unistd.h>
# ============================================================================================

# The same numbers on every architecture: they were added after the syscall tables were unified.
NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_IO_URING_REGISTER = 427

SQE_SIZE = 64      # sizeof(struct io_uring_sqe)
CQE_SIZE = 16      # sizeof(struct io_uring_cqe)

# --- opcodes (enum io_uring_op), as the 2021 RFC's kernel had them ---------------------------
IORING_OP_NOP = 0
IORING_OP_READV = 1
IORING_OP_WRITEV = 2
IORING_OP_FSYNC = 3
IORING_OP_READ_FIXED = 4
IORING_OP_WRITE_FIXED = 5
IORING_OP_POLL_ADD = 6
IORING_OP_POLL_REMOVE = 7
IORING_OP_SYNC_FILE_RANGE = 8
IORING_OP_SENDMSG = 9
IORING_OP_RECVMSG = 10
IORING_OP_TIMEOUT = 11
IORING_OP_TIMEOUT_REMOVE = 12
IORING_OP_ACCEPT = 13
IORING_OP_ASYNC_CANCEL = 14
IORING_OP_LINK_TIMEOUT = 15
IORING_OP_CONNECT = 16
IORING_OP_FALLOCATE = 17
IORING_OP_OPENAT = 18
IORING_OP_CLOSE = 19
IORING_OP_FILES_UPDATE = 20
IORING_OP_STATX = 21
IORING_OP_READ = 22
IORING_OP_WRITE = 23
IORING_OP_FADVISE = 24
IORING_OP_MADVISE = 25
IORING_OP_SEND = 26
IORING_OP_RECV = 27
IORING_OP_OPENAT2 = 28
IORING_OP_EPOLL_CTL = 29
IORING_OP_SPLICE = 30
IORING_OP_PROVIDE_BUFFERS = 31
IORING_OP_REMOVE_BUFFERS = 32
IORING_OP_TEE = 33
IORING_OP_SHUTDOWN = 34
IORING_OP_RENAMEAT = 35
IORING_OP_UNLINKAT = 36
# The RFC's opcode, the next free one then.  Mainline later gave 37 to IORING_OP_MKDIRAT, so it
# is never sent to a kernel: the userspace engine runs these requests (docs/abi.md §A).
IORING_OP_BPF = 37

# --- SQE flags (IOSQE_*) ---------------------------------------------------------------------
IOSQE_FIXED_FILE = 1 << 0        # fd is an index into the registered files
IOSQE_IO_DRAIN = 1 << 1
IOSQE_IO_LINK = 1 << 2           # the next SQE starts when this one succeeds
IOSQE_IO_HARDLINK = 1 << 3
IOSQE_ASYNC = 1 << 4
IOSQE_BUFFER_SELECT = 1 << 5
IOSQE_CQE_SKIP_SUCCESS = 1 << 6

IORING_CQE_F_MORE = 1 << 1       # more CQEs will follow for this request

# SQE fields of particular opcodes
IORING_ASYNC_CANCEL_ALL = 1 << 0
IORING_ASYNC_CANCEL_FD = 1 << 1
IORING_ASYNC_CANCEL_ANY = 1 << 2
IORING_POLL_UPDATE_USER_DATA = 1 << 2     # in a POLL_REMOVE's len

# --- io_uring_setup ---------------------------------------------------------------------------
IORING_SETUP_IOPOLL = 1 << 0
IORING_SETUP_SQPOLL = 1 << 1
IORING_SETUP_CQSIZE = 1 << 3
IORING_SETUP_CLAMP = 1 << 4
IORING_SETUP_SUBMIT_ALL = 1 << 7
IORING_SETUP_COOP_TASKRUN = 1 << 8
IORING_SETUP_TASKRUN_FLAG = 1 << 9
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
IORING_SETUP_NO_SQARRAY = 1 << 16
IORING_SETUP_SQ_REWIND = 1 << 20          # newer than the 6.x headers; mainline.probe() tries it

IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_FEAT_NODROP = 1 << 1
IORING_FEAT_EXT_ARG = 1 << 8

IORING_SQ_CQ_OVERFLOW = 1 << 1   # sq ring flags: CQEs wait in the kernel's overflow list
IORING_SQ_TASKRUN = 1 << 2       # completions wait for task work (COOP_TASKRUN + TASKRUN_FLAG)

# mmap offsets of the three regions
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000

# --- io_uring_enter and io_uring_register ------------------------------------------------------
IORING_ENTER_GETEVENTS = 1 << 0
IORING_ENTER_EXT_ARG = 1 << 3
IORING_ENTER_REGISTERED_RING = 1 << 4   # fd is an index in the task's registered rings

IORING_REGISTER_FILES = 2
IORING_UNREGISTER_FILES = 3
IORING_REGISTER_RING_FDS = 20
IORING_UNREGISTER_RING_FDS = 21

# ============================================================================================
# Mainline io_uring BPF (io_uring_bpf_ops, Linux 7.1+; docs/abi.md §B): its enums' values
# ============================================================================================
IOU_LOOP_CONTINUE = 0
IOU_LOOP_STOP = 1
IOU_REGION_MEM = 0
IOU_REGION_CQ = 1
IOU_REGION_SQ = 2
