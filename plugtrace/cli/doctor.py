"""plugtrace doctor: what this machine can trace, and what to do about what it cannot."""

from __future__ import annotations

import json
import subprocess

HELP = "check root, bpftrace, tracefs, BTF, tracepoints, uprobes, io_uring and liburing"
DESCRIPTION = """\
Checks everything plugtrace record needs to trace the kernel side, one line
each: root, bpftrace and its version, tracefs (mounted if missing and we are
root), kernel BTF, every tracepoint the probes use, uprobes, io_uring and the
liburing the extension was built against. Unless --no-live is given, it also
attaches a real uprobe and a real tracepoint for a moment to prove they work.

Exit status: 0 when everything works, 4 when something is missing (record
still runs and lists what it could not measure).
"""


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-live", action="store_true", help="skip the live attach checks (faster)")


def _live_check(exe: str, program: str) -> tuple[bool, str]:
    """Run a tiny bpftrace program that exits at once; ok when it attached."""
    try:
        p = subprocess.run([exe, "-e", program], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, "bpftrace did not finish within 60 s"
    if p.returncode == 0 and "Attaching" in p.stdout:
        return True, "attached and ran"
    err = "; ".join(line for line in p.stderr.splitlines() if "RLIMIT_MEMLOCK" not in line)
    return False, err[:300] or f"bpftrace exited with {p.returncode}"


def run(args) -> int:
    from ..tracing import detect_capabilities
    from ..uring._binding import extension_path

    caps = detect_capabilities()
    rows = caps.rows()
    if not args.no_live and caps.bpftrace_path and caps.root[0] and caps.tracefs[0]:
        if caps.uprobes[0]:
            rows.append(
                (
                    "live uprobe on our markers",
                    *_live_check(
                        caps.bpftrace_path,
                        f"uprobe:{extension_path}:plugtrace_mark_submit {{ @n = count(); }} BEGIN {{ exit(); }}",
                    ),
                )
            )
        if caps.tracepoint("syscalls:sys_enter_io_uring_enter")[0]:
            rows.append(
                (
                    "live tracepoint",
                    *_live_check(
                        caps.bpftrace_path,
                        "tracepoint:syscalls:sys_enter_io_uring_enter { @n = count(); } BEGIN { exit(); }",
                    ),
                )
            )
    ok = all(r[1] for r in rows)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in rows]}, indent=2))
    else:
        width = max(len(r[0]) for r in rows)
        for name, good, detail in rows:
            print(f"{'ok ' if good else 'NO '} {name.ljust(width)}  {detail}")
        print()
        print(
            "everything plugtrace traces works here"
            if ok
            else "some probes cannot run here: plugtrace record will list them as 'could not measure'"
        )
    return 0 if ok else 4
