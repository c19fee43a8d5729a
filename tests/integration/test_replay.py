"""plugtrace replay as a user runs it: a recorded QEMU run's arrivals driven through the model on a real
loop device, compared run by run."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plugtrace.replay import read_source
from tests.helpers import PLUGTRACE, loop_devices, require_root

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("sample, strategy", [("qemu-7.2", "device-plug"), ("qemu-10.0", "defer")])
def test_replay_of_a_qemu_sample_gives_every_request_and_a_comparison_per_handler_run(tmp_path, sample, strategy):
    require_root()
    out = tmp_path / "replay"
    before = loop_devices()
    p = subprocess.run(
        [*PLUGTRACE, "replay", str(DATA / sample), "--quiet", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "handler runs predicted exactly" in p.stdout
    assert loop_devices() == before, "replay left a loop device behind"
    meta = json.loads((out / "meta.json").read_text())
    source = json.loads((DATA / sample / "meta.json").read_text())
    replay = meta["replay"]
    assert meta["status"] == "complete" and meta["config"]["strategy"] == strategy == replay["strategy"]
    assert meta["config"]["ring_setup"] == "plain"  # QEMU's ring, as any comparison with QEMU
    # with recorded latency the model's device is a loop device over memory: never the slower one
    assert meta["device"]["kind"] == "loop" and meta["device"]["backing_file"].startswith("/dev/shm/")
    assert replay["timing"] == "per-request"
    # exact counts: the model ran every workload request QEMU did, each arrival once
    n = source["summary"]["qemu_workload_requests"]
    assert meta["summary"]["nr_requests"] == replay["requests"] == n
    requests = pd.read_parquet(out / "tables" / "requests.parquet")
    assert len(requests) == n and (requests["submit_ns"] >= 0).all()
    runs = pd.read_parquet(out / "tables" / "replay_runs.parquet")
    assert len(runs) == replay["handler_runs"] and int(runs["nr_requests"].sum()) == n
    assert (runs["predicted_enters"] >= 1).all() and (runs["measured_enters"] >= 1).all()
    assert replay["per_run_exact"] == round(float(runs["exact"].mean()), 4)
    # every model submit carries requests of the replay and no other
    submits = pd.read_parquet(out / "tables" / "submits.parquet")
    assert int(submits["ret"].sum()) == n
    # the requests are QEMU's: the same lengths, per device
    src = pd.read_parquet(DATA / sample / "tables" / "qemu_requests.parquet").sort_values("req_id").tail(n)
    assert sorted(requests["len_bytes"]) == sorted(src["length_bytes"])
    # each request took at least as long as QEMU's device took for it (the samples carry the kernel's
    # io_uring tracepoints): then the k-th shortest replayed latency is at least the k-th shortest recorded
    assert replay["device_latency"] == "recorded"
    held = np.sort(read_source(DATA / sample).requests["hold_ns"].to_numpy())
    took = np.sort((requests["complete_ns"] - requests["submit_ns"]).to_numpy())
    assert len(held) == len(took) and (held > 0).mean() > 0.99 and (took >= held).all()


def test_replay_refuses_a_run_that_is_not_qemus(tmp_path):
    p = subprocess.run(
        [*PLUGTRACE, "replay", str(DATA / "defer"), "-o", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert p.returncode != 0 and "not a real QEMU run" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x").exists()


def test_replay_on_a_loop_device_in_a_directory_that_is_not_there_says_so(tmp_path):
    require_root()
    before = loop_devices()
    missing = tmp_path / "no-such-dir"
    p = subprocess.run(
        [*PLUGTRACE, "replay", str(DATA / "qemu-10.0"), "--device", f"loop:{missing}", "-o", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert p.returncode != 0 and "is not a directory" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x").exists() and loop_devices() == before
