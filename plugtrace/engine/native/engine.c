/* engine.c - the engine's per-request work (engine.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <liburing.h>
#include "engine.h"
#include "markers.h"
#include "pattern.h"

int64_t pt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int32_t pt_gettid(void)
{
    return (int32_t)syscall(SYS_gettid);
}

/* Take a free slot for one request (its buffer is the slot's; a write's buffer is filled with the run's
 * verifiable pattern), not queued yet. `guest` is the index of the guest its completion counts to, or -1 to
 * hand it to Python. The caller made sure a slot is free. */
static uint32_t pt_take(struct pt_driver *d, int64_t now, int op, int fd, uint32_t len, uint64_t offset, int32_t device,
                        int64_t section_id, int32_t section_owner, int32_t sync, int32_t guest)
{
    uint32_t slot = d->free_slots[--d->nfree];
    struct pt_req *r = &d->reqs[slot];
    struct pt_requests_row *row = &r->log;
    row->req_id = -1;
    row->thread = d->thread;
    row->tid = d->tid;
    row->device = device;
    row->queue = guest >= 0 ? d->guests[guest]->queue : 0;
    row->op = op;
    row->offset_bytes = (int64_t)offset;
    row->len_bytes = len;
    row->nr_guest_requests = 1;
    row->queue_ns = now;
    row->submit_ns = -1;
    row->complete_ns = -1;
    row->submit_seq = -1;
    row->section_id = section_id;
    row->section_owner = section_owner;
    row->deferred_by_thread = -1;
    row->sync = sync != 0;
    row->resubmits = 0;
    row->result = 0;
    r->offset = offset;
    r->buf = d->bufbase + (size_t)slot * d->slot_bytes;
    r->len = len;
    r->done = 0;
    r->fd = fd;
    r->guest = guest;
    r->next_merged = -1;
    r->niov = 0;
    r->hold_ns = 0;
    if (op == 1)
        pt_fill_pattern(r->buf, len, offset, d->seed);
    return slot;
}

/* Queue the request in `slot` for the next submit: it becomes an io_uring request, with its req_id. */
static void pt_enqueue(struct pt_driver *d, uint32_t slot)
{
    struct pt_requests_row *row = &d->reqs[slot].log;
    row->req_id = (int64_t)d->next_req_id++;
    d->queue[d->qtail++ % d->qcap] = slot;
    plugtrace_mark_request_queued((uint64_t)row->req_id, row->device);
}

/* Queue one request in a free slot. Returns the slot, or -1 when no slot is free. */
static int64_t pt_queue_at(struct pt_driver *d, int64_t now, int op, int fd, uint32_t len, uint64_t offset,
                           int32_t device, int64_t section_id, int32_t section_owner, int32_t sync, int32_t guest)
{
    if (d->nfree == 0)
        return -1;
    uint32_t slot = pt_take(d, now, op, fd, len, offset, device, section_id, section_owner, sync, guest);
    pt_enqueue(d, slot);
    return slot;
}

int64_t pt_queue(struct pt_driver *d, int op, int fd, uint32_t len, uint64_t offset, int32_t device, int64_t section_id,
                 int32_t section_owner, int32_t sync, int32_t guest)
{
    return pt_queue_at(d, pt_now_ns(), op, fd, len, offset, device, section_id, section_owner, sync, guest);
}

/* The guest's refill (emulation.Guest): make requests available on its virtqueue until `iodepth` are
 * outstanding (or its request budget is spent). Returns how many, or -1 when its chunk of offsets is used
 * up: Python draws a new chunk and calls again. */
int pt_refill(struct pt_driver *d, uint32_t guest)
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
        if (g->chunk_lens)
            g->vq_lens[at] = g->chunk_lens[g->chunk_pos];
        if (g->chunk_hold)
            g->vq_hold[at] = g->chunk_hold[g->chunk_pos];
        g->vq_ops[at] = g->chunk_ops[g->chunk_pos++];
    }
    g->issued += n;
    g->outstanding += (uint32_t)n;
    return (int)n;
}

/* The device handler takes `n` requests off the guest's virtqueue and queues them in a row: one crossing
 * into C per run of requests, and one clock read (they are queued within a microsecond of it). Returns -1
 * (and queues none) when there are not `n` free slots. */
