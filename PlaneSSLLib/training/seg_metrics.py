"""Segmentation metrics per structure in 3D: Dice, HD95 and ASSD (MONAI), with an explicit empty-mask policy.

For one subject at one phase, ``pred`` and ``ref`` are ACDC label volumes ``(k, rows, cols)``
with voxel spacing ``(slice gap, row, column)`` in millimetres (from the geometry). For each
structure (RV = 1, Myo = 2, LV = 3) the binary masks are compared with
``monai.metrics.compute_dice``, ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)`` (surface voxels: mask minus its erosion;
Euclidean distances with the spacing).

- ``hd95_mm``: max over the two directions of the 95th percentile of surface-to-surface distances.
- ``assd_mm``: mean of all surface distances of both directions pooled.

Empty masks are never dropped silently. Each row has ``status``:

- ``"ok"``: both masks non-empty;
- ``"empty_pred"``: the network predicted nothing for a structure present in the reference:
  Dice 0, HD95 and ASSD NaN (undefined) — counted in ``summarise`` as ``n_empty_pred``, and the
  mean distances are reported over the defined cases *beside* that count;
- ``"empty_ref"``: the structure is absent from the reference but predicted: Dice 0, distances NaN;
- ``"both_empty"``: Dice 1, HD95 and ASSD 0 (perfect agreement on absence).

Regions of a SAX stack (:func:`stack_thirds`, :func:`region_dice`): each stack's slices ranked from base
to apex (the stack normal oriented by the LV long-axis prior, as ``preprocess.index`` orients it) and cut
into basal, mid and apical thirds (slice rank ``r`` of ``n`` in third ``min(2, 3r // n)``, so 8 slices
give 3 / 3 / 2). The Dice of a third is the mean over the structures present in the prediction or the
reference of that third (3D Dice over the third's slices); a structure absent from both is skipped
(not counted as 1), one present in only one of them counts 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..dicom.views import APEX_PRIOR_LPS
from ..preprocess.labels import ACDC_STRUCTURES

__all__ = ["METRIC_NAMES", "REGIONS", "structure_metrics", "summarise", "never_found", "one_hot_volume",
           "stack_thirds", "region_dice"]

METRIC_NAMES = ("dice", "hd95_mm", "assd_mm")
#: thirds of a SAX stack, base to apex
REGIONS = ("basal", "mid", "apical")


def stack_thirds(location_mm: np.ndarray, x_dir_lps: np.ndarray, y_dir_lps: np.ndarray) -> np.ndarray:
    """Third (0 basal, 1 mid, 2 apical) of each slice of one SAX stack, from each slice's position along the
    DICOM normal ``x × y`` (``location_mm``) and the in-plane axes (module docstring)."""
    loc = np.asarray(location_mm, dtype=np.float64)
    normal = np.cross(np.asarray(x_dir_lps, dtype=np.float64), np.asarray(y_dir_lps, dtype=np.float64))
    towards_apex = loc if float(normal @ APEX_PRIOR_LPS) >= 0 else -loc
    rank = np.empty(len(loc), dtype=np.int64)
    rank[np.argsort(towards_apex, kind="stable")] = np.arange(len(loc))
    return np.minimum(2, 3 * rank // max(len(loc), 1))


def region_dice(pred: np.ndarray, ref: np.ndarray, thirds: np.ndarray,
                classes: Sequence[int] | None = None) -> dict[str, float]:
    """``{"basal"|"mid"|"apical": Dice}`` of one volume ``(k, H, W)`` whose slices fall in ``thirds``
    (:func:`stack_thirds`); a third with no structure in prediction or reference is left out."""
    pred, ref, thirds = np.asarray(pred), np.asarray(ref), np.asarray(thirds)
    classes = list(classes) if classes is not None else [s.label for s in ACDC_STRUCTURES]
    out: dict[str, float] = {}
    for t, name in enumerate(REGIONS):
        sel = thirds == t
        scores = []
        for c in classes:
            p, r = pred[sel] == c, ref[sel] == c
            size = int(p.sum()) + int(r.sum())
            if size:
                scores.append(2.0 * float(np.logical_and(p, r).sum()) / size)
        if scores:
            out[name] = float(np.mean(scores))
    return out


def one_hot_volume(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``(1, len(classes), *labels.shape)`` float32 one-hot masks of ``classes`` (MONAI's layout)."""
    lab = np.asarray(labels)
    return np.stack([(lab == c) for c in classes])[None].astype(np.float32)


