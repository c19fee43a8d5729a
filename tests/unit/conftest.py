"""Fixtures of the unit tests that drive the engine through real io_uring on an O_DIRECT file."""

import os

import pytest


@pytest.fixture
def direct_file(request, tmp_path):
    """An O_DIRECT descriptor on a new file of the test module's SIZE bytes (default 8 MiB)."""
    path = tmp_path / "disk"
    with open(path, "wb") as f:
        f.truncate(getattr(request.module, "SIZE", 8 << 20))
    try:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    except OSError:
        pytest.skip("no O_DIRECT on this filesystem")
    yield fd
    os.close(fd)
