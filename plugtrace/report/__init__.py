"""HTML reports: one self-contained file per report, no network needed to view it.

`render(runs)` returns the page `plugtrace report` writes; `render_summary(run)`
is the compact single-run view Jupyter shows for a `Run` (`plugtrace` registers
it with IPython). Both fill the same Jinja2 template. Plots are PNGs inlined as base64 data URIs and the CSS
is inline, so the file can be mailed or attached to a bug as it is.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import jinja2
import pandas as pd
import pyarrow as pa
from matplotlib.figure import Figure

from .._version import __version__
from ..analysis import (
    DEFAULT_NOISE,
    MissingTableError,
    Run,
    Runs,
    df_compare,
    df_deferral_stats,
    df_diff,
    df_latency_percentiles,
    df_qemu_arrivals,
    df_queue_stats,
    df_replay_runs,
    df_thread_batching,
)
from ..plots import (
    plot_batch_sizes,
    plot_compare,
    plot_deferral_delays,
    plot_interleaving_delays,
    plot_qemu_arrivals,
    plot_replay,
    plot_sqes_over_time,
    plot_submit_latency_cdf,
    plot_thread_batching,
    plot_timeline,
)
from . import interactive as interactive_plots
from .interactive import embed

__all__ = ["render", "render_summary"]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("plugtrace", "report/templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)

#: plot resolution; 90 dpi keeps six plots per run well under a megabyte
_DPI = 90


@dataclass
class _Plot:
    title: str
    png_base64: str = ""
    #: an interactive figure's <div> and <script> (instead of a PNG)
    html: str = ""


@dataclass
class _Replay:
    """A replay's section (`plugtrace replay`): what was replayed, and how well the model predicted QEMU."""

    #: (what, value) rows: the source, the strategy, the share predicted exactly, the means, what was left out
    numbers: list[tuple[str, str]]
    png_base64: str
    #: the handler runs the model did not predict exactly, as HTML (empty when it predicted all), and a caption
    disagreements: str
    disagreements_note: str


@dataclass
class _RunView:
    """Everything the template shows about one run."""

    run: Run
    anchor: str
    plots: list[_Plot] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)
    not_measured: list[tuple[str, str]] = field(default_factory=list)
    replay: _Replay | None = None
    #: a prediction's (what, value) rows: the calibration, the load, the timing with units
    prediction: list[tuple[str, str]] | None = None


def _png(draw: Callable[[Figure], Any], figsize: tuple[float, float]) -> str:
    fig = Figure(figsize=figsize, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _us(df: pd.DataFrame) -> pd.DataFrame:
    """Nanosecond columns shown in microseconds, which is the scale these latencies live at."""
    ns = [c for c in df.columns if c.endswith("_ns")]
    out = df.copy()
    out[ns] = out[ns] / 1e3
    return out.rename(columns={c: c[:-3] + "_µs" for c in ns})


def _html_table(df: pd.DataFrame) -> str:
    return _us(df).to_html(
        index=False,
        classes="data",
        border=0,
        na_rep="–",
        float_format=lambda v: f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}",
    )


def _diff_table(diff: pd.DataFrame) -> str:
    """`df_diff` as HTML, its verdict in words (the CLI's `plugtrace diff` prints the same)."""
    verdict = diff["beyond_noise"].map({True: "CHANGED", False: "within noise"}).fillna("no verdict: a run is partial")
    shown = diff.assign(verdict=verdict)
    return shown.drop(columns="beyond_noise").to_html(
        index=False,
        classes="data",
        border=0,
        na_rep="–",
        float_format=lambda v: f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}",
    )


#: what reading a table whose columns are not what the format says raises (a corrupt or foreign run)
_CORRUPT_TABLE = (ValueError, TypeError, KeyError, pa.ArrowException, duckdb.Error)


def _add(view: _RunView, title: str, compute: Callable[[], Any]) -> Any:
    """Run one analysis for the report; a missing table becomes a 'could not measure' line, and one
    that cannot be read as the format says, a line saying so: the rest of the report still renders."""
    try:
        return compute()
    except MissingTableError as exc:
        view.not_measured.append((title, str(exc)))
    except _CORRUPT_TABLE as exc:
        view.not_measured.append(
            (
                title,
                f"could not compute it from this run's tables ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); a table may be corrupt",
            )
        )
    return None


#: disagreeing handler runs a replay's section lists, the first ones in time
MAX_DISAGREEMENTS = 20


