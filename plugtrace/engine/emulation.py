"""Emulated guest devices and the closed-loop guests that drive them.

* `VirtioBlk`: the guest puts requests on a virtqueue and kicks; the device's
  handler (a bottom half, standing in for the ioeventfd handler) drains the
  whole queue inside a plug section, as QEMU's virtio_blk_handle_vq() does. While
  the handler runs, kicks are not delivered (virtio notification suppression);
  the handler picks the new requests up before it returns. With `merge` (QEMU's
  request-merging property, on by default) it merges contiguous requests as
  virtio_blk_submit_multireq() does (`pt_mrb_fill` in engine.c): up to 32
  requests of one direction, sorted by offset, each run of contiguous ones one
  request.
* `Ide`: one request at a time and no plug section: its requests go straight
  to the driver, and are deferred only when they happen to be issued inside
  another device's section.
* `Guest`: a closed loop per device: `iodepth` requests outstanding, a new one
  issued when one completes, until a request count or deadline. With a
  `GuestTiming` (a calibration of a real guest, `plugtrace model`) it takes
  time as a real one does: it reacts to a completion notification after
  `reaction_ns`, then makes its requests available one every `request_ns`
  while the device's handler (notifications off while it runs, as
  virtio_blk_handle_vq() does) picks them up as they come; each request takes
  the device a latency drawn from `latency_ns`.
* `ReplayGuest`: an open loop that makes a recorded run's requests available
  at the recorded times, one arrival (a handler run's requests) at a time;
  with per-request times (`Arrivals.queue_at_ns`) the handler hands each
  request to the driver no sooner than the recorded QEMU did (`VirtioBlk.pace`),
  so a handler run lasts as long as the recorded one.

The aio_poll interleaving knob: with probability `interleave`, a virtio-blk
handler begins with a synchronous read (think of a metadata read) and calls
`aio_poll()` until it completes, so other devices' handlers run inside its
section and their deferred calls join it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any

import numpy as np

from .. import plug
from ..uring._binding import ffi, lib
from .batching import DevicePlugState
from .driver import OP_READ, OP_WRITE, IoUringDriver
from .eventloop import EventLoop
from .strategies import Strategy

now_ns = lib.pt_now_ns

__all__ = ["Device", "VirtioBlk", "Ide", "Guest", "GuestTiming", "ReplayGuest", "Arrivals", "DEVICE_KINDS"]


class Device:
    """Common state of an emulated block device on one engine thread."""

    kind = ""

    def __init__(
        self,
        index: int,
        loop: EventLoop,
        driver: IoUringDriver,
        strategy: Strategy,
        fd: int,
        region_offset: int,
        region_bytes: int,
    ):
        self.index = index
        self.loop = loop
        self.driver = driver
        self.strategy = strategy
        self.fd = fd
        self.region_offset = region_offset
        self.region_bytes = region_bytes
        #: which of the device's virtqueues this is (a device with several queues has one Device per queue,
        #: each on the thread serving it, sharing the device's index, region and `plug`)
        self.queue = 0
        #: device-plug strategy: the device's plug count (bdrv_io_plug), shared by all its queues
        self.plug = DevicePlugState()
        #: called with (device, queue, begin_ns, outermost section id, its owner) when a handler's own
        #: section ends
        self.on_handler: Callable[[int, int, int, int, int], None] | None = None
        self.bs = 0
        #: the guest's index in the driver and its C record, whose virtqueue the device drains
        self.guest = -1
        self.guest_rec: Any = None  # the guest's C record (struct pt_guest), once attached

    def attach_guest(self, bs: int, guest: int, guest_rec) -> None:
        """The guest using this device: its block size, its index in the driver and its C record."""
        self.bs = bs
        self.guest = guest
        self.guest_rec = guest_rec
        guest_rec.queue = self.queue

    def available(self) -> int:
        """Requests the guest made available and the device has not taken yet."""
        g = self.guest_rec
        return g.vq_tail - g.vq_head

    def guest_notify(self) -> None:
        """The guest made requests available on the virtqueue and notified the device."""
        raise NotImplementedError

    def describe(self, thread: int) -> dict:
        return {"index": self.index, "name": f"{self.kind}{self.index}", "kind": self.kind, "thread": thread}

    def describe_queue(self, thread: int) -> dict:
        """This virtqueue: its device, its index, the thread serving it and what its guest did."""
        return {"device": self.index, "queue": self.queue, "thread": thread}


class VirtioBlk(Device):
    kind = "virtio-blk"

    def __init__(
        self,
        *args,
        interleave: float = 0.0,
        merge: bool = False,
        rng: random.Random | None = None,
        sync_bytes: int = 4096,
    ):
        super().__init__(*args)
        self.merge = merge
        self.bh = self.loop.bh_new(self.handle_vq)
        self.in_handler = False
        self.interleave = interleave
        self.rng = rng or random.Random(0)
        self.sync_bytes = sync_bytes
        self.sync_reads = 0
        #: a replay's per-request times (monotonic ns, by the guest's request index): the handler takes
        #: request k off the virtqueue no sooner than pace[k], as the recorded QEMU's handler did
        self.pace: np.ndarray | None = None
        #: a timed guest (GuestTiming) runs beside the handler: the handler lets it catch up to now before
        #: each look at the virtqueue, and takes one request at a time, spending request_cost_ns on each
        self.guest_advance: Callable[[], None] | None = None
        self.request_cost_ns = 0

    def guest_notify(self):
        if not self.in_handler:
            self.bh.schedule()

    def handle_vq(self) -> None:
        self.in_handler = True
        strategy = self.strategy
        begin_ns = now_ns()
        try:
            strategy.handler_begin(self)
            section = plug.current_section()
            try:
                if self.interleave and self.loop.depth == 1 and self.rng.random() < self.interleave:
                    self._synchronous_read()
                submit = self.driver.submit_merged_from_guest if self.merge else self.driver.submit_from_guest
                advance = self.guest_advance
                if advance is not None:
                    advance()
                while n := self.available():
                    if self.pace is not None:
                        n = self._due(self.pace, n)
                    elif advance is not None:
                        n = 1  # the guest adds requests while the handler pops them
                    submit(self.guest, n, self.fd, self.bs, self.index)
                    if advance is not None:
                        if self.request_cost_ns:
                            _wait_until(now_ns() + self.request_cost_ns)
                        advance()
            finally:
                # the handler's own section ends here: inside another device's section, this is when its
                # requests would have left had that section not been open (the delay interleaving causes)
                if self.on_handler is not None:
                    self.on_handler(self.index, self.queue, begin_ns, *section)
                strategy.handler_end(self)
        finally:
            self.in_handler = False
        # Notifications are back on: requests the guest queued while the
        # section ended (completions run there) need another pass.
        if self.available():
            self.bh.schedule()

    def _due(self, pace: np.ndarray, n: int) -> int:
        """Wait, inside the handler (the thread does nothing else meanwhile, as QEMU's iothread popping
        the virtqueue), until the next of the `n` available requests is due; return how many are due."""
        k = int(self.guest_rec.vq_head)
        _wait_until(int(pace[k]))
        return max(1, int(np.searchsorted(pace[k : k + n], now_ns(), side="right")))

    def _synchronous_read(self) -> None:
        """Read one block and wait for it with nested aio_poll() calls."""
        finished = []
        offset = self.region_offset + self.rng.randrange(self.region_bytes // self.sync_bytes) * self.sync_bytes
        self.driver.submit_request(
            self.fd, OP_READ, offset, self.sync_bytes, self.index, lambda slot, res: finished.append(res), sync=True
        )
        self.sync_reads += 1
        while not finished:
            self.loop.aio_poll(True)


#: below this, a wait spins rather than sleeps (a sleep wakes ~50 us late: the kernel's timer slack)
_SPIN_NS = 150_000


def _wait_until(t_ns: int) -> None:
    while (left := t_ns - now_ns()) > 0:
        if left > _SPIN_NS:
            time.sleep((left - _SPIN_NS // 2) / 1e9)


class Ide(Device):
    kind = "ide"

    def __init__(self, *args, **_ignored):
        super().__init__(*args)  # no merging: IDE hands over one request at a time
        self.bh = self.loop.bh_new(self.handle_pio)

    def guest_notify(self):
        self.bh.schedule()

    def handle_pio(self) -> None:
        # No plug section, one request at a time: outside anyone else's section the driver submits at once.
        while self.available():
            self.driver.submit_from_guest(self.guest, 1, self.fd, self.bs, self.index)


#: the device classes by kind (each takes the arguments of Device, a virtio-blk its interleaving too)
DEVICE_KINDS: dict[str, Callable[..., Device]] = {"virtio-blk": VirtioBlk, "ide": Ide}


def _counter(field: str, doc: str) -> property:
    """A read-only view of one of a guest's counters in its C record."""
    return property(lambda self: getattr(self._rec, field), doc=doc)


