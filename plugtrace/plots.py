"""Plots of runs: `plot_*` functions beside the `df_*` ones in `plugtrace.analysis`.

Each takes a Run (or the DataFrame of the matching `df_*` function) and an
optional matplotlib Axes, draws on it and returns it. Without an Axes a new
figure is made with pyplot, which is what notebooks want; the HTML report
passes Axes of pyplot-free Figures instead.

Large runs are summarised out of core before drawing (time bins, histogram
bins, a time window), so a plot of a 100M-event run needs no more memory than
one of a small run; percentiles and other numbers shown on plots are exact and
come from all the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# matplotlib picks its backend itself (Agg where there is no display; the
# inline one in notebooks); the report draws on pyplot-free Figures
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from .analysis import (
    CAUSES,
    DEFAULT_PERCENTILES,
    MissingTableError,
    Run,
    Runs,
    df_batch_sizes,
    df_compare,
    df_interleaving_delays,
    df_latency_cdf,
    df_qemu_arrivals,
    df_qemu_requests_per_handler,
    df_replay_agreement,
    df_sqes_over_time,
    df_thread_batching,
    df_wait_histogram,
    required_tables,
    requires,
    submit_latency_percentiles,
    timeline_window,
)

__all__ = [
    "plot_batch_sizes",
    "plot_sqes_over_time",
    "plot_submit_latency_cdf",
    "plot_timeline",
    "plot_deferral_delays",
    "plot_interleaving_delays",
    "plot_compare",
    "plot_qemu_arrivals",
    "plot_replay",
    "plot_model_fidelity",
    "plot_thread_batching",
    "plot_multiqueue",
]

CAUSE_COLORS = {
    "none": "tab:gray",
    "own_section": "tab:blue",
    "other_device_section": "tab:red",
    "other_thread": "tab:purple",
}


def _axes(ax: Axes | None, figsize: tuple[float, float] = (7, 4)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _device_color(device: int) -> Any:
    return plt.get_cmap("tab10")(int(device) % 10)


def _title(ax: Axes, what: str, data: Run | pd.DataFrame) -> None:
    ax.set_title(f"{what} — {data.name}" if isinstance(data, Run) else what)


def _frame(data: Run | pd.DataFrame, df_function: Any, **kwargs: Any) -> pd.DataFrame:
    return df_function(data, **kwargs) if isinstance(data, Run) else data


@requires(*required_tables(df_batch_sizes))
def plot_batch_sizes(data: Run | pd.DataFrame, ax: Axes | None = None, source: str = "auto") -> Axes:
    """Bar chart of SQEs per io_uring_enter(): fraction of submits (y) per batch size (x, SQEs).

    `data`: a Run or a `df_batch_sizes` frame. The dashed line marks the mean.
    """
    sizes = _frame(data, df_batch_sizes, source=source)
    ax = _axes(ax)
    width = (sizes["nr_sqes_high"] - sizes["nr_sqes"]).clip(lower=1)
    ax.bar(sizes["nr_sqes"], sizes["fraction"], width=width * 0.9, align="edge", color="tab:blue")
    mean = float((sizes["nr_sqes"] * sizes["fraction"]).sum())
    ax.axvline(mean + 0.45, color="black", linestyle="--", label=f"mean {mean:.2f} SQEs")
    ax.set_xlabel("SQEs per io_uring_enter() (batch size)")
    ax.set_ylabel("fraction of submits")
    ax.legend()
    _title(ax, "Batch sizes", data)
    return ax


@requires(*required_tables(df_sqes_over_time))
def plot_sqes_over_time(
    data: Run | pd.DataFrame, ax: Axes | None = None, bins: int = 300, start_ns: int | None = None
) -> Axes:
    """SQEs per io_uring_enter() over time: mean (line) and max (shade) per time bin.

    `data`: a Run or a `df_submits` frame. x: time in ms from `start_ns` (ns),
    by default the run's start, or a frame's first submit.
    """
    bins_df = df_sqes_over_time(data, bins=bins, start_ns=start_ns)
    ax = _axes(ax)
    if len(bins_df):
        mid = bins_df["t_ms"].to_numpy()
        ax.fill_between(mid, 0, bins_df["max_nr_sqes"], color="tab:blue", alpha=0.2, step="mid", label="max in bin")
        ax.plot(mid, bins_df["mean_nr_sqes"], color="tab:blue", drawstyle="steps-mid", label="mean in bin")
        ax.legend(loc="upper right")
    ax.set_xlabel("time since run start (ms)")
    ax.set_ylabel("SQEs per io_uring_enter()")
    ax.set_ylim(bottom=0)
    _title(ax, "Batch size over time", data)
    return ax


@requires(("submits", "enters", "histograms"))  # more than df_latency_cdf: it can draw the histogram
def plot_submit_latency_cdf(data: Run | pd.DataFrame, ax: Axes | None = None, source: str = "auto") -> Axes:
    """Cumulative distribution of submit latency (x: µs, log scale) with p50 and p99 marked.

    `data`: a Run or a `df_submits` frame. A Run with neither `submits` nor
    `enters` (aggregate mode) is drawn from the in-kernel `enter_latency_ns`
    histogram, as a step at each power-of-two bucket.
    """
    ax = _axes(ax)
    if isinstance(data, Run) and not (data.has("submits") or data.has("enters")):
        h = data.table("histograms")
        h = h[h["name"] == "enter_latency_ns"].sort_values("low")
        if h.empty:
            raise MissingTableError(
                f"{data.path}: no submit latency in this aggregate-mode run (it is measured "
                "by the enters probe: record with --probes enters,...)"
            )
        cum = np.cumsum(h["count"].to_numpy()) / h["count"].sum()
        x_us, y = h["high"].to_numpy() / 1e3, cum
        p50, p99 = (x_us[min(np.searchsorted(cum, q), len(cum) - 1)] for q in (0.5, 0.99))
        ax.step(x_us, y, where="post", color="tab:blue", label="in-kernel histogram (bucket bounds)")
    else:
        cdf = df_latency_cdf(data, source=source)
        us = {q: v / 1e3 for q, v in zip(DEFAULT_PERCENTILES, submit_latency_percentiles(data, source=source))}
        p50, p99 = us[50.0], us[99.0]
        ax.step(cdf["latency_ns"] / 1e3, cdf["fraction"], where="post", color="tab:blue", label="submits")
    for value, name, color in ((p50, "p50", "tab:green"), (p99, "p99", "tab:red")):
        ax.axvline(value, color=color, linestyle="--", label=f"{name} {value:.1f} µs")
    ax.set_xscale("log")
    ax.set_xlabel("submit latency (µs, log scale)")
    ax.set_ylabel("fraction of submits ≤ x")
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    _title(ax, "Submit latency", data)
    return ax


class _Lanes:
    """Horizontal lanes of a timeline, created in the order first used."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def __call__(self, label: str) -> int:
        if label not in self.labels:
            self.labels.append(label)
        return self.labels.index(label)


