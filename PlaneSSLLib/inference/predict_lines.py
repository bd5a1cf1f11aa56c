"""Predicted intersection lines of one DICOM image from a pretrained line network (torch + numpy).

The image is prepared exactly as in pretraining (manifest spacing, size, normalisation), the
network's heatmap channels of the image's partner views are each fitted with a line
(``inference.line_fit.fit_line``), and the line is mapped back to the ORIGINAL image's pixel
coordinates through the patient frame (prepared pixel → LPS → original pixel; both grids share
the orientation, so a line stays a line) and clipped to the original image rectangle, in the
conventions of ``planessl lines`` (x = column, y = row, 0-based, integer at pixel centres).

The input image's view comes from ``view=``, else from view identification of the study around the
image (``study_files``: its own folder, the folder above it and that folder's sub-folders one level
down; never deeper, never from the file system's root or the home folder, at most
``MAX_STUDY_FILES`` files), else from its SeriesDescription.

A NIfTI image (M&Ms-2's ``NNN_SA_ED.nii.gz`` / ``NNN_LA_ED.nii.gz``, or any ``(x, y, slices[, time])``
volume) is read as one slice ``slice_index`` (default the middle one) of time frame ``frame``, its
plane taken from the affine (``dicom.nifti.planes_from_affine_ras``); its view from ``view=``, else
from an M&Ms-2 file name (``_SA_`` → SAX, ``_LA_`` → 4CH).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..dicom.nifti import planes_from_affine_ras, slice_image
from ..dicom.pixels import read_file_frames
from ..dicom.planes import plane_from_dataset
from ..dicom.records import Problem, ScanResult
from ..dicom.report import apply_views
from ..dicom.scan import read_headers
from ..dicom.series import build_studies
from ..dicom.views import hint_from_text
from ..errors import InputError
from ..geometry.lines import ImageLine, clip_line_to_rect
from ..geometry.planes import ImagePlane
from ..preprocess.resample import prepare_image
from .line_fit import fit_line
from .weights import load_validated

__all__ = ["MAX_STUDY_FILES", "predict_image_lines", "map_line_between_grids", "identify_image_view", "study_files"]


def map_line_between_grids(line: ImageLine, source: ImagePlane, target: ImagePlane) -> ImageLine:
    """A line in ``source`` pixel coordinates expressed in ``target``'s (planes sharing their orientation)."""
    foot, direction = line.foot_px, line.direction_px
    pts = np.stack([foot - 100.0 * direction, foot + 100.0 * direction])
    xy, _ = target.lps_to_pixel(source.pixel_to_lps(pts))
    return ImageLine.through_points(xy[0], xy[1])


#: At most this many files are read to find the study around an image (``study_files``).
MAX_STUDY_FILES = 2000


def study_files(path: Path) -> list[Path]:
    """The files that may hold the study of the image at ``path`` (module docstring), sorted."""
    path = Path(path).resolve()
    folders = [path.parent]
    above = path.parent.parent
    if above != path.parent and above != Path(above.anchor) and above != Path.home().resolve():
        folders = [above]
        try:
            folders += sorted(d for d in above.iterdir() if d.is_dir() and not d.name.startswith("."))
        except OSError:
            folders = [path.parent]
    files: list[Path] = []
    for folder in folders:
        try:
            files += sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        except OSError:
            continue
        if len(files) > MAX_STUDY_FILES:
            break
    files = files[:MAX_STUDY_FILES]
    return files if path in files else [path, *files[: MAX_STUDY_FILES - 1]]


def identify_image_view(path: Path, frame: int = 0) -> str | None:
    """The view label of the image at ``path`` from its study's geometry (or its description)."""
    path = Path(path).resolve()
    headers = [h for h in read_headers(study_files(path)) if not isinstance(h, Problem)]
    studies, _ = build_studies(headers)
    result = ScanResult(root=path.parent, studies=studies)
    try:
        apply_views(result)
    except (OSError, ValueError):
        result.studies = []
    for study in result.studies:
        for series in study.series:
            if any(f.path.resolve() == path and f.frame_index == frame for f in series.frames) and series.view:
                return series.view
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return hint_from_text(str(getattr(ds, "SeriesDescription", "")), path.parent.name)


