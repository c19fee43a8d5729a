"""Our eBPF programs (probes/*.bpf.c, compiled to probes/build/*.bpf.o) loaded with libbpf.

The programs are BPF C with CO-RE: libbpf relocates their struct accesses
to the running kernel, creates their maps and ring buffers, loads them and
attaches them to BTF-typed raw tracepoints (``tp_btf``), which read the
tracepoint's arguments as they are with no record formatted per hit. This
module is the Pythonic layer over our cffi binding (`_libbpf_build.py`):
`BpfObject` (one program file: settings, load, attach, maps; `close()`
detaches and frees everything), `Ring` (the batch reader of a ring buffer,
records as numpy columns), and `BpfError`, whose message says what failed
and, for a verifier rejection, the verifier's message and the C source line
it points at.

Everything lives in file descriptors of this process: when it exits, however
it exits, the kernel detaches the programs.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CapabilityError
from ..procfs import descendants
from .probes import PROBES_DIR

__all__ = [
    "BpfError",
    "BpfObject",
    "KernelBtf",
    "Ring",
    "available",
    "bpf_stats",
    "libbpf_version",
    "objects_dir",
    "record_dtype",
]

#: the header both sides read: the programs' records and table sizes
RECORDS_HEADER = "records.h"


def objects_dir() -> Path:
    """Where the set-up puts the compiled programs (`make -C probes`)."""
    return PROBES_DIR / "build"


def _binding():
    """The cffi extension (ffi, lib), or BpfError when it was not built."""
    try:
        from . import _libbpf  # type: ignore[attr-defined]  # built by set-up, not seen by mypy
    except ImportError as exc:
        raise BpfError(
            errno.ENOENT, f"plugtrace's libbpf binding is not built ({exc}); run ./scripts/install.sh"
        ) from None
    return _libbpf.ffi, _libbpf.lib


class BpfError(CapabilityError, OSError):
    """Loading or attaching our programs failed; the message says which and why in one line.

    An OSError too (`errno`, `strerror`), as the system calls beneath it report, and a
    CapabilityError of the one error tree: what the machine lacks, exit code 4."""

    def __init__(self, errno_: int, message: str):
        OSError.__init__(self, errno_, message)

    @property
    def message(self) -> str:
        return self.strerror or str(self)


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 1 << 22  # the kernel's limit (PID_MAX_LIMIT on 64-bit)


def record_dtype(struct_name: str, ring_header: bool = False) -> np.dtype:
    """The numpy dtype of ``struct <struct_name>`` of probes/records.h, as the C compiler lays it out;
    with `ring_header`, after a BPF ring buffer's 8-byte record header (``rb_len``, ``rb_pg``)."""
    ffi, _ = _binding()
    ctype = ffi.typeof(f"struct {struct_name}")
    at = 8 if ring_header else 0
    names, formats, offsets = (["rb_len", "rb_pg"], ["<u4", "<u4"], [0, 4]) if ring_header else ([], [], [])
    for name, field in ctype.fields:
        names.append(name)
        formats.append(f"<{'u' if field.type.cname.startswith('u') else 'i'}{ffi.sizeof(field.type)}")
        offsets.append(at + field.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": at + ffi.sizeof(ctype)})


def libbpf_version() -> str | None:
    """The version of the libbpf our binding runs with ("v1.1", say), or None without the binding."""
    try:
        ffi, lib = _binding()
    except BpfError:
        return None
    return ffi.string(lib.libbpf_version_string()).decode()


def header_constant(name: str) -> int:
    """An integer #define of probes/records.h."""
    return getattr(_binding()[1], name)


class KernelBtf:
    """The running kernel's types, as libbpf reads them (/sys/kernel/btf/vmlinux)."""

    def __init__(self) -> None:
        self._ffi, self._lib = _binding()
        self._btf = self._lib.btf__load_vmlinux_btf()
        if self._btf == self._ffi.NULL:
            e = self._ffi.errno or errno.ENOENT
            raise BpfError(e, f"the kernel's BTF cannot be read: {os.strerror(e)}")

    def has_tracepoint(self, name: str) -> bool:
        """Whether a BTF-typed program can attach to raw tracepoint `name`."""
        return bool(self._lib.pt_btf_has_typedef(self._btf, f"btf_trace_{name}".encode()))

    def enum(self, name: str) -> dict[str, int]:
        """The members of enum `name` and their values (request flag bits move between kernels)."""
        names = self._ffi.new("const char *[]", 512)
        values = self._ffi.new("int64_t[]", 512)
        n = self._lib.pt_btf_enum(self._btf, name.encode(), names, values, 512)
        if n < 0:
            raise BpfError(errno.ENOENT, f"the kernel's BTF has no enum {name}")
        return {self._ffi.string(names[i]).decode(): int(values[i]) for i in range(n)}

    def close(self) -> None:
        if self._btf is not None:
            self._lib.btf__free(self._btf)
            self._btf = None

    def __enter__(self) -> KernelBtf:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BpfObject:
    """One compiled program file (probes/build/NAME.bpf.o): `start()` opens it, sets
    its ``const volatile`` `settings` and map sizes (`max_entries`), loads and
    attaches its programs; `close()` detaches and frees them all.

    `skip`: programs not to load (the fork follower when no process is
    followed, say). `if_present`: programs loaded only where the kernel has
    their tracepoint (a tracepoint that was renamed); at least one of them must
    be. `attach_to`: program -> tracepoint, for programs whose section names
    none (``SEC("tp_btf")``). Programs attach in the order the file defines them.
    """

    def __init__(
        self,
        name: str,
        settings: dict[str, int | bool] | None = None,
        max_entries: dict[str, int] | None = None,
        skip: set[str] | frozenset[str] = frozenset(),
        if_present: set[str] | frozenset[str] = frozenset(),
        attach_to: dict[str, str] | None = None,
        path: Path | None = None,
    ):
        self.name = name
        self.path = path or objects_dir() / f"{name}.bpf.o"
        self.settings = dict(settings or {})
        self.max_entries = dict(max_entries or {})
        self.skip, self.if_present = set(skip), set(if_present)
        self.attach_to = dict(attach_to or {})
        self._ffi, self._lib = _binding()
        self._obj = None
        #: program name -> (tracepoint, program handle) of the programs loaded
        self._programs: dict[str, tuple[str, object]] = {}
        #: the links that attach them (empty while paused)
        self._links: list = []
        self._selected: list[str] = []
        self._ncpu = self._lib.libbpf_num_possible_cpus()

    # --- life -----------------------------------------------------------------
    def load(self) -> BpfObject:
        """Open, set up and load the programs, without attaching them."""
        try:
            self._open()
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def start(self) -> BpfObject:
        """`load()`, then attach."""
        self.load()
        try:
            self.resume()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        ffi, lib = self._ffi, self._lib
        if not self.path.exists():
            raise BpfError(errno.ENOENT, f"{self.path} is not built (run ./scripts/install.sh, or make -C probes)")
        lib.pt_log_capture()
        self._obj = lib.bpf_object__open_file(os.fsencode(self.path), ffi.NULL)
        if self._obj == ffi.NULL:
            self._obj = None
            self._fail(ffi.errno, "opening")
        for var, value in self.settings.items():
            size = 4 if not isinstance(value, bool) else 1
            buf = ffi.new("uint8_t[]", int(value).to_bytes(size, "little", signed=int(value) < 0))
            if lib.pt_set_global(self._obj, var.encode(), buf, size) < 0:
                raise BpfError(errno.EINVAL, f"{self.name}.bpf.o has no setting {var} of {size} bytes")
        for map_name, entries in self.max_entries.items():
            m = self._map(map_name)
            if lib.bpf_map__set_max_entries(m, entries) < 0:
                raise BpfError(errno.EINVAL, f"{self.name}.bpf.o: cannot size map {map_name}")

    def tracepoints(self) -> list[str]:
        """The tracepoints its programs attach to on this kernel (opened to see, not loaded)."""
        if self._obj is None:
            try:
                self._open()
                self._select()
            finally:
                self.close()
        return list(self._selected)

    def _select(self) -> None:
        """Choose the programs to load (`skip`, `if_present`) and their attach targets."""
        ffi, lib = self._ffi, self._lib
        self._programs = {}
        with KernelBtf() as kernel:
            prog = lib.bpf_object__next_program(self._obj, ffi.NULL)
            present = []
            while prog != ffi.NULL:
                name = ffi.string(lib.bpf_program__name(prog)).decode()
                section = ffi.string(lib.bpf_program__section_name(prog)).decode()
                tracepoint = self.attach_to.get(name) or section.partition("/")[2]
                load = name not in self.skip
                if load and name in self.if_present:
                    load = kernel.has_tracepoint(tracepoint)
                    present += [name] if load else []
                if name in self.attach_to and load:
                    lib.bpf_program__set_attach_target(prog, 0, tracepoint.encode())
                lib.bpf_program__set_autoload(prog, load)
                if load:
                    self._programs[name] = (tracepoint, prog)
                prog = lib.bpf_object__next_program(self._obj, prog)
        if self.if_present and not present:
            raise BpfError(
                errno.ENOENT,
                f"{self.name}: this kernel has none of the tracepoints of {', '.join(sorted(self.if_present))}",
            )
        self._selected = [tp for tp, _ in self._programs.values()]

    def _load(self) -> None:
        self._select()
        lib = self._lib
        lib.pt_log_capture()
        err = lib.bpf_object__load(self._obj)
        if err < 0:
            self._fail(-err, "loading")

    def _fail(self, err: int, doing: str) -> None:
        log = self._ffi.string(self._lib.pt_log_text()).decode(errors="replace")
        sources = [self.path.parent.parent, PROBES_DIR]  # (probes/build/NAME.bpf.o: its sources are in probes/)
        raise BpfError(
            err or errno.EINVAL, f"{doing} {self.name}.bpf.o: {explain_log(log, sources) or os.strerror(err)}"
        )

    def resume(self) -> None:
        """Attach the programs (again, after `pause()`), in the order the file defines them."""
        if self._links:
            return
        for name, (tracepoint, prog) in self._programs.items():
            link = self._lib.bpf_program__attach(prog)
            if link == self._ffi.NULL:
                e = self._ffi.errno
                raise BpfError(e, f"attaching {self.name}.bpf.o's {name} to {tracepoint}: {os.strerror(e)}")
            self._links.append(link)

    def pause(self) -> None:
        """Detach the programs, keeping them and their maps (`resume()` attaches them again)."""
        links, self._links = self._links, []
        for link in links:
            self._lib.bpf_link__destroy(link)

    def close(self) -> None:
        self.pause()
        self._programs = {}
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfObject:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what the programs share with us -----------------------------------------
    @property
    def attached(self) -> list[str]:
        """The tracepoints attached to."""
        return [tp for tp, _ in self._programs.values()] if self._links else []

    def _map(self, name: str):
        m = self._lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if m == self._ffi.NULL:
            raise BpfError(errno.ENOENT, f"{self.name}.bpf.o has no map {name}")
        return m

    def map_fd(self, name: str) -> int:
        return self._lib.bpf_map__fd(self._map(name))

    def map_entries(self, name: str) -> int:
        return self._lib.bpf_map__max_entries(self._map(name))

    def update(self, map_name: str, key: int, value: int) -> None:
        """Array map `map_name`'s entry `key` (u32) = `value` (u64)."""
        k, v = self._ffi.new("uint32_t *", key), self._ffi.new("uint64_t *", value)
        if self._lib.bpf_map_update_elem(self.map_fd(map_name), k, v, 0) < 0:
            e = self._ffi.errno
            raise BpfError(e, f"updating {self.name}.bpf.o's map {map_name}: {os.strerror(e)}")

    def percpu_sums(self, map_name: str) -> list[int]:
        """Every entry of a per-CPU array of u64, each summed over the CPUs."""
        fd, n = self.map_fd(map_name), self.map_entries(map_name)
        key, values = self._ffi.new("uint32_t *"), self._ffi.new("uint64_t[]", self._ncpu)
        out = []
        for i in range(n):
            key[0] = i
            if self._lib.bpf_map_lookup_elem(fd, key, values) < 0:
                e = self._ffi.errno
                raise BpfError(e, f"reading {self.name}.bpf.o's map {map_name}: {os.strerror(e)}")
            out.append(sum(values))
        return out

    def follow(self, pid: int, existing_children: bool = False) -> None:
        """Put `pid` in the set of traced processes (the map ``traced``, sized by `traced_words()`),
        and with `existing_children` the processes it started before now: found after the fork
        follower is on, so that none falls between the two."""
        words: dict[int, int] = {pid >> 6: 1 << (pid & 63)}
        for child in descendants(pid) if existing_children else []:
            words[child >> 6] = words.get(child >> 6, 0) | 1 << (child & 63)
        for word, bits in words.items():
            self.update("traced", word, bits)

    def run_stats(self) -> dict[str, tuple[int, int]]:
        """tracepoint -> (runs, total ns in the program) of each program attached.
        The kernel counts only while `kernel.bpf_stats_enabled` is 1 (`bpf_stats()`)."""
        out = {}
        for tracepoint, prog in self._programs.values():
            fd = self._lib.bpf_program__fd(prog)
            info = dict(
                line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if ":" in line
            )
            out[tracepoint] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
        return out


def traced_words() -> int:
    """Entries of the ``traced`` bitmap: one bit per tgid up to pid_max."""
    return -(-_pid_max() // 64)


#: a C source line the verifier quotes: "; TEXT", on newer kernels "; TEXT @ FILE:LINE"
_LOG_SOURCE = re.compile(r"^;\s*(.*?)(?:\s+@ (\S+:[1-9]\d*))?(?:\s+@ \S+:0)?$")
#: verifier log lines that are instructions or register states, not its message
_LOG_STATE = re.compile(
    r"^\d+: |^R\d+(_\w+)?=|^from \d+ to \d+|^processed \d+ insns|^mark_precise|^last_idx|^regs=|^parent "
)


def explain_log(log: str, sources: list[Path]) -> str:
    """libbpf's messages on a failure, in one line: the verifier's message (the log's last line
    that is not an instruction or a register dump), the program, and the C source line it
    points at (file:line in `sources`, found from the line text the verifier quotes), or libbpf's
    own reason."""
    lines = [line.rstrip() for line in log.splitlines()]
    if "-- BEGIN PROG LOAD LOG --" in log:
        start = max(i for i, line in enumerate(lines) if "-- BEGIN PROG LOAD LOG --" in line)
        prog = re.search(r"prog '([^']+)'", lines[start])
        end = next((i for i in range(start, len(lines)) if "-- END PROG LOAD LOG --" in lines[i]), len(lines))
        body = [line for line in lines[start + 1 : end] if line.strip()]
        quoted = next((m for line in reversed(body) for m in [_LOG_SOURCE.match(line)] if m and m.group(1)), None)
        message = next(
            (
                line.strip()
                for line in reversed(body)
                if not _LOG_STATE.search(line.strip()) and not line.startswith(";")
            ),
            "rejected",
        )
        source, where = (quoted.group(1), quoted.group(2)) if quoted else (None, None)
        if source and not where:  # older kernels quote the line without saying where it is
            where = _source_line(source, sources)
        text = f"the verifier rejected {prog.group(1) if prog else 'a program'}: {message}"
        if source:
            text += f" at {where or 'source'}: {source}"
        return text
    reasons = [
        line.removeprefix("libbpf: ").strip() for line in lines if line.strip() and "failed to load object" not in line
    ]
    return "; ".join(reasons[-3:])


def _source_line(text: str, sources: list[Path]) -> str | None:
    """ "file:line" of the line of the BPF C sources in the directories `sources` whose text is `text`."""
    for path in [p for d in sources for p in sorted(d.glob("*.bpf.c")) + sorted(d.glob("*.h"))]:
        with contextlib.suppress(OSError):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip() == text:
                    return f"{path.name}:{number}"
    return None


def available() -> tuple[bool, str]:
    """Whether our programs can be loaded here (and if not, why): root, the compiled
    programs, the binding, and a BTF-typed tracepoint program the kernel accepts."""
    if os.geteuid() != 0:
        return False, "not root"
    try:
        # loaded is enough: attached, it would tax every system call meanwhile
        BpfObject("empty", attach_to={"empty": "sys_enter"}).load().close()
    except BpfError as exc:
        return False, f"cannot load a BTF-typed tracepoint program: {exc.strerror or exc}"
    return True, ""


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """Have the kernel count runs and run time of every BPF program meanwhile
    (`kernel.bpf_stats_enabled`; each run then also reads the clock twice)."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


class Ring:
    """The reading end of a BPF ring buffer whose records all have one size.

    Programs write records with ``bpf_ringbuf_output(..., BPF_RB_NO_WAKEUP)``:
    no wakeup per event (what limits bpftrace's perf output); the reader
    polls on its own clock. The kernel maps the data area twice in a row, so
    every pending record is one contiguous slice, read as a numpy array of
    `dtype` (an 8-byte header, then the record: `record_dtype(..., ring_header=True)`).
    """

    def __init__(self, fd: int, size: int, dtype):
        self.fd = fd
        self.dtype = np.dtype(dtype)
        if self.dtype.itemsize % 8 or self.dtype.names[:2] != ("rb_len", "rb_pg"):
            raise ValueError("records start with the 8-byte header and are a multiple of 8 bytes")
        self.size, self._page = size, mmap.PAGESIZE
        self._cons = mmap.mmap(fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._data = mmap.mmap(fd, self._page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self._page)

    def read(self) -> np.ndarray:
        """The records committed since the last call, oldest first (a copy)."""
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        n = (struct.unpack_from("<Q", self._data, 0)[0] - cons) // self.dtype.itemsize
        if n <= 0:
            return np.empty(0, self.dtype)
        recs = np.frombuffer(self._data, self.dtype, count=n, offset=self._page + (cons & (self.size - 1)))
        busy = (recs["rb_len"] & 0x80000000) != 0  # reserved on another CPU, not yet committed
        if busy.any():
            recs = recs[: int(busy.argmax())]
        out = recs.copy()
        del recs
        struct.pack_into("<Q", self._cons, 0, cons + len(out) * self.dtype.itemsize)
        return out

    def close(self) -> None:
        self._cons.close()
        self._data.close()
