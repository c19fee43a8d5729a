"""Which engine thread each emulated device runs on (WorkloadConfig.placement), as QEMU places them."""

import pytest

from plugtrace.engine import WorkloadConfig
from plugtrace.errors import UsageError


@pytest.mark.parametrize(
    "devices, ide, threads, ide_thread, placement",
    [
        (1, 0, 1, "main", [0]),
        (4, 0, 2, "main", [0, 1, 0, 1]),
        (2, 1, 1, "main", [0, 0, 1]),  # IDE in the main loop, a thread of its own
        (3, 2, 2, "main", [0, 1, 0, 2, 2]),  # every IDE device in the one main loop
        (0, 2, 1, "main", [0, 0]),  # IDE only: the main loop is the only thread
        (2, 1, 1, "shared", [0, 0, 0]),  # spread with the virtio-blk devices (not QEMU)
        (2, 1, 3, "shared", [0, 1, 2]),
    ],
)
def test_devices_are_placed_as_qemu_places_them(devices, ide, threads, ide_thread, placement):
    cfg = WorkloadConfig(devices=devices, ide_devices=ide, threads=threads, ide_thread=ide_thread)
    cfg.validate()
    assert cfg.placement() == placement
    assert cfg.engine_threads == max(placement) + 1


def test_more_iothreads_than_virtio_devices_is_refused_when_ide_runs_in_the_main_loop():
    with pytest.raises(UsageError, match="more iothreads than virtio-blk devices"):
        WorkloadConfig(devices=1, ide_devices=1, threads=2).validate()
    WorkloadConfig(devices=1, ide_devices=1, threads=2, ide_thread="shared").validate()


def test_an_unknown_ide_thread_is_refused():
    with pytest.raises(UsageError, match="--ide-thread: choose from main, shared"):
        WorkloadConfig(ide_devices=1, ide_thread="iothread").validate()
