"""Where the engine's time goes: a sampled profile of every engine thread, Python and native frames.

Runs the engine (`defer`, 4k randread, iodepth 32, 2 devices) on a zram device
under py-spy and writes, beside the raw collapsed stacks (flamegraph.pl or
speedscope read them), a summary: the share of samples per leaf frame (where
the CPU was) and per Python function on the stack (what it was doing it for).

    sudo .venv/bin/python -m bench.profile_engine [--seconds 5] [--out bench/engine-profile]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
from pathlib import Path

from .common import machine, require_root

_WORKLOAD = """
from plugtrace import devices
from plugtrace.engine import WorkloadConfig, run_workload
target = devices.create_zram(1 << 30)
try:
    cfg = WorkloadConfig(strategy="defer", iodepth=32, duration_s={seconds}, rw="randread", devices=2)
    print("engine IOPS", round(run_workload(cfg, target.path, target.size_bytes, lambda n, c: None).iops))
finally:
    target.close()
"""


def summarise(raw: Path, top: int = 25) -> str:
    """Shares of samples by leaf frame and by Python function anywhere on the stack."""
    leaves: collections.Counter = collections.Counter()
    python: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        for f in set(frames):
            if ".py:" in f:
                python[f.split(" (")[0]] += n
    out = [f"{total} samples", "", "leaf frames (where the CPU was):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in leaves.most_common(top)]
    out += ["", "Python functions on the stack (inclusive):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in python.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("bench/engine-profile"),
        help="writes OUT.collapsed (raw stacks) and OUT.txt (summary)",
    )
    args = ap.parse_args(argv)
    require_root()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed (pip install py-spy; the dev extra has it)")
    raw = args.out.with_suffix(".collapsed")
    run = subprocess.run(
        [
            spy,
            "record",
            "--native",
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            sys.executable,
            "-c",
            _WORKLOAD.format(seconds=args.seconds),
        ],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"py-spy failed: {run.stderr[-2000:]}")
    host = machine()
    text = (
        f"engine profile: defer, 4k randread, iodepth 32, 2 devices, zram, {args.seconds:g} s\n"
        f"host: {host['cpu_model']}, {host['cpus']} CPUs, Linux {host['kernel']}, liburing {host['liburing']}\n"
        f"{run.stdout.strip()}\n\n{summarise(raw)}\n"
    )
    args.out.with_suffix(".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
