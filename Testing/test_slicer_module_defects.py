"""The Slicer module's defects of issue 14, each exercised on the module itself (Qt stubbed, real MRML
of slicer-core): Windows cancel and no console window (platform checks patched), no re-entry of
Apply/Cancel during the synchronous phases, no torch for Load study / Show planes, dependencies the
5.12 way (pip_ensure) and the 5.10 way (pip_install + restart prompt), no installs under
``--testing``, the version gate, ``__getattr__`` without recursion, Reload reloading the library,
a usable model by default, the line cache, and the whole widget path with cancel leaving the scene
as it was.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import subprocess
import sys
import time
import types

import pytest
from test_slicer_module_static import MODULE_PY, ROOT, _stub_modules

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture
def module(monkeypatch):
    """PlaneSSL.py imported with Qt stubbed, on slicer-core's MRML (as test_slicer_module_static does)."""
    import importlib.util

    from test_slicer_logic import require_slicer_core

    require_slicer_core()
    for name, stub in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("PlaneSSL_module_defects", MODULE_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- versions
def test_version_gate_names_the_supported_releases_and_loads_on_python_39(module):
    old = module.versionProblem((3, 9, 10))
    assert "5.10 and 5.12" in old and "3.9.10" in old and "3.10" in old
    assert module.versionProblem((3, 10, 0)) == "" and module.versionProblem((3, 12, 10)) == ""
    # the module file itself must load on Slicer 5.8 (Python 3.9) to say so: 3.9 grammar, no X | Y annotations
    tree = ast.parse(MODULE_PY.read_text(), feature_version=(3, 9))
    for node in ast.walk(tree):
        for ann in [getattr(node, "returns", None), getattr(node, "annotation", None)]:
            if ann is not None:
                assert not any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)), \
                    ast.unparse(ann)
    assert not any(isinstance(n, ast.Match) for n in ast.walk(tree))
    assert not any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)


def test_old_python_fails_with_the_message_before_importing_the_library(module, monkeypatch, tmp_path):
    monkeypatch.setattr(module, "_pythonVersion", lambda: (3, 9, 10))
    logic = module.PlaneSSLLogic(cacheDir=tmp_path)
    with pytest.raises(module.UnsupportedSlicerError, match="5.10 and 5.12"):
        _ = logic.lib
    with pytest.raises(module.UnsupportedSlicerError):
        logic.ensureDependencies(askConfirmation=False, testing=True)
    parent = types.SimpleNamespace()
    module.PlaneSSL(parent)
    assert "5.10 and 5.12" in parent.helpText.split("<br>")[0]


def test_widget_on_old_slicer_shows_why_and_imports_nothing(module, monkeypatch):
    monkeypatch.setattr(module, "_pythonVersion", lambda: (3, 9, 10))
    monkeypatch.setattr(module.ScriptedLoadableModuleWidget, "setup", lambda self: None, raising=False)
    labels = []

    class QLabel:
        def __init__(self, text):
            self.text, self.wordWrap = text, False
            labels.append(self)

    monkeypatch.setattr(module.qt, "QLabel", QLabel, raising=False)
    added = []
    widget = module.PlaneSSLWidget(types.SimpleNamespace(isEntered=True))
    widget.layout = types.SimpleNamespace(addWidget=added.append, addStretch=lambda n: None)
    before = {n for n in sys.modules if n.startswith("PlaneSSLLib")}
    widget.setup()
    assert added == labels and "5.10 and 5.12" in labels[0].text and labels[0].wordWrap
    assert widget.logic is None and not hasattr(widget, "ui")
    widget.enter()  # entering the module again does nothing either
    widget.cleanup()
    assert {n for n in sys.modules if n.startswith("PlaneSSLLib")} == before


def test_readme_json_and_cmake_state_the_supported_releases():
    readme = (ROOT / "README.md").read_text()
    assert "Slicer 5.10" in readme and "5.12" in readme
    assert "cmake_minimum_required(VERSION 3.28.0...3.28.0" in (ROOT / "CMakeLists.txt").read_text()


