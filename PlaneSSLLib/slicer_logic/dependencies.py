"""Python packages the Slicer module needs, and which of them are installed (no Qt, no installs).

Importing this module imports nothing beyond the standard library, and nothing here installs
anything: ``PlaneSSL.py`` asks the user, then installs the packages of
``Resources/requirements.txt`` with ``slicer.packaging.pip_ensure`` (Slicer 5.12) or
``slicer.util.pip_install`` (5.10), and torch through the PyTorch extension (``PyTorchUtils``,
with ``TORCH_REQUIREMENT``) only when a task runs. The inference path needs only these: the
training stack (MONAI, tensorboard, ...) is never installed into Slicer. ``stale_imports`` tells
when an install replaced a package already imported (a restart is needed).

Versions are read from package metadata (``importlib.metadata``): checking never imports a
package, so a broken or half-installed torch cannot take Slicer down while the GUI is drawn.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TORCH_REQUIREMENT",
    "PIP_REQUIREMENTS",
    "REPORTED",
    "DependencyStatus",
    "parse_requirement",
    "installed_version",
    "satisfies",
    "check",
    "missing",
    "torch_status",
    "versions_report",
    "REQUIREMENTS_FILE",
    "read_requirements",
    "stale_imports",
]

#: torch version specifier handed to ``PyTorchUtilsLogic.installTorch(torchVersionRequirement=...)``.
TORCH_REQUIREMENT = ">=2.2"
#: ``Resources/requirements.txt`` (beside ``PlaneSSLLib`` in the source tree and once installed).
REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"
#: What the inference path imports besides torch (pip requirement strings; ``REQUIREMENTS_FILE`` holds the same).
PIP_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.24",
    "scipy>=1.10",
    "pydicom>=3.0",
    "pylibjpeg>=2.0",
    "pylibjpeg-openjpeg>=2.0",
    "pylibjpeg-libjpeg>=2.0",
    "pylibjpeg-rle>=2.0",
    "nibabel>=5.0",
    "safetensors>=0.4",
)
#: Distributions shown in the module's "Dependencies" section.
REPORTED: tuple[str, ...] = ("torch", "numpy", "scipy", "pydicom", "nibabel", "safetensors", "pylibjpeg")

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


@dataclass(frozen=True)
class DependencyStatus:
    """One requirement: the distribution, the version specifier, what is installed, whether it fits."""

    name: str
    specifier: str
    installed: str | None
    satisfied: bool

    @property
    def requirement(self) -> str:
        return f"{self.name}{self.specifier}"

    def describe(self) -> str:
        have = self.installed or "not installed"
        return f"{self.name} {have}" + ("" if self.satisfied else f" (needs {self.specifier or 'any version'})")


def parse_requirement(requirement: str) -> tuple[str, str]:
    """``"pydicom>=3.0"`` → ``("pydicom", ">=3.0")`` (extras and markers dropped)."""
    m = _REQ.match(requirement)
    if not m:
        raise ValueError(f"not a requirement: {requirement!r}")
    return m.group(1), m.group(3).replace(" ", "")


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` from its metadata, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    """Numeric release part of a version (``"2.13.0+cpu"`` → (2, 13, 0)); pre/dev suffixes ignored."""
    parts = []
    for piece in re.split(r"[.+-]", version):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.group() != piece:
            break
    return tuple(parts)


def _compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets ``specifier`` (``packaging`` when present, else a plain comparison)."""
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - an unparsable local version: fall back to the release numbers
        pass
    have = _release(version)
    ops = {">=": lambda c: c >= 0, ">": lambda c: c > 0, "<=": lambda c: c <= 0, "<": lambda c: c < 0,
           "==": lambda c: c == 0, "!=": lambda c: c != 0}
    for clause in specifier.split(","):
        m = re.match(r"^(>=|<=|==|!=|>|<|~=)\s*(.+)$", clause.strip())
        if not m:
            return False
        op, want = m.group(1), _release(m.group(2))
        if op == "~=":
            if _compare(have, want) < 0 or have[: max(len(want) - 1, 1)] != want[: max(len(want) - 1, 1)]:
                return False
        elif not ops[op](_compare(have, want)):
            return False
    return True


def check(requirements: tuple[str, ...] | list[str] = PIP_REQUIREMENTS) -> list[DependencyStatus]:
    """The status of each requirement string."""
    out = []
    for requirement in requirements:
        name, spec = parse_requirement(requirement)
        version = installed_version(name)
        out.append(DependencyStatus(name, spec, version, version is not None and satisfies(version, spec)))
    return out


def missing(requirements: tuple[str, ...] | list[str] = PIP_REQUIREMENTS) -> list[str]:
    """Requirement strings that are not satisfied now."""
    return [s.requirement for s in check(requirements) if not s.satisfied]


def torch_status() -> DependencyStatus:
    """torch against ``TORCH_REQUIREMENT`` (metadata only; torch is not imported)."""
    return check([f"torch{TORCH_REQUIREMENT}"])[0]


def versions_report() -> list[tuple[str, str]]:
    """``(name, version or "not installed")`` rows: Python, PlaneSSL and ``REPORTED``."""
    from .. import __version__

    rows = [("Python", sys.version.split()[0]), ("PlaneSSL", __version__)]
    rows += [(name, installed_version(name) or "not installed") for name in REPORTED]
    return rows


def read_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement strings of a requirements file, read as ``slicer.packaging.load_requirements`` does
    (blank lines, ``#`` comments and ``-`` options skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("-"):
            out.append(line)
    return out


def _module_name(distribution: str) -> str:
    return {"pylibjpeg-openjpeg": "openjpeg", "pylibjpeg-libjpeg": "libjpeg", "pylibjpeg-rle": "rle"}.get(
        distribution, distribution.replace("-", "_"))


def stale_imports(requirements: tuple[str, ...] | list[str] = PIP_REQUIREMENTS,
                  modules: dict | None = None) -> list[tuple[str, str, str]]:
    """``(name, version imported, version installed)`` for every required package already imported
    in another version than the one now installed: an install replaced it, only a restart loads it."""
    modules = sys.modules if modules is None else modules
    out = []
    for requirement in requirements:
        name, _spec = parse_requirement(requirement)
        module = modules.get(_module_name(name))
        loaded = getattr(module, "__version__", None) if module is not None else None
        installed = installed_version(name)
        if loaded and installed and str(loaded) != installed:
            out.append((name, str(loaded), installed))
    return out
