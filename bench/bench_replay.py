"""Does the model reproduce real QEMU? Record QEMU guests, replay each on the model, compare run by run.

For each QEMU (7.2: the device-plug design; 10.0: defer) and each guest load below, one guest is
recorded as a user records it (`plugtrace qemu --mode events`, TCG here, on a loop device) and
replayed (`plugtrace replay`, the design's own strategy and its defaults: per-request timing, recorded
device latency, a loop device over memory of its own). Every point
is printed, met or not: the handler runs replayed, `per_run_exact` (the fraction whose predicted
SQEs per io_uring_enter() equal QEMU's), the mean SQEs per enter measured and predicted, and the
error. Targets: per_run_exact >= 0.99 and the mean within 2%.

    python -m bench.bench_replay [--quick] [--seconds 2] [--json out.json]

Loads (4 KiB, one iothread for every virtio-blk disk):
  d16   2 disks x iodepth 16, random reads
  d96   2 disks x iodepth 96, random reads (192 outstanding: MAX_ENTRIES, 128, splits submits)
  seq   2 disks x iodepth 16, sequential reads (the guest kernel and QEMU merge requests)
  ide   1 virtio-blk disk + 1 IDE disk, iodepth 16, random reads (IDE runs in the main loop)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from .common import PLUGTRACE, could_not_measure, machine, print_host, print_table, require_root, write_json

LOADS = {
    "d16": ["--disks", "2", "--iodepth", "16", "--rw", "randread"],
    "d96": ["--disks", "2", "--iodepth", "96", "--rw", "randread"],
    "seq": ["--disks", "2", "--iodepth", "16", "--rw", "read"],
    "ide": ["--disks", "1", "--ide-disks", "1", "--iodepth", "16", "--rw", "randread"],
}
TARGET_EXACT, TARGET_ERROR_PCT = 0.99, 2.0


def point(version: str, load: str, seconds: float, tmp: Path) -> dict:
    """Record one QEMU guest of `load` and replay it; one row."""
    row: dict = {"qemu": version, "load": load}
    source, replayed = tmp / f"qemu-{version}-{load}", tmp / f"replay-{version}-{load}"
    cmd = [*PLUGTRACE, "qemu", "--qemu", version, "--iothreads", "shared", *LOADS[load]]
    cmd += ["--bs", "4096", "--duration", str(seconds), "--mode", "events", "--quiet", "-o", str(source)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return row | {"error": could_not_measure(p)}
    meta = json.loads((source / "meta.json").read_text())
    row["accel"] = meta["config"].get("accel")
    p = subprocess.run(
        [*PLUGTRACE, "replay", str(source), "--quiet", "-o", str(replayed)], capture_output=True, text=True
    )
    if p.returncode != 0:
        return row | {"error": could_not_measure(p)}
    r = json.loads((replayed / "meta.json").read_text())["replay"]
    row |= {
        "strategy": r["strategy"],
        "timing": r.get("timing"),
        "device_latency": r.get("device_latency"),
        "handler_runs": r["handler_runs"],
        "requests": r["requests"],
        "not_replayed": sum(r["not_replayed"].values()),
        "per_run_exact": r["per_run_exact"],
        "measured_sqes_per_enter": r["measured_mean_sqes_per_submit"],
        "predicted_sqes_per_enter": r["predicted_mean_sqes_per_submit"],
        "error_pct": r.get("mean_error_pct"),
    }
    error = r.get("mean_error_pct")
    met = (r["per_run_exact"] or 0) >= TARGET_EXACT and error is not None and abs(error) <= TARGET_ERROR_PCT
    row["target"] = "met" if met else "missed"
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="QEMU 10.0 and the d16 load only, 1 s")
    ap.add_argument("--seconds", type=float, default=2.0, help="each guest's workload (default: 2)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    require_root()
    print_host()
    seconds = 1.0 if args.quick else args.seconds
    versions = ["10.0"] if args.quick else ["7.2", "10.0"]
    loads = ["d16"] if args.quick else list(LOADS)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [point(v, load, seconds, Path(tmp)) for v in versions for load in loads]
    for r in rows:
        if "error" in r:
            print(f"QEMU {r['qemu']} {r['load']}: {r['error']}")
    print_table(
        f"replayed on the model, each QEMU design's own strategy ({seconds:g} s guests; targets: per_run_exact "
        f">= {TARGET_EXACT}, mean within {TARGET_ERROR_PCT:g}%)",
        [r for r in rows if "error" not in r],
        [
            "qemu",
            "load",
            "strategy",
            "handler_runs",
            "not_replayed",
            "per_run_exact",
            "measured_sqes_per_enter",
            "predicted_sqes_per_enter",
            "error_pct",
            "target",
        ],
    )
    write_json(args.json, {"machine": machine(), "loads": LOADS, "seconds": seconds, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
