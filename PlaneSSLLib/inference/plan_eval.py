"""View planning over a cohort: the proposed planes' errors beside a baseline that uses no image.

For each study with a SAX stack, ``plan_views.plan_stack`` proposes the 2CH/3CH/4CH planes; where
the study holds a view, the error is the angle (°) between the proposed and acquired normals and
the distance (mm) from the acquired image's centre to the proposed plane.

The baseline is the cohort's mean orientation of each view relative to the SAX stack, fitted
on the other studies (leave one out): each acquired normal is written in a frame built from
the SAX stack and the patient axes only (``e3`` the SAX normal towards the apex, ``e1`` the
patient's left projected into the SAX plane, ``e2 = e3 × e1``), the sign-free mean direction of the
others (principal axis of their outer products) is taken back into the study's own frame, and
the plane passes through the centre of the SAX stack (the middle of its images). It is what a
planner knows before looking at any image: how the views usually lie relative to the SAX stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dicom.stacks import SaxStack
from ..errors import PlaneSSLError
from ..geometry.planes import angle_between_normals_deg, unit
from .plan_views import LONG_AXIS_VIEWS, PlanningModel, StudyPlan, acquired_view_planes, plan_stack, stack_lines

__all__ = ["sax_frame", "baseline_normals", "CohortPlanResult", "evaluate_planning", "summarise"]


def sax_frame(apex_direction_lps: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rows e1, e2, e3 (module docstring): from the SAX normal and the patient axes only."""
    e3 = unit(apex_direction_lps)
    left = np.array([1.0, 0.0, 0.0])
    e1 = left - float(left @ e3) * e3
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([0.0, 1.0, 0.0]) - float(e3[1]) * e3
    e1 = unit(e1)
    return np.stack([e1, unit(np.cross(e3, e1)), e3])


def _mean_axis(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Sign-free mean direction: the principal eigenvector of the summed outer products."""
    m = sum(np.outer(v, v) for v in vectors)
    _, evecs = np.linalg.eigh(m)
    return evecs[:, -1]


def baseline_normals(frames: Sequence[np.ndarray], acquired: Sequence[dict[str, np.ndarray]],
                     view: str) -> list[np.ndarray | None]:
    """Per study, the leave-one-out baseline normal of ``view`` (LPS), None without another study holding it."""
    local = [None if view not in acq else frame @ acq[view] for frame, acq in zip(frames, acquired, strict=True)]
    out: list[np.ndarray | None] = []
    for i, frame in enumerate(frames):
        others = [v for j, v in enumerate(local) if j != i and v is not None]
        out.append(None if not others else unit(frame.T @ _mean_axis(others)))
    return out


@dataclass
class CohortPlanResult:
    """Per study and view, the planner's and the baseline's errors (NaN where the view is not in the study)."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # study, view, method, angle_deg, distance_mm
    sax_rows: list[dict[str, Any]] = field(default_factory=list)  # study, method, angle_deg
    skipped: list[str] = field(default_factory=list)  # hashed study keys with the reason

    def summary(self) -> dict[str, Any]:
        return summarise(self.rows, self.sax_rows)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if not len(v):
        return {"n": 0, "median": None, "p90": None}
    return {"n": int(len(v)), "median": round(float(np.median(v)), 3), "p90": round(float(np.percentile(v, 90)), 3)}


def summarise(rows: Sequence[dict[str, Any]], sax_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"views": {view: {method: {"angle_deg": stats, "distance_mm": stats}}}, "sax": {method: stats}}``."""
    out: dict[str, Any] = {"views": {}, "sax": {}}
    methods = list(dict.fromkeys(["planner", "baseline"] + [r["method"] for r in rows]))
    for view in LONG_AXIS_VIEWS:
        out["views"][view] = {}
        for method in methods:
            sel = [r for r in rows if r["view"] == view and r["method"] == method]
            out["views"][view][method] = {"angle_deg": _stats([r["angle_deg"] for r in sel]),
                                          "distance_mm": _stats([r["distance_mm"] for r in sel])}
    for method in methods:
        out["sax"][method] = {"angle_deg": _stats([r["angle_deg"] for r in sax_rows if r["method"] == method])}
    return out


def evaluate_planning(stacks: Sequence[SaxStack], model: PlanningModel, phase: int = 0,
                      orientation: str = "canonical", fits: Sequence[str] = ("sax-normal",)) -> CohortPlanResult:
    """Plan every stack (each way of ``fits``, from one prediction of the lines) and compare with its
    acquired views and with the leave-one-out baseline. Rows name the method ``planner`` (the first
    fit) or ``planner:<fit>`` (the others), and ``baseline``."""
    result = CohortPlanResult()
    plans: list[StudyPlan] = []
    others: list[dict[str, StudyPlan]] = []
    kept: list[SaxStack] = []
    for stack in stacks:
        key = stack.study.key if stack.study is not None else "?"
        try:
            lines = stack_lines(stack, model, phase, orientation)
        except PlaneSSLError as exc:
            result.skipped.append(f"study {key}: {str(exc).split(': ', 1)[-1]}")
            continue
        plans.append(plan_stack(stack, model, phase, orientation, fits[0], lines))
        others.append({f: plan_stack(stack, model, phase, orientation, f, lines) for f in fits[1:]})
        kept.append(stack)
    acquired = [{v: p.normal_lps for v, p in acquired_view_planes(s).items()} for s in kept]
    frames = [sax_frame(plan.apex_direction_lps) for plan in plans]
    centres = [np.mean([p.centre_lps for p in s.planes], axis=0) for s in kept]
    baselines = {view: baseline_normals(frames, acquired, view) for view in LONG_AXIS_VIEWS}
    for i, (stack, plan) in enumerate(zip(kept, plans, strict=True)):
        key = plan.meta.get("study") or "?"
        acq_planes = acquired_view_planes(stack)
        methods = [("planner", plan)] + [(f"planner:{f}", p) for f, p in others[i].items()]
        for view, acq in acq_planes.items():
            for method, p in methods:
                vp = p.views.get(view)
                result.rows.append({"study": key, "view": view, "method": method,
                                    "angle_deg": float("nan") if vp is None else float(vp.angle_deg),
                                    "distance_mm": float("nan") if vp is None else float(vp.distance_mm)})
            base = baselines[view][i]
            if base is not None:
                result.rows.append({"study": key, "view": view, "method": "baseline",
                                    "angle_deg": angle_between_normals_deg(base, acq.normal_lps),
                                    "distance_mm": abs(float((acq.centre_lps - centres[i]) @ base))})
        for method, p in methods:
            if p.sax_angle_deg is not None:
                result.sax_rows.append({"study": key, "method": method, "angle_deg": float(p.sax_angle_deg)})
        b2, b4 = baselines["2CH"][i], baselines["4CH"][i]
        if b2 is not None and b4 is not None and angle_between_normals_deg(b2, b4) > 1.0:
            axis = unit(np.cross(b2, b4))
            result.sax_rows.append({"study": key, "method": "baseline",
                                    "angle_deg": angle_between_normals_deg(axis, plan.apex_direction_lps)})
    return result
