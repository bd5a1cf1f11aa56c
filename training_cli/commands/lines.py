"""``planessl lines A.dcm B.dcm [--json]``: where two images' planes cut each other."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from PlaneSSLLib.dicom.planes import GeometryError, plane_from_dataset
from PlaneSSLLib.geometry import ImagePlane, intersect_images

from ..errors import CLIError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "lines",
        help="intersection line of two DICOM images' planes, drawn in each image",
        description=(
            "Print the angle between the planes of two DICOM images and their intersection line "
            "clipped to each image, in pixel coordinates (x = column, y = row, 0-based, integer "
            "at pixel centres; the image spans [-0.5, cols-0.5] x [-0.5, rows-0.5])."
        ),
    )
    p.add_argument("image_a", type=Path, metavar="A.dcm")
    p.add_argument("image_b", type=Path, metavar="B.dcm")
    p.add_argument("--frame-a", type=int, default=0, help="frame of A for multi-frame images (0-based)")
    p.add_argument("--frame-b", type=int, default=0, help="frame of B for multi-frame images (0-based)")
    p.add_argument("--json", action="store_true", help="print one JSON object (docs/conventions.md, 'Lines JSON')")
    p.set_defaults(func=run)
    return p


def read_plane(path: Path, frame: int = 0) -> ImagePlane:
    """The plane of ``frame`` of the DICOM image at ``path``; CLIError names the file and problem."""
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except RecursionError:  # sequences nested thousands deep: a hostile or broken file
        raise CLIError(f"{path}: not a readable DICOM file (sequences nested too deep)") from None
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable DICOM file ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad bytes (zlib.error, struct.error ...)
        raise CLIError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    try:
        return plane_from_dataset(ds, frame)
    except GeometryError as exc:
        raise CLIError(f"{path}: no usable plane geometry: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    plane_a = read_plane(args.image_a, args.frame_a)
    plane_b = read_plane(args.image_b, args.frame_b)
    result = intersect_images(plane_a, plane_b)
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"A: {args.image_a}  ({plane_a.rows} rows x {plane_a.columns} columns)")
    print(f"B: {args.image_b}  ({plane_b.rows} rows x {plane_b.columns} columns)")
    print(f"angle between planes: {result.angle_deg:.2f} deg")
    if result.parallel:
        print("the planes are parallel (normals within 0.1 deg): no intersection line")
        return 0
    for label, seg in (("in A", result.in_a), ("in B", result.in_b)):
        if seg is None:
            print(f"line {label}: misses the image")
        else:
            print(
                f"line {label}: ({seg.p0[0]:.2f}, {seg.p0[1]:.2f}) -> ({seg.p1[0]:.2f}, {seg.p1[1]:.2f}) "
                f"px (x = column, y = row), {seg.length_px:.1f} px long"
            )
    return 0
