"""When a queued request leaves: the four batching strategies compared.

Every strategy sees the same devices: a virtio-blk-like handler always runs
inside a plug section (`defer_call_begin(owner)` ... `defer_call_end()`), as QEMU's
virtio-blk does, and an IDE-like device never opens one. They differ in what
the io_uring driver does with a queued request:

* `immediate`: submit it at once: one io_uring_enter() per request.
* `device-plug` (QEMU 8.0): the device handler plugs the driver through a
  per-device counter (`bdrv_io_plug`), the driver counts plugs in its shared
  state, and submits when the last plug is released or MAX_ENTRIES is reached.
  With a device's queues on several threads the counter is the device's, shared
  by them all (`batching.DevicePlugState`): one thread's section holds the
  others' requests for that device until the last unplug.
* `defer` (QEMU 8.1, `blk_io_plug_call()` / `defer_call()`): queue it and
  `defer_call(submit, driver)`; the thread-local section decides when.
* `loop-iteration` (the design of QEMU 10.2's `aio_add_sqe()`, later than the 10.0 run here): queue
  it; the event loop submits everything queued once per iteration, before it waits.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import plug
from .batching import PluggableDevice, Submitter
from .driver import MAX_ENTRIES

__all__ = ["Strategy", "STRATEGIES", "make_strategy"]


class Strategy:
    """What the driver and device handlers do differently under one strategy."""

    name = ""
    description = ""

    def attach(self, driver: Submitter) -> None:
        """Hook into the driver's event loop if the strategy needs to."""

    def handler_begin(self, device: PluggableDevice) -> None:
        """A plugging device's handler starts (virtio-blk: before draining the queue)."""
        plug.defer_call_begin(device.index)

    def handler_end(self, device: PluggableDevice) -> None:
        plug.defer_call_end()

    def on_queued(self, driver: Submitter) -> None:
        """A request was queued (`in_queue` already counts it)."""
        raise NotImplementedError

    def run_length(self, driver: Submitter) -> int:
        """How many requests may be queued in a row before `on_queued` would act
        on one other than the last: with 1 (always right) each request is heard of
        alone."""
        return 1

    def on_queued_run(self, driver: Submitter, k: int) -> None:
        """`k` requests (at most `run_length()`) were queued in a row: do what
        `on_queued` would have done after each of them."""
        self.on_queued(driver)

    def queue_in_runs(self, driver: Submitter, n: int, queue: Callable[[int, int], None]) -> None:
        """Queue `n` requests: `queue(i, k)` queues requests i .. i + k - 1
        (without counting them in `in_queue`), then the strategy hears of the run.

        Decides exactly as queueing them one at a time with `on_queued` after
        each, with one call per run instead of one per request."""
        i = 0
        while i < n:
            k = min(n - i, self.run_length(driver))
            queue(i, k)
            driver.in_queue += k
            i += k
            self.on_queued_run(driver, k)

    def submit_after_completions(self, driver: Submitter) -> bool:
        """Whether reaping completions should submit what is queued (QEMU: yes)."""
        return True


#: "any number": while the ring is blocked a queued request changes nothing
_UNBOUNDED = 1 << 30


def _room(driver: Submitter) -> int:
    """Requests that can be queued before the last of them reaches MAX_ENTRIES (at least 1)."""
    return max(1, MAX_ENTRIES - driver.in_flight - driver.in_queue)


class Immediate(Strategy):
    name = "immediate"
    description = "submit every request at once (one io_uring_enter per request)"

    def on_queued(self, driver):
        if not driver.blocked:
            driver.ioq_submit("immediate")

    def run_length(self, driver):
        return _UNBOUNDED if driver.blocked else 1


