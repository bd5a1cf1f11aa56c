"""Shared fixtures: session-scoped synthetic cohorts and helpers for external tools."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_TOOLS = os.environ.get("PLANESSL_REQUIRE_TOOLS") == "1"

# Patient keys are keyed by a per-installation secret (PlaneSSLLib/dicom/id_secret.py): the tests use a fixed
# one, so caches and fixtures are byte-reproducible and no secret file is made in the user's config folder.
os.environ.setdefault("PLANESSL_ID_SECRET", "planessl-test-secret")


def require_tool(name: str) -> str:
    """Path of an external program; skips the test locally, fails it on CI, when missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (scripts/bootstrap.sh installs it as root)"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _shared_cohort(tmp_path_factory: pytest.TempPathFactory, name: str, **options) -> Iterator[Path]:
    """A phantom cohort written once per session. Tests only read it (copy it to change it); the
    teardown fails the session's last user if any file was added, removed or rewritten."""
    from PlaneSSLLib.phantoms import CohortOptions, write_cohort

    root = tmp_path_factory.mktemp(name) / "data"
    write_cohort(root, CohortOptions(**options), workers=1)
    before = _listing(root)
    yield root
    after = _listing(root)
    changed = sorted(set(before) ^ set(after) | {k for k in before.keys() & after.keys() if before[k] != after[k]})
    assert not changed, f"a test changed the shared {name} cohort (copy it first): {changed[:5]}"


@pytest.fixture(scope="session")
def heart_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two heart subjects, Kaggle layout (SAX slices as series, 2CH/3CH/4CH), 2 cine phases, 96² px, seed 3."""
    yield from _shared_cohort(tmp_path_factory, "heart_cohort", anatomy="heart", subjects=2, seed=3, phases=2,
                              matrix=96)


@pytest.fixture(scope="session")
def knee_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Five knee subjects (SAG/COR/AX, 64² px, seed 1): left and right knees, ACL torn (0, 2) and intact
    (1, 3, 4), with ``labels.csv``."""
    yield from _shared_cohort(tmp_path_factory, "knee_cohort", anatomy="knee", subjects=5, seed=1, matrix=64)
