"""Graceful stop on SIGINT / SIGTERM: finish the current step, write ``last``, exit clearly.

The first signal only sets a flag; the training loop checks it after every optimiser step,
writes a resumable ``last`` checkpoint and raises :class:`TrainingInterrupted`. The command line
then exits with ``128 + signal number`` (130 for SIGINT / Ctrl-C, 143 for SIGTERM), the shell
convention for "stopped by a signal", so schedulers see the run did not finish; resume with
``--resume``. A second signal while stopping aborts at once (KeyboardInterrupt / exit 143)
without writing a checkpoint: the previous ``last`` remains valid because writes are atomic.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

__all__ = ["GracefulStop", "TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a resumable checkpoint."""

    def __init__(self, signum: int, checkpoint: str | None, step: int) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        self.step = step
        name = signal.Signals(signum).name
        where = f"; resumable checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by {name} after step {step}{where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop:
    """Context manager turning SIGINT/SIGTERM into a flag (main thread only; else a no-op)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: abort now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            sys.exit(128 + signum)
        self.signum = signum
        print(
            f"planessl: {signal.Signals(signum).name} received: finishing the current step and writing a "
            "resumable checkpoint (send again to abort at once)",
            file=sys.stderr, flush=True,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
