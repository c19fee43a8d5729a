"""Integration tests run as root on real devices with real bpftrace.

`require(cond, why)`: in CI (env CI set) a missing capability fails the test,
elsewhere it skips with the reason, so CI can never pass by skipping.
"""

import os
import shutil

import pytest


def require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to run this test: {why}")
    pytest.skip(why)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (real loop/zram devices, bpftrace)")


def require_bpftrace() -> None:
    require_root()
    require(shutil.which("bpftrace") is not None, "bpftrace is not installed")


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
