"""Cardiac segmentation inference: a SAX stack in, an ACDC label map on the original geometry out.

torch + numpy (+ scipy for resampling and connected components); no MONAI, no training stack.

A segmentation network is a ``PlaneSSLNet`` exported with manifest ``task == "seg"``: its
decoder output (the ``"lines"`` key of ``PlaneSSLNet.forward``, ``line_channels`` = number of
classes) holds the class logits, and it has no location head. Steps of :func:`segment_stack`:

1. each SAX slice of the chosen cine phase is normalised and resampled onto the prepared grid
   exactly as in training (``preprocess.resample.prepare_image`` with the manifest's spacing, size and
   normalisation);
2. the network gives class probabilities (softmax) on that grid;
3. the probabilities are resampled back onto each original slice (linear, anti-aliased; outside
   the prepared field of view the slice is background) and the arg-max is taken;
4. per structure, only the largest 3D connected component of the stack is kept
   (:func:`keep_largest_component`, 26-connectivity over (slice, row, column)).

Label maps are ``(k, rows, cols)`` with ``k`` along the DICOM normal (increasing ``n̂ · o``),
the order ``dicom.nifti.write_label_nifti`` writes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..dicom.pixels import read_frame_pixels
from ..dicom.report import apply_views
from ..dicom.scan import scan_tree
from ..dicom.stacks import SaxStack, find_sax_stack
from ..errors import InputError
from ..geometry.planes import ImagePlane
from ..models import PlaneSSLNet
from ..preprocess.resample import prepare_image, resample_to_plane
from .weights import WeightsError, load_validated

__all__ = [
    "SegModel",
    "StackSegmentation",
    "keep_largest_component",
    "load_seg_model",
    "predict_probabilities",
    "find_study_sax_stack",
    "segment_images",
    "segment_stack",
]


@dataclass
class SegModel:
    """A loaded segmentation network with what preprocessing needs from its manifest."""

    net: PlaneSSLNet
    manifest: dict[str, Any]
    size_px: int
    spacing_mm: float
    normalisation: str
    clip_percentiles: tuple[float, float]
    label_names: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


def load_seg_model(path: str | Path, device: str | torch.device = "cpu") -> SegModel:
    """Load exported segmentation weights (``load_model`` of task ``seg``); WeightsError names the file."""
    net, validated = load_validated(path, device, expect_task="seg")
    prep = validated.preparation
    net = net.to(memory_format=torch.channels_last)  # 2-3x faster convolutions on the CPU, same results
    return SegModel(net, validated.manifest, prep.size_px, prep.spacing_mm, prep.normalisation,
                    prep.clip_percentiles, list(validated.manifest["label_names"]))


@torch.no_grad()
def predict_probabilities(net: PlaneSSLNet, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Softmax class probabilities ``(N, C, H, W)`` float32 of prepared images ``(N, H, W)``.

    The input is passed channels-last: a network converted with ``net.to(memory_format=torch.channels_last)``
    (as ``load_seg_model`` does) then runs its convolutions in that faster layout. Non-finite
    probabilities (a NaN in the image) are a WeightsError naming the image, never labels.
    """
    net.eval()
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
        logits = net(x.unsqueeze(1).to(device).contiguous(memory_format=torch.channels_last))["lines"]
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        finite = np.isfinite(probs).reshape(len(probs), -1).all(axis=1)
        if not finite.all():
            index = start + int(np.argmin(finite)) + 1
            raise WeightsError(f"the network gave non-finite class probabilities for image {index} of "
                               f"{len(images)} (NaN or inf in the image or the weights); no labels are made from them")
        out.append(probs)
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 0), np.float32)


def keep_largest_component(labels: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
    """Per class, keep only its largest connected component (26-connectivity in 3D, 8 in 2D).

    ``labels``: integer array (2D or 3D); voxels of a class outside its largest component become
    0 (background). Empty classes stay empty. Returns a new array of the same dtype.
    """
    lab = np.asarray(labels)
    out = lab.copy()
    structure = np.ones((3,) * lab.ndim, dtype=bool)
    for c in (classes if classes is not None else [int(v) for v in np.unique(lab) if v != 0]):
        comp, n = ndimage.label(lab == c, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[(comp != 0) & (comp != int(np.argmax(sizes)))] = 0
    return out


def find_study_sax_stack(study_dir: str | Path) -> SaxStack:
    """The SAX stack of the one heart study under ``study_dir`` (views labelled from the geometry).

    InputError naming the folder when there is no SAX stack or several studies hold one.
    """
    study_dir = Path(study_dir)
    if not study_dir.exists():
        raise InputError(f"{study_dir}: no such file or directory")
    result = scan_tree(study_dir)
    apply_views(result, anatomy_hint="heart")
    stacks = [s for s in (find_sax_stack(st) for st in result.studies) if s is not None]
    if not stacks:
        raise InputError(f"{study_dir}: no usable SAX stack found ({len(result.studies)} studies; see "
                         f"'planessl inspect {study_dir}')")
    if len(stacks) > 1:
        raise InputError(f"{study_dir}: {len(stacks)} studies with a SAX stack; point at one study's folder")
    return stacks[0]


@dataclass
class StackSegmentation:
    """Labels ``(k, rows, cols)`` uint8 on the original SAX planes (``planes[k]``) of one phase."""

    labels: np.ndarray
    planes: list[ImagePlane]
    phase: int
    stack: SaxStack


def segment_images(model: SegModel, pixels: Sequence[np.ndarray], planes: Sequence[ImagePlane], lcc: bool = True,
                   batch_size: int = 16) -> np.ndarray:
    """Labels ``(k, rows, cols)`` uint8 of images ``pixels[k]`` (modality values) on ``planes[k]``
    (one equally shaped stack; steps 1-4 of the module docstring)."""
    prepared, grids = [], []
    for px, plane in zip(pixels, planes, strict=True):
        img, grid = prepare_image(px, plane, model.spacing_mm, model.size_px, model.normalisation,
                                  model.clip_percentiles)
        prepared.append(img)
        grids.append(grid)
    probs = predict_probabilities(model.net, np.stack(prepared), batch_size)
    labels = np.zeros((len(planes), *planes[0].shape_px), dtype=np.uint8)
    for k, (p, grid, plane) in enumerate(zip(probs, grids, planes, strict=True)):
        back = np.stack([resample_to_plane(p[c], grid, plane, antialias=True, cval=1.0 if c == 0 else 0.0)
                         for c in range(p.shape[0])])
        labels[k] = np.argmax(back, axis=0).astype(np.uint8)
    return keep_largest_component(labels, range(1, model.n_classes)) if lcc else labels


def segment_stack(model: SegModel, stack: SaxStack, phase: int = 0, lcc: bool = True,
                  batch_size: int = 16) -> StackSegmentation:
    """Segment phase ``phase`` of a SAX stack (module docstring); InputError for a phase out of range."""
    if not 0 <= phase < stack.n_phases:
        raise InputError(f"{stack.folder()}: phase {phase} out of range (the SAX stack has {stack.n_phases})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = [read_frame_pixels(pos.frames[phase]) for pos in stack.positions]
    labels = segment_images(model, pixels, stack.planes, lcc, batch_size)
    return StackSegmentation(labels, stack.planes, phase, stack)