@dataclass(frozen=True)
class GuestTiming:
    """How long a guest and its device take, as measured on a real QEMU guest (`plugtrace model
    calibrate`): `reaction_ns` from a completion notification to the guest's first new request,
    `request_ns` between two requests it makes available in a row, `iothread_request_ns` what the
    device's handler spends on each request it takes off the virtqueue (the iothread's cost, which
    lets a guest add more while the handler runs), and `latency_ns` the device's latency per request
    as quantiles at evenly spaced probabilities from 0 to 1 (empty: the device's own). A request the
    device finishes sooner stays in flight until its drawn latency is up. `reaction_quantiles_ns`
    (optional, quantiles as `latency_ns`): each reaction drawn from them instead of `reaction_ns`."""

    reaction_ns: int = 0
    request_ns: int = 0
    iothread_request_ns: int = 0
    latency_ns: tuple[int, ...] = ()
    reaction_quantiles_ns: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        times = (self.reaction_ns, self.request_ns, self.iothread_request_ns, *self.latency_ns)
        if any(t < 0 for t in (*times, *self.reaction_quantiles_ns)):
            raise ValueError("guest timing: times must not be negative")
        for name in ("latency_ns", "reaction_quantiles_ns"):
            q = list(getattr(self, name))
            if q != sorted(q) or len(q) == 1:
                raise ValueError(f"guest timing: {name} must be quantiles (at least 2), in order")

    @classmethod
    def from_dict(cls, d: dict) -> GuestTiming:
        return cls(
            int(d.get("reaction_ns", 0)),
            int(d.get("request_ns", 0)),
            int(d.get("iothread_request_ns", 0)),
            tuple(map(int, d.get("latency_ns", ()))),
            tuple(map(int, d.get("reaction_quantiles_ns", ()))),
        )

    def draw_latencies(self, rng: np.random.Generator, n: int) -> np.ndarray | None:
        return _draw(self.latency_ns, rng, n) if self.latency_ns else None

    def draw_reaction(self, rng: np.random.Generator) -> int:
        if not self.reaction_quantiles_ns:
            return self.reaction_ns
        return int(_draw(self.reaction_quantiles_ns, rng, 1)[0])


