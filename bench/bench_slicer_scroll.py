"""GUI-thread time per scroll step of the plane views with predicted lines (the Slicer module's path).

On real MRML (slicer-core): the module's sample study (``PlaneSSL.SAMPLE_COHORT``) loaded, plane
views shown, predicted lines of the bundled sample weights (``Resources/Sample/heart-plane-lines``,
``Resources/Models.json``) shown as the module does (``Logic.show_predicted_lines``: lines cached per
(model, view, slice), a background thread fills the cache). Then every SAX slice is scrolled to
(``set_slice_index``, which fires the slice node's observer as a scroll in Slicer does) and the time
spent on the calling thread is measured per step: ``cold`` right after the lines are shown (the
prefetch still running: a slice not cached yet is left pending and drawn by ``draw_ready``), then
``warm`` once the prefetch has finished, and ``uncached`` for comparison (the overlay recomputing on
the GUI thread, as before the cache). Usage: ``python bench/bench_slicer_scroll.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _scroll(view, overlay, indices) -> list[float]:
    times = []
    for k in indices:
        t0 = time.perf_counter()
        view.set_slice_index(k)
        overlay.draw_ready()  # what the module's 50 ms timer does on the GUI thread
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def _line(name: str, times: list[float]) -> str:
    return (f"{name:9s} steps {len(times):3d}  median {statistics.median(times):6.1f} ms  "
            f"max {max(times):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort
    from PlaneSSLLib.slicer_logic.lines import LineOverlay, ManifestLinePredictor
    from PlaneSSLLib.slicer_logic.logic import Logic
    from PlaneSSLLib.slicer_logic.mrml import SceneContext

    registry = ROOT / "Resources" / "Models.json"
    sample = {"anatomy": "heart", "subjects": 1, "seed": 7, "phases": 2, "matrix": 64}  # PlaneSSL.SAMPLE_COHORT
    with tempfile.TemporaryDirectory() as tmp:
        write_cohort(Path(tmp) / "heart", CohortOptions(**sample), workers=1, force=True)
        logic = Logic(SceneContext.create(), registry_path=registry, cache_dir=Path(tmp) / "cache")
        loaded = logic.load_dicom_folder(Path(tmp) / "heart")
        volumes = logic.study_volumes(loaded.volumes["SAX"])
        logic.show_planes(volumes)
        model = logic.resolve_model("heart-plane-lines-sample", "lines")
        t0 = time.perf_counter()
        logic.show_predicted_lines(model, "cpu")
        shown_ms = (time.perf_counter() - t0) * 1000.0
        overlay = logic.overlay
        sax = logic.plane_views["SAX"]
        n = len(sax.planes)
        order = list(range(n)) + list(range(n - 1, -1, -1))
        cold = _scroll(sax, overlay, order[: n])
        overlay.wait_prefetched(300)
        warm = _scroll(sax, overlay, order)
        logic.cleanup()

        plain = LineOverlay(logic.ctx, logic.plane_views, ManifestLinePredictor.from_weights(model.path, "cpu"))
        plain.cacheable = False
        plain.update_all()
        plain.observe()
        uncached = _scroll(sax, plain, order[: n])
        plain.remove()
    print(f"sample lines model: {model.path} (torch {torch.__version__}, {args.threads} threads)")
    print(f"show predicted lines (4 views, GUI thread, once): {shown_ms:.0f} ms")
    print(_line("cold", cold))
    print(_line("warm", warm))
    print(_line("uncached", uncached))


if __name__ == "__main__":
    main()
