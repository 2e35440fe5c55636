/* A socket filter for tests/test_load.py: keeps UDP packets (whole length) and drops the rest.
 * Under BPF_PROG_TEST_RUN a socket filter sees the packet after its Ethernet header. */
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

struct __sk_buff {
	__u32 len;
};

static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;

SEC("socket")
int keep_udp(struct __sk_buff *skb)
{
	__u8 proto;

	if (bpf_skb_load_bytes(skb, 9, &proto, 1) < 0)
		return 0;
	return proto == 17 ? skb->len : 0;
}

char LICENSE[] SEC("license") = "GPL";
