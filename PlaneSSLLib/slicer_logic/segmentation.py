"""Label maps ↔ segmentation nodes: segments with terminology, colours and reference geometry.

``add_segmentation`` imports a label map ``(slices, rows, cols)`` on the grid of a reference
volume into a ``vtkMRMLSegmentationNode``: one segment per ``SegmentTerm`` (name, SNOMED CT
terminology, colour; ``terminology.segment_terms`` reads them from the model's manifest), the
reference volume as reference image geometry, placed under the reference volume's study in the
subject hierarchy. ``segmentation_to_labelmap`` exports it back on the same grid; the round trip
is voxel-exact. Cine inputs get one segmentation node per phase (``add_phase_segmentations``) in
a subject-hierarchy folder. Temporary label-map nodes are
removed; on any error no node is left behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from .mrml import SceneContext, node_ids
from .scene import ATTR_PHASE, study_item_of
from .terminology import SegmentTerm

__all__ = ["add_segmentation", "add_phase_segmentations", "segmentation_to_labelmap", "segment_ids"]

ATTR_LABEL = "PlaneSSL.LabelValue"


def _temporary_labelmap(ctx: SceneContext, labels_kji: np.ndarray, reference_volume):
    arr = np.ascontiguousarray(labels_kji, dtype=np.int16)
    k, j, i = arr.shape
    dims = reference_volume.GetImageData().GetDimensions()
    if (i, j, k) != tuple(dims):
        raise ValueError(f"label map shape {arr.shape} does not match the reference volume (k, j, i) = "
                         f"{(dims[2], dims[1], dims[0])}")
    node = ctx.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PlaneSSL temporary labelmap")
    image = vtk.vtkImageData()
    image.SetDimensions(i, j, k)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(arr.ravel(), deep=True))
    node.SetAndObserveImageData(image)
    m = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    return node


def segment_ids(segmentation_node) -> list[str]:
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegmentID(n) for n in range(seg.GetNumberOfSegments())]


def add_segmentation(ctx: SceneContext, labels_kji: np.ndarray, reference_volume,
                     terms: Sequence[SegmentTerm], name: str | None = None):
    """A segmentation node from a label map on ``reference_volume``'s grid (see module doc)."""
    scene = ctx.scene
    nodes_before = node_ids(scene)
    try:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                               name or f"{reference_volume.GetName()} segmentation")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        keep = {segmentation.GetID(), segmentation.GetDisplayNode().GetID()}
        labels = np.asarray(labels_kji)
        for term in terms:
            mask = (labels == term.label).astype(np.int16) * term.label
            temp = _temporary_labelmap(ctx, mask, reference_volume)
            segments_before = set(segment_ids(segmentation))
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, segmentation):
                raise RuntimeError(f"importing label {term.label} into {segmentation.GetName()} failed")
            new = [s for s in segment_ids(segmentation) if s not in segments_before]
            if new:
                seg_id = new[0]
            else:  # an empty label: an empty segment, so that every structure is present
                seg_id = segmentation.GetSegmentation().AddEmptySegment(term.name, term.name)
            segment = segmentation.GetSegmentation().GetSegment(seg_id)
            segment.SetName(term.name)
            segment.SetColor(*term.color)
            segment.SetTerminology(term.terminology)
            segment.SetTag(ATTR_LABEL, str(term.label))
            _remove_new_nodes(scene, nodes_before | keep)  # the temporary label map and its helpers
        study = study_item_of(ctx, reference_volume)
        if study:
            sh = ctx.subject_hierarchy
            item = sh.GetItemByDataNode(segmentation) or sh.CreateItem(study, segmentation)
            sh.SetItemParent(item, study)
        return segmentation
    except BaseException:
        _remove_new_nodes(scene, nodes_before)
        raise


def _remove_new_nodes(scene, keep: set[str]) -> None:
    for node_id in node_ids(scene) - keep:
        node = scene.GetNodeByID(node_id)
        if node is not None:
            scene.RemoveNode(node)


def add_phase_segmentations(ctx: SceneContext, labels_pkji: np.ndarray, reference_volume,
                            terms: Sequence[SegmentTerm]) -> list:
    """One segmentation node per cine phase, in a subject-hierarchy folder under the study."""
    nodes = []
    try:
        for p, labels in enumerate(np.asarray(labels_pkji)):
            node = add_segmentation(ctx, labels, reference_volume, terms,
                                    name=f"{reference_volume.GetName()} segmentation phase {p}")
            node.SetAttribute(ATTR_PHASE, str(p))
            nodes.append(node)
        sh = ctx.subject_hierarchy
        parent = study_item_of(ctx, reference_volume) or sh.GetSceneItemID()
        folder = sh.CreateFolderItem(parent, f"{reference_volume.GetName()} segmentation (cine)")
        for node in nodes:
            sh.SetItemParent(sh.GetItemByDataNode(node), folder)
        return nodes
    except BaseException:
        for node in nodes:
            if ctx.scene.GetNodeByID(node.GetID()) is not None:
                ctx.scene.RemoveNode(node)
        raise


def segmentation_to_labelmap(ctx: SceneContext, segmentation_node, reference_volume) -> np.ndarray:
    """The segmentation as a label map ``(slices, rows, cols)`` on ``reference_volume``'s grid.

    Voxel values: each segment's ``PlaneSSL.LabelValue`` tag (else its 1-based position).
    """
    ids = segment_ids(segmentation_node)
    before = node_ids(ctx.scene)
    temp = ctx.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PlaneSSL temporary export")
    try:
        names = vtk.vtkStringArray()
        for s in ids:
            names.InsertNextValue(s)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, names, temp, reference_volume)
        if not ok:
            raise RuntimeError(f"exporting {segmentation_node.GetName()} to a label map failed")
        image = temp.GetImageData()
        i, j, k = image.GetDimensions()
        exported = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)
        out = np.zeros(exported.shape, dtype=np.int16)
        segmentation = segmentation_node.GetSegmentation()
        for n, seg_id in enumerate(ids, start=1):
            tag = vtk.reference("")
            found = segmentation.GetSegment(seg_id).GetTag(ATTR_LABEL, tag)
            value = int(tag.get()) if found and tag.get() else n
            out[exported == n] = value
        return out
    finally:  # the export adds a display node and a colour table for the temporary label map
        _remove_new_nodes(ctx.scene, before)
