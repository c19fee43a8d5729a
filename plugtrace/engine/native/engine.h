/*
 * engine.h - the engine's per-request work, in C so that Python runs once per section or batch, never
 * per request: an emulated guest making requests available on its virtqueue, the device handler queueing
 * them into free request slots, copying queued requests into SQEs, submitting, reaping CQEs, counting each
 * completion to its guest, marking written blocks, and the app-side log (log_records.h).
 *
 * Python (plugtrace/engine/driver.py, emulation.py) owns every buffer these structs point into and takes
 * the decisions of QEMU's block/io_uring.c; the functions here carry them out. Declarations only (cffi
 * reads them as they are).
 */
#pragma once
#include <stdint.h>
#include <sys/uio.h>
#include "log_records.h"

struct io_uring;

/* virtio-blk's request merging (hw/block/virtio-blk.c): at most this many requests wait in its
 * MultiReqBuffer (VIRTIO_BLK_MAX_MERGE_REQS), so a merged request has at most this many iovecs. */
enum { PT_MRB_MAX = 32 };

/* One request slot: its row of the requests table, filled as it goes, and where its rest goes. */
struct pt_req {
    struct pt_requests_row log;
    uint64_t offset; /* of what is left to transfer: past what a short read already read */
    char *buf;
    uint32_t len;
    uint32_t done; /* bytes the earlier parts of a short read transferred */
    int32_t fd;
    int32_t guest;       /* index of the guest it completes to; -1: reported to Python */
    int32_t next_merged; /* the next slot of a merged request (-1: none): only its first slot is submitted */
    uint32_t niov;       /* > 0: a merged request, read or written as iovecs (the driver's iovs + slot * PT_MRB_MAX) */
    int64_t
        hold_ns; /* a given device latency (a replay's, a timed guest's): done no earlier than submit_ns + hold_ns */
};

/* A closed-loop guest of one emulated device (emulation.Guest): how many requests it keeps outstanding,
 * the chunk of offsets and ops it draws them from, and its virtqueue (requests made available, not yet
 * taken). */
struct pt_guest {
    int64_t *chunk_offsets; /* numpy-owned, refreshed by Python when used up */
    int32_t *chunk_ops;
    uint32_t chunk_len;
    uint32_t chunk_pos;
    uint32_t iodepth;
    uint32_t outstanding;
    int64_t max_requests; /* -1: no limit */
    int64_t issued;
    int64_t completed;
    int64_t errors;
    int32_t first_error;
    int32_t stopped;
    int32_t touched;  /* listed in the driver's touched list */
    uint64_t vq_head; /* the virtqueue: a ring of iodepth entries (64-bit counts: */
    uint64_t vq_tail; /* a 32-bit one would wrap within an hour, breaking `% iodepth`) */
    int64_t *vq_offsets;
    int32_t *vq_ops;
    int32_t *chunk_lens; /* NULL: every request is the handler's `len`; else one length per request (a replay) */
    int32_t *vq_lens;
    int64_t *chunk_hold; /* NULL: none; else one device latency (ns) per request (a replay, a timed guest) */
    int64_t *vq_hold;
    int32_t queue; /* the device's virtqueue this guest's requests come from */
};

/* One event loop thread's driver (QEMU's LuringState). Each log is a numpy-owned array of rows:
 * <table>_log holds <table>_len of <table>_cap rows. */
struct pt_driver {
    struct io_uring *ring;
    struct pt_req *reqs;
    uint32_t nreqs;
    uint32_t *queue; /* slots queued but not yet in the SQ ring */
    uint32_t qcap;
    uint64_t qhead;
    uint64_t qtail;
    int64_t submit_seq;
    struct pt_requests_row *requests_log;
    uint32_t requests_cap;
    uint32_t requests_len;
    struct pt_submits_row *submits_log;
    uint32_t submits_cap;
    uint32_t submits_len;
    struct pt_sections_row *sections_log;
    uint32_t sections_cap;
    uint32_t sections_len;
    struct pt_handlers_row *handlers_log;
    uint32_t handlers_cap;
    uint32_t handlers_len;
    int32_t thread;
    int32_t tid;
    char *bufbase; /* slot i's buffer: bufbase + i * slot_bytes */
    uint32_t slot_bytes;
    uint64_t next_req_id;
    uint64_t seed;        /* data pattern of writes */
    uint32_t *free_slots; /* a stack of free request slots */
    uint32_t nfree;
    struct pt_guest **guests;
    uint32_t nguests;
    uint32_t *touched; /* guests with completions since Python last looked, in order */
    uint32_t ntouched;
    uint32_t nout;    /* CQEs pt_reap handed to Python */
    uint8_t *written; /* written[offset / written_bs] = 1 for each write that succeeded */
    uint32_t written_bs;
    int64_t completed;
    int64_t sec_begin_ns; /* the open outermost section's */
    int32_t sec_begin_polls;
    int32_t sec_calls;
    struct iovec *iovs; /* nreqs * PT_MRB_MAX: a merged request's, at its first slot's */
    /* virtio-blk's MultiReqBuffer: slots taken off a virtqueue, sorted by offset (pt_mrb_fill), and where each
     * merged request of them begins (mrb_heads: the slot of its first) */
    uint32_t *mrb_slots;
    uint32_t *mrb_heads;
    uint32_t mrb_nheads;
    int32_t unplugged_by; /* the thread whose unplug a PT_SUBMIT_REASON_REMOTE_UNPLUG flush submits for */
    uint32_t nheld;       /* of the CQEs the last pt_reap took, those held back for their recorded latency */
};

/* CLOCK_MONOTONIC, in ns: the clock of every *_ns column. */
int64_t pt_now_ns(void);
int32_t pt_gettid(void);

/* Requests: queue one, or `n` off a guest's virtqueue (or merged, as virtio-blk does); a guest's refill; a short
 * read's rest (and a read past the end padded); the end. */
int64_t pt_queue(struct pt_driver *d, int op, int fd, uint32_t len, uint64_t offset, int32_t device, int64_t section_id,
                 int32_t section_owner, int32_t sync, int32_t guest);
int pt_refill(struct pt_driver *d, uint32_t guest);
int pt_queue_vq(struct pt_driver *d, uint32_t guest, uint32_t n, int fd, uint32_t len, int32_t device,
                int64_t section_id, int32_t section_owner);
int pt_mrb_fill(struct pt_driver *d, uint32_t guest, uint32_t n, int fd, uint32_t len, int32_t device,
                int64_t section_id, int32_t section_owner, int64_t max_transfer);
void pt_mrb_queue(struct pt_driver *d, uint32_t first, uint32_t k);
uint32_t pt_requeue_short(struct pt_driver *d, uint32_t slot, int32_t res);
void pt_zero_rest(struct pt_driver *d, uint32_t slot);
void pt_finish(struct pt_driver *d, uint32_t slot, int32_t logged_res, int32_t guest_res);

/* The ring: submit what is queued; reap what completed. */
int pt_flush(struct pt_driver *d, enum pt_submit_reason reason);
unsigned pt_reap(struct pt_driver *d, uint32_t *out_slots, int32_t *out_res, uint8_t *out_pending, unsigned max);

/* The section and handler logs (run.py's _SectionLog), firing the uprobe markers too. */
int pt_section_begin(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls);
void pt_section_end(struct pt_driver *d, int64_t section_id, int32_t nr_calls);
int pt_section_done(struct pt_driver *d, int64_t section_id, int32_t owner, int32_t nested_polls);
int pt_handler_done(struct pt_driver *d, int32_t device, int32_t queue, int64_t begin_ns, int64_t section_id,
                    int32_t section_owner);
