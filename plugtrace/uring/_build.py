"""cffi build script (API mode) for plugtrace's binding of the system liburing.

API mode, not ABI mode: liburing's prep helpers (`io_uring_prep_read`, ...) and
its ring accessors are `static inline` in <liburing.h>, so only a compiled
extension can reach them.

Besides the thin declarations, the extension carries two kinds of C code:

* the per-request work of the engine (`pt_refill`, `pt_queue_vq`,
  `pt_flush`, `pt_reap`): an emulated guest making requests available on its
  virtqueue, the device handler queueing them into free request slots,
  copying queued requests into SQEs, submitting, reaping CQEs, counting each
  completion to its guest, marking written blocks, and the app-side log all
  run in C, so Python runs once per section or batch, never per request;
* marker functions (`plugtrace_mark_*`) that do nothing but exist as real,
  non-inlined, exported symbols, so uprobes can put our plug sections on the
  same timeline as the kernel's tracepoints.
"""

from cffi import FFI

# The engine's shared structs: declared to cffi and compiled from the same text.
STRUCTS = r"""
struct pt_req {
    uint64_t req_id;
    int64_t queue_ns;
    int64_t submit_ns;
    int64_t complete_ns;
    int64_t submit_seq;
    int64_t section_id;
    uint64_t offset;
    uint64_t orig_offset;
    char *buf;
    uint32_t len;
    uint32_t orig_len;
    uint32_t done;
    int32_t device;
    int32_t fd;
    int32_t op;
    int32_t res;
    int32_t resubmits;
    int32_t section_owner;
    int32_t sync;
    int32_t thread;
    int32_t tid;
    int32_t guest;          /* index of the guest it completes to; -1: reported to Python */
    int32_t pad;
};

/* A closed-loop guest of one emulated device (emulation.Guest): how many
 * requests it keeps outstanding, the chunk of offsets and ops it draws them
 * from, and its virtqueue (requests made available, not yet taken). */
struct pt_guest {
    int64_t *chunk_offsets; /* numpy-owned, refreshed by Python when used up */
    int32_t *chunk_ops;
    uint32_t chunk_len;
    uint32_t chunk_pos;
    uint32_t iodepth;
    uint32_t outstanding;
    int64_t max_requests;   /* -1: no limit */
    int64_t issued;
    int64_t completed;
    int64_t errors;
    int32_t first_error;
    int32_t stopped;
    int32_t touched;        /* listed in the driver's touched list */
    uint64_t vq_head;       /* the virtqueue: a ring of iodepth entries (64-bit counts: */
    uint64_t vq_tail;       /* a 32-bit one would wrap within an hour, breaking `% iodepth`) */
    int64_t *vq_offsets;
    int32_t *vq_ops;
};

struct pt_submit_rec {
    int64_t seq;
    int64_t start_ns;
    int64_t end_ns;
    int32_t to_submit;
    int32_t ret;
    int32_t reason;
    int32_t thread;
    int32_t tid;
    int32_t pad;
};

/* The app-side log of plug sections and of virtio-blk handler runs. */
struct pt_section_rec {
    int64_t section_id;
    int64_t begin_ns;
    int64_t end_ns;
    int32_t thread;
    int32_t tid;
    int32_t owner;
    int32_t nr_deferred_calls;
    int32_t nr_nested_polls;
    int32_t pad;
};

struct pt_handler_rec {
    int64_t begin_ns;
    int64_t end_ns;
    int64_t section_id;
    int32_t thread;
    int32_t tid;
    int32_t device;
    int32_t section_owner;
};

struct pt_driver {
    struct io_uring *ring;
    struct pt_req *reqs;
    uint32_t nreqs;
    uint32_t *queue;        /* slots queued but not yet in the SQ ring */
    uint32_t qcap;
    uint64_t qhead;
    uint64_t qtail;
    int64_t submit_seq;
    struct pt_submit_rec *sub_log;
    uint32_t sub_cap;
    uint32_t sub_len;
    struct pt_req *done_log;
    uint32_t done_cap;
    uint32_t done_len;
    int32_t thread;
    int32_t tid;
    char *bufbase;          /* slot i's buffer: bufbase + i * slot_bytes */
    uint32_t slot_bytes;
    uint64_t next_req_id;
    uint64_t seed;          /* data pattern of writes */
    uint32_t *free_slots;   /* a stack of free request slots */
    uint32_t nfree;
    struct pt_guest **guests;
    uint32_t nguests;
    uint32_t *touched;      /* guests with completions since Python last looked, in order */
    uint32_t ntouched;
    uint32_t nout;          /* CQEs pt_reap handed to Python */
    uint8_t *written;       /* written[offset / written_bs] = 1 for each write that succeeded */
    uint32_t written_bs;
    int64_t completed;
    struct pt_section_rec *sec_log;
    uint32_t sec_cap;
    uint32_t sec_len;
    struct pt_handler_rec *hnd_log;
    uint32_t hnd_cap;
    uint32_t hnd_len;
    int64_t sec_begin_ns;   /* the open outermost section's */
    int32_t sec_begin_polls;
    int32_t sec_calls;
};
"""

