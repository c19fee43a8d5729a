"""The report and the summary card say when a run's numbers are partly the tracer's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plugtrace.analysis import Run
from plugtrace.report import render, render_summary

DATA = Path(__file__).resolve().parents[2] / "data"


def _run_with_ratio(tmp_path: Path, ratio: float | None) -> Run:
    """A recorded sample run, copied, its stored traced ÷ untraced ratio set to `ratio` (None: not measured)."""
    run_dir = tmp_path / "run"
    shutil.copytree(DATA / "defer-aggregate", run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["tracing_overhead"] = (
        None if ratio is None else {"untraced_iops": 80000.0, "traced_iops": 80000.0 * ratio, "ratio": ratio}
    )
    (run_dir / "meta.json").write_text(json.dumps(meta))
    return Run.open(run_dir)


@pytest.mark.parametrize("page", [render_summary, lambda run: render([run], interactive=False)])
def test_a_run_slowed_by_its_tracer_says_so_with_its_ratio(tmp_path, page):
    html = page(_run_with_ratio(tmp_path, 0.5631))
    assert 'class="banner overhead"' in html
    assert "kept 0.56 of its untraced IOPS" in html
    assert "45,048 traced vs 80,000 untraced" in html


@pytest.mark.parametrize("ratio", [0.9, 1.0125, None])
def test_no_warning_when_tracing_cost_little_or_was_not_measured(tmp_path, ratio):
    assert 'class="banner overhead"' not in render_summary(_run_with_ratio(tmp_path, ratio))


def _run_with_config(tmp_path: Path, **config) -> Run:
    run_dir = tmp_path / "run"
    shutil.copytree(DATA / "defer-aggregate", run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["config"].update(config)
    (run_dir / "meta.json").write_text(json.dumps(meta))
    return Run.open(run_dir)


@pytest.mark.parametrize(
    "config, labelled",
    [
        ({"devices": 2, "ide_devices": 1, "ide_thread": "shared"}, True),
        ({"devices": 2, "ide_devices": 1, "ide_thread": "main"}, False),
        ({"devices": 2, "ide_devices": 0, "ide_thread": "shared"}, False),  # no IDE to pull in
        ({"devices": 0, "ide_devices": 2, "ide_thread": "shared"}, False),  # no virtio-blk section to join
    ],
)
def test_ide_sharing_the_iothreads_is_labelled_as_not_qemu(tmp_path, config, labelled):
    html = render_summary(_run_with_config(tmp_path, **config))
    assert ('class="banner layout"' in html) == labelled
    if labelled:
        assert "IDE runs in the main loop and cannot" in html
