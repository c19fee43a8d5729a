"""Files plugtrace writes for a user: reports, traces, CSV, a run's meta.json.

Every one goes through `output_file`, so they all behave alike:

* a regular file (or a new one) is written whole or not at all: into a
  temporary file beside it, renamed over it at the end, so a full disk, a
  read-only file system, Ctrl-C or SIGTERM leave the old file as it was and
  no partial file behind;
* anything else the path names (a FIFO, a device node such as /dev/null, a
  terminal) is written in place, since renaming over it would replace the
  node with a regular file;
* a path that is part of a run being read (its directory, meta.json, a table,
  through a symlink or a hard link too) is refused before anything is
  opened, so writing can never destroy its own input.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import PlugtraceError, UsageError

__all__ = ["WriteError", "Interrupted", "write_error", "check_not_in_runs", "output_file"]


class WriteError(PlugtraceError):
    """Writing a file failed (disk full, quota, read-only file system, I/O error)."""


class Interrupted(PlugtraceError):
    """A terminating signal came while a file was being written; the file was left as it was."""

    def __init__(self, signum: int, path: str | os.PathLike):
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}: {path} was not written", exit_code=128 + signum)


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """`exc`, raised writing `path`, as a one-line error."""
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno == errno.EDQUOT:
        why = "the disk quota is exhausted"
    else:
        why = exc.strerror or str(exc)
    return WriteError(f"cannot write {path}: {why}")


def _run_files(run: Path) -> Iterator[Path]:
    yield run
    yield run / "meta.json"
    tables = run / "tables"
    yield tables
    with contextlib.suppress(OSError):
        yield from tables.iterdir()


def check_not_in_runs(path: str | os.PathLike, runs: Iterable[str | os.PathLike], option: str = "-o") -> None:
    """Raise UsageError when writing `path` would overwrite part of one of the run directories `runs`:
    the directory itself, its meta.json, or anything in its tables/ (compared by real path, so a symlink
    is seen through, and by device and inode, so a hard link is too). A new file beside meta.json (a
    report in the run's directory) is allowed."""
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
        identity = (st.st_dev, st.st_ino)
    except OSError:
        identity = None
    for run in runs:
        own = Path(os.path.realpath(run))
        hit = real == own or real == own / "meta.json" or real.is_relative_to(own / "tables")
        if not hit and identity is not None:
            for part in _run_files(own):
                with contextlib.suppress(OSError):
                    s = os.stat(part)
                    if (s.st_dev, s.st_ino) == identity:
                        hit = True
                        break
        if hit:
            raise UsageError(f"{option} {path}: that is part of the run {run}; write it elsewhere")


@contextlib.contextmanager
def _signals_raise(path: str | os.PathLike) -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Interrupted` while writing (so the temporary file is removed), as
    Ctrl-C raises KeyboardInterrupt. Only the main thread can take signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: Any) -> None:
        raise Interrupted(signum, path)

    before = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def output_file(
    path: str | os.PathLike,
    *,
    text: bool = False,
    protect: Iterable[str | os.PathLike] = (),
    option: str = "-o",
    interruptible: bool = True,
) -> Iterator[IO[Any]]:
    """A file object to write `path` through (binary, or text in UTF-8 when `text`), put in place when
    the block ends without an error (see the module's docstring).

    `protect`: run directories being read; `path` must not be part of one (UsageError, `option` names
    the flag in the message). `interruptible`: SIGTERM, SIGHUP and Ctrl-C end the write cleanly (`Interrupted`,
    exit code 128 + signal); off for writers inside a command that handles signals itself. OSErrors
    become one-line `WriteError`s; nothing partial is left behind.
    """
    check_not_in_runs(path, protect, option)
    mode = "w" if text else "wb"
    encoding = "utf-8" if text else None
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise write_error(path, exc) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option} {path}: is a directory; name a file")
    guard = _signals_raise(path) if interruptible else contextlib.nullcontext()
    if st is not None and not stat.S_ISREG(st.st_mode):
        # a FIFO, a device node, a terminal: written as it is, never replaced by a regular file
        with guard:
            try:
                with open(path, mode, encoding=encoding) as fh:
                    yield fh
            except KeyboardInterrupt:
                if not interruptible:
                    raise
                raise Interrupted(signal.SIGINT, path) from None
            except OSError as exc:
                raise write_error(path, exc) from None
        return
    # a regular file or a new one, behind any symlinks: written beside it, then renamed over it
    final = Path(os.path.realpath(path))
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    with guard:
        # the temporary file is created inside the `try`: a signal that comes the moment it exists
        # (before any statement after the open) still removes it
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            with open(fd, mode, encoding=encoding) as fh:
                if st is not None:
                    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # the file keeps its permissions
                yield fh
            os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, KeyboardInterrupt) and interruptible:
                raise Interrupted(signal.SIGINT, path) from None
            if isinstance(exc, OSError):
                raise write_error(path, exc) from None
            raise
