/*
 * block_rq.bpf.c - block requests from issue to completion, on the watched
 * device or, without one, those the traced process issues (the readable
 * reference: block_rq.bt).
 *
 * A request in flight holds a driver tag, unique in its hardware queue, so
 * its issue time, device and sector wait in an array slot chosen by
 * (hardware queue, tag): no hashed lookup at either end. A completion whose
 * slot does not hold its device and sector (another device's request on the
 * same tag, when no device is watched) is not counted. Exact for up to 16
 * hardware queues of up to 4096 tags.
 *
 * Events mode: struct block_rq_event per completed request (cmd_flags are
 * spelled as the tracepoint's rwbs by plugtrace).
 * Aggregate mode: block_latency_ns (hist; its total is nr_block_rq).
 */
#include "plugtrace.bpf.h"

struct issued {
	uint64_t issue_ns;  /* 0: free */
	uint64_t dev;
	uint64_t sector;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RQ_SLOTS);
	__type(key, uint32_t);
	__type(value, struct issued);
} issued SEC(".maps");

PERCPU_COUNTERS(block_latency_ns, HIST_SLOTS);

/* The request's slot, or NULL when it is not on the watched device; *dev is its dev_t. */
static __always_inline struct issued *slot_of(struct request *rq, uint32_t *dev)
{
	struct gendisk *disk = rq->q->disk;
	struct blk_mq_hw_ctx *hctx;
	uint32_t slot;

	if (!disk)
		return NULL;
	*dev = (disk->major << 20) | disk->first_minor;
	if (watched_dev && *dev != watched_dev)
		return NULL;
	hctx = rq->mq_hctx;
	if (!hctx)
		return NULL;
	slot = ((hctx->queue_num << 12) | (rq->tag & 0xFFF)) & (RQ_SLOTS - 1);
	return bpf_map_lookup_elem(&issued, &slot);
}

/* Attached before the issue program: a request is counted only if its issue was seen. */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct issued *s;
	uint64_t issue_ns, now;
	uint32_t dev;

	s = slot_of(rq, &dev);
	if (!s)
		return 0;
	issue_ns = s->issue_ns;
	if (!issue_ns || s->dev != dev || s->sector != rq->__sector)  /* not seen issued, or another request */
		return 0;
	s->issue_ns = 0;
	now = bpf_ktime_get_ns();
	if (events_mode) {
		struct block_rq_event rec = {
			.issue_ns = issue_ns, .complete_ns = now, .latency_ns = now - issue_ns, .dev = dev,
			.sector = rq->__sector, .nr_bytes = nr_bytes, .cmd_flags = rq->cmd_flags,
		};

		emit(&rec, sizeof(rec));
		return 0;
	}
	hist(&block_latency_ns, now - issue_ns);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(rq_issue, struct request *rq)
{
	struct issued *s;
	uint32_t dev;

	if (!watched_dev && !current_is_traced())
		return 0;
	s = slot_of(rq, &dev);
	if (!s)
		return 0;
	s->dev = dev;
	s->sector = rq->__sector;
	s->issue_ns = bpf_ktime_get_ns();
	return 0;
}