def _read_nifti_slice(image: Path, frame: int, slice_index: int | None) -> tuple[np.ndarray, ImagePlane, str | None]:
    """(pixels, plane, view from an M&Ms-2 name) of one slice of a NIfTI image; InputError naming the file."""
    import nibabel as nib

    try:
        img = nib.load(str(image))
        vol = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise InputError(f"{image}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from None
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim == 2:
        vol = vol[:, :, None]
    if vol.ndim == 4:
        if not 0 <= frame < vol.shape[3]:
            raise InputError(f"{image}: frame {frame} out of range ({vol.shape[3]} frames)")
        vol = vol[..., frame]
    elif vol.ndim != 3 or frame != 0:
        raise InputError(f"{image}: expected (x, y, slices[, time]), got shape {vol.shape} (frame {frame})")
    k = vol.shape[2] // 2 if slice_index is None else int(slice_index)
    if not 0 <= k < vol.shape[2]:
        raise InputError(f"{image}: slice {k} out of range ({vol.shape[2]} slices)")
    try:
        plane = planes_from_affine_ras(img.affine, vol.shape)[k]
    except ValueError as exc:
        raise InputError(f"{image}: unusable affine ({exc})") from None
    name = image.name.upper()
    hint = "SAX" if "_SA_" in name else "4CH" if "_LA_" in name else None
    return np.asarray(slice_image(vol, k), dtype=np.float32), plane, hint


def predict_image_lines(weights: str | Path, image: str | Path, view: str | None = None, frame: int = 0,
                        device: str = "cpu", slice_index: int | None = None) -> dict[str, Any]:
    """``{"view": V, "partners": [{"view": W, "in_a": {"p0", "p1"} | None, "confidence": float}, ...]}``.

    ``in_a`` is None when the network shows no line for that partner (confidence 0) or the line
    misses the image. Raises WeightsError (not a line network) or InputError (unreadable image,
    unknown view), each naming the file.
    """
    import pydicom

    net, validated = load_validated(weights, device, expect_task=("lines", "both"))
    manifest, prep = validated.manifest, validated.preparation
    image = Path(image)
    if image.name.lower().endswith((".nii", ".nii.gz")):
        pixels, plane, hint = _read_nifti_slice(image, frame, slice_index)
        view = view or hint
    else:
        try:
            ds = pydicom.dcmread(image, stop_before_pixels=True)
            plane = plane_from_dataset(ds, frame)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pixels = read_file_frames(image, [frame])[0]
        except Exception as exc:  # pydicom / geometry / pixel errors of a bad file
            raise InputError(f"{image}: cannot read the image ({exc})") from None
        view = view or identify_image_view(image, frame)
    channels = list(manifest["channels"])
    partners_of = manifest.get("views") if isinstance(manifest.get("views"), dict) else {}
    if view is None or view not in partners_of:
        raise InputError(f"{image}: view {view!r} is not an input view of these weights "
                         f"({', '.join(sorted(partners_of)) or 'none'}); pass --view")
    img, grid = prepare_image(pixels, plane, prep.spacing_mm, prep.size_px, prep.normalisation, prep.clip_percentiles)
    heads = torch.tensor([validated.config.head_index(view)], device=device) if validated.config.head_views else None
    with torch.no_grad():
        heat = net(torch.from_numpy(img)[None, None].to(device), heads)["lines"][0].float().cpu().numpy()
    out = []
    for partner in partners_of[view]:
        entry: dict[str, Any] = {"view": partner, "in_a": None, "confidence": 0.0}
        if partner in channels:
            fitted = fit_line(heat[channels.index(partner)])
            if fitted is not None:
                seg = clip_line_to_rect(map_line_between_grids(fitted.line, grid, plane), plane.shape_px)
                entry["in_a"] = seg.as_dict() if seg is not None else None
                entry["confidence"] = round(float(fitted.confidence), 4)
        out.append(entry)
    return {"view": view, "partners": out}
