"""What several test modules need: capability checks, the CLI, and snapshots of what a case may leave behind.

`require(cond, why)`: in CI (env CI set) a missing capability fails the test,
elsewhere it skips with the reason, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def require_bpftrace() -> None:
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")


def loop_devices() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


def zram_devices() -> set[str]:
    return {p.name for p in Path("/sys/block").glob("zram*")}


def bpftrace_pids() -> str:
    return subprocess.run(["pgrep", "-x", "bpftrace"], capture_output=True, text=True).stdout


class LeftBehind:
    """Snapshot of devices and tracers before a case; `check()` after it."""

    def __init__(self) -> None:
        self.loops, self.zrams, self.tracers = loop_devices(), zram_devices(), bpftrace_pids()

    def check(self) -> None:
        deadline = time.monotonic() + 5
        while bpftrace_pids() != self.tracers and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loop_devices() == self.loops, "a loop device was left behind"
        assert zram_devices() == self.zrams, "a zram device was left behind"
        assert bpftrace_pids() == self.tracers, "a bpftrace process was left behind"
