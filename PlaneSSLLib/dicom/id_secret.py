"""The installation's secret key for hashing identifiers (``records.hash_identifier``).

Patient IDs are short (often 6-8 digits): a hash under a public salt is reversed by trying every
ID. Keys are therefore HMAC-SHA256 under a random 256-bit secret kept per installation:

1. ``$PLANESSL_ID_SECRET`` when set (any non-empty text: CI and tests set it so that caches and
   fixtures are byte-reproducible; sites that pool keys across machines share one value);
2. else the file ``planessl/id_secret`` in the user's configuration folder (``$PLANESSL_CONFIG_DIR``,
   else ``$XDG_CONFIG_HOME`` or ``~/.config``; ``%APPDATA%`` on Windows), created on first use with
   64 random hex digits, readable by its owner only. Creation is race-free (several processes
   starting at once agree on one secret).

Without the secret a key reveals nothing about the identifier; with it, an identifier can be
confirmed (or a short one found by trial), so the file is to be guarded like the data.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from ..errors import PlaneSSLError

__all__ = ["ENV_SECRET", "IdentifierSecretError", "installation_secret", "secret_path"]

#: Environment variable that overrides the secret file.
ENV_SECRET = "PLANESSL_ID_SECRET"

#: The secret file's content once read (tests that move the configuration folder clear it).
_cache: dict[str, bytes] = {}


class IdentifierSecretError(PlaneSSLError):
    """The secret file cannot be read or created."""


def secret_path() -> Path:
    """Where the installation's secret is kept (module docstring)."""
    base = os.environ.get("PLANESSL_CONFIG_DIR")
    if not base:
        if sys.platform == "win32":
            base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        else:
            base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "planessl" / "id_secret"


def installation_secret() -> bytes:
    """The key of ``records.hash_identifier``: ``$PLANESSL_ID_SECRET`` or the secret file (made on first use)."""
    value = os.environ.get(ENV_SECRET)
    if value:
        return value.encode("utf-8")
    secret = _cache.get("file")  # read once per process (a scan hashes four identifiers per file)
    if secret is None:
        secret = _cache["file"] = _read_or_create(secret_path())
    return secret


def _read_or_create(path: Path) -> bytes:
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
                try:
                    os.link(tmp, path)  # fails when another process made it first: theirs is used
                except FileExistsError:
                    pass
                except OSError:  # a file system without hard links
                    if not path.exists():
                        os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentifierSecretError(
            f"{path}: cannot read or create the secret that hashes patient identifiers ({exc}); make the folder "
            f"writable, or set {ENV_SECRET}") from None
    if len(text) < 32:
        raise IdentifierSecretError(f"{path}: the identifier secret is too short ({len(text)} characters; "
                                    f"delete the file to make a new one, which changes every key)")
    return text.encode("ascii")
