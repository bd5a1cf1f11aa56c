"""Synthetic cohorts written as real DICOM studies (+ labels), deterministic for a seed.

On-disk layout (``OUT`` = the cohort directory)::

    OUT/cohort.json                  anatomy, seed, layout, options, generator version, summaries
    OUT/subjects.csv                 heart: subject,ed_phase,es_phase,n_sax,pathology,site,sequence,field_strength_t
    OUT/labels.csv                   knee:  subject,acl_tear (clinical: + acl_grade,effusion_mm,bone_bruise)
    OUT/subjects.csv                 clinical knee: subject,laterality,site,sequence,field_strength_t
    OUT/subject_0003/study/...       DICOM files, one folder per series
    OUT/subject_0003/labels/sax_ed.nii.gz, sax_es.nii.gz   heart: ACDC labels of the SAX stack

Heart series folders: layout ``kaggle`` (Data Science Bowl style): ``sax_N`` (one series per
SAX slice holding its cine frames), ``2ch_N``, ``3ch_N``, ``4ch_N``; layout ``ukbb`` (UK Biobank
style): ``cine_sax`` (all slices × phases in one series), ``cine_2ch``, ``cine_3ch``, ``cine_4ch``.
Knee: ``sag_N``, ``cor_N``, ``ax_N``. Realism ``simple`` is the original look (heart: one bSSFP
site, normal hearts; knee: one PD FS look, nearly symmetric; the same files as before for a seed);
heart ``clinical`` (``heart_clinical.py``, ``sites.py``) adds pathology, surrounding anatomy, sites
and sequences, artefacts and breath-hold misregistration; knee ``clinical`` (``knee_clinical.py``)
an asymmetric joint, ACL grades with overlapping secondary signs, sites and sequences. A clinical
cohort writes every setting it drew from into ``cohort.json`` (``phantom_settings``).
Files are ``IM-<series number>-<instance number>.dcm``.

Determinism: subject ``k`` depends only on (seed, k) — its random generators are
``np.random.default_rng([seed, k, stream])`` — and every UID is a hash of the seed,
subject and series keys (``dicom.write.uid_from``); dates are fixed. Each subject is written into a temporary folder and
renamed into place, so an interrupted run never leaves half a subject.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_text
from ..dicom.nifti import write_label_nifti
from ..dicom.write import SeriesInfo, StudyInfo, build_mr_dataset, uid_from, write_dataset_atomic
from ..errors import PlaneSSLError
from ..geometry.planes import ImagePlane
from .heart import plan_heart_views, render_heart_cine, sample_heart
from .heart_clinical import (
    clinical_settings,
    draw_breath_holds,
    draw_pathology,
    plan_clinical_views,
    render_clinical_cine,
    sample_clinical_heart,
)
from .knee import KneeAnatomy, acl_torn, plan_knee_stacks, render_knee_slice, sample_knee
from .knee_clinical import (
    KNEE_SEQUENCES,
    KNEE_SITES,
    clinical_knee_coverage,
    clinical_knee_settings,
    draw_acl_grade,
    knee_site_look,
    render_clinical_knee_slice,
    sample_clinical_knee,
    series_description,
)
from .render import display_window, random_look
from .sites import Sequence, Site, draw_site, parse_site_weights, random_site_look, site_settings

__all__ = [
    "ANATOMIES",
    "LAYOUTS",
    "REALISMS",
    "DEFAULT_PHASES",
    "GENERATOR",
    "GENERATOR_VERSION",
    "CohortError",
    "CohortOptions",
    "subject_name",
    "clinical_knee_subject",
    "default_workers",
    "is_phantom_cohort",
    "read_cohort_options",
    "write_subject",
    "write_cohort",
]

ANATOMIES = ("heart", "knee")
LAYOUTS = ("kaggle", "ukbb")
#: Phantom looks (heart and knee): the original easy phantom, and the clinically realistic one.
REALISMS = ("simple", "clinical")
#: Cine phases per cardiac cycle by default (ED = phase 0; ES near 30–40 % of the cycle).
DEFAULT_PHASES = 8
GENERATOR = "planessl-phantom"
#: Bumped whenever the same seed would give different files (2: subjects.csv gained pathology, site,
#: sequence and field strength, cohort.json the realism and its settings; simple images and labels unchanged).
GENERATOR_VERSION = 2

_SUBJECT_RE = re.compile(r"^subject_\d{4,}$")
_TMP_PREFIX = ".tmp-"
_KNEE_SERIES = {"SAG": (2, "sag", "PD FS SAG"), "COR": (3, "cor", "PD FS COR"), "AX": (4, "ax", "PD FS AX")}
_LAX_SERIES = {"2CH": 2, "3CH": 3, "4CH": 4}
_SAX_FIRST_SERIES = 5


class CohortError(PlaneSSLError, ValueError):
    """The cohort cannot be written as asked (bad option, or a target directory we must not touch)."""


@dataclass(frozen=True)
class CohortOptions:
    """What to generate. ``phases`` and ``layout`` apply to the heart; ``realism`` and ``sites`` to both;
    ``matrix`` overrides image size. ``sites``: site weights (``sites.parse_site_weights`` text, e.g.
    "A=2,B=1"; None = every site equally), clinical realism only.
    """

    anatomy: str
    subjects: int
    seed: int = 0
    layout: str = "kaggle"
    phases: int = DEFAULT_PHASES
    matrix: int | None = None
    realism: str = "simple"
    sites: str | None = None

    def validate(self) -> None:
        """Raise CohortError naming the first bad option."""
        if self.anatomy not in ANATOMIES:
            raise CohortError(f"anatomy must be one of {', '.join(ANATOMIES)}, got {self.anatomy!r}")
        if not 1 <= self.subjects <= 100000:
            raise CohortError(f"the number of subjects must be between 1 and 100000, got {self.subjects}")
        if not 0 <= self.seed < 2**63:
            raise CohortError(f"the seed must be a non-negative integer, got {self.seed}")
        if self.layout not in LAYOUTS:
            raise CohortError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.anatomy == "knee" and self.layout != "kaggle":
            raise CohortError("--layout applies to heart cohorts only")
        if not 2 <= self.phases <= 50:
            raise CohortError(f"the number of cine phases must be between 2 and 50 (ED and ES), got {self.phases}")
        if self.matrix is not None and not 32 <= self.matrix <= 1024:
            raise CohortError(f"the image matrix must be between 32 and 1024 pixels, got {self.matrix}")
        if self.realism not in REALISMS:
            raise CohortError(f"realism must be one of {', '.join(REALISMS)}, got {self.realism!r}")
        if self.sites is not None:
            if self.realism != "clinical":
                raise CohortError("--sites applies to clinical cohorts only (--realism clinical)")
            try:
                parse_site_weights(self.sites)
            except ValueError as exc:
                raise CohortError(f"--sites {self.sites!r}: {exc}") from None


def subject_name(index: int) -> str:
    """Folder name of subject ``index`` (0-based): ``subject_0003``."""
    return f"subject_{index:04d}"


def default_workers() -> int:
    """min(2, number of CPUs)."""
    return max(1, min(2, os.cpu_count() or 1))


def _rng(options: CohortOptions, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(options.seed), int(index), int(stream)])


def _uid(options: CohortOptions, index: int, *keys: object) -> str:
    return uid_from(GENERATOR, options.anatomy, options.seed, index, *keys)


def _study(options: CohortOptions, index: int, body_part: str, description: str, laterality: str = "") -> StudyInfo:
    tag = options.anatomy.upper()
    return StudyInfo(
        patient_id=f"planessl-{options.anatomy}-{index:04d}",
        patient_name=f"PHANTOM^{tag}^{index:04d}",
        study_uid=_uid(options, index, "study"),
        frame_of_reference_uid=_uid(options, index, "frame-of-reference"),
        study_id=f"{index + 1}",
        study_description=description,
        body_part=body_part,
        laterality=laterality,
    )


def _write_image(
    path: Path, pixels: np.ndarray, plane: ImagePlane, study: StudyInfo, series: SeriesInfo,
    instance: int, sop_uid: str, thickness_mm: float, **kwargs: object,
) -> None:
    ds = build_mr_dataset(
        pixels=pixels, plane=plane, study=study, series=series, instance_number=instance,
        sop_instance_uid=sop_uid, slice_thickness_mm=thickness_mm, window=display_window(pixels), **kwargs,
    )
    write_dataset_atomic(ds, path)


# ---------------------------------------------------------------------- heart
def _write_heart_series(root: Path, options: CohortOptions, index: int, anatomy, views, render, acquisition: dict
                        ) -> list[str]:
    """The long-axis cines and the SAX stack of one heart subject (both looks) and its ED/ES label maps.

    ``render(plane, thickness_mm, view, slice_index, label_phases)`` → (frames, labels) draws one cine
    (``slice_index`` None for a long-axis view); ``acquisition`` holds the series' acquisition fields. Returns
    the series folders in writing order.
    """
    n_phases = options.phases
    es = anatomy.es_phase(n_phases)
    trigger = anatomy.trigger_times_ms(n_phases)
    study = _study(options, index, "HEART", "PlaneSSL synthetic cardiac cine")
    study_dir = root / "study"
    folders: list[str] = []

    def cine_kwargs(phase: int) -> dict:
        return {"trigger_time_ms": trigger[phase], "cardiac_phases": n_phases, "temporal_position": phase + 1}

    # Long-axis views: single-slice cine series.
    for view in ("2CH", "3CH", "4CH"):
        number = _LAX_SERIES[view]
        key = view.lower()
        folder = f"{key}_{number}" if options.layout == "kaggle" else f"cine_{key}"
        series = SeriesInfo(
            series_uid=_uid(options, index, "series", view), series_number=number,
            description=f"CINE {view}", protocol_name=f"cine_{key}", **acquisition,
        )
        plane = views.lax[view]
        frames, _ = render(plane, views.lax_thickness_mm[view], view, None)
        for phase, px in enumerate(frames):
            _write_image(
                study_dir / folder / f"IM-{number:04d}-{phase + 1:04d}.dcm", px, plane, study, series, phase + 1,
                _uid(options, index, "image", view, phase), views.lax_thickness_mm[view], **cine_kwargs(phase),
            )
        folders.append(folder)

    # SAX stack, base to apex.
    labels: dict[int, list[np.ndarray]] = {0: [], es: []}
    ukbb_series = SeriesInfo(
        series_uid=_uid(options, index, "series", "SAX"), series_number=_SAX_FIRST_SERIES,
        description="CINE SAX", protocol_name="cine_sax", **acquisition,
    )
    for k, plane in enumerate(views.sax):
        frames, lab = render(plane, views.sax_thickness_mm, "SAX", k, label_phases=(0, es))
        labels[0].append(lab[0])
        labels[es].append(lab[es])
        if options.layout == "kaggle":
            number = _SAX_FIRST_SERIES + k
            folder = f"sax_{number}"
            series = SeriesInfo(
                series_uid=_uid(options, index, "series", "SAX", k), series_number=number,
                description="CINE SAX", protocol_name="cine_sax", **acquisition,
            )
            instances = [phase + 1 for phase in range(n_phases)]
        else:
            number, folder, series = _SAX_FIRST_SERIES, "cine_sax", ukbb_series
            instances = [k * n_phases + phase + 1 for phase in range(n_phases)]
        for phase, px in enumerate(frames):
            inst = instances[phase]
            _write_image(
                study_dir / folder / f"IM-{number:04d}-{inst:04d}.dcm", px, plane, study, series, inst,
                _uid(options, index, "image", "SAX", k, phase), views.sax_thickness_mm, **cine_kwargs(phase),
            )
        if folder not in folders:
            folders.append(folder)

    write_label_nifti(root / "labels" / "sax_ed.nii.gz", labels[0], views.sax)
    write_label_nifti(root / "labels" / "sax_es.nii.gz", labels[es], views.sax)
    return folders


def _write_heart(root: Path, options: CohortOptions, index: int) -> dict:
    anatomy = sample_heart(_rng(options, index, 0))
    views = plan_heart_views(anatomy, _rng(options, index, 1), options.matrix)
    rng = _rng(options, index, 2)
    look = random_look(rng, anatomy.base_lps)
    n_phases = options.phases
    es = anatomy.es_phase(n_phases)

    def render(plane, thickness_mm, view, slice_index, label_phases=()):
        return render_heart_cine(anatomy, plane, thickness_mm, n_phases, rng, look, label_phases=label_phases)

    folders = _write_heart_series(root, options, index, anatomy, views, render, {"cardiac": True})
    return {
        "subject": subject_name(index),
        "n_sax": len(views.sax),
        "pathology": "NOR",
        "site": "simple",
        "sequence": "bSSFP",
        "field_strength_t": 1.5,
        "phases": n_phases,
        "ed_phase": 0,
        "es_phase": es,
        "sax_gap_mm": views.sax_gap_mm,
        "sax_thickness_mm": views.sax_thickness_mm,
        "lax_theta_deg": {k: round(v, 3) for k, v in views.lax_theta_deg.items()},
        "series_folders": folders,
    }


def _write_heart_clinical(root: Path, options: CohortOptions, index: int) -> dict:
    """A clinical heart subject (``heart_clinical.py``): same files and layouts as ``_write_heart``."""
    site, sequence = draw_site(_rng(options, index, 3), parse_site_weights(options.sites))
    pathology = draw_pathology(options.seed, index)
    anatomy = sample_clinical_heart(_rng(options, index, 0), pathology, sequence.name)
    views = plan_clinical_views(anatomy, _rng(options, index, 1), site, options.matrix)
    look = random_site_look(_rng(options, index, 3), site, sequence, anatomy.frame_to_lps([0, 0, 40.0]))
    sax_shifts, lax_shifts, breath_sigma = draw_breath_holds(_rng(options, index, 4), len(views.sax))
    rng = _rng(options, index, 2)
    n_phases = options.phases
    es = anatomy.es_phase(n_phases)
    acquisition = {
        "scanning_sequence": sequence.scanning_sequence, "sequence_variant": sequence.sequence_variant,
        "repetition_time_ms": sequence.repetition_time_ms, "echo_time_ms": sequence.echo_time_ms,
        "flip_angle_deg": look.flip_angle_deg, "field_strength_t": site.field_strength_t, "cardiac": True,
        "extra": {
            "Manufacturer": site.manufacturer, "ManufacturerModelName": site.model,
            "InstitutionName": site.institution, "SequenceName": sequence.sequence_name,
        },
    }

    def render(plane, thickness_mm, view, slice_index, label_phases=()):
        shift = lax_shifts[view] if slice_index is None else sax_shifts[slice_index]
        return render_clinical_cine(anatomy, plane, thickness_mm, n_phases, rng, look, shift, label_phases=label_phases)

    folders = _write_heart_series(root, options, index, anatomy, views, render, acquisition)
    return {
        "subject": subject_name(index),
        "n_sax": len(views.sax),
        "pathology": pathology,
        "site": site.code,
        "sequence": sequence.name,
        "field_strength_t": site.field_strength_t,
        "phases": n_phases,
        "ed_phase": 0,
        "es_phase": es,
        "sax_gap_mm": views.sax_gap_mm,
        "sax_thickness_mm": views.sax_thickness_mm,
        "sax_first_level_mm": views.sax_levels_mm[0],
        "sax_last_level_past_apex_mm": round(
            views.sax_levels_mm[-1] - anatomy.lv_length_ed_mm - anatomy.wall_ed_mm * anatomy.apex_wall_ratio, 2
        ),
        "base_descent_mm": round(anatomy.descent_mm, 2),
        "breath_hold_sigma_mm": breath_sigma,
        "effusion_mm": round(anatomy.effusion_mm, 2),
        "stomach_fluid": anatomy.stomach is not None,
        "lax_theta_deg": {k: round(v, 3) for k, v in views.lax_theta_deg.items()},
        "series_folders": folders,
    }


# ---------------------------------------------------------------------- knee
def _write_knee(root: Path, options: CohortOptions, index: int) -> dict:
    torn = acl_torn(options.seed, index)
    anatomy = sample_knee(_rng(options, index, 0), torn)
    stacks = plan_knee_stacks(anatomy, _rng(options, index, 1), options.matrix)
    rng = _rng(options, index, 2)
    look = random_look(rng, anatomy.origin_lps, scale=(1200.0, 1800.0), psf_mm=0.35)
    study = _study(options, index, "KNEE", "PlaneSSL synthetic knee MR", laterality=anatomy.laterality)
    folders: list[str] = []
    n_slices: dict[str, int] = {}
    for view, stack in stacks.items():
        number, prefix, description = _KNEE_SERIES[view]
        series = SeriesInfo(
            series_uid=_uid(options, index, "series", view), series_number=number, description=description,
            protocol_name=f"pd_fs_{prefix}", scanning_sequence="SE", sequence_variant="SK", scan_options="FS",
            repetition_time_ms=3000.0, echo_time_ms=30.0, flip_angle_deg=90.0, field_strength_t=3.0,
        )
        folders.append(_write_knee_series(root, options, index, view, stack, study, series,
                                          lambda plane, t: render_knee_slice(anatomy, plane, t, rng, look)))
        n_slices[view] = len(stack.planes)
    return {
        "subject": subject_name(index),
        "acl_tear": bool(torn),
        "laterality": anatomy.laterality,
        "n_slices": n_slices,
        "slice_thickness_mm": {v: s.thickness_mm for v, s in stacks.items()},
        "series_folders": folders,
    }


def _write_knee_series(root: Path, options: CohortOptions, index: int, view: str, stack, study, series: SeriesInfo,
                       render) -> str:
    """One knee series (either look): ``render(plane, thickness_mm)`` gives each slice's pixels. Returns its folder."""
    number = series.series_number
    folder = f"{_KNEE_SERIES[view][1]}_{number}"
    for k, plane in enumerate(stack.planes):
        _write_image(
            root / "study" / folder / f"IM-{number:04d}-{k + 1:04d}.dcm", render(plane, stack.thickness_mm), plane,
            study, series, k + 1, _uid(options, index, "image", view, k), stack.thickness_mm,
        )
    return folder


