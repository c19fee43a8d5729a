"""A recording of a real QEMU guest.

`QemuRecording.run()` boots the guest (held at exec until the tracers are attached), traces the
kernel's io_uring and block probes filtered to QEMU's process and the QEMU-side probes of its
batching design, waits for the guest workload to finish, and writes a run directory in the
format of `plugtrace record` (docs/run-format.md) plus the QEMU-only tables. The run directory,
the kernel tracer, the terminating signals and the status on every way out belong to the
`Recording` it is handed (the same as `plugtrace record`'s); `close()`, registered with it,
stops QEMU and the QEMU-side probes however the recording ends. When the recorder itself is
killed, QEMU and bpftrace die with it (PR_SET_PDEATHSIG) and a loop device clears itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CapabilityError, PlugtraceError
from ..logs import logger
from ..procfs import process_start
from ..run import RunMeta, read_table
from ..run.schema import schema_of
from .image import GuestImage, cache_dir
from .launch import QemuGuest, Workload, disk_names, guest_disk_totals, guest_iops, kvm_usable, vq_iothreads
from .probes import QemuProbes, merged_counts
from .versions import DETAIL, MARK, OPTIONAL, QemuBinary

#: a KVM guest that has not started its workload by then is taken to hang (nested KVM can)
KVM_BOOT_TIMEOUT_S = 20.0
#: a TCG guest boots in a few seconds on this kind of machine; more is a failure
BOOT_TIMEOUT_S = 120.0


def _scratch_prefix(pid: int) -> str:
    """How the QEMU-side probes' scratch directory of recorder `pid` begins: its pid and start time, so
    that one a killed recorder left is known as such (`remove_stale_scratch`)."""
    return f"plugtrace-qemu-{pid}.{process_start(pid)}-"


def remove_stale_scratch() -> list[Path]:
    """Remove the scratch directories of recorders that are gone (SIGKILL runs no clean-up); returns them."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob("plugtrace-qemu-*"):
        m = re.fullmatch(r"plugtrace-qemu-(\d+)\.(\d+)-.*", path.name)
        if m is None or not path.is_dir() or path.name.startswith(_scratch_prefix(int(m.group(1)))):
            continue  # not ours, or its recorder runs
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _table(name: str, rows: dict[str, list]) -> pa.Table:
    """Rows of table `name` in the columns and types of `plugtrace.run.schema`."""
    schema = schema_of(name)
    assert schema is not None, f"{name} is not in plugtrace.run.schema"
    return pa.table({f.name: pa.array(rows.get(f.name, []), type=f.type) for f in schema})


def submit_times(run_dir: Path, requests: dict[str, list]) -> list[int]:
    """When each QEMU request left: the start of the first submitting io_uring_enter() on its
    thread at or after it was queued (the kernel's `enters` table; -1 without it or after the end)."""
    path = run_dir / "tables" / "enters.parquet"
    queued = np.asarray(requests.get("queue_ns", []), dtype=np.int64)
    out = np.full(len(queued), -1, dtype=np.int64)
    if not path.exists() or not len(queued):
        return out.tolist()
    enters = read_table(run_dir, "enters", columns=["ts_ns", "tid", "to_submit"])
    enters = enters[enters["to_submit"] > 0]
    tids = np.asarray(requests["tid"])
    for tid, group in enters.groupby("tid"):
        ts = np.sort(group["ts_ns"].to_numpy())
        mine = np.flatnonzero(tids == tid)
        at = np.searchsorted(ts, queued[mine], side="left")
        ok = at < len(ts)
        out[mine[ok]] = ts[at[ok]]
    return out.tolist()


@dataclass
class QemuConfig:
    """What to boot and run: the QEMU, its disks, the guest workload, and how to trace."""

    qemu: str = "10.0"
    disks: int = 1
    ide_disks: int = 0
    iothreads: str = "per-disk"
    #: virtqueues per virtio-blk disk (num-queues, one guest CPU each); None: QEMU's default
    queues: int | None = None
    workload: Workload = field(default_factory=Workload)
    accel: str = "auto"
    mode: str = "aggregate"
    max_events: int = 5_000_000
    measure_overhead: bool = False
    #: "mark" (default): in aggregate mode only the guest's start mark (versions.MARK) on the QEMU side,
    #: QEMU's requests counted by the kernel (nothing fires in QEMU's iothread, so its batching is its
    #: own); "on": the QEMU-side probes (per request only luring_co_submit in aggregate mode); "full":
    #: also the per-request ones (versions.DETAIL) in aggregate mode; "off": the kernel side only (a
    #: baseline for what the QEMU-side ones cost). Events mode runs them all but at "off".
    qemu_probes: str = "mark"

    def vq_iothreads(self) -> list[list[str | None]]:
        """The iothread of each queue of each virtio-blk disk (`launch.vq_iothreads`)."""
        return vq_iothreads(self.disks, self.queues or 1, self.iothreads)


