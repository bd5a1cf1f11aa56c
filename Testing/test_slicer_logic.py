"""PlaneSSLLib.slicer_logic on real MRML (the slicer-core wheel): scene, plane views, offscreen
render checked by pixels, predicted lines, segmentation round trip, classification table,
background inference with cancel and scene rollback.

Skipped locally when slicer-core is missing; on CI (PLANESSL_REQUIRE_TOOLS=1) that fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REQUIRE_TOOLS

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "Testing" / "artifacts"


def require_slicer_core():
    """The ``slicer`` module of the slicer-core wheel: skip locally, fail on CI, when missing."""
    try:
        import slicer  # noqa: F401
        import vtk  # noqa: F401

        if not hasattr(slicer, "vtkMRMLScene"):
            raise ImportError("the 'slicer' module found has no vtkMRMLScene (not slicer-core)")
    except ImportError as exc:
        message = f"slicer-core not installed ({exc}); pip install slicer-core (scripts/bootstrap.sh)"
        if REQUIRE_TOOLS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return slicer


slicer = require_slicer_core()

from PlaneSSLLib.dicom.records import VIEW_LABELS  # noqa: E402
from PlaneSSLLib.dicom.scan import scan_tree  # noqa: E402
from PlaneSSLLib.dicom.views import identify_views  # noqa: E402
from PlaneSSLLib.geometry.frames import affine_lps_to_ras  # noqa: E402
from PlaneSSLLib.geometry.lines import image_line, intersect_images  # noqa: E402
from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort  # noqa: E402
from PlaneSSLLib.preprocess.labels import terminology_record  # noqa: E402
from PlaneSSLLib.slicer_logic import classification, lines, offscreen, runner, scene, segmentation, views  # noqa: E402
from PlaneSSLLib.slicer_logic.mrml import SceneContext, matrix_to_numpy, node_ids  # noqa: E402
from PlaneSSLLib.slicer_logic.terminology import segment_terms  # noqa: E402

SIZE = (256, 256)
#: The segments of a segmentation manifest as 'planessl finetune seg' writes it.
HEART_SEGMENTS = segment_terms({"terminology": terminology_record()})


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("slicer_cohorts")
    write_cohort(root / "kaggle", CohortOptions("heart", 1, seed=3, phases=2), workers=1)
    write_cohort(root / "ukbb", CohortOptions("heart", 1, seed=4, layout="ukbb", phases=3), workers=1)
    write_cohort(root / "knee", CohortOptions("knee", 1, seed=5, matrix=96), workers=1)
    return root


def load(path: Path):
    study = scan_tree(path).studies[0]
    identify_views(study)
    return study


@pytest.fixture(scope="module")
def heart_study(cohorts):
    return load(cohorts / "kaggle" / "subject_0000" / "study")


@pytest.fixture(scope="module")
def ukbb_study(cohorts):
    return load(cohorts / "ukbb" / "subject_0000" / "study")


@pytest.fixture(scope="module")
def heart_scene(heart_study):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, heart_study, phase=0)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(ctx.scene)
    plane_views = views.create_plane_views(ctx, loaded.volumes, "heart", SIZE, layout_node=layout_logic.GetLayoutNode())
    renders = {v.label: offscreen.OffscreenSliceView(ctx, v.slice_node, SIZE) for v in plane_views}
    return ctx, loaded, plane_views, renders, layout_logic


class ShiftedGaussianPredictor:
    """Heatmaps of the true lines (against the partner views' current planes), shifted."""

    def __init__(self, plane_views, channels, shift_px=3.0, sigma_px=3.0):
        self.views, self.channels, self.shift, self.sigma = plane_views, tuple(channels), shift_px, sigma_px

    def __call__(self, image, plane):
        rows, cols = image.shape
        out = np.zeros((len(self.channels), rows, cols), np.float32)
        x, y = np.arange(cols)[None, :], np.arange(rows)[:, None]
        for c, partner in enumerate(self.channels):
            if partner not in self.views.views:
                continue
            line = image_line(plane, self.views[partner].current_plane())
            if line is not None:
                d = line.a * x + line.b * y + line.d - self.shift
                out[c] = np.exp(-(d**2) / (2 * self.sigma**2))
        return out


# ----------------------------------------------------------------------------- 1. study -> scene
def test_volume_geometry_matches_slicer_dicom_reader(ukbb_study):
    """IJK-to-RAS of our volumes equals that of Slicer's archetype (ITK/GDCM) DICOM reader."""
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, ukbb_study, phase=0)
    assert set(loaded.volumes) == set(VIEW_LABELS["heart"])
    for label, volume in loaded.volumes.items():
        files = [str(p.frames[0].path) for p in loaded.stacks[label].positions]
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(files[0])
        for f in files:
            storage.AddFileName(f)
        reference = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"reader {label}")
        assert storage.ReadData(reference)
        ours, theirs = (matrix_to_numpy(_ijk_to_ras(n)) for n in (volume, reference))
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=label)
        assert volume.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions()
        assert volume.GetName() == label and volume.GetAttribute(scene.ATTR_VIEW) == label
        ours_pixels = lines.volume_array(volume)
        theirs_pixels = lines.volume_array(reference)
        np.testing.assert_allclose(ours_pixels, theirs_pixels, atol=1e-3)
        # the planes recovered from the node's matrix are the DICOM planes
        for plane, position in zip(scene.planes_of_volume(volume), loaded.stacks[label].positions, strict=True):
            assert plane.is_same_plane(position.plane, tol_mm=1e-3)
            np.testing.assert_allclose(plane.origin_lps, position.plane.origin_lps, atol=1e-3)
            np.testing.assert_allclose(plane.spacing_mm, position.plane.spacing_mm, atol=1e-6)