int pt_queue_vq(struct pt_driver *d, uint32_t guest, uint32_t n, int fd, uint32_t len, int32_t device,
                int64_t section_id, int32_t section_owner)
{
    struct pt_guest *g = d->guests[guest];
    if (d->nfree < n || g->vq_tail - g->vq_head < n)
        return -1;
    int64_t now = pt_now_ns();
    for (uint32_t i = 0; i < n; i++) {
        uint32_t at = (uint32_t)(g->vq_head++ % g->iodepth);
        uint32_t n_bytes = g->vq_lens ? (uint32_t)g->vq_lens[at] : len;
        int64_t slot = pt_queue_at(d, now, g->vq_ops[at], fd, n_bytes, (uint64_t)g->vq_offsets[at], device, section_id,
                                   section_owner, 0, (int32_t)guest);
        if (g->vq_hold)
            d->reqs[slot].hold_ns = g->vq_hold[at];
    }
    return (int)n;
}

/* virtio-blk's request merging: virtio_blk_handle_request() collects read and write requests in a
 * MultiReqBuffer and virtio_blk_submit_multireq() submits it when it holds VIRTIO_BLK_MAX_MERGE_REQS
 * requests, before a request of the other direction joins, and at the end of the handler run. It sorts them
 * by sector and merges each run of contiguous ones into one request (one preadv/pwritev of their iovecs)
 * while the merged one stays within the backend's max_transfer and IOV_MAX iovecs (never reached here: at
 * most PT_MRB_MAX requests of one iovec each).
 *
 * pt_mrb_fill takes the next requests off the guest's virtqueue that would fill one buffer (at most `n`,
 * PT_MRB_MAX, up to a change of direction), sorts and merges them, and returns how many requests they make
 * (d->mrb_heads, in offset order), or -1 (taking none) when there are not enough free slots. pt_mrb_queue
 * queues merged requests `first` .. `first + k - 1` of them. */
int pt_mrb_fill(struct pt_driver *d, uint32_t guest, uint32_t n, int fd, uint32_t len, int32_t device,
                int64_t section_id, int32_t section_owner, int64_t max_transfer)
{
    struct pt_guest *g = d->guests[guest];
    if (n > g->vq_tail - g->vq_head)
        n = (uint32_t)(g->vq_tail - g->vq_head);
    if (n > PT_MRB_MAX)
        n = PT_MRB_MAX;
    if (d->nfree < n)
        return -1;
    int64_t now = pt_now_ns();
    uint32_t m = 0;
    int op = -1;
    while (m < n) {
        uint32_t at = (uint32_t)(g->vq_head % g->iodepth);
        if (m > 0 && g->vq_ops[at] != op)
            break; /* the direction changes: the buffer is submitted first */
        op = g->vq_ops[at];
        g->vq_head++;
        uint32_t n_bytes = g->vq_lens ? (uint32_t)g->vq_lens[at] : len;
        uint32_t slot = pt_take(d, now, op, fd, n_bytes, (uint64_t)g->vq_offsets[at], device, section_id, section_owner,
                                0, (int32_t)guest);
        if (g->vq_hold)
            d->reqs[slot].hold_ns = g->vq_hold[at]; /* a merged request is held as long as its first */
        d->mrb_slots[m++] = slot;
    }
    /* multireq_compare: by sector (a stable insertion sort of at most PT_MRB_MAX) */
    for (uint32_t i = 1; i < m; i++) {
        uint32_t s = d->mrb_slots[i], j = i;
        for (; j > 0 && d->reqs[d->mrb_slots[j - 1]].offset > d->reqs[s].offset; j--)
            d->mrb_slots[j] = d->mrb_slots[j - 1];
        d->mrb_slots[j] = s;
    }
    d->mrb_nheads = 0;
    struct pt_req *head = NULL, *last = NULL;
    for (uint32_t i = 0; i < m; i++) {
        uint32_t s = d->mrb_slots[i];
        struct pt_req *r = &d->reqs[s];
        if (head && r->offset == head->offset + head->len && (int64_t)head->len + r->len <= max_transfer) {
            struct iovec *iov = d->iovs + (size_t)(head - d->reqs) * PT_MRB_MAX;
            if (head->niov == 0) {
                iov[0].iov_base = head->buf;
                iov[0].iov_len = head->len;
                head->niov = 1;
            }
            iov[head->niov].iov_base = r->buf;
            iov[head->niov++].iov_len = r->len;
            head->len += r->len;
            head->log.len_bytes += r->len;
            head->log.nr_guest_requests++;
            last->next_merged = (int32_t)s;
            last = r;
            continue;
        }
        head = last = r;
        d->mrb_heads[d->mrb_nheads++] = s;
    }
    return (int)d->mrb_nheads;
}

