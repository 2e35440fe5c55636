/* A loop_step program the verifier must refuse, for tests/mainline/: it writes an SQE at an
 * index the host controls, with no bound, past the SQ region bpf_io_uring_get_region returned.
 * The loader must report the C line of the write, not a traceback. */
#include "mainline_defs.h"


__u32 slot;

SEC("struct_ops.s/wild_step")
int wild_step(__u64 *ctx)
{
	struct iou_ctx *ring = (struct iou_ctx *)ctx[0];
	__u8 *sqes = bpf_io_uring_get_region(ring, 2, 512);

	if (!sqes)
		return 1;
	sqes[slot * 64] = 0;	/* unbounded: the verifier must reject this line */
	return 1;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops wild_ops = {
	.loop_step = (void *)wild_step,
};

char LICENSE[] SEC("license") = "GPL";
