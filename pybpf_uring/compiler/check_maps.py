"""Map methods and ring buffer records: what a program may call on each map kind, and the
verifier's rule that every record a program reserves is submitted or discarded on every path.

Split from check_body.py (which calls `map_method` for `m.name(...)` and `element_error` for
`m[k]`, and from check.py, which runs `RecordRules` on each function once its body is checked),
so the map kinds' rules live in one place.

Records.  `r = rb.reserve(T)` gives a reference to a T inside the ring buffer, or None when the
ring is full.  The kernel's verifier tracks it as an acquired reference: a program whose exit is
reachable with the record neither submitted nor discarded is refused ("Unreleased reference"),
as is one that uses the record after releasing it.  `RecordRules` walks the function as the
verifier walks its paths, with a state per record variable, so what `check` accepts the kernel
accepts:

* pending -- a record or None: reserved and not yet tested, or paths meeting with a held
  record on some and None on others;
* held -- tested and not None (`if r is not None:`, `if r:`, or after `if r is None: return`);
  the test's other side is never taken (the verifier does not walk it either);
* released -- submitted or discarded; any later use is an error;
* none -- tested and None: nothing to release;
* partly -- outstanding on some of the paths that meet here, released on others.

A return (or the end of the function) with a pending, held or partly released record is an
error, and so is a loop body that ends, breaks or continues with records other than those it
started with.  A loop body is walked again from the state its iterations leave until that
state is stable, so a record released in one iteration is released at the next one's start.  To keep every record one verifier reference, a record variable is assigned only
from `rb.reserve(T)`, never copied, and only released by the function that reserved it (a
subprogram may read and write a record passed to it).
"""
from __future__ import annotations

import dataclasses

from . import syntax as S
from .checked import CallTarget, FunctionInfo
from .typesys import I64, NONE, ArrayT, BoolT, IntT, MapT, PtrT, StructT, Type
from ..uapi import BPF_RINGBUF_HDR_SZ

PENDING, HELD, RELEASED, NULL, PARTLY = "pending", "held", "released", "none", "partly"
OUTSTANDING = (PENDING, HELD, PARTLY)
RECORD_METHODS = ("output", "reserve", "submit", "discard")
RELEASE_HINT = "call rb.submit(r) or rb.discard(r) on every path where r is not None"


def methods_hint(m: MapT) -> str:
    if not m.keyed:
        return "use rb.output(value), r = rb.reserve(T), then rb.submit(r) or rb.discard(r)"
    hashed = ", del m[k], m.setdefault(k, v)" if m.hashed else ""
    return f"use m[k], m[k] = v, m[k] += v{hashed} or m.lookup(k)"


def element_error(bc, m: MapT, span) -> bool:
    """An error for `m[k]` (read, write or del) on a map without keys; True when reported."""
    if m.keyed:
        return False
    bc.error(span, "a ring buffer has records, not keys", methods_hint(m))
    return True


def map_key(bc, m: MapT, key: S.Expr) -> None:
    """`key` converted to `m`'s key type; a constant key past an array kind's last slot is an
    error (the kernel has no such slot: every read of it is 0 and every write is lost)."""
    bc.convert(key, m.key, "map key")
    k = bc.fold(key)
    if m.keyed and not m.hashed and k is not None and 0 <= k <= m.key.max and k >= m.max_entries:
        bc.error(key.span, f"key {k} is out of range for {m.kind}(..., {m.max_entries}) (0 to {m.max_entries - 1})",
                 "an array map has max_entries slots, numbered from 0")


def delete_error(bc, m: MapT, span) -> None:
    """`del m[k]`: the array kinds keep every slot (the kernel's delete is -EINVAL)."""
    if not element_error(bc, m, span) and not m.hashed:
        bc.error(span, f"{m.kind} elements cannot be deleted (the kernel keeps every slot)",
                 "store 0 instead, or use a HashMap")


def element_write_error(bc, e: S.Expr) -> None:
    """`m[k].f = v` or `m[k][i] = v`: m[k] reads a copy of the value (zeros when k is missing),
    so writing into a part of it would change nothing."""
    while isinstance(e, (S.Attribute, S.Subscript)):
        inner = e.value
        if isinstance(inner, S.Subscript) and isinstance(bc.expr_type_of_base(inner.value), MapT):
            m = bc.source_text(inner.value)
            bc.error(e.span, f"{bc.source_text(inner)} is a copy of the map's value; writing into it "
                     "changes nothing", f"write through a reference: `r = {m}.lookup(...)` (or "
                     f"{m}.setdefault(...)), then `if r is not None:` and assign r's part")
            return
        e = inner


