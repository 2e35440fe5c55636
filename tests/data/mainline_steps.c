/* A loop_step program that only counts its steps, for the stop/continue tests of
 * tests/mainline/: it asks for no sleep (cq_wait_idx = the CQ head it sees, already reached)
 * and returns IOU_LOOP_CONTINUE until `stop_after` steps, then returns `verdict` (set by the
 * host: 1 is IOU_LOOP_STOP, anything else must make io_uring_enter fail with EINVAL).
 * With `sleep_forever` set it waits for a CQE that never comes, so only a signal ends the
 * io_uring_enter() call (EINTR).  Each step also counts itself in the BTF-defined array map
 * `step_slots` (slot = step % 4), so maps in `.maps` are exercised from a loop_step program. */
#include "mainline_defs.h"

#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} step_slots SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

const volatile __u32 cq_head_offset;
const volatile __u32 cq_tail_offset;

__u64 steps;		/* steps run, over every io_uring_enter() */
__u64 stop_after = 1;	/* the step (counted over every run) that returns `verdict` */
__s32 verdict = IOU_LOOP_STOP;
__u32 sleep_forever;

SEC("struct_ops.s/count_step")
int count_step(__u64 *ctx)
{
	struct iou_ctx *ring = (struct iou_ctx *)ctx[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)ctx[1];
	__u8 *rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ, 64);
	__u32 head, slot;
	__u64 *count;

	if (!rings || cq_head_offset > 60 || cq_tail_offset > 60)
		return IOU_LOOP_STOP;
	head = *(__u32 *)(rings + (cq_head_offset & 60));
	steps++;
	slot = steps % 4;
	count = bpf_map_lookup_elem(&step_slots, &slot);
	if (count)
		*count += 1;
	if (sleep_forever) {
		lp->cq_wait_idx = head + 1;	/* nothing is in flight: only a signal wakes us */
		return IOU_LOOP_CONTINUE;
	}
	if (steps >= stop_after)
		return verdict;
	lp->cq_wait_idx = head;
	return IOU_LOOP_CONTINUE;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops count_ops = {
	.loop_step = (void *)count_step,
};

char LICENSE[] SEC("license") = "GPL";
