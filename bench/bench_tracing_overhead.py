"""Benchmark: what tracing costs the traced program, and what events mode can keep.

All in one run, on devices created for it and removed after:

1. fio (io_uring, 4 KiB randread, iodepth 32, fio's defaults otherwise) on zram
   and on a loop device: untraced; under `plugtrace record --mode aggregate
   -- fio` with its default probes (SQEs per enter, from io_uring's
   per-request tracepoint); with the block probes too (`--watch-device`:
   block requests and their latency, unplugs); with an empty BPF program on
   each tracepoint either of those hits (the floor: what the hits cost before
   any program runs, which no program on those hits can beat); with the
   `enters` probe (enter latency, through the syscall tracepoints); and under
   `--mode events`. They alternate and repeat (A B C ..., then B C ... A, ...)
   so a noisy neighbour hits them alike; each variant's ratio is the median
   over rounds of its IOPS / the untraced IOPS of the same round.
   Targets: aggregate / untraced >= 0.97 on loop, >= 0.7 on zram.
   This VM's speed drifts by several percent from one run to the next, more
   than the effect measured, so part 1 also measures inside one fio run: the
   programs of each variant (empty ones, the ones `record` loads, without
   and with the block probes; and, as a control, none) are loaded once and
   attached and detached in turn, in windows of 0.1 s, and each variant's
   mean rate of completed I/Os in its traced windows (the device's own count)
   is compared with that in its untraced ones. The targets are judged on that
   ratio.
2. Events mode capture: fio at rising --rate_iops on zram under events mode,
   every probe running (--watch-device); rows captured per second and events
   lost. Target: >= 200k events/s lossless.
3. Memory of `plugtrace record` in events mode at the highest lossless rate,
   every probe running, sampled every second (the recording process, and its
   bpftrace and decoder children apart). Target: <= 500 MB, flat.
4. Cross-check: the I/Os plugtrace counted equal fio's total_ios, and its
   SQEs-per-enter distribution matches fio's iodepth_submit histogram.

    python -m bench.bench_tracing_overhead [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import (
    PLUGTRACE,
    aggregate_programs,
    default_aggregate_probes,
    device,
    empty_programs,
    fio_command,
    held,
    machine,
    print_table,
    require_root,
    tracepoints_of,
    write_json,
)
from plugtrace import devices

TARGETS = {"loop": 0.97, "zram": 0.7}
TARGET_LOSSLESS_EVENTS_S = 200_000
TARGET_RSS_MB = 500


#: tracing variants compared with untraced fio: label -> (mode, extra record arguments, "{device}" standing
#: for the device's path); the "floor" modes are no plugtrace at all, only empty programs on the
#: tracepoints the default aggregate probes hit ("floor:device": with --watch-device)
VARIANTS = {
    "floor: empty programs": ("floor", []),
    # the default: SQEs per enter, what a plain script on io_uring_enter() tells, without latency
    "aggregate": ("aggregate", []),
    "floor with block probes: empty programs": ("floor:device", []),
    "aggregate --watch-device": ("aggregate", ["--watch-device", "{device}"]),
    # io_uring_enter() latency through the syscall tracepoints
    "aggregate, enters probe": ("aggregate", ["--probes", "enters"]),
    "events": ("events", []),
}
#: each aggregate variant's floor
FLOORS = {"aggregate": "floor: empty programs", "aggregate --watch-device": "floor with block probes: empty programs"}


def run_fio(
    path: str,
    runtime_s: float,
    mode: str | None,
    workdir: Path,
    extra: list[str] | None = None,
    on_start=None,
    record_extra: list[str] | None = None,
) -> tuple[dict, Path | None]:
    """fio's job result, untraced (`mode` None), with empty programs on the default probes' tracepoints
    ("floor", "floor:device") or under plugtrace record; and the run directory."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    fio_json = out / "fio.json"
    cmd = fio_command(path, runtime_s=runtime_s, extra=[f"--output={fio_json}", *(extra or [])])
    if mode in ("floor", "floor:device"):
        proc = held(cmd)
        with contextlib.closing(empty_programs(tracepoints_of(default_aggregate_probes(mode == "floor:device")))):
            proc.communicate("go\n")
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
        return json.loads(fio_json.read_text())["jobs"][0], None
    run_dir = None
    if mode is not None:
        run_dir = out / "run"
        cmd = [
            *PLUGTRACE,
            "record",
            "--mode",
            mode,
            "--quiet",
            "--max-events",
            "100000000",
            "-o",
            str(run_dir),
            *(record_extra or []),
            "--",
            *cmd,
        ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_start is not None:
        on_start(proc.pid)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-2000:]}")
    return json.loads(fio_json.read_text())["jobs"][0], run_dir


