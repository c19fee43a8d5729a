"""plugtrace's engine vs fio's io_uring engine on the same device, side by side.

Same device, block size, depth and pattern, in one run: fio and the engine
alternate `--repeats` times (fio, engine, fio, engine, ...) so a noisy
neighbour hits both alike. Prints both median IOPS and the ratio engine/fio
for each device kind: the median over rounds of the engine's IOPS / fio's IOPS
of the same round (this VM's IOPS drift by several percent within a minute).

    python -m bench.bench_engine_vs_fio [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics

from .common import device, engine, fio, fio_iops, machine, print_table, require_root, write_json

#: engine ÷ fio to reach: on loop, batching several SQEs per enter should beat fio's one
TARGETS = {"zram": 0.9, "loop": 1.0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    ap.add_argument("--runtime", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--iodepth", type=int, default=32)
    ap.add_argument("--bs", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5, help="alternating fio/engine rounds (default 5)")
    ap.add_argument("--strategy", default="defer")
    ap.add_argument("--devices", nargs="+", default=["zram", "loop"])
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    require_root()
    runtime = 0.5 if args.quick else args.runtime
    rows = []
    for kind in args.devices:
        with device(kind, "256M" if args.quick else "1G") as target:
            fio_runs, engine_runs = [], []
            for _ in range(1 if args.quick else max(1, args.repeats)):
                fio_runs.append(fio_iops(fio(target.path, "randread", args.bs, args.iodepth, runtime)))
                engine_runs.append(
                    engine(
                        target.path,
                        target.size_bytes,
                        strategy=args.strategy,
                        iodepth=args.iodepth,
                        bs=args.bs,
                        rw="randread",
                        duration_s=runtime,
                    ).iops
                )
            f, e = statistics.median(fio_runs), statistics.median(engine_runs)
            ratio = statistics.median(e_i / f_i for e_i, f_i in zip(engine_runs, fio_runs)) if all(fio_runs) else None
            rows.append(
                {
                    "device": kind,
                    "strategy": args.strategy,
                    "iodepth": args.iodepth,
                    "bs": args.bs,
                    "fio_iops": f,
                    "engine_iops": e,
                    "fio_runs": fio_runs,
                    "engine_runs": engine_runs,
                    "ratio": ratio,
                    "target": TARGETS.get(kind),
                    "met": None if ratio is None or kind not in TARGETS else ratio >= TARGETS[kind],
                }
            )
    print_table(
        "engine vs fio (4k randread, io_uring)",
        rows,
        ["device", "strategy", "iodepth", "fio_iops", "engine_iops", "ratio", "target", "met"],
    )
    result = {"benchmark": "engine_vs_fio", "machine": machine(), "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
