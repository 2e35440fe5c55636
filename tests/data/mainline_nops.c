/* A mainline io_uring loop (docs/abi.md §B) that runs `nops_wanted` NOPs inside one
 * io_uring_enter(), at most `batch` in flight: the reference shape of liburing's
 * test/bpf-progs/nops.bpf.c, written for tests/mainline/ and bench/mainline.py.
 *
 * Each step reaps the CQEs between the CQ head and tail (checking each is one of ours and
 * succeeded, then advancing the head itself), tops the ring up with NOP SQEs written at
 * sqes[0..n) of the SQ region (the ring has IORING_SETUP_SQ_REWIND, so the kernel takes them
 * from index 0), submits them, and sleeps until everything in flight has completed.
 * Self-contained: no vmlinux.h, no libbpf headers; kernel types are matched by name. */
#include "mainline_defs.h"

enum { IORING_OP_NOP = 0 };

#define NOP_TAG 0x6e6f7000ULL	/* "nop\0": user_data of our NOPs, plus their sequence number */
#define MAX_BATCH 32

/* The ring's layout: set by the loader from the ring before loading (frozen .rodata, so the
 * verifier knows the region sizes the kfunc is asked for). */
const volatile __u32 sq_entries;
const volatile __u32 cq_entries;
const volatile __u32 cq_head_offset;
const volatile __u32 cq_tail_offset;
const volatile __u32 cqes_offset;
const volatile __u32 batch = 8;		/* NOPs in flight at most (<= MAX_BATCH and sq_entries) */

__u64 nops_wanted;	/* set by the host before io_uring_enter() */
__u64 nops_queued;	/* read back by the host */
__u64 nops_done;
__u64 steps;
__u64 bad_cqes;		/* CQEs that were not our NOPs or did not succeed */
__s32 submit_error;	/* what bpf_io_uring_submit_sqes returned when it fell short */

SEC("struct_ops.s/nops_step")
int nops_step(__u64 *ctx)
{
	struct iou_ctx *ring = (struct iou_ctx *)ctx[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)ctx[1];
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	__u32 *cq_head, *cq_tail, head, tail, n = 0, i;
	__u8 *rings;
	int ret;

	sqes = (void *)bpf_io_uring_get_region(ring, IOU_REGION_SQ,
					       sq_entries * sizeof(struct io_uring_sqe));
	rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ,
					cqes_offset + cq_entries * sizeof(struct io_uring_cqe));
	if (!sqes || !rings)
		return IOU_LOOP_STOP;
	cq_head = (__u32 *)(rings + cq_head_offset);
	cq_tail = (__u32 *)(rings + cq_tail_offset);
	cqes = (struct io_uring_cqe *)(rings + cqes_offset);
	steps++;

	head = *cq_head;
	tail = *cq_tail;
	for (i = 0; i < MAX_BATCH && head != tail; i++, head++) {
		struct io_uring_cqe *cqe = &cqes[head & (cq_entries - 1)];

		if ((cqe->user_data & ~0xffULL) != NOP_TAG || cqe->res != 0)
			bad_cqes++;
		nops_done++;
	}
	*cq_head = head;

	if (nops_done >= nops_wanted)
		return IOU_LOOP_STOP;

	for (i = 0; i < MAX_BATCH && i < batch && i < sq_entries; i++) {
		struct io_uring_sqe *sqe = &sqes[i];

		if (nops_queued + n - nops_done >= batch || nops_queued + n >= nops_wanted)
			break;
		*sqe = (struct io_uring_sqe){};
		sqe->opcode = IORING_OP_NOP;
		sqe->user_data = NOP_TAG | ((nops_queued + n) & 0xff);
		n++;
	}
	if (n) {
		ret = bpf_io_uring_submit_sqes(ring, n);
		if (ret != (int)n) {
			submit_error = ret;
			return IOU_LOOP_STOP;
		}
		nops_queued += n;
	}
	/* sleep until every NOP in flight has posted its CQE (at once if some already have) */
	lp->cq_wait_idx = head + (__u32)(nops_queued - nops_done);
	return IOU_LOOP_CONTINUE;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops nops_ops = {
	.loop_step = (void *)nops_step,
};

char LICENSE[] SEC("license") = "GPL";
