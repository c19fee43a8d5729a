"""Real block devices to run on: ones we create (and always remove) and ones a user names.

* `loop`: a loop device with direct I/O over a file with no name (filled with data unless `sparse`),
  attached with LOOP_CONFIGURE so that it clears itself when we end, however we end.
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
import contextlib
import errno
import os
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CapabilityError, DeviceError, UsageError
from .logs import logger
from .procfs import process_start

__all__ = ["Target", "open_target", "cleanup_all", "cleanup_orphans", "parse_size", "is_mounted"]

DEFAULT_SIZE = 1 << 30

_created: list[Target] = []
_lock = threading.Lock()


def parse_size(text: str) -> int:
    """'512M', '1G', '1.5GiB', '4096' -> bytes: a positive multiple of 512 (a device's sector)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"--size: not a size: {text!r} (e.g. 512M, 1G)")
    size = int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)])
    if size <= 0 or size % 512:
        raise UsageError(f"--size: a positive multiple of 512 bytes, not {text!r} ({size} bytes)")
    return size


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
    #: a file we made: (st_dev, st_ino) of what we made, the only thing removed under its name
    _made: tuple[int, int] | None = None

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
            # the device clears itself now (and detaching it by name afterwards could hit another
            # program's device, made meanwhile under the same name)
            os.close(self._hold_fd)
            self._hold_fd = None
        if not self.created_by_plugtrace:
            return
        if self.kind == "zram" and self.zram_index is not None:
            # one someone opened meanwhile stays, with its owner file: a later run removes it once closed
            if _zram_remove(self.zram_index):
                _unlink(str(_zram_owner_file(self.zram_index)))
            else:
                logger.warning(
                    f"plugtrace: {self.path} is open by another program; it stays until `plugtrace devices "
                    "--cleanup` once that program has closed it"
                )
        elif self.kind == "file":
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) == self._made:  # not a file put there under the same name meanwhile
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


def _unnamed_file(directory: str) -> int:
    """An open read-write file in `directory` that no name reaches: whatever ends this process, even
    SIGKILL, the kernel frees it. It is made with a name, so that `losetup -a` says whose the loop
    device is ("/var/tmp/plugtrace-loop-....img (deleted)"), and unlinked at once."""
    with _signals_held():  # a signal between the two calls would leave the name behind
        fd, name = tempfile.mkstemp(prefix="plugtrace-loop-", suffix=".img", dir=directory)
        os.unlink(name)
    return fd


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM, SIGHUP and SIGQUIT held back (delivered on leaving) around steps that make
    something and write down that we made it: a signal between the two would leave it behind unknown."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


#: LOOP_CTL_GET_FREE (on /dev/loop-control), LOOP_CONFIGURE (on /dev/loopN) and the size of its
#: struct loop_config: fd, block_size, a struct loop_info64 whose lo_flags lie at byte 52, reserved
_LOOP_CTL_GET_FREE, _LOOP_CONFIGURE, _LOOP_CONFIG_SIZE, _LOOP_CONFIG_FLAGS_OFFSET = 0x4C82, 0x4C0A, 304, 8 + 52
#: LO_FLAGS_AUTOCLEAR detaches the device when its last opener closes it; LO_FLAGS_DIRECT_IO
_LO_FLAGS_AUTOCLEAR, _LO_FLAGS_DIRECT_IO = 4, 16


def _attach_loop(backing_fd: int) -> tuple[str, int]:
    """Attach the file open on `backing_fd` to a free loop device, with direct I/O and autoclear set in
    the same ioctl (LOOP_CONFIGURE): from its first moment the device lasts only as long as the
    returned descriptor on it, so a recorder ending in any way, SIGKILL included, leaves none.
    Returns (device path, that descriptor)."""
    import fcntl
    import struct

    config = bytearray(_LOOP_CONFIG_SIZE)
    struct.pack_into("=I", config, 0, backing_fd)
    struct.pack_into("=I", config, _LOOP_CONFIG_FLAGS_OFFSET, _LO_FLAGS_AUTOCLEAR | _LO_FLAGS_DIRECT_IO)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR)
    except OSError as exc:
        raise CapabilityError(f"/dev/loop-control: {exc.strerror} (is the loop module loaded?)") from None
    try:
        for _ in range(100):  # another program may take the free device first: ask again
            index = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
            path = f"/dev/loop{index}"
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # its node is still being made
                time.sleep(0.01)
                continue
            try:
                fcntl.ioctl(fd, _LOOP_CONFIGURE, bytes(config))
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise DeviceError(f"cannot attach a loop device: {exc.strerror}") from None
            except BaseException:
                os.close(fd)  # a signal right after the ioctl: closing clears the device again
                raise
            return path, fd
    finally:
        os.close(control)
    raise DeviceError("cannot attach a loop device: every free one was taken by another program meanwhile")