def fio_read(job: dict) -> tuple[float, int]:
    return float(job["read"]["iops"]), int(job["read"]["total_ios"])


def overhead(kind: str, path: str, runtime_s: float, repeats: int, workdir: Path) -> tuple[list[dict], list[dict]]:
    iops: dict[str, list[float]] = {"untraced": [], **{label: [] for label in VARIANTS}}
    checks = []
    labels = list(iops)
    for k in range(repeats):
        # each round starts one variant later, so no variant always runs first or right after another
        for label in labels[k % len(labels) :] + labels[: k % len(labels)]:
            mode, extra = VARIANTS.get(label, (None, []))
            job, run_dir = run_fio(path, runtime_s, mode, workdir, record_extra=[a.format(device=path) for a in extra])
            iops[label].append(fio_read(job)[0])
            if run_dir is not None:
                checks.append(cross_check(kind, label, job, run_dir))
                backends = json.loads((run_dir / "meta.json").read_text())["probes"].get("backends", {})
                checks[-1]["sqes_from"] = ", ".join(
                    f"{t}: {backends[t]}" for t in ("enters", "uring_requests") if t in backends
                )
    rows = []
    for label, values in iops.items():
        # each round's traced run against the untraced run of the same round
        ratio = statistics.median(v / u for v, u in zip(values, iops["untraced"]) if u)
        rows.append(
            {
                "device": kind,
                "tracing": label,
                "median_iops": statistics.median(values),
                "runs": len(values),
                "ratio": ratio,
            }
        )
    return rows, checks


#: programs attached in the toggled windows, labelled as the VARIANTS they stand for:
#: label -> f(pid of fio's job, device's major:minor) -> the programs (`BpfObject`s); the A/A
#: control attaches nothing, and shows what the method itself reads as a difference
TOGGLED = {
    "A/A control: nothing attached": lambda pid, dev: [],
    "floor: empty programs": lambda pid, dev: [empty_programs(tracepoints_of(default_aggregate_probes()))],
    "aggregate": lambda pid, dev: [aggregate_programs(name, pid) for name in default_aggregate_probes()],
    "floor with block probes: empty programs": lambda pid, dev: [
        empty_programs(tracepoints_of(default_aggregate_probes(device_known=True)))
    ],
    "aggregate --watch-device": lambda pid, dev: [
        aggregate_programs(name, pid, dev) for name in default_aggregate_probes(device_known=True)
    ],
}


def _completed_ios(path: str) -> int:
    """Reads and writes the device has completed (the kernel's count)."""
    stat = devices.block_stat(path)
    return stat["reads"] + stat["writes"]


