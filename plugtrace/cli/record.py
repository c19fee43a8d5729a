"""plugtrace record: run a batching workload on a real device (or trace another program)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..errors import EXIT_INTERRUPTED, UsageError
from ..recording import RecordResult, record, record_program
from . import options
from .summary import print_summary

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
  loop-iteration  QEMU 10.2's aio_add_sqe() design: submit once per event-loop iteration

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
    from ..engine import IDE_THREADS, POLL_MAX_NS, RING_SETUPS, RW_MODES, STRATEGIES

    w = p.add_argument_group("workload")
    options.add_device(w, "a write workload")
    w.add_argument("--strategy", default="defer", help=f"{' | '.join(STRATEGIES)} (default: defer)")
    w.add_argument("--devices", type=int, default=1, help="virtio-blk-like devices (default: 1)")
    w.add_argument("--ide-devices", type=int, default=0, help="IDE-like devices: depth 1, no plug (default: 0)")
    w.add_argument(
        "--threads",
        type=int,
        default=1,
        help="iothreads (event-loop threads); virtio-blk devices are spread over them round robin (default: 1)",
    )
    w.add_argument(
        "--queues",
        type=int,
        default=1,
        help="virtqueues per virtio-blk device, each with a guest job of its own keeping --iodepth requests "
        "outstanding; queue q of device i runs on thread (i + q) %% --threads unless --vq-mapping says "
        "otherwise. device-plug then shares each device's plug among the threads serving it, defer keeps "
        "one section per thread (default: 1)",
    )
    w.add_argument(
        "--vq-mapping",
        type=_thread_list,
        default=None,
        metavar="T0,T1,...",
        help="the thread of each queue index, the same for every device, as QEMU's iothread-vq-mapping "
        "lists iothreads: e.g. 0,1 puts queue 0 on thread 0 and queue 1 on thread 1 (default: rotate)",
    )
    w.add_argument(
        "--ide-thread",
        choices=IDE_THREADS,
        default="main",
        help="main: IDE devices run in a main-loop thread of their own, as QEMU's IDE does (default); shared: "
        "spread over the iothreads with the virtio-blk devices, so a nested aio_poll() can pull an IDE "
        "request into a virtio-blk section (an effect QEMU does not have; the run is labelled so)",
    )
    options.add_pattern(w, RW_MODES, 32, "requests each virtio-blk guest keeps outstanding", None)
    w.add_argument("--requests", type=int, default=None, help="stop after this many requests instead")
    w.add_argument(
        "--interleave",
        type=float,
        default=0.0,
        help="probability that a virtio-blk handler does a synchronous read with nested "
        "aio_poll() inside its plug section (default: 0)",
    )
    w.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="virtio-blk does not merge contiguous requests (QEMU's request-merging=off); by default it "
        "merges them as virtio_blk_submit_multireq() does, which only sequential loads feel",
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
    options.add_tracing(t, "submits, requests, block requests", per_probe=False, baseline="the workload")
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
    options.add_output(p.add_argument_group("output"), "runs/DATE-STRATEGY")
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


def _thread_list(text: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of thread numbers, not {text!r}") from None
    return threads


#: `record` options that are fields of the engine's WorkloadConfig (option name = field name)
_WORKLOAD_FIELDS = (
    "strategy",
    "devices",
    "ide_devices",
    "ide_thread",
    "threads",
    "queues",
    "vq_mapping",
    "iodepth",
    "bs",
    "rw",
    "rwmixread",
    "requests",
    "interleave",
    "merge",
    "seed",
    "ring_setup",
    "poll_max_ns",
)
#: options of plugtrace's own workload, which a traced program (--pid, -- CMD) does not use
_WORKLOAD_ONLY = ("device", "size", "sparse", "allow_write", *_WORKLOAD_FIELDS, "no_verify", "measure_overhead")


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


def record_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`plugtrace.recording.record`'s arguments from the parsed command line."""
    return {
        "output": args.output,
        "device": args.device,
        "size": args.size,
        "sparse": args.sparse,
        "allow_write": args.allow_write,
        "mode": args.mode,
        "max_events": args.max_events,
        "probes": _probe_list(args.probes),
        "measure_overhead": args.measure_overhead,
        "quiet": args.quiet,
        "duration_s": args.duration,
        "verify": not args.no_verify,
        **{name: getattr(args, name) for name in _WORKLOAD_FIELDS},
    }


def recording_call(args: argparse.Namespace) -> tuple[Callable[..., RecordResult], dict[str, Any]]:
    """What the parsed command line records: `plugtrace.recording.record` and its arguments for
    plugtrace's own workload, `record_program` and its arguments for a traced program (--pid, -- CMD)."""
    probes = _probe_list(args.probes)  # a bad --probes list is refused before anything is created
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.pid is not None or command:
        _refuse_unused_options(args)
        return record_program, {
            "output": args.output,
            "command": command,
            "pid": args.pid,
            "mode": args.mode,
            "duration_s": args.duration,
            "max_events": args.max_events,
            "probes": probes,
            "watch_device": args.watch_device,
        }
    if args.watch_device is not None:
        raise UsageError(
            "--watch-device is for tracing another program (--pid or -- CMD); a workload of ours watches its own device"
        )
    return record, record_kwargs(args)


def run(args) -> int:
    call, kwargs = recording_call(args)
    command_line = ["plugtrace", "record", *sys.argv[2:]] if sys.argv[1:2] == ["record"] else list(sys.argv)
    result = call(**kwargs, command_line=command_line)
    if result.meta is not None:
        # a traced command owns stdout, and an interrupted --pid's summary is a message: stderr
        traced = call is record_program and (kwargs["command"] or result.exit_code == EXIT_INTERRUPTED)
        print_summary(result.meta, result.out, file=sys.stderr if traced else None)
    return result.exit_code
