"""Analysis of run directories: the `df_*` functions, by topic, and `Runs`, which does their work.

Every `df_*` function takes a `Run` (or, for `df_compare`, several) and returns
a pandas DataFrame whose columns are documented in its docstring, with units in
the column names (``*_ns`` nanoseconds of CLOCK_MONOTONIC, ``nr_*`` counts,
``*_bytes``). Functions state the tables they need with `@requires`, so a run
that lacks one (a probe this kernel could not attach, an untraced run, a traced
program with no app-side log) gets a message naming the table and why it is
missing instead of a KeyError.

Functions that summarise (distributions, percentiles, per-cause and
per-device statistics, comparisons) run out of core through `plugtrace.query`:
one streaming DuckDB query per question, exact, in bounded memory whatever the
run's size, and `Runs` asks the same questions of many runs in one query.
Functions that return one row per event (`df_submits`, `df_requests`,
`df_deferrals`, `df_sections`) say so, and take a time window (`window_ms`)
or a `sample` fraction for runs too big to hold.

Topics: `runs` (`Runs`; the single-run summaries are `Runs` of one), `timeline` (one row
per submit or section, SQEs over time, latency CDFs, timeline windows), `requests`
(requests, deferrals and their causes, aio_poll interleaving), `qemu` (QEMU beside the
model, and replays of a QEMU run on it), `diff`. `Run`, the reader, lives in `plugtrace.run`
and is re-exported here.
"""

from ..run import MissingTableError, Run, check_window
from .common import CAUSES, DEFAULT_PERCENTILES, SQES_HISTOGRAMS, required_tables, requires
from .diff import DEFAULT_NOISE, DIFF_NUMBERS, NoiseError, df_diff
from .qemu import (
    df_model_vs_qemu,
    df_qemu_arrivals,
    df_qemu_handlers,
    df_qemu_requests_per_handler,
    df_qemu_sections,
    df_replay_agreement,
    df_replay_runs,
)
from .queues import df_qemu_queue_stats, df_queue_stats, df_thread_batching, df_thread_stats
from .requests import (
    df_deferrals,
    df_interleaving_delays,
    df_requests,
    df_wait_histogram,
    first_other_device_deferral_ns,
)
from .runs import (
    Runs,
    df_batch_sizes,
    df_compare,
    df_deferral_stats,
    df_device_stats,
    df_latency_percentiles,
    df_unplugs,
)
from .timeline import (
    TIMELINE_COLUMNS,
    TimelineWindow,
    df_latency_cdf,
    df_sections,
    df_sqes_over_time,
    df_submits,
    submit_latency_percentiles,
    timeline_window,
)

__all__ = [
    "Run",
    "Runs",
    "MissingTableError",
    "requires",
    "required_tables",
    "CAUSES",
    "df_submits",
    "df_batch_sizes",
    "df_sections",
    "df_requests",
    "df_deferrals",
    "df_deferral_stats",
    "df_interleaving_delays",
    "df_unplugs",
    "df_latency_percentiles",
    "df_latency_cdf",
    "df_sqes_over_time",
    "df_device_stats",
    "df_thread_stats",
    "df_queue_stats",
    "df_qemu_queue_stats",
    "df_thread_batching",
    "df_compare",
    "df_model_vs_qemu",
    "df_qemu_sections",
    "df_qemu_handlers",
    "df_qemu_arrivals",
    "df_qemu_requests_per_handler",
    "df_replay_runs",
    "df_replay_agreement",
    "df_diff",
    "check_window",
    "DEFAULT_PERCENTILES",
    "SQES_HISTOGRAMS",
    "DEFAULT_NOISE",
    "DIFF_NUMBERS",
    "NoiseError",
    "df_wait_histogram",
    "first_other_device_deferral_ns",
    "TIMELINE_COLUMNS",
    "TimelineWindow",
    "timeline_window",
    "submit_latency_percentiles",
]
