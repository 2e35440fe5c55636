"""The frontend: syntax trees of accepted programs, their spans, the exact text of the diagnostics
for rejected Python, and the promise that no input raises anything but CompileError."""
import ast
import dataclasses
import linecache
import sys
import textwrap
import types

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpf_uring.compiler import syntax as S
from pybpf_uring.diagnostics import CompileError, Span
from pybpf_uring.compiler.parse import parse_function, parse_source

SPEC_EXAMPLE = '''\
from pybpf_uring import iouring, syscall, socket_filter, tracepoint
from pybpf_uring import u8, u16, u32, u64, i8, i16, i32, i64, Struct, ArrayMap, HashMap
from pybpf_uring.uring import IoUringCtx, Sqe, Cqe, queue_sqe, emit_cqe, reap_cqe

hits = ArrayMap(u64, 4)                 # module-level map declarations
MAX_ROUNDS = 20                         # module-level integer constants are folded

class Pair(Struct):                     # C layout, natural alignment
    a: u64
    b: u32[4]                           # fixed-size arrays in annotations

@iouring                                # RFC io_uring program: section "iouring.s/<name>"
def pingpong(ctx: IoUringCtx) -> i32:
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) == 0:      # out-parameters: the compiler passes address and size
        hits[0] += 1
        if cqe.user_data < MAX_ROUNDS:
            emit_cqe(ctx, 2, cqe.user_data + 1, 0, 0)
    ctx.wait_idx = 1
    ctx.wait_nr = 1
    return 0

@syscall                                # kernel BPF_PROG_TYPE_SYSCALL: section "syscall"
def add(ctx: Pair) -> i64:
    return ctx.a + ctx.b[0]
'''


def sexp(node) -> str:
    """A node as a compact s-expression, so a test states a whole tree on one line."""
    return SEXP[type(node).__name__](node) if node is not None else "None"


def _seq(nodes) -> str:
    return " ".join(sexp(n) for n in nodes)


SEXP = {
    "Constant": lambda n: repr(n.value),
    "Name": lambda n: n.id,
    "BinOp": lambda n: f"({n.op} {sexp(n.left)} {sexp(n.right)})",
    "UnaryOp": lambda n: f"({n.op} {sexp(n.operand)})",
    "BoolOp": lambda n: f"({n.op} {_seq(n.values)})",
    "Compare": lambda n: f"({sexp(n.left)} " + " ".join(f"{o} {sexp(c)}" for o, c in zip(n.ops, n.comparators)) + ")",
    "Attribute": lambda n: f"{sexp(n.value)}.{n.attr}",
    "Subscript": lambda n: f"{sexp(n.value)}[{sexp(n.index)}]",
    "Keyword": lambda n: f"{n.name}={sexp(n.value)}",
    "Call": lambda n: f"{sexp(n.func)}({_seq((*n.args, *n.keywords))})",
    "Assign": lambda n: f"(= {sexp(n.target)}{' : ' + sexp(n.annotation) if n.annotation else ''} {sexp(n.value)})",
    "AugAssign": lambda n: f"({n.op}= {sexp(n.target)} {sexp(n.value)})",
    "If": lambda n: f"(if {sexp(n.test)} [{_seq(n.body)}] [{_seq(n.orelse)}])",
    "For": lambda n: f"(for {sexp(n.target)} {sexp(n.iter)} [{_seq(n.body)}])",
    "While": lambda n: f"(while {sexp(n.test)} [{_seq(n.body)}])",
    "Break": lambda n: "break",
    "Continue": lambda n: "continue",
    "Pass": lambda n: "pass",
    "Return": lambda n: f"(return {sexp(n.value)})",
    "ExprStmt": lambda n: sexp(n.value),
    "Delete": lambda n: f"(del {sexp(n.target)})",
    "Param": lambda n: f"{n.name}:{sexp(n.annotation)}",
    "FunctionDef": lambda n: f"(def {n.name} [{_seq(n.decorators)}] ({_seq(n.params)}) -> {sexp(n.returns)} "
                             f"[{_seq(n.body)}])",
    "Field": lambda n: f"{n.name}:{sexp(n.annotation)}",
    "ClassDef": lambda n: f"(class {n.name} ({_seq(n.bases)}) [{_seq(n.fields)}])",
    "Import": lambda n: f"(import {n.module!r} {' '.join(a if a == b else f'{a}->{b}' for a, b in n.names)})",
}


def tree(text: str) -> list[str]:
    return [sexp(s) for s in parse_source(text).body]


def expr(text: str) -> str:
    (stmt,) = parse_source(f"x = {text}\n").body
    return sexp(stmt.value)


