"""meta.json: what a run is, read and checked once, with typed access to the fields readers use.

`RunMeta` is the parsed meta.json (a dict, so it is written back as it was read and fields
this version does not know survive) whose properties give the fields plugtrace itself reads,
with their types and defaults. `Status` and `Mode` are the values meta.json stores as strings.
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

from ..errors import RunDirError

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "Status", "Mode", "RunMeta", "read_meta", "PARTIAL_STATUSES"]

SCHEMA_NAME = "plugtrace-run"
SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    """A run's `status` in meta.json."""

    RECORDING = "recording"  #: still being written, or the writer was killed
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  #: a signal stopped it; data up to then is kept
    FAILED = "failed"
    INCOMPLETE = "incomplete"  #: some table could not be finished (disk full)

    def __str__(self) -> str:
        return self.value


class Mode(str, enum.Enum):
    """How a run was traced (`config.mode`)."""

    AGGREGATE = "aggregate"  #: histograms and counters in the kernel
    EVENTS = "events"  #: one record per event
    OFF = "off"  #: no tracing

    def __str__(self) -> str:
        return self.value


#: statuses whose data stops early
PARTIAL_STATUSES = frozenset({Status.RECORDING, Status.INTERRUPTED, Status.FAILED, Status.INCOMPLETE})

#: meta.json fields that readers use, with the JSON types they must have when present
_META_TYPES = (
    ("config", dict, "an object"),
    ("environment", dict, "an object"),
    ("summary", dict, "an object"),
    ("probes", dict, "an object"),
    ("tables", dict, "an object"),
    ("device", dict, "an object"),
    ("tracing_overhead", dict, "an object"),
    ("status", str, "a string"),
    ("damaged_tables", list, "a list"),
    ("events_lost", int, "a number"),
)


class RunMeta(dict):
    """A run's meta.json. Typed properties for what readers use; the rest as the dict it is."""

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunMeta:
        """Read and validate RUN/meta.json; raises RunDirError naming the file on any problem."""
        run = Path(path)
        if not run.exists():
            raise RunDirError(f"{run}: no such run directory")
        if not run.is_dir():
            raise RunDirError(f"{run}: not a run directory (it is a file)")
        meta_path = run / "meta.json"
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
        except FileNotFoundError:
            raise RunDirError(f"{meta_path}: missing; {run} is not a plugtrace run directory") from None
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or an integer of 5,000 digits
            raise RunDirError(f"{meta_path}: not valid JSON ({exc}); the run directory is corrupt") from None
        except RecursionError:
            raise RunDirError(
                f"{meta_path}: nested too deeply to be a run's meta.json; the run directory is corrupt"
            ) from None
        except OSError as exc:
            raise RunDirError(f"{meta_path}: cannot read ({exc.strerror})") from None
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_NAME:
            raise RunDirError(f'{meta_path}: not a plugtrace run (no \'"schema": "{SCHEMA_NAME}"\')')
        for key, kinds, what in _META_TYPES:
            if meta.get(key) is not None and not isinstance(meta[key], kinds):
                raise RunDirError(
                    f"{meta_path}: {key!r} should be {what}, not {type(meta[key]).__name__} "
                    f"({meta[key]!r:.40}); the run directory is corrupt"
                )
        version = meta.get("schema_version")
        if not isinstance(version, int):
            raise RunDirError(f"{meta_path}: schema_version missing or not a number")
        if version > SCHEMA_VERSION:
            raise RunDirError(
                f"{meta_path}: written with run schema version {version}, but this plugtrace reads "
                f"versions up to {SCHEMA_VERSION}; upgrade plugtrace to read it"
            )
        return cls(meta)

    def _section(self, key: str) -> dict[str, Any]:
        return self.get(key) or {}

    @property
    def status(self) -> str:
        """The run's status: a `Status` value, or what an unknown writer stored ("unknown" when none)."""
        value = self.get("status", "unknown")
        try:
            return Status(value)
        except ValueError:
            return str(value)

    @property
    def partial(self) -> bool:
        """True when the status says the data stops early."""
        return self.status in PARTIAL_STATUSES

    @property
    def config(self) -> dict[str, Any]:
        """How the run was made (strategy, mode, workload, device options)."""
        return self._section("config")

    @property
    def summary(self) -> dict[str, Any]:
        """Headline numbers computed at record time."""
        return self._section("summary")

    @property
    def environment(self) -> dict[str, Any]:
        """Where the run was made: kernel, CPU, tool and package versions."""
        return self._section("environment")

    @property
    def device(self) -> dict[str, Any]:
        """The block device's description."""
        return self._section("device")

    @property
    def probes(self) -> dict[str, Any]:
        """Which probes ran, which could not and which were not asked for."""
        return self._section("probes")

    @property
    def could_not_measure(self) -> dict[str, str]:
        """Probe name -> why it could not run."""
        return self.probes.get("could_not_measure") or {}

    @property
    def not_asked(self) -> dict[str, str]:
        """Probe name -> why it was off though it could have run."""
        return self.probes.get("not_asked") or {}

    @property
    def tracing_overhead(self) -> dict[str, Any]:
        """Traced vs untraced figures, when `--measure-overhead` measured them."""
        return self._section("tracing_overhead")

    @property
    def tables(self) -> dict[str, Any]:
        """Table name -> {"file", "rows", "damaged"?} for the tables the writer finished or started."""
        return self._section("tables")

    @property
    def damaged_tables(self) -> list[str]:
        """Tables a failed write left without their Parquet footer."""
        return list(self.get("damaged_tables") or [])

    @property
    def strategy(self) -> str:
        """The batching strategy ("?" for a run that names none)."""
        return str(self.config.get("strategy", "?"))

    @property
    def mode(self) -> str:
        """The tracing mode, a `Mode` value when it is one."""
        value = self.config.get("mode", "")
        try:
            return Mode(value)
        except ValueError:
            return str(value)

    @property
    def events_lost(self) -> int:
        """Events the kernel dropped (events mode), 0 when none or not counted."""
        return int(self.get("events_lost") or 0)

    @property
    def error(self) -> str | None:
        """Why a failed run failed, when the writer said."""
        value = self.get("error")
        return None if value is None else str(value)


def read_meta(path: str | os.PathLike) -> RunMeta:
    """Read and validate RUN/meta.json (see `RunMeta.read`)."""
    return RunMeta.read(path)
