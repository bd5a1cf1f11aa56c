"""Inference in a background process, with progress, cancel, a blocking mode and scene rollback.

``InferenceRunner(request).start(on_progress, on_done)`` writes the request and inputs to a
temporary job folder and runs ``python -m PlaneSSLLib.slicer_logic.worker`` in its own process
group (POSIX: a new session, killed with ``os.killpg``; Windows: a new process group without a
console window, killed with ``Popen.kill``, since ``os.killpg`` and ``SIGKILL`` do not exist there);
a reader thread parses ``PROGRESS i/n`` lines into ``on_progress(i, n)``. ``cancel()`` kills it.
``wait()`` (or ``run_blocking``) returns the outputs or raises
``InferenceCancelled`` / ``InferenceError`` (with the worker's stderr). The device is chosen by
the worker: "cuda" when asked for and available, else CPU (``result.device``, ``result.note``).

The worker never touches the scene. Results are put into the scene afterwards, inside
``scene_transaction``: if anything fails there, every node and subject-hierarchy item added in
the block is removed, so a failed or cancelled run leaves the scene exactly as it was.

Callbacks run on the reader thread; inside Slicer, hand them to the GUI thread (e.g. a
``qt.QTimer`` polling ``progress``) — this module has no Qt.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "InferenceRequest",
    "InferenceResult",
    "InferenceRunner",
    "InferenceError",
    "InferenceCancelled",
    "run_blocking",
    "popen_options",
    "kill_worker",
    "scene_transaction",
    "checked_labels",
    "checked_probability",
]

#: Windows process-creation flags (``subprocess`` defines them only on Windows).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


def is_windows() -> bool:
    """Whether processes are Windows processes (patched by the tests to run the Windows branch)."""
    return os.name == "nt"


def popen_options() -> dict:
    """``subprocess.Popen`` keyword arguments for the worker: its own process group, and on Windows
    no console window (``CREATE_NO_WINDOW``; PythonSlicer.exe is a console program)."""
    if is_windows():
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def kill_worker(process: subprocess.Popen) -> None:
    """Kill the worker at once: its process group on POSIX, the process on Windows (TerminateProcess)."""
    if process.poll() is not None:
        return
    if is_windows():
        with contextlib.suppress(OSError):
            process.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


_PROGRESS = re.compile(r"^PROGRESS (\d+)/(\d+)\s*$")
_DEVICE = re.compile(r"^DEVICE (\S+)(?: \((.*)\))?\s*$")


class InferenceError(RuntimeError):
    """The worker failed; the message ends with the tail of its stderr."""


class InferenceCancelled(RuntimeError):
    """The run was cancelled (the worker process was killed)."""


@dataclass
class InferenceRequest:
    task: str
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    params: Mapping[str, object] = field(default_factory=dict)
    device: str = "auto"  # "auto", "cuda" or "cpu"


@dataclass
class InferenceResult:
    outputs: dict[str, np.ndarray]
    device: str
    note: str = ""
    log: list[str] = field(default_factory=list)


class InferenceRunner:
    """One background inference run (see module docstring)."""

    def __init__(self, request: InferenceRequest, python: str | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.request = request
        self.python = python or sys.executable
        self.env = dict(os.environ if env is None else env)
        root = str(Path(__file__).resolve().parents[2])
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, self.env.get("PYTHONPATH", "")) if p)
        self.progress: tuple[int, int] = (0, 0)
        self.device = ""
        self.note = ""
        self.log: list[str] = []
        self._process: subprocess.Popen | None = None
        self._job: Path | None = None
        self._reader: threading.Thread | None = None
        self._cancelled = False
        self._stderr = ""
        self._on_progress: Callable[[int, int], None] | None = None
        self._on_done: Callable[[InferenceResult | None, BaseException | None], None] | None = None
        self._result: InferenceResult | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self, on_progress: Callable[[int, int], None] | None = None,
              on_done: Callable[[InferenceResult | None, BaseException | None], None] | None = None) -> None:
        if self._process is not None:
            raise RuntimeError("this runner has already been started")
        self._on_progress, self._on_done = on_progress, on_done
        self._job = Path(tempfile.mkdtemp(prefix="planessl-job-"))
        try:
            (self._job / "request.json").write_text(json.dumps(
                {"task": self.request.task, "params": dict(self.request.params), "device": self.request.device}))
            for name, value in self.request.inputs.items():
                np.save(self._job / f"in_{name}.npy", np.asarray(value))
            # Undecodable bytes from the worker become U+FFFD instead of ending the reader thread.
            self._process = subprocess.Popen(
                [self.python, "-m", "PlaneSSLLib.slicer_logic.worker", str(self._job)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                env=self.env, **popen_options())
        except BaseException:
            shutil.rmtree(self._job, ignore_errors=True)  # the job folder holds image arrays
            self._job = None
            raise
        self._reader = threading.Thread(target=self._read, name="planessl-inference", daemon=True)
        self._reader.start()

    @property
    def running(self) -> bool:
        return self._process is not None and not self._finished.is_set()

    def cancel(self) -> None:
        """Kill the worker (its whole process group); ``wait`` then raises InferenceCancelled."""
        self._cancelled = True
        if self._process is not None:
            kill_worker(self._process)

    def wait(self, timeout: float | None = None) -> InferenceResult:
        if self._process is None:
            raise RuntimeError("the runner has not been started")
        if not self._finished.wait(timeout):
            raise TimeoutError(f"inference still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    # ------------------------------------------------------------------ internals
    def _read(self) -> None:
        """Reader thread: parse stdout, collect stderr, then hand over the result. Whatever happens
        (undecodable output, a callback that raises) the worker ends, the job folder is removed,
        ``running`` turns false and ``wait`` returns or raises."""
        process = self._process
        assert process is not None and process.stdout is not None and process.stderr is not None
        stderr_chunks: list[str] = []

        def drain_stderr() -> None:
            with contextlib.suppress(Exception):  # a closed or broken pipe: the tail is then shorter
                for chunk in iter(lambda: process.stderr.read(65536), ""):
                    stderr_chunks.append(chunk)
                    del stderr_chunks[:-64]  # keep the tail only (a worker may write megabytes)

        err_thread = threading.Thread(target=drain_stderr, daemon=True)
        err_thread.start()
        failure: BaseException | None = None
        try:
            self._read_stdout(process)
        except BaseException as exc:  # noqa: BLE001 - a raising progress callback or a broken pipe
            failure = exc
            kill_worker(process)
            with contextlib.suppress(Exception):  # let the worker end on a full pipe
                for _ in process.stdout:
                    pass
        try:
            code = process.wait()
            err_thread.join()
            self._stderr = "".join(stderr_chunks)
            if self._cancelled:
                raise InferenceCancelled(f"inference task {self.request.task!r} cancelled")
            if failure is not None:
                raise InferenceError(f"inference task {self.request.task!r} stopped: the progress callback failed "
                                     f"({type(failure).__name__}: {failure})") from failure
            if code != 0:
                tail = "\n".join(self._stderr.strip().splitlines()[-15:])
                raise InferenceError(f"inference task {self.request.task!r} failed (exit {code}):\n{tail}")
            assert self._job is not None
            outputs = {p.stem[4:]: np.load(p, allow_pickle=False) for p in sorted(self._job.glob("out_*.npy"))}
            self._result = InferenceResult(outputs, self.device, self.note, list(self.log))
        except BaseException as exc:  # noqa: BLE001 - handed to wait()/on_done
            self._error = exc
        finally:
            if self._job is not None:
                shutil.rmtree(self._job, ignore_errors=True)
            self._finished.set()
            if self._on_done is not None:
                try:
                    self._on_done(self._result, self._error)
                except Exception as exc:  # noqa: BLE001 - the run is over; a failing callback must not hide that
                    self.log.append(f"on_done callback failed: {type(exc).__name__}: {exc}")

    def _read_stdout(self, process: subprocess.Popen) -> None:
        """Parse ``PROGRESS i/n`` and ``DEVICE d (note)`` lines; every line goes to ``log``."""
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            self.log.append(line)
            m = _PROGRESS.match(line)
            if m:
                self.progress = (int(m.group(1)), int(m.group(2)))
                if self._on_progress is not None:
                    self._on_progress(*self.progress)
                continue
            m = _DEVICE.match(line)
            if m:
                self.device, self.note = m.group(1), m.group(2) or ""


def checked_labels(labels: np.ndarray, values: Iterable[int], task: str = "segment_heart") -> np.ndarray:
    """The worker's label map as int16 when every voxel is 0 or one of ``values`` (the manifest's label
    values); InferenceError naming the values outside that set (or a non-integer or empty map) otherwise."""
    array = np.asarray(labels)
    if array.size == 0 or array.ndim not in (3, 4) or array.dtype.kind not in "iub":
        raise InferenceError(f"inference task {task!r} returned no usable label map "
                             f"(shape {array.shape}, dtype {array.dtype})")
    allowed = {0, *(int(v) for v in values)}
    found = {int(v) for v in np.unique(array)}
    if not found <= allowed:
        raise InferenceError(f"inference task {task!r} returned label values {sorted(found - allowed)} outside the "
                             f"model's labels {sorted(allowed)}; nothing is added to the scene")
    return array.astype(np.int16)


def checked_probability(outputs: Mapping[str, np.ndarray], task: str = "classify_knee") -> tuple[float, float]:
    """``(probability, threshold)`` of a classification worker's outputs; InferenceError unless both are
    finite, the probability in [0, 1] and the threshold in (0, 1)."""
    try:
        probability = float(np.asarray(outputs["probability"]).ravel()[0])
        threshold = float(np.asarray(outputs.get("threshold", 0.5)).ravel()[0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InferenceError(f"inference task {task!r} returned no probability ({exc})") from None
    if not (0.0 <= probability <= 1.0 and 0.0 < threshold < 1.0):
        raise InferenceError(f"inference task {task!r} returned probability {probability} / threshold {threshold} "
                             f"(a probability in [0, 1] and a threshold in (0, 1) are needed)")
    return probability, threshold


def run_blocking(request: InferenceRequest, on_progress: Callable[[int, int], None] | None = None,
                 timeout: float | None = None) -> InferenceResult:
    """Run ``request`` to completion in a background process and return its result."""
    runner = InferenceRunner(request)
    runner.start(on_progress)
    try:
        return runner.wait(timeout)
    except TimeoutError:
        runner.cancel()
        raise


@contextlib.contextmanager
def scene_transaction(scene) -> Iterator[None]:
    """Remove every node and subject-hierarchy item added in the block if the block raises."""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    nodes_before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    items_before = _sh_items(sh)
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in [n for n in added if n.GetID() not in nodes_before]:
            if scene.GetNodeByID(node.GetID()) is not None:
                scene.RemoveNode(node)
        for item in sorted(_sh_items(sh) - items_before, reverse=True):
            if sh.GetItemParent(item) or item in _sh_items(sh):
                sh.RemoveItem(item, False, False)
        raise


def _sh_items(sh) -> set[int]:
    import vtk

    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    return {ids.GetId(i) for i in range(ids.GetNumberOfIds())}
