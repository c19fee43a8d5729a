"""Calibrating the closed-loop model from one real QEMU run, and predicting loads it never saw.

`calibrate(run)` reads a real QEMU run recorded in events mode (`plugtrace qemu --mode events`,
with the kernel's io_uring tracepoints) and measures how long the guest and the machine took:

* `latency_ns`: the device's latency per request, from the submitting `io_uring_enter()` to the
  kernel's completion (`uring_requests`), as 21 quantiles (0, 5, ..., 100%);
* `request_ns`: the guest's pace: the median gap between two requests of one handler run reaching
  QEMU's io_uring driver (`qemu_requests.queue_ns`; under TCG tens of microseconds: the guest adds
  requests one at a time while the handler pops them);
* `reaction_ns`: from the first completion of a device's requests after one of its handler runs
  began to the next handler run of that device: QEMU reaping and notifying, and the guest reacting
  to the notification with new requests (median, and `reaction_quantiles_ns`, 21 quantiles, from
  which the model draws each reaction: a guest that is awake reacts in microseconds, an idle TCG
  guest in milliseconds);
* `iothread_request_ns`: 0: what QEMU's handler spends per request cannot be told from the guest's
  pace in an events-mode run, whose uprobes on QEMU's handler path slow it (by several times the
  batch sizes, `bench_qemu` measures it); the model's own handler cost is its own, real one.

`predict(calibration, ...)` runs the model's own closed-loop guests with that timing
(`engine.emulation.GuestTiming`) on a real device and writes an ordinary run directory whose
meta.json has a `prediction` section (the calibration, where it came from, and the load), so
`report` and `diff` set a prediction beside a measurement. Held out means held out: the calibration
reads one run; nothing of the loads it predicts is fitted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .replay import DESIGN_STRATEGY, read_source

__all__ = ["calibrate", "predict", "load_calibration", "CALIBRATION_VERSION"]

CALIBRATION_VERSION = 1
#: the device-latency quantiles a calibration keeps
_QUANTILES = np.linspace(0.0, 1.0, 21)


def calibrate(path: str | os.PathLike) -> dict[str, Any]:
    """The model's timing measured on the real QEMU run at `path` (an events-mode `plugtrace qemu` run)."""
    source = read_source(path)  # the same checks and joins as a replay, and the recorded latencies
    if source.no_latency:
        raise UsageError(f"{source.path}: cannot calibrate the device's latency: {source.no_latency}")
    reqs, runs = source.requests, source.runs
    held = reqs["hold_ns"][reqs["hold_ns"] > 0]  # the workload's requests, as replayed
    if held.empty:
        raise UsageError(f"{source.path}: no request with a recorded device latency")

    # the guest's pace: gaps between a run's requests reaching QEMU's driver
    gaps = reqs.groupby("arrival")["queue_at_ns"].diff().dropna()
    pace_ns = int(np.median(gaps)) if len(gaps) else 0

    # the reaction: first completion after a handler run began -> the device's next handler run
    reactions = []
    for dev, r in runs.groupby("device"):
        begins = r["at_ns"].to_numpy()
        c = np.sort(reqs.loc[reqs["device"] == dev, "done_at_ns"].to_numpy())
        for prev, nxt in zip(begins[:-1], begins[1:]):
            i = np.searchsorted(c, prev, side="right")
            if i < len(c) and c[i] < nxt:
                reactions.append(nxt - c[i])
    if not reactions:
        raise UsageError(f"{source.path}: no handler run followed a completion: nothing to measure a reaction on")
    cfg = source.meta.get("config", {})
    return {
        "version": CALIBRATION_VERSION,
        "source": str(source.path),
        "source_strategy": cfg.get("strategy"),
        "design": source.design,
        "load": {
            "disks": int(cfg.get("devices", 1)),
            "iodepth": int(cfg.get("iodepth", 32)) * int(cfg.get("jobs", 1)),
            "rw": cfg.get("rw"),
            "bs": int(reqs["length_bytes"].median()),
        },
        "timing": {
            "reaction_ns": int(np.median(reactions)),
            "reaction_quantiles_ns": [int(v) for v in np.quantile(reactions, _QUANTILES)],
            "request_ns": pace_ns,
            "iothread_request_ns": 0,
            "latency_ns": [int(v) for v in np.quantile(held.to_numpy(), _QUANTILES)],
        },
        "measured": {
            "handler_runs": int(len(runs)),
            "requests": int(len(reqs)),
            "mean_sqes_per_submit": round(source.measured_mean, 4),
            "reactions": len(reactions),
        },
    }


