/*
 * empty.bpf.c - a program that does nothing, for the benchmarks: attached to
 * a tracepoint (set before load), it shows what a hit costs before any
 * program instruction runs, the floor no probe on that tracepoint can beat.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf")
int empty(void *ctx)
{
	return 0;
}