# ----------------------------------------------------------------------------- Windows
def test_windows_cancel_kills_without_killpg_and_opens_no_console(monkeypatch):
    from PlaneSSLLib.slicer_logic import runner

    monkeypatch.setattr(runner, "is_windows", lambda: True)
    monkeypatch.delattr(os, "killpg")  # as on Windows: touching them raises AttributeError
    monkeypatch.setattr(runner, "signal", types.SimpleNamespace())  # no SIGKILL for the runner
    seen = {"kill": 0}
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        seen.update(kwargs)
        kwargs.pop("creationflags")  # only valid on Windows; the rest of the path is the same
        process = real_popen(*args, **kwargs)
        real_kill = process.kill
        process.kill = lambda: (seen.update(kill=seen["kill"] + 1), real_kill())  # TerminateProcess there
        return process

    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    run = runner.InferenceRunner(runner.InferenceRequest("sleep", params={"steps": 100, "seconds": 0.1}))
    run.start()
    deadline = time.time() + 30
    while run.progress == (0, 0) and time.time() < deadline:
        time.sleep(0.05)
    run.cancel()
    with pytest.raises(runner.InferenceCancelled):
        run.wait(30)
    assert seen["creationflags"] & runner.CREATE_NO_WINDOW and seen["creationflags"] & runner.CREATE_NEW_PROCESS_GROUP
    assert "start_new_session" not in seen and seen["kill"] == 1
    assert run._process.poll() is not None


# ----------------------------------------------------------------------------- dependencies
def test_requirements_file_is_the_inference_path_without_torch():
    from PlaneSSLLib.slicer_logic import dependencies

    reqs = dependencies.read_requirements(ROOT / "Resources" / "requirements.txt")
    assert tuple(reqs) == dependencies.PIP_REQUIREMENTS and dependencies.REQUIREMENTS_FILE.is_file()
    assert not [r for r in reqs if r.startswith("torch")] and "pydicom>=3.0" in reqs


def test_study_path_imports_no_torch():
    code = ("import sys; import PlaneSSLLib.slicer_logic.logic, PlaneSSLLib.slicer_logic.views; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_stale_imports_detect_a_package_replaced_under_a_running_slicer():
    from PlaneSSLLib.slicer_logic import dependencies

    installed = dependencies.installed_version("pydicom")
    modules = {"pydicom": types.SimpleNamespace(__version__="2.4.4")}
    assert dependencies.stale_imports(["pydicom>=3.0"], modules) == [("pydicom", "2.4.4", installed)]
    assert dependencies.stale_imports(["pydicom>=3.0"], {"pydicom": types.SimpleNamespace(__version__=installed)}) == []


class _Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self.answers.get(name) if hasattr(self, "answers") else None
        return record


@pytest.fixture
def fake_slicer(module, monkeypatch):
    """slicer.util dialogs/installs and slicer.app recorded; no slicer.packaging (Slicer 5.10) by default."""
    import slicer

    util = _Recorder()
    util.answers = {"confirmOkCancelDisplay": True, "confirmYesNoDisplay": True}
    for name in ("pip_install", "confirmOkCancelDisplay", "confirmYesNoDisplay", "restart", "errorDisplay"):
        monkeypatch.setattr(slicer.util, name, getattr(util, name), raising=False)

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - recorded like the real one shows it
            util.calls.append(("tryWithErrorDisplay", (message, str(exc)), {}))

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", tryWithErrorDisplay, raising=False)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # 5.10: "import slicer.packaging" fails
    torchutils = types.ModuleType("PyTorchUtils")
    torchutils.calls = []

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            torchutils.calls.append(torchVersionRequirement)
            return types.SimpleNamespace(__version__="x")

    torchutils.PyTorchUtilsLogic = PyTorchUtilsLogic
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torchutils)
    return types.SimpleNamespace(util=util, torchutils=torchutils, slicer=slicer)


def _missing_until_installed(monkeypatch, missing_first, stale=()):
    from PlaneSSLLib.slicer_logic import dependencies

    state = {"installed": False}
    monkeypatch.setattr(dependencies, "missing",
                        lambda reqs=dependencies.PIP_REQUIREMENTS: [] if state["installed"] else list(missing_first))
    monkeypatch.setattr(dependencies, "stale_imports", lambda reqs=(), modules=None: list(stale))
    return state


