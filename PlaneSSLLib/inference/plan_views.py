"""Cardiac view planning: the 2CH, 3CH and 4CH planes proposed from a study's short-axis stack.

A pretrained line network (manifest task ``lines`` or ``both``, input view SAX) predicts on every
SAX slice where each long-axis view cuts it (``inference.line_fit.fit_line`` per heatmap channel,
with its confidence); the lines are taken into patient coordinates (LPS mm) through the slice's
prepared grid (each slice shown to the network in the standard display orientation,
``preprocess.resample.canonical_sax_plane``), and ``geometry.plane_fit`` fits one plane per view across the slices,
robust to outlier slices (``plan_from_lines``: the views share the LV long axis, perpendicular to
the SAX stack by default, or each is fitted alone). From the proposed 2CH and 4CH planes, the LV
long axis (where they meet) gives the SAX orientation back. When the study holds a view, the proposed plane is
compared with the acquired one: the angle between their normals (°) and the distance (mm) from
the acquired image's centre to the proposed plane.

:func:`plan_from_lines` is the geometry alone (lines in, plan out), :func:`predict_sax_lines`
the network alone, :func:`plan_study` both on a DICOM study folder.

On the CPU the network runs in numpy (``inference.unet_numpy``, its heatmaps only: the location head
is checked, not run), so that ``planessl plan`` imports no torch (``import torch`` alone took longer
than the rest of a one-study plan); on another device, or with ``backend="torch"``, the torch
``PlaneSSLNet``. Both give the same heatmaps (``Testing/test_unet_numpy.py``) and plans
(``Testing/test_plan_cli.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dicom.pixels import read_frame_pixels
from ..dicom.stack_phases import phase_frames
from ..dicom.stacks import SaxStack, view_stacks
from ..dicom.views import APEX_PRIOR_LPS
from ..errors import InputError
from ..geometry.plane_fit import (
    PlaneFit,
    SliceLine,
    fit_axis_line,
    fit_plane_about_axis,
    fit_plane_to_lines,
    long_axis_from_planes,
    proposed_view_plane,
    stack_axis_points_lps,
)
from ..geometry.planes import ImagePlane, angle_between_normals_deg, unit
from ..geometry.stacks import stack_normal_lps
from ..preprocess.resample import canonical_sax_plane, prepare_image, sax_apex_direction_lps
from .line_fit import fit_line
from .unet_numpy import NumpyUNet, load_numpy_unet
from .weights import WeightsError

if TYPE_CHECKING:
    from ..models import PlaneSSLNet

__all__ = [
    "FITS",
    "LONG_AXIS_VIEWS",
    "ViewPlan",
    "StudyPlan",
    "PlanningModel",
    "load_planning_model",
    "predict_sax_lines",
    "plan_from_lines",
    "acquired_view_planes",
    "plan_stack",
    "stack_lines",
    "plan_study",
]

LONG_AXIS_VIEWS = ("2CH", "3CH", "4CH")
#: How the planes are fitted (``plan_from_lines``).
FITS = ("long-axis", "free", "sax-normal")


def _vec(v: np.ndarray, digits: int = 6) -> list[float]:
    return [round(float(x), digits) for x in v]


@dataclass
class ViewPlan:
    """One proposed long-axis plane: the fit, the scanner plane, and the comparison with the acquired view."""

    view: str
    fit: PlaneFit
    proposed: ImagePlane
    confidences: list[float]
    acquired: ImagePlane | None = None

    @property
    def angle_deg(self) -> float | None:
        """Angle between the proposed and acquired normals (°), None without an acquired view."""
        return None if self.acquired is None else self.fit.angle_to_deg(self.acquired.normal_lps)

    @property
    def distance_mm(self) -> float | None:
        """Distance (mm) from the acquired image's centre to the proposed plane."""
        return None if self.acquired is None else abs(float(self.fit.distance_mm(self.acquired.centre_lps)))

    def as_dict(self) -> dict[str, Any]:
        p = self.proposed
        return {
            "point_lps": _vec(self.fit.point_lps, 3),
            "normal_lps": _vec(self.fit.normal_lps),
            "image_orientation_patient": [round(v, 6) for v in p.image_orientation_patient],
            "image_position_patient": [round(v, 3) for v in p.image_position_patient],
            "pixel_spacing_mm": [round(v, 4) for v in p.pixel_spacing],
            "rows": p.rows,
            "columns": p.columns,
            "fov_mm": [round(p.rows * p.spacing_mm[0], 2), round(p.columns * p.spacing_mm[1], 2)],
            "slices_used": int(self.fit.inliers.sum()),
            "slices": [
                {"slice": int(k), "confidence": round(float(c), 4),
                 "residual_mm": None if not np.isfinite(r) else round(float(r), 3), "weight": round(float(w), 4)}
                for k, c, r, w in zip(self.fit.slice_indices, self.confidences, self.fit.residuals_mm,
                                      self.fit.weights, strict=True)
            ],
            "acquired": None if self.acquired is None else {
                "normal_lps": _vec(self.acquired.normal_lps),
                "angle_deg": round(float(self.angle_deg), 3),
                "distance_mm": round(float(self.distance_mm), 3),
            },
        }


