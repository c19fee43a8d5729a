"""`plugtrace report`: one self-contained HTML file about one or more runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..analysis import Run, Runs
from ..run.output import check_not_in_runs, output_file

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


def _once(runs: Runs) -> Runs:
    """`runs` with each run directory once (`report A A`, `report runs/ runs/a`), saying so."""
    unique: dict[str, Run] = {}
    for run in runs:
        key = os.path.realpath(run.path)
        if key in unique:
            print(f"plugtrace: note: {run.path} is named more than once; reported once", file=sys.stderr)
        else:
            unique[key] = run
    return runs if len(unique) == len(runs) else Runs(list(unique.values()))


def run(args: argparse.Namespace) -> int:
    from ..report import render

    runs = _once(Runs(args.runs))  # RunDirError names the faulty file, or says no run was found
    # a report may sit in a run directory, but never over the run's own files
    check_not_in_runs(args.output, [run.path for run in runs])
    for run in runs:  # reported all the same, each analysis that needs the table saying it could not
        for why in run.corrupt.values():
            print(f"plugtrace: note: {why}; the report leaves that table out", file=sys.stderr)
    html = render(runs, interactive=not args.static)
    with output_file(args.output, text=True, protect=[run.path for run in runs]) as fh:
        fh.write(html)
    print(f"wrote {args.output.resolve()} ({len(html.encode()) / 1e6:.1f} MB, {len(runs)} run{'s' * (len(runs) != 1)})")
    return 0
