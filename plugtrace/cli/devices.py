"""plugtrace devices: which block devices could a run use, and which would it refuse."""

from __future__ import annotations

import json
import os
from pathlib import Path

HELP = "list block devices and whether plugtrace record can use them"
DESCRIPTION = """\
Lists the machine's block devices with size, whether each is mounted or held
by another device, and so whether `plugtrace record --device /dev/NAME` would
accept it. Also says whether plugtrace can create loop and zram devices here.
A device you name is only ever read, unless you add --allow-write.

Loop devices plugtrace makes clear themselves when it ends, however it ends.
A zram device cannot: one left by a recorder that was killed is listed as
such, removed by the next record that makes a device, or now by --cleanup
(never a running recorder's, never one plugtrace did not make).
"""


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove the zram devices that killed plugtrace recorders left behind (root)",
    )


def _describe(name: str, orphans: set[str]) -> dict:
    from ..devices import is_mounted

    sys_dir = Path("/sys/block") / name
    dev_t = (sys_dir / "dev").read_text().strip()
    size = int((sys_dir / "size").read_text()) * 512
    holders = sorted(h.name for h in (sys_dir / "holders").iterdir()) if (sys_dir / "holders").is_dir() else []
    mounted = is_mounted(dev_t)
    ro = (sys_dir / "ro").read_text().strip() == "1"
    # a disk whose partition is mounted or held is in use as a whole: writing it destroys that file system
    partitions = sorted(p for p in sys_dir.iterdir() if (p / "partition").exists())
    in_use = []
    for part in partitions:
        part_mount = is_mounted((part / "dev").read_text().strip())
        part_holders = sorted(h.name for h in (part / "holders").iterdir()) if (part / "holders").is_dir() else []
        if part_mount:
            in_use.append(f"partition {part.name} mounted on {part_mount}")
        elif part_holders:
            in_use.append(f"partition {part.name} held by {', '.join(part_holders)}")
    if f"/dev/{name}" in orphans:
        verdict = "no: left behind by a plugtrace recorder that was killed (plugtrace devices --cleanup)"
    elif size == 0:
        verdict = "no: size 0"
    elif mounted:
        verdict = f"no: mounted on {mounted}"
    elif holders:
        verdict = f"no: held by {', '.join(holders)}"
    elif in_use:
        verdict = f"no: {'; '.join(in_use)}"
    else:
        verdict = "yes (read-only unless --allow-write)" if not ro else "yes (read-only device)"
    return {
        "device": f"/dev/{name}",
        "dev_t": dev_t,
        "size_bytes": size,
        "mounted": mounted,
        "holders": holders,
        "partitions_in_use": in_use,
        "usable": verdict,
    }


def run(args) -> int:
    from ..devices import cleanup_orphans, orphaned_zram
    from ..errors import CapabilityError

    if args.cleanup:
        if os.geteuid() != 0:
            raise CapabilityError("removing zram devices needs root")
        removed, busy = cleanup_orphans()
        print(f"removed {', '.join(removed)}" if removed else "nothing left behind by a killed recorder")
        if busy:
            print(f"left alone, because open: {', '.join(busy)}")
        return 0
    orphans = {f"/dev/zram{i}" for i in orphaned_zram()}
    rows = [_describe(p.name, orphans) for p in sorted(Path("/sys/block").iterdir())]
    rows = [r for r in rows if not (r["size_bytes"] == 0 and r["device"].startswith(("/dev/loop", "/dev/ram")))]
    root = os.geteuid() == 0
    can = {
        "loop": "yes" if root and Path("/dev/loop-control").exists() else "no: needs root and /dev/loop-control",
        "zram": (
            "no: needs root"
            if not root
            else "yes"
            if Path("/sys/class/zram-control").exists()
            else "maybe: the zram module is not loaded (record tries modprobe zram)"
        ),
    }
    if args.json:
        print(json.dumps({"devices": rows, "can_create": can}, indent=2))
        return 0
    print(f"{'device':<16} {'size':>10}  usable by record")
    for r in rows:
        print(f"{r['device']:<16} {r['size_bytes'] / 2**30:>8.2f}Gi  {r['usable']}")
    print(f"\ncan create: loop: {can['loop']}; zram: {can['zram']}")
    return 0
