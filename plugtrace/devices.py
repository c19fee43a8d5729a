"""Real block devices to run on: ones we create (and always remove) and ones a user names.

* `loop`: a loop device over a sparse file, with direct I/O (`losetup --direct-io=on`).
* `zram`: a compressed RAM disk made with zram's hot_add (never an existing zram device).
* `file:PATH`: a file opened with O_DIRECT (created, and removed afterwards, if missing).
* `/dev/X`: a user's block device: read-only unless `allow_write`; refused when it
  is mounted or held open exclusively by someone else.

Every device we create is registered in `_created` and removed by `close()`,
by `cleanup_all()` (called by record on any exit path) and, as a last resort,
at interpreter exit.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CapabilityError, DeviceError, UsageError
from .procfs import process_start

__all__ = ["Target", "open_target", "cleanup_all", "cleanup_orphans", "parse_size", "is_mounted"]

DEFAULT_SIZE = 1 << 30

_created: list[Target] = []
_lock = threading.Lock()


def parse_size(text: str) -> int:
    """'512M', '1G', '1.5GiB', '4096' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"--size: not a size: {text!r} (e.g. 512M, 1G)")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)])


@dataclass
class Target:
    """A block device (or O_DIRECT file) the engine runs against."""

    kind: str
    path: str
    size_bytes: int
    writable: bool
    created_by_plugtrace: bool
    backing_file: str | None = None
    zram_index: int | None = None
    extra: dict = field(default_factory=dict)
    _closed: bool = False
    #: an open fd on a loop device we made: while it is open the device stays; when this process
    #: ends, however it ends, the kernel closes it and the device clears itself (LO_FLAGS_AUTOCLEAR).
    #: On a user's block device: the exclusive open that keeps other recorders off it during the run.
    _hold_fd: int | None = None

    @property
    def dev_t(self) -> str | None:
        """'major:minor' of the block device (of the file's filesystem device for files)."""
        st = os.stat(self.path)
        if stat.S_ISBLK(st.st_mode):
            return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"

    def describe(self) -> dict:
        d = {
            "kind": self.kind,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "writable": self.writable,
            "created_by_plugtrace": self.created_by_plugtrace,
            "dev_t": self.dev_t,
        }
        if self.backing_file:
            d["backing_file"] = self.backing_file
        d.update(self.extra)
        return d

    def close(self) -> None:
        """Remove what we created; idempotent; never touches a user's device."""
        if self._closed:
            return
        self._closed = True
        with _lock:
            if self in _created:
                _created.remove(self)
        if self._hold_fd is not None:
            # a user's device: others may have it again; a loop device of ours: the last opener is gone,
            # the device clears itself now (losetup -d below is for one whose autoclear could not be set)
            os.close(self._hold_fd)
            self._hold_fd = None
        if not self.created_by_plugtrace:
            return
        if self.kind == "loop":
            _run(["losetup", "-d", self.path], check=False)
            if self.backing_file:
                _unlink(self.backing_file)
        elif self.kind == "zram" and self.zram_index is not None:
            _zram_remove(self.zram_index)
            _unlink(str(_zram_owner_file(self.zram_index)))
        elif self.kind == "file":
            _unlink(self.path)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _run(cmd: list[str], check: bool = True) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CapabilityError(f"{cmd[0]} not found (install util-linux)") from None
    if check and proc.returncode != 0:
        raise DeviceError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip()


def _register(target: Target) -> Target:
    with _lock:
        _created.append(target)
    return target


def cleanup_all() -> None:
    """Remove every device this process created and has not removed yet."""
    with _lock:
        pending = list(_created)
    for target in reversed(pending):
        try:
            target.close()
        except Exception:  # keep removing the others
            pass


atexit.register(cleanup_all)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise CapabilityError(f"{what} needs root (run as root, or use --device file:PATH)")


#: bytes written per call when filling a loop device's backing file
_FILL_CHUNK = 4 << 20


