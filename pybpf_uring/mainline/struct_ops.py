"""Attaching a loop: the object's programs loaded as struct_ops, the ops map and its link.

What libbpf does for `bpf_map__attach_struct_ops`, over `load` (the object's BTF and data maps)
and `kernel` (every bpf() call): fill the object's ring-layout globals from the ring (they must
be in frozen `.rodata` so the verifier knows the region sizes), create the object's BTF and
data maps with no programs, load each program the ops variable points at as
BPF_PROG_TYPE_STRUCT_OPS against the kernel's `io_uring_bpf_ops` (expected_attach_type is the
member's index; `check_region_views` first refuses a program whose view of a region does not
fit the ring), create the struct_ops map whose value is the kernel's
`bpf_struct_ops_io_uring_bpf_ops` with the program fds and `ring_fd` at the offsets the
kernel's BTF gives, and link it (BPF_LINK_CREATE, attach type BPF_STRUCT_OPS).

Every fd belongs to one `LoopAttachment`, which closes it on `close()`, on `with` exit, on
garbage collection and when a step fails half-way; closing the link first unregisters the ops
from the ring.
"""
from __future__ import annotations

import errno as _errno
import os
import weakref
from typing import TYPE_CHECKING, Any, Mapping

from ..bpf import btf as btfmod
from ..bpf import kernel
from ..bpf import load as loadmod
from ..diagnostics import Diagnostic
from ..bpf.globals_view import Globals, global_vars
from ..bpf.load import KernelSections
from ..uapi import BPF_F_LINK
from .ops import OPS_TYPE, OpsSpec, as_object, choose_ops, error
from .regions import check_region_views
from .support import (LOOP_RING_RULE, KernelOps, UnsuitableRingError, probe, require_kfuncs,
                      ring_refusal)

if TYPE_CHECKING:
    from .loop_ring import LoopRing


class LoopAttachment:
    """Loop_step programs attached to a ring: the object's maps and BTF (a `load.LoadedObject`),
    the programs, the struct_ops map and the link.  `close()` (or `detach()`) closes the link
    first, which unregisters the ops from the ring, then everything else."""

    def __init__(self, ring: LoopRing, spec: OpsSpec, loaded: Any) -> None:
        self.ring, self.spec, self.loaded = ring, spec, loaded
        self.programs: dict[str, Any] = {}        # name → load.KernelProgram
        self.map_fd = self.link_fd = -1
        self._fds: list[int] = []                 # closed last-opened first: link, map, programs
        # .data/.bss/.rodata by name (`globals_view`); .rodata is set through attach's globals
        self.globals = Globals(global_vars(loaded.spec),
                               KernelSections(loaded.maps, "LoopRing.attach(obj, globals={...})"))
        self._finalizer = weakref.finalize(self, _close_fds, self._fds, loaded)

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    def attached(self) -> bool:
        return self.link_fd >= 0

    @property
    def maps(self) -> dict:
        return self.loaded.maps

    def close(self) -> None:
        self._finalizer()
        self.link_fd = self.map_fd = -1
        for prog in self.programs.values():
            prog.mark_closed()
        if self in self.ring.attachments:
            self.ring.attachments.remove(self)

    detach = close

    def __enter__(self) -> "LoopAttachment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"link fd {self.link_fd}" if self.attached else "detached"
        return f"<LoopAttachment {self.spec.name} ({', '.join(self.programs)}) {state}>"


def _close_fds(fds: list[int], loaded: Any) -> None:
    while fds:
        kernel.close(fds.pop())
    loaded.close()


def attach(ring: LoopRing, obj: Any, ops: str | None = None, globals: Mapping[str, Any] | None = None,
           log_level: int = 0) -> LoopAttachment:
    """`LoopRing.attach`: see there and the module docstring."""
    if ring.closed:
        raise ValueError("the ring is closed")
    obj = as_object(obj)
    spec = choose_ops(obj, ops)
    kops = probe().require()
    needed = sorted({r.symbol for p in obj.programs for r in p.relocations if r.kind == "kfunc"})
    require_kfuncs(needed)
    check_region_views(obj, ring, set(spec.programs.values()))
    values = {k: v for k, v in ring.layout().items()
              if k in global_vars(obj) and k not in (globals or {})}
    values.update(globals or {})
    loaded = loadmod.load(obj, only=set(), globals=values)   # BTF and data maps only
    att = LoopAttachment(ring, spec, loaded)
    try:
        if loaded.btf is None:
            raise error(f"the kernel refused the object's BTF, which a struct_ops map needs: "
                         f"{loaded.btf_error or 'the object has no BTF (compile with -g)'}")
        value = bytearray(kops.value_size)
        data = memoryview(value)[kops.data_offset:kops.data_offset + kops.ops.size]
        for member in spec.members:
            _fill_member(att, obj, spec, member, kops, data, log_level)
        ring_fd = kops.ops.member("ring_fd")
        data[ring_fd.offset:ring_fd.offset + 4] = ring.fd.to_bytes(4, "little")
        att.map_fd = att._own(_struct_ops_map(spec, kops, loaded.btf.fd, bytes(value)))
        att.link_fd = att._own(_link_create(att.map_fd, kops.numbers["attach_type"], ring))
    except BaseException:
        att.close()
        raise
    ring.attachments.append(att)
    return att


