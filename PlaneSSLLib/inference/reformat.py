"""The SAX stack resampled on a proposed long-axis plane: the planned 2CH/3CH/4CH images.

Each pixel of the target plane is a patient point (LPS mm); its position along the stack normal
picks the two SAX slices around it (linear between them; within half a slice spacing beyond the
first and last slice the end slice is used, farther out the pixel is 0) and within each slice the
point's projection is sampled bilinearly (``ImagePlane.lps_to_pixel``, so slices with their own
in-plane offsets are handled). Written as a one-slice NIfTI volume (voxel ``(i, j, 0)`` = (column,
row), affine voxel → RAS as docs/conventions.md, 'Segmentation labels'), gzip without timestamp.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..atomic import atomic_write_bytes
from ..dicom.pixels import read_frame_pixels
from ..dicom.stacks import SaxStack
from ..geometry.frames import affine_lps_to_ras
from ..geometry.planes import ImagePlane, unit
from ..geometry.stacks import stack_normal_lps

if TYPE_CHECKING:
    from .plan_views import StudyPlan

__all__ = ["reformat_stack", "write_plane_nifti", "write_reformatted_views"]


def reformat_stack(pixels: Sequence[np.ndarray], planes: Sequence[ImagePlane], target: ImagePlane) -> np.ndarray:
    """The stack ``pixels[k]`` on ``planes[k]`` (parallel slices) resampled on ``target``: float32 ``(rows, cols)``."""
    n = unit(stack_normal_lps(list(planes)))
    s = np.array([float(n @ p.origin_lps) for p in planes])
    order = np.argsort(s)
    s = s[order]
    points = target.pixel_grid_lps().reshape(-1, 3)
    samples = np.zeros((len(planes), len(points)), np.float32)
    for row, k in enumerate(order):
        xy, _ = planes[k].lps_to_pixel(points)
        samples[row] = ndimage.map_coordinates(np.asarray(pixels[k], np.float32), [xy[:, 1], xy[:, 0]], order=1,
                                               mode="constant", cval=0.0, prefilter=False)
    sp = points @ n
    half = float(np.median(np.diff(s))) / 2 if len(s) > 1 else 1.0
    f = np.interp(sp, s, np.arange(len(s), dtype=np.float64))
    lo = np.floor(f).astype(int)
    hi = np.minimum(lo + 1, len(s) - 1)
    t = (f - lo).astype(np.float32)
    idx = np.arange(len(points))
    out = (1 - t) * samples[lo, idx] + t * samples[hi, idx]
    out[(sp < s[0] - half) | (sp > s[-1] + half)] = 0.0
    return out.reshape(target.shape_px).astype(np.float32)


def write_plane_nifti(path: str | Path, image: np.ndarray, plane: ImagePlane) -> Path:
    """One image ``(rows, cols)`` on ``plane`` as a one-slice .nii.gz (float32), written atomically."""
    affine = affine_lps_to_ras(plane.affine_pixel_to_lps())
    img = nib.Nifti1Image(np.asarray(image, np.float32).T[:, :, None], affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def write_reformatted_views(stack: SaxStack, plan: StudyPlan, phase: int, out_dir: str | Path) -> dict[str, str]:
    """``OUT/<VIEW>_proposed.nii.gz`` per proposed view; returns ``{view: file name}``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = [read_frame_pixels(pos.frames[phase]) for pos in stack.positions]
    written = {}
    for view, vp in plan.views.items():
        name = f"{view}_proposed.nii.gz"
        write_plane_nifti(Path(out_dir) / name, reformat_stack(pixels, stack.planes, vp.proposed), vp.proposed)
        written[view] = name
    return written
