"""Faults and bad input, run through the real CLI as a user would.

Each case checks three things: a clear one-line message (no traceback), nothing
lost (the run directory stays readable and says what happened), and nothing
left behind (no loop or zram device, no bpftrace process).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import (
    PLUGTRACE,
    LeftBehind,
    loop_devices,
    plugtrace_as_nobody,
    require,
    require_root,
    tmpfs,
    wait_until_catching,
)


@pytest.fixture
def tiny_fs():
    """A 2 MiB tmpfs: a run directory on it fills the disk within a second."""
    with tmpfs(2) as path:
        yield path


@pytest.mark.parametrize("mode", ["off", "events", "aggregate"])
def test_disk_full_marks_the_run_incomplete_and_keeps_it_readable(tiny_fs, mode):
    import pyarrow.parquet as pq

    if mode != "off":
        require(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    left = LeftBehind()
    out = tiny_fs / "run"
    p = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            "loop",
            "--size",
            "128M",
            "--mode",
            mode,
            "--duration",
            "20",
            "--quiet",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0
    assert "disk is full" in p.stderr and "Traceback" not in p.stderr and "Exception ignored" not in p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "incomplete"
    assert not (out / ".space-reserve").exists(), "the space reserved for meta.json was given back"
    assert meta["damaged_tables"], "the table that hit the full disk must be named"
    assert "disk is full" in meta["error"]
    readable = [n for n, t in meta["tables"].items() if not t.get("damaged")]
    assert readable, "at least one table should have been finished"
    for name in readable:
        pq.read_table(out / "tables" / f"{name}.parquet")
    from plugtrace.analysis import Run

    Run.open(out)  # damaged tables are set aside, the rest opens
    left.check()


def test_not_root_cannot_create_devices(world_writable_dir):
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop root")
    require_root()
    out = world_writable_dir / "r"
    p = subprocess.run(
        [*plugtrace_as_nobody(), "record", "--device", "loop", "--mode", "off", "--requests", "100", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 4, p.stderr
    assert "needs root" in p.stderr and "Traceback" not in p.stderr


@pytest.fixture
def world_writable_dir():
    """A directory user nobody can write (and plugtrace_as_nobody() ready)."""
    plugtrace_as_nobody()
    path = Path(tempfile.mkdtemp(prefix="plugtrace-nobody-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_not_root_runs_on_a_file_and_lists_what_it_could_not_measure(world_writable_dir):
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop root")
    require_root()
    tmp_path = world_writable_dir
    out = tmp_path / "r"
    p = subprocess.run(
        [
            *plugtrace_as_nobody(),
            "record",
            "--device",
            f"file:{tmp_path / 'disk.img'}",
            "--size",
            "64M",
            "--requests",
            "2000",
            "--quiet",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert "not root" in meta["probes"]["could_not_measure"]["kernel"]
    assert "could not measure kernel: not root" in p.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_at_random_moments_leave_nothing_behind(tmp_path, sig):
    """Signals during setup, workload and finalisation; then a second record still works."""
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    from plugtrace.analysis import Run

    left = LeftBehind()
    said: list[str] = []
    rng = random.Random(int(sig))
    # set-up (devices, bpftrace attaching), the workload, the workload's end and
    # the tracer's stop / table finishing; both modes, both device kinds
    for i, delay in enumerate([0.05, 0.6, rng.uniform(1.0, 2.5), 3.2, 3.6]):
        out = tmp_path / f"r{i}"
        # every probe, markers too: a bpftrace process among them, attaching or stopping when the signal lands
        probes = ("enters," if i % 2 else "") + "uring_requests,block_rq,block_unplug,markers"
        proc = subprocess.Popen(
            [
                *PLUGTRACE,
                "record",
                "--device",
                "zram" if i % 2 else "loop",
                "--size",
                "128M",
                "--mode",
                "events" if i % 2 else "aggregate",
                "--duration",
                "2",
                "--quiet",
                "--probes",
                probes,
                "-o",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until_catching(proc.pid)  # delays count from the recording's start, not the interpreter's
        time.sleep(delay)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        said.append(f"run {i} (signal after {delay:.2f} s), exit {proc.returncode}:\n{stderr}")
        assert "Traceback" not in stderr, stderr
        if (out / "meta.json").exists():
            meta = json.loads((out / "meta.json").read_text())
            assert meta["status"] in ("interrupted", "complete"), meta["status"]
            run = Run.open(out)  # readable, whatever moment the signal hit
            if run.has("submits") and run.has("enters"):
                # nothing the engine did is missing from its log: eBPF saw the same submits
                enters = run.table("enters", ["to_submit"])
                assert (enters["to_submit"] > 0).sum() == len(run.table("submits", ["nr_sqes"]))
        left.check("\n".join(said))
    p = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            "loop",
            "--size",
            "128M",
            "--mode",
            "off",
            "--requests",
            "500",
            "--quiet",
            "-o",
            str(tmp_path / "after"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    left.check()


def test_existing_output_directory_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    p = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            f"file:{tmp_path / 'd.img'}",
            "--size",
            "16M",
            "--mode",
            "off",
            "--requests",
            "10",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode != 0 and "not empty" in p.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_tracefs_not_mounted_is_listed_and_the_run_proceeds(tmp_path):
    """Forced by the capability override: unmounting the real tracefs would disturb other tracers."""
    require_root()
    left = LeftBehind()
    out = tmp_path / "r"
    p = subprocess.run(
        [*PLUGTRACE, "record", "--device", "loop", "--size", "128M", "--requests", "1000", "--quiet", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PLUGTRACE_FORCE_MISSING": "tracefs"},
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert "tracefs is not mounted" in meta["probes"]["could_not_measure"]["kernel"]
    assert "could not measure kernel: tracefs is not mounted" in p.stderr
    left.check()


@pytest.fixture
def held_loop_device(loop_device):
    """The loop device, held open exclusively by another process (as a mounted or in-use disk is)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; "
            f"fd = os.open({loop_device.path!r}, os.O_RDONLY | os.O_EXCL); "
            "print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    try:
        yield loop_device
    finally:
        holder.kill()
        holder.wait()


