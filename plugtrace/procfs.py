"""What /proc says about processes: start times and the process tree; and whether a file can start one.

`process_start` parses ``/proc/PID/stat``, whose second field (the command name, in parentheses)
may itself hold spaces and parentheses; the fields are read after its last ``)``. `descendants`
asks psutil, which reads the same parent links.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def _stat_fields(stat_file: Path) -> list[str]:
    """The fields of a /proc/PID/stat file after the command name: [0] is the state (field 3 of proc(5))."""
    return stat_file.read_text().rsplit(")", 1)[1].split()


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), or None when there is no such process."""
    try:
        return _stat_fields(Path(f"/proc/{pid}/stat"))[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """The processes `pid` started (and theirs), sorted; empty when there is no process `pid`."""
    try:
        return sorted(child.pid for child in psutil.Process(pid).children(recursive=True))
    except psutil.Error:  # gone, or a zombie
        return []


#: how the files the kernel executes begin: an ELF binary, a script naming its interpreter
_EXECUTABLE_MAGIC = (b"\x7fELF", b"#!")


def program_problem(path: str) -> str | None:
    """Why the file `path` cannot be run as a program (None: it can): missing, a directory, not
    executable, or neither a binary nor a script starting with #! (which a shell would run as a
    shell script instead, and exec() refuses with "Exec format error")."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        return "not found"
    except IsADirectoryError:
        return "a directory"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(path, os.X_OK):
        return "not executable"
    if not head.startswith(_EXECUTABLE_MAGIC):
        return "not a program (neither a binary nor a script starting with #!)"
    return None
