"""The clinically realistic synthetic knee (``planessl phantom knee --realism clinical``).

Built on the simple knee (``knee.py``: frames, tissue painter, stack planning), it adds what makes
a real knee exam asymmetric and harder to read:

- anatomy: the medial femoral condyle longer front to back and lower than the lateral one; a
  concave medial and a convex lateral tibial plateau; the fibular head posterolateral, its top
  8–15 mm below the lateral plateau; a patella whose lateral facet is wider than the medial one;
  a patellar tendon inserting lateral of the midline, a broad medial and a thin lateral collateral
  ligament (to the fibular head); the menisci as seen on sagittal images, the medial one C-shaped with
  a posterior horn about twice as wide as its anterior horn (11–14 against 5.5–7 mm), the lateral one
  of even width (8.5–10 mm) so that its two horns look alike; the tendons found on one side only: the
  popliteus (lateral, through the hiatus behind the lateral meniscus), the semimembranosus (inserting
  posteromedially on the tibia) and the biceps femoris (to the fibular head);
- coverage: the sagittal stack spans the bone plus 0.5–3 mm on each side (not a fixed ±50 mm);
- ACL findings as radiologists grade them (``ACL_GRADES``): intact; partial tear (the medial half
  of the fibres missing over the tear, the rest swollen with increased signal, a little oedema);
  complete tear (a gap, a short femoral stump, a wavy sagging tibial stump, more oedema). The
  secondary signs overlap between classes: a joint effusion in a quarter of intact knees, a bone
  bruise in 5 % of intact, 35 % of partially and 70 % of completely torn knees;
- acquisition: the heart's scanners A–D (``sites.py``: names, field strengths) running knee
  protocols: proton density with or without fat saturation, or T2 with fat saturation
  (``KNEE_SEQUENCES``); coil bias, spatially varying Rician noise (more at 1.5 T), point spread.

Tissue codes are ``knee.ClinicalKneeTissue``. All positions are patient LPS millimetres; the
anatomy is written in the canonical knee frame (``knee.py``: m medial, a anterior, s superior).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..geometry.planes import ImagePlane
from .knee import ClinicalKneeTissue, KneeAnatomy, acl_torn, sample_knee
from .render import slice_offsets_mm, slice_points_lps
from .shapes import to_frame
from .sites import SITES, Sequence, Site, SiteLook, finish_clinical_image, random_site_look

__all__ = [
    "ACL_GRADES",
    "KNEE_SEQUENCES",
    "KNEE_SITES",
    "draw_acl_grade",
    "sample_clinical_knee",
    "clinical_knee_coverage",
    "knee_site_look",
    "render_clinical_knee_slice",
    "clinical_knee_settings",
    "series_description",
]

ACL_GRADES = ("intact", "partial", "complete")

T = ClinicalKneeTissue
N_CLINICAL_KNEE_TISSUES = max(int(t) for t in ClinicalKneeTissue) + 1

#: Relative signal per tissue (fluid = 1 with fat saturation). PD without fat saturation: fat and marrow
#: brightest, oedema and bone bruise barely stand out of the marrow; T2 FS: fluid and oedema bright, the rest dark.
_PD = {
    "AIR": 0.0, "SKIN": 0.7, "FAT": 1.0, "MUSCLE": 0.35, "MARROW": 0.9, "CORTEX": 0.02, "CARTILAGE": 0.55,
    "FLUID": 0.75, "MENISCUS": 0.04, "ACL": 0.15, "PCL": 0.06, "TENDON": 0.05, "OEDEMA": 0.65,
    "BONE_BRUISE": 0.62, "VESSEL": 0.1, "ACL_DAMAGED": 0.42,
}
_PD_FS = {
    "AIR": 0.0, "SKIN": 0.35, "FAT": 0.13, "MUSCLE": 0.3, "MARROW": 0.17, "CORTEX": 0.02, "CARTILAGE": 0.5,
    "FLUID": 1.0, "MENISCUS": 0.04, "ACL": 0.12, "PCL": 0.05, "TENDON": 0.05, "OEDEMA": 0.75,
    "BONE_BRUISE": 0.55, "VESSEL": 0.08, "ACL_DAMAGED": 0.45,
}
_T2_FS = {
    "AIR": 0.0, "SKIN": 0.2, "FAT": 0.07, "MUSCLE": 0.15, "MARROW": 0.09, "CORTEX": 0.01, "CARTILAGE": 0.3,
    "FLUID": 1.0, "MENISCUS": 0.02, "ACL": 0.07, "PCL": 0.03, "TENDON": 0.03, "OEDEMA": 0.8,
    "BONE_BRUISE": 0.6, "VESSEL": 0.06, "ACL_DAMAGED": 0.5,
}

#: Knee protocols (turbo spin echo); the scan option FS marks fat saturation.
KNEE_SEQUENCES: dict[str, Sequence] = {
    "PD": Sequence("PD", "tse2d_pd", "SE", "SK", 2800.0, 30.0, (120.0, 150.0), False, _PD),
    "PDFS": Sequence("PDFS", "tse2d_pd_fs", "SE", "SK", 3200.0, 33.0, (120.0, 150.0), False, _PD_FS),
    "T2FS": Sequence("T2FS", "tse2d_t2_fs", "SE", "SK", 4200.0, 75.0, (120.0, 150.0), False, _T2_FS),
}
_FAT_SAT = {"PD": False, "PDFS": True, "T2FS": True}
_DESCRIPTION = {"PD": "PD", "PDFS": "PD FS", "T2FS": "T2 FS"}

#: The heart's scanners (same names and field strengths) with their knee protocol mix; knee series are
#: stored in the standard orientation (no display rotation or flip).
KNEE_SITES: dict[str, Site] = {
    code: dataclasses.replace(SITES[code], sequences=mix, display_rotation_deg=0, display_flip=False)
    for code, mix in (
        ("A", {"PDFS": 0.5, "PD": 0.3, "T2FS": 0.2}),
        ("B", {"PDFS": 0.8, "T2FS": 0.2}),
        ("C", {"PD": 0.5, "PDFS": 0.5}),
        ("D", {"PDFS": 0.6, "PD": 0.2, "T2FS": 0.2}),
    )
}

#: Drawn per subject (recorded in the cohort's settings file).
_RANGES = {
    "medial_condyle_lower_mm": (1.5, 3.5),
    "medial_condyle_semi_ap_mm": (27.5, 30.0),
    "lateral_condyle_semi_ap_mm": (23.5, 25.5),
    "medial_plateau_concavity_mm": (1.5, 3.0),
    "lateral_plateau_convexity_mm": (1.0, 2.0),
    "fibular_head_top_below_plateau_mm": (8.0, 15.0),
    "fibular_head_semi_mm": (10.0, 12.0),
    "patella_ridge_medial_of_centre_mm": (2.0, 5.0),
    "patella_medial_facet_semi_mm": (15.0, 18.0),
    "patella_lateral_facet_semi_mm": (22.0, 25.0),
    "patellar_tendon_lateral_shift_mm": (3.0, 6.0),
    "mcl_radius_mm": (2.5, 3.5),
    "sagittal_margin_mm": (0.5, 3.0),
    "medial_meniscus_anterior_horn_mm": (5.5, 7.0),
    "medial_meniscus_posterior_horn_mm": (11.0, 14.0),
    "lateral_meniscus_horn_mm": (8.5, 10.0),
    "popliteus_tendon_radius_mm": (2.2, 2.8),
    "semimembranosus_tendon_radius_mm": (3.5, 4.5),
    "biceps_femoris_tendon_radius_mm": (3.0, 4.0),
    "coil_bias_over_120mm": (1.15, 1.45),
    "psf_mm": (0.3, 0.55),
}
#: Secondary signs per grade: (probability of an effusion, its range mm), bone-bruise probability, oedema radius mm.
_FINDINGS = {
    "intact": {"effusion_probability": 0.25, "effusion_mm": (3.0, 7.0), "dry_mm": (0.5, 3.0),
               "bone_bruise_probability": 0.05, "oedema_mm": (0.0, 0.0), "tear_length": (0.0, 0.0)},
    "partial": {"effusion_probability": 0.7, "effusion_mm": (2.5, 7.0), "dry_mm": (0.5, 3.0),
                "bone_bruise_probability": 0.35, "oedema_mm": (3.5, 6.0), "tear_length": (0.15, 0.25)},
    "complete": {"effusion_probability": 0.85, "effusion_mm": (3.0, 9.0), "dry_mm": (0.5, 3.0),
                 "bone_bruise_probability": 0.7, "oedema_mm": (5.5, 8.0), "tear_length": (0.2, 0.3)},
}
#: Noise relative to the 3 T level (SNR grows with the field).
_NOISE_BY_FIELD = {1.5: 1.3, 3.0: 0.85}


def draw_acl_grade(seed: int, index: int) -> str:
    """ACL grade of subject ``index``: torn exactly as ``knee.acl_torn`` (two per block of five), and of the two
    torn knees of a block one partial and one complete (which by the block's generator). So over whole blocks
    60 % intact, 20 % partial, 20 % complete, independent of the cohort size.
    """
    if not acl_torn(seed, index):
        return "intact"
    block, pos = divmod(int(index), 5)
    torn = [p for p in range(5) if acl_torn(seed, block * 5 + p)]
    partial_first = bool(np.random.default_rng([int(seed), block, 7927]).integers(0, 2))
    return "partial" if (pos == torn[0]) == partial_first else "complete"


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def sample_clinical_knee(rng: np.random.Generator, grade: str, sequence: Sequence) -> KneeAnatomy:
    """One clinical knee with ACL ``grade`` imaged with ``sequence`` (module docstring)."""
    if grade not in ACL_GRADES:
        raise ValueError(f"unknown ACL grade {grade!r} (grades: {', '.join(ACL_GRADES)})")
    base = sample_knee(rng, grade != "intact")  # side, pose, size, limb, cartilage, ACL course as the simple knee
    k = float(base.femur_shaft_radius_mm / 15.0)
    r = _RANGES
    med_a = (-6.0 - float(rng.uniform(0, 2))) * k
    med_c = np.array([25.0 * k, med_a, 23.5 * k - _u(rng, r["medial_condyle_lower_mm"])])
    lat_c = np.array([-25.0, -9.0 + float(rng.uniform(0, 1)), 24.5]) * k
    condyles = {
        "medial": (med_c, np.array([16.0 * k, _u(rng, r["medial_condyle_semi_ap_mm"]) * k, 21.0 * k])),
        "lateral": (lat_c, np.array([15.0 * k, _u(rng, r["lateral_condyle_semi_ap_mm"]) * k, 20.5 * k])),
    }
    tm, ta = (float(x) for x in base.tibia_semi_mm)
    ac = base.tibia_centre_a_mm
    semi_f = np.array([_u(rng, r["fibular_head_semi_mm"]), _u(rng, r["fibular_head_semi_mm"]),
                       _u(rng, r["fibular_head_semi_mm"]) + 1.0])
    drop = _u(rng, r["fibular_head_top_below_plateau_mm"])
    fib_c = np.array([-tm + 0.5 * semi_f[0], ac - 0.55 * ta - 0.7 * semi_f[1], base.plateau_top_mm - drop - semi_f[2]])
    facets = (_u(rng, r["patella_ridge_medial_of_centre_mm"]), _u(rng, r["patella_medial_facet_semi_mm"]) * k,
              _u(rng, r["patella_lateral_facet_semi_mm"]) * k, 0.5, 0.3)

    f = _FINDINGS[grade]
    tear = (0.0, 0.0)
    stump = None
    if grade != "intact":
        t0 = float(rng.uniform(0.3, 0.5))
        tear = (t0, t0 + _u(rng, f["tear_length"]))
    if grade == "complete":
        fem, tib = base.acl_femoral_k, base.acl_tibial_k
        axis = tib - fem
        end = fem + tear[1] * axis + np.array([0.0, float(rng.uniform(2.0, 5.0)), -float(rng.uniform(4.0, 8.0))]) * k
        perp = np.cross(axis, [1.0, 0.0, 0.0])
        perp /= np.linalg.norm(perp)
        amp, cycles = float(rng.uniform(1.5, 3.0)), float(rng.uniform(1.0, 2.0))
        phase = float(rng.uniform(0, 2 * np.pi))
        u = np.linspace(0.0, 1.0, 7)[:, None]
        stump = tib + u * (end - tib) + amp * np.sin(2 * np.pi * cycles * u + phase) * np.sin(np.pi * u) * perp
    wet = rng.uniform() < f["effusion_probability"]
    effusion = _u(rng, f["effusion_mm"] if wet else f["dry_mm"])
    bruise = bool(rng.uniform() < f["bone_bruise_probability"])
    gains = rng.uniform(0.9, 1.1, size=N_CLINICAL_KNEE_TISSUES)
    signal = np.array([sequence.contrast[T(i).name] for i in range(N_CLINICAL_KNEE_TISSUES)]) * gains
    signal[T.AIR] = 0.0
    knee = dataclasses.replace(
        base,
        condyles=condyles,
        tear_interval=tear,
        bone_bruise=bruise,
        effusion_mm=effusion,
        signal=signal,
        clinical=True,
        acl_grade=grade,
        acl_oedema_mm=_u(rng, f["oedema_mm"]) if grade != "intact" else 0.0,
        plateau_shape_mm=(_u(rng, r["medial_plateau_concavity_mm"]), _u(rng, r["lateral_plateau_convexity_mm"])),
        fibula_head=(fib_c, semi_f),
        patella_facets=facets,
        patellar_tendon_m_mm=-_u(rng, r["patellar_tendon_lateral_shift_mm"]),
        mcl_radius_mm=_u(rng, r["mcl_radius_mm"]),
        acl_stump_k=stump,
    )
    # Drawn last, so that every earlier draw (and so the rest of the knee) is the same as without them.
    return dataclasses.replace(knee, meniscus_horns_mm=(
        _u(rng, r["medial_meniscus_anterior_horn_mm"]), _u(rng, r["medial_meniscus_posterior_horn_mm"]),
        _u(rng, r["lateral_meniscus_horn_mm"])), side_tendons=_side_tendons(knee, rng))


def _side_tendons(knee: KneeAnatomy, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, float]]:
    """The tendons that pass on one side of the joint only (canonical frame polylines, radius mm):

    - popliteus (lateral): from the lateral surface of the lateral femoral condyle, below the lateral collateral
      ligament's origin, through the popliteal hiatus behind the lateral meniscus' posterior horn, down to its
      muscle on the back of the tibia;
    - semimembranosus (medial): a thick tendon inserting on the posteromedial tibial condyle just below the joint
      line, running up behind the medial femoral condyle;
    - biceps femoris (lateral): inserting on the fibular head beside the lateral collateral ligament, running up
      behind the lateral side of the femur.
    """
    r = _RANGES
    tm, ta = (float(x) for x in knee.tibia_semi_mm)
    ac, top = float(knee.tibia_centre_a_mm), float(knee.plateau_top_mm)
    lat_c, lat_s = knee.condyles["lateral"]
    fib_c, fib_s = knee.fibula_head_k()
    hiatus = 16.0 + 2.5  # just outside the lateral meniscus ring (centre m = -22, outer radius 16), at 45 degrees
    popliteus = np.array([
        [lat_c[0] - 0.85 * lat_s[0], lat_c[1] + 0.1 * lat_s[1], lat_c[2] - 0.55 * lat_s[2]],
        [-22.0 - hiatus / np.sqrt(2), ac + 1.0 - hiatus / np.sqrt(2), top + 1.0],
        [-0.45 * tm, ac - ta - 2.0, top - 14.0],
    ])
    semimembranosus = np.array([
        [0.8 * tm, ac - 0.75 * ta, top - 9.0], [0.85 * tm + 3.0, ac - ta - 8.0, top + 25.0],
        [0.85 * tm + 5.0, ac - ta - 12.0, top + 90.0],
    ])
    biceps = np.array([
        [fib_c[0] - 0.5 * fib_s[0], fib_c[1], fib_c[2] + 0.5 * fib_s[2]], [-tm - 4.0, ac - 0.9 * ta, top + 30.0],
        [-tm - 6.0, ac - ta - 6.0, top + 90.0],
    ])
    return {
        "popliteus": (popliteus, _u(rng, r["popliteus_tendon_radius_mm"])),
        "semimembranosus": (semimembranosus, _u(rng, r["semimembranosus_tendon_radius_mm"])),
        "biceps_femoris": (biceps, _u(rng, r["biceps_femoris_tendon_radius_mm"])),
    }


def clinical_knee_coverage(anatomy: KneeAnatomy, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, float]]:
    """Sagittal coverage (``plan_knee_stacks``' ``coverage``): the bone from the medial condyle (or the tibia) to
    the fibular head (or the lateral condyle) along m, plus a 0.5–3 mm margin drawn on each side."""
    med_c, med_s = anatomy.condyles["medial"]
    lat_c, lat_s = anatomy.condyles["lateral"]
    fib_c, fib_s = anatomy.fibula_head_k()
    tm = float(anatomy.tibia_semi_mm[0])
    medial = max(float(med_c[0] + med_s[0]), tm) + _u(rng, _RANGES["sagittal_margin_mm"])
    lateral = min(float(lat_c[0] - lat_s[0]), float(fib_c[0] - fib_s[0]), -tm) - _u(rng, _RANGES["sagittal_margin_mm"])
    return {"SAG": (np.array([(medial + lateral) / 2, 0.0, 10.0]), (medial - lateral) / 2)}


def knee_site_look(rng: np.random.Generator, site: Site, sequence: Sequence, centre_lps: np.ndarray) -> SiteLook:
    """The site's acquisition look around the knee: the heart's (``sites.random_site_look``: coil bias, noise map)
    with a knee coil's milder bias, no banding, sharper point spread and noise that grows at 1.5 T."""
    look = random_site_look(rng, site, sequence, centre_lps, coil_bias=_RANGES["coil_bias_over_120mm"])
    return dataclasses.replace(
        look, psf_mm=_u(rng, _RANGES["psf_mm"]), band_depth=0.0, ghost_probability=0.0,
        noise_sigma=look.noise_sigma * _NOISE_BY_FIELD.get(site.field_strength_t, 1.0),
    )


def render_clinical_knee_slice(anatomy: KneeAnatomy, plane: ImagePlane, thickness_mm: float,
                               rng: np.random.Generator, look: SiteLook) -> np.ndarray:
    """One clinical knee image (uint16, rows × cols): partial volume, point spread, coil bias, Rician noise."""
    offsets = slice_offsets_mm(thickness_mm, look.n_sub)
    pts = slice_points_lps(plane, offsets).reshape(-1, 3)
    q = to_frame(pts, anatomy.origin_lps, anatomy.axes_lps)
    codes = anatomy.codes_k(q).reshape(look.n_sub, *plane.shape_px)
    signal = anatomy.signal.astype(np.float32)[codes].mean(axis=0)
    return finish_clinical_image(signal, plane, rng, look, ghost=None)


def series_description(sequence: Sequence, view: str) -> tuple[str, str, str]:
    """(SeriesDescription, ProtocolName, ScanOptions) of a knee series, e.g. ("PD FS SAG", "pd_fs_sag", "FS")."""
    text = f"{_DESCRIPTION[sequence.name]} {view}"
    return text, text.lower().replace(" ", "_"), "FS" if _FAT_SAT[sequence.name] else ""


def clinical_knee_settings() -> dict:
    """Every range and probability the clinical knee draws from (for the cohort's settings file)."""
    return {
        "acl_grades": {"intact": 0.6, "partial": 0.2, "complete": 0.2,
                       "rule": "two torn knees per block of five subjects, one partial and one complete"},
        "anatomy_ranges": {k: list(v) for k, v in _RANGES.items()},
        "findings_by_grade": {g: {k: (list(v) if isinstance(v, tuple) else v) for k, v in f.items()}
                              for g, f in _FINDINGS.items()},
        "noise_factor_by_field_t": {str(k): v for k, v in _NOISE_BY_FIELD.items()},
    }
