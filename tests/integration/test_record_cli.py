"""plugtrace record as a user runs it: the real CLI in a subprocess."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PLUGTRACE, loop_devices, require_root, zram_devices


def run(*args, **kw):
    return subprocess.run([*PLUGTRACE, *args], capture_output=True, text=True, timeout=120, **kw)


def test_record_on_loop_writes_a_run_directory(tmp_path):
    require_root()
    out = tmp_path / "run"
    before = loop_devices()
    p = run(
        "record", "--device", "loop", "--size", "128M", "--mode", "off", "--requests", "3000", "--quiet", "-o", str(out)
    )
    assert p.returncode == 0, p.stderr
    assert "mean SQEs per enter" in p.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["schema_version"] == 1
    assert meta["config"]["strategy"] == "defer"
    assert meta["device"]["kind"] == "loop" and meta["device"]["created_by_plugtrace"]
    assert meta["summary"]["nr_requests"] >= 3000
    # the log was held while the workload ran and written whole when it stopped
    assert meta["summary"]["log_rows_while_running"] == 0
    assert meta["tables"]["requests"]["rows"] == meta["summary"]["nr_requests"]
    assert meta["probes"]["could_not_measure"]["kernel"].startswith("tracing turned off")
    assert {"requests", "submits", "sections"} <= set(meta["tables"])
    assert loop_devices() == before, "record left a loop device behind"


@pytest.mark.parametrize("setup, flags", [("coop", {"COOP_TASKRUN", "TASKRUN_FLAG"}), ("plain", {"0"})])
def test_ring_setup_is_applied_and_recorded(tmp_path, setup, flags):
    """Both ring setups run for real on zram; meta says which flags the kernel accepted."""
    require_root()
    out = tmp_path / "run"
    p = run(
        "record",
        "--device",
        "zram",
        "--size",
        "64M",
        "--mode",
        "off",
        "--requests",
        "2000",
        "--ring-setup",
        setup,
        "--quiet",
        "-o",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["ring_setup"] == setup
    (thread,) = meta["engine_threads"]
    assert flags <= set(thread["ring_flags"].split("|"))
    assert meta["summary"]["nr_requests"] >= 2000


@pytest.mark.parametrize(
    "args, option",
    [
        (["--iodepth", "0"], "--iodepth"),
        (["--duration", "-1"], "--duration"),
        (["--strategy", "nope"], "--strategy"),
        (["--bs", "1000"], "--bs"),
        (["--rw", "sideways"], "--rw"),
        (["--interleave", "2"], "--interleave"),
        (["--poll-max-ns", "-5"], "--poll-max-ns"),
        (["--ring-setup", "fast"], "--ring-setup"),
        (["--probes", "enters,nope"], "--probes"),
    ],
)
def test_invalid_values_are_usage_errors_naming_the_option(tmp_path, args, option):
    p = run("record", "--mode", "off", "-o", str(tmp_path / "r"), *args)
    assert p.returncode == 2
    assert option in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()


def test_missing_device_is_refused(tmp_path):
    p = run("record", "--device", "/dev/plugtrace-no-such-device", "--mode", "off", "-o", str(tmp_path / "r"))
    assert p.returncode == 5 and "no such device" in p.stderr and "Traceback" not in p.stderr


def test_not_a_block_device_is_refused(tmp_path):
    p = run("record", "--device", "/dev/null", "--mode", "off", "-o", str(tmp_path / "r"))
    assert p.returncode == 5 and "not a block device" in p.stderr


def test_mounted_device_is_refused(tmp_path):
    root_dev = os.stat("/").st_dev
    dev = Path(f"/sys/dev/block/{os.major(root_dev)}:{os.minor(root_dev)}/uevent")
    if not dev.exists():
        pytest.skip("the root filesystem is not on a block device here")
    name = next(line.split("=", 1)[1] for line in dev.read_text().splitlines() if line.startswith("DEVNAME="))
    p = run("record", "--device", f"/dev/{name}", "--mode", "off", "-o", str(tmp_path / "r"))
    assert p.returncode == 5 and "mounted" in p.stderr


def test_write_on_a_device_not_handed_for_writing_is_refused(tmp_path, loop_device):
    # fill a marker, run a write workload without --allow-write, check it is intact
    fd = os.open(loop_device.path, os.O_RDWR)
    os.pwrite(fd, b"KEEP" * 1024, 0)
    os.fsync(fd)
    os.close(fd)
    p = run(
        "record",
        "--device",
        loop_device.path,
        "--rw",
        "randwrite",
        "--mode",
        "off",
        "--requests",
        "100",
        "-o",
        str(tmp_path / "r"),
    )
    assert p.returncode == 5 and "--allow-write" in p.stderr
    fd = os.open(loop_device.path, os.O_RDONLY)
    assert os.pread(fd, 4096, 0) == b"KEEP" * 1024
    os.close(fd)


def test_user_device_read_only_run_works(tmp_path, loop_device):
    p = run(
        "record",
        "--device",
        loop_device.path,
        "--mode",
        "off",
        "--requests",
        "500",
        "--quiet",
        "-o",
        str(tmp_path / "r"),
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["device"]["created_by_plugtrace"] is False and meta["device"]["writable"] is False


def test_file_target_without_root(tmp_path):
    path = tmp_path / "disk.img"
    p = run(
        "record",
        "--device",
        f"file:{path}",
        "--size",
        "64M",
        "--mode",
        "off",
        "--requests",
        "2000",
        "--quiet",
        "-o",
        str(tmp_path / "r"),
    )
    if "O_DIRECT" in p.stderr or "Invalid argument" in p.stderr:
        pytest.skip("this filesystem has no O_DIRECT")
    assert p.returncode == 0, p.stderr
    assert not path.exists(), "a file we created must be removed"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("device", ["loop", "zram"])
def test_signal_mid_record_keeps_data_and_leaves_nothing_behind(tmp_path, sig, device):
    require_root()
    out = tmp_path / "run"
    loops, zrams = loop_devices(), zram_devices()
    proc = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--device",
            device,
            "--size",
            "128M",
            "--mode",
            "off",
            "--duration",
            "30",
            "--quiet",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (out / "tables" / "submits.parquet").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["summary"]["nr_requests"] > 0
    import pyarrow.parquet as pq

    # the log held in memory when the signal came is written whole: a row for every request
    assert pq.read_table(out / "tables" / "requests.parquet").num_rows == meta["summary"]["nr_requests"]
    assert loop_devices() == loops, "a loop device was left behind"
    assert zram_devices() == zrams, "a zram device was left behind"


def test_the_delay_interleaving_causes_is_measured_on_a_real_run(tmp_path):
    """Handlers of other devices run inside a polling section; each request they queue is held from
    its own handler's section end until the outer section ends, and the run says by how long."""
    require_root()
    from plugtrace.analysis import Run, df_deferrals

    out = tmp_path / "run"
    p = run(
        "record",
        "--device",
        "zram",
        "--size",
        "128M",
        "--devices",
        "3",
        "--interleave",
        "0.3",
        "--iodepth",
        "16",
        "--requests",
        "20000",
        "--mode",
        "off",
        "--quiet",
        "-o",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    r = Run.open(out)
    handlers = r.table("handlers")
    nested = handlers[handlers["section_owner"] != handlers["device"]]
    assert len(nested) > 10, "other devices' handlers ran inside a polling section"
    d = df_deferrals(r)
    other = d[d["cause"] == "other_device_section"]
    assert len(other) > 100
    assert (other["deferral_ns"] >= 0).all() and (other["deferral_ns"] <= other["wait_ns"]).all()
    assert (other["deferral_ns"] > 0).mean() > 0.5
    assert (d.loc[d["cause"] != "other_device_section", "deferral_ns"] == 0).all()


def test_loop_devices_are_filled_with_data_unless_sparse(tmp_path):
    """A sparse backing file reads holes from no storage; by default the file holds data, and the run says which."""
    require_root()
    for extra, backing in (((), "filled"), (("--sparse",), "sparse")):
        out = tmp_path / backing
        p = run(
            "record", "--device", "loop", "--size", "64M", "--mode", "off", "--requests", "2000", *extra, "-o", str(out)
        )
        assert p.returncode == 0, p.stderr
        device = json.loads((out / "meta.json").read_text())["device"]
        assert device["backing"] == backing
        assert ("fill_s" in device) == (backing == "filled")
        assert ("filled the loop device's backing file" in p.stderr) == (backing == "filled")


def test_measured_overhead_stores_both_halves_batching(tmp_path):
    """--measure-overhead stores each half's mean SQEs per enter beside its IOPS: the traced half's
    is the run's own summary, the untraced half's its own (not a copy of it)."""
    require_root()
    out = tmp_path / "run"
    p = run(
        "record", "--device", "zram", "--size", "64M", "--mode", "events", "--requests", "3000",
        "--measure-overhead", "--quiet", "-o", str(out),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    o = meta["tracing_overhead"]
    assert o["traced_iops"] == meta["summary"]["iops"]
    assert o["traced_mean_sqes_per_submit"] == meta["summary"]["mean_sqes_per_submit"]
    assert 1 <= o["untraced_mean_sqes_per_submit"] <= 64  # 2 devices x iodepth 32 at most in one enter
    assert not list(out.glob(".untraced-baseline-*")), "the baseline's scratch log is removed"
