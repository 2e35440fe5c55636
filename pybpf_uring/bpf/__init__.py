"""The BPF object model and kernel access.

isa (instructions), disasm (llvm-objdump's text), btf (BTF, lazily decoded, and the one cached
kernel BTF), objfile (an ELF read into pure-data specs), values (host values packed to a program's
types), kernel (the only module issuing bpf()), load (specs → live kernel maps and programs),
globals_view, attach and trace (what the host does with loaded programs).  It imports nothing
from the compiler or the runtime, which both build on it.
"""
