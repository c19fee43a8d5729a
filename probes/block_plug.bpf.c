/*
 * block_plug.bpf.c - the block layer's own plugging in the traced process
 * (the readable reference: block_plug.bt).
 *
 * Below io_uring, blk_start_plug()/blk_finish_plug() batch the requests of one
 * submission; block_unplug says how many requests each flush carried: the
 * kernel-side counterpart of the user-space plug sections we study.
 *
 * Events mode: struct unplug_event per unplug.
 * Aggregate mode: unplug_nr_rq (lhist; its total is nr_unplugs).
 */
#include "plugtrace.bpf.h"

PERCPU_COUNTERS(unplug_nr_rq, LHIST_SLOTS);

SEC("tp_btf/block_unplug")
int BPF_PROG(unplug, struct request_queue *q, unsigned int depth, bool explicit)
{
	if (!current_is_traced())
		return 0;
	if (events_mode) {
		struct unplug_event rec = {.ts_ns = bpf_ktime_get_ns(), .tid = (int32_t)bpf_get_current_pid_tgid(),
					   .nr_rq = depth};

		emit(&rec, sizeof(rec));
		return 0;
	}
	lhist(&unplug_nr_rq, depth);
	return 0;
}
