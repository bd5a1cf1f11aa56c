"""PlaneSSL 3D Slicer module: cardiac segmentation, knee ACL-tear scoring and imaging-plane lines.

The module file stays thin (SlicerNNUnet's shape): Module metadata, a Widget that binds the GUI
(``Resources/UI/PlaneSSL.ui``) to a ``@parameterNodeWrapper`` parameter node, a Logic that *is*
the Qt-free ``PlaneSSLLib.slicer_logic.logic.Logic`` (every call is delegated to it), and the
self-test. Only what Slicer provides is imported at the top; ``PlaneSSLLib`` (numpy, pydicom)
and torch are imported inside methods, after the dependencies have been checked, so the module
loads even before anything is installed, and nothing is installed at import time.

Supported: 3D Slicer 5.10 and 5.12 (Python 3.12). Slicer 5.6 and 5.8 run Python 3.9, which
cannot run the library: the module still loads there (this file is Python 3.9 syntax) and says so
instead of failing inside an import (``versionProblem``).
"""

import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: The oldest Python the library runs on; Slicer 5.10.0 is the first release on a newer one (3.12).
MIN_PYTHON = (3, 10)
#: The sample study of "Load sample" and the self-test (phantoms.cohort options).
SAMPLE_COHORT = {"anatomy": "heart", "subjects": 1, "seed": 7, "phases": 2, "matrix": 64}
#: Bundled sample weights (Resources/Models.json ids): trained on synthetic data, not for clinical use.
SAMPLE_MODELS = {"lines": "heart-plane-lines-sample", "segment_heart": "heart-segmentation-sample"}
#: The Slicer releases the extension targets (README, PlaneSSL.json description, the message below).
SUPPORTED_SLICER = "5.10 and 5.12"

#: GUI task label → task id of ``PlaneSSLLib.slicer_logic.models_registry.TASKS`` (checked by the tests).
TASK_IDS = {"Cardiac segmentation": "segment_heart", "Knee ACL tear": "classify_knee", "Plane lines": "lines"}
DEVICE_CHOICES = ["auto", "cuda", "cpu", "mps"]

CITATION = (
    "Zhang T, Wei D, Zhu M, Gu S, Zheng Y. Self-supervised learning for medical image data with "
    "anatomy-oriented imaging planes. Medical Image Analysis 94 (2024) 103151. "
    "doi:10.1016/j.media.2024.103151, arXiv:2403.16499."
)


def _pythonVersion() -> tuple:
    import sys

    return tuple(sys.version_info)[:3]


def versionProblem(versionInfo=None) -> str:
    """Why this Slicer cannot run PlaneSSL ("" when it can): its Python is older than ``MIN_PYTHON``
    (Slicer 5.6 and 5.8 run Python 3.9.10; the library needs 3.10+ syntax and pydicom 3)."""
    version = tuple(versionInfo if versionInfo is not None else _pythonVersion())[:3]
    if version >= MIN_PYTHON:
        return ""
    return _(
        "PlaneSSL needs 3D Slicer {supported} (Python {need} or newer); this Slicer runs Python {have}, "
        "as Slicer 5.8 and older do. Install Slicer {supported} from download.slicer.org and install the "
        "extension there."
    ).format(supported=SUPPORTED_SLICER, need=".".join(map(str, MIN_PYTHON)), have=".".join(map(str, version)))


class UnsupportedSlicerError(RuntimeError):
    """Raised before any import of the library on a Slicer whose Python cannot run it."""


def _ensureLibImportable() -> None:
    """Make ``PlaneSSLLib`` importable when the module runs from a source checkout.

    Installed, the Lib sits beside this file (``qt-scripted-modules/PlaneSSLLib``); in a source
    checkout (module path = ``<repo>/PlaneSSL``) it is one folder up. Raises
    ``UnsupportedSlicerError`` first on a Slicer that cannot run the library.
    """
    import sys

    problem = versionProblem()
    if problem:
        raise UnsupportedSlicerError(problem)
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(candidate, "PlaneSSLLib")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return


