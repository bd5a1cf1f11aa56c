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

from collections.abc import Sequence

__all__ = ["PlaneSSLError", "ConfigError", "InputError"]


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
