/*
 * binding.h - the binding's own helpers, for what liburing leaves to macros (io_uring_for_each_cqe,
 * io_uring_wait_cqe's out-pointer, its version macros, the SQ ring's flags).
 */
#pragma once
#include <stdint.h>

struct io_uring;

/* one CQE, copied out so Python never holds a pointer into the ring */
struct pt_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

/* Copy at most `max` CQEs into `out` and mark them seen; returns how many. */
unsigned pt_peek_cqes(struct io_uring *ring, struct pt_cqe *out, unsigned max);
/* Wait for one CQE (left in the ring): 0, or -errno. */
int pt_wait_cqe(struct io_uring *ring);
/* liburing's version as major * 100 + minor, or -1 when it does not say (before 2.2). */
int pt_liburing_version(void);
/* CQEs ready on a ring set up with COOP_TASKRUN|TASKRUN_FLAG, entering the kernel only when it has some. */
unsigned pt_cq_ready_taskrun(struct io_uring *ring);
