"""The Slicer module checked against the real Slicer API, on machines without a Slicer application.

Reads ``PlaneSSL/PlaneSSL.py`` and ``PlaneSSLLib/slicer_logic/*.py`` and checks every name they use
from ``slicer.util``, ``slicer.packaging``, ``slicer.i18n``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper`` and SlicerPyTorch's ``PyTorchUtilsLogic`` against the reference sources
(Slicer v5.12.3; the folder's layout: ``docs/conventions.md``, "Slicer reference sources"): the function
exists, its positional
argument count and keywords fit its signature; ``slicer.app.X`` is a member the reference sources use;
the ``.ui`` widget classes and dynamic properties are the template's (or the few standard Qt/CTK
widgets listed here); ``PlaneSSL.json`` passes the ExtensionsIndex schema and the index's own checker
functions. A copy of the module with one misspelt API name fails the same check.

The reference folder is ``$PLANESSL_SLICER_REFERENCE``, else the copy the development and CI machines keep
beside the checkout; when
it is absent the test skips with that reason, except on CI (``PLANESSL_REQUIRE_TOOLS=1``), where it fails.
"""

from __future__ import annotations

import ast
import json
import os
import re
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REQUIRE_TOOLS

ROOT = Path(__file__).resolve().parents[1]
MODULE_PY = ROOT / "PlaneSSL" / "PlaneSSL.py"
LOGIC_FILES = sorted((ROOT / "PlaneSSLLib" / "slicer_logic").glob("*.py"))
REF = Path(os.environ.get("PLANESSL_SLICER_REFERENCE") or ROOT.parent / "shared" / "slicer-reference")
#: Standard Qt/CTK widgets the module's .ui uses beyond the template's own (all in Slicer's Qt/CTK).
EXTRA_WIDGETS = {"QComboBox", "QHBoxLayout", "QPlainTextEdit", "QProgressBar", "ctkPathLineEdit"}


def _reference() -> Path:
    if not (REF / "5.12.3" / "Base" / "Python" / "slicer" / "util.py").is_file():
        message = f"Slicer reference sources not found at {REF} (set PLANESSL_SLICER_REFERENCE)"
        if REQUIRE_TOOLS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return REF


# ----------------------------------------------------------------------------- reference signatures
def _functions(path: Path) -> dict[str, ast.arguments]:
    """Top-level functions and class methods (``Class.method``) of a reference file."""
    tree = ast.parse(path.read_text())
    out: dict[str, ast.arguments] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node.args
        elif isinstance(node, ast.ClassDef):
            out[node.name] = None
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    out[f"{node.name}.{item.name}"] = item.args
    return out


def _fits(args: ast.arguments | None, call: ast.Call, bound: int = 0) -> str:
    """'' when ``call`` fits the signature ``args`` (``bound``: leading parameters already bound, e.g. self)."""
    if args is None:
        return ""
    params = [a.arg for a in args.posonlyargs + args.args][bound:]
    keywords = {a.arg for a in args.args + args.kwonlyargs} - {a.arg for a in args.posonlyargs}
    if len(call.args) > len(params) and args.vararg is None and not any(isinstance(a, ast.Starred) for a in call.args):
        return f"{len(call.args)} positional arguments for {params}"
    for kw in call.keywords:
        if kw.arg is not None and kw.arg not in keywords and args.kwarg is None:
            return f"unknown keyword {kw.arg!r} (accepted: {sorted(keywords)})"
    return ""


def _star_exports(package: Path) -> set[str]:
    """Names ``from package import *`` gives: the ``__all__`` lists of the modules its ``__init__``
    star-imports, plus the names it imports explicitly."""
    init = ast.parse((package / "__init__.py").read_text())
    names: set[str] = set()
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            if any(a.name == "*" for a in node.names):
                tree = ast.parse((package / f"{node.module}.py").read_text())
                for item in tree.body:
                    if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in item.targets):
                        names.update(ast.literal_eval(item.value))
            else:
                names.update(a.asname or a.name for a in node.names)
    return names


