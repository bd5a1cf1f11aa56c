"""The PlaneSSL module's logic in one object, without Qt: what the Slicer widget and its self-test call.

``Logic`` bundles the pieces of ``slicer_logic``: a DICOM folder → studies (``dicom.scan`` +
``dicom.views``) → volumes in the scene (``scene.load_study``) → plane views
(``views.create_plane_views``); a model (registry id or local weights folder,
``models_registry``) → inference in a background process (``runner``) → results in the scene
inside ``scene_transaction`` (segmentation node with terminology, ACL-tear table); predicted
intersection lines (``lines.LineOverlay`` with ``ManifestLinePredictor``) compared with the
geometric ones; the long-axis views planned from the SAX volume by a line model (``planning``).

Tasks (``TASKS``): ``segment_heart`` (the SAX stack, one label map per slice → a segmentation
node, segment statistics in mL), ``classify_knee`` (the SAG/COR/AX stacks → a probability in a
table node) and ``lines`` (the predicted lines of every plane view; run in this process, since
they follow the user's scrolling, so torch is imported here only for that task).

Two ways to run: ``start`` (background; ``runner.progress``/``runner.log`` are polled by the GUI,
``runner.cancel()`` kills the worker, then ``finish`` puts the result into the scene) and ``run``
(blocking, for tests and scripts). A failed or cancelled run leaves the scene as it was.

Devices: "auto", "cuda", "cpu", "mps". The background worker runs on CUDA when available, else
on the CPU (``result.note`` says why); "mps" is honoured for the in-process line model only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dicom.records import VIEW_LABELS, Study
from ..dicom.scan import scan_tree
from ..dicom.views import identify_views
from . import classification, planning, segmentation
from .lines import LineComparison, LineOverlay, ManifestLinePredictor, volume_array
from .models_registry import MANIFEST_FILE, TASKS, LocalModel, ModelEntry, load_registry, resolve_model
from .mrml import SceneContext
from .planning import ScenePlan
from .runner import (
    InferenceRequest,
    InferenceResult,
    InferenceRunner,
    checked_labels,
    checked_probability,
    scene_transaction,
)
from .scene import ATTR_LATERALITY, ATTR_VIEW, StudyScene, load_study, planes_of_volume, study_item_of
from .terminology import SegmentTerm, segment_terms
from .views import PlaneViews, create_plane_views
from .worker import plane_arrays

__all__ = [
    "TASKS",
    "DEVICES",
    "Logic",
    "RunResults",
    "SegmentStatistics",
    "segment_statistics",
    "voxel_volume_ml",
    "export_random_weights",
]

#: Devices offered in the GUI.
DEVICES = ("auto", "cuda", "cpu", "mps")
#: Views each task reads.
TASK_VIEWS = {"segment_heart": ("SAX",), "classify_knee": VIEW_LABELS["knee"], "lines": ()}


@dataclass(frozen=True)
class SegmentStatistics:
    """One segment: its label value, name, voxel count and volume (mL)."""

    label: int
    name: str
    voxels: int
    volume_ml: float


def voxel_volume_ml(volume_node) -> float:
    """Volume of one voxel of ``volume_node`` in mL (from its spacing in mm)."""
    sx, sy, sz = volume_node.GetSpacing()
    return float(sx * sy * sz) / 1000.0


def segment_statistics(labels_kji: np.ndarray, reference_volume,
                       terms: Sequence[SegmentTerm]) -> list[SegmentStatistics]:
    """Voxel count and volume (mL) of every term's label in ``labels_kji`` (on the reference grid)."""
    labels = np.asarray(labels_kji)
    per_voxel = voxel_volume_ml(reference_volume)
    out = []
    for term in terms:
        n = int(np.count_nonzero(labels == term.label))
        out.append(SegmentStatistics(term.label, term.name, n, n * per_voxel))
    return out


