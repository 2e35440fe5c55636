"""The compiler: Python source → a BPF ELF object.

parse (lark, `grammar/`) → syntax (frozen dataclasses with spans) → check (types and rules, in
side tables: `checked`) → lower (llvmlite IR; `debuginfo` for BTF and line info) → emit (LLVM's BPF
target, in-process); `pipeline` chains them.  It builds on the object model below it (`bpf`) and
the language's names (`types`, `decorators`, `uring`, `iou`); nothing here imports the runtime.
"""
