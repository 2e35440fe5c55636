/* What every tests/data/mainline_*.c program needs from the kernel (docs/abi.md §B), declared here
 * by name, the way the kernel matches them: no vmlinux.h, no libbpf headers. */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))

enum { IOU_LOOP_CONTINUE = 0, IOU_LOOP_STOP = 1 };
enum { IOU_REGION_CQ = 1, IOU_REGION_SQ = 2 };

struct io_uring_sqe {
	__u8 opcode, flags;
	__u16 ioprio;
	__s32 fd;
	__u64 off, addr;
	__u32 len, rw_flags;
	__u64 user_data;
	__u64 pad[3];
};
struct io_uring_cqe {
	__u64 user_data;
	__s32 res;
	__u32 flags;
};
struct iou_ctx;
struct iou_loop_params {
	__u32 cq_wait_idx;
};
struct io_uring_bpf_ops {
	int (*loop_step)(struct iou_ctx *ctx, struct iou_loop_params *lp);
	__u32 ring_fd;
	void *priv;
};

extern __u8 *bpf_io_uring_get_region(struct iou_ctx *ctx, __u32 region_id,
				     const unsigned long rdwr_buf_size) __ksym;
extern int bpf_io_uring_submit_sqes(struct iou_ctx *ctx, __u32 nr) __ksym;