def _number(value: Any, spec: str, unit: str = "") -> str:
    """`value` formatted by `spec`, then `unit`; a dash when meta.json has no number there."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec) + unit
    return "–"


def _replay_section(run: Run) -> _Replay:
    """The section of a replay run: meta.json's `replay` numbers, the measured-vs-predicted plot, and the
    handler runs the model got wrong (`replay_runs`)."""
    replay = run.meta.get("replay") or {}
    not_replayed = (replay.get("not_replayed") or {}) if isinstance(replay, dict) else None
    if not isinstance(not_replayed, dict):
        raise TypeError("meta.json's replay section (or its not_replayed) is not an object")
    numbers = [
        ("source", f"{replay.get('source', '–')} ({replay.get('source_strategy') or 'unknown strategy'})"),
        ("model's strategy", f"{replay.get('strategy', '–')}, timing {replay.get('timing', '–')}"),
        ("device latency", str(replay.get("device_latency", "live (the replay predates recorded latency)"))),
        (
            "replayed",
            f"{_number(replay.get('handler_runs'), ',')} handler runs, {_number(replay.get('requests'), ',')} requests",
        ),
        ("handler runs predicted exactly", _number(replay.get("per_run_exact"), ".1%")),
        (
            "mean SQEs per io_uring_enter()",
            f"measured {_number(replay.get('measured_mean_sqes_per_submit'), '.2f')} (QEMU), "
            f"predicted {_number(replay.get('predicted_mean_sqes_per_submit'), '.2f')} (model)",
        ),
        ("error of the predicted mean", _number(replay.get("mean_error_pct"), "+.2f", "%")),
        ("not replayed", "; ".join(f"{_fmt(n)} requests {why}" for why, n in not_replayed.items()) or "none"),
    ]
    runs = df_replay_runs(run)
    wrong = runs[~runs["exact"]]
    note = f"{len(wrong):,} of {len(runs):,} handler runs disagree"
    if len(wrong) > MAX_DISAGREEMENTS:
        note += f"; the first {MAX_DISAGREEMENTS} in time"
    shown = wrong.head(MAX_DISAGREEMENTS).assign(at_ms=lambda d: d["at_ns"] / 1e6)
    columns = [
        "arrival",
        "at_ms",
        "device",
        "vq",
        "cause",
        "nr_requests",
        "measured_enters",
        "measured_sqes_per_submit",
        "predicted_enters",
        "predicted_sqes_per_submit",
    ]
    return _Replay(
        numbers=numbers,
        png_base64=_png(lambda fig: plot_replay(run, ax=fig.subplots()), (5.8, 4.6)),
        disagreements=_html_table(shown[columns]) if len(wrong) else "",
        disagreements_note=note,
    )


def _micro(ns: Any) -> str:
    return f"{ns / 1e3:,.1f} µs" if isinstance(ns, (int, float)) and not isinstance(ns, bool) else "–"


def _prediction_section(run: Run) -> list[tuple[str, str]]:
    """A prediction's numbers (`plugtrace model predict`): what it was calibrated on, the load, the timing."""
    pred = run.meta.get("prediction")
    if not isinstance(pred, dict) or not isinstance(pred.get("timing"), dict):
        raise TypeError("meta.json's prediction section (or its timing) is not an object")
    t, load = pred["timing"], pred.get("load") or {}
    lat, react = list(t.get("latency_ns") or []), list(t.get("reaction_quantiles_ns") or [])

    def spread(q: list) -> str:
        return f"p5 {_micro(q[1])}, p50 {_micro(q[len(q) // 2])}, p95 {_micro(q[-2])}" if len(q) >= 3 else "–"

    return [
        ("calibrated on", f"{pred.get('source', '–')} ({pred.get('source_strategy') or 'unknown'})"),
        ("calibration file", str(pred.get("calibration", "–"))),
        (
            "predicted load",
            f"{load.get('disks', '–')} disks × iodepth {load.get('iodepth', '–')}, {load.get('strategy', '–')}",
        ),
        ("guest reaction (completion → next handler run)", f"median {_micro(t.get('reaction_ns'))}; {spread(react)}"),
        ("guest pace (between two requests)", _micro(t.get("request_ns"))),
        ("handler cost per request (added)", _micro(t.get("iothread_request_ns"))),
        ("device latency per request", spread(lat)),
    ]