def _fill(fd: int, size_bytes: int) -> None:
    """Write data over the whole file (a fixed pseudo-random chunk, repeated), on disk, out of the page cache."""
    chunk = np.random.default_rng(0x9E3779B9).integers(0, 256, _FILL_CHUNK, dtype=np.uint8).tobytes()
    view = memoryview(chunk)
    offset = 0
    while offset < size_bytes:
        offset += os.pwrite(fd, view[: min(_FILL_CHUNK, size_bytes - offset)], offset)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, size_bytes, os.POSIX_FADV_DONTNEED)  # reads must come from the disk, not memory


def create_loop(size_bytes: int = DEFAULT_SIZE, directory: str | None = None, sparse: bool = False) -> Target:
    """A loop device with direct I/O over a new file in `directory` (default /var/tmp).

    The file is filled with data first, so that reads reach storage as they
    would on a real disk: a sparse file's holes read as zeros from no storage
    at all, which flatters every number. `sparse` skips the filling.
    """
    _require_root("creating a loop device")
    directory = directory or ("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())
    fd, backing = tempfile.mkstemp(prefix="plugtrace-loop-", suffix=".img", dir=directory)
    t0 = time.monotonic()
    try:
        os.ftruncate(fd, size_bytes)
        if not sparse:
            _fill(fd, size_bytes)
    except OSError as exc:
        os.close(fd)
        _unlink(backing)
        raise DeviceError(f"cannot make a {size_bytes}-byte backing file in {directory}: {exc.strerror}") from None
    fill_s = time.monotonic() - t0
    os.close(fd)
    try:
        path = _run(["losetup", "--direct-io=on", "--find", "--show", backing])
    except BaseException:
        # a signal may land after losetup attached the file but before it said where: detach what it made
        for line in subprocess.run(["losetup", "-j", backing], capture_output=True, text=True).stdout.splitlines():
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True)
        _unlink(backing)
        raise
    target = _register(Target("loop", path, size_bytes, True, True, backing_file=backing))
    try:
        target._hold_fd = os.open(path, os.O_RDONLY)
        _set_autoclear(target._hold_fd)
    finally:
        # attached, the file lives as long as the device: gone from the directory, nothing to leave behind
        _unlink(backing)
    dio = Path(f"/sys/block/{os.path.basename(path)}/loop/dio")
    target.extra["direct_io"] = dio.exists() and dio.read_text().strip() == "1"
    target.extra["backing"] = "sparse" if sparse else "filled"
    if not sparse:
        target.extra["fill_s"] = round(fill_s, 3)
    return target


#: LOOP_GET_STATUS64 / LOOP_SET_STATUS64 (linux/loop.h), the size of struct loop_info64, where its
#: lo_flags field lies, and the flag that detaches a loop device when its last opener closes it
_LOOP_GET_STATUS64, _LOOP_SET_STATUS64, _LOOP_INFO64_SIZE, _LO_FLAGS_OFFSET = 0x4C05, 0x4C04, 232, 52
_LO_FLAGS_AUTOCLEAR = 4


def _set_autoclear(fd: int) -> None:
    """Make the loop device open on `fd` detach itself when its last opener closes it."""
    import fcntl
    import struct

    info = bytearray(_LOOP_INFO64_SIZE)
    fcntl.ioctl(fd, _LOOP_GET_STATUS64, info)
    flags = struct.unpack_from("=I", info, _LO_FLAGS_OFFSET)[0]
    struct.pack_into("=I", info, _LO_FLAGS_OFFSET, flags | _LO_FLAGS_AUTOCLEAR)
    fcntl.ioctl(fd, _LOOP_SET_STATUS64, bytes(info))


#: where a zram device we made says whose it is (the kernel cannot clear a zram device by itself)
ZRAM_OWNERS = Path("/run/plugtrace")


def _zram_owner_file(index: int) -> Path:
    return ZRAM_OWNERS / f"zram{index}.owner"


def _claim_zram(index: int) -> None:
    ZRAM_OWNERS.mkdir(parents=True, exist_ok=True)
    _zram_owner_file(index).write_text(f"{os.getpid()} {process_start(os.getpid())}\n")


