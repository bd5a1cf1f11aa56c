"""Plane geometry against an independent computation (docs/conventions.md, 'Image planes and pixels')."""

from __future__ import annotations

import json

import numpy as np
import pytest

from PlaneSSLLib.geometry import (
    ImageLine,
    ImagePlane,
    affine_lps_to_ras,
    angle_between_normals_deg,
    clip_line_to_rect,
    distance_to_line_px,
    image_line,
    intersect_images,
    intersection_line_lps,
    lps_to_ras,
    ras_to_lps,
    relative_locations,
    slice_locations_mm,
    slice_spacing_mm,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 2] *= -1
    return q


def random_plane(rng: np.random.Generator, centre=None) -> ImagePlane:
    rot = random_rotation(rng)
    rows, cols = (int(v) for v in rng.integers(96, 320, size=2))
    spacing = (float(rng.uniform(0.6, 2.2)), float(rng.uniform(0.6, 2.2)))  # non-square
    centre = rng.normal(0, 30, 3) if centre is None else centre
    return ImagePlane.centred(centre, rot[:, 0], rot[:, 1], spacing, (rows, cols))


# ---------------------------------------------------------------- independent reference
def reference_segment(a: ImagePlane, b: ImagePlane):
    """Independent: 3D line by least squares, projected by solving in A's pixel basis, clipped
    by intersecting the four rectangle edges."""
    n_a = np.cross(a.x_dir_lps, a.y_dir_lps)
    n_b = np.cross(b.x_dir_lps, b.y_dir_lps)
    direction = np.cross(n_a, n_b)
    direction /= np.linalg.norm(direction)
    m = np.vstack([n_a, n_b])
    h = np.array([n_a @ a.origin_lps, n_b @ b.origin_lps])
    point = np.linalg.lstsq(m, h, rcond=None)[0]  # minimum-norm point on both planes
    basis = np.column_stack([a.x_dir_lps * a.spacing_mm[1], a.y_dir_lps * a.spacing_mm[0]])

    def to_px(p):
        return np.linalg.lstsq(basis, p - a.origin_lps, rcond=None)[0]

    q0, q1 = to_px(point), to_px(point + 1000 * direction)
    rows, cols = a.shape_px
    x0, x1, y0, y1 = -0.5, cols - 0.5, -0.5, rows - 0.5
    hits = []
    d = q1 - q0
    for axis, value in ((0, x0), (0, x1), (1, y0), (1, y1)):
        if abs(d[axis]) < 1e-12:
            continue
        t = (value - q0[axis]) / d[axis]
        p = q0 + t * d
        if x0 - 1e-9 <= p[0] <= x1 + 1e-9 and y0 - 1e-9 <= p[1] <= y1 + 1e-9:
            hits.append(p)
    if len(hits) < 2:
        return None
    hits = np.array(hits)
    # the two extreme hits (corner hits appear twice)
    i, j = np.unravel_index(np.argmax(np.linalg.norm(hits[:, None] - hits[None], axis=-1)), (len(hits),) * 2)
    if np.linalg.norm(hits[i] - hits[j]) < 1e-9:
        return None
    return hits[i], hits[j]


def same_segment(seg, ref, tol):
    got = np.array([seg.p0, seg.p1])
    ref = np.array(ref)
    return min(np.abs(got - ref).max(), np.abs(got - ref[::-1]).max()) <= tol


def test_pixel_to_lps_uses_row_and_column_spacing_correctly():
    # PixelSpacing = [Δr, Δc]: column steps use Δc along x, row steps Δr along y.
    p = ImagePlane.from_dicom([10, 20, 30], [1, 0, 0, 0, 1, 0], [2.0, 0.5], rows=4, columns=8)
    np.testing.assert_allclose(p.pixel_to_lps([1, 0]), [10.5, 20, 30])
    np.testing.assert_allclose(p.pixel_to_lps([0, 1]), [10, 22, 30])
    xy, off = p.lps_to_pixel(np.array([13.0, 26.0, 35.0]))
    np.testing.assert_allclose(xy, [6, 3])
    assert off == pytest.approx(5.0)


def test_round_trip_pixel_lps_random():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = random_plane(rng)
        xy = rng.uniform(-5, 300, size=(50, 2))
        back, off = p.lps_to_pixel(p.pixel_to_lps(xy))
        np.testing.assert_allclose(back, xy, atol=1e-9)
        np.testing.assert_allclose(off, 0, atol=1e-9)


def test_lines_agree_with_independent_computation_random_oblique():
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(400):
        centre = rng.normal(0, 20, 3)
        a = random_plane(rng, centre)
        b = random_plane(rng, centre + rng.normal(0, 40, 3))
        result = intersect_images(a, b)
        assert not result.parallel
        for img, other, seg in ((a, b, result.in_a), (b, a, result.in_b)):
            ref = reference_segment(img, other)
            if ref is None:
                assert seg is None
                continue
            assert seg is not None
            assert same_segment(seg, ref, 0.01), (seg, ref)
            checked += 1
    assert checked > 300  # most random pairs intersect inside the images


