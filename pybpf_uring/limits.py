"""Named limits of BPF programs and rings, each checked in one place with a message giving both numbers."""

STACK_BYTES = 512          # the verifier's stack: each frame, and a chain of calls' frames together
STACK_FRAME_ALIGN = 16     # each frame counts rounded up to this in a chain (the kernel's, with the JIT)
MAX_CALL_DEPTH = 8         # BPF-to-BPF call frames
MAX_HELPER_ARGS = 5        # r1-r5
MAX_VERIFIED_INSNS = 1_000_000  # the verifier's walk (BPF_COMPLEXITY_LIMIT_INSNS): loops × their bodies
MAX_PENDING_BRANCHES = 8192  # branches one path leaves to explore later (BPF_COMPLEXITY_LIMIT_JMP_SEQ)
MAX_PRINT_ARGS = 3         # bpf_trace_printk takes three values
MAX_MAP_ENTRIES = (1 << 32) - 1  # the kernel's map fields (max_entries, key and value sizes) are u32
MAX_RINGBUF_BYTES = 1 << 31  # kernel/bpf/ringbuf.c: RINGBUF_MAX_DATA_SZ rounded down to a power of 2


def ringbuf_size_problem(size: int, page: int) -> str | None:
    """Why the kernel refuses a ring buffer of `size` bytes (ringbuf_map_alloc), or None: the
    size is a power of 2, a multiple of the page size, and at most MAX_RINGBUF_BYTES."""
    if size <= 0 or size & (size - 1) or size % page:
        return f"a ring buffer's size is a power of 2 and a multiple of the page size ({page}), not {size}"
    if size > MAX_RINGBUF_BYTES:
        return f"a ring buffer holds at most {MAX_RINGBUF_BYTES} bytes, not {size}"
    return None
# BTF gives a struct member's offset in bits, in 32 bits: a type of 2**29 bytes or more has
# members BTF cannot place (and LLVM's BTF writer would truncate them silently).
MAX_TYPE_SIZE = (1 << 29) - 1
# The BPF backend writes a copy or a zeroing of a constant size as loads and stores of 8, 4, 2
# and 1 bytes, and counts them as if the memory were 8-byte aligned (1018 bytes: 127 words, a
# u16): at most 128 (BPFSelectionDAGInfo's getCommonMaxStoresPerMemFunc).  Past that it calls
# memcpy or memset, which BPF has not, and LLVM's fatal error handler ends the process.
MAX_COPY_STORES = 128


def copy_stores(size: int) -> int:
    """The stores the backend counts for copying or zeroing `size` bytes at once, at most
    MAX_COPY_STORES: 8-byte words, then one store of each smaller power of 2 the rest needs."""
    return size // 8 + bin(size % 8).count("1")


JUMP_RANGE = 32767         # a jump's 16-bit offset before cpu v4 (v4 has gotol's 32 bits)
MAX_NESTING = 3000         # syntax tree levels, as many as CPython 3.11 compiles (~2990)

# What one compilation may print, whatever its input: clang's -ferror-limit default, and a
# source line cut to a window around the caret (a minified or generated file can have a line
# of megabytes, and every diagnostic on it would echo it whole).
ERROR_LIMIT = 20
LINE_WIDTH = 160

MAX_PROGRAMS = 100         # the RFC's IORING_REGISTER_BPF table size (Ring.register)
MAX_EXTRA_CQS = 1024       # the RFC's nr_cq limit (Ring(cq_sizes=...))
MAX_SQ_ENTRIES = 32768     # the kernel's IORING_MAX_ENTRIES (io_uring_setup)
MAX_CQ_SIZE = 65536        # the kernel's IORING_MAX_CQ_ENTRIES


def frame_in_chain(size: int) -> int:
    """A frame of `size` bytes as the verifier counts it in a chain of calls (rounded up to
    STACK_FRAME_ALIGN), whose frames together are at most STACK_BYTES."""
    return -(-size // STACK_FRAME_ALIGN) * STACK_FRAME_ALIGN