def _ijk_to_ras(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m


def test_study_in_subject_hierarchy_and_kaggle_sax_merged(heart_scene, heart_study):
    ctx, loaded, *_ = heart_scene
    sh = ctx.subject_hierarchy
    assert sh.GetItemLevel(loaded.study_item) == "Study"
    assert sh.GetItemLevel(sh.GetItemParent(loaded.study_item)) == "Patient"
    for volume in loaded.volumes.values():
        assert sh.GetItemParent(sh.GetItemByDataNode(volume)) == loaded.study_item
    sax = loaded.volumes["SAX"]
    n_sax = sum(1 for s in heart_study.series if s.view == "SAX")
    assert n_sax > 3 and sax.GetImageData().GetDimensions()[2] == n_sax  # one series per slice, merged
    assert len(sax.GetAttribute(scene.ATTR_SERIES).split(",")) == n_sax


def test_cine_as_sequence(ukbb_study):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, ukbb_study, phase="all", labels=["SAX", "4CH"])
    sequence = loaded.sequences["SAX"]
    assert sequence.GetNumberOfDataNodes() == 3
    proxy = loaded.volumes["SAX"]
    phase2 = lines.volume_array(sequence.GetNthDataNode(2)).copy()
    scene.set_phase(loaded, 2)
    np.testing.assert_array_equal(lines.volume_array(proxy), phase2)
    assert not np.array_equal(phase2, lines.volume_array(sequence.GetNthDataNode(0)))


