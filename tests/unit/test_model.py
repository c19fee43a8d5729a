"""Calibrating the model on a recorded QEMU run (the shipped data/qemu-10.0 sample)."""

import json
from pathlib import Path

import numpy as np
import pytest

from plugtrace.engine.emulation import GuestTiming
from plugtrace.errors import UsageError
from plugtrace.model import CALIBRATION_VERSION, calibrate, load_calibration
from plugtrace.replay import read_source

DATA = Path(__file__).resolve().parents[2] / "data"


def test_a_calibration_measures_the_run_it_reads():
    cal = calibrate(DATA / "qemu-10.0")
    src = read_source(DATA / "qemu-10.0")
    t = cal["timing"]
    GuestTiming.from_dict(t)  # usable as it is
    assert cal["version"] == CALIBRATION_VERSION and cal["design"] == "defer"
    assert cal["load"] == {"disks": 2, "iodepth": 32, "rw": "randread", "bs": 4096}
    # the guest's pace: the median gap between two requests of one handler run, as replayed; the
    # handler's own cost is the model's (the run's uprobes slowed QEMU's)
    gaps = src.requests.groupby("arrival")["queue_at_ns"].diff().dropna()
    assert t["request_ns"] == int(np.median(gaps)) > 0 and t["iothread_request_ns"] == 0
    # the device's latency: quantiles of the recorded one, from its least to its most
    held = src.requests["hold_ns"][src.requests["hold_ns"] > 0]
    assert len(t["latency_ns"]) == 21 and t["latency_ns"] == sorted(t["latency_ns"])
    assert t["latency_ns"][0] == held.min() and t["latency_ns"][-1] == held.max()
    assert t["latency_ns"][10] == int(np.quantile(held, 0.5))
    # the reaction: a distribution, its median the one shown
    q = t["reaction_quantiles_ns"]
    assert len(q) == 21 and q == sorted(q) and q[0] <= t["reaction_ns"] <= q[-1] and t["reaction_ns"] > 0
    assert cal["measured"]["mean_sqes_per_submit"] == round(src.measured_mean, 4)
    assert 0 < cal["measured"]["reactions"] < cal["measured"]["handler_runs"]


def test_a_run_that_is_not_qemus_cannot_be_calibrated_from():
    with pytest.raises(UsageError, match="not a real QEMU run"):
        calibrate(DATA / "defer")


def test_a_calibration_file_is_checked(tmp_path):
    good = tmp_path / "cal.json"
    good.write_text(json.dumps(calibrate(DATA / "qemu-7.2")))
    assert load_calibration(good)["design"] == "plug"
    for text, why in (
        ("{", "not JSON"),
        (json.dumps({"version": 99, "timing": {}}), "not a calibration"),
        (json.dumps({"version": CALIBRATION_VERSION, "timing": {"reaction_ns": -5}}), "not usable"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UsageError, match=why):
            load_calibration(bad)
    with pytest.raises(UsageError, match="cannot read"):
        load_calibration(tmp_path / "missing.json")


def test_slow_motion_stretches_every_time_of_a_calibration_alike():
    from plugtrace.model import slowed

    timing = {
        "reaction_ns": 1000,
        "reaction_quantiles_ns": [10, 20, 30],
        "request_ns": 7,
        "iothread_request_ns": 0,
        "latency_ns": [100, 200],
    }
    assert slowed(timing, 1.0) is timing
    assert slowed(timing, 10.0) == {
        "reaction_ns": 10_000,
        "reaction_quantiles_ns": [100, 200, 300],
        "request_ns": 70,
        "iothread_request_ns": 0,
        "latency_ns": [1000, 2000],
    }
    GuestTiming.from_dict(slowed(timing, 2.5))  # still a valid timing
