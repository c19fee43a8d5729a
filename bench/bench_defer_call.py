"""Cost of defer_call() inside a section, per call (target: at most 0.5 µs).

Measures the common case: the same (fn, opaque) deferred many times in one
section (a batch of requests to one driver), plus a section with a handful of
distinct pairs, and the empty begin/end pair.

    python -m bench.bench_defer_call [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

from plugtrace.plug import defer_call, defer_call_begin, defer_call_end

from .common import machine, print_table, write_json

TARGET_US = 0.5


def _noop(opaque) -> None:
    pass


def _per_call_us(n_sections: int, calls_per_section: int, distinct: int) -> float:
    opaques = [object() for _ in range(distinct)]
    seq = [opaques[i % distinct] for i in range(calls_per_section)]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n_sections):
            defer_call_begin()
            for o in seq:
                defer_call(_noop, o)
            defer_call_end()
        t1 = time.perf_counter_ns()
        best = min(best, (t1 - t0) / (n_sections * calls_per_section) / 1000)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    n = 200 if args.quick else 20000
    rows = []
    for calls, distinct in ((32, 1), (32, 4), (128, 1)):
        us = _per_call_us(n, calls, distinct)
        rows.append(
            {
                "calls_per_section": calls,
                "distinct_pairs": distinct,
                "us_per_call": us,
                "target_us": TARGET_US,
                "met": us <= TARGET_US,
            }
        )
    print_table(
        "defer_call() inside a section (best of 5, includes the section's begin/end and runs)",
        rows,
        ["calls_per_section", "distinct_pairs", "us_per_call", "target_us", "met"],
    )
    result = {"benchmark": "defer_call", "machine": machine(), "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
