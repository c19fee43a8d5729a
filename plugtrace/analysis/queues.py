"""Multi-queue runs: batching per engine thread and per virtqueue (`plugtrace record --queues N`).

With a device's queues on several threads, the question is whose section batches whose requests: the
`defer` strategy's sections are per thread, the `device-plug` strategy's plug is the device's, shared by
every thread serving it, so one thread's plug holds another's requests (cause ``other_thread`` in
`df_deferrals`). Both tables are computed in DuckDB over the runs' files (out of core).
"""

from __future__ import annotations

import pandas as pd

from ..run import Run
from .common import requires
from .runs import Runs, _as_runs

__all__ = ["df_thread_stats", "df_queue_stats", "df_qemu_queue_stats", "df_thread_batching"]


@requires("submits")
def df_thread_stats(runs: Run | Runs | list[Run]) -> pd.DataFrame:
    """Per run and engine thread: its io_uring_enter() calls and how many SQEs each carried.

    Columns: ``run``, ``thread``, ``enters`` (submits), ``sqes``, ``mean_sqes_per_enter``,
    ``remote_unplug_enters`` (enters another thread's unplug asked for: device-plug, several queues).
    """
    return _as_runs(runs).sql(
        "SELECT run, thread, count(*) AS enters, sum(nr_sqes) AS sqes, avg(nr_sqes) AS mean_sqes_per_enter, "
        "count(*) FILTER (WHERE reason = 'remote_unplug') AS remote_unplug_enters "
        "FROM submits GROUP BY run, thread ORDER BY run, thread"
    )


@requires("requests", "submits")
def df_queue_stats(runs: Run | Runs | list[Run]) -> pd.DataFrame:
    """Per run, device and virtqueue: its requests and the enters that carried them.

    Columns: ``run``, ``device``, ``queue``, ``thread`` (serving it), ``requests`` (submitted, sync
    reads left out), ``enters`` (distinct io_uring_enter() calls its requests left in),
    ``mean_sqes_per_enter`` (of those enters, weighted by its requests: the batch a request of this
    queue left in), ``other_thread`` (its requests held by another thread's plug of the device) and
    ``other_thread_fraction``.
    """
    return _as_runs(runs).sql(
        "SELECT r.run, r.device, coalesce(r.queue, 0) AS queue, r.thread, count(*) AS requests, "
        "count(DISTINCT r.submit_seq) AS enters, avg(s.nr_sqes) AS mean_sqes_per_enter, "
        "count(*) FILTER (WHERE coalesce(r.deferred_by_thread, -1) >= 0) AS other_thread, "
        "count(*) FILTER (WHERE coalesce(r.deferred_by_thread, -1) >= 0) / count(*) AS other_thread_fraction "
        "FROM requests AS r JOIN submits AS s ON r.run = s.run AND r.thread = s.thread "
        "AND r.submit_seq = s.submit_seq "
        "WHERE NOT r.sync AND r.submit_ns >= 0 "
        "GROUP BY r.run, r.device, coalesce(r.queue, 0), r.thread ORDER BY r.run, r.device, queue, r.thread"
    )


@requires("qemu_handlers", "handlers")
def df_qemu_queue_stats(run: Run) -> pd.DataFrame:
    """A real QEMU run in events mode, per disk, virtqueue and QEMU thread: its handler runs after the
    guest's workload start mark (`meta.workload_start_ns`; all of them in runs without it).

    Columns: ``device``, ``vq``, ``thread``, ``tid``, ``handler_runs``, ``requests`` (guest requests
    popped), ``requests_per_run``, ``kick_fraction`` (runs the guest's notification started, the rest
    the iothread's polling found).
    """
    from .qemu import df_qemu_handlers

    h = df_qemu_handlers(run)
    start = run.meta.get("workload_start_ns")
    if start is not None:
        h = h[h["begin_ns"] >= int(start)]
    h = h[h["device"] >= 0]
    g = h.groupby(["device", "vq", "thread", "tid"], observed=True)
    out = g.agg(
        handler_runs=("nr_requests", "size"),
        requests=("nr_requests", "sum"),
        kicks=("cause", lambda c: int((c == "kick").sum())),
    ).reset_index()
    out["requests_per_run"] = out["requests"] / out["handler_runs"]
    out["kick_fraction"] = out.pop("kicks") / out["handler_runs"]
    return out


def df_thread_batching(runs: Run | Runs | list[Run]) -> pd.DataFrame:
    """Every run's batching per thread, model and real QEMU alike: ``run``, ``thread`` (the engine's
    number, or QEMU's thread name), ``enters``, ``sqes``, ``mean_sqes_per_enter`` and ``source`` (the
    app log's submits, or the kernel's per-thread counts of a QEMU run with ``--queues``). Runs with
    neither are left out."""
    many = _as_runs(runs)
    frames = []
    model = [r for r in many.runs if r.has("submits")]
    if model:
        t = df_thread_stats(Runs(model))
        frames.append(
            pd.DataFrame(
                {
                    "run": t["run"],
                    "thread": t["thread"].map(lambda n: f"thread {n}"),
                    "enters": t["enters"],
                    "sqes": t["sqes"],
                    "mean_sqes_per_enter": t["mean_sqes_per_enter"],
                    "source": "app log (submits)",
                }
            )
        )
    for label, r in zip(many.labels, many.runs):
        rows = (r.meta.get("summary") or {}).get("qemu_threads") or []
        if rows and not r.has("submits"):
            frames.append(
                pd.DataFrame(
                    {
                        "run": label,
                        "thread": [x["thread"] for x in rows],
                        "enters": [x["enters"] for x in rows],
                        "sqes": [x["sqes"] for x in rows],
                        "mean_sqes_per_enter": [x["mean_sqes_per_enter"] for x in rows],
                        "source": "kernel (QEMU's thread, after the start mark)",
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["run", "thread", "enters", "sqes", "mean_sqes_per_enter", "source"])
    return pd.concat(frames, ignore_index=True)