def error(text: str, path: str = "prog.py") -> str:
    with pytest.raises(CompileError) as info:
        parse_source(text, path)
    return str(info.value)


# ----- accepted programs ------------------------------------------------------------------
def test_spec_example():
    assert tree(SPEC_EXAMPLE) == [
        "(import 'pybpf_uring' iouring syscall socket_filter tracepoint)",
        "(import 'pybpf_uring' u8 u16 u32 u64 i8 i16 i32 i64 Struct ArrayMap HashMap)",
        "(import 'pybpf_uring.uring' IoUringCtx Sqe Cqe queue_sqe emit_cqe reap_cqe)",
        "(= hits ArrayMap(u64 4))",
        "(= MAX_ROUNDS 20)",
        "(class Pair (Struct) [a:u64 b:u32[4]])",
        "(def pingpong [iouring] (ctx:IoUringCtx) -> i32 [(= cqe Cqe()) "
        "(if (reap_cqe(ctx 1 cqe) == 0) [(+= hits[0] 1) (if (cqe.user_data < MAX_ROUNDS) "
        "[emit_cqe(ctx 2 (+ cqe.user_data 1) 0 0)] [])] []) (= ctx.wait_idx 1) (= ctx.wait_nr 1) (return 0)])",
        "(def add [syscall] (ctx:Pair) -> i64 [(return (+ ctx.a ctx.b[0]))])",
    ]


STATEMENTS = textwrap.dedent('''\
        import pybpf_uring as pb, pybpf_uring.uring
        from pybpf_uring import (u32,
                                 u64 as U,)
        def f(a: u32, b: u64,) -> None:
            """Docstrings are dropped."""
            x: u32 = a
            y: u64
            x = b; x += 1
            if a:
                pass
            elif b:
                return
            elif a == b:
                x = 2
            else:
                x = 3
            for i in range(0, 10, 2):
                continue
            while x < 10:
                x += 1
                break
            del m[a]
            print("x =", x, sep="")
            return x
    ''')


def test_statements():
    program = STATEMENTS
    assert tree(program) == [
        "(import '' pybpf_uring->pb pybpf_uring.uring)",
        "(import 'pybpf_uring' u32 u64->U)",
        "(def f [] (a:u32 b:u64) -> None [(= x : u32 a) (= y : u64 None) (= x b) (+= x 1) "
        "(if a [pass] [(if b [(return None)] [(if (a == b) [(= x 2)] [(= x 3)])])]) "
        "(for i range(0 10 2) [continue]) (while (x < 10) [(+= x 1) break]) (del m[a]) "
        "print('x =' x sep='') (return x)])",
    ]


@pytest.mark.parametrize("op", ["+", "-", "*", "//", "%", "&", "|", "^", "<<", ">>"])
def test_augmented_assignment(op):
    assert tree(f"x {op}= 3\n") == [f"({op}= x 3)"]


@pytest.mark.parametrize("text, want", [
    ("a + b * c << 2 & d", "(& (<< (+ a (* b c)) 2) d)"),
    ("a | b ^ c & d", "(| a (^ b (& c d)))"),
    ("a - b - c", "(- (- a b) c)"),
    ("a // b % c * d", "(* (% (// a b) c) d)"),
    ("not a == b", "(not (a == b))"),
    ("a < b <= c != d", "(a < b <= c != d)"),
    ("a is None and b is not None or c", "(or (and (a is None) (b is not None)) c)"),
    ("a or b or c", "(or a b c)"),
    ("not not a and b", "(and (not (not a)) b)"),
    ("-5", "(- 5)"),
    ("-x.y[2]", "(- x.y[2])"),
    ("~a + -b", "(+ (~ a) (- b))"),
    ("+-~1", "(+ (- (~ 1)))"),
    ("(a + b) * c", "(* (+ a b) c)"),
    ("-a * b", "(* (- a) b)"),
    ("f(a)(b).c[d]", "f(a)(b).c[d]"),
    ("a.b.c(d, e=f,)", "a.b.c(d e=f)"),
    ("m[k][j]", "m[k][j]"),
    ("a < b == (c > d)", "(a < b == (c > d))"),
])
def test_expression_precedence(text, want):
    assert expr(text) == want


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("42", 42), ("1_000_000", 1000000), ("0x_FF", 255), ("0xdead_beef", 0xDEADBEEF),
    ("0o17", 15), ("0b1010", 10), ("0", 0), ("00", 0), ("True", True), ("False", False), ("None", None),
    ("'a\\tb'", "a\tb"), ('"x" \'y\'', "xy"), ('r"\\d"', "\\d"), ('"""multi\nline"""', "multi\nline"),
    ("u'x'", "x"),
])
def test_literals(text, value):
    (stmt,) = parse_source(f"x = {text}\n").body
    assert type(stmt.value) is S.Constant and stmt.value.value == value and type(stmt.value.value) is type(value)


