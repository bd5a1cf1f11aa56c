"""A scene with its application logic, and conversions between vtk matrices and numpy.

``SceneContext`` is what every other module of ``slicer_logic`` works on. Inside Slicer use
``SceneContext.from_slicer()`` (``slicer.mrmlScene`` and the application's logic); outside
(tests, benchmarks, batch) ``SceneContext.create()`` builds a scene with the colour nodes, a
crosshair and an application logic, as Slicer's startup does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

__all__ = ["SceneContext", "matrix_to_numpy", "numpy_to_matrix", "node_ids"]


def matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4×4 float64 array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """A 4×4 array as a new ``vtkMatrix4x4``."""
    a = np.asarray(array, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {a.shape}")
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def node_ids(scene) -> set[str]:
    """IDs of every node in ``scene`` (to check that an operation left it as it was)."""
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def register_segmentation_converters() -> None:
    """Register the binary labelmap ↔ closed surface rules (the Segmentations module does it in Slicer)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {type(factory.GetConverterRules()[i]).__name__ for i in range(len(factory.GetConverterRules()))} \
        if hasattr(factory, "GetConverterRules") else set()
    for name in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        if name not in registered:
            factory.RegisterConverterRule(getattr(slicer, name)())


@dataclass
class SceneContext:
    """A MRML scene and the application logic that slice logics and displayable managers use."""

    scene: object
    app_logic: object
    _slice_logics: object = field(default=None, repr=False)

    @classmethod
    def create(cls) -> SceneContext:
        """A fresh scene set up like Slicer's at startup (colour tables, crosshair, app logic)."""
        scene = slicer.vtkMRMLScene()
        app = slicer.vtkSlicerApplicationLogic()
        app.SetMRMLScene(scene)
        app.GetColorLogic().SetMRMLScene(scene)
        app.GetColorLogic().AddDefaultColorNodes()
        logics = vtk.vtkCollection()
        app.SetSliceLogics(logics)
        for cls_name in ("vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode"):  # Sequences module's job in Slicer
            if not scene.IsNodeClassRegistered(cls_name):
                scene.RegisterNodeClass(getattr(slicer, cls_name)())
        register_segmentation_converters()
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetSingletonTag("default")
        scene.AddNode(crosshair)
        return cls(scene, app, logics)

    @classmethod
    def from_slicer(cls) -> SceneContext:  # pragma: no cover - needs the Slicer application
        return cls(slicer.mrmlScene, slicer.app.applicationLogic())

    @property
    def subject_hierarchy(self):
        return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    def slice_logic(self, slice_node):
        """The slice logic of ``slice_node``, created (and registered) when there is none yet."""
        logic = self.app_logic.GetSliceLogic(slice_node)
        if logic is not None:
            return logic
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        logic.SetSliceNode(slice_node)
        logics = self.app_logic.GetSliceLogics()
        if logics is None:  # pragma: no cover - Slicer always has the collection
            logics = vtk.vtkCollection()
            self.app_logic.SetSliceLogics(logics)
            self._slice_logics = logics
        logics.AddItem(logic)
        return logic
