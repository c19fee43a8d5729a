"""Perfetto export: the trace parses back with Perfetto's own protos and holds what the run holds."""

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from plugtrace.analysis import Run
from plugtrace.export import read_back, to_perfetto
from plugtrace.synthetic import write_run

DATA = Path(__file__).resolve().parents[2] / "data"

pytest.importorskip("perfetto", reason="the perfetto package is not installed")
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent  # noqa: E402


def _parse(path):
    names, begins, ends, counters = {}, Counter(), Counter(), defaultdict(list)
    order = defaultdict(list)  # track -> event types in time order
    flows, terminating, last_ts = Counter(), Counter(), 0
    for p in read_back(path):
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            names[d.uuid] = d.name or d.thread.thread_name or d.process.process_name
            continue
        ev = p.track_event
        assert p.timestamp >= last_ts, "events are written in time order"
        last_ts = p.timestamp
        assert ev.track_uuid in names, "a track is described before its first event"
        order[ev.track_uuid].append(ev.type)
        if ev.type == TrackEvent.TYPE_SLICE_BEGIN:
            begins[names[ev.track_uuid]] += 1
            flows[names[ev.track_uuid]] += len(ev.flow_ids)
            terminating[names[ev.track_uuid]] += len(ev.terminating_flow_ids)
        elif ev.type == TrackEvent.TYPE_SLICE_END:
            ends[names[ev.track_uuid]] += 1
        elif ev.type == TrackEvent.TYPE_COUNTER:
            counters[names[ev.track_uuid]].append(ev.counter_value)
    return names, begins, ends, counters, order, flows, terminating


def _total(counter, prefix):
    return sum(n for name, n in counter.items() if name.startswith(prefix))


@pytest.mark.parametrize("name", ["defer-interleave", "defer-aggregate", "immediate"])
def test_trace_holds_every_request_section_submit_and_flow_of_a_sample_run(name, tmp_path):
    run = Run.open(DATA / name)
    summary = to_perfetto(run, tmp_path / "t.pftrace")
    names, begins, ends, counters, order, flows, terminating = _parse(tmp_path / "t.pftrace")
    req = run.table("requests")
    done = req[req["complete_ns"] >= 0]
    assert _total(begins, "device ") == len(done) == summary["requests"]
    assert _total(begins, "engine thread") == len(run.table("sections"))
    assert begins["submits (engine)"] == len(run.table("submits"))
    if run.has("enters"):
        assert begins["io_uring_enter (kernel)"] == len(run.table("enters"))
    if run.has("block_rq"):
        assert _total(begins, "block in flight") == len(run.table("block_rq"))
        assert 0 < _total(terminating, "block in flight") <= len(done)
    assert begins == ends
    # on every track, slices are whole and never overlap: begin, end, begin, end ...
    for track, types in order.items():
        slice_types = [t for t in types if t != TrackEvent.TYPE_COUNTER]
        assert slice_types == [TrackEvent.TYPE_SLICE_BEGIN, TrackEvent.TYPE_SLICE_END] * (len(slice_types) // 2), names[
            track
        ]
    # a flow per request, continued by the submit that carried it
    assert _total(flows, "device ") == len(done)
    assert flows["submits (engine)"] == int((done["submit_ns"] >= 0).sum())
    inflight = np.asarray(counters["requests in flight"])
    assert inflight[-1] == 0 and inflight.max() <= run.config["iodepth"] * run.config["devices"] + 2
    assert sorted(counters["SQEs per submit"]) == sorted(run.table("submits")["nr_sqes"].tolist())


def test_a_window_exports_part_of_a_run(tmp_path):
    run = Run.open(write_run(tmp_path / "run", strategy="defer", requests=5000, devices=2))
    whole = to_perfetto(run, tmp_path / "all.pftrace")
    part = to_perfetto(run, tmp_path / "part.pftrace", window_ms=(1.0, 3.0))
    req = run.table("requests")
    t_ms = (req["queue_ns"] - run.start_ns) / 1e6
    assert part["requests"] == int(((t_ms >= 1) & (t_ms < 3) & (req["complete_ns"] >= 0)).sum()) > 0
    assert part["bytes"] < whole["bytes"]


def test_cli_export(tmp_path):
    out = tmp_path / "x.pftrace"
    done = subprocess.run(
        [sys.executable, "-m", "plugtrace", "export", str(DATA / "defer"), "--perfetto", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "requests" in done.stdout and out.stat().st_size > 0
    bad = subprocess.run(
        [sys.executable, "-m", "plugtrace", "export", str(DATA / "defer")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--perfetto" in bad.stderr


@pytest.mark.parametrize("kernel", ["events", "aggregate"])
def test_a_traced_programs_run_exports_what_it_has(tmp_path, kernel):
    """A traced program (fio, QEMU) has no engine log: its kernel events, or nothing to draw but counters."""
    run = Run.open(write_run(tmp_path / "fio", strategy="immediate", app=False, kernel=kernel, requests=3000))
    summary = to_perfetto(run, tmp_path / "fio.pftrace")
    names, begins, ends, counters, *_ = _parse(tmp_path / "fio.pftrace")
    assert summary["requests"] == summary["sections"] == summary["submits"] == 0
    if kernel == "events":
        assert begins["io_uring_enter (kernel)"] == len(run.table("enters")) > 0
        submitting = run.table("enters")["to_submit"]
        assert sorted(counters["SQEs per submit"]) == sorted(submitting[submitting > 0].tolist())
    else:
        assert summary["packets"] == 1  # only the process track: an aggregate-only run has no events
