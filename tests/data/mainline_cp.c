/* A file copy as a mainline io_uring loop (docs/abi.md §B), the shape of liburing's
 * test/bpf-progs/cp.bpf.c, for tests/mainline/: one request in flight, READ of up to
 * `buffer_size` bytes at `offset` into the host's buffer, then WRITE of what was read at the
 * same offset, then the next READ, all inside one io_uring_enter().  A READ of 0 bytes ends the
 * copy with `result` 0; a failed request ends it with `result` = its -errno.  `requests` counts
 * the SQEs submitted. */
#include "mainline_defs.h"

enum { IORING_OP_READ = 22, IORING_OP_WRITE = 23 };
enum { TAG_READ = 1, TAG_WRITE = 2 };
#define EPROTO 71

const volatile __u32 sq_entries;
const volatile __u32 cq_entries;
const volatile __u32 cq_head_offset;
const volatile __u32 cq_tail_offset;
const volatile __u32 cqes_offset;

__s32 input_fd;
__s32 output_fd;
__u64 buffer;		/* the host's buffer (a user address) */
__u32 buffer_size;
__u64 offset;		/* bytes copied so far */
__s32 result = 1;	/* 1 while running, then 0 or -errno */
__u64 requests;
__u32 started;

static int queue(struct iou_ctx *ring, struct io_uring_sqe *sqe, __u8 opcode, __s32 fd,
		 __u32 len, __u64 tag)
{
	*sqe = (struct io_uring_sqe){};
	sqe->opcode = opcode;
	sqe->fd = fd;
	sqe->off = offset;
	sqe->addr = buffer;
	sqe->len = len;
	sqe->user_data = tag;
	requests++;
	return bpf_io_uring_submit_sqes(ring, 1) == 1 ? 0 : -1;
}

SEC("struct_ops.s/cp_step")
int cp_step(__u64 *ctx)
{
	struct iou_ctx *ring = (struct iou_ctx *)ctx[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)ctx[1];
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqe;
	__u32 *cq_head, *cq_tail;
	__u8 *rings;

	sqes = (void *)bpf_io_uring_get_region(ring, IOU_REGION_SQ,
					       sq_entries * sizeof(struct io_uring_sqe));
	rings = bpf_io_uring_get_region(ring, IOU_REGION_CQ,
					cqes_offset + cq_entries * sizeof(struct io_uring_cqe));
	if (!sqes || !rings) {
		result = -EPROTO;
		return IOU_LOOP_STOP;
	}
	cq_head = (__u32 *)(rings + cq_head_offset);
	cq_tail = (__u32 *)(rings + cq_tail_offset);

	if (!started) {
		started = 1;
		if (queue(ring, sqes, IORING_OP_READ, input_fd, buffer_size, TAG_READ))
			goto submit_failed;
	} else if (*cq_head != *cq_tail) {
		cqe = (struct io_uring_cqe *)(rings + cqes_offset) + (*cq_head & (cq_entries - 1));
		*cq_head += 1;
		if (cqe->res < 0) {
			result = cqe->res;
			return IOU_LOOP_STOP;
		}
		if (cqe->user_data == TAG_READ) {
			if (cqe->res == 0) {
				result = 0;
				return IOU_LOOP_STOP;
			}
			if (queue(ring, sqes, IORING_OP_WRITE, output_fd, cqe->res, TAG_WRITE))
				goto submit_failed;
		} else {
			offset += cqe->res;
			if (queue(ring, sqes, IORING_OP_READ, input_fd, buffer_size, TAG_READ))
				goto submit_failed;
		}
	}
	lp->cq_wait_idx = *cq_head + 1;
	return IOU_LOOP_CONTINUE;

submit_failed:
	result = -EPROTO;
	return IOU_LOOP_STOP;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops cp_ops = {
	.loop_step = (void *)cp_step,
};

char LICENSE[] SEC("license") = "GPL";