def test_continuation_lines_comments_and_blank_lines():
    program = "# leading comment\n\nx = (1 +   # inside brackets\n     2)\ny = 3 + \\\n    4\n\n\n# trailing\n"
    assert tree(program) == ["(= x (+ 1 2))", "(= y (+ 3 4))"]


def test_decorators_keep_their_expressions():
    program = ('@syscall\ndef a(ctx: X) -> i32:\n    return 0\n'
               '@tracepoint("io_uring/io_uring_complete")\ndef b(ctx: X) -> i32:\n    return 0\n'
               '@pybpf_uring.syscall\ndef c(ctx: X) -> i32:\n    return 0\n')
    decorators = [d.decorators for d in parse_source(program).body]
    assert [[sexp(x) for x in ds] for ds in decorators] == [
        ["syscall"], ["tracepoint('io_uring/io_uring_complete')"], ["pybpf_uring.syscall"]]
    assert [type(ds[0]).__name__ for ds in decorators] == ["Name", "Call", "Attribute"]


def test_struct_body_with_docstring_and_pass():
    assert tree('class A(Struct):\n    """Doc."""\n    x: u8\n    pass\n    y: u16[2][3]\n') == \
        ["(class A (Struct) [x:u8 y:u16[2][3]])"]
    assert tree("class E(Struct):\n    pass\n") == ["(class E (Struct) [])"]


def test_module_docstring_is_dropped_and_main_block_skipped():
    program = '"""A module."""\nX = 1\n\nif __name__ == "__main__":\n    print(f"{[i for i in range(3)]}")\n' \
              '    with open("f") as f:\n        pass\n'
    assert tree(program) == ["(= X 1)"]


def test_main_block_in_invalid_python_is_still_skipped():
    program = "X = 1 +\nif __name__ == '__main__':\n    run()\n"
    assert error(program) == "prog.py:1:8: error: invalid syntax: unexpected end of line\n" \
                             "X = 1 +\n       ^\n  note: expected an expression"


# ----- spans --------------------------------------------------------------------------------
def spans(node) -> tuple:
    s = node.span
    return s.line, s.col, s.end_line, s.end_col


def test_spans_of_statements_and_expressions():
    """Every span agrees with Python's own ast (1-based columns, end exclusive)."""
    m = parse_source(SPEC_EXAMPLE, "spec.py")
    imp, _, _, hits, const, pair, pingpong, add = m.body
    assert spans(imp) == (1, 1, 1, 68)
    assert spans(hits) == (5, 1, 5, 24) and spans(hits.value) == (5, 8, 5, 24)
    assert spans(const.value) == (6, 14, 6, 16)
    assert spans(pair) == (8, 1, 10, 14) and [spans(f) for f in pair.fields] == [(9, 5, 9, 11), (10, 5, 10, 14)]
    assert spans(pair.fields[1].annotation) == (10, 8, 10, 14)
    assert spans(pingpong) == (13, 1, 21, 13)  # from `def`, not the decorator
    assert spans(pingpong.decorators[0]) == (12, 2, 12, 9)
    assert spans(pingpong.params[0]) == (13, 14, 13, 29) and spans(pingpong.returns) == (13, 34, 13, 37)
    assign, if_, *_ = pingpong.body
    assert spans(assign) == (14, 5, 14, 16) and spans(assign.value) == (14, 11, 14, 16)
    assert spans(if_) == (15, 5, 18, 54)
    assert spans(if_.test) == (15, 8, 15, 34) and spans(if_.test.left) == (15, 8, 15, 29)
    aug, inner = if_.body
    assert spans(aug) == (16, 9, 16, 21) and spans(aug.target) == (16, 9, 16, 16)
    call = inner.body[0].value
    assert spans(call) == (18, 13, 18, 54) and spans(call.args[2]) == (18, 30, 18, 47)
    ret = add.body[0]
    assert spans(ret.value) == (25, 12, 25, 28)
    assert spans(ret.value.right) == (25, 20, 25, 28) and spans(ret.value.right.value) == (25, 20, 25, 25)
    assert m.source.path == "spec.py" and ret.span.source is m.source


