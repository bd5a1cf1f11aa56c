"""Plane views: one slice view per view label, in its acquisition plane, linked by intersections.

Each view's slice node is aligned to *its* volume's axes (not snapped to the nearest patient
axis): screen right = the image's column direction ``x``, screen up = ``−y`` (row 0 at the
top, as the image was acquired), slice normal = ``x × (−y) = −n``. Scrolling the view moves
through the stack along its normal. All plane views share one view group and show intersecting
slices, so the geometric lines are Slicer's own (``vtkMRMLSliceIntersectionWidget``), drawn in
the colour of the partner view, and move when another view is scrolled.

``layout_xml`` / ``register_layout`` describe the arrangement for ``vtkMRMLLayoutNode``
(heart: 2×2; knee: 1×3) with singleton tags ``PlaneSSL<label>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import slicer

from ..geometry.frames import lps_to_ras, ras_to_lps
from ..geometry.planes import ImagePlane
from .mrml import SceneContext, matrix_to_numpy, numpy_to_matrix
from .scene import planes_of_volume

__all__ = [
    "VIEW_COLORS",
    "PLANE_VIEW_GROUP",
    "LAYOUT_IDS",
    "PlaneView",
    "PlaneViews",
    "slice_to_ras_for_plane",
    "layout_xml",
    "layout_rows_xml",
    "register_layout",
    "create_plane_views",
    "singleton_tag",
    "view_color",
]

#: Layout colour of each view (RGB 0–1); intersection lines in other views take this colour.
#: Knee views keep Slicer's convention (axial red, sagittal yellow, coronal green).
VIEW_COLORS: dict[str, tuple[float, float, float]] = {
    "SAX": (0.953, 0.290, 0.200),
    "2CH": (0.929, 0.835, 0.298),
    "3CH": (0.373, 0.580, 0.949),
    "4CH": (0.431, 0.690, 0.294),
    "AX": (0.953, 0.290, 0.200),
    "SAG": (0.929, 0.835, 0.298),
    "COR": (0.431, 0.690, 0.294),
}
_FALLBACK_COLORS = [(0.8, 0.45, 0.9), (0.3, 0.85, 0.85), (0.9, 0.6, 0.3)]
#: View group of the plane views (Slicer's default Red/Yellow/Green views are group 0).
PLANE_VIEW_GROUP = 1
#: Layout IDs registered with ``vtkMRMLLayoutNode`` (above Slicer's built-in ones).
LAYOUT_IDS = {"heart": 1601, "knee": 1602, "other": 1603}


def singleton_tag(label: str) -> str:
    return f"PlaneSSL{label}"


def _hex(color: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{int(round(c * 255)):02X}" for c in color)


def view_color(label: str, index: int = 0) -> tuple[float, float, float]:
    return VIEW_COLORS.get(label, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def _view_item(i: int, label: str, view_group: int) -> str:
    color = view_color(label.split(" ")[0], i)  # "2CH plan" takes the colour of 2CH
    props = {"orientation": "Axial", "viewlabel": label, "viewcolor": _hex(color), "viewgroup": str(view_group)}
    body = "".join(f'<property name="{k}" action="default">{v}</property>' for k, v in props.items())
    return f'<item><view class="vtkMRMLSliceNode" singletontag="{singleton_tag(label)}">{body}</view></item>'


def layout_rows_xml(rows: Sequence[Sequence[str]], view_group: int = PLANE_VIEW_GROUP) -> str:
    """Layout description: rows of views, top to bottom (the planning layout: acquired over proposed)."""
    items = ["".join(_view_item(i, label, view_group) for i, label in enumerate(row)) for row in rows if row]
    body = "".join(f'<item><layout type="horizontal">{row}</layout></item>' for row in items)
    return f'<layout type="vertical">{body}</layout>'


def layout_xml(labels: Sequence[str], view_group: int = PLANE_VIEW_GROUP) -> str:
    """Layout description: 4 views as a 2×2 grid, otherwise one row."""
    items = [_view_item(i, label, view_group) for i, label in enumerate(labels)]
    if len(items) == 4:
        rows = [f'<item><layout type="horizontal">{"".join(items[r * 2:r * 2 + 2])}</layout></item>' for r in (0, 1)]
        return f'<layout type="vertical">{"".join(rows)}</layout>'
    return f'<layout type="horizontal">{"".join(items)}</layout>'


def register_layout(layout_node, labels: Sequence[str], layout_id: int, select: bool = True) -> int:
    """Add (or update) the plane-view layout on ``layout_node``; optionally switch to it."""
    xml = layout_xml(labels)
    if layout_node.IsLayoutDescription(layout_id):
        layout_node.SetLayoutDescription(layout_id, xml)
    else:
        layout_node.AddLayoutDescription(layout_id, xml)
    if select:
        layout_node.SetViewArrangement(layout_id)
    return layout_id


def slice_to_ras_for_plane(plane: ImagePlane) -> np.ndarray:
    """4×4 SliceToRAS showing ``plane`` as acquired: right = x, up = −y, centred on the image."""
    x = lps_to_ras(plane.x_dir_lps)
    up = lps_to_ras(-plane.y_dir_lps)
    n = np.cross(x, up)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = x, up, n
    m[:3, 3] = lps_to_ras(plane.centre_lps)
    return m


@dataclass
class PlaneView:
    """One plane view: its label, slice node and logic, the volume it shows, its planes (LPS)."""

    label: str
    slice_node: object
    slice_logic: object
    volume_node: object
    planes: list[ImagePlane]
    color: tuple[float, float, float]

    @property
    def normal_ras(self) -> np.ndarray:
        return matrix_to_numpy(self.slice_node.GetSliceToRAS())[:3, 2]

    def slice_index(self) -> int:
        """Index of the stack position nearest to the slice shown now."""
        centre_ras = matrix_to_numpy(self.slice_node.GetSliceToRAS())[:3, 3]
        p = ras_to_lps(centre_ras)
        n = self.planes[0].normal_lps
        d = [abs(float(n @ (p - pl.origin_lps))) for pl in self.planes]
        return int(np.argmin(d))

    def current_plane(self) -> ImagePlane:
        return self.planes[self.slice_index()]

    def set_slice_index(self, k: int) -> None:
        """Show stack position ``k`` (0 = first along the DICOM normal)."""
        k = int(np.clip(k, 0, len(self.planes) - 1))
        offset = float(self.normal_ras @ lps_to_ras(self.planes[k].centre_lps))
        self.slice_logic.SetSliceOffset(offset)

    def fit(self, width: int, height: int) -> None:
        """Field of view fitted to the volume, keeping the acquisition orientation."""
        self.slice_logic.FitSliceToVolume(self.volume_node, int(width), int(height))


@dataclass
class PlaneViews:
    """The plane views of a study, keyed by view label."""

    views: dict[str, PlaneView] = field(default_factory=dict)
    layout_id: int | None = None

    def __getitem__(self, label: str) -> PlaneView:
        return self.views[label]

    def __iter__(self):
        return iter(self.views.values())

    @property
    def labels(self) -> list[str]:
        return list(self.views)


def slice_node(ctx: SceneContext, label: str):
    """The module's slice node for view ``label`` (a scene singleton), made on first use."""
    tag = singleton_tag(label)
    node = ctx.scene.GetSingletonNode(tag, "vtkMRMLSliceNode")
    if node is None:
        node = slicer.vtkMRMLSliceNode()
        node.SetName(tag)
        node.SetLayoutName(tag)
        node.SetSingletonTag(tag)
        node.SetLayoutLabel(label)
        node.SetDefaultOrientation("Axial")
        ctx.scene.AddNode(node)
    return node


