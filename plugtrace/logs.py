"""plugtrace's messages to the person running it: one logger, `logging.getLogger("plugtrace")`.

The library logs (a probe that could not attach, a device being filled, a recording interrupted); the
command line and the notebook magic show those messages on stderr, as they are, with `show_messages`.
`-v` adds the debug ones; a program embedding plugtrace configures the logger as it likes.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["logger", "show_messages"]

logger = logging.getLogger("plugtrace")

_HANDLER_NAME = "plugtrace-stderr"


def show_messages(verbose: int = 0) -> None:
    """Show the library's messages on (the current) stderr: info and up, debug too with `verbose`."""
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a notebook's cell output)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: a failed message never raises
            self.handleError(record)
