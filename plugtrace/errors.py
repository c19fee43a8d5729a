"""One error type for everything a user can get wrong or a machine can lack, and the CLI's exit codes.

The CLI prints `plugtrace: <message>` and exits with `exit_code`; it never shows a
traceback for a PlugtraceError.
"""

#: the command did what was asked
EXIT_OK = 0
#: `record --allow-write`: a block read back did not hold what was written there
EXIT_DATA_MISMATCH = 6
#: Ctrl-C or a terminating signal ended the command (what was recorded is kept), as shells count it: 128 + SIGINT
EXIT_INTERRUPTED = 130
#: stdout was closed under us, as a shell reports a command killed by SIGPIPE (128 + 13)
EXIT_BROKEN_PIPE = 141


class PlugtraceError(Exception):
    """An error with a message meant for the user and the exit code to leave with."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(PlugtraceError):
    """A bad command-line value; exit code 2 like argparse's own usage errors."""

    exit_code = 2


class RunDirError(PlugtraceError):
    """A run directory that cannot be read: missing, corrupt, or of a newer schema."""

    exit_code = 3


class CapabilityError(PlugtraceError):
    """The machine lacks something a command needs (root, bpftrace, io_uring, ...)."""

    exit_code = 4


class DeviceError(PlugtraceError):
    """A device that is missing, busy, mounted, or not handed to us for writing."""

    exit_code = 5