@requires(("sections", "submits", "enters"))
def plot_timeline(
    run: Run, ax: Axes | None = None, start_ms: float | None = None, window_ms: float | None = None
) -> Axes:
    """What each thread did in a short window, app log and kernel events on one time axis.

    Lanes per thread: plug sections (bars coloured by the device whose handler
    opened them), queued requests (dots coloured by device; a red line to its
    submit for each request deferred into another device's section), the
    engine's submits and the kernel's io_uring_enter() calls (marker area ∝
    SQEs), and, when traced, block requests issued. x: ms from the run's start.
    By default the window holds about 40 submits around the first deferral.
    """
    tl = timeline_window(run, start_ms, window_ms)
    start_ms, window_ms, rows = tl.start_ms, tl.window_ms, tl.frames

    def ms(ns: Any) -> Any:
        return (np.asarray(ns) - run.start_ns) / 1e6

    ax = _axes(ax, (11, 5))
    lane = _Lanes()
    devices: set[int] = set()
    sections = rows.get("sections")
    if sections is not None:
        for (tid, owner), s in sections.groupby(["tid", "owner"]):
            devices.add(owner)
            y = lane(f"tid {tid} plug sections")
            spans = list(zip(ms(s["begin_ns"]), (s["end_ns"] - s["begin_ns"]) / 1e6))
            ax.broken_barh(spans, (y - 0.35, 0.7), color=_device_color(owner), alpha=0.6)
    requests = rows.get("requests")
    if requests is not None:
        for tid, r in requests.groupby("tid"):
            y = lane(f"tid {tid} requests queued")
            devices.update(r["device"].unique().tolist())
            ax.scatter(ms(r["queue_ns"]), np.full(len(r), y), c=[_device_color(d) for d in r["device"]], s=12)
            deferred = r[(r["section_owner"] >= 0) & (r["section_owner"] != r["device"])]
            ax.hlines(
                np.full(len(deferred), y),
                ms(deferred["queue_ns"]),
                ms(deferred["submit_ns"]),
                color="tab:red",
                linewidth=1,
            )
    for table, columns, label in (
        ("submits", ["tid", "start_ns", "nr_sqes"], "submits (app)"),
        ("enters", ["tid", "ts_ns", "to_submit"], "io_uring_enter (kernel)"),
    ):
        events = rows.get(table)
        if events is None:
            continue
        for tid, e in events[events[columns[2]] > 0].groupby("tid"):
            y = lane(f"tid {tid} {label}")
            ax.scatter(
                ms(e[columns[1]]),
                np.full(len(e), y),
                s=8 * e[columns[2]],
                marker="|",
                color="black" if table == "submits" else "tab:purple",
            )
    block = rows.get("block_rq")
    if block is not None and len(block):
        ax.scatter(
            ms(block["issue_ns"]),
            np.full(len(block), lane("block requests issued (kernel)")),
            marker="|",
            color="tab:brown",
            s=40,
        )
    ax.set_yticks(range(len(lane.labels)), lane.labels)
    ax.set_ylim(len(lane.labels) - 0.5, -0.5)
    ax.set_xlim(start_ms, start_ms + window_ms)
    ax.set_xlabel("time since run start (ms)")
    handles = [
        Line2D([], [], color=_device_color(d), marker="s", linestyle="", label=f"device {d}")
        for d in sorted(devices)
        if d >= 0
    ]
    handles.append(Line2D([], [], color="tab:red", label="wait of a request deferred into another device's section"))
    ax.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=min(len(handles), 4), fontsize="small"
    )
    _title(ax, f"Timeline, {window_ms:.3g} ms window", run)
    return ax