def test_line_points_lie_on_both_planes():
    rng = np.random.default_rng(7)
    for _ in range(50):
        a, b = random_plane(rng, np.zeros(3)), random_plane(rng, np.zeros(3))
        seg = intersect_images(a, b).in_a
        assert seg is not None  # both pass through the origin region
        pts = a.pixel_to_lps(np.array([seg.p0, seg.p1]))
        np.testing.assert_allclose(b.signed_distance_mm(pts), 0, atol=1e-6)
        point, direction = intersection_line_lps(a, b)
        np.testing.assert_allclose(a.signed_distance_mm(point), 0, atol=1e-8)
        np.testing.assert_allclose(b.signed_distance_mm(point), 0, atol=1e-8)
        assert abs(direction @ a.normal_lps) < 1e-9 and abs(direction @ b.normal_lps) < 1e-9


def test_parallel_and_nearly_parallel_planes():
    a = ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1], 100, 100)
    b = ImagePlane.from_dicom([0, 0, 10], [1, 0, 0, 0, 1, 0], [1, 1], 100, 100)
    r = intersect_images(a, b)
    assert r.parallel and r.in_a is None and r.in_b is None and r.angle_deg == pytest.approx(0)
    # 0.05 deg: still parallel by the contract's 0.1 deg tolerance
    t = np.radians(0.05)
    c = ImagePlane.from_dicom([0, 0, 10], [1, 0, 0, 0, np.cos(t), np.sin(t)], [1, 1], 100, 100)
    assert intersect_images(a, c).parallel
    # 0.5 deg, 10 mm apart: the line exists but lies ~1146 mm away, outside both images
    t = np.radians(0.5)
    d = ImagePlane.from_dicom([0, 0, 10], [1, 0, 0, 0, np.cos(t), np.sin(t)], [1, 1], 100, 100)
    r = intersect_images(a, d)
    assert not r.parallel and r.angle_deg == pytest.approx(0.5, abs=1e-9)
    assert r.in_a is None and r.in_b is None
    # anti-parallel normals are parallel planes too
    e = ImagePlane.from_dicom([0, 0, 10], [0, 1, 0, 1, 0, 0], [1, 1], 100, 100)
    assert intersect_images(a, e).parallel


def test_perpendicular_planes_known_answer_non_square():
    # A: axial 200 rows x 100 cols, Δr = 2, Δc = 1; B: sagittal plane x = 30 mm.
    a = ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [2.0, 1.0], 200, 100)
    b = ImagePlane.from_dicom([30, 0, 0], [0, 1, 0, 0, 0, 1], [1.0, 1.0], 50, 50)
    r = intersect_images(a, b)
    assert r.angle_deg == pytest.approx(90)
    assert r.in_a.p0 == pytest.approx((30, -0.5)) and r.in_a.p1 == pytest.approx((30, 199.5))
    # In B the line is z = 0, i.e. row 0, spanning every column.
    assert r.in_b.p0 == pytest.approx((-0.5, 0)) and r.in_b.p1 == pytest.approx((49.5, 0))


def test_distance_to_line_and_clip():
    line = ImageLine.through_points(np.array([0.0, 0.0]), np.array([10.0, 10.0]))
    dist = distance_to_line_px(line, (5, 5))
    assert dist[0, 0] == pytest.approx(0) and dist[0, 2] == pytest.approx(np.sqrt(2))
    assert clip_line_to_rect(ImageLine(1.0, 0.0, -500.0), (10, 10)) is None  # x = 500
    seg = clip_line_to_rect(ImageLine(0.0, 1.0, -3.0), (10, 20))  # y = 3
    assert seg.p0 == pytest.approx((-0.5, 3)) and seg.p1 == pytest.approx((19.5, 3))


def test_image_line_distance_matches_3d_distance():
    """|a x + b y + d| in pixels equals the in-plane distance to the 3D line / pixel size."""
    rng = np.random.default_rng(3)
    a = ImagePlane.centred([0, 0, 0], [1, 0, 0], [0, 1, 0], (1.0, 1.0), (64, 64))
    for _ in range(20):
        b = random_plane(rng, np.zeros(3))
        line = image_line(a, b)
        point, direction = intersection_line_lps(a, b)
        xy = rng.uniform(0, 63, size=2)
        p = a.pixel_to_lps(xy)
        v = p - point
        d3 = np.linalg.norm(v - (v @ direction) * direction)
        assert abs(line.signed_distance_px(xy)) == pytest.approx(d3, rel=1e-9, abs=1e-9)


