"""QEMU beside the model: per-run QEMU tables, the arrivals that set QEMU's batch sizes, and replays of a
QEMU run on the model (`plugtrace replay`), handler run by handler run."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..run import Run
from .common import required_tables, requires
from .runs import Runs, _as_runs, df_compare


def _qemu_calls(run: Run) -> dict[str, int]:
    """A real QEMU run's call counts from its uprobes (all devices), {} for other runs."""
    if not run.has("qemu_counters"):
        return {}
    t = run.table("qemu_counters")
    t = t[t["device"] == -1]
    return dict(zip(t["name"], t["value"].astype(int)))


def df_model_vs_qemu(runs: Iterable[Run] | Runs) -> pd.DataFrame:
    """Model runs (`plugtrace record`) and real QEMU runs (`plugtrace qemu`) of one guest load,
    one row per run: `df_compare`'s columns plus ``kind`` (``model`` / ``real QEMU``),
    ``sections_per_request`` (outermost plug / defer sections per guest request: the model's
    sections log, QEMU's uprobes), ``polls_in_sections`` (``aio_poll()`` calls made inside a
    section: the interleaving case), ``requests`` (guest requests), and ``wait_p50_ns`` /
    ``wait_p99_ns``: how long a request waited from being queued to the io_uring driver until
    the submit that carried it began (the model's request log; a QEMU run's ``qemu_requests``,
    events mode). NaN where a run cannot say."""
    runs = list(_as_runs(runs))
    df = df_compare(runs)
    kinds, per_request, polls, requests, waits = [], [], [], [], []
    for run in runs:
        log = "qemu_requests" if run.config.get("qemu") else "requests"
        if run.has(log):
            t = run.table(log, ["queue_ns", "submit_ns"])
            wait = (t["submit_ns"] - t["queue_ns"])[t["submit_ns"] >= 0].to_numpy()
            waits.append(np.percentile(wait, [50, 99]) if len(wait) else (np.nan, np.nan))
        else:
            waits.append((np.nan, np.nan))
        calls = _qemu_calls(run)
        n = run.summary.get("workload_requests", run.summary.get("nr_requests"))
        if run.config.get("qemu"):
            kinds.append("real QEMU")
            # a count bpftrace never incremented is not printed: zero, when the probes ran at all
            zero = 0 if calls else np.nan
            sections, nested = calls.get("sections", zero), calls.get("aio_poll_in_section", zero)
        else:
            kinds.append("model")
            if run.has("sections"):
                t = run.table("sections", ["nr_nested_polls"])
                sections, nested = len(t), int(t["nr_nested_polls"].sum())
            else:
                sections = nested = np.nan
        requests.append(n if n is not None else np.nan)
        per_request.append(sections / n if n else np.nan)
        polls.append(nested)
    df.insert(1, "kind", kinds)
    df["requests"], df["sections_per_request"], df["polls_in_sections"] = requests, per_request, polls
    df["wait_p50_ns"], df["wait_p99_ns"] = [w[0] for w in waits], [w[1] for w in waits]
    return df


@requires("sections", "qemu_sections")
def df_qemu_sections(run: Run) -> pd.DataFrame:
    """A real QEMU run's outermost sections: `sections` with ``kind`` (``handler`` /
    ``completion`` / ``other``), ``nr_nested_sections`` and ``nr_completions`` (guest requests
    completed in it) from `qemu_sections`, and ``duration_ns``."""
    df = run.table("sections").merge(run.table("qemu_sections"), on="section_id", how="left", validate="1:1")
    df["duration_ns"] = df["end_ns"] - df["begin_ns"]
    return df


@requires("handlers", "qemu_handlers")
def df_qemu_handlers(run: Run) -> pd.DataFrame:
    """A real QEMU run's `virtio_blk_handle_vq()` runs: `handlers` with ``vq``, ``cause``
    (``kick`` / ``poll``), ``nr_requests`` (popped), ``nr_submitted`` and ``opened_section_id``
    from `qemu_handlers` (written row for row)."""
    h, q = run.table("handlers"), run.table("qemu_handlers")
    assert len(h) == len(q), "qemu_handlers is written row for row with handlers"
    return pd.concat([h, q.drop(columns=["tid", "begin_ns"])], axis=1)


def _qemu_hist(run: Run, name: str) -> pd.DataFrame:
    if not run.has("qemu_histograms"):
        return pd.DataFrame(columns=["low", "high", "count"])
    t = run.table("qemu_histograms")
    return t[t["name"] == name]


