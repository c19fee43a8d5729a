"""The QEMU-side probes: uprobes on a QEMU binary's exported symbols, run by one bpftrace.

`QemuProbes` renders `probes/qemu-defer.bt` (10.0) or `probes/qemu-plug.bt` (7.2) for one QEMU
process, starts bpftrace as the kernel-side probes do (`spawn_bpftrace`: in a session of its own
and killed with us, however we end; its uprobes go with its file descriptors), waits until it is
attached, and at the end turns what it printed into tables: `qemu_counters` and `qemu_histograms` always,
`sections` and `handlers` (one row each) in events mode. Event lines beyond `max_events` are
counted as lost, as bpftrace's own drops are.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

from ..processes import Child
from ..tracing.backend_bpftrace import spawn_bpftrace
from ..tracing.decode import histogram_rows
from ..tracing.probes import PROBES_DIR
from .versions import COMMON_SCRIPT, DESIGNS, DETAIL, GUEST_NOTIFIER_FN, MARK, OPTIONAL, QemuBinary

READY_TIMEOUT_S = 30.0
#: luring_co_submit()'s request type bits (QEMU's block/aio.h)
QEMU_AIO_READ, QEMU_AIO_WRITE = 0x1, 0x2

_PROBE_HEAD = re.compile(r"^(uprobe|uretprobe):\{\{qemu\}\}:(\w+)", re.M)
#: the QEMU-side probes' in-kernel histograms
HISTOGRAMS = ("section_ns", "deferred_per_section", "requests_per_handler", "wait_before_submit_ns")
#: what the vq column reads when VirtQueue's layout is unknown (written as -1)
NO_VQ = 65535


def _blocks(text: str) -> list[str]:
    """The script cut before each probe and the END block."""
    starts = [m.start() for m in re.finditer(r"^(?:uprobe|uretprobe|tracepoint|END)", text, re.M)]
    return [text[a:b] for a, b in zip([0, *starts], [*starts, len(text)])]


def render(
    qemu: QemuBinary,
    pid: int,
    events: bool,
    detail: bool | None = None,
    mark_only: bool = False,
    per_thread: bool = False,
) -> tuple[str, dict[str, str]]:
    """The probe script of `qemu`'s design for process `pid` (probes/qemu-common.bt, then the
    design's), without the probes on functions the binary does not have; returns it and
    {symbol: why its probes were left out}. `detail` (default: `events`) keeps the per-request
    probes of DETAIL; without them a section's deferred calls are the requests queued in it.
    `mark_only` (aggregate mode, --qemu-probes mark): only the start mark's uprobe (MARK) and the
    kernel-side count of QEMU's requests, nothing that fires in QEMU's iothread. `per_thread` (with
    --queues) also counts each QEMU thread's SQEs and submitting enters after the mark, in the kernel."""
    detail = events if detail is None else detail
    assert qemu.design is not None, "a QEMU without a plug design has no probe script"
    design = DESIGNS[qemu.design]
    text = (PROBES_DIR / COMMON_SCRIPT).read_text() + (PROBES_DIR / design.script).read_text()
    dropped: dict[str, str] = {}
    kept = []
    for block in _blocks(text):
        m = _PROBE_HEAD.search(block)
        if m and m.group(2) not in qemu.symbols:
            dropped[m.group(2)] = qemu.why_unplaced(m.group(2))
            continue
        if m and not detail and m.group(2) in DETAIL:
            continue
        if mark_only and ((m and m.group(2) not in MARK) or (block.startswith("tracepoint") and "@queued" in block)):
            continue
        if not per_thread and "@enters_by_thread" in block:
            continue
        if (
            m
            and m.group(2) == "event_notifier_set"
            and (qemu.guest_notifier_offset is None or "virtio_notify_irqfd" not in qemu.symbols)
        ):
            dropped[m.group(2)] = (
                f"{OPTIONAL.get('virtio_notify_irqfd', 'guest notifications')}: VirtQueue.guest_notifier's offset is "
                f"unknown ({GUEST_NOTIFIER_FN} in {qemu.binary} is not the one instruction expected)"
                if qemu.guest_notifier_offset is None
                else qemu.why_unplaced("virtio_notify_irqfd")
            )
            continue
        kept.append(block)
    vq = f"*(uint16 *)(arg1 + {qemu.vq_index_offset})" if qemu.vq_index_offset is not None else str(NO_VQ)
    submit_type, submit_offset, submit_qiov = design.submit_args
    for key, value in (
        ("qemu", str(qemu.binary)),
        ("pid", str(pid)),
        ("events", "1" if events else "0"),
        ("vq_index", vq),
        ("guest_notifier", str(qemu.guest_notifier_offset or 0)),
        ("submit_type", submit_type),
        ("submit_offset", submit_offset),
        ("submit_qiov", submit_qiov),
        ("detail", "1" if detail else "0"),
        ("per_thread", "1" if per_thread else "0"),
        ("submit_is_deferred", str(design.submit_is_deferred if detail else 1)),
    ):
        kept = [b.replace("{{" + key + "}}", value) for b in kept]
    return _without_unused_maps("".join(kept)), dropped


