"""plugtrace's engine vs fio's io_uring engine on the same device, side by side, two ways.

Same device, block size, depth and pattern, in one run: each round runs fio,
the engine in-process (`run_workload`, its log produced but not stored) and
the engine as a user runs it (`plugtrace record`, default aggregate tracing,
its log written to the run directory), `--repeats` rounds, the order rotating
from round to round so a noisy neighbour hits each alike. Prints the median
IOPS of each and, per device kind, the median over rounds of each round's
engine ÷ fio ratio (this VM's IOPS drift by several percent within a minute),
and the host.

    python -m bench.bench_engine_vs_fio [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .common import PLUGTRACE, device, engine, fio, fio_iops, machine, print_table, require_root, write_json

#: engine ÷ fio to reach: on loop, batching several SQEs per enter should beat fio's one
TARGETS = {"zram": 0.9, "loop": 1.0}


def record_iops(path: str, strategy: str, iodepth: int, bs: int, seconds: float, out: Path) -> float:
    """`plugtrace record` (its defaults: aggregate tracing, one device) on `path`; the IOPS it reports."""
    subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            path,
            "--strategy",
            strategy,
            "--iodepth",
            str(iodepth),
            "--bs",
            str(bs),
            "--rw",
            "randread",
            "--duration",
            str(seconds),
            "--quiet",
            "-o",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return float(json.loads((out / "meta.json").read_text())["summary"]["iops"])


def _rounds(target, args, runtime: float, rounds: int, out: Path) -> dict[str, list[float]]:
    """fio, the engine in-process and `plugtrace record` on `target`, `rounds` times in rotating order:
    IOPS per way, one per round."""
    ways: dict[str, Callable[[int], float]] = {
        "fio": lambda r: fio_iops(fio(target.path, "randread", args.bs, args.iodepth, runtime)),
        "engine": lambda r: (
            engine(
                target.path,
                target.size_bytes,
                strategy=args.strategy,
                iodepth=args.iodepth,
                bs=args.bs,
                rw="randread",
                duration_s=runtime,
            ).iops
        ),
        "record": lambda r: record_iops(target.path, args.strategy, args.iodepth, args.bs, runtime, out / str(r)),
    }
    names = list(ways)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(ways[name](r))
    return runs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    ap.add_argument("--runtime", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--iodepth", type=int, default=32)
    ap.add_argument("--bs", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--strategy", default="defer")
    ap.add_argument("--devices", nargs="+", default=["zram", "loop"])
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    require_root()
    runtime = 0.5 if args.quick else args.runtime
    host = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.devices:
            with device(kind, "256M" if args.quick else "1G") as target:
                runs = _rounds(target, args, runtime, 1 if args.quick else max(1, args.repeats), Path(tmp) / kind)
            for way in ("engine", "record"):
                ratios = [x / f for x, f in zip(runs[way], runs["fio"])] if all(runs["fio"]) else []
                got = statistics.median(ratios) if ratios else None
                target_ratio = TARGETS.get(kind)
                rows.append(
                    {
                        "device": kind,
                        "engine": "in-process" if way == "engine" else "plugtrace record",
                        "strategy": args.strategy,
                        "iodepth": args.iodepth,
                        "bs": args.bs,
                        "fio_iops": statistics.median(runs["fio"]),
                        "engine_iops": statistics.median(runs[way]),
                        "fio_runs": runs["fio"],
                        "engine_runs": runs[way],
                        "ratio": got,
                        "range": f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else "",
                        "target": target_ratio,
                        "met": None if got is None or target_ratio is None else got >= target_ratio,
                    }
                )
    print_table(
        f"engine vs fio (4k randread, io_uring), median of {1 if args.quick else args.repeats} rotating rounds "
        f"of {runtime:g} s",
        rows,
        ["device", "engine", "strategy", "iodepth", "fio_iops", "engine_iops", "ratio", "range", "target", "met"],
    )
    print(f"host: {host['cpu_model']}, {host['cpus']} CPUs, Linux {host['kernel']}, fio {host['fio']}")
    result = {"benchmark": "engine_vs_fio", "machine": host, "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
