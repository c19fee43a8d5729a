"""Data integrity: read back what a write workload wrote and check the pattern.

Writes carry a pattern that depends only on the byte offset and the run's seed
(`pt_fill_pattern`), so whichever write to a block landed last, the block must
hold that pattern; no copy of the data is kept.
"""

from __future__ import annotations

import mmap

import numpy as np

from ..uring import Ring
from ..uring._binding import ffi, lib

__all__ = ["verify_blocks"]

_BATCH = 64


def verify_blocks(fd: int, written: np.ndarray, bs: int, seed: int, max_report: int = 10) -> dict:
    """Read every block flagged in `written` (one flag per `bs` bytes) and check it.

    Returns ``{"checked_blocks", "mismatches", "mismatch_offsets"}`` (byte
    offsets of the first `max_report` bad blocks). Ctrl-C or SIGTERM stops it:
    the result then says ``"interrupted": True``, counts the blocks checked by
    then, and gives in ``of_blocks`` how many there were to check.
    """
    blocks = np.flatnonzero(written)
    bad: list[int] = []
    progress = {"counts": (0, 0)}  # (checked, mismatches), stored together
    try:
        _verify(fd, blocks, bs, seed, bad, max_report, progress)
    except KeyboardInterrupt:  # SIGTERM too: record raises a subclass of it
        checked, mismatches = progress["counts"]
        return {
            "checked_blocks": checked,
            "of_blocks": int(len(blocks)),
            "mismatches": mismatches,
            "mismatch_offsets": bad,
            "interrupted": True,
        }
    checked, mismatches = progress["counts"]
    return {"checked_blocks": checked, "mismatches": mismatches, "mismatch_offsets": bad}


def _verify(
    fd: int,
    blocks: np.ndarray,
    bs: int,
    seed: int,
    bad: list[int],
    max_report: int,
    progress: dict[str, tuple[int, int]],
) -> None:
    """Check `blocks` in batches of reads, counting into `progress` as it goes."""
    bufs = mmap.mmap(-1, bs * _BATCH)
    base = ffi.from_buffer(bufs)
    with Ring(_BATCH) as ring:
        for start in range(0, len(blocks), _BATCH):
            chunk = blocks[start : start + _BATCH]
            for i, block in enumerate(chunk):
                sqe = lib.io_uring_get_sqe(ring.ptr)
                lib.io_uring_prep_read(sqe, fd, base + i * bs, bs, int(block) * bs)
                lib.io_uring_sqe_set_data64(sqe, i)
            ring.submit_and_wait(len(chunk))
            done = 0
            while done < len(chunk):
                if not ring.cq_ready():
                    ring.wait()
                for c in ring.peek_batch():
                    done += 1
                    offset = int(chunk[c.user_data]) * bs
                    ok = c.res == bs and lib.pt_check_pattern(base + c.user_data * bs, bs, offset, seed) < 0
                    if not ok and len(bad) < max_report:
                        bad.append(offset)
                    # one store per block, so an interruption never finds a block counted as checked
                    # and not as bad, or the other way round
                    checked, mismatches = progress["counts"]
                    progress["counts"] = (checked + 1, mismatches + (not ok))
