"""`plugtrace export RUN --perfetto`: a run as a timeline for Perfetto's UI or trace_processor."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError

HELP = "export a run as a Perfetto trace (a timeline to zoom in ui.perfetto.dev)"
DESCRIPTION = """\
Write a run as a Perfetto protobuf trace: per engine thread its plug sections
(named by the device whose handler opened them), submits and the kernel's
io_uring_enter() calls; per device its requests from queued to completed;
block requests; flows from each request to its submit and its block request;
counters of requests in flight and SQEs per submit. Open the file in
Perfetto's UI (ui.perfetto.dev: "Open trace file"; the file stays on your
machine) or query it with trace_processor.

  plugtrace export runs/defer --perfetto -o defer.pftrace
  plugtrace export runs/big --perfetto --window-ms 1000 1050 -o big.pftrace
"""


#: past this many requests, suggest a window (each request makes ~10 packets, ~340 bytes in all)
BIG_RUN_REQUESTS = 2_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory written by plugtrace record")
    parser.add_argument("--perfetto", action="store_true", help="write a Perfetto trace (the only format so far)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: RUN-NAME.pftrace)")
    parser.add_argument(
        "--window-ms",
        nargs=2,
        type=float,
        metavar=("START", "END"),
        help="only events starting in this window, ms since the run's start (for big runs)",
    )


def _default_output(run: Path, name: str) -> Path:
    """RUN-NAME.pftrace in the current directory, or beside the run when the current directory is inside it."""
    here, own = Path.cwd().resolve(), run.resolve()
    return (own.parent if here.is_relative_to(own) else Path()) / f"{name}.pftrace"


def run(args: argparse.Namespace) -> int:
    from ..analysis import Run
    from ..export import to_perfetto

    if not args.perfetto:
        raise UsageError("choose a format: --perfetto")
    if args.window_ms and args.window_ms[0] >= args.window_ms[1]:
        raise UsageError("--window-ms START END needs START < END")
    source = Run.open(args.run)
    out = args.output or _default_output(source.path, source.name)
    requests = (source.meta.get("tables") or {}).get("requests", {}).get("rows", 0)
    if requests > BIG_RUN_REQUESTS and not args.window_ms:
        print(
            f"note: {requests:,} requests make a trace of several GB, more than Perfetto's UI opens in a browser "
            "tab (about 1-2 GB); --window-ms START END exports part of the run"
        )
    summary = to_perfetto(source, out, window_ms=tuple(args.window_ms) if args.window_ms else None)
    print(
        f"wrote {out.resolve()} ({summary['bytes'] / 1e6:.1f} MB): {summary['requests']:,} requests, "
        f"{summary['sections']:,} sections, {summary['submits']:,} submits, {summary['enters']:,} kernel enters, "
        f"{summary['block_requests']:,} block requests, {summary['flows']:,} flows"
    )
    print("open it in Perfetto's UI (https://ui.perfetto.dev, 'Open trace file') or with trace_processor")
    return 0
