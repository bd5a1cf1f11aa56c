"""The module's Widget driven like a user would, on slicer-core's MRML with Qt stubbed (a fake ``ui``
with the .ui file's widget names, a fake ``slicer.app``): Load sample → plane views → predicted
lines (bundled sample weights) → segmentation in the background worker → cancel mid-run → scene
unchanged; Cancel during the synchronous phases (download, in-process line prediction) cancels and
never starts a second run; the model box never defaults to an unpublished model; closing the scene
during a run with the Windows branch of the runner.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET

import pytest
from test_slicer_module_static import MODULE_PY, UI, _stub_modules

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


class FakeWidget:
    """The attributes and methods of the Qt widgets the module touches."""

    def __init__(self, name: str) -> None:
        self.name, self.text, self.toolTip, self.format = name, "", "", ""
        self.enabled, self.collapsed = True, True
        self.maximum, self.value, self.currentIndex = 100, 0, -1
        self.currentPath = ""
        self.items: list[tuple[str, str]] = []
        self.lines: list[str] = []
        self.props: dict[str, object] = {}

    def connect(self, signal, slot):
        pass

    def clear(self):
        self.items, self.lines, self.currentIndex = [], [], -1

    def appendPlainText(self, text):
        self.lines.append(text)

    def setPlainText(self, text):
        self.lines = [text]

    def addItem(self, text, data=None):
        self.items.append((text, data))

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index):
        self.currentIndex = index

    def itemData(self, index):
        return self.items[index][1] if 0 <= index < len(self.items) else None

    def property(self, name):
        return self.props.get(name)

    def setProperty(self, name, value):
        self.props[name] = value


class FakeTimer:
    def __init__(self):
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class FakeApp:
    """``slicer.app``: processEvents runs ``on_events`` (what the user does meanwhile)."""

    def __init__(self):
        self.on_events = None

    def processEvents(self):
        if self.on_events is not None:
            self.on_events()

    def layoutManager(self):
        return types.SimpleNamespace(layoutLogic=lambda: types.SimpleNamespace(GetLayoutNode=lambda: None))

    def testingEnabled(self):
        return False


class ParameterNode(types.SimpleNamespace):
    """The wrapped parameter node's fields, GUI binding and VTK observation, without the MRML node."""

    __hash__ = object.__hash__

    def AddObserver(self, event, method, priority=0.0):
        return 1

    def RemoveObserver(self, tag):
        pass

    def connectGui(self, ui):
        return "tag"

    def disconnectGui(self, tag):
        pass


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One per-user cache for the module's tests: the sample study is written into it once."""
    return tmp_path_factory.mktemp("planessl_cache")


@pytest.fixture
def env(monkeypatch, module_cache):
    """(module, widget, recorded slicer.util calls)."""
    import importlib.util

    from test_slicer_logic import require_slicer_core

    slicer = require_slicer_core()
    pytest.importorskip("torch")
    for name, stub in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("PlaneSSL_module_widget", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from PlaneSSLLib.slicer_logic.mrml import SceneContext

    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: shown.append(text), raising=False)

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - shown like the real one
            shown.append(f"{message} {exc}")

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", tryWithErrorDisplay, raising=False)
    app = FakeApp()
    monkeypatch.setattr(slicer, "app", app, raising=False)
    deps = []
    monkeypatch.setattr(module.PlaneSSLLogic, "ensureDependencies",
                        classmethod(lambda cls, askConfirmation=True, needTorch=True, testing=None:
                                    deps.append(needTorch)))
    widget = module.PlaneSSLWidget(types.SimpleNamespace(isEntered=True))
    names = [w.get("name") for w in ET.parse(UI).getroot().iter("widget")]
    widget.ui = types.SimpleNamespace(**{n: FakeWidget(n) for n in names})
    widget.logic = module.PlaneSSLLogic(ctx=SceneContext.create(), cacheDir=module_cache)
    widget._timer, widget._linesTimer = FakeTimer(), FakeTimer()
    node = ParameterNode(inputVolume=None, dicomFolder="", task="Plane lines", modelId="", localModelFolder="",
                         device="cpu", showGeometricLines=True, showPredictedLines=True)
    widget.setParameterNode(node)
    yield types.SimpleNamespace(module=module, widget=widget, shown=shown, app=app, deps=deps, node=node)
    widget.logic.cleanupLib()


