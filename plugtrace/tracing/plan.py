"""Which probes a recording runs, by which backend and why, and what it cannot measure.

`plan` reads the capabilities of this machine (`capabilities.py`) against the probes of
`probes.py`: a probe runs when its mode, its tracepoints and what it needs are there; our own
libbpf programs are tried first where a probe has them (the cheap form), its bpftrace script
otherwise, and in their place when they cannot load. Nothing is started here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CapabilityError
from .capabilities import Capabilities
from .probes import BLOCK_PROBES_WITHOUT_A_DEVICE, PROBES, ProbeSpec


@dataclass(frozen=True)
class Planned:
    """One probe to run. `ours`: as our own libbpf programs first; `why_not_ours`: why not, when
    it has such a form in this mode that cannot load here (None: it has none, or they can load)."""

    spec: ProbeSpec
    ours: bool
    why_not_ours: str | None = None


@dataclass
class Plan:
    """The probes to run, in order; those that cannot run here (probe -> why); those off by
    default in this recording (probe -> why, and how to turn them on)."""

    probes: list[Planned] = field(default_factory=list)
    could_not_measure: dict[str, str] = field(default_factory=dict)
    not_asked: dict[str, str] = field(default_factory=dict)


def plan(mode: str, caps: Capabilities, only: set[str] | None, device: str | None, marker_lib: str | None) -> Plan:
    """The plan of a recording in `mode` (``aggregate`` or ``events``) on this machine (`caps`).

    `only`: the probe tables asked for (None: all that suit the mode); `device`: the watched
    block device, "major:minor" (None: none); `marker_lib`: our extension, for the marker uprobes
    (None: no markers). CapabilityError when nothing can trace here, or no probe can run."""
    ok, why = caps.can_trace()
    if not ok:
        raise CapabilityError(why)
    out = Plan()
    for spec in PROBES:
        if mode not in spec.modes or (only is not None and spec.table not in only):
            continue
        if mode in spec.only_when_asked and only is None:
            if spec.off_by_default and not (spec.needs_uprobes and marker_lib is None):
                out.not_asked[spec.table] = spec.off_by_default
            continue
        if spec.default_needs_device and only is None and device is None:
            out.not_asked[spec.table] = BLOCK_PROBES_WITHOUT_A_DEVICE
            continue
        if not spec.path.exists():
            out.could_not_measure[spec.table] = f"the probe program {spec.path} is missing"
            continue
        missing = [why for tp in spec.tracepoints for ok, why in [caps.tracepoint(tp)] if not ok]
        if spec.needs_uprobes:
            if marker_lib is None:
                continue  # nothing of ours to mark: not a loss
            if not caps.uprobes[0]:
                missing.append(caps.uprobes[1])
        if missing:
            out.could_not_measure[spec.table] = "; ".join(missing)
            continue
        out.probes.append(_backend(spec, mode, caps))
    if not out.probes:
        raise CapabilityError(
            "no probe can run here: " + "; ".join(f"{k}: {v}" for k, v in out.could_not_measure.items())
        )
    return out


def _backend(spec: ProbeSpec, mode: str, caps: Capabilities) -> Planned:
    """Our own programs where `spec` has them in `mode` and they can load here, else its script."""
    from .bpfprobes import AGGREGATES, EVENTS  # (the libbpf binding: only once something is traced)

    if spec.table not in (AGGREGATES if mode == "aggregate" else EVENTS):
        return Planned(spec, ours=False)
    ok, why = caps.libbpf
    return Planned(spec, ours=True) if ok else Planned(spec, ours=False, why_not_ours=why)
