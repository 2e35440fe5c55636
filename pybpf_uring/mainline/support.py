"""What the running kernel offers for io_uring BPF loops, and what it lacks, by name.

Everything is read from the kernel's BTF (`btf.kernel_btf()`, the one cache the loader shares)
or tried with io_uring_setup, never inferred from the version: the types changed between 7.1
and 7.2, and distributions backport.  What is missing is named in a `MainlineUnsupportedError`,
so the CLI prints one message listing each piece, no traceback.  The ring rules the kernel
enforces when a loop is attached (io_install_bpf() in io_uring/bpf-ops.c) live here too, next
to the flags they are about, with `UnsuitableRingError` for a ring that breaks them.
"""
from __future__ import annotations

import errno as _errno
import functools
import os
from dataclasses import dataclass
from typing import Mapping

from ..bpf import btf as btfmod
from ..diagnostics import Diagnostic
from ..errors import LoadError
from ..bpf.load import UnsupportedProgramError
from ..runtime.ring_sys import io_uring_setup
from ..uapi import (IORING_SETUP_CQSIZE, IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_IOPOLL,
                    IORING_SETUP_NO_SQARRAY, IORING_SETUP_SINGLE_ISSUER, IORING_SETUP_SQ_REWIND,
                    IORING_SETUP_SQPOLL)

OPS_TYPE = "io_uring_bpf_ops"
VALUE_TYPE = "bpf_struct_ops_" + OPS_TYPE   # the kernel's map value: common header + the ops
KFUNCS = ("bpf_io_uring_submit_sqes", "bpf_io_uring_get_region")

# The ring setup flags a loop is about, by their uapi names (io_uring_setup flags are #defines,
# not in BTF, so `probe` tries them).
RING_FLAG_NAMES = {flag: name for name, flag in (
    ("IORING_SETUP_IOPOLL", IORING_SETUP_IOPOLL), ("IORING_SETUP_SQPOLL", IORING_SETUP_SQPOLL),
    ("IORING_SETUP_CQSIZE", IORING_SETUP_CQSIZE), ("IORING_SETUP_SINGLE_ISSUER", IORING_SETUP_SINGLE_ISSUER),
    ("IORING_SETUP_DEFER_TASKRUN", IORING_SETUP_DEFER_TASKRUN),
    ("IORING_SETUP_NO_SQARRAY", IORING_SETUP_NO_SQARRAY), ("IORING_SETUP_SQ_REWIND", IORING_SETUP_SQ_REWIND))}
# The kernel attaches ops only to a ring with DEFER_TASKRUN (which io_uring_setup allows only
# with SINGLE_ISSUER) and without SQPOLL or IOPOLL: io_install_bpf() in io_uring/bpf-ops.c
# returns EOPNOTSUPP otherwise.  NO_SQARRAY is not checked there: SQ_REWIND needs it.
REQUIRED_RING_FLAGS = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_NO_SQARRAY
REFUSED_RING_FLAGS = IORING_SETUP_SQPOLL | IORING_SETUP_IOPOLL
LOOP_RING_RULE = ("a BPF loop needs a ring set up with IORING_SETUP_SINGLE_ISSUER | "
                  "IORING_SETUP_DEFER_TASKRUN and without IORING_SETUP_SQPOLL or IORING_SETUP_IOPOLL "
                  "(the loop runs in the task that calls io_uring_enter and polls nothing); "
                  "LoopRing() without flags= sets up such a ring, with NO_SQARRAY and SQ_REWIND")

# The bpf() numbers an attach needs, with the enum and value names the kernel's BTF spells them
# by: finding them there is how the probe knows this kernel has struct_ops of this kind.
KERNEL_ENUMS = {"prog_type": ("bpf_prog_type", "BPF_PROG_TYPE_STRUCT_OPS"),
                "map_type": ("bpf_map_type", "BPF_MAP_TYPE_STRUCT_OPS"),
                "attach_type": ("bpf_attach_type", "BPF_STRUCT_OPS")}


# --- errors ------------------------------------------------------------------------------------
@dataclass
class MainlineUnsupportedError(UnsupportedProgramError):
    """The running kernel cannot run loop_step programs; `missing` names each absent piece
    (a BTF type, a kfunc, a ring flag), so the message says exactly what to look for."""

    missing: tuple[str, ...] = ()


@dataclass
class UnsuitableRingError(LoadError):
    """The ring cannot run this loop: the kernel refused to attach to it (`errno` EOPNOTSUPP:
    its setup flags), io_uring_setup refused the flags (`errno` EINVAL), or the program's view
    of a ring region does not fit the ring (`errno` 0: the loader's check).  A diagnosed error,
    so the CLI prints the message and the hint, no traceback."""

    errno: int = 0


def flag_names(flags: int) -> str:
    """`IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`; unknown bits in hex."""
    return " | ".join(RING_FLAG_NAMES.get(f, hex(f)) for f in flag_bits(flags))


def flag_bits(flags: int) -> list[int]:
    return [1 << i for i in range(32) if flags >> i & 1]


def ring_refusal(flags: int) -> str:
    """What io_install_bpf() (io_uring/bpf-ops.c) holds against a ring with these setup flags,
    or "" if nothing."""
    parts = []
    if flags & REFUSED_RING_FLAGS:
        parts.append(f"with {flag_names(flags & REFUSED_RING_FLAGS)}")
    if not flags & IORING_SETUP_DEFER_TASKRUN:
        parts.append("without IORING_SETUP_DEFER_TASKRUN")
    return " and ".join(parts)


