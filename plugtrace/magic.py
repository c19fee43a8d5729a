"""`%plugtrace` in Jupyter: the command line inside a notebook, with runs displayed as they are recorded.

    %load_ext plugtrace
    %plugtrace record --device loop --strategy defer --duration 2     # needs root
    %plugtrace diff ../data/defer ../data/immediate

A line magic runs `plugtrace ARGS` (`record` through the Python API: `plugtrace.recording.record`
for plugtrace's own workload, `record_program` for a traced program; the rest as the command line);
a cell magic appends the cell's lines to the arguments, for long option lists. After a successful `record` the run is
opened and returned, so the notebook shows its summary card (and the variable
`_` holds the `Run`). Other commands print what they print on a terminal; a
failure is shown as its one-line message, not a traceback.
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import sys
from typing import Any

__all__ = ["load_ipython_extension", "plugtrace_magic"]


def plugtrace_magic(line: str, cell: str | None = None) -> Any:
    """Run `plugtrace LINE [CELL]`; return the recorded Run after a successful `record`."""
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
    if getattr(args, "_run", None) is not None and args._run.__module__.endswith(".record"):
        return _record(args, argv)  # through the Python API, a traced program too
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    if code != 0:
        print(f"plugtrace exited with status {code}")
    return None


def _notebook_output() -> str:
    return f"runs/notebook-{_dt.datetime.now():%Y%m%d-%H%M%S}"


def _open(out: str | os.PathLike) -> Any:
    from .run import Run

    return Run.open(out)


def _record(args: Any, argv: list[str]) -> Any:
    """`record`, through the Python API (`plugtrace.recording.record`, or `record_program` for a traced
    program); its run opened, or None with the exit status said."""
    from .cli.record import recording_call
    from .errors import PlugtraceError
    from .logs import show_messages

    show_messages(getattr(args, "verbose", 0))
    try:
        call, kwargs = recording_call(args)
        kwargs["output"] = kwargs["output"] or _notebook_output()
        result = call(**kwargs, command_line=["%plugtrace", *argv])
    except PlugtraceError as exc:  # as the command line says it: the message on stderr, the status here
        print(f"plugtrace: {exc.message}", file=sys.stderr)
        print(f"plugtrace exited with status {exc.exit_code}")
        return None
    if result.exit_code != 0:
        print(f"plugtrace exited with status {result.exit_code}")
        return None
    return _open(result.out)


def load_ipython_extension(ipython: Any) -> None:
    """Register `%plugtrace` / `%%plugtrace` (called by ``%load_ext plugtrace``)."""
    ipython.register_magic_function(plugtrace_magic, magic_kind="line_cell", magic_name="plugtrace")
