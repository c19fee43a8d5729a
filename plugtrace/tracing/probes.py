"""The probes in probes/ and what each one produces.

Each probe is a bpftrace script (the readable reference, and the fallback)
and, for the hot ones, BPF C programs of ours loaded with libbpf
(`bpfprobes.py`), which produce the same tables.

Every program takes the same positional parameters: ``$1`` tgid to trace (0:
every process), ``$2`` dev_t in the kernel's encoding (0: every device), ``$3``
mode (0 aggregate, 1 events), and `markers.bt` also ``$4``, the path of our
extension. In events mode a program prints one comma-separated line per event
whose fields are `columns`; in aggregate mode it leaves histograms (``hist`` /
``lhist``) and counters (``count``) in maps that bpftrace prints at exit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ..run.schema import LABEL, TABLES


def _probes_dir() -> Path:
    """probes/ of a checkout, else the copy an installed wheel carries as the package plugtrace.probes;
    ``PLUGTRACE_PROBES`` names another (an edited copy, built with ``make -C DIR``)."""
    if os.environ.get("PLUGTRACE_PROBES"):
        return Path(os.environ["PLUGTRACE_PROBES"])
    checkout = Path(__file__).resolve().parents[2] / "probes"
    if checkout.is_dir():
        return checkout
    import importlib.util

    spec = importlib.util.find_spec("plugtrace.probes")
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else checkout


PROBES_DIR = _probes_dir()


@dataclass(frozen=True)
class ProbeSpec:
    """One probes/*.bt program.

    `table` names the events-mode table (and the probe in meta.json);
    `tracepoints` must all be present for it to run; `columns` are the fields
    of one events-mode line, with their Arrow types, derived from the table's
    schema; `needs_uprobes` marks the marker probe, which also needs the
    extension's path.
    """

    table: str
    file: str
    tracepoints: tuple[str, ...]
    needs_uprobes: bool = False
    #: integer columns printed as codes, stored as these names
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: the modes this program serves
    modes: tuple[str, ...] = ("aggregate", "events")
    #: modes in which it runs only when named in --probes
    only_when_asked: tuple[str, ...] = ()
    #: runs by default only when the block device is known (see `BLOCK_PROBES_WITHOUT_A_DEVICE`)
    default_needs_device: bool = False
    #: why it is off unless named in --probes, and how to turn it on (recorded in meta.json's probes.not_asked)
    off_by_default: str = ""
    #: what it tells, for messages and `plugtrace doctor`
    purpose: str = ""

    @property
    def path(self) -> Path:
        return PROBES_DIR / self.file

    @property
    def columns(self) -> tuple[tuple[str, pa.DataType], ...]:
        """The fields of one events-mode line: the table's columns (`plugtrace.run.schema`), a
        label printed as its code; none for a program that serves aggregate mode only."""
        if "events" not in self.modes:
            return ()
        return tuple((f.name, pa.int32() if f.type == LABEL else f.type) for f in TABLES[self.table])

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(list(self.columns))


#: why the uprobes on our plug-section markers stay off unless asked for. The engine logs every section,
#: request and submit itself; a uprobe traps into the kernel at each marker it fires (two per section, and
#: in events mode one per request), which costs the engine a share of its IOPS that
#: `bench/bench_engine_tracing.py` measures (the README's "Benchmarks" gives it with its host).
MARKERS_OFF_BY_DEFAULT = (
    "off by default: the engine logs its sections itself, and a uprobe trap per "
    "marker costs it IOPS (python -m bench.bench_engine_tracing says how many); name markers in --probes "
    "to see the sections from the kernel's side too"
)

PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec(
        "enters",
        "io_uring_enter.bt",
        ("syscalls:sys_enter_io_uring_enter", "syscalls:sys_exit_io_uring_enter"),
        # aggregate mode counts SQEs per enter through uring_requests instead:
        # a syscall tracepoint puts every system call of the machine on the
        # tracing slow path (what each costs fio: README, "Tracing")
        only_when_asked=("aggregate",),
        purpose="SQEs and latency of each io_uring_enter() (aggregate mode: only when asked, for the latency)",
    ),
    ProbeSpec(
        "uring_requests",
        "uring_requests.bt",
        ("io_uring:io_uring_submit_req", "io_uring:io_uring_complete"),
        labels=(("event", ("submit", "complete")),),
        modes=("events",),
        purpose="each io_uring request's submit and completion",
    ),
    # aggregate mode: the same table name, one hit per request, no completions
    ProbeSpec(
        "uring_requests",
        "uring_submits.bt",
        ("io_uring:io_uring_submit_req",),
        modes=("aggregate",),
        purpose="SQEs per submitting io_uring_enter(), from each request's position in its batch",
    ),
    ProbeSpec(
        "block_rq",
        "block_rq.bt",
        ("block:block_rq_issue", "block:block_rq_complete"),
        default_needs_device=True,
        purpose="block requests issued to the device and their latency",
    ),
    ProbeSpec(
        "block_unplug",
        "block_plug.bt",
        ("block:block_unplug",),
        default_needs_device=True,
        purpose="requests flushed per block-layer unplug",
    ),
    ProbeSpec(
        "markers",
        "markers.bt",
        (),
        needs_uprobes=True,
        labels=(("marker", ("section_begin", "section_end", "deferred_run", "request_queued", "submit")),),
        modes=("events",),
        only_when_asked=("events",),
        off_by_default=MARKERS_OFF_BY_DEFAULT,
        purpose="plugtrace's plug sections and requests (uprobes on the extension's markers)",
    ),
    # aggregate mode: the same table name, without the per-request marker (a
    # uprobe hit per request would cost more than everything else together)
    ProbeSpec(
        "markers",
        "section_markers.bt",
        (),
        needs_uprobes=True,
        modes=("aggregate",),
        only_when_asked=("aggregate",),
        off_by_default=MARKERS_OFF_BY_DEFAULT,
        purpose="plugtrace's plug sections, counted (uprobes on the extension's markers)",
    ),
)

#: why the block probes stay off for a traced program (--pid, -- CMD) unless asked for. A block request
#: costs a program a hit on each of block_rq_issue, block_rq_complete and block_unplug, so on a fast
#: blk-mq device they take several times what the SQEs-per-enter probe alone takes of the traced
#: program's IOPS (bench_tracing_overhead; the README's "Tracing" gives the figures). Tracing should
#: not change what it measures, so they run when the user asks: with the device (--watch-device, which
#: also counts the requests the kernel issues from its own workers), or by name in --probes. The
#: engine's runs always know their device, and run them.
BLOCK_PROBES_WITHOUT_A_DEVICE = (
    "off for a traced program unless asked for: name its device with "
    "--watch-device DEV, or the probe in --probes (block probes cost 2-3 "
    "probe hits per I/O on a blk-mq device)"
)

#: markers.bt's marker codes, in order
MARKER_NAMES = dict(next(p for p in PROBES if p.file == "markers.bt").labels)["marker"]

#: uring_requests.bt's event codes
URING_EVENTS = dict(next(p for p in PROBES if p.file == "uring_requests.bt").labels)["event"]


def kernel_dev_t(dev: str | None) -> int:
    """ "major:minor" (or None) -> the kernel's dev_t encoding used by block tracepoints (0: any)."""
    if not dev:
        return 0
    major, minor = (int(x) for x in dev.split(":"))
    return (major << 20) | minor


def probe_arguments(
    spec: ProbeSpec, pid: int | None, dev: str | None, events: bool, marker_lib: str | None
) -> list[str]:
    """bpftrace's positional parameters for `spec`."""
    args = [str(pid or 0), str(kernel_dev_t(dev)), "1" if events else "0"]
    if spec.needs_uprobes:
        args.append(os.fspath(marker_lib or ""))
    return args
