/* binding.c - the helpers of binding.h. */
#include <liburing.h>
#include "binding.h"

unsigned pt_peek_cqes(struct io_uring *ring, struct pt_cqe *out, unsigned max)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (n == max)
            break;
        out[n].user_data = cqe->user_data;
        out[n].res = cqe->res;
        out[n].flags = cqe->flags;
        n++;
    }
    io_uring_cq_advance(ring, n);
    return n;
}

int pt_wait_cqe(struct io_uring *ring)
{
    struct io_uring_cqe *cqe;
    return io_uring_wait_cqe(ring, &cqe);
}

int pt_liburing_version(void)
{
#ifdef IO_URING_VERSION_MAJOR
    return IO_URING_VERSION_MAJOR * 100 + IO_URING_VERSION_MINOR;
#else
    return -1;
#endif
}

/* On such a ring completions wait as task work until the thread enters the kernel, and the kernel flags
 * IORING_SQ_TASKRUN when there is some: enter (a syscall) only then. */
unsigned pt_cq_ready_taskrun(struct io_uring *ring)
{
    if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN)
        io_uring_get_events(ring);
    return io_uring_cq_ready(ring);
}