def create_loop(size_bytes: int = DEFAULT_SIZE, directory: str | None = None, sparse: bool = False) -> Target:
    """A loop device with direct I/O over a new file in `directory` (default /var/tmp).

    The file is filled with data first, so that reads reach storage as they
    would on a real disk: a sparse file's holes read as zeros from no storage
    at all, which flatters every number. `sparse` skips the filling. The file has
    no name from its first moment (it is only ever reached through descriptors), so
    a recorder interrupted or killed while filling it leaves nothing behind.
    """
    _require_root("creating a loop device")
    directory = directory or ("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())
    t0 = time.monotonic()
    try:
        backing_fd = _unnamed_file(directory)
    except OSError as exc:
        raise DeviceError(f"cannot make a backing file in {directory}: {exc.strerror}") from None
    try:
        try:
            os.ftruncate(backing_fd, size_bytes)
            if not sparse:
                _fill(backing_fd, size_bytes)
        except OSError as exc:
            raise DeviceError(f"cannot make a {size_bytes}-byte backing file in {directory}: {exc.strerror}") from None
        fill_s = time.monotonic() - t0
        path, hold_fd = _attach_loop(backing_fd)
    finally:
        os.close(backing_fd)  # attached, the device holds the file; else this frees it
    try:
        target = _register(Target("loop", path, size_bytes, True, True, _hold_fd=hold_fd))
    except BaseException:
        os.close(hold_fd)
        raise
    sys_loop = Path(f"/sys/block/{os.path.basename(path)}/loop")
    try:
        target.backing_file = (sys_loop / "backing_file").read_text().strip()  # "... (deleted)"
    except OSError:
        pass
    dio = sys_loop / "dio"
    target.extra["direct_io"] = dio.exists() and dio.read_text().strip() == "1"
    target.extra["backing"] = "sparse" if sparse else "filled"
    if not sparse:
        target.extra["fill_s"] = round(fill_s, 3)
    return target


#: where a zram device we made says whose it is (the kernel cannot clear a zram device by itself)
ZRAM_OWNERS = Path("/run/plugtrace")


def _zram_owner_file(index: int) -> Path:
    return ZRAM_OWNERS / f"zram{index}.owner"


def _zram_identity(index: int) -> str | None:
    """What tells this zram device instance from another under the same name: its disk sequence number
    (new at every hot_add) and its memory limit (cleared by every reset), or None when it is gone."""
    base = Path(f"/sys/block/zram{index}")
    try:
        diskseq = (base / "diskseq").read_text().strip()
        mem_limit = (base / "mm_stat").read_text().split()[3]
    except (OSError, IndexError):
        return None
    return f"{diskseq} {mem_limit}"


def _mark_zram(index: int, size_bytes: int) -> None:
    """Give our zram device a memory limit no one else would choose, so that a reset (which clears it)
    and a reuse by its next user are told from our own device. The limit is never reached: it is above
    twice the disk size, and zram stores at most the disk size of data, compressed."""
    token = 1 + int.from_bytes(os.urandom(2), "little") % 4095
    limit = (2 * size_bytes + (1 << 20)) // 4096 * 4096 + token * 4096
    Path(f"/sys/block/zram{index}/mem_limit").write_text(str(limit))


def _claim_zram(index: int) -> None:
    """Write down that zram`index`, as it is now (`_zram_identity`), is this process's."""
    ZRAM_OWNERS.mkdir(parents=True, exist_ok=True)
    _zram_owner_file(index).write_text(f"{os.getpid()} {process_start(os.getpid())} {_zram_identity(index)}\n")


def orphaned_zram() -> list[int]:
    """zram devices plugtrace made for a recorder that is gone (killed, machine not rebooted since), and
    still the very devices it made: one reset or made anew under the same name since is someone else's,
    and only its stale owner file is removed."""
    found = []
    for owner in sorted(ZRAM_OWNERS.glob("zram*.owner")) if ZRAM_OWNERS.is_dir() else []:
        try:
            pid, start, identity = owner.read_text().split(maxsplit=2)
            index = int(owner.name[len("zram") : -len(".owner")])
        except (OSError, ValueError):
            continue
        if process_start(int(pid)) == start:
            continue  # its recorder runs
        if _zram_identity(index) == identity.strip():
            found.append(index)
        else:
            _unlink(str(owner))
    return found


def cleanup_orphans() -> tuple[list[str], list[str]]:
    """Remove the zram devices of dead recorders (never a live one's, never one we did not make, never
    one open now). Returns (removed, left because they are open)."""
    removed, busy = [], []
    for index in orphaned_zram():
        if _zram_remove(index):
            _unlink(str(_zram_owner_file(index)))
            removed.append(f"/dev/zram{index}")
        else:
            busy.append(f"/dev/zram{index}")
    return removed, busy


def _zram_remove(index: int) -> bool:
    """Reset and remove zram`index`; False when it stays open (the kernel refuses both then) or was not
    there to remove."""
    base = Path(f"/sys/block/zram{index}")
    # udev probes a device whose size changed, holding it open for a moment: a refusal is asked again
    deadline = time.monotonic() + 5  # a loaded machine's udev can take seconds
    while True:
        try:
            (base / "reset").write_text("1")
            Path("/sys/class/zram-control/hot_remove").write_text(str(index))
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def create_zram(size_bytes: int = DEFAULT_SIZE) -> Target:
    """A new zram device (hot_add), sized `size_bytes`; existing zram devices are never touched."""
    _require_root("creating a zram device")
    control = Path("/sys/class/zram-control/hot_add")
    if not control.exists():
        subprocess.run(["modprobe", "zram", "num_devices=0"], capture_output=True, timeout=30)
    if not control.exists():
        raise CapabilityError("zram is not available (no /sys/class/zram-control; modprobe zram failed)")
    with _signals_held():  # reading hot_add makes the device: it is registered and claimed before a signal lands
        try:
            index = int(control.read_text().strip())
        except OSError as exc:
            raise DeviceError(f"zram hot_add failed: {exc.strerror}") from None
        target = _register(Target("zram", f"/dev/zram{index}", size_bytes, True, True, zram_index=index))
        try:
            _mark_zram(index, size_bytes)
            _claim_zram(index)
        except OSError as exc:
            target.close()
            raise DeviceError(f"cannot claim /dev/zram{index}: {exc.strerror}") from None
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
    if p.is_symlink():
        raise DeviceError(
            f"{path}: a symbolic link to {os.readlink(p)}, which does not exist; name the file itself "
            "(plugtrace creates a missing file, and removes it afterwards, only under the name given)"
        )
    if not p.parent.is_dir():
        raise DeviceError(f"{path}: directory {p.parent} does not exist")
    try:
        # O_EXCL: made here or not at all (never through a link, never over a file that just appeared)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise DeviceError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        made = os.fstat(fd)
        # the space is taken now: a full file system is told here, not as failed writes mid-run
        os.posix_fallocate(fd, 0, size_bytes)
    except OSError as exc:
        os.close(fd)
        _unlink(str(p))
        raise DeviceError(f"{path}: cannot make a {size_bytes}-byte file: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        _unlink(str(p))
        raise
    os.close(fd)
    return _register(Target("file", str(p), size_bytes, True, True, _made=(made.st_dev, made.st_ino)))


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
    """`loop`, `loop:DIR`, `zram`, `file:PATH` or a block device path -> Target (created ones are ours
    to write). `loop:DIR`: the loop device's backing file in DIR (`loop:/dev/shm`: over memory) instead
    of /var/tmp. `sparse`: a loop device over a sparse file, not filled with data first. Before making
    a device, the zram devices a killed recorder left behind are removed."""
    if (spec in ("loop", "zram") or spec.startswith("loop:")) and os.geteuid() == 0:
        removed, busy = cleanup_orphans()
        for name in removed:
            logger.warning(f"plugtrace: removed {name}, left behind by a recorder that was killed")
        for name in busy:
            logger.warning(f"plugtrace: {name}, left behind by a recorder that was killed, is open: left alone")
    if spec == "loop":
        return create_loop(size_bytes, sparse=sparse)
    if spec.startswith("loop:"):
        directory = spec[5:]
        if not os.path.isdir(directory):
            raise UsageError(f"--device {spec}: {directory!r} is not a directory to put the loop device's file in")
        return create_loop(size_bytes, directory=directory, sparse=sparse)
    if spec == "zram":
        return create_zram(size_bytes)
    if spec.startswith("file:"):
        return open_file(spec[5:], size_bytes, allow_write)
    if spec.startswith("/"):
        return open_block_device(spec, allow_write)
    raise UsageError(f"--device: expected loop, loop:DIR, zram, file:PATH or /dev/NAME, not {spec!r}")


def check_writable(target: Target, writes: bool) -> None:
    """Refuse a write workload on a device not handed to us for writing."""
    if writes and not target.writable:
        raise DeviceError(
            f"{target.path}: the workload writes, but this device was not handed over for writing "
            "(add --allow-write if its contents may be destroyed)"
        )
