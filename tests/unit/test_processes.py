"""Children that die with us: real children, real signals, no root needed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugtrace.processes import spawn


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_dies_when_its_parent_dies(tmp_path):
    # the parent (a Python of its own) spawns a sleeper that dies with it, says its pid, then is SIGKILLed
    code = (
        "import sys, time; from plugtrace.processes import spawn; "
        "c = spawn(['sleep', '60'], stdout=None, stderr=None); print(c.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(_python(code), stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        assert os.getsid(child) == child  # a session of its own: a Ctrl-C at the terminal does not reach it
    finally:
        parent.kill()
        parent.wait()
    assert _gone_within(child)


def test_a_child_left_unreaped_is_ended_when_its_parent_exits():
    code = (
        "from plugtrace.processes import spawn; "
        "c = spawn(['sleep', '60'], stdout=None, stderr=None, die_with_us=False); print(c.pid, flush=True)"
    )
    out = subprocess.run(_python(code), capture_output=True, text=True, check=True).stdout
    child = int(out)
    try:
        # no death signal asked for, but the parent's exit ends what it had not reaped
        assert _gone_within(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_held_child_runs_only_once_told_to_go(tmp_path):
    mark = tmp_path / "ran"
    child = spawn(["touch", str(mark)], stdout=None, stderr=None, held="plugtrace-test")
    pid = child.pid
    time.sleep(0.3)
    assert child.poll() is None and child.held and not mark.exists()
    child.go()
    assert child.wait(10) == 0 and mark.exists() and not child.held
    assert child.pid == pid  # the program ran as the pid the tracer was given


def test_a_held_child_never_told_to_go_exits_without_running(tmp_path):
    mark = tmp_path / "ran"
    child = spawn(["touch", str(mark)], stdout=None, stderr=None, held="plugtrace-test")
    child.end()
    assert child.poll() is not None and not mark.exists()


def test_a_held_child_keeps_its_stdin_and_gets_the_go_pipe_off_its_fd_3(tmp_path):
    # fd 3 of the program is not the go pipe: it was closed before exec
    code = "import os, sys; print(sys.stdin.read().strip(), os.path.exists('/proc/self/fd/3'))"
    src = tmp_path / "in"
    src.write_text("hello\n")
    with open(src) as fh:
        child = spawn(_python(code), stdin=fh, held="plugtrace-test")
    child.go()
    assert child.proc.stdout is not None
    assert child.proc.stdout.read().decode().split() == ["hello", "False"]
    assert child.wait(10) == 0


def test_ending_a_child_ends_its_group_grandchildren_too():
    # the child starts a grandchild that ignores SIGTERM and outlives it: SIGKILL to the group takes it
    code = (
        "import signal, subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)'], "
        "stdout=subprocess.PIPE); g.stdout.readline(); print(g.pid, flush=True); time.sleep(60)"
    )
    child = spawn(_python(code))
    assert child.proc.stdout is not None
    grandchild = int(child.proc.stdout.readline())
    assert os.getpgid(grandchild) == child.pid
    child.end(grace_s=0.5)
    assert child.poll() == -signal.SIGTERM
    assert _gone_within(grandchild)
    child.end()  # idempotent


def test_signals_held_by_the_parent_reach_the_child():
    with_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        child = spawn(["sleep", "60"])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, with_mask)
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM


def test_a_program_that_cannot_start_raises_and_leaves_no_descriptor():
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        spawn(["/nonexistent/program"])
    assert set(os.listdir("/proc/self/fd")) == before
