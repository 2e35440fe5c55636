"""The engine's bpf_trace_printk against the kernel's: one clang-22 syscall program prints a set
of formats with arguments from its ctx and stores each call's return value back in the ctx; the
kernel runs it (test_run, its lines read from trace_pipe) and so does the engine (its lines in
`instance.trace`), and the lines and return values must be the same.

The kernel is the reference for what runtime/engine/printk.py writes from memory of its rules:
the conversions it knows (ints of 32 and 64 bits, %c -- a %c of 0 ends the line --, %%, %s and
%pI4/%pi4 of a string on the stack), flags and widths, a width far past the 1023-byte line (the
line is cut, the helper returns the length the whole line would have), widths past
FIELD_WIDTH_MAX and past an int, and the formats it refuses with -EINVAL (an unknown conversion,
a fourth conversion, a precision, a length modifier it lacks, a control character).  Each call
prints a token unique to the run, so other programs' lines in the machine-wide trace buffer are
skipped.  Not compared: %p and its kernel-pointer forms (the kernel hashes a pointer with a
per-boot key and resolves %ps/%pS to kernel symbols, which a userspace engine cannot know), and
%s of kernel memory (the engine has none).
"""
from __future__ import annotations

import ctypes
import errno
import uuid

import pytest

from kernel_harness import clang_object
from probes import engine_backends
from pybpf_uring import TraceReader
from pybpf_uring.runtime.engine import instantiate

pytestmark = [pytest.mark.kernel("tracefs"), pytest.mark.tools("clang")]

BACKENDS = engine_backends()

# (format, after the token and a space) -- each one bpf_trace_printk call on the ctx's a, b, c
FORMATS = [
    "d=%d u=%u x=%x",
    "ld=%ld llx=%llx lu=%lu",
    "lld=%lld lx=%lX c=%c",
    "[%5d] [%-5d] [%05x]",
    "[%+d] [% d] [%-08x]",
    "[%08d] [%-+6d] [%X]",
    "pct %% [%i] %%%c",
    "[%2d] [%1x] [%020llx]",
    "wide [%99999d]",
    "wider [%-2000u] end",
    "neg [%05ld] [%+5ld] [% lld]",
    "unknown %q",
    "four %d %d %d %d",
    "lll %llld",
    "precision %.3d",
    "trailing %",
    "h %hd",
    "no args at all",
    "tab\there nl\n",
    "mixed %d %% %x %% %u",
    "ctl \x01 %d",
    "huge [%4294967298d] [%2147483649d]",
    "wrap [%4294967286d] [%2147483648x] [%-4294967286d]",
    "wrap0 [%04294967286d] [%4294967316u] [%4311744522x]",
    "zero-left [%-05d]",
    "w24 [%8388608d] [%16777226d] [%-8388609x]",
    "w24max [%8388607d] [%-16777215d] [%33554431x]",
]
# what the kernel refuses with -EINVAL, printing nothing
REFUSED = {"unknown %q", "four %d %d %d %d", "lll %llld", "precision %.3d", "trailing %",
           "h %hd", "ctl \x01 %d"}
# (format, after the token) -- calls whose first argument is a string on the program's stack
STRING_FORMATS = [
    "s=[%s] [%8s] [%-8s]",
    "s=%s t=%s x=%x",
    "ip=%pI4 %pi4 d=%d",
]


def c_source(token: str) -> str:
    calls = []
    for k, fmt in enumerate(FORMATS):
        literal = (token + " " + fmt).replace("\\", "\\\\").replace('"', '\\"')
        literal = literal.replace("\t", "\\t").replace("\n", "\\n")
        calls.append(f'    {{ static const char f[] = "{literal}";\n'
                     f'      ctx->ret[{k}] = bpf_trace_printk(f, sizeof(f), ctx->a, ctx->b, ctx->c); }}')
    for k, fmt in enumerate(STRING_FORMATS, len(FORMATS)):
        literal = (token + " " + fmt).replace('"', '\\"')
        calls.append(f'    {{ static const char f[] = "{literal}";\n'
                     f'      char s[8] = "abc"; s[3] = (char)ctx->c; s[4] = 0;\n'
                     f'      ctx->ret[{k}] = bpf_trace_printk(f, sizeof(f), (__u64)s, (__u64)s, ctx->a); }}')
    body = "\n".join(calls)
    return f"""\
typedef unsigned long long __u64;
typedef long long __s64;
typedef unsigned int __u32;
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;

struct args {{ __u64 a, b, c; __s64 ret[{len(FORMATS) + len(STRING_FORMATS)}]; }};

__attribute__((section("syscall"), used))
int printk(struct args *ctx)
{{
{body}
    return 0;
}}

char _license[] __attribute__((section("license"), used)) = "GPL";
"""


class Args(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint64), ("b", ctypes.c_uint64), ("c", ctypes.c_uint64),
                ("ret", ctypes.c_int64 * (len(FORMATS) + len(STRING_FORMATS)))]


ARGS = [(-42 & (1 << 64) - 1, 0x1234ABCD, ord("A")),
        (0xFFFFFFFF80000000, 0x8000000000000000, 0x7A),
        (7, 0, 0x0123456789ABCDEF)]


@pytest.mark.parametrize("a, b, c", ARGS, ids=["negative", "high-bits", "small"])
def test_engine_prints_and_returns_what_the_kernel_does(tmp_path, a, b, c):
    token = "pk" + uuid.uuid4().hex[:12]
    obj = clang_object(tmp_path, "printk", c_source(token))
    ctx = Args(a, b, c)
    with TraceReader() as trace, obj.load() as live:
        got = live.programs["printk"].test_run(ctx=ctx)
        kernel_lines = [line.message for line in trace.read(timeout=5, match=token)]
        # the lines may come in more than one read; wait until no more arrive
        while more := trace.read(timeout=0.5, match=token):
            kernel_lines += more
    kernel_ret = list(Args.from_buffer_copy(bytes(got.ctx)).ret)

    refused = [fmt for fmt, ret in zip(FORMATS + STRING_FORMATS, kernel_ret) if ret < 0]
    assert got.retval == 0 and set(refused) == REFUSED and set(kernel_ret) >= {-errno.EINVAL}
    assert len(kernel_lines) == len(FORMATS) + len(STRING_FORMATS) - len(REFUSED)
    for backend in BACKENDS:
        engine = instantiate(obj, backend=backend)
        r0, out = engine.runner("printk").run(bytes(ctx))
        assert r0 == 0
        engine_ret = list(Args.from_buffer_copy(bytes(out)).ret)
        for k, fmt in enumerate(FORMATS + STRING_FORMATS):
            assert engine_ret[k] == kernel_ret[k], (backend, fmt, engine_ret[k], kernel_ret[k])
        assert [line for line in engine.trace if token in line] == kernel_lines, backend
