"""A synthetic knee (intact or torn ACL) and sagittal/coronal/axial stacks planned along its anatomy.

Frames (millimetres):

- Patient LPS: +x Left, +y Posterior, +z Superior. The patient lies feet first supine.
- Knee frame ("canonical", the same for both sides), origin at the centre of the joint:
  ``m`` medial, ``a`` anterior, ``s`` superior (proximal, along the tibial shaft). A right knee
  has ``m`` ≈ +x (towards the midline), a left knee ``m`` ≈ −x: the anatomy, written once in the
  canonical frame, is mirrored by the frame itself. The knee's pose rotates the frame by up to
  about 15° about each patient axis.

Planning (``plan_knee_stacks``) follows the radiographer's landmarks: the posterior condylar
line (tangent to the posterior surfaces of both femoral condyles) and the tibial shaft axis.
Axial ⟂ tibial shaft; coronal ∥ the posterior condylar line and the shaft; sagittal ⟂ the
posterior condylar line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from ..geometry.planes import ImagePlane, unit
from .heart import series_matrix
from .render import ImageLook, finish_image, signal_from_codes, slice_offsets_mm, slice_points_lps
from .shapes import (
    Coords,
    ellipsoid_r2,
    extended_tissues,
    inside_ellipsoid,
    orthonormal_in_plane,
    perturb_direction,
    plane_axes,
    rotate_in_plane,
    rotation_matrix,
    segment_distance2,
    to_frame,
)

__all__ = [
    "render_knee_slice", "KneeTissue", "ClinicalKneeTissue", "KneeAnatomy", "KneeStack", "sample_knee",
    "plan_knee_stacks", "acl_torn", "DEFAULT_COVERAGE",
]


class KneeTissue(IntEnum):
    """Tissue codes of the knee phantom (index into the contrast look-up table)."""

    AIR = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    MARROW = 4
    CORTEX = 5
    CARTILAGE = 6
    FLUID = 7
    MENISCUS = 8
    ACL = 9
    PCL = 10
    TENDON = 11
    OEDEMA = 12
    BONE_BRUISE = 13
    VESSEL = 14


#: Fat-suppressed proton-density-like relative signal (fluid = 1): fluid and oedema bright.
_PD_FS_SIGNAL = {
    KneeTissue.AIR: 0.0,
    KneeTissue.SKIN: 0.35,
    KneeTissue.FAT: 0.13,
    KneeTissue.MUSCLE: 0.3,
    KneeTissue.MARROW: 0.17,
    KneeTissue.CORTEX: 0.02,
    KneeTissue.CARTILAGE: 0.5,
    KneeTissue.FLUID: 1.0,
    KneeTissue.MENISCUS: 0.04,
    KneeTissue.ACL: 0.12,
    KneeTissue.PCL: 0.05,
    KneeTissue.TENDON: 0.05,
    KneeTissue.OEDEMA: 0.75,
    KneeTissue.BONE_BRUISE: 0.55,
    KneeTissue.VESSEL: 0.08,
}

_N_TISSUES = max(int(t) for t in KneeTissue) + 1


#: Tissue codes of the clinical knee (``knee_clinical.py``): the simple knee's codes and one more.
ClinicalKneeTissue = extended_tissues(
    "ClinicalKneeTissue", KneeTissue, {"ACL_DAMAGED": 15},  # partially torn fibres: swollen, increased signal
    "Tissue codes of the clinical knee (``knee_clinical.py``): the simple knee's codes and one more.")

#: Per block of this many consecutive subjects, exactly ``_TORN_PER_BLOCK`` have a torn ACL.
_BLOCK = 5
_TORN_PER_BLOCK = 2


def acl_torn(seed: int, index: int) -> bool:
    """Whether subject ``index`` of a cohort with ``seed`` has a torn ACL (deterministic).

    Subjects come in blocks of five with exactly two torn ACLs: one of the first two subjects
    of a block and one of the other three. So the torn fraction is 0.4 over whole blocks,
    every cohort of two or more subjects has at least one torn and one intact knee, and a
    subject's status does not depend on the cohort size.
    """
    block, pos = divmod(int(index), _BLOCK)
    rng = np.random.default_rng([int(seed), block, 7919])
    first = int(rng.integers(0, 2))
    second = 2 + int(rng.integers(0, 3))
    return pos in (first, second)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


@dataclass
class KneeAnatomy:
    """One subject's knee (lengths in mm; ``*_k`` positions in the canonical knee frame)."""

    origin_lps: np.ndarray
    axes_lps: np.ndarray  # (3, 3) rows m (medial), a (anterior), s (superior) in LPS
    laterality: str  # "R" or "L"
    acl_tear: bool
    condyles: dict[str, tuple[np.ndarray, np.ndarray]]  # "medial"/"lateral" → (centre_k, semi)
    metaphysis: tuple[np.ndarray, np.ndarray]
    femur_shaft_radius_mm: float
    tibia_semi_mm: np.ndarray  # (m, a) of the plateau ellipse
    tibia_centre_a_mm: float
    plateau_top_mm: float  # s of the plateau top at a = tibia_centre_a
    posterior_slope: float  # tan of the posterior tibial slope
    patella: tuple[np.ndarray, np.ndarray]
    acl_femoral_k: np.ndarray
    acl_tibial_k: np.ndarray
    acl_radius_mm: float
    tear_interval: tuple[float, float]  # ACL axis parameter range removed when torn
    bone_bruise: bool
    pcl_points_k: np.ndarray
    effusion_mm: float
    limb_semi_mm: np.ndarray  # (m, a)
    limb_centre_a_mm: float
    fat_mm: float
    cartilage_mm: float
    signal: np.ndarray = field(repr=False)
    # Clinical realism (``knee_clinical.py``); the defaults draw the simple knee exactly as before.
    clinical: bool = False
    acl_grade: str = ""  # clinical: "intact", "partial" or "complete"
    acl_oedema_mm: float = 7.5  # radius of the oedema around a torn ACL (0: none)
    plateau_shape_mm: tuple[float, float] = (0.0, 0.0)  # (medial concavity depth, lateral convexity height)
    fibula_head: tuple[np.ndarray, np.ndarray] | None = None  # (centre_k, semi); None: the simple fibula
    patella_facets: tuple[float, float, float, float, float] | None = None  # ridge m, medial/lateral semi m, slopes
    patellar_tendon_m_mm: float = 0.0  # medial offset of the patellar tendon (negative: lateral)
    mcl_radius_mm: float = 2.5
    acl_stump_k: np.ndarray | None = None  # complete tear: wavy tibial stump polyline (points, canonical frame)
    meniscus_horns_mm: tuple[float, float, float] | None = None  # clinical: medial anterior, medial posterior, lateral
    side_tendons: dict[str, tuple[np.ndarray, float]] | None = None  # clinical: name -> (polyline_k, radius mm)

    def frame_to_lps(self, k_points: np.ndarray) -> np.ndarray:
        """Canonical knee-frame points ``(..., 3)`` → LPS (mm)."""
        return self.origin_lps + np.asarray(k_points, np.float64) @ self.axes_lps

    def acl_axis_lps(self) -> tuple[np.ndarray, np.ndarray]:
        """(femoral attachment, tibial attachment) of the ACL axis in LPS (mm)."""
        return self.frame_to_lps(self.acl_femoral_k), self.frame_to_lps(self.acl_tibial_k)

    def posterior_condylar_points_k(self) -> tuple[np.ndarray, np.ndarray]:
        """Most posterior points of the (lateral, medial) femoral condyles, canonical frame."""
        out = []
        for side in ("lateral", "medial"):
            c, s = self.condyles[side]
            out.append(np.array([c[0], c[1] - s[1], c[2]]))
        return out[0], out[1]

    def plateau_top(self, a: np.ndarray) -> np.ndarray:
        """s (mm) of the tibial plateau surface at anterior coordinate ``a`` (posterior slope)."""
        return np.float32(self.plateau_top_mm) + np.float32(self.posterior_slope) * (
            a - np.float32(self.tibia_centre_a_mm)
        )

    def plateau_surface(self, m: np.ndarray, a: np.ndarray) -> np.ndarray:
        """s (mm) of the plateau at (m, a): ``plateau_top``, plus (clinical) the concave medial and convex
        lateral compartments (``plateau_shape_mm``)."""
        top = self.plateau_top(a)
        depth, height = self.plateau_shape_mm
        if depth == 0 and height == 0:
            return top
        tm, ta = (float(x) for x in self.tibia_semi_mm)
        da = (a - np.float32(self.tibia_centre_a_mm)) * np.float32(1 / (0.8 * ta))
        med = (m - np.float32(0.55 * tm)) * np.float32(1 / (0.38 * tm))
        bowl = np.clip(1 - med * med - da * da, 0, None)  # medial: a bowl
        dome = np.clip(1 - da * da, 0, None) * (m < np.float32(-7.0))  # lateral: convex front to back
        return top - np.float32(depth) * bowl + np.float32(height) * dome

    def fibula_head_k(self) -> tuple[np.ndarray, np.ndarray]:
        """(centre, semi axes) of the fibular head in the canonical frame (mm)."""
        if self.fibula_head is not None:
            return self.fibula_head
        tm, ta = (float(x) for x in self.tibia_semi_mm)
        ac = self.tibia_centre_a_mm
        return np.array([-tm + 4.0, ac - ta + 12.0, self.plateau_top_mm - 36.0]), np.array([9.0, 9.0, 11.0])

    def _patella_r2(self, q: Coords, grow_mm: float) -> np.ndarray:
        """Normalised squared radius of the patella grown by ``grow_mm`` (clinical: facets around a ridge)."""
        pc, psemi = self.patella
        if self.patella_facets is None:
            return ellipsoid_r2(q, pc, psemi + grow_mm)
        m, a, s = q
        ridge, semi_med, semi_lat, slope_med, slope_lat = self.patella_facets
        dm = m - np.float32(pc[0] + ridge)
        medial = dm > 0
        inv_m = np.where(medial, np.float32(1 / (semi_med + grow_mm)), np.float32(1 / (semi_lat + grow_mm)))
        r2 = (dm * inv_m) ** 2
        r2 += ((a - np.float32(pc[1])) * np.float32(1 / (psemi[1] + grow_mm))) ** 2
        r2 += ((s - np.float32(pc[2])) * np.float32(1 / (psemi[2] + grow_mm))) ** 2
        # The articular surface: the ridge lies deepest, each facet rises from it (the lateral one flatter).
        floor = np.float32(pc[1] - psemi[1] - grow_mm) + np.abs(dm) * np.where(
            medial, np.float32(slope_med), np.float32(slope_lat))
        return np.where(a >= floor, r2, np.float32(2.0))

    # ------------------------------------------------------------------ tissue
    def codes_at(self, points_lps: np.ndarray) -> np.ndarray:
        """Tissue codes (uint8, ``KneeTissue``) at LPS points ``(..., 3)``."""
        pts = np.asarray(points_lps, np.float64)
        q = to_frame(pts.reshape(-1, 3), self.origin_lps, self.axes_lps)
        return self.codes_k(q).reshape(pts.shape[:-1])

    def codes_k(self, q: Coords) -> np.ndarray:
        """Tissue codes at canonical knee-frame points (painter's order: later wins)."""
        m, a, s = q
        codes = np.zeros(m.shape, dtype=np.uint8)
        T = KneeTissue
        lm, la = (float(x) for x in self.limb_semi_mm)
        da = a - np.float32(self.limb_centre_a_mm)

        def limb(shrink: float) -> np.ndarray:
            return (m * np.float32(1 / (lm - shrink))) ** 2 + (da * np.float32(1 / (la - shrink))) ** 2 <= 1

        codes[limb(0.0)] = T.SKIN
        codes[limb(2.0)] = T.FAT
        codes[limb(2.0 + self.fat_mm)] = T.MUSCLE
        codes[inside_ellipsoid(q, (0, -44, 10), (24, 13, 70))] = T.FAT  # popliteal fossa
        for cm, ca, r in ((0.0, -42.0, 3.5), (4.0, -48.0, 4.5)):  # popliteal artery and vein
            codes[(m - np.float32(cm)) ** 2 + (a - np.float32(ca)) ** 2 <= r * r] = T.VESSEL
        codes[inside_ellipsoid(q, (0, 20, 4), (20, 10, 14))] = T.FAT  # Hoffa's fat pad

        # Joint fluid: a film around the condyles, the suprapatellar pouch, posterior recesses.
        eff = self.effusion_mm
        film = np.zeros(m.shape, dtype=bool)
        for c, semi in self.condyles.values():
            film |= (ellipsoid_r2(q, c, semi + self.cartilage_mm + 0.6 + 0.15 * eff) <= 1) & (
                s < np.float32(c[2] + 6)
            )
        mc, ms = self.metaphysis
        pouch_a = mc[1] + ms[1] + 2.0 + eff / 2
        film |= inside_ellipsoid(q, (0, pouch_a, mc[2] + 6), (30, 1.0 + eff / 2, 28))
        for c, semi in self.condyles.values():
            film |= inside_ellipsoid(q, (c[0], c[1] - semi[1] - 1.5, c[2] + 6), (11, 1.5 + eff / 3, 14))
        codes[film] = T.FLUID

        d2_acl, t_acl = segment_distance2(q, self.acl_femoral_k, self.acl_tibial_k)
        if self.acl_tear and self.acl_oedema_mm > 0:
            codes[(d2_acl <= self.acl_oedema_mm**2) & (t_acl > 0.12) & (t_acl < 0.88)] = T.OEDEMA

        # Tibial cartilage, menisci.
        top = self.plateau_surface(m, a)
        tm, ta = (float(x) for x in self.tibia_semi_mm)
        ac = np.float32(self.tibia_centre_a_mm)
        plateau_r2 = (m * np.float32(1 / tm)) ** 2 + ((a - ac) * np.float32(1 / ta)) ** 2
        shrunk_r2 = (m * np.float32(1 / (tm - 3))) ** 2 + ((a - ac) * np.float32(1 / (ta - 3))) ** 2
        codes[(shrunk_r2 <= 1) & (s > top) & (s <= top + 2.2) & (np.abs(m) > 7)] = T.CARTILAGE
        for side, sign, r_out, opening in (("medial", 1.0, 18.0, 35.0), ("lateral", -1.0, 16.0, 22.0)):
            cm, ca = sign * 22.0, self.tibia_centre_a_mm - (1.0 if side == "medial" else -1.0)
            dm, dA = m - np.float32(cm), a - np.float32(ca)
            rho = np.sqrt(dm * dm + dA * dA)
            r_in = 8.5 if self.meniscus_horns_mm is None else self._meniscus_inner_radius(side, r_out, dA, rho)
            h = 6.5 * np.clip((rho - r_in) / (r_out - r_in), 0, 1)
            cos_open = (-sign * dm) / np.maximum(rho, 1e-3)  # towards the notch
            ring = (rho >= r_in) & (rho <= r_out) & (cos_open < np.cos(np.radians(opening)))
            codes[ring & (s >= top) & (s <= top + h)] = T.MENISCUS

        # Ligaments and tendons.
        for points, radius in (self.side_tendons or {}).values():
            for p0, p1 in zip(points[:-1], points[1:], strict=True):
                codes[segment_distance2(q, p0, p1)[0] <= np.float32(radius * radius)] = T.TENDON
        acl = (d2_acl <= self.acl_radius_mm**2)
        if self.clinical:
            self._clinical_acl(codes, q, acl, t_acl)
        else:
            if self.acl_tear:
                t0, t1 = self.tear_interval
                acl &= (t_acl < t0) | (t_acl > t1)
            codes[acl] = T.ACL
        pcl = self.pcl_points_k
        for p0, p1 in zip(pcl[:-1], pcl[1:], strict=True):
            codes[segment_distance2(q, p0, p1)[0] <= 5.0**2] = T.PCL
        pc, psemi = self.patella
        inferior_pole = (0.0, pc[1] - 2.0, pc[2] - psemi[2] + 3.0)
        superior_pole = (0.0, pc[1] - 2.0, pc[2] + psemi[2] - 3.0)
        tuberosity = (0.0, ta + ac - 3.0, self.plateau_top_mm - 38.0)
        sh = self.patellar_tendon_m_mm
        for off in (-6.0, 0.0, 6.0):
            codes[segment_distance2(q, (off, *inferior_pole[1:]), (off + sh, *tuberosity[1:]))[0] <= 3.5**2] = T.TENDON
            codes[segment_distance2(q, (off, *superior_pole[1:]), (off, pc[1] - 8.0, 130.0))[0] <= 4.0**2] = T.TENDON
        mcl_m = self.condyles["medial"][0][0] + self.condyles["medial"][1][0] + 3.0
        codes[segment_distance2(q, (mcl_m, -4, 32), (mcl_m - 3, -2, -42))[0] <= self.mcl_radius_mm**2] = T.TENDON
        fib, fib_semi = self.fibula_head_k()
        lcl_m = self.condyles["lateral"][0][0] - self.condyles["lateral"][1][0] - 3.0
        lcl_end = (fib[0] - 2, fib[1], fib[2] + 6) if self.fibula_head is None else (
            fib[0], fib[1] + 0.3 * fib_semi[1], fib[2] + 0.8 * fib_semi[2])
        codes[segment_distance2(q, (lcl_m, -8, 28), lcl_end)[0] <= 2.5**2] = T.TENDON

        # Femoral and patellar cartilage.
        femur_in = np.zeros(m.shape, dtype=bool)
        for c, semi in self.condyles.values():
            r2 = ellipsoid_r2(q, c, semi)
            femur_in |= r2 <= 1
            shell = (ellipsoid_r2(q, c, semi + self.cartilage_mm) <= 1) & (r2 > 1) & (s < np.float32(c[2] + 4))
            codes[shell] = T.CARTILAGE
        meta_r2 = ellipsoid_r2(q, mc, ms)
        trochlea = (ellipsoid_r2(q, mc, ms + self.cartilage_mm) <= 1) & (meta_r2 > 1) & (a > 8) & (s < mc[2])
        codes[trochlea] = T.CARTILAGE
        pat_r2 = self._patella_r2(q, 0.0)
        codes[(self._patella_r2(q, 3.0) <= 1) & (pat_r2 > 1) & (a < np.float32(pc[1]))] = T.CARTILAGE

        # Bones: cortex, then marrow inside it.
        cortex = 1.6
        shaft_d2 = m * m + (a + np.float32(3.0)) ** 2
        r_f = self.femur_shaft_radius_mm
        femur = femur_in | (meta_r2 <= 1) | ((shaft_d2 <= r_f * r_f) & (s > mc[2]))
        femur_marrow = (meta_r2 <= 1) & (ellipsoid_r2(q, mc, ms - cortex) <= 1)
        for c, semi in self.condyles.values():
            femur_marrow |= ellipsoid_r2(q, c, semi - cortex) <= 1
        femur_marrow |= (shaft_d2 <= (r_f - 3.5) ** 2) & (s > mc[2])
        t_base = np.float32(self.plateau_top_mm - 20.0)
        t_cyl = (plateau_r2 <= 1) & (s <= top) & (s >= t_base)
        taper = ellipsoid_r2(q, (0, self.tibia_centre_a_mm, t_base), (tm, ta, 32.0)) <= 1
        taper &= s < t_base
        t_shaft_d2 = m * m + (a - ac) ** 2
        tibia = t_cyl | taper | ((t_shaft_d2 <= 14.0**2) & (s < t_base))
        eminence = inside_ellipsoid(q, (0, self.tibia_centre_a_mm + 1, self.plateau_top_mm), (8, 7, 4.5))
        tibia |= eminence
        tibia_marrow = (shrunk_r2 <= 1) & (s <= top - cortex) & (s >= t_base)
        taper_marrow = ellipsoid_r2(q, (0, self.tibia_centre_a_mm, t_base), (tm - cortex, ta - cortex, 30.0)) <= 1
        tibia_marrow |= taper_marrow & (s < t_base)
        tibia_marrow &= ~((t_shaft_d2 > 10.5**2) & (s < t_base - 25))
        if self.fibula_head is None:
            fibula = inside_ellipsoid(q, fib, (9.0, 9.0, 11.0)) | (
                ((m - np.float32(fib[0])) ** 2 + (a - np.float32(fib[1])) ** 2 <= 6.5**2) & (s < fib[2])
            )
            fib_marrow = inside_ellipsoid(q, fib, (7.5, 7.5, 9.5))
        else:
            neck = (m - np.float32(fib[0] + 2.0)) ** 2 + (a - np.float32(fib[1])) ** 2
            fibula = inside_ellipsoid(q, fib, fib_semi) | ((neck <= 7.0**2) & (s < fib[2]))
            fib_marrow = inside_ellipsoid(q, fib, fib_semi - cortex) | ((neck <= 4.5**2) & (s < fib[2]))
        patella = pat_r2 <= 1
        pat_marrow = self._patella_r2(q, -cortex) <= 1
        codes[femur | tibia | fibula | patella] = T.CORTEX
        marrow = femur_marrow | tibia_marrow | fib_marrow | pat_marrow | (eminence & (s < top))
        codes[marrow] = T.MARROW
        if self.bone_bruise:
            lat = self.condyles["lateral"][0]
            bruise = inside_ellipsoid(q, (lat[0], lat[1] + 8.0, lat[2] - 12.0), (9, 10, 7))
            bruise |= inside_ellipsoid(q, (lat[0] + 2, self.tibia_centre_a_mm - 16, self.plateau_top_mm - 9), (9, 8, 7))
            codes[marrow & bruise] = T.BONE_BRUISE
        return codes

    def _meniscus_inner_radius(self, side: str, r_out: float, d_anterior: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """Clinical menisci: inner radius of the ring so that its width is ``meniscus_horns_mm`` (the medial
        meniscus widening from its anterior to its posterior horn, the lateral one of even width)."""
        ant, post, lat = self.meniscus_horns_mm
        if side == "lateral":
            return np.float32(r_out - lat)
        towards_front = (np.float32(1.0) + d_anterior / np.maximum(rho, np.float32(1e-3))) * np.float32(0.5)
        return np.float32(r_out - post) + np.float32(post - ant) * towards_front

    def _clinical_acl(self, codes: np.ndarray, q: Coords, acl: np.ndarray, t_acl: np.ndarray) -> None:
        """Paint the clinical ACL by grade: intact; partial (the medial half of the fibres missing over the tear,
        the rest swollen with increased signal); complete (a gap, a femoral stump, a wavy sagging tibial stump)."""
        T = ClinicalKneeTissue
        t0, t1 = self.tear_interval
        if self.acl_grade == "partial":
            f_m, t_m = float(self.acl_femoral_k[0]), float(self.acl_tibial_k[0])
            m_axis = np.float32(f_m) + t_acl * np.float32(t_m - f_m)
            in_tear = (t_acl >= t0) & (t_acl <= t1)
            damaged = acl & (t_acl >= t0 - 0.12) & (t_acl <= t1 + 0.12)
            codes[acl & ~damaged] = T.ACL
            codes[damaged & ~(in_tear & (q[0] > m_axis))] = T.ACL_DAMAGED
        elif self.acl_grade == "complete":
            codes[acl & (t_acl < t0)] = T.ACL_DAMAGED
            stump = self.acl_stump_k
            if stump is not None:  # only the points in the stump's bounding box (speed)
                r = self.acl_radius_mm
                lo, hi = stump.min(axis=0) - r - 0.5, stump.max(axis=0) + r + 0.5
                box = np.ones(q[0].shape, dtype=bool)
                for i in range(3):
                    box &= (q[i] >= np.float32(lo[i])) & (q[i] <= np.float32(hi[i]))
                idx = np.flatnonzero(box)
                sub = tuple(x.reshape(-1)[idx] for x in q)
                hit = np.zeros(idx.size, dtype=bool)
                for p0, p1 in zip(stump[:-1], stump[1:], strict=True):
                    hit |= segment_distance2(sub, p0, p1)[0] <= np.float32(r * r)
                codes.reshape(-1)[idx[hit]] = T.ACL_DAMAGED
        else:
            codes[acl] = T.ACL


def sample_knee(rng: np.random.Generator, acl_tear: bool) -> KneeAnatomy:
    """One random knee: side, pose, size, joint effusion, ACL intact or torn (gap + oedema)."""
    laterality = "R" if rng.uniform() < 0.5 else "L"
    side = 1.0 if laterality == "R" else -1.0
    # Canonical → LPS before the pose: m = ±x (towards the midline), a = -y (anterior), s = +z.
    base_axes = np.array([[side, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    pose = np.eye(3)
    for axis in ([1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]):
        pose = rotation_matrix(axis, np.radians(_u(rng, -15, 15))) @ pose
    axes = (pose @ base_axes.T).T
    origin = np.array([-side * _u(rng, 85, 105), _u(rng, -10, 10), _u(rng, -500, -460)])

    k = _u(rng, 0.92, 1.08)  # overall size
    med_c = np.array([25.0, -6.0 - _u(rng, 0, 2), 23.5]) * k
    lat_c = np.array([-25.0, -4.0 + _u(rng, 0, 1), 24.0]) * k
    condyles = {
        "medial": (med_c, np.array([16.0, 27.0, 21.0]) * k),
        "lateral": (lat_c, np.array([15.0, 25.0, 21.0]) * k),
    }
    metaphysis = (np.array([0.0, 0.0, 50.0]) * k, np.array([40.0, 26.0, 32.0]) * k)
    tear = (0.0, 0.0)
    if acl_tear:
        t0 = _u(rng, 0.35, 0.55)
        tear = (t0, t0 + _u(rng, 0.2, 0.3))
    gains = rng.uniform(0.92, 1.08, size=_N_TISSUES)
    signal = np.array([_PD_FS_SIGNAL[KneeTissue(i)] for i in range(_N_TISSUES)]) * gains
    signal[KneeTissue.AIR] = 0.0
    return KneeAnatomy(
        origin_lps=origin,
        axes_lps=axes,
        laterality=laterality,
        acl_tear=bool(acl_tear),
        condyles=condyles,
        metaphysis=metaphysis,
        femur_shaft_radius_mm=15.0 * k,
        tibia_semi_mm=np.array([39.0, 27.0]) * k,
        tibia_centre_a_mm=-4.0 * k,
        plateau_top_mm=-3.5,
        posterior_slope=float(np.tan(np.radians(_u(rng, 4, 9)))),
        patella=(np.array([0.0, 39.0, 34.0]) * k, np.array([22.0, 9.0, 20.0]) * k),
        acl_femoral_k=np.array([-11.0, -15.0, 15.0]) * k,
        acl_tibial_k=np.array([3.0, 12.0, -3.5]) * k,
        acl_radius_mm=_u(rng, 4.0, 5.0),
        tear_interval=tear,
        bone_bruise=bool(acl_tear and rng.uniform() < 0.8),
        pcl_points_k=np.array([[10.0, 2.0, 16.0], [5.0, -14.0, 12.0], [1.0, -24.0, -12.0]]) * k,
        effusion_mm=_u(rng, 4.0, 9.0) if acl_tear else _u(rng, 0.5, 3.0),
        limb_semi_mm=np.array([_u(rng, 56, 64), _u(rng, 57, 62)]) * k,
        limb_centre_a_mm=-4.0,
        fat_mm=_u(rng, 4.0, 12.0),
        cartilage_mm=_u(rng, 2.0, 2.8),
        signal=signal,
    )


@dataclass
class KneeStack:
    """One planned stack: its planes in acquisition order, slice thickness and spacing (mm)."""

    view: str  # "SAG", "COR" or "AX"
    planes: list[ImagePlane]
    thickness_mm: float
    spacing_mm: float


#: In-plane hints per view (LPS): columns towards x_hint, rows towards y_hint (scanner habit).
_HINTS = {
    "SAG": ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),
    "COR": ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),
    "AX": ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
}


#: Coverage of the simple knee's stacks in the canonical frame: (centre_k, half extent along the normal, mm).
DEFAULT_COVERAGE = {"SAG": (np.array([0.0, 0.0, 10.0]), 50.0), "COR": (np.array([0.0, -2.0, 10.0]), 47.0),
                    "AX": (np.array([0.0, 0.0, 8.0]), 50.0)}


def plan_knee_stacks(
    anatomy: KneeAnatomy, rng: np.random.Generator, matrix: int | None = None,
    fov_mm: tuple[float, float] = (130.0, 150.0), coverage: dict[str, tuple[np.ndarray, float]] | None = None,
) -> dict[str, KneeStack]:
    """Sagittal, coronal and axial stacks planned on the knee's landmarks (3–4 mm slices).

    Axial ⟂ the tibial shaft axis; coronal contains the posterior condylar line and the shaft
    axis; sagittal ⟂ the posterior condylar line. Each normal gets a planning error of up to 3°.
    Pixels are sub-millimetre (field of view 130–150 mm over 256–320 pixels by default).
    ``coverage``: per view (centre_k, half extent along the normal in mm); default ``DEFAULT_COVERAGE``.
    """
    ax = anatomy.axes_lps
    shaft = unit(ax[2])
    lat_p, med_p = anatomy.posterior_condylar_points_k()
    pcl_line = orthonormal_in_plane((med_p - lat_p) @ ax, shaft)
    normals = {
        "SAG": pcl_line,
        "COR": unit(np.cross(pcl_line, shaft)),
        "AX": shaft,
    }
    # Coverage in the canonical frame: (centre_k, half extent along the normal) per view.
    coverage = DEFAULT_COVERAGE if coverage is None else {**DEFAULT_COVERAGE, **coverage}
    stacks: dict[str, KneeStack] = {}
    for view in ("SAG", "COR", "AX"):
        n_hat = perturb_direction(rng, normals[view], 3.0)
        x0, y0 = plane_axes(n_hat, *_HINTS[view])
        x, y = rotate_in_plane(x0, y0, _u(rng, -5, 5))
        normal = unit(np.cross(x, y))
        thickness = round(_u(rng, 3.0, 4.0), 2)
        spacing = round(thickness + _u(rng, 0.0, 0.4), 2)
        centre_k, half = coverage[view]
        n_slices = int(2 * round(half / spacing) + 1)
        centre = anatomy.frame_to_lps(centre_k) + _u(rng, -4, 4) * x + _u(rng, -4, 4) * y
        shape, px = series_matrix(rng, fov_mm, matrix, sizes=(256, 288, 320), non_square_probability=0.25)
        offsets = (np.arange(n_slices) - (n_slices - 1) / 2) * spacing
        planes = [ImagePlane.centred(centre + o * normal, x, y, px, shape) for o in offsets]
        stacks[view] = KneeStack(view, planes, thickness, spacing)
    return stacks



def render_knee_slice(
    anatomy: KneeAnatomy, plane: ImagePlane, thickness_mm: float, rng: np.random.Generator, look: ImageLook
) -> np.ndarray:
    """One knee image (uint16, rows × cols): partial volume over ``thickness_mm``, PSF, bias, noise."""
    offsets = slice_offsets_mm(thickness_mm, look.n_sub)
    pts = slice_points_lps(plane, offsets).reshape(-1, 3)
    q = to_frame(pts, anatomy.origin_lps, anatomy.axes_lps)
    codes = anatomy.codes_k(q).reshape(look.n_sub, *plane.shape_px)
    signal = signal_from_codes(codes, anatomy.signal)
    return finish_image(signal, plane, rng, look.bias, look.noise_sigma, look.scale, look.psf_mm)
