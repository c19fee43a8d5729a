"""Benchmark: analysis and report of a ten-million-event run against their targets.

Generates a synthetic run (in a child process, so its memory does not count)
whose app `submits` table and kernel `enters` table each hold N io_uring_enter
events (strategy "immediate": one request per enter), then times in this
process:

* df_submits + df_batch_sizes, from the app log and from the kernel events
  (target: <= 3 s each, <= 2 GB peak RSS);
* rendering the HTML report (target: <= 10 s, <= 5 MB).

    python bench/bench_analysis.py            # 10M events, ~1 GB of disk in a temp dir
    python bench/bench_analysis.py --quick    # 20k events, a smoke test
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

TARGET_DF_S = 3.0
TARGET_RSS_MB = 2048
TARGET_RENDER_S = 10.0
TARGET_REPORT_MB = 5.0


def _generate(path: str, events: int) -> None:
    from plugtrace.synthetic import write_run

    write_run(path, strategy="immediate", requests=events, devices=4, threads=2, interleave=0.05, kernel="both")


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
        print(f"generated {events:,} events in {time.perf_counter() - t:.1f} s at {run_path}")

        from plugtrace.analysis import Run, df_batch_sizes, df_submits
        from plugtrace.report import render

        run = Run.open(run_path)
        ok = True
        results: list[dict] = []
        for source in ("app", "kernel"):
            t = time.perf_counter()
            submits = df_submits(run, source=source)
            sizes = df_batch_sizes(run, source=source)
            elapsed = time.perf_counter() - t
            ok &= elapsed <= TARGET_DF_S
            results.append({"what": f"df_submits+df_batch_sizes ({source})", "seconds": elapsed,
                            "target_s": TARGET_DF_S, "submits": len(submits)})
            print(f"df_submits + df_batch_sizes ({source:6}): {elapsed:6.2f} s for {len(submits):,} submits, "
                  f"{int(sizes['count'].sum()):,} in the distribution  "
                  f"[target <= {TARGET_DF_S:g} s: {_verdict(elapsed, TARGET_DF_S)}]")
            del submits, sizes
        rss = _peak_rss_mb()
        ok &= rss <= TARGET_RSS_MB
        results.append({"what": "peak RSS after df_*", "mb": rss, "target_mb": TARGET_RSS_MB})
        print(f"peak RSS after the df_* calls: {rss:,.0f} MB  [target <= {TARGET_RSS_MB} MB: "
              f"{_verdict(rss, TARGET_RSS_MB)}]")

        t = time.perf_counter()
        html = render([run])
        elapsed = time.perf_counter() - t
        size_mb = len(html.encode()) / 1e6
        (workdir / "report.html").write_text(html, encoding="utf-8")
        ok &= elapsed <= TARGET_RENDER_S and size_mb <= TARGET_REPORT_MB
        results.append({"what": "report render", "seconds": elapsed, "target_s": TARGET_RENDER_S,
                        "mb": size_mb, "target_mb": TARGET_REPORT_MB})
        print(f"report render: {elapsed:6.2f} s  [target <= {TARGET_RENDER_S:g} s: "
              f"{_verdict(elapsed, TARGET_RENDER_S)}], {size_mb:.2f} MB  [target <= {TARGET_REPORT_MB:g} MB: "
              f"{_verdict(size_mb, TARGET_REPORT_MB)}]")
        print(f"peak RSS overall: {_peak_rss_mb():,.0f} MB")
        print("all targets met" if ok else "some targets MISSED")
        from bench.common import machine, write_json

        write_json(args.json, {"benchmark": "analysis", "events": events, "machine": machine(),
                               "all_targets_met": ok, "results": results})
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
