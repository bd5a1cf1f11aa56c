"""Time from a study folder to a laid-out scene, and to a segmentation, on real MRML (slicer-core).

Writes one synthetic heart subject (Kaggle layout, 8 phases), then measures, in this process:
scan + view labels, volumes into the scene (ED phase), plane views with layout and one offscreen
render of every view, then a segmentation of the SAX stack by a small random-weight U-Net run in
the background worker (``runner``) and imported as a segmentation node. Prints one line per
stage and the totals. Usage: ``python bench/bench_scene.py [--base-filters 16] [--levels 4]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import slicer

    from PlaneSSLLib.dicom.scan import scan_tree
    from PlaneSSLLib.dicom.views import identify_views
    from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort
    from PlaneSSLLib.slicer_logic import lines, offscreen, runner, scene, segmentation, views
    from PlaneSSLLib.slicer_logic.mrml import SceneContext

    with tempfile.TemporaryDirectory() as tmp:
        write_cohort(Path(tmp), CohortOptions("heart", 1, seed=0), workers=1)
        folder = Path(tmp) / "subject_0000" / "study"
        stages: list[tuple[str, float]] = []
        t0 = time.perf_counter()

        def mark(name: str) -> None:
            stages.append((name, time.perf_counter() - t0))

        study = scan_tree(folder).studies[0]
        identify_views(study)
        mark("scan + view labels")
        ctx = SceneContext.create()
        loaded = scene.load_study(ctx, study, phase=0)
        mark("volumes in the scene")
        layout_logic = slicer.vtkMRMLLayoutLogic()
        layout_logic.SetMRMLScene(ctx.scene)
        plane_views = views.create_plane_views(ctx, loaded.volumes, "heart", (256, 256),
                                               layout_node=layout_logic.GetLayoutNode())
        mark("plane views + layout")
        for view in plane_views:
            offscreen.OffscreenSliceView(ctx, view.slice_node, (256, 256)).render()
        mark("first offscreen render (4 views)")
        laid_out = stages[-1][1]
        sax = loaded.volumes["SAX"]
        request = runner.InferenceRequest(
            "segment_heart", {"image": lines.volume_array(sax)},
            {"config": {"base_filters": args.base_filters, "levels": args.levels}}, device=args.device)
        result = runner.run_blocking(request)
        mark(f"segmentation inference ({result.device}, {lines.volume_array(sax).shape[0]} slices, worker)")
        with runner.scene_transaction(ctx.scene):
            segmentation.add_segmentation(ctx, result.outputs["labels"], sax)
        mark("segmentation node")
        previous = 0.0
        for name, t in stages:
            print(f"{name:<58s} {t - previous:7.2f} s")
            previous = t
        print(f"{'study folder -> laid-out scene (rendered)':<58s} {laid_out:7.2f} s")
        print(f"{'study folder -> segmentation in the scene':<58s} {stages[-1][1]:7.2f} s")


if __name__ == "__main__":
    main()
