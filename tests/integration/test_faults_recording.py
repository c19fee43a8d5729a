"""Faults on the recording side (record, qemu, devices, doctor, the notebook magic), run through the real
CLI as a user would: real devices, real signals. Each case checks a clear one-line message, nothing lost
and nothing left behind (tests.helpers.LeftBehind)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PLUGTRACE, LeftBehind, plugtrace_as_nobody, require, require_root, tmpfs


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


def _sysfs_write(path: str, value: str) -> None:
    """Write a zram attribute as zramctl does, again while udev's probe holds the device for a moment."""
    deadline = time.monotonic() + 10
    while True:
        try:
            Path(path).write_text(value)
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _remove_zram(name: str) -> None:
    _sysfs_write(f"/sys/block/{name}/reset", "1")
    _sysfs_write("/sys/class/zram-control/hot_remove", name.removeprefix("zram"))


def test_a_zram_device_reused_after_a_killed_recorder_is_never_taken_for_plugtraces(tmp_path):
    """After a SIGKILLed recorder the user resets its zram device and makes their own under the same name:
    `devices` does not call it plugtrace's, and neither `devices --cleanup` nor the next record removes it."""
    require_root()
    left = LeftBehind()
    name = _killed_zram_recorder(tmp_path / "killed")
    try:
        # the user's own zram device, as `zramctl --reset` then `zramctl --find --size 32M` make it
        _sysfs_write(f"/sys/block/{name}/reset", "1")
        _sysfs_write(f"/sys/block/{name}/disksize", str(32 << 20))
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iodepth", "100000"], "--iodepth: 1 to 1024, not 100000"),
        (["--jobs", "10000"], "--jobs: 1 to 64, not 10000"),
        (["--jobs", "64", "--iodepth", "1024"], "MiB of buffers"),
        (["--size", "0"], "--size: a positive multiple of 512"),
        (["--size", "513"], "--size: a positive multiple of 512"),
        (["--size", "2048", "--bs", "4096"], "--size: at least one block"),
        (["--ide-disks", "3"], "--ide-disks: 0 to 2"),
    ],
)
def test_qemu_refuses_a_workload_the_guest_cannot_run(tmp_path, args, message):
    """Refused before a device is made or a guest booted: one line, exit 2, no run directory."""
    left = LeftBehind()
    out = tmp_path / "r"
    p = subprocess.run([*PLUGTRACE, "qemu", "-o", str(out), *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists()
    left.check()


@pytest.fixture
def tiny_loop_device():
    """A loop device of 64 MiB over a sparse file on a 2 MiB tmpfs: writes past 2 MiB fail for real."""
    from plugtrace import devices

    with tmpfs(2) as mount:
        target = devices.create_loop(64 << 20, directory=str(mount), sparse=True)
        try:
            yield target
        finally:
            target.close()


def test_a_guest_workload_whose_requests_fail_is_a_failed_run(tmp_path, tiny_loop_device):
    """The guest's writes fail (the device's storage is full): the run is `failed` with the guest's own
    error, the command exits non-zero, and nothing is left running."""
    from tests.integration.test_qemu import require_qemu

    require_qemu("10.0")
    left = LeftBehind()
    out = tmp_path / "r"
    p = subprocess.run(
        [*PLUGTRACE, "qemu", "--accel", "tcg", "--device", tiny_loop_device.path, "--allow-write"]
        + ["--rw", "randwrite", "--duration", "2", "--mode", "off", "--quiet", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "the guest workload failed: /dev/vda: write: " in p.stderr, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"].startswith("the guest workload failed: /dev/vda: write: ")
    assert meta["guest"]["workload"]["vda"]["errors"] > 0
    left.check()


@pytest.mark.parametrize("args", [[], ["--no-live"], ["--json"]])
def test_doctor_as_a_user_says_tracefs_is_not_readable(args):
    """tracefs is mode 0700: a user's doctor says so on its line and goes on to check the rest."""
    p = subprocess.run([*plugtrace_as_nobody(), "doctor", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 4 and "Traceback" not in p.stderr and not p.stderr.strip(), p.stderr
    assert "is not readable (not root)" in p.stdout, p.stdout
    assert "io_uring" in p.stdout and "liburing" in p.stdout  # the checks after tracefs ran


def test_a_traced_command_runs_when_fd_3_is_taken(tmp_path):
    """`exec 3<file` in the user's shell (or IPython's own descriptors): the command still runs, and does
    not get plugtrace's start pipe."""
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    left = LeftBehind()
    (tmp_path / "taken").write_text("the user's")
    seen = tmp_path / "fds"
    script = f'exec 3<{tmp_path / "taken"}; exec "$@"'
    p = subprocess.run(
        ["sh", "-c", script, "sh", *PLUGTRACE, "record", "--quiet", "-o", str(tmp_path / "r")]
        + ["--", "sh", "-c", f"ls /proc/$$/fd > {seen}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "Bad file descriptor" not in p.stderr, p.stderr
    assert seen.exists(), "the command never ran"
    assert "3" not in seen.read_text().split(), "the start pipe was left open in the command"
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["status"] == "complete"
    left.check()


def _text_file_with_x_bit(tmp_path: Path) -> Path:
    text = tmp_path / "notes.txt"
    text.write_text("echo this is no program\n")
    text.chmod(0o755)
    return text


@pytest.mark.parametrize("what", ["record", "qemu"])
def test_a_text_file_is_not_run_as_a_program(tmp_path, what):
    """An executable text file without #!: a shell would run it as a script, exec() says "Exec format error"."""
    text = _text_file_with_x_bit(tmp_path)
    out = tmp_path / "r"
    args = ["record", "-o", str(out), "--", str(text)] if what == "record" else ["qemu", "--qemu", str(text)]
    if what == "qemu":
        require_root()
        args += ["-o", str(out)]
    p = subprocess.run([*PLUGTRACE, *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not a program" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "0"], "--size: a positive multiple of 512"),
        (["--size", "513"], "--size: a positive multiple of 512"),
        (["--size", "16M", "--devices", "1000"], "--size/--devices: 16777216 bytes are too small for 1000"),
    ],
)
def test_record_refuses_a_size_before_making_a_device(tmp_path, args, message):
    left = LeftBehind()
    out = tmp_path / "r"
    p = subprocess.run(
        [*PLUGTRACE, "record", "--mode", "off", "-o", str(out), *args], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not out.exists()
    left.check()


@pytest.mark.parametrize("device", ["loop", "zram"])
def test_an_unusable_output_is_refused_before_the_device_is_made(tmp_path, device):
    """-o onto a file, or under a read-only file system: one line, and no device made and filled for nothing."""
    require_root()
    left = LeftBehind()
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    ro = tmp_path / "ro"
    ro.mkdir()
    with tmpfs(1, readonly=True, at=ro):
        for out, said in ((blocker, "exists and is not a directory"), (ro / "r", "Read-only file system")):
            p = subprocess.run(
                [*PLUGTRACE, "record", "--device", device, "--size", "64M", "--mode", "off", "--requests", "10"]
                + ["-o", str(out)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert p.returncode == 1 and said in p.stderr and "Traceback" not in p.stderr, p.stderr
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr  # no "filled ... in N s" first
    assert blocker.read_text() == "mine"
    left.check()


def _mbr(start: int, sectors: int) -> bytes:
    """A master boot record with one Linux partition (type 0x83) of `sectors` from sector `start`."""
    import struct

    entry = struct.pack("<B3sB3sII", 0, b"\xff\xff\xff", 0x83, b"\xff\xff\xff", start, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


@pytest.fixture
def disk_with_a_mounted_partition(tmp_path):
    """A loop device with a partition table, its first partition an ext4 file system mounted. A kernel
    that reads no partition tables (CONFIG_MSDOS_PARTITION off) is told the partition with BLKPG, as
    `addpart` does, which is what the kernel knows of partitions either way."""
    require_root()
    require(shutil.which("mkfs.ext4") is not None, "mkfs.ext4 (e2fsprogs) is needed")
    start, sectors = 2048, (32 << 20) // 512
    image = tmp_path / "disk.img"
    with open(image, "wb") as fh:
        fh.write(_mbr(start, sectors))
        fh.truncate(64 << 20)
    disk = subprocess.run(
        ["losetup", "-P", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        part = f"{disk}p1"
        if not os.path.exists(part):  # losetup -P scans the table before it returns
            require(shutil.which("addpart") is not None, "addpart (util-linux) is needed")
            subprocess.run(["addpart", disk, "1", str(start), str(sectors)], check=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(part) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(part), f"{part} did not appear"
        made = subprocess.run(["mkfs.ext4", "-q", "-F", part], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        subprocess.run(["mount", part, str(mount)], check=True)
        try:
            yield disk, mount
        finally:
            subprocess.run(["umount", str(mount)], check=False)
    finally:
        subprocess.run(["losetup", "-d", disk], check=False)


def test_a_disk_with_a_mounted_partition_is_not_usable(tmp_path, disk_with_a_mounted_partition):
    disk, mount = disk_with_a_mounted_partition
    name = Path(disk).name
    listed = subprocess.run([*PLUGTRACE, "devices"], capture_output=True, text=True, timeout=60)
    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{disk} "))
    assert f"no: partition {name}p1 mounted on {mount}" in line, line
    rows = json.loads(subprocess.run([*PLUGTRACE, "devices", "--json"], capture_output=True, text=True).stdout)
    row = next(r for r in rows["devices"] if r["device"] == disk)
    assert row["partitions_in_use"] == [f"partition {name}p1 mounted on {mount}"]
    p = subprocess.run(
        [*PLUGTRACE, "record", "--device", disk, "--mode", "off", "--requests", "10", "-o", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 5 and "busy" in p.stderr, p.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["record", "--mode", "off", "--measure-overhead"], "--measure-overhead compares a traced run"),
        (["qemu", "--mode", "off", "--measure-overhead"], "--measure-overhead compares a traced guest"),
        (["record", "--device", "zram", "--", "true"], "--device: for plugtrace's own workload"),
        (["record", "--requests", "10", "--strategy", "immediate", "--", "true"], "--strategy, --requests: for"),
        (["record", "--ide-devices", "-1"], "--ide-devices: 0 or more, not -1"),
        (["record", "--devices", "-2"], "--devices: 0 or more, not -2"),
    ],
)
def test_an_option_that_would_be_ignored_or_is_wrong_is_named(tmp_path, args, message):
    left = LeftBehind()
    out = tmp_path / "r"
    p = subprocess.run([*PLUGTRACE, *args[:1], "-o", str(out), *args[1:]], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not out.exists()
    left.check()


def test_a_killed_qemu_recorders_scratch_directory_is_removed_by_the_next(tmp_path):
    """SIGKILL runs no clean-up: the QEMU-side probes' directory in /tmp stays until the next `qemu` starts,
    which removes it (and never a running recorder's)."""
    from tests.integration.test_qemu import leftovers, require_qemu

    require_qemu("10.0")
    left, before = LeftBehind(), leftovers()
    proc = subprocess.Popen(
        [*PLUGTRACE, "qemu", "--accel", "tcg", "--size", "64M", "--sparse", "--duration", "30", "--quiet"]
        + ["-o", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (scratch := list(Path("/tmp").glob(f"plugtrace-qemu-{proc.pid}.*"))):
            assert proc.poll() is None and time.monotonic() < deadline, "the QEMU-side probes never started"
            time.sleep(0.1)
        other = subprocess.run(
            [*PLUGTRACE, "qemu", "--qemu", "/nonexistent", "-o", str(tmp_path / "x")], capture_output=True
        )
        assert other.returncode == 2 and scratch[0].exists(), "a running recorder's directory was removed"
    finally:
        proc.kill()
        proc.wait()
    assert scratch[0].exists()  # killed: nothing cleaned up
    p = subprocess.run(
        [*PLUGTRACE, "qemu", "--qemu", "/nonexistent", "-o", str(tmp_path / "next")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert not scratch[0].exists(), "the killed recorder's scratch directory was left"
    deadline = time.monotonic() + 15
    while leftovers() != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == before
    left.check()
