"""A run's headline numbers as `record` and `qemu` print them when it ends."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..run import RunMeta

__all__ = ["print_summary"]


def print_summary(meta: RunMeta, run_dir: Path, file: TextIO | None = None) -> None:
    """The run's headline numbers: on stdout, or `file` (stderr when a traced command owns stdout)."""
    import builtins

    def print(*args, **kw):  # noqa: A001 - every line of the summary goes to the same place
        builtins.print(*args, **kw, file=file or sys.stdout)

    s = meta.summary

    def ns(v):
        return "n/a" if v is None else f"{v / 1000:.1f} µs"

    print(f"run directory: {run_dir}  (status: {meta.status})")
    if s.get("iops") is not None:
        print(f"  IOPS:                    {s['iops']:,.0f}  ({s['nr_requests']:,} requests in {s['elapsed_s']:.2f} s)")
    if s.get("mean_sqes_per_submit") is not None:
        print(f"  mean SQEs per enter:     {s['mean_sqes_per_submit']:.2f}  ({s['nr_submits']:,} submits, app log)")
        print(f"  submit latency p50/p99:  {ns(s.get('submit_latency_p50_ns'))} / {ns(s.get('submit_latency_p99_ns'))}")
    k = meta.get("kernel_summary") or {}
    if k.get("mean_sqes_per_enter") is not None:
        print(
            f"  eBPF: mean SQEs per enter {k['mean_sqes_per_enter']:.2f}  ({k['nr_enters']:,} submitting "
            f"io_uring_enter calls, from {k['source']})"
        )
    if k.get("enter_latency_p50_ns") is not None:
        print(f"  eBPF: enter latency p50/p99: {ns(k['enter_latency_p50_ns'])} / {ns(k['enter_latency_p99_ns'])}")
    elif k.get("enter_latency_p50_ns_below") is not None:
        print(
            f"  eBPF: enter latency p50/p99: < {ns(k['enter_latency_p50_ns_below'])} / "
            f"< {ns(k['enter_latency_p99_ns_below'])}  (log2 buckets)"
        )
    if meta.get("virtqueues"):
        _print_queues(print, meta, run_dir)
    lost = meta.get("events_lost")  # None: not traced, unlike RunMeta.events_lost
    print(f"  events lost:             {'n/a (not traced)' if lost is None else f'{lost:,}'}")
    for name, why in meta.could_not_measure.items():
        print(f"  could not measure {name}: {why}")
    not_asked: dict[str, list[str]] = {}
    for name, why in meta.not_asked.items():
        not_asked.setdefault(why, []).append(name)
    for why, names in not_asked.items():
        print(f"  not recorded {', '.join(names)}: {why}")
    integ = meta.get("integrity")
    if integ:
        verdict = (
            "OK" if integ["mismatches"] == 0 else f"{integ['mismatches']} MISMATCHES at {integ['mismatch_offsets']}"
        )
        of = f" of {integ['of_blocks']:,} (interrupted)" if integ.get("interrupted") else ""
        print(f"  data integrity:          {integ['checked_blocks']:,}{of} blocks read back, {verdict}")
    if meta.tracing_overhead:
        o = meta.tracing_overhead
        print(f"  tracing overhead:        traced/untraced IOPS = {o['ratio']:.3f}")


def _print_queues(print, meta: RunMeta, run_dir: Path) -> None:  # noqa: A002 - the summary's own print
    """A multi-queue run: batching per thread and per virtqueue, and what device-plug's shared plug held."""
    from ..analysis import Run, df_queue_stats, df_thread_stats
    from ..errors import PlugtraceError

    try:
        run = Run.open(run_dir)
        threads, queues = df_thread_stats(run), df_queue_stats(run)
    except (PlugtraceError, OSError) as exc:
        print(f"  could not measure per-queue batching: {exc}")
        return
    for t in threads.itertuples():
        remote = f", {t.remote_unplug_enters:,} for another thread's unplug" if t.remote_unplug_enters else ""
        print(f"  thread {t.thread}: {t.mean_sqes_per_enter:.2f} SQEs per enter  ({t.enters:,} enters{remote})")
    for q in queues.itertuples():
        held = ""
        if q.other_thread:
            held = f", {q.other_thread:,} ({q.other_thread_fraction:.1%}) held by another thread's plug"
        print(
            f"  device {q.device} queue {q.queue} (thread {q.thread}): {q.requests:,} requests in enters of "
            f"{q.mean_sqes_per_enter:.2f} SQEs{held}"
        )
    overlaps = meta.summary.get("plug_overlaps")
    if meta.config.get("strategy") == "device-plug" and overlaps is not None:
        print(
            f"  device-plug: {overlaps:,} plugs found the device plugged by another thread (QEMU 8.0's per-thread "
            "LuringState plug would have unplugged a ring never plugged there)"
        )