class DevicePlug(Strategy):
    name = "device-plug"
    description = "QEMU 8.0: plug counted per device and in the driver, submit at the last unplug"

    def handler_begin(self, device):
        super().handler_begin(device)
        p = device.plug
        if p.lock is not None:
            self._shared_plug(device, p)
            return
        p.io_plugged += 1
        if p.io_plugged == 1:  # bdrv_io_plug: only the first plug reaches the driver
            device.driver.plugged += 1

    def handler_end(self, device):
        p = device.plug
        if p.lock is not None:
            self._shared_unplug(device, p)
        else:
            p.io_plugged -= 1
            if p.io_plugged == 0:
                driver = device.driver
                driver.plugged -= 1
                if driver.plugged == 0 and not driver.blocked and driver.in_queue > 0:
                    driver.ioq_submit("unplug")
        super().handler_end(device)

    @staticmethod
    def _shared_plug(device, p):
        """A device served by several threads: the first plug, from whichever thread, holds them all."""
        me = device.driver.thread
        assert p.lock is not None
        with p.lock:
            if p.io_plugged > p.by_thread[me]:
                p.overlaps += 1  # another thread holds the plug
            p.io_plugged += 1
            p.by_thread[me] += 1
            if p.io_plugged == 1:
                for driver in p.drivers:
                    driver.plugged += 1

    @staticmethod
    def _shared_unplug(device, p):
        """The last unplug, on whichever thread, releases every serving thread's queue: its own at once,
        the others' through their event loops."""
        own = device.driver
        assert p.lock is not None
        with p.lock:
            p.io_plugged -= 1
            p.by_thread[own.thread] -= 1
            released = []
            if p.io_plugged == 0:
                for driver in p.drivers:
                    driver.plugged -= 1
                    released.append(driver)
        for driver in released:
            if driver is own:
                if driver.plugged == 0 and not driver.blocked and driver.in_queue > 0:
                    driver.ioq_submit("unplug")
            else:
                driver.loop.call_soon_threadsafe(lambda d=driver: d.remote_unplug(own.thread))

    def on_queued(self, driver):
        if not driver.blocked and (not driver.plugged or driver.in_flight + driver.in_queue >= MAX_ENTRIES):
            driver.ioq_submit("max_entries" if driver.plugged else "immediate")

    def run_length(self, driver):
        if driver.blocked:
            return _UNBOUNDED
        return _room(driver) if driver.plugged else 1

    def submit_after_completions(self, driver):
        return not driver.plugged


def _deferred_submit(driver: Submitter) -> None:
    """luring_deferred_fn(): the one deferred call per driver and section."""
    if not driver.blocked and driver.in_queue > 0:
        driver.ioq_submit("deferred")


class Defer(Strategy):
    name = "defer"
    description = "QEMU 8.1+: defer_call(submit, driver) joins the thread's open section"

    def on_queued(self, driver):
        if not driver.blocked:
            if driver.in_flight + driver.in_queue >= MAX_ENTRIES:
                driver.ioq_submit("max_entries")
            else:
                plug.defer_call(_deferred_submit, driver)

    def run_length(self, driver):
        if driver.blocked:
            return _UNBOUNDED
        # outside a section defer_call() submits at once
        return _room(driver) if plug.nesting_level() else 1

    def on_queued_run(self, driver, k):
        if k > 1 and not driver.blocked:
            # the first k - 1 requests' defer_call(): in a section, one call
            # stands for them all (the same fn and opaque are added once)
            plug.defer_call(_deferred_submit, driver)
        self.on_queued(driver)


class LoopIteration(Strategy):
    name = "loop-iteration"
    description = "QEMU 10.2's aio_add_sqe() design: submit what is queued once per event-loop iteration"

    def attach(self, driver):
        def submit_queued() -> None:
            if driver.in_queue > 0 and not driver.blocked:
                driver.ioq_submit("iteration")

        driver.loop.prepare_hooks.append(submit_queued)

    def on_queued(self, driver):
        if not driver.blocked and driver.in_flight + driver.in_queue >= MAX_ENTRIES:
            driver.ioq_submit("max_entries")

    def run_length(self, driver):
        return _UNBOUNDED if driver.blocked else _room(driver)


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Immediate, DevicePlug, Defer, LoopIteration)}


def make_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None
