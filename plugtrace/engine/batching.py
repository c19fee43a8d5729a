"""What a strategy and the io_uring driver see of each other, as Protocols.

The driver calls a strategy's hooks; a strategy reads the driver's counters and asks it to
submit; a device-plug strategy counts plugs on the device. Naming those views here (not the
classes) keeps `driver`, `strategies` and `emulation` from importing one another in a circle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from .eventloop import EventLoop

__all__ = ["Submitter", "PluggableDevice", "Batching", "DevicePlugState", "shared_plugs"]


class Submitter(Protocol):
    """The io_uring driver's state a strategy decides on (QEMU's LuringState)."""

    loop: EventLoop
    in_queue: int  #: requests prepared, not yet submitted
    in_flight: int  #: requests submitted, not yet completed
    blocked: bool  #: the ring is full: submit once completions free room
    plugged: int  #: device-plug: devices whose plug reached this driver
    thread: int  #: the engine thread it belongs to

    def remote_unplug(self, by_thread: int) -> None:
        """On its own thread: submit what is queued if no plug holds it now (another thread unplugged)."""
        ...

    def ioq_submit(self, reason: str) -> int:
        """Submit what is queued in one io_uring_enter(); returns the SQEs submitted."""
        ...


class PluggableDevice(Protocol):
    """A device as the plug strategies see it (QEMU's BlockDriverState)."""

    index: int
    plug: DevicePlugState  #: device-plug: the device's plug, shared by every thread serving its queues

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


class DevicePlugState:
    """One device's plug for the device-plug strategy: QEMU's per-BlockDriverState `io_plugged`.

    With one queue per device only the device's own thread touches it, as in QEMU. With a device's
    queues on several threads (`--queues`), every one of them plugs and unplugs this one counter, so
    it is changed under `lock` (one lock for the workload: it also guards the drivers' `plugged`), and
    the first plug holds the queued requests of every thread serving the device until the last unplug,
    which submits its own thread's and asks each other thread to submit its own
    (`Submitter.remote_unplug`, through that thread's event loop): a ring is only entered by its thread.
    """

    __slots__ = ("io_plugged", "drivers", "lock", "by_thread", "overlaps")

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.io_plugged = 0
        #: the drivers of the threads serving the device (one per thread)
        self.drivers: list[Submitter] = []
        #: None: one thread serves every device with a plug; else the workload's plug lock
        self.lock = lock
        #: each serving thread's own plug nesting on this device
        self.by_thread: dict[int, int] = {}
        #: plugs made while another thread held the device's plug: where QEMU 8.0's code, whose plug
        #: reached only the plugging thread's LuringState, would unplug a ring that was never plugged
        self.overlaps = 0

    def add_driver(self, driver: Submitter) -> None:
        if self.lock is not None:
            with self.lock:
                if driver not in self.drivers:
                    self.drivers.append(driver)
                    self.by_thread[driver.thread] = 0
        elif driver not in self.drivers:
            self.drivers.append(driver)


def shared_plugs(queue_placement: list[tuple[int, int, int]]) -> dict[int, DevicePlugState]:
    """Each device's plug, from its `(device, queue, thread)` placement: locked when any device is served
    by more than one thread."""
    threads: dict[int, set[int]] = {}
    for device, _, thread in queue_placement:
        threads.setdefault(device, set()).add(thread)
    lock = threading.Lock() if any(len(t) > 1 for t in threads.values()) else None
    return {device: DevicePlugState(lock) for device in threads}
