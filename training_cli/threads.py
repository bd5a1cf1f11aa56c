"""Process-wide thread settings that must be made before a library loads."""

from __future__ import annotations

import os
import sys


def one_blas_thread() -> None:
    """One BLAS thread for this process, when numpy is not loaded yet (it reads the setting once).

    The CPU network of ``predict seg`` and ``plan`` (``inference.unet_numpy``) multiplies small matrices, where
    OpenBLAS threads spend more time waiting for each other than computing: a whole one-study run
    measured 1.7 s with one thread and 2.6 s with the default on a busy 2-core machine. A user's
    own ``OPENBLAS_NUM_THREADS`` is kept.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
