"""The batching engine: event loop, io_uring driver, strategies, emulated devices."""

from .driver import MAX_ENTRIES, RING_SETUPS, IoUringDriver
from .eventloop import POLL_MAX_NS, EventLoop
from .run import IDE_THREADS, RW_MODES, WorkloadConfig, WorkloadResult, run_workload
from .strategies import STRATEGIES

__all__ = [
    "EventLoop",
    "IDE_THREADS",
    "IoUringDriver",
    "MAX_ENTRIES",
    "POLL_MAX_NS",
    "RING_SETUPS",
    "STRATEGIES",
    "RW_MODES",
    "WorkloadConfig",
    "WorkloadResult",
    "run_workload",
]
