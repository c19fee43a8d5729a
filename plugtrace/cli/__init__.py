"""The `plugtrace` command line.

Each subcommand is one module in this package with the same small protocol:

    HELP: str                         one line for `plugtrace --help`
    DESCRIPTION: str                  the subcommand's own --help text
    add_arguments(parser) -> None     declare its options
    run(args) -> int                  do the work, return the exit code

Errors a user can cause or a machine can lack are raised as PlugtraceError and
printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from ..errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, PlugtraceError
from ..logs import show_messages

SUBCOMMANDS = ("record", "qemu", "replay", "model", "report", "diff", "export", "devices", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugtrace",
        description="Run, trace and visualise I/O batching on io_uring block devices.",
        epilog="Run 'plugtrace COMMAND --help' for a command's options. "
        "'plugtrace doctor' tells what this machine can measure.",
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"plugtrace {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="say more about what is done (-vv: more)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="say more about what is done")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class StdoutError(PlugtraceError):
    """Standard output cannot be written: a full disk or a failing device (`plugtrace diff A B > /dev/full`)."""


class _CheckedStdout:
    """sys.stdout whose write errors (but a closed pipe's) are a StdoutError, told apart from any other OSError."""

    def __init__(self, stream: Any):
        self._stream = stream

    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutError(f"cannot write to standard output: {exc.strerror}") from None

    def write(self, text: str) -> int:
        return int(self._guard(self._stream.write, text))

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    stdout, sys.stdout = sys.stdout, _CheckedStdout(sys.stdout)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        show_messages(args.verbose)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a full or failing stdout is told here, not by Python's own flush at exit
        return code
    except PlugtraceError as exc:
        print(f"plugtrace: {exc.message}", file=sys.stderr)
        if isinstance(exc, StdoutError):
            _drop_stdout(stdout)
        return exc.exit_code
    except KeyboardInterrupt:
        # Ctrl-C before a command had anything to keep (e.g. while starting up)
        print("plugtrace: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (`plugtrace devices | head`): nothing to say, nor anyone to say it to
        _drop_stdout(stdout)
        return EXIT_BROKEN_PIPE
    finally:
        sys.stdout = stdout


def _drop_stdout(stdout: Any) -> None:
    """What is left to write to stdout goes to /dev/null, so that Python's own flush at exit has nothing to
    complain about."""
    try:
        fd = stdout.fileno()
    except (OSError, ValueError, AttributeError):  # not a file (a notebook's, a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
