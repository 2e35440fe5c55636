/* Tracepoint programs for tests/test_load.py: the kernel loads them (no attach needed to verify)
 * but cannot test-run them; getpid_calls is attached and counts this process's getpid(). */
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;

/* key 0: the tgid to watch (written by the host); key 1: how many CQEs its rings completed */
struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} completions SEC(".maps");

SEC("tracepoint/io_uring/io_uring_complete")
int count_completions(void *ctx)
{
	__u32 watch_key = 0, count_key = 1;
	__u64 *watch = bpf_map_lookup_elem(&completions, &watch_key);
	__u64 *count = bpf_map_lookup_elem(&completions, &count_key);

	if (watch && count && *watch == bpf_get_current_pid_tgid() >> 32)
		__sync_fetch_and_add(count, 1);
	return 0;
}

/* key 0: the tgid to watch (written by the host); key 1: how often it called getpid() */
struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} getpid_seen SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_calls(void *ctx)
{
	__u32 watch_key = 0, count_key = 1;
	__u64 *watch = bpf_map_lookup_elem(&getpid_seen, &watch_key);
	__u64 *count = bpf_map_lookup_elem(&getpid_seen, &count_key);

	if (watch && count && *watch == bpf_get_current_pid_tgid() >> 32)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