def test_planes_from_user_loaded_volume():
    """A volume node's IJK-to-RAS alone gives its planes (volumes loaded by any means)."""
    ctx = SceneContext.create()
    ijk_to_lps = np.array([[0.0, 0.8, 0.0, -10], [0.0, 0.0, -1.1, 20], [3.0, 0.0, 0.0, 5], [0, 0, 0, 1]])
    node = scene.add_volume_from_array(ctx, np.zeros((4, 30, 20), np.float32), ijk_to_lps, "user")
    np.testing.assert_allclose(matrix_to_numpy(_ijk_to_ras(node)), affine_lps_to_ras(ijk_to_lps))
    planes = scene.planes_of_volume(node)
    # I (columns) runs along S at 3 mm, J (rows) along L at 0.8 mm, K along -P at 1.1 mm
    assert len(planes) == 4 and planes[0].shape_px == (30, 20) and planes[0].spacing_mm == pytest.approx((0.8, 3.0))
    np.testing.assert_allclose(planes[2].origin_lps, [-10, 17.8, 5])
    np.testing.assert_allclose(planes[0].x_dir_lps, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(planes[0].normal_lps, [0, 1, 0], atol=1e-12)


# ----------------------------------------------------------------------------- 2. plane views
def test_plane_views_aligned_to_acquisition_plane(heart_scene):
    ctx, loaded, plane_views, _, layout_logic = heart_scene
    assert plane_views.labels == ["SAX", "2CH", "3CH", "4CH"]
    for view in plane_views:
        slice_to_ras = matrix_to_numpy(view.slice_node.GetSliceToRAS())
        plane = view.current_plane()
        expected = views.slice_to_ras_for_plane(plane)
        np.testing.assert_allclose(slice_to_ras[:3, :3], expected[:3, :3], atol=1e-6)  # not snapped to an axis
        assert abs(slice_to_ras[:3, 2] @ (slice_to_ras[:3, 3] - expected[:3, 3])) < 1e-3  # on the image plane
        assert view.slice_node.GetViewGroup() == views.PLANE_VIEW_GROUP
        assert view.slice_logic.GetSliceCompositeNode().GetBackgroundVolumeID() == loaded.volumes[view.label].GetID()
        assert view.slice_logic.GetSliceDisplayNode().GetIntersectingSlicesVisibility()
    layout_node = layout_logic.GetLayoutNode()
    assert layout_node.GetViewArrangement() == views.LAYOUT_IDS["heart"]
    assert 'singletontag="PlaneSSLSAX"' in layout_node.GetCurrentLayoutDescription()
    # the SAX view scrolls through the stack
    sax = plane_views["SAX"]
    sax.set_slice_index(1)
    assert sax.slice_index() == 1
    sax.set_slice_index(len(sax.planes) // 2)


def _line_pixels(rgb, color, tol=40):
    target = np.asarray(color) * 255
    mask = np.all(np.abs(rgb.astype(float) - target) < tol, axis=-1)
    ys, xs = np.nonzero(mask)
    return np.stack([xs, ys], axis=1).astype(float)


def _check_geometric_lines(plane_views, renders, tag):
    """Slicer's intersection lines lie where geometry.intersect_images puts them (≤ 1.5 px)."""
    composites = {v.label: v.slice_logic.GetSliceCompositeNode() for v in plane_views}
    backgrounds = {k: c.GetBackgroundVolumeID() for k, c in composites.items()}
    for c in composites.values():
        c.SetBackgroundVolumeID(None)  # black views: only the lines remain
    checked = 0
    try:
        for view in plane_views:
            render = renders[view.label]
            rgb = render.render()
            plane = view.current_plane()
            expected = {}
            for other in plane_views:
                if other is view:
                    continue
                pair = intersect_images(plane, other.current_plane())
                if pair.in_a is not None:
                    ends = plane.pixel_to_lps(np.array([pair.in_a.p0, pair.in_a.p1]))
                    expected[other.label] = render.lps_to_screen_px(ends)
            for label, (q0, q1) in expected.items():
                pixels = _line_pixels(rgb, plane_views[label].color)
                d = q1 - q0
                normal = np.array([-d[1], d[0]]) / np.linalg.norm(d)
                # lines that coincide on screen (long-axis planes share the LV axis) overdraw each other
                hidden = any(_coincident((q0, q1), other) for k, other in expected.items() if k != label)
                if len(pixels) == 0 and hidden:
                    continue
                assert hidden or len(pixels) > 20, f"{tag}: no {label} line drawn in the {view.label} view"
                dist = np.abs((pixels - q0) @ normal)
                assert dist.max() <= 1.5, f"{tag}: {label} line in {view.label} off by {dist.max():.2f} px"
                if not hidden:  # the drawn line covers the expected segment
                    along = (pixels - q0) @ (d / np.linalg.norm(d))
                    assert np.ptp(along) >= 0.6 * min(np.linalg.norm(d), max(SIZE)), f"{tag}: {label} in {view.label}"
                checked += 1
    finally:
        for k, c in composites.items():
            c.SetBackgroundVolumeID(backgrounds[k])
    return checked


def _coincident(a, b, tol_px=3.0):
    (a0, a1), (b0, b1) = a, b
    d = (a1 - a0) / np.linalg.norm(a1 - a0)
    n = np.array([-d[1], d[0]])
    return abs((b0 - a0) @ n) < tol_px and abs((b1 - a0) @ n) < tol_px


def test_offscreen_render_geometric_lines_where_geometry_puts_them(heart_scene):
    _, _, plane_views, renders, _ = heart_scene
    assert _check_geometric_lines(plane_views, renders, "mid SAX") >= 6
    sax = plane_views["SAX"]
    mid = sax.slice_index()
    sax.set_slice_index(1)  # the lines follow the SAX stack
    try:
        assert _check_geometric_lines(plane_views, renders, "SAX slice 1") >= 6
    finally:
        sax.set_slice_index(mid)


def test_knee_plane_views(cohorts):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, load(cohorts / "knee" / "subject_0000" / "study"))
    assert set(loaded.volumes) == {"SAG", "COR", "AX"}
    plane_views = views.create_plane_views(ctx, loaded.volumes, "knee", SIZE)
    renders = {v.label: offscreen.OffscreenSliceView(ctx, v.slice_node, SIZE) for v in plane_views}
    assert _check_geometric_lines(plane_views, renders, "knee") == 6


# ----------------------------------------------------------------------------- 3. predicted lines
def test_predicted_lines_drawn_compared_and_following_the_slice(heart_scene):
    ctx, _, plane_views, renders, _ = heart_scene
    predictor = ShiftedGaussianPredictor(plane_views, ("2CH", "3CH", "4CH", "SAX"), shift_px=3.0)
    overlay = lines.LineOverlay(ctx, plane_views, predictor)
    try:
        comparisons = overlay.update_all()
        for label, comps in comparisons.items():
            assert {c.partner for c in comps} == set(plane_views.labels) - {label}
            for c in comps:
                assert c.angle_deg < 0.5 and abs(c.distance_px - 3.0) < 0.3 and c.distance_mm > 0
        # each line model is shown only in its own view, in the partner's colour
        model = overlay.models[("SAX", "4CH")]
        display = model.GetDisplayNode()
        assert list(display.GetViewNodeIDs()) == [plane_views["SAX"].slice_node.GetID()]
        np.testing.assert_allclose(display.GetColor(), plane_views["4CH"].color)
        assert float(model.GetAttribute(lines.ATTR_ANGLE)) < 0.5
        # rendered: dashed partner-coloured pixels along the predicted line, 3 px from the geometric one
        rgb = renders["SAX"].render()
        offscreen.write_png(ARTIFACTS / "sax_predicted_lines.png", rgb)
        sax = plane_views["SAX"]
        comp = next(c for c in comparisons["SAX"] if c.partner == "4CH")
        plane = sax.current_plane()
        seg = [plane.pixel_to_lps(p) for p in _segment(comp.predicted, plane)]
        q0, q1 = renders["SAX"].lps_to_screen_px(np.array(seg))
        pixels = _line_pixels(rgb, plane_views["4CH"].color)
        d = (q1 - q0) / np.linalg.norm(q1 - q0)
        near = np.abs((pixels - q0) @ np.array([-d[1], d[0]])) <= 1.5
        assert near.sum() > 20
        # dashes: gaps along the predicted line
        along = np.sort(np.round((pixels[near] - q0) @ d))
        assert np.diff(along).max() >= 3
        # scrolling the SAX stack updates the lines (observer)
        overlay.observe()
        before = comparisons["2CH"]
        sax.set_slice_index(1)
        after = overlay.comparisons["2CH"]
        moved = next(c for c in after if c.partner == "SAX")
        old = next(c for c in before if c.partner == "SAX")
        assert abs(moved.predicted.d - old.predicted.d) > 1.0
        assert moved.angle_deg < 0.5
        sax.set_slice_index(len(sax.planes) // 2)
    finally:
        overlay.remove()
    assert not any(ctx.scene.GetNodeByID(m.GetID()) for m in overlay.models.values())


def _segment(line, plane):
    from PlaneSSLLib.geometry.lines import clip_line_to_rect

    seg = clip_line_to_rect(line, plane.shape_px)
    return np.array(seg.p0), np.array(seg.p1)


def test_network_line_predictor_random_weights(heart_scene):
    torch = pytest.importorskip("torch")
    from PlaneSSLLib.models.unet import PlaneSSLNet, UNetConfig

    ctx, _, plane_views, _, _ = heart_scene
    torch.manual_seed(0)
    net = PlaneSSLNet(UNetConfig(base_filters=4, levels=3, line_channels=4, location_head=False))
    predictor = lines.NetworkLinePredictor(net, ("2CH", "3CH", "4CH", "SAX"))
    overlay = lines.LineOverlay(ctx, plane_views, predictor)
    try:
        comps = overlay.update("3CH")
        assert all(c.view == "3CH" and c.partner != "3CH" for c in comps)
    finally:
        overlay.remove()


def test_manifest_line_predictor_matches_predict_image_lines(heart_scene, heart_study, tmp_path):
    """Lines of exported weights in a plane view = ``predict_image_lines`` on the DICOM file shown."""
    pytest.importorskip("torch")
    from PlaneSSLLib.geometry.lines import clip_line_to_rect
    from PlaneSSLLib.inference.predict_lines import predict_image_lines
    from PlaneSSLLib.slicer_logic.logic import export_random_weights

    ctx, loaded, _, _, _ = heart_scene
    channels = ("2CH", "3CH", "4CH", "SAX")
    weights = export_random_weights(tmp_path / "lines", "lines", channels=channels, seed=3)
    predictor = lines.ManifestLinePredictor.from_weights(weights.path)
    (series,) = [s for s in heart_study.series if s.view == "4CH"]
    frame = series.frames[0]
    node = loaded.volumes["4CH"]
    image = np.asarray(lines.volume_array(node)[0], dtype=np.float32)
    plane = scene.planes_of_volume(node)[0]
    fitted = predictor.fit_lines(image, plane)
    heat = predictor(image, plane)
    assert heat.shape == (len(channels), *image.shape)
    reference = predict_image_lines(weights.path, frame.path, view="4CH", frame=frame.frame_index)
    compared = 0
    for entry in reference["partners"]:
        got = fitted[channels.index(entry["view"])]
        seg = None if got is None else clip_line_to_rect(got.line, plane.shape_px)
        if entry["in_a"] is None:
            assert seg is None or got.confidence == 0.0
            continue
        assert got.confidence == pytest.approx(entry["confidence"], abs=1e-3)
        ends = sorted([list(seg.p0), list(seg.p1)])
        np.testing.assert_allclose(ends, sorted([entry["in_a"]["p0"], entry["in_a"]["p1"]]), atol=1e-3)
        compared += 1
    assert compared


def test_screenshot_of_plane_views(heart_scene):
    """The README screenshot: 2×2 heart views, Slicer's solid lines and dashed predicted lines."""
    ctx, _, plane_views, renders, _ = heart_scene
    overlay = lines.LineOverlay(ctx, plane_views, ShiftedGaussianPredictor(plane_views, ("2CH", "3CH", "4CH", "SAX"),
                                                                           shift_px=4.0))
    try:
        overlay.update_all()
        tiled = offscreen.tile_images([renders[label].render() for label in plane_views.labels], 2)
    finally:
        overlay.remove()
    path = offscreen.write_png(ARTIFACTS / "plane_views.png", tiled)
    assert path.stat().st_size > 10000
    assert tiled.std() > 10
    if os.environ.get("PLANESSL_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "Resources" / "Screenshots" / "plane_views.png")


# ----------------------------------------------------------------------------- 4. segmentation
def test_segmentation_round_trip_voxel_exact_with_terminology(ukbb_study, cohorts):
    import nibabel as nib

    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, ukbb_study, phase=0, labels=["SAX"])
    sax = loaded.volumes["SAX"]
    nifti = nib.load(cohorts / "ukbb" / "subject_0000" / "labels" / "sax_ed.nii.gz")
    labels_kji = np.transpose(np.asarray(nifti.dataobj), (2, 1, 0)).astype(np.int16)
    assert set(np.unique(labels_kji)) == {0, 1, 2, 3}
    # the NIfTI lies on the DICOM grid: same affine as the volume node (RAS)
    np.testing.assert_allclose(nifti.affine, matrix_to_numpy(_ijk_to_ras(sax)), atol=1e-3)
    before = node_ids(ctx.scene)
    seg = segmentation.add_segmentation(ctx, labels_kji, sax, HEART_SEGMENTS)
    added = node_ids(ctx.scene) - before
    assert added == {seg.GetID(), seg.GetDisplayNode().GetID()}  # no temporary nodes left
    back = segmentation.segmentation_to_labelmap(ctx, seg, sax)
    np.testing.assert_array_equal(back, labels_kji)
    assert node_ids(ctx.scene) - before == added
    by_name = {seg.GetSegmentation().GetSegment(s).GetName(): seg.GetSegmentation().GetSegment(s)
               for s in segmentation.segment_ids(seg)}
    for term in HEART_SEGMENTS:
        segment = by_name[term.name]
        assert f"SCT^{term.type.value}^" in segment.GetTerminology()
        np.testing.assert_allclose(segment.GetColor(), term.color)
    assert "SCT^87878005^Left Ventricle" in by_name["Left ventricle"].GetTerminology()
    sh = ctx.subject_hierarchy
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == loaded.study_item
    ref = seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole())
    assert ref is not None and ref.GetID() == sax.GetID()
    # a structure absent from the label map still gets its (empty) segment; the round trip holds
    no_rv = np.where(labels_kji == 1, 0, labels_kji).astype(np.int16)
    seg2 = segmentation.add_segmentation(ctx, no_rv, sax, HEART_SEGMENTS, name="no RV")
    assert len(segmentation.segment_ids(seg2)) == 3
    np.testing.assert_array_equal(segmentation.segmentation_to_labelmap(ctx, seg2, sax), no_rv)


def test_segmentation_per_phase(ukbb_study):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, ukbb_study, phase="all", labels=["SAX"])
    sax = loaded.volumes["SAX"]
    k, j, i = lines.volume_array(sax).shape
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(3, k, j, i)).astype(np.int16)
    nodes = segmentation.add_phase_segmentations(ctx, labels, sax, HEART_SEGMENTS)
    assert len(nodes) == 3
    for p, node in enumerate(nodes):
        np.testing.assert_array_equal(segmentation.segmentation_to_labelmap(ctx, node, sax), labels[p])
        assert node.GetAttribute(scene.ATTR_PHASE) == str(p)


