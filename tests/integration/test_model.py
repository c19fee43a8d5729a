"""plugtrace model as a user runs it: calibrate from the shipped QEMU sample, predict a load it never saw
on a real loop device (over memory), and get an ordinary run directory marked as a prediction."""

import json
import subprocess
from pathlib import Path

import pandas as pd

from tests.helpers import PLUGTRACE, loop_devices, require_root

DATA = Path(__file__).resolve().parents[2] / "data"


def predict(cal: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`plugtrace model predict CAL` at 1 disk x iodepth 4 for half a second, into `out`."""
    return subprocess.run(
        [
            *PLUGTRACE,
            "model",
            "predict",
            str(cal),
            "--iodepth",
            "4",
            "--disks",
            "1",
            "--duration",
            "0.5",
            *extra,
            "-o",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_calibrate_then_predict_a_load_the_calibration_never_saw(tmp_path):
    require_root()
    cal = tmp_path / "cal.json"
    p = subprocess.run(
        [*PLUGTRACE, "model", "calibrate", str(DATA / "qemu-10.0"), "-o", str(cal)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "guest reaction" in p.stdout and " us" in p.stdout and "device latency per request" in p.stdout
    timing = json.loads(cal.read_text())["timing"]
    before = loop_devices()
    out = tmp_path / "pred"
    p = predict(cal, out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert loop_devices() == before, "predict left a loop device behind"
    assert "prediction from" in p.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["prediction"]["load"] == {"iodepth": 4, "disks": 1, "strategy": "defer"}
    assert meta["prediction"]["timing"] == timing == meta["config"]["guest_timing"]
    assert meta["config"]["ring_setup"] == "plain" and meta["device"]["backing_file"].startswith("/dev/shm/")
    requests = pd.read_parquet(out / "tables" / "requests.parquet")
    submits = pd.read_parquet(out / "tables" / "submits.parquet")
    assert len(requests) == meta["summary"]["nr_requests"] > 0 and int(submits["ret"].sum()) == len(requests)
    # a closed loop of 4: never more in one enter; each request took at least the least calibrated latency
    assert submits["nr_sqes"].max() <= 4
    took = (requests["complete_ns"] - requests["submit_ns"]).to_numpy()
    assert (took >= timing["latency_ns"][0]).all()


def test_predict_refuses_what_is_not_a_calibration(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[]")
    p = subprocess.run(
        [*PLUGTRACE, "model", "predict", str(bad), "-o", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert p.returncode != 0 and "not a calibration" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()


def test_predict_in_slow_motion_stretches_the_guest_and_the_device(tmp_path):
    require_root()
    from plugtrace.model import calibrate, slowed

    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(calibrate(DATA / "qemu-10.0")))
    timing = json.loads(cal.read_text())["timing"]
    out = tmp_path / "slow"
    p = predict(cal, out, "--slow-motion", "5")
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    pred = meta["prediction"]
    assert pred["slow_motion"] == 5.0 and pred["timing"] == timing  # the calibration as it was
    assert meta["config"]["guest_timing"] == slowed(timing, 5.0)  # what ran
    assert pred["iops_at_qemu_speed"] == round(meta["summary"]["iops"] * 5, 1)
    assert "in slow motion x5" in p.stdout
    requests = pd.read_parquet(out / "tables" / "requests.parquet")
    took = (requests["complete_ns"] - requests["submit_ns"]).to_numpy()
    assert (took >= 5 * timing["latency_ns"][0]).all()  # each request held at least 5 x the least latency