@requires("qemu_histograms")
def df_qemu_requests_per_handler(run: Run) -> pd.DataFrame:
    """Requests one ``virtio_blk_handle_vq()`` run popped: ``nr_requests``, ``cause`` (``kick`` /
    ``poll`` from `qemu_handlers` in events mode, else ``all``, from the in-kernel histogram),
    ``count`` (handler runs)."""
    if run.has("qemu_handlers"):
        h = run.table("qemu_handlers", ["cause", "nr_requests"])
        h["cause"] = h["cause"].astype(str)
        return h.groupby(["nr_requests", "cause"]).size().rename("count").reset_index()
    t = _qemu_hist(run, "requests_per_handler")
    return pd.DataFrame({"nr_requests": t["low"].to_numpy(), "cause": "all", "count": t["count"].to_numpy()})


def df_qemu_arrivals(runs: Iterable[Run] | Runs) -> pd.DataFrame:
    """What set a real QEMU run's batches, one row per run (aggregate or events mode): ``handler_runs``,
    ``kicks`` / ``poll_hits`` (handler runs the guest's notification / the iothread's polling
    started), ``poll_share``, ``requests_per_handler`` (mean requests popped per run),
    ``notifications_per_completion`` (guest notifications / requests completed), ``wait_p50_ns``
    (a request from ``luring_co_submit()`` to the kernel taking it: exact from `qemu_requests` in
    events mode, else the upper bound of the median's power-of-two bucket) and ``wait_from``.
    NaN where the run's probes could not say."""
    rows = []
    for run in _as_runs(runs):
        if not run.config.get("qemu"):
            continue
        c = _qemu_calls(run)
        runs_ = c.get("virtio_blk_handle_vq", np.nan)
        kicks, polls = float(c.get("handler_runs_kick", 0)), float(c.get("handler_runs_poll", 0))
        if np.isnan(runs_):  # no handler probes (--qemu-probes mark or off): nothing to say of arrivals
            kicks = polls = np.nan
        per = _qemu_hist(run, "requests_per_handler")
        n = per["count"].sum()
        wait, source = np.nan, ""
        if run.has("qemu_requests"):
            t = run.table("qemu_requests", ["queue_ns", "submit_ns"])
            w = (t["submit_ns"] - t["queue_ns"])[t["submit_ns"] >= 0]
            wait, source = (float(w.median()), "events") if len(w) else (np.nan, "")
        if source == "":
            h = _qemu_hist(run, "wait_before_submit_ns").sort_values("low")
            if h["count"].sum():
                at = int(np.searchsorted(h["count"].cumsum().to_numpy(), h["count"].sum() / 2))
                wait, source = float(h["high"].iloc[at]), "histogram"
        rows.append(
            {
                "run": run.name,
                "strategy": run.strategy,
                "handler_runs": runs_,
                "kicks": kicks,
                "poll_hits": polls,
                "poll_share": polls / (kicks + polls) if kicks + polls > 0 else np.nan,
                "requests_per_handler": (per["low"] * per["count"]).sum() / n if n else np.nan,
                "notifications_per_completion": (
                    c.get("guest_notifications", 0) / c["virtqueue_push"] if c.get("virtqueue_push") else np.nan
                ),
                "wait_p50_ns": wait,
                "wait_from": source,
            }
        )
    return pd.DataFrame(rows)


@requires("replay_runs")
def df_replay_runs(run: Run) -> pd.DataFrame:
    """A replay's handler runs (`plugtrace replay`), one row per arrival, as `replay_runs`: ``arrival``,
    ``device``, ``nr_requests``, ``vq``, ``cause``, ``begin_ns`` (the QEMU run's clock),
    ``measured_enters`` / ``measured_sqes_per_submit`` (QEMU's io_uring_enter()s that carried its
    requests, and their mean SQEs), ``predicted_enters`` / ``predicted_sqes_per_submit`` (the model's;
    NaN when it never submitted them), ``exact``; and ``at_ns``, when it arrived, from the first arrival."""
    df = run.table("replay_runs")
    df["cause"] = df["cause"].astype(str)
    df.insert(df.columns.get_loc("begin_ns") + 1, "at_ns", df["begin_ns"] - df["begin_ns"].min())
    return df


@requires(*required_tables(df_replay_runs))
def df_replay_agreement(run: Run) -> pd.DataFrame:
    """A replay's handler runs counted by their measured and predicted mean SQEs per io_uring_enter(), one
    row per pair: ``measured_sqes_per_submit`` (QEMU), ``predicted_sqes_per_submit`` (the model; NaN: it
    never submitted them), ``handler_runs``, ``requests`` and ``exact`` (of those handler runs, how many
    were predicted exactly: the same enters and mean)."""
    df = df_replay_runs(run)
    return (
        df.groupby(["measured_sqes_per_submit", "predicted_sqes_per_submit"], dropna=False)
        .agg(handler_runs=("arrival", "size"), requests=("nr_requests", "sum"), exact=("exact", "sum"))
        .reset_index()
    )