def test_segmentation_failure_leaves_no_nodes(ukbb_study):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, ukbb_study, phase=0, labels=["SAX"])
    before = node_ids(ctx.scene)
    with pytest.raises(ValueError, match="does not match"):
        segmentation.add_segmentation(ctx, np.zeros((2, 3, 4), np.int16), loaded.volumes["SAX"], HEART_SEGMENTS)
    assert node_ids(ctx.scene) == before


def test_segments_come_from_the_manifest_terminology(ukbb_study, random_weights, tmp_path):
    """Names, codes and colours of the segments are the model manifest's; none means a clear error."""
    import json
    import shutil

    from PlaneSSLLib.slicer_logic.logic import Logic
    from PlaneSSLLib.slicer_logic.models_registry import ModelFolderError, validate_model_folder
    from PlaneSSLLib.slicer_logic.runner import InferenceResult

    folder = tmp_path / "seg"
    shutil.copytree(random_weights["seg"].path, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["terminology"]["labels"]["3"] |= {"name": "LV cavity", "color_rgb": [10, 200, 30]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model = validate_model_folder(folder, "segment_heart")
    ctx = SceneContext.create()
    sax = scene.load_study(ctx, ukbb_study, phase=0, labels=["SAX"]).volumes["SAX"]
    labels = np.zeros(lines.volume_array(sax).shape, dtype=np.uint8)
    labels[:, :4, :4] = 3
    results = Logic(ctx).apply_result("segment_heart", {"SAX": sax}, model, InferenceResult({"labels": labels}, "cpu"))
    node = results.nodes[0]
    by_name = {node.GetSegmentation().GetSegment(s).GetName(): node.GetSegmentation().GetSegment(s)
               for s in segmentation.segment_ids(node)}
    assert set(by_name) == {"Right ventricle", "Myocardium", "LV cavity"}
    np.testing.assert_allclose(by_name["LV cavity"].GetColor(), (10 / 255, 200 / 255, 30 / 255))
    assert "SCT^87878005^Left Ventricle" in by_name["LV cavity"].GetTerminology()
    assert [s.name for s in results.statistics] == ["Right ventricle", "Myocardium", "LV cavity"]
    with pytest.raises(ModelFolderError, match="manifest.json: the segmentation manifest carries no terminology"):
        segment_terms({"task": "seg", "terminology": None}, str(folder / "manifest.json"))


# ----------------------------------------------------------------------------- 5. classification
def test_classification_table(cohorts):
    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, load(cohorts / "knee" / "subject_0000" / "study"))
    table = classification.store_classification(ctx, 0.73, loaded.volumes, model="demo", device="cpu")
    rows = classification.read_classification(table)
    assert rows["ACL tear probability"] == "0.7300" and rows["decision"] == "tear"
    for label, volume in loaded.volumes.items():
        assert volume.GetName() in rows[f"input {label}"]
    assert float(table.GetAttribute(classification.ATTR_PROBABILITY)) == pytest.approx(0.73)
    sh = ctx.subject_hierarchy
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) == loaded.study_item
    with pytest.raises(ValueError):
        classification.store_classification(ctx, 1.5, loaded.volumes)


