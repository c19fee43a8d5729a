"""plugtrace replay: drive the model with a recorded QEMU run's arrivals and compare, handler run by handler run."""

from __future__ import annotations

import sys

from ..replay import DESIGN_STRATEGY, DEVICE_LATENCIES, TIMINGS
from .options import MODES
from .summary import print_summary

HELP = "replay a recorded QEMU run on the model and compare its batches run by run"
DESCRIPTION = """\
Replay a real QEMU run (recorded with `plugtrace qemu --mode events`) on the model: every
virtio-blk handler run that queued I/O becomes one arrival, at the time it ran, with the requests
QEMU handed its io_uring driver (offset, length, op; merged as QEMU merged them). The model's
handler, strategy and driver batch them on a real device, and each arrival's predicted SQEs per
io_uring_enter() is set beside QEMU's measured one.

The output is an ordinary run directory: its table replay_runs has one row per arrival
(measured vs predicted), and meta.json's `replay` section has per_run_exact (the fraction of
arrivals predicted exactly) and the mean SQEs per enter, measured and predicted.

example:
  plugtrace replay data/qemu-10.0 -o runs/replay-10.0         # defer, QEMU 10.0's own design
  plugtrace replay data/qemu-7.2 --strategy defer -o runs/x   # 7.2's arrivals under 10.0's design
"""


def add_arguments(p) -> None:
    p.add_argument("source", metavar="QEMU_RUN", help="a run directory written by plugtrace qemu --mode events")
    p.add_argument(
        "--strategy",
        default=None,
        help="the model's strategy (immediate, device-plug, defer, loop-iteration; default: the QEMU "
        f"design's own: {', '.join(f'{k} -> {v}' for k, v in DESIGN_STRATEGY.items())})",
    )
    p.add_argument(
        "--device",
        default=None,
        help="loop | loop:DIR | zram | file:PATH | /dev/NAME (default: with --device-latency recorded, "
        "loop:/dev/shm, a loop device over memory, so the model's device is never slower than the recorded "
        "one and the recorded latencies set the pace; with live, loop, its file in /var/tmp)",
    )
    p.add_argument("--size", default=None, help="size of a device we create (default: enough for the run's offsets)")
    p.add_argument("--allow-write", action="store_true", help="let a replay of writes write to a device you named")
    p.add_argument(
        "--mode", default="aggregate", choices=MODES, help="kernel-side tracing of the replay (default: aggregate)"
    )
    p.add_argument(
        "--device-latency",
        default="recorded",
        choices=DEVICE_LATENCIES,
        help="recorded: each request takes at least as long as it took QEMU's device (the kernel's io_uring "
        "tracepoints of the QEMU run); live: the model's device's own speed (default: recorded)",
    )
    p.add_argument(
        "--timing",
        default="per-request",
        choices=TIMINGS,
        help="per-request: each request reaches the model's driver no sooner than it reached QEMU's, so a "
        "handler run lasts as long as QEMU's did; per-run: a handler run's requests all at its start "
        "(default: per-request)",
    )
    p.add_argument("-o", "--output", default=None, help="run directory (default: runs/DATE-TIME-STRATEGY)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def run(args) -> int:
    from ..replay import replay

    result = replay(
        args.source,
        args.output,
        strategy=args.strategy,
        device=args.device,
        size=args.size,
        allow_write=args.allow_write,
        mode=args.mode,
        device_latency=args.device_latency,
        timing=args.timing,
        quiet=args.quiet,
        command_line=["plugtrace", "replay", *sys.argv[2:]],
    )
    if result.meta is not None:
        print_summary(result.meta, result.out)
        r = result.meta.get("replay") or {}
        if r:
            exact = r.get("per_run_exact")
            print(
                f"  replay of {r['source']} ({r['source_strategy']}) with {r['strategy']}: "
                f"{r['handler_runs']:,} handler runs, {r['requests']:,} requests "
                f"(timing {r.get('timing')}, device latency {r.get('device_latency')})"
            )
            print(f"    handler runs predicted exactly: {'n/a' if exact is None else f'{exact:.1%}'}")
            pred = r.get("predicted_mean_sqes_per_submit")
            print(
                f"    mean SQEs per enter: measured {r['measured_mean_sqes_per_submit']:.2f}, predicted "
                f"{'n/a' if pred is None else f'{pred:.2f}'}"
                + (f" ({r['mean_error_pct']:+.1f}%)" if r.get("mean_error_pct") is not None else "")
            )
            for why, n in (r.get("not_replayed") or {}).items():
                print(f"    not replayed: {n:,} requests {why}")
    return result.exit_code
