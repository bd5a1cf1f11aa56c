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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..preprocess.labels import ACDC_STRUCTURES

__all__ = ["METRIC_NAMES", "structure_metrics", "summarise", "one_hot_volume"]

METRIC_NAMES = ("dice", "hd95_mm", "assd_mm")


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