CDEF = (
    r"""
struct io_uring { ...; int ring_fd; unsigned flags; unsigned features; };
struct io_uring_sqe { ...; };
struct io_uring_cqe { uint64_t user_data; int32_t res; uint32_t flags; };
struct iovec { void *iov_base; size_t iov_len; };

#define IORING_SETUP_IOPOLL ...
#define IORING_SETUP_SQPOLL ...
#define IORING_SETUP_CLAMP ...
#define IORING_SETUP_COOP_TASKRUN ...
#define IORING_SETUP_SINGLE_ISSUER ...
#define IORING_SETUP_TASKRUN_FLAG ...

int io_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags);
void io_uring_queue_exit(struct io_uring *ring);
struct io_uring_sqe *io_uring_get_sqe(struct io_uring *ring);
void io_uring_prep_read(struct io_uring_sqe *sqe, int fd, void *buf, unsigned nbytes, uint64_t offset);
void io_uring_prep_write(struct io_uring_sqe *sqe, int fd, const void *buf, unsigned nbytes, uint64_t offset);
void io_uring_prep_readv(struct io_uring_sqe *sqe, int fd, const struct iovec *iovecs, unsigned nr_vecs,
                         uint64_t offset);
void io_uring_prep_writev(struct io_uring_sqe *sqe, int fd, const struct iovec *iovecs, unsigned nr_vecs,
                          uint64_t offset);
void io_uring_prep_fsync(struct io_uring_sqe *sqe, int fd, unsigned fsync_flags);
void io_uring_sqe_set_data64(struct io_uring_sqe *sqe, uint64_t data);
void io_uring_sqe_set_flags(struct io_uring_sqe *sqe, unsigned flags);
int io_uring_submit(struct io_uring *ring);
int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr);
unsigned io_uring_sq_ready(const struct io_uring *ring);
unsigned io_uring_sq_space_left(const struct io_uring *ring);
unsigned io_uring_cq_ready(const struct io_uring *ring);
int io_uring_get_events(struct io_uring *ring);
int io_uring_register_files(struct io_uring *ring, const int *files, unsigned nr_files);
int io_uring_unregister_files(struct io_uring *ring);
int io_uring_register_eventfd(struct io_uring *ring, int fd);
int io_uring_unregister_eventfd(struct io_uring *ring);

/* one CQE, copied out so Python never holds a pointer into the ring */
struct pt_cqe { uint64_t user_data; int32_t res; uint32_t flags; };
unsigned pt_peek_cqes(struct io_uring *ring, struct pt_cqe *out, unsigned max);
int pt_wait_cqe(struct io_uring *ring);
int pt_liburing_version(void);

/* --- the engine's hot path --------------------------------------------- */
"""
    + STRUCTS
    + r"""

int64_t pt_now_ns(void);
int32_t pt_gettid(void);
unsigned pt_cq_ready_taskrun(struct io_uring *ring);
int64_t pt_queue(struct pt_driver *d, int op, int fd, uint32_t len, uint64_t offset,
                 int32_t device, int64_t section_id, int32_t section_owner, int32_t sync, int32_t guest);
int pt_refill(struct pt_driver *d, uint32_t guest);
int pt_queue_vq(struct pt_driver *d, uint32_t guest, uint32_t n, int fd, uint32_t len, int32_t device,
                int64_t section_id, int32_t section_owner);
uint32_t pt_requeue_short(struct pt_driver *d, uint32_t slot, int32_t res);
void pt_finish(struct pt_driver *d, uint32_t slot, int32_t logged_res, int32_t guest_res);
int pt_flush(struct pt_driver *d, int32_t reason);
unsigned pt_reap(struct pt_driver *d, uint32_t *out_slots, int32_t *out_res, uint8_t *out_pending, unsigned max);
int pt_section_begin(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls);
void pt_section_end(struct pt_driver *d, int64_t section_id, int32_t nr_calls);
int pt_section_done(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls);
int pt_handler_done(struct pt_driver *d, int32_t device, int64_t begin_ns, int64_t section_id,
                    int32_t section_owner);
void pt_fill_pattern(char *buf, uint32_t len, uint64_t offset, uint64_t seed);
int64_t pt_check_pattern(const char *buf, uint32_t len, uint64_t offset, uint64_t seed);

/* --- uprobe markers ---------------------------------------------------- */
void plugtrace_mark_section_begin(uint64_t section_id, int32_t owner_device);
void plugtrace_mark_section_end(uint64_t section_id, uint32_t nr_calls);
void plugtrace_mark_deferred_run(uint64_t section_id, uint32_t index);
void plugtrace_mark_request_queued(uint64_t req_id, int32_t device);
void plugtrace_mark_submit(int64_t submit_seq, uint32_t nr_sqes);
"""
)

