"""Labelled SAX volumes of the NIfTI data sets (ACDC, M&Ms-2) for the seg cache.

``labelled_volumes(spec)`` reads a data set named ``acdc:PATH`` or ``mnms2:PATH``
(``data.sources``) through its adapter (``data.adapters.acdc`` / ``data.adapters.mnms2``) into
one :class:`LabelledVolume` per subject and phase (ED, ES): the SAX image and its label map
(ACDC convention: RV = 1, Myo = 2, LV = 3; M&Ms-2's labels are mapped by the adapter), both
``(cols, rows, slices)`` with their voxel → RAS affine. The image planes come from the affine
(``dicom.nifti.planes_from_affine_ras``), so the volumes go through the seg cache exactly as a
DICOM SAX stack does (``data.segmentation.prepare_seg_cache``).

Subjects whose files break the layout are left out and reported by name in the notes; the
subject's group (ACDC ``Info.cfg`` ``Group``, M&Ms-2 ``DISEASE``) travels with every volume so
that a study can stratify or report by it. Subject names are hashed before they are stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dicom.records import hash_public_name
from .sources import DataSpec

__all__ = ["NIFTI_SEG_FORMATS", "LabelledVolume", "labelled_volumes", "labelled_files"]

log = logging.getLogger("planessl.data")

#: Data-set formats whose labelled SAX volumes are NIfTI files read here.
NIFTI_SEG_FORMATS = ("acdc", "mnms2")


@dataclass
class LabelledVolume:
    """One subject's SAX volume at ED or ES with its labels (ACDC convention), on one voxel grid."""

    subject_key: str  # hashed subject name
    group: str | None  # diagnosis group of the data set (ACDC Group, M&Ms-2 DISEASE)
    phase_kind: int  # 0 ED, 1 ES
    frame: int  # 0-based cine frame (ACDC: Info.cfg frame - 1; M&Ms-2: 0 ED, 1 ES)
    image: np.ndarray  # (cols, rows, slices) float32
    label: np.ndarray  # (cols, rows, slices) uint8, ACDC convention
    affine_ras: np.ndarray  # voxel -> RAS mm


def _squeeze3(arr: np.ndarray) -> np.ndarray:
    """A ``(x, y, z, 1)`` volume as ``(x, y, z)`` (some tools write a trailing time axis of 1)."""
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def labelled_volumes(spec: DataSpec) -> tuple[list[LabelledVolume], list[str]]:
    """``(volumes, notes)`` of an ACDC or M&Ms-2 data set; AdapterError (naming the folder) when no
    subject is usable.

    Each subject left out is logged as a warning naming its file and the problem; ``notes`` (kept in
    the cache) name it by hashed key and file type only.
    """
    broken: list[tuple[str, str]] = []
    volumes: list[LabelledVolume] = []
    if spec.format == "acdc":
        from .adapters.acdc import acdc_subjects

        for s in acdc_subjects(spec.root, with_labels=True, broken=broken):
            key = hash_public_name(f"acdc:{s.subject}")
            for kind, name in enumerate(("ED", "ES")):
                ph = s.phases[name]
                volumes.append(LabelledVolume(key, s.group or None, kind, ph.frame - 1, _squeeze3(ph.image),
                                              _squeeze3(ph.label), ph.affine))
    elif spec.format == "mnms2":
        from .adapters.mnms2 import mnms2_subjects

        for s in mnms2_subjects(spec.root, views=("SA",), broken=broken):
            key = hash_public_name(f"mnms2:{s.subject}")
            group = next((v for k, v in s.info.items() if k.upper() == "DISEASE"), None) or None
            for kind, name in enumerate(("ED", "ES")):
                im = s.images[("SA", name)]
                volumes.append(LabelledVolume(key, group, kind, kind, _squeeze3(im.image), _squeeze3(im.label),
                                              im.affine))
    else:
        raise ValueError(f"labelled_volumes reads {', '.join(NIFTI_SEG_FORMATS)}, not {spec.format}")
    notes = []
    for subject, problem in broken:
        log.warning("%s: subject left out: %s", spec, problem)
        key = hash_public_name(f"{spec.format}:{subject}")
        reason = problem.replace(str(spec.root), "").replace(subject, key)
        notes.append(f"subject {key} left out: {reason.lstrip('/')}")
    return volumes, notes


def labelled_files(spec: DataSpec) -> list[Path]:
    """The files whose content the volumes of ``spec`` depend on (for the cache's data fingerprint)."""
    root = Path(spec.root)
    if spec.format == "acdc":
        pattern = ("patient*/Info.cfg", "patient*/patient*_frame*.nii.gz")
    elif spec.format == "mnms2":
        pattern = ("*.csv", "[0-9][0-9][0-9]/*_SA_E[DS]*.nii.gz")
    else:
        raise ValueError(spec.format)
    return sorted({p for pat in pattern for p in root.glob(pat) if p.is_file()})