def _run_view(run: Run, index: int, plots: bool = True, interactive: bool = False) -> _RunView:
    view = _RunView(run, anchor=f"run-{index}")
    if not plots:
        return view

    def plot(
        title: str,
        draw: Callable[[Any], Any],
        figsize: tuple[float, float] = (6.3, 3.5),
        zoomable: Callable[[Run], Any] | None = None,
    ) -> None:
        if interactive and zoomable is not None:
            html = _add(view, title, lambda: embed(zoomable(run)))
            if html is not None:
                view.plots.append(_Plot(title, html=html))
            return
        png = _add(view, title, lambda: _png(lambda fig: draw(fig.subplots()), figsize))
        if png is not None:
            view.plots.append(_Plot(title, png))

    # Every plot and table summarises the run out of core: a report of a run of any size holds no table.
    plot("Batch sizes", lambda ax: plot_batch_sizes(run, ax=ax), zoomable=interactive_plots.batch_sizes)
    if run.has("submits") or run.has("enters"):
        plot(
            "Batch size over time",
            lambda ax: plot_sqes_over_time(run, ax=ax),
            zoomable=interactive_plots.sqes_over_time,
        )
    plot(
        "Submit latency",
        lambda ax: plot_submit_latency_cdf(run, ax=ax),
        zoomable=interactive_plots.submit_latency if run.has("submits") or run.has("enters") else None,
    )
    plot("Timeline", lambda ax: plot_timeline(run, ax=ax), figsize=(11, 4.5), zoomable=interactive_plots.timeline)
    if run.has("requests"):
        plot("Wait before submission, by cause", lambda ax: plot_deferral_delays(run, ax=ax))
        plot("Delay caused by aio_poll() interleaving", lambda ax: plot_interleaving_delays(run, ax=ax))
        view.tables.append(("Deferrals by cause", _html_table(df_deferral_stats(run))))
    else:
        _add(view, "Deferrals", lambda: run.require("requests", user="the deferral analysis"))
    if run.config.get("qemu") and run.has("qemu_histograms"):  # a real QEMU: what set its batches
        plot("Arrivals: requests per handler run", lambda ax: plot_qemu_arrivals(run, ax=ax))
        view.tables.append(("What set the batches (QEMU)", _html_table(df_qemu_arrivals([run]))))
    if run.meta.get("virtqueues") or (run.meta.get("summary") or {}).get("queues"):
        _multiqueue(view, run, plot)
    latency = _add(view, "Latency percentiles", lambda: df_latency_percentiles(run))
    if latency is not None:
        view.tables.append(("Latency percentiles", _html_table(latency)))
    if run.has("replay_runs") or run.meta.get("replay"):  # a replay whose table is unreadable says so
        view.replay = _add(view, "Replay of a real QEMU run", lambda: _replay_section(run))
    if run.meta.get("prediction"):
        view.prediction = _add(view, "Prediction from a calibration", lambda: _prediction_section(run))
    return view


def _multiqueue(view: _RunView, run: Run, plot: Callable[..., None]) -> None:
    """A run with several queues per device: batching per thread and per queue, and what held whom."""
    plot("SQEs per enter, per thread", lambda ax: plot_thread_batching([run], ax=ax))
    threads = _add(view, "Batching per thread", lambda: df_thread_batching([run]).drop(columns="run"))
    if threads is not None:
        view.tables.append(("Batching per thread", _html_table(threads)))
    if run.has("requests"):
        queues = _add(view, "Batching per queue", lambda: df_queue_stats(run).drop(columns="run"))
        if queues is not None:
            view.tables.append(("Batching per queue (requests another thread's plug held: other_thread)",
                                _html_table(queues)))  # fmt: skip
    elif (run.meta.get("summary") or {}).get("queues"):
        view.tables.append(("Queues (guest CPUs, QEMU thread, guest requests)",
                            _html_table(pd.DataFrame(run.meta["summary"]["queues"]))))  # fmt: skip