@dataclass
class StudyPlan:
    """The proposed long-axis planes of one study (views that could not be fitted are in ``missing``)."""

    views: dict[str, ViewPlan]
    sax_planes: list[ImagePlane]
    apex_direction_lps: np.ndarray
    missing: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sax_normal_lps(self) -> np.ndarray:
        return self.apex_direction_lps

    @property
    def long_axis_lps(self) -> np.ndarray | None:
        """The LV long axis where the proposed 2CH and 4CH planes meet (towards the apex), or None."""
        if "2CH" not in self.views or "4CH" not in self.views:
            return None
        n2, n4 = self.views["2CH"].fit.normal_lps, self.views["4CH"].fit.normal_lps
        if angle_between_normals_deg(n2, n4) < 1.0:
            return None
        return long_axis_from_planes(n2, n4, towards_lps=self.apex_direction_lps)

    @property
    def sax_angle_deg(self) -> float | None:
        """Angle (°) between the SAX orientation from the long-axis planes and the acquired SAX normal."""
        axis = self.long_axis_lps
        return None if axis is None else angle_between_normals_deg(axis, self.sax_normal_lps)

    def as_dict(self) -> dict[str, Any]:
        axis = self.long_axis_lps
        out: dict[str, Any] = dict(self.meta)
        out["sax"] = {
            "slices": len(self.sax_planes),
            "acquired_normal_lps": _vec(self.sax_normal_lps),
            "normal_from_long_axis_views_lps": None if axis is None else _vec(axis),
            "angle_deg": None if axis is None else round(float(self.sax_angle_deg), 3),
        }
        out["views"] = {v: (self.views[v].as_dict() if v in self.views else None) for v in LONG_AXIS_VIEWS}
        out["missing"] = dict(self.missing)
        out["notes"] = list(self.notes)
        return out


def plan_from_lines(
    lines: Mapping[str, Sequence[SliceLine | None]],
    sax_planes: Sequence[ImagePlane],
    acquired: Mapping[str, ImagePlane] | None = None,
    apex_prior_lps: np.ndarray = APEX_PRIOR_LPS,
    fit: str = "sax-normal",
) -> StudyPlan:
    """Fit one plane per view from its lines on the SAX slices (``lines[view][k]`` on ``sax_planes[k]``,
    None where the network found none) and propose scanner planes. Views with lines in fewer than
    two slices are listed in ``missing`` with the reason.

    ``fit``: how the views share the LV long axis (they are planned to hold it):

    - ``sax-normal`` (default): the long axis is perpendicular to the SAX stack (a SAX stack is planned
      perpendicular to it) through the slices' LV centres (where each slice's lines cross; a robust
      line, ``geometry.plane_fit.fit_axis_line``); each view is the plane holding it that follows its
      lines' directions (``fit_plane_about_axis``). The SAX orientation then comes back unchanged.
    - ``long-axis``: the same, the axis' direction fitted through the LV centres too;
    - ``free``: each view its own plane through its lines (``fit_plane_to_lines``), the long axis
      then where the 2CH and 4CH planes meet.
    """
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r} (choose from {', '.join(FITS)})")
    acquired = dict(acquired or {})
    n = unit(stack_normal_lps(list(sax_planes)))
    apex = n if n @ np.asarray(apex_prior_lps) >= 0 else -n
    per_slice = [[lines[v][k] for v in lines if lines[v][k] is not None] for k in range(len(sax_planes))]
    axis_points = stack_axis_points_lps(per_slice, sax_planes)
    spacing = min(min(p.spacing_mm) for p in sax_planes)
    fov = max(max(p.rows * p.spacing_mm[0], p.columns * p.spacing_mm[1]) for p in sax_planes)
    plan = StudyPlan({}, list(sax_planes), apex)
    axis: tuple[np.ndarray, np.ndarray] | None = None
    if fit in ("long-axis", "sax-normal"):
        crossing = np.array([sum(line.confidence for line in sl) / len(sl) if len(sl) >= 2 else 0.0
                             for sl in per_slice])
        try:
            centre, direction, _ = fit_axis_line(axis_points, crossing)
        except ValueError:
            plan.notes.append("too few slices where the views' lines cross for a long axis; each view fitted alone")
        else:
            axis = (centre, apex if fit == "sax-normal" else direction if direction @ apex >= 0 else -direction)
    for view in LONG_AXIS_VIEWS:
        if view not in lines:
            plan.missing[view] = "the network has no line channel for this view"
            continue
        given = [(k, line) for k, line in enumerate(lines[view]) if line is not None]
        view_lines = [line for _, line in given]
        centres = axis_points[[k for k, _ in given]] if given else None
        try:
            if axis is None:
                plane_fit = fit_plane_to_lines(view_lines, centres)
            else:
                plane_fit = fit_plane_about_axis(view_lines, axis[0], axis[1], centres)
        except ValueError as exc:
            plan.missing[view] = f"no plane: {exc}"
            continue
        proposed = proposed_view_plane(plane_fit.point_lps, plane_fit.normal_lps, apex, spacing, fov)
        plan.views[view] = ViewPlan(view, plane_fit, proposed, [line.confidence for line in view_lines],
                                    acquired.get(view))
        plan.notes += [f"{view}: {note}" for note in plane_fit.notes]
    plan.meta["fit"] = fit
    return plan


