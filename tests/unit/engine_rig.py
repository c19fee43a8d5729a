"""One emulated virtio-blk device on one engine thread, driven to the end by a guest of the test's
choosing, through real io_uring (QEMU's ring setup) on the `direct_file` fixture's O_DIRECT file."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plugtrace.engine.driver import IoUringDriver
from plugtrace.engine.emulation import ReplayGuest, VirtioBlk
from plugtrace.engine.eventloop import EventLoop
from plugtrace.engine.strategies import make_strategy

K = 4096


@dataclass
class Ran:
    requests: pd.DataFrame  # by req_id
    submits: pd.DataFrame  # by submit_seq
    t0_ns: int  # when the guest started (time.monotonic_ns())
    completed: int


def drive(
    fd: int,
    size: int,
    guest_for: Callable[[VirtioBlk], object],
    *,
    merge: bool = False,
    nslots: int = 256,
    pattern_seed: int | None = None,
    strategy: str = "defer",
) -> Ran:
    """Run the guest `guest_for(device)` makes until it is finished; its logs as DataFrames."""
    logs: dict[str, list] = collections.defaultdict(list)
    loop = EventLoop()
    strat = make_strategy(strategy)
    driver = IoUringDriver(loop, strat, 0, nslots, K, lambda name, rows: logs[name].append(rows), ring_setup="plain")
    if pattern_seed is not None:
        driver.pattern_seed = pattern_seed
    dev = VirtioBlk(0, loop, driver, strat, fd, 0, size, merge=merge)
    guest = guest_for(dev)
    t0 = time.monotonic_ns()
    if isinstance(guest, ReplayGuest):
        guest.start(t0)
    else:
        guest.start()  # type: ignore[attr-defined]
    while not guest.finished:  # type: ignore[attr-defined]
        loop.aio_poll(True)
    assert guest.errors == 0 and driver.in_flight == 0  # type: ignore[attr-defined]
    completed = guest.completed  # type: ignore[attr-defined]
    driver.close()
    loop.close()

    def frame(name: str, key: str) -> pd.DataFrame:
        if not logs[name]:
            return pd.DataFrame()
        return pd.DataFrame(np.concatenate(logs[name])).sort_values(key, ignore_index=True)

    return Ran(frame("requests", "req_id"), frame("submits", "submit_seq"), t0, completed)
