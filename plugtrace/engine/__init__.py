"""The batching engine: event loop, io_uring driver, strategies, emulated devices."""

from .driver import MAX_ENTRIES, IoUringDriver
from .eventloop import EventLoop
from .run import RW_MODES, WorkloadConfig, WorkloadResult, run_workload
from .strategies import STRATEGIES

__all__ = ["EventLoop", "IoUringDriver", "MAX_ENTRIES", "STRATEGIES", "RW_MODES",
           "WorkloadConfig", "WorkloadResult", "run_workload"]
