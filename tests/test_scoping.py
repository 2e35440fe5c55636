"""Names inside a function follow Python's scopes: a name the function binds (a parameter, an
assignment, a loop variable) is its own variable everywhere in it, even where the module (or a
notebook's leftovers) has a constant, map, type or function of that name.  Each program runs in
the kernel through test_run, compiled every way a user compiles one: from source text, from a
file, a decorated function of an imported file, and a function defined in a notebook cell."""
from __future__ import annotations

import importlib.util

import pytest

from pybpf_uring import CompileError, compile_file, compile_source

SHADOWS = '''
from pybpf_uring import syscall, Struct, i32, u64

x = 1
y = 100
n = 3
ctx = 7
seen: u64 = 0


class A(Struct):
    a: u64
    b: u64


def twice(x: u64) -> u64:          # the parameter x, not the module's x = 1
    return x * 2


def total(ctx: A, n: u64) -> u64:  # the program's ctx passed down, and a parameter n
    return ctx.a + ctx.b * n


def bump(seen: u64) -> u64:        # the parameter, not the global
    seen += 10
    return seen


@syscall
def param(ctx: A) -> i32:
    return twice(ctx.a)


@syscall
def local(ctx: A) -> i32:
    y = ctx.a * 3                  # a local y hides the module's y = 100 in all of local()
    y += x                         # x is not bound here: still the module's 1
    for i in range(n):             # and so is n (3)
        y += i
    return y


@syscall
def own_ctx(ctx: A) -> i32:
    return total(ctx, ctx.b)


@syscall
def global_param(ctx: A) -> i32:
    seen += 1                      # a program writes a module global by assigning it
    return bump(ctx.a)
'''

# a = 20, b = 5: what each program returns when every name means what Python says it means
EXPECTED = {"param": 40, "local": 20 * 3 + 1 + 0 + 1 + 2, "own_ctx": 20 + 5 * 5, "global_param": 30}


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _objects(how: str, tmp_path):
    """(program name → the object that holds it, the host's Struct A) for one way of compiling."""
    path = tmp_path / "shadows.py"
    path.write_text(SHADOWS)
    module = _import(path, f"shadows_{how}")
    if how == "compile_source":
        obj = compile_source(SHADOWS, "shadows.py")
        return dict.fromkeys(EXPECTED, obj), module.A
    if how == "compile_file":
        obj = compile_file(path)
        return dict.fromkeys(EXPECTED, obj), module.A
    return {name: getattr(module, name).compile() for name in EXPECTED}, module.A


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["compile_source", "compile_file", "decorated function"])
def test_parameters_and_locals_hide_module_names_in_the_kernel(how, tmp_path):
    objects, A = _objects(how, tmp_path)
    for name, want in EXPECTED.items():
        with objects[name].load() as live:
            assert live.programs[name].test_run(ctx=A(a=20, b=5)).retval == want, name
            if name == "global_param":
                assert live.globals.seen == 1   # the global, written once; bump's seen was its own


@pytest.mark.kernel
def test_a_notebook_parameter_hides_a_leftover_constant():
    """The report: a notebook where an earlier cell left `x = 1` behind."""
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.reset()
    try:
        for cell in ("x = 1", SHADOWS.replace("\nx = 1\n", "\n"), '''
obj = param.compile()
with obj.load() as live:
    value = live.programs["param"].test_run(ctx=A(a=20, b=5)).retval
'''):
            result = shell.run_cell(cell, store_history=True)
            assert result.success, result.error_in_exec or result.error_before_exec
        assert shell.user_ns["value"] == 40
    finally:
        shell.reset()
        InteractiveShell.clear_instance()


def _error(src: str) -> str:
    with pytest.raises(CompileError) as e:
        compile_source(src, "prog.py")
    return str(e.value)


HEAD = '''from pybpf_uring import syscall, Struct, i32, u64
x = 1
class A(Struct):
    a: u64
def twice(v: u64) -> u64:
    return v * 2
'''


def test_reading_a_local_before_its_assignment_says_the_module_name_is_hidden():
    assert _error(HEAD + '''@syscall
def f(ctx: A) -> i32:
    y = x + 1
    x = ctx.a
    return x + y
''') == (
        "prog.py:9:9: error: 'x' is used before it is assigned\n"
        "    y = x + 1\n"
        "        ^\n"
        "  note: 'x' is assigned in f, so it is f's local variable everywhere in f, as in Python, "
        "and hides the module-level constant 'x'; give the local another name")


