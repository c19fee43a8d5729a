"""Sweep iodepth 1..128 x strategy on one device: IOPS and SQEs per io_uring_enter.

The graph QEMU's authors drew when comparing plugging variants: for each
strategy, how IOPS and the batch size grow with the queue depth. Writes a PNG
with both panels and the numbers as JSON.

    python -m bench.bench_sweep [--device zram] [--quick] [--png sweep.png] [--json out.json]
    python -m bench.bench_sweep --quick --runs-dir runs/sweep   # also a run directory per point

With --runs-dir each point is recorded as a user records it, by `plugtrace
record` (aggregate mode, its own device each time), into DIR/STRATEGY-qdN: the
set of runs notebook 06-many-runs and `plugtrace report DIR` read at once.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
from pathlib import Path

import numpy as np

from plugtrace.engine import STRATEGIES, WorkloadConfig, run_workload

from .common import PLUGTRACE, device, machine, print_table, require_root, write_json


def _run(target, strategy: str, iodepth: int, seconds: float) -> dict:
    nr_sqes: list[np.ndarray] = []

    def sink(name, cols):
        if name == "submits":
            nr_sqes.append(np.asarray(cols["nr_sqes"]))

    cfg = WorkloadConfig(strategy=strategy, iodepth=iodepth, duration_s=seconds, rw="randread", devices=2)
    r = run_workload(cfg, target.path, target.size_bytes, sink)
    sq = np.concatenate(nr_sqes) if nr_sqes else np.zeros(0)
    return {
        "strategy": strategy,
        "iodepth": iodepth,
        "iops": r.iops,
        "sqes_per_enter": float(sq.mean()) if len(sq) else None,
        "enters": int(len(sq)),
    }


def record_runs(
    runs_dir: Path, device_kind: str, strategies: list[str], depths: list[int], seconds: float
) -> list[Path]:
    """Record one run directory per (strategy, iodepth) with `plugtrace record`; returns their paths."""
    made = []
    for strategy in strategies:
        for depth in depths:
            out = runs_dir / f"{strategy}-qd{depth}"
            subprocess.run(
                [
                    *PLUGTRACE,
                    "record",
                    "--device",
                    device_kind,
                    "--size",
                    "256M",
                    "--strategy",
                    strategy,
                    "--iodepth",
                    str(depth),
                    "--devices",
                    "2",
                    "--duration",
                    str(seconds),
                    "--quiet",
                    "-o",
                    str(out),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            made.append(out)
            print(f"recorded {out}")
    return made


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    by = collections.defaultdict(list)
    for r in rows:
        by[r["strategy"]].append(r)
    for strategy, rs in by.items():
        rs.sort(key=lambda r: r["iodepth"])
        x = [r["iodepth"] for r in rs]
        a.plot(x, [r["iops"] / 1000 for r in rs], marker="o", label=strategy)
        b.plot(x, [r["sqes_per_enter"] or 0 for r in rs], marker="o", label=strategy)
    for ax, ylabel in ((a, "IOPS (thousands)"), (b, "mean SQEs per io_uring_enter")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("iodepth per device (requests)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"written: {path}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="zram", choices=("zram", "loop"))
    ap.add_argument("--seconds", type=float, default=1.5, help="per point (default 1.5)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--png", default=None, help="plot file (default: beside --json, else bench-sweep.png)")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--runs-dir", type=Path, default=None, help="also record each point with plugtrace record into DIR/STRATEGY-qdN"
    )
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all)")
    args = ap.parse_args(argv)
    require_root()
    depths = [1, 8, 32] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128]
    seconds = 0.3 if args.quick else args.seconds
    strategies = args.strategies.split(",")
    if args.runs_dir:
        record_runs(args.runs_dir, args.device, strategies, depths, seconds)
    rows = []
    with device(args.device, "256M" if args.quick else "1G") as target:
        for strategy in strategies:
            for depth in depths:
                rows.append(_run(target, strategy, depth, seconds))
    print_table(
        f"sweep on {args.device} (2 virtio-blk devices, one thread, 4k randread)",
        rows,
        ["strategy", "iodepth", "iops", "sqes_per_enter", "enters"],
    )
    png = args.png or (str(Path(args.json).with_suffix(".png")) if args.json else "bench-sweep.png")
    plot(rows, png, f"plugtrace engine on {args.device}: 2 virtio-blk devices, 4k randread")
    result = {"benchmark": "sweep", "device": args.device, "machine": machine(), "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