def orphaned_zram() -> list[int]:
    """zram devices plugtrace made for a recorder that is gone (killed, machine not rebooted since)."""
    found = []
    for owner in sorted(ZRAM_OWNERS.glob("zram*.owner")) if ZRAM_OWNERS.is_dir() else []:
        try:
            pid, start = owner.read_text().split()
            index = int(owner.name[len("zram") : -len(".owner")])
        except (OSError, ValueError):
            continue
        if process_start(int(pid)) != start and Path(f"/sys/block/zram{index}").exists():
            found.append(index)
        elif not Path(f"/sys/block/zram{index}").exists():
            _unlink(str(owner))
    return found


def cleanup_orphans() -> list[str]:
    """Remove the zram devices of dead recorders (never a live one's, never one we did not make)."""
    removed = []
    for index in orphaned_zram():
        _zram_remove(index)
        _unlink(str(_zram_owner_file(index)))
        removed.append(f"/dev/zram{index}")
    return removed


def _zram_remove(index: int) -> None:
    base = Path(f"/sys/block/zram{index}")
    try:
        (base / "reset").write_text("1")
    except OSError:
        pass
    try:
        Path("/sys/class/zram-control/hot_remove").write_text(str(index))
    except OSError:
        pass


def create_zram(size_bytes: int = DEFAULT_SIZE) -> Target:
    """A new zram device (hot_add), sized `size_bytes`; existing zram devices are never touched."""
    _require_root("creating a zram device")
    control = Path("/sys/class/zram-control/hot_add")
    if not control.exists():
        subprocess.run(["modprobe", "zram", "num_devices=0"], capture_output=True, timeout=30)
    if not control.exists():
        raise CapabilityError("zram is not available (no /sys/class/zram-control; modprobe zram failed)")
    try:
        index = int(control.read_text().strip())
    except OSError as exc:
        raise DeviceError(f"zram hot_add failed: {exc.strerror}") from None
    target = _register(Target("zram", f"/dev/zram{index}", size_bytes, True, True, zram_index=index))
    _claim_zram(index)
    try:
        Path(f"/sys/block/zram{index}/disksize").write_text(str(size_bytes))
    except OSError as exc:
        target.close()
        raise DeviceError(f"cannot size /dev/zram{index}: {exc.strerror}") from None
    return target


def open_file(path: str, size_bytes: int = DEFAULT_SIZE, allow_write: bool = False) -> Target:
    """An O_DIRECT file; a missing one is created with `size_bytes` and removed afterwards."""
    p = Path(path)
    if p.exists():
        if not p.is_file():
            raise DeviceError(f"{path}: not a regular file (for a block device, name it without file:)")
        size = p.stat().st_size
        if size == 0:
            raise DeviceError(f"{path}: empty file")
        if allow_write and not os.access(path, os.W_OK):
            raise DeviceError(f"{path}: not writable")
        return Target("file", str(p), size, allow_write, False)
    if not p.parent.is_dir():
        raise DeviceError(f"{path}: directory {p.parent} does not exist")
    with open(p, "wb") as fh:
        try:
            # the space is taken now: a full file system is told here, not as failed writes mid-run
            os.posix_fallocate(fh.fileno(), 0, size_bytes)
        except OSError as exc:
            fh.close()
            _unlink(str(p))
            raise DeviceError(f"{path}: cannot make a {size_bytes}-byte file: {exc.strerror}") from None
    return _register(Target("file", str(p), size_bytes, True, True))


