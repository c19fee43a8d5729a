"""Options `record` and `qemu` share, declared once: the device, the I/O pattern, tracing, output.

Each function adds its options to an argparse group; what differs between the commands (a default, a
word of help) is a parameter.
"""

from __future__ import annotations

import argparse

__all__ = ["add_device", "add_pattern", "add_tracing", "add_output", "MODES"]

MODES = ("aggregate", "events", "off")


def add_device(g: argparse._ArgumentGroup, who: str) -> None:
    """--device, --size, --sparse, --allow-write; `who` writes to the device ("a write workload", "the guest")."""
    g.add_argument(
        "--device",
        default="loop",
        help="loop | loop:DIR (its file in DIR, e.g. loop:/dev/shm: over memory) | zram | file:PATH | /dev/NAME "
        "(default: loop, its file in /var/tmp)",
    )
    g.add_argument("--size", default="1G", help="size of a device we create (default: 1G)")
    g.add_argument(
        "--sparse",
        action="store_true",
        help="loop: leave the backing file sparse instead of filling it with data first (holes read "
        "as zeros from no storage: faster than any real disk)",
    )
    g.add_argument(
        "--allow-write",
        action="store_true",
        help=f"let {who} write to a device you named (its data is destroyed)",
    )


def add_pattern(
    g: argparse._ArgumentGroup, rw: tuple[str, ...], iodepth: int, iodepth_help: str, duration: float | None
) -> None:
    """--rw, --bs, --rwmixread, --iodepth, --duration (`duration` None: the command decides; shown as 5)."""
    g.add_argument("--rw", default="randread", choices=rw, help="default: randread")
    g.add_argument("--bs", type=int, default=4096, help="block size in bytes, a multiple of 512 (default: 4096)")
    g.add_argument("--rwmixread", type=int, default=50, help="percent reads for rw / randrw (default: 50)")
    g.add_argument("--iodepth", type=int, default=iodepth, help=f"{iodepth_help} (default: {iodepth})")
    shown = 5 if duration is None else f"{duration:g}"
    g.add_argument("--duration", type=float, default=duration, help=f"seconds the workload runs (default: {shown})")


def add_tracing(g: argparse._ArgumentGroup, events: str, per_probe: bool, baseline: str) -> None:
    """--mode, --max-events, --measure-overhead; `events` says what events mode records, `baseline` what
    --measure-overhead runs untraced first."""
    g.add_argument(
        "--mode",
        default="aggregate",
        choices=MODES,
        help=f"aggregate: histograms and counters in the kernel (cheap, default); events: one row per event "
        f"({events}, bounded); off: no kernel-side tracing",
    )
    g.add_argument(
        "--max-events",
        type=int,
        default=5_000_000,
        help=f"events mode: keep at most this many events{' per probe' if per_probe else ''}, count the rest as lost",
    )
    g.add_argument(
        "--measure-overhead",
        action="store_true",
        help=f"run {baseline} untraced first, then traced, and store both IOPS and the ratio",
    )


def add_output(g: argparse._ArgumentGroup, default: str) -> None:
    """-o/--output (`default`: where the run goes without it) and --quiet."""
    g.add_argument("-o", "--output", default=None, help=f"run directory (default: {default})")
    g.add_argument("--quiet", action="store_true", help="no progress display")
