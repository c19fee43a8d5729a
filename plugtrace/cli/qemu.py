"""plugtrace qemu: boot a real QEMU guest on a device, run a guest workload, trace QEMU's batching."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError

HELP = "boot a real QEMU guest (7.2 or 10.0) on a device and trace its plug / defer_call batching"
DESCRIPTION = """\
Boot a real QEMU guest whose disks are all on one block device (aio=io_uring, cache=none), run a
workload in the guest, and trace both sides: the kernel's io_uring and block probes filtered to
QEMU's process, and uprobes on QEMU's own functions (10.0: defer_call_begin / defer_call_end /
defer_call; 7.2: blk_io_plug / blk_io_unplug, luring_io_plug / luring_io_unplug; both:
aio_poll, virtio_blk_handle_vq, luring_co_submit). Writes a run directory like `plugtrace record`
does, so `plugtrace report` and the notebooks compare it with the model's runs.

QEMU versions (--qemu):
  7.2      Debian 12's qemu-system-x86: the per-BlockDriverState plug (before the defer_call API)
  10.0     bookworm-backports, unpacked under /opt/plugtrace/qemu-10.0: util/defer-call.c
  PATH     any qemu-system-x86_64, e.g. your own build; its design is read from its ELF symbol
           tables (.symtab and .dynsym), and a probe it has no function for is named, with why
Both are installed by ./scripts/install.sh, with the guest's kernel (Debian's linux-image-amd64)
and its initramfs (busybox-static and the workload, built and cached on first use).

Devices (--device), as for record: loop, zram, file:PATH, /dev/NAME (read-only unless
--allow-write; IDE disks on a read-only device are CD-ROM drives, since QEMU's IDE hard disks
cannot be read-only).

The guest runs with KVM where /dev/kvm really works (a timed test boot, cached) and with TCG
otherwise; the run says which (config.accel).

Examples:
  plugtrace qemu --qemu 10.0 --device loop --disks 2 --iodepth 16 --duration 5 -o runs/qemu10
  plugtrace qemu --qemu 7.2 --device zram --disks 2 --iothreads shared --ide-disks 1 -o runs/qemu72