# ----------------------------------------------------------------------------- 6. running
@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Tiny random weights in the trainers' export format (seg / acl)."""
    pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    from PlaneSSLLib.slicer_logic.logic import export_random_weights

    root = tmp_path_factory.mktemp("weights")
    seg = export_random_weights(root / "seg", "segment_heart", seed=1)
    state = load_file(seg.weights)  # no bias favouring one class: labels then follow the image
    state["decoder.head.bias"].zero_()
    save_file(state, seg.weights)
    manifest_path = seg.path / "manifest.json"  # the changed weights get their checksum (as an export would)
    digest = hashlib.sha256(seg.weights.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "weights_sha256": digest,
                                         "model_id": digest[:16]}))
    return {"seg": seg, "acl": export_random_weights(root / "acl", "classify_knee", seed=2)}


def test_runner_segments_in_background_like_inference_segment(ukbb_study, random_weights):
    """The worker's labels are ``inference.segment.segment_images`` of the volume's slices on its own planes."""
    from PlaneSSLLib.inference.segment import find_study_sax_stack, load_seg_model, segment_images, segment_stack
    from PlaneSSLLib.slicer_logic.logic import Logic

    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, ukbb_study, phase=0, labels=["SAX"])
    sax = loaded.volumes["SAX"]
    request, _ = Logic(ctx).make_request("segment_heart", {"SAX": sax}, random_weights["seg"], device="cpu")
    seen = []
    result = runner.run_blocking(request, on_progress=lambda i, n: seen.append((i, n)), timeout=120)
    image = np.asarray(lines.volume_array(sax), dtype=np.float32)
    k = image.shape[0]
    assert seen == [(k, k)]  # one step per phase, counted in slices
    labels = result.outputs["labels"]
    assert labels.shape == image.shape and labels.max() <= 3
    model = load_seg_model(random_weights["seg"].path)
    expected = segment_images(model, list(image), scene.planes_of_volume(sax))
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(expected)) > 1  # not a trivially empty prediction
    # and the same as segmenting the DICOM SAX stack itself (planes from the files)
    from_dicom = segment_stack(model, find_study_sax_stack(ukbb_study.series[0].frames[0].path.parents[1]), 0)
    np.testing.assert_array_equal(labels, from_dicom.labels)