def structure_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float],
                      structures: Iterable[tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """One row per structure: ``{"structure", "label", "dice", "hd95_mm", "assd_mm", "status"}``.

    ``pred``, ``ref``: integer label volumes of the same shape; ``spacing_mm``: voxel size per axis.
    """
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if len(spacing_mm) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing_mm)} does not match {pred.ndim} dimensions")
    structures = list(structures) if structures is not None else [(s.label, s.short) for s in ACDC_STRUCTURES]
    classes = [c for c, _ in structures]
    yp = torch.from_numpy(one_hot_volume(pred, classes))
    yr = torch.from_numpy(one_hot_volume(ref, classes))
    spacing = [float(s) for s in spacing_mm]
    dice = compute_dice(yp, yr, include_background=True, ignore_empty=False)[0].tolist()
    has_p = yp.flatten(2).any(-1)[0].tolist()
    has_r = yr.flatten(2).any(-1)[0].tolist()
    both = [i for i in range(len(classes)) if has_p[i] and has_r[i]]
    hd = [math.nan] * len(classes)
    asd = [math.nan] * len(classes)
    if both:
        sel = torch.tensor(both)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # MONAI 1.5+ deprecation notes inside its own calls
            h = compute_hausdorff_distance(yp[:, sel], yr[:, sel], include_background=True, percentile=95,
                                           spacing=spacing)[0].tolist()
            a = compute_average_surface_distance(yp[:, sel], yr[:, sel], include_background=True, symmetric=True,
                                                 spacing=spacing)[0].tolist()
        for j, i in enumerate(both):
            hd[i], asd[i] = float(h[j]), float(a[j])
    rows = []
    for i, (label, name) in enumerate(structures):
        if has_p[i] and has_r[i]:
            status, d = "ok", float(dice[i])
        elif not has_p[i] and not has_r[i]:
            status, d, hd[i], asd[i] = "both_empty", 1.0, 0.0, 0.0
        else:
            status, d = ("empty_pred" if has_r[i] else "empty_ref"), 0.0
        rows.append({"structure": name, "label": int(label), "dice": d, "hd95_mm": hd[i], "assd_mm": asd[i],
                     "status": status})
    return rows


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean metrics per ``"{phase} {structure}"`` and per structure over phases (``"all {structure}"``),
    plus ``"mean"`` over everything; each with ``n``, ``n_empty_pred`` and ``n_undefined`` (NaN distances)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        for key in (f"{r.get('phase', 'all')} {r['structure']}", f"all {r['structure']}", "mean"):
            groups.setdefault(key, []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for key, items in groups.items():
        entry: dict[str, Any] = {"n": len(items), "n_empty_pred": sum(r["status"] == "empty_pred" for r in items),
                                 "n_undefined": sum(not math.isfinite(r["hd95_mm"]) for r in items)}
        for m in METRIC_NAMES:
            vals = np.array([r[m] for r in items], dtype=np.float64)
            finite = vals[np.isfinite(vals)]
            entry[m] = float(finite.mean()) if len(finite) else math.nan
        out[key] = entry
    return out


def never_found(rows: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Structures that :func:`structure_metrics` rows score Dice 0 in every volume whose reference has them
    (at least one): the network never found them, a failed run for that structure rather than a low score.
    Structure -> (volumes in which none of it was predicted, volumes whose reference has it)."""
    present: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] not in ("empty_ref", "both_empty"):
            present.setdefault(r["structure"], []).append(r)
    return {name: (sum(r["status"] == "empty_pred" for r in items), len(items)) for name, items in present.items()
            if all(r["dice"] == 0.0 for r in items)}
