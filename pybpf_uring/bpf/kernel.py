"""The bpf(2) system call, thinly: one function per command, plain ints and bytes in and out.

This is the only module that talks to the kernel's BPF subsystem.  It knows nothing about ELF
objects or program specs (that is `objfile`) nor about which fds belong together (that is
`load`); it packs a `union bpf_attr` member, makes the call and turns a failure into an
`OSError` whose message names the command and the errno (`EEXIST`, not just "File exists"),
because bpf() reuses errnos with meanings that differ from their strerror text.

Attribute layouts follow the running kernel's uapi `union bpf_attr` (6.18, checked against
/sys/kernel/btf/vmlinux).  Each command gets its own ctypes struct holding only the fields up to
the last one we use: the kernel zero-fills whatever tail we do not pass, which is the documented
way to stay compatible with older kernels (they reject a non-zero tail they do not know).
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
from dataclasses import dataclass

# uapi's numbers, which the loader, mainline and the tests also name kernel.X
from ..uapi import (BPF_ANY, BPF_BTF_LOAD, BPF_EXIST, BPF_F_RDONLY_PROG, BPF_F_SLEEPABLE,  # noqa: F401
                   BPF_LINK_CREATE, BPF_LOG_LEVEL1, BPF_LOG_STATS, BPF_MAP_CREATE, BPF_MAP_DELETE_ELEM,
                   BPF_MAP_FREEZE, BPF_MAP_GET_NEXT_KEY, BPF_MAP_LOOKUP_ELEM, BPF_MAP_TYPE_ARRAY,
                   BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_UPDATE_ELEM, BPF_NOEXIST, BPF_OBJ_GET_INFO_BY_FD,
                   BPF_OBJ_NAME_LEN, BPF_PROG_LOAD, BPF_PROG_TEST_RUN, BPF_PROG_TYPE_SOCKET_FILTER,
                   BPF_PROG_TYPE_SYSCALL, BPF_PROG_TYPE_TRACEPOINT, BPF_PSEUDO_KFUNC_CALL,
                   BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_RAW_TRACEPOINT_OPEN, COMMAND_NAMES, E2BIG, EACCES, EBADF, EEXIST,
                   EFAULT, EINVAL, ENOENT, ENOMEM, ENOSPC, ENOSYS, ENOTSUPP, EOPNOTSUPP, EPERM, INSN_SIZE,
                   MAP_TYPE_NAMES)

# --- syscall plumbing -------------------------------------------------------------------------
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "i386": 357, "i686": 357, "armv7l": 386,
            "riscv64": 280, "ppc64le": 361, "s390x": 351, "loongarch64": 280}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _nr() -> int:
    machine = platform.machine()
    if machine not in _SYS_BPF:
        raise OSError(ENOSYS, f"bpf(): syscall number unknown for architecture {machine}")
    return _SYS_BPF[machine]


_NR_BPF = _nr()

# Meanings of errnos as bpf() uses them; strerror's text ("Permission denied", "No such file")
# would mislead: EACCES from PROG_LOAD is the verifier refusing an unsafe program.
ERRNO_MEANINGS = {
    EACCES: "the verifier found an unsafe operation",
    EINVAL: "the kernel rejected an argument or instruction as invalid",
    EPERM: "operation not permitted (needs CAP_BPF/CAP_SYS_ADMIN, or a GPL license)",
    E2BIG: "too large (program, map, or the verifier's complexity limit)",
    ENOSPC: "buffer too small (verifier log or test output)",
    ENOENT: "no such element",
    EEXIST: "element already exists",
    EFAULT: "bad address passed to the kernel",
    ENOMEM: "out of memory (or memlock limit)",
    EOPNOTSUPP: "operation not supported for this object",
    EBADF: "not an open BPF object fd",
    ENOTSUPP: "not supported by this kernel",  # kernel-internal, absent from errno.errorcode
}


def errno_name(code: int) -> str:
    return "ENOTSUPP" if code == ENOTSUPP else _errno.errorcode.get(code, f"errno {code}")


def errno_meaning(code: int) -> str:
    """`EACCES (the verifier found an unsafe operation)`: name first, because users search for it."""
    return f"{errno_name(code)} ({ERRNO_MEANINGS.get(code) or os.strerror(code)})"


def bpf_error(cmd: int, code: int, detail: str = "") -> OSError:
    """An OSError of the right subclass (FileExistsError for EEXIST, …) naming command and errno."""
    what = COMMAND_NAMES.get(cmd, f"bpf command {cmd}")
    text = f"{what} failed: {errno_meaning(code)}" + (f": {detail}" if detail else "")
    return OSError(code, text)


def sys_bpf(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, &attr, sizeof attr); returns the non-negative result or raises `bpf_error`."""
    ret = _libc.syscall(_NR_BPF, ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        raise bpf_error(cmd, ctypes.get_errno())
    return ret


def _try_bpf(cmd: int, attr: ctypes.Structure) -> tuple[int, int]:
    """Like sys_bpf but returns (result, errno) so callers can attach context before raising."""
    ret = _libc.syscall(_NR_BPF, ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    return (ret, 0) if ret >= 0 else (-1, ctypes.get_errno())


def _addr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _name(text: str) -> bytes:
    """Kernel object names: at most 15 chars of [A-Za-z0-9_.], else the kernel says EINVAL."""
    clean = "".join(c if c.isalnum() or c in "_." else "_" for c in text)
    return clean[:BPF_OBJ_NAME_LEN - 1].encode()


# --- attr layouts (prefixes of union bpf_attr members) ----------------------------------------
u32, u64, s32 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32


class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", u32), ("key_size", u32), ("value_size", u32), ("max_entries", u32),
                ("map_flags", u32), ("inner_map_fd", u32), ("numa_node", u32),
                ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("map_ifindex", u32),
                ("btf_fd", u32), ("btf_key_type_id", u32), ("btf_value_type_id", u32),
                ("btf_vmlinux_value_type_id", u32), ("map_extra", u64)]


class LinkCreateAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("target_fd", u32), ("attach_type", u32), ("flags", u32)]  # prog_fd ≡ map_fd


