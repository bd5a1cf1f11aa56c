"""The layout and the house rules (README "Architecture", docs/conventions.md "Layers"), checked statically."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "PlaneSSLLib"

#: Layer order, lowest first: a layer may import only layers listed before it. ``inference``
#: sits below ``training``: evaluation in training reuses the
#: inference path, while inference must never pull in the training stack (Slicer side).
LAYERS = ["geometry", "dicom", "phantoms", "data", "models", "inference", "training", "slicer_logic"]
#: Third-party modules each layer must not import (beyond the layer rule).
FORBIDDEN = {
    "geometry": {"torch", "pydicom", "scipy", "nibabel", "monai", "qt", "ctk", "slicer", "vtk"},
    "dicom": {"torch", "monai", "qt", "ctk", "slicer"},
    "phantoms": {"torch", "monai", "qt", "ctk", "slicer"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                parts = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                base = ".".join(parts)
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def test_layout_exists():
    for p in ["README.md", "CMakeLists.txt", "PlaneSSL", "PlaneSSLLib", "Testing", "Resources", "training_cli",
              "pyproject.toml", ".ci/run", "Makefile"]:
        assert (ROOT / p).exists(), p


def test_core_library_is_qt_free_and_layered():
    for path in LIB.rglob("*.py"):
        rel = path.relative_to(LIB).parts
        layer = rel[0] if len(rel) > 1 else None
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in {"qt", "ctk", "PythonQt"}, f"{path} imports {name}"
            if layer in FORBIDDEN:
                assert top not in FORBIDDEN[layer], f"{path} ({layer}) imports {name}"
            if layer in LAYERS and name.startswith("PlaneSSLLib."):
                other = name.split(".")[1]
                if other in LAYERS:
                    assert LAYERS.index(other) <= LAYERS.index(layer), f"{path} ({layer}) imports upper layer {name}"


def test_geometry_imports_without_heavy_dependencies():
    code = (
        "import sys; import PlaneSSLLib.geometry; "
        "bad = [m for m in ('torch', 'pydicom', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def cmake_listed(cmake: Path, variable: str) -> list[str]:
    text = cmake.read_text()
    m = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert m, f"{variable} not set in {cmake}"
    return [line.strip() for line in m.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def test_module_cmake_lists_existing_files_and_all_geometry():
    cmake = ROOT / "PlaneSSL" / "CMakeLists.txt"
    scripts = [s.replace("${MODULE_NAME}", "PlaneSSL") for s in cmake_listed(cmake, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", "PlaneSSL") for s in cmake_listed(cmake, "MODULE_PYTHON_RESOURCES")]
    for item in scripts + resources:
        assert (cmake.parent / item).is_file(), f"listed in CMake but missing: {item}"
    # everything the module imports at run time is listed
    listed = {(cmake.parent / s).resolve() for s in scripts}
    for path in (LIB / "geometry").glob("*.py"):
        assert path.resolve() in listed, f"{path} not listed in PlaneSSL/CMakeLists.txt"


def test_top_level_cmake_declares_extension():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_DEPENDS", "add_subdirectory(PlaneSSL)"):
        assert key in text


def test_icon_is_128_png():
    data = (ROOT / "Resources" / "Icons" / "PlaneSSL.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def test_slicer_module_compiles_and_imports_only_slicer_at_top():
    path = ROOT / "PlaneSSL" / "PlaneSSL.py"
    tree = ast.parse(path.read_text())
    top_imports = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_imports.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_imports.add(node.module.split(".")[0])
    assert top_imports <= {"slicer", "qt", "ctk", "vtk", "logging", "os", "__future__", "typing"}, top_imports


@pytest.mark.parametrize("command", [["--help"], ["--version"], ["lines", "--help"]])
def test_cli_entry_point_runs(command):
    out = subprocess.run([sys.executable, "-m", "training_cli", *command], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
