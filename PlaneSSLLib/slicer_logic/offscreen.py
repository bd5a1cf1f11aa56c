"""Offscreen slice views on real MRML displayable managers (tests, benchmarks, screenshots).

Inside Slicer the slice widgets render; outside, ``OffscreenSliceView`` builds what a slice
widget holds: a render window (offscreen; VTK picks EGL with
``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` on a machine without a display), a renderer, a
displayable-manager group (crosshair with the slice-intersection widget, model slices,
segmentations) and the slice image actor fed by the slice logic.

Screen pixels are returned as (column, row) with row 0 at the *top*, as in the PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

from ..geometry.frames import lps_to_ras
from .mrml import SceneContext, matrix_to_numpy

__all__ = ["OffscreenSliceView", "DISPLAYABLE_MANAGERS", "write_png", "tile_images"]

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

DISPLAYABLE_MANAGERS = (
    "vtkMRMLCrosshairDisplayableManager",
    "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager2D",
)


class OffscreenSliceView:
    """A slice view of ``slice_node`` rendered offscreen at ``size_px`` (width, height)."""

    def __init__(self, ctx: SceneContext, slice_node, size_px: tuple[int, int] = (256, 256)) -> None:
        self.ctx = ctx
        self.slice_node = slice_node
        self.size_px = (int(size_px[0]), int(size_px[1]))
        self.logic = ctx.slice_logic(slice_node)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*self.size_px)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(ctx.app_logic)
        for name in DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.managers.SetMRMLDisplayableNode(slice_node)
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255)
        self.mapper.SetColorLevel(127.5)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(self.mapper)
        self.actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.actor)
        self.logic.ResizeSliceNode(*self.size_px)

    def render(self) -> np.ndarray:
        """Render and return the view as uint8 RGB ``(height, width, 3)``, row 0 at the top."""
        self.logic.ResizeSliceNode(*self.size_px)
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.managers.RequestRender()
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.ReadFrontBufferOff()
        grab.SetInputBufferTypeToRGB()
        grab.Update()
        image = grab.GetOutput()
        w, h, _ = image.GetDimensions()
        arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
        return np.ascontiguousarray(arr[::-1])

    def ras_to_screen_px(self, points_ras: np.ndarray) -> np.ndarray:
        """RAS points ``(..., 3)`` → screen pixels (column, row from the top) ``(..., 2)``."""
        xy_to_ras = matrix_to_numpy(self.slice_node.GetXYToRAS())
        p = np.asarray(points_ras, dtype=np.float64)
        h = np.concatenate([p, np.ones(p.shape[:-1] + (1,))], axis=-1)
        xy = h @ np.linalg.inv(xy_to_ras).T
        return np.stack([xy[..., 0], self.size_px[1] - 1 - xy[..., 1]], axis=-1)

    def lps_to_screen_px(self, points_lps: np.ndarray) -> np.ndarray:
        return self.ras_to_screen_px(lps_to_ras(points_lps))

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.window.Finalize()


def tile_images(images: Sequence[np.ndarray], columns: int, gap_px: int = 4) -> np.ndarray:
    """RGB images of one size tiled row by row on a dark background."""
    h, w, _ = images[0].shape
    rows = (len(images) + columns - 1) // columns
    out = np.full((rows * h + (rows - 1) * gap_px, columns * w + (columns - 1) * gap_px, 3), 24, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        out[r * (h + gap_px):r * (h + gap_px) + h, c * (w + gap_px):c * (w + gap_px) + w] = img
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write uint8 RGB ``(height, width, 3)`` (row 0 at the top) as PNG with VTK's writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[::-1])
    h, w, _ = arr.shape
    image = vtk.vtkImageData()
    image.SetDimensions(w, h, 1)
    scalars = numpy_support.numpy_to_vtk(arr.reshape(-1, 3), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    return path