@requires(*required_tables(df_wait_histogram))
def plot_deferral_delays(data: Run | pd.DataFrame, ax: Axes | None = None, bins: int = 60) -> Axes:
    """Distribution of how long requests waited before submission (x: µs, log), one curve per cause.

    `data`: a Run or a `df_deferrals` frame. Causes: not in a section, in its own
    device's section, deferred into another device's section (aio_poll
    interleaving); the legend gives each one's count and median wait.
    """
    hist, stats = df_wait_histogram(data, bins=bins)
    ax = _axes(ax)
    for cause in CAUSES:
        mine = hist[hist["cause"] == cause]
        if not len(mine):
            continue
        s = stats[stats["cause"] == cause].iloc[0]
        edges = np.append(mine["low_us"].to_numpy(), mine["high_us"].to_numpy()[-1])
        ax.stairs(
            mine["count"].to_numpy(),
            edges,
            color=CAUSE_COLORS[cause],
            linewidth=1.5,
            label=f"{cause.replace('_', ' ')}: {int(s['count']):,} requests, median {s['p50_wait_ns'] / 1e3:.1f} µs",
        )
    ax.set_xscale("log")
    ax.set_xlabel("wait from queued to submitted (µs, log scale)")
    ax.set_ylabel("requests per bin")
    ax.legend(fontsize="small")
    _title(ax, "Wait before submission, by cause", data)
    return ax


