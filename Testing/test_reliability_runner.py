"""The background runner never hangs (issue 15, finding 4).

The worker is replaced by small shell scripts (given as the runner's ``python``) that behave the
way a broken worker, a misconfigured interpreter or a foreign library would: non-UTF-8 bytes on
stdout and stderr, megabytes of stderr, no exit. A progress callback that raises is the GUI's
mistake. In every case ``running`` turns false, ``wait`` returns or raises promptly, the job
folder (which holds image arrays) is removed, and cancel ends the run within 1 s.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from PlaneSSLLib.slicer_logic import runner

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell scripts stand in for the worker")


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable that ignores ``-m PlaneSSLLib.slicer_logic.worker JOB`` except ``$3`` (the job folder)."""
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def _runner(tmp_path: Path, body: str) -> runner.InferenceRunner:
    request = runner.InferenceRequest("sleep", inputs={"image": np.zeros((4, 4), np.float32)})
    return runner.InferenceRunner(request, python=_fake_python(tmp_path, body))


def _job_folders() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("planessl-job-*")}


def test_non_utf8_worker_output_does_not_hang(tmp_path):
    before = _job_folders()
    run = _runner(tmp_path, r"printf 'PROGRESS 1/2\n\377\376 latin-1 \351\n' ; printf 'bad \377\n' >&2 ;"
                            r' cp "$3/in_image.npy" "$3/out_labels.npy" ;' r" printf 'PROGRESS 2/2\n'")
    seen: list[tuple[int, int]] = []
    run.start(on_progress=lambda i, n: seen.append((i, n)))
    result = run.wait(10)
    assert not run.running and seen == [(1, 2), (2, 2)] and result.outputs["labels"].shape == (4, 4)
    assert any("\ufffd" in line for line in result.log)
    assert _job_folders() == before


def test_a_failing_worker_with_non_utf8_megabytes_of_stderr_is_reported(tmp_path):
    run = _runner(tmp_path, r"head -c 3000000 /dev/urandom >&2 ; printf '\nlast words \377\n' >&2 ; exit 3")
    run.start()
    with pytest.raises(runner.InferenceError, match=r"exit 3[\s\S]*last words \ufffd"):
        run.wait(20)
    assert not run.running


def test_a_raising_progress_callback_stops_the_run_and_cleans_up(tmp_path):
    before = _job_folders()
    run = _runner(tmp_path, r"printf 'PROGRESS 1/9\n' ; exec sleep 30")

    def broken(i, n):
        raise ValueError("the GUI went away")

    done: list[object] = []
    run.start(on_progress=broken, on_done=lambda result, error: done.append(error))
    t0 = time.monotonic()
    with pytest.raises(runner.InferenceError, match="progress callback failed.*the GUI went away"):
        run.wait(10)
    assert time.monotonic() - t0 < 5 and not run.running and run._process.poll() is not None
    assert isinstance(done[0], runner.InferenceError) and _job_folders() == before


def test_cancel_ends_a_silent_worker_within_one_second(tmp_path):
    before = _job_folders()
    run = _runner(tmp_path, "exec sleep 30")
    run.start(on_done=lambda result, error: 1 / 0)  # a raising on_done must not hide the end of the run
    time.sleep(0.2)
    t0 = time.monotonic()
    run.cancel()
    with pytest.raises(runner.InferenceCancelled):
        run.wait(5)
    assert time.monotonic() - t0 < 1.0 and not run.running
    assert _job_folders() == before
    assert any("on_done callback failed" in line for line in run.log)


def test_a_worker_that_cannot_start_leaves_no_job_folder(tmp_path):
    before = _job_folders()
    run = runner.InferenceRunner(runner.InferenceRequest("sleep", inputs={"x": np.zeros(3)}),
                                 python=str(tmp_path / "no-such-python"))
    with pytest.raises(OSError):
        run.start()
    assert _job_folders() == before and not run.running
    assert os.path.exists(tmp_path)


def test_worker_labels_outside_the_models_set_are_refused():
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, 1, 1], labels[1, 2, 2] = 3, 1
    assert runner.checked_labels(labels, [1, 2, 3]).dtype == np.int16
    labels[1, 3, 3] = 7
    with pytest.raises(runner.InferenceError, match=r"label values \[7\] outside the model's labels \[0, 1, 2, 3\]"):
        runner.checked_labels(labels, [1, 2, 3])
    with pytest.raises(runner.InferenceError, match="no usable label map"):
        runner.checked_labels(np.full((2, 4, 4), 0.5), [1, 2, 3])


@pytest.mark.parametrize("probability,threshold", [(float("nan"), 0.5), (1.5, 0.5), (0.3, 0.0), (0.3, float("inf"))])
def test_worker_probabilities_must_be_probabilities(probability, threshold):
    outputs = {"probability": np.array([probability]), "threshold": np.array(threshold)}
    with pytest.raises(runner.InferenceError, match="probability"):
        runner.checked_probability(outputs)
    assert runner.checked_probability({"probability": np.array([0.25])}) == (0.25, 0.5)
