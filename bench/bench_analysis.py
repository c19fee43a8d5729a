"""Benchmark: out-of-core analysis and the report of a big run against their targets.

Generates a synthetic run (in a child process, so its memory does not count)
whose app `submits` table and kernel `enters` table each hold N io_uring_enter
events (strategy "immediate": one request per enter), then times in this
process, with the embedded engine (DuckDB, plugtrace.query):

* df_batch_sizes from the app log and from the kernel events (targets: 10M
  events <= 2 s, 100M events <= 10 s, each);
* exact latency percentiles of every metric (df_latency_percentiles);
* rendering the HTML report (targets: <= 10 s up to 10M events, <= 30 s at
  100M; <= 5 MB);
* the peak RSS of all of it (target: <= 1 GB).

    python -m bench.bench_analysis                    # 10M events: 0.6 GB of disk in a temp dir
    python -m bench.bench_analysis --events 100000000 # 100M events: 5.7 GB of disk, minutes to generate
    python -m bench.bench_analysis --quick            # 20k events, a smoke test
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

TARGET_RSS_MB = 1024
TARGET_REPORT_MB = 5.0


def _targets(events: int) -> tuple[float, float]:
    """(batch sizes, report render) targets in seconds for a run of `events` events."""
    return (2.0, 10.0) if events <= 10_000_000 else (10.0, 30.0)


def _generate(path: str, events: int) -> None:
    from plugtrace.synthetic import write_run

    write_run(path, strategy="immediate", requests=events, devices=4, threads=2, interleave=0.05, kernel="both")


def _in_memory_batch_sizes(path: str, table: str, column: str, out: multiprocessing.Queue) -> None:
    """The batch-size distribution as it was computed before the analysis went out of core: the whole
    column read into memory, then counted with numpy. Runs in a child, so its memory is its own."""
    import numpy as np
    import pyarrow.parquet as pq

    t = time.perf_counter()
    values = pq.read_table(Path(path) / "tables" / f"{table}.parquet", columns=[column]).column(0).to_numpy()
    counts = np.bincount(values[values > 0])
    out.put((time.perf_counter() - t, int(counts.sum()), _peak_rss_mb()))


def _side_by_side(path: Path, source: str) -> tuple[float, int, float]:
    """(seconds, submits counted, peak RSS in MB) of `_in_memory_batch_sizes` for `source`."""
    table, column = ("submits", "nr_sqes") if source == "app" else ("enters", "to_submit")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_in_memory_batch_sizes, args=(str(path), table, column, out))
    child.start()
    result = out.get()
    child.join()
    return result


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="io_uring_enter events (default: 10M)")
    parser.add_argument("--quick", action="store_true", help="20k events: check the benchmark runs")
    parser.add_argument("--keep", type=Path, help="write the run here and keep it (default: a temp dir, removed)")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    events = 20_000 if args.quick else args.events

    workdir = Path(tempfile.mkdtemp(prefix="plugtrace-bench-"))
    run_path = args.keep or workdir / "run"
    try:
        t = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=_generate, args=(str(run_path), events))
        child.start()
        child.join()
        if child.exitcode:
            print(f"generating the run failed (exit code {child.exitcode})", file=sys.stderr)
            return 1
        disk_gb = sum(f.stat().st_size for f in Path(run_path).rglob("*") if f.is_file()) / 1e9
        print(f"generated {events:,} events in {time.perf_counter() - t:.1f} s at {run_path} ({disk_gb:.2f} GB)")

        from plugtrace.analysis import Run, df_batch_sizes, df_latency_percentiles
        from plugtrace.report import render

        target_df_s, target_render_s = _targets(events)
        run = Run.open(run_path)
        ok = True
        results: list[dict] = []
        for source in ("app", "kernel"):
            t = time.perf_counter()
            sizes = df_batch_sizes(run, source=source)
            elapsed = time.perf_counter() - t
            ok &= elapsed <= target_df_s
            results.append(
                {
                    "what": f"df_batch_sizes ({source})",
                    "seconds": elapsed,
                    "target_s": target_df_s,
                    "submits": int(sizes["count"].sum()),
                }
            )
            print(
                f"df_batch_sizes ({source:6}): {elapsed:6.2f} s for {int(sizes['count'].sum()):,} submits  "
                f"[target <= {target_df_s:g} s: {_verdict(elapsed, target_df_s)}]"
            )
            mem_s, mem_n, mem_mb = _side_by_side(run_path, source)
            assert mem_n == int(sizes["count"].sum()), "the in-memory count disagrees"
            results.append({"what": f"in memory, whole column ({source})", "seconds": mem_s, "peak_rss_mb": mem_mb})
            print(
                f"  side by side, the whole column in memory (numpy): {mem_s:6.2f} s, peak RSS {mem_mb:,.0f} MB "
                f"of its own; out of core is {mem_s / max(elapsed, 1e-9):.1f}x as fast"
            )
        t = time.perf_counter()
        lat = df_latency_percentiles(run)
        elapsed = time.perf_counter() - t
        results.append(
            {
                "what": "df_latency_percentiles (exact)",
                "seconds": elapsed,
                "metrics": len(lat),
                "values": int(lat["count"].sum()),
            }
        )
        print(
            f"df_latency_percentiles, exact: {elapsed:6.2f} s for {len(lat)} metrics over "
            f"{int(lat['count'].sum()):,} values"
        )

        t = time.perf_counter()
        html = render([Run.open(run_path)])  # a fresh Run: nothing answered above is reused
        elapsed = time.perf_counter() - t
        size_mb = len(html.encode()) / 1e6
        (workdir / "report.html").write_text(html, encoding="utf-8")
        ok &= elapsed <= target_render_s and size_mb <= TARGET_REPORT_MB
        results.append(
            {
                "what": "report render",
                "seconds": elapsed,
                "target_s": target_render_s,
                "mb": size_mb,
                "target_mb": TARGET_REPORT_MB,
            }
        )
        print(
            f"report render: {elapsed:6.2f} s  [target <= {target_render_s:g} s: "
            f"{_verdict(elapsed, target_render_s)}], {size_mb:.2f} MB  [target <= {TARGET_REPORT_MB:g} MB: "
            f"{_verdict(size_mb, TARGET_REPORT_MB)}]"
        )
        rss = _peak_rss_mb()
        ok &= rss <= TARGET_RSS_MB
        results.append({"what": "peak RSS", "mb": rss, "target_mb": TARGET_RSS_MB})
        print(
            f"peak RSS of the analysis and the report: {rss:,.0f} MB  [target <= {TARGET_RSS_MB} MB: "
            f"{_verdict(rss, TARGET_RSS_MB)}]"
        )
        print("all targets met" if ok else "some targets MISSED")
        from bench.common import machine, write_json

        write_json(
            args.json,
            {
                "benchmark": "analysis",
                "events": events,
                "machine": machine(),
                "all_targets_met": ok,
                "results": results,
            },
        )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
