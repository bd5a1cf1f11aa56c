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

#: The layers as a graph: each package of PlaneSSLLib and the packages it may import (besides
#: itself and the root modules ``PlaneSSLLib/__init__.py``, ``atomic.py``, ``errors.py``, which
#: import no package). The map is closed downward (what a package may import, it may also import
#: through another), so "never reaches" holds transitively: slicer_logic reaches neither
#: training, data nor phantoms; nothing but tests, the CLI and the Slicer self-test imports
#: phantoms; inference runs on preprocess, never on the caches and datasets of data.
ALLOWED: dict[str, set[str]] = {
    "geometry": set(),
    "models": set(),
    "dicom": {"geometry"},
    "preprocess": {"geometry", "dicom"},
    "phantoms": {"geometry", "dicom"},
    "inference": {"geometry", "dicom", "preprocess", "models"},
    "data": {"geometry", "dicom", "preprocess", "models", "inference"},
    "slicer_logic": {"geometry", "dicom", "preprocess", "models", "inference"},
    "training": {"geometry", "dicom", "preprocess", "models", "inference", "data"},
}
ROOT_MODULES = {"PlaneSSLLib", "PlaneSSLLib.atomic", "PlaneSSLLib.errors"}
#: Third-party modules each package must not import (beyond the map).
FORBIDDEN = {
    "geometry": {"torch", "pydicom", "scipy", "nibabel", "monai", "vtk", "slicer"},
    "models": {"pydicom", "nibabel", "monai", "vtk", "slicer"},
    "dicom": {"torch", "monai", "vtk", "slicer"},
    "preprocess": {"torch", "monai", "vtk", "slicer"},
    "phantoms": {"torch", "monai", "vtk", "slicer"},
    "inference": {"monai", "vtk", "slicer"},
    "slicer_logic": {"monai"},
}
QT = {"qt", "ctk", "PythonQt"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in LIB.rglob("*.py")}


def package_of(module: str) -> str | None:
    """``PlaneSSLLib.<package>`` of a module, None for a root module."""
    return None if module in ROOT_MODULES or module.count(".") < 1 else module.split(".")[1]


def _docstrings(tree: ast.Module) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions; PlaneSSLLib names resolved
    to the most specific module (``from ..geometry import planes`` -> ``PlaneSSLLib.geometry.planes``),
    and module names given as strings outside docstrings (``-m PlaneSSLLib.slicer_logic.worker``,
    ``importlib.import_module``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    docstrings = _docstrings(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names.update(re.findall(r"\bPlaneSSLLib(?:\.\w+)+", node.value))
    resolved = set()
    for name in names:
        if name.split(".")[0] == "PlaneSSLLib":
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
        resolved.add(name)
    return resolved


def module_graph() -> dict[str, set[str]]:
    """PlaneSSLLib module -> the PlaneSSLLib modules it imports."""
    return {m: {n for n in imports_of(p) if n in MODULES and n != m} for m, p in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a closed path), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_layout_exists():
    for p in ["README.md", "CMakeLists.txt", "PlaneSSL", "PlaneSSLLib", "Testing", "Resources", "training_cli",
              "pyproject.toml", ".ci/run", "Makefile"]:
        assert (ROOT / p).exists(), p


def test_every_package_is_in_the_map_and_the_map_is_closed_downward():
    packages = {p.name for p in LIB.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED), packages ^ set(ALLOWED)
    for package, allowed in ALLOWED.items():
        assert package not in allowed
        for below in allowed:
            assert ALLOWED[below] <= allowed, f"{package} may import {below} but not all that {below} may import"
    # the branches that must stay apart
    assert "training" not in ALLOWED["slicer_logic"] and "data" not in ALLOWED["slicer_logic"]
    assert not [p for p, allowed in ALLOWED.items() if "phantoms" in allowed]
    assert not {"data", "training", "slicer_logic", "phantoms"} & ALLOWED["inference"]


def edges_outside_the_map(imports: dict[str, set[str]]) -> list[str]:
    """``module -> name`` for every PlaneSSLLib import of ``imports`` (module -> imported names) the map forbids."""
    out = []
    for module, names in sorted(imports.items()):
        package = package_of(module)
        for name in sorted(names):
            if name.split(".")[0] != "PlaneSSLLib" or name in ROOT_MODULES:
                continue
            other = package_of(name)
            if package is None or (other != package and other not in ALLOWED[package]):
                out.append(f"{module} -> {name}")
    return out


def test_core_library_is_qt_free_and_imports_follow_the_map():
    imports = {module: imports_of(path) for module, path in MODULES.items()}
    for module, names in imports.items():
        package = package_of(module)
        for name in names:
            top = name.split(".")[0]
            assert top not in QT, f"{module} imports {name}"
            if package in FORBIDDEN:
                assert top not in FORBIDDEN[package], f"{module} ({package}) imports {name}"
    forbidden = edges_outside_the_map(imports)
    assert not forbidden, "imports outside the allowed-imports map:\n" + "\n".join(forbidden)


def test_no_import_circle_between_modules():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_slicer_side_never_reaches_training_data_or_phantoms():
    graph = module_graph()
    todo = [m for m in MODULES if package_of(m) == "slicer_logic"]
    seen = set(todo)
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert not {package_of(m) for m in seen} & {"training", "data", "phantoms"}


def test_the_checks_see_forbidden_edges_and_circles():
    assert edges_outside_the_map({
        "PlaneSSLLib.inference.segment": {"PlaneSSLLib.data.cache", "PlaneSSLLib.preprocess.resample", "numpy"},
        "PlaneSSLLib.slicer_logic.logic": {"PlaneSSLLib.training.engine", "PlaneSSLLib.atomic"},
        "PlaneSSLLib.atomic": {"PlaneSSLLib.geometry.planes"},
    }) == [
        "PlaneSSLLib.atomic -> PlaneSSLLib.geometry.planes",
        "PlaneSSLLib.inference.segment -> PlaneSSLLib.data.cache",
        "PlaneSSLLib.slicer_logic.logic -> PlaneSSLLib.training.engine",
    ]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # lazy imports inside functions and modules run by name count as imports
    assert "PlaneSSLLib.slicer_logic.worker" in imports_of(LIB / "slicer_logic" / "runner.py")
    assert "PlaneSSLLib.preprocess.config" in imports_of(LIB / "slicer_logic" / "logic.py")


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
