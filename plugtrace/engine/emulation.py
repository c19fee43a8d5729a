"""Emulated guest devices and the closed-loop guests that drive them.

* `VirtioBlk`: the guest puts requests on a virtqueue and kicks; the device's
  handler (a bottom half, standing in for the ioeventfd handler) drains the
  whole queue inside a plug section, as QEMU's virtio_blk_handle_vq() does. While
  the handler runs, kicks are not delivered (virtio notification suppression);
  the handler picks the new requests up before it returns.
* `Ide`: one request at a time and no plug section: its requests go straight
  to the driver, and are deferred only when they happen to be issued inside
  another device's section.
* `Guest`: a closed loop per device: `iodepth` requests outstanding, a new one
  issued when one completes, until a request count or deadline.

The aio_poll interleaving knob: with probability `interleave`, a virtio-blk
handler begins with a synchronous read (think of a metadata read) and calls
`aio_poll()` until it completes, so other devices' handlers run inside its
section and their deferred calls join it.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable

import numpy as np

from .. import plug
from ..uring._binding import lib
from .driver import OP_READ, OP_WRITE, IoUringDriver
from .eventloop import EventLoop
from .strategies import Strategy

now_ns = lib.pt_now_ns

__all__ = ["Device", "VirtioBlk", "Ide", "Guest", "DEVICE_KINDS"]


class Device:
    """Common state of an emulated block device on one engine thread."""

    kind = ""

    def __init__(
        self, index: int, loop: EventLoop, driver: IoUringDriver, strategy: Strategy, fd: int,
        region_offset: int, region_bytes: int,
    ):
        self.index = index
        self.loop = loop
        self.driver = driver
        self.strategy = strategy
        self.fd = fd
        self.region_offset = region_offset
        self.region_bytes = region_bytes
        #: device-plug strategy: this device's own plug count (bdrv_io_plug)
        self.io_plugged = 0
        #: called with (device, begin_ns, end_ns, outermost section id, its owner) after each handler run
        self.on_handler: Callable[[int, int, int, int, int], None] | None = None
        self.bs = 0
        self.done: Callable[[int, int], None] | None = None

    def attach_guest(self, bs: int, done: Callable[[int, int], None]) -> None:
        """The guest using this device: its block size and completion callback."""
        self.bs = bs
        self.done = done

    def guest_submit(self, ops: list[int], offsets: list[int]) -> None:
        """The guest made requests `(ops[i], offsets[i])` available and notified the device."""
        raise NotImplementedError

    def describe(self, thread: int) -> dict:
        return {"index": self.index, "name": f"{self.kind}{self.index}", "kind": self.kind, "thread": thread}


class VirtioBlk(Device):
    kind = "virtio-blk"

    def __init__(self, *args, interleave: float = 0.0, rng: random.Random | None = None, sync_bytes: int = 4096):
        super().__init__(*args)
        #: the virtqueue: requests the guest made available, as (ops, offsets)
        self.vq_ops: list[int] = []
        self.vq_offsets: list[int] = []
        self.bh = self.loop.bh_new(self.handle_vq)
        self.in_handler = False
        self.interleave = interleave
        self.rng = rng or random.Random(0)
        self.sync_bytes = sync_bytes
        self.sync_reads = 0

    def guest_submit(self, ops, offsets):
        self.vq_ops.extend(ops)
        self.vq_offsets.extend(offsets)
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
                while self.vq_ops:
                    ops, offsets = self.vq_ops, self.vq_offsets
                    self.vq_ops, self.vq_offsets = [], []
                    self.driver.submit_requests(self.fd, ops, offsets, self.bs, self.index, self.done)
            finally:
                # the handler's own section ends here: inside another device's section, this is when its
                # requests would have left had that section not been open (the delay interleaving causes)
                if self.on_handler is not None:
                    self.on_handler(self.index, begin_ns, now_ns(), *section)
                strategy.handler_end(self)
        finally:
            self.in_handler = False
        # Notifications are back on: requests the guest queued while the
        # section ended (completions run there) need another pass.
        if self.vq_ops:
            self.bh.schedule()

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


class Ide(Device):
    kind = "ide"

    def __init__(self, *args, **_ignored):
        super().__init__(*args)
        self.pending: deque = deque()
        self.bh = self.loop.bh_new(self.handle_pio)

    def guest_submit(self, ops, offsets):
        self.pending.extend(zip(ops, offsets))
        self.bh.schedule()

    def handle_pio(self) -> None:
        # No plug section: outside anyone else's section the driver submits at once.
        while self.pending:
            op, offset = self.pending.popleft()
            self.driver.submit_request(self.fd, op, offset, self.bs, self.index, self.done)


DEVICE_KINDS: dict[str, type[Device]] = {"virtio-blk": VirtioBlk, "ide": Ide}


class Guest:
    """A closed-loop workload on one device: keeps `iodepth` requests outstanding.

    Offsets and read/write choices are drawn in chunks with numpy, so issuing a
    request costs no per-request random-number call.
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
        on_written: Callable[[np.ndarray], None] | None = None,
    ):
        self.device = device
        self.iodepth = iodepth
        self.bs = block_bytes
        self.random_offsets = rw.startswith("rand")
        self.read_fraction = read_fraction
        self.max_requests = max_requests
        self.rng = np.random.default_rng(seed)
        self.nblocks = device.region_bytes // block_bytes
        self.next_block = 0
        self.issued = 0
        self.completed = 0
        self.outstanding = 0
        self.errors = 0
        self.first_error = 0
        self.stopped = False
        self.on_written = on_written if read_fraction < 1.0 else None
        self._pos = 0
        self._offsets_np = np.empty(0, dtype=np.int64)
        self._ops_np = np.empty(0, dtype=np.int32)
        self._offsets: list[int] = []
        self._ops: list[int] = []
        device.attach_guest(block_bytes, self._complete)
        # The guest reacts to completions later, as a vCPU does after an
        # interrupt: refilling from inside the completion callback would let
        # one handler run forever on a fast device.
        self._refill_bh = device.loop.bh_new(self._refill)

    def _new_chunk(self) -> None:
        n = self._CHUNK
        if self.random_offsets:
            blocks = self.rng.integers(0, self.nblocks, n)
        else:
            blocks = (self.next_block + np.arange(n)) % self.nblocks
            self.next_block = int(blocks[-1] + 1) % self.nblocks
        self._offsets_np = self.device.region_offset + blocks.astype(np.int64) * self.bs
        rf = self.read_fraction
        if rf >= 1.0:
            self._ops_np = np.full(n, OP_READ, dtype=np.int32)
        elif rf <= 0.0:
            self._ops_np = np.full(n, OP_WRITE, dtype=np.int32)
        else:
            self._ops_np = np.where(self.rng.random(n) < rf, OP_READ, OP_WRITE).astype(np.int32)
        self._offsets = self._offsets_np.tolist()
        self._ops = self._ops_np.tolist()
        self._pos = 0

    def start(self) -> None:
        self._refill()

    def stop(self) -> None:
        self.stopped = True

    def _refill(self) -> None:
        n = self.iodepth - self.outstanding
        if self.max_requests is not None:
            n = min(n, self.max_requests - self.issued)
        if n <= 0 or self.stopped:
            return
        i = self._pos
        if i + n > len(self._offsets):
            self._new_chunk()
            i = 0
        j = self._pos = i + n
        self.issued += n
        self.outstanding += n
        self.device.guest_submit(self._ops[i:j], self._offsets[i:j])

    def _complete(self, slot: int, res: int) -> None:
        self.outstanding -= 1
        self.completed += 1
        if res < 0:
            self.errors += 1
            self.first_error = self.first_error or res
        elif self.on_written is not None:
            # a block counts as written, and is verified later, only once a write to it succeeded (its slot
            # cannot be reused before this returns: the guest queues new requests later, from a bottom half)
            req = self.device.driver.request(slot)
            if req.op == OP_WRITE:
                self.on_written(np.array([req.orig_offset], dtype=np.int64))
        bh = self._refill_bh
        if not bh.scheduled:
            bh.schedule()

    @property
    def finished(self) -> bool:
        return self.outstanding == 0 and (
            self.stopped or (self.max_requests is not None and self.issued >= self.max_requests)
        )
