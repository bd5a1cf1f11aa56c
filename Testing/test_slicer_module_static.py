"""The Slicer extension as packaged, checked without Slicer: CMake lists exactly the scripts the
module imports (followed transitively), resources and the .ui file agree with PlaneSSL.py, PlaneSSL.json
follows the ExtensionsIndex schema v1.0.2, PlaneSSL.py imports only what Slicer provides at the
top, and its Logic *is* the PlaneSSLLib logic — run here on slicer-core with Qt stubbed out,
through the same ``runWholePath`` the Slicer self-test runs.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "PlaneSSL"
MODULE_PY = MODULE_DIR / "PlaneSSL.py"
CMAKE = MODULE_DIR / "CMakeLists.txt"
UI = ROOT / "Resources" / "UI" / "PlaneSSL.ui"
#: What Slicer's Python provides besides the standard library.
SLICER_PROVIDED = {"slicer", "qt", "ctk", "vtk", "__future__"}
#: ExtensionsIndex catalog entry schema v1.0.2 (Slicer/Slicer Schemas/slicer-extension-catalog-entry-
#: schema-v1.0.2.json): required keys, and the type of every allowed key (additionalProperties false).
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str,
                "enabled": bool, "tier": int}


# ----------------------------------------------------------------------------- helpers
def cmake_list(path: Path, variable: str) -> list[str]:
    m = re.search(rf"set\({variable}\s+(.*?)\)", path.read_text(), re.S)
    assert m, f"{variable} not set in {path}"
    items = [line.strip() for line in m.group(1).splitlines()]
    return [i.replace("${MODULE_NAME}", "PlaneSSL") for i in items if i and not i.startswith("#")]


def cmake_set(path: Path, variable: str) -> str:
    m = re.search(rf'set\({variable}\s+"([^"]*)"\)', path.read_text())
    assert m, f"{variable} not set in {path}"
    return m.group(1)


def _module_file(dotted: str) -> Path | None:
    p = ROOT.joinpath(*dotted.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


def _imported(path: Path) -> set[str]:
    """Dotted PlaneSSLLib names imported anywhere in ``path`` (also inside functions), and
    module names given as strings (``python -m PlaneSSLLib.slicer_logic.worker``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(re.findall(r"\bPlaneSSLLib(?:\.\w+)+", node.value))
    return {n for n in names if n.split(".")[0] == "PlaneSSLLib"}


def runtime_closure(roots: list[Path]) -> set[Path]:
    """Every file of PlaneSSLLib reachable from ``roots`` (packages' ``__init__`` included)."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


# ----------------------------------------------------------------------------- CMake and files
def test_cmake_lists_exactly_the_runtime_scripts_and_only_existing_files():
    scripts = cmake_list(CMAKE, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(CMAKE, "MODULE_PYTHON_RESOURCES")
    for item in scripts + resources:
        assert (MODULE_DIR / item).is_file(), f"listed in {CMAKE.name} but missing: {item}"
    assert len(set(scripts)) == len(scripts), "a script is listed twice"
    listed = {(MODULE_DIR / s).resolve() for s in scripts}
    needed = runtime_closure([MODULE_PY, ROOT / "PlaneSSLLib" / "slicer_logic" / "logic.py"])
    # the closure found the pieces the module cannot run without, including the worker run with -m
    for must in ("slicer_logic/logic.py", "slicer_logic/worker.py", "slicer_logic/models_registry.py",
                 "slicer_logic/dependencies.py", "inference/weights.py", "models/unet.py", "dicom/scan.py",
                 "phantoms/cohort.py", "geometry/lines.py", "atomic.py", "__init__.py"):
        assert ROOT / "PlaneSSLLib" / must in needed, must
    missing = sorted(str(p.relative_to(ROOT)) for p in needed if p.resolve() not in listed)
    assert not missing, f"needed at run time but not in PlaneSSL/CMakeLists.txt: {missing}"
    shipped_for_nothing = listed - {p.resolve() for p in needed} - {MODULE_PY.resolve()}
    extra = sorted(str(p.relative_to(ROOT.resolve())) for p in shipped_for_nothing)
    assert not extra, f"listed in PlaneSSL/CMakeLists.txt but never imported by the module: {extra}"
    # neither the training stack nor the data caches and datasets are shipped or imported by the module
    assert not [p for p in needed | listed if {"training", "training_cli", "data"} & set(Path(p).parts)]


def test_cmake_module_build_and_tests():
    text = CMAKE.read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)
    # the core library and resources are staged beside the module, not copied to "../"
    assert "CMAKE_CURRENT_BINARY_DIR}/${_rel}" in text and "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR" in text
    resources = cmake_list(CMAKE, "MODULE_PYTHON_RESOURCES")
    wanted = {"../Resources/Icons/PlaneSSL.png", "../Resources/UI/PlaneSSL.ui", "../Resources/Models.json"}
    assert wanted <= set(resources)


def test_top_level_cmake_extension_metadata():
    top = ROOT / "CMakeLists.txt"
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert cmake_set(top, key), key
    assert cmake_set(top, "EXTENSION_DEPENDS").split() == ["PyTorch"]
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        url = cmake_set(top, key)
        assert url.startswith("https://")
        local = ROOT / url.split("/main/", 1)[1]
        assert local.is_file(), f"{key} points at {local}, which does not exist"
    assert "add_subdirectory(PlaneSSL)" in top.read_text()


def test_extensions_index_description():
    data = json.loads((ROOT / "PlaneSSL.json").read_text())
    assert data["$schema"] == SCHEMA_URL
    for key in SCHEMA_REQUIRED:
        assert key in data, key
    for key, value in data.items():
        assert key in SCHEMA_TYPES, f"{key} is not allowed by the schema (additionalProperties: false)"
        assert isinstance(value, SCHEMA_TYPES[key]), f"{key} must be {SCHEMA_TYPES[key].__name__}"
    assert data.get("scm_type", "git") in ("git", "local")
    assert 1 <= data.get("tier", 1) <= 5 and not isinstance(data.get("tier", 1), bool)
    assert all(isinstance(d, str) for d in data.get("build_dependencies", []))
    assert data["category"] == cmake_set(ROOT / "CMakeLists.txt", "EXTENSION_CATEGORY")
    assert data["scm_url"].startswith("https://github.com/")
    assert data["build_dependencies"] == cmake_set(ROOT / "CMakeLists.txt", "EXTENSION_DEPENDS").split()


def test_resources_license_icon_screenshot_and_docs():
    icon = (ROOT / "Resources" / "Icons" / "PlaneSSL.png").read_bytes()
    assert icon[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(icon[16:20], "big"), int.from_bytes(icon[20:24], "big")) == (128, 128)
    shot = ROOT / "Resources" / "Screenshots" / "plane_views.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    docs = (ROOT / "README.md").read_text()
    for needle in ("Extensions Manager", "PyTorch", "Resources/Screenshots/plane_views.png", "ctest -R PlaneSSL",
                   "Reload and Test", "manifest.json"):
        assert needle in docs, needle


# ----------------------------------------------------------------------------- PlaneSSL.py, statically
def _tree():
    return ast.parse(MODULE_PY.read_text(), filename=str(MODULE_PY))


def test_module_compiles_and_imports_only_what_slicer_provides_at_top():
    compile(MODULE_PY.read_text(), str(MODULE_PY), "exec")
    top = set()
    for node in _tree().body:
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert top <= SLICER_PROVIDED | set(sys.stdlib_module_names), top - SLICER_PROVIDED
    assert not top & {"PlaneSSLLib", "torch", "numpy", "pydicom", "safetensors"}
    # the heavy imports happen lazily, inside functions
    lazy = {n.module.split(".")[0] for n in ast.walk(_tree()) if isinstance(n, ast.ImportFrom) and n.module}
    assert "PlaneSSLLib" in lazy


def test_module_classes_and_logic_delegates_to_planessllib():
    classes = {n.name: n for n in _tree().body if isinstance(n, ast.ClassDef)}
    assert {"PlaneSSL", "PlaneSSLWidget", "PlaneSSLLogic", "PlaneSSLTest", "PlaneSSLParameterNode"} <= set(classes)
    logic = classes["PlaneSSLLogic"]
    methods = {n.name: n for n in logic.body if isinstance(n, ast.FunctionDef)}
    assert "__getattr__" in methods and "lib" in methods
    lib_src = ast.unparse(methods["lib"])
    assert "from PlaneSSLLib.slicer_logic.logic import Logic" in lib_src
    test = {n.name for n in classes["PlaneSSLTest"].body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test and "test_PlaneSSL_wholePath" in test
    decorators = [ast.unparse(d) for d in classes["PlaneSSLParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]


def test_ui_file_matches_the_widget_and_the_parameter_node():
    root = ET.parse(UI).getroot()
    assert root.find("class").text == "PlaneSSL"
    widgets = {w.get("name"): w for w in root.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    assert not used - set(widgets), f"PlaneSSL.py uses widgets missing from the .ui: {used - set(widgets)}"
    bound = {}
    for name, w in widgets.items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    fields = {n.target.id for n in next(c for c in _tree().body if isinstance(c, ast.ClassDef)
                                        and c.name == "PlaneSSLParameterNode").body if isinstance(n, ast.AnnAssign)}
    assert set(bound) <= fields, set(bound) - fields
    assert {"inputVolume", "task", "device", "showGeometricLines", "showPredictedLines"} <= set(bound)
    assert {"dicomFolder", "modelId", "localModelFolder"} <= fields  # bound by hand (paths, registry ids)
    texts = {p.find("string").text for p in widgets["applyButton"].findall("property") if p.get("name") == "text"}
    assert texts == {"Apply"}
    text = UI.read_text()
    assert "ctkCollapsibleButton" in text and "QProgressBar" in text and "dependenciesCollapsibleButton" in text


# ----------------------------------------------------------------------------- PlaneSSL.py, run on slicer-core
def _stub_modules() -> dict[str, types.ModuleType]:
    """Just enough of Slicer's Qt side for PlaneSSL.py to import outside the application."""
    qt = types.ModuleType("qt")
    qt.QTimer = type("QTimer", (), {})
    ctk = types.ModuleType("ctk")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

        def getParameterNode(self):
            return None

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")

    class Choice:
        def __init__(self, choices):
            self.choices = list(choices)

    def parameterNodeWrapper(cls):
        cls.wrapped_by_stub = True
        return cls

    pnw.Choice, pnw.parameterNodeWrapper = Choice, parameterNodeWrapper
    i18n = types.ModuleType("slicer.i18n")  # Slicer's tr/translate return the text when no translation is loaded
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    return {"qt": qt, "ctk": ctk, "slicer.ScriptedLoadableModule": slm, "slicer.parameterNodeWrapper": pnw,
            "slicer.i18n": i18n}


@pytest.fixture
def module(monkeypatch):
    from test_slicer_logic import require_slicer_core

    require_slicer_core()
    for name, stub in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("PlaneSSL_module_under_test", MODULE_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_module_metadata_tasks_and_devices(module):
    from PlaneSSLLib.slicer_logic.logic import DEVICES
    from PlaneSSLLib.slicer_logic.models_registry import TASKS

    parent = types.SimpleNamespace()
    module.PlaneSSL(parent)
    assert parent.title == "PlaneSSL" and parent.categories == ["Segmentation"] and parent.contributors
    for needle in ("Medical Image Analysis 94", "103151", "2403.16499", "Zhang"):
        assert needle in parent.helpText, needle
    assert "Zhang" in parent.acknowledgementText
    assert {v: k for k, v in module.TASK_IDS.items()} == TASKS  # GUI labels are the registry's task names
    assert tuple(module.DEVICE_CHOICES) == DEVICES
    assert module.PlaneSSLParameterNode.wrapped_by_stub


def test_module_logic_is_the_planessllib_logic_and_runs_the_whole_path(module, tmp_path):
    torch = pytest.importorskip("torch")
    del torch
    from PlaneSSLLib.slicer_logic.logic import Logic
    from PlaneSSLLib.slicer_logic.mrml import SceneContext

    logic = module.PlaneSSLLogic(ctx=SceneContext.create(), cacheDir=tmp_path / "cache")
    assert isinstance(logic.lib, Logic)
    assert logic.workerPython() is None and logic.lib.python is None  # outside Slicer: this interpreter
    assert logic.run.__func__ is Logic.run and logic.show_planes.__func__ is Logic.show_planes
    assert logic.cacheDir() == str(tmp_path / "cache") and str(logic.lib.cache_dir) == str(tmp_path / "cache")
    assert Path(logic.lib.registry_path) == ROOT / "Resources" / "Models.json"
    for task in module.TASK_IDS.values():
        assert logic.registryEntries(task)
    rows = dict(logic.dependencyReport())
    assert "torch" in rows and "PlaneSSL" in rows
    assert isinstance(logic.missingDependencies(), list)
    assert not logic.isRunning()
    out = module.runWholePath(logic, str(tmp_path / "work"))  # what PlaneSSLTest.test_PlaneSSL_wholePath runs
    seg = out["segmentation"].nodes[0]
    assert logic.ctx.scene.GetNodeByID(seg.GetID()) is not None
    logic.setLinesVisibility(True, False)
    assert all(not n.GetDisplayNode().GetVisibility() for n in out["lines"].nodes)
    logic.cleanupLib()
    assert not any(logic.ctx.scene.GetNodeByID(n.GetID()) for n in out["lines"].nodes)