def _flat(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested meta.json sections as (dotted key, value) rows."""
    rows: list[tuple[str, str]] = []
    for key, value in (mapping or {}).items():
        if isinstance(value, dict) and value:
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", _fmt(value)))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if all(not isinstance(v, dict) for v in value) else str(value)
    return "–" if value is None else str(value)


_env.filters["fmt"] = _fmt
_env.filters["flat"] = _flat


def _status_note(run: Run) -> str | None:
    """Why this run's numbers cover only part of it, or None when they cover all of it."""
    notes = {
        "recording": "the recording never finished (the writer was killed or is still running)",
        "interrupted": "the run was interrupted; data up to the interruption is kept",
        "failed": f"the run failed: {run.meta.error or 'no reason recorded'}",
        "incomplete": "some tables could not be finished (e.g. disk full): " + ", ".join(run.meta.damaged_tables),
    }
    found = list(run.corrupt.values())  # set aside on opening: each analysis needing one says so
    if run.status in notes:
        found.append(notes[run.status])
    elif run.status != "complete":
        found.append(f"unknown status {run.status!r}")
    return "; ".join(found) or None


#: a stored traced ÷ untraced IOPS ratio below this makes the run's numbers partly the tracer's
OVERHEAD_WARNING_BELOW = 0.9


def _overhead_note(run: Run) -> str | None:
    """A warning when tracing slowed this run (its stored traced ÷ untraced IOPS ratio is below
    `OVERHEAD_WARNING_BELOW`), or None (no ratio stored, or tracing cost it little)."""
    overhead = run.meta.tracing_overhead
    ratio = overhead.get("ratio")
    if not isinstance(ratio, (int, float)) or ratio >= OVERHEAD_WARNING_BELOW:
        return None
    return (
        f"tracing slowed this run: it kept {ratio:.2f} of its untraced IOPS "
        f"({_fmt(overhead.get('traced_iops'))} traced vs {_fmt(overhead.get('untraced_iops'))} untraced). "
        "Its rates and latencies are partly the tracer's; record in aggregate mode for how fast"
    )


def _layout_note(run: Run) -> str | None:
    """A label for a model run whose IDE devices shared the iothreads with virtio-blk devices
    (`--ide-thread shared`): its IDE requests deferred into virtio-blk sections are the model's, not
    QEMU's (QEMU's IDE runs in the main loop). None for any other run."""
    config = run.meta.config
    if not config.get("ide_devices") or config.get("ide_thread") != "shared" or not config.get("devices"):
        return None
    return (
        "its IDE devices shared the iothreads with the virtio-blk devices (--ide-thread shared), so a nested "
        "aio_poll() could pull IDE requests into a virtio-blk section. QEMU's IDE runs in the main loop and "
        "cannot; those deferrals are the model's, not QEMU's"
    )


#: runs a report draws plots for, each; past this it compares them and summarises each without plots
MAX_PLOTTED_RUNS = 12


def render(runs: Sequence[Run] | Runs, interactive: bool = True) -> str:
    """One self-contained HTML page about `runs`: environment, config, summary,
    plots, what could not be measured, and a comparison when there are several.
    Past `MAX_PLOTTED_RUNS` runs, each run's section has no plots.

    `interactive`: the batch-size, batch-over-time, submit-latency and timeline
    plots as zoomable Bokeh figures (BokehJS inlined, ~1.3 MB; still offline);
    otherwise every plot is a PNG."""
    plots = len(runs) <= MAX_PLOTTED_RUNS
    views = [_run_view(run, i, plots, interactive) for i, run in enumerate(runs)]
    comparison = None
    if len(runs) > 1:
        compare = df_compare(runs)
        png = _png(lambda fig: plot_compare(compare, axes=fig.subplots(1, 3)), (13, 4))
        comparison = {"table": _html_table(compare), "plot": png, "diff": None, "noise_pct": DEFAULT_NOISE * 100}
        if len(runs) == 2 and not any(run.corrupt for run in runs):  # a corrupt run's note says why not
            comparison["diff"] = _diff_table(df_diff(*runs))
    uses_bokeh = any(p.html for v in views for p in v.plots)
    return _env.get_template("report.html.j2").render(
        views=views,
        comparison=comparison,
        compact=False,
        version=__version__,
        status_note=_status_note,
        overhead_note=_overhead_note,
        layout_note=_layout_note,
        bokeh_js=interactive_plots.bokeh_js() if uses_bokeh else "",
    )


def render_summary(run: Run) -> str:
    """A compact HTML summary of one run (no plots), as shown for a Run in Jupyter."""
    return _env.get_template("report.html.j2").render(
        views=[_RunView(run, anchor="run-0")],
        comparison=None,
        compact=True,
        version=__version__,
        status_note=_status_note,
        overhead_note=_overhead_note,
        layout_note=_layout_note,
    )
