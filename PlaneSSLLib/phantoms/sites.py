"""Scanner sites, sequences and their image look for the clinical heart phantom (``--realism clinical``).

A *site* is a fictional hospital scanner: vendor-like and institution-like names (written to the
DICOM headers), a field strength, the sequences it runs with their probabilities, and the way it
stores images in plane (a rotation by a multiple of 90° and an optional flip, as scanners differ
in their display conventions; the DICOM geometry always says the truth). A *sequence* is a
contrast look-up table (relative signal per tissue, blood = 1 for bSSFP) with its DICOM
acquisition attributes. ``SiteLook`` holds everything drawn per subject for the acquisition:
tissue gains, coil bias (30–60 % over the heart), a spatially varying noise level, off-resonance
banding (bSSFP, strongest at 3 T), respiratory ghosts; ``finish_clinical_image`` applies them.

All positions are patient LPS millimetres; every field is drawn from the subject's generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ..geometry.planes import ImagePlane, unit
from .render import BiasField, random_bias_field

__all__ = [
    "Site",
    "Sequence",
    "SITES",
    "SEQUENCES",
    "SiteLook",
    "parse_site_weights",
    "draw_site",
    "random_site_look",
    "finish_clinical_image",
    "site_settings",
]


@dataclass(frozen=True)
class Sequence:
    """A cine sequence: DICOM acquisition attributes and contrast (tissue name → relative signal)."""

    name: str  # short name in subjects.csv
    sequence_name: str  # DICOM SequenceName
    scanning_sequence: str
    sequence_variant: str
    repetition_time_ms: float
    echo_time_ms: float
    flip_angle_deg: tuple[float, float]  # drawn per subject
    banding: bool  # off-resonance dark bands (balanced SSFP only)
    contrast: Mapping[str, float]


#: Relative signals per tissue (names of ``heart_clinical.ClinicalTissue``). bSSFP: T2/T1 contrast,
#: blood and fluid bright, myocardium dark. Spoiled gradient echo: T1 weighting with inflow, so
#: blood is less bright and varies by slice, fat is bright, fluids (effusion, stomach) are dark.
_BSSFP = {
    "AIR": 0.0, "FAT": 0.82, "MUSCLE": 0.26, "LUNG": 0.06, "LIVER": 0.33, "SOFT": 0.42, "BONE": 0.45,
    "EPICARDIAL_FAT": 0.78, "LV_MYO": 0.24, "LV_BLOOD": 1.0, "RV_BLOOD": 0.96, "RV_WALL": 0.26,
    "LA_BLOOD": 0.93, "RA_BLOOD": 0.9, "AORTA": 0.95, "PAPILLARY": 0.26, "CSF": 0.9, "TRABECULAE": 0.3,
    "PERICARDIAL_FLUID": 0.85, "STOMACH": 0.9, "PULMONARY": 0.92, "VENA_CAVA": 0.88,
}
_SPGR = {
    "AIR": 0.0, "FAT": 0.95, "MUSCLE": 0.4, "LUNG": 0.07, "LIVER": 0.52, "SOFT": 0.45, "BONE": 0.5,
    "EPICARDIAL_FAT": 0.9, "LV_MYO": 0.38, "LV_BLOOD": 0.8, "RV_BLOOD": 0.76, "RV_WALL": 0.4,
    "LA_BLOOD": 0.72, "RA_BLOOD": 0.7, "AORTA": 0.85, "PAPILLARY": 0.4, "CSF": 0.2, "TRABECULAE": 0.44,
    "PERICARDIAL_FLUID": 0.25, "STOMACH": 0.22, "PULMONARY": 0.8, "VENA_CAVA": 0.74,
}

SEQUENCES: dict[str, Sequence] = {
    "bSSFP": Sequence("bSSFP", "bssfp2d_cine", "GR", "SS", 3.0, 1.5, (45.0, 70.0), True, _BSSFP),
    "SPGR": Sequence("SPGR", "spgr2d_cine", "GR", "SP", 5.5, 2.4, (12.0, 20.0), False, _SPGR),
}


@dataclass(frozen=True)
class Site:
    """A fictional scanner site (names are invented; they only need to differ like real ones do)."""

    code: str
    manufacturer: str
    model: str
    institution: str
    field_strength_t: float
    sequences: Mapping[str, float]  # sequence name → probability
    display_rotation_deg: int  # in-plane rotation of every stored image (multiple of 90)
    display_flip: bool  # stored mirrored (column direction reversed)


SITES: dict[str, Site] = {
    "A": Site("A", "Northwind Medical", "NW Aurora 1.5T", "Harbour General Hospital", 1.5,
              {"bSSFP": 0.85, "SPGR": 0.15}, 0, False),
    "B": Site("B", "Kestrel Imaging", "Kestrel K3", "Riverside University Clinic", 3.0,
              {"bSSFP": 1.0}, 90, False),
    "C": Site("C", "Northwind Medical", "NW Vega 1.5T", "Lakeside Regional Hospital", 1.5,
              {"bSSFP": 0.5, "SPGR": 0.5}, 0, True),
    "D": Site("D", "Orion Systems", "Orion Helix 3T", "Hillcrest Heart Centre", 3.0,
              {"bSSFP": 0.8, "SPGR": 0.2}, 270, False),
}


def parse_site_weights(text: str | None) -> tuple[tuple[str, float], ...]:
    """``"A=2,B=1"`` → (("A", 2.0), ("B", 1.0)); None or "" → every site with weight 1.

    Raises ValueError naming the problem (unknown site, bad or negative weight, all zero).
    """
    if not text:
        return tuple((code, 1.0) for code in SITES)
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        code, sep, value = part.partition("=")
        code = code.strip().upper()
        if code not in SITES:
            raise ValueError(f"unknown site {code!r} (sites: {', '.join(SITES)})")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"site {code}: weight {value!r} is not a number") from None
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"site {code}: weight must be a non-negative number, got {value!r}")
        out[code] = weight
    if not out or sum(out.values()) <= 0:
        raise ValueError("at least one site needs a positive weight")
    return tuple(sorted(out.items()))


def draw_site(rng: np.random.Generator, weights: tuple[tuple[str, float], ...], sites: Mapping[str, Site] = SITES,
              sequences: Mapping[str, Sequence] = SEQUENCES) -> tuple[Site, Sequence]:
    """A site (by ``weights``) and one of its sequences (by the site's own mix).

    ``sites`` / ``sequences``: the heart's by default; the clinical knee passes its own (``knee_clinical.py``:
    the same scanners A-D running knee protocols).
    """
    codes = [c for c, _ in weights]
    p = np.array([w for _, w in weights], np.float64)
    site = sites[codes[int(rng.choice(len(codes), p=p / p.sum()))]]
    names = list(site.sequences)
    q = np.array([site.sequences[n] for n in names], np.float64)
    return site, sequences[names[int(rng.choice(len(names), p=q / q.sum()))]]


@dataclass(frozen=True)
class SiteLook:
    """Per-subject acquisition: what ``finish_clinical_image`` needs besides the plane and the signal."""

    site: Site
    sequence: Sequence
    flip_angle_deg: float
    bias: BiasField  # coil sensitivity (strong, 30–60 % over the heart)
    noise_map: BiasField  # relative noise level in space (parallel-imaging g-factor like)
    noise_sigma: float  # relative to blood at the heart centre
    off_resonance_centre_lps: np.ndarray
    off_resonance_cycles_per_mm: np.ndarray  # (3,) linear term of the bSSFP phase (cycles of 2π per mm)
    off_resonance_curvature: float  # cycles per mm² (bands bend around the heart)
    band_depth: float  # 0 = no banding
    ghost_probability: float  # per series/slice: a breath-hold that was not held
    ghost_amplitude: tuple[float, float]
    blood_inflow: tuple[float, float]  # per-slice factor on blood signal (SPGR inflow); (1, 1) for bSSFP
    scale: float
    psf_mm: float
    n_sub: int = 3


def random_site_look(rng: np.random.Generator, site: Site, sequence: Sequence, heart_centre_lps: np.ndarray,
                     coil_bias: tuple[float, float] = (1.3, 1.6)) -> SiteLook:
    """Draw one subject's acquisition look at ``site`` with ``sequence`` around the heart centre.

    Coil bias: the receive field varies by a factor drawn from ``coil_bias`` over 120 mm (the
    heart), mostly anterior → posterior (anterior coil), plus a weaker random field. Noise: σ
    0.03–0.08 of blood, ×0.8–1.6 in space. bSSFP banding: 1–3 bands across a 300 mm field of
    view at 3 T (deep), 0.3–1.2 at 1.5 T (shallower).
    """
    c = np.asarray(heart_centre_lps, np.float64)
    # Strong quasi-linear receive gradient: a·cos(k·x + π/2) ≈ −a·k·x near the heart centre.
    wavelength = float(rng.uniform(500.0, 800.0))
    direction = unit(np.array([0.0, 1.0, 0.0]) + rng.normal(scale=0.5, size=3))
    ratio = float(rng.uniform(*coil_bias))
    amp = np.log(ratio) / (2 * np.sin(np.pi * 120.0 / wavelength))
    weak = random_bias_field(rng, c, wavelength_mm=(250.0, 500.0), strength=0.1)
    bias = BiasField(
        c,
        np.vstack([direction[None, :] * 2 * np.pi / wavelength, weak.wavevectors_per_mm]),
        np.concatenate([[amp], weak.amplitudes]),
        np.concatenate([[np.pi / 2], weak.phases_rad]),
    )
    noise_map = random_bias_field(rng, c + rng.normal(scale=40.0, size=3), wavelength_mm=(200.0, 400.0),
                                  strength=0.35)
    three_t = site.field_strength_t >= 2.5
    cycles = rng.uniform(1.0, 3.0) if three_t else rng.uniform(0.3, 1.2)
    band_dir = unit(rng.normal(size=3))
    curvature = float(rng.uniform(0.5, 2.0) * (1.5e-5 if three_t else 6e-6))
    depth = (float(rng.uniform(0.6, 0.9)) if three_t else float(rng.uniform(0.3, 0.6))) if sequence.banding else 0.0
    flip = float(rng.uniform(*sequence.flip_angle_deg))
    inflow = (0.8, 1.15) if sequence.name == "SPGR" else (1.0, 1.0)
    return SiteLook(
        site=site,
        sequence=sequence,
        flip_angle_deg=round(flip, 1),
        bias=bias,
        noise_map=noise_map,
        noise_sigma=float(rng.uniform(0.03, 0.08)),
        off_resonance_centre_lps=c + rng.normal(scale=30.0, size=3),
        off_resonance_cycles_per_mm=band_dir * cycles / 300.0,
        off_resonance_curvature=curvature,
        band_depth=depth,
        ghost_probability=float(rng.choice([0.0, 0.15, 0.4])),
        ghost_amplitude=(0.03, 0.12),
        blood_inflow=inflow,
        scale=float(rng.uniform(800.0, 1600.0)),
        psf_mm=float(rng.uniform(0.6, 1.1)),
    )


def _band_profile(look: SiteLook, points_lps: np.ndarray) -> np.ndarray:
    """bSSFP off-resonance profile (1 = no loss) at points ``(..., 3)``: dark where the phase nears π."""
    d = points_lps - look.off_resonance_centre_lps
    k = look.off_resonance_cycles_per_mm
    cycles = d[..., 0] * k[0] + d[..., 1] * k[1] + d[..., 2] * k[2]
    cycles = cycles + look.off_resonance_curvature * (d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2)
    phase = np.mod(cycles, 1.0) - 0.5  # band where the accumulated phase is π (half a cycle)
    return 1.0 - look.band_depth * np.exp(-(phase**2) / (2 * 0.035**2))


def finish_clinical_image(
    signal: np.ndarray, plane: ImagePlane, rng: np.random.Generator, look: SiteLook, ghost: tuple[int, float] | None,
    max_value: int = 4095,
) -> np.ndarray:
    """Relative signal (rows, cols) → uint16 pixels with the site's artefacts.

    Point spread, bSSFP banding, respiratory ghosts (``ghost`` = (axis, amplitude): copies shifted
    by a quarter of the field of view along the phase-encoding axis 0 = rows, 1 = columns), coil
    bias, Rician noise whose σ varies in space, scaling.
    """
    dr, dc = plane.spacing_mm
    img = gaussian_filter(signal.astype(np.float32), sigma=(look.psf_mm / dr, look.psf_mm / dc), mode="nearest")
    grid = plane.pixel_grid_lps()
    if look.band_depth > 0:
        img *= _band_profile(look, grid).astype(np.float32)
    if ghost is not None:
        axis, amp = ghost
        shift = img.shape[axis] // 4
        img = img + np.float32(amp) * (np.roll(img, shift, axis=axis) + np.roll(img, -shift, axis=axis))
    img *= look.bias(grid).astype(np.float32)
    sigma = (np.float32(look.noise_sigma) * look.noise_map(grid).astype(np.float32)).astype(np.float32)
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    mag = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    out = np.rint(mag * np.float32(look.scale))
    np.clip(out, 0, max_value, out=out)
    return out.astype(np.uint16)


def site_settings(sites: Mapping[str, Site] = SITES, sequences: Mapping[str, Sequence] = SEQUENCES) -> dict:
    """Every site and sequence definition (for the cohort's settings file; the heart's by default)."""
    return {
        "sites": {
            c: {
                "manufacturer": s.manufacturer, "model": s.model, "institution": s.institution,
                "field_strength_t": s.field_strength_t, "sequences": dict(s.sequences),
                "display_rotation_deg": s.display_rotation_deg, "display_flip": s.display_flip,
            }
            for c, s in sites.items()
        },
        "sequences": {
            n: {
                "sequence_name": q.sequence_name, "scanning_sequence": q.scanning_sequence,
                "sequence_variant": q.sequence_variant, "repetition_time_ms": q.repetition_time_ms,
                "echo_time_ms": q.echo_time_ms, "flip_angle_deg": list(q.flip_angle_deg), "banding": q.banding,
                "contrast": dict(q.contrast),
            }
            for n, q in sequences.items()
        },
        "look": {
            "coil_bias_over_120mm": [1.3, 1.6], "noise_sigma_of_blood": [0.03, 0.08], "noise_map_strength": 0.35,
            "band_cycles_per_300mm": {"3T": [1.0, 3.0], "1.5T": [0.3, 1.2]},
            "band_depth": {"3T": [0.6, 0.9], "1.5T": [0.3, 0.6]},
            "ghost_probability_per_series": [0.0, 0.15, 0.4], "ghost_amplitude": [0.03, 0.12],
            "spgr_blood_inflow_per_slice": [0.8, 1.15], "psf_mm": [0.6, 1.1], "tissue_gain": [0.8, 1.2],
        },
    }
