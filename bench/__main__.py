"""Run every benchmark side by side and store one JSON table of the results.

    python -m bench [--quick] [--only NAME ...] [--out bench-results.json]

Each benchmark is a module `bench/bench_*.py` runnable on its own with
`--quick` and `--json PATH`. They run one after the other in this one
invocation, each comparing within itself (engine vs fio on the same device,
traced vs untraced), so the ratios, not the absolute numbers, are what count
on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import machine

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    ap.add_argument("--only", nargs="+", choices=available(), help="run only these")
    ap.add_argument("--out", default="bench-results.json")
    args = ap.parse_args(argv)
    results: dict = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or available():
            print(f"\n=== {name}", flush=True)
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)] + (["--quick"] if args.quick else [])
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=HERE.parent)
            entry = {"exit_code": proc.returncode, "seconds": round(time.monotonic() - t0, 1)}
            if out.exists():
                entry["result"] = json.loads(out.read_text())
            if proc.returncode != 0:
                failed.append(name)
            results["benchmarks"][name] = entry
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nall results: {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
