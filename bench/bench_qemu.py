"""The model against real QEMU on one guest load and one device, and what tracing QEMU costs it.

One guest load (2 disks on one iothread / event-loop thread, 4 KiB random reads, iodepth 16 per
disk, on zram) run by the model (`plugtrace record`, strategies device-plug and defer, on a ring set
up as QEMU sets up its own: `--ring-setup plain`, no flags) and by
real QEMU 7.2 and 10.0 guests (`plugtrace qemu`, TCG here), each recorded as a user records it.
For each: IOPS and mean SQEs per io_uring_enter() (the kernel's count).

Tracing QEMU must not change its batching. Each real QEMU is booted in rounds, one guest each
way per round, in alternating order: untraced (`--mode off`), kernel-only tracing (`--qemu-probes
off`: the baseline that sees SQEs per enter), the default (aggregate, `--qemu-probes mark`: only the
guest's start mark on the QEMU side), the QEMU-side probes in aggregate mode (`--qemu-probes on`)
and events mode. Per way: mean guest IOPS and mean SQEs per enter, and the per-round ratios against
kernel-only (targets: default probes >= 0.95 of its IOPS, SQEs per enter within 5%). A QEMU
that is not installed prints "could not measure: ..." and the others still run.

    python -m bench.bench_qemu [--quick] [--seconds 5] [--rounds 3] [--json out.json]

The model's IOPS and the guest's are not comparable in absolute terms (the guest runs under
TCG: every guest instruction is emulated); its SQEs per enter are the batching question.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .common import PLUGTRACE, could_not_measure, machine, print_host, print_table, require_root, write_json

LOAD = {"disks": 2, "iodepth": 16, "bs": 4096, "rw": "randread", "device": "zram", "size": "256M"}


def _meta(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())


def _load_flags(seconds: float, out: Path) -> list[str]:
    """The flags that give the model and the real QEMU the same device and load."""
    return [
        "--device",
        LOAD["device"],
        "--size",
        LOAD["size"],
        "--iodepth",
        str(LOAD["iodepth"]),
        "--bs",
        str(LOAD["bs"]),
        "--rw",
        LOAD["rw"],
        "--duration",
        str(seconds),
        "--quiet",
        "-o",
        str(out),
    ]


def model(strategy: str, seconds: float, tmp: Path) -> dict:
    out = tmp / f"model-{strategy}"
    p = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--strategy",
            strategy,
            "--devices",
            str(LOAD["disks"]),
            "--ring-setup",
            "plain",  # QEMU's ring: io_uring_setup() without flags, as block/io_uring.c sets it up
            *_load_flags(seconds, out),
        ],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return {"run": f"model {strategy}", "error": could_not_measure(p)}
    m = _meta(out)
    return {
        "run": f"model {strategy}",
        "iops": m["summary"]["iops"],
        "sqes_per_enter": (m.get("kernel_summary") or {}).get("mean_sqes_per_enter"),
    }


#: the ways a real QEMU guest is run, and their flags
TRACING = {
    "untraced": ["--mode", "off"],
    "kernel only": ["--mode", "aggregate", "--qemu-probes", "off"],
    "default (aggregate, --qemu-probes mark)": ["--mode", "aggregate"],
    "QEMU probes on (aggregate)": ["--mode", "aggregate", "--qemu-probes", "on"],
    "events": ["--mode", "events"],
}


def real_qemu(version: str, how: str, seconds: float, out: Path) -> dict:
    """One guest of QEMU `version`, traced as `how` (a key of TRACING)."""
    p = subprocess.run(
        [
            *PLUGTRACE,
            "qemu",
            "--qemu",
            version,
            "--disks",
            str(LOAD["disks"]),
            "--iothreads",
            "shared",
            *TRACING[how],
            *_load_flags(seconds, out),
        ],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return {"run": f"QEMU {version}", "tracing": how, "error": could_not_measure(p)}
    m = _meta(out)
    return {
        "run": f"QEMU {m['config']['qemu']['version']} ({m['config']['accel']})",
        "tracing": how,
        "iops": m["summary"]["iops"],
        "sqes_per_enter": (m.get("kernel_summary") or {}).get("mean_sqes_per_enter"),
        "events_lost": m.get("events_lost"),
    }


def _interval(name: str, ratios: list[float]) -> dict:
    """The 95% confidence interval of the mean of per-round ratios (Student's t), as `name`_low/_high."""
    if len(ratios) < 2:
        return {}
    if np.ptp(ratios) == 0:  # kernel-only against itself: no spread
        return {f"{name}_low": ratios[0], f"{name}_high": ratios[0]}
    from scipy import stats

    low, high = stats.t.interval(0.95, len(ratios) - 1, loc=np.mean(ratios), scale=stats.sem(ratios))
    return {f"{name}_low": round(float(low), 4), f"{name}_high": round(float(high), 4)}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def qemu_rounds(version: str, seconds: float, rounds: int, tmp: Path, ways: list[str] | None = None) -> list[dict]:
    """`rounds` rounds of every way of TRACING (or of `ways`, kernel-only always among them), the order
    alternating; one summary row per way."""
    ways = list(TRACING) if ways is None else ["kernel only", *(w for w in ways if w != "kernel only")]
    got: dict[str, list[dict]] = {how: [] for how in ways}
    for r in range(rounds):
        order = ways if r % 2 == 0 else list(reversed(ways))
        for how in order:
            got[how].append(real_qemu(version, how, seconds, tmp / f"qemu-{version}-{r}-{how.split()[0]}"))
    errors = [x for runs in got.values() for x in runs if "error" in x]
    if errors:
        return [errors[0]]
    base = got["kernel only"]
    rows = []
    for how, runs in got.items():
        row = {
            "run": runs[0]["run"],
            "tracing": how,
            "rounds": len(runs),
            "iops": _mean([x["iops"] for x in runs]),
            "sqes_per_enter": _mean([x["sqes_per_enter"] for x in runs]),
            "iops_vs_kernel_only": _mean([x["iops"] / b["iops"] for x, b in zip(runs, base) if b["iops"]]),
            "sqes_vs_kernel_only": _mean(
                [
                    x["sqes_per_enter"] / b["sqes_per_enter"]
                    for x, b in zip(runs, base)
                    if x["sqes_per_enter"] and b["sqes_per_enter"]
                ]
            ),
            "per_round_iops": [x["iops"] for x in runs],
            "per_round_iops_vs_kernel_only": [round(x["iops"] / b["iops"], 4) for x, b in zip(runs, base) if b["iops"]],
            "per_round_sqes_vs_kernel_only": [
                round(x["sqes_per_enter"] / b["sqes_per_enter"], 4)
                for x, b in zip(runs, base)
                if x["sqes_per_enter"] and b["sqes_per_enter"]
            ],
        }
        row |= _interval("iops_vs_kernel_only", row["per_round_iops_vs_kernel_only"])
        row |= _interval("sqes_vs_kernel_only", row["per_round_sqes_vs_kernel_only"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s each, the defer model and QEMU 10.0 only")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the real QEMUs' tracing ways (default: 3)")
    ap.add_argument(
        "--ways",
        default=None,
        help="comma-separated ways to trace the real QEMUs, by their first word (untraced, kernel, default, QEMU, "
        "events), kernel only always among them (default: all)",
    )
    ap.add_argument("--versions", default=None, help="comma-separated QEMU versions (default: 7.2,10.0)")
    ap.add_argument("--no-model", action="store_true", help="leave out the model's runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    ways = None
    if args.ways:
        # each a way's first word: untraced, kernel, default, QEMU, events
        picked = {w.strip(): [k for k in TRACING if k.split()[0] == w.strip()] for w in args.ways.split(",")}
        unknown = [w for w, keys in picked.items() if not keys]
        if unknown:
            ap.error(f"--ways: unknown {unknown}; choose from {[k.split()[0] for k in TRACING]}")
        ways = [keys[0] for keys in picked.values()]
    require_root()
    print_host()
    seconds = 1.0 if args.quick else args.seconds
    strategies = [] if args.no_model else ["defer"] if args.quick else ["device-plug", "defer"]
    versions = args.versions.split(",") if args.versions else ["10.0"] if args.quick else ["7.2", "10.0"]
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        rows = [model(s, seconds, Path(tmp)) for s in strategies]
        real = [row for v in versions for row in qemu_rounds(v, seconds, rounds, Path(tmp), ways)]
    base = next((r for r in rows if r["run"] == "model defer" and r.get("sqes_per_enter")), None)
    for r in rows:
        if "error" in r:
            print(f"{r['run']}: {r['error']}")
        elif base and r.get("sqes_per_enter"):
            r["sqes_per_enter_vs_model_defer"] = r["sqes_per_enter"] / base["sqes_per_enter"]
    for r in real:
        if "error" in r:
            print(f"{r['run']}: {r['error']}")
    print_table(
        f"one guest load: {LOAD}, {seconds:g} s",
        [r for r in rows if "error" not in r] + [r for r in real if "error" not in r and r["tracing"] == "kernel only"],
        ["run", "iops", "sqes_per_enter", "sqes_per_enter_vs_model_defer"],
    )
    print_table(
        f"tracing a real QEMU: {rounds} rounds, alternating (targets: QEMU probes >= 0.95 of kernel-only IOPS, "
        "SQEs per enter within 5%)",
        [r for r in real if "error" not in r],
        [
            "run",
            "tracing",
            "iops",
            "sqes_per_enter",
            "iops_vs_kernel_only",
            "iops_vs_kernel_only_low",
            "iops_vs_kernel_only_high",
            "sqes_vs_kernel_only",
            "sqes_vs_kernel_only_low",
            "sqes_vs_kernel_only_high",
        ],
    )
    write_json(args.json, {"machine": machine(), "load": LOAD, "seconds": seconds, "rows": rows, "real_qemu": real})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
