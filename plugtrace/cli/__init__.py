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

from ..errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, PlugtraceError

SUBCOMMANDS = ("record", "qemu", "report", "diff", "export", "devices", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plugtrace",
        description="Run, trace and visualise I/O batching on io_uring block devices.",
        epilog="Run 'plugtrace COMMAND --help' for a command's options. "
        "'plugtrace doctor' tells what this machine can measure.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"plugtrace {__version__}")
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
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except PlugtraceError as exc:
        print(f"plugtrace: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Ctrl-C before a command had anything to keep (e.g. while starting up)
        print("plugtrace: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (`plugtrace devices | head`): nothing to say, nor anyone to say it
        # to; stdout goes to /dev/null so that Python's own flush at exit does not complain either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
