"""`plugtrace report`: one self-contained HTML file about one or more runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..analysis import Runs
from ..errors import PlugtraceError, UsageError

HELP = "write an HTML report about one or more run directories"
DESCRIPTION = """\
Write one self-contained HTML file (plots inline, no network needed) with each
run's environment, configuration, summary, plots and what could not be
measured. Given several runs, it also compares them side by side, each number
one query over all of them. A RUN may be a run directory, a directory of run
directories, or a quoted glob; past 12 runs each run's section has no plots.
Runs of any size are summarised out of core: a report needs no more memory for
a 100M-event run than for a small one.

  plugtrace report runs/defer runs/immediate -o report.html
  plugtrace report runs/sweep/ -o sweep.html
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run directories written by plugtrace record, directories of them, or globs",
    )
    parser.add_argument(
        "-o", "--output", default="report.html", type=Path, help="HTML file to write (default: %(default)s)"
    )
    parser.add_argument(
        "--static",
        action="store_true",
        help="every plot as a PNG, no JavaScript (default: batch sizes, latency and the timeline "
        "zoom and pan, with BokehJS inlined)",
    )


def run(args: argparse.Namespace) -> int:
    from ..report import render

    runs = Runs(args.runs)  # RunDirError names the faulty file, or says no run was found
    out = args.output.resolve()
    for run in runs:  # a report may sit in a run directory, but never over the run's own files
        own = run.path.resolve()
        if out == own / "meta.json" or out.is_relative_to(own / "tables") or out == own:
            raise UsageError(f"-o {args.output}: that is part of the run {run.path}; write the report elsewhere")
    html = render(runs, interactive=not args.static)
    # written beside, then renamed over: a failed write never leaves half a report in place of the old one
    tmp = out.with_name(f".{out.name}.partial")
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PlugtraceError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote {args.output.resolve()} ({len(html.encode()) / 1e6:.1f} MB, {len(runs)} run{'s' * (len(runs) != 1)})")
    return 0
