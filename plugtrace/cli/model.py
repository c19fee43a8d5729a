"""plugtrace model: calibrate the model's timing from one real QEMU run, and predict loads it never saw."""

from __future__ import annotations

import json
import sys

from ..run.output import output_file
from .summary import print_summary

HELP = "calibrate the model from a real QEMU run, and predict other loads with it"
DESCRIPTION = """\
calibrate QEMU_RUN -o CAL.json
  Measure, on one real QEMU run recorded with `plugtrace qemu --mode events`, how long the
  guest and the machine took: the device's latency per request (quantiles), the guest's pace
  (between two requests of one handler run), and how long after a completion the guest's next
  requests came (quantiles). Prints them with units; writes them as JSON.

predict CAL.json --iodepth N --disks N [--strategy S] -o OUT
  Run the model's own closed-loop guests with that timing on a real device (a loop device over
  memory by default) and write an ordinary run directory marked as a prediction (meta.json's
  `prediction`: the calibration and the load), so `plugtrace report` and `plugtrace diff` set
  it beside a measurement. The strategy defaults to the calibrated QEMU's design (device-plug
  for 7.2, defer for 10.0). The calibration reads one run; nothing of the predicted load is fitted.

example:
  plugtrace model calibrate data/qemu-10.0 -o runs/cal-10.0.json
  plugtrace model predict runs/cal-10.0.json --iodepth 64 --disks 1 -o runs/pred-d64
  plugtrace model predict runs/cal-10.0.json --iodepth 64 --disks 1 --strategy device-plug -o runs/pred-7.2
"""


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("calibrate", help="measure the model's timing on a real QEMU run (events mode)")
    c.add_argument("source", metavar="QEMU_RUN", help="a run directory written by plugtrace qemu --mode events")
    c.add_argument("-o", "--output", required=True, help="the calibration file to write (JSON)")
    q = sub.add_parser("predict", help="run the model with a calibration on a load of your choice")
    q.add_argument("calibration", metavar="CAL", help="a file written by plugtrace model calibrate")
    q.add_argument(
        "--iodepth", type=int, default=None, help="requests in flight per disk (default: the calibrated run's)"
    )
    q.add_argument(
        "--disks", type=int, default=None, help="virtio-blk disks on one iothread (default: the calibrated run's)"
    )
    q.add_argument(
        "--strategy", default=None, help="the model's strategy (default: the calibrated QEMU's design's own)"
    )
    q.add_argument("--duration", type=float, default=2.0, help="seconds of workload (default: 2)")
    q.add_argument(
        "--slow-motion",
        type=float,
        default=1.0,
        metavar="K",
        help="run the calibrated guest and device K times slower, so the model's own cost per request "
        "(Python's) weighs K times less; batch sizes are what is predicted, IOPS are K times lower "
        "(the summary gives them at QEMU's speed) (default: 1)",
    )
    q.add_argument(
        "--device",
        default="loop:/dev/shm",
        help="loop | loop:DIR | zram | file:PATH | /dev/NAME (default: loop:/dev/shm, a loop device over memory, "
        "so the calibrated latency sets the pace)",
    )
    q.add_argument("-o", "--output", default=None, help="run directory (default: runs/DATE-TIME-STRATEGY)")
    q.add_argument("--quiet", action="store_true", help="no progress display")


def _print_calibration(cal: dict) -> None:
    t, m = cal["timing"], cal["measured"]
    lat = t["latency_ns"]
    print(
        f"calibrated from {cal['source']} ({cal.get('source_strategy')}): {m['handler_runs']:,} handler runs, "
        f"{m['requests']:,} requests, {m['mean_sqes_per_submit']:.2f} SQEs per io_uring_enter()"
    )
    print(
        f"  guest reaction (completion -> the device's next handler run): {t['reaction_ns'] / 1e3:,.1f} us "
        f"(median of {m['reactions']:,})"
    )
    print(f"  guest pace (between two requests of one handler run):       {t['request_ns'] / 1e3:,.1f} us")
    print(
        f"  device latency per request: p5 {lat[1] / 1e3:,.0f} us, p50 {lat[10] / 1e3:,.0f} us, "
        f"p95 {lat[19] / 1e3:,.0f} us, max {lat[20] / 1e3:,.0f} us"
    )


def run(args) -> int:
    from .. import model

    if args.action == "calibrate":
        cal = model.calibrate(args.source)
        with output_file(args.output, text=True) as f:
            json.dump(cal, f, indent=1)
            f.write("\n")
        _print_calibration(cal)
        print(f"wrote {args.output}")
        return 0
    result = model.predict(
        args.calibration,
        args.output,
        iodepth=args.iodepth,
        disks=args.disks,
        strategy=args.strategy,
        duration=args.duration,
        device=args.device,
        quiet=args.quiet,
        command_line=["plugtrace", "model", *sys.argv[2:]],
        slow_motion=args.slow_motion,
    )
    if result.meta is not None:
        print_summary(result.meta, result.out)
        pred = result.meta.get("prediction") or {}
        load = pred.get("load", {})
        print(
            f"  prediction from {pred.get('calibration')}: {load.get('disks')} disks x iodepth {load.get('iodepth')}, "
            f"{load.get('strategy')}: {result.meta['summary'].get('mean_sqes_per_submit')} SQEs per io_uring_enter()"
        )
        if pred.get("slow_motion", 1.0) != 1.0:
            print(
                f"  in slow motion x{pred['slow_motion']:g}: {pred.get('iops_at_qemu_speed') or 0:,.0f} IOPS at "
                "QEMU's speed"
            )
    return result.exit_code