def choose_accel(wanted: str, qemu: QemuBinary, image: GuestImage) -> tuple[str, str]:
    """(accelerator, why): KVM where /dev/kvm really works (a timed boot of the guest, its
    answer cached per host kernel and QEMU), else TCG."""
    if wanted == "tcg":
        return "tcg", "asked for (--accel tcg)"
    ok, why = kvm_usable()
    if not ok:
        if wanted == "kvm":
            raise CapabilityError(f"--accel kvm: {why}")
        return "tcg", f"no KVM: {why}"
    cache = cache_dir().parent / "kvm-probe.json"
    key = f"{os.uname().release} {qemu.binary} {qemu.version}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict) or not all(isinstance(v, bool) for v in known.values()):
        known = {}  # damaged: tested again, and written anew
    if key not in known:
        guest = QemuGuest(
            qemu,
            image,
            "/dev/null",
            disks=0,
            ide_disks=0,
            iothreads="none",
            workload=Workload(duration_s=0),
            writable=False,
            accel="kvm",
        )
        try:
            guest.start()
            guest.release()
            known[key] = guest.wait_started(KVM_BOOT_TIMEOUT_S)
        finally:
            guest.stop()
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known))
    if known[key]:
        return "kvm", f"a test boot with KVM started the guest (cached in {cache})"
    if wanted == "kvm":
        raise CapabilityError(f"--accel kvm: a guest did not boot with KVM within {KVM_BOOT_TIMEOUT_S:.0f} s")
    return "tcg", f"a test boot with KVM did not start the guest within {KVM_BOOT_TIMEOUT_S:.0f} s (cached in {cache})"


def _per_thread(calls: dict[str, int]) -> list[dict]:
    """Per QEMU thread, after the guest's start mark: the SQEs the kernel took from it, its submitting
    io_uring_enter() calls, and their ratio (the kernel's counts, per thread name: "IO iot0", ...)."""
    rows = []
    for key, sqes in sorted(calls.items()):
        name, _, thread = key.partition(":")
        if name == "io_uring_submit_req_workload" and thread:
            enters = calls.get(f"submitting_enters_workload:{thread}", 0)
            rows.append(
                {
                    "thread": thread,
                    "sqes": sqes,
                    "enters": enters,
                    "mean_sqes_per_enter": round(sqes / enters, 3) if enters else None,
                }
            )
    return rows


class GuestWorkloadError(PlugtraceError):
    """The guest's workload ran but its requests failed (the run is stored `failed`)."""


