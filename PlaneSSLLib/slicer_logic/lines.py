"""Predicted intersection lines: run the line network on a view's image, draw each line there.

For the image shown in a plane view, a *line predictor* (any callable ``(image (H, W), plane)
→ heatmaps (C, H, W)``, channel k = the partner view ``channels[k]``, see ``data.pairs``)
gives one heatmap per partner view; ``inference.line_fit.fit_line`` turns each into a line,
which is compared with the geometric one (``geometry.lines.image_line`` against the plane the
partner view shows now) and drawn **in that view only** as a dashed line in the partner view's
colour: a model node of short quads standing across the image plane, which Slicer's model-slice
displayable manager cuts into dashes (display node restricted to the view's slice node). Slicer's
own geometric intersection lines are solid, so the two styles never mix.

``LineOverlay.update`` recomputes a view (called by an observer when its slice node changes,
e.g. when the user scrolls the SAX stack); ``LineOverlay.comparisons`` holds, per view, the
angle (degrees) and offset (pixels and mm, at the image centre) between predicted and
geometric lines for the GUI.

Scrolling never runs the network on the GUI thread once the lines are shown: a predictor whose
lines depend on its image alone (``image_only = True``: the network predictors here) gets its
fitted lines cached per (model, view, slice), and ``observe(background=True)`` starts a thread
that fills the cache for every slice of every view (from arrays copied once, no MRML access off
the GUI thread), the slice just scrolled to first. A scroll to a cached slice redraws at once; one
not cached yet is drawn by ``draw_ready`` (polled by the module's timer) when the thread has it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import vtk
from vtkmodules.util import numpy_support

from ..geometry.frames import lps_to_ras
from ..geometry.lines import ImageLine, clip_line_to_rect, image_line
from ..geometry.planes import ImagePlane
from ..inference.line_fit import fit_line, line_angle_error_deg, line_distance_error_px
from .mrml import SceneContext
from .views import PlaneView, PlaneViews

__all__ = [
    "LinePredictor",
    "LineComparison",
    "LineOverlay",
    "NetworkLinePredictor",
    "ManifestLinePredictor",
    "dashed_quads_lps",
    "volume_array",
]

ATTR_ANGLE = "PlaneSSL.AngleDeg"
ATTR_DISTANCE = "PlaneSSL.DistanceMm"


class LinePredictor(Protocol):
    """Heatmaps ``(C, H, W)`` for one image ``(H, W)`` with its plane; ``channels`` names C views.

    A predictor may also have ``fit_lines(image, plane) -> [FittedLine | None] * C`` (lines in the
    image's own pixel coordinates); ``LineOverlay`` then uses it instead of fitting the heatmaps. A
    predictor with ``takes_view = True`` is also given the image's view (``view=`` its label): a network
    with a heatmap head per view reads that view's.
    """

    channels: Sequence[str]

    def __call__(self, image: np.ndarray, plane: ImagePlane) -> np.ndarray: ...


@dataclass(frozen=True)
class LineComparison:
    """A predicted line against the geometric one, in one view (pixel coordinates of its image)."""

    view: str
    partner: str
    predicted: ImageLine
    geometric: ImageLine | None
    confidence: float
    angle_deg: float | None  # None when the planes are parallel (no geometric line)
    distance_px: float | None
    distance_mm: float | None


def volume_array(volume_node) -> np.ndarray:
    """A volume node's voxels as a read-only view ``(slices, rows, cols)``."""
    image = volume_node.GetImageData()
    cols, rows, slices = image.GetDimensions()
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return arr.reshape(slices, rows, cols)


def dashed_quads_lps(plane: ImagePlane, line: ImageLine, dash_mm: float = 5.0, gap_mm: float = 3.0,
                     half_height_mm: float = 0.5) -> np.ndarray | None:
    """Quads ``(n, 4, 3)`` (LPS) along ``line`` clipped to the image, standing across the plane.

    Each dash is a rectangle from ``a`` to ``b`` on the line, extruded ±``half_height_mm``
    along the plane normal, so that the slice plane cuts it into one segment.
    """
    seg = clip_line_to_rect(line, plane.shape_px)
    if seg is None:
        return None
    p0, p1 = plane.pixel_to_lps(np.array(seg.p0)), plane.pixel_to_lps(np.array(seg.p1))
    length = float(np.linalg.norm(p1 - p0))
    if length <= 0:
        return None
    t = (p1 - p0) / length
    h = plane.normal_lps * half_height_mm
    starts = np.arange(0.0, length, dash_mm + gap_mm)
    a = p0 + starts[:, None] * t
    b = p0 + np.minimum(starts + dash_mm, length)[:, None] * t
    return np.stack([a - h, b - h, b + h, a + h], axis=1)


def _polydata(quads_ras: np.ndarray) -> vtk.vtkPolyData:
    """One polygon per quad, built from arrays (no per-point Python calls: this runs on every scroll)."""
    quads = np.ascontiguousarray(np.asarray(quads_ras, dtype=np.float64).reshape(-1, 3))
    n = len(quads) // 4
    points = vtk.vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(quads, deep=True))
    cells = vtk.vtkCellArray()
    cells.SetData(numpy_support.numpy_to_vtkIdTypeArray(np.arange(0, 4 * n + 1, 4, dtype=np.int64), deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(np.arange(4 * n, dtype=np.int64), deep=True))
    poly = vtk.vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    return poly


def _offset_mm(plane: ImagePlane, predicted: ImageLine, geometric: ImageLine) -> float:
    """Offset (mm) between the lines where they pass the image centre, across the geometric line."""
    c = np.array([(plane.columns - 1) / 2, (plane.rows - 1) / 2])
    foot_g = c - geometric.signed_distance_px(c) * geometric.normal_px
    foot_p = c - predicted.signed_distance_px(c) * predicted.normal_px
    along = plane.pixel_to_lps(foot_g + geometric.direction_px) - plane.pixel_to_lps(foot_g)
    normal_mm = np.cross(plane.normal_lps, along / np.linalg.norm(along))
    return float(abs(normal_mm @ (plane.pixel_to_lps(foot_p) - plane.pixel_to_lps(foot_g))))


class LineOverlay:
    """Predicted lines of every plane view, kept up to date with the slices shown."""

    def __init__(self, ctx: SceneContext, views: PlaneViews, predictor: LinePredictor,
                 thickness_px: int = 1, min_confidence: float = 0.0) -> None:
        self.ctx = ctx
        self.views = views
        self.predictor = predictor
        self.thickness_px = int(thickness_px)
        self.min_confidence = float(min_confidence)
        self.comparisons: dict[str, list[LineComparison]] = {}
        self.models: dict[tuple[str, str], object] = {}
        self._shown: dict[str, int] = {}
        self._observers: list[tuple[object, int]] = []
        self.on_update: Callable[[str, list[LineComparison]], None] | None = None
        #: fitted lines per (model, view, slice) when the predictor's lines depend on its image only
        self.cacheable = bool(getattr(predictor, "image_only", False))
        self.model_key = str(getattr(predictor, "model_key", id(predictor)))
        self._cache: dict[tuple[str, str, int], list] = {}
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._requests: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.network_calls = 0  # how many times the predictor ran (the tests and the bench read it)

    # ------------------------------------------------------------------ cache
    def _fit(self, image: np.ndarray, plane: ImagePlane, view: str) -> list:
        self.network_calls += 1
        extra = {"view": view} if getattr(self.predictor, "takes_view", False) else {}
        fit_lines = getattr(self.predictor, "fit_lines", None)
        if fit_lines is not None:  # lines fitted by the predictor itself, in this image's pixels
            return list(fit_lines(image, plane, **extra))
        heatmaps = np.asarray(self.predictor(image, plane, **extra))
        if heatmaps.shape[1:] != image.shape:
            raise ValueError(f"predictor returned {heatmaps.shape} for an image of shape {image.shape}")
        return [fit_line(h) for h in heatmaps]

    def cached(self, label: str, k: int) -> list | None:
        with self._lock:
            return self._cache.get((self.model_key, label, int(k)))

    def fitted_lines(self, view: PlaneView, k: int) -> list:
        """The predictor's lines for slice ``k`` of ``view`` (from the cache when it may be cached)."""
        if self.cacheable:
            hit = self.cached(view.label, k)
            if hit is not None:
                return hit
        image = np.asarray(volume_array(view.volume_node)[k], dtype=np.float32)
        out = self._fit(image, view.planes[k], view.label)
        if self.cacheable:
            with self._lock:
                self._cache[(self.model_key, view.label, int(k))] = out
        return out

    # ------------------------------------------------------------------ computation
    def predict(self, view: PlaneView) -> list[LineComparison]:
        """Run the predictor on the view's current image; compare with the geometric lines."""
        k = view.slice_index()
        plane = view.planes[k]
        fitted_lines = self.fitted_lines(view, k)
        result = []
        for channel, partner in enumerate(self.predictor.channels):
            if partner == view.label or partner not in self.views.views:
                continue
            fitted = fitted_lines[channel]
            if fitted is None or fitted.confidence < self.min_confidence:
                continue
            other = self.views[partner].current_plane()
            geometric = image_line(plane, other)
            if geometric is None:
                result.append(LineComparison(view.label, partner, fitted.line, None, fitted.confidence,
                                             None, None, None))
                continue
            centre = ((plane.columns - 1) / 2, (plane.rows - 1) / 2)
            result.append(LineComparison(
                view.label, partner, fitted.line, geometric, fitted.confidence,
                line_angle_error_deg(fitted.line, geometric),
                line_distance_error_px(fitted.line, geometric, centre),
                _offset_mm(plane, fitted.line, geometric)))
        return result

    # ------------------------------------------------------------------ drawing
    def _model(self, view: PlaneView, partner: str):
        key = (view.label, partner)
        node = self.models.get(key)
        if node is None or self.ctx.scene.GetNodeByID(node.GetID()) is None:
            node = self.ctx.scene.AddNewNodeByClass("vtkMRMLModelNode", f"{view.label} predicted {partner} line")
            node.SetAttribute("PlaneSSL.PredictedLine", f"{view.label}:{partner}")
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            display.SetColor(*self.views[partner].color)
            display.SetVisibility(True)
            display.SetVisibility2D(True)
            display.SetVisibility3D(False)
            display.SetSliceIntersectionThickness(self.thickness_px)
            display.SetViewNodeIDs([view.slice_node.GetID()])
            self.models[key] = node
        return node

    def update(self, label: str, redraw: bool = True) -> list[LineComparison]:
        """Recompute and redraw the predicted lines of view ``label``. ``redraw=False`` (a cacheable
        predictor, the view's slice unchanged): its predicted lines are the same, only their
        comparisons with the geometric lines (which another view's move changed) are refreshed."""
        view = self.views[label]
        comparisons = self.predict(view)
        plane = view.current_plane()
        same = not redraw and self._shown.get(label) == view.slice_index()
        drawn = set()
        for comp in comparisons:
            key = (view.label, comp.partner)
            node = self._model(view, comp.partner)
            if not (same and key in self.models and node.GetPolyData() is not None):
                quads = dashed_quads_lps(plane, comp.predicted)
                node.SetAndObservePolyData(_polydata(lps_to_ras(quads)) if quads is not None else vtk.vtkPolyData())
            if comp.angle_deg is not None:
                node.SetAttribute(ATTR_ANGLE, f"{comp.angle_deg:.3f}")
                node.SetAttribute(ATTR_DISTANCE, f"{comp.distance_mm:.3f}")
            drawn.add(comp.partner)
        for (v, partner), node in self.models.items():  # partners without a line now: empty
            if v == label and partner not in drawn:
                node.SetAndObservePolyData(vtk.vtkPolyData())
        self.comparisons[label] = comparisons
        self._shown[label] = view.slice_index()
        if self.on_update is not None:
            self.on_update(label, comparisons)
        return comparisons

    def update_all(self) -> dict[str, list[LineComparison]]:
        for label in self.views.labels:
            self.update(label)
        return self.comparisons

    # ------------------------------------------------------------------ following the slices
    def observe(self, background: bool = False) -> None:
        """Update a view's lines whenever its slice moves to another stack position.

        A moved view also changes the geometric lines it casts on the other views, so their
        comparisons are refreshed (their predictions depend only on their own image).
        ``background`` (for a cacheable predictor): predictions come from the prefetch thread,
        never from the observer (see the module docstring).
        """
        for view in self.views:
            tag = view.slice_node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_slice_modified)
            self._observers.append((view.slice_node, tag))
        if background and self.cacheable:
            self._start_prefetch()

    @property
    def background(self) -> bool:
        return self._thread is not None

    def _refresh_others(self, label: str) -> None:
        for other in self.views.labels:
            if other != label and other in self._shown and other not in self._pending:
                self.update(other, redraw=not self.cacheable)  # cached: comparisons only

    def _on_slice_modified(self, node, _event) -> None:
        for view in self.views:
            if view.slice_node is node and self._shown.get(view.label) != view.slice_index():
                k = view.slice_index()
                if self.background and self.cached(view.label, k) is None:
                    self._pending.add(view.label)  # drawn by draw_ready once the thread has it
                    self._requests.put((view.label, k))
                    return
                self._pending.discard(view.label)
                self.update(view.label)
                self._refresh_others(view.label)
                return

    def draw_ready(self) -> int:
        """Draw every pending view whose current slice the prefetch thread has finished (GUI thread)."""
        done = 0
        for label in sorted(self._pending):
            view = self.views[label]
            if self.cached(label, view.slice_index()) is not None:
                self._pending.discard(label)
                self.update(label)
                self._refresh_others(label)
                done += 1
        return done

    def _start_prefetch(self) -> None:
        """Copy every view's slices and planes (GUI thread), then fit lines for all of them in a thread."""
        work = {view.label: (np.array(volume_array(view.volume_node), dtype=np.float32), list(view.planes))
                for view in self.views}
        order = [(label, k) for label, (arr, _planes) in work.items() for k in range(len(arr))]
        self._stop.clear()

        def run() -> None:
            todo = list(order)
            while not self._stop.is_set():
                try:
                    label, k = self._requests.get_nowait()  # the slice the user scrolled to first
                except queue.Empty:
                    if not todo:
                        return
                    label, k = todo.pop(0)
                if self.cached(label, k) is not None:
                    continue
                arr, planes = work[label]
                try:
                    out = self._fit(arr[k], planes[k], label)
                except Exception:  # noqa: BLE001 - the GUI thread recomputes it and shows the error
                    return
                with self._lock:
                    self._cache[(self.model_key, label, int(k))] = out

        self._thread = threading.Thread(target=run, name="planessl-line-prefetch", daemon=True)
        self._thread.start()

    def wait_prefetched(self, timeout: float | None = None) -> bool:
        """Wait for the prefetch thread to finish (tests, benches); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def remove(self) -> None:
        """Stop the prefetch and the observers; remove the line models from the scene."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._pending.clear()
        for node, tag in self._observers:
            node.RemoveObserver(tag)
        self._observers.clear()
        scene = self.ctx.scene
        for node in self.models.values():
            if scene.GetNodeByID(node.GetID()) is not None:
                displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
                scene.RemoveNode(node)
                for display in displays:  # not removed with the model by every scene (slicer-core keeps them)
                    if display is not None and scene.GetNodeByID(display.GetID()) is not None:
                        scene.RemoveNode(display)
        self.models.clear()