def test_slicer_510_pip_install_then_restart_prompt(module, fake_slicer, monkeypatch):
    state = _missing_until_installed(monkeypatch, ["pydicom>=3.0"], stale=[("pydicom", "2.4.4", "3.0.2")])
    fake_slicer.util.answers["pip_install"] = None
    monkeypatch.setattr(fake_slicer.slicer.util, "pip_install",
                        lambda reqs: (fake_slicer.util.calls.append(("pip_install", (reqs,), {})),
                                      state.update(installed=True)), raising=False)
    with pytest.raises(RuntimeError, match="Restart Slicer"):
        module.PlaneSSLLogic.installPipRequirements(askConfirmation=True)
    names = [c[0] for c in fake_slicer.util.calls]
    assert names == ["confirmOkCancelDisplay", "pip_install", "confirmYesNoDisplay", "restart"]
    assert fake_slicer.util.calls[1][1][0] == ["pydicom>=3.0"]


def test_slicer_512_pip_ensure_with_load_requirements(module, fake_slicer, monkeypatch):
    state = _missing_until_installed(monkeypatch, ["safetensors>=0.4"])
    packaging = types.ModuleType("slicer.packaging")
    seen = []
    packaging.load_requirements = lambda path: ("loaded", str(path))
    packaging.pip_ensure = lambda reqs, **kw: (seen.append((reqs, kw)), state.update(installed=True))
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(fake_slicer.slicer, "packaging", packaging, raising=False)
    module.PlaneSSLLogic.ensureDependencies(askConfirmation=True, needTorch=False, testing=False)
    (reqs, kw), = seen
    assert reqs == ("loaded", str(ROOT / "Resources" / "requirements.txt"))
    assert kw == {"prompt_install": True, "requester": "PlaneSSL"}
    assert not [c for c in fake_slicer.util.calls if c[0] == "pip_install"]
    assert fake_slicer.torchutils.calls == []  # Load study / Show planes: no torch


def test_testing_mode_installs_nothing_and_torch_only_for_tasks(module, fake_slicer, monkeypatch):
    from PlaneSSLLib.slicer_logic import dependencies

    _missing_until_installed(monkeypatch, ["nibabel>=5.0"])
    with pytest.raises(RuntimeError, match="installs nothing.*nibabel"):
        module.PlaneSSLLogic.ensureDependencies(askConfirmation=False, testing=True)
    assert fake_slicer.util.calls == [] and fake_slicer.torchutils.calls == []
    _missing_until_installed(monkeypatch, [])
    monkeypatch.setattr(dependencies, "torch_status",
                        lambda: dependencies.DependencyStatus("torch", ">=2.2", None, False))
    module.PlaneSSLLogic.ensureDependencies(askConfirmation=False, needTorch=False, testing=False)
    assert fake_slicer.torchutils.calls == []
    module.PlaneSSLLogic.ensureDependencies(askConfirmation=False, needTorch=True, testing=False)
    assert fake_slicer.torchutils.calls == [dependencies.TORCH_REQUIREMENT]


# ----------------------------------------------------------------------------- logic object
def test_getattr_never_recurses(module, monkeypatch, tmp_path):
    bare = module.PlaneSSLLogic.__new__(module.PlaneSSLLogic)  # no __init__ (copy, unpickling)
    with pytest.raises(AttributeError):
        _ = bare.run  # no RecursionError through __getattr__ -> lib -> __getattr__
    logic = module.PlaneSSLLogic(cacheDir=tmp_path)

    def broken(self):
        raise AttributeError("no such thing")

    monkeypatch.setattr(module.PlaneSSLLogic, "workerPython", broken)
    with pytest.raises(RuntimeError, match="creating the library logic failed"):
        _ = logic.lib
    with pytest.raises(RuntimeError):
        _ = logic.show_planes