class RawTracepointOpenAttr(ctypes.Structure):
    _fields_ = [("name", u64), ("prog_fd", u32)]


class MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", u32), ("key", u64), ("value", u64), ("flags", u64)]  # value ≡ next_key


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
                ("log_level", u32), ("log_size", u32), ("log_buf", u64), ("kern_version", u32),
                ("prog_flags", u32), ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
                ("prog_ifindex", u32), ("expected_attach_type", u32), ("prog_btf_fd", u32),
                ("func_info_rec_size", u32), ("func_info", u64), ("func_info_cnt", u32),
                ("line_info_rec_size", u32), ("line_info", u64), ("line_info_cnt", u32),
                ("attach_btf_id", u32), ("attach_prog_fd", u32), ("core_relo_cnt", u32),
                ("fd_array", u64), ("core_relos", u64), ("core_relo_rec_size", u32),
                ("log_true_size", u32)]  # 6.4+: how big the log would have been


class TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("retval", u32), ("data_size_in", u32), ("data_size_out", u32),
                ("data_in", u64), ("data_out", u64), ("repeat", u32), ("duration", u32),
                ("ctx_size_in", u32), ("ctx_size_out", u32), ("ctx_in", u64), ("ctx_out", u64),
                ("flags", u32), ("cpu", u32), ("batch_size", u32)]


class InfoByFdAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


