"""Cardiac segmentation inference: a SAX stack in, an ACDC label map on the original geometry out.

numpy + scipy (resampling, connected components); the network runs in numpy on the CPU
(``inference.unet_numpy``: ``import torch`` alone took longer than the rest of a one-study run) and
in torch on another device. No MONAI, no training stack.

A segmentation network is a ``PlaneSSLNet`` exported with manifest ``task == "seg"``: its
decoder output (the ``"lines"`` key of ``PlaneSSLNet.forward``, ``line_channels`` = number of
classes) holds the class logits, and it has no location head. Steps of :func:`segment_stack`:

1. each SAX slice of the chosen cine phase is normalised and resampled onto the prepared grid
   exactly as in training (``preprocess.resample.prepare_image`` with the manifest's spacing, size,
   normalisation and SAX orientation: as stored, or the standard display orientation of
   ``canonical_sax_plane`` when ``input.sax_orientation`` is ``canonical``);
2. the network gives class probabilities (softmax) on that grid;
3. the probabilities are resampled back onto each original slice (linear, anti-aliased; outside
   the prepared field of view the slice is background) and the arg-max is taken;
4. per structure, only the largest 3D connected component of the stack is kept
   (:func:`keep_largest_component`, 26-connectivity over (slice, row, column)).

A stack is segmented only when it is complete for the phase (:func:`stack_problems`): every slice
has its own image of that phase (``dicom.stack_phases``: never another phase's image), no slice is
missing inside the stack, no file under the study folder was unreadable and no series of the study
lies without geometry. Otherwise :class:`IncompleteStackError` names each file, slice and phase, so
that no label map or volume is reported from part of a heart.

Label maps are ``(k, rows, cols)`` with ``k`` along the DICOM normal (increasing ``n̂ · o``),
the order ``dicom.nifti.write_label_nifti`` writes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..dicom.pixels import read_frame_pixels
from ..dicom.records import Frame
from ..dicom.report import apply_views
from ..dicom.scan import scan_tree
from ..dicom.stack_phases import phase_count, phase_frames, stack_gaps_mm
from ..dicom.stacks import SaxStack, find_sax_stack
from ..errors import InputError
from ..geometry.planes import ImagePlane
from ..preprocess.resample import canonical_sax_plane, prepare_image, resample_to_plane, sax_apex_direction_lps
from .manifest import WeightsError
from .unet_numpy import NumpyUNet, load_numpy_unet

if TYPE_CHECKING:
    import torch

    from ..models import PlaneSSLNet

__all__ = [
    "IncompleteStackError",
    "check_stack_complete",
    "SegModel",
    "StackSegmentation",
    "keep_largest_component",
    "load_seg_model",
    "predict_probabilities",
    "find_study_sax_stack",
    "segment_images",
    "segment_stack",
    "stack_phase_frames",
    "stack_problems",
]


class IncompleteStackError(InputError):
    """A SAX stack with a missing or unplaceable image: segmenting it would report part of a heart."""


@dataclass
class SegModel:
    """A loaded segmentation network with what preprocessing needs from its manifest."""

    net: PlaneSSLNet | NumpyUNet
    manifest: dict[str, Any]
    size_px: int
    spacing_mm: float
    normalisation: str
    clip_percentiles: tuple[float, float]
    label_names: list[str]
    sax_orientation: str = "stored"  #: the manifest's ``input.sax_orientation`` (how training prepared slices)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


def load_seg_model(path: str | Path, device: str | torch.device = "cpu", backend: str = "auto") -> SegModel:
    """Load exported segmentation weights (task ``seg``); WeightsError names the file.

    ``backend="auto"``: on the CPU (``device="cpu"``) the network is a :class:`NumpyUNet` (no torch
    import), on any other device the torch ``PlaneSSLNet`` (``inference.weights.load_validated``);
    ``"numpy"`` or ``"torch"`` choose one. Both pass the same checks and give the same labels.
    """
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be auto, numpy or torch, got {backend!r}")
    if backend == "numpy" and str(device) != "cpu":
        raise ValueError("the numpy network runs on the CPU only")
    if backend == "numpy" or backend == "auto" and str(device) == "cpu":
        net, validated = load_numpy_unet(path, expect_task="seg")
    else:
        import torch

        from .weights import load_validated

        net, validated = load_validated(path, device, expect_task="seg")
        net = net.to(memory_format=torch.channels_last)  # 2-3x faster convolutions, same results
    prep = validated.preparation
    return SegModel(net, validated.manifest, prep.size_px, prep.spacing_mm, prep.normalisation,
                    prep.clip_percentiles, list(validated.manifest["label_names"]), prep.sax_orientation)


def predict_probabilities(net: PlaneSSLNet | NumpyUNet, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Softmax class probabilities ``(N, C, H, W)`` float32 of prepared images ``(N, H, W)``.

    A torch network gets its input channels-last: one converted with ``net.to(memory_format=
    torch.channels_last)`` (as ``load_seg_model`` does) then runs its convolutions in that faster
    layout. Non-finite probabilities (a NaN in the image) are a WeightsError naming the image, never labels.
    """
    if isinstance(net, NumpyUNet):
        run = _numpy_probabilities
    else:
        run = _torch_probabilities(net)
    out = []
    for start in range(0, len(images), batch_size):
        probs = run(net, np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
        finite = np.isfinite(probs).reshape(len(probs), -1).all(axis=1)
        if not finite.all():
            index = start + int(np.argmin(finite)) + 1
            raise WeightsError(f"the network gave non-finite class probabilities for image {index} of "
                               f"{len(images)} (NaN or inf in the image or the weights); no labels are made from them")
        out.append(probs)
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 0), np.float32)


