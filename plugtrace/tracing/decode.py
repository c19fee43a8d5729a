"""Decoding bpftrace's ``-f json`` output, in columns rather than line by line.

bpftrace prints one JSON object per line. The hot case, events mode, is a
stream of ``{"type": "printf", "data": "1,2,3\\n"}`` lines: the decoder cuts the
fixed prefix and suffix off a whole chunk of them and hands the
comma-separated payload to Arrow's CSV reader, so a line costs no JSON parse
and no Python object per field. Every other record (attach count, lost events,
maps and histograms printed at exit, errors) is rare and goes through `json`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

PRINTF_PREFIX = b'{"type": "printf", "data": "'
PRINTF_SUFFIX = b'\\n"}'


@dataclass
class Decoded:
    """What one chunk of output held besides the event lines."""

    #: Arrow table of the event lines, or None
    events: pa.Table | None = None
    nr_events: int = 0
    attached_probes: int | None = None
    lost_events: int = 0
    #: map name (without "@") -> value: int, {key: int}, or a histogram list of {min, max, count}
    maps: dict[str, Any] = field(default_factory=dict)
    #: printf lines that did not fit the event format, and other unexpected text
    other: list[str] = field(default_factory=list)


class JsonStreamDecoder:
    """Feed it raw bytes as they come; it returns complete records per call.

    `schema` gives the columns of one event line. `max_events` bounds how many
    event rows are decoded in all; lines beyond it are only counted
    (`dropped`), so a bounded recording still says exactly what it missed.
    `labels` maps an integer column to the names its codes stand for; the
    decoded table carries the names (dictionary-encoded strings).
    """

    def __init__(
        self, schema: pa.Schema, max_events: int | None = None, labels: dict[str, tuple[str, ...]] | None = None
    ):
        self.schema = schema
        self.labels = {col: pa.array(names) for col, names in (labels or {}).items()}
        self.max_events = max_events
        self.kept = 0
        self.dropped = 0
        self._partial = b""
        self._read_options = pacsv.ReadOptions(column_names=schema.names, block_size=1 << 22)
        self._convert = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=False)
        self._parse = pacsv.ParseOptions(quote_char=False, escape_char=False)

    def feed(self, data: bytes, final: bool = False) -> Decoded:
        buf = self._partial + data
        if final:
            block, self._partial = buf.rstrip(b"\n"), b""
        else:
            cut = buf.rfind(b"\n")
            if cut < 0:
                self._partial = buf
                return Decoded()
            block, self._partial = buf[:cut], buf[cut + 1 :]
        out = Decoded()
        if not block:
            return out
        nlines = block.count(b"\n") + 1
        if (
            block.count(PRINTF_PREFIX) == nlines
            and block.count(PRINTF_SUFFIX + b"\n") == nlines - 1
            and block.startswith(PRINTF_PREFIX)
            and block.endswith(PRINTF_SUFFIX)
        ):
            # the common case, all event lines: strip the JSON wrapping at C speed
            self._decode_events(block.replace(PRINTF_PREFIX, b"").replace(PRINTF_SUFFIX, b""), nlines, out)
            return out
        payload = []
        for line in block.split(b"\n"):
            if line.startswith(PRINTF_PREFIX) and line.endswith(PRINTF_SUFFIX):
                payload.append(line[len(PRINTF_PREFIX) : -len(PRINTF_SUFFIX)])
            elif line:
                self._decode_record(line, out)
        if payload:
            self._decode_events(b"\n".join(payload), len(payload), out)
        return out

    def _decode_events(self, csv: bytes, nlines: int, out: Decoded) -> None:
        """`csv`: `nlines` comma-separated lines, without a final newline."""
        room = nlines if self.max_events is None else max(0, self.max_events - self.kept)
        if room < nlines:
            self.dropped += nlines - room
            if room == 0:
                return
            csv = b"\n".join(csv.split(b"\n", room)[:room])
        try:
            table = pacsv.read_csv(
                io.BytesIO(csv + b"\n"),
                read_options=self._read_options,
                parse_options=self._parse,
                convert_options=self._convert,
            )
        except pa.ArrowInvalid:
            # A line not of this probe's format (a message printed by the
            # program, say): keep the good lines, the odd ones as text.
            good = []
            for line in csv.split(b"\n"):
                if line.count(b",") == len(self.schema) - 1:
                    good.append(line)
                else:
                    out.other.append(line.decode(errors="replace"))
            if len(good) == min(room, nlines):
                raise
            if good:
                self._decode_events(b"\n".join(good), len(good), out)
            return
        for col, names in self.labels.items():
            i = table.schema.get_field_index(col)
            codes = table.column(i).cast(pa.int32())
            table = table.set_column(i, col, pa.DictionaryArray.from_arrays(codes.combine_chunks(), names))
        out.events = table
        out.nr_events = table.num_rows
        self.kept += table.num_rows

    def _decode_record(self, line: bytes, out: Decoded) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            out.other.append(line.decode(errors="replace"))
            return
        kind, data = record.get("type"), record.get("data")
        if kind == "attached_probes":
            out.attached_probes = int(data["probes"])
        elif kind == "lost_events":
            out.lost_events += int(data["events"])
        elif kind in ("map", "hist", "stats") and isinstance(data, dict):
            for name, value in data.items():
                out.maps[name.lstrip("@")] = value
        elif kind == "printf":
            out.other.append(str(data).rstrip("\n"))
        else:
            out.other.append(line.decode(errors="replace"))


def histogram_rows(name: str, buckets: list[dict]) -> dict[str, list]:
    """A bpftrace hist/lhist (list of {min, max, count}, max inclusive) -> rows of the
    `histograms` table (name, low, high exclusive, count), empty buckets left out."""
    rows: dict[str, list] = {"name": [], "low": [], "high": [], "count": []}
    for b in buckets:
        if not b.get("count"):
            continue
        low = b.get("min", np.iinfo(np.int64).min)
        high = b.get("max")
        rows["name"].append(name)
        rows["low"].append(int(low))
        rows["high"].append(np.iinfo(np.int64).max if high is None else int(high) + 1)
        rows["count"].append(int(b["count"]))
    return rows


#: the probes' linear histograms are lhist(x, 0, 1000, 1): a bucket per value, one open bucket from 1000
LHIST_TOP = 1000


def batch_sizes_from_positions(buckets: list[dict]) -> list[dict]:
    """uring_requests' ``uring_submit_pos`` (how many requests were taken at
    position k of their io_uring_enter() batch, as lhist buckets) -> batch
    sizes in the same form: batches of exactly k requests = position k's
    count less position k+1's. The open bucket (position >= 1000) stays
    open: that many batches had 1000 requests or more."""
    at, top = {}, 0
    for b in buckets:
        if b.get("count") and "min" in b:
            if "max" in b:
                at[b["min"]] = b["count"]
            else:
                top = b["count"]
    out = []
    for k in sorted(at):
        n = at[k] - (at.get(k + 1, 0) if k + 1 < LHIST_TOP else top)
        if n > 0:  # (a request refused before it was traced leaves its position out)
            out.append({"min": k, "max": k, "count": n})
    if top:
        out.append({"min": LHIST_TOP, "count": top})
    return out


def counter_rows(name: str, value: Any, key_names: tuple[str, ...] | None = None) -> dict[str, list]:
    """A bpftrace count() map -> rows of the `counters` table. A keyed map gives
    one row per key, named ``name_<key>`` (or ``name_<key_names[key]>``)."""
    if isinstance(value, dict):
        names, values = [], []
        for key, v in sorted(value.items()):
            label = key
            if key_names is not None and key.isdigit() and int(key) < len(key_names):
                label = key_names[int(key)]
            names.append(f"{name}_{label}")
            values.append(int(v))
        return {"name": names, "value": values}
    return {"name": [name], "value": [int(value)]}
