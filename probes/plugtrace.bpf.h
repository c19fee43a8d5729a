/*
 * plugtrace.bpf.h - what every program in probes/NAME.bpf.c shares: the
 * settings fixed before load, the set of traced processes (with the
 * program that follows their forks), and bpftrace's hist() / lhist() /
 * count() on per-CPU arrays, so that aggregate mode keeps exactly the maps
 * the .bt scripts keep.
 *
 * Why these shapes: every lookup here is in an array map, which the
 * verifier inlines (no hashed lookup, no lock); counters are per CPU (no
 * atomics) and summed by plugtrace when it reads them.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "records.h"

char LICENSE[] SEC("license") = "GPL";

/* Settings, fixed before load: the verifier then drops the branches they rule out. */
/* only the processes in `traced` (else every process) */
const volatile bool follow = false;
/* block probes: only this device (dev_t as the block tracepoints encode it, major << 20 | minor; 0: any) */
const volatile uint32_t watched_dev = 0;
/* one record per event into `events` (else histograms and counters) */
const volatile bool events_mode = false;

/* The traced tgids: one bit each, in u64 words (plugtrace sizes it to pid_max and sets the first bits). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, uint32_t);
	__type(value, uint64_t);
} traced SEC(".maps");

static __always_inline bool is_traced(uint32_t tgid)
{
	uint32_t word = tgid >> 6;
	uint64_t *bits;

	if (!follow)
		return true;
	bits = bpf_map_lookup_elem(&traced, &word);
	return bits && ((*bits >> (tgid & 63)) & 1);
}

static __always_inline bool current_is_traced(void)
{
	return !follow || is_traced(bpf_get_current_pid_tgid() >> 32);
}

/* A traced process's children are traced too (fio's jobs, a shell's command). Loaded only with `follow`. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(follow_fork, struct task_struct *parent, struct task_struct *child)
{
	uint32_t tgid = child->tgid, word = tgid >> 6;
	uint64_t *bits;

	if (!is_traced(parent->tgid))
		return 0;
	bits = bpf_map_lookup_elem(&traced, &word);
	if (bits)
		__sync_fetch_and_or(bits, 1ULL << (tgid & 63));
	return 0;
}

/* Events the ring refused because it was full: exact, one bump per refusal. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, uint32_t);
	__type(value, uint64_t);
} lost SEC(".maps");

/* The events of events mode (plugtrace sets the size before load). No wakeup per
 * record: the reader polls on its own clock. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

#define PERCPU_COUNTERS(name, slots)                           \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);        \
		__uint(max_entries, slots);                     \
		__type(key, uint32_t);                          \
		__type(value, uint64_t);                        \
	} name SEC(".maps")

static __always_inline void bump(void *counters, uint32_t slot)
{
	uint64_t *c = bpf_map_lookup_elem(counters, &slot);

	if (c)
		(*c)++;
}

static __always_inline void emit(void *record, uint64_t size)
{
	if (bpf_ringbuf_output(&events, record, size, BPF_RB_NO_WAKEUP))
		bump(&lost, 0);
}

/* lhist(value, 0, 1000, 1) */
static __always_inline void lhist(void *counters, int64_t value)
{
	bump(counters, value < 0 ? LHIST_TOP + 1 : value >= LHIST_TOP ? LHIST_TOP : (uint32_t)value);
}

/* hist(value): log2 buckets */
static __always_inline void hist(void *counters, uint64_t value)
{
	uint32_t log = 0, shift;

	if (!value) {
		bump(counters, 0);
		return;
	}
	shift = (value > 0xFFFFFFFFULL) << 5; value >>= shift; log = shift;
	shift = (value > 0xFFFF) << 4; value >>= shift; log |= shift;
	shift = (value > 0xFF) << 3; value >>= shift; log |= shift;
	shift = (value > 0xF) << 2; value >>= shift; log |= shift;
	shift = (value > 0x3) << 1; value >>= shift; log |= shift;
	log |= (value >> 1);
	bump(counters, log + 1);
}
