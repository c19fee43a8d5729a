"""Does the calibrated model predict real QEMU on loads it never saw?

For each QEMU (7.2: device-plug; 10.0: defer), one guest is recorded in events mode at the
calibration load (2 disks x iodepth 16 on one iothread, random 4 KiB reads) and calibrated from
(`plugtrace model calibrate`); then every point of the grid is both measured on a real guest
(`plugtrace qemu --qemu-probes off`: kernel-side tracing only, so QEMU's batching is not the probes')
and predicted from that one calibration (`plugtrace model predict`, the design's own strategy).
Held out means held out: nothing of a grid point's measurement is used to predict it (the point at
the calibration load is marked). Every point is printed, met or not, with the mean SQEs per
io_uring_enter() measured and predicted. Targets: within +-10% at every point, Spearman >= 0.9
across the grid, and the sign of the 7.2 -> 10.0 change right at every point.

    python -m bench.bench_model_fidelity [--quick] [--seconds 2] [--slow-motion 1,3,10] [--json out.json]

`--slow-motion K,...` predicts every point once per K (`plugtrace model predict --slow-motion K`: the
calibrated guest and device K times slower, so the model's own cost per request weighs K times less)
against the same measurements, and prints every K's table; the first K's is the result (`rows`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from .common import PLUGTRACE, could_not_measure, machine, print_host, print_table, require_root, write_json

IODEPTHS, DISKS, VERSIONS = (1, 4, 16, 64), (1, 2), ("7.2", "10.0")
CALIBRATION = {"iodepth": 16, "disks": 2}
STRATEGY = {"7.2": "device-plug", "10.0": "defer"}
TARGET_ERROR_PCT, TARGET_SPEARMAN = 10.0, 0.9


def _qemu(
    version: str, iodepth: int, disks: int, seconds: float, out: Path, events: bool
) -> subprocess.CompletedProcess:
    cmd = [*PLUGTRACE, "qemu", "--qemu", version, "--disks", str(disks), "--iothreads", "shared"]
    cmd += ["--iodepth", str(iodepth), "--rw", "randread", "--bs", "4096", "--duration", str(seconds)]
    cmd += ["--mode", "events"] if events else ["--qemu-probes", "off"]
    return subprocess.run([*cmd, "--quiet", "-o", str(out)], capture_output=True, text=True)


def _spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _judge(rows: list[dict], grid: list[tuple[int, int]], k: str, seconds: float) -> dict:
    """Every point's prediction at slow motion `k` against its measurement: the table, Spearman and the
    7.2 -> 10.0 signs, printed; returned as the JSON's rows, spearman and signs."""
    judged = []
    for r in rows:
        if "error" in r or not r.get("measured") or r.get("predictions", {}).get(k) is None:
            continue
        row = {key: v for key, v in r.items() if key != "predictions"} | {"predicted": r["predictions"][k]}
        row["error_pct"] = round(100 * (row["predicted"] - row["measured"]) / row["measured"], 1)
        row["target"] = "met" if abs(row["error_pct"]) <= TARGET_ERROR_PCT else "missed"
        judged.append(row)
    print_table(
        f"slow motion x{k}: predicted (model, calibrated at {CALIBRATION['disks']} disks x iodepth "
        f"{CALIBRATION['iodepth']}) vs measured (QEMU, kernel-side tracing only) mean SQEs per io_uring_enter(), "
        f"{seconds:g} s guests; target: within {TARGET_ERROR_PCT:g}%",
        judged,
        ["qemu", "iodepth", "disks", "strategy", "calibration_point", "measured", "predicted", "error_pct", "target"],
    )
    met = sum(r["target"] == "met" for r in judged)
    rho = _spearman([r["measured"] for r in judged], [r["predicted"] for r in judged])
    print(
        f"slow motion x{k}: {met} of {len(judged)} points within {TARGET_ERROR_PCT:g}%; Spearman across the grid: "
        + ("could not measure: fewer than 3 points" if rho is None else f"{rho:.3f}")
        + ("" if rho is None else f" (target >= {TARGET_SPEARMAN}: {'met' if rho >= TARGET_SPEARMAN else 'missed'})")
    )
    signs = []
    for iodepth, disks in grid:
        a = next((r for r in judged if r["qemu"] == "7.2" and (r["iodepth"], r["disks"]) == (iodepth, disks)), None)
        b = next((r for r in judged if r["qemu"] == "10.0" and (r["iodepth"], r["disks"]) == (iodepth, disks)), None)
        if a and b:
            measured, predicted = b["measured"] - a["measured"], b["predicted"] - a["predicted"]
            right = (measured > 0) == (predicted > 0) and (measured != 0) == (predicted != 0)
            signs.append(
                {
                    "iodepth": iodepth,
                    "disks": disks,
                    "measured_change": round(measured, 3),
                    "predicted_change": round(predicted, 3),
                    "sign": "right" if right else "wrong",
                }
            )
    if signs:
        print_table(
            f"slow motion x{k}: 7.2 -> 10.0 change in mean SQEs per enter",
            signs,
            ["iodepth", "disks", "measured_change", "predicted_change", "sign"],
        )
    else:
        print("7.2 -> 10.0 sign: could not measure: needs both versions at a point")
    return {"rows": judged, "spearman": rho, "signs": signs, "met": met}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="QEMU 10.0, 1 disk, iodepth 1 and 16, 1 s guests")
    ap.add_argument("--seconds", type=float, default=2.0, help="each guest's workload (default: 2)")
    ap.add_argument("--slow-motion", default="1", help="K[,K...]: the predictions' slow motion (default: 1)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        slow_motions = [float(k) for k in args.slow_motion.split(",")]
    except ValueError:
        ap.error(f"--slow-motion: numbers, not {args.slow_motion!r}")
    require_root()
    print_host()
    seconds = 1.0 if args.quick else args.seconds
    versions = ("10.0",) if args.quick else VERSIONS
    grid = [(d, 1) for d in (1, 16)] if args.quick else [(d, n) for n in DISKS for d in IODEPTHS]
    rows: list[dict] = []
    calibrations: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for v in versions:
            source, cal = tmp / f"cal-qemu-{v}", tmp / f"cal-{v}.json"
            p = _qemu(v, CALIBRATION["iodepth"], CALIBRATION["disks"], seconds, source, events=True)
            if p.returncode == 0:
                p = subprocess.run(
                    [*PLUGTRACE, "model", "calibrate", str(source), "-o", str(cal)], capture_output=True, text=True
                )
            if p.returncode != 0:
                print(f"QEMU {v}: calibration {could_not_measure(p)}")
                continue
            calibrations[v] = json.loads(cal.read_text())
            print(p.stdout.strip())
            for iodepth, disks in grid:
                row: dict = {"qemu": v, "iodepth": iodepth, "disks": disks, "strategy": STRATEGY[v]}
                row["calibration_point"] = (iodepth, disks) == (CALIBRATION["iodepth"], CALIBRATION["disks"])
                m = _qemu(v, iodepth, disks, seconds, tmp / f"m-{v}-{iodepth}-{disks}", events=False)
                if m.returncode != 0:
                    rows.append(row | {"error": could_not_measure(m)})
                    continue
                meta = json.loads((tmp / f"m-{v}-{iodepth}-{disks}" / "meta.json").read_text())
                row["measured"] = (meta.get("kernel_summary") or {}).get("mean_sqes_per_enter")
                row["predictions"] = {}
                for k in slow_motions:
                    out = tmp / f"p-{v}-{iodepth}-{disks}-{k:g}"
                    cmd = [*PLUGTRACE, "model", "predict", str(cal), "--iodepth", str(iodepth), "--disks", str(disks)]
                    cmd += ["--strategy", STRATEGY[v], "--duration", str(seconds), "--slow-motion", f"{k:g}"]
                    p = subprocess.run([*cmd, "--quiet", "-o", str(out)], capture_output=True, text=True)
                    if p.returncode != 0:
                        row["error"] = could_not_measure(p)
                        break
                    meta = json.loads((out / "meta.json").read_text())
                    row["predictions"][f"{k:g}"] = meta["summary"].get("mean_sqes_per_submit")
                rows.append(row)
    for r in rows:
        if "error" in r:
            print(f"QEMU {r['qemu']} iodepth {r['iodepth']} x {r['disks']} disks: {r['error']}")
    results = {f"{k:g}": _judge(rows, grid, f"{k:g}", seconds) for k in slow_motions}
    first = results[f"{slow_motions[0]:g}"]
    write_json(
        args.json,
        {
            "machine": machine(),
            "seconds": seconds,
            "calibrations": calibrations,
            "slow_motion": slow_motions[0],
            "rows": first["rows"],
            "spearman": first["spearman"],
            "signs": first["signs"],
            "by_slow_motion": results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
