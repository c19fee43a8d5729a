/*
 * records.h - what our eBPF programs (probes/NAME.bpf.c) hand to user space,
 * defined once for both sides.
 *
 * The programs write these structs into BPF ring buffers (events mode) and
 * count into per-CPU arrays of u64 sized by the constants below (aggregate
 * mode). plugtrace reads the same declarations through its cffi binding
 * (plugtrace/tracing/_libbpf_build.py), which checks them against the C
 * compiler and derives the numpy dtypes of the ring readers from them. So:
 * plain fixed-width fields, each struct a multiple of 8 bytes (a ring record
 * is 8-byte aligned), only integer #defines, no other preprocessor lines.
 */
#pragma once

/* lhist(x, 0, 1000, 1) as bpftrace: slot k for k, LHIST_TOP for >= 1000, LHIST_TOP + 1 for < 0 */
#define LHIST_TOP 1000
#define LHIST_SLOTS 1002
/* hist(x) as bpftrace: slot 0 for 0, k + 1 for [2^k, 2^(k+1)) */
#define HIST_SLOTS 65
/* block requests in flight: one slot per (hardware queue < 16, tag < 4096) */
#define RQ_SLOTS 65536

/* io_uring_enter.bpf.c: one io_uring_enter() of the traced process */
struct enter_event {
	uint64_t ts_ns;
	uint64_t latency_ns;
	int32_t tid;
	int32_t fd;
	uint32_t to_submit;
	uint32_t min_complete;
	uint32_t flags;
	int32_t ret;
};

/* uring_requests.bpf.c: a request's submission (event 0) or completion (event 1) */
struct uring_request_event {
	uint64_t ts_ns;
	uint64_t user_data;
	int32_t tid;
	int32_t event;
	int32_t opcode;
	int32_t res;
};

/* block_plug.bpf.c: requests flushed by one block-layer unplug */
struct unplug_event {
	uint64_t ts_ns;
	int32_t tid;
	int32_t nr_rq;
};

/* block_rq.bpf.c: one completed block request */
struct block_rq_event {
	uint64_t issue_ns;
	uint64_t complete_ns;
	uint64_t latency_ns;
	uint64_t dev;
	uint64_t sector;
	uint32_t nr_bytes;
	uint32_t cmd_flags;
};