void pt_mrb_queue(struct pt_driver *d, uint32_t first, uint32_t k)
{
    for (uint32_t i = first; i < first + k && i < d->mrb_nheads; i++)
        pt_enqueue(d, d->mrb_heads[i]);
}

/* QEMU's luring_resubmit_short_read(): continue where the short read stopped. */
uint32_t pt_requeue_short(struct pt_driver *d, uint32_t slot, int32_t res)
{
    struct pt_req *r = &d->reqs[slot];
    r->done += (uint32_t)res;
    r->offset += (uint64_t)res;
    r->buf += res;
    r->len -= (uint32_t)res;
    r->log.resubmits++;
    if (r->niov) { /* a merged request: drop what was transferred from the front of its iovecs */
        struct iovec *iov = d->iovs + (size_t)slot * PT_MRB_MAX;
        size_t skip = (size_t)res;
        uint32_t i = 0;
        while (i < r->niov && skip >= iov[i].iov_len)
            skip -= iov[i++].iov_len;
        memmove(iov, iov + i, (r->niov - i) * sizeof(*iov));
        r->niov -= i;
        if (r->niov) {
            iov[0].iov_base = (char *)iov[0].iov_base + skip;
            iov[0].iov_len -= skip;
        }
    }
    d->queue[d->qtail++ % d->qcap] = slot;
    return (uint32_t)(d->qtail - d->qhead);
}

/* A read that ended at the end of the file: the rest of its buffer (or of its iovecs) reads as zeroes. */
void pt_zero_rest(struct pt_driver *d, uint32_t slot)
{
    struct pt_req *r = &d->reqs[slot];
    if (!r->niov) {
        memset(r->buf, 0, r->len);
        return;
    }
    struct iovec *iov = d->iovs + (size_t)slot * PT_MRB_MAX;
    for (uint32_t i = 0; i < r->niov; i++)
        memset(iov[i].iov_base, 0, iov[i].iov_len);
}

/* One guest request of a finished request counts to its guest (`guest_res`: what the guest sees). */
static void pt_count_to_guest(struct pt_driver *d, struct pt_req *r, int32_t guest_res)
{
    struct pt_guest *g = d->guests[r->guest];
    g->outstanding--;
    g->completed++;
    if (guest_res < 0) {
        g->errors++;
        if (!g->first_error)
            g->first_error = guest_res;
    } else if (r->log.op == 1 && d->written) {
        /* a block counts as written, and is verified later, once a write to it succeeded */
        d->written[(uint64_t)r->log.offset_bytes / d->written_bs] = 1;
    }
    if (!g->touched) {
        g->touched = 1;
        d->touched[d->ntouched++] = (uint32_t)r->guest;
    }
}

/* A request is finished: log it with `logged_res` (what the kernel did), count `guest_res` (what the guest
 * sees) to its guest, free its slot; a merged request, each guest request it carries. */
void pt_finish(struct pt_driver *d, uint32_t slot, int32_t logged_res, int32_t guest_res)
{
    struct pt_req *r = &d->reqs[slot];
    r->log.result = logged_res;
    /* the log has room: pt_reap never takes more CQEs than there is room for */
    d->requests_log[d->requests_len++] = r->log;
    d->completed += r->log.nr_guest_requests;
    for (int32_t s = (int32_t)slot; s >= 0;) {
        struct pt_req *part = &d->reqs[s];
        int32_t next = part->next_merged;
        if (part->guest >= 0)
            pt_count_to_guest(d, part, guest_res);
        d->free_slots[d->nfree++] = (uint32_t)s;
        s = next;
    }
}

/* Move queued requests into SQEs while the SQ ring has room, then submit them all in one io_uring_enter().
 * Returns io_uring_submit()'s result. */
