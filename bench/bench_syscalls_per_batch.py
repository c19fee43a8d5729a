"""Syscalls per request for virtio-blk at iodepth 32 with `defer`, counted by eBPF.

`plugtrace record --strategy defer --mode aggregate` on zram and on a loop
device; the kernel's count of io_uring_enter() calls is set against the
engine's own log of its batches:

* submitting enters per batch: eBPF's submitting io_uring_enter() calls ÷
  the batches the engine flushed. Target: 1 (one syscall per batch).
* SQEs per enter (eBPF) ÷ requests ready at the flush (the engine's queue
  length when the deferred call ran). Target: about 1 (the batch is what
  was ready).
* submitting enters per request, and the enters that only reap (busy-polling
  for completions, `--poll-max-ns`), per request: every syscall counts.

    python -m bench.bench_syscalls_per_batch [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from .common import PLUGTRACE, machine, print_table, require_root, write_json


def measure(kind: str, seconds: float, iodepth: int, workdir: Path, extra: list[str]) -> dict:
    out = workdir / f"run-{kind}"
    cmd = [
        *PLUGTRACE,
        "record",
        "--device",
        kind,
        "--size",
        "256M",
        "--strategy",
        "defer",
        "--iodepth",
        str(iodepth),
        "--mode",
        "aggregate",
        "--duration",
        str(seconds),
        "--quiet",
        "-o",
        str(out),
        "--probes",
        "enters",
        *extra,
    ]  # enters: the syscalls themselves, also those that only reap
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    meta = json.loads((out / "meta.json").read_text())
    counters = dict(pd.read_parquet(out / "tables" / "counters.parquet")[["name", "value"]].values)
    submits = pd.read_parquet(out / "tables" / "submits.parquet", columns=["nr_sqes", "ret"])
    batches = submits[submits["ret"] > 0]
    enters = int(counters.get("nr_enters", 0))
    waits = int(counters.get("nr_wait_enters", 0))
    requests = int(meta["summary"]["nr_requests"])
    ebpf_sqes = meta["kernel_summary"].get("mean_sqes_per_enter")  # from the in-kernel histogram
    ready = float(batches["nr_sqes"].mean()) if len(batches) else None
    return {
        "device": kind,
        "iodepth": iodepth,
        "requests": requests,
        "app_batches": int(len(batches)),
        "ebpf_submitting_enters": enters,
        "enters_per_batch": enters / len(batches) if len(batches) else None,
        "ebpf_sqes_per_enter": ebpf_sqes,
        "ready_per_batch": ready,
        "sqes_over_ready": ebpf_sqes / ready if ebpf_sqes and ready else None,
        "submit_enters_per_request": enters / requests if requests else None,
        "reap_only_enters_per_request": waits / requests if requests else None,
        "met": bool(len(batches))
        and enters == len(batches)
        and ebpf_sqes is not None
        and ready is not None
        and abs(ebpf_sqes / ready - 1) < 0.02,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    ap.add_argument("--iodepth", type=int, default=32)
    ap.add_argument("--devices", nargs="+", default=["zram", "loop"])
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    require_root()
    seconds = 1.0 if args.quick else args.duration
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(kind, seconds, args.iodepth, Path(tmp), []) for kind in args.devices]
    print_table(
        "syscalls per batch: defer, virtio-blk, eBPF count vs the engine's batches",
        rows,
        [
            "device",
            "requests",
            "app_batches",
            "ebpf_submitting_enters",
            "enters_per_batch",
            "ebpf_sqes_per_enter",
            "ready_per_batch",
            "submit_enters_per_request",
            "reap_only_enters_per_request",
            "met",
        ],
    )
    result = {
        "benchmark": "syscalls_per_batch",
        "machine": machine(),
        "rows": rows,
        "targets": {"enters_per_batch": 1.0, "sqes_over_ready": 1.0},
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
