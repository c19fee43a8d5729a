"""Fixtures of the integration tests, which run as root on real devices with real bpftrace
(the capability checks they use are in tests/helpers.py)."""

import pytest

from tests.helpers import require_root


@pytest.fixture
def root():
    require_root()


@pytest.fixture
def loop_device():
    """A loop device with direct I/O created for the test and always removed."""
    require_root()
    from plugtrace import devices

    target = devices.create_loop(256 << 20)
    try:
        yield target
    finally:
        target.close()


@pytest.fixture
def zram_device():
    require_root()
    from plugtrace import devices

    target = devices.create_zram(256 << 20)
    try:
        yield target
    finally:
        target.close()