def load_calibration(path: str | os.PathLike) -> dict[str, Any]:
    """A calibration file written by `plugtrace model calibrate`, checked."""
    try:
        cal = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the calibration: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not a calibration (not JSON: {exc.msg})") from None
    if not isinstance(cal, dict) or cal.get("version") != CALIBRATION_VERSION or "timing" not in cal:
        raise UsageError(
            f"{path}: not a calibration written by plugtrace model calibrate (version {CALIBRATION_VERSION})"
        )
    from .engine.emulation import GuestTiming

    try:
        GuestTiming.from_dict(cal["timing"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: its timing is not usable: {exc}") from None
    return cal


def slowed(timing: dict, k: float) -> dict:
    """A calibration's timing with every time K times longer (`predict`'s slow motion)."""
    if k == 1.0:
        return timing
    out = dict(timing)
    for name in ("reaction_ns", "request_ns", "iothread_request_ns"):
        out[name] = int(round(timing.get(name, 0) * k))
    for name in ("latency_ns", "reaction_quantiles_ns"):
        out[name] = [int(round(v * k)) for v in timing.get(name, [])]
    return out


def predict(
    calibration: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    iodepth: int | None = None,
    disks: int | None = None,
    strategy: str | None = None,
    duration: float = 2.0,
    device: str = "loop:/dev/shm",
    size: str | int | None = None,
    quiet: bool = False,
    command_line: list[str] | None = None,
    slow_motion: float = 1.0,
) -> Any:
    """Predict what QEMU does on a load (`iodepth` per disk, `disks` on one iothread, `strategy`: the
    design's, device-plug for QEMU 7.2, defer for 10.0), from `calibration` (a file of `calibrate`'s):
    the model's guests with its timing, on a real device (default: a loop device over memory, so the
    calibrated latency sets the pace). Returns `recording.record()`'s result; meta.json has `prediction`.

    `slow_motion` K > 1 runs the calibrated guest and device K times slower (every time of the timing
    times K), so the model's own cost per request and per handler run (Python's, more than QEMU's C)
    weighs K times less against them. Batch sizes depend on those times' ratios; the run's IOPS are K
    times lower than the prediction's (`prediction.iops_at_qemu_speed`)."""
    from .recording import record

    if not 1.0 <= slow_motion <= 1000.0:
        raise UsageError(f"--slow-motion: between 1 and 1000, not {slow_motion}")
    cal = load_calibration(calibration)
    load = cal.get("load", {})
    iodepth = int(iodepth or load.get("iodepth", 16))
    disks = int(disks or load.get("disks", 1))
    if strategy is None:
        strategy = DESIGN_STRATEGY.get(cal.get("design") or "")
        if strategy is None:
            raise UsageError(f"{calibration}: the calibrated QEMU's design is unknown: give --strategy")
    bs = int(load.get("bs", 4096))
    if size is None:
        size = max(disks * (256 << 20), 64 << 20)
    prediction = {
        "calibration": str(calibration),
        "source": cal.get("source"),
        "source_strategy": cal.get("source_strategy"),
        "timing": cal["timing"],
        "load": {"iodepth": iodepth, "disks": disks, "strategy": strategy},
        "slow_motion": slow_motion,
    }
    timing = slowed(cal["timing"], slow_motion)

    def finish(summary: dict) -> dict:
        iops = summary.get("iops")
        return {"prediction": prediction | {"iops_at_qemu_speed": round(iops * slow_motion, 1) if iops else None}}

    return record(
        output,
        device=device,
        size=size,
        quiet=quiet,
        command_line=command_line,
        strategy=strategy,
        devices=disks,
        threads=1,
        iodepth=iodepth,
        bs=-(-bs // 4096) * 4096,
        rw=str(load.get("rw") or "randread"),
        duration_s=duration,
        ring_setup="plain",
        verify=False,
        guest_timing=timing,
        finish_extra=finish,
    )