int pt_flush(struct pt_driver *d, enum pt_submit_reason reason)
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
        if (r->niov) {
            struct iovec *iov = d->iovs + (size_t)slot * PT_MRB_MAX;
            if (r->log.op == 0)
                io_uring_prep_readv(sqe, r->fd, iov, r->niov, r->offset);
            else
                io_uring_prep_writev(sqe, r->fd, iov, r->niov, r->offset);
        } else if (r->log.op == 0)
            io_uring_prep_read(sqe, r->fd, r->buf, r->len, r->offset);
        else
            io_uring_prep_write(sqe, r->fd, r->buf, r->len, r->offset);
        io_uring_sqe_set_data64(sqe, slot);
        r->log.submit_seq = seq;
        r->log.submit_ns = flush_ns;
        if (reason == PT_SUBMIT_REASON_REMOTE_UNPLUG)
            r->log.deferred_by_thread = d->unplugged_by;
    }
    unsigned to_submit = io_uring_sq_ready(d->ring);
    plugtrace_mark_submit(seq, to_submit);
    int64_t start = pt_now_ns();
    int ret = io_uring_submit(d->ring);
    int64_t end = pt_now_ns();
    if (d->submits_len < d->submits_cap) {
        struct pt_submits_row *s = &d->submits_log[d->submits_len++];
        s->submit_seq = seq;
        s->thread = d->thread;
        s->tid = d->tid;
        s->start_ns = start;
        s->end_ns = end;
        s->latency_ns = end - start;
        s->nr_sqes = (int32_t)to_submit;
        s->ret = ret;
        s->reason = reason;
    }
    return ret;
}

/* Reap CQEs (at most `max`, and never more than the requests log has room for); returns how many. A
 * request that is finished (full transfer or an error) is logged, counted to its guest (listed in
 * `touched`) and its slot freed. Python hears (in out_*, d->nout of them) of the rest: a finished request
 * with no guest (out_pending[i] == 0: call its callback), a short transfer or -EAGAIN/-EINTR
 * (out_pending[i] == 1: the driver resubmits, pads, or fails it), and a replayed request that completed
 * before its given latency was up (out_pending[i] == 2, d->nheld of them: still in flight
 * until then). */
unsigned pt_reap(struct pt_driver *d, uint32_t *out_slots, int32_t *out_res, uint8_t *out_pending, unsigned max)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0, nout = 0, held = 0;
    unsigned room = d->requests_cap - d->requests_len;
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
        r->log.complete_ns = now;
        if ((res < 0 && res != -EAGAIN && res != -EINTR) || (res >= 0 && (uint32_t)res == r->len)) {
            if (res > 0)
                res += (int32_t)r->done;
            if (r->hold_ns && now < r->log.submit_ns + r->hold_ns) {
                /* its given latency (a replay's recorded one, a timed guest's drawn one) is not up: Python finishes it
                 * then */
                out_pending[nout] = 2;
                out_slots[nout] = slot;
                out_res[nout++] = res;
                held++;
                continue;
            }
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
    d->nheld = held;
    return n;
}

/* The section log: hooks of plug's outermost sections (run.py's _SectionLog) call these, which also fire
 * the uprobe markers. pt_section_done and pt_handler_done return 1 when their log is full (Python flushes
 * it). */
int pt_section_begin(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls)
{
    plugtrace_mark_section_begin((uint64_t)section_id, owner);
    d->sec_begin_ns = pt_now_ns();
    d->sec_begin_polls = nested_polls;
    return 0;
}

void pt_section_end(struct pt_driver *d, int64_t section_id, int32_t nr_calls)
{
    d->sec_calls = nr_calls;
    plugtrace_mark_section_end((uint64_t)section_id, (uint32_t)nr_calls);
}

int pt_section_done(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls)
{
    struct pt_sections_row *s = &d->sections_log[d->sections_len++];
    s->section_id = section_id;
    s->thread = d->thread;
    s->tid = d->tid;
    s->owner = owner;
    s->begin_ns = d->sec_begin_ns;
    s->end_ns = pt_now_ns();
    s->nr_deferred_calls = d->sec_calls;
    s->nr_nested_polls = nested_polls - d->sec_begin_polls;
    return d->sections_len == d->sections_cap;
}

int pt_handler_done(struct pt_driver *d, int32_t device, int32_t queue, int64_t begin_ns, int64_t section_id,
                    int32_t section_owner)
{
    struct pt_handlers_row *h = &d->handlers_log[d->handlers_len++];
    h->thread = d->thread;
    h->tid = d->tid;
    h->device = device;
    h->queue = queue;
    h->begin_ns = begin_ns;
    h->end_ns = pt_now_ns();
    h->section_id = section_id;
    h->section_owner = section_owner;
    return d->handlers_len == d->handlers_cap;
}
