"""Multi-queue: IOPS and SQEs per enter against queues {1, 2} x threads {1, 2}, for the model's two
plug designs and for real QEMU 10.0, side by side in one run.

One device, 4 KiB random reads, iodepth 16 per queue (one guest job per queue), on a loop device
each run creates (sparse, 256 MiB), recorded as a user records it: the model with `plugtrace record
--queues Q --threads T` (aggregate mode, the default), QEMU 10.0 with `plugtrace qemu --queues Q`
and `--iothreads shared` (T = 1) or `per-queue` (T = 2; QEMU 9.0+'s iothread-vq-mapping), under TCG
here. One queue on two threads does not exist (a queue is served by one thread): that cell says so.

The question is the one the thread-local API was made for: with device-plug (QEMU 8.0's design)
the device's plug is shared by every thread serving one of its queues, so one thread's section
holds another's requests (`held by another thread`); defer (8.1+) keeps a section per thread.
Per point: mean IOPS and mean SQEs per enter over the rounds (the kernel's count), each thread's
SQEs per enter, and for device-plug the share of requests another thread's plug held. Rounds run
the points in alternating order.

    python -m bench.bench_multiqueue [--quick] [--seconds 3] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from .common import PLUGTRACE, could_not_measure, machine, print_host, print_table, require_root, write_json

LOAD = {"devices": 1, "iodepth": 16, "bs": 4096, "rw": "randread", "device": "loop", "size": "256M"}
#: (queues, threads) points; (1, 2) cannot exist and is reported as such
GRID = [(1, 1), (2, 1), (2, 2), (1, 2)]
RUNS = ("model device-plug", "model defer", "QEMU 10.0")


def _flags(seconds: float, out: Path) -> list[str]:
    return [
        *("--device", LOAD["device"], "--size", LOAD["size"], "--sparse"),
        *("--iodepth", str(LOAD["iodepth"]), "--bs", str(LOAD["bs"]), "--rw", LOAD["rw"]),
        *("--duration", str(seconds), "--quiet", "-o", str(out)),
    ]


def _command(run: str, queues: int, threads: int, seconds: float, out: Path) -> list[str]:
    if run.startswith("model"):
        strategy = run.split()[1]
        return [*PLUGTRACE, "record", "--strategy", strategy, "--ring-setup", "plain",
                "--queues", str(queues), "--threads", str(threads), *_flags(seconds, out)]  # fmt: skip
    iothreads = "per-queue" if threads > 1 else ("shared" if queues > 1 else "per-disk")
    return [*PLUGTRACE, "qemu", "--qemu", "10.0", "--queues", str(queues), "--iothreads", iothreads,
            *_flags(seconds, out)]  # fmt: skip


def _per_thread(run: str, out: Path, meta: dict) -> tuple[list[float | None], float | None]:
    """Each thread's SQEs per enter, and (model) the share of requests another thread's plug held."""
    if not run.startswith("model"):
        return [t["mean_sqes_per_enter"] for t in meta["summary"].get("qemu_threads", [])], None
    from plugtrace.analysis import Run, df_queue_stats, df_thread_stats

    r = Run.open(out)
    threads = df_thread_stats(r)
    queues = df_queue_stats(r)
    held = float(queues["other_thread"].sum() / queues["requests"].sum()) if len(queues) else None
    return [round(float(v), 3) for v in threads["mean_sqes_per_enter"]], held


def point(run: str, queues: int, threads: int, seconds: float, out: Path) -> dict:
    row: dict = {"run": run, "queues": queues, "threads": threads}
    if queues < threads:
        return row | {"error": "could not measure: a queue is served by one thread, so one queue cannot use two"}
    p = subprocess.run(_command(run, queues, threads, seconds, out), capture_output=True, text=True)
    if p.returncode != 0:
        return row | {"error": could_not_measure(p)}
    meta = json.loads((out / "meta.json").read_text())
    per_thread, held = _per_thread(run, out, meta)
    return row | {
        "label": f"QEMU {meta['config']['qemu']['version']} ({meta['config']['accel']})"
        if "qemu" in meta["config"]
        else run,
        "iops": meta["summary"]["iops"],
        "sqes_per_enter": (meta.get("kernel_summary") or {}).get("mean_sqes_per_enter"),
        "per_thread_sqes_per_enter": per_thread,
        "held_by_other_thread": held,
        "plug_overlaps": meta["summary"].get("plug_overlaps"),
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s, one round, 1 or 2 queues on as many threads")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    require_root()
    print_host()
    seconds, rounds = (1.0, 1) if args.quick else (args.seconds, args.rounds)
    grid = [(1, 1), (2, 2)] if args.quick else GRID
    points = [(run, q, t) for run in RUNS for q, t in grid]
    got: dict[tuple, list[dict]] = {p: [] for p in points}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, (run, q, t) in enumerate(points if r % 2 == 0 else list(reversed(points))):
                got[(run, q, t)].append(point(run, q, t, seconds, Path(tmp) / f"r{r}-{i}"))
    rows, errors = [], []
    for (_run, q, t), results in got.items():
        ok = [x for x in results if "error" not in x]
        if not ok:
            errors.append(results[0])
            continue
        per_thread = [_mean(list(v)) for v in zip(*(x["per_thread_sqes_per_enter"] for x in ok))]
        rows.append(
            {
                "run": ok[0]["label"],
                "queues": q,
                "threads": t,
                "rounds": len(ok),
                "iops": _mean([x["iops"] for x in ok]),
                "sqes_per_enter": _mean([x["sqes_per_enter"] for x in ok]),
                "per_thread": " / ".join(f"{v:.2f}" for v in per_thread if v is not None),
                "per_thread_sqes_per_enter": per_thread,
                "held_by_other_thread": _mean([x["held_by_other_thread"] for x in ok]),
                "plug_overlaps": _mean([x["plug_overlaps"] for x in ok]),
            }
        )
    for e in errors:
        print(f"{e['run']}, {e['queues']} queue(s) on {e['threads']} thread(s): {e['error']}")
    print_table(
        f"one device, {LOAD['rw']} {LOAD['bs']} B, iodepth {LOAD['iodepth']} per queue, {seconds:g} s x {rounds} "
        "rounds (SQEs per enter: the kernel's; per thread: each thread's own)",
        rows,
        ["run", "queues", "threads", "iops", "sqes_per_enter", "per_thread", "held_by_other_thread"],
    )
    write_json(
        args.json,
        {"machine": machine(), "load": LOAD, "seconds": seconds, "rounds": rounds, "rows": rows, "errors": errors},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