"""

IOTHREADS = ("per-disk", "shared", "none")
RW = ("read", "randread", "write", "randwrite", "rw", "randrw")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guest")
    g.add_argument("--qemu", default="10.0", help="7.2 | 10.0 | PATH of a qemu-system-x86_64 (default: 10.0)")
    g.add_argument("--device", default="loop", help="loop | zram | file:PATH | /dev/NAME (default: loop)")
    g.add_argument("--size", default="1G", help="size of a device we create (default: 1G)")
    g.add_argument("--sparse", action="store_true", help="loop: leave the backing file sparse")
    g.add_argument(
        "--allow-write", action="store_true", help="let the guest write to a device you named (its data is destroyed)"
    )
    g.add_argument("--disks", type=int, default=1, help="virtio-blk disks, all on the device (default: 1)")
    g.add_argument(
        "--iothreads",
        default="per-disk",
        choices=IOTHREADS,
        help="per-disk: an iothread each; shared: one for all; none: QEMU's main loop (default: per-disk)",
    )
    g.add_argument("--ide-disks", type=int, default=0, help="IDE disks on the same device (default: 0)")
    g.add_argument(
        "--accel",
        default="auto",
        choices=("auto", "kvm", "tcg"),
        help="auto: KVM when a timed test boot with it works, else TCG (default: auto)",
    )
    w = p.add_argument_group("guest workload (per disk, like fio's)")
    w.add_argument("--rw", default="randread", choices=RW, help="default: randread")
    w.add_argument("--bs", type=int, default=4096, help="block size in bytes, a multiple of 512 (default: 4096)")
    w.add_argument("--rwmixread", type=int, default=50, help="percent reads for rw / randrw (default: 50)")
    w.add_argument("--iodepth", type=int, default=8, help="requests each job keeps in flight (default: 8)")
    w.add_argument("--jobs", type=int, default=1, help="threads per disk (default: 1)")
    w.add_argument("--duration", type=float, default=3.0, help="seconds the workload runs (default: 3)")
    t = p.add_argument_group("tracing")
    t.add_argument(
        "--mode",
        default="aggregate",
        choices=("aggregate", "events", "off"),
        help="aggregate: counters and histograms in the kernel (default); events: one row per "
        "event (sections, handlers, io_uring requests); off: the guest's own counts only",
    )
    t.add_argument(
        "--qemu-probes",
        default="on",
        choices=("on", "full", "off"),
        help="on: QEMU-side uprobes, in aggregate mode none per request but luring_co_submit (default); "
        "full: also the per-request ones (completions, notifications, requests popped), as events mode has; "
        "off: trace only the kernel side (what the QEMU-side uprobes cost is the difference)",
    )
    t.add_argument(
        "--max-events",
        type=int,
        default=5_000_000,
        help="events mode: keep at most this many events per probe, count the rest as lost",
    )
    t.add_argument(
        "--measure-overhead",
        action="store_true",
        help="boot the guest untraced first and store traced/untraced guest IOPS",
    )
    c = p.add_argument_group("A/B comparison")
    c.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="run the same guest on QEMU A and B (versions or paths) alternately, --repeats times each, "
        "and say per metric whether they differ (-o gets A/, B/ and compare.json; plugtrace diff OUT/A OUT/B "
        "--fail-if ... gates on it; notifications per completion and requests per handler need "
        "--qemu-probes full)",
    )
    c.add_argument("--repeats", type=int, default=5, help="--compare: runs of each (default: 5)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", default=None, help="run directory (default: runs/DATE-qemu-VERSION)")
    o.add_argument("--quiet", action="store_true", help="fewer progress messages")


#: the guest's memory (MiB) and what its workload's buffers may take of it; the most requests its
#: jobs may keep in flight together (Linux AIO's aio-max-nr of 65536 events, which io_setup doubles)
GUEST_MEMORY_MB, GUEST_BUFFERS_MB, GUEST_MAX_IN_FLIGHT = 256, 64, 16384


def _check(args) -> None:
    """Refuse what the guest could not run, before anything is made or booted."""
    for name, low, high in (
        ("disks", 1, 16),
        ("ide_disks", 0, 2),
        ("iodepth", 1, 1024),
        ("jobs", 1, 64),
        ("bs", 512, 1 << 20),
        ("max_events", 1, None),
    ):
        v = getattr(args, name)
        if v < low or (high is not None and v > high):
            why = (
                " (the guest's IDE controller has room for 2: its primary and secondary bus)"
                if name == "ide_disks"
                else ""
            )
            within = f"{low} to {high}" if high is not None else f"at least {low}"
            raise UsageError(f"--{name.replace('_', '-')}: {within}, not {v}{why}")
    if args.bs % 512:
        raise UsageError(f"--bs: a multiple of 512, not {args.bs}")
    if args.mode == "off" and args.measure_overhead:
        raise UsageError("--measure-overhead compares a traced guest with an untraced one: not with --mode off")
    jobs = (args.disks + args.ide_disks) * args.jobs
    if jobs * args.iodepth * args.bs > GUEST_BUFFERS_MB << 20:
        raise UsageError(
            f"--jobs {args.jobs} x --iodepth {args.iodepth} x --bs {args.bs} on {args.disks + args.ide_disks} "
            f"disk(s): {jobs * args.iodepth * args.bs / 2**20:,.0f} MiB of buffers, more than the "
            f"{GUEST_BUFFERS_MB} MiB the {GUEST_MEMORY_MB} MiB guest gives its workload"
        )
    if jobs * args.iodepth > GUEST_MAX_IN_FLIGHT:
        raise UsageError(
            f"--jobs {args.jobs} x --iodepth {args.iodepth} on {args.disks + args.ide_disks} disk(s): "
            f"{jobs * args.iodepth:,} requests in flight, more than the guest's {GUEST_MAX_IN_FLIGHT:,}"
        )
    if not 0 <= args.rwmixread <= 100:
        raise UsageError(f"--rwmixread: 0 to 100, not {args.rwmixread}")
    if not 0 < args.duration <= 3600:
        raise UsageError(f"--duration: a number of seconds above 0 (at most 3600), not {args.duration}")


def run(args) -> int:
    import os

    from .. import devices
    from ..errors import EXIT_INTERRUPTED, EXIT_OK
    from ..qemu.recording import remove_stale_scratch
    from .record import _default_output

    _check(args)
    size = devices.parse_size(args.size)
    if size < args.bs:
        raise UsageError(f"--size: at least one block of --bs {args.bs}, not {size} bytes")
    if os.geteuid() != 0:
        raise UsageError("plugtrace qemu needs root (QEMU opens the device, bpftrace traces it)")
    remove_stale_scratch()  # what killed recorders left in /tmp
    if args.compare:
        from ..analysis.ab import run_compare

        if args.repeats < 2:
            raise UsageError(f"--repeats: at least 2 runs each, for a confidence interval, not {args.repeats}")
        out = Path(args.output) if args.output else _default_output("qemu-compare")
        return run_compare(args.compare, args.repeats, out, lambda name, run_out: _record(args, name, run_out))
    out = Path(args.output) if args.output else _default_output(f"qemu-{args.qemu.replace('/', '_')}")
    meta = _record(args, args.qemu, out)
    if meta is None:
        return EXIT_INTERRUPTED  # the recording was interrupted: it kept what it had
    _print_qemu_summary(meta, out)
    return EXIT_OK


def _record(args, qemu_name: str, out: Path) -> dict | None:
    """Record one guest of QEMU `qemu_name` into `out`; its meta, or None when interrupted."""
    from .. import devices
    from ..qemu.image import guest_image
    from ..qemu.launch import Workload
    from ..qemu.recording import QemuConfig, QemuRecording
    from ..qemu.versions import find_qemu
    from .recording import Recording

    cfg = QemuConfig(
        qemu=qemu_name,
        disks=args.disks,
        ide_disks=args.ide_disks,
        iothreads=args.iothreads,
        workload=Workload(
            rw=args.rw,
            bs=args.bs,
            iodepth=args.iodepth,
            jobs=args.jobs,
            duration_s=args.duration,
            rwmixread=args.rwmixread,
        ),
        accel=args.accel,
        mode=args.mode,
        max_events=args.max_events,
        measure_overhead=args.measure_overhead,
        qemu_probes=args.qemu_probes,
    )
    # what the run needs is found before a device is made for it
    qemu, image = find_qemu(qemu_name), guest_image()
    with Recording(out, {}, command=["plugtrace", *sys.argv[1:]]) as rec:
        rec.on_exit(devices.cleanup_all)
        target = devices.open_target(
            args.device, devices.parse_size(args.size), allow_write=args.allow_write, sparse=args.sparse
        )
        rec.on_exit(target.close)
        devices.check_writable(target, cfg.workload.writes)
        if args.ide_disks and not target.writable and args.bs % 2048:
            raise UsageError(
                f"--bs: a multiple of 2048 with --ide-disks on a read-only device (its IDE disks are "
                f"CD-ROM drives, 2048-byte sectors), not {args.bs}"
            )
        recording = QemuRecording(cfg, target, rec, qemu, image, quiet=args.quiet)
        rec.on_exit(recording.close)  # QEMU and its probes stop before the device goes
        return recording.run()
    return None


def _print_qemu_summary(meta: dict, out: Path) -> None:
    from .record import _print_summary

    _print_summary(meta, out)
    s, q = meta.get("summary", {}), meta["config"]["qemu"]
    print(
        f"  QEMU:                    {q['version']} ({q['design'] or 'no plug design found'}), "
        f"{meta['config']['accel'].upper()}"
    )
    print(
        f"  guest requests:          {s.get('workload_requests', 0):,} by the workload, "
        f"{s.get('boot_requests', 0):,} by the guest kernel at boot"
    )
    if "qemu_requests" in s:
        print(
            f"  QEMU's io_uring requests: {s['qemu_requests']:,} ({s['qemu_workload_requests']:,} after the "
            f"guest's start mark, {s['qemu_boot_requests']:,} before: boot)"
        )
    counters = {}
    if "qemu_counters" in meta.get("tables", {}):
        import pyarrow.parquet as pq

        t = pq.read_table(out / "tables" / "qemu_counters.parquet").to_pylist()
        counters = {r["name"]: r["value"] for r in t if r["device"] == -1}
    if counters:
        print(
            f"  QEMU sections:           {counters.get('sections', 0):,}  (aio_poll inside: "
            f"{counters.get('aio_poll_in_section', 0):,} of {counters.get('aio_poll', 0):,}; "
            f"requests to io_uring: {counters.get('luring_co_submit', 0):,})"
        )
