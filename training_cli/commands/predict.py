"""``planessl predict seg|lines ...``: run exported weights on DICOM images.

- ``seg STUDY_DIR --weights W --out DIR``: segment the study's SAX stack (RV, Myo, LV); writes
  ``DIR/seg_phaseNN.nii.gz`` (label map on the original SAX geometry, slices along the DICOM
  normal) and ``DIR/seg_phaseNN.dcm`` (DICOM SEG referencing the SAX images) per phase.
- ``seg VOLUME.nii.gz --weights W --out DIR``: a NIfTI SAX volume (ACDC, M&Ms-2, ...) or 4D cine;
  writes ``DIR/<name>_seg.nii.gz`` with the input's shape and affine (a cine: every frame, or
  ``--phase`` frames, or ``--ed-es`` from the ACDC ``Info.cfg`` beside it, one file per frame);
  no DICOM SEG (there are no DICOM images to reference).
- The input may be named ``FORMAT:PATH`` as on the other commands (``dicom``, ``phantom``,
  ``acdc``, ``mnms2``, ``auto``); the path decides how it is read.
- ``lines IMAGE.dcm --weights W``: the intersection lines a pretrained line network predicts in
  the image, per partner view, in the original image's pixel coordinates (``planessl lines`` form).
- ``acl``: knee ACL-tear classification, from ``training_cli/commands/predict_acl.py`` when present.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..arguments import add_task_group
from ..errors import CLIError
from ..threads import one_blas_thread
from .predict_acl import register_acl


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p, tasks = add_task_group(sub, "predict", help="run exported weights on DICOM (seg, lines, acl)",
                              description="Inference with exported PlaneSSL weights (torch + numpy only).",
                              dest="predict_task")
    _register_seg(tasks)
    _register_lines(tasks)
    register_acl(tasks)
    return p


def _register_seg(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser("seg", help="segment a study's SAX stack (DICOM or NIfTI): NIfTI label map (+ DICOM SEG)",
                         description="Segment RV, myocardium and LV on the SAX stack of one DICOM study, or on a "
                                     "NIfTI SAX volume or cine (the label map then has the input's grid).")
    p.add_argument("study", metavar="STUDY_DIR|VOLUME.nii.gz",
                   help="a DICOM study folder, or a NIfTI SAX volume / 4D cine (optionally FORMAT:PATH)")
    p.add_argument("--weights", type=Path, required=True, metavar="W", help="segmentation weights (dir or .zip)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--phase", type=int, nargs="+", default=None, metavar="N",
                   help="cine phase(s) to segment, 0-based in time order (default: DICOM 0; a NIfTI cine: every frame)")
    p.add_argument("--ed-es", action="store_true",
                   help="NIfTI cine: the ED and ES frames named by the ACDC Info.cfg beside it")
    p.add_argument("--no-lcc", action="store_true", help="keep every connected component")
    p.add_argument("--no-dicom-seg", action="store_true", help="write the NIfTI label map only")
    p.set_defaults(func=run_seg)


def _register_lines(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser("lines", help="predicted intersection lines in one DICOM or NIfTI image",
                         description="Fit the pretrained network's line heatmaps and print them in the original "
                                     "image's pixel coordinates (x = column, y = row, 0-based).")
    p.add_argument("image", metavar="IMAGE.dcm|IMAGE.nii.gz",
                   help="a DICOM image, or a NIfTI image/volume (optionally FORMAT:PATH, e.g. mnms2:001_LA_ED.nii.gz)")
    p.add_argument("--weights", type=Path, required=True, metavar="W", help="pretrained weights (dir or .zip)")
    p.add_argument("--view", default=None, help="the image's view (default: from the study's geometry)")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame image or NIfTI cine (0-based)")
    p.add_argument("--slice", type=int, default=None, dest="slice_index",
                   help="NIfTI: the slice (0-based; default the middle one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_lines)


def _input_path(text: str) -> Path:
    """The path of ``FORMAT:PATH`` (or a plain path); the formats a segmentation input can be."""
    from PlaneSSLLib.data.sources import parse_data_spec

    spec = parse_data_spec(text)
    if spec.format not in ("auto", "dicom", "phantom", "acdc", "mnms2"):
        raise CLIError(f"{text}: predict seg reads DICOM studies and NIfTI SAX volumes (dicom, phantom, acdc, mnms2), "
                       f"not {spec.format}")
    return spec.root


def _acdc_ed_es(volume_path: Path) -> list[int]:
    from PlaneSSLLib.data.adapters.acdc import read_info_cfg

    info_path = volume_path.parent / "Info.cfg"
    if not info_path.is_file():
        raise CLIError(f"{volume_path}: --ed-es needs the ACDC Info.cfg beside it ({info_path} is missing)")
    info = read_info_cfg(info_path)
    return [int(info["ED"]) - 1, int(info["ES"]) - 1]


def _run_seg_nifti(args: argparse.Namespace, path: Path) -> int:
    import numpy as np

    from PlaneSSLLib.inference.segment import load_seg_model
    from PlaneSSLLib.inference.segment_nifti import read_sax_nifti, segment_nifti, write_label_like

    volume = read_sax_nifti(path)
    model = load_seg_model(args.weights)
    frames = _acdc_ed_es(path) if args.ed_es else args.phase
    if frames is not None and volume.n_frames == 1 and list(frames) != [0]:
        raise CLIError(f"{path}: a 3D volume has only frame 0 (--phase/--ed-es are for a 4D cine)")
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".gz") else path.stem
    voxel_ml = float(np.prod(np.linalg.norm(volume.affine_ras[:3, :3], axis=0))) / 1000.0
    entries = []
    if frames is None or volume.n_frames == 1:
        labels = segment_nifti(model, volume, None, lcc=not args.no_lcc)
        written = [(None, labels, args.out / f"{stem}_seg.nii.gz")]
    else:
        written = [(t, segment_nifti(model, volume, [t], lcc=not args.no_lcc),
                    args.out / f"{stem}_seg_frame{t:02d}.nii.gz") for t in frames]
    for t, labels, out in written:
        write_label_like(out, labels, volume)
        entry = {"frame": t, "shape": list(labels.shape), "nifti": str(out)}
        if labels.ndim == 3:
            entry["volume_ml"] = {n: round(float((labels == i).sum()) * voxel_ml, 2)
                                  for i, n in enumerate(model.label_names) if i > 0}
        entries.append(entry)
    print(json.dumps({"input": "nifti", "frames": entries}))
    return 0


def run_seg(args: argparse.Namespace) -> int:
    one_blas_thread()
    import numpy as np

    from PlaneSSLLib.dicom.nifti import write_label_nifti
    from PlaneSSLLib.inference.segment import (
        check_stack_complete,
        find_study_sax_stack,
        load_seg_model,
        segment_stack,
        stack_phase_frames,
    )
    from PlaneSSLLib.inference.segment_nifti import is_nifti_path

    path = _input_path(args.study)
    if is_nifti_path(path):
        return _run_seg_nifti(args, path)
    if args.ed_es:
        raise CLIError(f"{path}: --ed-es is for a NIfTI cine (a DICOM study: --phase)")
    model = load_seg_model(args.weights)
    stack = find_study_sax_stack(path)
    phases = args.phase or [0]
    check_stack_complete(stack, phases)  # every phase before anything is written
    summary = []
    for phase in phases:
        result = segment_stack(model, stack, phase, lcc=not args.no_lcc)
        nifti = args.out / f"seg_phase{phase:02d}.nii.gz"
        try:
            write_label_nifti(nifti, list(result.labels), result.planes)
        except ValueError as exc:
            raise CLIError(f"{path}: the SAX stack cannot be written as one NIfTI volume ({exc})") from exc
        entry = {"phase": phase, "slices": len(result.planes), "nifti": str(nifti)}
        dr, dc = result.planes[0].spacing_mm
        gap = float(np.median(np.diff([float(result.planes[0].normal_lps @ p.origin_lps) for p in result.planes])))
        voxel_ml = dr * dc * abs(gap) / 1000.0 if len(result.planes) > 1 else float("nan")
        entry["volume_ml"] = {n: round(float((result.labels == i).sum()) * voxel_ml, 2)
                              for i, n in enumerate(model.label_names) if i > 0}
        if not args.no_dicom_seg:
            from PlaneSSLLib.inference.dicom_seg import structures_from_terminology, write_dicom_seg

            dcm = args.out / f"seg_phase{phase:02d}.dcm"
            category, structures = structures_from_terminology(model.manifest.get("terminology"))
            write_dicom_seg(dcm, result.labels, result.planes, stack_phase_frames(stack, phase), structures,
                            category=category)
            entry["dicom_seg"] = str(dcm)
        summary.append(entry)
    print(json.dumps({"phases": summary}))
    return 0


def run_lines(args: argparse.Namespace) -> int:
    from PlaneSSLLib.data.sources import parse_data_spec
    from PlaneSSLLib.inference.predict_lines import predict_image_lines

    spec = parse_data_spec(args.image)
    if spec.format not in ("auto", "dicom", "phantom", "kaggle-dsb", "ukbb", "mnms2", "acdc"):
        raise CLIError(f"{args.image}: predict lines reads one DICOM or NIfTI image, not {spec.format} data")
    result = predict_image_lines(args.weights, spec.root, args.view, args.frame, slice_index=args.slice_index)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.image}: view {result['view']}")
    for entry in result["partners"]:
        seg = entry["in_a"]
        where = "no line" if seg is None else (f"({seg['p0'][0]:.1f}, {seg['p0'][1]:.1f}) -> "
                                               f"({seg['p1'][0]:.1f}, {seg['p1'][1]:.1f}) px")
        print(f"  {entry['view']}: {where}  confidence {entry['confidence']:.2f}")
    return 0
