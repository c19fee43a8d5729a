"""Benchmark: what recording costs the engine itself, traced ÷ untraced, each pair in one record.

Each round runs `plugtrace record --measure-overhead` once per variant: the
workload untraced (as with --mode off), then at once the same workload traced,
on the same device; the ratio of the two IOPS is that round's. Variants rotate
their order from round to round; the median over rounds is reported.

* default aggregate recording (target >= 0.95): in-kernel histograms, no markers;
* default events recording (target >= 0.8): one row per kernel event;
* aggregate with the plug-section marker uprobes too (--probes ...,markers),
  which the default leaves off: what they would cost.

Beside the IOPS ratio, each pair's change in mean SQEs per enter (the app log's, traced vs
untraced): events mode must keep it within 5%. `--requests 20000` measures runs as long as
data/'s samples (under 0.1 s on zram) instead of `--seconds`.

    python -m bench.bench_engine_tracing [--devices zram loop] [--rounds 3] [--seconds 3 | --requests N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from .common import PLUGTRACE, machine, print_table, require_root, write_json

VARIANTS = {
    "aggregate (default)": (["--mode", "aggregate"], 0.95),
    "events (default)": (["--mode", "events"], 0.8),
    "aggregate + markers": (["--mode", "aggregate", "--probes", "uring_requests,block_rq,block_unplug,markers"], None),
}


#: events mode may change the engine's mean SQEs per enter by at most this much (issue's target)
SQES_TOLERANCE = 0.05


def _pair(device: str, args: list[str], length: list[str], out: Path) -> dict:
    subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            device,
            "--size",
            "1G",
            "--strategy",
            "defer",
            "--iodepth",
            "32",
            "--devices",
            "2",
            *length,
            "--measure-overhead",
            "--quiet",
            *args,
            "-o",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    meta = json.loads((out / "meta.json").read_text())
    o = meta["tracing_overhead"]
    before, after = o.get("untraced_mean_sqes_per_submit"), o.get("traced_mean_sqes_per_submit")
    return o | {"sqes_change": after / before - 1 if before and after is not None else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", nargs="+", default=["zram", "loop"], choices=("zram", "loop"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="per half of a pair (default 3)")
    ap.add_argument(
        "--requests",
        type=int,
        default=None,
        help="per half of a pair, this many requests instead of --seconds (data/'s runs are 20000)",
    )
    ap.add_argument("--quick", action="store_true", help="one short round on zram")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    require_root()
    devices, rounds, seconds = (["zram"], 1, 0.5) if args.quick else (args.devices, args.rounds, args.seconds)
    length = ["--requests", str(args.requests)] if args.requests else ["--duration", str(seconds)]
    names = list(VARIANTS)
    pairs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    out = Path(tmp) / f"{device}-{r}-{names.index(name)}"
                    pairs.setdefault((device, name), []).append(_pair(device, VARIANTS[name][0], length, out))
    rows, ok = [], True
    for (device, name), got in pairs.items():
        ratio = statistics.median(p["ratio"] for p in got)
        changes = [p["sqes_change"] for p in got if p["sqes_change"] is not None]
        sqes_change = statistics.median(changes) if changes else None
        target = VARIANTS[name][1]
        met = None if target is None else ratio >= target
        if name.startswith("events") and met is not None:
            met = met and sqes_change is not None and abs(sqes_change) <= SQES_TOLERANCE
        ok &= met is not False
        rows.append(
            {
                "device": device,
                "variant": name,
                "ratio": ratio,
                "range": f"{min(p['ratio'] for p in got):.3f}-{max(p['ratio'] for p in got):.3f}",
                "untraced_iops": statistics.median(p["untraced_iops"] for p in got),
                "traced_iops": statistics.median(p["traced_iops"] for p in got),
                "sqes_change": "could not measure" if sqes_change is None else f"{sqes_change:+.1%}",
                "target": target,
                "met": "" if met is None else ("ok" if met else "MISSED"),
            }
        )
    print_table(
        f"engine traced ÷ untraced, median of {rounds} paired rounds (defer, 2 devices, iodepth 32, "
        f"{' '.join(length).lstrip('-')} per half); sqes_change: mean SQEs per enter, traced vs untraced "
        f"(events target: within {SQES_TOLERANCE:.0%})",
        rows,
        ["device", "variant", "ratio", "range", "untraced_iops", "traced_iops", "sqes_change", "target", "met"],
    )
    print("all targets met" if ok else "some targets MISSED")
    result = {
        "benchmark": "engine_tracing",
        "machine": machine(),
        "rounds": rounds,
        "seconds": None if args.requests else seconds,
        "requests": args.requests,
        "rows": rows,
        "all_targets_met": ok,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
