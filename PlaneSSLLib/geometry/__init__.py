"""Plane geometry in patient coordinates (numpy only). See docs/conventions.md."""

from .frames import LPS_TO_RAS, affine_lps_to_ras, affine_ras_to_lps, lps_to_ras, ras_to_lps
from .lines import (
    PARALLEL_TOLERANCE_DEG,
    ImageLine,
    PlanePairLines,
    Segment2D,
    clip_line_to_rect,
    distance_to_line_px,
    image_line,
    intersect_images,
    intersection_line_lps,
)
from .plane_fit import PlaneFit, SliceLine, fit_plane_to_lines
from .planes import ImagePlane, angle_between_normals_deg, unit
from .stacks import (
    are_parallel,
    group_parallel,
    order_along_normal,
    relative_locations,
    slice_locations_mm,
    slice_spacing_mm,
    stack_normal_lps,
)

__all__ = [
    "LPS_TO_RAS",
    "PARALLEL_TOLERANCE_DEG",
    "ImageLine",
    "ImagePlane",
    "PlaneFit",
    "PlanePairLines",
    "Segment2D",
    "SliceLine",
    "affine_lps_to_ras",
    "affine_ras_to_lps",
    "angle_between_normals_deg",
    "are_parallel",
    "clip_line_to_rect",
    "distance_to_line_px",
    "fit_plane_to_lines",
    "group_parallel",
    "image_line",
    "intersect_images",
    "intersection_line_lps",
    "lps_to_ras",
    "order_along_normal",
    "ras_to_lps",
    "relative_locations",
    "slice_locations_mm",
    "slice_spacing_mm",
    "stack_normal_lps",
    "unit",
]