def test_runner_classifies_knee_like_inference_classify(cohorts, random_weights):
    """The worker's probability is ``exam_probability`` of the exam ``exams_from_dicom`` prepares."""
    from PlaneSSLLib.inference.classify import exam_probability, load_classifier, prepare_config_from_manifest
    from PlaneSSLLib.preprocess.exams import exams_from_dicom
    from PlaneSSLLib.slicer_logic.logic import Logic
    from PlaneSSLLib.slicer_logic.worker import knee_exam

    ctx = SceneContext.create()
    loaded = scene.load_study(ctx, load(cohorts / "knee" / "subject_0000" / "study"))
    request, _ = Logic(ctx).make_request("classify_knee", loaded.volumes, random_weights["acl"], device="cpu")
    result = runner.run_blocking(request, timeout=120)
    probability = float(result.outputs["probability"][0])
    model, manifest = load_classifier(random_weights["acl"].path)
    config = prepare_config_from_manifest(manifest)
    assert float(result.outputs["threshold"][0]) == manifest["decision"]["threshold"]
    assert request.params.get("laterality") in ("L", "R")  # from the DICOM, via the volume node
    exam = knee_exam(request.inputs, model.config.views, config, request.params["laterality"])
    assert probability == pytest.approx(exam_probability(model, exam), abs=1e-6)
    (dicom_exam,) = exams_from_dicom(cohorts / "knee", config)
    for view in model.config.views:
        np.testing.assert_allclose(exam.stacks[view], dicom_exam.stacks[view], atol=1e-5)
    assert probability == pytest.approx(exam_probability(model, dicom_exam), abs=1e-5)