# ---------------------------------------------------------------------- the network side
@dataclass
class PlanningModel:
    net: PlaneSSLNet | NumpyUNet
    manifest: dict[str, Any]
    channels: list[str]
    views: list[str]  # the long-axis views the network draws on SAX slices
    spacing_mm: float
    size_px: int
    normalisation: str
    clip_percentiles: tuple[float, float]
    device: str


def load_planning_model(weights: str | Path, device: str = "cpu", backend: str = "auto") -> PlanningModel:
    """A line network whose SAX input has long-axis partners; WeightsError naming the weights otherwise.

    ``backend`` as ``inference.segment.load_seg_model``'s: ``auto`` runs the network in numpy on the CPU
    (no torch import; a location head checked, not run) and in torch on any other device; ``numpy``
    or ``torch`` choose one.
    """
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be auto, numpy or torch, got {backend!r}")
    if backend == "numpy" and str(device) != "cpu":
        raise ValueError("the numpy network runs on the CPU only")
    if backend == "numpy" or backend == "auto" and str(device) == "cpu":
        net, validated = load_numpy_unet(weights, expect_task=("lines", "both"), heatmaps_only=True)
    else:
        import torch

        from .weights import load_validated

        net, validated = load_validated(weights, device, expect_task=("lines", "both"))
        net = net.to(memory_format=torch.channels_last)  # faster convolutions on the CPU, same results
    manifest, prep = validated.manifest, validated.preparation
    partners = manifest.get("views") if isinstance(manifest.get("views"), dict) else {}
    channels = list(manifest.get("channels") or [])
    views = [v for v in partners.get("SAX", []) if v in LONG_AXIS_VIEWS and v in channels]
    if not views:
        raise WeightsError(f"{weights}: these weights draw no long-axis line on SAX images (input views: "
                           f"{', '.join(sorted(partners)) or 'none'}); view planning needs a heart line network")
    return PlanningModel(net, manifest, channels, views, prep.spacing_mm, prep.size_px, prep.normalisation,
                         prep.clip_percentiles, device)


def _heatmaps(model: PlanningModel, images: np.ndarray, view: str = "SAX") -> np.ndarray:
    """The network's ``lines`` output ``(N, C, H, W)`` float32 of prepared images ``(N, H, W)`` of ``view``."""
    config = model.net.config
    heads = np.full(len(images), config.head_index(view), dtype=np.int64) if config.head_views else None
    if isinstance(model.net, NumpyUNet):
        return model.net.logits(images[:, None], heads)
    import torch

    with torch.no_grad():
        x = torch.from_numpy(images).unsqueeze(1).to(model.device).contiguous(memory_format=torch.channels_last)
        return model.net(x, None if heads is None else torch.from_numpy(heads).to(model.device))[
            "lines"].float().cpu().numpy()


def predict_sax_lines(model: PlanningModel, pixels: Sequence[np.ndarray], planes: Sequence[ImagePlane],
                      orientation: str = "canonical") -> dict[str, list[SliceLine | None]]:
    """Per long-axis view, the predicted line on each SAX slice in LPS (None where the heatmap shows none).

    ``orientation``: ``canonical`` shows the network every slice in the standard display orientation
    (``preprocess.resample.canonical_sax_plane``: sites store images rotated and mirrored, the geometry says how);
    ``stored`` as the file stores it, exactly as in pretraining.
    """
    if orientation not in ("canonical", "stored"):
        raise ValueError(f"unknown orientation {orientation!r} (canonical or stored)")
    apex = sax_apex_direction_lps(list(planes))
    prepared, grids = [], []
    for px, plane in zip(pixels, planes, strict=True):
        if orientation == "stored":
            img, grid = prepare_image(px, plane, model.spacing_mm, model.size_px, model.normalisation,
                                      model.clip_percentiles)
        else:
            img, grid = prepare_image(px, plane, model.spacing_mm, model.size_px, model.normalisation,
                                      model.clip_percentiles, target=canonical_sax_plane(plane, apex, model.spacing_mm,
                                                                                         model.size_px))
        prepared.append(img)
        grids.append(grid)
    heat = _heatmaps(model, np.ascontiguousarray(np.stack(prepared), dtype=np.float32))
    if not np.isfinite(heat).all():
        raise WeightsError("the network gave non-finite heatmaps (NaN or inf in the images or the weights)")
    out: dict[str, list[SliceLine | None]] = {}
    for view in model.views:
        c = model.channels.index(view)
        lines: list[SliceLine | None] = []
        for k, grid in enumerate(grids):
            fitted = fit_line(heat[k, c])
            if fitted is None or fitted.confidence <= 0:
                lines.append(None)
                continue
            foot, d = fitted.line.foot_px, fitted.line.direction_px
            ends = grid.pixel_to_lps(np.stack([foot, foot + 10.0 * d]))
            lines.append(SliceLine(k, ends[0], unit(ends[1] - ends[0]), float(fitted.confidence)))
        out[view] = lines
    return out