def test_lps_ras_and_affines():
    p = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(lps_to_ras(p), [[-1, -2, 3]])
    np.testing.assert_allclose(ras_to_lps(lps_to_ras(p)), p)
    plane = ImagePlane.from_dicom([5, 6, 7], [0, 1, 0, 0, 0, -1], [0.8, 0.5], 10, 20)
    m = plane.affine_pixel_to_lps(4.0)
    np.testing.assert_allclose((m @ [3, 2, 0, 1])[:3], plane.pixel_to_lps([3, 2]))
    np.testing.assert_allclose((m @ [0, 0, 1, 1])[:3], plane.origin_lps + 4 * plane.normal_lps)
    np.testing.assert_allclose((affine_lps_to_ras(m) @ [3, 2, 0, 1])[:3], lps_to_ras(plane.pixel_to_lps([3, 2])))


def test_stack_locations_relative_and_spacing():
    n = np.array([0.0, 0.6, 0.8])
    planes = [
        ImagePlane.centred(n * s + [3, 0, 0], [1, 0, 0], [0, 0.8, -0.6], (1, 1), (8, 8)) for s in (20, 0, 10, 30)
    ]
    s = slice_locations_mm(planes)
    sign = np.sign(planes[0].normal_lps @ n)
    np.testing.assert_allclose(s * sign, [20, 0, 10, 30], atol=1e-9)
    assert slice_spacing_mm(planes) == pytest.approx(10)
    rel = relative_locations(np.array([20, 0, 10, 30.0]))
    np.testing.assert_allclose(rel, [2 / 3, 0, 1 / 3, 1])
    with pytest.raises(ValueError):
        relative_locations(np.array([5.0]))


def test_invalid_geometry_refused():
    with pytest.raises(ValueError):
        ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 1, 0, 0], [1, 1], 10, 10)  # x == y
    with pytest.raises(ValueError):
        ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [0, 1], 10, 10)
    with pytest.raises(ValueError):
        ImagePlane.from_dicom([0, 0], [1, 0, 0, 0, 1, 0], [1, 1], 10, 10)


def test_angle_between_normals_small_angles_accurate():
    t = np.radians(1e-4)
    assert angle_between_normals_deg(np.array([0, 0, 1.0]), np.array([0, np.sin(t), np.cos(t)])) == pytest.approx(
        1e-4, rel=1e-6
    )


# ---------------------------------------------------------------- the command itself
def _write(path, plane, rng):
    from PlaneSSLLib.dicom.write import SeriesInfo, StudyInfo, uid_from, write_mr_image

    study = StudyInfo("P", "P^P", uid_from("st"), uid_from("for"), body_part="HEART")
    series = SeriesInfo(uid_from("se", path), 1, "test")
    px = rng.integers(0, 1000, size=plane.shape_px).astype(np.uint16)
    write_mr_image(
        path, pixels=px, plane=plane, study=study, series=series, instance_number=1,
        sop_instance_uid=uid_from("i", path), slice_thickness_mm=6.0,
    )


def test_cli_lines_json_matches_independent_on_dicom_files(tmp_path, capsys):
    import pydicom

    from training_cli.main import main

    rng = np.random.default_rng(99)
    for k in range(25):
        centre = rng.normal(0, 10, 3)
        a, b = random_plane(rng, centre), random_plane(rng, centre + rng.normal(0, 20, 3))
        pa, pb = tmp_path / f"a{k}.dcm", tmp_path / f"b{k}.dcm"
        _write(pa, a, rng)
        _write(pb, b, rng)
        assert main(["lines", str(pa), str(pb), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert set(out) == {"parallel", "angle_deg", "in_a", "in_b"}
        # reference from the headers as written (DS strings), read by pydicom directly
        da, db = pydicom.dcmread(pa), pydicom.dcmread(pb)
        ra = ImagePlane.from_dicom(da.ImagePositionPatient, da.ImageOrientationPatient, da.PixelSpacing,
                                   da.Rows, da.Columns)
        rb = ImagePlane.from_dicom(db.ImagePositionPatient, db.ImageOrientationPatient, db.PixelSpacing,
                                   db.Rows, db.Columns)
        for key, img, other in (("in_a", ra, rb), ("in_b", rb, ra)):
            ref = reference_segment(img, other)
            if ref is None:
                assert out[key] is None
            else:
                seg = out[key]
                got = np.array([seg["p0"], seg["p1"]])
                assert min(np.abs(got - ref).max(), np.abs(got - np.array(ref)[::-1]).max()) <= 0.01


def test_cli_lines_parallel_readable_and_errors(tmp_path, capsys):
    from training_cli.main import main

    rng = np.random.default_rng(5)
    a = ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [1.2, 0.9], 120, 90)
    b = ImagePlane.from_dicom([0, 0, 8], [1, 0, 0, 0, 1, 0], [1.2, 0.9], 120, 90)
    _write(tmp_path / "a.dcm", a, rng)
    _write(tmp_path / "b.dcm", b, rng)
    assert main(["lines", str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"parallel": True, "angle_deg": 0.0, "in_a": None, "in_b": None}
    assert main(["lines", str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")]) == 0
    assert "parallel" in capsys.readouterr().out
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    assert main(["lines", str(tmp_path / "a.dcm"), str(tmp_path / "junk.dcm")]) != 0
    err = capsys.readouterr().err
    assert "junk.dcm" in err and "Traceback" not in err