def _nodes(node):
    """Every node below `node` (tuples of nodes included)."""
    if isinstance(node, tuple):
        for item in node:
            yield from _nodes(item)
    elif dataclasses.is_dataclass(node) and not isinstance(node, Span):
        yield node
        for f in dataclasses.fields(node):
            yield from _nodes(getattr(node, f.name))


def _text(span) -> str:
    lines = span.source.text.split("\n")[span.line - 1:span.end_line]
    lines[-1] = lines[-1][:span.end_col - 1]
    lines[0] = lines[0][span.col - 1:]
    return "\n".join(lines)


EXPRESSIONS = "x = not (a + -b) * f(c, d=e)[0].g << 2\ny = a * (b + c) - (d) | ((e)) and (f) < (g)\n" \
              "z = (a)(b)[(c)].d\n"


@pytest.mark.parametrize("program", [SPEC_EXAMPLE + EXPRESSIONS, STATEMENTS], ids=["expressions", "statements"])
def test_every_span_is_pythons_and_covers_exactly_its_text(program):
    """Each node's span is the span Python's ast gives the same construct, and the text under
    an expression's span parses back to that expression."""
    m = parse_source(program)
    python = {(n.lineno, n.col_offset + 1, n.end_lineno, n.end_col_offset + 1)
              for n in ast.walk(ast.parse(m.source.text)) if hasattr(n, "end_col_offset")}
    for node in _nodes(m.body):
        assert spans(node) in python, (node, _text(node.span))
    for e in (n for n in _nodes(m.body) if isinstance(n, S.Expr)):
        text = _text(e.span)
        assert sexp(e) == sexp(parse_source(f"x = ({text})\n").body[0].value), text


def test_elif_spans_start_at_elif():
    (if_,) = parse_source("if a:\n    pass\nelif b:\n    x = 1\nelse:\n    y = 2\n").body
    assert spans(if_) == (1, 1, 6, 10) and spans(if_.orelse[0]) == (3, 1, 6, 10)


def test_first_line_offsets_spans():
    m = parse_source("x = 1\ny = z\n", "big.py", first_line=40)
    assert spans(m.body[1].value) == (41, 5, 41, 6)
    assert error("x = 1\ny = 1 / 2\n", "big.py") .startswith("big.py:2:5")
    with pytest.raises(CompileError) as info:
        parse_source("x = 1\ny = 1 / 2\n", "big.py", first_line=40)
    assert str(info.value) == "big.py:41:5: error: true division is not available in BPF programs; " \
                              "use // for integer division\ny = 1 / 2\n    ^~~~~"


def test_windows_line_ends_and_a_byte_order_mark():
    assert tree("\ufeffx = 1\r\nif x:\r\n    y = 2\r\n") == ["(= x 1)", "(if x [(= y 2)] [])"]
    assert error("x = 1\r\ny = 1 / 2\r\n").startswith("prog.py:2:5: error: true division")


