"""The module's Qt-free logic (``slicer_logic.logic.Logic``) on real MRML: the path the Slicer
self-test (``PlaneSSLTest.runTest``) takes, run here without Qt on the slicer-core wheel.

Phantom DICOM study → volumes → plane views → tiny random weights exported like training does →
segmentation (background worker, blocking) → segmentation node with statistics; knee stacks →
ACL-tear table; predicted lines drawn and compared; cancel and bad models leave the scene as it was.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from test_slicer_logic import require_slicer_core

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
slicer = require_slicer_core()
torch = pytest.importorskip("torch")

from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort  # noqa: E402
from PlaneSSLLib.slicer_logic import logic as facade  # noqa: E402
from PlaneSSLLib.slicer_logic.models_registry import ModelFolderError  # noqa: E402
from PlaneSSLLib.slicer_logic.mrml import SceneContext, node_ids  # noqa: E402
from PlaneSSLLib.slicer_logic.runner import InferenceCancelled  # noqa: E402
from PlaneSSLLib.slicer_logic.scene import ATTR_VIEW  # noqa: E402
from PlaneSSLLib.slicer_logic.segmentation import segment_ids, segmentation_to_labelmap  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("facade")
    write_cohort(root / "heart", CohortOptions("heart", 1, seed=11, phases=2, matrix=64), workers=1)
    write_cohort(root / "knee", CohortOptions("knee", 1, seed=12, matrix=48), workers=1)
    weights = {
        "segment_heart": facade.export_random_weights(root / "w_seg", "segment_heart"),
        "classify_knee": facade.export_random_weights(root / "w_knee", "classify_knee"),
        "lines": facade.export_random_weights(root / "w_lines", "lines", channels=("2CH", "3CH", "4CH", "SAX")),
    }
    return root, weights


def test_heart_study_segmentation_and_lines(data, tmp_path):
    root, weights = data
    logic = facade.Logic(SceneContext.create(), cache_dir=tmp_path / "cache")
    loaded = logic.load_dicom_folder(root / "heart")
    assert set(loaded.volumes) == {"SAX", "2CH", "3CH", "4CH"}
    # any volume of the study finds its siblings
    volumes = logic.study_volumes(loaded.volumes["3CH"])
    assert list(volumes) == ["SAX", "2CH", "3CH", "4CH"]
    assert logic.anatomy_of(volumes) == "heart"
    views = logic.show_planes(volumes)
    assert views.labels == ["SAX", "2CH", "3CH", "4CH"]

    # segmentation in the background worker, blocking, with progress
    seen = []
    results = logic.run("segment_heart", volumes, weights["segment_heart"], device="cpu",
                        on_progress=lambda i, n: seen.append((i, n)), timeout=180)
    sax = volumes["SAX"]
    n_slices = sax.GetImageData().GetDimensions()[2]
    assert seen == [(n_slices, n_slices)]  # one step per cine phase, counted in slices
    assert results.device == "cpu"
    (seg,) = results.nodes
    assert seg.IsA("vtkMRMLSegmentationNode")
    assert [seg.GetSegmentation().GetSegment(s).GetName() for s in segment_ids(seg)] == \
        ["Right ventricle", "Myocardium", "Left ventricle"]
    labels = segmentation_to_labelmap(logic.ctx, seg, sax)
    assert labels.shape == (n_slices, *sax.GetImageData().GetDimensions()[1::-1])
    stats = {s.name: s for s in results.statistics}
    for label, name in ((1, "Right ventricle"), (2, "Myocardium"), (3, "Left ventricle")):
        assert stats[name].voxels == int((labels == label).sum())
        assert stats[name].volume_ml == pytest.approx(stats[name].voxels * facade.voxel_volume_ml(sax))
    sh = logic.ctx.subject_hierarchy
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == loaded.study_item
    assert any("mL" in line for line in results.summary())

    # predicted lines in every plane view, compared with the geometric ones
    lines = logic.run("lines", volumes, weights["lines"], device="cpu")
    assert set(lines.comparisons) == set(views.labels)
    for view, comps in lines.comparisons.items():
        for c in comps:
            assert c.view == view and c.partner in views.labels and c.partner != view
            assert c.angle_deg is None or 0.0 <= c.angle_deg <= 90.0
    assert all(logic.ctx.scene.GetNodeByID(n.GetID()) for n in lines.nodes)
    logic.set_predicted_lines_visible(False)
    assert all(not n.GetDisplayNode().GetVisibility() for n in lines.nodes)
    logic.set_geometric_lines_visible(False)
    assert all(not v.slice_logic.GetSliceDisplayNode().GetIntersectingSlicesVisibility() for v in views)
    logic.set_geometric_lines_visible(True)
    logic.cleanup()
    assert not any(logic.ctx.scene.GetNodeByID(n.GetID()) for n in lines.nodes)


def test_knee_classification_table(data):
    root, weights = data
    logic = facade.Logic(SceneContext.create())
    loaded = logic.load_dicom_folder(root / "knee")
    volumes = logic.study_volumes(loaded.volumes["SAG"])
    assert set(volumes) == {"SAG", "COR", "AX"} and logic.anatomy_of(volumes) == "knee"
    results = logic.run("classify_knee", volumes, weights["classify_knee"], device="auto", timeout=180)
    assert 0.0 <= results.probability <= 1.0
    (table,) = results.nodes
    assert float(table.GetAttribute("PlaneSSL.ACLTearProbability")) == pytest.approx(results.probability, abs=1e-6)
    assert any("ACL tear probability" in line for line in results.summary())


def test_wrong_model_missing_view_and_cancel_leave_scene_unchanged(data):
    root, weights = data
    logic = facade.Logic(SceneContext.create())
    loaded = logic.load_dicom_folder(root / "heart")
    volumes = logic.study_volumes(loaded.volumes["SAX"])
    before = node_ids(logic.ctx.scene)
    with pytest.raises(ModelFolderError, match="trained for task 'acl'"):
        logic.resolve_model(str(weights["classify_knee"].path), "segment_heart")
    with pytest.raises(ValueError, match="knee stacks"):
        logic.run("classify_knee", volumes, weights["classify_knee"])
    with pytest.raises(ValueError, match="SAX"):
        logic.task_volumes("segment_heart", {k: v for k, v in volumes.items() if k != "SAX"})
    with pytest.raises(ValueError, match="device"):
        logic.make_request("segment_heart", volumes, weights["segment_heart"], device="tpu")
    # cancel a started run: the worker is killed, nothing enters the scene
    started = threading.Event()
    logic.start("segment_heart", volumes, weights["segment_heart"], "cpu", on_progress=lambda i, n: started.set())
    assert logic.runner.running
    logic.cancel()
    with pytest.raises(InferenceCancelled):
        logic.finish(timeout=60)
    assert node_ids(logic.ctx.scene) == before


def test_user_loaded_volume_is_its_own_view(data):
    logic = facade.Logic(SceneContext.create())
    node = logic.ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my volume")
    from PlaneSSLLib.slicer_logic.scene import add_volume_from_array

    add_volume_from_array(logic.ctx, np.zeros((3, 16, 16), np.int16), np.eye(4), "my volume", node=node)
    assert node.GetAttribute(ATTR_VIEW) is None
    volumes = logic.study_volumes(node)
    assert volumes == {"my volume": node}
    assert logic.task_volumes("segment_heart", volumes) == volumes
    assert logic.anatomy_of(volumes) is None
