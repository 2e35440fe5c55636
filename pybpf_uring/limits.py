"""Named limits of BPF programs and rings, each checked in one place with a message giving both numbers."""

STACK_BYTES = 512          # the verifier's per-frame stack
MAX_CALL_DEPTH = 8         # BPF-to-BPF call frames
MAX_HELPER_ARGS = 5        # r1-r5
MAX_VERIFIED_INSNS = 1_000_000  # the verifier's walk (BPF_COMPLEXITY_LIMIT_INSNS): loops × their bodies
MAX_PRINT_ARGS = 3         # bpf_trace_printk takes three values

MAX_PROGRAMS = 100         # the RFC's IORING_REGISTER_BPF table size (Ring.register)
MAX_EXTRA_CQS = 1024       # the RFC's nr_cq limit (Ring(cq_sizes=...))
MAX_SQ_ENTRIES = 32768     # the kernel's IORING_MAX_ENTRIES (io_uring_setup)
MAX_CQ_SIZE = 65536        # the kernel's IORING_MAX_CQ_ENTRIES