def clinical_knee_subject(options: CohortOptions, index: int) -> tuple[Site, Sequence, str, KneeAnatomy]:
    """Site, sequence, ACL grade and anatomy of subject ``index`` of a clinical knee cohort, exactly as it is
    written (for diagnostics that need where the anatomy lies, e.g. ``scripts/acl_signal_probe.py``)."""
    site, sequence = draw_site(_rng(options, index, 3), parse_site_weights(options.sites), KNEE_SITES, KNEE_SEQUENCES)
    grade = draw_acl_grade(options.seed, index)
    return site, sequence, grade, sample_clinical_knee(_rng(options, index, 0), grade, sequence)


def _write_knee_clinical(root: Path, options: CohortOptions, index: int) -> dict:
    """A clinical knee subject (``knee_clinical.py``): the same series folders as ``_write_knee``."""
    site, sequence, grade, anatomy = clinical_knee_subject(options, index)
    coverage = clinical_knee_coverage(anatomy, _rng(options, index, 5))
    stacks = plan_knee_stacks(anatomy, _rng(options, index, 1), options.matrix, coverage=coverage)
    look = knee_site_look(_rng(options, index, 4), site, sequence, anatomy.origin_lps)
    rng = _rng(options, index, 2)
    study = _study(options, index, "KNEE", "PlaneSSL synthetic knee MR", laterality=anatomy.laterality)
    folders: list[str] = []
    n_slices: dict[str, int] = {}
    for view, stack in stacks.items():
        number, prefix, _ = _KNEE_SERIES[view]
        description, protocol, scan_options = series_description(sequence, view)
        series = SeriesInfo(
            series_uid=_uid(options, index, "series", view), series_number=number, description=description,
            protocol_name=protocol, scanning_sequence=sequence.scanning_sequence,
            sequence_variant=sequence.sequence_variant, scan_options=scan_options,
            repetition_time_ms=sequence.repetition_time_ms, echo_time_ms=sequence.echo_time_ms,
            flip_angle_deg=look.flip_angle_deg, field_strength_t=site.field_strength_t,
            extra={"Manufacturer": site.manufacturer, "ManufacturerModelName": site.model,
                   "InstitutionName": site.institution, "SequenceName": sequence.sequence_name},
        )
        folders.append(_write_knee_series(root, options, index, view, stack, study, series,
                                          lambda plane, t: render_clinical_knee_slice(anatomy, plane, t, rng, look)))
        n_slices[view] = len(stack.planes)
    return {
        "subject": subject_name(index),
        "acl_tear": grade != "intact",
        "acl_grade": grade,
        "effusion_mm": round(anatomy.effusion_mm, 2),
        "bone_bruise": anatomy.bone_bruise,
        "laterality": anatomy.laterality,
        "site": site.code,
        "sequence": sequence.name,
        "field_strength_t": site.field_strength_t,
        "n_slices": n_slices,
        "slice_thickness_mm": {v: s.thickness_mm for v, s in stacks.items()},
        "sagittal_coverage_mm": round(2 * coverage["SAG"][1], 2),
        "series_folders": folders,
    }


