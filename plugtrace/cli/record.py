"""plugtrace record: run a batching workload on a real device (or trace another program)."""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ..errors import EXIT_DATA_MISMATCH, EXIT_INTERRUPTED, EXIT_OK, CapabilityError, DeviceError, UsageError
from ..processes import Child, spawn
from ..procfs import descendants, program_problem
from .recording import Recording

HELP = "run a workload on a real io_uring device and record what happened"
DESCRIPTION = """\
Run emulated guest devices (virtio-blk-like, IDE-like) that submit I/O through
plugtrace's io_uring driver with one batching strategy, on a real block device,
while bpftrace records what the kernel saw. Writes a run directory (meta.json +
Parquet tables) for `plugtrace report` and the notebooks.

Strategies:
  immediate       submit every request at once (one io_uring_enter per request)
  device-plug     QEMU 8.0: per-device plug counters, submit at the last unplug
  defer           QEMU 8.1+: thread-local defer_call() sections (blk_io_plug_call)
  loop-iteration  QEMU 10 aio_add_sqe(): submit once per event-loop iteration

Devices:
  loop            a loop device with direct I/O over a new sparse file (removed after)
  zram            a new zram device (removed after)
  file:PATH       a file opened with O_DIRECT (created and removed if missing)
  /dev/NAME       your block device: read-only unless --allow-write

External programs (tracing only, no workload of ours):
  plugtrace record --pid PID --duration 10
  plugtrace record -- fio --ioengine=io_uring ...
  plugtrace record --watch-device /dev/nvme0n1 -- fio ...   (block requests: every one on that device)

Examples:
  plugtrace record --device loop --strategy defer --iodepth 32 --duration 5
  plugtrace record --device zram --devices 2 --ide-devices 1 --interleave 0.2
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..engine import POLL_MAX_NS, RING_SETUPS, RW_MODES, STRATEGIES

    w = p.add_argument_group("workload")
    w.add_argument("--device", default="loop", help="loop | zram | file:PATH | /dev/NAME (default: loop)")
    w.add_argument("--size", default="1G", help="size of a device we create (default: 1G)")
    w.add_argument(
        "--sparse",
        action="store_true",
        help="loop: leave the backing file sparse instead of filling it with data first (holes read "
        "as zeros from no storage: faster than any real disk)",
    )
    w.add_argument(
        "--allow-write",
        action="store_true",
        help="let a write workload write to a device you named (its data is destroyed)",
    )
    w.add_argument("--strategy", default="defer", help=f"{' | '.join(STRATEGIES)} (default: defer)")
    w.add_argument("--devices", type=int, default=1, help="virtio-blk-like devices (default: 1)")
    w.add_argument("--ide-devices", type=int, default=0, help="IDE-like devices: depth 1, no plug (default: 0)")
    w.add_argument("--threads", type=int, default=1, help="event-loop threads; devices are spread over them")
    w.add_argument("--iodepth", type=int, default=32, help="requests each virtio-blk guest keeps outstanding")
    w.add_argument("--bs", type=int, default=4096, help="block size in bytes, a multiple of 512 (default: 4096)")
    w.add_argument("--rw", default="randread", help=f"{' | '.join(RW_MODES)} (default: randread)")
    w.add_argument("--rwmixread", type=int, default=50, help="percent reads for rw/randrw (default: 50)")
    w.add_argument("--duration", type=float, default=None, help="seconds to run (default: 5)")
    w.add_argument("--requests", type=int, default=None, help="stop after this many requests instead")
    w.add_argument(
        "--interleave",
        type=float,
        default=0.0,
        help="probability that a virtio-blk handler does a synchronous read with nested "
        "aio_poll() inside its plug section (default: 0)",
    )
    w.add_argument(
        "--ring-setup",
        default="coop",
        choices=tuple(RING_SETUPS),
        help="io_uring setup flags: coop = COOP_TASKRUN|TASKRUN_FLAG|SINGLE_ISSUER, cooperative "
        "like fio's rings (completions wait for our next kernel entry, no interrupt); plain = "
        "none, as QEMU's "
        "block/io_uring.c (an interrupt per completion: much slower in VMs). Default: coop",
    )
    w.add_argument(
        "--poll-max-ns",
        type=int,
        default=POLL_MAX_NS,
        help="busy-poll for completions this long before sleeping, as QEMU's IOThread "
        f"poll-max-ns (default: {POLL_MAX_NS}; 0: off)",
    )
    w.add_argument("--seed", type=int, default=1, help="random seed for offsets and data (default: 1)")
    w.add_argument("--no-verify", action="store_true", help="skip reading back written blocks")
    t = p.add_argument_group("tracing")
    t.add_argument(
        "--mode",
        default="aggregate",
        choices=("aggregate", "events", "off"),
        help="aggregate: histograms in the kernel (cheap, default); events: one row per "
        "event (bounded); off: app-side log only",
    )
    t.add_argument(
        "--max-events",
        type=int,
        default=5_000_000,
        help="events mode: keep at most this many events, count the rest as lost",
    )
    t.add_argument(
        "--probes",
        default=None,
        metavar="LIST",
        help="only these probes, comma-separated: enters, uring_requests, block_rq, block_unplug, "
        "markers (default: all, except enters in aggregate mode, where uring_requests counts SQEs "
        "per enter from io_uring's per-request tracepoint; name enters for io_uring_enter() "
        "latency, at the price of every system call of the machine passing a tracepoint; "
        "markers, the uprobes on plugtrace's own plug sections, only when named: the engine "
        "logs its sections itself and a uprobe trap per marker costs it IOPS (bench_engine_tracing measures it); "
        "for a traced program, block_rq and "
        "block_unplug only with --watch-device: they cost it 2-3 probe hits per I/O). "
        "Every probe hit costs the traced program time: trace what you need",
    )
    t.add_argument(
        "--measure-overhead",
        action="store_true",
        help="run the workload untraced first, then traced, and store both IOPS and the ratio",
    )
    t.add_argument("--pid", type=int, default=None, help="trace this running process instead of a workload")
    t.add_argument(
        "--watch-device",
        default=None,
        metavar="DEV",
        help="with --pid or a command: also run the block probes (block_rq, block_unplug), "
        "counting every request on this block device (/dev/NAME or MAJ:MIN), whoever "
        "issues it. Without it they are off for a traced program; named in --probes, they "
        "count the requests the traced process issues itself (which leaves out requests "
        "the kernel dispatches from its own workers)",
    )
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", default=None, help="run directory (default: runs/DATE-STRATEGY)")
    o.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="after --: a program to run and trace (e.g. fio with the io_uring engine)",
    )


def _probe_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    from ..tracing.probes import PROBES

    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {spec.table for spec in PROBES}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise UsageError(
            f"--probes: unknown probe {', '.join(bad) or repr(text)} (choose from {', '.join(sorted(known))})"
        )
    return names


#: options of plugtrace's own workload, which a traced program (--pid, -- CMD) does not use
_WORKLOAD_ONLY = (
    "device",
    "size",
    "sparse",
    "allow_write",
    "strategy",
    "devices",
    "ide_devices",
    "threads",
    "iodepth",
    "bs",
    "rw",
    "rwmixread",
    "requests",
    "interleave",
    "ring_setup",
    "poll_max_ns",
    "seed",
    "no_verify",
    "measure_overhead",
)


def _refuse_unused_options(args) -> None:
    """A workload option given while tracing another program would be silently ignored: refuse it."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    given = [name for name in _WORKLOAD_ONLY if getattr(args, name) != getattr(defaults, name)]
    if given:
        names = ", ".join(f"--{n.replace('_', '-')}" for n in given)
        raise UsageError(
            f"{names}: for plugtrace's own workload; a traced program (--pid, -- CMD) runs its own "
            "(give it these settings itself)"
        )


