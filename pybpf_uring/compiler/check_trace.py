"""The checker's rules for tracing programs: what their decorators name and what their ctx is.

A tracing program's ctx is a layout the kernel defines -- a tracepoint's record, a raw
tracepoint's arguments, a kprobe's `struct pt_regs` -- so the compiler reads it from the kernel
(`bpf/tracepoints.py`: tracefs, the running kernel's BTF, or the BTF file given with
`--btf`/`btf=`) rather than trusting a copy:

* a ctx parameter left unannotated (`def on_complete(ctx) -> i32:`) gets the kernel's type,
  fields named as the kernel names them (`ctx.res`, `ctx.opcode`, `ctx.di`);
* an annotated one (a hand-written `Struct`) is checked against the kernel's layout, field by
  field, with the missing common header named as such;
* a name the kernel does not have is an error at the decorator naming its near misses.

Where no source describes the layout (no tracefs, no BTF), an annotated ctx is taken as written
and an unannotated one is an error saying so.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import syntax as S
from .check_loops import nodes
from .typesys import INTS, ArrayT, FieldT, StructT, Type

if TYPE_CHECKING:
    from ..bpf import tracepoints as tp

# kind → (section prefix, what the decorator takes, an example)
TRACING_KINDS = {
    "tracepoint": ("tracepoint", '@tracepoint("io_uring", "io_uring_complete")'),
    "raw_tracepoint": ("raw_tp", '@raw_tracepoint("io_uring_complete")'),
    "tp_btf": ("tp_btf", '@tp_btf("io_uring_complete")'),
    "fentry": ("fentry", '@fentry("io_submit_sqes")'),
    "fexit": ("fexit", '@fexit("io_submit_sqes")'),
    "kprobe": ("kprobe", '@kprobe("io_submit_sqes")'),
    "kretprobe": ("kretprobe", '@kretprobe("io_submit_sqes")'),
}
# Program kinds whose ctx the kernel lets a program read only.
READ_ONLY_CTX = frozenset(TRACING_KINDS)


def section(checker, kind: str, e: S.Expr, call: S.Call | None) -> str | None:
    """The ELF section of a tracing decorator (`tracepoint/io_uring/io_uring_complete`), or None
    after an error.  A tracepoint is written `("category", "event")` or `("category/event")`;
    the others take one name."""
    prefix, example = TRACING_KINDS[kind]
    args = call.args if call is not None and not call.keywords else ()
    strings = [a.value for a in args if isinstance(a, S.Constant) and isinstance(a.value, str)]
    if not args or len(strings) != len(args):
        checker.error(e.span, f"@{kind} needs the name of what it traces", f"write {example}")
        return None
    if kind == "tracepoint":
        name = "/".join(strings)
        if len(strings) > 2 or name.count("/") != 1 or not all(name.split("/")):
            checker.error(e.span, "@tracepoint needs the category and the event", f"write {example} "
                          '(or @tracepoint("io_uring/io_uring_complete"))')
            return None
    elif len(strings) != 1 or "/" in strings[0] or not strings[0]:
        checker.error(e.span, f"@{kind} takes one name", f"write {example}")
        return None
    else:
        name = strings[0]
    sec = f"{prefix}/{name}"
    if lookup(checker, kind, sec, args[-1].span) is _UNKNOWN:
        return None
    return sec


_UNKNOWN = object()


def lookup(checker, kind: str, sec: str, span) -> "tp.Record | None | object":
    """The kernel's layout of `sec`'s ctx (None where nothing here describes it; _UNKNOWN after
    an error, which is reported at `span`)."""
    # imported here, not at the top: BTF's reader costs a cold compile of a module without
    # tracing programs tens of milliseconds (bench/compile.py's cold figures)
    from ..bpf import tracepoints as tp
    try:
        return _layout(checker.btf, kind, sec)
    except (OSError, ValueError) as exc:
        checker.error(span, f"cannot read the BTF file: {exc}", "pass a raw BTF file such as "
                      "/sys/kernel/btf/vmlinux of the kernel the program is for")
    except tp.UnknownEvent as exc:
        near = f"did you mean {' or '.join(repr(n) for n in exc.near)}?" if exc.near else \
            "see /sys/kernel/tracing/available_events (tracepoints) or available_filter_functions"
        checker.error(span, exc.message, near)
    return _UNKNOWN


@functools.lru_cache(maxsize=256)
def _layout(btf: str | None, kind: str, sec: str):
    """`lookup`'s answer, once per process for each (BTF, section): a decorator, the ctx and a
    hand-written record ask it in turn, and a kernel's layouts do not change under it.  Raises
    UnknownEvent, or OSError/ValueError for a BTF file that cannot be read (never cached)."""
    from ..bpf import tracepoints as tp
    types = tp.kernel_types(btf)
    name = sec.partition("/")[2]
    if kind == "tracepoint":
        return types.record(*name.split("/"))
    if kind in ("raw_tracepoint", "tp_btf"):
        return types.raw_args(name)
    if kind in ("fentry", "fexit"):
        return types.function_args(name, kind == "fexit")
    types.function(name)
    return types.pt_regs()


def kernel_ctx(checker, d: S.FunctionDef, kind: str, sec: str) -> Type | None:
    """The type of an unannotated ctx parameter: the kernel's layout as a struct."""
    found = lookup(checker, kind, sec, d.params[0].span)
    if found is _UNKNOWN:
        return None
    if found is None:
        where = "tracefs cannot be read here and the kernel's BTF" if checker.btf is None else \
            f"--btf {checker.btf} (tracefs is not read for another kernel)"
        checker.error(d.params[0].span, f"no layout for the ctx of {sec}: {where} does not describe "
                      "it", "annotate ctx with a Struct of the record (tracefs's format file lists "
                      "its fields), or compile where tracefs is readable (as root)")
        return None
    return record_struct(found)