def test_reload_purges_the_library_modules(module):
    fake = {"PlaneSSLLib": 1, "PlaneSSLLib.slicer_logic.lines": 2, "PlaneSSLLibX": 3, "numpy": 4}
    assert sorted(module.purgeLibModules(fake)) == ["PlaneSSLLib", "PlaneSSLLib.slicer_logic.lines"]
    assert fake == {"PlaneSSLLibX": 3, "numpy": 4}
    src = ast.unparse(next(n for n in ast.walk(ast.parse(MODULE_PY.read_text()))
                           if isinstance(n, ast.FunctionDef) and n.name == "onReload"))
    assert src.index("purgeLibModules()") < src.index("ScriptedLoadableModuleWidget.onReload(self)")


# ----------------------------------------------------------------------------- translation
USER_TEXT_CALLS = {"errorDisplay", "confirmOkCancelDisplay", "confirmYesNoDisplay", "tryWithErrorDisplay", "_log",
                   "infoDisplay"}
USER_TEXT_ATTRS = {"text", "toolTip", "title", "helpText", "acknowledgementText", "format"}


def _is_translated(node) -> bool:
    """``_("...")``, ``_("...").format(...)``, ``translate(...)``, a name/attribute (computed text),
    or a sum of such."""
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("_", "translate"):
            return True
        if isinstance(f, ast.Attribute) and f.attr == "format":
            return _is_translated(f.value)
        return True  # a computed value (join, describe, ...)
    if isinstance(node, ast.BinOp):
        return _is_translated(node.left) and _is_translated(node.right)
    if isinstance(node, ast.IfExp):
        return _is_translated(node.body) and _is_translated(node.orelse)
    if isinstance(node, ast.JoinedStr):  # markup around translated values only
        return all(not isinstance(v, ast.Constant) or not re.sub(r"<[^>]*>|\s", "", v.value) for v in node.values)
    if isinstance(node, ast.Constant):
        return not isinstance(node.value, str) or not any(c.isalpha() for c in node.value) or node.value == "%p%"
    return True


def test_user_visible_strings_are_translatable():
    tree = ast.parse(MODULE_PY.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in USER_TEXT_CALLS and node.args and not _is_translated(node.args[0]):
                bad.append(ast.unparse(node)[:80])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in USER_TEXT_ATTRS:
                    if not _is_translated(node.value):
                        bad.append(ast.unparse(node)[:80])
    assert not bad, bad
    assert "from slicer.i18n import tr as _" in MODULE_PY.read_text()


# ----------------------------------------------------------------------------- sample weights
def test_sample_weights_are_bundled_small_checked_and_labelled(tmp_path):
    import hashlib
    import json
    import shutil

    from PlaneSSLLib.slicer_logic import models_registry as mr

    registry = ROOT / "Resources" / "Models.json"
    entries = {e.id: e for e in mr.load_registry(registry)}
    for task, model_id in (("lines", "heart-plane-lines-sample"), ("segment_heart", "heart-segmentation-sample")):
        entry = entries[model_id]
        assert entry.task == task and entry.bundled is not None and entry.url is None
        weights = entry.bundled / "model.safetensors"
        assert weights.stat().st_size + (entry.bundled / "manifest.json").stat().st_size <= 5_000_000
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == entry.sha256
        assert entry.size_bytes == weights.stat().st_size
        text = f"{entry.title} {entry.status} {entry.description}".lower()
        assert "synthetic" in text and "not for clinical use" in text and "synthetic" in entry.describe().lower()
        assert mr.entry_available(entry, tmp_path / "empty-cache")
        local = mr.resolve_model(model_id, task, list(entries.values()), tmp_path / "cache")
        assert local.path == entry.bundled
    # a damaged installation (weights not matching the registry's SHA-256) is refused
    copy = tmp_path / "Resources"
    shutil.copytree(ROOT / "Resources" / "Sample", copy / "Sample")
    raw = json.loads(registry.read_text())
    (copy / "Models.json").write_text(json.dumps(raw))
    with open(copy / "Sample" / "heart-plane-lines" / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(mr.ChecksumError, match="damaged installation"):
        mr.resolve_model("heart-plane-lines-sample", "lines", mr.load_registry(copy / "Models.json"), tmp_path)
