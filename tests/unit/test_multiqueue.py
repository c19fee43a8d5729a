"""Several virtqueues per device: where they run, and device-plug's plug shared by the threads serving them.

The constructed case drives two engine threads' event loops and drivers from the test's own thread, in
an order chosen by hand, through real io_uring on an O_DIRECT file."""

import collections

import numpy as np
import pandas as pd
import pytest

from plugtrace.engine import WorkloadConfig, records
from plugtrace.engine.batching import shared_plugs
from plugtrace.engine.driver import IoUringDriver
from plugtrace.engine.emulation import Guest, VirtioBlk
from plugtrace.engine.eventloop import EventLoop
from plugtrace.engine.strategies import make_strategy
from plugtrace.errors import UsageError

K = 4096


def test_one_queue_per_device_places_devices_as_before():
    c = WorkloadConfig(devices=3, ide_devices=1, threads=2)
    assert c.queue_placement() == [(0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 0, 2)]
    assert c.engine_threads == 3


def test_queues_rotate_over_the_threads_unless_mapped():
    c = WorkloadConfig(devices=2, queues=2, threads=2)
    assert c.queue_placement() == [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    mapped = WorkloadConfig(devices=2, queues=3, threads=2, vq_mapping=(1, 1, 0))
    assert mapped.queue_placement() == [(0, 0, 1), (0, 1, 1), (0, 2, 0), (1, 0, 1), (1, 1, 1), (1, 2, 0)]
    # every device's queues on several threads: device-plug's plug is then shared and locked
    plugs = shared_plugs(c.queue_placement())
    assert set(plugs) == {0, 1} and all(p.lock is plugs[0].lock is not None for p in plugs.values())
    assert all(p.lock is None for p in shared_plugs(WorkloadConfig(devices=2, threads=2).queue_placement()).values())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"queues": 0}, "--queues: between 1 and 16"),
        ({"queues": 2, "device_kind": "ide"}, "only virtio-blk"),
        ({"queues": 2, "threads": 2, "vq_mapping": (0,)}, "one thread per queue"),
        ({"queues": 2, "threads": 2, "vq_mapping": (0, 2)}, "numbered 0 to 1"),
        ({"queues": 2, "threads": 2, "vq_mapping": (1, 1)}, "every thread"),
        ({"queues": 2, "threads": 3}, "more threads than"),
    ],
)
def test_bad_queue_settings_name_the_option(fields, message):
    with pytest.raises(UsageError, match=message):
        WorkloadConfig(**fields).validate()


class _Thread:
    """One engine thread's loop, driver and its queue of device 0, logging into `logs`."""

    def __init__(self, index, queue, strategy, plugs, fd, logs, depth):
        self.loop = EventLoop()
        self.loop.enable_remote()
        self.driver = IoUringDriver(
            self.loop, strategy, index, 64, K, lambda name, rows: logs[name].append(rows), ring_setup="plain"
        )
        self.dev = VirtioBlk(0, self.loop, self.driver, strategy, fd, 0, 1 << 20)
        self.dev.queue = queue
        self.dev.plug = plugs[0]
        self.dev.plug.add_driver(self.driver)
        self.guest = Guest(self.dev, depth, K, "randread", 1.0, depth, seed=index)

    def queue(self, n):
        """The handler takes `n` of its guest's available requests (its section is open)."""
        self.driver.submit_from_guest(self.dev.guest, n, self.dev.fd, K, 0)


def _two_threads(strategy_name, fd):
    """Queues 0 and 1 of device 0 on threads 0 and 1 (2 and 3 requests available), and their logs. The
    handler BHs are never run: the test calls the handler's parts itself, in the order it chooses."""
    logs = collections.defaultdict(list)
    strategy = make_strategy(strategy_name)
    plugs = shared_plugs([(0, 0, 0), (0, 1, 1)])
    a, b = _Thread(0, 0, strategy, plugs, fd, logs, 2), _Thread(1, 1, strategy, plugs, fd, logs, 3)
    for t in (a, b):
        t.guest.start()
    return strategy, plugs[0], a, b, logs


