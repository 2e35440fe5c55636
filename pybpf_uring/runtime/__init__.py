"""The ring runtime: RFC io_uring BPF programs on a real kernel ring.

ring_sys (io_uring_setup/mmap/enter), ring (the RFC's extra CQs, BPF requests and waits around
a real ring), ring_protocol (what the ring and the engine share) and engine/ (the interpreter,
the JIT and native waits).  It builds on the object model (`bpf`), never on the compiler.
"""