# ---------------------------------------------------------------------- cohort
def write_subject(out_dir: str | os.PathLike, options: CohortOptions, index: int) -> dict:
    """Write subject ``index`` into ``out_dir/subject_XXXX`` (via a temporary folder); return its summary.

    A top-level function of plain arguments, so that it runs in spawned worker processes.
    """
    out = Path(out_dir)
    name = subject_name(index)
    tmp = out / f"{_TMP_PREFIX}{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if options.anatomy == "knee" and options.realism == "clinical":
            summary = _write_knee_clinical(tmp, options, index)
        elif options.anatomy == "knee":
            summary = _write_knee(tmp, options, index)
        elif options.realism == "clinical":
            summary = _write_heart_clinical(tmp, options, index)
        else:
            summary = _write_heart(tmp, options, index)
        final = out / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def read_cohort_options(out_dir: str | os.PathLike) -> CohortOptions:
    """The options a cohort was written with, read back from its ``cohort.json`` (``_cohort_json``'s inverse);
    CohortError naming the file when it is missing or not this generator's."""
    path = Path(out_dir) / "cohort.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("generator") != GENERATOR:
            raise ValueError("not written by planessl phantom")
        opts = meta.get("options") or {}
        options = CohortOptions(
            anatomy=meta["anatomy"], subjects=int(meta["subjects"]), seed=int(meta["seed"]),
            layout=meta.get("layout") or "kaggle", phases=int(opts.get("phases", DEFAULT_PHASES)),
            matrix=opts.get("matrix"), realism=opts.get("realism", "simple"), sites=opts.get("sites"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CohortError(f"{path}: cannot read a phantom cohort record ({exc})") from None
    return options


def is_phantom_cohort(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir/cohort.json`` was written by this generator (a previous cohort)."""
    path = Path(out_dir) / "cohort.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def _prepare_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CohortError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        previous = is_phantom_cohort(out)
        if not previous and not force:
            raise CohortError(
                f"{out} is not empty and does not hold a PlaneSSL phantom cohort (no cohort.json from "
                "'planessl phantom'); choose an empty or new directory, or pass --force to write into it"
            )
        if previous:
            # Remove only what a previous run of this generator wrote.
            for entry in out.iterdir():
                is_ours = _SUBJECT_RE.match(entry.name) or entry.name.startswith(_TMP_PREFIX + "subject_")
                if entry.is_dir() and is_ours:
                    shutil.rmtree(entry)
            for name in ("labels.csv", "subjects.csv"):
                (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _cohort_json(options: CohortOptions, summaries: list[dict], complete: bool) -> str:
    meta = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "planessl_version": __version__,
        "anatomy": options.anatomy,
        "seed": options.seed,
        "subjects": options.subjects,
        "layout": options.layout if options.anatomy == "heart" else None,
        "options": {k: v for k, v in asdict(options).items() if k in ("phases", "matrix", "realism", "sites")},
        "label_convention": (
            {"RV": 1, "Myo": 2, "LV": 3, "voxel": "i=column, j=row, k=SAX slice ordered along the DICOM normal"}
            if options.anatomy == "heart" else {"acl_tear": "1 = torn, 0 = intact"} if options.realism == "simple"
            else {"acl_tear": "1 = torn (partial or complete), 0 = intact", "acl_grade": "intact, partial or complete"}
        ),
        "complete": complete,
        "phantom_settings": _phantom_settings(options),
        "subject_summaries": summaries,
    }
    return json.dumps(meta, indent=2, sort_keys=False) + "\n"


def _phantom_settings(options: CohortOptions) -> dict | None:
    """Every setting a clinical cohort drew from (None for the simple looks, fully given by the code)."""
    if options.realism != "clinical":
        return None
    if options.anatomy == "knee":
        settings = clinical_knee_settings()
        settings["site_weights"] = dict(parse_site_weights(options.sites))
        settings.update(site_settings(KNEE_SITES, KNEE_SEQUENCES))
        del settings["look"]  # the heart's look; the knee's ranges are under anatomy_ranges
        return settings
    settings = clinical_settings()
    settings["site_weights"] = dict(parse_site_weights(options.sites))
    settings.update(site_settings())
    return settings


def _csv(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_cohort(
    out_dir: str | os.PathLike,
    options: CohortOptions,
    workers: int | None = None,
    force: bool = False,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Write a whole cohort into ``out_dir``; return the content of ``cohort.json``.

    ``workers`` processes (default ``default_workers()``; spawn context) write subjects in
    parallel; ``progress(done, total, summary)`` is called in this process after each subject.
    Raises CohortError for bad options or a non-empty ``out_dir`` that is not a previous
    cohort (unless ``force``).
    """
    options.validate()
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise CohortError(f"the number of workers must be at least 1, got {workers}")
    out = Path(out_dir)
    _prepare_target(out, force)
    atomic_write_text(out / "cohort.json", _cohort_json(options, [], complete=False))

    n = options.subjects
    results: dict[int, dict] = {}
    if workers == 1 or n == 1:
        for i in range(n):
            results[i] = write_subject(out, options, i)
            if progress:
                progress(len(results), n, results[i])
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(workers, n), mp_context=ctx) as pool:
            futures = {pool.submit(write_subject, str(out), options, i): i for i in range(n)}
            try:
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    if progress:
                        progress(len(results), n, results[i])
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    summaries = [results[i] for i in range(n)]
    if options.anatomy == "heart":
        columns = ["subject", "ed_phase", "es_phase", "n_sax", "pathology", "site", "sequence", "field_strength_t"]
        rows: list[list[object]] = [columns] + [[s[c] for c in columns] for s in summaries]
        atomic_write_text(out / "subjects.csv", _csv(rows))
    elif options.realism == "clinical":
        columns = ["subject", "acl_tear", "acl_grade", "effusion_mm", "bone_bruise"]
        rows = [columns] + [[s["subject"], int(s["acl_tear"]), s["acl_grade"], s["effusion_mm"], int(s["bone_bruise"])]
                            for s in summaries]
        atomic_write_text(out / "labels.csv", _csv(rows))
        columns = ["subject", "laterality", "site", "sequence", "field_strength_t"]
        atomic_write_text(out / "subjects.csv", _csv([columns] + [[s[c] for c in columns] for s in summaries]))
    else:
        rows = [["subject", "acl_tear"]] + [[s["subject"], int(s["acl_tear"])] for s in summaries]
        atomic_write_text(out / "labels.csv", _csv(rows))
    text = _cohort_json(options, summaries, complete=True)
    atomic_write_text(out / "cohort.json", text)
    return json.loads(text)
