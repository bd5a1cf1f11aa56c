"""A beating synthetic heart in a torso, and cardiac MR views planned from its own anatomy.

Frames (all millimetres):

- Patient LPS: +x Left, +y Posterior, +z Superior.
- Heart frame, origin at the mitral valve centre (``base_lps``): ``w`` = LV long axis, base →
  apex; ``u`` = septal direction (LV centre towards the RV), perpendicular to ``w``;
  ``v = u × w`` points to the LV anterior wall (left/anterior/superior). Coordinates in this
  frame are written ``(a, b, c)`` = components along ``(u, v, w)``. Angles around the long axis
  are measured from ``u`` towards ``v``: a long-axis plane at angle θ contains ``w`` and
  ``cos θ·u + sin θ·v``. 4CH θ ≈ 0° (through the RV), 3CH θ ≈ the aortic root's angle
  (35–40°, through the LV outflow tract), 2CH θ ≈ 90° (anterior and inferior walls, clear of the RV).

The heart contracts with a scalar ``contraction`` ∈ [0, 1] (0 = end-diastole, 1 = end-systole);
the cine phase ``k`` of ``n`` has contraction ``HeartAnatomy.contraction(k, n)``; ED is phase 0.
Tissue codes are the ``HeartTissue`` values; ``ACDC_LABELS`` maps them to RV = 1, Myo = 2, LV = 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..geometry.planes import ImagePlane, unit
from .render import ImageLook, finish_image, signal_from_codes, slice_offsets_mm, slice_points_lps
from .shapes import (
    Coords,
    ellipsoid_r2,
    inside_capsule,
    inside_ellipsoid,
    orthonormal_in_plane,
    perturb_direction,
    plane_axes,
    polyline_distance2,
    rotate_in_plane,
    rotation_matrix,
    to_frame,
)

__all__ = [
    "render_heart_cine",
    "HeartTissue",
    "ACDC_LABELS",
    "APEX_PRIOR_LPS",
    "SEPTAL_PRIOR_LPS",
    "HeartAnatomy",
    "HeartViews",
    "sample_heart",
    "plan_heart_views",
    "acdc_labels",
    "series_matrix",
]

#: Prior LV long-axis direction (base → apex) in LPS: left, anterior, inferior.
APEX_PRIOR_LPS = unit([0.55, -0.45, -0.65])
#: Prior septal direction in LPS (right-anterior), projected onto the plane ⟂ w per subject.
SEPTAL_PRIOR_LPS = unit([-0.6, -0.8, 0.0])


class HeartTissue(IntEnum):
    """Tissue codes of the heart phantom (index into the contrast look-up table)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    LUNG = 3
    LIVER = 4
    SOFT = 5
    BONE = 6
    EPICARDIAL_FAT = 7
    LV_MYO = 8
    LV_BLOOD = 9
    RV_BLOOD = 10
    RV_WALL = 11
    LA_BLOOD = 12
    RA_BLOOD = 13
    AORTA = 14
    PAPILLARY = 15
    CSF = 16


#: Tissue code → ACDC label (RV = 1, Myo = 2, LV = 3; papillary muscles count as LV cavity).
ACDC_LABELS = {HeartTissue.RV_BLOOD: 1, HeartTissue.LV_MYO: 2, HeartTissue.LV_BLOOD: 3, HeartTissue.PAPILLARY: 3}

#: bSSFP-like relative signal per tissue (blood = 1): blood bright, myocardium dark, fat bright-ish.
_BSSFP_SIGNAL = {
    HeartTissue.AIR: 0.0,
    HeartTissue.FAT: 0.82,
    HeartTissue.MUSCLE: 0.26,
    HeartTissue.LUNG: 0.05,
    HeartTissue.LIVER: 0.33,
    HeartTissue.SOFT: 0.42,
    HeartTissue.BONE: 0.45,
    HeartTissue.EPICARDIAL_FAT: 0.78,
    HeartTissue.LV_MYO: 0.22,
    HeartTissue.LV_BLOOD: 1.0,
    HeartTissue.RV_BLOOD: 0.96,
    HeartTissue.RV_WALL: 0.24,
    HeartTissue.LA_BLOOD: 0.93,
    HeartTissue.RA_BLOOD: 0.9,
    HeartTissue.AORTA: 0.95,
    HeartTissue.PAPILLARY: 0.25,
    HeartTissue.CSF: 0.9,
}

