"""The report's section on a replay of a QEMU run (`plugtrace replay`), on a constructed replay run directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plugtrace.analysis import Run, df_replay_agreement
from plugtrace.report import MAX_DISAGREEMENTS, render
from plugtrace.run import RunWriter

#: five handler runs of a QEMU run: the model split arrival 1 (4 requests in one enter, QEMU's in two of 2)
#: and never submitted arrival 4's
RUNS = pd.DataFrame(
    {
        "arrival": np.arange(5, dtype=np.int32),
        "device": np.array([0, 1, 0, 1, 0], np.int32),
        "nr_requests": np.array([3, 4, 2, 1, 2], np.int32),
        "vq": np.zeros(5, np.int32),
        "cause": ["kick", "poll", "kick", "kick", "poll"],
        "begin_ns": np.array([1_000_000, 1_500_000, 2_000_000, 3_250_000, 4_000_000], np.int64),
        "measured_enters": np.array([1, 2, 1, 1, 1], np.int32),
        "measured_sqes_per_submit": [3.0, 2.0, 2.0, 1.0, 2.0],
        "predicted_enters": np.array([1, 1, 1, 1, 0], np.int32),
        "predicted_sqes_per_submit": [3.0, 4.0, 2.0, 1.0, np.nan],
        "exact": [True, False, True, True, False],
    }
)

REPLAY = {
    "source": "data/qemu-10.0",
    "source_strategy": "real QEMU 10.0.2",
    "strategy": "defer",
    "timing": "per-request",
    "device_latency": "recorded",
    "handler_runs": 5,
    "requests": 12,
    "per_run_exact": 0.6,
    "measured_mean_sqes_per_submit": 2.2,
    "predicted_mean_sqes_per_submit": 2.5,
    "mean_error_pct": 13.64,
    "not_replayed": {"outside a virtio-blk handler run": 7},
}


def replay_run(path: Path, runs: pd.DataFrame | None = RUNS, replay: Any = REPLAY) -> Run:
    """A replay run directory as `plugtrace replay` writes one, but only its `replay_runs` (None: not even
    that) and meta.json's `replay` section."""
    writer = RunWriter(path, {"config": {"strategy": "defer", "ring_setup": "plain"}, "replay": replay})
    if runs is not None:
        writer.write_table("replay_runs", runs)
    writer.close()
    return Run.open(path)


def section(html: str) -> str:
    m = re.search(r'<section class="replay".*?</section>', html, re.S)
    assert m, "the report has no replay section"
    return m.group(0)


def test_the_report_of_a_replay_shows_its_numbers_plot_and_disagreeing_runs(tmp_path):
    html = section(render([replay_run(tmp_path / "replay")], interactive=False))
    assert "Replay of a real QEMU run" in html
    assert "data/qemu-10.0 (real QEMU 10.0.2)" in html and "defer, timing per-request" in html
    assert "5 handler runs, 12 requests" in html
    assert "<th>device latency</th><td>recorded</td>" in html
    assert "<td>60.0%</td>" in html
    assert "measured 2.20 (QEMU), predicted 2.50 (model)" in html and "<td>+13.64%</td>" in html
    assert "7 requests outside a virtio-blk handler run" in html
    assert re.search(r'<img alt="Replay: measured vs predicted[^"]*" [^>]*src="data:image/png;base64,iVBOR', html)
    # the two runs the model got wrong, at their times from the first arrival (ms), and no other
    assert "2 of 5 handler runs disagree" in html
    table = html[html.index('<table class="dataframe data">') :]
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    rows = [c for c in cells if c]
    assert [r[:2] for r in rows] == [["1", "0.5"], ["4", "3"]]
    assert rows[1][-2:] == ["0", "–"], "a run the model never submitted has no predicted mean"
    limits = ("recorded ones, not", "reaction time", "notification", "polling", "completion-side", "IDE requests")
    for limit in (*limits, "merging"):
        assert limit in html


def test_the_plot_counts_handler_runs_per_measured_and_predicted_pair(tmp_path):
    agreement = df_replay_agreement(replay_run(tmp_path / "replay"))
    assert agreement["handler_runs"].sum() == 5 and agreement["exact"].sum() == 3
    never = agreement[agreement["predicted_sqes_per_submit"].isna()]
    assert never[["measured_sqes_per_submit", "handler_runs", "requests"]].values.tolist() == [[2.0, 1, 2]]


def test_at_most_the_first_disagreeing_runs_are_listed(tmp_path):
    n = MAX_DISAGREEMENTS + 5
    runs = pd.concat([RUNS.iloc[[1]]] * n, ignore_index=True)
    runs["arrival"] = np.arange(n, dtype=np.int32)
    runs["begin_ns"] = np.arange(n, dtype=np.int64) * 1000
    html = section(render([replay_run(tmp_path / "replay", runs, REPLAY | {"per_run_exact": 0.0})], interactive=False))
    assert f"{n} of {n} handler runs disagree; the first {MAX_DISAGREEMENTS} in time" in html
    assert html.count("<td>poll</td>") == MAX_DISAGREEMENTS


def test_a_replay_without_its_table_says_so_and_the_report_still_renders(tmp_path):
    html = render([replay_run(tmp_path / "replay", runs=None)], interactive=False)
    assert '<section class="replay"' not in html
    assert re.search(
        r"<b>Replay of a real QEMU run</b>: .*no &#39;replay_runs&#39; table, which comes from plugtrace replay", html
    )
    assert "</html>" in html


def test_a_replay_section_that_is_not_an_object_says_so(tmp_path):
    html = render([replay_run(tmp_path / "replay", replay=["not", "an", "object"])], interactive=False)
    assert '<section class="replay"' not in html
    assert "<b>Replay of a real QEMU run</b>: could not compute it" in html
    assert "replay section (or its not_replayed) is not an object" in html
