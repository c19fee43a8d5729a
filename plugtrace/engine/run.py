"""Running a workload: threads, each with an event loop, a driver and devices.

`run_workload()` starts `threads` engine threads. Each owns one EventLoop, one
IoUringDriver (shared by its devices, as one LuringState per AioContext) and
its share of the emulated devices, each driven by a closed-loop Guest. The
block device is split into one region per emulated device. Logs go to a sink
(the run directory writer) in batches from a background thread, so the engine
threads never hold a run's log in memory.
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import plug
from ..errors import UsageError
from ..uring._binding import lib
from . import records
from .batching import shared_plugs
from .driver import MAX_ENTRIES, RING_SETUPS, IoUringDriver, setup_flag_names
from .emulation import DEVICE_KINDS, Arrivals, Device, Guest, GuestTiming, ReplayGuest
from .eventloop import POLL_MAX_NS, EventLoop
from .strategies import STRATEGIES, make_strategy

__all__ = ["WorkloadConfig", "WorkloadResult", "run_workload", "RW_MODES", "IDE_THREADS"]

IDE_THREADS = ("main", "shared")
#: the GIL's switch interval while several engine threads run (s)
GIL_SWITCH_S = 0.0002

RW_MODES = ("read", "write", "randread", "randwrite", "rw", "randrw")


@dataclass
class WorkloadConfig:
    """What to run. Sizes in bytes, times in seconds."""

    strategy: str = "defer"
    devices: int = 1
    device_kind: str = "virtio-blk"
    ide_devices: int = 0
    threads: int = 1
    iodepth: int = 32
    bs: int = 4096
    rw: str = "randread"
    rwmixread: int = 50
    duration_s: float | None = 5.0
    requests: int | None = None
    interleave: float = 0.0
    #: virtio-blk merges contiguous requests of one handler run, as QEMU's request-merging (default on) does
    merge: bool = True
    seed: int = 1
    verify: bool = True
    #: io_uring setup flags (driver.RING_SETUPS): "coop" as fio, "plain" (none) as QEMU
    ring_setup: str = "coop"
    #: busy-poll before sleeping, in ns (QEMU's poll-max-ns); 0: off
    poll_max_ns: int = POLL_MAX_NS
    #: where IDE devices run (IDE_THREADS): "main", a main-loop thread of their own, as in QEMU; "shared",
    #: spread over the iothreads with the virtio-blk devices (so IDE can join a virtio-blk section: not QEMU)
    ide_thread: str = "main"
    #: how long the guest and its device take (emulation.GuestTiming's fields: reaction_ns, request_ns,
    #: latency_ns), e.g. a calibration of a real QEMU guest (`plugtrace model`); None: the guest reacts at once
    guest_timing: dict | None = None
    #: virtqueues per virtio-blk device, each with a guest of its own (one job per queue, `iodepth` each)
    queues: int = 1
    #: the engine thread of each queue index (`queues` of them), the same for every device, as QEMU's
    #: iothread-vq-mapping lists iothreads; None: queue q of device i on thread (i + q) % threads
    vq_mapping: tuple[int, ...] | None = None

    def queue_placement(self) -> list[tuple[int, int, int]]:
        """`(device, queue, thread)` of every virtqueue: each virtio-blk device's `queues`, then one per IDE
        device. With one queue per device this is `placement()` with queue 0."""
        if self.queues == 1 and self.vq_mapping is None:
            return [(i, 0, t) for i, t in enumerate(self.placement())]
        ide = self.placement()[self.devices :]
        vqs = []
        for i in range(self.devices):
            for q in range(self.queues):
                vqs.append((i, q, self.vq_mapping[q] if self.vq_mapping else (i + q) % self.threads))
        return vqs + [(self.devices + j, 0, t) for j, t in enumerate(ide)]

    def placement(self) -> list[int]:
        """The engine thread of each emulated device, virtio-blk devices first, then IDE.

        virtio-blk devices are spread over the `threads` iothreads round robin. QEMU's IDE cannot run
        in an iothread (it lives in the main loop's AioContext), so with `ide_thread` "main" the IDE
        devices share one more thread of their own, after the iothreads: no IDE request can be queued
        inside a virtio-blk section. With "shared" every device is spread round robin, IDE too (the
        effect of a nested aio_poll() pulling an IDE request into a virtio-blk section, which QEMU
        does not have; such runs are labelled so)."""
        ndev = self.devices + self.ide_devices
        if self.ide_thread == "shared" or self.ide_devices == 0 or self.devices == 0:
            return [i % self.threads for i in range(ndev)]
        return [i % self.threads for i in range(self.devices)] + [self.threads] * self.ide_devices

    @property
    def engine_threads(self) -> int:
        """How many engine threads run: the iothreads, and the main loop when IDE runs there."""
        return max(t for _, _, t in self.queue_placement()) + 1

    def validate(self) -> None:
        """Raise UsageError naming the option for any value out of range."""
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy: unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if self.rw not in RW_MODES:
            raise UsageError(f"--rw: unknown mode {self.rw!r} (choose from {', '.join(RW_MODES)})")
        if self.device_kind not in DEVICE_KINDS:
            raise UsageError(f"--device-kind: choose from {', '.join(DEVICE_KINDS)}")
        for option, value in (("--devices", self.devices), ("--ide-devices", self.ide_devices)):
            if value < 0:
                raise UsageError(f"{option}: 0 or more, not {value}")
        if self.devices + self.ide_devices < 1:
            raise UsageError("--devices: at least one emulated device is needed")
        if self.threads < 1:
            raise UsageError("--threads: must be at least 1")
        if self.ide_thread not in IDE_THREADS:
            raise UsageError(f"--ide-thread: choose from {', '.join(IDE_THREADS)}, not {self.ide_thread!r}")
        if self.guest_timing is not None:
            try:
                GuestTiming.from_dict(self.guest_timing)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"guest timing: {exc}") from None
        if not 1 <= self.queues <= 16:
            raise UsageError(f"--queues: between 1 and 16, not {self.queues}")
        if self.queues > 1 and self.device_kind != "virtio-blk":
            raise UsageError(f"--queues: only virtio-blk devices have several queues, not {self.device_kind}")
        if self.vq_mapping is not None:
            if len(self.vq_mapping) != self.queues:
                raise UsageError(
                    f"--vq-mapping: one thread per queue ({self.queues}), not {len(self.vq_mapping)}: "
                    f"{','.join(map(str, self.vq_mapping))}"
                )
            if any(not 0 <= t < self.threads for t in self.vq_mapping):
                raise UsageError(f"--vq-mapping: threads are numbered 0 to {self.threads - 1}")
            if self.devices and set(self.vq_mapping) != set(range(self.threads)):
                raise UsageError("--vq-mapping: every thread (0 to --threads - 1) must serve at least one queue")
        vqs = self.devices * self.queues
        if self.threads > vqs + self.ide_devices:
            raise UsageError("--threads: more threads than emulated devices' queues")
        if self.ide_thread == "main" and self.devices and self.threads > vqs:
            raise UsageError(
                "--threads: more iothreads than virtio-blk devices (IDE devices run in the main loop; "
                "--ide-thread shared spreads them over the iothreads)"
            )
        if not 1 <= self.iodepth <= 1024:
            raise UsageError(f"--iodepth: must be between 1 and 1024, not {self.iodepth}")
        if self.bs <= 0 or self.bs % 512:
            raise UsageError(f"--bs: block size must be a positive multiple of 512, not {self.bs}")
        if self.bs > 1 << 20:
            raise UsageError(f"--bs: at most 1 MiB, not {self.bs}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UsageError(f"--duration: must be positive, not {self.duration_s}")
        if self.requests is not None and self.requests <= 0:
            raise UsageError(f"--requests: must be positive, not {self.requests}")
        if self.duration_s is None and self.requests is None:
            raise UsageError("give --duration or --requests")
        if not 0.0 <= self.interleave <= 1.0:
            raise UsageError(f"--interleave: a probability between 0 and 1, not {self.interleave}")
        if self.ring_setup not in RING_SETUPS:
            raise UsageError(f"--ring-setup: choose from {', '.join(RING_SETUPS)}, not {self.ring_setup!r}")
        if not 0 <= self.poll_max_ns <= 10_000_000:
            raise UsageError(f"--poll-max-ns: between 0 and 10000000, not {self.poll_max_ns}")
        if not 0 <= self.rwmixread <= 100:
            raise UsageError(f"--rwmixread: a percentage, not {self.rwmixread}")

    @property
    def read_fraction(self) -> float:
        if self.rw in ("read", "randread"):
            return 1.0
        if self.rw in ("write", "randwrite"):
            return 0.0
        return self.rwmixread / 100.0

    @property
    def writes(self) -> bool:
        return self.read_fraction < 1.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class WorkloadResult:
    elapsed_s: float
    nr_requests: int
    nr_errors: int
    first_error: int
    interrupted: bool
    devices: list[dict] = field(default_factory=list)
    threads: list[dict] = field(default_factory=list)
    #: with several queues per device: each virtqueue's device, queue, thread and completed requests
    queues: list[dict] = field(default_factory=list)
    #: device-plug with a device on several threads: plugs made while another thread held the device's plug
    plug_overlaps: int = 0
    sync_reads: int = 0
    integrity: dict | None = None
    #: log rows written while the workload ran, past each table's first chunk: 0 unless the log
    #: outgrew what the writer thread may hold (`LOG_HOLD_BYTES`); then writing cost the run CPU
    log_rows_while_running: int = 0
    log_hold_bytes: int = 0

    @property
    def iops(self) -> float:
        return self.nr_requests / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _SectionLog(plug.SectionHooks):
    """Logs every outermost section of one thread, and each virtio-blk handler run, in
    its driver's C logs (which fire the uprobe markers too)."""

    def __init__(self, loop: EventLoop, driver: IoUringDriver):
        self.loop = loop
        self.driver = driver
        self._d = driver.state

    def begin(self, section_id, owner):
        lib.pt_section_begin(self._d, section_id, owner, self.loop.nested_polls)

    def end(self, section_id, owner, nr_calls):
        lib.pt_section_end(self._d, section_id, nr_calls)

    def call_run(self, section_id, index):
        lib.plugtrace_mark_deferred_run(section_id, index)

    def done(self, section_id, owner):
        if lib.pt_section_done(self._d, section_id, owner, self.loop.nested_polls):
            self.driver.flush_logs()

    def handler(self, device, queue, begin_ns, section_id, section_owner):
        """A device's handler (of its virtqueue `queue`) ran from `begin_ns` until its own section ended
        (now), inside the outermost section `section_id` opened by `section_owner` (another device's: it
        was interleaved)."""
        if lib.pt_handler_done(self._d, device, queue, begin_ns, section_id, section_owner):
            self.driver.flush_logs()


class _WrittenBlocks:
    """Which blocks a write workload touched, for verification afterwards (drivers mark them)."""

    def __init__(self, size_bytes: int, bs: int):
        self.bs = bs
        self.bitmap = np.zeros(size_bytes // bs, dtype=bool)


class _Countdown:
    """Engine threads count down when their logs are flushed.

    Not Thread.join: a Ctrl-C landing inside join() can make a later join()
    return while the thread still runs (CPython 3.11), and the last log chunks
    would then miss the run directory.
    """

    def __init__(self, n: int):
        self.remaining = n
        self.cond = threading.Condition()

    def release(self) -> None:
        with self.cond:
            self.remaining -= 1
            self.cond.notify_all()

    def wait_all(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.remaining <= 0, timeout)

    def wait_all_uninterrupted(self) -> None:
        """Wait for every thread; a further Ctrl-C cannot cut this short (stop is set: they end soon)."""
        while True:
            try:
                if self.wait_all(0.2):
                    return
            except KeyboardInterrupt:
                continue


#: log records the writer thread hands the sink at a time, per table: a chunk costs the sink (a
#: Parquet write) the same few interpreter-lock round trips whatever its size, so chunks are big
#: (12 MiB of request records)
LOG_BATCH_ROWS = 1 << 17

#: the most log the writer thread holds in memory while the workload runs (bytes of C rows), at
#: most a quarter of the memory available: writing Parquet costs ~300 ns of CPU per request row
#: (bench/profile_log_write.py), which on 2 CPUs is taken from the engine and the kernel's io-wq
#: workers (`plugtrace record` kept ~0.87 of its IOPS on zram while writing as it ran). Held, the
#: log is written when the workload has stopped, off its clock; a run whose log outgrows this is
#: written from then on while it runs, and says so (`WorkloadResult.log_rows_while_running`).
LOG_HOLD_BYTES = 1 << 30


def _hold_budget() -> int:
    try:
        import psutil

        return min(LOG_HOLD_BYTES, psutil.virtual_memory().available // 4)
    except Exception:  # no psutil or no /proc/meminfo: the fixed budget
        return LOG_HOLD_BYTES


class _LogWriterThread:
    """Takes log chunks from engine threads and hands them to the sink in order, in batches of up to
    `LOG_BATCH_ROWS` records per table. While the workload runs it holds them, up to `hold_bytes`
    (then it hands on what it holds and everything after, as it comes); `close` hands on the rest.
    A table's first chunk is handed on at once, so every table is on disk from its first records:
    a run that a full disk, a crash or SIGKILL cuts short keeps some of each."""

    def __init__(self, sink: Callable[[str, Any], object], on_error: Callable[[], None], hold_bytes: int = -1):
        self.sink = sink
        self.on_error = on_error
        budget = _hold_budget()
        self.hold_bytes = budget if hold_bytes < 0 else min(hold_bytes, budget)
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.error: BaseException | None = None
        #: records not yet handed on, per table, in order
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_rows: dict[str, int] = {}
        self._held_bytes = 0
        self._started: set[str] = set()  # tables whose first chunk was handed on
        #: rows written after the first chunks while the workload ran: only once the held log
        #: outgrew hold_bytes, after which everything is written as it comes
        self.rows_while_running = 0
        self.thread = threading.Thread(target=self._run, name="plugtrace-log", daemon=True)
        self.thread.start()

    def put(self, name: str, rows: np.ndarray) -> None:
        """Queue the driver's log records `rows` of table `name`; they reach the sink as columns."""
        self.q.put((name, rows))

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                for name in list(self._pending):
                    self._hand_on(name)
                return
            name, rows = item
            self._pending.setdefault(name, []).append(rows)
            self._pending_rows[name] = self._pending_rows.get(name, 0) + len(rows)
            self._held_bytes += rows.nbytes
            if name not in self._started:
                self._started.add(name)
                self._hand_on(name)
            elif self.overflowed:
                if self._pending_rows[name] >= LOG_BATCH_ROWS:
                    self._hand_on_while_running(name)
            elif self._held_bytes > self.hold_bytes:
                for table in list(self._pending):
                    self._hand_on_while_running(table)

    @property
    def overflowed(self) -> bool:
        """The held log outgrew hold_bytes: from then on it was written while the workload ran."""
        return self.rows_while_running > 0

    def _hand_on_while_running(self, name: str) -> None:
        self.rows_while_running += self._pending_rows[name]
        self._hand_on(name)

    def _hand_on(self, name: str) -> None:
        chunks = self._pending.pop(name, [])
        self._pending_rows.pop(name, None)
        self._held_bytes -= sum(c.nbytes for c in chunks)
        while chunks and self.error is None:  # after an error later chunks are dropped
            batch: list[np.ndarray] = []
            rows = 0
            while chunks and (not batch or rows + len(chunks[0]) <= LOG_BATCH_ROWS):
                rows += len(chunks[0])
                batch.append(chunks.pop(0))
            try:
                self.sink(name, records.columns(name, batch[0] if len(batch) == 1 else np.concatenate(batch)))
            except BaseException as exc:  # reported by close()
                self.error = exc
                self.on_error()

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def run_workload(
    config: WorkloadConfig,
    path: str,
    size_bytes: int,
    sink: Callable[[str, Any], object],
    stop: threading.Event | None = None,
    progress: Callable[[float, int], None] | None = None,
    arrivals: dict[int, Arrivals] | None = None,
    log_hold_bytes: int = -1,
) -> WorkloadResult:
    """Run `config` against the block device or file at `path` (`size_bytes` usable).

    With `arrivals` (device index -> its recorded arrivals), those devices are driven by a
    `ReplayGuest` instead of the closed loop: `config.iodepth` then bounds what each may have
    outstanding, `config.bs` must cover the longest request, and the run ends when every arrival
    has been made and completed (give `requests` as their total, `duration_s` as None).

    `sink(table_name, columns)` receives log chunks (`requests`, `submits`,
    `sections`, `handlers`). `stop` ends the run early (Ctrl-C): guests stop
    issuing and what is in flight completes. `progress(elapsed_s, completed)`
    is called about once a second from the calling thread. The sink gets the log once the workload
    has stopped, except for each table's first chunk and whatever exceeds the records it may hold in
    memory: `LOG_HOLD_BYTES`, at most a quarter of the memory available and at most `log_hold_bytes`.
    """
    work = _Workload(config, path, size_bytes, sink, stop or threading.Event(), progress, arrivals, log_hold_bytes)
    return work.run()


class _EngineThread:
    """One event-loop thread of a workload: its ring, its devices and their guests."""

    def __init__(self, work: _Workload, index: int, queues: list[tuple[int, int]]) -> None:
        self.work = work
        self.index = index
        #: (device, queue) of every virtqueue this thread serves
        self.queues = queues
        self.guests: list[Guest | ReplayGuest] = []
        self.devices: list[Device] = []
        self.driver: IoUringDriver | None = None
        #: what the run's metadata says of this thread, once it has ended
        self.info: dict[str, Any] | None = None
        config = work.config
        #: "main loop" when it runs only IDE devices beside iothreads (QEMU's IDE lives there), else "iothread"
        self.role = "main loop" if config.devices and index >= config.threads else "iothread"
        self.thread = threading.Thread(target=self.main, name=f"plugtrace-engine-{index}", daemon=True)

    def main(self) -> None:
        work = self.work
        loop = EventLoop(work.config.poll_max_ns)
        try:
            self._set_up(loop)
            work.all_started.wait()
            self._run(loop)
        except BaseException as exc:
            work.failed(exc)
        finally:
            try:
                self._wind_down(loop)
            except BaseException as exc:
                work.errors.append(exc)
            finally:
                work.finished.release()

    def _set_up(self, loop: EventLoop) -> None:
        """The ring, the strategy, and each device with its guest."""
        config, work, t = self.work.config, self.work, self.index
        strategy = make_strategy(config.strategy)
        nslots = sum(config.iodepth if i < config.devices else 1 for i, _ in self.queues) + 8
        driver = IoUringDriver(
            loop,
            strategy,
            t,
            nslots=max(nslots, MAX_ENTRIES),
            max_bytes=config.bs,
            ring_setup=config.ring_setup,
            log_sink=work.logs.put,
        )
        self.driver = driver
        driver.pattern_seed = config.seed
        if work.written is not None:
            driver.mark_written(work.written.bitmap, config.bs)
        hooks = _SectionLog(loop, driver)
        plug.set_section_hooks(hooks)
        if any(work.plugs[i].lock is not None for i, _ in self.queues):
            loop.enable_remote()  # another thread's unplug of a shared device asks this one to submit
        rng = random.Random(config.seed * 1000 + t)
        for i, q in self.queues:
            kind = config.device_kind if i < config.devices else "ide"
            dev: Device = DEVICE_KINDS[kind](
                i,
                loop,
                driver,
                strategy,
                work.fd,
                i * work.region,
                work.region,
                interleave=config.interleave,
                merge=config.merge and i not in work.arrivals,
                rng=random.Random(config.seed * 7919 + i + 1_000_003 * q),
            )
            dev.queue = q
            dev.plug = work.plugs[i]
            dev.plug.add_driver(driver)
            depth = config.iodepth if kind != "ide" else 1
            guest: Guest | ReplayGuest
            if i in work.arrivals:
                guest = ReplayGuest(dev, depth, work.arrivals[i])
            else:
                per_guest = max(1, config.requests // work.nguests) if config.requests is not None else None
                timing = GuestTiming.from_dict(config.guest_timing) if config.guest_timing else None
                guest = Guest(
                    dev,
                    depth,
                    config.bs,
                    config.rw,
                    config.read_fraction,
                    per_guest,
                    seed=rng.getrandbits(63),
                    timing=timing if kind != "ide" else None,
                )
            dev.on_handler = hooks.handler
            self.devices.append(dev)
            self.guests.append(guest)

    def _run(self, loop: EventLoop) -> None:
        """Poll until every guest is done (its requests, the deadline, or a stop)."""
        driver, work, guests = self.driver, self.work, self.guests
        assert driver is not None
        for g in guests:
            if isinstance(g, ReplayGuest):
                g.start(work.t0_ns)
            else:
                g.start()
        check_every = 0
        while True:
            # Block only while something is in flight (or an arrival is due), so an
            # idle thread always comes back to check whether it is done.
            loop.aio_poll(driver.in_flight > 0 or loop.timers_pending)
            check_every += 1
            if check_every & 15 == 0 or driver.in_flight == 0:
                if work.stop.is_set() or (work.deadline is not None and time.monotonic() >= work.deadline):
                    for g in guests:
                        g.stop()
                if all(g.finished for g in guests):
                    break

    def _wind_down(self, loop: EventLoop) -> None:
        """Complete what is in flight, say what the thread did, close the ring (flushing its logs)."""
        plug.set_section_hooks(None)
        driver = self.driver
        if driver is not None:
            # never leave requests in flight on a ring we are closing
            while driver.in_flight > 0 or driver.in_queue > 0:
                if driver.in_queue and not driver.blocked:
                    driver.ioq_submit("completion")
                loop.aio_poll(True)
            self.info = {
                "thread": self.index,
                "role": self.role,
                "tid": driver.tid,
                "ring_flags": setup_flag_names(driver.ring_flags),
                "poll_hits": loop.poll_hits,
                "nested_polls": loop.nested_polls,
            }
            if self.work.config.queues > 1:
                self.info["queues"] = [list(vq) for vq in self.queues]
            if loop.remote_calls:
                self.info["remote_unplugs"] = loop.remote_calls
                self.info["remote_wait_mean_ns"] = loop.remote_wait_ns // loop.remote_calls
                self.info["remote_wait_max_ns"] = loop.remote_wait_max_ns
            driver.close()  # flushes its logs, also when the run failed: keep what was logged
        loop.close()


class _Workload:
    """One run of `run_workload`: its device file, its threads, their logs and the result."""

    def __init__(
        self,
        config: WorkloadConfig,
        path: str,
        size_bytes: int,
        sink: Callable[[str, Any], object],
        stop: threading.Event,
        progress: Callable[[float, int], None] | None,
        arrivals: dict[int, Arrivals] | None = None,
        log_hold_bytes: int = -1,
    ) -> None:
        config.validate()
        if arrivals and config.queues > 1:
            raise UsageError("--queues: a replay drives one queue per device, as it was recorded")
        self.config, self.stop, self.progress = config, stop, progress
        self.arrivals = arrivals or {}
        #: where a replay's arrival times count from (time.monotonic_ns()), set as the threads start
        self.t0_ns = 0
        self.ndev = config.devices + config.ide_devices
        #: one guest per virtqueue
        self.nguests = config.devices * config.queues + config.ide_devices
        self.region = (size_bytes // self.ndev) // config.bs * config.bs
        if self.region < config.bs * max(config.iodepth, 1):
            raise UsageError(
                f"--bs/--devices: the device ({size_bytes} bytes) is too small for {self.ndev} emulated devices "
                f"of at least {config.iodepth} blocks of {config.bs} bytes"
            )
        flags = os.O_RDWR if config.writes else os.O_RDONLY
        self.fd = os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)
        self.written = _WrittenBlocks(size_bytes, config.bs) if config.writes else None
        self.logs = _LogWriterThread(sink, on_error=stop.set, hold_bytes=log_hold_bytes)
        self.errors: list[BaseException] = []
        self.placement = config.placement()
        nthreads = config.engine_threads
        self.all_started = threading.Barrier(nthreads + 1)
        self.finished = _Countdown(nthreads)
        self.deadline: float | None = None
        vqs = config.queue_placement()
        self.threads = [_EngineThread(self, t, [(i, q) for i, q, on in vqs if on == t]) for t in range(nthreads)]
        #: the plug of each device (device-plug), shared by every thread serving one of its queues
        self.plugs = shared_plugs(vqs)

    def failed(self, exc: BaseException) -> None:
        """A thread failed: the others stop, and nobody waits for it at the start line."""
        self.errors.append(exc)
        self.stop.set()
        try:
            self.all_started.abort()
        except threading.BrokenBarrierError:
            pass

    def run(self) -> WorkloadResult:
        switch = sys.getswitchinterval()
        if len(self.threads) > 1:
            # Engine threads share the GIL: at CPython's 5 ms switch interval one thread's handler can wait
            # that long for another's, which no iothread of QEMU's does. 0.2 ms cuts that wait tenfold.
            sys.setswitchinterval(GIL_SWITCH_S)
        try:
            for t in self.threads:
                t.thread.start()
            elapsed, interrupted = self._wait()
            result = self._result(elapsed, interrupted)
            if self.errors:
                raise self.errors[0]
            self._verify(result)
            return result
        finally:
            sys.setswitchinterval(switch)
            os.close(self.fd)

    def _wait(self) -> tuple[float, bool]:
        """Until every thread has ended, showing progress; returns (seconds run, whether interrupted)."""
        config = self.config
        start = time.monotonic()
        interrupted = False
        try:
            try:
                if config.duration_s is not None:
                    self.deadline = time.monotonic() + config.duration_s
                self.t0_ns = time.monotonic_ns() + 20_000_000  # every thread is in its loop by then
                self.all_started.wait()
            except threading.BrokenBarrierError:
                pass
            start = last = time.monotonic()
            while not self.finished.wait_all(timeout=0.2):
                now = time.monotonic()
                if self.progress is not None and now - last >= 1.0:
                    last = now
                    self.progress(now - start, sum(t.driver.completed for t in self.threads if t.driver))
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
            self.finished.wait_all_uninterrupted()
        elapsed = time.monotonic() - start
        try:
            self.logs.close()
        except BaseException as exc:
            self.errors.append(exc)
        return elapsed, interrupted or (self.stop.is_set() and not self.errors)

    def _result(self, elapsed: float, interrupted: bool) -> WorkloadResult:
        guests = [g for t in self.threads for g in t.guests]
        devices = [d for t in self.threads for d in t.devices]
        queues = []
        if self.config.queues > 1:
            for t in self.threads:
                for d, g in zip(t.devices, t.guests):
                    queues.append(d.describe_queue(t.index) | {"completed": g.completed})
            queues.sort(key=lambda x: (x["device"], x["queue"]))
        return WorkloadResult(
            elapsed_s=elapsed,
            nr_requests=sum(g.completed for g in guests),
            nr_errors=sum(g.errors for g in guests),
            first_error=next((g.first_error for g in guests if g.first_error), 0),
            interrupted=interrupted,
            devices=sorted(
                (d.describe(self.placement[d.index]) for d in devices if d.queue == 0), key=lambda x: x["index"]
            ),
            queues=queues,
            plug_overlaps=sum(p.overlaps for p in self.plugs.values()),
            sync_reads=sum(getattr(d, "sync_reads", 0) for d in devices),
            threads=[t.info for t in self.threads if t.info is not None],
            log_rows_while_running=self.logs.rows_while_running,
            log_hold_bytes=self.logs.hold_bytes,
        )

    def _verify(self, result: WorkloadResult) -> None:
        """Read back every block a write workload wrote (unless interrupted or told not to)."""
        if self.written is None or not self.config.verify or result.interrupted:
            return
        from .verify import verify_blocks

        result.integrity = verify_blocks(self.fd, self.written.bitmap, self.config.bs, self.config.seed)
        result.interrupted = bool(result.integrity.get("interrupted"))
