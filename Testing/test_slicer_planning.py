"""Plan long-axis views in Slicer (slicer_logic/planning.py) on real MRML (the slicer-core wheel): markups planes,
proposed slice views aligned to the proposed planes, the results table, the scene unchanged on failure.

Skipped locally when slicer-core is missing; on CI (PLANESSL_REQUIRE_TOOLS=1) that fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REQUIRE_TOOLS

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "Testing" / "artifacts"
LINES = ROOT / "Resources" / "Sample" / "heart-plane-lines"
SEG = ROOT / "Resources" / "Sample" / "heart-segmentation"
SIZE = (200, 200)

try:
    import slicer
    import vtk  # noqa: F401

    if not hasattr(slicer, "vtkMRMLScene"):
        raise ImportError("the 'slicer' module found has no vtkMRMLScene (not slicer-core)")
except ImportError as exc:
    if REQUIRE_TOOLS:
        pytest.fail(f"slicer-core not installed ({exc})", pytrace=False)
    pytest.skip(f"slicer-core not installed ({exc}); pip install slicer-core", allow_module_level=True)

from PlaneSSLLib.dicom.scan import scan_tree  # noqa: E402
from PlaneSSLLib.dicom.views import identify_views  # noqa: E402
from PlaneSSLLib.geometry.frames import lps_to_ras  # noqa: E402
from PlaneSSLLib.geometry.lines import intersection_line_lps  # noqa: E402
from PlaneSSLLib.geometry.plane_fit import SliceLine  # noqa: E402
from PlaneSSLLib.geometry.planes import angle_between_normals_deg  # noqa: E402
from PlaneSSLLib.inference.plan_views import plan_from_lines  # noqa: E402
from PlaneSSLLib.inference.weights import WeightsError  # noqa: E402
from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort  # noqa: E402
from PlaneSSLLib.slicer_logic import offscreen, planning, scene, views  # noqa: E402
from PlaneSSLLib.slicer_logic.mrml import SceneContext, matrix_to_numpy, node_ids  # noqa: E402


@pytest.fixture(scope="module")
def heart_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("planning") / "data"
    write_cohort(root, CohortOptions("heart", 1, seed=3, phases=2, realism="clinical"), workers=1)
    study = scan_tree(root / "subject_0000" / "study").studies[0]
    identify_views(study)
    return study


def fresh_scene(study):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, study, phase=0)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(ctx.scene)
    plane_views = views.create_plane_views(ctx, loaded.volumes, "heart", SIZE, layout_node=layout_logic.GetLayoutNode())
    return ctx, loaded, plane_views, layout_logic


def exact_plan(volumes):
    sax = scene.planes_of_volume(volumes["SAX"])
    acquired = {v: planning._middle_plane(volumes[v]) for v in ("2CH", "3CH", "4CH")}
    lines = {v: [SliceLine(k, *intersection_line_lps(p, acquired[v]), 1.0) for k, p in enumerate(sax)]
             for v in acquired}
    return plan_from_lines(lines, sax, acquired), acquired


def test_exact_plan_in_the_scene(heart_study):
    ctx, loaded, _, layout_logic = fresh_scene(heart_study)
    plan, acquired = exact_plan(loaded.volumes)
    result = planning.add_plan_to_scene(ctx, loaded.volumes, plan, SIZE, layout_logic.GetLayoutNode())
    sh = ctx.subject_hierarchy
    for view, plane in acquired.items():
        markup = result.markups[view]
        assert markup.GetName() == f"Proposed {view}" and ctx.scene.GetNodeByID(markup.GetID()) is markup
        normal = np.zeros(3)
        markup.GetNormalWorld(normal)
        assert angle_between_normals_deg(normal, lps_to_ras(plane.normal_lps)) < 0.1
        centre = np.zeros(3)
        markup.GetCenterWorld(centre)
        assert abs(float((centre - lps_to_ras(plane.centre_lps)) @ lps_to_ras(plane.normal_lps))) < 0.1
        assert sh.GetItemParent(sh.GetItemByDataNode(markup)) == loaded.study_item
        # The proposed slice view lies in the proposed plane and shows the SAX volume.
        pv = result.views[view + planning.PROPOSED_SUFFIX]
        m = matrix_to_numpy(pv.slice_node.GetSliceToRAS())
        assert angle_between_normals_deg(m[:3, 2], lps_to_ras(plane.normal_lps)) < 0.1
        assert np.allclose(m[:3, 3], lps_to_ras(plan.views[view].proposed.centre_lps), atol=1e-3)
        assert pv.slice_logic.GetSliceCompositeNode().GetBackgroundVolumeID() == loaded.volumes["SAX"].GetID()
    table = result.table
    assert table.GetNumberOfRows() == 3
    assert float(table.GetCellText(0, 1)) < 0.1 and float(table.GetCellText(0, 2)) < 0.1
    assert layout_logic.GetLayoutNode().GetViewArrangement() == planning.PLANNING_LAYOUT_ID
    assert all("0.0°" in line or "0.1°" in line for line in result.summary()[:3])


def test_sample_weights_plan_and_screenshot(heart_study):
    ctx, loaded, plane_views, layout_logic = fresh_scene(heart_study)
    before = node_ids(ctx.scene)
    plan = planning.compute_plan(loaded.volumes, LINES)
    assert node_ids(ctx.scene) == before  # computing touches nothing
    assert set(plan.views) == {"2CH", "3CH", "4CH"}
    for vp in plan.views.values():
        assert 0 <= vp.angle_deg <= 90 and np.isfinite(vp.distance_mm)
    result = planning.add_plan_to_scene(ctx, loaded.volumes, plan, SIZE, layout_logic.GetLayoutNode())
    assert len(result.summary()) == 3
    acquired = [offscreen.OffscreenSliceView(ctx, plane_views[v].slice_node, SIZE) for v in ("2CH", "3CH", "4CH")]
    proposed = [offscreen.OffscreenSliceView(ctx, result.views[v + planning.PROPOSED_SUFFIX].slice_node, SIZE)
                for v in ("2CH", "3CH", "4CH")]
    try:
        images = [r.render() for r in acquired + proposed]
    finally:
        for r in acquired + proposed:
            r.close()
    for img in images:
        assert img.std() > 5  # an image, not an empty view
    tiled = offscreen.tile_images(images, 3)
    path = offscreen.write_png(ARTIFACTS / "plan_views.png", tiled)
    assert path.stat().st_size > 10000
    if os.environ.get("PLANESSL_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "Resources" / "Screenshots" / "plan_views.png")


def test_scene_unchanged_on_failure(heart_study, monkeypatch):
    ctx, loaded, _, layout_logic = fresh_scene(heart_study)
    before = node_ids(ctx.scene)
    with pytest.raises(WeightsError, match="heart-segmentation"):
        planning.compute_plan(loaded.volumes, SEG)
    with pytest.raises(ValueError, match="SAX volume"):
        planning.compute_plan({k: v for k, v in loaded.volumes.items() if k != "SAX"}, LINES)
    plan, _ = exact_plan(loaded.volumes)

    def broken(*args, **kwargs):
        raise RuntimeError("table failed")

    monkeypatch.setattr(planning, "_add_table", broken)
    arrangement = layout_logic.GetLayoutNode().GetViewArrangement()
    with pytest.raises(RuntimeError, match="table failed"):
        planning.add_plan_to_scene(ctx, loaded.volumes, plan, SIZE, layout_logic.GetLayoutNode())
    assert node_ids(ctx.scene) == before
    assert layout_logic.GetLayoutNode().GetViewArrangement() == arrangement
