"""Faults on the recording side (record, qemu, devices, doctor, the notebook magic), run through the real
CLI as a user would: real devices, real signals. Each case checks a clear one-line message, nothing lost
and nothing left behind (tests.helpers.LeftBehind)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PLUGTRACE, LeftBehind, require_root


def _loop_backing_files() -> set[str]:
    return {p.name for p in Path("/var/tmp").glob("plugtrace-loop-*")}


def _backing_fd(pid: int) -> str | None:
    """The descriptor of `pid` open on a file in /var/tmp (the loop device's backing file being filled)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/var/tmp/"):
                    return f"/proc/{pid}/fd/{fd}"
            except OSError:
                continue
    except OSError:
        pass
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL])
def test_a_signal_during_the_loop_fill_leaves_no_backing_file(tmp_path, sig):
    """The backing file has no name from its first moment: a signal (or SIGKILL) while it is being filled
    leaves no file in /var/tmp, and the user is told that nothing was recorded yet."""
    require_root()
    left, files = LeftBehind(), _loop_backing_files()
    size = 256 << 20
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [*PLUGTRACE, "record", "--size", "256M", "--mode", "off", "--duration", "1", "--quiet", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (fd := _backing_fd(proc.pid)) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the fill never started"
            time.sleep(0.002)
        proc.send_signal(signal.SIGSTOP)  # held still: the signal lands mid-fill, however busy the machine
        allocated = os.stat(fd).st_blocks * 512
        assert allocated < size, "the fill ended before the signal could be sent"
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _loop_backing_files() == files, "the backing file was left in /var/tmp"
    left.check()
    if sig == signal.SIGKILL:
        return
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "interrupted before recording began; nothing was recorded" in stderr, stderr
    assert "keeping what was recorded" not in stderr
    assert not out.exists()


def _recorded_device(out: Path, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads((out / "meta.json").read_text())["device"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    raise AssertionError("the recording never wrote its meta.json")


def _killed_zram_recorder(out: Path) -> str:
    """A zram recorder SIGKILLed mid-run: its device stays (zram cannot clear itself). Returns its name."""
    proc = subprocess.Popen(
        [*PLUGTRACE, "record", "--device", "zram", "--size", "64M", "--mode", "off", "--duration", "20"]
        + ["--quiet", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name = Path(_recorded_device(out)["path"]).name
    proc.kill()
    proc.wait(30)
    assert Path(f"/sys/block/{name}").exists()
    return name


def _remove_zram(name: str) -> None:
    Path(f"/sys/block/{name}/reset").write_text("1")
    Path("/sys/class/zram-control/hot_remove").write_text(name.removeprefix("zram"))


def test_a_zram_device_reused_after_a_killed_recorder_is_never_taken_for_plugtraces(tmp_path):
    """After a SIGKILLed recorder the user resets its zram device and makes their own under the same name:
    `devices` does not call it plugtrace's, and neither `devices --cleanup` nor the next record removes it."""
    require_root()
    left = LeftBehind()
    name = _killed_zram_recorder(tmp_path / "killed")
    try:
        # the user's own zram device, as `zramctl --reset` then `zramctl --find --size 32M` make it
        Path(f"/sys/block/{name}/reset").write_text("1")
        Path(f"/sys/block/{name}/disksize").write_text(str(32 << 20))
        listed = subprocess.run([*PLUGTRACE, "devices"], capture_output=True, text=True, timeout=60)
        mine = [line for line in listed.stdout.splitlines() if line.startswith(f"/dev/{name} ")]
        assert mine and "left behind" not in mine[0], listed.stdout
        cleaned = subprocess.run([*PLUGTRACE, "devices", "--cleanup"], capture_output=True, text=True, timeout=60)
        assert cleaned.returncode == 0 and name not in cleaned.stdout, cleaned.stdout
        p = subprocess.run(
            [*PLUGTRACE, "record", "--device", "zram", "--size", "64M", "--mode", "off", "--requests", "200"]
            + ["--quiet", "-o", str(tmp_path / "next")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0 and name not in p.stderr, p.stderr
        assert Path(f"/sys/block/{name}").exists(), "the user's zram device was removed"
        assert int(Path(f"/sys/block/{name}/disksize").read_text()) == 32 << 20
    finally:
        _remove_zram(name)  # made by the recorder above, reused by this test as "the user"
    left.check()


def test_an_open_orphaned_zram_device_is_left_alone_until_closed(tmp_path):
    """A dead recorder's zram device that a program has open is not reset under it: it is named as
    left alone, and removed by the first clean-up after the program closed it."""
    require_root()
    left = LeftBehind()
    name = _killed_zram_recorder(tmp_path / "killed")
    try:
        with open(f"/dev/{name}", "rb"):
            cleaned = subprocess.run([*PLUGTRACE, "devices", "--cleanup"], capture_output=True, text=True, timeout=60)
            assert cleaned.returncode == 0, cleaned.stderr
            assert f"left alone, because open: /dev/{name}" in cleaned.stdout, cleaned.stdout
            assert Path(f"/sys/block/{name}").exists()
        cleaned = subprocess.run([*PLUGTRACE, "devices", "--cleanup"], capture_output=True, text=True, timeout=60)
        assert f"removed /dev/{name}" in cleaned.stdout, cleaned.stdout
    finally:
        if Path(f"/sys/block/{name}").exists():
            _remove_zram(name)
    left.check()


def test_a_dangling_symlink_as_file_device_is_refused_and_kept(tmp_path):
    """`--device file:LINK` with LINK pointing nowhere: refused, the link kept, no file made where it points."""
    link, target = tmp_path / "disk.img", tmp_path / "elsewhere.img"
    link.symlink_to(target)
    out = tmp_path / "r"
    p = subprocess.run(
        [*PLUGTRACE, "record", "--device", f"file:{link}", "--size", "64M", "--mode", "off", "--requests", "100"]
        + ["-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 5 and "symbolic link" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert not target.exists() and not out.exists()