def _resourceFile(*parts: str) -> str:
    """A file of ``Resources/``: beside the installed module, else in the source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (here, os.path.dirname(here)):
        path = os.path.join(base, "Resources", *parts)
        if os.path.exists(path):
            return path
    return os.path.join(here, "Resources", *parts)


#
# PlaneSSL
#


class PlaneSSL(ScriptedLoadableModule):
    """Module metadata (title, category, contributors, help with the method's citation)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PlaneSSL")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["PlaneSSL developers"]
        problem = versionProblem()
        self.parent.helpText = ((f"<b>{problem}</b><br><br>" if problem else "") + _(
            "Cardiac chamber segmentation (RV, myocardium, LV) and knee ACL-tear scoring with networks "
            "pretrained by self-supervision on the geometry of anatomy-oriented MRI imaging planes; the "
            "planes' intersection lines drawn on linked slice views, from the DICOM geometry (solid) and as "
            "predicted by the network (dashed).<br><br>"
            "Load a study from a DICOM folder (or pick a loaded volume), or press <b>Load sample</b> for a "
            "synthetic heart study with the bundled sample weights; press <b>Show planes</b>, choose a task "
            "and a model (a registry model, downloaded on first use, or a local weights folder with "
            "model.safetensors + manifest.json), then <b>Apply</b>.<br><br>"
            "Runs in 3D Slicer {supported}.<br>"
        ).format(supported=SUPPORTED_SLICER) + _("Method: {citation}<br>").format(citation=CITATION) + _(
            "Documentation: <a href='https://github.com/planessl/SlicerPlaneSSL'>SlicerPlaneSSL</a>. "
            "Research software: not for clinical use."
        ))
        self.parent.acknowledgementText = _(
            "PlaneSSL implements the method of Zhang, Wei, Zhu, Gu and Zheng (Medical Image Analysis 94, 2024, "
            "103151). The extension's shape follows SlicerNNUnet, SlicerMONAIAuto3DSeg and SlicerTotalSegmentator; "
            "torch is provided by the PyTorch extension (SlicerPyTorch)."
        )


#
# Parameter node
#


@parameterNodeWrapper
class PlaneSSLParameterNode:
    """What the GUI edits; saved with the scene.

    inputVolume: any volume of the study (its sibling views are found through the subject hierarchy).
    dicomFolder: a folder to load a study from. task: a key of ``TASK_IDS``. modelId: a registry id.
    localModelFolder: a weights folder (wins over modelId when set). device: auto, cuda, cpu or mps.
    showGeometricLines / showPredictedLines: the two kinds of intersection lines in the plane views.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    dicomFolder: str = ""
    task: Annotated[str, Choice(list(TASK_IDS))] = "Cardiac segmentation"
    modelId: str = ""
    localModelFolder: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    showGeometricLines: bool = True
    showPredictedLines: bool = True


#
# PlaneSSLWidget
#


class RunCancelled(RuntimeError):
    """The user pressed Cancel (or closed the scene) during a synchronous phase of a run."""


def purgeLibModules(modules=None) -> list:
    """Drop ``PlaneSSLLib`` and its submodules from ``modules`` (``sys.modules``), so that Reload
    imports the library afresh (``slicer.util.reloadScriptedModule`` reloads only this file)."""
    import sys

    modules = sys.modules if modules is None else modules
    names = [n for n in list(modules) if n == "PlaneSSLLib" or n.startswith("PlaneSSLLib.")]
    for name in names:
        del modules[name]
    return names


class PlaneSSLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: inputs, task/model/device, Apply ⇄ Cancel with progress and log, results, dependencies.

    One action at a time: ``_busy`` is set while an action runs on the GUI thread (loading, model
    download, in-process line prediction, which call ``processEvents``), so a click that arrives
    then cannot start a second action; Apply (showing Cancel) only requests cancellation, checked at
    the next progress callback. The background run is polled by ``_timer``.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingModels = False
        self._logShown = 0
        self._cancelRequested = False
        self._busy = False
        self._timer = None
        self._linesTimer = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        problem = versionProblem()
        if problem:  # Slicer 5.8 or older: say why, import nothing of the library
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(_resourceFile("UI", "PlaneSSL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = PlaneSSLLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._pollRun)
        # predicted lines of slices scrolled to are computed off the GUI thread; this draws them when ready
        self._linesTimer = qt.QTimer()
        self._linesTimer.setInterval(50)
        self._linesTimer.timeout.connect(self._drawReadyLines)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadStudyButton.connect("clicked(bool)", self.onLoadStudy)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.showPlanesButton.connect("clicked(bool)", self.onShowPlanes)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        self.ui.planViewsButton.connect("clicked(bool)", self.onPlanViews)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.dicomFolderPathLineEdit.connect("currentPathChanged(QString)", self.onDicomFolderChanged)
        self.ui.localModelPathLineEdit.connect("currentPathChanged(QString)", self.onLocalModelChanged)

        self.initializeParameterNode()
        self.updateDependencyInformation()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()
        self._stopTimers()
        if self.logic is not None:
            self.logic.cleanupLib()

    def onReload(self) -> None:
        """Reload the module *and* the library (``PlaneSSLLib`` is imported afresh on next use)."""
        if self.logic is not None:
            self.logic.cleanupLib()
        self._stopTimers()
        purgeLibModules()
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def _stopTimers(self) -> None:
        for timer in (self._timer, self._linesTimer):
            if timer is not None:
                timer.stop()

    def onSceneStartClose(self, caller, event) -> None:
        """Closing the scene stops a run (any platform) and the line observers; no error is shown."""
        self._cancelRequested = True
        self._stopTimers()
        if self.logic is not None:
            self.logic.cleanupLib()
        if self.logic is not None and getattr(self, "ui", None) is not None:
            self._setRunning(False)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # widgets with the "SlicerParameterName" property in the .ui file are bound here
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self.ui.dicomFolderPathLineEdit.currentPath = self._parameterNode.dicomFolder
            self.ui.localModelPathLineEdit.currentPath = self._parameterNode.localModelFolder
            self._populateModels()
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        if self.ui.modelComboBox.property("PlaneSSLTask") != p.task:
            self._populateModels()
        self.logic.setLinesVisibility(p.showGeometricLines, p.showPredictedLines)
        self._checkCanApply()

    def _modelUsable(self) -> bool:
        """A local weights folder, or a registry model that is bundled, published or already cached."""
        p = self._parameterNode
        if p is None:
            return False
        if p.localModelFolder:
            return True
        return bool(p.modelId) and self.logic.modelAvailable(p.modelId)

    def _checkCanApply(self) -> None:
        p = self._parameterNode
        if self.logic.isRunning() or self._busy:
            self.ui.applyButton.enabled = True
            return
        if p and p.inputVolume and self._modelUsable():
            self.ui.applyButton.toolTip = _("Run {task} on the study of {volume}.").format(
                task=p.task.lower(), volume=p.inputVolume.GetName())
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _(
                "Select a study volume and a usable model (bundled, published or a local weights folder).")
            self.ui.applyButton.enabled = False
        self.ui.showPlanesButton.enabled = bool(p and p.inputVolume)
        plan_ok = bool(p and p.inputVolume and TASK_IDS.get(p.task) == "lines" and self._modelUsable())
        self.ui.planViewsButton.enabled = plan_ok and not (self.logic.isRunning() or self._busy)
        self.ui.planViewsButton.toolTip = (
            _("Propose the 2CH, 3CH and 4CH planes from the SAX volume with the chosen Plane lines model.") if plan_ok
            else _("Choose the task Plane lines, a usable model and a heart study volume to plan long-axis views."))

    def _populateModels(self) -> None:
        """Registry models of the chosen task in the model combo box (id as item data); the first
        usable one is chosen by default, never an unpublished entry (Apply would fail)."""
        p = self._parameterNode
        if p is None:
            return
        self._updatingModels = True
        try:
            combo = self.ui.modelComboBox
            combo.clear()
            combo.setProperty("PlaneSSLTask", p.task)
            try:
                entries = self.logic.registryEntries(TASK_IDS[p.task])
            except Exception as exc:  # noqa: BLE001 - a broken registry must not break the GUI
                logging.error(f"PlaneSSL: cannot read the model registry: {exc}")
                entries = []
            combo.addItem(_("(none: use the local weights folder)"), "")
            usable = []
            for entry in entries:
                combo.addItem(entry.describe(), entry.id)
                if self.logic.modelAvailable(entry.id):
                    usable.append(entry.id)
            index = combo.findData(p.modelId) if p.modelId else -1
            if index < 0:
                index = combo.findData(usable[0]) if usable else 0
            combo.setCurrentIndex(index)
        finally:
            self._updatingModels = False
        self.onModelChanged(self.ui.modelComboBox.currentIndex)

    def onModelChanged(self, index: int) -> None:
        if self._updatingModels or self._parameterNode is None:
            return
        self._parameterNode.modelId = self.ui.modelComboBox.itemData(index) or ""

    def onDicomFolderChanged(self, path: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.dicomFolder = path

    def onLocalModelChanged(self, path: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.localModelFolder = path

    # ------------------------------------------------------------------ dependencies
    def updateDependencyInformation(self) -> None:
        """Installed versions, read from package metadata (nothing is imported or installed)."""
        try:
            rows = self.logic.dependencyReport()
            missing = self.logic.missingDependencies()
            text = "<br>".join(f"{name}: {version}" for name, version in rows)
            if missing:
                text += "<br><b>" + _("Missing:") + "</b> " + ", ".join(missing)
            self.ui.dependenciesLabel.text = text
            self.ui.installDependenciesButton.enabled = bool(missing)
        except Exception as exc:  # noqa: BLE001
            self.ui.dependenciesLabel.text = _("cannot check dependencies: {error}").format(error=exc)

    def onInstallDependencies(self) -> None:
        if self._isBusy():
            return
        with slicer.util.tryWithErrorDisplay(_("PlaneSSL could not install its dependencies."), waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True, needTorch=True)
        self.updateDependencyInformation()

    # ------------------------------------------------------------------ actions
    def _isBusy(self) -> bool:
        """Whether an action is under way (then a second one must not start)."""
        return self._busy or (self.logic is not None and self.logic.isRunning())

    def onLoadStudy(self) -> None:
        if self._isBusy():
            return
        folder = self._parameterNode.dicomFolder
        if not folder:
            slicer.util.errorDisplay(_("Choose a DICOM folder first."))
            return
        self._busy = True
        try:
            with slicer.util.tryWithErrorDisplay(_("Loading a study from {folder} failed.").format(folder=folder),
                                                 waitCursor=True):
                self.logic.ensureDependencies(askConfirmation=True, needTorch=False)  # numpy, pydicom: no torch
                loaded = self.logic.load_dicom_folder(folder)
                self._log(_("Loaded views {views} from {folder}").format(views=", ".join(loaded.volumes),
                                                                          folder=folder))
                self._parameterNode.inputVolume = next(iter(loaded.volumes.values()))
                self._showPlanes()
        finally:
            self._busy = False

    def onLoadSample(self) -> None:
        """A synthetic heart study written as DICOM, loaded and shown, with the bundled sample weights chosen."""
        if self._isBusy():
            return
        self._busy = True
        try:
            with slicer.util.tryWithErrorDisplay(_("Loading the sample failed."), waitCursor=True):
                self.logic.ensureDependencies(askConfirmation=True, needTorch=False)
                loaded = self.logic.loadSample()
                self._log(_("Loaded the synthetic sample study (views {views}); sample weights: trained on "
                            "synthetic data, not for clinical use.").format(views=", ".join(loaded.volumes)))
                self._parameterNode.inputVolume = next(iter(loaded.volumes.values()))
                self._showPlanes()
                self._populateModels()
        finally:
            self._busy = False

    def onShowPlanes(self) -> None:
        if self._isBusy():
            return
        self._busy = True
        try:
            with slicer.util.tryWithErrorDisplay(_("Showing the plane views failed."), waitCursor=True):
                self.logic.ensureDependencies(askConfirmation=True, needTorch=False)
                self._showPlanes()
        finally:
            self._busy = False

    def _showPlanes(self) -> None:
        volume = self._parameterNode.inputVolume
        if not volume:
            return
        volumes = self.logic.study_volumes(volume)
        views = self.logic.show_planes(volumes, self._layoutNode())
        self.logic.setLinesVisibility(self._parameterNode.showGeometricLines, self._parameterNode.showPredictedLines)
        self._log(_("Plane views: {views}").format(views=", ".join(views.labels)))

    @staticmethod
    def _layoutNode():
        return slicer.app.layoutManager().layoutLogic().GetLayoutNode()

    def onApplyOrCancel(self) -> None:
        if self.logic.isRunning():
            self._cancelRequested = True
            self.logic.cancel()
            self._log(_("Cancelling..."))
            return
        if self._busy:  # a synchronous phase is under way: cancel it at its next progress step
            self._cancelRequested = True
            self._log(_("Cancelling..."))
            return
        self.onApply()

    def onApply(self) -> None:
        p = self._parameterNode
        task = TASK_IDS[p.task]
        self._cancelRequested = False
        self.ui.logTextEdit.clear()
        self.ui.resultsTextEdit.clear()
        self._logShown = 0
        started = False
        self._busy = True
        try:
            self.logic.ensureDependencies(askConfirmation=True, needTorch=True)  # torch only for a task
            self.updateDependencyInformation()
            volumes = self.logic.study_volumes(p.inputVolume)
            self._setRunning(True)
            model = self.logic.resolve_model(p.localModelFolder or p.modelId, task,
                                             progress=self._onDownloadProgress,
                                             cancelled=lambda: self._cancelRequested)
            self._raiseIfCancelled()
            self._log(_("Model: {source} ({path})").format(source=model.source, path=model.path))
            if task == "lines":
                if self.logic.plane_views is None:
                    self.logic.show_planes(volumes, self._layoutNode())
                results = self.logic.show_predicted_lines(model, p.device, on_progress=self._onLocalProgress)
                self.logic.setLinesVisibility(p.showGeometricLines, p.showPredictedLines)
                self._showResults(results)
                self._linesTimer.start()
            else:
                self.logic.start(task, volumes, model, p.device)
                started = True
                self._log(_("Started {task} in a background process").format(task=p.task.lower()))
                self._timer.start()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            if self._cancelRequested:
                self._log(_("Cancelled; the scene was left as it was."))
            else:
                logging.exception("PlaneSSL run failed")
                slicer.util.errorDisplay(_("PlaneSSL: {error}").format(error=exc))
        finally:
            self._busy = False
            if not started:
                self._setRunning(False)

    def _raiseIfCancelled(self) -> None:
        if self._cancelRequested:
            raise RunCancelled(_("cancelled"))

    def _pollRun(self) -> None:
        """GUI-thread view of the background run: progress, new log lines, completion."""
        runner = self.logic.runner
        if runner is None:
            self._timer.stop()
            self._setRunning(False)
            return
        done, total = runner.progress
        if total:
            self.ui.progressBar.maximum = total
            self.ui.progressBar.value = done
        for line in runner.log[self._logShown:]:
            self._log(line)
        self._logShown = len(runner.log)
        if runner.running:
            return
        self._timer.stop()
        try:
            results = self.logic.finish(timeout=0)
            self._showResults(results)
        except Exception as exc:  # noqa: BLE001
            if self._cancelRequested:
                self._log(_("Cancelled; the scene was left as it was."))
            else:
                logging.error(f"PlaneSSL run failed: {exc}")
                slicer.util.errorDisplay(_("PlaneSSL: {error}").format(error=exc))
        finally:
            self._setRunning(False)

    def _drawReadyLines(self) -> None:
        """Draw predicted lines that the background prefetch has finished (GUI thread, no network)."""
        if self.logic is not None:
            self.logic.drawReadyLines()

    def _onDownloadProgress(self, done: int, total) -> None:
        if total:
            self.ui.progressBar.maximum = 1000
            self.ui.progressBar.value = int(1000 * done / total)
        self.ui.progressBar.format = _("Downloading model: {mb} MB").format(mb=f"{done / 1e6:.1f}")
        slicer.app.processEvents()

    def _onLocalProgress(self, done: int, total: int) -> None:
        self.ui.progressBar.format = "%p%"
        self.ui.progressBar.maximum = total
        self.ui.progressBar.value = done
        slicer.app.processEvents()
        self._raiseIfCancelled()

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.progressBar.format = "%p%"
        if running:
            self.ui.progressBar.maximum = 0  # busy until the first PROGRESS line
            self.ui.progressBar.value = 0
        else:
            self.ui.progressBar.maximum = 100
            self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.taskComboBox, self.ui.modelComboBox,
                       self.ui.localModelPathLineEdit, self.ui.deviceComboBox, self.ui.installDependenciesButton):
            widget.enabled = not running
        self._checkCanApply()
        if running:
            self.ui.applyButton.enabled = True

    def onPlanViews(self) -> None:
        """Plan long-axis views: the Plane lines model on every SAX slice, one plane per view (the scene is
        left as it was when anything fails)."""
        if self._isBusy():
            return
        p = self._parameterNode
        self._busy = True
        try:
            self.ui.resultsTextEdit.clear()
            self.logic.ensureDependencies(askConfirmation=True, needTorch=True)
            volumes = self.logic.study_volumes(p.inputVolume)
            model = self.logic.resolve_model(p.localModelFolder or p.modelId, "lines",
                                             progress=self._onDownloadProgress)
            planned = self.logic.plan_long_axis_views(volumes, model, p.device, layout_node=self._layoutNode())
            self.ui.resultsTextEdit.setPlainText("\n".join(
                [_("Long-axis views planned with {source}").format(source=model.source)] + planned.summary()))
            self.ui.resultsCollapsibleButton.collapsed = False
            self._log(_("Proposed planes: {views} (markups planes 'Proposed ...', table 'View planning')").format(
                views=", ".join(planned.markups)))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            logging.exception("PlaneSSL view planning failed")
            slicer.util.errorDisplay(_("PlaneSSL: view planning failed: {error}").format(error=exc))
        finally:
            self._busy = False
            self._checkCanApply()

    def _showResults(self, results) -> None:
        self.ui.resultsTextEdit.setPlainText("\n".join(results.summary()))
        self.ui.resultsCollapsibleButton.collapsed = False
        self.ui.progressBar.maximum = 100
        self.ui.progressBar.value = 100

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        logging.info(f"PlaneSSL: {text}")


#
# PlaneSSLLogic
#


class PlaneSSLLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic object for the module: the parameter node, dependency installs, and the
    Qt-free ``PlaneSSLLib.slicer_logic.logic.Logic`` itself (``self.lib``), to which every other
    attribute is delegated (``logic.run``, ``logic.show_planes``, ``logic.load_dicom_folder``...).

    ``ctx`` (a ``SceneContext``) defaults to Slicer's scene; the tests pass their own.
    """

    def __init__(self, ctx=None, cacheDir=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._ctx = ctx
        self._cacheDir = cacheDir
        self._lib = None

    @property
    def lib(self):
        """The PlaneSSLLib logic (created on first use, after the imports it needs are possible)."""
        if self.__dict__.get("_lib") is None:
            _ensureLibImportable()
            from PlaneSSLLib.slicer_logic.logic import Logic

            try:
                self._lib = Logic(self.__dict__.get("_ctx"), registry_path=_resourceFile("Models.json"),
                                  cache_dir=self.cacheDir(), python=self.workerPython())
            except AttributeError as exc:  # not an absent attribute of this object: never fall into __getattr__
                raise RuntimeError(f"PlaneSSL: creating the library logic failed: {exc}") from exc
        return self._lib

    def __getattr__(self, name: str):
        # Only called for attributes this class lacks: delegate to the PlaneSSLLib logic. Private
        # names and this class's own names are never delegated (no recursion through ``lib``
        # when an attribute is asked for before __init__ ran or while the library logic is built).
        if name.startswith("_") or name in type(self).__dict__ or "_lib" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.lib, name)

    def getParameterNode(self):
        return PlaneSSLParameterNode(super().getParameterNode())

    def cacheDir(self) -> str:
        """Per-user cache for weights and the sample study (or the one given)."""
        if self.__dict__.get("_cacheDir"):
            return str(self._cacheDir)
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic.models_registry import default_cache_dir

        return str(default_cache_dir())

    @staticmethod
    def workerPython():
        """The interpreter for the background worker: ``PythonSlicer`` inside Slicer (there
        ``sys.executable`` may be the application), else None (the current interpreter)."""
        if getattr(slicer, "app", None) is None:
            return None
        import shutil

        return shutil.which("PythonSlicer") or None

    @staticmethod
    def testingMode() -> bool:
        """Whether Slicer runs its tests (``--testing``): then nothing is installed."""
        app = getattr(slicer, "app", None)
        return bool(app is not None and app.testingEnabled())

    # ------------------------------------------------------------------ helpers for the widget
    def isRunning(self) -> bool:
        lib = self.__dict__.get("_lib")
        return lib is not None and lib.runner is not None and lib.runner.running

    def cleanupLib(self) -> None:
        lib = self.__dict__.get("_lib")
        if lib is not None:
            lib.cleanup()
            lib.plane_views = None

    def registryEntries(self, task: str) -> list:
        """Registry models for ``task`` (reads only JSON; safe before the dependencies are installed)."""
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic.models_registry import load_registry

        return [e for e in load_registry(_resourceFile("Models.json")) if e.task == task]

    def modelAvailable(self, modelId: str) -> bool:
        """Whether registry model ``modelId`` can be used now: bundled, published, or already in the cache."""
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic.models_registry import entry_available, load_registry

        entries = [e for e in load_registry(_resourceFile("Models.json")) if e.id == modelId]
        return bool(entries) and entry_available(entries[0], self.cacheDir())

    def setLinesVisibility(self, geometric: bool, predicted: bool) -> None:
        lib = self.__dict__.get("_lib")
        if lib is None:
            return
        if lib.plane_views is not None:
            lib.set_geometric_lines_visible(geometric)
        lib.set_predicted_lines_visible(predicted)

    def drawReadyLines(self) -> int:
        """Draw the predicted lines the background prefetch has finished; returns how many views changed."""
        lib = self.__dict__.get("_lib")
        return 0 if lib is None else lib.draw_ready_lines()

    def loadSample(self, folder=None):
        """The sample heart study in the scene: one synthetic subject (``SAMPLE_COHORT``: SAX/2CH/3CH/4CH
        cine, 2 phases, 64 px, seed 7; not among the sample weights' training subjects) written once as
        DICOM into ``folder`` (default ``<cache>/sample``) and loaded like any study."""
        _ensureLibImportable()
        from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort

        root = os.path.join(folder or os.path.join(self.cacheDir(), "sample"), "heart")
        if not os.path.isfile(os.path.join(root, "subjects.csv")):
            write_cohort(root, CohortOptions(**SAMPLE_COHORT), workers=1, force=True)
        return self.lib.load_dicom_folder(root)

    # ------------------------------------------------------------------ dependencies
    @staticmethod
    def requirementsFile() -> str:
        """``Resources/requirements.txt``: what the inference path needs besides torch."""
        return _resourceFile("requirements.txt")

    @staticmethod
    def dependencyReport() -> list:
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic import dependencies

        return dependencies.versions_report()

    @classmethod
    def missingDependencies(cls, needTorch: bool = True) -> list:
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic import dependencies

        missing = dependencies.missing(dependencies.read_requirements(cls.requirementsFile()))
        torch = dependencies.torch_status()
        return ([] if torch.satisfied or not needTorch else [torch.requirement]) + missing

    @classmethod
    def ensureDependencies(cls, askConfirmation: bool = True, needTorch: bool = True, testing=None) -> None:
        """Install what is missing, after asking: the packages of ``Resources/requirements.txt`` with
        pip (no torch: enough for loading a study and showing planes), and with ``needTorch`` torch
        through the PyTorch extension (only when a task runs). In testing mode (``--testing``)
        nothing is installed: a missing package is an error that names it.
        """
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic import dependencies

        testing = cls.testingMode() if testing is None else testing
        missing = cls.missingDependencies(needTorch)
        if not missing:
            return
        if testing:
            raise RuntimeError(_("PlaneSSL's self-test installs nothing; missing: {packages}. Install them with "
                                 "'Install missing dependencies' first.").format(packages=", ".join(missing)))
        if dependencies.missing(dependencies.read_requirements(cls.requirementsFile())):
            cls.installPipRequirements(askConfirmation)
        if needTorch and not dependencies.torch_status().satisfied:
            cls.installTorch(askConfirmation)

    @classmethod
    def installPipRequirements(cls, askConfirmation: bool = True) -> None:
        """``slicer.packaging.pip_ensure`` of the requirements file (Slicer 5.12: its own prompt and
        restart detection); on Slicer 5.10, which lacks it, ``slicer.util.pip_install`` after asking,
        then a restart prompt when a package was already imported in an older version (pydicom
        2.4.4 is bundled with 5.10 and imported at startup by the DICOM module). Raises when the
        user declines or a restart is still needed."""
        from PlaneSSLLib.slicer_logic import dependencies

        path = cls.requirementsFile()
        requirements = dependencies.read_requirements(path)
        try:
            import importlib

            pipEnsure = getattr(importlib.import_module("slicer.packaging"), "pip_ensure", None)  # Slicer 5.12+
        except ImportError:
            pipEnsure = None
        if pipEnsure is not None:
            slicer.packaging.pip_ensure(slicer.packaging.load_requirements(path), prompt_install=askConfirmation,
                                        requester="PlaneSSL")
        else:
            missing = dependencies.missing(requirements)
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    _("PlaneSSL needs these Python packages:\n\n{packages}\n\nInstall them now? This may take a "
                      "few minutes.").format(packages="\n".join(missing)), _("PlaneSSL dependencies")):
                raise RuntimeError(_("PlaneSSL cannot run without: {packages}").format(packages=", ".join(missing)))
            slicer.util.pip_install(missing)
        stale = dependencies.stale_imports(requirements)
        if stale:
            detail = "\n".join(f"{name}: {loaded} -> {installed}" for name, loaded, installed in stale)
            if slicer.util.confirmYesNoDisplay(
                    _("Slicer must restart to use the updated packages:\n\n{detail}\n\nRestart now?").format(
                        detail=detail), _("PlaneSSL - Restart needed")):
                slicer.util.restart()
            raise RuntimeError(_("Restart Slicer to use the updated packages ({detail}).").format(
                detail=detail.replace("\n", "; ")))
        still = dependencies.missing(requirements)
        if still:
            raise RuntimeError(_("These packages are still missing after installation: {packages}").format(
                packages=", ".join(still)))

    @staticmethod
    def installTorch(askConfirmation: bool = True) -> None:
        """torch through the PyTorch extension (``PyTorchUtilsLogic.installTorch``)."""
        from PlaneSSLLib.slicer_logic import dependencies

        try:
            import PyTorchUtils
        except ModuleNotFoundError as exc:
            raise RuntimeError(_("PlaneSSL needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                 "Manager, restart Slicer and try again.")) from exc
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation,
                                                              torchVersionRequirement=dependencies.TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError(_("PlaneSSL needs PyTorch {requirement}; installation was declined or failed (see "
                                 "the PyTorch Utils module).").format(requirement=dependencies.TORCH_REQUIREMENT))


#
# The whole path, shared by the Slicer self-test and the pytest suite
#


def runWholePath(logic, workdir: str, layoutNode=None, message=logging.info) -> dict:
    """Load sample → plane views → segmentation, predicted lines and long-axis view planning with the
    bundled sample weights → a second segmentation cancelled mid-run, leaving the scene as it was.

    ``logic`` is a ``PlaneSSLLogic``. Returns ``{"volumes", "views", "segmentation", "lines", "plan"}``;
    raises AssertionError when the scene is not what it should be.
    """
    _ensureLibImportable()
    from PlaneSSLLib.slicer_logic.mrml import node_ids
    from PlaneSSLLib.slicer_logic.runner import InferenceCancelled

    message("Loading the sample: a synthetic heart study written as DICOM")
    loaded = logic.loadSample(workdir)
    volumes = logic.study_volumes(loaded.volumes["SAX"])
    assert list(volumes) == ["SAX", "2CH", "3CH", "4CH"], list(volumes)
    message("Showing the plane views")
    views = logic.show_planes(volumes, layoutNode)
    assert views.labels == ["SAX", "2CH", "3CH", "4CH"], views.labels

    message("Segmenting the SAX stack in a background process (bundled sample weights)")
    progress = []
    seg = logic.run("segment_heart", volumes, SAMPLE_MODELS["segment_heart"], "cpu",
                    on_progress=lambda i, n: progress.append((i, n)), timeout=600)
    slices = volumes["SAX"].GetImageData().GetDimensions()[2]
    assert progress and progress[-1] == (slices, slices), progress
    (segNode,) = seg.nodes
    assert logic.ctx.scene.GetNodeByID(segNode.GetID()) is not None
    assert segNode.GetSegmentation().GetNumberOfSegments() == 3
    assert [s.name for s in seg.statistics] == ["Right ventricle", "Myocardium", "Left ventricle"]
    assert all(s.voxels > 0 for s in seg.statistics), seg.statistics  # trained weights find every structure

    message("Predicting the intersection lines (bundled sample weights)")
    lines = logic.run("lines", volumes, SAMPLE_MODELS["lines"], "cpu")
    assert set(lines.comparisons) == set(views.labels), lines.comparisons
    for node in lines.nodes:
        assert logic.ctx.scene.GetNodeByID(node.GetID()) is not None

    message("Planning the long-axis views from the SAX volume (bundled sample weights)")
    plan = logic.plan_long_axis_views(volumes, SAMPLE_MODELS["lines"], "cpu", layout_node=layoutNode)
    assert sorted(plan.markups) == ["2CH", "3CH", "4CH"], sorted(plan.markups)
    for node in [*plan.markups.values(), plan.table]:
        assert logic.ctx.scene.GetNodeByID(node.GetID()) is not None
    assert all(vp.acquired is not None for vp in plan.plan.views.values())

    message("Cancelling a second segmentation mid-run")
    before = node_ids(logic.ctx.scene)
    model = logic.resolve_model(SAMPLE_MODELS["segment_heart"], "segment_heart")
    logic.start("segment_heart", volumes, model, "cpu")
    logic.cancel()
    try:
        logic.finish(timeout=120)
        raise AssertionError("a cancelled run finished")
    except InferenceCancelled:
        pass
    assert node_ids(logic.ctx.scene) == before
    return {"volumes": volumes, "views": views, "segmentation": seg, "lines": lines, "plan": plan}


#
# PlaneSSLTest
#


class PlaneSSLTest(ScriptedLoadableModuleTest):
    """Self-test (Reload and Test, or ``ctest -R PlaneSSL``): the whole path on the sample study with the
    bundled sample weights. It installs nothing (``--testing``): a missing package fails it by name."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_geometry_importable()
        self.test_registry_lists_every_task()
        self.test_PlaneSSL_wholePath()

    def test_geometry_importable(self) -> None:
        _ensureLibImportable()
        from PlaneSSLLib.geometry import ImagePlane, intersect_images

        a = ImagePlane.from_dicom([0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1], 64, 64)
        b = ImagePlane.from_dicom([10, 0, 0], [0, 1, 0, 0, 0, 1], [1, 1], 64, 64)
        self.assertFalse(intersect_images(a, b).parallel)

    def test_registry_lists_every_task(self) -> None:
        logic = PlaneSSLLogic()
        for task in TASK_IDS.values():
            self.assertTrue(logic.registryEntries(task), task)
        for modelId in SAMPLE_MODELS.values():
            self.assertTrue(logic.modelAvailable(modelId), modelId)

    def test_PlaneSSL_wholePath(self) -> None:
        import tempfile

        self.delayDisplay("Checking the dependencies")
        logic = PlaneSSLLogic()
        logic.ensureDependencies(askConfirmation=False)
        layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
        with tempfile.TemporaryDirectory(prefix="PlaneSSLTest-") as workdir:
            out = runWholePath(logic, workdir, layoutNode, message=self.delayDisplay)
        self.assertEqual(layoutNode.GetViewArrangement(), out["views"].layout_id)
        logic.cleanupLib()
        self.delayDisplay("Test passed")
