"""`%plugtrace` in Jupyter: the command line inside a notebook, with runs displayed as they are recorded.

    %load_ext plugtrace
    %plugtrace record --device loop --strategy defer --duration 2     # needs root
    %plugtrace diff ../data/defer ../data/immediate

A line magic runs `plugtrace ARGS`; a cell magic appends the cell's lines to
the arguments, for long option lists. After a successful `record` the run is
opened and returned, so the notebook shows its summary card (and the variable
`_` holds the `Run`). Other commands print what they print on a terminal; a
failure is shown as its one-line message, not a traceback.
"""

from __future__ import annotations

import datetime as _dt
import shlex
from typing import Any

__all__ = ["load_ipython_extension", "plugtrace_magic"]


def plugtrace_magic(line: str, cell: str | None = None) -> Any:
    """Run `plugtrace LINE [CELL]`; return the recorded Run after a successful `record`."""
    from .analysis import Run
    from .cli import build_parser, main

    try:
        argv = shlex.split(line) + (shlex.split(cell, comments=True) if cell else [])
    except ValueError as exc:  # an unbalanced quote
        print(f"plugtrace: cannot read the command line: {exc}")
        return None
    try:
        # parsed here as the command will parse it: --help, a bad option, and where the run goes
        # (-o X, -oX, --output=X, --out X, ...) are known before anything runs
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or --version printed, or a usage error argparse explained
        if exc.code:
            print(f"plugtrace exited with status {exc.code}")
        return None
    recording = getattr(args, "_run", None) is not None and args._run.__module__.endswith(".record")
    out = getattr(args, "output", None) if recording else None
    if recording and out is None:
        out = f"runs/notebook-{_dt.datetime.now():%Y%m%d-%H%M%S}"
        at = argv.index("record") + 1  # before a traced command's own arguments (after --)
        argv[at:at] = ["-o", out]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    if code != 0:
        print(f"plugtrace exited with status {code}")
        return None
    return Run.open(out) if out is not None else None


def load_ipython_extension(ipython: Any) -> None:
    """Register `%plugtrace` / `%%plugtrace` (called by ``%load_ext plugtrace``)."""
    ipython.register_magic_function(plugtrace_magic, magic_kind="line_cell", magic_name="plugtrace")
