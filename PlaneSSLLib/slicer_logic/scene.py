"""Study → scene: one scalar volume node per view, placed under its study in the subject hierarchy.

Geometry (docs/conventions.md; LPS until the MRML boundary): a stack's positions are ordered
along its normal ``n = x × y`` (``dicom.series``), so the volume's IJK axes are I = column
(``x``, Δc), J = row (``y``, Δr), K = slice (``n``, the median gap between positions), origin =
the first position's ImagePositionPatient. That is the IJK-to-RAS matrix Slicer's own DICOM
import (ITK/GDCM archetype reader) builds, after ``geometry.frames.affine_lps_to_ras``; a single
image gets K spacing 1 mm, as that reader gives it (tested against it on real MRML).

One volume per *view*: a view whose images come as several parallel series (the Kaggle layout
stores one SAX slice per series) is merged into one stack, so the SAX view scrolls through it.
Series without a view label get a volume each. Cine series load one chosen phase, or every
phase as a sequence (``phase="all"``): a ``vtkMRMLSequenceNode`` per view with a browser whose
proxy node is the displayed volume.

The reverse, ``planes_of_volume``, needs only a volume node's IJK-to-RAS matrix and dimensions,
so volumes the user loaded by any means can be shown in plane views too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from ..dicom.pixels import read_series_pixels
from ..dicom.records import Study
from ..dicom.stacks import ViewStack, view_stacks
from ..geometry.frames import affine_lps_to_ras, affine_ras_to_lps
from ..geometry.planes import ImagePlane
from .mrml import SceneContext, matrix_to_numpy, numpy_to_matrix

__all__ = [
    "ATTR_VIEW",
    "ATTR_SERIES",
    "ATTR_PHASE",
    "ATTR_LATERALITY",
    "StudyScene",
    "ViewStack",
    "view_stacks",
    "stack_ijk_to_lps",
    "add_volume_from_array",
    "load_study",
    "planes_of_volume",
    "volume_ijk_to_lps",
    "study_item_of",
]

#: Node attributes written on every volume this module creates.
ATTR_VIEW = "PlaneSSL.ViewLabel"
ATTR_SERIES = "PlaneSSL.SeriesKeys"
ATTR_PHASE = "PlaneSSL.Phase"
ATTR_LATERALITY = "PlaneSSL.Laterality"  # "R"/"L" of a knee (DICOM laterality); absent when unknown


def stack_ijk_to_lps(planes: Sequence[ImagePlane], single_slice_spacing_mm: float = 1.0) -> np.ndarray:
    """4×4 IJK→LPS matrix of a stack of parallel planes ordered along their normal.

    K spacing: the median gap between positions; ``single_slice_spacing_mm`` for one image.
    """
    first = planes[0]
    if len(planes) > 1:
        n = first.normal_lps
        gaps = np.diff([float(n @ p.origin_lps) for p in planes])
        dz = float(np.median(gaps))
        if dz <= 0:
            raise ValueError("stack positions are not ordered along the normal (or coincide)")
    else:
        dz = float(single_slice_spacing_mm)
    return first.affine_pixel_to_lps(dz)


def volume_ijk_to_lps(volume_node) -> np.ndarray:
    """IJK→LPS matrix of a volume node (its IJK-to-RAS matrix, converted)."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return affine_ras_to_lps(matrix_to_numpy(m))


def planes_of_volume(volume_node) -> list[ImagePlane]:
    """The K slices of a volume node as image planes (LPS), from IJK-to-RAS and dimensions only.

    Plane k has origin IJK (0, 0, k), x along I (columns), y along J (rows), spacing (ΔJ, ΔI).
    """
    image = volume_node.GetImageData()
    if image is None:
        raise ValueError(f"volume {volume_node.GetName()!r} has no image data")
    cols, rows, slices = image.GetDimensions()
    m = volume_ijk_to_lps(volume_node)
    ci, cj = m[:3, 0], m[:3, 1]
    di, dj = float(np.linalg.norm(ci)), float(np.linalg.norm(cj))
    return [ImagePlane(m[:3, 3] + k * m[:3, 2], ci / di, cj / dj, (dj, di), (rows, cols)) for k in range(slices)]


