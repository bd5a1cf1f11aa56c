"""The one family of expected failures.

Every error that a user can cause (a bad config, a missing or stale cache, unreadable data,
weights that do not fit, a transfer between architectures that do not match, a model folder
that is not one) derives from :class:`PlaneSSLError`. The ``planessl`` command catches this
base class once and prints its message without a traceback; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

__all__ = ["PlaneSSLError"]


class PlaneSSLError(Exception):
    """An expected failure whose message names the file or key and the problem."""

    #: the process exit status ``planessl`` returns for it
    exit_code: int = 2
