"""Shared pieces of the benchmarks: devices, fio, the engine, and the result table."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

from plugtrace import devices
from plugtrace.environment import describe_environment

#: the plugtrace CLI as a user runs it
PLUGTRACE = [sys.executable, "-m", "plugtrace"]


@contextlib.contextmanager
def device(kind: str, size: str = "1G") -> Iterator[devices.Target]:
    """A loop or zram device created for the benchmark and always removed."""
    target = devices.open_target(kind, devices.parse_size(size))
    try:
        yield target
    finally:
        target.close()


def fio_command(
    path: str,
    rw: str = "randread",
    bs: int = 4096,
    iodepth: int = 32,
    runtime_s: float = 5,
    extra: list[str] | None = None,
) -> list[str]:
    """fio's io_uring engine on `path`, JSON output, fio's defaults otherwise."""
    if not shutil.which("fio"):
        raise SystemExit("fio is not installed (make install)")
    return (
        [
            shutil.which("fio"),
            "--name=bench",
            f"--filename={path}",
            "--direct=1",
            "--ioengine=io_uring",
            f"--rw={rw}",
            f"--bs={bs}",
            f"--iodepth={iodepth}",
            "--time_based",
            f"--runtime={runtime_s}s",
            "--output-format=json",
            "--group_reporting",
        ]
        + (["--readonly"] if rw in ("read", "randread") else [])
        + (extra or [])
    )


def fio(
    path: str,
    rw: str = "randread",
    bs: int = 4096,
    iodepth: int = 32,
    runtime_s: float = 5,
    extra: list[str] | None = None,
) -> dict:
    """Run fio's io_uring engine on `path`; returns fio's JSON job result (read/write sections)."""
    out = subprocess.run(
        fio_command(path, rw, bs, iodepth, runtime_s, extra), capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out[out.index("{") :])["jobs"][0]


def held(cmd: list[str]) -> subprocess.Popen:
    """`cmd` started but held until a line comes on its stdin (`proc.communicate("go\\n")`),
    so that programs can be attached to its process before it does any I/O."""
    return subprocess.Popen(
        ["sh", "-c", 'read _; exec "$@"', "held", *cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def default_aggregate_probes(device_known: bool = False) -> tuple[str, ...]:
    """The kernel probes `plugtrace record -- CMD` runs in aggregate mode unless told otherwise;
    `device_known`: those it runs when the device is known (--watch-device, the engine's runs)."""
    from plugtrace.tracing.probes import PROBES

    return tuple(
        p.table
        for p in PROBES
        if "aggregate" in p.modes
        and "aggregate" not in p.only_when_asked
        and not p.needs_uprobes
        and (device_known or not p.default_needs_device)
    )


def tracepoints_of(probes: tuple[str, ...]) -> list[str]:
    """The tracepoints the aggregate-mode programs of `probes` attach to (the fork follower aside)."""
    from plugtrace.tracing.bpfprobes import AGGREGATES

    return sorted({tp for p in probes for tp in AGGREGATES[p]().obj.tracepoints()})


def aggregate_programs(probe: str, pid: int, device: str | None = None) -> object:
    """The aggregate-mode programs of `probe`, attached for `pid` (and `device`), as
    the `BpfObject` that holds them (pause/resume/run_stats; close() detaches)."""
    from plugtrace.tracing.bpfprobes import AGGREGATES

    p = AGGREGATES[probe](pid, device)
    p.start()
    return p.obj


class _Programs:
    """Several `BpfObject`s paused, resumed, counted and closed as one."""

    def __init__(self, objects: list) -> None:
        self.objects = objects

    def pause(self) -> None:
        for o in self.objects:
            o.pause()

    def resume(self) -> None:
        for o in self.objects:
            o.resume()

    def run_stats(self) -> dict[str, tuple[int, int]]:
        return {tp: stat for o in self.objects for tp, stat in o.run_stats().items()}

    def close(self) -> None:
        for o in self.objects:
            o.close()


def empty_programs(tracepoints: list[str]) -> object:
    """An empty BPF program (probes/empty.bpf.c) on each tracepoint, attached (close()
    detaches): what a hit costs the traced program before a program does any work."""
    from plugtrace.tracing.libbpf import BpfObject

    progs = _Programs([])
    try:
        for t in tracepoints:
            progs.objects.append(BpfObject("empty", attach_to={"empty": t}).start())
    except BaseException:
        progs.close()
        raise
    return progs


def fio_iops(job: dict) -> float:
    return float(job["read"]["iops"] + job["write"]["iops"])


def engine(path: str, size_bytes: int, **config) -> object:
    """Run plugtrace's engine with the app-side log produced but not stored."""
    from plugtrace.engine import WorkloadConfig, run_workload

    cfg = WorkloadConfig(**config)
    return run_workload(cfg, path, size_bytes, lambda name, cols: None)


def machine() -> dict:
    env = describe_environment()
    return {k: env[k] for k in ("kernel", "cpus", "cpu_model", "python", "liburing", "bpftrace", "fio")}


def print_host() -> None:
    """The line that says where a benchmark ran: its ratios move between hosts."""
    m = machine()
    print(
        f"host: {m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}, liburing {m['liburing']}, "
        f"bpftrace {m['bpftrace']}, fio {m['fio']}"
    )


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    widths = [max([len(c), *(len(_fmt(r.get(c))) for r in rows)]) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=2)
        print(f"\nwritten: {path}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks create loop and zram devices: run them as root")


def could_not_measure(p: subprocess.CompletedProcess) -> str:
    """A failed plugtrace command's last line of stderr, as a "could not measure: ..." reason."""
    last = (p.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("plugtrace: ")
    return last if last.startswith("could not measure") else f"could not measure: {last}"