@requires("handlers")  # more than df_interleaving_delays: without handlers there is no delay to draw
def plot_interleaving_delays(data: Run | pd.DataFrame, ax: Axes | None = None, bins: int = 50) -> Axes:
    """How long aio_poll() interleaving held back each request it deferred (x: µs, log), per device.

    `data`: a Run or a `df_interleaving_delays` frame. The delay runs from the
    end of the request's own handler section to its submit (see
    `df_interleaving_delays`); the legend gives each device's count, median
    and p99 delay and their sum.
    """
    d = _frame(data, df_interleaving_delays)
    d = d[d["deferral_ns"].notna()]
    ax = _axes(ax)
    delay_us = np.maximum(d["deferral_ns"].to_numpy(), 1) / 1e3
    if len(d):
        edges = np.logspace(np.log10(delay_us.min()), np.log10(delay_us.max()) + 1e-9, bins + 1)
        for device, mine in d.groupby("device"):
            us = np.maximum(mine["deferral_ns"].to_numpy(), 1) / 1e3
            counts, _ = np.histogram(us, bins=edges)
            p50, p99 = np.percentile(mine["deferral_ns"].to_numpy(), [50, 99]) / 1e3
            ax.stairs(
                counts,
                edges,
                color=_device_color(device),
                linewidth=1.5,
                label=f"device {device}: {len(mine):,} requests, median {p50:.1f} µs, p99 {p99:.1f} µs, "
                f"{mine['deferral_ns'].sum() / 1e6:.2f} ms in all",
            )
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no request was deferred into another device's section", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_xlabel("delay caused by interleaving: own section end to submit (µs, log scale)")
    ax.set_ylabel("requests per bin")
    _title(ax, "Delay caused by aio_poll() interleaving", data)
    return ax