class BtfLoadAttr(ctypes.Structure):
    _fields_ = [("btf", u64), ("btf_log_buf", u64), ("btf_size", u32), ("btf_log_size", u32),
                ("btf_log_level", u32), ("btf_log_true_size", u32)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info, up to the fields a loader needs (the kernel copies min(len) bytes)."""
    _fields_ = [("type", u32), ("id", u32), ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", u32),
                ("xlated_prog_len", u32), ("jited_prog_insns", u64), ("xlated_prog_insns", u64),
                ("load_time", u64), ("created_by_uid", u32), ("nr_map_ids", u32), ("map_ids", u64),
                ("name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("ifindex", u32), ("gpl_compatible", u32),
                ("netns_dev", u64), ("netns_ino", u64), ("nr_jited_ksyms", u32),
                ("nr_jited_func_lens", u32), ("jited_ksyms", u64), ("jited_func_lens", u64),
                ("btf_id", u32), ("func_info_rec_size", u32), ("func_info", u64),
                ("nr_func_info", u32), ("nr_line_info", u32), ("line_info", u64),
                ("jited_line_info", u64), ("nr_jited_line_info", u32), ("line_info_rec_size", u32),
                ("jited_line_info_rec_size", u32), ("nr_prog_tags", u32), ("prog_tags", u64),
                ("run_time_ns", u64), ("run_cnt", u64), ("recursion_misses", u64),
                ("verified_insns", u32)]


class MapInfo(ctypes.Structure):
    _fields_ = [("type", u32), ("id", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
                ("ifindex", u32), ("btf_vmlinux_value_type_id", u32), ("netns_dev", u64),
                ("netns_ino", u64), ("btf_id", u32), ("btf_key_type_id", u32),
                ("btf_value_type_id", u32)]


# --- maps -------------------------------------------------------------------------------------
def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               name: str = "", btf_fd: int = 0, btf_key_type_id: int = 0,
               btf_value_type_id: int = 0, btf_vmlinux_value_type_id: int = 0) -> int:
    """A new map; returns its fd (the caller owns it and must close it).  A struct_ops map's
    value is a kernel type, named by `btf_vmlinux_value_type_id` (its id in vmlinux BTF)."""
    attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                         max_entries=max_entries, map_flags=flags, map_name=_name(name),
                         btf_fd=btf_fd, btf_key_type_id=btf_key_type_id,
                         btf_value_type_id=btf_value_type_id,
                         btf_vmlinux_value_type_id=btf_vmlinux_value_type_id)
    ret, code = _try_bpf(BPF_MAP_CREATE, attr)
    if ret < 0:
        raise bpf_error(BPF_MAP_CREATE, code,
                        f"map {name!r} ({MAP_TYPE_NAMES.get(map_type, map_type)}, key {key_size} B, "
                        f"value {value_size} B, {max_entries} entries, flags {flags:#x})")
    return ret


def map_lookup_elem(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value stored under `key`, or None if there is none (ENOENT is not an error here).

    `value_size` is the buffer the kernel writes into and must be what the kernel will write:
    for per-CPU maps that is round_up(value_size, 8) × possible CPUs, not the map's value_size."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    ret, code = _try_bpf(BPF_MAP_LOOKUP_ELEM, MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(v)))
    if ret < 0:
        if code == ENOENT:
            return None
        raise bpf_error(BPF_MAP_LOOKUP_ELEM, code)
    return v.raw


def map_update_elem(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    ret, code = _try_bpf(BPF_MAP_UPDATE_ELEM, MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(v),
                                                          flags=flags))
    if ret < 0:
        full = "the map is full (max_entries reached) or an array index is past max_entries"
        detail = {(EEXIST, BPF_NOEXIST): "the key is already present and BPF_NOEXIST was given",
                  (ENOENT, BPF_EXIST): "the key is absent and BPF_EXIST was given",
                  (E2BIG, BPF_ANY): full, (E2BIG, BPF_NOEXIST): full,
                  (E2BIG, BPF_EXIST): full}.get((code, flags & 3), "")
        if code == EPERM:
            detail = "the map is frozen (like .rodata) or read-only for the host"
        raise bpf_error(BPF_MAP_UPDATE_ELEM, code, detail)


def map_delete_elem(fd: int, key: bytes) -> None:
    """Removes `key`; raises FileNotFoundError (ENOENT) if absent, EINVAL for arrays."""
    k = ctypes.create_string_buffer(key, len(key))
    ret, code = _try_bpf(BPF_MAP_DELETE_ELEM, MapElemAttr(map_fd=fd, key=_addr(k)))
    if ret < 0:
        detail = "array elements always exist and cannot be deleted" if code == EINVAL else ""
        raise bpf_error(BPF_MAP_DELETE_ELEM, code, detail)


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after `key` (the first key if None), or None at the end.  A key that vanished
    restarts the walk at the first key, as the kernel documents for hash maps."""
    k = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    n = ctypes.create_string_buffer(key_size)
    ret, code = _try_bpf(BPF_MAP_GET_NEXT_KEY, MapElemAttr(map_fd=fd, key=_addr(k), value=_addr(n)))
    if ret < 0:
        if code == ENOENT:
            return None
        raise bpf_error(BPF_MAP_GET_NEXT_KEY, code)
    return n.raw


def map_freeze(fd: int) -> None:
    """Forbids further writes from the host (what libbpf does to .rodata after filling it), so the
    verifier may treat the map's contents as constants."""
    sys_bpf(BPF_MAP_FREEZE, MapElemAttr(map_fd=fd))


# --- programs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgLoadResult:
    fd: int          # -1 when the load failed
    errno: int       # 0 on success
    log: str         # the verifier log (empty with log_level 0 on success)
    log_true_size: int


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "",
              prog_flags: int = 0, log_level: int = 0, log_size: int = 1 << 20,
              expected_attach_type: int = 0, btf_fd: int = 0, func_info: bytes = b"",
              func_info_rec_size: int = 0, line_info: bytes = b"", line_info_rec_size: int = 0,
              attach_btf_id: int = 0) -> ProgLoadResult:
    """Loads one program.  Unlike the other wrappers this does not raise: a rejection is an
    expected outcome whose log the caller wants to read, so it is returned with the errno.

    With log_level 0 the kernel verifies without writing a log (fast); a caller reloads with
    level 1 to learn why a program failed.  Since 6.4 the log buffer rotates, so a log that does
    not fit keeps its tail — the part that explains a rejection."""
    if len(insns) % INSN_SIZE:
        raise ValueError(f"program {name!r}: {len(insns)} bytes is not a whole number of instructions")
    code_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_level else None
    fi = ctypes.create_string_buffer(func_info, len(func_info)) if func_info else None
    li = ctypes.create_string_buffer(line_info, len(line_info)) if line_info else None
    attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // INSN_SIZE, insns=_addr(code_buf),
                        license=_addr(lic), log_level=log_level, log_size=log_size if log else 0,
                        log_buf=_addr(log), prog_flags=prog_flags, prog_name=_name(name),
                        expected_attach_type=expected_attach_type, prog_btf_fd=btf_fd,
                        func_info_rec_size=func_info_rec_size if fi else 0, func_info=_addr(fi),
                        func_info_cnt=len(func_info) // func_info_rec_size if fi else 0,
                        line_info_rec_size=line_info_rec_size if li else 0, line_info=_addr(li),
                        line_info_cnt=len(line_info) // line_info_rec_size if li else 0,
                        attach_btf_id=attach_btf_id)
    ret, code = _try_bpf(BPF_PROG_LOAD, attr)
    text = log.value.decode(errors="replace") if log else ""
    return ProgLoadResult(ret, code, text, attr.log_true_size)