def api_problems(sources: list[Path], ref: Path) -> list[str]:
    """Every use of the Slicer API in ``sources`` that the reference does not have, or calls wrongly."""
    base = ref / "5.12.3" / "Base" / "Python" / "slicer"
    apis = {"util": _functions(base / "util.py"), "packaging": _functions(base / "packaging.py"),
            "i18n": _functions(base / "i18n.py")}
    slm = _functions(base / "ScriptedLoadableModule.py")
    pnw_exports = _star_exports(base / "parameterNodeWrapper")
    torch_utils = _functions(ref / "SlicerPyTorch" / "PyTorchUtils" / "PyTorchUtils.py")
    ref_text = "\n".join(p.read_text() for p in base.rglob("*.py"))
    app_members = set(re.findall(r"\bapp\.(\w+)", ref_text))
    problems = []
    for path in sources:
        tree = ast.parse(path.read_text())
        where = path.name
        calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "slicer":
                space, name = node.value.attr, node.attr
                if space in apis:
                    if name not in apis[space]:
                        problems.append(f"{where}:{node.lineno}: slicer.{space}.{name} does not exist in Slicer 5.12.3")
                    elif id(node) in calls:
                        why = _fits(apis[space][name], calls[id(node)])
                        if why:
                            problems.append(f"{where}:{node.lineno}: slicer.{space}.{name}: {why}")
                elif space == "app" and name not in app_members:
                    problems.append(f"{where}:{node.lineno}: slicer.app.{name} is not a member the reference uses")
            elif isinstance(node, ast.ImportFrom) and node.module in ("slicer.ScriptedLoadableModule",
                                                                       "slicer.parameterNodeWrapper", "slicer.i18n",
                                                                       "slicer.util"):
                for alias in node.names:
                    ok = {"slicer.ScriptedLoadableModule": alias.name in slm,
                          "slicer.parameterNodeWrapper": alias.name in pnw_exports,
                          "slicer.i18n": alias.name in apis["i18n"],
                          "slicer.util": alias.name in apis["util"]}[node.module]
                    if not ok:
                        problems.append(f"{where}:{node.lineno}: {node.module} has no {alias.name}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                # base-class calls: ScriptedLoadableModuleWidget.onReload(self), ...__init__(self, parent)
                if isinstance(owner, ast.Name) and owner.id.startswith("ScriptedLoadableModule"):
                    key = f"{owner.id}.{node.func.attr}"
                    if key not in slm:
                        problems.append(f"{where}:{node.lineno}: {key} does not exist in Slicer 5.12.3")
                    else:
                        why = _fits(slm[key], node)  # self passed explicitly
                        if why:
                            problems.append(f"{where}:{node.lineno}: {key}: {why}")
                # PyTorchUtils.PyTorchUtilsLogic().installTorch(...)
                if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "PyTorchUtils.PyTorchUtilsLogic":
                    key = f"PyTorchUtilsLogic.{node.func.attr}"
                    if key not in torch_utils:
                        problems.append(f"{where}:{node.lineno}: {key} does not exist in SlicerPyTorch")
                    else:
                        why = _fits(torch_utils[key], node, bound=1)
                        if why:
                            problems.append(f"{where}:{node.lineno}: {key}: {why}")
    return problems


# ----------------------------------------------------------------------------- tests
def test_module_and_slicer_logic_use_only_the_real_api():
    ref = _reference()
    problems = api_problems([MODULE_PY, *LOGIC_FILES], ref)
    assert not problems, "\n".join(problems)
    used = set(re.findall(r"slicer\.(?:util|packaging)\.\w+", MODULE_PY.read_text()))
    for must in ("slicer.packaging.pip_ensure", "slicer.packaging.load_requirements", "slicer.util.pip_install",
                 "slicer.util.confirmYesNoDisplay", "slicer.util.restart"):
        assert must in used, must  # the checker saw the install paths of 5.12 and 5.10
    assert "slicer.pydeps" not in MODULE_PY.read_text()


@pytest.mark.parametrize("good, bad", [
    ("slicer.util.confirmOkCancelDisplay(", "slicer.util.confirmOkCancelDialog("),
    ("slicer.packaging.pip_ensure(slicer.packaging.load_requirements(path), prompt_install=",
     "slicer.packaging.pip_ensure(slicer.packaging.load_requirements(path), prompt=")])
def test_a_misspelt_api_name_fails(tmp_path, good, bad):
    ref = _reference()
    text = MODULE_PY.read_text()
    assert good in text
    copy = tmp_path / "PlaneSSL.py"
    copy.write_text(text.replace(good, bad, 1))
    problems = api_problems([copy], ref)
    assert len(problems) == 1 and ("confirmOkCancelDialog" in problems[0] or "'prompt'" in problems[0]), problems


def test_ui_widget_classes_and_dynamic_properties_are_the_templates():
    ref = _reference()
    template = ref / "5.12.3" / "Utilities" / "Templates" / "Modules" / "Scripted" / "Resources" / "UI"
    template = template / "TemplateKey.ui"

    def classes_and_dynamic(path: Path) -> tuple[set[str], set[str]]:
        root = ET.parse(path).getroot()
        classes = {w.get("class") for w in root.iter() if w.tag in ("widget", "layout") and w.get("class")}
        dynamic = {p.get("name") for p in root.iter("property") if p.get("stdset") == "0"}
        return classes, dynamic

    ours, our_dynamic = classes_and_dynamic(ROOT / "Resources" / "UI" / "PlaneSSL.ui")
    theirs, their_dynamic = classes_and_dynamic(template)
    assert ours - theirs <= EXTRA_WIDGETS, ours - theirs - EXTRA_WIDGETS
    assert our_dynamic <= their_dynamic, our_dynamic - their_dynamic  # SlicerParameterName, sizeHint


def _validate(value, schema: dict, path: str = "") -> list[str]:
    """The subset of JSON Schema the catalog entry schema uses: type, enum, pattern, required,
    properties, additionalProperties, items, minimum/maximum."""
    errors = []
    types = {"string": str, "boolean": bool, "integer": int, "array": list, "object": dict, "number": (int, float)}
    kind = schema.get("type")
    if kind:
        kinds = kind if isinstance(kind, list) else [kind]
        ok = any(isinstance(value, types[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                 for k in kinds)
        if not ok:
            return [f"{path or '/'}: {value!r} is not of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value!r} out of range")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}/{key}: required")
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += _validate(item, props[key], f"{path}/{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}/{key}: not allowed")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _validate(item, schema["items"], f"{path}/{i}")
    return errors


def _index_checker(ref: Path) -> types.ModuleType:
    """The ExtensionsIndex's check_description_files.py as a module. Its ``print_categories`` (a CLI
    listing, not a check) uses Python 3.12 f-string syntax; it is left out so that older Pythons load it."""
    text = (ref / "ExtensionsIndex" / "scripts" / "check_description_files.py").read_text()
    text = re.sub(r"\ndef print_categories\(.*?(?=\ndef )", "\n", text, flags=re.S)
    checker = types.ModuleType("check_description_files")
    exec(compile(text, "check_description_files.py", "exec"), checker.__dict__)  # noqa: S102 - reference source
    return checker


def test_catalog_entry_passes_the_schema_and_the_index_checker(capsys):
    ref = _reference()
    entry_path = ROOT / "PlaneSSL.json"
    metadata = json.loads(entry_path.read_text())
    schema = json.loads((ref / "ExtensionsIndex" / "schemas" /
                         "slicer-extension-catalog-entry-schema-v1.0.2.json").read_text())
    assert metadata["$schema"].split("#")[0].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json")
    assert _validate(metadata, schema) == []
    assert _validate({**metadata, "tier": "1"}, schema)  # the validator does fail on a wrong type
    checker = _index_checker(ref)
    name = entry_path.stem
    checker.check_json_file_format(name, metadata, str(entry_path))
    checker.check_category(name, metadata)
    checker.check_scm_url_syntax(name, metadata)
    checker.check_extension_name(name, metadata)
    checker.check_git_repository_name(name, metadata)
    # the checker's CMake rule: project() of the top-level CMakeLists.txt is the extension name
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", (ROOT / "CMakeLists.txt").read_text(), re.I)
    assert project and project[0] == name


def test_cmake_lists_the_module_import_closure_and_its_resources():
    from test_slicer_module_static import CMAKE, cmake_list, runtime_closure

    scripts = {(CMAKE.parent / s).resolve() for s in cmake_list(CMAKE, "MODULE_PYTHON_SCRIPTS")}
    needed = {p.resolve() for p in runtime_closure([MODULE_PY, ROOT / "PlaneSSLLib" / "slicer_logic" / "logic.py"])}
    assert needed == scripts
    resources = cmake_list(CMAKE, "MODULE_PYTHON_RESOURCES")
    assert "../Resources/requirements.txt" in resources
    registry = json.loads((ROOT / "Resources" / "Models.json").read_text())
    bundled = [m["bundled"] for m in registry["models"] if m.get("bundled")]
    assert bundled, "no bundled sample weights in Resources/Models.json"
    for folder in bundled:  # shipped with the extension
        for name in ("model.safetensors", "manifest.json"):
            assert f"../Resources/{folder}/{name}" in resources, f"{folder}/{name} not in PlaneSSL/CMakeLists.txt"