def create_plane_views(ctx: SceneContext, volumes: Mapping[str, object], anatomy: str | None = None,
                       size_px: tuple[int, int] = (256, 256), layout_node=None,
                       view_group: int = PLANE_VIEW_GROUP) -> PlaneViews:
    """One slice view per entry of ``volumes`` (view label → volume node), laid out and linked.

    Each slice node shows its volume as background, in the volume's own axes, at the middle of
    the stack, with its field of view fitted to ``size_px`` (width, height). Intersecting slices
    are switched on for the whole application. With ``layout_node`` the layout is registered and
    selected (``LAYOUT_IDS[anatomy]``).
    """
    labels = list(volumes)
    result = PlaneViews()
    if layout_node is not None:
        result.layout_id = register_layout(layout_node, labels, LAYOUT_IDS.get(anatomy or "other", LAYOUT_IDS["other"]))
    for i, label in enumerate(labels):
        volume = volumes[label]
        node = slice_node(ctx, label)
        logic = ctx.slice_logic(node)
        color = view_color(label, i)
        node.SetLayoutColor(*color)
        node.SetViewGroup(view_group)
        node.SetMappedInLayout(1)
        logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
        planes = planes_of_volume(volume)
        view = PlaneView(label, node, logic, volume, planes, color)
        mid = planes[(len(planes) - 1) // 2]
        m = slice_to_ras_for_plane(mid)
        node.GetSliceToRAS().DeepCopy(numpy_to_matrix(m))
        node.UpdateMatrices()
        view.fit(*size_px)
        node.GetSliceToRAS().DeepCopy(numpy_to_matrix(m))  # keep the orientation and the centre
        node.UpdateMatrices()
        view.set_slice_index((len(planes) - 1) // 2)
        display = logic.GetSliceDisplayNode()
        if display is not None:
            display.SetIntersectingSlicesVisibility(1)
        result.views[label] = view
    ctx.app_logic.SetIntersectingSlicesEnabled(slicer.vtkMRMLApplicationLogic.IntersectingSlicesVisibility, True)
    return result