class NetworkLinePredictor:
    """A ``PlaneSSLNet`` as a line predictor: z-scored image, padded to the size multiple.

    Runs on the image's own pixel grid (no resampling; a trained model's input spacing is the
    inference layer's business). Output: the ``lines`` head, cropped back to ``(C, H, W)``.
    """

    image_only = True  # lines from the image alone: cacheable per slice

    def __init__(self, net, channels: Sequence[str], device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.net = net.to(device).eval()
        self.channels = tuple(channels)
        self.device = device
        self.multiple = int(getattr(getattr(net, "config", None), "size_multiple", 16))
        self.model_key = f"network-{id(net)}"

    def __call__(self, image: np.ndarray, plane: ImagePlane) -> np.ndarray:
        torch = self.torch
        img = np.asarray(image, dtype=np.float32)
        img = (img - img.mean()) / (img.std() + 1e-6)
        h, w = img.shape
        ph, pw = -h % self.multiple, -w % self.multiple
        x = torch.from_numpy(np.pad(img, ((0, ph), (0, pw))))[None, None].to(self.device)
        with torch.no_grad():
            out = self.net(x)
        lines = out["lines"] if isinstance(out, dict) else out
        return lines[0, :, :h, :w].float().cpu().numpy()


class ManifestLinePredictor:
    """Exported line weights as a line predictor, preparing images exactly as pretraining did.

    As ``inference.predict_lines.predict_image_lines``: the image is resampled onto the manifest's
    grid (``preprocess.resample.prepare_image``: spacing, size, intensity normalisation), the network's
    heatmaps are fitted there (``fit_line``) and each line is mapped back to the original image's
    pixels through the patient frame (``predict_lines.map_line_between_grids``). ``__call__`` gives
    the heatmaps resampled back onto the original image (for display or other consumers).
    """

    image_only = True  # lines from the image alone: cacheable per slice
    takes_view = True  # a network with a heatmap head per view reads the image's view's

    def __init__(self, net, validated, device: str = "cpu", model_key: str = "") -> None:
        """``net`` and its ``inference.manifest.ValidatedManifest`` (of task lines or both)."""
        import torch

        from ..inference.predict_lines import map_line_between_grids
        from ..preprocess.resample import prepare_image, resample_to_plane

        self.torch = torch
        self.net = net.to(device).eval()
        self.device = device
        self.channels = tuple(validated.manifest["channels"])
        prep = validated.preparation
        self.spacing_mm, self.size_px = prep.spacing_mm, prep.size_px
        self.normalisation, self.clip_percentiles = prep.normalisation, prep.clip_percentiles
        self._prepare, self._resample, self._map = prepare_image, resample_to_plane, map_line_between_grids
        self.model_key = model_key or f"network-{id(net)}"

    @classmethod
    def from_weights(cls, path, device: str = "cpu") -> ManifestLinePredictor:
        """Exported line weights (``inference.weights.load_validated`` of task lines or both)."""
        from ..inference.weights import load_validated

        net, validated = load_validated(path, device, expect_task=("lines", "both"))
        return cls(net, validated, device, model_key=str(path))

    def heatmaps_prepared(self, image: np.ndarray, plane: ImagePlane,
                          view: str | None = None) -> tuple[np.ndarray, ImagePlane]:
        """``(heatmaps (C, size, size) on the prepared grid, that grid's plane)``; ``view``: the image's view
        (required by a network with a heatmap head per view)."""
        img, grid = self._prepare(image, plane, self.spacing_mm, self.size_px, self.normalisation,
                                  self.clip_percentiles)
        torch, config = self.torch, self.net.config
        if config.head_views and view is None:
            raise ValueError(f"these weights have a heatmap head per view ({', '.join(config.head_views)}): "
                             "the image's view is needed")
        heads = torch.tensor([config.head_index(view)], device=self.device) if config.head_views else None
        with torch.no_grad():
            out = self.net(torch.from_numpy(np.ascontiguousarray(img))[None, None].to(self.device), heads)
        lines = out["lines"] if isinstance(out, dict) else out
        return lines[0].float().cpu().numpy(), grid

    def fit_lines(self, image: np.ndarray, plane: ImagePlane, view: str | None = None) -> list:
        """Per channel, the fitted line in ``image``'s pixel coordinates (None where no line)."""
        from ..inference.line_fit import FittedLine

        heat, grid = self.heatmaps_prepared(image, plane, view)
        out = []
        for h in heat:
            fitted = fit_line(h)
            out.append(None if fitted is None else
                       FittedLine(self._map(fitted.line, grid, plane), fitted.confidence, fitted.peak))
        return out

    def __call__(self, image: np.ndarray, plane: ImagePlane, view: str | None = None) -> np.ndarray:
        heat, grid = self.heatmaps_prepared(image, plane, view)
        return np.stack([self._resample(h, grid, plane, antialias=True, cval=0.0) for h in heat]).astype(np.float32)