class QemuRecording:
    """Boot, trace, and write one run directory through `rec` (a `Recording`)."""

    def __init__(self, cfg: QemuConfig, target, rec, qemu: QemuBinary, image: GuestImage, quiet: bool = False):
        self.cfg, self.target, self.rec, self.quiet = cfg, target, rec, quiet
        self.qemu, self.image = qemu, image
        self.guest: QemuGuest | None = None
        self.probes: QemuProbes | None = None
        self.accel = ("tcg", "")
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._requests: dict[str, list] | None = None

    def say(self, text: str) -> None:
        if not self.quiet:
            logger.info(f"plugtrace: {text}")

    def _guest(self) -> QemuGuest:
        c = self.cfg
        return QemuGuest(
            self.qemu,
            self.image,
            self.target.path,
            disks=c.disks,
            ide_disks=c.ide_disks,
            iothreads=c.iothreads,
            workload=c.workload,
            writable=self.target.writable,
            accel=self.accel[0],
            trace_log=self._trace_log(),
            queues=c.queues,
            cpus=max(2, c.queues or 0),
        )

    def _trace_log(self) -> str | None:
        """Events mode: where QEMU writes its virtio_blk_submit_multireq trace events."""
        if self.cfg.mode != "events" or self.cfg.qemu_probes == "off":
            return None
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix=_scratch_prefix(os.getpid()))
        return str(Path(self._scratch.name) / "qemu-trace.log")

    def devices(self) -> list[dict]:
        """`emulated_devices` of the run: the guest's disks, with the QEMU thread each runs in."""
        vqs = self.cfg.vq_iothreads()
        rows = []
        for i, (name, kind) in enumerate(disk_names(self.cfg.disks, self.cfg.ide_disks, self.target.writable)):
            iots = list(dict.fromkeys(vqs[i])) if i < len(vqs) else [None]
            thread = ", ".join(f"IO {iot}" for iot in iots) if iots[0] else "main loop"
            row = {"index": i, "name": name, "kind": kind, "thread": thread}
            if self.cfg.queues and kind == "virtio-blk":
                row["queues"] = self.cfg.queues
                row["vq_threads"] = [f"IO {iot}" if iot else "main loop" for iot in vqs[i]]
            rows.append(row)
        return rows

    def config(self) -> dict:
        c = self.cfg
        return {
            "strategy": f"real QEMU {self.qemu.version}",
            "qemu": self.qemu.describe(),
            "devices": c.disks,
            "ide_devices": c.ide_disks,
            "iothreads": c.iothreads,
            "queues": c.queues,
            **asdict(c.workload),
            "mode": c.mode,
            "qemu_probes": c.qemu_probes,
            "device_spec": self.target.kind,
            "accel": self.accel[0],
            "accel_why": self.accel[1],
        }

    def untraced_iops(self) -> float:
        """The guest workload's IOPS with nothing attached (for --measure-overhead)."""
        self.guest = guest = self._guest()
        guest.trace_log = None  # untraced: QEMU's own trace events off too
        try:
            guest.start()
            guest.release()
            if not guest.wait_started(BOOT_TIMEOUT_S):
                raise CapabilityError(f"the untraced guest did not boot (console: {guest.console.tail()})")
            guest.wait_done(BOOT_TIMEOUT_S + self.cfg.workload.duration_s)
        finally:
            guest.stop()
        if guest.console.failure:
            raise GuestWorkloadError(f"untraced: {guest.console.failure}")
        return guest_iops(guest.console)

    def run(self) -> RunMeta:
        """Record; returns the run's final meta. An error or a signal leaves through the `Recording`,
        which marks the run; `close()` (registered with it) stops what still runs."""
        from ..environment import describe_environment
        from ..run import Status

        rec = self.rec
        self.accel = choose_accel(self.cfg.accel, self.qemu, self.image)
        self.say(f"QEMU {self.qemu.version} ({self.qemu.binary}), {self.accel[0].upper()}: {self.accel[1]}")
        writer = rec.open(
            config=self.config(),
            environment=describe_environment(),
            device=self.target.describe(),
            emulated_devices=self.devices(),
        )
        overhead: dict[str, Any] | None = None
        if self.cfg.measure_overhead and self.cfg.mode != "off":
            self.say("measuring the untraced guest first ...")
            overhead = {"untraced_iops": round(self.untraced_iops(), 1)}
        self.guest = self._guest()
        pid = self.guest.start()
        missing = rec.start_tracer(self.cfg.mode, pid, [self.target.dev_t], self.cfg.max_events, markers=False)
        qemu_missing = self._start_qemu_probes(pid) if self.cfg.mode != "off" and self.cfg.qemu_probes != "off" else {}
        for name, why in (missing | qemu_missing).items():
            logger.warning(f"plugtrace: could not measure {name}: {why}")
        self.guest.release()
        boot_timeout = KVM_BOOT_TIMEOUT_S if self.accel[0] == "kvm" else BOOT_TIMEOUT_S
        if not self.guest.wait_started(boot_timeout):
            why = (
                f"QEMU exited ({self.guest.process.returncode})"
                if self.guest.process.poll() is not None
                else f"it did not within {boot_timeout:.0f} s"
            )
            raise CapabilityError(
                f"the guest did not start its workload: {why} (console: {self.guest.console.tail()}); "
                + self._cache_hint()
            )
        self.say(f"guest booted; running {self.cfg.workload.rw} for {self.cfg.workload.duration_s:g} s")
        self.guest.wait_done(BOOT_TIMEOUT_S + self.cfg.workload.duration_s)
        info = rec.close_tables()
        info["probes"]["could_not_measure"].update(qemu_missing)
        calls = self._finish_qemu_probes(info)
        if self._requests is not None:
            self._requests["submit_ns"] = submit_times(rec.out, self._requests)
            log = self.guest.trace_log
            if log and Path(log).exists():
                self._requests["nr_guest_requests"] = merged_counts(Path(log), self._requests)
            writer.write_table("qemu_requests", _table("qemu_requests", self._requests))
        iops = guest_iops(self.guest.console)
        totals = guest_disk_totals(self.guest.console)
        summary: dict[str, Any] = {
            "elapsed_s": self.guest.console.elapsed_s,
            "nr_requests": totals["workload_requests"],
            "iops": round(iops, 1),
            **totals,
        }
        if "luring_co_submit" in calls:
            # QEMU's own count of the requests it handed to io_uring, split at the guest's start mark
            summary["qemu_requests"] = calls["luring_co_submit"]
            summary["qemu_workload_requests"] = calls.get("luring_co_submit_workload", 0)
            summary["qemu_boot_requests"] = calls["luring_co_submit"] - summary["qemu_workload_requests"]
            summary["qemu_requests_source"] = "luring_co_submit (QEMU's io_uring driver)"
        elif "io_uring_submit_req" in calls:
            # --qemu-probes mark: the kernel's count of the SQEs QEMU's process submitted, split at the mark
            summary["qemu_requests"] = calls["io_uring_submit_req"]
            summary["qemu_workload_requests"] = calls.get("io_uring_submit_req_workload", 0)
            summary["qemu_boot_requests"] = calls["io_uring_submit_req"] - summary["qemu_workload_requests"]
            summary["qemu_requests_source"] = "io_uring_submit_req (the kernel, QEMU's process)"
        if self.cfg.queues:
            summary["queues"] = self._queue_summary()
            summary["qemu_threads"] = _per_thread(calls)
        if overhead is not None:
            overhead["traced_iops"] = round(iops, 1)
            overhead["ratio"] = round(iops / overhead["untraced_iops"], 4) if overhead["untraced_iops"] else None
        guest = {
            "workload": self.guest.console.counts,
            "disk_stat_before": self.guest.console.stat_before,
            "disk_stat_after": self.guest.console.stat_after,
        }
        # a workload whose requests failed measured nothing: the run says so, with the guest's own words
        failure = self.guest.console.failure
        rec.finish(
            Status.FAILED if failure else Status.COMPLETE,
            info,
            summary=summary,
            guest=guest,
            tracing_overhead=overhead,
            **({"error": failure} if failure else {}),
        )
        if failure:
            raise GuestWorkloadError(f"{failure}; run directory {rec.out} marked failed")
        return writer.meta

    def _queue_summary(self) -> list[dict]:
        """Per virtio-blk disk and queue: the guest CPUs blk-mq maps to it, the QEMU thread serving it,
        and the requests the guest's jobs pinned to those CPUs completed (each job issues on its CPU's
        queue)."""
        console = self.guest.console if self.guest is not None else None
        if console is None:
            return []
        vqs = self.cfg.vq_iothreads()
        names = disk_names(self.cfg.disks, 0, self.target.writable)
        rows = []
        for d, (disk, _) in enumerate(names[: self.cfg.disks]):
            for q, cpus in sorted(console.mq.get(disk, {}).items()):
                jobs = [j for j in console.jobs if j["disk"] == disk and j["cpu"] in cpus]
                iot = vqs[d][q] if q < len(vqs[d]) else None
                rows.append(
                    {
                        "disk": disk,
                        "queue": q,
                        "cpus": cpus,
                        "thread": f"IO {iot}" if iot else "main loop",
                        "guest_jobs": len(jobs),
                        "guest_requests": sum(j["reads"] + j["writes"] for j in jobs),
                    }
                )
        return rows

    def _cache_hint(self) -> str:
        """What a guest that does not boot may owe to the caches, and how to renew them."""
        hint = (
            "a damaged cached guest image is rebuilt with: python -m plugtrace.qemu.image --rebuild "
            f"({self.image.initrd})"
        )
        if self.accel[0] == "kvm" and self.cfg.accel == "auto":
            hint += (
                f"; KVM was chosen from the test boot cached in {cache_dir().parent / 'kvm-probe.json'}: "
                "delete it to test KVM again, or give --accel tcg"
            )
        return hint

    def _start_qemu_probes(self, pid: int) -> dict[str, str]:
        """Attach the QEMU-side probes; returns what could not be measured."""
        q = self.qemu
        if q.design is None:
            return {
                "qemu_sections": f"QEMU {q.version} ({q.binary}) has neither defer_call_begin nor "
                "blk_io_plug in its symbol tables (.symtab, .dynsym): no plug sections to trace"
            }
        if q.missing_symbols:
            return {
                "qemu_sections": f"QEMU {q.version} ({q.binary}) has no {', '.join(q.missing_symbols)} "
                "in its symbol tables (.symtab, .dynsym): stripped, inlined or renamed"
            }
        from ..tracing import detect_capabilities

        caps = detect_capabilities()
        if not caps.uprobes[0]:
            return {"qemu_sections": caps.uprobes[1]}
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix=_scratch_prefix(os.getpid()))
        events = self.cfg.mode == "events"
        self.probes = QemuProbes(
            q,
            pid,
            events,
            self.cfg.max_events,
            caps.bpftrace_path or "bpftrace",
            detail=events or self.cfg.qemu_probes == "full",
            mark_only=self.cfg.qemu_probes == "mark",
            per_thread=bool(self.cfg.queues),
        )
        self.probes.start(Path(self._scratch.name))
        for symbol, why in self.probes.unplaced.items():
            self.say(f"could not place the probe on {symbol}: {why}")
        if not self.probes.running:
            why = "; ".join(self.probes.errors[-3:]) or "bpftrace exited"
            self.probes = None
            return {"qemu_sections": f"the QEMU-side probes did not attach: {why}"}
        return {}

    def _finish_qemu_probes(self, info: dict) -> dict[str, int]:
        """Stop the QEMU-side probes and write their tables; returns QEMU's call counts."""
        p = self.probes
        if p is None:
            return {}
        p.stop()
        self.probes = None
        iothread_of_disk = {
            iot: i
            for i, iots in enumerate(self.cfg.vq_iothreads())
            for iot in iots
            if iot and self.cfg.iothreads in ("per-disk", "per-queue")
        }
        owners = p.device_of_handler(iothread_of_disk)
        counters = p.counters(owners)
        writer = self.rec.writer
        writer.write_table("qemu_counters", _table("qemu_counters", counters))
        writer.write_table("qemu_histograms", _table("qemu_histograms", p.histograms()))
        if self.cfg.mode == "events":
            tables = p.event_tables(owners)
            if p.workload_start_ns is not None:
                info["workload_start_ns"] = p.workload_start_ns
            for name in ("sections", "handlers", "qemu_sections", "qemu_handlers"):
                writer.write_table(name, _table(name, tables[name]))
            self._requests = tables["qemu_requests"]
        info["probes"]["ran"].append(f"qemu:{self.qemu.design}")
        info["probes"].setdefault("backends", {})[f"qemu:{self.qemu.design}"] = "bpftrace (uprobes)"
        lost = p.lost
        info["probes"].setdefault("lost_events", {})[f"qemu:{self.qemu.design}"] = lost
        if lost:
            info["events_lost"] = (info.get("events_lost") or 0) + lost
        if p.errors:
            info.setdefault("qemu_probe_messages", p.errors[-5:])
        for symbol, why in p.unplaced.items():
            info["probes"]["could_not_measure"][f"qemu:{symbol}"] = why
        if p.mark_only:
            for symbol in sorted(self.qemu.symbols & set(self._probed_symbols()) - set(MARK)):
                info["probes"].setdefault("not_asked", {})[f"qemu:{symbol}"] = (
                    "a uprobe in QEMU's iothread, off by default so tracing does not change QEMU's batching "
                    "(--qemu-probes on or full, or --mode events)"
                )
        elif not p.detail:
            for symbol in sorted(set(DETAIL) & self.qemu.symbols):
                info["probes"].setdefault("not_asked", {})[f"qemu:{symbol}"] = (
                    f"{OPTIONAL.get(symbol, symbol + ' calls')}: a uprobe per request, off in aggregate mode so "
                    "the probes do not slow QEMU (--qemu-probes full or --mode events)"
                )
        return {n: v for n, d, v in zip(counters["name"], counters["device"], counters["value"]) if d == -1}

    def _probed_symbols(self) -> list[str]:
        """The QEMU functions the design's full probe script puts a uprobe on."""
        from .probes import probed_functions

        return probed_functions(self.qemu)

    def close(self) -> None:
        """Stop QEMU and the QEMU-side probes if they still run. Idempotent."""
        try:
            if self.guest is not None:
                self.guest.stop()
            if self.probes is not None:
                self.probes.stop()
                self.probes = None
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch = None
