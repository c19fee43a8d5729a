/* markers.c - the uprobe markers of markers.h. */
#include "markers.h"

/* Exported even when the rest of the extension is not, and never inlined: a uprobe needs each marker to
 * be a real function with its own address. */
#define PT_MARKER __attribute__((noinline, used, visibility("default")))
/* The empty asm keeps the compiler from merging the markers or dropping their arguments. */
#define PT_MARKER_BODY(a, b) __asm__ volatile("" ::"r"(a), "r"(b) : "memory")

PT_MARKER void plugtrace_mark_section_begin(uint64_t section_id, int32_t owner_device)
{
    PT_MARKER_BODY(section_id, owner_device);
}

PT_MARKER void plugtrace_mark_section_end(uint64_t section_id, uint32_t nr_calls)
{
    PT_MARKER_BODY(section_id, nr_calls);
}

PT_MARKER void plugtrace_mark_deferred_run(uint64_t section_id, uint32_t index)
{
    PT_MARKER_BODY(section_id, index);
}

PT_MARKER void plugtrace_mark_request_queued(uint64_t req_id, int32_t device)
{
    PT_MARKER_BODY(req_id, device);
}

PT_MARKER void plugtrace_mark_submit(int64_t submit_seq, uint32_t nr_sqes)
{
    PT_MARKER_BODY(submit_seq, nr_sqes);
}
