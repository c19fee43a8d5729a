/*
 * uring_submits.bpf.c - SQEs per submitting io_uring_enter(), from io_uring's
 * per-request tracepoint (aggregate mode of the uring_requests probe; the
 * readable reference: uring_submits.bt).
 *
 * io_uring_submit_req fires once per request inside the io_uring_enter()
 * that takes it. While that call submits, the ring's shared SQ head still
 * says where its batch began and the kernel's cached_sq_head is one past
 * this request, so their difference is the request's position in its batch
 * (1, 2, ...). Batches of at least k requests = the count at position k, so
 * plugtrace derives the batch sizes exactly, with one hit per request and no
 * system call on the tracing slow path. The traced process is the
 * request's submitter, read through the request's own pointers (no helper
 * call on this hot path).
 *
 * Aggregates: uring_submit_pos = lhist(position).
 */
#include "plugtrace.bpf.h"
#include "core_fixes.bpf.h"

PERCPU_COUNTERS(uring_submit_pos, LHIST_SLOTS);

static __always_inline void count_position(struct io_ring_ctx *ctx)
{
	/* u32 arithmetic: the heads wrap */
	lhist(&uring_submit_pos, (uint32_t)(ctx->cached_sq_head - ctx->rings->sq.head));
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(submit_pos, struct io_kiocb *req)
{
	if (follow) {
		struct task_struct *task = request_task(req);

		if (!task || !is_traced(task->tgid))
			return 0;
	}
	count_position(req->ctx);
	return 0;
}

/* Before Linux 5.19 the tracepoint was io_uring_submit_sqe(ctx, req, user_data, opcode, flags,
 * force_nonblock, sq_thread), its ctx untyped: read through a helper. Loaded only there. */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(submit_pos_pre_5_19, void *ring_ctx)
{
	struct io_ring_ctx *ring = ring_ctx;
	uint32_t cached = BPF_CORE_READ(ring, cached_sq_head), head = BPF_CORE_READ(ring, rings, sq.head);

	if (!current_is_traced())
		return 0;
	lhist(&uring_submit_pos, cached - head);
	return 0;
}
