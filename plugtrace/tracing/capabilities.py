"""What this machine lets us trace, checked one capability at a time.

Each check gives ``(ok, detail)``: the detail says what was found, or why not,
in words a user can act on. `detect_capabilities()` mounts tracefs when it is
missing and we are root, since bpftrace needs it for tracepoints.

``PLUGTRACE_FORCE_MISSING`` (comma-separated: ``bpftrace``, ``tracefs``,
``btf``, ``uprobes``, ``io_uring``, ``libbpf``, or a tracepoint such as
``block:block_rq_issue``) makes a check fail as if the capability were absent,
so the paths for a machine without it can be tried on one that has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def cpu_ids(which: str) -> list[int]:
    """The CPUs the kernel lists as `which` ("possible", "online"), from
    /sys/devices/system/cpu (ranges such as "0-3,6")."""
    text = Path(f"/sys/devices/system/cpu/{which}").read_text().strip()
    ids: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        ids += range(int(lo), int(hi or lo) + 1)
    return ids


TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")
BTF = Path("/sys/kernel/btf/vmlinux")

#: every tracepoint a probe may use, as "category:name"
TRACEPOINTS = (
    "syscalls:sys_enter_io_uring_enter",
    "syscalls:sys_exit_io_uring_enter",
    "io_uring:io_uring_submit_req",
    "io_uring:io_uring_complete",
    "block:block_rq_issue",
    "block:block_rq_complete",
    "block:block_unplug",
    "sched:sched_process_fork",
)

#: io_uring's submit tracepoint was renamed in 5.19
TRACEPOINT_ALTERNATIVES = {"io_uring:io_uring_submit_req": ("io_uring:io_uring_submit_sqe",)}

MIN_BPFTRACE = (0, 11)


def _forced_missing() -> set[str]:
    return {s.strip() for s in os.environ.get("PLUGTRACE_FORCE_MISSING", "").split(",") if s.strip()}


@dataclass
class Capabilities:
    """The result of `detect_capabilities()`; each entry is ``(ok, detail)``."""

    root: tuple[bool, str]
    bpftrace: tuple[bool, str]
    tracefs: tuple[bool, str]
    btf: tuple[bool, str]
    uprobes: tuple[bool, str]
    io_uring: tuple[bool, str]
    liburing: tuple[bool, str]
    #: "category:name" -> (present, detail)
    tracepoints: dict[str, tuple[bool, str]] = field(default_factory=dict)
    bpftrace_path: str | None = None
    #: our own eBPF programs (probes/*.bpf.c, loaded with libbpf): the cheap probes
    libbpf: tuple[bool, str] = (False, "not checked")

    def can_trace(self) -> tuple[bool, str]:
        """Whether any probe can run at all, and if not the first reason: root and tracefs, and a way to
        load programs (our own with libbpf, or bpftrace for the rest)."""
        for name in ("root", "tracefs"):
            ok, why = getattr(self, name)
            if not ok:
                return False, why
        if not (self.bpftrace[0] or self.libbpf[0]):
            return False, f"{self.bpftrace[1]}, and our own programs cannot load: {self.libbpf[1]}"
        return True, ""

    def tracepoint(self, name: str) -> tuple[bool, str]:
        return self.tracepoints.get(name, (False, f"tracepoint {name} was not checked"))

    def rows(self) -> list[tuple[str, bool, str]]:
        """(name, ok, detail) for display, in a sensible order."""
        rows = [
            (n, *getattr(self, n))
            for n in ("root", "bpftrace", "tracefs", "btf", "uprobes", "io_uring", "liburing", "libbpf")
        ]
        rows += [(f"tracepoint {n}", *v) for n, v in self.tracepoints.items()]
        return rows

    def as_dict(self) -> dict:
        return {name: {"ok": ok, "detail": detail} for name, ok, detail in self.rows()}


def _check_root() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not root: eBPF tracing needs root (run as root, e.g. with sudo)"
    return True, "running as root"


def bpftrace_version(exe: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    word = out.strip().split()[-1] if out.strip() else ""
    try:
        return tuple(int(x) for x in word.lstrip("v").split("-")[0].split(".")[:3])
    except ValueError:
        return None


def _check_bpftrace() -> tuple[tuple[bool, str], str | None]:
    exe = None if "bpftrace" in _forced_missing() else shutil.which("bpftrace")
    if exe is None:
        return (False, "bpftrace is not installed (apt-get install bpftrace, or make install)"), None
    version = bpftrace_version(exe)
    if version is None:
        return (False, f"{exe} --version failed: bpftrace is broken"), None
    text = ".".join(map(str, version))
    if version < MIN_BPFTRACE:
        return (False, f"bpftrace {text} is too old (need {'.'.join(map(str, MIN_BPFTRACE))} or newer)"), None
    return (True, f"bpftrace {text} at {exe}"), exe


def tracefs_root() -> Path | None:
    """Where tracefs is mounted and readable (None: nowhere, or only where we may not look)."""
    for root in (TRACEFS, DEBUGFS_TRACING):
        try:
            if (root / "events").is_dir():
                return root
        except PermissionError:  # mode 0700: only root may look
            continue
    return None


def _unreadable_tracefs() -> Path | None:
    """A tracefs mount this user may not read (not root), if that is why `tracefs_root` found none."""
    for root in (TRACEFS, DEBUGFS_TRACING):
        try:
            os.listdir(root)
        except PermissionError:
            return root
        except OSError:
            continue
    return None


def _check_tracefs(mount: bool) -> tuple[bool, str]:
    if "tracefs" in _forced_missing():
        return False, f"tracefs is not mounted at {TRACEFS} (forced by PLUGTRACE_FORCE_MISSING)"
    root = tracefs_root()
    if root is not None:
        return True, f"mounted at {root}"
    unreadable = _unreadable_tracefs()
    if unreadable is not None:
        return False, f"{unreadable} is not readable (not root)"
    if not mount or os.geteuid() != 0:
        return False, f"tracefs is not mounted (as root: mount -t tracefs nodev {TRACEFS})"
    p = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
    if p.returncode != 0 or tracefs_root() is None:
        return False, f"tracefs is not mounted and mounting it failed: {p.stderr.strip() or 'no events/'}"
    return True, f"mounted at {TRACEFS} (plugtrace mounted it)"


def _check_tracepoint(name: str, root: Path | None) -> tuple[bool, str]:
    if name in _forced_missing():
        return False, f"tracepoint {name} is missing (forced by PLUGTRACE_FORCE_MISSING)"
    if root is None:
        why = "not readable (not root)" if _unreadable_tracefs() is not None else "not mounted"
        return False, f"tracepoint {name}: tracefs is {why}"
    for candidate in (name, *TRACEPOINT_ALTERNATIVES.get(name, ())):
        category, event = candidate.split(":")
        if (root / "events" / category / event).is_dir():
            return True, "present" if candidate == name else f"present as {candidate}"
    return False, f"this kernel has no tracepoint {name}"


def _check_btf() -> tuple[bool, str]:
    if "btf" in _forced_missing() or not BTF.exists():
        return False, f"no kernel BTF ({BTF}); tracepoints still work, typed kernel structs do not"
    return True, f"{BTF}"


def _check_uprobes(root: Path | None, bpftrace: str | None) -> tuple[bool, str]:
    if "uprobes" in _forced_missing():
        return False, "uprobes are not available (forced by PLUGTRACE_FORCE_MISSING)"
    if root is None:
        why = "not readable (not root)" if _unreadable_tracefs() is not None else "not mounted"
        return False, f"uprobes need tracefs, which is {why}"
    if not (root / "uprobe_events").exists():
        return False, "this kernel has no uprobes (CONFIG_UPROBE_EVENTS is off)"
    return True, "uprobe_events present"


def _check_io_uring() -> tuple[bool, str]:
    if "io_uring" in _forced_missing():
        return False, "io_uring is disabled (forced by PLUGTRACE_FORCE_MISSING)"
    try:
        from ..uring.ring import has_ring
    except Exception as exc:  # the extension may be missing: say so rather than fail
        return False, f"cannot check: {exc}"
    ok, why = has_ring()
    return ok, why or "io_uring_setup works"


def _check_liburing() -> tuple[bool, str]:
    try:
        from ..uring.ring import liburing_version
    except Exception as exc:
        return False, f"{exc}"
    return True, f"liburing {liburing_version()} (the extension is built against it)"


def detect_capabilities(mount_tracefs: bool = True) -> Capabilities:
    """Check every capability plugtrace's tracing uses. Mounts tracefs if needed and allowed."""
    bpftrace, exe = _check_bpftrace()
    tracefs = _check_tracefs(mount_tracefs)
    root = tracefs_root() if tracefs[0] else None
    return Capabilities(
        root=_check_root(),
        bpftrace=bpftrace,
        tracefs=tracefs,
        btf=_check_btf(),
        uprobes=_check_uprobes(root, exe),
        io_uring=_check_io_uring(),
        liburing=_check_liburing(),
        tracepoints={name: _check_tracepoint(name, root) for name in TRACEPOINTS},
        bpftrace_path=exe,
        libbpf=_check_libbpf(),
    )


def _check_libbpf() -> tuple[bool, str]:
    if "libbpf" in _forced_missing():
        return False, "our libbpf programs cannot load (forced by PLUGTRACE_FORCE_MISSING)"
    from .libbpf import available

    ok, why = available()
    return (True, "our eBPF programs load with libbpf (the default probes, without bpftrace)") if ok else (False, why)