# ----- rejected Python: exact diagnostics ---------------------------------------------------
REJECTED = {
    "true_division": (
        "def f(a: i64, b: i64) -> i64:\n    return a / b\n",
        "prog.py:2:12: error: true division is not available in BPF programs; use // for integer division\n"
        "    return a / b\n           ^~~~~"),
    "float": (
        "X = 1.5\n",
        "prog.py:1:5: error: float literals are not available in BPF programs; BPF has integers only\n"
        "X = 1.5\n    ^~~"),
    "float_exponent": (
        "X = 1e-3\n",
        "prog.py:1:5: error: float literals are not available in BPF programs; BPF has integers only\n"
        "X = 1e-3\n    ^~~~"),
    "leading_zero": (
        "X = 012\n",
        "prog.py:1:5: error: leading zeros in decimal integer literals are not allowed; use 0o for octal, "
        "or remove the zeros\nX = 012\n    ^~~"),
    "lambda": (
        "f = lambda x: x\n",
        "prog.py:1:5: error: lambda is not available in BPF programs; define a function at module level\n"
        "f = lambda x: x\n    ^~~~~~~~~~~"),
    "dict": (
        "d = {}\n",
        "prog.py:1:5: error: dict literals are not available in BPF programs; use a HashMap declared at module "
        "level\nd = {}\n    ^~"),
    "set": (
        "s = {1}\n",
        "prog.py:1:5: error: set literals are not available in BPF programs; use a HashMap declared at module "
        "level\ns = {1}\n    ^~~"),
    "list_comprehension": (
        "a = [i for i in range(4) if i]\n",
        "prog.py:1:5: error: list comprehensions are not available in BPF programs; use a for loop over "
        "range(...)\na = [i for i in range(4) if i]\n    ^~~~~~~~~~~~~~~~~~~~~~~~~~"),
    "generator_argument": (
        "t = sum(i for i in range(4))\n",
        "prog.py:1:9: error: generator expressions are not available in BPF programs; use a for loop over "
        "range(...)\nt = sum(i for i in range(4))\n        ^~~~~~~~~~~~~~~~~~~"),
    "with": (
        "def f():\n    with lock:\n        pass\n",
        "prog.py:2:5: error: with statements are not available in BPF programs; call the functions directly\n"
        "    with lock:\n    ^"),
    "try": (
        "try:\n    f()\nexcept E:\n    pass\n",
        "prog.py:1:1: error: try statements are not available in BPF programs (there are no exceptions); "
        "check return values\ntry:\n^"),
    "yield": (
        "def f():\n    yield 1\n",
        "prog.py:2:5: error: yield is not available in BPF programs; a function returns one value\n"
        "    yield 1\n    ^~~~~~~"),
    "async_def": (
        "async def f():\n    pass\n",
        "prog.py:1:1: error: async functions are not available in BPF programs; use def\nasync def f():\n^"),
    "await": (
        "def f():\n    x = await g()\n",
        "prog.py:2:9: error: await is not available in BPF programs; call helpers directly\n"
        "    x = await g()\n        ^~~~~~~~~"),
    "nonlocal": (
        "def f():\n    nonlocal X\n",
        "prog.py:2:5: error: nonlocal is not available in BPF programs; pass values as arguments\n"
        "    nonlocal X\n    ^~~~~~~~~~"),
    "star_args": (
        "def f(*args: u32):\n    pass\n",
        "prog.py:1:7: error: star parameters (*args) are not available in BPF programs; declare each parameter "
        "with its type\ndef f(*args: u32):\n      ^~~~~~~~~~"),
    "kwargs": (
        "def f(**kw):\n    pass\n",
        "prog.py:1:7: error: keyword parameters (**kwargs) are not available in BPF programs; declare each "
        "parameter with its type\ndef f(**kw):\n      ^~~~"),
    "star_call": (
        "f(*xs)\n",
        "prog.py:1:3: error: argument unpacking (*args) is not available in BPF programs; pass each argument\n"
        "f(*xs)\n  ^~~"),
    "default_value": (
        "def f(a: u32 = 1):\n    pass\n",
        "prog.py:1:16: error: default parameter values are not available in BPF programs; pass every argument "
        "at the call\ndef f(a: u32 = 1):\n               ^"),
    "tuple_unpacking": (
        "a, b = f()\n",
        "prog.py:1:1: error: tuple unpacking assignment is not available in BPF programs; assign one name at a "
        "time\na, b = f()\n^~~~~~~~~~"),
    "chained_assignment": (
        "a = b = 1\n",
        "prog.py:1:1: error: chained assignment (a = b = ...) is not available in BPF programs; assign each "
        "name in its own statement\na = b = 1\n^~~~~~~~~"),
    "walrus": (
        "if (n := f()):\n    pass\n",
        "prog.py:1:5: error: assignment expressions (:=) are not available in BPF programs; assign in a "
        "statement first\nif (n := f()):\n    ^~~~~~~~"),
    "in": (
        "x = k in m\n",
        "prog.py:1:7: error: the in operator is not available in BPF programs; compare with ==, or look the "
        "key up in a map\nx = k in m\n      ^~"),
    "not_in": (
        "x = k not in m\n",
        "prog.py:1:7: error: the not in operator is not available in BPF programs; compare with !=, or look "
        "the key up in a map\nx = k not in m\n      ^~~~~~"),
    "power": (
        "x = 2 ** n\n",
        "prog.py:1:5: error: the power operator (**) is not available in BPF programs; multiply, or shift left "
        "for powers of two\nx = 2 ** n\n    ^~~~~~"),
    "matmul": (
        "x = a @ b\n",
        "prog.py:1:5: error: matrix multiplication (@) is not available in BPF programs; use * to multiply "
        "integers\nx = a @ b\n    ^~~~~"),
    "slice": (
        "x = a[1:3]\n",
        "prog.py:1:7: error: slices are not available in BPF programs; index one element at a time\n"
        "x = a[1:3]\n      ^~~"),
    "fstring": (
        'print(f"x = {x}")\n',
        'prog.py:1:7: error: f-strings are not available in BPF programs; pass the values to print as '
        'arguments: print("x =", x)\nprint(f"x = {x}")\n      ^~~~~~~~~~'),
    "while_else": (
        "while x:\n    pass\nelse:\n    pass\n",
        "prog.py:3:1: error: else: on a loop is not available in BPF programs; set a flag before break and "
        "test it after the loop\nelse:\n^"),
    "nested_def": (
        "def f():\n    if x:\n        def g():\n            pass\n",
        "prog.py:3:9: error: nested functions are not available in BPF programs; define it at module level\n"
        "        def g():\n        ^"),
    "return_tuple": (
        "def f():\n    return a, b\n",
        "prog.py:2:12: error: returning several values is not available in BPF programs; return one integer, "
        "or fill a Struct passed in\n    return a, b\n           ^~~~"),
    "true_division_assign": (
        "x /= 2\n",
        "prog.py:1:3: error: true division (/=) is not available in BPF programs; use //= for integer "
        "division\nx /= 2\n  ^~"),
    "struct_method": (
        "class P(Struct):\n    x: u32\n    def m(self):\n        pass\n",
        "prog.py:3:5: error: methods are not available in Struct classes\n    def m(self):\n    ^\n"
        "  note: define a module-level function that takes the struct as a parameter"),
    "struct_default": (
        "class P(Struct):\n    x: u32 = 5\n",
        "prog.py:2:14: error: struct fields cannot have default values; a new struct is all zeros\n"
        "    x: u32 = 5\n             ^"),
    "multi_index": (
        "x = m[1, 2]\n",
        "prog.py:1:7: error: subscripts with several indexes are not available in BPF programs; index one at "
        "a time: x[a][b]\nx = m[1, 2]\n      ^~~~"),
    "tuple": (
        "x = (1, 2)\n",
        "prog.py:1:5: error: tuples are not available in BPF programs; use separate variables or a Struct\n"
        "x = (1, 2)\n    ^~~~~~"),
    "star_import": (
        "from pybpf_uring import *\n",
        "prog.py:1:25: error: star imports are not available in BPF modules; import each name: from pybpf_uring "
        "import u32\nfrom pybpf_uring import *\n                        ^"),
    "assert": (
        "assert x\n",
        "prog.py:1:1: error: assert is not available in BPF programs; test with if and return an error code\n"
        "assert x\n^~~~~~~~"),
    "bytes": (
        "x = b'\\x00'\n",
        "prog.py:1:5: error: bytes literals are not available in BPF programs; use a string or an integer "
        "array\nx = b'\\x00'\n    ^~~~~~~"),
    "assign_to_call": (
        "f() = 1\n",
        "prog.py:1:1: error: cannot assign to a function call\nf() = 1\n^~~\n"
        "  note: assign to a name, a field (s.x) or an element (a[i])"),
}


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_construct_has_an_exact_diagnostic(name):
    text, want = REJECTED[name]
    assert error(text) == want


