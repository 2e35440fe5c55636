"""A JIT-compiled program's run from Python as LLVM IR: `native_ring.FastRun` compiles it once per
process and makes it a builtin function, so that `EngineProgram.run` of a program that calls no
helper is one call of native code from the interpreter (no ctypes call, no bookkeeping in
Python).  This file is only the IR and the block layout it shares with ctypes; the JIT's state
block, the ctx rule and the frame are native_ring_ir's (CONSTANTS), whose templates it shares.
"""
from __future__ import annotations

from .codegen import fill

__all__ = ["RUN_WORDS", "RUN_API", "run_text"]

# A program run from Python (native_ring.FastRun), one block per runner: the memory's generation
# word and the generation its region table was last brought up to date at, the JIT's entry and
# state block, the ctx region (host pointer, engine address, size), frame 0 to zero (or 0), the
# budget, and what the last run left: instructions executed, runs counted, the fault status;
# `spent` counts the instructions of every run, up to `limit` (then the run is left to Python,
# which tiers a level-0 program up as Jit.run would and starts the count again).
RUN_WORDS = ("gen", "gen_seen", "entry", "state", "ctx", "ctx_addr", "size", "frame", "budget",
             "executed", "runs", "status", "spent", "limit")
_RN = {f"RN_{name.upper()}": i for i, name in enumerate(RUN_WORDS)}

# EngineProgram.run's common case as a builtin function (METH_O, bound to a capsule holding
# the RUN_WORDS block): `nr_run(ctx)` -> (r0, ctx after the run) as a tuple, an int (the JIT's
# fault status: the run faulted, Python raises the fault), or None when it did not run (ctx not
# bytes of the region's size, the region table stale, `spent` at its limit: Python takes the
# full path).  The Python C API is reached through the addresses in ${API_*}, filled in per
# process (RUN_API).
RUN_API = ("PyCapsule_GetPointer", "PyBytes_Size", "PyBytes_AsString", "PyBytes_FromStringAndSize",
           "PyLong_FromUnsignedLongLong", "PyLong_FromLong", "PyTuple_Pack", "Py_IncRef",
           "Py_DecRef", "PyBytes_Type", "_Py_NoneStruct")
_RUN = r"""
define ptr @nr_run(ptr %self, ptr %arg) {
entry:
  %b = call ptr inttoptr (i64 ${API_PyCapsule_GetPointer} to ptr)(ptr %self, ptr null)
  %tp = getelementptr i8, ptr %arg, i64 8
  %type = load ptr, ptr %tp
  %isbytes = icmp eq ptr %type, inttoptr (i64 ${API_PyBytes_Type} to ptr)
  br i1 %isbytes, label %sized, label %decline
sized:
  %n = call i64 inttoptr (i64 ${API_PyBytes_Size} to ptr)(ptr %arg)
  %szp = getelementptr i64, ptr %b, i64 ${RN_SIZE}
  %sz = load i64, ptr %szp
  %fits = icmp eq i64 %n, %sz
  br i1 %fits, label %fresh, label %decline
fresh:
  %genp = getelementptr i64, ptr %b, i64 ${RN_GEN}
  %gp = load ptr, ptr %genp
  %gen = load i64, ptr %gp
  %seenp = getelementptr i64, ptr %b, i64 ${RN_GEN_SEEN}
  %seen = load i64, ptr %seenp
  %same = icmp eq i64 %gen, %seen
  %spp = getelementptr i64, ptr %b, i64 ${RN_SPENT}
  %spent = load i64, ptr %spp
  %limp = getelementptr i64, ptr %b, i64 ${RN_LIMIT}
  %limit = load i64, ptr %limp
  %under = icmp ult i64 %spent, %limit
  %go = and i1 %same, %under
  br i1 %go, label %copy, label %decline
decline:
  call void inttoptr (i64 ${API_Py_IncRef} to ptr)(ptr inttoptr (i64 ${API__Py_NoneStruct} to ptr))
  ret ptr inttoptr (i64 ${API__Py_NoneStruct} to ptr)
copy:
  %src = call ptr inttoptr (i64 ${API_PyBytes_AsString} to ptr)(ptr %arg)
  %ctxp = getelementptr i64, ptr %b, i64 ${RN_CTX}
  %ctx = load ptr, ptr %ctxp
  call void @llvm.memcpy.p0.p0.i64(ptr %ctx, ptr %src, i64 %n, i1 false)
  ${ENTER_RUN}
  %runsp = getelementptr i64, ptr %b, i64 ${RN_RUNS}
  %runs = load i64, ptr %runsp
  %runs1 = add i64 %runs, 1
  store i64 %runs1, ptr %runsp
  %status = load i64, ptr %statusp
  %outp = getelementptr i64, ptr %b, i64 ${RN_STATUS}
  store i64 %status, ptr %outp
  %ok = icmp eq i64 %status, 0
  br i1 %ok, label %result, label %faulted
faulted:
  %code = call ptr inttoptr (i64 ${API_PyLong_FromLong} to ptr)(i64 %status)
  ret ptr %code
result:
  %left = load i64, ptr %stbp
  %used = sub i64 %bg, %left
  %exp = getelementptr i64, ptr %b, i64 ${RN_EXECUTED}
  store i64 %used, ptr %exp
  %spent1 = add i64 %spent, %used
  store i64 %spent1, ptr %spp
  %v = call ptr inttoptr (i64 ${API_PyLong_FromUnsignedLongLong} to ptr)(i64 %r0)
  %c = call ptr inttoptr (i64 ${API_PyBytes_FromStringAndSize} to ptr)(ptr %ctx, i64 %n)
  %vok = icmp ne ptr %v, null
  %cok = icmp ne ptr %c, null
  %both = and i1 %vok, %cok
  br i1 %both, label %pack, label %fail
pack:
  %t = call ptr (i64, ...) inttoptr (i64 ${API_PyTuple_Pack} to ptr)(i64 2, ptr %v, ptr %c)
  br label %fail
fail:
  %out = phi ptr [null, %result], [%t, %pack]
  call void inttoptr (i64 ${API_Py_DecRef} to ptr)(ptr %v)
  call void inttoptr (i64 ${API_Py_DecRef} to ptr)(ptr %c)
  ret ptr %out
}
"""


def run_text(api: dict[str, int]) -> str:
    """The IR of @nr_run with this process's C API addresses (`api`: RUN_API name -> address)."""
    # (imported here: the engine reads RUN_WORDS for every program, the ring's IR only for these)
    from . import native_ring_ir as ring_ir
    return fill(_RUN + ring_ir.DECLS, {**ring_ir.CONSTANTS, **_RN,
                                "ENTER_RUN": ring_ir.enter("%b", RUN_WORDS),
                                **{f"API_{name}": api[name] for name in RUN_API}})
