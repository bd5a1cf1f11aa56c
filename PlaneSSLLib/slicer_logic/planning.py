"""Plan long-axis views in the scene: the 2CH/3CH/4CH planes proposed from the SAX volume.

``compute_plan`` runs the line network on every slice of the SAX volume and fits the planes
(``inference.plan_views``: the same code as ``planessl plan``; torch is imported only here, when
the user asks for a plan). ``add_plan_to_scene`` puts the result into the scene inside one
``runner.scene_transaction`` (a failure leaves the scene as it was):

- one markups plane per proposed view (``Proposed 2CH`` ...: centre, normal and in-plane axes of
  the proposed scanner plane, its field of view as size), which the user can move and turn;
- one slice view per proposed view (``<VIEW> plan``), showing the SAX volume reformatted on the
  proposed plane, apex up, beside the acquired views when the study holds them (layout: the
  acquired views on top, the proposed ones below);
- a table node ``View planning`` with, per view, the angle (°) between the proposed and acquired
  normals and the distance (mm) from the acquired image's centre to the proposed plane, the slices
  used, and the SAX orientation from 2CH × 4CH where the fit gives it.

Everything is placed under the SAX volume's study in the subject hierarchy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer

from ..geometry.frames import lps_to_ras
from .lines import volume_array
from .mrml import SceneContext, numpy_to_matrix
from .runner import scene_transaction
from .scene import place_in_study, planes_of_volume, study_item_of
from .views import (
    PLANE_VIEW_GROUP,
    PlaneView,
    PlaneViews,
    layout_rows_xml,
    slice_node,
    slice_to_ras_for_plane,
    view_color,
)

if TYPE_CHECKING:
    from ..inference.plan_views import StudyPlan

__all__ = ["PROPOSED_SUFFIX", "ScenePlan", "compute_plan", "add_plan_to_scene", "PLANNING_LAYOUT_ID"]

#: Label suffix of the proposed views' slice views.
PROPOSED_SUFFIX = " plan"
#: Layout ID of the planning layout (acquired views over proposed views).
PLANNING_LAYOUT_ID = 1611
ATTR_PLAN = "PlaneSSL.ProposedView"
_LAX = ("2CH", "3CH", "4CH")


@dataclass
class ScenePlan:
    """What a plan put into the scene, and the plan itself."""

    plan: StudyPlan
    markups: dict[str, Any] = field(default_factory=dict)
    views: PlaneViews = field(default_factory=PlaneViews)
    table: Any = None

    def summary(self) -> list[str]:
        """Lines for the results panel."""
        out = []
        for view in _LAX:
            vp = self.plan.views.get(view)
            if vp is None:
                out.append(f"{view}: no plane ({self.plan.missing.get(view, 'no lines')})")
            elif vp.acquired is None:
                out.append(f"{view}: proposed ({int(vp.fit.inliers.sum())} slices); not acquired in this study")
            else:
                out.append(f"{view}: {vp.angle_deg:.1f}° from the acquired plane, its centre {vp.distance_mm:.1f} mm "
                           f"away ({int(vp.fit.inliers.sum())} slices)")
        if self.plan.sax_angle_deg is not None and self.plan.meta.get("fit") != "sax-normal":
            out.append(f"SAX from 2CH × 4CH: {self.plan.sax_angle_deg:.1f}° from the acquired SAX")
        return out


def _middle_plane(volume):
    planes = planes_of_volume(volume)
    return planes[(len(planes) - 1) // 2]


def compute_plan(volumes: Mapping[str, Any], weights: str | Path, device: str = "cpu",
                 fit: str = "sax-normal") -> StudyPlan:
    """The proposed planes from the ``SAX`` volume of ``volumes`` (view label → volume node), compared with
    the acquired long-axis volumes among them. ValueError when there is no SAX volume of two slices or more;
    WeightsError for weights that are not a heart line network. Touches nothing in the scene."""
    from ..inference.plan_views import load_planning_model, plan_from_lines, predict_sax_lines

    sax = volumes.get("SAX")
    if sax is None:
        raise ValueError("view planning needs the study's SAX volume")
    planes = planes_of_volume(sax)
    if len(planes) < 2:
        raise ValueError(f"the SAX volume has {len(planes)} slice; planning needs at least 2")
    model = load_planning_model(weights, device)
    pixels = np.asarray(volume_array(sax), dtype=np.float32)
    lines = predict_sax_lines(model, list(pixels), planes)
    acquired = {v: _middle_plane(volumes[v]) for v in _LAX if volumes.get(v) is not None}
    plan = plan_from_lines(lines, planes, acquired, fit=fit)
    plan.meta = {"model_id": model.manifest.get("model_id"), "fit": fit}
    if not plan.views:
        reasons = "; ".join(f"{v}: {m}" for v, m in plan.missing.items())
        raise ValueError(f"no long-axis plane could be fitted: {reasons}")
    return plan


def _add_markups_plane(ctx: SceneContext, view: str, plan_view) -> Any:
    p = plan_view.proposed
    node = ctx.scene.AddNewNodeByClass("vtkMRMLMarkupsPlaneNode", f"Proposed {view}")
    node.SetPlaneType(slicer.vtkMRMLMarkupsPlaneNode.PlaneTypePointNormal)
    node.SetSizeMode(slicer.vtkMRMLMarkupsPlaneNode.SizeModeAbsolute)
    x, y, n = (lps_to_ras(v) for v in (p.x_dir_lps, p.y_dir_lps, p.normal_lps))
    node.SetCenterWorld(*lps_to_ras(p.centre_lps))
    node.SetAxesWorld(x, y, n)
    node.SetSize(p.columns * p.spacing_mm[1], p.rows * p.spacing_mm[0])
    node.SetAttribute(ATTR_PLAN, view)
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*view_color(view))
        display.SetColor(*view_color(view))
    return node


def _add_table(ctx: SceneContext, plan: StudyPlan) -> Any:
    table = ctx.scene.AddNewNodeByClass("vtkMRMLTableNode", "View planning")
    for column in ("view", "angle_deg", "distance_mm", "slices_used"):
        table.AddColumn().SetName(column)
    for view in _LAX:
        vp = plan.views.get(view)
        if vp is None:
            continue
        r = table.AddEmptyRow()
        table.SetCellText(r, 0, view)
        table.SetCellText(r, 1, "" if vp.acquired is None else f"{vp.angle_deg:.2f}")
        table.SetCellText(r, 2, "" if vp.acquired is None else f"{vp.distance_mm:.2f}")
        table.SetCellText(r, 3, str(int(vp.fit.inliers.sum())))
    if plan.sax_angle_deg is not None and plan.meta.get("fit") != "sax-normal":
        r = table.AddEmptyRow()
        table.SetCellText(r, 0, "SAX from 2CH x 4CH")
        table.SetCellText(r, 1, f"{plan.sax_angle_deg:.2f}")
    table.SetAttribute("PlaneSSL.Model", str(plan.meta.get("model_id") or ""))
    return table


def add_plan_to_scene(ctx: SceneContext, volumes: Mapping[str, Any], plan: StudyPlan,
                      size_px: tuple[int, int] = (256, 256), layout_node=None,
                      acquired_labels: Sequence[str] | None = None) -> ScenePlan:
    """Markups planes, proposed slice views and the table of ``plan`` in the scene (module docstring).

    With ``layout_node`` the planning layout is registered and selected: ``acquired_labels`` (default:
    the volumes' labels) on top, the proposed views below; the acquired views' slice nodes must exist
    (``views.create_plane_views``)."""
    sax = volumes["SAX"]
    study = study_item_of(ctx, sax)
    result = ScenePlan(plan)
    nodes = {}
    with scene_transaction(ctx.scene):  # nodes only; the slice logics come after, once nothing can fail
        for view, vp in plan.views.items():
            markup = _add_markups_plane(ctx, view, vp)
            if study:
                place_in_study(ctx, markup, study)
            result.markups[view] = markup
            node = slice_node(ctx, view + PROPOSED_SUFFIX)
            node.SetLayoutColor(*view_color(view))
            node.SetViewGroup(PLANE_VIEW_GROUP)
            node.SetMappedInLayout(1)
            node.GetSliceToRAS().DeepCopy(numpy_to_matrix(slice_to_ras_for_plane(vp.proposed)))
            fov = max(vp.proposed.rows * vp.proposed.spacing_mm[0], vp.proposed.columns * vp.proposed.spacing_mm[1])
            node.SetDimensions(int(size_px[0]), int(size_px[1]), 1)
            node.SetFieldOfView(fov * size_px[0] / max(size_px), fov * size_px[1] / max(size_px), 1.0)
            node.UpdateMatrices()
            nodes[view] = node
        result.table = _add_table(ctx, plan)
        if study:
            place_in_study(ctx, result.table, study)
    for view, node in nodes.items():
        logic = ctx.slice_logic(node)
        logic.GetSliceCompositeNode().SetBackgroundVolumeID(sax.GetID())
        label = view + PROPOSED_SUFFIX
        result.views.views[label] = PlaneView(label, node, logic, sax, [plan.views[view].proposed], view_color(view))
    if layout_node is not None:
        top = list(acquired_labels if acquired_labels is not None else volumes)
        xml = layout_rows_xml([top, result.views.labels])
        if layout_node.IsLayoutDescription(PLANNING_LAYOUT_ID):
            layout_node.SetLayoutDescription(PLANNING_LAYOUT_ID, xml)
        else:
            layout_node.AddLayoutDescription(PLANNING_LAYOUT_ID, xml)
        layout_node.SetViewArrangement(PLANNING_LAYOUT_ID)
        result.views.layout_id = PLANNING_LAYOUT_ID
    return result
