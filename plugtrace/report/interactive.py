"""The report's zoomable plots: Bokeh figures with BokehJS inlined, so the page still opens offline.

Each figure is drawn from the same out-of-core summaries as the static plots
in `plugtrace.plots` (which stay the notebooks' default and the way to a PNG):
batch sizes, batch size over time, submit latency and the timeline window.
Every figure pans and zooms (wheel, box) and shows its numbers on hover.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..analysis import (
    DEFAULT_PERCENTILES,
    MissingTableError,
    Run,
    df_batch_sizes,
    df_latency_cdf,
    df_sqes_over_time,
    submit_latency_percentiles,
    timeline_window,
)

__all__ = ["bokeh_js", "embed", "batch_sizes", "sqes_over_time", "submit_latency", "timeline"]

_TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)  # matplotlib's tab10, as the static plots colour devices


def bokeh_js() -> str:
    """BokehJS (its core bundle only, ~1.3 MB) as inline <script> tags."""
    from bokeh.resources import Resources

    return Resources(mode="inline", components=["bokeh"]).render_js()


def embed(fig: Any) -> str:
    """A figure as the <div> and <script> the report places where its plot goes."""
    from bokeh.embed import components

    script, div = components(fig)
    return div + script


def _figure(title: str, x_label: str, y_label: str, **kw: Any) -> Any:
    from bokeh.plotting import figure

    fig = figure(title=title, tools=_TOOLS, active_scroll="wheel_zoom", sizing_mode="stretch_width", height=320, **kw)
    fig.xaxis.axis_label, fig.yaxis.axis_label = x_label, y_label
    return fig


def batch_sizes(run: Run) -> Any:
    """Fraction of submits per batch size (SQEs per io_uring_enter()), with the mean marked."""
    from bokeh.models import HoverTool
    from bokeh.models.annotations import Span

    sizes = df_batch_sizes(run)
    if sizes.empty:
        raise MissingTableError(f"{run.path}: no submit in this run")
    fig = _figure(
        f"Batch sizes — {run.name}", "SQEs per io_uring_enter() (batch size)", "fraction of submits", name="batch_sizes"
    )
    bars = fig.quad(
        left=sizes["nr_sqes"],
        right=sizes["nr_sqes_high"],
        bottom=0,
        top=sizes["fraction"],
        fill_color="#1f77b4",
        line_color="white",
    )
    bars.data_source.data["count"] = sizes["count"].to_numpy()
    mean = float((sizes["nr_sqes"] * sizes["fraction"]).sum())
    fig.add_layout(Span(location=mean + 0.5, dimension="height", line_dash="dashed", line_color="black"))
    fig.add_tools(
        HoverTool(
            renderers=[bars],
            tooltips=[("SQEs", "@left{0}–@right{0}"), ("submits", "@count{0,0}"), ("fraction", "@top{0.0000}")],
        )
    )
    fig.title.text += f" (mean {mean:.2f} SQEs)"
    return fig


def sqes_over_time(run: Run) -> Any:
    """Mean (line) and largest (shade) batch per time bin."""
    from bokeh.models import ColumnDataSource, HoverTool

    bins = df_sqes_over_time(run)
    if bins.empty:
        raise MissingTableError(f"{run.path}: no submit in this run")
    source = ColumnDataSource({column: bins[column].to_numpy() for column in bins.columns})
    fig = _figure(
        f"Batch size over time — {run.name}",
        "time since run start (ms)",
        "SQEs per io_uring_enter()",
        name="sqes_over_time",
    )
    fig.varea(
        x="t_ms", y1=0, y2="max_nr_sqes", source=source, fill_alpha=0.2, fill_color="#1f77b4", legend_label="max in bin"
    )
    line = fig.line(x="t_ms", y="mean_nr_sqes", source=source, line_color="#1f77b4", legend_label="mean in bin")
    fig.add_tools(
        HoverTool(
            renderers=[line],
            mode="vline",
            tooltips=[
                ("time", "@t_ms{0.000} ms"),
                ("submits", "@nr_submits{0,0}"),
                ("mean SQEs", "@mean_nr_sqes{0.00}"),
                ("max SQEs", "@max_nr_sqes"),
            ],
        )
    )
    return fig


def submit_latency(run: Run) -> Any:
    """Cumulative distribution of submit latency (µs, log x) with exact p50 and p99 marked."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.models.annotations import Span

    if not (run.has("submits") or run.has("enters")):
        raise MissingTableError(
            f"{run.path}: no submit or enter events (the interactive latency plot needs them; "
            "the static one draws the in-kernel histogram)"
        )
    cdf = df_latency_cdf(run)
    if cdf.empty:
        raise MissingTableError(f"{run.path}: no submit in this run")
    source = ColumnDataSource({"latency_us": cdf["latency_ns"] / 1e3, "fraction": cdf["fraction"]})
    fig = _figure(
        f"Submit latency — {run.name}",
        "submit latency (µs, log scale)",
        "fraction of submits ≤ x",
        x_axis_type="log",
        name="submit_latency",
    )
    line = fig.step(x="latency_us", y="fraction", source=source, mode="after", line_color="#1f77b4")
    us = {q: v / 1e3 for q, v in zip(DEFAULT_PERCENTILES, submit_latency_percentiles(run))}
    for q, color in ((50.0, "#2ca02c"), (99.0, "#d62728")):
        fig.add_layout(Span(location=us[q], dimension="height", line_dash="dashed", line_color=color))
    fig.title.text += f" (p50 {us[50.0]:.1f} µs, p99 {us[99.0]:.1f} µs)"
    fig.add_tools(
        HoverTool(renderers=[line], tooltips=[("latency", "@latency_us{0.0} µs"), ("fraction ≤", "@fraction{0.0000}")])
    )
    return fig