@dataclass(frozen=True)
class TestRun:
    retval: int      # r0 as the kernel reports it: 32 bits, unsigned
    duration: int    # ns per run, as measured by the kernel
    ctx: bytes       # ctx after the run (syscall programs: copied back into ctx_in)
    data: bytes      # data_out (packet programs)


def prog_test_run(fd: int, ctx: bytes | None = None, data: bytes | None = None,
                  data_out_size: int = 0, ctx_out: bool = False, repeat: int = 0,
                  flags: int = 0, cpu: int = 0) -> TestRun:
    """BPF_PROG_TEST_RUN.  Which fields a program type accepts differs: SYSCALL programs take
    ctx_in only (data_*, ctx_out and repeat must be 0) and get their ctx copied back into
    ctx_in; socket filters take data_in and write data_out.  The caller chooses; this passes
    exactly what it is given and leaves the rest zero."""
    ctx_buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    ctx_out_buf = ctypes.create_string_buffer(len(ctx)) if ctx and ctx_out else None
    data_buf = ctypes.create_string_buffer(data, len(data)) if data else None
    data_out = ctypes.create_string_buffer(data_out_size) if data_out_size else None
    attr = TestRunAttr(prog_fd=fd, data_size_in=len(data) if data else 0,
                       data_size_out=data_out_size, data_in=_addr(data_buf), data_out=_addr(data_out),
                       repeat=repeat, ctx_size_in=len(ctx) if ctx else 0,
                       ctx_size_out=len(ctx) if ctx_out_buf else 0, ctx_in=_addr(ctx_buf),
                       ctx_out=_addr(ctx_out_buf), flags=flags, cpu=cpu)
    sys_bpf(BPF_PROG_TEST_RUN, attr)
    ctx_after = (ctx_out_buf.raw[:attr.ctx_size_out] if ctx_out_buf else
                 ctx_buf.raw if ctx_buf else b"")
    data_after = data_out.raw[:attr.data_size_out] if data_out else b""
    return TestRun(attr.retval, attr.duration, ctx_after, data_after)


