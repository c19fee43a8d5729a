"""Boot a real QEMU guest on a block device and run the guest workload in it.

`QemuGuest` builds QEMU's command line (virtio-blk disks with iothreads, IDE disks, every disk
`aio=io_uring,cache=none` on the one host device), starts QEMU held at a pipe before it execs, so
a tracer can attach by pid before QEMU's first instruction, and reads the guest's serial console:
the workload's own counts and each disk's kernel counters before and after it.

QEMU runs in a process group of its own and dies with us (`plugtrace.processes`): PR_SET_PDEATHSIG
kills it when the recorder dies, SIGKILL included, and `stop()` ends the group on every other exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

from ..errors import CapabilityError
from ..processes import Child, spawn
from .image import GuestImage
from .versions import QemuBinary

#: QEMU trace events read where a uprobe cannot see the argument: how many guest requests each
#: request virtio-blk submits carries (virtio_blk_submit_multireq() is static and merges them)
TRACE_EVENTS = ("virtio_blk_submit_multireq",)
#: the fields of a disk's /sys/block/NAME/stat line that count completed requests
_STAT = {"reads": 0, "writes": 4}


@dataclass
class Workload:
    """The guest workload's knobs, as fio names them."""

    rw: str = "randread"
    bs: int = 4096
    iodepth: int = 8
    jobs: int = 1
    duration_s: float = 3.0
    rwmixread: int = 50
    #: job k of each disk on guest CPU k (so each job issues on a virtqueue of its own with --queues)
    pin: bool = False

    @property
    def writes(self) -> bool:
        return "write" in self.rw or self.rw in ("rw", "randrw")

    def args(self) -> str:
        return ",".join(
            f"--{k},{v}"
            for k, v in (
                ("rw", self.rw),
                ("bs", self.bs),
                ("iodepth", self.iodepth),
                ("jobs", self.jobs),
                ("duration", self.duration_s),
                ("rwmixread", self.rwmixread),
                *((("pin", 1),) if self.pin else ()),
            )
        )


@dataclass
class Console:
    """What the guest said on its serial console."""

    lines: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # disk -> reads/writes/errors
    stat_before: dict[str, dict[str, int]] = field(default_factory=dict)
    stat_after: dict[str, dict[str, int]] = field(default_factory=dict)
    started: threading.Event = field(default_factory=threading.Event)
    elapsed_s: float | None = None  # the workload's own, first request to last completion
    ended: bool = False
    exit_code: int | None = None  # the workload's exit status (0: no request failed)
    #: with --pin: each job's disk, job, cpu, reads, writes, errors
    jobs: list[dict] = field(default_factory=list)
    #: each virtio-blk disk's queues: disk -> queue -> the guest CPUs blk-mq maps to it
    mq: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # each failing job's first failure, as it said it

    def feed(self, line: str) -> None:
        line = line.lstrip("\x1e")  # the workload's start mark for the probes, printed before its start line
        self.lines.append(line)
        if line.startswith("ptload start"):
            self.started.set()
        elif line.startswith("ptload end"):
            self.ended = True
            rc = line.partition("rc=")[2].strip()
            self.exit_code = int(rc) if rc.isdigit() else None
        elif line.startswith("ptload error: "):
            self.errors.append(line.removeprefix("ptload error: "))
        elif line.startswith("ptload job "):
            kv = dict(f.split("=", 1) for f in line.split()[2:])
            self.jobs.append({k: (v if k == "disk" else int(v)) for k, v in kv.items()})
        elif line.startswith("ptmq "):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            self.mq.setdefault(kv["disk"], {})[int(kv["queue"])] = _cpu_list(kv.get("cpus", ""))
        elif line.startswith("ptload elapsed_s="):
            self.elapsed_s = float(line.split("=", 1)[1])
        elif line.startswith("ptload disk="):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            disk = kv.pop("disk")
            self.counts[disk] = {k: int(v) for k, v in kv.items()}
        elif line.startswith("ptstat "):
            f = line.split()
            disk = f[2].removeprefix("disk=")
            numbers = [int(x) for x in f[3:]]
            (self.stat_before if f[1] == "before" else self.stat_after)[disk] = {
                k: numbers[i] for k, i in _STAT.items() if i < len(numbers)
            }

    @property
    def done(self) -> bool:
        return bool(self.stat_after) and self.ended

    @property
    def failure(self) -> str | None:
        """Why the guest workload failed (None: it did not): what it said first, and how often."""
        if not self.ended or (self.exit_code == 0 and not self.errors):
            return None
        failed = sum(c.get("errors", 0) for c in self.counts.values())
        if not self.errors:
            return f"the guest workload exited with status {self.exit_code} ({self.tail()})"
        more = f" ({failed:,} failed in all)" if failed > 1 else ""
        return f"the guest workload failed: {self.errors[0]}{more}"

    def tail(self, n: int = 8) -> str:
        return " | ".join(line for line in self.lines[-n:] if line.strip())