def timeline(run: Run) -> Any:
    """The timeline window of `plot_timeline`, zoomable: sections, requests, submits, enters, block issues."""
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool

    tl = timeline_window(run)
    frames = tl.frames
    if not any(t in frames for t in ("sections", "submits", "enters")):
        raise MissingTableError(f"{run.path}: no sections, submits or enters to draw a timeline of")

    def ms(ns: pd.Series) -> np.ndarray:
        return (ns.to_numpy() - run.start_ns) / 1e6

    def color(devices: pd.Series) -> list[str]:
        return [_PALETTE[int(d) % 10] if d >= 0 else "#bbbbbb" for d in devices]

    lanes: list[str] = []
    renderers = []
    fig = _figure(
        f"Timeline, {tl.window_ms:.3g} ms window — {run.name}",
        "time since run start (ms)",
        "",
        y_range=FactorRange(),
        x_range=(tl.start_ms, tl.start_ms + tl.window_ms),
        name="timeline",
    )
    sec = frames.get("sections")
    if sec is not None and len(sec):
        y = [f"tid {t} plug sections" for t in sec["tid"]]
        src = ColumnDataSource(
            {
                "left": ms(sec["begin_ns"]),
                "right": ms(sec["end_ns"]),
                "y": y,
                "owner": sec["owner"],
                "color": color(sec["owner"]),
                "duration_us": (sec["end_ns"] - sec["begin_ns"]).to_numpy() / 1e3,
            }
        )
        renderers.append(
            (
                "section",
                fig.hbar(y="y", left="left", right="right", height=0.7, color="color", alpha=0.6, source=src),
                [("section of device", "@owner"), ("duration", "@duration_us{0.0} µs")],
            )
        )
        lanes += sorted(set(y))
    req = frames.get("requests")
    if req is not None and len(req):
        y = [f"tid {t} requests queued" for t in req["tid"]]
        deferred = ((req["section_owner"] >= 0) & (req["section_owner"] != req["device"])).to_numpy()
        src = ColumnDataSource(
            {
                "x": ms(req["queue_ns"]),
                "y": y,
                "device": req["device"],
                "color": color(req["device"]),
                "wait_us": (req["submit_ns"] - req["queue_ns"]).to_numpy() / 1e3,
                "deferred": np.where(deferred, "yes, into another device's section", "no"),
            }
        )
        renderers.append(
            (
                "request",
                fig.scatter(x="x", y="y", color="color", size=6, source=src),
                [("device", "@device"), ("wait before submit", "@wait_us{0.0} µs"), ("deferred", "@deferred")],
            )
        )
        if deferred.any():
            fig.segment(
                x0=ms(req["queue_ns"][deferred]),
                x1=ms(req["submit_ns"][deferred]),
                y0=list(np.asarray(y)[deferred]),
                y1=list(np.asarray(y)[deferred]),
                line_color="#d62728",
            )
        lanes += sorted(set(y))
    for table, ts, count, label, tint in (
        ("submits", "start_ns", "nr_sqes", "submits (app)", "black"),
        ("enters", "ts_ns", "to_submit", "io_uring_enter (kernel)", "#9467bd"),
    ):
        ev = frames.get(table)
        if ev is None or not len(ev):
            continue
        ev = ev[ev[count] > 0]
        y = [f"tid {t} {label}" for t in ev["tid"]]
        src = ColumnDataSource({"x": ms(ev[ts]), "y": y, "sqes": ev[count], "size": 4 + 2 * np.sqrt(ev[count])})
        renderers.append(
            (
                table,
                fig.scatter(x="x", y="y", marker="dash", angle=np.pi / 2, size="size", color=tint, source=src),
                [("SQEs", "@sqes")],
            )
        )
        lanes += sorted(set(y))
    blk = frames.get("block_rq")
    if blk is not None and len(blk):
        lane = "block requests issued (kernel)"
        fig.scatter(
            x=ms(blk["issue_ns"]), y=[lane] * len(blk), marker="dash", angle=np.pi / 2, size=10, color="#8c564b"
        )
        lanes.append(lane)
    fig.y_range.factors = list(dict.fromkeys(lanes))[::-1]
    fig.height = 120 + 45 * len(fig.y_range.factors)
    for _, renderer, tooltips in renderers:
        fig.add_tools(
            HoverTool(
                renderers=[renderer],
                tooltips=[("time", "@x{0.000} ms"), *tooltips] if "x" in renderer.data_source.data else tooltips,
            )
        )
    return fig
