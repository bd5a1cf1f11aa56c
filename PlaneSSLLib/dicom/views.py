"""Which view each series of a study shows: heart SAX/2CH/3CH/4CH, knee SAG/COR/AX.

Geometry decides; series descriptions and folder names are hints; an override file settles
what cannot be told. Precedence: override > confident geometry > hint > weak geometry.

Heart (patient LPS): the short-axis (SAX) stack is the set of parallel planes with the most
distinct positions; its normal, oriented base → apex with the anatomical prior that the apex
points left, anterior and inferior, is the LV long axis ``w``. Every long-axis plane contains
that axis, so it cuts the SAX plane along a line through the LV; its angle ``φ`` about ``w`` is
measured from the septal direction ``u`` (prior: towards the patient's right-anterior) towards
``v = u × w`` (the anterior wall). Radiographers place 4CH through the septum and the lateral
wall (φ ≈ 0°), 3CH through the outflow tract (anteroseptal, φ ≈ 30–45°) and 2CH through the
anterior and inferior walls (φ ≈ 90°). With all three present the assignment does not need the
prior at all: going round ``w``, the largest gap between consecutive lines (≈ 90°) runs from
2CH back to 4CH. With fewer, the lines are matched to the prior angles.

Knee: each stack's normal is matched to the patient axis it is nearest to (sagittal ~ L/R,
coronal ~ A/P, axial ~ S/I), one axis per stack orientation.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping

import numpy as np

from ..geometry.planes import angle_between_normals_deg, unit
from .records import VIEW_LABELS, Series, Study
from .stacks import group_series_by_normal

__all__ = [
    "APEX_PRIOR_LPS",
    "SEPTAL_PRIOR_LPS",
    "HEART_LAX_PRIOR_DEG",
    "hint_from_text",
    "guess_anatomy",
    "identify_views",
    "lax_angles_deg",
]

#: Prior direction of the LV long axis, base → apex, in LPS (left, anterior, inferior).
APEX_PRIOR_LPS = unit(np.array([0.55, -0.45, -0.65]))
#: Prior septal direction (LV centre → RV), in LPS (patient right-anterior).
SEPTAL_PRIOR_LPS = unit(np.array([-0.6, -0.8, 0.0]))
#: Prior angle (deg) of each long-axis view's line in the SAX plane, from ``u`` towards ``v``.
HEART_LAX_PRIOR_DEG = {"4CH": 0.0, "3CH": 38.0, "2CH": 90.0}

_PARALLEL_GROUP_DEG = 3.0
_SAME_LAX_DEG = 5.0
_MIN_SAX_POSITIONS = 3

_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern, re.IGNORECASE))
    for label, pattern in (
        ("2CH", r"(^|[^0-9a-z])(2|two)[ _-]?(ch|chamber|cv)|vla|vertical[ _-]?long"),
        ("3CH", r"(^|[^0-9a-z])(3|three)[ _-]?(ch|chamber|cv)|lvot|outflow"),
        ("4CH", r"(^|[^0-9a-z])(4|four)[ _-]?(ch|chamber|cv)|hla|horizontal[ _-]?long"),
        ("SAX", r"(^|[^a-z])(sax|sa|short[ _-]?axis)([^a-z]|$)"),
        ("SAG", r"(^|[^a-z])sag"),
        ("COR", r"(^|[^a-z])cor"),
        ("AX", r"(^|[^a-z])(ax|axial|tra|transverse)([^a-z]|$)"),
    )
)
_HEART_WORDS = re.compile(r"card|heart|cine|sax|short[ _-]?axis|[234][ _-]?ch|lvot|ssfp|fiesta|trufi", re.I)
_KNEE_WORDS = re.compile(r"knee|menisc|acl|(^|[^a-z])(sag|cor)|pd[ _-]?fs|\bpd\b", re.I)


def hint_from_text(*texts: str, anatomy: str | None = None) -> str | None:
    """The view label that a series description or folder name suggests, if exactly one does."""
    allowed = VIEW_LABELS.get(anatomy, VIEW_LABELS["heart"] + VIEW_LABELS["knee"]) if anatomy else None
    found: list[str] = []
    for text in texts:
        if not text:
            continue
        labels = {label for label, pattern in _HINTS if pattern.search(text)}
        if allowed is not None:
            labels &= set(allowed)
        if len(labels) == 1:
            found.append(labels.pop())
    return found[0] if found and all(f == found[0] for f in found) else None


def _usable(study: Study) -> list[Series]:
    return [s for s in study.series if s.usable and s.positions]


def guess_anatomy(study: Study) -> str | None:
    """'heart', 'knee' or None, from cine phases, pixel and slice sizes, and description words."""
    series = _usable(study)
    if not series:
        return None
    heart = knee = 0.0
    for s in series:
        text = f"{s.description} {s.folder.name}"
        heart += 1.0 if _HEART_WORDS.search(text) else 0.0
        knee += 1.0 if _KNEE_WORDS.search(text) else 0.0
        if s.n_phases > 1:
            heart += 2.0  # cine: the heart
        spacing = s.pixel_spacing_mm
        if spacing is not None and max(spacing) < 0.9 and (s.slice_spacing_mm or 99) <= 5.0:
            knee += 2.0  # thin slices, sub-millimetre pixels: musculoskeletal
        elif spacing is not None and min(spacing) >= 1.0:
            heart += 0.5
    if heart == knee:
        return None
    return "heart" if heart > knee else "knee"


# ----------------------------------------------------------------------------- heart
def _distinct_positions(group: list[Series]) -> int:
    n = group[0].normal_lps
    locations = sorted(float(n @ p.plane.origin_lps) for s in group for p in s.positions)
    return 1 + sum(1 for a, b in itertools.pairwise(locations) if b - a > 0.5)


def lax_angles_deg(long_axis_lps: np.ndarray, lax_normals_lps: Iterable[np.ndarray]) -> list[float]:
    """Angle φ ∈ [0, 180) of each long-axis plane's line in the SAX plane, from ``u`` to ``v``.

    ``long_axis_lps`` is the LV long axis oriented base → apex; ``u`` is the septal prior projected
    onto the SAX plane and ``v = u × w``.
    """
    w = unit(long_axis_lps)
    u = unit(SEPTAL_PRIOR_LPS - (SEPTAL_PRIOR_LPS @ w) * w)
    v = np.cross(u, w)
    angles = []
    for n in lax_normals_lps:
        d = np.cross(w, unit(n))  # in the SAX plane and in the LAX plane
        angles.append(float(np.degrees(np.arctan2(d @ v, d @ u)) % 180.0))
    return angles


def _cyclic_diff_deg(a: float, b: float, period: float = 180.0) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


def _assign_lax(angles: list[float]) -> tuple[list[str], bool, str]:
    """Labels for distinct long-axis orientations (angles φ in degrees) and whether confident."""
    k = len(angles)
    if k == 3:
        order = sorted(range(3), key=lambda i: angles[i])
        gaps = [(angles[order[(j + 1) % 3]] - angles[order[j]]) % 180.0 for j in range(3)]
        j = int(np.argmax(gaps))
        ranked = sorted(gaps, reverse=True)
        labels = [""] * 3
        for offset, label in enumerate(("4CH", "3CH", "2CH")):
            labels[order[(j + 1 + offset) % 3]] = label
        confident = ranked[0] - ranked[1] >= 15.0
        reason = "largest angular gap between long-axis lines (2CH→4CH), gaps " + ", ".join(
            f"{g:.0f}°" for g in gaps
        )
        if confident:
            return labels, True, reason
    # match to the prior angles (Hungarian by enumeration: at most 3 labels)
    names = list(HEART_LAX_PRIOR_DEG)
    costs = []
    for perm in itertools.permutations(names, k) if k <= 3 else []:
        cost = sum(_cyclic_diff_deg(a, HEART_LAX_PRIOR_DEG[p]) for a, p in zip(angles, perm, strict=True))
        costs.append((cost, perm))
    if not costs:
        return [""] * k, False, "more than three long-axis orientations"
    costs.sort()
    best_cost, best = costs[0]
    margin = costs[1][0] - best_cost if len(costs) > 1 else 180.0
    confident = margin >= 25.0 and best_cost / k <= 30.0
    reason = "long-axis line angles " + ", ".join(f"{a:.0f}°" for a in angles) + " matched to the anatomical prior"
    return list(best), confident, reason


def _identify_heart(series: list[Series]) -> dict[int, tuple[str | None, bool, str]]:
    result: dict[int, tuple[str | None, bool, str]] = {}
    groups = group_series_by_normal(series, _PARALLEL_GROUP_DEG)
    sized = sorted(((g, _distinct_positions(g)) for g in groups), key=lambda t: -t[1])
    sax: list[Series] = []
    if sized and sized[0][1] >= _MIN_SAX_POSITIONS and (len(sized) < 2 or sized[0][1] > sized[1][1]):
        sax = sized[0][0]
        for s in sax:
            result[id(s)] = ("SAX", True, f"stack of {sized[0][1]} parallel slices (the most in the study)")
    others = [s for s in series if id(s) not in result]
    if sax:
        w = sax[0].normal_lps
        lax, rest = [], []
        for s in others:
            (lax if angle_between_normals_deg(s.normal_lps, w) >= 45.0 else rest).append(s)
        for s in rest:
            result[id(s)] = (None, False, "plane neither parallel nor perpendicular enough to the SAX stack")
    else:
        lax = others
        w = _common_axis([s.normal_lps for s in lax])
        if w is None:
            for s in lax:
                result[id(s)] = (None, False, "no SAX stack and no common long axis")
            return result
    w = w if w @ APEX_PRIOR_LPS >= 0 else -w
    lax_groups = group_series_by_normal(lax, _SAME_LAX_DEG)
    if not lax_groups:
        return result
    angles = lax_angles_deg(w, [g[0].normal_lps for g in lax_groups])
    labels, confident, reason = _assign_lax(angles)
    if not sax:
        confident = False
        reason += " (no SAX stack: long axis estimated from the long-axis planes)"
    for g, label in zip(lax_groups, labels, strict=True):
        for s in g:
            result[id(s)] = (label or None, confident and bool(label), reason)
    return result


def _common_axis(normals: list[np.ndarray]) -> np.ndarray | None:
    """Direction shared by planes with these normals (the null vector of their normals)."""
    if len(normals) < 2:
        return None
    m = np.array([unit(n) for n in normals])
    _, s, vt = np.linalg.svd(m)
    if s[0] < 1e-6 or (len(s) > 1 and s[1] < 0.1 * s[0]):
        return None  # all parallel
    return unit(vt[-1])


# ----------------------------------------------------------------------------- knee
_KNEE_AXES = {"SAG": np.array([1.0, 0, 0]), "COR": np.array([0, 1.0, 0]), "AX": np.array([0, 0, 1.0])}


def _identify_knee(series: list[Series]) -> dict[int, tuple[str | None, bool, str]]:
    result: dict[int, tuple[str | None, bool, str]] = {}
    groups = group_series_by_normal(series, _PARALLEL_GROUP_DEG)
    # most slices first, so that localisers do not take an axis from a diagnostic stack
    groups.sort(key=lambda g: -_distinct_positions(g))
    free = dict(_KNEE_AXES)
    for g in groups:
        n = g[0].normal_lps
        scores = {label: abs(float(n @ axis)) for label, axis in _KNEE_AXES.items()}
        candidates = sorted(free or _KNEE_AXES, key=lambda lab: -scores[lab])
        label = candidates[0]
        tilt = float(np.degrees(np.arccos(min(1.0, scores[label]))))
        confident = tilt <= 35.0 and label in free
        free.pop(label, None)
        reason = f"stack normal {tilt:.0f}° from the {label} patient axis"
        for s in g:
            result[id(s)] = (label, confident, reason)
    return result


# ----------------------------------------------------------------------------- entry point
def _override_for(s: Series, overrides: Mapping[str, str]) -> str | None:
    for key in (s.key, s.folder.name, str(s.folder), s.description):
        if key and key in overrides:
            return str(overrides[key]).upper()
    return None


def identify_views(
    study: Study, anatomy_hint: str | None = None, overrides: Mapping[str, str] | None = None
) -> None:
    """Set ``view``, ``view_source`` and ``view_reason`` of every series, and ``study.anatomy``.

    ``anatomy_hint``: "heart", "knee", or None/"auto" to decide from the study.
    ``overrides``: series key, folder name, folder path or description → view label.
    """
    overrides = {k: v for k, v in (overrides or {}).items()}
    anatomy = anatomy_hint if anatomy_hint in VIEW_LABELS else guess_anatomy(study)
    study.anatomy = anatomy
    series = _usable(study)
    geometric: dict[int, tuple[str | None, bool, str]] = {}
    if anatomy == "heart":
        geometric = _identify_heart(series)
    elif anatomy == "knee":
        geometric = _identify_knee(series)
    valid = set(VIEW_LABELS.get(anatomy or "", ())) or set(VIEW_LABELS["heart"] + VIEW_LABELS["knee"])
    for s in study.series:
        override = _override_for(s, overrides)
        if override is not None:
            if override not in valid:
                s.view, s.view_source = None, ""
                s.view_reason = f"override {override!r} is not a view label of {anatomy or 'any anatomy'}"
                continue
            s.view, s.view_source, s.view_reason = override, "override", "set by the override file"
            continue
        label, confident, reason = geometric.get(id(s), (None, False, "no usable geometry"))
        hint = hint_from_text(s.description, s.folder.name, anatomy=anatomy)
        if label and confident:
            s.view, s.view_source, s.view_reason = label, "geometry", reason
            if hint and hint != label:
                s.view_reason += f"; description/folder suggested {hint}, geometry wins"
        elif hint:
            s.view, s.view_source = hint, "hint"
            s.view_reason = "series description or folder name" + (f" (geometry weak: {reason})" if label else "")
        elif label:
            s.view, s.view_source, s.view_reason = label, "geometry", f"low confidence: {reason}"
        else:
            s.view, s.view_source, s.view_reason = None, "", reason