def test_every_rejection_in_a_program_is_reported():
    text = "def f(a=1):\n    x = 1.0\n    return a / b\n"
    assert [d.span.line for d in _diagnostics(text)] == [1, 2, 3]


def _diagnostics(text: str):
    with pytest.raises(CompileError) as info:
        parse_source(text)
    return info.value.diagnostics


# ----- generic syntax errors ----------------------------------------------------------------
SYNTAX_ERRORS = {
    "missing_colon": (
        "if x\n    pass\n",
        "prog.py:1:5: error: invalid syntax: unexpected end of line\nif x\n    ^\n  note: expected ':'"),
    "unclosed_bracket": (
        "x = f(1,\n      2\n",
        "prog.py:1:6: error: invalid syntax: '(' was never closed\nx = f(1,\n     ^"),
    "unterminated_string": (
        "print('abc)\n",
        "prog.py:1:7: error: invalid syntax: unterminated string literal\nprint('abc)\n      ^\n"
        "  note: close the string on the same line, or use triple quotes"),
    "unterminated_docstring": (
        'def f():\n    """Never closed.\n    return 1\n',
        'prog.py:2:5: error: invalid syntax: unterminated triple-quoted string literal\n'
        '    """Never closed.\n    ^\n  note: close it with """'),
    "unexpected_indent": (
        "x = 1\n    y = 2\n",
        "prog.py:2:1: error: invalid syntax: unexpected indent\n    y = 2\n^\n"
        "  note: indent only the body of a def, class, if, for or while"),
    "indented_first_line": (
        "  x = 1\n",
        "prog.py:1:1: error: invalid syntax: unexpected indent\n  x = 1\n^\n"
        "  note: indent only the body of a def, class, if, for or while"),
    "missing_block": (
        "def f():\nreturn 1\n",
        "prog.py:2:1: error: invalid syntax: expected an indented block\nreturn 1\n^~~~~~\n"
        "  note: indent the body of a def, class, if, for or while by 4 spaces"),
    "bad_dedent": (
        "if x:\n        a = 1\n    b = 2\n",
        "prog.py:3:5: error: invalid syntax: unindent does not match any outer indentation level\n"
        "    b = 2\n    ^\n  note: indent each line of a block by the same amount"),
    "two_values": (
        "x = 5 5\n",
        "prog.py:1:7: error: invalid syntax: unexpected number 5\nx = 5 5\n      ^\n"
        "  note: expected an operator, the end of the line, ',' or '='"),
    "dangling_operator": (
        "x = 1 +\n",
        "prog.py:1:8: error: invalid syntax: unexpected end of line\nx = 1 +\n       ^\n"
        "  note: expected an expression"),
    "bad_character": (
        "x = a $ b\n",
        "prog.py:1:7: error: invalid syntax: invalid character '$'\nx = a $ b\n      ^\n"
        "  note: programs are written with Python's operators, names and literals"),
    "assignment_in_condition": (
        "if x = 1:\n    pass\n",
        "prog.py:1:6: error: invalid syntax: unexpected '='\nif x = 1:\n     ^\n"
        "  note: expected ':'; to compare, write =="),
    "else_if": (
        "if x:\n    pass\nelse if y:\n    pass\n",
        "prog.py:3:6: error: invalid syntax: unexpected 'if'\nelse if y:\n     ^~\n"
        "  note: expected ':'; for another condition, write elif"),
    "python2_print": (
        'print "x"\n',
        "prog.py:1:7: error: invalid syntax: unexpected string \"x\"\nprint \"x\"\n      ^~~\n"
        "  note: expected an operator, the end of the line, ':', ',' or '='; print is a function: print(...)"),
    "match_statement": (
        "match x:\n    case 1:\n        pass\n",
        "prog.py:1:7: error: invalid syntax: unexpected name 'x'\nmatch x:\n      ^\n"
        "  note: expected an operator, the end of the line, ':', ',' or '='; match statements are not available "
        "in BPF programs, use if/elif"),
    "keyword_as_name": (
        "def if(): pass\n",
        "prog.py:1:5: error: invalid syntax: unexpected 'if'\ndef if(): pass\n    ^~\n  note: expected a name"),
}


