/*
 * core_fixes.bpf.h - kernel differences our programs meet, each as a
 * flavoured type (a name with ___suffix, which CO-RE matches against the
 * kernel's type without the suffix) and a bpf_core_field_exists() /
 * bpf_core_type_exists() check that libbpf resolves at load time. The branch
 * a kernel does not need is removed by the verifier, so none costs a hit.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* Linux 6.13 moved the submitting task from the request into its io_uring
 * context ("io_uring: move struct io_kiocb from task_struct to io_uring_task"):
 * req->task became req->tctx->task. */
struct io_kiocb___pre_6_13 {
	struct task_struct *task;
} __attribute__((preserve_access_index));

/* The task that submitted an io_uring request, read without a helper call (a
 * helper costs a hit ~20 ns on kernels that guard every return). */
static __always_inline struct task_struct *request_task(struct io_kiocb *req)
{
	if (bpf_core_field_exists(req->tctx)) {
		struct io_uring_task *tctx = req->tctx;

		return tctx ? tctx->task : NULL;
	}
	return ((struct io_kiocb___pre_6_13 *)req)->task;
}

/* Linux 6.3 passes io_uring_complete the CQE itself (ctx, req, cqe) instead of
 * its fields (ctx, req, user_data, res, cflags, extra1, extra2). A flavoured
 * typedef of the new form exists only where its prototype matches. */
typedef void (*btf_trace_io_uring_complete___cqe)(void *, struct io_ring_ctx *, void *, struct io_uring_cqe *);

static __always_inline bool complete_passes_cqe(void)
{
	/* The second check brings struct io_ring_ctx into the object's BTF in full: behind a pointer
	 * alone it would be a forward declaration, which libbpf does not match to the kernel's struct. */
	return bpf_core_type_exists(btf_trace_io_uring_complete___cqe) && bpf_core_type_exists(struct io_ring_ctx);
}