# --- links ------------------------------------------------------------------------------------
def link_create(fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE: attach program (or struct_ops map) `fd` to `target_fd` as `attach_type`;
    returns the link's fd, whose closing detaches.  A failure raises `bpf_error` with the errno,
    which the caller explains: what a refusal means depends on the attach type."""
    ret, code = _try_bpf(BPF_LINK_CREATE, LinkCreateAttr(prog_fd=fd, target_fd=target_fd,
                                                         attach_type=attach_type, flags=flags))
    if ret < 0:
        raise bpf_error(BPF_LINK_CREATE, code)
    return ret


def raw_tracepoint_open(fd: int, name: str | None) -> int:
    """BPF_RAW_TRACEPOINT_OPEN: attach raw tracepoint program `fd` to tracepoint `name`, or a
    tracing program (tp_btf, fentry, fexit: name None) where its attach_btf_id says; returns the
    link's fd, whose closing detaches.  Raises `bpf_error` (ENOENT: no such tracepoint)."""
    text = ctypes.create_string_buffer(name.encode()) if name is not None else None
    ret, code = _try_bpf(BPF_RAW_TRACEPOINT_OPEN, RawTracepointOpenAttr(name=_addr(text), prog_fd=fd))
    if ret < 0:
        raise bpf_error(BPF_RAW_TRACEPOINT_OPEN, code, name or "")
    return ret


# --- BTF and object info ----------------------------------------------------------------------
def btf_load(btf: bytes, log_size: int = 1 << 16) -> int:
    """Loads raw BTF (an ELF's `.BTF` after the fix-ups libbpf also does); returns its fd.
    Retries with a log on failure so the error explains which type the kernel refused."""
    data = ctypes.create_string_buffer(btf, len(btf))
    attr = BtfLoadAttr(btf=_addr(data), btf_size=len(btf))
    ret, code = _try_bpf(BPF_BTF_LOAD, attr)
    if ret >= 0:
        return ret
    log = ctypes.create_string_buffer(log_size)
    attr = BtfLoadAttr(btf=_addr(data), btf_size=len(btf), btf_log_buf=_addr(log),
                       btf_log_size=log_size, btf_log_level=1)
    ret, code = _try_bpf(BPF_BTF_LOAD, attr)
    if ret >= 0:  # the log's absence changed nothing, but the fd is ours now
        return ret
    raise bpf_error(BPF_BTF_LOAD, code, log.value.decode(errors="replace").strip()[-2000:])


def obj_get_info_by_fd(fd: int, info: ctypes.Structure) -> ctypes.Structure:
    """Fills `info` (ProgInfo, MapInfo, …) for the object behind `fd` and returns it."""
    attr = InfoByFdAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info


def prog_info(fd: int) -> ProgInfo:
    return obj_get_info_by_fd(fd, ProgInfo())


def map_info(fd: int) -> MapInfo:
    return obj_get_info_by_fd(fd, MapInfo())


def prog_xlated(fd: int) -> bytes:
    """The program as the verifier rewrote it (helpers resolved or inlined, dead code gone): what
    actually runs, before the JIT.  The kernel dumps map references as map ids."""
    size = prog_info(fd).xlated_prog_len
    buf = ctypes.create_string_buffer(size)
    info = ProgInfo(xlated_prog_len=size, xlated_prog_insns=ctypes.addressof(buf))
    obj_get_info_by_fd(fd, info)
    return buf.raw[:info.xlated_prog_len]


# --- tracepoints (perf events) ----------------------------------------------------------------
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "i386": 336, "i686": 336, "armv7l": 364,
                        "riscv64": 241, "ppc64le": 319, "s390x": 331, "loongarch64": 241}
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408   # _IOW('$', 8, __u32)
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER1 (72 bytes): a tracepoint's, and a
    kprobe's (config1: the function's name, config2: the offset in it)."""
    _fields_ = [("type", u32), ("size", u32), ("config", u64), ("sample_period", u64),
                ("sample_type", u64), ("read_format", u64), ("flags", u64),
                ("wakeup_events", u32), ("bp_type", u32), ("config1", u64), ("config2", u64)]


def tracefs_root(needed_for: str) -> str:
    """Where tracefs is mounted; FileNotFoundError saying what cannot work without it.

    A fresh machine often boots without tracefs mounted, though the kernel has it: root mounts
    it at its usual place first, as perf does for itself, so a tracing tool run as root works
    there as it does where systemd mounted it."""
    roots = [r for r in TRACEFS_ROOTS if os.path.isdir(os.path.join(r, "events"))]
    if not roots and _mount_tracefs(TRACEFS_ROOTS[0]):
        roots = [TRACEFS_ROOTS[0]]
    if not roots:
        raise FileNotFoundError(ENOENT, "tracefs is not mounted (mount -t tracefs nodev "
                                f"/sys/kernel/tracing), so {needed_for}")
    return roots[0]


def _mount_tracefs(root: str) -> bool:
    """mount -t tracefs nodev ROOT, when this process may (root, the directory there); False
    when it cannot, which the caller reports as tracefs missing."""
    if os.geteuid() != 0 or not os.path.isdir(root):
        return False
    if _libc.mount(b"nodev", root.encode(), b"tracefs", ctypes.c_ulong(0), None) != 0:
        return False
    return os.path.isdir(os.path.join(root, "events"))


def tracepoint_id(category: str, name: str) -> int:
    """The id tracefs gives `category/name`; FileNotFoundError says whether tracefs is missing
    or the tracepoint is."""
    path = os.path.join(tracefs_root("tracepoints cannot be found"), "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(ENOENT, f"no tracepoint {category}/{name} in this kernel",
                                path) from None


def perf_event_open(attr: PerfEventAttr, what: str) -> int:
    """perf_event_open(2) for every process on CPU 0 (a BPF program runs wherever the event
    fires: the event only carries it); returns the event's fd, an OSError naming `what`."""
    machine = platform.machine()
    if machine not in _SYS_PERF_EVENT_OPEN:
        raise OSError(ENOSYS, f"perf_event_open: syscall number unknown for {machine}")
    # pid -1, cpu 0, no group; longs, as syscall(2) reads its variadic arguments
    fd = _libc.syscall(ctypes.c_long(_SYS_PERF_EVENT_OPEN[machine]), ctypes.byref(attr),
                       ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(-1),
                       ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"perf_event_open for {what} failed: {errno_name(code)} ({os.strerror(code)})")
    return fd


def close(fd: int) -> None:
    """Closes an fd from this module, tolerating one already closed (EBADF) so that cleanup
    paths that run twice (close() then __del__) stay quiet."""
    try:
        os.close(fd)
    except OSError as exc:
        if exc.errno != EBADF:
            raise