# --- probing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelOps:
    """Where the kernel's BTF puts things: the ids and offsets a struct_ops attach needs."""

    ops_id: int                      # struct io_uring_bpf_ops: attach_btf_id of the programs
    ops: btfmod.Struct
    value_id: int                    # struct bpf_struct_ops_io_uring_bpf_ops: the map's value
    value_size: int
    data_offset: int                 # where the ops sit inside the map value
    func_members: frozenset[str]     # members that are function pointers (programs go there)
    kfunc_ids: Mapping[str, int]
    numbers: Mapping[str, int]       # KERNEL_ENUMS keys → values


@dataclass(frozen=True)
class Support:
    """What `probe()` found.  `missing` is empty when loop_step programs can run here."""

    release: str
    missing: tuple[str, ...]
    ring_flags: int                  # the optional ring setup flags this kernel accepts
    kernel_ops: KernelOps | None = None

    @property
    def ok(self) -> bool:
        return not self.missing

    def require(self) -> KernelOps:
        """The kernel's layout, or MainlineUnsupportedError naming everything missing."""
        if self.missing or self.kernel_ops is None:
            raise MainlineUnsupportedError(
                [Diagnostic(None, f"this kernel ({self.release}) cannot run io_uring loop_step "
                            f"programs: it lacks {'; '.join(self.missing)}",
                            "io_uring_bpf_ops needs Linux 7.1 or later built with "
                            "CONFIG_IO_URING_BPF_OPS=y and BTF (Debian's 7.2 kernels have it; "
                            "this project's tests boot one under QEMU with tools/vm/vmrun)")],
                "", "loop_step", tuple(self.missing))
        return self.kernel_ops


def probe(refresh: bool = False) -> Support:
    """What the running kernel offers for io_uring_bpf_ops, from its BTF and from trying the ring
    flags (cached: the kernel does not change under a process).  Never raises."""
    if refresh:
        _probe.cache_clear()
        btfmod.kernel_btf.cache_clear()
    return _probe()


@functools.lru_cache(maxsize=1)
def _probe() -> Support:
    release = os.uname().release
    missing: list[str] = []
    flags = _probe_ring_flags(missing)
    kernel_types = btfmod.kernel_btf()
    if kernel_types is None:
        missing.insert(0, f"kernel BTF ({btfmod.VMLINUX_BTF}, CONFIG_DEBUG_INFO_BTF=y)")
        return Support(release, tuple(missing), flags)
    ops = kernel_ops_from(kernel_types, missing)
    return Support(release, tuple(missing), flags, ops if not missing else None)


def kernel_ops_from(types: btfmod.LazyBtf, missing: list[str]) -> KernelOps | None:
    """The struct_ops layout in `types` (the kernel's BTF); each piece it lacks is appended to
    `missing`, and then the result is None."""
    ops_id, value_id = types.find(OPS_TYPE, "struct"), types.find(VALUE_TYPE, "struct")
    ops = types[ops_id] if ops_id else None
    if ops is None:
        missing.append(f"BTF type `struct {OPS_TYPE}` (CONFIG_IO_URING_BPF_OPS)")
    funcs = frozenset(m.name for m in ops.members if types.is_func_pointer(m.type)) if ops else frozenset()
    if ops is not None:
        for member in ("loop_step", "ring_fd"):
            if ops.member(member) is None:
                missing.append(f"member `{member}` of the kernel's `struct {OPS_TYPE}`")
    value = types[value_id] if value_id else None
    data = value.member("data") if value is not None else None
    if data is None:
        missing.append(f"BTF type `struct {VALUE_TYPE}` with a `data` member (the struct_ops "
                       "value type the kernel registers along with the ops)")
    kfunc_ids = {}
    for name in KFUNCS:
        found = types.find(name, "func")
        if found is None:
            missing.append(f"kfunc `{name}` in BTF")
        else:
            kfunc_ids[name] = found
    numbers = {}
    for key, (enum, value_name) in KERNEL_ENUMS.items():
        number = types.enum_value(enum, value_name)
        if number is None:
            missing.append(f"`{value_name}` in BTF `enum {enum}`")
        else:
            numbers[key] = number
    if ops is None or data is None:
        return None
    return KernelOps(ops_id, ops, value_id, value.size, data.offset, funcs, kfunc_ids, numbers)


def _probe_ring_flags(missing: list[str]) -> int:
    """Sets up (and closes) one-entry rings: the required flags together, then each optional flag
    with them.  Returns the optional flags the kernel accepted."""
    fd, _ = io_uring_setup(1, REQUIRED_RING_FLAGS)
    if fd < 0:
        missing.append(f"io_uring rings with {flag_names(REQUIRED_RING_FLAGS)} "
                       f"(io_uring_setup: {_errno.errorcode.get(-fd, -fd)})")
        return 0
    os.close(fd)
    accepted = 0
    for flag in (IORING_SETUP_SQ_REWIND, IORING_SETUP_CQSIZE):
        fd, _ = io_uring_setup(1, REQUIRED_RING_FLAGS | flag, 2 if flag == IORING_SETUP_CQSIZE else 0)
        if fd >= 0:
            os.close(fd)
            accepted |= flag
    return accepted


def require_kfuncs(names: list[str]) -> None:
    """MainlineUnsupportedError naming each of `names` the kernel's BTF has no function for."""
    kernel_types = btfmod.kernel_btf()
    absent = [n for n in names if kernel_types is None or kernel_types.find(n, "func") is None]
    if absent:
        raise MainlineUnsupportedError(
            [Diagnostic(None, f"the program calls kernel functions this kernel "
                        f"({os.uname().release}) does not have: {', '.join(absent)}")],
            "", "loop_step", tuple(f"kfunc `{n}`" for n in absent))
