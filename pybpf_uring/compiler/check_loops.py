"""Loop proofs: that every loop ends, in the width of its variable, and that the verifier's walk
of it fits the kernel's instruction limit.

The verifier proves a loop ends by walking it: each pass of a bounded loop is verified again,
instruction by instruction, until the exit is taken, and a program whose walk passes
MAX_VERIFIED_INSNS is refused ("BPF program is too large").  So the checker needs two facts of
each loop: a bound on its passes that holds in the machine's arithmetic (a u8 counter that
steps past 255 wraps and never reaches 300; an i64 range counter that steps past 2**63-1
wraps negative), and the passes times a bound on the instructions of one pass, multiplied
through nested loops and summed over a function's loops.

A mixin of `check_body.BodyChecker`, which owns the function's locals and the error sink.
"""
from __future__ import annotations

from dataclasses import fields
from typing import NamedTuple

from . import syntax as S
from .checked import PROGRAM_KINDS, Symbol
from ..limits import MAX_PENDING_BRANCHES, MAX_VERIFIED_INSNS
from .typesys import I64, IntT

# What one pass of a loop costs the verifier, as an upper bound: every statement and every
# expression node of the body counts INSNS_PER_NODE instructions (a map access or a helper
# call is a few nodes and a dozen instructions; a leaf is one), and the loop's own compare,
# branch and step LOOP_OVERHEAD.  Measured against the kernel's verified_insns by
# tests/test_checker_soundness.py, which loads what this accepts.
INSNS_PER_NODE = 4
LOOP_OVERHEAD = 6
# The program kinds the kernel's verifier walks: all but @iouring programs, which run in the
# userspace engine (the RFC ABI); a subprogram without a ctx is walked as its callers are.
VERIFIED_KINDS = frozenset(PROGRAM_KINDS - {"iouring"})