def probed_functions(qemu: QemuBinary) -> list[str]:
    """The functions of `qemu` the design's probe scripts put a uprobe or uretprobe on."""
    assert qemu.design is not None
    text = (PROBES_DIR / COMMON_SCRIPT).read_text() + (PROBES_DIR / DESIGNS[qemu.design].script).read_text()
    return sorted({m.group(2) for m in _PROBE_HEAD.finditer(text)})


def _without_unused_maps(text: str) -> str:
    """`text` without the END block's clear()/delete() of maps no kept probe uses: bpftrace refuses a
    script that names a map only there (a probe left out, or off in aggregate mode, took its uses)."""
    end = text.rfind("\nEND")
    if end < 0:
        return text
    body, tail = text[:end], text[end:]
    used = set(re.findall(r"@\w+", re.sub(r"/\*.*?\*/", "", body, flags=re.S)))

    def keep(m: re.Match) -> str:
        return m.group(0) if m.group(2) in used else ""

    return body + re.sub(r"\s*(clear|delete)\((@\w+)\);", keep, tail)


class QemuProbes:
    """One bpftrace attached to one QEMU process's plug / defer_call functions."""

    def __init__(
        self,
        qemu: QemuBinary,
        pid: int,
        events: bool,
        max_events: int,
        bpftrace: str = "bpftrace",
        detail: bool | None = None,
        mark_only: bool = False,
        per_thread: bool = False,
    ):
        self.qemu, self.pid, self.events, self.max_events = qemu, pid, events, max_events
        self.per_thread = per_thread
        self.detail = events if detail is None else detail
        self.mark_only = mark_only and not events
        self.bpftrace = bpftrace
        self.proc: subprocess.Popen | None = None
        self._child: Child | None = None
        self.lines: list[str] = []  # event lines, in order
        self.maps: dict = {}
        #: events mode: when the guest's workload start mark was seen (CLOCK_MONOTONIC ns; None: not seen)
        self.workload_start_ns: int | None = None
        self.lost = 0
        self.errors: list[str] = []
        #: {symbol: why} of the probes left out (the binary has no such function)
        self.unplaced: dict[str, str] = {}
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, script_dir: Path) -> None:
        """Start bpftrace and wait until every uprobe is attached (CapabilityError-free: a failure
        is kept in `errors` and reported as could-not-measure)."""
        script = script_dir / f"qemu-{self.qemu.design}.bt"
        text, self.unplaced = render(self.qemu, self.pid, self.events, self.detail, self.mark_only, self.per_thread)
        script.write_text(f'BEGIN {{ printf("plugtrace-ready\\n"); }}\n{text}')
        # the kernel tracer's deep per-CPU buffers: bpftrace's default (64 pages) overflows
        # while its reader waits for a CPU that TCG guests keep busy
        self._child = spawn_bpftrace(self.bpftrace, str(script))
        self.proc = self._child.proc
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                if not self.errors:
                    self.errors.append("bpftrace did not attach its uprobes in time")
                return

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._ready.is_set()

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            kind, data = msg.get("type"), msg.get("data")
            if kind == "printf":
                for line in data.splitlines():
                    if line == "plugtrace-ready":
                        self._ready.set()
                    elif len(self.lines) < self.max_events:
                        self.lines.append(line)
                    else:
                        self.lost += 1
            elif kind in ("map", "hist", "lhist", "stats"):
                self.maps.update(data)
            elif kind == "lost_events":
                self.lost += int(data.get("events", 0))

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            if line and "Attaching" not in line:
                self.errors.append(line)

    def stop(self) -> None:
        """Stop bpftrace (it prints its maps as it exits); idempotent."""
        if self._child is None:
            return
        if self._child.poll() is None:
            self._child.proc.send_signal(signal.SIGINT)
            try:
                self._child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._child.end(grace_s=0)
                self.errors.append("bpftrace did not stop within 20 s and was killed")
        for t in self._threads:
            t.join(timeout=5)

    # -- tables ------------------------------------------------------------------------------

    def device_of_handler(self, iothread_of_disk: dict[str, int]) -> dict[int, int]:
        """VirtIOBlock address -> disk index. A handler that ran on a disk's own iothread
        (thread name "IO <iothread id>") is that disk; the others are numbered by address."""
        seen: dict[int, str] = {}
        for key in self.maps.get("@handler_thread", {}):
            addr, _, comm = key.partition(",")
            seen[int(addr)] = comm
        owners: dict[int, int] = {}
        for addr, comm in seen.items():
            name = comm.removeprefix("IO ")
            if name in iothread_of_disk:
                owners[addr] = iothread_of_disk[name]
        rest = sorted(a for a in seen if a not in owners)
        free = [i for i in range(len(seen)) if i not in owners.values()]
        owners.update(zip(rest, free))
        return owners

    def counters(self, owners: dict[int, int]) -> dict[str, list]:
        """`qemu_counters`: name, device (-1: all), value."""
        rows: dict[str, list] = {"name": [], "device": [], "value": []}

        def add(name: str, device: int, value: int) -> None:
            rows["name"].append(name)
            rows["device"].append(device)
            rows["value"].append(int(value))

        for name, value in sorted(self.maps.get("@calls", {}).items()):
            add(name, -1, value)
        for thread, value in sorted(self.maps.get("@submit_req_by_thread", {}).items()):
            add(f"io_uring_submit_req_workload:{thread}", -1, value)
        for thread, value in sorted(self.maps.get("@enters_by_thread", {}).items()):
            add(f"submitting_enters_workload:{thread}", -1, value)
        for addr, value in self.maps.get("@sections_by_owner", {}).items():
            device = owners.get(int(addr), -1)
            add("sections" if device >= 0 else "sections_no_handler", device, value)
        return rows

    def histograms(self) -> dict[str, list]:
        """`qemu_histograms`, as the histograms table has them: section_ns (outermost section,
        begin to end after its deferred calls), deferred_per_section, requests_per_handler
        (requests popped per virtio_blk_handle_vq() run) and wait_before_submit_ns (a request
        from luring_co_submit() to the kernel taking its SQE)."""
        rows: dict[str, list] = defaultdict(list)
        for name in HISTOGRAMS:
            for k, v in histogram_rows(name, self.maps.get(f"@{name}", [])).items():
                rows[k].extend(v)
        return dict(rows) or {"name": [], "low": [], "high": [], "count": []}

    def event_tables(self, owners: dict[int, int]) -> dict[str, dict[str, list]]:
        """`sections`, `handlers` (the engine's columns), `qemu_sections`, `qemu_handlers` (what
        only QEMU's runs have, one row per row of the first two) and `qemu_requests` from the
        event lines. A request is attributed to the disk whose handler was running on its thread
        when QEMU handed it to its io_uring driver (-1: none, e.g. IDE)."""
        t: dict[str, dict[str, list]] = {
            n: defaultdict(list) for n in ("sections", "handlers", "qemu_sections", "qemu_handlers", "qemu_requests")
        }

        def row(table: str, **cols: object) -> None:
            for col, v in cols.items():
                t[table][col].append(v)

        running: dict[int, int] = {}  # tid -> disk whose handler runs
        threads: dict[int, int] = {}
        open_section: dict[int, tuple[int, int, int, int]] = {}  # tid -> (section_id, begin_ns, owner, handler)
        open_handler: dict[int, int] = {}  # tid -> row in handlers
        submitted: dict[int, list[int]] = {}  # tid -> qemu_requests rows queued by its running handler
        next_id = 0
        # bpftrace reads its per-CPU buffers one after the other: a thread that moved to another CPU can
        # have its events printed out of order, so they are put back in time order (stable: ties keep theirs)
        for f in sorted((line.split() for line in self.lines), key=lambda f: int(f[2])):
            kind, tid, ts = f[0], int(f[1]), int(f[2])
            thread = threads.setdefault(tid, len(threads))
            if kind == "W":
                self.workload_start_ns = ts  # the guest's start mark
                continue
            if kind == "B":
                open_section[tid] = (next_id, ts, owners.get(int(f[3]), -1), int(f[3]))
                if tid in open_handler:  # the section this handler run opened
                    t["qemu_handlers"]["opened_section_id"][open_handler[tid]] = next_id
                next_id += 1
            elif kind == "E" and tid in open_section:
                sid, begin, owner, handler = open_section.pop(tid)
                deferred, polls, nested, completed = (int(x) for x in f[3:7])
                row(
                    "sections",
                    section_id=sid,
                    thread=thread,
                    tid=tid,
                    owner=owner,
                    begin_ns=begin,
                    end_ns=ts,
                    nr_deferred_calls=deferred,
                    nr_nested_polls=polls,
                )
                kind_ = "handler" if handler else "completion" if completed else "other"
                row("qemu_sections", section_id=sid, kind=kind_, nr_nested_sections=nested, nr_completions=completed)
            elif kind == "H":
                sid, _, sowner, _ = open_section.get(tid, (-1, 0, -1, 0))
                open_handler[tid] = len(t["handlers"]["tid"])
                running[tid] = owners.get(int(f[3]), -1)
                submitted[tid] = []
                row(
                    "handlers",
                    thread=thread,
                    tid=tid,
                    device=running[tid],
                    queue=int(f[4]) if int(f[4]) != NO_VQ else 0,  # the virtqueue (unknown: 0)
                    begin_ns=ts,
                    end_ns=-1,
                    section_id=sid,
                    section_owner=sowner,
                )
                vq = int(f[4])
                row(
                    "qemu_handlers",
                    tid=tid,
                    begin_ns=ts,
                    vq=-1 if vq == NO_VQ else vq,
                    cause="kick" if int(f[5]) else "poll",
                    nr_requests=-1,
                    nr_submitted=0,
                    opened_section_id=sid,
                )
            elif kind == "h" and tid in open_handler:
                at = open_handler.pop(tid)
                popped, mine = int(f[3]), submitted.pop(tid, [])
                t["handlers"]["end_ns"][at] = ts
                t["qemu_handlers"]["nr_requests"][at] = popped
                t["qemu_handlers"]["nr_submitted"][at] = len(mine)
                # a request carries one guest request unless QEMU merged some (fewer submitted than popped)
                for r in mine:
                    t["qemu_requests"]["nr_guest_requests"][r] = 1 if popped == len(mine) else -1
                running.pop(tid, None)
            elif kind == "Q":
                sid, _, sowner, _ = open_section.get(tid, (-1, 0, -1, 0))
                aio_type = int(f[3])
                if tid in submitted:
                    submitted[tid].append(len(t["qemu_requests"]["tid"]))
                row(
                    "qemu_requests",
                    req_id=len(t["qemu_requests"]["tid"]),
                    thread=thread,
                    tid=tid,
                    device=running.get(tid, -1),
                    op=0 if aio_type & QEMU_AIO_READ else 1 if aio_type & QEMU_AIO_WRITE else -1,
                    offset_bytes=int(f[4]),
                    length_bytes=int(f[5]),
                    nr_guest_requests=-1,
                    queue_ns=ts,
                    section_id=sid,
                    section_owner=sowner,
                )
        return {n: dict(v) for n, v in t.items()}


_MULTIREQ = re.compile(r"virtio_blk_submit_multireq .*?num_reqs (\d+) offset (\d+) size (\d+)")


def merged_counts(trace_log: Path, requests: dict[str, list]) -> list[int]:
    """`nr_guest_requests` of each request from QEMU's virtio_blk_submit_multireq trace events (one
    per request virtio-blk submits: the guest requests it carries, its offset and size): a virtio
    request takes the first event not yet taken with its offset and length; where none does (IDE,
    a log that lost it), the count from the handler runs stays."""
    events: dict[tuple[int, int], list[int]] = defaultdict(list)
    with open(trace_log, errors="replace") as f:
        for line in f:
            m = _MULTIREQ.search(line)
            if m:
                events[(int(m.group(2)), int(m.group(3)))].append(int(m.group(1)))
    taken: dict[tuple[int, int], int] = defaultdict(int)
    out = []
    for device, offset, length, known in zip(
        requests["device"], requests["offset_bytes"], requests["length_bytes"], requests["nr_guest_requests"]
    ):
        key = (offset, length)
        if device >= 0 and taken[key] < len(events[key]):
            out.append(events[key][taken[key]])
            taken[key] += 1
        else:
            out.append(known)
    return out