def _close(*threads):
    for t in threads:
        t.driver.close()
        t.loop.close()


def _frames(logs):
    return {name: pd.DataFrame(np.concatenate(rows)) for name, rows in logs.items()}


def test_device_plug_one_threads_plug_holds_the_other_threads_requests_until_its_last_unplug(direct_file):
    strategy, plug, a, b, logs = _two_threads("device-plug", direct_file)
    strategy.handler_begin(a.dev)  # A's section plugs the device: both threads' drivers hold
    assert (plug.io_plugged, a.driver.plugged, b.driver.plugged) == (1, 1, 1)
    strategy.handler_begin(b.dev)  # B's plug finds A's: QEMU 8.0's per-thread LuringState plug would break here
    assert (plug.io_plugged, plug.overlaps) == (2, 1)
    b.queue(3)
    strategy.handler_end(b.dev)  # not the last unplug: B's three stay queued
    assert (b.driver.in_queue, b.driver.in_flight) == (3, 0)
    a.queue(2)
    strategy.handler_end(a.dev)  # the last: A submits its own two, and asks B to submit its three
    assert (a.driver.in_queue, a.driver.in_flight + a.guest.completed) == (0, 2)
    assert (plug.io_plugged, a.driver.plugged, b.driver.plugged, b.driver.in_queue) == (0, 0, 0, 3)
    while b.driver.in_queue or b.driver.in_flight or a.driver.in_flight:
        b.loop.aio_poll(True)
        a.loop.aio_poll(False)
    assert b.loop.remote_calls == 1
    _close(a, b)
    f = _frames(logs)
    subs = f["submits"]
    reasons = records.columns("submits", np.concatenate(logs["submits"]))["reason"]
    assert sorted(zip(subs.thread, reasons, subs.nr_sqes)) == [
        (0, "unplug", 2),
        (1, "remote_unplug", 3),
    ]
    reqs = f["requests"]
    assert sorted(zip(reqs.thread, reqs.queue, reqs.deferred_by_thread)) == [(0, 0, -1)] * 2 + [(1, 1, 0)] * 3


def test_defer_keeps_each_threads_section_its_own(direct_file):
    strategy, plug, a, b, logs = _two_threads("defer", direct_file)
    strategy.handler_begin(a.dev)
    a.queue(2)
    strategy.handler_end(a.dev)  # A's section alone decides A's submit, whatever B does
    strategy.handler_begin(b.dev)
    b.queue(3)
    strategy.handler_end(b.dev)
    assert a.driver.in_queue == b.driver.in_queue == 0 and plug.io_plugged == 0
    while a.driver.in_flight or b.driver.in_flight:
        a.loop.aio_poll(False)
        b.loop.aio_poll(False)
    assert a.loop.remote_calls == b.loop.remote_calls == 0
    _close(a, b)
    f = _frames(logs)
    assert sorted(zip(f["submits"].thread, f["submits"].nr_sqes)) == [(0, 2), (1, 3)]
    assert (f["requests"].deferred_by_thread == -1).all()


def test_the_command_line_names_a_bad_mapping(tmp_path):
    import subprocess

    from tests.helpers import PLUGTRACE

    out = tmp_path / "run"
    p = subprocess.run([*PLUGTRACE, "record", "--vq-mapping", "0,x", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and "--vq-mapping" in p.stderr and "thread numbers" in p.stderr
    device = f"file:{tmp_path / 'disk'}"
    args = ["record", "--device", device, "--queues", "2", "--threads", "2", "--vq-mapping", "0,0", "-o", str(out)]
    p = subprocess.run([*PLUGTRACE, *args], capture_output=True, text=True)
    assert p.returncode == 2 and "--vq-mapping: every thread" in p.stderr
    assert not out.exists() and not (tmp_path / "disk").exists()  # refused before anything was made