def _poll(widget, timeout=180):
    deadline = time.time() + timeout
    while widget._timer.active and time.time() < deadline:
        widget._pollRun()
        time.sleep(0.1)
    assert not widget._timer.active, "the background run did not finish"


def test_whole_path_load_sample_lines_segmentation_cancel(env):
    from PlaneSSLLib.slicer_logic.mrml import node_ids

    w, module = env.widget, env.module
    assert env.node.modelId == module.SAMPLE_MODELS["lines"]  # the bundled sample weights by default
    w.onLoadSample()
    assert env.shown == [] and env.deps == [False]  # Load sample: no torch
    scene = w.logic.ctx.scene
    assert w.logic.plane_views.labels == ["SAX", "2CH", "3CH", "4CH"]
    assert env.node.inputVolume is not None

    # predicted lines with the bundled sample weights (in this process), drawn in every view
    w.onApply()
    assert env.shown == [] and env.deps[-1] is True
    overlay = w.logic.overlay
    assert set(overlay.comparisons) == {"SAX", "2CH", "3CH", "4CH"} and overlay.models
    assert any("line off by" in line for line in w.ui.resultsTextEdit.lines[0].splitlines())
    assert w._linesTimer.active and overlay.background  # scrolling reads a cache filled in the background
    assert overlay.wait_prefetched(120)
    sax = w.logic.plane_views["SAX"]
    calls = overlay.network_calls
    sax.set_slice_index((sax.slice_index() + 3) % len(sax.planes))
    assert overlay.network_calls == calls and overlay._shown["SAX"] == sax.slice_index()  # from the cache
    for view, comps in overlay.comparisons.items():  # every partner's line found and compared
        assert {c.partner for c in comps} == {"SAX", "2CH", "3CH", "4CH"} - {view}
    # the sample network learnt the synthetic planes: its lines follow the geometric ones on the sample
    # study (not a training subject); 11 degrees median when the weights were made, ~45 untrained
    angles = sorted(c.angle_deg for comps in overlay.comparisons.values() for c in comps if c.angle_deg is not None)
    assert len(angles) == 12 and angles[len(angles) // 2] < 20.0, angles

    # segmentation in the background worker with the bundled sample weights
    env.node.task = "Cardiac segmentation"
    w._populateModels()
    assert env.node.modelId == module.SAMPLE_MODELS["segment_heart"]
    w.onApply()
    assert w._timer.active and w.ui.applyButton.text == "Cancel"
    _poll(w)
    assert env.shown == [], env.shown
    segs = [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    assert len(segs) == 1 and segs[0].GetSegmentation().GetNumberOfSegments() == 3
    assert any("mL" in line for line in w.ui.resultsTextEdit.lines[0].splitlines())
    assert w.ui.applyButton.text == "Apply"

    # cancel mid-run: the worker is killed, the scene is as it was, no error shown
    before = node_ids(scene)
    w.onApply()
    assert w.logic.isRunning()
    w.onApplyOrCancel()  # the button shows Cancel
    _poll(w)
    assert node_ids(scene) == before
    assert env.shown == [] and any("Cancelled" in line for line in w.ui.logTextEdit.lines)


def test_cancel_during_line_prediction_and_download_never_reenters(env, monkeypatch):
    from PlaneSSLLib.slicer_logic.mrml import node_ids

    w = env.widget
    w.onLoadSample()
    before = node_ids(w.logic.ctx.scene)
    applies = []
    real_apply = w.onApply
    monkeypatch.setattr(w, "onApply", lambda: (applies.append(1), real_apply()))

    def user_clicks_meanwhile():
        w.onApplyOrCancel()  # Apply shows Cancel: a second click must not start a second run
        w.onLoadSample()  # nor another action
        w.onShowPlanes()

    env.app.on_events = user_clicks_meanwhile
    w.onApplyOrCancel()  # Apply: lines in this process, progress callbacks call processEvents
    assert applies == [1]
    assert w.logic.overlay is None and node_ids(w.logic.ctx.scene) == before  # cancelled, rolled back
    assert env.shown == [] and any("Cancelled" in line for line in w.ui.logTextEdit.lines)
    assert w.ui.applyButton.text == "Apply" and not w._busy

    # a model download (synchronous, with processEvents) is cancelled the same way
    seen = {}

    def resolve_model(model, task, progress=None, cancelled=None):
        progress(1000, 10_000)  # the user clicks Cancel while the download runs
        seen["cancelled"] = cancelled()
        from PlaneSSLLib.slicer_logic.models_registry import DownloadError

        raise DownloadError("download cancelled (1000 bytes kept for resuming)")

    monkeypatch.setattr(w.logic.lib, "resolve_model", resolve_model)
    env.app.on_events = lambda: w.onApplyOrCancel()
    w.onApplyOrCancel()
    assert seen == {"cancelled": True} and applies == [1, 1] and env.shown == []


def test_model_box_never_defaults_to_an_unpublished_model(env):
    w = env.widget
    w.onLoadSample()
    env.node.task = "Knee ACL tear"  # only an unpublished registry entry for this task
    w._populateModels()
    assert env.node.modelId == "" and w.ui.modelComboBox.currentIndex == 0
    w._checkCanApply()
    assert not w.ui.applyButton.enabled and "usable model" in w.ui.applyButton.toolTip
    env.node.modelId = "knee-acl-tear"  # chosen by hand: still not usable
    w._checkCanApply()
    assert not w.ui.applyButton.enabled
    env.node.task = "Plane lines"
    env.node.modelId = ""
    w._populateModels()
    w._checkCanApply()
    assert w.ui.applyButton.enabled


def test_scene_close_during_a_run_on_windows(env, monkeypatch):
    from PlaneSSLLib.slicer_logic import runner

    monkeypatch.setattr(runner, "is_windows", lambda: True)
    monkeypatch.delattr(os, "killpg")
    monkeypatch.setattr(runner, "signal", types.SimpleNamespace())
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        assert kwargs.pop("creationflags") & runner.CREATE_NO_WINDOW
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    w = env.widget
    w.onLoadSample()
    env.node.task = "Cardiac segmentation"
    w._populateModels()
    w.onApply()
    run = w.logic.runner
    assert run is not None and run.running
    w.onSceneStartClose(None, None)  # File > Close scene while the worker runs
    with pytest.raises(runner.InferenceCancelled):
        run.wait(60)
    assert env.shown == [] and not w._timer.active and w.ui.applyButton.text == "Apply"
    assert w._parameterNode is None


def test_plan_long_axis_views_from_the_widget(env):
    """Plan long-axis views with the bundled sample line weights: markups planes, proposed views, results;
    weights of another task: an error shown and the scene unchanged."""
    from PlaneSSLLib.slicer_logic.mrml import node_ids

    w = env.widget
    w.onLoadSample()
    w._checkCanApply()
    assert w.ui.planViewsButton.enabled
    scene = w.logic.ctx.scene
    before = node_ids(scene)
    env.node.localModelFolder = str(env.module._resourceFile("Sample/heart-segmentation"))
    w.onPlanViews()
    assert env.shown and "view planning failed" in env.shown[-1]
    assert node_ids(scene) == before
    env.shown.clear()
    env.node.localModelFolder = ""
    w.onPlanViews()
    assert env.shown == [], env.shown
    markups = [scene.GetNthNodeByClass(i, "vtkMRMLMarkupsPlaneNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsPlaneNode"))]
    assert sorted(m.GetName() for m in markups) == ["Proposed 2CH", "Proposed 3CH", "Proposed 4CH"]
    text = w.ui.resultsTextEdit.lines[0]
    assert text.count("from the acquired plane") == 3
    assert w.logic.scene_plan.views.labels == ["2CH plan", "3CH plan", "4CH plan"]
