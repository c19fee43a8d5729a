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