def plot_compare(data: Sequence[Run] | pd.DataFrame, axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """Strategies side by side: IOPS, mean SQEs per submit, p50/p99 submit latency (µs).

    `data`: Runs or a `df_compare` frame; `axes`: three Axes, or None for a new
    figure. Returns the three Axes.
    """
    c = data if isinstance(data, pd.DataFrame) else df_compare(data)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    labels = [run if strategy in run else f"{run} ({strategy})" for run, strategy in zip(c["run"], c["strategy"])]
    x = np.arange(len(c))
    ax_iops, ax_batch, ax_lat = axes
    ax_iops.bar(x, c["iops"], color="tab:blue")
    ax_iops.set_ylabel("IOPS (completed requests / s)")
    ax_iops.set_title("Throughput")
    ax_batch.bar(x, c["mean_sqes_per_submit"], color="tab:green")
    ax_batch.set_ylabel("mean SQEs per io_uring_enter()")
    ax_batch.set_title("Batch size")
    ax_lat.bar(x - 0.2, c["submit_p50_ns"] / 1e3, width=0.4, label="p50", color="tab:olive")
    ax_lat.bar(x + 0.2, c["submit_p99_ns"] / 1e3, width=0.4, label="p99", color="tab:red")
    ax_lat.set_ylabel("submit latency (µs)")
    ax_lat.set_title("Submit latency")
    ax_lat.legend()
    for ax in axes:
        ax.set_xticks(x, labels, fontsize="small", rotation=20, ha="right")
    return axes


@requires(*required_tables(df_qemu_requests_per_handler))
def plot_qemu_arrivals(run: Run, ax: Axes | None = None) -> Axes:
    """A real QEMU run's arrivals: handler runs (y) per requests popped in the run (x), stacked by
    why the handler ran (the guest's kick, the iothread's poll; events mode), with the guest
    notifications per completed request in the legend."""
    per = df_qemu_requests_per_handler(run)
    if per.empty:
        raise MissingTableError(
            f"{run.path}: no handler runs recorded (--qemu-probes {run.config.get('qemu_probes', '?')}: "
            "--qemu-probes on or --mode events records them)"
        )
    ax = _axes(ax)
    colors = {"kick": "tab:blue", "poll": "tab:orange", "all": "tab:gray"}
    bottom = pd.Series(0, index=sorted(per["nr_requests"].unique()), dtype=float)
    for cause, rows in per.groupby("cause"):
        counts = rows.set_index("nr_requests")["count"].reindex(bottom.index, fill_value=0)
        ax.bar(bottom.index, counts, bottom=bottom, color=colors.get(str(cause), "tab:gray"), label=str(cause))
        bottom += counts
    a = df_qemu_arrivals([run])
    if len(a) and not np.isnan(a["notifications_per_completion"].iloc[0]):
        ax.plot([], [], " ", label=f"{a['notifications_per_completion'].iloc[0]:.3f} notifications / completion")
    ax.set_xlabel("requests popped per virtio_blk_handle_vq() run")
    ax.set_ylabel("handler runs")
    ax.legend(fontsize=8)
    _title(ax, "Arrivals", run)
    return ax


@requires(*required_tables(df_replay_agreement))
def plot_replay(data: Run | pd.DataFrame, ax: Axes | None = None) -> Axes:
    """A replay of a QEMU run on the model (`plugtrace replay`): one point per measured (x, QEMU's) and
    predicted (y, the model's) mean SQEs per io_uring_enter() of a handler run, sized and coloured by how
    many handler runs share it. On the dashed y = x line the model predicted QEMU's batch; the legend gives
    the share of handler runs predicted exactly and counts those the model never submitted."""
    df = _frame(data, df_replay_agreement)
    ax = _axes(ax)
    shown = df.dropna(subset=["predicted_sqes_per_submit"])
    x, y = shown["measured_sqes_per_submit"].to_numpy(), shown["predicted_sqes_per_submit"].to_numpy()
    top = float(np.nanmax([1.0, *x, *y])) * 1.06 + 0.5  # room for the biggest points
    ax.plot([0, top], [0, top], "--", color="gray", lw=1, zorder=1, label="y = x: as QEMU")
    if len(shown):
        counts = shown["handler_runs"].to_numpy()
        points = ax.scatter(
            x,
            y,
            s=16 + 240 * np.sqrt(counts / counts.max()),
            c=counts,
            cmap="viridis",
            norm=LogNorm(vmin=1, vmax=max(2, counts.max())),
            alpha=0.85,
            edgecolors="black",
            linewidths=0.3,
            zorder=3,
        )
        bar = ax.figure.colorbar(points, ax=ax, label="handler runs")
        bar.formatter, bar.minorformatter = LogFormatter(), LogFormatter(labelOnlyBase=False)  # 1, 10, 2, 5: no 10^x
    total = int(df["handler_runs"].sum())
    if total:
        ax.plot([], [], " ", label=f"{df['exact'].sum() / total:.1%} of {total:,} handler runs exact")
    never = int(df.loc[df["predicted_sqes_per_submit"].isna(), "handler_runs"].sum())
    if never:
        ax.plot([], [], " ", label=f"{never:,} never submitted by the model (not shown)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("measured SQEs per io_uring_enter (QEMU)")
    ax.set_ylabel("predicted SQEs per io_uring_enter (model)")
    ax.legend(fontsize=8)
    _title(ax, "Replay", data)
    return ax


def plot_model_fidelity(grid: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Predicted (y, the calibrated model) vs measured (x, real QEMU) mean SQEs per io_uring_enter(),
    one point per grid point of `python -m bench.bench_model_fidelity` (its `rows`: `qemu`, `iodepth`,
    `disks`, `measured`, `predicted`; a `calibration_point` is drawn hollow), on log axes with the dashed
    y = x line and the +-10% band the benchmark's target allows."""
    ax = _axes(ax, (6.2, 5.2))
    df = grid.dropna(subset=["measured", "predicted"])
    lo = float(min(df["measured"].min(), df["predicted"].min(), 1.0)) * 0.8 if len(df) else 0.8
    hi = float(max(df["measured"].max(), df["predicted"].max(), 2.0)) * 1.25 if len(df) else 2.0
    line = np.geomspace(lo, hi, 50)
    ax.plot(line, line, "--", color="gray", lw=1, label="y = x: as QEMU")
    ax.fill_between(line, line * 0.9, line * 1.1, color="gray", alpha=0.15, label="within 10%")
    markers = {"7.2": "o", "10.0": "s"}
    for (qemu, disks), part in df.groupby(["qemu", "disks"], sort=True):
        color = _device_color(int(disks) - 1)
        for _, r in part.iterrows():
            hollow = bool(r.get("calibration_point", False))
            ax.scatter(
                r["measured"],
                r["predicted"],
                marker=markers.get(str(qemu), "^"),
                s=50,
                facecolors="none" if hollow else color,
                edgecolors=color,
                zorder=3,
            )
            ax.annotate(
                f"d{int(r['iodepth'])}",
                (r["measured"], r["predicted"]),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=7,
            )
        ax.scatter([], [], marker=markers.get(str(qemu), "^"), color=color, label=f"QEMU {qemu}, {int(disks)} disk(s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured SQEs per io_uring_enter (QEMU)")
    ax.set_ylabel("predicted SQEs per io_uring_enter (model)")
    ax.set_title("Calibrated model vs QEMU (hollow: the calibration's own load; dN: iodepth N)")
    ax.legend(fontsize=7)
    return ax


def plot_thread_batching(data: Sequence[Run] | pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Mean SQEs per io_uring_enter() of each thread of each run (`df_thread_batching`): one group of
    bars per run, one bar per thread, labelled with its enters."""
    df = data if isinstance(data, pd.DataFrame) else df_thread_batching(Runs(list(data)))
    ax = _axes(ax, (7.5, 4))
    runs = list(dict.fromkeys(df["run"]))
    width = 0.8 / max(1, int(df.groupby("run").size().max()) if len(df) else 1)
    for i, run in enumerate(runs):
        part = df[df["run"] == run].reset_index(drop=True)
        for j, r in part.iterrows():
            x = i + (j - (len(part) - 1) / 2) * width
            ax.bar(x, r["mean_sqes_per_enter"] or 0, width * 0.9, color=_device_color(int(j)))
            ax.annotate(str(r["thread"]), (x, r["mean_sqes_per_enter"] or 0), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(runs, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("mean SQEs per io_uring_enter (per thread)")
    ax.set_title("Batching per thread")
    return ax


def plot_multiqueue(rows: pd.DataFrame, axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """`python -m bench.bench_multiqueue`'s points (its `rows`: `run`, `queues`, `threads`, `iops`,
    `sqes_per_enter`): mean SQEs per enter, and IOPS relative to each run's one queue on one thread
    (a TCG guest's IOPS and the model's are not comparable in absolute terms), per queues x threads."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    ax_sqes, ax_iops = axes
    points = sorted({(int(q), int(t)) for q, t in zip(rows["queues"], rows["threads"])})
    runs = list(dict.fromkeys(rows["run"]))
    width = 0.8 / max(1, len(runs))
    for k, run in enumerate(runs):
        part = rows[rows["run"] == run]
        by = {(int(r.queues), int(r.threads)): r for r in part.itertuples()}
        base = by.get((1, 1))
        xs = [i + (k - (len(runs) - 1) / 2) * width for i, p in enumerate(points) if p in by]
        ax_sqes.bar(xs, [by[p].sqes_per_enter for p in points if p in by], width * 0.9, label=run,
                    color=_device_color(k))  # fmt: skip
        rel = [by[p].iops / base.iops if base is not None and base.iops else np.nan for p in points if p in by]
        ax_iops.bar(xs, rel, width * 0.9, label=run, color=_device_color(k))
    labels = [f"{q} queue{'s' if q > 1 else ''}\n{t} thread{'s' if t > 1 else ''}" for q, t in points]
    for ax in axes:
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.legend(fontsize=7)
    ax_sqes.set_ylabel("mean SQEs per io_uring_enter")
    ax_sqes.set_title("Batch size")
    ax_iops.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax_iops.set_ylabel("IOPS / IOPS at 1 queue, 1 thread")
    ax_iops.set_title("Throughput, relative")
    return axes