def is_mounted(dev_t: str) -> str | None:
    """The mount point of the device 'major:minor', if it is mounted."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 4 and parts[2] == dev_t:
                    return parts[4]
    except OSError:
        pass
    return None


def block_dev_t(path: str) -> str:
    """'major:minor' of block device `path`; DeviceError when it is missing or not one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DeviceError(f"{path}: no such device") from None
    except PermissionError:
        raise DeviceError(f"{path}: permission denied (run as root)") from None
    if not stat.S_ISBLK(st.st_mode):
        raise DeviceError(f"{path}: not a block device")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def open_block_device(path: str, allow_write: bool = False) -> Target:
    """A user's block device: checked, never written unless `allow_write`."""
    dev_t = block_dev_t(path)
    mount = is_mounted(dev_t)
    if mount:
        raise DeviceError(f"{path}: mounted on {mount}; refusing to run on a mounted device")
    holders = Path(f"/sys/dev/block/{dev_t}/holders")
    if holders.is_dir() and any(holders.iterdir()):
        names = ", ".join(sorted(h.name for h in holders.iterdir()))
        raise DeviceError(f"{path}: busy (held by {names})")
    ro_flag = Path(f"/sys/dev/block/{dev_t}/ro")
    if allow_write and ro_flag.exists() and ro_flag.read_text().strip() == "1":
        # root may open a read-only device for writing; the writes then fail one by one
        raise DeviceError(f"{path}: read-only device; drop --allow-write")
    try:
        # O_EXCL on a block device fails with EBUSY while anyone holds it exclusively
        fd = os.open(path, (os.O_RDWR if allow_write else os.O_RDONLY) | os.O_EXCL)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DeviceError(f"{path}: busy (in use by another program or the kernel)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise DeviceError(f"{path}: permission denied (run as root)") from None
        if exc.errno == errno.EROFS:
            raise DeviceError(f"{path}: read-only device; drop --allow-write") from None
        raise DeviceError(f"{path}: cannot open: {exc.strerror}") from None
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        os.close(fd)
        raise DeviceError(f"{path}: size 0 (no medium, or a loop device with no backing file)")
    # held exclusively until the run ends: a second recorder is told the device is busy, instead of
    # counting this run's requests as its own (or, writing, corrupting what this one verifies)
    return Target("block", path, size, allow_write, False, _hold_fd=fd)


#: the fields of /sys/block/NAME/stat, in order (Documentation/block/stat.rst)
_STAT_FIELDS = (
    "reads",
    "read_merges",
    "read_sectors",
    "read_ticks",
    "writes",
    "write_merges",
    "write_sectors",
    "write_ticks",
    "in_flight",
    "io_ticks",
    "time_in_queue",
    "discards",
    "discard_merges",
    "discard_sectors",
    "discard_ticks",
    "flushes",
    "flush_ticks",
)


def block_stat(path: str) -> dict[str, int]:
    """The kernel's own I/O counters of whole block device `path` (/sys/block/NAME/stat), by
    the names in _STAT_FIELDS: ``reads``, ``writes``, ``discards`` and ``flushes`` count
    requests completed. Older kernels give fewer fields."""
    fields = Path(f"/sys/block/{os.path.basename(os.path.realpath(path))}/stat").read_text().split()
    return dict(zip(_STAT_FIELDS, map(int, fields)))


def open_target(spec: str, size_bytes: int = DEFAULT_SIZE, allow_write: bool = False, sparse: bool = False) -> Target:
    """`loop`, `zram`, `file:PATH` or a block device path -> Target (created ones are ours to write).
    `sparse`: a loop device over a sparse file, not filled with data first. Before making a
    device, the zram devices a killed recorder left behind are removed."""
    if spec in ("loop", "zram") and os.geteuid() == 0:
        for name in cleanup_orphans():
            print(f"plugtrace: removed {name}, left behind by a recorder that was killed", file=sys.stderr)
    if spec == "loop":
        return create_loop(size_bytes, sparse=sparse)
    if spec == "zram":
        return create_zram(size_bytes)
    if spec.startswith("file:"):
        return open_file(spec[5:], size_bytes, allow_write)
    if spec.startswith("/"):
        return open_block_device(spec, allow_write)
    raise UsageError(f"--device: expected loop, zram, file:PATH or /dev/NAME, not {spec!r}")


def check_writable(target: Target, writes: bool) -> None:
    """Refuse a write workload on a device not handed to us for writing."""
    if writes and not target.writable:
        raise DeviceError(
            f"{target.path}: the workload writes, but this device was not handed over for writing "
            "(add --allow-write if its contents may be destroyed)"
        )
