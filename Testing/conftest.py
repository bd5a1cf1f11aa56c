"""Shared fixtures: a session-scoped synthetic cohort and helpers for external tools."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_TOOLS = os.environ.get("PLANESSL_REQUIRE_TOOLS") == "1"


def require_tool(name: str) -> str:
    """Path of an external program; skips the test locally, fails it on CI, when missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (scripts/bootstrap.sh installs it as root)"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return path