def record_struct(record: tp.Record) -> StructT:
    """A Record as the compiler's struct: each field at the kernel's offset, integers of the
    kernel's width and signedness, arrays of their elements, pointers as u64."""
    fields = []
    for f in record.fields:
        if f.elem_size not in (1, 2, 4, 8):          # a 128-bit integer, say: its bytes
            fields.append(FieldT(f.name, ArrayT(INTS["u8"], f.size), f.offset))
            continue
        elem = INTS[f"{'i' if f.signed else 'u'}{f.elem_size * 8}"]
        fields.append(FieldT(f.name, ArrayT(elem, f.count) if f.count else elem, f.offset))
    align = max((f.type.align for f in fields), default=1)
    size = -(-record.size // align) * align
    return StructT(record.name, tuple(fields), size, align)


def check_ctx(checker, d: S.FunctionDef, kind: str, sec: str, t: Type) -> None:
    """A hand-written ctx struct against the kernel's layout, an error at each field that
    differs (at the field where the struct is in this module, else at the annotation)."""
    found = lookup(checker, kind, sec, d.params[0].span)
    if found is None or found is _UNKNOWN or not isinstance(t, StructT):
        return
    from ..bpf import tracepoints as tp
    mine = [(f.name, f.offset, f.type.size) for f in t.fields]
    spans = _field_spans(checker.module, t.name)
    for name, message, hint in tp.layout_mismatches(mine, found):
        checker.error(spans.get(name, d.params[0].annotation.span), f"{t.name}: {message}", hint)


def _field_spans(module: S.Module, struct: str) -> dict:
    for stmt in module.body:
        if isinstance(stmt, S.ClassDef) and stmt.name == struct:
            return {f.name: f.span for f in stmt.fields}
    return {}


def read_only(kind: str) -> str:
    """The error for a write to a tracing program's ctx (the kernel lets it only read)."""
    return "a tracepoint's record is read-only" if kind == "tracepoint" else \
        f"a @{kind} program's ctx is read-only"


# Compiler intrinsics of tracing tools: name → what the call takes.  log2(v) is a value's bucket
# in a log2 histogram, linear(v, lo, hi, step) in a linear one (bpf/hist.py prints a map keyed
# by a `log2` or `linear` field as histograms).
INTRINSICS = {"log2": "one integer", "linear": "an integer and three constants: linear(v, lo, hi, step)"}


# Kinds whose ctx the kernel types from its BTF: an argument that points to a struct is a
# pointer the verifier tracks (PTR_TO_BTF_ID), and refuses arithmetic on ("R2 pointer arithmetic
# with >>= operator prohibited"), where a raw tracepoint's or kprobe's is a plain u64.
BTF_TYPED = frozenset({"tp_btf", "fentry", "fexit"})


def struct_pointer(c_type: str) -> bool:
    return c_type.endswith("*") and c_type.removeprefix("const ").startswith(("struct ", "union "))


class TracingRules:
    """BodyChecker's rules for the tracing intrinsics and a BTF-typed ctx's pointers (a mixin:
    `self` is the BodyChecker)."""

    def kernel_pointer(self, e: S.Expr) -> str | None:
        """What `e` is when it holds a kernel struct pointer of a BTF-typed ctx (`ctx.req
        (struct io_kiocb *)`), read from the ctx or a local assigned from it; else None."""
        if isinstance(e, S.Name):
            return self.pointer_locals.get(e.id)
        if isinstance(e, S.IfExp):   # either side may be the one chosen
            return self.kernel_pointer(e.then) or self.kernel_pointer(e.otherwise)
        kind, sec = self.info.kind, self.info.section
        if kind not in BTF_TYPED or not isinstance(e, S.Attribute) or not isinstance(e.value, S.Name) \
                or e.value.id not in self.ctxs:
            return None
        try:
            found = _layout(self.mod.btf, kind, sec)
        except Exception:  # reported where the ctx was typed
            return None
        f = found.field(e.attr) if found is not None else None
        return f"{e.value.id}.{e.attr} ({f.c_type})" if f is not None and struct_pointer(f.c_type) else None

    def find_pointer_locals(self, body) -> None:
        """The locals assigned a kernel pointer anywhere in the function, before its statements
        are checked: a loop's earlier statement reads what a later one assigned on the
        previous pass (`x = p >> 1` then `p = ctx.arg0`)."""
        if self.info.kind not in BTF_TYPED:
            return
        assigns = [n for n in nodes(*body) if isinstance(n, S.Assign) and isinstance(n.target, S.Name)
                   and n.value is not None]
        changed = True
        while changed:
            changed = False
            for a in assigns:
                what = self.kernel_pointer(a.value) if a.target.id not in self.pointer_locals else None
                if what is not None:
                    self.pointer_locals[a.target.id] = f"{a.target.id}, a copy of {what},"
                    changed = True

    def no_pointer_on_stack(self, e: S.Expr, value: S.Expr, where: str) -> None:
        """An error at a kernel pointer stored into a local struct or array (`where`): the
        verifier tracks a pointer spilled to the stack, so reading it back is the pointer
        again, beyond what the checker follows.  A struct or list that is itself the value of
        a map store (`m[k] = Rec(req=ctx.arg0)`) goes to the map, and reads back as a number."""
        body, index = self.position
        stmt = body[index] if index < len(body) else None
        if isinstance(stmt, S.Assign) and stmt.value is value and isinstance(stmt.target, S.Subscript) \
                and self.expr_type_of_base(stmt.target.value) is not None:
            return
        what = self.kernel_pointer(e)
        if what is not None:
            self.error(e.span, f"{what} is a kernel pointer in a @{self.kind} program, stored in {where}: "
                       "the verifier keeps it a pointer there and allows no arithmetic on it",
                       "store it in a map value or a global, which the program reads back as a number, "
                       "or keep it in a plain local to compare it or use it as a map key")

    def no_pointer_arithmetic(self, *operands: S.Expr, where: str = "") -> None:
        """An error at an operand of arithmetic (an operator, min/max/abs, log2/linear, an
        index, a narrowing) that is a kernel pointer: the verifier would refuse the program.
        `where` says where else it goes (a subprogram's argument)."""
        for e in operands:
            what = self.kernel_pointer(e)
            if what is not None:
                self.error(e.span, f"{what} is a kernel pointer in a @{self.kind} program{', ' + where if where else ''}: "
                           "the verifier allows no arithmetic on it",
                           "compare it, store it or use it as a map key as it is; for a number to "
                           "compute with, trace with @raw_tracepoint or @kprobe, whose arguments are "
                           "plain u64 values")

    def call_intrinsic(self, e: S.Call, sym) -> Type:
        from .checked import CallTarget
        name = sym.value
        want = 1 if name == "log2" else 4
        result = INTS["u32"] if name == "log2" else INTS["u64"]
        if len(e.args) != want or e.keywords:
            self.error(e.span, f"{name}() takes {INTRINSICS[name]}",
                       "write log2(value)" if name == "log2" else "e.g. linear(ns, 0, 1000000, 100000)")
            return result
        self.no_pointer_arithmetic(e.args[0])
        self.convert(e.args[0], INTS["u64"], f"{name}() argument")
        if name == "log2":
            self.out.calls[e] = CallTarget(name, result)
            return result
        params = self.linear_params(e)
        if params is not None:
            self.out.calls[e] = CallTarget(name, params)
        return result

    def linear_params(self, e: S.Call) -> tuple[int, int, int] | None:
        """linear()'s lo, hi and step: constants the host can print the buckets from (they are
        packed into each bucket: bpf/hist.py)."""
        from ..bpf.hist import LINEAR_BOUND_MAX, LINEAR_STEP_MAX
        values = [self.fold(a) for a in e.args[1:]]
        for a, v, what in zip(e.args[1:], values, ("lo", "hi", "step")):
            if v is None:
                self.error(a.span, f"linear()'s {what} must be an integer constant",
                           "the buckets are fixed when the program is compiled")
                return None
        lo, hi, step = values
        if not 0 <= lo < hi <= LINEAR_BOUND_MAX:
            self.error(e.args[1].span, f"linear() needs 0 <= lo < hi <= {LINEAR_BOUND_MAX}, not "
                       f"lo={lo}, hi={hi}", "a bucket's bound is kept in 32 bits")
            return None
        if not 1 <= step <= min(hi - lo, LINEAR_STEP_MAX):
            self.error(e.args[3].span, f"linear()'s step must be from 1 to hi - lo ({hi - lo}), "
                       f"not {step}" + (f" (at most {LINEAR_STEP_MAX})" if step > LINEAR_STEP_MAX else ""))
            return None
        return lo, hi, step
