"""/proc readers: start times and the children a process forked."""

import os
import subprocess
import sys
import time

from plugtrace.procfs import descendants, process_start


def test_process_start_tells_a_live_process_from_a_gone_one():
    assert process_start(os.getpid()) is not None and process_start(os.getpid()).isdigit()
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert process_start(p.pid) is None


def test_descendants_follow_grandchildren_and_names_with_parentheses():
    # a child that names itself ") (x y" (comm may hold both) and starts a grandchild
    script = (
        "import subprocess, sys, time; open('/proc/self/comm', 'w').write(') (x y'); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not descendants(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (grandchild,) = descendants(child.pid)
        with open(f"/proc/{child.pid}/comm") as fh:
            assert fh.read().strip() == ") (x y"
        assert {child.pid, grandchild} <= set(descendants(os.getpid()))
    finally:
        for pid in descendants(child.pid):
            os.kill(pid, 9)
        child.kill()
        child.wait()
