"""What `plugtrace record` adds to the engine, stage by stage, side by side in one run.

Each round runs the same workload (`defer`, 4k randread, iodepth 32, one
device) on one zram or loop device in several ways, the order rotating from
round to round, each adding one piece of what `plugtrace record` does:

* ``engine``: `run_workload` in-process, its log converted but not stored
  (what `bench_engine_vs_fio` measured until it measured `record` too);
* ``+ run directory``: the log written as Parquet to a run directory by the
  log writer thread, as `record` writes it;
* ``+ the CLI's imports``: the same in a process that has imported what the
  `plugtrace` command imports (a larger heap for the collector to walk);
* ``record --mode off``: the command itself, no tracer, the progress line on;
* ``record`` (aggregate, the default): with its in-kernel probes.

It prints each way's median IOPS and the median of its per-round ratio to
the first way, and writes them to OUT.txt with the host.

    sudo .venv/bin/python -m bench.profile_record [--device zram] [--seconds 3] [--rounds 5] [--out OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import PLUGTRACE, device, machine, require_root

#: one in-process way, run in a fresh interpreter: {store} the log or not, {cli} import what `plugtrace` imports
_IN_PROCESS = """
import json, sys, tempfile
from pathlib import Path
if {cli}:
    from plugtrace.cli import build_parser
    build_parser()
from plugtrace.engine import WorkloadConfig, run_workload
from plugtrace.run import RunWriter
cfg = WorkloadConfig(strategy="defer", iodepth=32, duration_s={seconds}, rw="randread")
with tempfile.TemporaryDirectory() as tmp:
    writer = RunWriter(Path(tmp) / "run", {{}})
    sink = writer.append if {store} else (lambda name, columns: None)
    iops = run_workload(cfg, {path!r}, {size}, sink).iops
    writer.close_tables()
print(json.dumps(iops))
"""


def _in_process(path: str, size: int, seconds: float, store: bool, cli: bool) -> float:
    code = _IN_PROCESS.format(path=path, size=size, seconds=seconds, store=store, cli=cli)
    return float(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout))


def _record(path: str, seconds: float, mode: str, out: Path) -> float:
    subprocess.run(
        [*PLUGTRACE, "record", "--device", path, "--mode", mode, "--duration", str(seconds), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    return float(json.loads((out / "meta.json").read_text())["summary"]["iops"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="zram", choices=("zram", "loop"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/record-profile"), help="writes OUT.txt")
    args = ap.parse_args(argv)
    require_root()
    s = args.seconds
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, device(args.device, "1G") as target:
        p, n = target.path, target.size_bytes
        ways = {
            "engine": lambda r: _in_process(p, n, s, store=False, cli=False),
            "+ run directory": lambda r: _in_process(p, n, s, store=True, cli=False),
            "+ the CLI's imports": lambda r: _in_process(p, n, s, store=True, cli=True),
            "record --mode off": lambda r: _record(p, s, "off", Path(tmp) / f"off-{r}"),
            "record (aggregate)": lambda r: _record(p, s, "aggregate", Path(tmp) / f"aggregate-{r}"),
        }
        names = list(ways)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                runs.setdefault(name, []).append(ways[name](r))
                print(f"round {r}: {name}: {runs[name][-1]:,.0f} IOPS", file=sys.stderr, flush=True)
    host = machine()
    lines = [
        f"record profile: defer, 4k randread, iodepth 32, 1 device, {args.device}, {s:g} s, "
        f"median of {args.rounds} rotating rounds",
        f"host: {host['cpu_model']}, {host['cpus']} CPUs, Linux {host['kernel']}, liburing {host['liburing']}",
        "",
        f"{'way':<22}{'IOPS':>12}  ÷ engine (per-round median, range)",
    ]
    first = runs[names[0]]
    for name in names:
        ratios = [x / b for x, b in zip(runs[name], first)]
        lines.append(
            f"{name:<22}{statistics.median(runs[name]):>12,.0f}  {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f})"
        )
    text = "\n".join(lines) + "\n"
    args.out.with_suffix(".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