SOURCE = (
    r"""
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <liburing.h>

#define PT_EXPORT __attribute__((noinline, used, visibility("default")))
/* The empty asm keeps the compiler from merging or dropping the markers:
 * a uprobe needs each one to be a real function with its own address. */
#define PT_MARKER_BODY(a, b) __asm__ volatile("" :: "r"(a), "r"(b) : "memory")

PT_EXPORT void plugtrace_mark_section_begin(uint64_t section_id, int32_t owner_device)
{ PT_MARKER_BODY(section_id, owner_device); }
PT_EXPORT void plugtrace_mark_section_end(uint64_t section_id, uint32_t nr_calls)
{ PT_MARKER_BODY(section_id, nr_calls); }
PT_EXPORT void plugtrace_mark_deferred_run(uint64_t section_id, uint32_t index)
{ PT_MARKER_BODY(section_id, index); }
PT_EXPORT void plugtrace_mark_request_queued(uint64_t req_id, int32_t device)
{ PT_MARKER_BODY(req_id, device); }
PT_EXPORT void plugtrace_mark_submit(int64_t submit_seq, uint32_t nr_sqes)
{ PT_MARKER_BODY(submit_seq, nr_sqes); }

struct pt_cqe { uint64_t user_data; int32_t res; uint32_t flags; };

static unsigned pt_peek_cqes(struct io_uring *ring, struct pt_cqe *out, unsigned max)
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

static int pt_wait_cqe(struct io_uring *ring)
{
    struct io_uring_cqe *cqe;
    return io_uring_wait_cqe(ring, &cqe);
}

static int pt_liburing_version(void)
{
#ifdef IO_URING_VERSION_MAJOR
    return IO_URING_VERSION_MAJOR * 100 + IO_URING_VERSION_MINOR;
#else
    return -1;
#endif
}

"""
    + STRUCTS
    + r"""

static int64_t pt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int32_t pt_gettid(void) { return (int32_t)syscall(SYS_gettid); }

/* CQEs ready on a ring set up with COOP_TASKRUN|TASKRUN_FLAG: completions
 * wait as task work until the thread enters the kernel, and the kernel flags
 * IORING_SQ_TASKRUN when there is some. Enter (a syscall) only then. */
static unsigned pt_cq_ready_taskrun(struct io_uring *ring)
{
    if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN)
        io_uring_get_events(ring);
    return io_uring_cq_ready(ring);
}

/* Queue one request in a free slot (its buffer is the slot's; a write's
 * buffer is filled with the run's verifiable pattern). `guest` is the index
 * of the guest its completion counts to, or -1 to hand it to Python.
 * Returns the slot, or -1 when no slot is free. */
static void pt_fill_pattern(char *buf, uint32_t len, uint64_t offset, uint64_t seed);
static int64_t pt_queue_at(struct pt_driver *d, int64_t now, int op, int fd, uint32_t len, uint64_t offset,
                           int32_t device, int64_t section_id, int32_t section_owner, int32_t sync,
                           int32_t guest)
{
    if (d->nfree == 0)
        return -1;
    uint32_t slot = d->free_slots[--d->nfree];
    struct pt_req *r = &d->reqs[slot];
    r->req_id = d->next_req_id++;
    r->buf = d->bufbase + (size_t)slot * d->slot_bytes;
    if (op == 1)
        pt_fill_pattern(r->buf, len, offset, d->seed);
    r->queue_ns = now;
    r->submit_ns = -1;
    r->complete_ns = -1;
    r->submit_seq = -1;
    r->section_id = section_id;
    r->offset = r->orig_offset = offset;
    r->len = r->orig_len = len;
    r->done = 0;
    r->device = device;
    r->fd = fd;
    r->op = op;
    r->res = 0;
    r->resubmits = 0;
    r->section_owner = section_owner;
    r->sync = sync;
    r->thread = d->thread;
    r->tid = d->tid;
    r->guest = guest;
    d->queue[d->qtail++ % d->qcap] = slot;
    plugtrace_mark_request_queued(r->req_id, device);
    return slot;
}

static int64_t pt_queue(struct pt_driver *d, int op, int fd, uint32_t len, uint64_t offset,
                        int32_t device, int64_t section_id, int32_t section_owner, int32_t sync,
                        int32_t guest)
{
    return pt_queue_at(d, pt_now_ns(), op, fd, len, offset, device, section_id, section_owner, sync, guest);
}

/* The guest's refill (emulation.Guest): make requests available on its
 * virtqueue until `iodepth` are outstanding (or its request budget is spent).
 * Returns how many, or -1 when its chunk of offsets is used up: Python draws
 * a new chunk and calls again. */
static int pt_refill(struct pt_driver *d, uint32_t guest)
{
    struct pt_guest *g = d->guests[guest];
    int64_t n = (int64_t)g->iodepth - g->outstanding;
    if (g->max_requests >= 0 && g->max_requests - g->issued < n)
        n = g->max_requests - g->issued;
    if (n <= 0 || g->stopped)
        return 0;
    if (g->chunk_pos + n > g->chunk_len)
        return -1;
    for (int64_t i = 0; i < n; i++) {
        uint32_t at = (uint32_t)(g->vq_tail++ % g->iodepth);
        g->vq_offsets[at] = g->chunk_offsets[g->chunk_pos];
        g->vq_ops[at] = g->chunk_ops[g->chunk_pos++];
    }
    g->issued += n;
    g->outstanding += (uint32_t)n;
    return (int)n;
}

/* The device handler takes `n` requests off the guest's virtqueue and queues
 * them in a row: one crossing into C per run of requests, and one clock read
 * (they are queued within a microsecond of it). Returns -1 (and queues none)
 * when there are not `n` free slots. */
static int pt_queue_vq(struct pt_driver *d, uint32_t guest, uint32_t n, int fd, uint32_t len, int32_t device,
                       int64_t section_id, int32_t section_owner)
{
    struct pt_guest *g = d->guests[guest];
    if (d->nfree < n || g->vq_tail - g->vq_head < n)
        return -1;
    int64_t now = pt_now_ns();
    for (uint32_t i = 0; i < n; i++) {
        uint32_t at = (uint32_t)(g->vq_head++ % g->iodepth);
        pt_queue_at(d, now, g->vq_ops[at], fd, len, (uint64_t)g->vq_offsets[at], device, section_id, section_owner, 0,
                 (int32_t)guest);
    }
    return (int)n;
}

/* QEMU's luring_resubmit_short_read(): continue where the short read stopped. */
static uint32_t pt_requeue_short(struct pt_driver *d, uint32_t slot, int32_t res)
{
    struct pt_req *r = &d->reqs[slot];
    r->done += (uint32_t)res;
    r->offset += (uint64_t)res;
    r->buf += res;
    r->len -= (uint32_t)res;
    r->resubmits++;
    d->queue[d->qtail++ % d->qcap] = slot;
    return (uint32_t)(d->qtail - d->qhead);
}

/* A request is finished: log it with `logged_res` (what the kernel did), count
 * `guest_res` (what the guest sees) to its guest, free its slot. */
static void pt_finish(struct pt_driver *d, uint32_t slot, int32_t logged_res, int32_t guest_res)
{
    struct pt_req *r = &d->reqs[slot];
    r->res = logged_res;
    /* the log has room: pt_reap never takes more CQEs than there is room for */
    d->done_log[d->done_len++] = *r;
    d->completed++;
    if (r->guest >= 0) {
        struct pt_guest *g = d->guests[r->guest];
        g->outstanding--;
        g->completed++;
        if (guest_res < 0) {
            g->errors++;
            if (!g->first_error)
                g->first_error = guest_res;
        } else if (r->op == 1 && d->written) {
            /* a block counts as written, and is verified later, once a write to it succeeded */
            d->written[r->orig_offset / d->written_bs] = 1;
        }
        if (!g->touched) {
            g->touched = 1;
            d->touched[d->ntouched++] = (uint32_t)r->guest;
        }
    }
    d->free_slots[d->nfree++] = slot;
}

/* Move queued requests into SQEs while the SQ ring has room, then submit them
 * all in one io_uring_enter(). Returns io_uring_submit()'s result. */
static int pt_flush(struct pt_driver *d, int32_t reason)
{
    struct io_uring_sqe *sqe;
    int64_t seq = d->submit_seq++;
    int64_t flush_ns = pt_now_ns();
    while (d->qhead != d->qtail) {
        sqe = io_uring_get_sqe(d->ring);
        if (!sqe)
            break;
        uint32_t slot = d->queue[d->qhead++ % d->qcap];
        struct pt_req *r = &d->reqs[slot];
        if (r->op == 0)
            io_uring_prep_read(sqe, r->fd, r->buf, r->len, r->offset);
        else
            io_uring_prep_write(sqe, r->fd, r->buf, r->len, r->offset);
        io_uring_sqe_set_data64(sqe, slot);
        r->submit_seq = seq;
        r->submit_ns = flush_ns;
    }
    unsigned to_submit = io_uring_sq_ready(d->ring);
    plugtrace_mark_submit(seq, to_submit);
    int64_t start = pt_now_ns();
    int ret = io_uring_submit(d->ring);
    int64_t end = pt_now_ns();
    if (d->sub_len < d->sub_cap) {
        struct pt_submit_rec *s = &d->sub_log[d->sub_len++];
        s->seq = seq;
        s->start_ns = start;
        s->end_ns = end;
        s->to_submit = (int32_t)to_submit;
        s->ret = ret;
        s->reason = reason;
        s->thread = d->thread;
        s->tid = d->tid;
        s->pad = 0;
    }
    return ret;
}

/* Reap CQEs (at most `max`, and never more than the done log has room for);
 * returns how many. A request that is finished (full transfer or an error)
 * is logged, counted to its guest (listed in `touched`) and its slot freed.
 * Python hears (in out_*, d->nout of them) of the rest: a finished request
 * with no guest (out_pending[i] == 0: call its callback) and a short transfer
 * or -EAGAIN/-EINTR (out_pending[i] == 1: the driver resubmits, pads, or
 * fails it). */
static unsigned pt_reap(struct pt_driver *d, uint32_t *out_slots, int32_t *out_res,
                        uint8_t *out_pending, unsigned max)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0, nout = 0;
    unsigned room = d->done_cap - d->done_len;
    if (max > room)
        max = room;
    int64_t now = pt_now_ns();
    io_uring_for_each_cqe(d->ring, head, cqe) {
        if (n == max)
            break;
        n++;
        uint32_t slot = (uint32_t)cqe->user_data;
        struct pt_req *r = &d->reqs[slot];
        int32_t res = cqe->res;
        r->complete_ns = now;
        if ((res < 0 && res != -EAGAIN && res != -EINTR) || (res >= 0 && (uint32_t)res == r->len)) {
            if (res > 0)
                res += (int32_t)r->done;
            int32_t guest = r->guest;
            pt_finish(d, slot, res, res);
            if (guest >= 0)
                continue;
            out_pending[nout] = 0;
        } else {
            out_pending[nout] = 1;
        }
        out_slots[nout] = slot;
        out_res[nout] = res;
        nout++;
    }
    io_uring_cq_advance(d->ring, n);
    d->nout = nout;
    return n;
}

/* The section log: hooks of plug's outermost sections (run.py's _SectionLog)
 * call these, which also fire the uprobe markers. pt_section_done and
 * pt_handler_done return 1 when their log is full (Python flushes it). */
static int pt_section_begin(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls)
{
    plugtrace_mark_section_begin((uint64_t)section_id, owner);
    d->sec_begin_ns = pt_now_ns();
    d->sec_begin_polls = nested_polls;
    return 0;
}

static void pt_section_end(struct pt_driver *d, int64_t section_id, int32_t nr_calls)
{
    d->sec_calls = nr_calls;
    plugtrace_mark_section_end((uint64_t)section_id, (uint32_t)nr_calls);
}

static int pt_section_done(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls)
{
    struct pt_section_rec *s = &d->sec_log[d->sec_len++];
    s->section_id = section_id;
    s->begin_ns = d->sec_begin_ns;
    s->end_ns = pt_now_ns();
    s->thread = d->thread;
    s->tid = d->tid;
    s->owner = owner;
    s->nr_deferred_calls = d->sec_calls;
    s->nr_nested_polls = nested_polls - d->sec_begin_polls;
    s->pad = 0;
    return d->sec_len == d->sec_cap;
}

static int pt_handler_done(struct pt_driver *d, int32_t device, int64_t begin_ns, int64_t section_id,
                           int32_t section_owner)
{
    struct pt_handler_rec *h = &d->hnd_log[d->hnd_len++];
    h->begin_ns = begin_ns;
    h->end_ns = pt_now_ns();
    h->section_id = section_id;
    h->thread = d->thread;
    h->tid = d->tid;
    h->device = device;
    h->section_owner = section_owner;
    return d->hnd_len == d->hnd_cap;
}

/* A verifiable pattern: every 8-byte word holds a function of its absolute
 * byte offset and a per-run seed, so a block read back can be checked
 * without keeping a copy of what was written. */
static inline uint64_t pt_word(uint64_t off, uint64_t seed)
{
    uint64_t x = off ^ (seed * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    return x;
}

static void pt_fill_pattern(char *buf, uint32_t len, uint64_t offset, uint64_t seed)
{
    for (uint32_t i = 0; i + 8 <= len; i += 8) {
        uint64_t w = pt_word(offset + i, seed);
        memcpy(buf + i, &w, 8);
    }
}

/* Returns -1 when the buffer matches, else the byte index of the first bad word. */
static int64_t pt_check_pattern(const char *buf, uint32_t len, uint64_t offset, uint64_t seed)
{
    for (uint32_t i = 0; i + 8 <= len; i += 8) {
        uint64_t w = pt_word(offset + i, seed), got;
        memcpy(&got, buf + i, 8);
        if (got != w)
            return i;
    }
    return -1;
}
"""
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "plugtrace.uring._uring",
    SOURCE,
    libraries=["uring"],
    extra_compile_args=["-O2", "-fvisibility=default"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