def _check_numbers(args) -> None:
    """Refuse values that would be stored as invalid JSON or overflow later."""
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise UsageError(f"--duration: a positive number of seconds, not {args.duration}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed: 0 to 2**63-1, not {args.seed}")


def _config_from_args(args):
    from ..engine import WorkloadConfig

    duration = args.duration
    if duration is None and args.requests is None:
        duration = 5.0
    cfg = WorkloadConfig(
        strategy=args.strategy,
        devices=args.devices,
        ide_devices=args.ide_devices,
        threads=args.threads,
        iodepth=args.iodepth,
        bs=args.bs,
        rw=args.rw,
        rwmixread=args.rwmixread,
        duration_s=duration,
        requests=args.requests,
        interleave=args.interleave,
        seed=args.seed,
        verify=not args.no_verify,
        ring_setup=args.ring_setup,
        poll_max_ns=args.poll_max_ns,
    )
    cfg.validate()
    return cfg


class _Progress:
    """One status line: elapsed time and live IOPS (a line every few seconds when not a tty)."""

    def __init__(self, total_s: float | None, quiet: bool):
        self.total_s = total_s
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_n = 0
        self.last_t = 0.0
        self.last_print = -10.0

    def __call__(self, elapsed: float, completed: int) -> None:
        if self.quiet:
            return
        iops = (completed - self.last_n) / max(elapsed - self.last_t, 1e-9)
        self.last_n, self.last_t = completed, elapsed
        total = f" / {self.total_s:g}s" if self.total_s else ""
        line = f"  {elapsed:5.1f}s{total}  {completed:>10,} requests  {iops:>10,.0f} IOPS"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif elapsed - self.last_print >= 5:
            self.last_print = elapsed
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _app_summary(run_dir: Path, elapsed_s: float, nr_requests: int) -> dict:
    """Headline numbers from the app-side submits table."""
    path = run_dir / "tables" / "submits.parquet"
    summary: dict = {
        "elapsed_s": round(elapsed_s, 3),
        "nr_requests": nr_requests,
        "iops": round(nr_requests / elapsed_s, 1) if elapsed_s > 0 else None,
    }
    if path.exists():
        t = pq.read_table(path, columns=["nr_sqes", "latency_ns", "ret"])
        sqes = t.column("nr_sqes").to_numpy()
        lat = t.column("latency_ns").to_numpy()
        summary.update(
            nr_submits=int(len(sqes)),
            mean_sqes_per_submit=round(float(sqes.mean()), 3) if len(sqes) else None,
            submit_latency_p50_ns=_percentile(lat, 50),
            submit_latency_p99_ns=_percentile(lat, 99),
        )
    return summary


