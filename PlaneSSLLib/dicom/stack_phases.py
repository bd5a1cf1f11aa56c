"""Which image of each slice of a stack is cine phase ``t``: never another phase's image.

A position's frames are its phases in time order (``dicom.series.phase_sort_key``). When a file
is missing or unreadable that list is shorter, and its index ``t`` would be phase ``t + 1``'s
image. Phases are therefore identified from what the headers say:

- the positions with the most frames (*full* positions) define the stack's phases: phase ``t``'s
  TemporalPositionIdentifier (when every frame of the full positions has one and they are
  distinct) or its TriggerTime (median over the full positions);
- a frame of a shorter position is phase ``t`` when its temporal position equals phase ``t``'s, or
  else when its trigger time is the nearest to phase ``t``'s and within half the smallest interval
  between phases; two frames claiming one phase make both unknown;
- a shorter position whose frames cannot be told so has *every* phase missing;
- so is a full position whose list order is not its time order (one frame without a TriggerTime,
  or with one that is not a number, sorts after the later phases): its frames are placed by their
  temporal positions (or trigger times) as above, never by their place in the list.

``stack_gaps_mm`` names slices missing inside a stack (a spacing far above the stack's median):
a slice deleted or unreadable there leaves no position at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .records import Frame, Position

__all__ = ["GAP_FACTOR", "phase_count", "phase_frames", "stack_gaps_mm"]

#: A spacing between neighbouring slices above this multiple of the stack's median spacing is a gap.
GAP_FACTOR = 1.5


def phase_count(positions: Sequence[Position]) -> int:
    """The stack's number of cine phases: the most frames any position has."""
    return max((len(p.frames) for p in positions), default=0)


def _reference(positions: Sequence[Position]) -> tuple[list[int] | None, np.ndarray | None]:
    """Phase ids (temporal positions) and trigger times (ms) of the stack's phases, or None each."""
    n = phase_count(positions)
    full = [p for p in positions if len(p.frames) == n]
    ids = [[f.temporal_position for f in p.frames] for p in full]
    temporal = None
    if all(v is not None for row in ids for v in row):
        rows = [sorted(int(v) for v in row) for row in ids]  # the ids in time order, whatever the list order
        if all(row == rows[0] for row in rows) and len(set(rows[0])) == n:
            temporal = rows[0]
    times = [[f.trigger_time_ms for f in p.frames] for p in full]
    trigger = None
    if all(v is not None for row in times for v in row):
        trigger = np.median(np.asarray(times, dtype=float), axis=0)
        if n > 1 and not np.all(np.diff(trigger) > 0):
            trigger = None
    return temporal, trigger


def _assign(frames: Sequence[Frame], n: int, temporal: list[int] | None, trigger: np.ndarray | None
            ) -> list[Frame | None]:
    """Phase slots ``0..n-1`` of one position's frames (None where a phase is missing or unknown)."""
    slots: list[list[Frame]] = [[] for _ in range(n)]
    for f in frames:
        t = None
        if temporal is not None and f.temporal_position is not None and f.temporal_position in temporal:
            t = temporal.index(int(f.temporal_position))
        elif trigger is not None and f.trigger_time_ms is not None:
            distance = np.abs(trigger - float(f.trigger_time_ms))
            half_step = float(np.min(np.diff(trigger))) / 2 if n > 1 else np.inf
            if float(distance.min()) < half_step:
                t = int(np.argmin(distance))
        if t is None:
            return [None] * n  # a frame that cannot be placed: no phase of this position is trusted
        slots[t].append(f)
    return [s[0] if len(s) == 1 else None for s in slots]


def phase_frames(positions: Sequence[Position], phase: int) -> list[Frame | None]:
    """Per position, the frame of cine phase ``phase`` (0-based, of ``phase_count`` phases), or None
    where that position has no image of that phase (module docstring). IndexError out of range."""
    n = phase_count(positions)
    if not 0 <= phase < n:
        raise IndexError(f"phase {phase} out of range ({n} phases)")
    temporal, trigger = _reference(positions)
    out: list[Frame | None] = []
    for p in positions:
        if len(p.frames) == n and _uniformly_sorted(p.frames):
            out.append(p.frames[phase])
        elif temporal is None and trigger is None:
            out.append(None)  # a position's frames in an order no header can confirm: no phase is trusted
        else:
            out.append(_assign(p.frames, n, temporal, trigger)[phase])
    return out


def _uniformly_sorted(frames: Sequence[Frame]) -> bool:
    """Whether the list order of a position's frames (``dicom.series.phase_sort_key``) is their time
    order: each sort key (trigger time, temporal position, instance number) held by all frames or by
    none. A frame whose TriggerTime is missing or not a number sorts last, after later phases."""
    return all(len({getattr(f, key) is None for f in frames}) == 1
               for key in ("trigger_time_ms", "temporal_position", "instance_number"))


def stack_gaps_mm(locations_mm: Sequence[float]) -> list[tuple[int, float, float]]:
    """``(k, spacing, median)`` for each pair of neighbouring slices ``k, k + 1`` (sorted locations in
    mm along the normal) whose spacing exceeds ``GAP_FACTOR`` times the median spacing."""
    s = np.sort(np.asarray(locations_mm, dtype=float))
    if len(s) < 3:
        return []
    d = np.diff(s)
    median = float(np.median(d))
    return [(k, float(v), median) for k, v in enumerate(d) if median > 0 and v > GAP_FACTOR * median]
