"""Which code produced a result: the git revision of the PlaneSSL checkout a run imports, when it is one.

Configs and fingerprints say what a run was asked to do; they do not say which code did it, and a change
to model construction alone (the order in which layers draw their first weights) moves every number. A
study that runs over several sittings therefore records, per finished run, the revision it ran at, and a
reader can tell whether two runs came from the same code. An installed wheel (no checkout) records
nothing here; its version is in ``software.json``.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

#: the folder that holds ``PlaneSSLLib/`` (a git work tree in a development checkout)
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_SOURCE_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def source_revision() -> dict[str, object]:
    """``{"commit": <40 hex>, "modified": bool}`` for a git checkout of PlaneSSL (``modified``: tracked files
    differ from the commit), ``{}`` otherwise (an installed package, or git not available). Computed once per
    process. No path, user or host name is recorded."""
    if not (_SOURCE_ROOT / "PlaneSSLLib").is_dir():
        return {}
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != _SOURCE_ROOT:
        return {}  # not a checkout of this repository (e.g. a wheel installed inside another project's tree)
    commit = _git("rev-parse", "HEAD")
    if commit is None or len(commit) != 40:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "modified": bool(status)} if status is not None else {"commit": commit}