def _cpu_list(text: str) -> list[int]:
    """A sysfs CPU list ("0,1", "0-3", "0, 2-3") as CPU numbers."""
    cpus: list[int] = []
    for part in filter(None, text.replace(" ", "").split(",")):
        low, _, high = part.partition("-")
        cpus += list(range(int(low), int(high or low) + 1))
    return cpus


def vq_iothreads(disks: int, queues: int, iothreads: str) -> list[list[str | None]]:
    """The iothread of each virtqueue of each virtio-blk disk: `per-queue`, an iothread per queue
    (iot0, iot1, ... across the disks, mapped with iothread-vq-mapping); otherwise each disk's
    `iothread_ids` for all its queues."""
    if iothreads == "per-queue":
        return [[f"iot{d * queues + q}" for q in range(queues)] for d in range(disks)]
    return [[iot] * queues for iot in iothread_ids(disks, iothreads)]


def iothread_ids(disks: int, iothreads: str) -> list[str | None]:
    """The iothread of each virtio-blk disk: its own (`per-disk`), one for all (`shared`), or none
    (`none`: QEMU's main loop); with `per-queue`, its first queue's."""
    if iothreads == "per-queue":
        raise ValueError("per-queue: see vq_iothreads")
    if iothreads == "per-disk":
        return [f"iot{i}" for i in range(disks)]
    if iothreads == "shared":
        return ["iot0"] * disks
    return [None] * disks


def disk_names(disks: int, ide_disks: int, writable: bool) -> list[tuple[str, str]]:
    """(guest name, kind) of each disk in the order QEMU's command line creates them (IDE disks
    of a read-only device are CD-ROM drives: sr0, ...)."""
    ide = [f"sd{chr(ord('a') + i)}" if writable else f"sr{i}" for i in range(ide_disks)]
    return [(f"vd{chr(ord('a') + i)}", "virtio-blk") for i in range(disks)] + [(n, "ide") for n in ide]