def _numpy_probabilities(net: NumpyUNet, batch: np.ndarray) -> np.ndarray:
    logits = net.logits(batch[:, None])
    with np.errstate(over="ignore", invalid="ignore"):  # a NaN input is reported by the caller
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _torch_probabilities(net: PlaneSSLNet):  # noqa: ANN202 - returns a closure over torch
    import torch

    net.eval()
    device = next(net.parameters()).device

    @torch.no_grad()
    def run(net: PlaneSSLNet, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        logits = net(x.unsqueeze(1).to(device).contiguous(memory_format=torch.channels_last))["lines"]
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    return run


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
    for s in stacks:
        s.unreadable = [p for p in result.problems if p.kind == "error"]
    if not stacks:
        why = [f"{p.path}: {p.message}" for p in result.problems if p.kind == "error"]
        why += [f"{s.folder}: {'; '.join(s.problems[:3])}" for st in result.studies for s in st.series
                if not s.usable and s.view in (None, "SAX") and s.problems]
        raise InputError(f"{study_dir}: no usable SAX stack found ({len(result.studies)} studies; see "
                         f"'planessl inspect {study_dir}')" + "".join(f"\n  {w}" for w in why[:10]))
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
    apex = sax_apex_direction_lps(list(planes)) if model.sax_orientation == "canonical" else None
    for px, plane in zip(pixels, planes, strict=True):
        target = canonical_sax_plane(plane, apex, model.spacing_mm, model.size_px) if apex is not None else None
        img, grid = prepare_image(px, plane, model.spacing_mm, model.size_px, model.normalisation,
                                  model.clip_percentiles, target=target)
        prepared.append(img)
        grids.append(grid)
    probs = predict_probabilities(model.net, np.stack(prepared), batch_size)
    labels = np.zeros((len(planes), *planes[0].shape_px), dtype=np.uint8)
    for k, (p, grid, plane) in enumerate(zip(probs, grids, planes, strict=True)):
        back = np.stack([resample_to_plane(p[c], grid, plane, antialias=True, cval=1.0 if c == 0 else 0.0)
                         for c in range(p.shape[0])])
        labels[k] = np.argmax(back, axis=0).astype(np.uint8)
    return keep_largest_component(labels, range(1, model.n_classes)) if lcc else labels


def _slice_name(stack: SaxStack, k: int) -> str:
    pos = stack.positions[k]
    return f"slice {k + 1} of {len(stack.positions)} (at {pos.location_mm:.1f} mm, {_rel(stack, pos.frames[0].path)})"


def _rel(stack: SaxStack, path: Path) -> str:
    root = stack.study.root if stack.study is not None else None
    try:
        return path.relative_to(root).as_posix() if root is not None else str(path)
    except ValueError:
        return str(path)


def stack_problems(stack: SaxStack, phases: Sequence[int]) -> list[str]:
    """One line per reason the stack cannot be segmented completely in ``phases`` (module docstring);
    empty when every slice has its own image of every phase."""
    problems = [f"{p.path}: {p.message} (it may hold one of the SAX images)" for p in stack.unreadable]
    if stack.study is not None:
        for s in stack.study.series:
            if s.view in (None, "SAX") and s.n_images > len(s.frames):
                lines = [line for line in s.problems if ":" in line] or s.problems
                problems.append(f"{s.folder}: {s.n_images - len(s.frames)} image(s) without usable geometry "
                                f"cannot be placed in the stack ({'; '.join(lines[:3])})")
    for k, spacing, median in stack_gaps_mm([p.location_mm for p in stack.positions]):
        problems.append(f"no slice between {_slice_name(stack, k)} and {_slice_name(stack, k + 1)}: "
                        f"{spacing:.1f} mm apart where the stack's slices are {median:.1f} mm apart")
    n = phase_count(stack.positions)
    for phase in phases:
        if not 0 <= phase < n:
            problems.append(f"phase {phase} out of range (the SAX stack has {n})")
            continue
        for k, frame in enumerate(phase_frames(stack.positions, phase)):
            if frame is None:
                problems.append(f"{_slice_name(stack, k)}: no image of phase {phase} "
                                f"({len(stack.positions[k].frames)} of {n} phases present)")
    return problems


def check_stack_complete(stack: SaxStack, phases: Sequence[int]) -> None:
    """IncompleteStackError naming every problem of ``stack_problems``; returns when there is none."""
    where = stack.study.root if stack.study is not None else stack.folder()
    n = phase_count(stack.positions)
    for phase in phases:
        if not 0 <= phase < n:
            raise InputError(f"{where}: phase {phase} out of range (the SAX stack has {n})")
    problems = stack_problems(stack, phases)
    if problems:
        raise IncompleteStackError(
            f"{where}: the SAX stack is incomplete for phase(s) {', '.join(map(str, phases))}; "
            f"nothing is segmented (labels and volumes would cover part of the heart):\n  " + "\n  ".join(problems)
            + "\n  (repair the named files, or move them out of the folder to segment without them)")


def stack_phase_frames(stack: SaxStack, phase: int) -> list[Frame]:
    """The image of phase ``phase`` at every slice; IncompleteStackError when the stack is incomplete."""
    check_stack_complete(stack, [phase])
    return [f for f in phase_frames(stack.positions, phase) if f is not None]


def segment_stack(model: SegModel, stack: SaxStack, phase: int = 0, lcc: bool = True,
                  batch_size: int = 16) -> StackSegmentation:
    """Segment phase ``phase`` of a complete SAX stack (module docstring); IncompleteStackError naming
    every missing file, slice and phase otherwise."""
    frames = stack_phase_frames(stack, phase)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = [read_frame_pixels(frame) for frame in frames]
    labels = segment_images(model, pixels, stack.planes, lcc, batch_size)
    return StackSegmentation(labels, stack.planes, phase, stack)