def acquired_view_planes(stack: SaxStack) -> dict[str, ImagePlane]:
    """The study's acquired long-axis planes (the middle position of each view's stack)."""
    if stack.study is None:
        return {}
    out = {}
    for vs in view_stacks(stack.study):
        if vs.label in LONG_AXIS_VIEWS and vs.positions:
            out[vs.label] = vs.positions[len(vs.positions) // 2].plane
    return out


def stack_lines(stack: SaxStack, model: PlanningModel, phase: int = 0,
                orientation: str = "canonical") -> dict[str, list[SliceLine | None]]:
    """The predicted lines of every long-axis view on the SAX stack's slices (``predict_sax_lines``);
    InputError naming the stack's folder when it has fewer than two slices, the phase is out of range
    or the images cannot be read."""
    where = stack.folder()
    if len(stack.positions) < 2:
        raise InputError(f"{where}: the SAX stack has {len(stack.positions)} slice; planning needs at least 2")
    if not 0 <= phase < stack.n_phases:
        raise InputError(f"{where}: phase {phase} out of range (the SAX stack has {stack.n_phases})")
    # each slice's own image of the phase (told by its temporal position, never by its place in a list
    # that a missing file shortens); a slice without one is left out (plan_stack notes it)
    frames = phase_frames(stack.positions, phase)
    present = [k for k, f in enumerate(frames) if f is not None]
    if len(present) < 2:
        raise InputError(f"{where}: {len(present)} SAX slice(s) hold an image of phase {phase}; planning needs 2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pixels = [read_frame_pixels(frames[k]) for k in present]
        except Exception as exc:  # noqa: BLE001 - pydicom / codec errors of a damaged file
            raise InputError(f"{where}: cannot read the SAX images ({type(exc).__name__}: {exc})") from None
    found = predict_sax_lines(model, pixels, [stack.planes[k] for k in present], orientation)
    out: dict[str, list[SliceLine | None]] = {}
    for view, lines in found.items():
        out[view] = [None] * len(stack.positions)
        for k, line in zip(present, lines, strict=True):
            out[view][k] = None if line is None else replace(line, slice_index=k)
    return out


def plan_stack(stack: SaxStack, model: PlanningModel, phase: int = 0, orientation: str = "canonical",
               fit: str = "sax-normal", lines: Mapping[str, Sequence[SliceLine | None]] | None = None) -> StudyPlan:
    """Plan the long-axis views from one SAX stack (module docstring; ``lines``: from ``stack_lines``
    when already predicted)."""
    if lines is None:
        lines = stack_lines(stack, model, phase, orientation)
    from .segment import stack_problems

    plan = plan_from_lines(lines, stack.planes, acquired_view_planes(stack), fit=fit)
    plan.notes += [f"incomplete SAX stack, planned without: {p}" for p in stack_problems(stack, [phase])]
    plan.meta = {
        "study": stack.study.key if stack.study is not None else None,
        "model_id": model.manifest.get("model_id"),
        "phase": phase,
        "orientation": orientation,
        "fit": fit,
    }
    return plan


def plan_study(study_dir: str | Path, weights: str | Path | None = None, phase: int = 0, device: str = "cpu",
               model: PlanningModel | None = None, orientation: str = "canonical",
               fit: str = "sax-normal", backend: str = "auto") -> StudyPlan:
    """Plan the long-axis views of the one heart study under ``study_dir`` (``plan_stack``).

    InputError names the folder when it holds no usable SAX stack; WeightsError names weights that
    are not a heart line network.
    """
    from .segment import find_study_sax_stack

    if model is None:
        if weights is None:
            raise ValueError("plan_study needs weights or a loaded model")
        model = load_planning_model(weights, device, backend)
    return plan_stack(find_study_sax_stack(study_dir), model, phase, orientation, fit)
