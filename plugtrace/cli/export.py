"""`plugtrace export RUN --perfetto`: a run as a timeline for Perfetto's UI or trace_processor."""

from __future__ import annotations

import argparse
import sys
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
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="file to write (default: RUN-NAME.pftrace here, or beside the run when here is inside it)",
    )
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
    from ..analysis import Run, check_window
    from ..export import to_perfetto

    if not args.perfetto:
        raise UsageError("choose a format: --perfetto")
    window = check_window(args.window_ms, "--window-ms") if args.window_ms else None
    source = Run.open(args.run)
    out = args.output or _default_output(source.path, source.name)
    requests = source.meta.tables.get("requests", {}).get("rows", 0)
    if requests > BIG_RUN_REQUESTS and not args.window_ms:
        print(
            f"note: {requests:,} requests make a trace of several GB, more than Perfetto's UI opens in a browser "
            "tab (about 1-2 GB); --window-ms START END exports part of the run"
        )
    summary = to_perfetto(source, out, window_ms=window)
    print(
        f"wrote {out.resolve()} ({summary['bytes'] / 1e6:.1f} MB): {summary['requests']:,} requests, "
        f"{summary['sections']:,} sections, {summary['submits']:,} submits, {summary['enters']:,} kernel enters, "
        f"{summary['block_requests']:,} block requests, {summary['flows']:,} flows"
    )
    print("open it in Perfetto's UI (https://ui.perfetto.dev, 'Open trace file') or with trace_processor")
    events = sum(summary[k] for k in ("requests", "sections", "submits", "enters", "block_requests"))
    if not events:
        where = f"in --window-ms {window[0]:g} {window[1]:g}" if window else "at all"
        print(f"plugtrace: note: the trace is empty: the run has no events {where}", file=sys.stderr)
    if source.partial:
        print(
            f"plugtrace: note: {source.path} is partial (status '{source.status}'"
            f"{', unreadable: ' + ', '.join(sorted(source.unreadable)) if source.unreadable else ''}): "
            "the trace holds only what was recorded",
            file=sys.stderr,
        )
    return 0