def kvm_usable() -> tuple[bool, str]:
    """Whether /dev/kvm can be opened at all (a timed boot decides whether it works)."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as exc:
        return False, f"/dev/kvm: {exc.strerror}"
    return True, "/dev/kvm opens"


class QemuGuest:
    """One QEMU process running the guest workload on `device_path`."""

    def __init__(
        self,
        qemu: QemuBinary,
        image: GuestImage,
        device_path: str,
        *,
        disks: int,
        ide_disks: int,
        iothreads: str,
        workload: Workload,
        writable: bool,
        accel: str = "tcg",
        memory_mb: int = 256,
        cpus: int = 2,
        trace_log: str | None = None,
        queues: int | None = None,
    ):
        self.qemu, self.image, self.device_path = qemu, image, device_path
        self.disks, self.ide_disks, self.iothreads = disks, ide_disks, iothreads
        self.workload, self.writable, self.accel = workload, writable, accel
        self.memory_mb, self.cpus = memory_mb, cpus
        #: virtqueues per virtio-blk disk (num-queues); None: QEMU's default, one per guest CPU
        self.queues = queues
        #: where QEMU's own trace events (TRACE_EVENTS, its log backend) go; None: not enabled
        self.trace_log = trace_log
        self.proc: subprocess.Popen | None = None
        self.console = Console()
        self._child: Child | None = None
        self._reader: threading.Thread | None = None

    def argv(self) -> list[str]:
        q = self.qemu
        argv = [str(q.binary)]
        for fw in q.firmware:
            argv += ["-L", str(fw)]
        argv += [
            "-M",
            "pc",
            "-accel",
            self.accel,
            "-smp",
            str(self.cpus),
            "-m",
            str(self.memory_mb),
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-name",
            "plugtrace-guest,debug-threads=on",
        ]
        if self.trace_log:
            for event in TRACE_EVENTS:
                argv += ["-trace", f"enable={event}"]
            argv += ["-D", self.trace_log, "-msg", "timestamp=on"]
        vqs = vq_iothreads(self.disks, self.queues or 1, self.iothreads)
        for iothread in dict.fromkeys(i for disk in vqs for i in disk if i):
            argv += ["-object", f"iothread,id={iothread}"]
        # werror/rerror=report: a failed request is the guest's error to count, not a reason to pause the VM
        # (QEMU's default on ENOSPC), which would leave the run waiting for a guest that never ends
        drive = (
            f"file={self.device_path},if=none,format=raw,aio=io_uring,cache=none,file.locking=off,"
            "werror=report,rerror=report"
        ) + ("" if self.writable else ",readonly=on")
        for i, iots in enumerate(vqs):
            argv += ["-drive", f"{drive},id=vd{i}", "-device", self._virtio_blk(i, iots)]
        # an IDE hard disk cannot be read-only in QEMU: on a device not handed over for writing,
        # the IDE disks are CD-ROM drives (ATAPI on the same controller, the same io_uring path)
        ide = "ide-hd" if self.writable else "ide-cd"
        for i in range(self.ide_disks):
            argv += ["-drive", f"{drive},id=ide{i}", "-device", f"{ide},drive=ide{i},bus=ide.{i}"]
        argv += [
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            f"console=ttyS0 quiet panic=-1 pt.disks={self.disks + self.ide_disks} pt.args={self.workload.args()}",
        ]
        return argv

    def _virtio_blk(self, i: int, iots: list[str | None]) -> str:
        """-device of virtio-blk disk `i` whose queues run in `iots`: one iothread, or (per-queue) QEMU
        9.0+'s iothread-vq-mapping, which gives the listed iothreads the queues round robin."""
        if self.iothreads == "per-queue":
            return json.dumps(
                {
                    "driver": "virtio-blk-pci",
                    "drive": f"vd{i}",
                    "num-queues": len(iots),
                    "iothread-vq-mapping": [{"iothread": iot} for iot in iots],
                }
            )
        queues = f",num-queues={self.queues}" if self.queues else ""
        return f"virtio-blk-pci,drive=vd{i}{queues}" + (f",iothread={iots[0]}" if iots[0] else "")

    def start(self) -> int:
        """Fork QEMU, held before exec until `release()`; returns its pid (the pid QEMU will have)."""
        self._child = spawn(self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, held="plugtrace-qemu")
        self.proc = self._child.proc
        self._reader = threading.Thread(target=self._read_console, daemon=True, name="qemu-console")
        self._reader.start()
        return self.proc.pid

    def release(self) -> None:
        """Let the held QEMU exec and boot."""
        if self._child is not None:
            self._child.go()

    @property
    def process(self) -> subprocess.Popen:
        """QEMU's process (once started)."""
        assert self.proc is not None, "start() the guest first"
        return self.proc

    def _read_console(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.console.feed(raw.decode(errors="replace").rstrip("\r\n"))

    def wait_started(self, timeout_s: float) -> bool:
        """Whether the guest booted and started its workload within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.console.started.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    def wait_done(self, timeout_s: float) -> None:
        """Wait for the guest to finish its workload and power off."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CapabilityError(
                f"the guest did not finish within {timeout_s:.0f} s (console: {self.console.tail()})"
            ) from None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if not self.console.done:
            raise CapabilityError(
                f"QEMU exited ({self.process.returncode}) before the guest workload finished "
                f"(console: {self.console.tail()})"
            )

    def stop(self) -> None:
        """End QEMU and anything it started: politely, then not. Idempotent."""
        if self._child is None:
            return
        self._child.end()
        if self._reader is not None:
            self._reader.join(timeout=5)


def guest_disk_totals(console: Console) -> dict[str, int]:
    """The guest's view: requests its workload completed, and requests its kernel completed on
    the disks before and during the workload (boot-time I/O: partition scans)."""
    ptload = sum(c.get("reads", 0) + c.get("writes", 0) for c in console.counts.values())
    before = sum(s.get("reads", 0) + s.get("writes", 0) for s in console.stat_before.values())
    after = sum(s.get("reads", 0) + s.get("writes", 0) for s in console.stat_after.values())
    return {"workload_requests": ptload, "boot_requests": before, "kernel_requests": after}


def guest_iops(console: Console) -> float:
    """The workload's requests per second, by its own clock (0 when it did not say)."""
    n = sum(c.get("reads", 0) + c.get("writes", 0) for c in console.counts.values())
    return n / console.elapsed_s if console.elapsed_s else 0.0
