"""What several test modules need: capability checks, the CLI, and snapshots of what a case may leave behind.

`require(cond, why)`: in CI (env CI set) a missing capability fails the test,
elsewhere it skips with the reason, so CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
#: the command line, run from this checkout's interpreter
PLUGTRACE = [sys.executable, "-m", "plugtrace"]


def require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to run this test: {why}")
    pytest.skip(why)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (real loop/zram devices, bpftrace)")


@contextlib.contextmanager
def tmpfs(size_mib: int, readonly: bool = False, at: Path | None = None) -> Iterator[Path]:
    """A tmpfs of `size_mib` MiB (read-only with `readonly`) mounted at `at` or a new directory, for a real
    full disk or read-only file system; unmounted afterwards, and the directory removed if it made one."""
    require_root()
    path = at if at is not None else Path(tempfile.mkdtemp(prefix="plugtrace-tmpfs-"))
    options = f"size={size_mib}m" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        if at is None:
            os.rmdir(path)


def require_bpftrace() -> None:
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")


def loop_devices() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


def zram_devices() -> set[str]:
    return {p.name for p in Path("/sys/block").glob("zram*")}


def wait_until_catching(pid: int, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Wait until process `pid` has a handler for `sig` (the recorder installs one as a recording begins):
    a signal before that lands in the interpreter's start-up, not in plugtrace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return  # gone already
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        if caught & (1 << (sig - 1)):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never installed a handler for signal {sig}")


def bpftrace_pids() -> str:
    """The bpftrace processes alive: not a zombie, which holds no probe and waits for init to reap it
    (a recorder SIGKILLed leaves its children to init, which takes its time on a busy machine)."""
    listed = subprocess.run(["ps", "-C", "bpftrace", "-o", "pid=,stat="], capture_output=True, text=True).stdout
    return "\n".join(pid for pid, stat in (line.split() for line in listed.splitlines()) if not stat.startswith("Z"))


class LeftBehind:
    """Snapshot of devices and tracers before a case; `check()` after it."""

    def __init__(self) -> None:
        self.loops, self.zrams, self.tracers = loop_devices(), zram_devices(), bpftrace_pids()

    def check(self, context: str = "") -> None:
        """Devices and tracers as before; `context` (e.g. the runs' stderr) goes into a failure's message."""
        deadline = time.monotonic() + 5
        while bpftrace_pids() != self.tracers and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loop_devices() == self.loops, f"a loop device was left behind: {loop_devices()}\n{context}"
        zrams = zram_devices()
        assert zrams == self.zrams, (
            f"zram devices changed: made and left {sorted(zrams - self.zrams)}, "
            f"removed {sorted(self.zrams - zrams)}\n{context}"
        )
        assert bpftrace_pids() == self.tracers, f"a bpftrace process was left behind\n{context}"


#: drops root for one command: user and group nobody, no supplementary groups
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_nobody_argv: list[str] | None = None


def plugtrace_as_nobody() -> list[str]:
    """The command line that runs plugtrace as user nobody. This checkout's own when nobody can read it;
    else (a clone in a `mktemp -d` directory is mode 0700) a copy of it nobody can read, hard-linked where
    the file system allows, made once per session and removed at exit, so the user's modes stay as they are."""
    global _nobody_argv
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop root")
    require_root()
    if _nobody_argv is not None:
        return _nobody_argv
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import plugtrace"], capture_output=True, text=True)
    if probe.returncode == 0:
        _nobody_argv = [*NOBODY, *PLUGTRACE]
        return _nobody_argv
    import atexit

    base = Path(tempfile.mkdtemp(prefix="plugtrace-nobody-checkout-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    base.chmod(0o755)
    copy = base / "checkout"
    made = subprocess.run(["cp", "-al", str(ROOT), str(copy)], capture_output=True, text=True)
    if made.returncode != 0:  # another file system: a real copy
        shutil.rmtree(copy, ignore_errors=True)
        subprocess.run(["cp", "-a", str(ROOT), str(copy)], check=True)
    copy.chmod(0o755)
    python = copy / Path(sys.executable).relative_to(ROOT) if Path(sys.executable).is_relative_to(ROOT) else None
    require(python is not None, f"the interpreter {sys.executable} is outside the checkout; nobody cannot read it")
    # the copy's plugtrace first on the path (the editable install names the checkout's)
    start = f"import sys; sys.path.insert(0, {str(copy)!r}); import runpy; "
    argv = [*NOBODY, str(python), "-c", start + "runpy.run_module('plugtrace', run_name='__main__', alter_sys=True)"]
    check = subprocess.run([*NOBODY, str(python), "-c", start + "import plugtrace"], capture_output=True, text=True)
    require(check.returncode == 0, f"user nobody cannot run plugtrace even from a copy: {check.stderr.strip()[-200:]}")
    _nobody_argv = argv
    return argv