def test_runner_cancel_and_failure_leave_scene_unchanged(ukbb_study):
    ctx = SceneContext.create()
    scene.load_study(ctx, ukbb_study, phase=0, labels=["SAX"])
    before = node_ids(ctx.scene)
    # cancel: kills the worker while it runs
    run = runner.InferenceRunner(runner.InferenceRequest("sleep", params={"steps": 50, "seconds": 0.1}))
    started = threading.Event()
    run.start(on_progress=lambda i, n: started.set())
    assert started.wait(30)
    t0 = time.monotonic()
    run.cancel()
    with pytest.raises(runner.InferenceCancelled):
        run.wait(30)
    assert time.monotonic() - t0 < 5 and run._process.poll() is not None
    # failure: the worker's error is reported
    with pytest.raises(runner.InferenceError, match="failure requested"):
        runner.run_blocking(runner.InferenceRequest("fail"), timeout=60)
    assert node_ids(ctx.scene) == before
    # a failure while results go into the scene rolls every added node and item back
    sh = ctx.subject_hierarchy
    items = sh.GetNumberOfItems()
    with pytest.raises(RuntimeError, match="boom"), runner.scene_transaction(ctx.scene):
        node = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "partial")
        node.CreateDefaultDisplayNodes()
        sh.CreateFolderItem(sh.GetSceneItemID(), "partial folder")
        raise RuntimeError("boom")
    assert node_ids(ctx.scene) == before
    assert sh.GetNumberOfItems() == items


def test_worker_device_fallback():
    from PlaneSSLLib.slicer_logic.worker import resolve_device

    assert resolve_device("cpu") == ("cpu", "")
    device, note = resolve_device("cuda")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert device == "cpu" and "cuda" in note