_N_TISSUES = max(int(t) for t in HeartTissue) + 1


@dataclass
class HeartAnatomy:
    """One subject's heart and torso (all lengths in mm, positions in LPS unless noted).

    Frame quantities (``*_frame``) are ``(a, b, c)`` coordinates along ``(u, v, w)`` from
    ``base_lps``. ED/ES values describe the LV at contraction 0 and 1.
    """

    base_lps: np.ndarray
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    lv_radius_ed_mm: float
    lv_radius_es_mm: float
    lv_length_ed_mm: float
    lv_length_es_mm: float
    wall_ed_mm: float
    apex_wall_ratio: float
    epicardial_fat_mm: float
    rv_centre_ratio: float  # RV centre along u, as a fraction of the LV outer radius
    rv_semi_u_ratio: float
    rv_semi_v_ratio: float
    rv_top_mm: float  # RV extent along w: from -rv_top_mm (above the base) ...
    rv_bottom_ratio: float  # ... to rv_bottom_ratio × LV length (ED)
    rv_wall_mm: float
    la_centre_frame: np.ndarray
    la_semi_mm: np.ndarray
    ra_centre_frame: np.ndarray
    ra_semi_mm: np.ndarray
    aorta_angle_deg: float  # angle of the aortic root around w, from u towards v
    aorta_radius_mm: float
    aorta_path_lps: np.ndarray  # (k, 3) centre line: root → ascending → arch → descending
    desc_aorta_radius_mm: float
    body_centre_lps: np.ndarray  # torso axis passes through it, along z
    torso_semi_mm: np.ndarray  # (x, y) semi-axes of the elliptic torso
    fat_mm: float
    muscle_mm: float
    lungs: list[tuple[np.ndarray, np.ndarray]]  # (centre_lps, semi_mm) per lung
    liver_centre_lps: np.ndarray
    liver_semi_mm: np.ndarray
    spine_centre_lps: np.ndarray  # (x, y) used; vertebral column along z
    spine_radius_mm: float
    es_fraction: float  # time of ES as a fraction of the RR interval
    rr_interval_ms: float
    signal: np.ndarray = field(repr=False)  # relative signal per tissue code

    # ------------------------------------------------------------------ frames and timing
    @property
    def frame_axes_lps(self) -> np.ndarray:
        """(3, 3) rows u, v, w (LPS unit vectors)."""
        return np.stack([self.u, self.v, self.w])

    def frame_to_lps(self, abc: np.ndarray) -> np.ndarray:
        """Heart-frame coordinates ``(..., 3)`` → LPS points (mm)."""
        return self.base_lps + np.asarray(abc, np.float64) @ self.frame_axes_lps

    def direction_at_angle(self, theta_deg: float) -> np.ndarray:
        """Unit LPS direction ``cos θ·u + sin θ·v`` perpendicular to the long axis."""
        t = np.radians(theta_deg)
        return unit(np.cos(t) * self.u + np.sin(t) * self.v)

    @property
    def lv_outer_radius_ed_mm(self) -> float:
        return self.lv_radius_ed_mm + self.wall_ed_mm

    @property
    def lv_outer_length_ed_mm(self) -> float:
        return self.lv_length_ed_mm + self.wall_ed_mm * self.apex_wall_ratio

    def contraction(self, phase: int, n_phases: int) -> float:
        """Contraction ∈ [0, 1] of cine phase ``phase`` (0-based) of ``n_phases`` equally spaced ones."""
        t = (phase % n_phases) / n_phases
        e = self.es_fraction
        if t <= e:
            return float(0.5 * (1 - np.cos(np.pi * t / e)))
        return float(0.5 * (1 + np.cos(np.pi * (t - e) / (1 - e))))

    def es_phase(self, n_phases: int) -> int:
        """Index of the end-systolic phase: the phase of greatest contraction."""
        c = [self.contraction(k, n_phases) for k in range(n_phases)]
        return int(np.argmax(c))

    def trigger_times_ms(self, n_phases: int) -> list[float]:
        """TriggerTime (ms after the R wave) of each phase: equally spaced over the RR interval."""
        return [round(k * self.rr_interval_ms / n_phases, 2) for k in range(n_phases)]

    # ------------------------------------------------------------------ tissue
    def lv_dimensions(self, contraction: float) -> tuple[float, float, float, float]:
        """(cavity radius, cavity length, outer radius, outer length) in mm at ``contraction``."""
        c = float(np.clip(contraction, 0, 1))
        r = self.lv_radius_ed_mm + c * (self.lv_radius_es_mm - self.lv_radius_ed_mm)
        length = self.lv_length_ed_mm + c * (self.lv_length_es_mm - self.lv_length_ed_mm)
        ro_ed = self.lv_outer_radius_ed_mm
        # Myocardial cross-section area is conserved: the wall thickens as the cavity shrinks.
        ro = float(np.sqrt(r * r + ro_ed * ro_ed - self.lv_radius_ed_mm**2))
        lo = length + self.wall_ed_mm * self.apex_wall_ratio * (1 + 0.5 * c)
        return r, length, ro, lo

    def rv_ellipsoid(self, contraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(centre_frame, semi_mm) of the RV cavity ellipsoid before the LV is cut out of it."""
        c = float(np.clip(contraction, 0, 1))
        _, _, ro, _ = self.lv_dimensions(c)
        ro_ed = self.lv_outer_radius_ed_mm
        top = -self.rv_top_mm
        bottom = self.rv_bottom_ratio * self.lv_length_ed_mm * (1 - 0.08 * c)
        centre = np.array([self.rv_centre_ratio * ro, 0.0, (top + bottom) / 2])
        semi = np.array(
            [
                self.rv_semi_u_ratio * ro_ed * (1 - 0.3 * c),
                self.rv_semi_v_ratio * ro_ed * (1 - 0.1 * c),
                (bottom - top) / 2,
            ]
        )
        return centre, semi

    def heart_bounds_frame(self) -> tuple[float, float, float]:
        """(c_min, c_max, radial max) in the heart frame outside of which no ventricle tissue lies (mm)."""
        centre, semi = self.rv_ellipsoid(0.0)
        radial = max(float(centre[0] + semi[0]), float(semi[1])) + self.rv_wall_mm + self.epicardial_fat_mm + 4
        radial = max(radial, self.lv_outer_radius_ed_mm + self.epicardial_fat_mm + 4)
        return -self.rv_top_mm - self.rv_wall_mm - 6, self.lv_outer_length_ed_mm * 1.15 + 6, radial

    def ventricle_codes(self, q: Coords, contraction: float) -> np.ndarray:
        """Tissue codes of the ventricles (and epicardial fat) at heart-frame points; 0 = none."""
        a, b, c = q
        r, length, ro, lo = self.lv_dimensions(contraction)
        rad2 = a * a + b * b
        codes = np.zeros(a.shape, dtype=np.uint8)
        upper = c >= 0
        outer = upper & (rad2 * np.float32(1 / ro**2) + (c * np.float32(1 / lo)) ** 2 <= 1)
        f = self.epicardial_fat_mm
        fat = (c >= -2) & (rad2 * np.float32(1 / (ro + f) ** 2) + (c * np.float32(1 / (lo + 0.6 * f))) ** 2 <= 1)
        lv_column = outer | ((c < 0) & (rad2 <= ro * ro))
        rv_c, rv_s = self.rv_ellipsoid(contraction)
        rv_r2 = ellipsoid_r2(q, rv_c, rv_s)
        rv_in = (rv_r2 <= 1) & ~lv_column
        t = self.rv_wall_mm
        rv_wall = inside_ellipsoid(q, rv_c, rv_s + t) & ~lv_column & ~rv_in
        rv_fat = inside_ellipsoid(q, rv_c, rv_s + t + f) & ~lv_column
        codes[(fat | rv_fat) & (c >= -self.rv_top_mm)] = HeartTissue.EPICARDIAL_FAT
        codes[rv_wall] = HeartTissue.RV_WALL
        codes[rv_in] = HeartTissue.RV_BLOOD
        codes[outer] = HeartTissue.LV_MYO
        cavity = upper & (rad2 * np.float32(1 / r**2) + (c * np.float32(1 / length)) ** 2 <= 1)
        codes[cavity] = HeartTissue.LV_BLOOD
        # Papillary muscles: two columns inside the cavity (anterolateral and posteromedial).
        k = float(np.clip(contraction, 0, 1))
        for theta in (140.0, 235.0):
            d = np.array([np.cos(np.radians(theta)), np.sin(np.radians(theta)), 0.0]) * 0.55 * r
            p0 = d + np.array([0, 0, 0.35 * length])
            p1 = 0.6 * d + np.array([0, 0, 0.72 * length])
            codes[cavity & inside_capsule(q, p0, p1, 3.0 + 1.5 * k)] = HeartTissue.PAPILLARY
        return codes

    def static_codes(self, p: Coords, q: Coords) -> np.ndarray:
        """Tissue codes of everything that does not beat: torso, lungs, liver, spine, atria, aorta.

        ``p`` are the points in LPS, ``q`` the same points in the heart frame.
        """
        x, y, z = p
        cx, cy = float(self.body_centre_lps[0]), float(self.body_centre_lps[1])
        sx, sy = (float(s) for s in self.torso_semi_mm)
        dx, dy = x - np.float32(cx), y - np.float32(cy)
        codes = np.zeros(x.shape, dtype=np.uint8)

        def in_ellipse(ex: float, ey: float) -> np.ndarray:
            return (dx * np.float32(1 / ex)) ** 2 + (dy * np.float32(1 / ey)) ** 2 <= 1

        codes[in_ellipse(sx, sy)] = HeartTissue.FAT
        codes[in_ellipse(sx - self.fat_mm, sy - self.fat_mm)] = HeartTissue.MUSCLE
        inner = self.fat_mm + self.muscle_mm
        cavity = in_ellipse(sx - inner, sy - inner)
        codes[cavity] = HeartTissue.SOFT
        for centre, semi in self.lungs:
            codes[cavity & inside_ellipsoid(p, centre, semi)] = HeartTissue.LUNG
        codes[cavity & inside_ellipsoid(p, self.liver_centre_lps, self.liver_semi_mm)] = HeartTissue.LIVER
        scx, scy = float(self.spine_centre_lps[0]), float(self.spine_centre_lps[1])
        sr = self.spine_radius_mm
        spine_d2 = (x - np.float32(scx)) ** 2 + (y - np.float32(scy)) ** 2
        codes[spine_d2 <= sr * sr] = HeartTissue.BONE
        canal_d2 = (x - np.float32(scx)) ** 2 + (y - np.float32(scy + sr + 6)) ** 2
        codes[canal_d2 <= 36] = HeartTissue.CSF
        codes[inside_ellipsoid(q, self.la_centre_frame, self.la_semi_mm)] = HeartTissue.LA_BLOOD
        codes[inside_ellipsoid(q, self.ra_centre_frame, self.ra_semi_mm)] = HeartTissue.RA_BLOOD
        path = self.aorta_path_lps
        # Ascending aorta and arch: full radius; descending: smaller radius.
        d2_asc = polyline_distance2(p, path[:4])
        codes[d2_asc <= self.aorta_radius_mm**2] = HeartTissue.AORTA
        d2_desc = polyline_distance2(p, path[3:])
        codes[d2_desc <= self.desc_aorta_radius_mm**2] = HeartTissue.AORTA
        return codes

    def codes_at(self, points_lps: np.ndarray, contraction: float) -> np.ndarray:
        """Tissue codes (uint8) at LPS points ``(..., 3)`` at ``contraction`` (0 = ED, 1 = ES)."""
        pts = np.asarray(points_lps, np.float64)
        flat = pts.reshape(-1, 3)
        p = to_frame(flat, np.zeros(3), np.eye(3))
        q = to_frame(flat, self.base_lps, self.frame_axes_lps)
        codes = self.static_codes(p, q)
        self._paint_ventricles(codes, q, contraction)
        return codes.reshape(pts.shape[:-1])

    def ventricle_region(self, q: Coords) -> np.ndarray:
        """Indices of the points (flat) near enough to the ventricles to need evaluating."""
        c_lo, c_hi, radial = self.heart_bounds_frame()
        a, b, c = q
        m = (c >= c_lo) & (c <= c_hi) & (a * a + b * b <= radial * radial)
        return np.flatnonzero(m)

    def _paint_ventricles(
        self, codes: np.ndarray, q: Coords, contraction: float, idx: np.ndarray | None = None
    ) -> None:
        if idx is None:
            idx = self.ventricle_region(q)
        if idx.size == 0:
            return
        sub = (q[0][idx], q[1][idx], q[2][idx])
        v = self.ventricle_codes(sub, contraction)
        keep = v > 0
        codes[idx[keep]] = v[keep]


def acdc_labels(codes: np.ndarray) -> np.ndarray:
    """ACDC label map (uint8: 0 background, RV = 1, Myo = 2, LV = 3) from heart tissue codes."""
    lut = np.zeros(_N_TISSUES, dtype=np.uint8)
    for tissue, label in ACDC_LABELS.items():
        lut[int(tissue)] = label
    return lut[codes]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_heart(rng: np.random.Generator) -> HeartAnatomy:
    """One random subject: pose, size, wall thickness, torso, timing and contrast all vary."""
    w = perturb_direction(rng, APEX_PRIOR_LPS, 15.0)
    u0 = orthonormal_in_plane(SEPTAL_PRIOR_LPS, w)
    u = unit(rotation_matrix(w, np.radians(_u(rng, -15, 15))) @ u0)
    v = unit(np.cross(u, w))

    r_ed = _u(rng, 22.0, 28.0)
    l_ed = _u(rng, 72.0, 86.0)
    wall = _u(rng, 7.0, 11.5)
    r_es = r_ed * _u(rng, 0.6, 0.72)
    l_es = l_ed * _u(rng, 0.86, 0.92)
    ro = r_ed + wall

    body_centre = np.array([_u(rng, -5, 5), _u(rng, -5, 5), 0.0])
    torso = np.array([_u(rng, 150, 180), _u(rng, 100, 122)])
    base = body_centre + np.array([_u(rng, 2, 16), _u(rng, -10, 2), _u(rng, -10, 10)])

    aorta_angle = _u(rng, 35.0, 40.0)
    aorta_r = _u(rng, 12.0, 15.0)
    d_ao = unit(np.cos(np.radians(aorta_angle)) * u + np.sin(np.radians(aorta_angle)) * v)
    root = base + 0.8 * ro * d_ao + 3.0 * w
    asc = root - 32.0 * w
    top_asc = asc + np.array([0.0, -5.0, 35.0])
    spine_y = body_centre[1] + torso[1] - _u(rng, 45, 55)
    spine = np.array([body_centre[0], spine_y, 0.0])
    desc_xy = np.array([body_centre[0] + _u(rng, 18, 28), spine_y - _u(rng, 24, 30)])
    arch_top = np.array([(top_asc[0] + desc_xy[0]) / 2, (top_asc[1] + desc_xy[1]) / 2, top_asc[2] + 22])
    desc_top = np.array([desc_xy[0], desc_xy[1], top_asc[2] + 5])
    desc_bottom = np.array([desc_xy[0], desc_xy[1], base[2] - 400.0])
    path = np.stack([root, asc, top_asc, arch_top, desc_top, desc_bottom])

    cx, cy = body_centre[0], body_centre[1]
    sx, sy = torso
    lungs = [
        (np.array([cx - 0.45 * sx, cy + 0.05 * sy, base[2] + 30]), np.array([0.42 * sx, 0.88 * sy, 140.0])),
        (np.array([cx + 0.5 * sx, cy + 0.08 * sy, base[2] + 30]), np.array([0.42 * sx, 0.85 * sy, 130.0])),
    ]
    liver_centre = np.array([cx - 0.3 * sx, cy + 0.05 * sy, base[2] - _u(rng, 150, 170)])
    liver_semi = np.array([0.62 * sx, 0.8 * sy, 110.0])

    gains = rng.uniform(0.92, 1.08, size=_N_TISSUES)
    signal = np.array([_BSSFP_SIGNAL[HeartTissue(k)] for k in range(_N_TISSUES)]) * gains
    signal[HeartTissue.AIR] = 0.0

    return HeartAnatomy(
        base_lps=base,
        u=u,
        v=v,
        w=w,
        lv_radius_ed_mm=r_ed,
        lv_radius_es_mm=r_es,
        lv_length_ed_mm=l_ed,
        lv_length_es_mm=l_es,
        wall_ed_mm=wall,
        apex_wall_ratio=_u(rng, 0.6, 0.8),
        epicardial_fat_mm=_u(rng, 2.0, 4.5),
        rv_centre_ratio=_u(rng, 0.85, 0.95),
        rv_semi_u_ratio=_u(rng, 0.72, 0.85),
        rv_semi_v_ratio=_u(rng, 1.3, 1.42),
        rv_top_mm=_u(rng, 6, 12),
        rv_bottom_ratio=_u(rng, 0.88, 0.96),
        rv_wall_mm=_u(rng, 2.5, 4.0),
        la_centre_frame=np.array([-0.15 * ro, -0.25 * ro, -_u(rng, 24, 30)]),
        la_semi_mm=np.array([_u(rng, 22, 27), _u(rng, 18, 22), _u(rng, 22, 27)]),
        ra_centre_frame=np.array([1.15 * ro, -0.2 * ro, -_u(rng, 22, 28)]),
        ra_semi_mm=np.array([_u(rng, 22, 27), _u(rng, 20, 25), _u(rng, 22, 27)]),
        aorta_angle_deg=aorta_angle,
        aorta_radius_mm=aorta_r,
        aorta_path_lps=path,
        desc_aorta_radius_mm=aorta_r * 0.8,
        body_centre_lps=body_centre,
        torso_semi_mm=torso,
        fat_mm=_u(rng, 8, 22),
        muscle_mm=_u(rng, 9, 15),
        lungs=lungs,
        liver_centre_lps=liver_centre,
        liver_semi_mm=liver_semi,
        spine_centre_lps=spine,
        spine_radius_mm=_u(rng, 16, 20),
        es_fraction=_u(rng, 0.3, 0.4),
        rr_interval_ms=_u(rng, 800, 1050),
        signal=signal,
    )


# ---------------------------------------------------------------------- planning
@dataclass
class HeartViews:
    """The planned cardiac views of one subject.

    ``sax`` lists the short-axis planes from base to apex; ``lax`` maps "2CH", "3CH", "4CH" to
    their planes; ``lax_theta_deg`` the angle (from u towards v) at which each cuts the SAX.
    """

    sax: list[ImagePlane]
    sax_thickness_mm: float
    sax_gap_mm: float
    sax_levels_mm: list[float]  # c (along w from the mitral valve centre) of each SAX slice
    lax: dict[str, ImagePlane]
    lax_thickness_mm: dict[str, float]
    lax_theta_deg: dict[str, float]


def series_matrix(
    rng: np.random.Generator, fov_mm: tuple[float, float], matrix: int | None,
    sizes: tuple[int, ...] = (192, 208, 224, 240, 256), non_square_probability: float = 0.3,
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Random image size and pixel spacing of a series: ((rows, cols), (row spacing, column spacing)) mm.

    ``matrix`` overrides the size (square matrix, same field of view). Some series get
    non-square pixels (column spacing differs from the row spacing by up to ±15 %).
    """
    fov = _u(rng, *fov_mm)
    if matrix is not None:
        rows = cols = int(matrix)
    else:
        rows = int(rng.choice(sizes))
        cols = rows if rng.uniform() < 0.6 else max(int(sizes[0]), rows - 32)
    dr = fov / rows
    factor = 1.0 if rng.uniform() >= non_square_probability else _u(rng, 0.87, 1.15)
    dc = dr * factor
    return (rows, cols), (round(dr, 4), round(dc, 4))


def plan_heart_views(
    anatomy: HeartAnatomy, rng: np.random.Generator, matrix: int | None = None,
    fov_mm: tuple[float, float] = (300.0, 360.0),
) -> HeartViews:
    """Plan the SAX stack and the 2CH/3CH/4CH planes from the phantom's anatomy (as radiographers do).

    SAX: perpendicular to the LV long axis, first slice at the mitral valve level, then towards
    the apex, 8–14 slices 8–10 mm apart. Long-axis planes contain the long axis; the 4CH at
    θ ≈ 0° through the RV, the 3CH through the aortic root, the 2CH at θ ≈ 90°; each jittered
    by up to ±6°. Every series gets its own in-plane rotation (±20°), matrix and pixel spacing.
    """
    a = anatomy
    w = a.w
    # --- SAX stack
    gap = round(_u(rng, 8.0, 10.0), 2)
    thickness = round(min(_u(rng, 6.0, 8.0), gap), 2)
    n = int(np.clip(round(a.lv_outer_length_ed_mm / gap) + 1, 8, 14))
    first = _u(rng, 1.5, 4.0)
    levels = [round(first + k * gap, 4) for k in range(n)]
    # "Patient left to the right of the screen, posterior/inferior down", viewed from the apex.
    x0, y0 = plane_axes(w, [1.0, 0.0, 0.0], np.cross([1.0, 0.0, 0.0], w))
    xs, ys = rotate_in_plane(x0, y0, _u(rng, -20, 20))
    shape, spacing = series_matrix(rng, fov_mm, matrix)
    offset = _u(rng, -15, 15) * xs + _u(rng, -15, 15) * ys
    sax = [ImagePlane.centred(a.base_lps + lev * w + offset, xs, ys, spacing, shape) for lev in levels]

    # --- long-axis views: each contains the LV long axis
    thetas = {
        "4CH": _u(rng, -6, 6),
        "3CH": a.aorta_angle_deg + _u(rng, -6, 6),
        "2CH": 90.0 + _u(rng, -6, 6),
    }
    lax: dict[str, ImagePlane] = {}
    lax_thickness: dict[str, float] = {}
    for view in ("2CH", "3CH", "4CH"):
        d = a.direction_at_angle(thetas[view])
        normal = unit(np.cross(d, w))
        # Apex up (rows run from apex towards the base), the view's θ side on the left.
        x0, y0 = plane_axes(normal, -d, -w)
        xl, yl = rotate_in_plane(x0, y0, _u(rng, -20, 20))
        shape, spacing = series_matrix(rng, fov_mm, matrix)
        centre = a.base_lps + _u(rng, 0.15, 0.35) * a.lv_length_ed_mm * w + _u(rng, -10, 10) * d
        lax[view] = ImagePlane.centred(centre, xl, yl, spacing, shape)
        lax_thickness[view] = round(_u(rng, 6.0, 8.0), 2)
    return HeartViews(sax, thickness, gap, levels, lax, lax_thickness, {k: float(t) for k, t in thetas.items()})


# ---------------------------------------------------------------------- rendering
def render_heart_cine(
    anatomy: HeartAnatomy,
    plane: ImagePlane,
    thickness_mm: float,
    n_phases: int,
    rng: np.random.Generator,
    look: ImageLook,
    label_phases: tuple[int, ...] = (),
) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Cine frames (uint16, rows × cols) of one slice, and ACDC labels at the slice centre.

    The torso is sampled once per slice; only the ventricles are re-evaluated per phase, and
    only near the heart. Partial volume: ``look.n_sub`` sub-samples across ``thickness_mm``.
    Returns (frames in phase order, {phase: label map (rows × cols, uint8)} for ``label_phases``).
    """
    offsets = slice_offsets_mm(thickness_mm, look.n_sub)
    pts = slice_points_lps(plane, offsets).reshape(-1, 3)
    p = to_frame(pts, np.zeros(3), np.eye(3))
    q = to_frame(pts, anatomy.base_lps, anatomy.frame_axes_lps)
    static = anatomy.static_codes(p, q)
    idx = anatomy.ventricle_region(q)
    sub = (q[0][idx], q[1][idx], q[2][idx])
    shape = (look.n_sub, *plane.shape_px)
    centre = look.n_sub // 2
    frames: list[np.ndarray] = []
    labels: dict[int, np.ndarray] = {}
    for k in range(n_phases):
        codes = static.copy()
        if idx.size:
            v = anatomy.ventricle_codes(sub, anatomy.contraction(k, n_phases))
            keep = v > 0
            codes[idx[keep]] = v[keep]
        codes = codes.reshape(shape)
        signal = signal_from_codes(codes, anatomy.signal)
        frames.append(finish_image(signal, plane, rng, look.bias, look.noise_sigma, look.scale, look.psf_mm))
        if k in label_phases:
            labels[k] = acdc_labels(codes[centre])
    return frames, labels
