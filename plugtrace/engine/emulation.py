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

from .driver import OP_READ, OP_WRITE, IoUringDriver
from .eventloop import EventLoop
from .strategies import Strategy

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

    def guest_submit(self, op: int, offset: int, nbytes: int, done: Callable[[int, int], None]) -> None:
        raise NotImplementedError

    def describe(self, thread: int) -> dict:
        return {"index": self.index, "name": f"{self.kind}{self.index}", "kind": self.kind, "thread": thread}


class VirtioBlk(Device):
    kind = "virtio-blk"

    def __init__(self, *args, interleave: float = 0.0, rng: random.Random | None = None, sync_bytes: int = 4096):
        super().__init__(*args)
        self.vq: deque = deque()
        self.bh = self.loop.bh_new(self.handle_vq)
        self.in_handler = False
        self.interleave = interleave
        self.rng = rng or random.Random(0)
        self.sync_bytes = sync_bytes
        self.sync_reads = 0

    def guest_submit(self, op, offset, nbytes, done):
        self.vq.append((op, offset, nbytes, done))
        if not self.in_handler:
            self.bh.schedule()

    def handle_vq(self) -> None:
        self.in_handler = True
        strategy = self.strategy
        try:
            strategy.handler_begin(self)
            try:
                if self.interleave and self.loop.depth == 1 and self.rng.random() < self.interleave:
                    self._synchronous_read()
                submit = self.driver.submit_request
                fd, index, vq = self.fd, self.index, self.vq
                while vq:
                    op, offset, nbytes, done = vq.popleft()
                    submit(fd, op, offset, nbytes, index, done)
            finally:
                strategy.handler_end(self)
        finally:
            self.in_handler = False
        # Notifications are back on: requests the guest queued while the
        # section ended (completions run there) need another pass.
        if self.vq:
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

    def guest_submit(self, op, offset, nbytes, done):
        self.pending.append((op, offset, nbytes, done))
        self.bh.schedule()

    def handle_pio(self) -> None:
        # No plug section: outside anyone else's section the driver submits at once.
        while self.pending:
            op, offset, nbytes, done = self.pending.popleft()
            self.driver.submit_request(self.fd, op, offset, nbytes, self.index, done)


DEVICE_KINDS: dict[str, type[Device]] = {"virtio-blk": VirtioBlk, "ide": Ide}


class Guest:
    """A closed-loop workload on one device: keeps `iodepth` requests outstanding."""

    def __init__(
        self,
        device: Device,
        iodepth: int,
        block_bytes: int,
        rw: str,
        read_fraction: float,
        max_requests: int | None,
        rng: random.Random,
        on_written: Callable[[int], None] | None = None,
    ):
        self.device = device
        self.iodepth = iodepth
        self.bs = block_bytes
        self.random_offsets = rw.startswith("rand")
        self.read_fraction = read_fraction
        self.max_requests = max_requests
        self.rng = rng
        self.nblocks = device.region_bytes // block_bytes
        self.next_block = 0
        self.issued = 0
        self.completed = 0
        self.outstanding = 0
        self.errors = 0
        self.first_error = 0
        self.stopped = False
        self.on_written = on_written
        self._done = self._complete
        # The guest reacts to completions later, as a vCPU does after an
        # interrupt: refilling from inside the completion callback would let
        # one handler run forever on a fast device.
        self._refill_bh = device.loop.bh_new(self._refill)

    def start(self) -> None:
        self._refill()

    def _refill(self) -> None:
        while self.outstanding < self.iodepth and not self.stopped:
            if self.max_requests is not None and self.issued >= self.max_requests:
                return
            self._issue()

    def stop(self) -> None:
        self.stopped = True

    def _issue(self) -> None:
        if self.random_offsets:
            block = self.rng.randrange(self.nblocks)
        else:
            block = self.next_block
            self.next_block = (block + 1) % self.nblocks
        rf = self.read_fraction
        op = OP_READ if rf >= 1.0 or (rf > 0.0 and self.rng.random() < rf) else OP_WRITE
        self.issued += 1
        self.outstanding += 1
        offset = self.device.region_offset + block * self.bs
        if op == OP_WRITE and self.on_written is not None:
            self.on_written(offset)
        self.device.guest_submit(op, offset, self.bs, self._done)

    def _complete(self, slot: int, res: int) -> None:
        self.outstanding -= 1
        self.completed += 1
        if res < 0:
            self.errors += 1
            self.first_error = self.first_error or res
        self._refill_bh.schedule()

    @property
    def finished(self) -> bool:
        return self.outstanding == 0 and (
            self.stopped or (self.max_requests is not None and self.issued >= self.max_requests)
        )