class LoopRules:
    def stmt_For(self, s: S.For) -> None:
        it = s.iter
        if not (isinstance(it, S.Call) and isinstance(it.func, S.Name) and it.func.id == "range"
                and "range" not in self.scope and self.global_kind("range") is None):
            self.error(it.span, "a for loop must iterate over range(...)",
                       "write `for i in range(N):` with a constant N")
            self.loop_body(s, s.body, None)
            return
        if not 1 <= len(it.args) <= 3 or it.keywords:
            self.error(it.span, "range takes 1 to 3 positional arguments")
            return
        bounds = [self.fold(a) for a in it.args]
        for a, b in zip(it.args, bounds):
            if b is None:
                self.expr(a)
                self.error(a.span, "the loop bound must be a constant the compiler can prove",
                           f"loop to a constant maximum and stop early: `for i in range(MAX):` "
                           f"with `if i >= {self.source_text(a)}: break`")
        if s.target.id not in self.scope:
            self.error(s.target.span, f"the loop variable {s.target.id!r} is a module-level global",
                       "a loop variable is a local; give it another name (assign the global after the loop)")
        t = self.locals.setdefault(s.target.id, I64)
        if not isinstance(t, IntT):
            self.error(s.target.span, f"{s.target.id!r} is a {t}, not an integer")
        self.out.symbols[s.target] = Symbol("local", t)
        self.out.types[s.target] = t
        trips, values = None, None
        if None not in bounds:
            trips, values = self.range_values(s, bounds, t)
        name = s.target.id
        rebound = any(isinstance(n, (S.Assign, S.AugAssign)) and isinstance(n.target, S.Name)
                      and n.target.id == name for n in walk(s.body))
        outer = self.ranges.pop(name, None)
        if values is not None and not rebound:
            self.ranges[name] = values
        self.loop_body(s, s.body, trips)
        self.ranges.pop(name, None)
        if outer is not None and not rebound:
            self.ranges[name] = outer

    def range_values(self, s: S.For, bounds: list[int], t) -> tuple[int | None, tuple[int, int] | None]:
        """range(...)'s number of passes and (least, greatest) value, or an error: a step of
        zero, bounds outside the i64 counter the loop runs on, a counter whose last step
        passes i64's range (it would wrap and never reach the stop), values the loop variable's
        type cannot hold."""
        it = s.iter
        start, stop, step = (0, bounds[0], 1) if len(bounds) == 1 else (*bounds, 1)[:3]
        if step == 0:
            self.error(it.args[2].span, "range() step cannot be zero")
            return None, None
        for a, b in zip(it.args, bounds):
            if not I64.min <= b <= I64.max:
                self.error(a.span, f"{b} does not fit in the loop's i64 counter "
                           f"({I64.min} to {I64.max})")
                return None, None
        trips = max(0, -(-(stop - start) // step))
        after = start + trips * step  # the counter once the last pass has stepped it
        if not I64.min <= after <= I64.max:
            self.error(it.span, f"the range's counter steps to {after}, past the i64 range, and "
                       "would wrap instead of reaching the stop", "lower the stop or the step")
            return None, None
        self.out.loops[s] = (start, stop, step)
        for a in it.args:
            self.out.values[a] = self.fold(a)
            self.out.types[a] = I64
        if not trips:
            return 0, None
        first, last = start, start + (trips - 1) * step
        low, high = min(first, last), max(first, last)
        if isinstance(t, IntT) and not t.min <= low <= high <= t.max:
            self.error(it.span, f"{s.target.id!r} is a {t} ({t.min} to {t.max}), but this range "
                       f"reaches {last if not t.min <= last <= t.max else first}",
                       f"declare {s.target.id} wider (i64), or loop over fewer values")
            return trips, None
        return trips, (low, high)

    def stmt_While(self, s: S.While) -> None:
        before = self.position
        self.condition(s.test)
        var = self.while_bound(s)
        trips = None
        if var is None:
            self.error(s.test.span, "cannot prove that this while loop ends",
                       "write `while i < N:` with a constant N and an unconditional `i += 1` "
                       "in the body (no continue), or use `for i in range(N):`")
        else:
            trips = self.while_passes(s, var, self.start_value(var, *before))
        self.loop_body(s, s.body, trips)

    def while_bound(self, s: S.While) -> str | None:
        """`while i < C` (or <=, >, >=) where the body's top level steps i towards C by a
        constant and nothing else assigns i: then the loop ends after at most |C - i| steps."""
        t = s.test
        if not (isinstance(t, S.Compare) and len(t.ops) == 1 and isinstance(t.left, S.Name)
                and t.ops[0] in ("<", "<=", ">", ">=") and self.fold(t.comparators[0]) is not None):
            return None
        var, up = t.left.id, t.ops[0] in ("<", "<=")
        steps = [st for st in s.body if isinstance(st, S.AugAssign) and isinstance(st.target, S.Name)
                 and st.target.id == var and st.op == ("+" if up else "-")
                 and (self.fold(st.value) or 0) > 0]
        if len(steps) != 1 or any(isinstance(n, S.Continue) for n in walk(s.body)):
            return None
        others = [n for n in walk(s.body) if n is not steps[0] and isinstance(n, (S.Assign, S.AugAssign))
                  and isinstance(n.target, S.Name) and n.target.id == var]
        return None if others else var

    def while_passes(self, s: S.While, var: str, start: int | None) -> int | None:
        """The most passes `while i < C: ... i += k` makes, in i's type: i starts at the
        constant assigned just before the loop, or else anywhere in its type.  The step must
        not carry i past the type's end while the test still holds, or i wraps and the loop
        never ends; nor may i start anywhere in a signed type (a verifier's walk from -2**63)."""
        t = self.locals.get(var)
        if not isinstance(t, IntT):
            return None
        op, limit = s.test.ops[0], self.fold(s.test.comparators[0])
        if not t.min <= limit <= t.max:
            return None  # the constant does not fit i's type: already an error
        step = next(self.fold(st.value) for st in s.body if isinstance(st, S.AugAssign)
                    and isinstance(st.target, S.Name) and st.target.id == var)
        up = op in ("<", "<=")
        last = limit - 1 if op == "<" else limit + 1 if op == ">" else limit  # the last value that loops
        if (last + step > t.max) if up else (last - step < t.min):
            end = t.max if up else t.min
            self.error(s.test.span, f"{var!r} is a {t}: a step of {step} from {last} passes {end} and wraps, "
                       f"so `{self.source_text(s.test)}` may never be false",
                       f"declare {var} wider (i64), or stop before {end} - {step}")
            return None
        if start is None:
            start = t.min if up else t.max
            if t.signed:
                self.error(s.test.span, f"{var!r} is a signed {t} with no constant value before the "
                           f"loop, so the verifier walks this loop from {start}",
                           f"assign {var} a constant just before the loop, e.g. `{var} = 0`")
                return None
        start = t.wrap(start)
        span = (last - start) if up else (start - last)
        return 0 if span < 0 else span // step + 1

    def start_value(self, var: str, block: tuple, index: int) -> int | None:
        """The constant `var` holds when the statement at block[index] starts: the value of the
        last statement before it in the same block that assigns `var` a constant, when no
        statement in between touches `var` (assigns it, loops over it, or passes it to a call,
        which may take it by address)."""
        for stmt in reversed(block[:index]):
            if isinstance(stmt, S.Assign) and isinstance(stmt.target, S.Name) and stmt.target.id == var:
                return self.fold(stmt.value) if stmt.value is not None else None
            if any(touches(n, var) for n in nodes(stmt)):
                return None
        return None

    def loop_body(self, s, body, trips: int | None) -> None:
        """Check the body, then the verifier's walk of the loop: its passes times one pass,
        nested loops and called subprograms included, in instructions and in branches left
        pending.  An outermost loop past a limit is the error, at the loop."""
        self.loop_depth += 1
        saved = set(self.nonnull)
        self.block(body)
        self.nonnull = saved
        self.loop_depth -= 1
        if trips is None:
            return  # no proof that it ends: already an error
        insns, branches = self.cost(body)
        per_pass = insns + LOOP_OVERHEAD
        walked = Cost(trips * per_pass + LOOP_OVERHEAD, trips * branches)
        self.loop_walks[s] = walked
        if self.loop_depth or self.kind not in VERIFIED_KINDS:
            return  # an outer loop, or the programs calling this subprogram, count it
        inner = [n for n in nodes(*body) if n in self.loop_walks or self.callee_cost(n) is not None]
        included = ", its nested loops and calls included" if inner else ""
        if walked.insns > MAX_VERIFIED_INSNS:
            self.too_large.add(s)
            self.error(s.span, f"the verifier would walk ~{walked.insns} instructions of this loop "
                       f"({trips} passes × ~{per_pass} instructions{included}); the kernel stops at "
                       f"{MAX_VERIFIED_INSNS}", FEWER_PASSES)
        elif walked.branches > MAX_PENDING_BRANCHES:
            self.too_large.add(s)
            self.error(s.span, f"the verifier would keep ~{walked.branches} branches of this loop pending "
                       f"({trips} passes × {branches} conditional branches{included}); the kernel stops "
                       f"at {MAX_PENDING_BRANCHES} (\"The sequence of {MAX_PENDING_BRANCHES + 1} jumps is "
                       "too complex\")", "take the condition out of the loop where you can (a mask, "
                       "min() or max() instead of an if), or " + FEWER_PASSES)

    def cost(self, body) -> Cost:
        """An upper bound on what one pass over `body` makes the verifier do: every node counts
        INSNS_PER_NODE instructions; a nested loop and a called subprogram their own walk; and
        each conditional branch one state the verifier keeps pending to explore later (a path
        through a loop of N passes with an if in its body leaves N)."""
        insns = branches = 0
        for n in nodes(*body, stop=lambda n: isinstance(n, (S.For, S.While))):
            inner = self.loop_walks.get(n) if isinstance(n, (S.For, S.While)) else self.callee_cost(n)
            if inner is not None:
                insns, branches = insns + inner.insns, branches + inner.branches
            if not isinstance(n, (S.For, S.While)):
                insns += INSNS_PER_NODE
                branches += branches_of(n) + self.guarded(n)
        return Cost(insns, branches)

    def guarded(self, n) -> bool:
        """Whether lowering tests `n` at run time: a map element (the lookup may find
        nothing) or an array element at an index not proven in bounds."""
        if not isinstance(n, S.Subscript):
            return False
        if self.expr_type_of_base(n.value) is not None:
            return True
        return self.fold(n.index) is None and n not in self.out.in_bounds

    def callee_cost(self, n) -> Cost | None:
        """The walk of the subprogram a call node calls (the verifier walks it at each call)."""
        target = self.out.calls.get(n) if isinstance(n, S.Call) else None
        if target is None or target.kind != "subprog":
            return None
        return self.mod.costs.get(target.target, Cost(0, 0))

    def function_cost(self) -> Cost:
        """The verifier's walk of the whole function, recorded for its callers.  In a program,
        the statement with which the walk passes a limit is the error: a loop, or a call of a
        subprogram that loops (a loop past a limit by itself is already one)."""
        total, reported = Cost(0, 0), self.info.kind not in VERIFIED_KINDS
        for stmt in self.info.node.body:
            step = self.cost([stmt])
            total = Cost(total.insns + step.insns, total.branches + step.branches)
            if reported or any(n in self.too_large for n in nodes(stmt)):
                reported = True
                continue
            reported = total.insns > MAX_VERIFIED_INSNS or total.branches > MAX_PENDING_BRANCHES
            if total.insns > MAX_VERIFIED_INSNS:
                self.error(stmt.span, f"with this statement, the verifier would walk ~{total.insns} "
                           f"instructions of {self.info.name} (its loops and the subprograms it calls); "
                           f"the kernel stops at {MAX_VERIFIED_INSNS}", FEWER_PASSES)
            elif total.branches > MAX_PENDING_BRANCHES:
                self.error(stmt.span, f"with this statement, the verifier would keep ~{total.branches} "
                           f"branches of {self.info.name} pending; the kernel stops at "
                           f"{MAX_PENDING_BRANCHES}", FEWER_PASSES)
        self.mod.costs[self.info.name] = total
        return total


FEWER_PASSES = ("run fewer passes (a smaller bound), or split the work across calls: keep where to "
                "resume in a map and do a bounded share per call")


class Cost(NamedTuple):
    insns: int      # instructions the verifier walks
    branches: int   # conditional branches it keeps pending along one path


def branches_of(n) -> int:
    """The conditional branches node `n` may add to a path: an if (or a conditional
    expression), each `and`/`or` beyond the first operand, a division or modulo by a variable
    (lowering tests a zero divisor of a signed one), and each comparison min() or max() makes."""
    if isinstance(n, (S.If, S.IfExp)):
        return 1
    if isinstance(n, S.BoolOp):
        return len(n.values) - 1
    if isinstance(n, S.BinOp) and n.op in ("//", "%") and not isinstance(n.right, S.Constant):
        return 1
    if isinstance(n, S.Call) and isinstance(n.func, S.Name) and n.func.id in ("min", "max", "abs"):
        return max(1, len(n.args) - 1)
    return 0


def touches(n, var: str) -> bool:
    """Whether node `n` may change the local `var`: assigns it, loops over it, or passes it to
    a call (a helper takes an integer variable by address)."""
    if isinstance(n, (S.Assign, S.AugAssign, S.For)):
        return isinstance(n.target, S.Name) and n.target.id == var
    return isinstance(n, S.Call) and any(isinstance(a, S.Name) and a.id == var for a in n.args)


def nodes(*roots, stop=lambda n: False):
    """Every statement and expression node under `roots`, without descending below a node
    `stop` accepts.  Iterative: a body may nest expressions deeper than Python's recursion
    limit."""
    todo = list(roots)
    while todo:
        n = todo.pop()
        yield n
        if stop(n):
            continue
        for f in fields(n):
            v = getattr(n, f.name)
            for x in v if isinstance(v, tuple) else (v,):
                if isinstance(x, (S.Expr, S.Stmt, S.Keyword)):
                    todo.append(x)


def walk(body):
    """Every statement in `body`, nested ones included."""
    todo = list(reversed(body))
    while todo:
        stmt = todo.pop()
        yield stmt
        for attr in ("orelse", "body"):
            todo.extend(reversed(getattr(stmt, attr, ())))
