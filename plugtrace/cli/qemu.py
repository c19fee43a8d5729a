"""plugtrace qemu: boot a real QEMU guest on a device, run a guest workload, trace QEMU's batching."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..run import RunMeta, read_table
from . import options
from .summary import print_summary

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

IOTHREADS = ("per-disk", "per-queue", "shared", "none")
RW = ("read", "randread", "write", "randwrite", "rw", "randrw")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guest")
    g.add_argument("--qemu", default="10.0", help="7.2 | 10.0 | PATH of a qemu-system-x86_64 (default: 10.0)")
    options.add_device(g, "the guest")
    g.add_argument("--disks", type=int, default=1, help="virtio-blk disks, all on the device (default: 1)")
    g.add_argument(
        "--iothreads",
        default="per-disk",
        choices=IOTHREADS,
        help="per-disk: an iothread each; per-queue: an iothread per queue of each disk (with --queues: "
        "QEMU 9.0+'s iothread-vq-mapping, so 10.0 only); shared: one for all; none: QEMU's main loop "
        "(default: per-disk)",
    )
    g.add_argument(
        "--queues",
        type=int,
        default=None,
        help="virtqueues per virtio-blk disk (num-queues), one guest CPU each; the guest's jobs (--jobs, "
        "default one per queue) are pinned to CPUs, job k on CPU k, so each issues on a queue of its own "
        "(default: QEMU's, one per guest CPU, with the jobs unpinned)",
    )
    g.add_argument("--ide-disks", type=int, default=0, help="IDE disks on the same device (default: 0)")
    g.add_argument(
        "--accel",
        default="auto",
        choices=("auto", "kvm", "tcg"),
        help="auto: KVM when a timed test boot with it works, else TCG (default: auto)",
    )
    w = p.add_argument_group("guest workload (per disk, like fio's)")
    options.add_pattern(w, RW, 8, "requests each job keeps in flight", 3.0)
    w.add_argument("--jobs", type=int, default=None, help="threads per disk (default: 1, or one per --queues)")
    t = p.add_argument_group("tracing")
    options.add_tracing(t, "sections, handlers, io_uring requests", per_probe=True, baseline="the guest")
    t.add_argument(
        "--qemu-probes",
        default="mark",
        choices=("mark", "on", "full", "off"),
        help="in aggregate mode: mark (default): on the QEMU side only the guest's workload start mark, "
        "QEMU's requests counted by the kernel, so tracing does not change QEMU's batching; on: also "
        "handler runs, kicks and polls, sections (uprobes in QEMU's iothread, per request only "
        "luring_co_submit); full: also the per-request ones (completions, notifications, requests popped), "
        "as events mode has; off: the kernel side only (no start mark: boot I/O counts too)",
    )
    c = p.add_argument_group("A/B comparison")
    c.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="run the same guest on QEMU A and B (versions or paths) alternately, --repeats times each, "
        "and say per metric whether they differ (-o gets A/, B/ and compare.json; plugtrace diff OUT/A OUT/B "
        "--fail-if ... gates on it; poll share and wait before submit need --qemu-probes on, notifications "
        "per completion and requests per handler --qemu-probes full)",
    )
    c.add_argument("--repeats", type=int, default=5, help="--compare: runs of each (default: 5)")
    options.add_output(p.add_argument_group("output"), "runs/DATE-qemu-VERSION")


#: the guest's memory (MiB) and what its workload's buffers may take of it; the most requests its
#: jobs may keep in flight together (Linux AIO's aio-max-nr of 65536 events, which io_setup doubles)
GUEST_MEMORY_MB, GUEST_BUFFERS_MB, GUEST_MAX_IN_FLIGHT = 256, 64, 16384


def _check(args) -> None:
    """Refuse what the guest could not run, before anything is made or booted."""
    if args.jobs is None:
        args.jobs = args.queues or 1
    if args.queues is not None and not 1 <= args.queues <= 8:
        raise UsageError(f"--queues: 1 to 8 (one guest CPU each), not {args.queues}")
    if args.iothreads == "per-queue" and not args.queues:
        raise UsageError("--iothreads per-queue: give --queues N (the queues each disk has, one iothread each)")
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
    from ..recording import default_output

    _check(args)
    size = devices.parse_size(args.size)
    if size < args.bs:
        raise UsageError(f"--size: at least one block of --bs {args.bs}, not {size} bytes")
    if os.geteuid() != 0:
        raise UsageError("plugtrace qemu needs root (QEMU opens the device, bpftrace traces it)")
    remove_stale_scratch()  # what killed recorders left in /tmp
    if args.compare:
        from ..analysis.ab import RESULT, format_result, run_compare

        if args.repeats < 2:
            raise UsageError(f"--repeats: at least 2 runs each, for a confidence interval, not {args.repeats}")
        out = Path(args.output) if args.output else default_output("qemu-compare")
        result = run_compare(args.compare, args.repeats, out, lambda name, run_out: _record(args, name, run_out))
        if result is None:
            return EXIT_INTERRUPTED
        print(format_result(result))
        print(f"written: {out / RESULT}  (gate a CI job: plugtrace diff {out / 'A'} {out / 'B'} --fail-if ...)")
        return EXIT_OK
    out = Path(args.output) if args.output else default_output(f"qemu-{args.qemu.replace('/', '_')}")
    meta = _record(args, args.qemu, out)
    if meta is None:
        return EXIT_INTERRUPTED  # the recording was interrupted: it kept what it had
    _print_qemu_summary(meta, out)
    return EXIT_OK


def _record(args, qemu_name: str, out: Path) -> RunMeta | None:
    """Record one guest of QEMU `qemu_name` into `out`; its meta, or None when interrupted."""
    from ..qemu.launch import Workload
    from ..qemu.recording import QemuConfig
    from ..recording import record_qemu

    cfg = QemuConfig(
        qemu=qemu_name,
        disks=args.disks,
        ide_disks=args.ide_disks,
        iothreads=args.iothreads,
        queues=args.queues,
        workload=Workload(
            rw=args.rw,
            bs=args.bs,
            iodepth=args.iodepth,
            jobs=args.jobs,
            duration_s=args.duration,
            rwmixread=args.rwmixread,
            pin=bool(args.queues),
        ),
        accel=args.accel,
        mode=args.mode,
        max_events=args.max_events,
        measure_overhead=args.measure_overhead,
        qemu_probes=args.qemu_probes,
    )
    return record_qemu(
        cfg,
        out,
        device=args.device,
        size=args.size,
        sparse=args.sparse,
        allow_write=args.allow_write,
        quiet=args.quiet,
        command_line=["plugtrace", *sys.argv[1:]],
    )


def _print_qemu_summary(meta: RunMeta, out: Path) -> None:
    print_summary(meta, out)
    s, q = meta.summary, meta.config["qemu"]
    print(
        f"  QEMU:                    {q['version']} ({q['design'] or 'no plug design found'}), "
        f"{meta.config['accel'].upper()}"
    )
    print(
        f"  guest requests:          {s.get('workload_requests', 0):,} by the workload, "
        f"{s.get('boot_requests', 0):,} by the guest kernel at boot"
    )
    if "qemu_requests" in s:
        print(
            f"  QEMU's io_uring requests: {s['qemu_requests']:,} ({s['qemu_workload_requests']:,} after the "
            f"guest's start mark, {s['qemu_boot_requests']:,} before: boot"
            + ("; counted by the kernel)" if str(s.get("qemu_requests_source", "")).startswith("io_uring") else ")")
        )
    for row in s.get("queues") or []:
        print(
            f"  queue {row['disk']}/{row['queue']} (guest CPUs {','.join(map(str, row['cpus']))}, {row['thread']}): "
            f"{row['guest_requests']:,} guest requests"
        )
    for row in s.get("qemu_threads") or []:
        mean = "n/a" if row["mean_sqes_per_enter"] is None else f"{row['mean_sqes_per_enter']:.2f}"
        print(
            f"  {row['thread']}: {row['sqes']:,} SQEs in {row['enters']:,} submitting enters, {mean} per enter "
            "(the kernel's count)"
        )
    counters = {}
    if "qemu_counters" in meta.tables:
        rows = read_table(out, "qemu_counters")
        counters = {r.name: r.value for r in rows.itertuples() if r.device == -1}
    if counters and meta.config.get("qemu_probes") == "mark" and meta.config.get("mode") != "events":
        print("  QEMU sections:           not recorded (--qemu-probes mark, the default: --qemu-probes on counts them)")
    elif counters:
        print(
            f"  QEMU sections:           {counters.get('sections', 0):,}  (aio_poll inside: "
            f"{counters.get('aio_poll_in_section', 0):,} of {counters.get('aio_poll', 0):,}; "
            f"requests to io_uring: {counters.get('luring_co_submit', 0):,})"
        )