def test_busy_device_is_refused(tmp_path, held_loop_device):
    p = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            held_loop_device.path,
            "--mode",
            "off",
            "--requests",
            "10",
            "-o",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 5 and "busy" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()


def test_read_only_device_is_refused_for_writing(tmp_path):
    require_root()
    backing = tmp_path / "ro.img"
    with open(backing, "wb") as fh:
        fh.truncate(16 << 20)
    dev = subprocess.run(
        ["losetup", "-r", "-f", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        p = subprocess.run(
            [
                *PLUGTRACE,
                "record",
                "--device",
                dev,
                "--allow-write",
                "--rw",
                "randwrite",
                "--mode",
                "off",
                "--requests",
                "10",
                "-o",
                str(tmp_path / "r"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 5 and "read-only" in p.stderr and "Traceback" not in p.stderr
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.parametrize("device", ["loop", "zram", "file"])
def test_write_then_verify_on_each_device_kind_finds_no_mismatch(tmp_path, device):
    require_root()
    left = LeftBehind()
    spec = f"file:{tmp_path / 'disk.img'}" if device == "file" else device
    out = tmp_path / "r"
    p = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            spec,
            "--size",
            "64M",
            "--rw",
            "randwrite",
            "--iodepth",
            "16",
            "--requests",
            "3000",
            "--mode",
            "off",
            "--quiet",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    integrity = json.loads((out / "meta.json").read_text())["integrity"]
    assert integrity["checked_blocks"] > 0 and integrity["mismatches"] == 0
    assert "data integrity" in p.stdout and "OK" in p.stdout
    left.check()


def _good_run(tmp_path) -> Path:
    from plugtrace.synthetic import write_run

    return write_run(tmp_path / "good", strategy="defer", requests=2000, kernel="events")


@pytest.mark.parametrize(
    "damage, named",
    [
        ("missing_meta", "meta.json"),
        ("truncated_parquet", "submits.parquet"),
        ("newer_schema", "meta.json"),
        ("garbage_meta", "meta.json"),
    ],
)
def test_report_on_a_corrupt_run_directory_names_the_file(tmp_path, damage, named):
    run = _good_run(tmp_path)
    if damage == "missing_meta":
        (run / "meta.json").unlink()
    elif damage == "truncated_parquet":
        path = run / "tables" / "submits.parquet"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "newer_schema":
        meta = json.loads((run / "meta.json").read_text())
        meta["schema_version"] = 99
        (run / "meta.json").write_text(json.dumps(meta))
    else:
        (run / "meta.json").write_text('{"schema": "plugtrace-run", "schema_ver')
    out = tmp_path / "report.html"
    p = subprocess.run([*PLUGTRACE, "report", str(run), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    assert named in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, "one clear line"
    assert not out.exists()


def test_tracing_a_program_with_nothing_measurable_is_refused_clearly(tmp_path):
    require_root()
    out = tmp_path / "r"
    p = subprocess.run(
        [*PLUGTRACE, "record", "-o", str(out), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PLUGTRACE_FORCE_MISSING": "bpftrace,libbpf"},
    )
    assert p.returncode == 4
    assert "bpftrace is not installed" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_without_bpftrace_our_own_programs_still_trace_a_program(tmp_path):
    """As doctor says: the default probes are programs of our own; bpftrace is only their fallback."""
    require_root()
    out = tmp_path / "r"
    p = subprocess.run(
        [*PLUGTRACE, "record", "-o", str(out), "--", "dd", "if=/dev/zero", "of=/dev/null", "count=1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PLUGTRACE_FORCE_MISSING": "bpftrace"},
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["probes"]["backends"]["uring_requests"] == "libbpf"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_the_terminal_closing_ends_a_recording_like_ctrl_c(tmp_path, sig):
    """SIGHUP (the terminal closed) and SIGQUIT unwind as Ctrl-C does: run kept and marked, devices removed."""
    require_root()
    left = LeftBehind()
    for device in ("loop", "zram"):
        out = tmp_path / f"{device}-{int(sig)}"
        proc = subprocess.Popen(
            [
                *PLUGTRACE,
                "record",
                "--device",
                device,
                "--size",
                "64M",
                "--mode",
                "off",
                "--duration",
                "20",
                "--quiet",
                "-o",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not (out / "tables" / "requests.parquet").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in stderr, stderr
        assert json.loads((out / "meta.json").read_text())["status"] == "interrupted"
        left.check()
    assert not list(Path("/var/tmp").glob("plugtrace-loop-*")), "a loop backing file was left behind"


def _pid_devices(out: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads((out / "meta.json").read_text())["device"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    raise AssertionError("the recording never wrote its meta.json")


def test_sigkill_leaves_no_loop_device_and_the_next_record_removes_the_zram(tmp_path):
    """SIGKILL runs no clean-up at all: the loop device clears itself (autoclear, its backing file already
    unlinked), and the zram device, which cannot, is recognised as a dead recorder's and removed."""
    require_root()
    left = LeftBehind()
    for device in ("loop", "zram"):
        out = tmp_path / device
        proc = subprocess.Popen(
            [
                *PLUGTRACE,
                "record",
                "--device",
                device,
                "--size",
                "64M",
                "--mode",
                "off",
                "--duration",
                "20",
                "--quiet",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        made = _pid_devices(out)
        time.sleep(1)
        proc.kill()
        proc.wait(30)
        if device == "loop":
            deadline = time.monotonic() + 10
            while made["path"] in loop_devices() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert made["path"] not in loop_devices(), "the loop device outlived its recorder"
            assert not os.path.exists(made["backing_file"])
        else:
            assert Path(f"/sys/block/{Path(made['path']).name}").exists(), "zram cannot clear itself"
            listed = subprocess.run([*PLUGTRACE, "devices"], capture_output=True, text=True).stdout
            assert "left behind by a plugtrace recorder that was killed" in listed
            cleaned = subprocess.run([*PLUGTRACE, "devices", "--cleanup"], capture_output=True, text=True)
            assert cleaned.returncode == 0 and made["path"] in cleaned.stdout, cleaned.stderr
    left.check()


def test_cleanup_never_touches_a_live_recorders_zram(tmp_path):
    require_root()
    out = tmp_path / "live"
    proc = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--device",
            "zram",
            "--size",
            "64M",
            "--mode",
            "off",
            "--duration",
            "6",
            "--quiet",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        made = _pid_devices(out)
        cleaned = subprocess.run([*PLUGTRACE, "devices", "--cleanup"], capture_output=True, text=True)
        assert made["path"] not in cleaned.stdout
        assert Path(f"/sys/block/{Path(made['path']).name}").exists()
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("allow_write", [False, True])
def test_a_users_device_is_held_for_the_whole_run(tmp_path, loop_device, allow_write):
    """A second recorder on the same device is refused while the first runs (instead of both counting
    each other's requests, or both writing and reporting false MISMATCHES), and gets it afterwards."""
    write = ["--allow-write", "--rw", "randwrite"] if allow_write else []
    first = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--device",
            loop_device.path,
            "--mode",
            "off",
            "--duration",
            "4",
            "--quiet",
            *write,
            "-o",
            str(tmp_path / "first"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "first" / "meta.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(
            [
                *PLUGTRACE,
                "record",
                "--device",
                loop_device.path,
                "--mode",
                "off",
                "--requests",
                "100",
                *write,
                "-o",
                str(tmp_path / "second"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 5 and "busy" in second.stderr, second.stderr
    finally:
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    after = subprocess.run(
        [
            *PLUGTRACE,
            "record",
            "--device",
            loop_device.path,
            "--mode",
            "off",
            "--requests",
            "100",
            *write,
            "-o",
            str(tmp_path / "after"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert after.returncode == 0, after.stderr


def test_closed_stdout_is_not_a_traceback():
    """`plugtrace devices | head -1` and the like: the reader goes away, plugtrace ends quietly."""
    for args in (["devices"], ["doctor"], ["report", "--help"]):
        proc = subprocess.Popen([*PLUGTRACE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.wait(60)
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr, (args, stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--duration", "nan"], "--duration: a positive number"),
        (["--duration", "inf"], "--duration: a positive number"),
        (["--seed", "-1"], "--seed: 0 to 2**63-1"),
        (["--watch-device", "999:999", "--", "true"], "no block device 999:999"),
        (["--", "/nonexistent/cmd"], "cannot run /nonexistent/cmd: not found"),
        (["--duration", "3", "--", "true"], "--duration is for --pid"),
    ],
)
def test_bad_values_are_refused_before_anything_is_made(tmp_path, args, message):
    out = tmp_path / "r"
    p = subprocess.run([*PLUGTRACE, "record", "-o", str(out), *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not out.exists()


def test_a_traced_command_is_ended_with_everything_it_started(tmp_path):
    """A command that ignores SIGTERM and leaves children: all of its process group goes when record ends."""
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    # the marker is put together inside bash, so that no command line but the sleeps' holds it whole
    head, tail = "plugtrace-orph", f"an-{os.getpid()}"
    marker = head + tail
    script = 'trap \'\' TERM; (exec -a "$0$1-child" sleep 1000) & exec -a "$0$1" sleep 1000'
    proc = subprocess.Popen(
        [*PLUGTRACE, "record", "--quiet", "-o", str(tmp_path / "r"), "--", "bash", "-c", script, head, tail],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()) < 2:
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0, "left running"
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["status"] == "interrupted"


def test_output_onto_a_file_is_one_line(tmp_path):
    require_root()
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    p = subprocess.run(
        [*PLUGTRACE, "record", "-o", str(blocker), "--", "true"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert blocker.read_text() == "mine"


def test_ctrl_c_during_the_overhead_baseline_ends_the_recording(tmp_path):
    require_root()
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--device",
            "zram",
            "--size",
            "64M",
            "--duration",
            "8",
            "--measure-overhead",
            "--quiet",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # inside the untraced baseline
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted"


def _run_copy(tmp_path, name="defer"):
    shutil.copytree(Path(__file__).resolve().parents[2] / "data" / name, tmp_path / name)
    return tmp_path / name


def test_report_refuses_to_write_into_a_run_and_never_leaves_half_a_file(tmp_path):
    run = _run_copy(tmp_path)
    meta = (run / "meta.json").read_text()
    for target in (run / "meta.json", run / "tables" / "requests.parquet"):
        p = subprocess.run([*PLUGTRACE, "report", str(run), "-o", str(target)], capture_output=True, text=True)
        assert p.returncode == 2 and "part of the run" in p.stderr
    assert (run / "meta.json").read_text() == meta
    beside = subprocess.run(
        [*PLUGTRACE, "report", str(run), "-o", str(run / "report.html")], capture_output=True, text=True
    )
    assert beside.returncode == 0, "a report may sit in the run directory, as the demo puts it"
    old = tmp_path / "report.html"
    old.write_text("the previous report")
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    p = subprocess.run(
        [*PLUGTRACE, "report", str(run), "-o", str(tmp_path / "ro" / "r.html")], capture_output=True, text=True
    )
    os.chmod(tmp_path / "ro", 0o700)
    if os.geteuid() != 0:  # root writes anywhere: the atomic rename is checked through its temporary name
        assert p.returncode == 1 and "cannot write" in p.stderr
    assert not list((tmp_path / "ro").glob(".*partial"))


@pytest.mark.parametrize("field, value", [("config", "x"), ("environment", 7), ("events_lost", "lots")])
def test_report_of_a_run_with_wrong_meta_types_is_a_clear_error(tmp_path, field, value):
    run = _run_copy(tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    meta[field] = value
    (run / "meta.json").write_text(json.dumps(meta))
    p = subprocess.run([*PLUGTRACE, "report", str(run), "-o", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert p.returncode == 3 and f"'{field}' should be" in p.stderr and "Traceback" not in p.stderr


def test_report_of_failed_empty_and_corrupt_runs_renders_and_says_so(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plugtrace.run import RunWriter

    RunWriter(tmp_path / "failed", {"config": {"strategy": "defer"}}).close("failed")

    def run_with_submits(name: str, submits: pa.Table) -> None:
        """A run whose submits table is what another program (an older plugtrace, a bug) wrote: RunWriter
        itself would refuse columns that are not the schema's."""
        w = RunWriter(tmp_path / name, {"config": {"strategy": "defer"}})
        pq.write_table(submits, w.table_path("submits"))
        w.adopt_table("submits", submits.num_rows)
        w.close("complete")

    run_with_submits(
        "empty",
        pa.table(
            {
                "start_ns": pa.array([], pa.int64()),
                "tid": pa.array([], pa.int32()),
                "nr_sqes": pa.array([], pa.int32()),
                "latency_ns": pa.array([], pa.int64()),
                "ret": pa.array([], pa.int32()),
            }
        ),
    )
    run_with_submits(
        "corrupt",
        pa.table({"start_ns": ["a", "b"], "tid": [1, 1], "nr_sqes": [1, 2], "latency_ns": [5, 6], "ret": [1, 2]}),
    )
    out = tmp_path / "r.html"
    p = subprocess.run(
        [
            *PLUGTRACE,
            "report",
            *(str(tmp_path / n) for n in ("failed", "empty", "corrupt")),
            str(_run_copy(tmp_path)),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    text = out.read_text()
    assert "the run failed" in text and "submits.parquet is corrupt" in text


def test_a_hanging_bpftrace_is_waited_for_aloud_then_killed(tmp_path):
    """A bpftrace that does not stop (stopped by SIGSTOP here): record says what it waits for, kills it after
    its bound, and marks the run incomplete; nothing is left behind."""
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    left = LeftBehind()
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--device",
            "zram",
            "--size",
            "64M",
            "--duration",
            "3",
            "--quiet",
            "--probes",
            "uring_requests,markers",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PLUGTRACE_STOP_TIMEOUT_S": "6"},  # the bound, shorter than the default 20 s
    )

    def markers_bpftrace() -> list[int]:  # not the short-lived bpftrace runs of the capability checks
        found = subprocess.run(["pgrep", "-f", "bpftrace .*markers.bt"], capture_output=True, text=True).stdout
        return [int(pid) for pid in found.split()]

    deadline = time.monotonic() + 30
    while not markers_bpftrace() and time.monotonic() < deadline:
        time.sleep(0.1)
    victims = markers_bpftrace()
    assert victims, "bpftrace never started"
    time.sleep(1)  # attached
    for pid in victims:
        os.kill(pid, signal.SIGSTOP)
    _, stderr = proc.communicate(timeout=120)
    assert "waiting for bpftrace" in stderr and "Traceback" not in stderr, stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "incomplete" and "did not stop within 6 s" in meta["tracer_error"]
    left.check()


def test_ctrl_c_during_write_verification_keeps_what_was_checked(tmp_path):
    """Verification reads every written block back; Ctrl-C there ends it with a count of what was checked,
    so the recording still writes its summary and integrity (marked interrupted)."""
    import numpy as np

    from plugtrace.engine.verify import verify_blocks

    path = tmp_path / "blocks.img"
    with open(path, "wb") as fh:
        fh.truncate(256 << 20)
    fd = os.open(path, os.O_RDONLY)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        result = verify_blocks(fd, np.ones((256 << 20) // 4096, dtype=bool), 4096, seed=1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(fd)
    assert result["interrupted"] and result["of_blocks"] == 65536
    assert 0 <= result["checked_blocks"] < 65536
    # zeros are not the pattern: every block checked before the interruption is a mismatch, and counted
    assert result["mismatches"] == result["checked_blocks"]


def test_ctrl_c_on_pid_prints_what_was_traced(tmp_path):
    require_root()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        proc = subprocess.Popen(
            [*PLUGTRACE, "record", "--pid", str(sleeper.pid), "-o", str(tmp_path / "r")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not (tmp_path / "r" / "meta.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # attached
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert "run directory:" in stderr and "status: interrupted" in stderr, stderr


def test_default_output_in_a_read_only_directory_is_one_line(tmp_path):
    require_root()
    ro = tmp_path / "ro"
    ro.mkdir()
    with tmpfs(1, readonly=True, at=ro):
        p = subprocess.run([*PLUGTRACE, "record", "--", "true"], capture_output=True, text=True, timeout=60, cwd=ro)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Read-only file system" in p.stderr, p.stderr
