"""PlaneSSL 3D Slicer module: cardiac segmentation, knee ACL-tear scoring and imaging-plane lines.

The module file stays thin (SlicerNNUnet's shape): Module metadata, a Widget that binds the GUI
(``Resources/UI/PlaneSSL.ui``) to a ``@parameterNodeWrapper`` parameter node, a Logic that *is*
the Qt-free ``PlaneSSLLib.slicer_logic.logic.Logic`` (every call is delegated to it), and the
self-test. Only what Slicer provides is imported at the top; ``PlaneSSLLib`` (numpy, pydicom)
and torch are imported inside methods, after the dependencies have been checked, so the module
loads even before anything is installed, and nothing is installed at import time.
"""

import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: GUI task label → task id of ``PlaneSSLLib.slicer_logic.models_registry.TASKS`` (checked by the tests).
TASK_IDS = {"Cardiac segmentation": "segment_heart", "Knee ACL tear": "classify_knee", "Plane lines": "lines"}
DEVICE_CHOICES = ["auto", "cuda", "cpu", "mps"]

CITATION = (
    "Zhang T, Wei D, Zhu M, Gu S, Zheng Y. Self-supervised learning for medical image data with "
    "anatomy-oriented imaging planes. Medical Image Analysis 94 (2024) 103151. "
    "doi:10.1016/j.media.2024.103151, arXiv:2403.16499."
)


