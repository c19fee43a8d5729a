"""The report's section on a prediction (`plugtrace model predict`), on a constructed run directory."""

import re

from plugtrace.analysis import Run
from plugtrace.report import render
from plugtrace.run import RunWriter

TIMING = {
    "reaction_ns": 1_344_000,
    "reaction_quantiles_ns": [1_000 * i for i in range(21)],
    "request_ns": 15_700,
    "iothread_request_ns": 0,
    "latency_ns": [100_000 + 10_000 * i for i in range(21)],
}
PREDICTION = {
    "calibration": "runs/cal-10.0.json",
    "source": "data/qemu-10.0",
    "source_strategy": "real QEMU 10.0.2",
    "timing": TIMING,
    "load": {"iodepth": 64, "disks": 1, "strategy": "defer"},
}


def prediction_run(path, prediction=PREDICTION):
    writer = RunWriter(path, {"config": {"strategy": "defer", "guest_timing": TIMING}, "prediction": prediction})
    writer.close()
    return Run.open(path)


def test_a_prediction_says_what_it_was_calibrated_on_and_with_what_timing(tmp_path):
    html = render([prediction_run(tmp_path / "p")], interactive=False)
    m = re.search(r'<section class="prediction".*?</section>', html, re.S)
    assert m, "the report has no prediction section"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(0)))
    assert "This run is not a measurement" in text
    assert "data/qemu-10.0 (real QEMU 10.0.2)" in text and "1 disks × iodepth 64, defer" in text
    assert "median 1,344.0 µs; p5 1.0 µs, p50 10.0 µs, p95 19.0 µs" in text
    assert "guest pace (between two requests) 15.7 µs" in text
    assert "p5 110.0 µs, p50 200.0 µs, p95 290.0 µs" in text
    assert "What the model does not capture" in text


def test_a_prediction_section_that_is_not_an_object_says_so(tmp_path):
    html = render([prediction_run(tmp_path / "p", prediction={"timing": "fast"})], interactive=False)
    assert '<section class="prediction"' not in html
    assert "<b>Prediction from a calibration</b>: could not compute it" in html and "</html>" in html