def map_method(bc, e: S.Call) -> Type:
    """`m.lookup(k)`, `m.setdefault(k, v)`, and a ring buffer's `output`, `reserve`, `submit`
    and `discard`, checked by the BodyChecker `bc`."""
    m: MapT = bc.expr(e.func.value)
    name, args = e.func.attr, e.args
    allowed = RECORD_METHODS if not m.keyed else ("lookup", "setdefault") if m.hashed else ("lookup",)
    # what a wrong call is typed as, so the errors after it are about the rest of the program
    fallback = NONE if name in ("submit", "discard") else I64 if name in RECORD_METHODS \
        else PtrT(m.value, nullable=True)
    if name not in allowed:
        bc.error(e.func.span, f"{m.kind} has no method {name!r}", methods_hint(m))
        return fallback
    want = {"lookup": "k", "setdefault": "k, v", "output": "value", "reserve": "T",
            "submit": "r", "discard": "r"}[name]
    if len(args) != want.count(",") + 1:
        bc.error(e.span, f"{name}() takes {want.count(',') + 1} argument{'s' * (',' in want)}",
                 f"write {bc.source_text(e.func)}({want})")
        return fallback
    if name in ("lookup", "setdefault"):
        map_key(bc, m, args[0])
        if name == "setdefault":
            bc.convert(args[1], m.value, "map value")
        bc.out.calls[e] = CallTarget(name, m)
        return PtrT(m.value, nullable=True)
    if name == "output":
        t = bc.expr(args[0])
        data = t.target if isinstance(t, PtrT) else t
        if isinstance(t, PtrT) and t.nullable:
            bc.error(args[0].span, f"{bc.source_text(args[0])} may be None here",
                     f"check first: `if {bc.source_text(args[0])} is not None:`")
        elif not isinstance(data, (IntT, BoolT, StructT, ArrayT)):
            bc.error(args[0].span, f"rb.output() sends an integer, struct or array, not {t}")
        bc.out.calls[e] = CallTarget("ringbuf_output", m)
        return I64
    if name == "reserve":
        t = bc.mod.resolve_type(args[0], bc.scope)
        if t is None or t == NONE:
            return PtrT(NONE, nullable=True)
        # imported here: bpf/ringbuf.py reads records through values.py and BTF, which a compile
        # without ring buffers should not pay for at start-up (tests/test_startup.py)
        from ..bpf.ringbuf import record_length
        if record_length(t.size) > m.max_entries:   # the kernel's reserve would always fail
            bc.error(args[0].span, f"a record of {t.size} bytes (and its {BPF_RINGBUF_HDR_SZ}-byte header) "
                     f"does not fit in a ring buffer of {m.max_entries} bytes")
        bc.out.calls[e] = CallTarget("ringbuf_reserve", (m, t))
        return PtrT(t, nullable=True)
    t = bc.expr(args[0])
    if not isinstance(t, PtrT):
        bc.error(args[0].span, f"{name}() takes a record from rb.reserve(T), not {t}")
    elif t.nullable:
        bc.error(args[0].span, f"{bc.source_text(args[0])} may be None here",
                 f"check first: `if {bc.source_text(args[0])} is not None: "
                 f"{bc.source_text(e.func)}({bc.source_text(args[0])})`")
    bc.out.calls[e] = CallTarget(f"ringbuf_{name}", m)
    return NONE


# ----- records ---------------------------------------------------------------------------
def expressions(node):
    """Every expression in `node` (a statement's own expressions, not its nested statements),
    outermost first."""
    if isinstance(node, tuple):
        for item in node:
            yield from expressions(item)
    elif isinstance(node, S.Expr):
        yield node
        for f in dataclasses.fields(node):
            if f.name != "span":
                yield from expressions(getattr(node, f.name))
    elif isinstance(node, S.Keyword):
        yield from expressions(node.value)
    elif isinstance(node, S.Stmt):
        for f in dataclasses.fields(node):
            if f.name not in ("span", "body", "orelse"):
                yield from expressions(getattr(node, f.name))