def _print_summary(meta: dict, run_dir: Path, file=None) -> None:
    """The run's headline numbers: on stdout, or `file` (stderr when a traced command owns stdout)."""
    import builtins

    def print(*args, **kw):  # noqa: A001 - every line of the summary goes to the same place
        builtins.print(*args, **kw, file=file or sys.stdout)

    s = meta.get("summary", {})

    def ns(v):
        return "n/a" if v is None else f"{v / 1000:.1f} µs"

    print(f"run directory: {run_dir}  (status: {meta['status']})")
    if s.get("iops") is not None:
        print(f"  IOPS:                    {s['iops']:,.0f}  ({s['nr_requests']:,} requests in {s['elapsed_s']:.2f} s)")
    if s.get("mean_sqes_per_submit") is not None:
        print(f"  mean SQEs per enter:     {s['mean_sqes_per_submit']:.2f}  ({s['nr_submits']:,} submits, app log)")
        print(f"  submit latency p50/p99:  {ns(s.get('submit_latency_p50_ns'))} / {ns(s.get('submit_latency_p99_ns'))}")
    k = meta.get("kernel_summary") or {}
    if k.get("mean_sqes_per_enter") is not None:
        print(
            f"  eBPF: mean SQEs per enter {k['mean_sqes_per_enter']:.2f}  ({k['nr_enters']:,} submitting "
            f"io_uring_enter calls, from {k['source']})"
        )
    if k.get("enter_latency_p50_ns") is not None:
        print(f"  eBPF: enter latency p50/p99: {ns(k['enter_latency_p50_ns'])} / {ns(k['enter_latency_p99_ns'])}")
    elif k.get("enter_latency_p50_ns_below") is not None:
        print(
            f"  eBPF: enter latency p50/p99: < {ns(k['enter_latency_p50_ns_below'])} / "
            f"< {ns(k['enter_latency_p99_ns_below'])}  (log2 buckets)"
        )
    lost = meta.get("events_lost")
    print(f"  events lost:             {'n/a (not traced)' if lost is None else f'{lost:,}'}")
    missing = meta.get("probes", {}).get("could_not_measure", {})
    for name, why in missing.items():
        print(f"  could not measure {name}: {why}")
    not_asked: dict[str, list[str]] = {}
    for name, why in meta.get("probes", {}).get("not_asked", {}).items():
        not_asked.setdefault(why, []).append(name)
    for why, names in not_asked.items():
        print(f"  not recorded {', '.join(names)}: {why}")
    integ = meta.get("integrity")
    if integ:
        verdict = (
            "OK" if integ["mismatches"] == 0 else f"{integ['mismatches']} MISMATCHES at {integ['mismatch_offsets']}"
        )
        of = f" of {integ['of_blocks']:,} (interrupted)" if integ.get("interrupted") else ""
        print(f"  data integrity:          {integ['checked_blocks']:,}{of} blocks read back, {verdict}")
    if meta.get("tracing_overhead"):
        o = meta["tracing_overhead"]
        print(f"  tracing overhead:        traced/untraced IOPS = {o['ratio']:.3f}")


