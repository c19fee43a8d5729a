/*
 * uring_requests.bpf.c - io_uring requests of the traced process, one by one
 * (events mode; the readable reference: uring_requests.bt).
 *
 * io_uring's own tracepoints fire once per request: when the kernel takes an
 * SQE (io_uring_submit_req) and when it posts the CQE (io_uring_complete).
 * user_data is the caller's tag, so requests join the caller's own log.
 *
 * Events: struct uring_request_event; event 0 = submit (res 0),
 * 1 = complete (opcode -1).
 */
#include "plugtrace.bpf.h"
#include "core_fixes.bpf.h"

static __always_inline void stamp(struct uring_request_event *rec)
{
	rec->ts_ns = bpf_ktime_get_ns();
	rec->tid = (int32_t)bpf_get_current_pid_tgid();
	emit(rec, sizeof(*rec));
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(uring_submit, struct io_kiocb *req)
{
	struct uring_request_event rec = {.event = 0, .res = 0};

	if (!current_is_traced())
		return 0;
	rec.user_data = req->cqe.user_data;
	rec.opcode = req->opcode;
	stamp(&rec);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int uring_complete(u64 *ctx)
{
	struct uring_request_event rec = {.event = 1, .opcode = -1};

	if (!current_is_traced())
		return 0;
	if (complete_passes_cqe()) {
		struct io_uring_cqe *cqe = (void *)ctx[2];

		rec.user_data = cqe->user_data;
		rec.res = cqe->res;
	} else {  /* (ctx, req, user_data, res, ...) */
		rec.user_data = ctx[2];
		rec.res = (int32_t)ctx[3];
	}
	stamp(&rec);
	return 0;
}