class RecordRules:
    """The walk described in the module docstring, over one checked function."""

    def __init__(self, mod, info: FunctionInfo) -> None:
        self.mod, self.info, self.calls = mod, info, mod.out.calls
        self.records: dict[str, str] = {}   # record variable → the ring buffer it is reserved from
        self.loops: list[tuple] = []        # each enclosing loop: its entry state, and the states
                                            # that go back to its head and that break out of it
        self.reported: set[str] = set()     # each leaked record is reported once

    def target(self, e: S.Expr, kind: str) -> bool:
        t = self.calls.get(e) if isinstance(e, S.Call) else None
        return t is not None and t.kind == kind

    def run(self) -> None:
        self.find_records(self.info.node.body)
        state = self.block(self.info.node.body, {})
        if state is not None:
            self.leaks(state, self.info.node.body[-1].span if self.info.node.body else self.info.node.span,
                       "at the end of the function")

    def find_records(self, body) -> None:
        for stmt in body:
            if isinstance(stmt, S.Assign) and isinstance(stmt.target, S.Name) and \
                    self.target(stmt.value, "ringbuf_reserve"):
                self.records[stmt.target.id] = stmt.value.func.value.id
            self.find_records(getattr(stmt, "body", ()))
            self.find_records(getattr(stmt, "orelse", ()))

    def error(self, span, message: str, hint: str = "") -> None:
        self.mod.error(span, message, hint)

    # ----- statements: each takes the state before it, gives the state after (None: no path) --
    def block(self, body, state: dict | None) -> dict | None:
        for stmt in body:
            if state is None:
                return None
            state = getattr(self, "stmt_" + type(stmt).__name__, self.stmt_other)(stmt, dict(state))
        return state

    def uses(self, node, state: dict, skip: S.Expr | None = None) -> None:
        """Reservations outside `r = rb.reserve(T)`, copies, and uses after release in the
        statement's expressions."""
        for e in expressions(node):
            if e is skip:
                continue
            if isinstance(e, S.Call) and self.target(e, "ringbuf_reserve"):
                self.error(e.span, "a reservation must be assigned to a local name",
                           "write `r = rb.reserve(T)`, then test `if r is not None:`")
            elif isinstance(e, S.Name) and state.get(e.id) == RELEASED:
                self.error(e.span, f"{e.id!r} is used after it was submitted or discarded",
                           "the record belongs to the ring buffer's reader once it is released; "
                           "write every field before rb.submit()")

    def stmt_other(self, s, state: dict) -> dict:
        self.uses(s, state)
        return state

    def stmt_Assign(self, s: S.Assign, state: dict) -> dict:
        name = s.target.id if isinstance(s.target, S.Name) else None
        reserve = self.target(s.value, "ringbuf_reserve")
        if reserve and name is not None:
            self.uses(s.value.args, state)
            if state.get(name) in OUTSTANDING:
                self.error(s.target.span, f"{name!r} still holds the record reserved before; it is "
                           "overwritten without being submitted or discarded", RELEASE_HINT)
            state[name] = PENDING
            return state
        self.uses(s, state, skip=s.target if name is not None else None)
        if name in self.records:
            self.error(s.span, f"{name!r} holds a ring buffer record: assign it only from rb.reserve(T)",
                       "use another name for this value")
        elif isinstance(s.value, S.Name) and s.value.id in self.records:
            self.error(s.value.span, f"a record reference ({s.value.id!r}) cannot be copied",
                       f"use {s.value.id!r} itself; the verifier tracks each record through one name")
        return state

    def stmt_ExprStmt(self, s: S.ExprStmt, state: dict) -> dict:
        e = s.value
        release = next((k for k in ("ringbuf_submit", "ringbuf_discard") if self.target(e, k)), None)
        if release is None:
            self.uses(s, state)
            return state
        arg = e.args[0] if e.args else None
        self.uses(e.func, state)
        if not isinstance(arg, S.Name) or arg.id not in self.records:
            # not a reference at all: the type check said so ("takes a record from rb.reserve(T)")
            if arg is not None and isinstance(self.mod.out.types.get(arg), PtrT):
                self.error(arg.span, f"{e.func.attr}() takes a record this function reserved",
                           "pass the name assigned from rb.reserve(T)")
            return state
        status = state.get(arg.id)
        if status == RELEASED:
            self.error(arg.span, f"{arg.id!r} was already submitted or discarded")
        elif status == PARTLY:
            self.error(arg.span, f"{arg.id!r} may already be submitted or discarded (or be None) here",
                       "release a record once, on each path")
        elif status == HELD:
            rb = e.func.value.id if isinstance(e.func.value, S.Name) else None
            if rb != self.records[arg.id]:
                self.error(e.func.value.span, f"{arg.id!r} was reserved from {self.records[arg.id]!r}, "
                           f"not {rb!r}", f"write {self.records[arg.id]}.{e.func.attr}({arg.id})")
            state[arg.id] = RELEASED
        # PENDING and NULL: map_method and the None checks already say `arg` may be None
        return state

    def stmt_Return(self, s: S.Return, state: dict) -> None:
        self.uses(s, state)
        self.leaks(state, s.span, "at this return")
        return None

    def leaks(self, state: dict, span, where: str) -> None:
        for name, status in state.items():
            if status in OUTSTANDING and name not in self.reported:
                self.reported.add(name)
                how = "may still be held" if status == PARTLY else "is neither submitted nor discarded"
                self.error(span, f"the record {name!r} reserved from {self.records[name]!r} {how} {where}; "
                           "the verifier refuses a program that can exit holding a record", RELEASE_HINT)

    def stmt_If(self, s: S.If, state: dict) -> dict | None:
        self.uses(s, state)
        yes, no = self.narrow(s.test, state)
        return merge(self.block(s.body, yes), self.block(s.orelse, no))

    def narrow(self, test: S.Expr, state: dict) -> tuple[dict | None, dict | None]:
        """The states where `test` is true and where it is false (None: that side cannot be
        taken): a pending record tested against None becomes held on one side and none on the
        other; a held one has only the side where it is not None."""
        yes, no = dict(state), dict(state)
        if isinstance(test, S.UnaryOp) and test.op == "not":
            a, b = self.narrow(test.operand, state)
            return b, a
        name, nonnull = None, True
        if isinstance(test, S.Name):
            name = test.id
        elif isinstance(test, S.Compare) and len(test.ops) == 1 and isinstance(test.left, S.Name) \
                and test.ops[0] in ("is", "is not"):
            name, nonnull = test.left.id, test.ops[0] == "is not"
        if name is not None and state.get(name) == HELD:   # known not None: that side is dead,
            return (state, None) if nonnull else (None, state)   # and the verifier never walks it
        if name is not None and state.get(name) == PENDING:
            yes[name], no[name] = (HELD, NULL) if nonnull else (NULL, HELD)
        elif isinstance(test, S.BoolOp):
            parts = [self.narrow(v, state) for v in test.values]
            side = 0 if test.op == "and" else 1   # `and` true: all true; `or` false: all false
            narrowed: dict | None = dict(state)
            for part in parts:
                if part[side] is None:
                    narrowed = None
                    break
                narrowed.update({n: st for n, st in part[side].items() if st != state.get(n)})
            yes, no = (narrowed, no) if side == 0 else (yes, narrowed)
        return yes, no

    def loop(self, body, state: dict, span, may_skip: bool) -> dict | None:
        """A loop must leave its outstanding records as it found them (or it is an error).  The
        body is walked from the loop head's state until that state stops changing: an iteration
        starts where the last one ended (a record released there is released here).  After the
        loop: the head's state (the loop may end there), and the states at its breaks."""
        head: dict | None = state
        for _ in range(2 * len(self.records) + 2):   # a status rises at most twice per pass
            self.loops.append((state, back := [], breaks := []))
            end = self.block(body, dict(head))
            self.loops.pop()
            if end is not None:
                self.loop_exit(state, end, span, "at the end of the loop body")
                back.append(end)
            again = merge_all([head, *back])
            if again == head:
                break
            head = again
        return merge_all(([head] if may_skip or back else []) + breaks)

    def loop_exit(self, entry: dict, state: dict, span, where: str) -> None:
        for name in set(entry) | set(state):
            before, after = entry.get(name) in OUTSTANDING, state.get(name) in OUTSTANDING
            if after and not before and name not in self.reported:
                self.reported.add(name)
                self.error(span, f"the record {name!r} reserved in the loop is still held {where}",
                           "submit or discard it in the same iteration")
            elif before and state.get(name) != entry.get(name) and name not in self.reported:
                self.reported.add(name)
                self.error(span, f"the record {name!r} reserved before the loop is released inside it",
                           "the loop may release it more than once, or not at all: release it after the loop")

    def stmt_For(self, s: S.For, state: dict) -> dict | None:
        self.uses(s, state)
        start, stop, step = self.mod.out.loops.get(s, (0, 0, 1))
        return self.loop(s.body, state, s.span, may_skip=not (start < stop if step > 0 else start > stop))

    def stmt_While(self, s: S.While, state: dict) -> dict | None:
        self.uses(s, state)
        return self.loop(s.body, state, s.span, may_skip=True)

    def stmt_Break(self, s, state: dict) -> None:
        if self.loops:
            entry, back, breaks = self.loops[-1]
            self.loop_exit(entry, state, s.span, f"at this {type(s).__name__.lower()}")
            (breaks if isinstance(s, S.Break) else back).append(state)
        return None

    stmt_Continue = stmt_Break


def merge_all(states: list) -> dict | None:
    out = None
    for state in states:
        out = merge(out, state)
    return out


def merge(a: dict | None, b: dict | None) -> dict | None:
    """The state where two paths meet (None: a path that does not reach it)."""
    if a is None or b is None:
        return a if b is None else b
    out = {}
    for name in set(a) | set(b):
        x, y = a.get(name, NULL), b.get(name, NULL)
        if x == y:
            out[name] = x
        elif {x, y} <= {PENDING, HELD, NULL}:   # a record or None: what a reservation gives
            out[name] = PENDING
        elif x in OUTSTANDING or y in OUTSTANDING:
            out[name] = PARTLY
        else:
            out[name] = RELEASED if RELEASED in (x, y) else NULL
    return out
