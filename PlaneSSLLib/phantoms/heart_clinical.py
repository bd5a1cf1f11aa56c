"""The clinically realistic synthetic heart (``planessl phantom heart --realism clinical``).

Built on the simple heart's frame and torso (``heart.py``: frames, timing, views), it adds what
makes real cine MR hard to segment:

- anatomy around the ventricles: atria that move with the base, the right-ventricular outflow
  tract and pulmonary trunk, superior and inferior venae cavae, patchy epicardial fat
  (thickest in the atrioventricular and interventricular grooves, absent elsewhere), a liver
  dome against the inferior wall, stomach fluid and pericardial effusion in some subjects;
- motion: the base descends 10–15 mm towards the (nearly fixed) apex at end-systole (less in
  dilated and infarcted hearts), so basal slices show atrium at ES;
- ventricles with non-circular sections, a wall thickness that varies around the ring,
  trabeculations and papillary muscles (labelled LV cavity, as ACDC labels them);
- pathology like ACDC's five groups (``PATHOLOGIES``): NOR, DCM (dilated, thin, poorly
  contracting), HCM (thick, asymmetric septum, small cavity), MINF (a thinned akinetic sector),
  ARV (a large, poorly contracting RV that flattens the septum).

Heart frame ``(a, b, c)`` along ``(u, v, w)`` from the mitral valve centre at end-diastole (see
``heart.py``); ``cc = c − descent·contraction`` is the level below the moving base. Angles around
the long axis ``φ`` run from ``u`` (septum) towards ``v`` (anterior). Tissue codes are the
``ClinicalTissue`` values; ``clinical_labels`` maps them to ACDC labels (RV = 1, Myo = 2, LV = 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from ..geometry.planes import ImagePlane, unit
from .heart import HeartAnatomy, HeartTissue, HeartViews, sample_heart, series_matrix
from .render import slice_offsets_mm, slice_points_lps
from .shapes import (
    Coords,
    extended_tissues,
    inside_capsule,
    inside_ellipsoid,
    plane_axes,
    polyline_distance2,
    rotate_in_plane,
    to_frame,
)
from .sites import SEQUENCES, Site, SiteLook, finish_clinical_image

__all__ = [
    "PATHOLOGIES",
    "ClinicalTissue",
    "CLINICAL_ACDC_LABELS",
    "ClinicalHeart",
    "clinical_labels",
    "draw_pathology",
    "sample_clinical_heart",
    "plan_clinical_views",
    "draw_breath_holds",
    "render_clinical_cine",
    "clinical_settings",
]

#: ACDC's five groups: normal, dilated cardiomyopathy, hypertrophic cardiomyopathy, previous
#: myocardial infarction, abnormal right ventricle.
PATHOLOGIES = ("NOR", "DCM", "HCM", "MINF", "ARV")


ClinicalTissue = extended_tissues(
    "ClinicalTissue", HeartTissue,
    {"TRABECULAE": 17, "PERICARDIAL_FLUID": 18, "STOMACH": 19, "PULMONARY": 20, "VENA_CAVA": 21},
    "Tissue codes of the clinical heart: the simple heart's codes (same values) and five more.")


T = ClinicalTissue
N_CLINICAL_TISSUES = max(int(t) for t in ClinicalTissue) + 1

#: Tissue code → ACDC label: RV cavity (with its outflow tract below the pulmonary valve) = 1,
#: LV myocardium = 2, LV cavity with papillary muscles and trabeculations = 3.
CLINICAL_ACDC_LABELS = {T.RV_BLOOD: 1, T.LV_MYO: 2, T.LV_BLOOD: 3, T.PAPILLARY: 3, T.TRABECULAE: 3}

#: Ranges drawn per pathology (recorded in the cohort's settings file).
_PATHOLOGY_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "NOR": {"r_ed": (22, 28), "wall": (7, 10.5), "es_ratio": (0.58, 0.7), "descent": (10, 15),
            "l_ed": (72, 86), "rv_scale": (1.0, 1.0), "rv_contraction": (0.25, 0.35)},
    "DCM": {"r_ed": (29, 36), "wall": (5.5, 8), "es_ratio": (0.82, 0.92), "descent": (4, 8),
            "l_ed": (84, 98), "rv_scale": (1.0, 1.15), "rv_contraction": (0.12, 0.25)},
    "HCM": {"r_ed": (18, 24), "wall": (12, 18), "es_ratio": (0.4, 0.55), "descent": (9, 14),
            "l_ed": (68, 82), "rv_scale": (0.9, 1.0), "rv_contraction": (0.25, 0.35)},
    "MINF": {"r_ed": (24, 31), "wall": (7, 10), "es_ratio": (0.72, 0.84), "descent": (6, 11),
             "l_ed": (76, 92), "rv_scale": (1.0, 1.05), "rv_contraction": (0.2, 0.3)},
    "ARV": {"r_ed": (20, 26), "wall": (7, 10), "es_ratio": (0.6, 0.72), "descent": (9, 14),
            "l_ed": (70, 84), "rv_scale": (1.3, 1.6), "rv_contraction": (0.06, 0.15)},
}


def draw_pathology(seed: int, index: int) -> str:
    """Pathology of subject ``index``: each block of five consecutive subjects holds every group once.

    Depends only on (seed, index // 5), so it does not change with the cohort size, and any five
    consecutive subjects from a multiple of five are balanced (like ACDC's 20 per group).
    """
    block = index // len(PATHOLOGIES)
    order = np.random.default_rng([int(seed), int(block), 7001]).permutation(len(PATHOLOGIES))
    return PATHOLOGIES[int(order[index % len(PATHOLOGIES)])]


def clinical_labels(codes: np.ndarray) -> np.ndarray:
    """ACDC label map (uint8) from clinical tissue codes."""
    lut = np.zeros(N_CLINICAL_TISSUES, dtype=np.uint8)
    for tissue, label in CLINICAL_ACDC_LABELS.items():
        lut[int(tissue)] = label
    return lut[codes]


def _f32(x: float) -> np.float32:
    return np.float32(x)


@dataclass
class ClinicalHeart(HeartAnatomy):
    """One clinical subject: the simple heart's fields plus pathology, motion and surroundings (mm, LPS)."""

    pathology: str = "NOR"
    descent_mm: float = 12.0
    lv_shape: np.ndarray = field(default_factory=lambda: np.zeros(4))  # a2, p2, a3, p3 (radius harmonics)
    wall_shape: np.ndarray = field(default_factory=lambda: np.zeros(4))  # b1, q1, b2, q2 (thickness harmonics)
    septal_thickening: float = 0.0  # HCM: extra relative thickness towards the septum
    septal_flattening: float = 0.0  # ARV: relative flattening of the LV towards the septum
    infarct_centre_deg: float = 0.0
    infarct_half_width_deg: float = 0.0  # 0 = no infarct
    infarct_thinning: float = 0.0
    rv_contraction: float = 0.3
    trabecular_mm: float = 2.5
    trabecular_pattern: np.ndarray = field(default_factory=lambda: np.zeros(4))  # n_theta, phase, wavelength, phase
    papillary_deg: tuple[float, float] = (140.0, 235.0)
    papillary_radius_mm: float = 3.5
    fat_pattern: np.ndarray = field(default_factory=lambda: np.zeros((3, 4)))  # rows: amp, n_phi, phase, wavelength
    effusion_mm: float = 0.0
    effusion_deg: float = 0.0
    rvot_top_frame: np.ndarray = field(default_factory=lambda: np.zeros(3))  # pulmonary valve (ED frame)
    rvot_radius_mm: float = 11.0
    pulmonary_path_frame: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pulmonary_radius_mm: float = 12.0
    cava_radius_mm: tuple[float, float] = (10.0, 12.0)  # superior, inferior
    stomach: tuple[np.ndarray, np.ndarray] | None = None  # (centre_lps, semi_mm)
    liver_dome: tuple[np.ndarray, np.ndarray] | None = None  # second liver ellipsoid under the heart

    # ------------------------------------------------------------------ ventricles
    def _ventricle_levels(self, contraction: float) -> tuple[float, float, float]:
        """(base level c of the moving base, LV cavity length, LV outer length) in mm at ``contraction``."""
        k = float(np.clip(contraction, 0, 1))
        d = self.descent_mm * k
        apex_wall = self.wall_ed_mm * self.apex_wall_ratio
        outer = self.lv_length_ed_mm + apex_wall - d  # the epicardial apex stays in place
        cavity = outer - apex_wall * (1 + 0.5 * k)
        return d, cavity, outer

    def heart_bounds_frame(self) -> tuple[float, float, float]:
        c_top = min(
            float(self.la_centre_frame[2] - self.la_semi_mm[2]),
            float(self.ra_centre_frame[2] - self.ra_semi_mm[2]),
            float(self.rvot_top_frame[2]) - self.rvot_radius_mm,
        )
        radial = max(
            float(np.hypot(*self.ra_centre_frame[:2]) + self.ra_semi_mm.max()),
            float(np.hypot(*self.la_centre_frame[:2]) + self.la_semi_mm.max()),
            (self.rv_centre_ratio + self.rv_semi_u_ratio * 1.7) * self.lv_outer_radius_ed_mm,
            self.rv_semi_v_ratio * 1.7 * self.lv_outer_radius_ed_mm,
        ) + self.rv_wall_mm + self.epicardial_fat_mm * 2 + self.effusion_mm + 6
        c_bottom = self.lv_length_ed_mm + self.wall_ed_mm * self.apex_wall_ratio + self.effusion_mm + 12
        return c_top - self.descent_mm - 6, c_bottom, radial

    def ventricle_codes(self, q: Coords, contraction: float) -> np.ndarray:
        """Tissue codes of the beating heart (ventricles, atria, outflow tract, fat, effusion); 0 = none."""
        a, b, c = q
        k = float(np.clip(contraction, 0, 1))
        d, length, outer_len = self._ventricle_levels(k)
        cc = c - _f32(d)
        rho = np.sqrt(a * a + b * b) + _f32(1e-3)
        cs, sn = a / rho, b / rho
        cos2, sin2 = cs * cs - sn * sn, 2 * cs * sn
        cos3, sin3 = cs * (4 * cs * cs - 3), sn * (3 - 4 * sn * sn)
        a2, p2, a3, p3 = (float(x) for x in self.lv_shape)
        shape = 1 + _f32(a2) * (cos2 * _f32(np.cos(p2)) + sin2 * _f32(np.sin(p2)))
        shape += _f32(a3) * (cos3 * _f32(np.cos(p3)) + sin3 * _f32(np.sin(p3)))
        septal = np.maximum(cs, 0) ** 2
        shape *= 1 - _f32(self.septal_flattening) * septal
        b1, q1, b2, q2 = (float(x) for x in self.wall_shape)
        thick = 1 + _f32(b1) * (cs * _f32(np.cos(q1)) + sn * _f32(np.sin(q1)))
        thick += _f32(b2) * (cos2 * _f32(np.cos(q2)) + sin2 * _f32(np.sin(q2)))
        thick += _f32(self.septal_thickening) * septal
        akinetic = np.zeros_like(a)
        if self.infarct_half_width_deg > 0:
            t = np.radians(self.infarct_centre_deg)
            cos_delta = cs * _f32(np.cos(t)) + sn * _f32(np.sin(t))
            edge = np.cos(np.radians(self.infarct_half_width_deg))
            akinetic = np.clip((cos_delta - _f32(edge)) / _f32(max(1 - edge, 1e-3) * 0.35), 0, 1)
            thick *= 1 - _f32(self.infarct_thinning) * akinetic
        r_ed = self.lv_radius_ed_mm * shape
        out_ed = r_ed + self.wall_ed_mm * thick
        shrink = 1 - self.lv_radius_es_mm / self.lv_radius_ed_mm
        r_cav = r_ed * (1 - _f32(k * shrink) * (1 - _f32(0.9) * akinetic))
        r_out = np.sqrt(r_cav * r_cav + out_ed * out_ed - r_ed * r_ed)

        codes = np.zeros(a.shape, dtype=np.uint8)
        upper = cc >= 0
        # Normalised LV radii at this level (ellipsoidal profile towards the apex).
        zc = (cc * _f32(1 / length)) ** 2
        zo = (cc * _f32(1 / outer_len)) ** 2
        s_out = (rho / r_out) ** 2 + zo
        outer = upper & (s_out <= 1)
        lv_column = outer | ((cc < 0) & (rho <= r_out))

        # Atria move with the base and fill in systole.
        la_c = self.la_centre_frame + np.array([0.0, 0.0, d])
        ra_c = self.ra_centre_frame + np.array([0.0, 0.0, d])
        la_s = self.la_semi_mm * np.array([1.0, 1.0, 1 + 0.12 * k])
        ra_s = self.ra_semi_mm * np.array([1.0, 1.0, 1 + 0.12 * k])
        la_wall = inside_ellipsoid(q, la_c, la_s + 2.0)
        ra_wall = inside_ellipsoid(q, ra_c, ra_s + 2.0)

        # RV: an ellipsoid around the LV, minus the LV; its outflow tract rises anteriorly to the valve.
        rv_c, rv_s = self.rv_ellipsoid(k)
        rv_in = inside_ellipsoid(q, rv_c, rv_s) & ~lv_column
        top = self.rvot_top_frame
        p0 = np.array([rv_c[0] * 0.7, 0.55 * rv_s[1], rv_c[2] - 0.3 * rv_s[2]])
        p1 = top + np.array([0.0, 0.0, 0.4 * d])
        rvot_r = self.rvot_radius_mm * (1 - 0.2 * k)
        rvot = inside_capsule(q, p0, p1, rvot_r) & ~lv_column
        rv_in |= rvot
        t = self.rv_wall_mm
        rv_outer = inside_ellipsoid(q, rv_c, rv_s + t) | inside_capsule(q, p0, p1, rvot_r + t)
        rv_wall = rv_outer & ~lv_column & ~rv_in

        # Patchy epicardial fat: thickest in the grooves, absent over much of the free walls.
        pattern = np.zeros_like(a)
        ang = np.arctan2(b, a)
        for amp, n_phi, phase, wavelength in self.fat_pattern:
            pattern += _f32(amp) * np.cos(_f32(n_phi) * ang + _f32(phase)) * np.cos(cc * _f32(2 * np.pi / wavelength))
        groove = np.exp(-((cs - _f32(0.45)) ** 2) / _f32(0.05))  # the two RV-LV junctions (φ ≈ ±63°)
        av_groove = np.exp(-(np.maximum(cc, 0) ** 2) / _f32(2 * 8.0**2))
        fat_mm = _f32(self.epicardial_fat_mm) * np.clip(pattern + groove + av_groove - _f32(0.35), 0, 2)
        fat_lv = (cc >= -4) & ((rho / (r_out + fat_mm)) ** 2 + (cc / (outer_len + 0.6 * fat_mm)) ** 2 <= 1)
        rv_semi_fat = (rv_s[0] + t + fat_mm, rv_s[1] + t + fat_mm, rv_s[2] + t + fat_mm)
        rv_fat = (
            ((a - _f32(rv_c[0])) / rv_semi_fat[0]) ** 2 + ((b - _f32(rv_c[1])) / rv_semi_fat[1]) ** 2
            + ((c - _f32(rv_c[2])) / rv_semi_fat[2]) ** 2 <= 1
        )
        fat = (fat_lv | rv_fat) & (fat_mm > 0.3)

        if self.effusion_mm > 0:
            te = np.radians(self.effusion_deg)
            e_mm = _f32(self.effusion_mm) * (0.35 + 0.65 * np.maximum(cs * _f32(np.cos(te)) + sn * _f32(np.sin(te)), 0))
            env = (cc >= -2) & ((rho / (r_out + fat_mm + e_mm)) ** 2 + (cc / (outer_len + e_mm)) ** 2 <= 1)
            env |= inside_ellipsoid(q, rv_c, rv_s + t + 0.5 * self.effusion_mm) & (cc >= -2)
            codes[env] = T.PERICARDIAL_FLUID
        codes[fat] = T.EPICARDIAL_FAT
        codes[(la_wall | ra_wall) & (cc < 0) & ~lv_column] = T.RV_WALL
        codes[la_wall & (cc < 0) & lv_column & ~outer] = T.RV_WALL
        codes[inside_ellipsoid(q, la_c, la_s) & (cc < 0)] = T.LA_BLOOD
        codes[inside_ellipsoid(q, ra_c, ra_s) & (cc < 0) & ~lv_column] = T.RA_BLOOD
        codes[rv_wall] = T.RV_WALL
        codes[rv_in] = T.RV_BLOOD
        codes[outer] = T.LV_MYO
        s_cav = (rho / r_cav) ** 2 + zc
        cavity = upper & (s_cav <= 1)
        codes[cavity] = T.LV_BLOOD
        # Trabeculations: strands in a band inside the endocardium (labelled cavity, as in ACDC).
        n_t, ph_t, wl_t, ph2 = (float(x) for x in self.trabecular_pattern)
        band = cavity & (s_cav >= (1 - _f32(self.trabecular_mm) / r_cav) ** 2)
        wave = np.cos(cc * _f32(2 * np.pi / wl_t) + _f32(ph2))
        strands = np.cos(_f32(n_t) * ang + _f32(ph_t) + _f32(0.8) * wave)
        strands += _f32(0.6) * np.cos(_f32(n_t * 0.45) * ang - _f32(ph2) + _f32(1.3) * wave)
        codes[band & (strands > 0.7)] = T.TRABECULAE
        for theta in self.papillary_deg:
            dd = np.array([np.cos(np.radians(theta)), np.sin(np.radians(theta)), 0.0])
            r_here = self.lv_radius_ed_mm * (1 - k * shrink)
            q0 = dd * 0.6 * r_here + np.array([0, 0, d + 0.3 * length])
            q1 = dd * 0.4 * r_here + np.array([0, 0, d + 0.68 * length])
            codes[cavity & inside_capsule(q, q0, q1, self.papillary_radius_mm * (1 + 0.4 * k))] = T.PAPILLARY
        return codes

    def rv_ellipsoid(self, contraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(centre, semi-axes) of the RV cavity ellipsoid (heart frame, mm): its base descends, its apex stays."""
        k = float(np.clip(contraction, 0, 1))
        d = self.descent_mm * k
        ro = self.lv_outer_radius_ed_mm
        top = -self.rv_top_mm + d
        bottom = self.rv_bottom_ratio * self.lv_length_ed_mm
        centre = np.array([self.rv_centre_ratio * ro, 0.0, (top + bottom) / 2])
        semi = np.array([
            self.rv_semi_u_ratio * ro * (1 - self.rv_contraction * k),
            self.rv_semi_v_ratio * ro * (1 - 0.3 * self.rv_contraction * k),
            (bottom - top) / 2,
        ])
        return centre, semi

    def static_codes(self, p: Coords, q: Coords) -> np.ndarray:
        """Torso, lungs, liver (with a dome under the heart), spine, aorta, venae cavae, stomach."""
        x, y, z = p
        cx, cy = float(self.body_centre_lps[0]), float(self.body_centre_lps[1])
        sx, sy = (float(s) for s in self.torso_semi_mm)
        dx, dy = x - _f32(cx), y - _f32(cy)
        codes = np.zeros(x.shape, dtype=np.uint8)

        def in_ellipse(ex: float, ey: float) -> np.ndarray:
            return (dx * _f32(1 / ex)) ** 2 + (dy * _f32(1 / ey)) ** 2 <= 1

        codes[in_ellipse(sx, sy)] = T.FAT
        codes[in_ellipse(sx - self.fat_mm, sy - self.fat_mm)] = T.MUSCLE
        inner = self.fat_mm + self.muscle_mm
        cavity = in_ellipse(sx - inner, sy - inner)
        codes[cavity] = T.SOFT
        for centre, semi in self.lungs:
            codes[cavity & inside_ellipsoid(p, centre, semi)] = T.LUNG
        codes[cavity & inside_ellipsoid(p, self.liver_centre_lps, self.liver_semi_mm)] = T.LIVER
        if self.liver_dome is not None:
            codes[cavity & inside_ellipsoid(p, *self.liver_dome)] = T.LIVER
        if self.stomach is not None:
            codes[cavity & inside_ellipsoid(p, *self.stomach)] = T.STOMACH
        scx, scy = float(self.spine_centre_lps[0]), float(self.spine_centre_lps[1])
        sr = self.spine_radius_mm
        codes[(x - _f32(scx)) ** 2 + (y - _f32(scy)) ** 2 <= sr * sr] = T.BONE
        codes[(x - _f32(scx)) ** 2 + (y - _f32(scy + sr + 6)) ** 2 <= 36] = T.CSF
        ra = self.frame_to_lps(self.ra_centre_frame)
        svc = (ra + np.array([2.0, 4.0, 10.0]), ra + np.array([4.0, 8.0, 120.0]))
        ivc = (ra + np.array([0.0, 6.0, -10.0]), ra + np.array([-4.0, 14.0, -120.0]))
        codes[inside_capsule(p, *svc, self.cava_radius_mm[0])] = T.VENA_CAVA
        codes[inside_capsule(p, *ivc, self.cava_radius_mm[1])] = T.VENA_CAVA
        codes[polyline_distance2(q, self.pulmonary_path_frame) <= self.pulmonary_radius_mm**2] = T.PULMONARY
        path = self.aorta_path_lps
        codes[polyline_distance2(p, path[:4]) <= self.aorta_radius_mm**2] = T.AORTA
        codes[polyline_distance2(p, path[3:]) <= self.desc_aorta_radius_mm**2] = T.AORTA
        return codes


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_clinical_heart(rng: np.random.Generator, pathology: str, sequence_name: str) -> ClinicalHeart:
    """One clinical subject with ``pathology`` imaged with ``sequence_name`` (sites.SEQUENCES)."""
    base = sample_heart(rng)  # pose, torso, aorta, atria and timing as in the simple heart
    ranges = _PATHOLOGY_RANGES[pathology]
    r_ed = _u(rng, *ranges["r_ed"])
    wall = _u(rng, *ranges["wall"])
    l_ed = _u(rng, *ranges["l_ed"])
    ro = r_ed + wall
    rv_scale = _u(rng, *ranges["rv_scale"])
    values = {f.name: getattr(base, f.name) for f in fields(HeartAnatomy)}
    values.update(
        lv_radius_ed_mm=r_ed, lv_radius_es_mm=r_ed * _u(rng, *ranges["es_ratio"]), lv_length_ed_mm=l_ed,
        lv_length_es_mm=l_ed, wall_ed_mm=wall, rv_semi_u_ratio=base.rv_semi_u_ratio * rv_scale,
        rv_semi_v_ratio=base.rv_semi_v_ratio * (1 + 0.5 * (rv_scale - 1)),
        epicardial_fat_mm=_u(rng, 2.0, 7.0),
        la_centre_frame=np.array([-0.15 * ro, -0.3 * ro, -_u(rng, 22, 28)]),
        ra_centre_frame=np.array([(1.1 + 0.3 * (rv_scale - 1)) * ro, -0.25 * ro, -_u(rng, 20, 26)]),
    )
    contrast = SEQUENCES[sequence_name].contrast
    gains = rng.uniform(0.8, 1.2, size=N_CLINICAL_TISSUES)
    signal = np.array([contrast[ClinicalTissue(i).name] for i in range(N_CLINICAL_TISSUES)]) * gains
    signal[T.AIR] = 0.0
    values["signal"] = signal

    extra: dict = {"pathology": pathology, "descent_mm": _u(rng, *ranges["descent"])}
    extra["lv_shape"] = np.array([_u(rng, 0.03, 0.12), _u(rng, 0, 2 * np.pi), _u(rng, 0.0, 0.06),
                                  _u(rng, 0, 2 * np.pi)])
    extra["wall_shape"] = np.array([_u(rng, 0.05, 0.2), _u(rng, 0, 2 * np.pi), _u(rng, 0.0, 0.1),
                                    _u(rng, 0, 2 * np.pi)])
    if pathology == "HCM":
        extra["septal_thickening"] = _u(rng, 0.2, 0.6)
    if pathology == "ARV":
        extra["septal_flattening"] = _u(rng, 0.15, 0.3)
    if pathology == "MINF":
        # Infarcts in a coronary territory: anterior (LAD), inferior (RCA) or lateral (LCx).
        extra["infarct_centre_deg"] = float(rng.choice([80.0, 150.0, 260.0])) + _u(rng, -20, 20)
        extra["infarct_half_width_deg"] = _u(rng, 30, 55)
        extra["infarct_thinning"] = _u(rng, 0.4, 0.65)
    extra["rv_contraction"] = _u(rng, *ranges["rv_contraction"])
    extra["trabecular_mm"] = _u(rng, 1.5, 4.0) * (1.5 if pathology == "DCM" else 1.0)
    extra["trabecular_pattern"] = np.array([float(rng.integers(10, 18)), _u(rng, 0, 2 * np.pi), _u(rng, 15, 30),
                                            _u(rng, 0, 2 * np.pi)])
    extra["papillary_deg"] = (_u(rng, 125, 155), _u(rng, 220, 250))
    extra["papillary_radius_mm"] = _u(rng, 2.5, 4.5)
    extra["fat_pattern"] = np.array(
        [[_u(rng, 0.3, 0.6), float(rng.integers(1, 4)), _u(rng, 0, 2 * np.pi), _u(rng, 40, 120)] for _ in range(3)]
    )
    if rng.uniform() < 0.2:
        extra["effusion_mm"] = _u(rng, 2.0, 8.0)
        extra["effusion_deg"] = _u(rng, 180, 300)  # mostly inferior and lateral
    else:
        rng.uniform(), rng.uniform()
    # Outflow tract: the pulmonary valve sits anterior, above the base, left of the aortic root.
    top = np.array([0.25 * ro, 1.05 * ro, -_u(rng, 14, 22)])
    extra["rvot_top_frame"] = top
    extra["rvot_radius_mm"] = _u(rng, 10, 13) * (1 + 0.3 * (rv_scale - 1))
    extra["pulmonary_path_frame"] = np.stack(
        [top, top + np.array([-4.0, 6.0, -30.0]), top + np.array([-18.0, -6.0, -52.0])]
    )
    extra["pulmonary_radius_mm"] = _u(rng, 11, 14)
    extra["cava_radius_mm"] = (_u(rng, 8, 11), _u(rng, 10, 13))
    heart = ClinicalHeart(**values, **extra)
    # Liver dome under the inferior wall: its top reaches 0–8 mm above the heart's lowest mid point
    # (the ventricles are painted over it, so the two touch).
    down = unit(np.array([0.0, 0.0, -1.0]) - np.array([0.0, 0.0, -1.0]) @ heart.w * heart.w)
    low = heart.frame_to_lps([0.0, 0.0, 0.55 * l_ed]) + (ro + 1.0) * down
    semi = np.array([_u(rng, 55, 75), _u(rng, 55, 75), _u(rng, 35, 50)])
    heart.liver_dome = (low + np.array([-20.0, 10.0, _u(rng, 0, 8) - semi[2]]), semi)
    if rng.uniform() < 0.4:
        apex = heart.frame_to_lps([0.0, 0.0, l_ed + wall])
        heart.stomach = (apex + np.array([_u(rng, 15, 35), _u(rng, 20, 40), -_u(rng, 40, 60)]),
                         np.array([_u(rng, 30, 45), _u(rng, 25, 35), _u(rng, 20, 30)]))
    return heart


# ---------------------------------------------------------------------- planning
def _site_axes(x: np.ndarray, y: np.ndarray, site: Site) -> tuple[np.ndarray, np.ndarray, bool]:
    """In-plane axes as the site stores its images: rotated by a multiple of 90°, maybe mirrored.

    Returns (x, y, swapped): ``swapped`` when rows and columns trade places (90°/270°).
    """
    turns = (site.display_rotation_deg // 90) % 4
    for _ in range(turns):
        x, y = y, -x
    if site.display_flip:
        x = -x
    return x, y, turns % 2 == 1


def plan_clinical_views(
    anatomy: ClinicalHeart, rng: np.random.Generator, site: Site, matrix: int | None = None,
    fov_mm: tuple[float, float] = (300.0, 380.0),
) -> HeartViews:
    """SAX stack and 2CH/3CH/4CH planes as a site plans them (``plan_heart_views`` with clinical spread).

    SAX: slice thickness 6–10 mm, spacing thickness + 0–4 mm; the first slice 0–15 mm above the
    mitral valve, the last one 15 mm short of to 15 mm past the epicardial apex (at ED). Long
    axis: as in the simple planner (±8° off the ideal angles). Every series: ±20° in plane, then
    the site's display rotation and flip (the planes, so the DICOM geometry stays true).
    """
    a = anatomy
    w = a.w
    thickness = round(_u(rng, 6.0, 10.0), 2)
    gap = round(thickness + _u(rng, 0.0, 4.0) * (0.0 if rng.uniform() < 0.3 else 1.0), 2)  # centre to centre
    first = -_u(rng, 0.0, 15.0)
    apex = a.lv_length_ed_mm + a.wall_ed_mm * a.apex_wall_ratio
    last = apex + _u(rng, -15.0, 15.0)
    n = int(np.clip(round((last - first) / gap) + 1, 6, 20))  # the last slice within half a spacing of ``last``
    levels = [round(first + k * gap, 4) for k in range(n)]
    x0, y0 = plane_axes(w, [1.0, 0.0, 0.0], np.cross([1.0, 0.0, 0.0], w))
    xs, ys = rotate_in_plane(x0, y0, _u(rng, -20, 20))
    xs, ys, swapped = _site_axes(xs, ys, site)
    shape, spacing = series_matrix(rng, fov_mm, matrix)
    if swapped:
        shape, spacing = (shape[1], shape[0]), (spacing[1], spacing[0])
    offset = _u(rng, -15, 15) * xs + _u(rng, -15, 15) * ys
    sax = [ImagePlane.centred(a.base_lps + lev * w + offset, xs, ys, spacing, shape) for lev in levels]

    thetas = {"4CH": _u(rng, -8, 8), "3CH": a.aorta_angle_deg + _u(rng, -8, 8), "2CH": 90.0 + _u(rng, -8, 8)}
    lax: dict[str, ImagePlane] = {}
    lax_thickness: dict[str, float] = {}
    for view in ("2CH", "3CH", "4CH"):
        d = a.direction_at_angle(thetas[view])
        normal = unit(np.cross(d, w))
        x0, y0 = plane_axes(normal, -d, -w)
        xl, yl = rotate_in_plane(x0, y0, _u(rng, -20, 20))
        xl, yl, swapped = _site_axes(xl, yl, site)
        shape, spacing = series_matrix(rng, fov_mm, matrix)
        if swapped:
            shape, spacing = (shape[1], shape[0]), (spacing[1], spacing[0])
        centre = a.base_lps + _u(rng, 0.15, 0.35) * a.lv_length_ed_mm * w + _u(rng, -10, 10) * d
        lax[view] = ImagePlane.centred(centre, xl, yl, spacing, shape)
        lax_thickness[view] = round(_u(rng, 6.0, 10.0), 2)
    return HeartViews(sax, thickness, gap, levels, lax, lax_thickness,
                      {k: float(t) for k, t in thetas.items()})


def draw_breath_holds(rng: np.random.Generator, n_sax: int) -> tuple[list[np.ndarray], dict[str, np.ndarray], float]:
    """Anatomy shifts (LPS mm) per SAX slice and per long-axis series: each breath-hold ends elsewhere.

    Mostly head-foot (the diaphragm), less anterior-posterior and left-right; the subject's
    spread σ is 0.5–4 mm. Returns (SAX shifts, long-axis shifts by view, σ).
    """
    sigma = _u(rng, 0.5, 4.0)
    scale = np.array([0.35, 0.5, 1.0]) * sigma

    def one() -> np.ndarray:
        return np.round(rng.normal(size=3) * scale, 3)

    sax = [one() for _ in range(n_sax)]
    lax = {view: one() for view in ("2CH", "3CH", "4CH")}
    return sax, lax, round(sigma, 3)


# ---------------------------------------------------------------------- rendering
def render_clinical_cine(
    anatomy: ClinicalHeart,
    plane: ImagePlane,
    thickness_mm: float,
    n_phases: int,
    rng: np.random.Generator,
    look: SiteLook,
    shift_lps: np.ndarray,
    label_phases: tuple[int, ...] = (),
) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Cine frames (uint16) of one slice with the anatomy moved by ``shift_lps``, and ACDC labels.

    The anatomy is sampled at ``p − shift`` (it moved by ``shift``; the plane did not), so the
    labels move with the image and the DICOM geometry stays the scanner's.
    """
    offsets = slice_offsets_mm(thickness_mm, look.n_sub)
    pts = slice_points_lps(plane, offsets).reshape(-1, 3) - np.asarray(shift_lps, np.float64)
    p = to_frame(pts, np.zeros(3), np.eye(3))
    q = to_frame(pts, anatomy.base_lps, anatomy.frame_axes_lps)
    static = anatomy.static_codes(p, q)
    idx = anatomy.ventricle_region(q)
    sub = (q[0][idx], q[1][idx], q[2][idx])
    shape = (look.n_sub, *plane.shape_px)
    centre = look.n_sub // 2
    lut = anatomy.signal.astype(np.float32).copy()
    lo, hi = look.blood_inflow
    if hi > lo:
        inflow = np.float32(rng.uniform(lo, hi))
        for tissue in (T.LV_BLOOD, T.RV_BLOOD, T.LA_BLOOD, T.RA_BLOOD, T.AORTA, T.PULMONARY, T.VENA_CAVA):
            lut[int(tissue)] *= inflow
    ghost = None
    if rng.uniform() < look.ghost_probability:
        ghost = (int(rng.integers(0, 2)), float(rng.uniform(*look.ghost_amplitude)))
    frames: list[np.ndarray] = []
    labels: dict[int, np.ndarray] = {}
    for k in range(n_phases):
        codes = static.copy()
        if idx.size:
            v = anatomy.ventricle_codes(sub, anatomy.contraction(k, n_phases))
            keep = v > 0
            codes[idx[keep]] = v[keep]
        codes = codes.reshape(shape)
        signal = lut[codes].mean(axis=0)
        frames.append(finish_clinical_image(signal, plane, rng, look, ghost))
        if k in label_phases:
            labels[k] = clinical_labels(codes[centre])
    return frames, labels


def clinical_settings() -> dict:
    """Every anatomy range of the clinical heart (for the cohort's settings file)."""
    return {
        "pathologies": list(PATHOLOGIES),
        "pathology_assignment": "each block of 5 consecutive subjects holds every group once (order from the seed)",
        "pathology_ranges_mm": {p: {k: list(v) for k, v in r.items()} for p, r in _PATHOLOGY_RANGES.items()},
        "sax": {"thickness_mm": [6, 10], "extra_spacing_mm": [0, 4], "first_slice_above_mitral_valve_mm": [0, 15],
                "last_slice_past_apex_mm": [-15, 15], "slices": [6, 20]},
        "lax_thickness_mm": [6, 10],
        "breath_hold_shift_sigma_mm": [0.5, 4.0],
        "breath_hold_axis_scale_lps": [0.35, 0.5, 1.0],
        "epicardial_fat_mm": [2, 7],
        "effusion_probability": 0.2,
        "effusion_mm": [2, 8],
        "stomach_fluid_probability": 0.4,
        "liver_dome_above_inferior_wall_mm": [0, 8],
        "tissue_gain": [0.8, 1.2],
        "labels": {"RV": "RV cavity and outflow tract below the pulmonary valve", "Myo": "LV myocardium",
                   "LV": "LV cavity with papillary muscles and trabeculations"},
    }
