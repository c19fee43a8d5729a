"""What a strategy and the io_uring driver see of each other, as Protocols.

The driver calls a strategy's hooks; a strategy reads the driver's counters and asks it to
submit; a device-plug strategy counts plugs on the device. Naming those views here (not the
classes) keeps `driver`, `strategies` and `emulation` from importing one another in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .eventloop import EventLoop

__all__ = ["Submitter", "PluggableDevice", "Batching"]


class Submitter(Protocol):
    """The io_uring driver's state a strategy decides on (QEMU's LuringState)."""

    loop: EventLoop
    in_queue: int  #: requests prepared, not yet submitted
    in_flight: int  #: requests submitted, not yet completed
    blocked: bool  #: the ring is full: submit once completions free room
    plugged: int  #: device-plug: devices whose plug reached this driver

    def ioq_submit(self, reason: str) -> int:
        """Submit what is queued in one io_uring_enter(); returns the SQEs submitted."""
        ...


class PluggableDevice(Protocol):
    """A device as the plug strategies see it (QEMU's BlockDriverState)."""

    index: int
    io_plugged: int  #: device-plug: the device's plug nesting

    @property
    def driver(self) -> Submitter:
        """The driver of the device's event-loop thread."""
        ...


class Batching(Protocol):
    """A strategy, as the driver and device handlers call it (see `strategies.Strategy`)."""

    name: str

    def attach(self, driver: Submitter) -> None: ...

    def handler_begin(self, device: PluggableDevice) -> None: ...

    def handler_end(self, device: PluggableDevice) -> None: ...

    def on_queued(self, driver: Submitter) -> None: ...

    def queue_in_runs(self, driver: Submitter, n: int, queue: Callable[[int, int], None]) -> None: ...

    def submit_after_completions(self, driver: Submitter) -> bool: ...