def _fill_member(att: LoopAttachment, obj: Any, spec: OpsSpec, member: btfmod.Member,
                 kops: KernelOps, data: memoryview, log_level: int) -> None:
    """One member of the kernel's ops value: a program fd for a function pointer, the object's
    initial bytes for anything else (as libbpf does), matched to the kernel's member by name."""
    theirs = kops.ops.member(member.name)
    if theirs is None:
        raise error(f"`struct {OPS_TYPE}` in this kernel has no member {member.name!r}",
                     f"its members: {', '.join(m.name for m in kops.ops.members)}")
    if member.name in spec.programs:
        if member.name not in kops.func_members:
            raise error(f"ops variable {spec.name!r} puts program {spec.programs[member.name]!r} in "
                         f"{member.name!r}, which is not a function pointer in this kernel")
        prog = _load_program(att, obj, spec.programs[member.name], member.name, kops, log_level)
        data[theirs.offset:theirs.offset + 8] = prog.fd.to_bytes(8, "little")
        return
    size = spec.sizes[member.name]
    raw = spec.data[member.offset:member.offset + size]
    if any(raw) and member.name != "ring_fd":
        data[theirs.offset:theirs.offset + size] = raw


def _load_program(att: LoopAttachment, obj: Any, name: str, member: str, kops: KernelOps,
                  log_level: int) -> Any:
    prog = obj.program(name)
    if prog.kind != "struct_ops":
        raise error(f"ops member {member!r} points at {name!r}, a {prog.kind} program in section "
                     f"{prog.section!r}", "loop_step programs live in SEC(\"struct_ops.s/NAME\")")
    linked = prog.linked()
    code = loadmod.relocate(linked, att.loaded.maps)   # kfunc ids from btf.kernel_btf()
    flags = kernel.BPF_F_SLEEPABLE if prog.sleepable else 0
    index = [m.name for m in kops.ops.members].index(member)
    attempt = loadmod.ProgLoad(kops.numbers["prog_type"], code, obj.license or "GPL", name, flags,
                               (("expected_attach_type", index), ("attach_btf_id", kops.ops_id)))
    res = attempt.explained(log_level, att.loaded.btf.records(linked))
    if res.fd < 0:
        raise loadmod.verifier_error(name, res.errno, res.log, loadmod.line_info_of(linked))
    fd = att._own(res.fd)
    kp = loadmod.KernelProgram(name, fd, "loop_step", kops.numbers["prog_type"], res.log, prog, att)
    att.programs[name] = kp
    return kp


def _struct_ops_map(spec: OpsSpec, kops: KernelOps, btf_fd: int, value: bytes) -> int:
    try:
        fd = kernel.map_create(kops.numbers["map_type"], 4, kops.value_size, 1,
                               flags=BPF_F_LINK if spec.link else 0, name=spec.name, btf_fd=btf_fd,
                               btf_vmlinux_value_type_id=kops.value_id)
    except OSError as exc:
        raise OSError(exc.errno, f"creating the struct_ops map {spec.name!r} failed: "
                      f"{kernel.errno_meaning(exc.errno)}") from None
    try:
        kernel.map_update_elem(fd, bytes(4), value)
    except OSError as exc:
        kernel.close(fd)
        hint = {_errno.EBADF: "ring_fd is not an io_uring fd",
                _errno.EINVAL: "the kernel refused a member of the ops value"}.get(exc.errno, "")
        raise OSError(exc.errno, f"filling the struct_ops map {spec.name!r} failed: "
                      f"{kernel.errno_meaning(exc.errno)}" + (f" ({hint})" if hint else "")) from None
    return fd


_LINK_MEANINGS = {
    _errno.EBUSY: "the ring already has io_uring_bpf_ops attached (one per ring)",
    # a ring whose flags explain it is an UnsuitableRingError (ring_refusal); this is the rest
    _errno.EOPNOTSUPP: "ring_fd is not an io_uring, or the kernel refuses a BPF loop on this ring",
    _errno.EBADF: "ring_fd is not an open io_uring",
}


def _link_create(map_fd: int, attach_type: int, ring: LoopRing) -> int:
    try:   # the ring is named by the value's ring_fd, not by target_fd
        return kernel.link_create(map_fd, 0, attach_type)
    except OSError as exc:
        err = exc.errno
        why = ring_refusal(ring.flags) if err == _errno.EOPNOTSUPP else ""
        if why:
            raise UnsuitableRingError([Diagnostic(
                None, f"the kernel refused to attach the loop to ring fd {ring.fd} (BPF_LINK_CREATE: "
                f"EOPNOTSUPP): the ring was set up {why}", LOOP_RING_RULE)], err) from None
        raise OSError(err, f"BPF_LINK_CREATE (attaching the ops to ring fd {ring.fd}) failed: "
                      f"{kernel.errno_name(err)} ({_LINK_MEANINGS.get(err) or os.strerror(err)})") from None