def _ensureLibImportable() -> None:
    """Make ``PlaneSSLLib`` importable when the module runs from a source checkout.

    Installed, the Lib sits beside this file (``qt-scripted-modules/PlaneSSLLib``); in a source
    checkout (module path = ``<repo>/PlaneSSL``) it is one folder up.
    """
    import sys

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
        self.parent.title = "PlaneSSL"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["PlaneSSL developers"]
        self.parent.helpText = (
            "Cardiac chamber segmentation (RV, myocardium, LV) and knee ACL-tear scoring with networks "
            "pretrained by self-supervision on the geometry of anatomy-oriented MRI imaging planes; the "
            "planes' intersection lines drawn on linked slice views, from the DICOM geometry (solid) and as "
            "predicted by the network (dashed).<br><br>"
            "Load a study from a DICOM folder (or pick a loaded volume), press <b>Show planes</b>, choose a "
            "task and a model (a registry model, downloaded on first use, or a local weights folder with "
            "model.safetensors + manifest.json), then <b>Apply</b>.<br><br>"
            f"Method: {CITATION}<br>"
            "Documentation: <a href='https://github.com/planessl/SlicerPlaneSSL'>SlicerPlaneSSL</a>. "
            "Research software: not for clinical use."
        )
        self.parent.acknowledgementText = (
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


class PlaneSSLWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: inputs, task/model/device, Apply ⇄ Cancel with progress and log, results, dependencies."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingModels = False
        self._logShown = 0
        self._cancelRequested = False
        self._timer = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(_resourceFile("UI", "PlaneSSL.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = PlaneSSLLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._pollRun)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadStudyButton.connect("clicked(bool)", self.onLoadStudy)
        self.ui.showPlanesButton.connect("clicked(bool)", self.onShowPlanes)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.dicomFolderPathLineEdit.connect("currentPathChanged(QString)", self.onDicomFolderChanged)
        self.ui.localModelPathLineEdit.connect("currentPathChanged(QString)", self.onLocalModelChanged)

        self.initializeParameterNode()
        self.updateDependencyInformation()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()
        if self._timer is not None:
            self._timer.stop()
        if self.logic is not None:
            self.logic.cleanupLib()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None:
            self.logic.cleanupLib()
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

    def _checkCanApply(self) -> None:
        p = self._parameterNode
        running = self.logic.isRunning()
        hasModel = bool(p and (p.localModelFolder or p.modelId))
        if running:
            self.ui.applyButton.enabled = True
            return
        if p and p.inputVolume and hasModel:
            self.ui.applyButton.toolTip = f"Run {p.task.lower()} on the study of {p.inputVolume.GetName()}."
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = "Select a study volume and a model (registry or local weights folder)."
            self.ui.applyButton.enabled = False
        self.ui.showPlanesButton.enabled = bool(p and p.inputVolume)

    def _populateModels(self) -> None:
        """Registry models of the chosen task in the model combo box (id as item data)."""
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
            combo.addItem("(none: use the local weights folder)", "")
            for entry in entries:
                combo.addItem(entry.describe(), entry.id)
            index = combo.findData(p.modelId) if p.modelId else -1
            combo.setCurrentIndex(index if index >= 0 else (1 if entries else 0))
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
                text += "<br><b>Missing:</b> " + ", ".join(missing)
            self.ui.dependenciesLabel.text = text
            self.ui.installDependenciesButton.enabled = bool(missing)
        except Exception as exc:  # noqa: BLE001
            self.ui.dependenciesLabel.text = f"cannot check dependencies: {exc}"

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay("PlaneSSL could not install its dependencies.", waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
        self.updateDependencyInformation()

    # ------------------------------------------------------------------ actions
    def onLoadStudy(self) -> None:
        folder = self._parameterNode.dicomFolder
        if not folder:
            slicer.util.errorDisplay("Choose a DICOM folder first.")
            return
        with slicer.util.tryWithErrorDisplay(f"Loading a study from {folder} failed.", waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            loaded = self.logic.load_dicom_folder(folder)
            self._log(f"Loaded views {', '.join(loaded.volumes)} from {folder}")
            self._parameterNode.inputVolume = next(iter(loaded.volumes.values()))
            self.onShowPlanes()

    def onShowPlanes(self) -> None:
        volume = self._parameterNode.inputVolume
        if not volume:
            return
        with slicer.util.tryWithErrorDisplay("Showing the plane views failed.", waitCursor=True):
            self.logic.ensureDependencies(askConfirmation=True)
            volumes = self.logic.study_volumes(volume)
            layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
            views = self.logic.show_planes(volumes, layoutNode)
            self.logic.setLinesVisibility(self._parameterNode.showGeometricLines,
                                          self._parameterNode.showPredictedLines)
            self._log(f"Plane views: {', '.join(views.labels)}")

    def onApplyOrCancel(self) -> None:
        if self.logic.isRunning():
            self._cancelRequested = True
            self.logic.cancel()
            self._log("Cancelling...")
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
        try:
            self.logic.ensureDependencies(askConfirmation=True)
            self.updateDependencyInformation()
            volumes = self.logic.study_volumes(p.inputVolume)
            self._setRunning(True)
            model = self.logic.resolve_model(p.localModelFolder or p.modelId, task,
                                             progress=self._onDownloadProgress,
                                             cancelled=lambda: self._cancelRequested)
            self._log(f"Model: {model.source} ({model.path})")
            if task == "lines":
                if self.logic.plane_views is None:
                    self.logic.show_planes(volumes, slicer.app.layoutManager().layoutLogic().GetLayoutNode())
                results = self.logic.show_predicted_lines(model, p.device, on_progress=self._onLocalProgress)
                self.logic.setLinesVisibility(p.showGeometricLines, p.showPredictedLines)
                self._showResults(results)
            else:
                self.logic.start(task, volumes, model, p.device)
                started = True
                self._log(f"Started {p.task.lower()} in a background process")
                self._timer.start()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            logging.exception("PlaneSSL run failed")
            slicer.util.errorDisplay(f"PlaneSSL: {exc}")
        finally:
            if not started:
                self._setRunning(False)

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
                self._log("Cancelled; the scene was left as it was.")
            else:
                logging.error(f"PlaneSSL run failed: {exc}")
                slicer.util.errorDisplay(f"PlaneSSL: {exc}")
        finally:
            self._setRunning(False)

    def _onDownloadProgress(self, done: int, total) -> None:
        if total:
            self.ui.progressBar.maximum = 1000
            self.ui.progressBar.value = int(1000 * done / total)
        self.ui.progressBar.format = f"Downloading model: {done / 1e6:.1f} MB"
        slicer.app.processEvents()

    def _onLocalProgress(self, done: int, total: int) -> None:
        self.ui.progressBar.format = "%p%"
        self.ui.progressBar.maximum = total
        self.ui.progressBar.value = done
        slicer.app.processEvents()

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.progressBar.format = "%p%"
        if running:
            self.ui.progressBar.maximum = 0  # busy until the first PROGRESS line
            self.ui.progressBar.value = 0
        else:
            self.ui.progressBar.maximum = 100
            self.ui.progressBar.value = 0
        for widget in (self.ui.inputsCollapsibleButton, self.ui.taskComboBox, self.ui.modelComboBox,
                       self.ui.localModelPathLineEdit, self.ui.deviceComboBox):
            widget.enabled = not running
        self._checkCanApply()
        if running:
            self.ui.applyButton.enabled = True

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
        if self._lib is None:
            _ensureLibImportable()
            from PlaneSSLLib.slicer_logic.logic import Logic

            self._lib = Logic(self._ctx, registry_path=_resourceFile("Models.json"), cache_dir=self.cacheDir(),
                              python=self.workerPython())
        return self._lib

    def __getattr__(self, name: str):
        # only called for attributes this class lacks: delegate to the PlaneSSLLib logic
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.lib, name)

    def getParameterNode(self):
        return PlaneSSLParameterNode(super().getParameterNode())

    def cacheDir(self) -> str:
        """Per-user weights cache: ``<Slicer cache>/PlaneSSL`` (or the one given)."""
        if self._cacheDir:
            return str(self._cacheDir)
        app = getattr(slicer, "app", None)
        if app is not None and getattr(app, "cachePath", None):
            return os.path.join(app.cachePath, "PlaneSSL")
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

    # ------------------------------------------------------------------ helpers for the widget
    def isRunning(self) -> bool:
        return self._lib is not None and self._lib.runner is not None and self._lib.runner.running

    def cleanupLib(self) -> None:
        if self._lib is not None:
            self._lib.cleanup()
            self._lib.plane_views = None

    def registryEntries(self, task: str) -> list:
        """Registry models for ``task`` (reads only JSON; safe before the dependencies are installed)."""
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic.models_registry import load_registry

        return [e for e in load_registry(_resourceFile("Models.json")) if e.task == task]

    def setLinesVisibility(self, geometric: bool, predicted: bool) -> None:
        if self._lib is None:
            return
        if self._lib.plane_views is not None:
            self._lib.set_geometric_lines_visible(geometric)
        self._lib.set_predicted_lines_visible(predicted)

    # ------------------------------------------------------------------ dependencies
    @staticmethod
    def dependencyReport() -> list:
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic import dependencies

        return dependencies.versions_report()

    @staticmethod
    def missingDependencies() -> list:
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic import dependencies

        missing = dependencies.missing()
        torch = dependencies.torch_status()
        return ([] if torch.satisfied else [torch.requirement]) + missing

    @staticmethod
    def ensureDependencies(askConfirmation: bool = True) -> None:
        """Install what is missing, after asking: torch through the PyTorch extension, the rest with pip.

        Raises RuntimeError when the PyTorch extension is missing or the user declines.
        """
        _ensureLibImportable()
        from PlaneSSLLib.slicer_logic import dependencies

        if not dependencies.torch_status().satisfied:
            try:
                import PyTorchUtils
            except ModuleNotFoundError as exc:
                raise RuntimeError("PlaneSSL needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                   "Manager, restart Slicer and try again.") from exc
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            torch = torchLogic.installTorch(askConfirmation=askConfirmation,
                                            torchVersionRequirement=dependencies.TORCH_REQUIREMENT)
            if torch is None:
                raise RuntimeError(f"PlaneSSL needs PyTorch {dependencies.TORCH_REQUIREMENT}; installation was "
                                   "declined or failed (see the PyTorch Utils module).")
        missing = dependencies.missing()
        if not missing:
            return
        try:
            import slicer.pydeps as pydeps
        except ImportError:
            pydeps = None
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            from packaging.requirements import Requirement

            pydeps.pip_ensure([Requirement(r) for r in missing], prompt_install=askConfirmation,
                              requester="PlaneSSL", skip_in_testing=False)
        else:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    "PlaneSSL needs these Python packages:\n\n" + "\n".join(missing)
                    + "\n\nInstall them now? This may take a few minutes.", "PlaneSSL dependencies"):
                raise RuntimeError("PlaneSSL cannot run without: " + ", ".join(missing))
            slicer.util.pip_install(missing)
        still = dependencies.missing()
        if still:
            raise RuntimeError("these packages are still missing after installation: " + ", ".join(still))


#
# The whole path, shared by the Slicer self-test and the pytest suite
#


def runWholePath(logic, workdir: str, layoutNode=None, message=logging.info) -> dict:
    """Phantom heart study → volumes → plane views → random weights → segmentation and lines.

    ``logic`` is a ``PlaneSSLLogic``. Returns ``{"volumes", "views", "segmentation", "lines"}``;
    raises AssertionError when the scene is not what it should be.
    """
    _ensureLibImportable()
    from PlaneSSLLib.phantoms.cohort import CohortOptions, write_cohort
    from PlaneSSLLib.slicer_logic.logic import export_random_weights

    heart = os.path.join(workdir, "heart")
    message("Writing a synthetic heart study as DICOM")
    write_cohort(heart, CohortOptions("heart", 1, seed=7, phases=2, matrix=64), workers=1, force=True)
    loaded = logic.load_dicom_folder(heart)
    volumes = logic.study_volumes(loaded.volumes["SAX"])
    assert list(volumes) == ["SAX", "2CH", "3CH", "4CH"], list(volumes)
    message("Showing the plane views")
    views = logic.show_planes(volumes, layoutNode)
    assert views.labels == ["SAX", "2CH", "3CH", "4CH"], views.labels

    message("Segmenting the SAX stack in a background process (random weights)")
    segWeights = export_random_weights(os.path.join(workdir, "weights_seg"), "segment_heart")
    progress = []
    seg = logic.run("segment_heart", volumes, segWeights, "cpu", on_progress=lambda i, n: progress.append((i, n)),
                    timeout=600)
    slices = volumes["SAX"].GetImageData().GetDimensions()[2]
    assert progress and progress[-1] == (slices, slices), progress
    (segNode,) = seg.nodes
    assert logic.ctx.scene.GetNodeByID(segNode.GetID()) is not None
    assert segNode.GetSegmentation().GetNumberOfSegments() == 3
    assert [s.name for s in seg.statistics] == ["Right ventricle", "Myocardium", "Left ventricle"]

    message("Predicting the intersection lines (random weights)")
    lineWeights = export_random_weights(os.path.join(workdir, "weights_lines"), "lines",
                                        channels=("2CH", "3CH", "4CH", "SAX"))
    lines = logic.run("lines", volumes, lineWeights, "cpu")
    assert set(lines.comparisons) == set(views.labels), lines.comparisons
    for node in lines.nodes:
        assert logic.ctx.scene.GetNodeByID(node.GetID()) is not None
    return {"volumes": volumes, "views": views, "segmentation": seg, "lines": lines}


#
# PlaneSSLTest
#


class PlaneSSLTest(ScriptedLoadableModuleTest):
    """Self-test (Reload and Test, or ``ctest -R PlaneSSL``): the whole path on a synthetic study."""

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
