"""Errors that end a command with a clear message and a non-zero exit status (no traceback)."""

from __future__ import annotations

from PlaneSSLLib.errors import PlaneSSLError


class CLIError(PlaneSSLError):
    """A problem with the user's input that stops the whole command.

    The message names the file and the problem; ``exit_code`` is what the process returns.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