def _draw(quantiles: tuple[int, ...], rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` values drawn from the distribution given by its quantiles at evenly spaced probabilities."""
    q = np.asarray(quantiles, dtype=np.float64)
    return np.interp(rng.random(n), np.linspace(0.0, 1.0, len(q)), q).astype(np.int64)


class Guest:
    """A closed-loop workload on one device: keeps `iodepth` requests outstanding.

    Its per-request work runs in C (`pt_refill`, counting in `pt_reap`): the
    guest makes requests available on the device's virtqueue from a chunk of
    offsets and read/write choices drawn with numpy, and Python runs once per
    refill, not per request.
    """

    _CHUNK = 4096

    def __init__(
        self,
        device: Device,
        iodepth: int,
        block_bytes: int,
        rw: str,
        read_fraction: float,
        max_requests: int | None,
        seed: int,
        timing: GuestTiming | None = None,
    ):
        self.device = device
        self.timing = timing
        self.iodepth = iodepth
        self.bs = block_bytes
        self.random_offsets = rw.startswith("rand")
        self.read_fraction = read_fraction
        self.rng = np.random.default_rng(seed)
        self.nblocks = device.region_bytes // block_bytes
        self.next_block = 0
        self._driver = device.driver
        # The guest reacts to completions later, as a vCPU does after an
        # interrupt: refilling from inside the completion handling would let
        # one handler run forever on a fast device.
        self._refill_bh = device.loop.bh_new(self._refill)
        on_completions = self._refill_bh.schedule if timing is None else self._notified
        self.index, self._rec = self._driver.add_guest(iodepth, max_requests, on_completions)
        self._chunk: tuple | None = None
        self._budget = -1 if max_requests is None else max_requests
        #: a timed guest: reacting (a timer armed), adding (its next request due at _next_add_ns)
        self._reacting = self._adding = False
        self._next_add_ns = 0
        self._tick_armed = False
        device.attach_guest(block_bytes, self.index, self._rec)
        if timing is not None:
            self._holds: tuple[np.ndarray | None, Any] = (None, ffi.new("int64_t[]", iodepth))  # chunk's, vq's
            self._rec.vq_hold = self._holds[1]
            if isinstance(device, VirtioBlk):
                device.guest_advance = self._advance
                device.request_cost_ns = timing.iothread_request_ns

    def _new_chunk(self) -> None:
        n = self._CHUNK
        if self.random_offsets:
            # even-numbered blocks, as the real guest's ptload draws them: no two random requests are
            # contiguous, so a random load never merges (on QEMU or here) and merging stays a sequential effect
            blocks = self.rng.integers(0, max(self.nblocks // 2, 1), n) * 2
        else:
            blocks = (self.next_block + np.arange(n)) % self.nblocks
            self.next_block = int(blocks[-1] + 1) % self.nblocks
        offsets = np.ascontiguousarray(self.device.region_offset + blocks.astype(np.int64) * self.bs)
        rf = self.read_fraction
        if rf >= 1.0:
            ops = np.full(n, OP_READ, dtype=np.int32)
        elif rf <= 0.0:
            ops = np.full(n, OP_WRITE, dtype=np.int32)
        else:
            ops = np.where(self.rng.random(n) < rf, OP_READ, OP_WRITE).astype(np.int32)
        c_offsets, c_ops = ffi.from_buffer("int64_t[]", offsets), ffi.from_buffer("int32_t[]", ops)
        self._chunk = (offsets, ops, c_offsets, c_ops)  # C reads them: keep them alive
        g = self._rec
        g.chunk_offsets, g.chunk_ops = c_offsets, c_ops
        g.chunk_len, g.chunk_pos = n, 0
        holds = self.timing.draw_latencies(self.rng, n) if self.timing is not None else None
        if holds is not None:
            self._holds = (holds, self._holds[1])
            g.chunk_hold = ffi.from_buffer("int64_t[]", holds)

    def start(self) -> None:
        if self.timing is None:
            self._refill()
        else:
            self._react()

    def stop(self) -> None:
        self._rec.stopped = 1

    def _refill(self) -> None:
        self._make_available()

    def _make_available(self, limit: int | None = None) -> int:
        """Make requests available (at most `limit`) and notify the device; how many."""
        g = self._rec
        if limit is not None:
            g.max_requests = g.issued + limit if self._budget < 0 else min(self._budget, g.issued + limit)
        n = lib.pt_refill(self._driver.state, self.index)
        if n < 0:
            self._new_chunk()
            n = lib.pt_refill(self._driver.state, self.index)
        if limit is not None:
            g.max_requests = self._budget
        if n > 0:
            self.device.guest_notify()
        return n

    # -- a timed guest (GuestTiming) -------------------------------------------------------------------
    def _notified(self) -> None:
        """Completions were reported to the guest: it reacts after reaction_ns, unless already at it."""
        if not self._reacting and not self._adding:
            self._reacting = True
            reaction = self.timing.draw_reaction(self.rng)  # type: ignore[union-attr]
            self.device.loop.timer_at(now_ns() + reaction, self._react)

    def _react(self) -> None:
        self._reacting = False
        if not self._adding:
            self._adding, self._next_add_ns = True, now_ns()
        self._advance()

    def _advance(self) -> None:
        """The guest catches up to now: the requests due by now, one every request_ns, while it has room."""
        if not self._adding:
            return
        g, step = self._rec, self.timing.request_ns  # type: ignore[union-attr]
        now = now_ns()
        room = int(g.iodepth) - int(g.outstanding)
        due = room if step == 0 else min(room, (now - self._next_add_ns) // step + 1)
        if due > 0:
            n = self._make_available(due)
            self._next_add_ns += max(n, 1) * step
            room -= n
        if room <= 0 or g.stopped or 0 <= self._budget <= g.issued:
            self._adding = False  # nothing completed is left to reissue: the next notification wakes it
        elif not self._tick_armed:
            self._tick_armed = True
            self.device.loop.timer_at(max(self._next_add_ns, now), self._tick)

    def _tick(self) -> None:
        self._tick_armed = False
        self._advance()

    stopped = property(lambda self: bool(self._rec.stopped))
    issued = _counter("issued", "requests made available so far")
    completed = _counter("completed", "requests completed so far")
    outstanding = _counter("outstanding", "requests made available and not completed yet")
    errors = _counter("errors", "requests completed with an error")
    first_error = _counter("first_error", "the first error (-errno), 0 if none")

    @property
    def finished(self) -> bool:
        g = self._rec
        return g.outstanding == 0 and (g.stopped or 0 <= g.max_requests <= g.issued)


@dataclass
class Arrivals:
    """One device's recorded arrivals: arrival `k` makes `counts[k]` requests available at `at_ns[k]`
    (nanoseconds after the replay's start), the next ones of `offsets` (bytes, within the device's
    region), `ops` (OP_READ / OP_WRITE) and `lens` (bytes), in order. `hold_ns` (optional, one per
    request): the recorded device's latency, from the submitting io_uring_enter() to the completion; a
    request the model's device completes sooner stays in flight until then. `queue_at_ns` (optional, one
    per request, not decreasing, none before its arrival): when the recorded QEMU handed the request to
    its driver, on `at_ns`'s clock; a virtio-blk handler takes it off the virtqueue no sooner."""

    at_ns: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    ops: np.ndarray
    lens: np.ndarray
    hold_ns: np.ndarray | None = None
    queue_at_ns: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.at_ns = np.ascontiguousarray(self.at_ns, dtype=np.int64)
        self.counts = np.ascontiguousarray(self.counts, dtype=np.int64)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        self.ops = np.ascontiguousarray(self.ops, dtype=np.int32)
        self.lens = np.ascontiguousarray(self.lens, dtype=np.int32)
        n = int(self.counts.sum())
        if len(self.at_ns) != len(self.counts) or not len(self.offsets) == len(self.ops) == len(self.lens) == n:
            raise ValueError("arrivals: at_ns/counts and offsets/ops/lens disagree in length")
        if self.hold_ns is not None:
            self.hold_ns = np.ascontiguousarray(np.maximum(self.hold_ns, 0), dtype=np.int64)
            if len(self.hold_ns) != n:
                raise ValueError("arrivals: hold_ns must give one latency per request")
        if self.queue_at_ns is not None:
            q = np.ascontiguousarray(self.queue_at_ns, dtype=np.int64)
            if len(q) != n:
                raise ValueError("arrivals: queue_at_ns must give one time per request")
            # no request before its own arrival, nor before the one queued ahead of it
            self.queue_at_ns = np.maximum.accumulate(np.maximum(q, np.repeat(self.at_ns, self.counts)))
        if len(self.at_ns) and (np.diff(self.at_ns) < 0).any():
            raise ValueError("arrivals: at_ns must not decrease")

    @property
    def nr_requests(self) -> int:
        return len(self.offsets)


class ReplayGuest(Guest):
    """An open-loop guest that replays `arrivals` on `device`: at each arrival's time it makes that
    arrival's requests available and notifies the device, as the recorded guest's kick (or the
    iothread's poll) did. With `arrivals.hold_ns`, each request takes at least the recorded device's
    time to complete. One arrival is made per event-loop iteration, so two arrivals that fall due
    together still reach the handler as two runs, as they were recorded. Should the device have
    `iodepth` requests outstanding, the rest of an arrival follows as requests complete (the run is
    then split, and the comparison shows it)."""

    def __init__(self, device: Device, iodepth: int, arrivals: Arrivals):
        self.device = device
        self.iodepth = iodepth
        self.bs = int(arrivals.lens.max()) if arrivals.nr_requests else device.bs
        self.arrivals = arrivals
        self._driver = device.driver
        self._cum = np.concatenate(([0], np.cumsum(arrivals.counts)))
        self._next = 0
        self._t0_ns = 0
        self.index, self._rec = self._driver.add_guest(iodepth, 0, self._refill)
        g = self._rec
        # a recorded offset past this device's region wraps round it (by whole 4 KiB, so alignment holds)
        span = max((device.region_bytes - self.bs) // 4096 * 4096, 4096)
        offsets = np.ascontiguousarray(
            device.region_offset
            + np.where(
                arrivals.offsets + arrivals.lens <= device.region_bytes, arrivals.offsets, arrivals.offsets % span
            )
        )
        self._chunk = (
            offsets,
            arrivals.ops,
            arrivals.lens,
            ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("int32_t[]", arrivals.ops),
            ffi.from_buffer("int32_t[]", arrivals.lens),
            ffi.new("int32_t[]", iodepth),
        )  # C reads them: keep them alive
        g.chunk_offsets, g.chunk_ops, g.chunk_lens, g.vq_lens = self._chunk[3:]
        if arrivals.hold_ns is not None:
            self._hold = (ffi.from_buffer("int64_t[]", arrivals.hold_ns), ffi.new("int64_t[]", iodepth))
            g.chunk_hold, g.vq_hold = self._hold
        g.chunk_len, g.chunk_pos = arrivals.nr_requests, 0
        device.attach_guest(device.bs, self.index, self._rec)

    def start(self, t0_ns: int | None = None) -> None:
        """Arrival times count from `t0_ns` (time.monotonic_ns(); default: now)."""
        self._t0_ns = monotonic_ns() if t0_ns is None else t0_ns
        if self.arrivals.queue_at_ns is not None and isinstance(self.device, VirtioBlk):
            self.device.pace = self._t0_ns + self.arrivals.queue_at_ns
        self._arm()

    def _arm(self) -> None:
        if self._next < len(self.arrivals.at_ns) and not self._rec.stopped:
            self.device.loop.timer_at(self._t0_ns + int(self.arrivals.at_ns[self._next]), self._arrive)

    def _arrive(self) -> None:
        self._next += 1
        self._rec.max_requests = int(self._cum[self._next])
        self._refill()
        self._arm()

    def _refill(self) -> None:
        if lib.pt_refill(self._driver.state, self.index) > 0:
            self.device.guest_notify()

    @property
    def finished(self) -> bool:
        g = self._rec
        return g.outstanding == 0 and (bool(g.stopped) or g.issued >= self.arrivals.nr_requests)