def add_volume_from_array(ctx: SceneContext, array_kji: np.ndarray, ijk_to_lps: np.ndarray, name: str,
                          node=None):
    """A scalar volume node (or ``node``, refilled) holding ``array_kji`` (slices, rows, cols).

    ``ijk_to_lps`` is converted to RAS for MRML. A display node with automatic window/level is
    created once.
    """
    arr = np.ascontiguousarray(array_kji)
    if arr.ndim != 3:
        raise ValueError(f"volume array must be 3D (slices, rows, cols), got shape {arr.shape}")
    image = vtk.vtkImageData()
    k, j, i = arr.shape
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(arr.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    if node is None:
        node = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(numpy_to_matrix(affine_lps_to_ras(ijk_to_lps)))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAutoWindowLevel(True)
    return node


@dataclass
class StudyScene:
    """What ``load_study`` put into the scene."""

    study_item: int
    volumes: dict[str, object] = field(default_factory=dict)  # view label → volume (or proxy) node
    stacks: dict[str, ViewStack] = field(default_factory=dict)
    sequences: dict[str, object] = field(default_factory=dict)  # view label → sequence node (cine)
    browsers: dict[str, object] = field(default_factory=dict)

    def planes(self, label: str) -> list[ImagePlane]:
        return planes_of_volume(self.volumes[label])


def _study_items(ctx: SceneContext, study: Study) -> int:
    sh = ctx.subject_hierarchy
    root = sh.GetSceneItemID()
    patient_name = f"Patient {study.patient_key}"
    patient = sh.GetItemChildWithName(root, patient_name)
    if not patient:
        patient = sh.CreateSubjectItem(root, patient_name)
    study_name = f"Study {study.key}" + (f" ({study.anatomy})" if study.anatomy else "")
    item = sh.GetItemChildWithName(patient, study_name)
    if not item:
        item = sh.CreateStudyItem(patient, study_name)
    return item


def place_in_study(ctx: SceneContext, node, study_item: int) -> int:
    """Put ``node`` under ``study_item`` in the subject hierarchy; returns the node's item."""
    sh = ctx.subject_hierarchy
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(study_item, node)
    else:
        sh.SetItemParent(item, study_item)
    return item


def study_item_of(ctx: SceneContext, node) -> int:
    """The subject-hierarchy study item above ``node`` (0 when it has none)."""
    sh = ctx.subject_hierarchy
    item = sh.GetItemByDataNode(node)
    while item and item != sh.GetSceneItemID():
        if sh.GetItemLevel(item) == "Study":
            return item
        item = sh.GetItemParent(item)
    return 0


def load_study(ctx: SceneContext, study: Study, phase: int | str = 0,
               labels: Iterable[str] | None = None) -> StudyScene:
    """One volume node per view of ``study`` (``dicom.views.identify_views`` must have run).

    ``phase``: the cine phase to load (0 = ED for the phantoms), or ``"all"`` for a sequence
    per cine view. ``labels``: only these views (default: all). Nodes are named by view label
    and carry ``ATTR_VIEW``, ``ATTR_SERIES`` (hashed series keys) and ``ATTR_PHASE``.
    """
    wanted = None if labels is None else set(labels)
    stacks = [s for s in view_stacks(study) if wanted is None or s.label in wanted]
    result = StudyScene(_study_items(ctx, study))
    for stack in stacks:
        series = stack.as_series()
        ijk_to_lps = stack_ijk_to_lps(stack.planes)
        pixels = read_series_pixels(series)  # (slices, phases, rows, cols)
        n_phases = pixels.shape[1]
        if phase == "all" and n_phases > 1:
            node = _add_sequence(ctx, stack.label, pixels, ijk_to_lps, result)
        else:
            p = 0 if phase == "all" else int(phase)
            if not 0 <= p < n_phases:
                p = min(max(p, 0), n_phases - 1)
            node = add_volume_from_array(ctx, pixels[:, p], ijk_to_lps, stack.label)
            node.SetAttribute(ATTR_PHASE, str(p))
        node.SetAttribute(ATTR_VIEW, stack.label)
        node.SetAttribute(ATTR_SERIES, ",".join(s.key for s in stack.series))
        laterality = {s.laterality for s in stack.series if s.laterality}
        if len(laterality) == 1:
            node.SetAttribute(ATTR_LATERALITY, laterality.pop())
        place_in_study(ctx, node, result.study_item)
        result.volumes[stack.label] = node
        result.stacks[stack.label] = stack
    return result


def _add_sequence(ctx: SceneContext, label: str, pixels: np.ndarray, ijk_to_lps: np.ndarray,
                  result: StudyScene):
    """A sequence node of every phase, a browser, and its proxy volume (returned)."""
    scene = ctx.scene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{label} cine")
    sequence.SetIndexName("phase")
    sequence.SetIndexUnit("")
    sequence.SetIndexType(sequence.NumericIndex)
    template = slicer.vtkMRMLScalarVolumeNode()  # outside the scene: the sequence copies it
    template.SetName(label)
    template.SetIJKToRASMatrix(numpy_to_matrix(affine_lps_to_ras(ijk_to_lps)))
    for p in range(pixels.shape[1]):
        _fill(template, pixels[:, p])
        sequence.SetDataNodeAtValue(template, str(p))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{label} cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = add_volume_from_array(ctx, pixels[:, 0], ijk_to_lps, label)
    browser.AddProxyNode(proxy, sequence, False)
    browser.SetSelectedItemNumber(0)
    proxy.SetAttribute(ATTR_PHASE, "all")
    result.sequences[label] = sequence
    result.browsers[label] = browser
    place_in_study(ctx, sequence, result.study_item)
    return proxy


def _fill(node, array_kji: np.ndarray) -> None:
    arr = np.ascontiguousarray(array_kji)
    k, j, i = arr.shape
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(arr.ravel(), deep=True))
    node.SetAndObserveImageData(image)


def set_phase(study_scene: StudyScene, phase: int) -> None:
    """Show cine phase ``phase`` in every view loaded as a sequence."""
    for label, browser in study_scene.browsers.items():
        browser.SetSelectedItemNumber(int(phase))
        sequence = study_scene.sequences[label]
        data = sequence.GetNthDataNode(int(phase))
        proxy = study_scene.volumes[label]
        proxy.SetAndObserveImageData(data.GetImageData())
