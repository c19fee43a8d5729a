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
    from .cli import main

    argv = shlex.split(line) + (shlex.split(cell, comments=True) if cell else [])
    if argv[:1] == ["record"] and not {"-o", "--output"} & set(argv) and "--help" not in argv:
        argv += ["-o", f"runs/notebook-{_dt.datetime.now():%Y%m%d-%H%M%S}"]
    code = main(argv)
    if code != 0:
        print(f"plugtrace exited with status {code}")
        return None
    if argv[:1] == ["record"] and "--help" not in argv:
        out = argv[(argv.index("-o") if "-o" in argv else argv.index("--output")) + 1]
        return Run.open(out)
    return None


def load_ipython_extension(ipython: Any) -> None:
    """Register `%plugtrace` / `%%plugtrace` (called by ``%load_ext plugtrace``)."""
    ipython.register_magic_function(plugtrace_magic, magic_kind="line_cell", magic_name="plugtrace")
