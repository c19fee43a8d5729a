"""What /proc says about processes: start times and parent links.

Both parse ``/proc/PID/stat``, whose second field (the command name, in
parentheses) may itself hold spaces and parentheses; the fields are read
after its last ``)``.
"""

from __future__ import annotations

from pathlib import Path


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
    """The processes `pid` started (and theirs), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(_stat_fields(stat_file)[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)
