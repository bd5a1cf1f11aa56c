"""The one family of expected failures.

Every error that a user can cause (a bad config, a missing or stale cache, unreadable data,
weights that do not fit, a transfer between architectures that do not match, a model folder
that is not one) derives from :class:`PlaneSSLError`. The ``planessl`` command catches this
base class once and prints its message without a traceback; any other exception is a bug and
keeps its traceback.

:class:`ConfigError` lives here, below both ``data`` and ``training``, so that the preparation
settings (``preprocess.config``) and the training configuration (``training.config``) raise the same
class.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

__all__ = ["PlaneSSLError", "ConfigError", "InputError", "describe_os_error"]


class PlaneSSLError(Exception):
    """An expected failure whose message names the file or key and the problem."""

    #: the process exit status ``planessl`` returns for it
    exit_code: int = 2


class ConfigError(PlaneSSLError, ValueError):
    """Invalid settings; ``problems`` holds one line per problem (file/key: message).

    Built from one message or from a list of problems (several are listed one per line).
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the configuration:\n  " + "\n  ".join(self.problems)
        super().__init__(message)


class InputError(PlaneSSLError, ValueError):
    """An input a command was pointed at (a DICOM folder or image, a phase) that cannot be used."""


#: What a file-system error means for the user (errno → phrase); other OSErrors stay bugs.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device (disk full); nothing half-written is kept",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded; nothing half-written is kept",  # not on every platform
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file is in the way where a folder is needed",
    errno.EEXIST: "a file is in the way where a folder is needed",
    errno.EISDIR: "is a folder, where a file is needed",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large for the file system",
    errno.EIO: "input/output error (a failing disk or a network share?)",
    errno.EMFILE: "too many open files",
}


def describe_os_error(exc: OSError) -> str | None:
    """``"PATH: what happened"`` for a file-system error a user can cause or fix (a full disk, an
    unwritable or read-only output, a file where a folder is needed); None for any other OSError."""
    phrase = _OS_ERRORS.get(exc.errno or 0)
    if phrase is None:
        return None
    where = exc.filename if exc.filename is not None else "output"
    detail = f" ({exc.strerror})" if exc.strerror and exc.strerror.lower() not in phrase else ""
    return f"{where}: {phrase}{detail}"
