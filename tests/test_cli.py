"""The `pybpf-uring` command as a user runs it (`python -m pybpf_uring ...` in a subprocess): what it
prints, writes and exits with.  `run FILE ARGS` is `python FILE ARGS` for a script; every sample
also runs under both in tests/test_samples.py, with the same assertions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from probes import CLANG, OBJDUMP

from pybpf_uring import compile_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
PACKET_STATS = os.path.join(SAMPLES, "packet_stats.py")
BENCH_PROGRAMS = os.path.join(ROOT, "bench", "programs.py")

ENGINE_ONLY = "runs in the engine (Ring), not loadable by this kernel"

HELLO = '''
from pybpf_uring import iouring, ArrayMap, i32, u64
from pybpf_uring.uring import IoUringCtx, Cqe, emit_cqe, reap_cqe

hits = ArrayMap(u64, 2)

@iouring
def hello(ctx: IoUringCtx) -> i32:
    emit_cqe(ctx, 1, ctx.user_data + 1, 7, 0)
    cqe = Cqe()
    if reap_cqe(ctx, 1, cqe) == 0:
        hits[0] += cqe.user_data
    emit_cqe(ctx, 2, 99, 0, 0)
    return 0
'''

KERNEL_ONLY = ("from pybpf_uring import syscall, Struct, i32, u64\n\nclass A(Struct):\n"
               "    a: u64\n\n@syscall\ndef f(ctx: A) -> i32:\n    return 0\n")


BAD = "from pybpf_uring import syscall, i32\n\n@syscall\ndef f(ctx) -> i32:\n    return 1 / 2\n"


def cli(*args, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pybpf_uring", *args], capture_output=True, text=True,
                          cwd=cwd, **kwargs)


def python(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --- compile, disasm, check, verify ---------------------------------------------------------------
def test_cli_compile_writes_the_object_and_dumps_stages(tmp_path):
    out = tmp_path / "p.o"
    run = cli("compile", PACKET_STATS, "-o", str(out), "--dump", "ir", "--dump", "asm")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == compile_file(PACKET_STATS).elf
    assert "define i32 @\"stats\"" in run.stdout and "<stats>:" in run.stdout


@pytest.mark.tools("objdump")
@pytest.mark.kernel
def test_cli_disasm_check_and_verify(tmp_path):
    run = cli("disasm", PACKET_STATS)
    assert run.returncode == 0 and run.stdout == compile_file(PACKET_STATS).disasm()
    obj_path = tmp_path / "p.o"
    compile_file(PACKET_STATS).write(obj_path)
    ours = cli("disasm", "-r", str(obj_path)).stdout
    assert ours == subprocess.run([OBJDUMP, "-dr", str(obj_path)], capture_output=True, text=True).stdout
    with_source = cli("disasm", "-S", PACKET_STATS).stdout
    assert "; sizes[b] += 1" in with_source and "<log2>:" in with_source
    assert with_source == compile_file(PACKET_STATS).disasm(source=True)   # one text, CLI and API
    run = cli("check", BENCH_PROGRAMS)
    assert run.returncode == 0 and "arith (syscall)" in run.stdout
    run = cli("verify", PACKET_STATS)
    assert (run.returncode, run.stdout) == (0, "stats: verified\n")


def test_cli_exit_status_for_errors_and_bad_usage(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    run = cli("compile", str(bad))
    assert run.returncode == 1
    assert run.stderr.startswith(f"{bad}:5:12: error: true division is not available")
    assert "Traceback" not in run.stderr
    assert cli("compile").returncode == 2
    assert cli("frobnicate", "x.py").returncode == 2
    garbage = tmp_path / "garbage.o"
    garbage.write_bytes(b"\x7fELF" + bytes(60))
    run = cli("disasm", str(garbage))
    assert run.returncode == 1 and run.stderr.startswith(f"{garbage}: error: ")
    assert "Traceback" not in run.stderr


def test_version_is_the_package_metadata():
    want = f"pybpf-uring {version('pybpf_uring')}\n"
    for flag in ("--version", "-V"):
        assert (cli(flag).returncode, cli(flag).stdout) == (0, want)


def test_output_dash_writes_the_object_to_stdout(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "compile", PACKET_STATS, "-o", "-"],
                         capture_output=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == compile_file(PACKET_STATS).elf
    assert os.listdir(tmp_path) == []          # no file named "-", no p.o beside it either


@pytest.mark.tools("objdump")
@pytest.mark.kernel
def test_several_inputs_are_each_processed_and_one_error_fails_the_command(tmp_path):
    a = write(tmp_path / "a.py", HELLO)
    b = write(tmp_path / "b.py", KERNEL_ONLY)
    bad = write(tmp_path / "bad.py", BAD)
    run = cli("compile", a, bad, b)
    assert run.returncode == 1
    assert (tmp_path / "a.o").read_bytes() == compile_file(a).elf
    assert (tmp_path / "b.o").read_bytes() == compile_file(b).elf   # after the error, still compiled
    assert not (tmp_path / "bad.o").exists()
    assert run.stderr.startswith(f"{bad}:5:12: error: true division is not available")
    run = cli("check", a, bad, b)
    assert run.returncode == 1
    assert run.stdout == f"{a}: ok: hello (iouring.s/hello)\n{b}: ok: f (syscall)\n"
    obj = tmp_path / "p.o"
    compile_file(PACKET_STATS).write(obj)
    run = cli("disasm", a, str(obj))
    assert run.returncode == 0
    # one file-name line per input, as llvm-objdump prints for several files
    assert run.stdout == (f"\n{a}:\tfile format elf64-bpf\n" + compile_file(a).disasm()
                          + subprocess.run([OBJDUMP, "-d", str(obj)], capture_output=True, text=True).stdout)
    run = cli("verify", a, b)
    assert (run.returncode, run.stdout) == (0, f"hello: {ENGINE_ONLY}\nf: verified\n")


def test_output_names_one_file_so_several_inputs_are_a_usage_error(tmp_path):
    a, b = write(tmp_path / "a.py", HELLO), write(tmp_path / "b.py", KERNEL_ONLY)
    run = cli("compile", a, b, "-o", str(tmp_path / "x.o"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("usage: pybpf-uring compile ")
    assert run.stderr.endswith("pybpf-uring compile: error: -o names one output, but there are 2 inputs\n")
    assert sorted(os.listdir(tmp_path)) == ["a.py", "b.py"]


def test_a_subcommands_usage_error_prints_its_usage():
    for argv, usage, message in [
            (["compile", "--cpu", "v9", "x.py"], "compile", "argument --cpu: invalid choice: 'v9'"),
            (["disasm"], "disasm", "the following arguments are required: FILE.o|FILE.py"),
            (["run", "--cq-sizes", "abc", "x.py"], "run",
             "argument --cq-sizes: a CQ size must be an integer, not 'abc'"),
            (["run", "--cq-sizes", "8,0", "x.py"], "run", "argument --cq-sizes: a CQ size must be in 1..65536, not 0"),
            (["run", "--timeout", "x", "x.py"], "run", "argument --timeout: a timeout is a number of seconds, not 'x'"),
            (["run", "--user-data", "-1", "x.py"], "run", "argument --user-data: user_data must be in 0.."),
            (["run"], "run", "the following arguments are required: FILE")]:
        run = cli(*argv)
        assert run.returncode == 2, argv
        assert run.stderr.startswith(f"usage: pybpf-uring {usage} "), run.stderr
        assert f"pybpf-uring {usage}: error: {message}" in run.stderr, run.stderr


@pytest.mark.kernel
def test_verify_names_where_io_uring_programs_run(tmp_path):
    run = cli("verify", write(tmp_path / "hello.py", HELLO))
    assert (run.returncode, run.stdout, run.stderr) == (0, f"hello: {ENGINE_ONLY}\n", "")
    both = write(tmp_path / "both.py", HELLO + "\n" + KERNEL_ONLY.replace("from pybpf_uring import", "from pybpf_uring import iouring,"))
    run = cli("verify", both)
    assert (run.returncode, run.stdout) == (0, f"hello: {ENGINE_ONLY}\nf: verified\n"), run.stderr
    run = cli("verify", os.path.join(SAMPLES, "mainline_nops.py"))
    assert (run.returncode, run.stdout) == (0, "nops: a mainline io_uring loop: LoopRing attaches it to "
                                               "a ring on Linux 7.1+, not loaded on its own\n")


@pytest.mark.kernel
def test_verify_names_the_file_of_a_map_the_kernel_refuses(tmp_path):
    """A refusal about the whole object (no source line) still says which input it is about."""
    big = write(tmp_path / "big.py", "from pybpf_uring import syscall, Struct, ArrayMap, i32, u32, u64\n\n"
                "big = ArrayMap(u64, 4000000000)\n\n\nclass P(Struct):\n    a: u32\n\n\n"
                "@syscall\ndef g(ctx: P) -> i32:\n    big[0] += 1\n    return 0\n")
    ok = write(tmp_path / "ok.py", KERNEL_ONLY)
    run = cli("verify", ok, big)
    assert run.returncode == 1 and run.stdout == "f: verified\n"
    assert run.stderr.startswith(f"{big}: error: cannot create map 'big': BPF_MAP_CREATE failed: "), run.stderr


def test_an_error_that_names_its_file_names_it_once(tmp_path):
    """The stack measured after optimisation is an error about the file, which it names: the
    command does not name it a second time."""
    big = write(tmp_path / "big.py", "from pybpf_uring import syscall, Struct, HashMap, i32, u32, u64\n\n\n"
                "class Big(Struct):\n    data: u64[40]\n\n\nm = HashMap(u32, Big, 4)\n\n\n"
                "class Args(Struct):\n    a: u64\n\n\n@syscall\ndef big(ctx: Args) -> i32:\n"
                "    local = Big()\n    local.data[1] = ctx.a\n    m[1] = local\n"
                "    m[2] = Big(data=local.data)\n    ctx.a = local.data[3]\n    return 0\n")
    run = cli("compile", big, "-o", str(tmp_path / "big.o"))
    assert run.returncode == 1
    assert run.stderr == (f"error: {big}: big uses 648 bytes of stack after optimisation; BPF allows 512\n"
                          "  note: keep large structs in a map value (m.lookup(k)) instead of locals\n")


@pytest.mark.tools("clang")
@pytest.mark.kernel
def test_verify_fails_for_programs_the_verifier_rejects(tmp_path):
    obj = tmp_path / "load_reject.o"
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c",
                    os.path.join(ROOT, "tests", "data", "load_reject.c"), "-o", str(obj)], check=True)
    run = cli("verify", str(obj))
    assert run.returncode == 1 and run.stdout == "" and "Traceback" not in run.stderr
    assert "rejected program 'variable_ctx': EACCES" in run.stderr and "rejected program 'spin'" in run.stderr


def test_an_unreadable_file_has_one_message_format(tmp_path):
    directory = tmp_path / "dir.py"
    directory.mkdir()
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# caf\xe9\n")
    cases = [(str(tmp_path / "missing.py"), "No such file or directory"),
             (str(tmp_path / "missing.o"), "No such file or directory"),
             (str(directory), "Is a directory"),
             (str(latin), "not UTF-8 text (byte 0xe9 at offset 5)")]
    for path, reason in cases:
        commands = [["disasm"], ["verify"]] + ([["compile"], ["check"], ["run"]] if path.endswith(".py") else [])
        for command in commands:
            run = cli(*command, path)
            assert (run.returncode, run.stdout, run.stderr) == (1, "", f"{path}: error: cannot read: {reason}\n"), command


@pytest.mark.tools("setpriv")   # as root, to give up CAP_DAC_OVERRIDE
def test_a_file_without_read_permission(tmp_path):
    secret = tmp_path / "secret.py"
    secret.write_text("x = 1\n")
    secret.chmod(0)
    prefix = []
    if os.geteuid() == 0:   # root reads anything: take the capabilities that let it
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    run = subprocess.run([*prefix, sys.executable, "-m", "pybpf_uring", "check", str(secret)],
                         capture_output=True, text=True)
    assert (run.returncode, run.stderr) == (1, f"{secret}: error: cannot read: Permission denied\n")


def test_a_closed_pipe_ends_quietly(tmp_path):
    obj = tmp_path / "p.o"
    compile_file(PACKET_STATS).write(obj)
    for argv in (["disasm", str(obj)], ["disasm", PACKET_STATS, str(obj)], ["compile", PACKET_STATS, "-o", "-"],
                 ["check", PACKET_STATS]):
        read_end, write_end = os.pipe()
        os.close(read_end)                    # the reader is gone before the first write: `| head -0`
        try:
            run = subprocess.run([sys.executable, "-m", "pybpf_uring", *argv], stdout=write_end,
                                 stderr=subprocess.PIPE, text=True)
        finally:
            os.close(write_end)
        assert (run.returncode, run.stderr) == (1, ""), argv


def test_the_conformance_plugin_works_but_is_not_listed():
    top = cli("--help")
    assert top.returncode == 0 and "conformance-plugin" not in top.stdout
    assert all(f"\n    {c} " in top.stdout for c in ("compile", "disasm", "check", "verify", "run"))
    assert "conformance-plugin" not in cli("frobnicate").stderr.split("\n")[0]   # the usage line
    plugin = cli("conformance-plugin", "--help")
    assert plugin.returncode == 0 and plugin.stdout.startswith("usage: pybpf-uring conformance-plugin")


# --- run: a module without a main block ---------------------------------------------------------------
@pytest.mark.uring
def test_cli_run_submits_io_uring_programs_on_a_real_ring(tmp_path):
    module = write(tmp_path / "hello.py", HELLO)
    run = cli("run", "--user-data", "41", module)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ("cq 0: user_data=41 res=0 flags=0\ncq 2: user_data=99 res=0 flags=0\n"
                          "map hits: {0: 42, 1: 0}\n")
    run = cli("run", "--user-data", "0x29", "--cq-sizes", "4,4,4", module)
    assert run.returncode == 0 and run.stdout.startswith("cq 0: user_data=41 res=0 flags=0\n")
    printing = write(tmp_path / "hi.py", "from pybpf_uring import iouring, i32\nfrom pybpf_uring.uring import IoUringCtx\n\n"
                                         "@iouring\ndef hi(ctx: IoUringCtx) -> i32:\n    print(\"hello from\", ctx.user_data)\n"
                                         "    return 0\n")
    assert cli("run", "--user-data", "7", printing).stdout == "cq 0: user_data=7 res=0 flags=0\ntrace: hello from 7\n"
    run = cli("run", write(tmp_path / "k.py", KERNEL_ONLY))
    assert run.returncode == 1 and "no @iouring program to run" in run.stderr


def test_run_options_go_before_a_module_without_a_main_block(tmp_path):
    module = write(tmp_path / "hello.py", HELLO)
    run = cli("run", module, "--user-data", "41")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("usage: pybpf-uring run [options] FILE [ARGS ...]\n")
    assert run.stderr.endswith(f"error: {module} has no `if __name__ == \"__main__\":` block to take "
                               "arguments (--user-data 41); run's own options go before FILE\n")


@pytest.mark.kernel("vmlinux")
def test_cli_run_of_a_loop_step_module_says_what_this_kernel_lacks(tmp_path):
    from pybpf_uring import mainline
    if mainline.probe().ok:
        pytest.skip("this kernel has io_uring_bpf_ops: tests/mainline runs the loop itself")
    with open(os.path.join(SAMPLES, "mainline_nops.py")) as f:
        loop_only = f.read().split('\nif __name__ == "__main__":', 1)[0]    # the module, not its script
    run = cli("run", write(tmp_path / "nops.py", loop_only))
    assert run.returncode == 1 and run.stdout == "" and "Traceback" not in run.stderr
    assert "cannot run io_uring loop_step programs" in run.stderr and "io_uring_bpf_ops" in run.stderr


def test_run_reports_a_syntax_error_at_its_place(tmp_path):
    for text, where, message in [("x = (1,\n", "1:5", "'(' was never closed"),
                                 ("def f():\n    pass\nreturn 3\n", "3:1", "'return' outside function")]:
        path = write(tmp_path / "broken.py", text)
        run = cli("run", path)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        assert run.stderr.startswith(f"{path}:{where}: error: {message}\n"), run.stderr


# --- run: a script ---------------------------------------------------------------------------------------
SHOW = '''
import json, os, sys
import helper                         # beside the script: its directory is sys.path[0]
if __name__ == "__main__":
    print(json.dumps({"argv": sys.argv, "name": __name__, "file": __file__, "path0": sys.path[0],
                      "helper": helper.VALUE, "main": sys.modules["__main__"].__dict__ is globals()}))
'''


@pytest.mark.parametrize("args", [[], ["50"], ["--flag", "-h"], ["--", "a", "--", "-V"], ["--timeout", "3"]])
def test_run_of_a_script_is_python_with_its_arguments(tmp_path, args):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "helper.py", "VALUE = 'beside'\n")
    write(tmp_path / "sub" / "show.py", SHOW)
    ours, theirs = cli("run", "sub/show.py", *args, cwd=tmp_path), python("sub/show.py", *args, cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    assert (ours.stdout, ours.stderr) == (theirs.stdout, theirs.stderr)
    seen = json.loads(ours.stdout)
    assert seen == {"argv": ["sub/show.py", *args], "name": "__main__", "file": str(tmp_path / "sub" / "show.py"),
                    "path0": str(tmp_path / "sub"), "helper": "beside", "main": True}


def test_a_script_exception_is_the_scripts_traceback(tmp_path):
    script = write(tmp_path / "boom.py", '''import sys

def inner(n):
    return {"a": 1}[n]

def outer():
    return inner(sys.argv[1])

if __name__ == "__main__":
    outer()
''')
    ours, theirs = cli("run", script, "zz"), python(script, "zz")
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert ours.returncode == 1 and ours.stderr.startswith("Traceback (most recent call last):\n")
    frames = [line for line in ours.stderr.splitlines() if line.startswith("  File ")]
    assert frames == [f'  File "{script}", line 10, in <module>', f'  File "{script}", line 7, in outer',
                      f'  File "{script}", line 4, in inner']
    assert ours.stderr.endswith("KeyError: 'zz'\n")


@pytest.mark.parametrize("call, status, stderr", [("sys.exit(3)", 3, ""), ("sys.exit()", 0, ""),
                                                   ("sys.exit('no luck')", 1, "no luck\n"),
                                                   ("raise SystemExit(0)", 0, "")])
def test_system_exit_from_a_script_is_its_status(tmp_path, call, status, stderr):
    script = write(tmp_path / "leave.py", f"import sys\nif __name__ == '__main__':\n    print('before')\n    {call}\n"
                                          "    print('after')\n")
    ours = cli("run", script)
    assert (ours.returncode, ours.stdout, ours.stderr) == (status, "before\n", stderr)
    theirs = python(script)
    assert (theirs.returncode, theirs.stdout, theirs.stderr) == (status, "before\n", stderr)


def test_a_compile_error_in_a_script_prints_the_diagnostic(tmp_path):
    script = write(tmp_path / "prog.py", BAD + '\nif __name__ == "__main__":\n    f.compile()\n')
    run = cli("run", script)
    assert run.returncode == 1 and run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"{script}:5:12: error: true division is not available")


@pytest.mark.uring
@pytest.mark.kernel
@pytest.mark.parametrize("name", ["rfc_helpers.py", "pingpong.py", "packet_stats.py", "mainline_nops.py"])
def test_a_deterministic_sample_prints_the_same_under_run_and_python(name):
    """Samples whose output holds no timing; the others run under both in tests/test_samples.py."""
    path = os.path.join("samples", name)
    ours, theirs = cli("run", path, cwd=ROOT), python(path, cwd=ROOT)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert "Traceback" not in ours.stderr and "internal error" not in ours.stderr
