"""The model against real QEMU on one guest load and one device: SQEs per enter and IOPS.

One guest load (2 disks on one iothread / event-loop thread, 4 KiB random reads, iodepth 16 per
disk, on zram) run by the model (`plugtrace record`, strategies device-plug and defer) and by
real QEMU 7.2 and 10.0 guests (`plugtrace qemu`, TCG here), each recorded as a user records it.
For each: IOPS, mean SQEs per io_uring_enter() (the kernel's count), and for the real QEMUs
the cost of the QEMU-side probes: the guest's IOPS traced (kernel + QEMU uprobes) over its IOPS
booted untraced (`--measure-overhead`). A QEMU that is not installed prints "could not
measure: ..." and the others still run.

    python -m bench.bench_qemu [--quick] [--seconds 5] [--json out.json]

The model's IOPS and the guest's are not comparable in absolute terms (the guest runs under
TCG: every guest instruction is emulated); its SQEs per enter are the batching question.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from .common import PLUGTRACE, machine, print_table, require_root, write_json

LOAD = {"disks": 2, "iodepth": 16, "bs": 4096, "rw": "randread", "device": "zram", "size": "256M"}


def _failure(p: subprocess.CompletedProcess) -> str:
    last = (p.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("plugtrace: ")
    return last if last.startswith("could not measure") else f"could not measure: {last}"


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
            *_load_flags(seconds, out),
        ],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return {"run": f"model {strategy}", "error": _failure(p)}
    m = _meta(out)
    return {
        "run": f"model {strategy}",
        "iops": m["summary"]["iops"],
        "sqes_per_enter": (m.get("kernel_summary") or {}).get("mean_sqes_per_enter"),
    }


def real_qemu(version: str, seconds: float, tmp: Path) -> dict:
    out = tmp / f"qemu-{version}"
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
            "--measure-overhead",
            *_load_flags(seconds, out),
        ],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return {"run": f"QEMU {version}", "error": _failure(p)}
    m = _meta(out)
    o = m.get("tracing_overhead") or {}
    return {
        "run": f"QEMU {m['config']['qemu']['version']} ({m['config']['accel']})",
        "iops": m["summary"]["iops"],
        "sqes_per_enter": (m.get("kernel_summary") or {}).get("mean_sqes_per_enter"),
        "untraced_iops": o.get("untraced_iops"),
        "traced_over_untraced": o.get("ratio"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s each, the defer model and QEMU 10.0 only")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    require_root()
    seconds = 1.0 if args.quick else args.seconds
    strategies = ["defer"] if args.quick else ["device-plug", "defer"]
    versions = ["10.0"] if args.quick else ["7.2", "10.0"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [model(s, seconds, Path(tmp)) for s in strategies]
        rows += [real_qemu(v, seconds, Path(tmp)) for v in versions]
    base = next((r for r in rows if r["run"] == "model defer" and r.get("sqes_per_enter")), None)
    for r in rows:
        if "error" in r:
            print(f"{r['run']}: {r['error']}")
        elif base and r.get("sqes_per_enter"):
            r["sqes_per_enter_vs_model_defer"] = r["sqes_per_enter"] / base["sqes_per_enter"]
    print_table(
        f"one guest load: {LOAD}, {seconds:g} s",
        [r for r in rows if "error" not in r],
        ["run", "iops", "sqes_per_enter", "sqes_per_enter_vs_model_defer", "untraced_iops", "traced_over_untraced"],
    )
    write_json(args.json, {"machine": machine(), "load": LOAD, "seconds": seconds, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
