/*
 * log_records.h - the engine's app-side log, declared once: one row of each table it writes.
 *
 * `struct pt_<table>_row` is one row of the run's table <table> (docs/run-format.md): its fields are the
 * table's columns, in their order, named as them and of their types. The driver's C fills rows in logs
 * that Python hands, without a copy, to the run writer as numpy records; plugtrace.engine.records derives
 * their dtypes from the compiled declarations, and plugtrace.schema the tables' columns from this text.
 * So: only int32_t, int64_t, bool and enum fields (an enum is a string column of its members' names), and
 * no preprocessor lines but the ones here (cffi reads the rest as declarations).
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* Why the driver submitted (the `reason` of a submit). An enum column holds its members' names without
 * the enum's own (PT_SUBMIT_REASON_), in lower case: "deferred", "max_entries", ... */
enum pt_submit_reason {
    PT_SUBMIT_REASON_DEFERRED,      /* a deferred call at the end of a plug section */
    PT_SUBMIT_REASON_MAX_ENTRIES,   /* MAX_ENTRIES requests queued or in flight */
    PT_SUBMIT_REASON_IMMEDIATE,     /* the immediate strategy: every request at once */
    PT_SUBMIT_REASON_ITERATION,     /* the loop-iteration strategy: once per event loop iteration */
    PT_SUBMIT_REASON_COMPLETION,    /* what is still queued, after reaping (and as a thread winds down) */
    PT_SUBMIT_REASON_UNPLUG,        /* the device-plug strategy: its last unplug */
    PT_SUBMIT_REASON_SYNC,          /* a synchronous request, waited for with a nested aio_poll() */
    PT_SUBMIT_REASON_REMOTE_UNPLUG, /* device-plug, several queues: another thread's last unplug of a device */
};

/* requests: one finished io_uring request (its original offset and length, not those of a resubmitted rest);
 * a merged one stands for the guest requests it carries */
struct pt_requests_row {
    int64_t req_id;
    int32_t thread;
    int32_t tid;
    int32_t device;
    int32_t queue; /* the device's virtqueue it came from (0 for a sync read and with one queue) */
    int32_t op;    /* 0: read, 1: write */
    int64_t offset_bytes;
    int64_t len_bytes;
    int32_t nr_guest_requests; /* guest requests it carries: more than 1 where virtio-blk merged them */
    int64_t queue_ns;
    int64_t submit_ns; /* -1: never submitted */
    int64_t complete_ns;
    int64_t submit_seq; /* the last one, when resubmitted */
    int64_t section_id;
    int32_t section_owner;
    int32_t deferred_by_thread; /* -1, or the thread whose last unplug of the device got it submitted */
    bool sync;
    int32_t resubmits;
    int32_t result; /* bytes transferred, or -errno */
};

/* submits: one io_uring_submit() (one io_uring_enter()) */
struct pt_submits_row {
    int64_t submit_seq;
    int32_t thread;
    int32_t tid;
    int64_t start_ns;
    int64_t end_ns;
    int64_t latency_ns;
    int32_t nr_sqes; /* SQEs ready in the SQ ring when it was called */
    int32_t ret;
    enum pt_submit_reason reason;
};

/* sections: one outermost plug section */
struct pt_sections_row {
    int64_t section_id;
    int32_t thread;
    int32_t tid;
    int32_t owner;
    int64_t begin_ns;
    int64_t end_ns;
    int32_t nr_deferred_calls;
    int32_t nr_nested_polls;
};

/* handlers: one run of a device's virtqueue handler */
struct pt_handlers_row {
    int32_t thread;
    int32_t tid;
    int32_t device;
    int32_t queue;
    int64_t begin_ns;
    int64_t end_ns;
    int64_t section_id;
    int32_t section_owner;
};
