"""Predicted lines never run the network on the GUI thread when the user scrolls: fitted lines are
cached per (model, view, slice) and a background thread fills the cache (``LineOverlay.observe(
background=True)``); a slice scrolled to before the thread has it is left pending and drawn by
``draw_ready``. Real MRML (slicer-core), the module's sample study, a tiny random line network.
"""

from __future__ import annotations

import os
import threading

import pytest
from test_slicer_logic import require_slicer_core

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
require_slicer_core()
pytest.importorskip("torch")

from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort  # noqa: E402
from PlaneSSLLib.slicer_logic.lines import LineOverlay, ManifestLinePredictor  # noqa: E402
from PlaneSSLLib.slicer_logic.logic import Logic, export_random_weights  # noqa: E402
from PlaneSSLLib.slicer_logic.mrml import SceneContext  # noqa: E402


class GatedPredictor:
    """A real line predictor whose background calls wait for ``gate``; counts calls per thread."""

    image_only = True

    def __init__(self, inner):
        self.inner, self.channels, self.model_key = inner, inner.channels, "gated"
        self.gate = threading.Event()
        self.main_calls = 0
        self.thread_calls = 0

    def fit_lines(self, image, plane):
        if threading.current_thread() is threading.main_thread():
            self.main_calls += 1
        else:
            self.gate.wait(60)
            self.thread_calls += 1
        return self.inner.fit_lines(image, plane)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("line_cache")
    write_cohort(root / "heart", CohortOptions("heart", 1, seed=7, phases=2, matrix=64), workers=1)
    weights = export_random_weights(root / "w_lines", "lines", channels=("2CH", "3CH", "4CH", "SAX"))
    return root, weights


def test_scroll_reads_the_cache_filled_in_the_background(study):
    root, weights = study
    logic = Logic(SceneContext.create())
    loaded = logic.load_dicom_folder(root / "heart")
    views = logic.show_planes(logic.study_volumes(loaded.volumes["SAX"]))
    predictor = GatedPredictor(ManifestLinePredictor.from_weights(weights.path, "cpu"))
    overlay = LineOverlay(logic.ctx, views, predictor)
    try:
        overlay.update_all()
        assert predictor.main_calls == 4  # the four views' current slices, once
        overlay.observe(background=True)
        sax = views["SAX"]
        start = sax.slice_index()
        target = (start + 2) % len(sax.planes)
        sax.set_slice_index(target)  # not cached yet: no network call here, the view waits
        assert predictor.main_calls == 4 and "SAX" in overlay._pending and overlay._shown["SAX"] == start
        assert overlay.draw_ready() == 0
        predictor.gate.set()
        assert overlay.wait_prefetched(120)
        total = sum(len(v.planes) for v in views)
        assert predictor.thread_calls == total - 4  # every other slice, once
        assert overlay.draw_ready() == 1 and overlay._shown["SAX"] == target and not overlay._pending
        for k in range(len(sax.planes)):  # every slice now comes from the cache
            sax.set_slice_index(k)
            assert overlay._shown["SAX"] == k
        assert predictor.main_calls == 4
        assert len(overlay._cache) == total and all(key[0] == "gated" for key in overlay._cache)
    finally:
        overlay.remove()
    assert not overlay.background


def test_a_predictor_that_reads_other_views_is_not_cached(study):
    root, weights = study
    logic = Logic(SceneContext.create())
    loaded = logic.load_dicom_folder(root / "heart")
    views = logic.show_planes(logic.study_volumes(loaded.volumes["SAX"]))
    predictor = ManifestLinePredictor.from_weights(weights.path, "cpu")
    predictor.image_only = False  # e.g. a predictor that looks at the partner views' planes
    overlay = LineOverlay(logic.ctx, views, predictor)
    overlay.update_all()
    overlay.update_all()
    overlay.observe(background=True)
    assert overlay.network_calls == 8 and not overlay._cache and not overlay.background
    overlay.remove()
