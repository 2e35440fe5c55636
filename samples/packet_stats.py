"""Sample: count what a program sees, in a map the host reads.

`python samples/packet_stats.py` compiles this file, loads `stats` into the running kernel
(a BPF_PROG_TYPE_SYSCALL program), runs it on a few inputs with test_run, and prints the map.
The block under `if __name__ == "__main__":` is host code; the compiler ignores it.
"""
from pybpf_uring import syscall, Struct, ArrayMap, HashMap, i32, u32, u64

BUCKETS = 8

sizes = ArrayMap(u64, BUCKETS)      # a histogram of packet sizes, log2 buckets
by_port = HashMap(u32, u64, 256)    # bytes per destination port


class Packet(Struct):
    port: u32
    length: u32
    bucket: u32


def log2(x: u32) -> u32:
    n: u32 = 0
    for i in range(BUCKETS - 1):
        if x <= 1:
            break
        x = x >> 1
        n += 1
    return n


@syscall
def stats(ctx: Packet) -> i32:
    b = log2(ctx.length)
    sizes[b] += 1
    by_port[ctx.port] += ctx.length
    ctx.bucket = b
    return 0


if __name__ == "__main__":
    from pybpf_uring import compile_file

    obj = compile_file(__file__)
    with obj.load() as live:
        for port, length in [(53, 80), (443, 1400), (443, 60), (53, 512), (8080, 9000)]:
            out = live.programs["stats"].test_run(ctx=Packet(port=port, length=length)).ctx
            print(f"port {port:5} length {length:5} -> bucket {out.bucket}")
        print("sizes:", [live.maps["sizes"][i] for i in range(BUCKETS)])
        print("bytes by port:", dict(sorted(live.maps["by_port"].items())))