def toggled(kind: str, path: str, window_s: float, pairs: int) -> list[dict]:
    """One fio run in which the programs of each of TOGGLED, loaded once, are
    attached and detached in turn: for each label a pair of windows of
    `window_s`, one without and one with its programs (in alternating order),
    then the next label's pair, `pairs` times round. A window's rate is the
    I/Os the device completed in it (the kernel's count), read after attaching
    and before detaching. A label's ratio is the mean rate of its traced
    windows over that of its untraced ones (they take turns, so slow drift
    cancels), with a 95% interval from the spread of the pairs' ratios."""
    dev = devices.block_dev_t(path)
    per_pair = (window_s + 0.01) * 2 * len(TOGGLED)
    fio = subprocess.Popen(fio_command(path, runtime_s=per_pair * pairs + 60), stdout=subprocess.DEVNULL)
    opened: dict[str, list] = {}
    ratios: dict[str, list[float]] = {label: [] for label in TOGGLED}
    rate_sums: dict[str, list[float]] = {label: [0.0, 0.0] for label in TOGGLED}  # [traced, untraced]
    try:
        deadline = time.monotonic() + 10
        while not _children(fio.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        job = _children(fio.pid)
        if not job:
            raise SystemExit("fio did not start its job process")
        for label, attach in TOGGLED.items():
            opened[label] = attach(job[0], dev)
            for progs in opened[label]:
                progs.pause()
        time.sleep(1)  # past fio's ramp
        for k in range(pairs):
            for label, progs_list in opened.items():
                rates = {}
                for traced in (False, True) if k % 2 == 0 else (True, False):
                    for progs in progs_list if traced else []:
                        progs.resume()
                    n0, t0 = _completed_ios(path), time.monotonic()
                    time.sleep(window_s)
                    rates[traced] = (_completed_ios(path) - n0) / (time.monotonic() - t0)
                    for progs in progs_list if traced else []:
                        progs.pause()
                if rates[False]:
                    ratios[label].append(rates[True] / rates[False])
                    rate_sums[label][0] += rates[True]
                    rate_sums[label][1] += rates[False]
    finally:
        for progs_list in opened.values():
            for progs in progs_list:
                progs.close()
        fio.send_signal(signal.SIGINT)
        fio.wait()
    rows = []
    for label, r in ratios.items():
        half = 1.96 * statistics.stdev(r) / len(r) ** 0.5 if len(r) > 1 else float("nan")
        traced, untraced = rate_sums[label]
        ratio = traced / untraced if untraced else float("nan")
        rows.append(
            {
                "device": kind,
                "tracing": label,
                "pairs": len(r),
                "window_s": window_s,
                "ratio": ratio,
                "ci95_low": ratio - half,
                "ci95_high": ratio + half,
            }
        )
    return rows


def verdicts(rows: list[dict], windows: list[dict]) -> list[str]:
    """Each device's target for the default probes, judged on the toggled windows'
    ratio (separate fio runs drift by more than the effect measured; the rounds'
    ratio is given beside it), and what the block probes leave. The floor says
    what any program on the same hits could reach at best."""
    out = []
    for kind in dict.fromkeys(r["device"] for r in rows):
        by = {r["tracing"]: r for r in rows if r["device"] == kind}
        win = {r["tracing"]: r for r in windows if r["device"] == kind}

        def toggled_text(label: str, win: dict = win) -> str:
            if label not in win:
                return "not measured toggled"
            w = win[label]
            return f"{w['ratio']:.3f} toggled (95% interval {w['ci95_low']:.3f}-{w['ci95_high']:.3f})"

        target = TARGETS[kind]
        for label, floor_label in FLOORS.items():
            decisive = win.get(label, by[label])["ratio"]
            hits = ", ".join(tracepoints_of(default_aggregate_probes(VARIANTS[floor_label][0] == "floor:device")))
            line = (
                f"{kind}, {label}: {toggled_text(label)}, {by[label]['ratio']:.3f} over rounds; floor (empty "
                f"programs on {hits}): {toggled_text(floor_label)}, {by[floor_label]['ratio']:.3f} over rounds"
            )
            if label == "aggregate":
                line += f"; target >= {target}: {'met' if decisive >= target else 'MISSED'}"
            out.append(line)
        if "A/A control: nothing attached" in win:
            out.append(
                f"{kind}, A/A control (the method with nothing attached): "
                f"{toggled_text('A/A control: nothing attached')}"
            )
    return out


def cross_check(kind: str, mode: str, job: dict, run_dir: Path) -> dict:
    """plugtrace's count of fio's I/Os and batch sizes against fio's own numbers."""
    from plugtrace.analysis import Run, df_batch_sizes

    run = Run.open(run_dir)
    sizes = df_batch_sizes(run, source="auto")
    if run.has("uring_requests"):
        t = run.table("uring_requests", ["event"])
        counted = int((t["event"] == "submit").sum())
    else:  # aggregate: the in-kernel SQEs-per-enter histogram has one bucket per count
        counted = int((sizes["nr_sqes"] * sizes["count"]).sum())
    share_1_4 = float(sizes.loc[sizes["nr_sqes"] <= 4, "count"].sum() / sizes["count"].sum() * 100)
    return {
        "device": kind,
        "tracing": mode,
        "fio_total_ios": fio_read(job)[1],
        "plugtrace_ios": counted,
        "equal": counted == fio_read(job)[1],
        "fio_submit_1_4_pct": job["iodepth_submit"]["4"],
        "plugtrace_submit_1_4_pct": round(share_1_4, 2),
        "events_lost": run.meta.get("events_lost"),
    }


def capture_rates(path: str, rates: list[int], runtime_s: float, workdir: Path) -> list[dict]:
    rows = []
    for rate in rates:
        job, run_dir = run_fio(
            path, runtime_s, "events", workdir, extra=[f"--rate_iops={rate}"], record_extra=["--watch-device", path]
        )
        meta = json.loads((run_dir / "meta.json").read_text())
        rows_captured = sum(t["rows"] for name, t in meta["tables"].items())
        elapsed = meta["summary"]["elapsed_s"]
        rows.append(
            {
                "fio_rate_iops": rate,
                "fio_iops": round(fio_read(job)[0]),
                "events": rows_captured,
                "events_per_s": rows_captured / elapsed,
                "events_lost": meta["events_lost"],
                "lossless": meta["events_lost"] == 0,
            }
        )
    return rows


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _pss_mb(pid: int) -> float:
    """The process's proportional set size: shared pages (libraries, a ring buffer mapped
    twice) divided among the processes that map them, where RSS counts them in full in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def memory(path: str, rate: int, runtime_s: float, workdir: Path) -> dict:
    # per sample: (recorder RSS, bpftrace RSS, decoders RSS, PSS of the recorder and all of them), MB
    samples: list[tuple[float, float, float, float]] = []
    done = threading.Event()

    def sample(pid: int) -> None:
        def loop() -> None:
            while not done.wait(1.0):
                kids = _children(pid)
                names = {
                    k: Path(f"/proc/{k}/comm").read_text().strip() if Path(f"/proc/{k}/comm").exists() else ""
                    for k in kids
                }
                ours = [k for k, n in names.items() if n == "bpftrace" or n.startswith("python")]
                samples.append(
                    (
                        _rss_mb(pid),
                        sum(_rss_mb(k) for k, n in names.items() if n == "bpftrace"),
                        sum(_rss_mb(k) for k, n in names.items() if n.startswith("python")),
                        _pss_mb(pid) + sum(_pss_mb(k) for k in ours),
                    )
                )

        threading.Thread(target=loop, daemon=True).start()

    try:
        run_fio(
            path,
            runtime_s,
            "events",
            workdir,
            extra=[f"--rate_iops={rate}"],
            on_start=sample,
            record_extra=["--watch-device", path],
        )
    finally:
        done.set()
    rec = np.array([s[0] for s in samples]) if samples else np.zeros(1)
    third = max(1, len(rec) // 3)
    return {
        "rate_iops": rate,
        "seconds": runtime_s,
        "samples": len(samples),
        "recorder_max_mb": float(rec.max()),
        "recorder_first_third_mb": float(rec[:third].mean()),
        "recorder_last_third_mb": float(rec[-third:].mean()),
        "bpftrace_max_mb": max((s[1] for s in samples), default=0.0),
        "decoders_max_mb": max((s[2] for s in samples), default=0.0),
        "all_processes_pss_max_mb": max((s[3] for s in samples), default=0.0),
        "target_mb": TARGET_RSS_MB,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s runs, one repeat, zram only: check the benchmark runs")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--overhead-only", action="store_true", help="only part 1 (traced vs untraced fio)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of part 1, each running every variant (default 5)")
    ap.add_argument(
        "--pairs",
        type=int,
        default=200,
        help="traced/untraced window pairs of each variant in the toggled run (default 200)",
    )
    ap.add_argument("--window", type=float, default=0.1, help="seconds of each toggled window (default 0.1)")
    ap.add_argument("--runtime", type=float, default=3.0, help="seconds of each fio run (default 3)")
    args = ap.parse_args(argv)
    require_root()
    runtime, repeats = (1, 1) if args.quick else (args.runtime, max(1, args.rounds))
    rates = [20_000, 50_000] if args.quick else [50_000, 100_000, 150_000, 200_000, 250_000]
    mem_seconds = 3 if args.quick else 60

    rows, checks, windows, capture, mem = [], [], [], [], None
    with tempfile.TemporaryDirectory(prefix="plugtrace-bench-") as d:
        workdir = Path(d)
        for kind in ("zram",) if args.quick else ("zram", "loop"):
            with device(kind, "1G") as target:
                r, c = overhead(kind, target.path, runtime, repeats, workdir)
                rows += r
                checks += c
                windows += toggled(
                    kind, target.path, 0.05 if args.quick else args.window, 3 if args.quick else args.pairs
                )
                if kind == "zram" and not args.overhead_only:
                    capture = capture_rates(target.path, rates, runtime, workdir)
                    lossless = [c for c in capture if c["lossless"]]
                    best = max(lossless, key=lambda c: c["events_per_s"]) if lossless else capture[0]
                    mem = memory(target.path, best["fio_rate_iops"], mem_seconds, workdir)
    print_table(
        "fio traced by plugtrace vs untraced (ratio: median over rounds of traced / untraced IOPS)",
        rows,
        ["device", "tracing", "median_iops", "runs", "ratio"],
    )
    print_table(
        "inside one fio run, each variant's programs attached and detached in turn (ratio: mean rate "
        "of completed I/Os in its traced windows / in its untraced ones; 95% interval from the pairs' "
        "spread)",
        windows,
        ["device", "tracing", "pairs", "window_s", "ratio", "ci95_low", "ci95_high"],
    )
    judged = verdicts(rows, windows)
    print("\n" + "\n".join(judged))
    if capture:
        print_table(
            "events mode: rows captured per second at a fixed fio rate (zram)",
            capture,
            ["fio_rate_iops", "fio_iops", "events", "events_per_s", "events_lost", "lossless"],
        )
        lossless = [c["events_per_s"] for c in capture if c["lossless"]]
        best = max(lossless) if lossless else None
        print(
            f"\nhighest lossless capture: {'none lossless' if best is None else f'{best:,.0f} events/s'}"
            f"  [target >= {TARGET_LOSSLESS_EVENTS_S:,}: "
            f"{'ok' if best and best >= TARGET_LOSSLESS_EVENTS_S else 'MISSED (or not reached by the rates tried)'}]"
        )
    if mem:
        print(
            f"memory of plugtrace record, events mode at {mem['rate_iops']:,} IOPS for {mem['seconds']} s: "
            f"max {mem['recorder_max_mb']:.0f} MB (first third {mem['recorder_first_third_mb']:.0f}, last third "
            f"{mem['recorder_last_third_mb']:.0f}); bpftrace {mem['bpftrace_max_mb']:.0f} MB, decoders "
            f"{mem['decoders_max_mb']:.0f} MB  [target <= {TARGET_RSS_MB} MB]; all of them together, "
            f"shared pages counted once (PSS): max {mem['all_processes_pss_max_mb']:.0f} MB"
        )
    print_table(
        "cross-check against fio's own numbers",
        checks,
        [
            "device",
            "tracing",
            "fio_total_ios",
            "plugtrace_ios",
            "equal",
            "fio_submit_1_4_pct",
            "plugtrace_submit_1_4_pct",
            "events_lost",
            "sqes_from",
        ],
    )
    write_json(
        args.json,
        {
            "benchmark": "tracing_overhead",
            "machine": machine(),
            "quick": args.quick,
            "overhead": rows,
            "toggled": windows,
            "verdicts": judged,
            "capture": capture,
            "memory": mem,
            "cross_check": checks,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