def test_calling_a_local_that_hides_a_function_is_an_error():
    assert _error(HEAD + '''@syscall
def f(ctx: A) -> i32:
    twice = ctx.a
    return twice(twice)
''') == (
        "prog.py:10:12: error: 'twice' is a local variable of f; it cannot be called\n"
        "    return twice(twice)\n"
        "           ^~~~~\n"
        "  note: 'twice' is assigned in f, so it is f's local variable everywhere in f, as in Python, "
        "and hides the module-level function 'twice'; give the local another name")


def test_a_parameter_is_no_loop_bound_even_where_a_constant_has_its_name():
    """`range(x)` over a parameter x is a runtime count, whatever the module's x is."""
    assert _error(HEAD + '''def g(x: u64) -> u64:
    t: u64 = 0
    for i in range(x):
        t += i
    return t
@syscall
def f(ctx: A) -> i32:
    return g(ctx.a)
''') == (
        "prog.py:9:20: error: the loop bound must be a constant the compiler can prove\n"
        "    for i in range(x):\n"
        "                   ^\n"
        "  note: loop to a constant maximum and stop early: `for i in range(MAX):` with `if i >= x: break`")


def test_a_type_name_used_as_a_local_cannot_cast():
    assert _error(HEAD + '''@syscall
def f(ctx: A) -> i32:
    u64 = ctx.a
    return u64(u64)
''') == (
        "prog.py:10:12: error: 'u64' is a local variable of f; it cannot be called\n"
        "    return u64(u64)\n"
        "           ^~~\n"
        "  note: 'u64' is assigned in f, so it is f's local variable everywhere in f, as in Python, "
        "and hides the module-level type 'u64'; give the local another name")


def test_a_struct_name_used_as_a_local_is_no_type_for_sizeof():
    """sizeof's argument is an expression in the function, so the local is what it names; the
    error is said once, though the checker folds the expression more than once."""
    assert _error(HEAD.replace("u64\n", "u64, sizeof\n", 1) + '''@syscall
def f(ctx: A) -> i32:
    A = ctx.a
    return sizeof(A)
''') == (
        "prog.py:10:19: error: 'A' is not a type\n"
        "    return sizeof(A)\n"
        "                  ^\n"
        "  note: 'A' is a local variable here, which hides the module's 'A'; rename the local")


HOST_HELPER = '''
from pybpf_uring import syscall, Struct, i32, u64


class A(Struct):
    a: u64
    b: u64


def count(items):                  # host code, outside the BPF subset
    return len([i for i in items if i])


@syscall
def counted(ctx: A) -> i32:
    count = ctx.a + 1              # a local: the host function is not a subprogram
    return count
'''


@pytest.mark.kernel
def test_a_local_named_like_a_host_function_leaves_the_function_out(tmp_path):
    """A script's program compiles without the host function its local happens to share a
    name with (which is not BPF code and would not compile), in a file and in a notebook."""
    path = tmp_path / "script.py"
    path.write_text(HOST_HELPER)
    module = _import(path, "host_helper")
    with module.counted.compile().load() as live:
        assert live.programs["counted"].test_run(ctx=module.A(a=41, b=0)).retval == 42

    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.reset()
    try:
        for cell in (HOST_HELPER, '''
with counted.compile().load() as live:
    value = live.programs["counted"].test_run(ctx=A(a=41, b=0)).retval
'''):
            result = shell.run_cell(cell, store_history=True)
            assert result.success, result.error_in_exec or result.error_before_exec
        assert shell.user_ns["value"] == 42
    finally:
        shell.reset()
        InteractiveShell.clear_instance()


def test_a_loop_variable_cannot_be_a_global():
    """Assigning an annotated global writes it; a loop variable is always a local, so one
    named like a global is refused rather than silently hiding it."""
    assert _error(HEAD + '''seen: u64 = 0
@syscall
def f(ctx: A) -> i32:
    for seen in range(3):
        pass
    return 0
''') == (
        "prog.py:10:9: error: the loop variable 'seen' is a module-level global\n"
        "    for seen in range(3):\n"
        "        ^~~~\n"
        "  note: a loop variable is a local; give it another name (assign the global after the loop)")