@pytest.mark.parametrize("name", SYNTAX_ERRORS)
def test_syntax_error_has_an_exact_diagnostic(name):
    text, want = SYNTAX_ERRORS[name]
    assert error(text) == want


# ----- parse_function -----------------------------------------------------------------------
SCRIPT = '''\
from pybpf_uring import syscall, Struct, ArrayMap, i32, u32, u64
import os

hits = ArrayMap(u64, 4)
UNUSED = [1, 2, 3]

class Pair(Struct):
    a: u64

def helper(x: u64) -> u64:
    return x + LIMIT

LIMIT = 7

@syscall
def add(ctx: Pair) -> i32:
    hits[0] += 1
    return helper(ctx.a)

obj = add.compile()
with open(os.devnull, "w") as f:
    print(f"{obj!r}", file=f)
'''


def test_parse_function_in_a_script_keeps_what_the_program_reaches(tmp_path, monkeypatch):
    path = tmp_path / "script_mod.py"
    path.write_text(SCRIPT.replace("obj = add.compile()", "obj = None"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("script_mod")
    try:
        m = parse_function(module.add)
    finally:
        sys.modules.pop("script_mod", None)
    assert [sexp(s) for s in m.body] == [
        "(import 'pybpf_uring' syscall Struct ArrayMap i32 u32 u64)",
        "(= hits ArrayMap(u64 4))",
        "(class Pair (Struct) [a:u64])",
        "(def helper [] (x:u64) -> u64 [(return (+ x LIMIT))])",
        "(= LIMIT 7)",
        "(def add [syscall] (ctx:Pair) -> i32 [(+= hits[0] 1) (return helper(ctx.a))])",
    ]
    assert m.source.path == str(path) and m.environment is module.__dict__
    assert spans(m.body[-1]) == (16, 1, 18, 25) and m.source.line(17) == "    hits[0] += 1"


def test_parse_function_in_a_script_with_a_star_import(tmp_path, monkeypatch):
    path = tmp_path / "star_mod.py"
    path.write_text("from pybpf_uring import *\n\n@syscall\ndef p(ctx: u64) -> i32:\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("star_mod")
    try:
        m = parse_function(module.p)
    finally:
        sys.modules.pop("star_mod", None)
    assert [sexp(s) for s in m.body] == ["(def p [syscall] (ctx:u64) -> i32 [(return 0)])"]


def _cell_function(cell: str, name: str, filename: str = "<ipython-input-3-0123456789ab>"):
    """Run `cell` as IPython does: compiled under a fake file name that linecache knows."""
    linecache.cache[filename] = (len(cell), None, cell.splitlines(keepends=True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(cell, filename, "exec"), namespace)
    return namespace[name], namespace


def test_parse_function_in_a_notebook_cell():
    cell = ("from pybpf_uring import syscall, i32\nimport pybpf_uring.types as T\n\n"
            "def clamp(x: i32) -> i32:\n    return x\n\n"
            "@syscall\ndef prog(ctx: T.Struct) -> i32:\n    return clamp(1 // 2)\n\nobj = [x for x in range(3)]\n")
    prog, namespace = _cell_function(cell, "prog")
    m = parse_function(prog)
    assert [sexp(s) for s in m.body] == ["(def clamp [] (x:i32) -> i32 [(return x)])",
                                         "(def prog [syscall] (ctx:T.Struct) -> i32 [(return clamp((// 1 2)))])"]
    assert m.environment is namespace and m.source.first_line == 7
    assert spans(m.body[1].body[0].value.args[0]) == (9, 18, 9, 24)


def test_parse_function_indented_in_a_cell_keeps_its_columns():
    cell = "if True:\n    from pybpf_uring import syscall, i32\n    @syscall\n    def p(ctx: i32) -> i32:\n" \
           "        return 1 / 2\n"
    prog, _ = _cell_function(cell, "p", "/tmp/ipykernel_1234/567.py")
    with pytest.raises(CompileError) as info:
        parse_function(prog)
    assert str(info.value) == ("/tmp/ipykernel_1234/567.py:5:16: error: true division is not available in BPF "
                               "programs; use // for integer division\n        return 1 / 2\n               ^~~~~")


def test_parse_function_without_source():
    fn = types.FunctionType(compile("def f(): pass", "<nowhere>", "exec").co_consts[0], {})
    with pytest.raises(CompileError) as info:
        parse_function(fn)
    assert str(info.value) == "error: cannot find the source of f\n  note: define it in a file or a notebook cell"


# ----- never a traceback ---------------------------------------------------------------------
PIECES = ["def", "class", "if", "else", "elif", "for", "while", "in", "range", "return", "(", ")", "[", "]",
          "{", "}", ":", ",", ".", "=", "+=", "/", "//", "**", "@", "-", "~", "not", "and", "is", "x", "y1",
          "0x1f", "1.5", "07", "'s'", 'f"{x}"', '"""', "#c", "\\", "\n", "\n    ", "\n\t", " ", "lambda",
          "yield", "with", "as", "async", "await", "*", "import", "from", "del", "pass", ";", "\r\n", "\x00", "é"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_token_soup_only_raises_compile_error(pieces):
    _parse_or_compile_error("".join(pieces))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_random_text_only_raises_compile_error(text):
    _parse_or_compile_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_programs_only_raise_compile_error(data):
    text = SPEC_EXAMPLE
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + data.draw(st.sampled_from(PIECES + [""])) + text[j:]
    _parse_or_compile_error(text)


def _parse_or_compile_error(text: str) -> None:
    try:
        m = parse_source(text, "fuzz.py")
    except CompileError as e:
        assert e.diagnostics and all(d.render() for d in e.diagnostics)
    else:
        assert isinstance(m, S.Module)


# ----- speed -------------------------------------------------------------------------------
def test_parser_tables_are_built_once_and_cached_on_disk(tmp_path, monkeypatch):
    """The second process start loads the LALR tables from the cache file instead of building
    them (building takes longer than a whole cold compile may)."""
    from lark.parsers.lalr_analysis import LALR_Analyzer

    from pybpf_uring.compiler import parse
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parse._lark.cache_clear()
    try:
        parse_source("x = 1\n")  # builds the tables and writes them to the cache
        (cached,) = (tmp_path / "pybpf_uring").iterdir()
        parse._lark.cache_clear()

        def no_construction(self):
            raise AssertionError("the LALR tables were built again instead of loaded from the cache")
        monkeypatch.setattr(LALR_Analyzer, "compute_lalr", no_construction)
        assert tree(SPEC_EXAMPLE)  # loads them back
    finally:
        parse._lark.cache_clear()
    assert cached.stat().st_size > 0


def test_an_unwritable_cache_directory_still_parses(tmp_path, monkeypatch):
    from pybpf_uring.compiler import parse
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file where a directory should be
    parse._lark.cache_clear()
    try:
        assert tree("x = 1\n") == ["(= x 1)"]
    finally:
        parse._lark.cache_clear()