def _default_output(label: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{label}"


def run(args) -> int:
    probes = _probe_list(args.probes)  # a bad list is refused before anything is created
    _check_numbers(args)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.mode == "off" and args.measure_overhead:
        raise UsageError("--measure-overhead compares a traced run with an untraced one: not with --mode off")
    if args.pid is not None or command:
        _refuse_unused_options(args)
        return _record_external(args, command, probes)
    if args.watch_device is not None:
        raise UsageError(
            "--watch-device is for tracing another program (--pid or -- CMD); a workload of ours watches its own device"
        )
    from .. import devices
    from ..engine import run_workload
    from ..environment import describe_environment
    from ..store import STATUS_COMPLETE, STATUS_INTERRUPTED, RunWriter

    cfg = _config_from_args(args)
    if args.max_events <= 0:
        raise UsageError("--max-events: must be positive")
    size = devices.parse_size(args.size)
    made = args.device in ("loop", "zram") or (args.device.startswith("file:") and not os.path.lexists(args.device[5:]))
    ndev = cfg.devices + cfg.ide_devices
    if made and (size // ndev) // cfg.bs < cfg.iodepth:  # the engine's own check, before the device is made
        raise UsageError(
            f"--size/--devices: {size} bytes are too small for {ndev} emulated devices of at least "
            f"{cfg.iodepth} blocks of {cfg.bs} bytes"
        )
    out = Path(args.output) if args.output else _default_output(cfg.strategy)
    command_line = ["plugtrace", "record", *sys.argv[2:]] if sys.argv[1:2] == ["record"] else list(sys.argv)
    with Recording(out, {"environment": describe_environment()}, command=command_line) as rec:
        rec.on_exit(devices.cleanup_all)
        target = devices.open_target(args.device, size, allow_write=args.allow_write, sparse=args.sparse)
        rec.on_exit(target.close)
        if target.extra.get("fill_s") is not None and not args.quiet:
            print(
                f"filled the loop device's backing file with {size / 2**30:.3g} GiB of data in "
                f"{target.extra['fill_s']:.1f} s (--sparse skips this)",
                file=sys.stderr,
            )
        devices.check_writable(target, cfg.writes)
        config = cfg.as_dict() | {"mode": args.mode, "device_spec": args.device}
        writer = rec.open(config=config, device=target.describe())
        overhead: dict[str, Any] | None = None
        if args.measure_overhead:
            print("measuring untraced baseline ...", file=sys.stderr)
            # the baseline writes its log too, beside the run, as the traced run will: the ratio is tracing's alone
            with tempfile.TemporaryDirectory(prefix=".untraced-baseline-", dir=out) as scratch:
                scratch_log = RunWriter(Path(scratch) / "run", {"config": config})
                baseline = run_workload(
                    cfg,
                    target.path,
                    target.size_bytes,
                    scratch_log.append,
                    progress=_Progress(cfg.duration_s, args.quiet),
                )
                scratch_log.close_tables()
                untraced_batch = _app_summary(Path(scratch) / "run", baseline.elapsed_s, baseline.nr_requests)
            if baseline.interrupted:  # Ctrl-C or SIGTERM during the baseline ends the recording too
                raise KeyboardInterrupt
            overhead = {
                "untraced_iops": round(baseline.iops, 1),
                "untraced_mean_sqes_per_submit": untraced_batch.get("mean_sqes_per_submit"),
            }
        missing = rec.start_tracer(args.mode, os.getpid(), [target.dev_t], args.max_events, probes)
        for name, why in missing.items():
            print(f"plugtrace: could not measure {name}: {why}", file=sys.stderr)
        progress = _Progress(cfg.duration_s, args.quiet)
        try:
            result = run_workload(cfg, target.path, target.size_bytes, writer.append, progress=progress)
        finally:
            progress.done()
        trace_info = rec.close_tables()
        summary = _app_summary(out, result.elapsed_s, result.nr_requests)
        summary["sync_reads"] = result.sync_reads
        summary["nr_errors"] = result.nr_errors
        if overhead is not None:
            overhead["traced_iops"] = round(result.iops, 1)
            overhead["traced_mean_sqes_per_submit"] = summary.get("mean_sqes_per_submit")
            untraced = overhead["untraced_iops"]
            overhead["ratio"] = round(result.iops / untraced, 4) if untraced else None
        rec.finish(
            STATUS_INTERRUPTED if result.interrupted else STATUS_COMPLETE,
            trace_info,
            summary=summary,
            emulated_devices=result.devices,
            engine_threads=result.threads,
            integrity=result.integrity,
            tracing_overhead=overhead,
        )
        _print_summary(writer.meta, out)
        if result.nr_errors:
            print(
                f"plugtrace: {result.nr_errors} requests failed (first: {os.strerror(-result.first_error)})",
                file=sys.stderr,
            )
        if result.integrity and result.integrity["mismatches"]:
            return EXIT_DATA_MISMATCH
        return EXIT_INTERRUPTED if result.interrupted else EXIT_OK
    return EXIT_INTERRUPTED  # the recording was interrupted: it kept what it had


def _uses_our_extension(pid: int, probes: list[str] | None) -> bool:
    """Whether a traced program gets the marker uprobes: when named in --probes, or when the
    process has plugtrace's extension loaded already (--pid). A command is not started yet,
    and most (fio, QEMU) never load it: their markers would only cost a bpftrace."""
    if probes is not None:
        return "markers" in probes
    from ..uring._binding import extension_path

    try:
        return os.path.realpath(extension_path) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _watched_device(text: str | None) -> str | None:
    """--watch-device as "major:minor" (None: not given)."""
    if text is None:
        return None
    if re.fullmatch(r"\d+:\d+", text):
        if not Path(f"/sys/dev/block/{text}").exists():
            raise UsageError(f"--watch-device: no block device {text} on this machine")
        return text
    from ..devices import block_dev_t

    try:
        return block_dev_t(text)
    except DeviceError as exc:
        raise UsageError(f"--watch-device: {exc.message} (give /dev/NAME or MAJ:MIN)") from None


def _record_external(args, command: list[str], probes: list[str] | None) -> int:
    """Trace another program (--pid, or -- CMD): kernel side only."""
    from ..environment import describe_environment
    from ..store import STATUS_COMPLETE

    if args.mode == "off":
        raise UsageError("--mode off: tracing another program needs a tracing mode")
    if os.geteuid() != 0:
        raise CapabilityError("tracing another program needs root (bpftrace)")
    if args.pid is not None and command:
        raise UsageError("give --pid or a command after --, not both")
    if args.pid is not None and not Path(f"/proc/{args.pid}").exists():
        raise UsageError(f"--pid: no process {args.pid}")
    if command and args.duration is not None:
        raise UsageError(
            "--duration is for --pid and plugtrace's own workload; a command is traced until it "
            "exits (give it its own time limit, e.g. fio's --runtime)"
        )
    if command:
        found = shutil.which(command[0])
        if found is None:
            raise UsageError(f"cannot run {command[0]}: not found, or not executable")
        problem = program_problem(found)
        if problem is not None:
            raise UsageError(f"cannot run {command[0]}: {problem}")
    watched = _watched_device(args.watch_device)
    children = descendants(args.pid) if args.pid is not None else []
    if children:
        shown = ", ".join(map(str, children[:8])) + (", ..." if len(children) > 8 else "")
        print(
            f"plugtrace: note: process {args.pid} already has {len(children)} child process(es) ({shown}); "
            "they are traced too",
            file=sys.stderr,
        )
    label = Path(command[0]).name if command else f"pid{args.pid}"
    out = Path(args.output) if args.output else _default_output(label)
    with Recording(out, {"environment": describe_environment(), "device": None}) as rec:
        writer = rec.open(
            config={
                "external": command or None,
                "pid": args.pid,
                "mode": args.mode,
                "duration_s": args.duration,
                "strategy": None,
                "watch_device": args.watch_device,
                "children_at_start": children or None,
            }
        )
        # interrupted: what was traced until then (a traced command owns stdout)
        rec.on_interrupted = lambda meta: _print_summary(meta, out, file=sys.stderr)
        proc: Child | None = None
        if command:
            # Started stopped-at-exec is not possible from Python, so start the
            # tracer first with a pid filter that follows the child: the child
            # waits until the tracer is attached (no "go", as when we could not
            # trace: it exits without running the command). It is the user's
            # program: it does not die with us, but ends with the recording.
            try:
                proc = spawn(command, stdin=None, stdout=None, stderr=None, held="plugtrace-child", die_with_us=False)
            except OSError as exc:
                raise UsageError(f"cannot run {command[0]}: {exc.strerror}") from None
            pid = proc.pid
        else:
            pid = args.pid
        try:
            missing = rec.start_tracer(
                args.mode,
                pid,
                [watched] if watched else [],
                args.max_events,
                probes,
                markers=_uses_our_extension(pid, probes),
                existing_children=args.pid is not None,
            )
            if rec.tracer is None:
                raise CapabilityError(f"cannot trace: {missing.get('kernel')}")
            started = time.monotonic()
            if proc is not None:
                proc.go()
                proc.wait()
            else:
                deadline = None if args.duration is None else started + args.duration
                while Path(f"/proc/{pid}").exists() and (deadline is None or time.monotonic() < deadline):
                    time.sleep(0.1)
            elapsed = time.monotonic() - started
        finally:
            if proc is not None:
                proc.end()  # its process group, before the tracer stops, whatever ended the wait
        rec.finish(
            STATUS_COMPLETE,
            rec.close_tables(),
            summary={"elapsed_s": round(elapsed, 3), "exit_code": proc.returncode if proc else None},
        )
        # a traced command owns stdout: the summary goes beside its output, not into it
        _print_summary(writer.meta, out, file=sys.stderr if proc is not None else None)
        return EXIT_OK if proc is None else (proc.returncode or EXIT_OK)
    return EXIT_INTERRUPTED