@dataclass
class RunResults:
    """What one run produced: nodes in the scene and the numbers the GUI shows."""

    task: str
    model: str
    device: str = ""
    note: str = ""
    nodes: list = field(default_factory=list)
    statistics: list[SegmentStatistics] = field(default_factory=list)
    probability: float | None = None
    threshold: float = 0.5
    comparisons: dict[str, list[LineComparison]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: segment volumes, ACL-tear probability, line errors."""
        lines = [f"{TASKS.get(self.task, self.task)} with {self.model}" + (f" on {self.device}" if self.device else "")]
        if self.note:
            lines.append(f"Note: {self.note}")
        for s in self.statistics:
            lines.append(f"{s.name}: {s.volume_ml:.1f} mL ({s.voxels} voxels)")
        if self.probability is not None:
            decision = "tear" if self.probability >= self.threshold else "no tear"
            lines.append(f"ACL tear probability: {self.probability:.3f} ({decision} at {self.threshold:g})")
        for view, comps in self.comparisons.items():
            for c in comps:
                if c.angle_deg is None:
                    lines.append(f"{view}: predicted {c.partner} line (planes parallel, no geometric line)")
                else:
                    lines.append(f"{view}: {c.partner} line off by {c.angle_deg:.1f}° and {c.distance_mm:.1f} mm "
                                 f"(confidence {c.confidence:.2f})")
            if not comps:
                lines.append(f"{view}: no predicted line found")
        return lines


class Logic:
    """The module's logic (see the module docstring). ``ctx`` defaults to Slicer's own scene."""

    def __init__(self, ctx: SceneContext | None = None, registry_path: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, python: str | None = None) -> None:
        """``python``: the interpreter that runs the background worker (default ``sys.executable``;
        inside Slicer that is the application itself, so the module passes ``PythonSlicer``)."""
        self._ctx = ctx
        self.python = python
        self.registry_path = registry_path
        self.cache_dir = cache_dir
        self.study_scene: StudyScene | None = None
        self.plane_views: PlaneViews | None = None
        self.overlay: LineOverlay | None = None
        self.scene_plan: ScenePlan | None = None
        self.runner: InferenceRunner | None = None
        self._pending: tuple[str, dict[str, Any], LocalModel, str] | None = None

    # ------------------------------------------------------------------ scene
    @property
    def ctx(self) -> SceneContext:
        if self._ctx is None:  # pragma: no cover - inside Slicer
            self._ctx = SceneContext.from_slicer()
        return self._ctx

    def models(self, task: str | None = None) -> list[ModelEntry]:
        """Registry entries (all, or those for ``task``)."""
        entries = load_registry(self.registry_path)
        return [e for e in entries if task is None or e.task == task]

    @staticmethod
    def scan_folder(folder: str | os.PathLike) -> list[Study]:
        """Every study found under ``folder``, with view labels decided (header reading only)."""
        result = scan_tree(Path(folder))
        for study in result.studies:
            identify_views(study)
        return result.studies

    def load_study(self, study: Study, phase: int | str = 0) -> StudyScene:
        """One volume per view of ``study`` in the scene, under its study in the subject hierarchy."""
        self.study_scene = load_study(self.ctx, study, phase=phase)
        return self.study_scene

    def load_dicom_folder(self, folder: str | os.PathLike, study_index: int = 0, phase: int | str = 0) -> StudyScene:
        """``load_study`` of the ``study_index``-th study found under ``folder``."""
        studies = [s for s in self.scan_folder(folder) if any(se.usable for se in s.series)]
        if not studies:
            raise ValueError(f"{folder}: no DICOM study with usable image geometry found")
        if not 0 <= study_index < len(studies):
            raise ValueError(f"{folder}: study {study_index} asked for, {len(studies)} found")
        return self.load_study(studies[study_index], phase)

    def study_volumes(self, volume_node) -> dict[str, Any]:
        """View label → volume node for the study of ``volume_node``.

        Volumes loaded by PlaneSSL carry their view label; its siblings under the same study
        item are gathered. A volume loaded by other means is returned alone, named by its node.
        """
        label = volume_node.GetAttribute(ATTR_VIEW)
        if not label:
            return {volume_node.GetName(): volume_node}
        study = study_item_of(self.ctx, volume_node)
        if not study:
            return {label: volume_node}
        volumes: dict[str, Any] = {}
        scene = self.ctx.scene
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            other = node.GetAttribute(ATTR_VIEW)
            if other and other not in volumes and study_item_of(self.ctx, node) == study:
                volumes[other] = node
        volumes[label] = volume_node  # the chosen node wins over a same-label sibling
        order = [v for a in VIEW_LABELS.values() for v in a]
        return dict(sorted(volumes.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))

    @staticmethod
    def anatomy_of(volumes: Mapping[str, Any]) -> str | None:
        """"heart" or "knee" when the view labels say so, else None."""
        labels = set(volumes)
        for anatomy, views in VIEW_LABELS.items():
            if labels and labels <= set(views):
                return anatomy
        return None

    def show_planes(self, volumes: Mapping[str, Any], layout_node=None,
                    size_px: tuple[int, int] = (256, 256)) -> PlaneViews:
        """One linked slice view per volume, in its acquisition plane (``views.create_plane_views``)."""
        self.remove_predicted_lines()
        self.plane_views = create_plane_views(self.ctx, volumes, self.anatomy_of(volumes), size_px,
                                              layout_node=layout_node)
        return self.plane_views

    def set_geometric_lines_visible(self, visible: bool) -> None:
        """Slicer's own intersection lines in the plane views on or off."""
        import slicer

        if self.plane_views is not None:
            for view in self.plane_views:
                display = view.slice_logic.GetSliceDisplayNode()
                if display is not None:
                    display.SetIntersectingSlicesVisibility(int(bool(visible)))
        self.ctx.app_logic.SetIntersectingSlicesEnabled(
            slicer.vtkMRMLApplicationLogic.IntersectingSlicesVisibility, bool(visible))

    def set_predicted_lines_visible(self, visible: bool) -> None:
        """The dashed predicted lines on or off (kept in the scene)."""
        if self.overlay is not None:
            for node in self.overlay.models.values():
                display = node.GetDisplayNode()
                if display is not None:
                    display.SetVisibility(bool(visible))

    def draw_ready_lines(self) -> int:
        """Draw predicted lines the overlay's background prefetch has finished (GUI thread, no network)."""
        return 0 if self.overlay is None else self.overlay.draw_ready()

    def remove_predicted_lines(self) -> None:
        if self.overlay is not None:
            self.overlay.remove()
            self.overlay = None

    # ------------------------------------------------------------------ models
    def resolve_model(self, model: str, task: str, progress: Callable[[int, Any], None] | None = None,
                      cancelled: Callable[[], bool] | None = None) -> LocalModel:
        """A registry id (downloaded into the cache when needed) or a local folder, checked for ``task``."""
        entries = None
        candidate = Path(model).expanduser() if model else None
        if not (candidate is not None and candidate.is_dir()):
            entries = load_registry(self.registry_path)
        return resolve_model(model, task, entries, self.cache_dir, progress, cancelled)

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _worker_device(device: str) -> tuple[str, str]:
        device = (device or "auto").lower()
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if device == "mps":
            return "auto", "mps asked for: the background worker runs on cuda or cpu"
        return device, ""

    @staticmethod
    def task_volumes(task: str, volumes: Mapping[str, Any]) -> dict[str, Any]:
        """The volumes ``task`` reads, checked (a clear error names what is missing)."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
        if not volumes:
            raise ValueError("no input volume")
        if task == "segment_heart":
            if "SAX" in volumes:
                return {"SAX": volumes["SAX"]}
            if len(volumes) == 1:  # a volume loaded by other means: take it as the SAX stack
                return dict(volumes)
            raise ValueError("cardiac segmentation needs the short-axis (SAX) stack; "
                             f"the study has {', '.join(volumes)}")
        if task == "classify_knee":
            found = {v: volumes[v] for v in TASK_VIEWS[task] if v in volumes}
            if not found:
                raise ValueError(f"ACL-tear scoring needs knee stacks (SAG/COR/AX); the study has {', '.join(volumes)}")
            return found
        return dict(volumes)

    def make_request(self, task: str, volumes: Mapping[str, Any], model: LocalModel,
                     device: str = "auto") -> tuple[InferenceRequest, str]:
        """The background request for ``task`` (``segment_heart`` or ``classify_knee``) and a device note.

        Each volume goes with its slice planes (LPS, from its IJK-to-RAS matrix:
        ``scene.planes_of_volume``), so the worker resamples like training did: ``image`` +
        ``plane_*`` for the SAX stack, ``<view>`` + ``<view>_plane_*`` per knee stack.
        """
        if task == "lines":
            raise ValueError("the lines task runs in this process (show_predicted_lines), not in the worker")
        inputs_nodes = self.task_volumes(task, volumes)
        arrays: dict[str, np.ndarray] = {}
        for label, node in inputs_nodes.items():
            image = np.asarray(volume_array(node), dtype=np.float32)
            if task == "segment_heart":
                arrays.update({"image": image, **plane_arrays(planes_of_volume(node), "plane_")})
            else:
                arrays.update({label: image, **plane_arrays(planes_of_volume(node), f"{label}_plane_")})
        worker_device, note = self._worker_device(device)
        params: dict[str, Any] = {"model": str(model.path)}
        sides = {node.GetAttribute(ATTR_LATERALITY) for node in inputs_nodes.values()} - {None, ""}
        if len(sides) == 1:
            params["laterality"] = sides.pop()  # orients the sagittal stack medial -> lateral
        return InferenceRequest(task, arrays, params, worker_device), note

    def start(self, task: str, volumes: Mapping[str, Any], model: LocalModel, device: str = "auto",
              on_progress: Callable[[int, int], None] | None = None) -> InferenceRunner:
        """Start ``task`` in the background; poll ``runner.running``, then call ``finish()``."""
        if self.runner is not None and self.runner.running:
            raise RuntimeError("an inference run is already in progress")
        request, note = self.make_request(task, volumes, model, device)
        self.runner = InferenceRunner(request, python=self.python)
        self._pending = (task, dict(volumes), model, note)
        self.runner.start(on_progress)
        return self.runner

    def cancel(self) -> None:
        """Kill the running worker (``finish`` then raises ``InferenceCancelled``)."""
        if self.runner is not None:
            self.runner.cancel()

    def finish(self, timeout: float | None = None) -> RunResults:
        """Wait for the started run and put its result into the scene (rolled back on failure)."""
        if self.runner is None or self._pending is None:
            raise RuntimeError("no inference run was started")
        runner, (task, volumes, model, note) = self.runner, self._pending
        try:
            result = runner.wait(timeout)
        finally:
            if not runner.running:
                self.runner, self._pending = None, None
        return self.apply_result(task, volumes, model, result, note)

    def apply_result(self, task: str, volumes: Mapping[str, Any], model: LocalModel, result: InferenceResult,
                     note: str = "") -> RunResults:
        """Segmentation node / classification table from the worker's outputs (one transaction)."""
        inputs = self.task_volumes(task, volumes)
        out = RunResults(task, model.source, result.device, "; ".join(n for n in (note, result.note) if n),
                         log=list(result.log))
        with scene_transaction(self.ctx.scene):
            if task == "segment_heart":
                reference = next(iter(inputs.values()))
                terms = segment_terms(model.manifest, str(model.path / MANIFEST_FILE))
                labels = checked_labels(result.outputs.get("labels", np.zeros(0)), (t.label for t in terms))
                node = segmentation.add_segmentation(self.ctx, labels, reference, terms,
                                                     name=f"{reference.GetName()} PlaneSSL segmentation")
                node.SetAttribute("PlaneSSL.Model", model.source)
                out.nodes.append(node)
                out.statistics = segment_statistics(labels, reference, terms)
            elif task == "classify_knee":
                probability, threshold = checked_probability(result.outputs)
                table = classification.store_classification(self.ctx, probability, inputs, model=model.source,
                                                            device=result.device, threshold=threshold)
                out.nodes.append(table)
                out.probability, out.threshold = probability, threshold
            else:
                raise ValueError(f"task {task!r} has no background result")
        return out

    def show_predicted_lines(self, model: LocalModel, device: str = "auto",
                             on_progress: Callable[[int, int], None] | None = None) -> RunResults:
        """Predicted lines of every plane view (``show_planes`` first), kept up to date on scrolling."""
        if self.plane_views is None:
            raise RuntimeError("show the plane views first (show_planes)")
        import torch

        device = (device or "auto").lower()
        note = ""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            device, note = "cpu", "cuda not available; using cpu"
        elif device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                device, note = "cpu", "mps not available; using cpu"
        predictor = ManifestLinePredictor.from_weights(model.path, device)  # prepared like pretraining
        self.remove_predicted_lines()
        overlay = LineOverlay(self.ctx, self.plane_views, predictor)
        labels = self.plane_views.labels
        try:
            for i, label in enumerate(labels):
                overlay.update(label)
                if on_progress is not None:
                    on_progress(i + 1, len(labels))
        except BaseException:
            overlay.remove()
            raise
        overlay.observe(background=True)  # scrolling reads the cache; a thread fills it
        self.overlay = overlay
        return RunResults("lines", model.source, device, note, nodes=list(overlay.models.values()),
                          comparisons=dict(overlay.comparisons))

    def plan_long_axis_views(self, volumes: Mapping[str, Any], model: LocalModel | str, device: str = "auto",
                             fit: str = "sax-normal", layout_node=None,
                             size_px: tuple[int, int] = (256, 256)) -> ScenePlan:
        """The 2CH/3CH/4CH planes proposed from the SAX volume by a line model (``planning``): markups
        planes, proposed slice views beside the acquired plane views, a results table. Nothing in the
        scene changes when the model or the plan fails."""
        local = model if isinstance(model, LocalModel) else self.resolve_model(model, "lines")
        import torch

        device = (device or "auto").lower()
        if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
            device = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
        plan = planning.compute_plan(volumes, local.path, device, fit)  # touches nothing in the scene
        if self.plane_views is None or set(self.plane_views.labels) != set(volumes):
            self.show_planes(volumes, layout_node, size_px)
        self.scene_plan = planning.add_plan_to_scene(self.ctx, volumes, plan, size_px, layout_node,
                                                     acquired_labels=self.plane_views.labels)
        return self.scene_plan

    def run(self, task: str, volumes: Mapping[str, Any], model: LocalModel | str, device: str = "auto",
            on_progress: Callable[[int, int], None] | None = None, timeout: float | None = None) -> RunResults:
        """Blocking run of ``task`` (what the self-test and scripts use)."""
        local = model if isinstance(model, LocalModel) else self.resolve_model(model, task)
        if task == "lines":
            if self.plane_views is None:
                self.show_planes(volumes)
            return self.show_predicted_lines(local, device, on_progress)
        self.start(task, volumes, local, device, on_progress)
        try:
            return self.finish(timeout)
        except TimeoutError:
            self.cancel()
            raise

    def cleanup(self) -> None:
        """Stop a running worker and the line observers."""
        self.cancel()
        self.remove_predicted_lines()


def export_random_weights(out_dir: str | os.PathLike, task: str, channels: Sequence[str] = (),
                          seed: int = 0, base_filters: int = 4, levels: int = 3, input_size: int = 128,
                          spacing_mm: float = 2.0) -> LocalModel:
    """A tiny network with seeded random weights, exported as a weights folder for ``task``.

    For self-tests and timing only: the outputs mean nothing. The folder has the format the real
    trainers write, so loading exercises the real inference paths: ``segment_heart`` a
    ``PlaneSSLNet`` of task ``seg`` with the ACDC label names and terminology (``planessl finetune
    seg``), ``classify_knee`` a ``PlaneSSLExamClassifier`` of task ``acl`` with its decision
    threshold (as ``planessl finetune acl``), ``lines`` a ``PlaneSSLNet`` of task ``lines`` naming
    its heatmap channels (pretraining); all written by ``inference.weights.export_model``.
    """
    import torch

    from ..inference.weights import build_manifest, export_model
    from ..models import PlaneSSLNet, UNetConfig
    from ..preprocess.config import PrepareConfig
    from .models_registry import validate_model_folder

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    if task == "lines" and not channels:
        raise ValueError("a line model needs its channel (partner view) names")
    anatomy = "knee" if task == "classify_knee" else "heart"
    prep = PrepareConfig(spacing_mm=float(spacing_mm), size_px=int(input_size), anatomy=anatomy)
    common = {"input_size_hw": (prep.size_px, prep.size_px), "input_spacing_mm": prep.spacing_mm,
              "intensity_normalisation": prep.normalisation_record(),
              "metrics": {"note": "random weights for tests; not a trained model"}}
    torch.manual_seed(seed)
    if task == "classify_knee":
        from ..inference.manifest import ACL_LABELS
        from ..models.exam_classifier import ExamClassifier, ExamClassifierConfig
        from ..preprocess.exams import KNEE_VIEWS

        encoder = UNetConfig(base_filters=base_filters, levels=levels, line_channels=0, location_head=False)
        clf = ExamClassifierConfig(encoder=encoder, views=KNEE_VIEWS, hidden=8, attention_hidden=4)
        manifest = build_manifest(clf, "acl", decision={"threshold": 0.5, "positive": ACL_LABELS[1]},
                                  views=list(KNEE_VIEWS), channels=[], label_names=list(ACL_LABELS), **common)
        export_model(ExamClassifier(clf).eval(), out_dir, manifest)
    else:
        if task == "segment_heart":
            from ..preprocess.labels import ACDC_LABEL_NAMES, terminology_record

            names = list(ACDC_LABEL_NAMES)
            extra = {"views": ["SAX"], "channels": names, "label_names": names, "terminology": terminology_record()}
            manifest_task, line_channels = "seg", len(names)
        else:
            extra = {"views": {v: [c for c in channels if c != v] for v in channels}, "channels": list(channels)}
            manifest_task, line_channels = "lines", len(channels)
        config = UNetConfig(base_filters=base_filters, levels=levels, line_channels=line_channels,
                            location_head=False)
        net = PlaneSSLNet(config).eval()
        export_model(net, out_dir, build_manifest(config, manifest_task, **extra, **common))
    return validate_model_folder(out_dir, task, source=f"random {task} weights (test)")
