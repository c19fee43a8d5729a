/*
 * markers.h - functions that do nothing but exist as real, non-inlined, exported symbols of the
 * extension (plugtrace/uring/_uring*.so), so uprobes on them put our plug sections on the same timeline
 * as the kernel's tracepoints (probes/markers.bt, probes/section_markers.bt find them by these names).
 */
#pragma once
#include <stdint.h>

void plugtrace_mark_section_begin(uint64_t section_id, int32_t owner_device);
void plugtrace_mark_section_end(uint64_t section_id, uint32_t nr_calls);
void plugtrace_mark_deferred_run(uint64_t section_id, uint32_t index);
void plugtrace_mark_request_queued(uint64_t req_id, int32_t device);
void plugtrace_mark_submit(int64_t submit_seq, uint32_t nr_sqes);
