"""InteractiveRefine: interactive head-and-neck tumour (GTVp) and lymph-node (GTVn) contouring on
PET/CT (2S-ICR; GTVn with a model that has a gtvn output).

Four classes, one role each:

- :class:`InteractiveRefine`: the module's description.
- :class:`InteractiveRefineWidget`: the Qt panel; it binds the ``.ui`` to the typed parameter node,
  wires buttons and shortcuts to the Logic and shows the Logic's messages. The only Qt here.
- :class:`InteractiveRefineLogic`: a thin subclass of ``InteractiveRefineSlicerLib.logic.RefineLogic``
  (MRML only, no Qt: usable from tests, the batch and a web front end) on Slicer's scene.
- :class:`InteractiveRefineTest`: the self-test on the engine's phantom (every user has it).

torch, MONAI and the engine are imported only inside functions, so Slicer starts without them;
the Widget offers to install them on first use. Process settings are applied when a session is
created, not at Slicer's start.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import qt
import slicer
import vtk
from InteractiveRefineSlicerLib import dependencies, volumes
from InteractiveRefineSlicerLib.logic import DEVICES, RefineLogic
from InteractiveRefineSlicerLib.segments import SEGMENT_NAME  # noqa: F401 - part of the module's API
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)

#: Keyboard shortcuts while the module is shown. Not bare letters: other extensions install
#: permanent single-key shortcuts (SlicerNNInteractive's "p"), and an ambiguous key fires neither.
SHORTCUTS = (("Shift+P", "positive"), ("Shift+N", "negative"), ("Shift+T", "threshold"), ("Shift+U", "undo"),
             ("Shift+A", "accept"), ("Shift+L", "nodal"))
#: Opacity of the uncertainty map over the CT in the slice views.
UNCERTAINTY_OPACITY = 0.5
#: The Widget's timer waits this long for the background exact pass on each tick (seconds). The
#: wait releases the GIL that Slicer's idle event loop otherwise holds; between waits the event
#: loop runs (every POLL_INTERVAL_MS), so the panel stays responsive.
POLL_WAIT_S = 0.05
POLL_INTERVAL_MS = 5


def setPlaceMode(placeWidgets: dict, target) -> None:
    """Place points into ``placeWidgets[target]`` (persistently); ``target`` None: stop ours.

    ``qSlicerMarkupsPlaceWidget.setPlaceModeEnabled(False)`` always resets the interaction node to
    view-transform mode, so it is called only on a widget whose placement is on: never after the
    target was enabled, and never when another module's placement is active.
    """
    for kind, widget in placeWidgets.items():
        if kind != target and widget.currentNode() is not None and widget.placeModeEnabled:
            widget.setPlaceModeEnabled(False)
    widget = placeWidgets.get(target)
    if widget is not None and widget.currentNode() is not None:
        widget.setPlaceModeEnabled(True)


#
# InteractiveRefine
#


class InteractiveRefine(ScriptedLoadableModule):
    """Module description (title, category, help). Runs no code at import."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "InteractiveRefine"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["InteractiveRefine developers (InteractiveRefine project)"]
        self.parent.helpText = """
Interactive contouring of the primary head-and-neck tumour (GTVp) on PET/CT with the two-stage
Interactive Click Refinement method (2S-ICR); with a model that has a GTVn output, the involved lymph
nodes (GTVn) too, as a second segment. Select CT and PET (and optionally an ROI box), press
<b>Segment</b>, then place <b>tumour</b> (GTVp, green, Shift+P), <b>lymph node</b> (GTVn, blue,
Shift+L; two-class models only) and <b>not tumour</b> (any class, red, Shift+N) points, or a
<b>PET region</b> point (the connected region above a percentage of the local SUVmax replaces
the GTVp, yellow, Shift+T, or with a two-class model the GTVn, light blue): each point refines the
3D segments. <b>Undo</b> (Shift+U) and <b>Reset</b> step back
exactly. <b>Show uncertainty</b> overlays where the model is unsure, with a colour bar, and suggests
the next point and its class (Shift+A accepts it). Clicks are kept as markups, so a saved scene can
be reopened and replayed.
<br><b>Research use only; not for clinical decisions.</b>
"""
        self.parent.acknowledgementText = """
Implements 2S-ICR (two-stage interactive click refinement for OPC GTVp on PET/CT). The engine is
built on PyTorch and MONAI.
"""


#
# InteractiveRefineLogic
#


class InteractiveRefineLogic(ScriptedLoadableModuleLogic, RefineLogic):
    """The Slicer module's Logic: ``RefineLogic`` on Slicer's scene (see InteractiveRefineSlicerLib)."""

    transformToWorld = staticmethod(volumes.transformToWorld)
    volumeFromNode = staticmethod(volumes.volumeFromNode)

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        RefineLogic.__init__(self, scene or slicer.mrmlScene, slicer.modules.segmentations.logic())

    def getParameterNode(self):
        return RefineLogic.getParameterNode(self)

    @staticmethod
    def loadVolume(path: str, name: str | None = None):
        """Load a volume file into Slicer's scene through the Volumes logic (works without the GUI)."""
        return volumes.loadVolume(slicer.mrmlScene, path, name)


#
# InteractiveRefineWidget
#


class InteractiveRefineWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: selectors, Segment, click and PET-region placement, Undo, Reset, Cancel, status."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._params = None
        self._guiTag = None
        self._shortcuts = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/InteractiveRefine.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = InteractiveRefineLogic()
        self._connectLogic()
        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItems(list(DEVICES))
        for placeWidget in self._placeWidgets().values():
            placeWidget.setMRMLScene(slicer.mrmlScene)
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            placeWidget.buttonsVisible = False
            placeWidget.placeButton().show()
        self.ui.progressBar.hide()
        self.ui.modelPathLineEdit.settingKey = "InteractiveRefine/ModelPath"  # keeps its history
        self._connectWidgets()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _connectLogic(self):
        logic = self.logic
        logic.logCallback = self.onLogicLog
        logic.progressCallback = self.onLogicProgress
        logic.errorCallback = lambda message: slicer.util.errorDisplay(message)
        logic.warningCallback = self.onLogicWarning
        logic.resultCallback = lambda result: setattr(self.ui.statusLabel, "text", logic.lastStatus)
        logic.busyCallback = self.onLogicBusy
        logic.idleCallback = slicer.app.processEvents  # Segment/Replay run on a thread: Cancel works
        # Refine after the markups widget has finished handling the click, not inside its event.
        logic.scheduler = lambda function: qt.QTimer.singleShot(0, function)
        self._confirmTimer = qt.QTimer()
        self._confirmTimer.setInterval(POLL_INTERVAL_MS)
        self._confirmTimer.connect("timeout()", self.onConfirmTimer)
        logic.confirmStartedCallback = self._confirmTimer.start
        # The warm-up and the network compilation run on threads; this timer's short waits let them
        # advance (Slicer's idle event loop holds the GIL) and says when the compiled network is ready.
        self._backgroundTimer = qt.QTimer()
        self._backgroundTimer.setInterval(POLL_INTERVAL_MS)
        self._backgroundTimer.connect("timeout()", self.onBackgroundTimer)

    def _connectWidgets(self):
        ui = self.ui
        ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        ui.regionRemovalCheckBox.connect("toggled(bool)", lambda on: self.logic.setRegionRemoval(on))
        ui.thresholdStartCheckBox.connect("toggled(bool)", lambda on: self.logic.setThresholdStart(on))
        self._thresholdStartTip = ui.thresholdStartCheckBox.toolTip  # the .ui's, for a model that asks
        ui.exactFollowUpCheckBox.connect("toggled(bool)", self.onExactFollowUpToggled)
        ui.roiSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.onRoiAdded)
        for button, handler in (
            (ui.segmentButton, self.onSegmentButton), (ui.refineButton, self.onRefineButton),
            (ui.undoButton, self.onUndoButton), (ui.resetButton, self.onResetButton),
            (ui.replayButton, self.onReplayButton), (ui.cancelButton, self.onCancelButton),
            (ui.showUncertaintyButton, self.onShowUncertaintyButton),
            (ui.acceptSuggestionButton, self.onAcceptSuggestionButton),
        ):
            button.connect("clicked(bool)", handler)

    def _placeWidgets(self) -> dict:
        return {"positive": self.ui.positivePlaceWidget, "negative": self.ui.negativePlaceWidget,
                "threshold": self.ui.thresholdPlaceWidget, "nodal": self.ui.nodalPlaceWidget,
                "nodalThreshold": self.ui.nodalThresholdPlaceWidget}

    def cleanup(self):
        self._confirmTimer.stop()
        self._backgroundTimer.stop()
        self.removeObservers()
        self._removeShortcuts()
        if self.logic:
            self.logic.clear()

    def enter(self):
        self.logic.warmUp()  # torch, MONAI and the model load in the background (returns at once)
        self.initializeParameterNode()
        self._installShortcuts()

    def exit(self):
        self._removeShortcuts()
        setPlaceMode(self._placeWidgets(), None)  # ours only: another module's placement stays

    def onSceneStartClose(self, caller, event):
        setPlaceMode(self._placeWidgets(), None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---------------------------------------------------------- parameter node
    def initializeParameterNode(self):
        params = self.logic.params
        if params.ct is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                params.ct = first
        self.logic.getClickNodes()
        self.logic.getThresholdNode()
        self.setParameterNode(params)

    def setParameterNode(self, params):
        if self._params is not None:
            if self._guiTag is not None:
                self._params.disconnectGui(self._guiTag)
            self.removeObserver(self._params.parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._params, self._guiTag = params, None
        if params is not None:
            self._guiTag = params.connectGui(self.ui)  # widgets carry SlicerParameterName in the .ui
            self.addObserver(params.parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self.updateGUI()

    def updateGUI(self, caller=None, event=None):
        params = self._params
        if params is None:
            return
        if self.ui.modelPathLineEdit.currentPath.strip() != params.modelPath:  # else the cursor stays
            self.ui.modelPathLineEdit.currentPath = params.modelPath
        for kind, widget in self._placeWidgets().items():
            widget.setCurrentNode(self.logic.clickLists.node(kind, create=False))
        busy = self.logic.busy
        hasSession = self.logic.session is not None and not busy
        self.ui.segmentButton.enabled = params.ct is not None and not busy
        self.ui.segmentButton.toolTip = "Run the initial model" if params.ct else "Select a CT volume first"
        for widget in (*self._placeWidgets().values(), self.ui.undoButton, self.ui.resetButton,
                       self.ui.showUncertaintyButton):
            widget.enabled = hasSession
        nodal = hasSession and self.logic.hasNodalClass  # only a model with a gtvn output
        self.ui.nodalPlaceWidget.enabled = self.ui.nodalLabel.enabled = nodal
        self.ui.nodalThresholdPlaceWidget.enabled = self.ui.nodalThresholdLabel.enabled = nodal
        segments = ", ".join(self.logic.classes) or "nothing yet: press Segment"
        self.ui.nodalPlaceWidget.toolTip = (
            "Place blue points on missed lymph nodes: positive GTVn clicks (Shift+L)" if nodal else
            "Lymph-node (GTVn) points need a model with a GTVn output; this one segments " + segments)
        self.ui.nodalThresholdPlaceWidget.toolTip = (
            "Place a light-blue point in a hot lymph node: its PET region (the percentage of the local "
            "SUVmax) replaces the GTVn segment; the GTVp stays" if nodal else
            "Lymph-node (GTVn) PET regions need a model with a GTVn output; this one segments " + segments)
        available = self.logic.thresholdStartAvailable  # the model's card asks for a threshold start
        self.ui.thresholdStartCheckBox.enabled = available
        self.ui.thresholdStartCheckBox.toolTip = self._thresholdStartTip if available else (
            "This model refines your first \"tumour\" point (its card asks for no threshold start); place a "
            "PET region point (Shift+T) to start from the 40 % SUVmax region")
        self.ui.acceptSuggestionButton.enabled = hasSession and self.logic.suggestion() is not None
        self.ui.refineButton.enabled = hasSession and not params.autoRefine
        self.ui.replayButton.enabled = params.segmentation is not None and not busy
        self.ui.cancelButton.enabled = busy or self.logic.confirmRunning
        if self.logic.backgroundRunning and not self._backgroundTimer.isActive():
            self._backgroundTimer.start()

    def onModelPathChanged(self, path):
        path = path.strip()
        if self._params is not None and self._params.modelPath != path:
            self._params.modelPath = path

    def onExactFollowUpToggled(self, checked):
        with slicer.util.tryWithErrorDisplay("Computing the exact mask failed.", waitCursor=True):
            self.logic.setExactFollowUp(checked)

    def onRoiAdded(self, roiNode):
        """A new ROI from the selector: place it in a view at once."""
        slicer.modules.markups.logic().SetActiveList(roiNode)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(0)
        interaction.SetCurrentInteractionMode(interaction.Place)

    def onConfirmTimer(self):
        """Wait a little for the background exact mask (this releases the GIL), write it when done."""
        try:
            self.logic.pollExactMask(POLL_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - a timer must not die silently
            logger.exception("writing the exact mask failed")
            slicer.util.errorDisplay(f"Writing the exact mask failed: {exc}")
        if not self.logic.confirmRunning:
            self._confirmTimer.stop()
            self.updateGUI()

    def onBackgroundTimer(self):
        """Let the warm-up or the compilation advance a little; stop when neither runs."""
        try:
            running = self.logic.pollBackground(POLL_WAIT_S)
        except Exception:  # noqa: BLE001 - a timer must not die silently
            logger.exception("polling the background work failed")
            running = False
        if not running:
            self._backgroundTimer.stop()

    # ------------------------------------------------------------------ actions
    def onSegmentButton(self):
        if not self.ensureDependencies():
            return
        params, convert = self._params, False
        segmentation = params.segmentation
        if segmentation is not None and segmentation.GetSegmentation().GetNumberOfSegments():
            source = segmentation.GetSegmentation().GetSourceRepresentationName()
            if source != "Binary labelmap":
                convert = slicer.util.confirmOkCancelDisplay(
                    f"'{segmentation.GetName()}' holds {source} segments (e.g. a DICOM RTSTRUCT). Convert "
                    "them to a binary labelmap (the contours are kept as a derived representation)?")
                if not convert:
                    return
        self.ui.modelPathLineEdit.addCurrentPathToHistory()
        self.ui.progressBar.show()
        try:
            with slicer.util.tryWithErrorDisplay("Segmentation failed.", waitCursor=True):
                self.logic.segment(params.ct, params.pet, params.segmentation, params.roi,
                                   modelPath=params.modelPath, device=params.device,
                                   convertSegmentation=convert)
                slicer.util.setSliceViewerLayers(background=params.ct, foreground=params.pet,
                                                 foregroundOpacity=0.3)
        finally:
            self.ui.progressBar.hide()
            self.updateGUI()

    def _run(self, title, function):
        with slicer.util.tryWithErrorDisplay(title, waitCursor=True):
            function()
        self.updateGUI()

    def onRefineButton(self):
        self._run("Refinement failed.", self.logic.refinePendingClicks)

    def onUndoButton(self):
        self._run("Undo failed.", self.logic.undo)

    def onResetButton(self):
        self._run("Reset failed.", self.logic.reset)

    def onCancelButton(self):
        self.logic.cancel()
        self.updateGUI()

    def onReplayButton(self):
        if self.ensureDependencies():
            self._run("Replay failed.", self.logic.replayClicks)

    def onShowUncertaintyButton(self):
        """The uncertainty map as the foreground over the CT, the suggested point, and the seconds."""
        with slicer.util.tryWithErrorDisplay("Computing the uncertainty failed.", waitCursor=True):
            node = self.logic.showUncertainty()
            slicer.util.setSliceViewerLayers(background=self.logic.sessionNodes.ct, foreground=node,
                                             foregroundOpacity=UNCERTAINTY_OPACITY)
            self.ui.statusLabel.text = self.logic.uncertaintyStatus
        self.updateGUI()

    def onAcceptSuggestionButton(self):
        self._run("Accepting the suggested point failed.", self.logic.acceptSuggestion)

    def onAcceptShortcut(self):
        if self.logic.session is None or self.logic.busy or self.logic.suggestion() is None:
            self.ui.statusLabel.text = "No suggested point: press Show uncertainty first"
            return
        self.onAcceptSuggestionButton()

    def onNodalShortcut(self):
        if self.logic.session is None or not self.logic.hasNodalClass:  # no modal error for a key press
            self.ui.statusLabel.text = ("Lymph-node (GTVn) points need a model with a GTVn output"
                                        if self.logic.session is not None else "Press Segment first")
            return
        setPlaceMode(self._placeWidgets(), "nodal")

    def onUndoShortcut(self):
        if self.logic.session is None or self.logic.busy:  # no modal error for a key press
            self.ui.statusLabel.text = "Nothing to undo: press Segment first"
            return
        self.onUndoButton()

    def _installShortcuts(self):
        self._removeShortcuts()
        for key, action in SHORTCUTS:
            callback = {"undo": self.onUndoShortcut, "accept": self.onAcceptShortcut,
                        "nodal": self.onNodalShortcut}.get(action) or (
                lambda kind=action: setPlaceMode(self._placeWidgets(), kind))
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", callback)
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self):
        for shortcut in self._shortcuts:
            shortcut.setParent(None)
            shortcut.deleteLater()
        self._shortcuts = []

    # ----------------------------------------------------------- logic callbacks
    def onLogicLog(self, message):
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # the Logic refuses nested actions while it is busy

    def onLogicProgress(self, message, percent):
        self.ui.progressBar.value = percent
        self.ui.progressBar.format = f"{message} (%p%)"
        slicer.app.processEvents()

    def onLogicWarning(self, message):
        """Engine warnings (e.g. low PET coverage) in the status line, not only in the log."""
        self.ui.statusLabel.text = f"Warning: {message}"
        self.ui.statusLabel.toolTip = message

    def onLogicBusy(self, busy):
        self.updateGUI()

    # --------------------------------------------------------------- dependencies
    def ensureDependencies(self) -> bool:
        """Compare the installed packages with Resources/requirements.txt; offer to install or
        upgrade what is missing or outside its range (after confirmation)."""
        found = dependencies.problems()
        if not found:
            return True
        if slicer.app.testingEnabled():
            slicer.util.errorDisplay("Packages not as required (not installed in testing mode): "
                                     + ", ".join(p.describe() for p in found))
            return False
        try:
            dependencies.checkBeforeInstall(found)
            plan = dependencies.installPlan(found)
            if not slicer.util.confirmOkCancelDisplay(plan, "Install dependencies"):
                return False
            with slicer.util.WaitCursor():
                dependencies.install(found, slicer.util.pip_install)
        except dependencies.DependencyError as exc:
            restart = "\nRestart Slicer, then try again." if exc.restartRequired else ""
            slicer.util.errorDisplay(f"{exc}{restart}")
            return False
        return True


#
# InteractiveRefineTest
#


class InteractiveRefineTest(ScriptedLoadableModuleTest):
    """Self-test on the engine's phantom PET/CT (``InteractiveRefineLib.phantom.make_phantom``):
    the Logic end to end. Model: ``$INTERACTIVE_REFINE_TEST_MODEL`` (a package
    folder, or "tiny"), else the default model when installed, else a tiny random network made
    in a temporary folder (pipeline check only: its masks carry no meaning). A second, short step
    runs a tiny random two-class (GTVp + GTVn) network made in a temporary folder.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)
        self._tempDirs = []

    def tearDown(self):
        import shutil

        for path in getattr(self, "_tempDirs", []):
            shutil.rmtree(path, ignore_errors=True)

    def runTest(self):
        self.setUp()
        try:
            self.test_InteractiveRefine1()
            slicer.mrmlScene.Clear(0)
            self.test_InteractiveRefine2()
        finally:
            self.tearDown()

    # ------------------------------------------------------------------ helpers
    def _tempDir(self) -> str:
        import tempfile

        path = tempfile.mkdtemp(prefix="InteractiveRefineTest_")
        self._tempDirs.append(path)
        return path

    def _modelPath(self) -> str:
        from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR, create_random_model_package
        from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI
        from InteractiveRefineLib.runtime import apply_process_settings

        apply_process_settings()  # as the Logic does, but before the tiny network below uses torch
        choice = os.environ.get("INTERACTIVE_REFINE_TEST_MODEL", "")
        if choice and choice != "tiny":
            return choice
        if not choice and os.path.isfile(os.path.join(str(DEFAULT_MODEL_DIR), "model.json")):
            return ""
        folder = self._tempDir()
        return str(create_random_model_package(folder, network=TINY_NETWORK, roi_size_vox=TINY_ROI, seed=0))

    def _twoClassModelPath(self) -> str:
        """A tiny random GTVp + GTVn package in a temporary folder (pipeline check only)."""
        from InteractiveRefineLib.model_package import create_random_model_package
        from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI
        from InteractiveRefineLib.runtime import apply_process_settings

        apply_process_settings()
        return str(create_random_model_package(self._tempDir(), network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                               seed=0, outputs=2))

    def _loadInputs(self):
        """(CT node, PET node, tumour label array on the CT grid) of the engine's phantom: a case
        every user has, written by the module itself."""
        self.delayDisplay("Generating the phantom PET/CT")
        return self._phantom()

    @staticmethod
    def _phantom():
        """The engine's small phantom as CT and PET nodes (PET on a coarser grid), and its
        tumour label array on the CT grid."""
        from InteractiveRefineLib.phantom import make_phantom

        ct, pet, label = make_phantom(0)
        ctNode = slicer.util.addVolumeFromArray(ct.array, ijkToRAS=ct.ijk_to_ras, name="Phantom CT")
        petNode = slicer.util.addVolumeFromArray(pet.array, ijkToRAS=pet.ijk_to_ras, name="Phantom PET")
        return ctNode, petNode, label.array > 0

    @staticmethod
    def worldToCtIndex(ctNode, ras) -> np.ndarray:
        """CT voxel indices ``[k, j, i]`` (rounded) of world RAS points ``(..., 3)``."""
        return volumes.worldToIndex(ctNode, ras)

    @staticmethod
    def pickClicks(logic, ctNode, truth):
        """World RAS of a tumour and of a background point, 6+ voxels inside the ROI.

        Like the simulated user, each prefers a voxel the current segment gets wrong (missed
        tumour, false positive), the one nearest the ROI centre; else any voxel of its class.
        """
        grid = logic.session.grid
        margin = 6
        axes = [np.arange(margin, size - margin, 2) for size in grid.shape]
        kji = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        ras = grid.index_to_ras(kji[:, ::-1].astype(float))
        ctIndex = InteractiveRefineTest.worldToCtIndex(ctNode, ras)
        valid = np.all((ctIndex >= 0) & (ctIndex < np.array(truth.shape)), axis=1)
        labels = np.zeros(len(ras), bool)
        labels[valid] = truth[tuple(ctIndex[valid].T)]
        predicted = logic.session.mask_on_working_grid().astype(bool)[tuple(kji.T)]
        distance = np.linalg.norm(ras - grid.center_ras(), axis=1)
        picks = []
        for positive in (True, False):
            candidates = np.flatnonzero(valid & (labels == positive) & (predicted != positive))
            if not candidates.size:
                candidates = np.flatnonzero(valid & (labels == positive))
            picks.append(ras[candidates[np.argmin(distance[candidates])]] if candidates.size else None)
        return picks

    @staticmethod
    def backgroundRas(logic):
        """World RAS of the working-grid voxel nearest the ROI centre, 6+ voxels inside it, that
        no class holds (a missed lymph node, as far as the model knows)."""
        grid = logic.session.grid
        labels = logic.session.mask_on_working_grid()
        margin = 6
        inner = np.zeros(labels.shape, bool)
        inner[margin:-margin, margin:-margin, margin:-margin] = True
        kji = np.argwhere(inner & (labels == 0))
        if not len(kji):
            return None
        ras = grid.index_to_ras(kji[:, ::-1].astype(float))
        return ras[np.argmin(np.linalg.norm(ras - grid.center_ras(), axis=1))]

    # -------------------------------------------------------------------- test
    @staticmethod
    def _roiOnTumourBorder(ctNode, truth):
        """A 40 mm ROI centred on the tumour's most lateral voxel (along i), and that point (RAS)."""
        tumourIndex = np.argwhere(truth)
        edge = tumourIndex[np.argmax(tumourIndex[:, 2])]
        ijkToRas = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(ijkToRas)
        edgeRas = (slicer.util.arrayFromVTKMatrix(ijkToRas) @ np.append(edge[::-1], 1.0))[:3]
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "IR test ROI")
        roiNode.SetCenter(*edgeRas)
        roiNode.SetSize(40.0, 40.0, 40.0)
        return roiNode, edgeRas

    def _thresholdStep(self, logic, petNode, tumourRas, initial):
        """A PET-region point near ``tumourRas`` (its 40 % SUVmax region), then undo."""
        result = logic.addThreshold(tumourRas, percent=40)
        self.assertEqual(result.mode, "threshold")
        self.assertIn("40 % SUVmax region", logic.lastStatus)
        self.assertEqual(logic.getThresholdNode().GetNumberOfControlPoints(), 1)
        np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
        self.delayDisplay(logic.lastStatus)
        logic.undo()
        np.testing.assert_array_equal(logic.segmentMask(), initial)
        self.assertEqual(logic.getThresholdNode().GetNumberOfControlPoints(), 0)

    def test_InteractiveRefine1(self):
        """Segment, a positive and a negative click, undo, reset, and bad input."""
        self.delayDisplay("Starting InteractiveRefine test")
        ctNode, petNode, truth = self._loadInputs()
        modelPath = self._modelPath()
        logic = InteractiveRefineLogic()

        # Segment. An ROI centred on the tumour's border so it holds tumour and background.
        roiNode, edgeRas = self._roiOnTumourBorder(ctNode, truth)
        result = logic.segment(ctNode, petNode, None, roiNode, modelPath=modelPath, device="cpu")
        segmentationNode = logic.params.segmentation
        self.assertIsNotNone(segmentationNode)
        initial = logic.segmentMask()
        np.testing.assert_array_equal(initial, logic.session.mask_on_ct())
        self.assertEqual(result.n_clicks, 0)
        self.delayDisplay(logic.lastStatus)

        # Clicks: the segment follows the session after every defined point.
        positiveRas, negativeRas = self.pickClicks(logic, ctNode, truth)
        self.assertIsNotNone(positiveRas, "no tumour voxel inside the ROI")
        self.assertIsNotNone(negativeRas, "no background voxel inside the ROI")
        masks = [initial]
        positiveNode, negativeNode = logic.getClickNodes()
        for node, ras in ((positiveNode, positiveRas), (negativeNode, negativeRas)):
            node.AddControlPointWorld(*ras)  # as if placed in a view: the observer refines
            mask = logic.segmentMask()
            np.testing.assert_array_equal(mask, logic.session.mask_on_ct())
            index = tuple(self.worldToCtIndex(ctNode, ras))
            self.assertEqual(mask[index], logic.session.mask_on_ct()[index])
            masks.append(mask)
        self.assertEqual(len(logic.session.clicks), 2)
        self.assertEqual(len(logic.clickTimings), 2)
        self.assertTrue(all(t["total_s"] > 0 for t in logic.clickTimings))
        self.delayDisplay(logic.lastStatus)

        # Undo restores the mask after the first click, bit for bit, and removes the point.
        logic.undo()
        np.testing.assert_array_equal(logic.segmentMask(), masks[1])
        self.assertEqual(negativeNode.GetNumberOfControlPoints(), 0)
        self.assertEqual(len(logic.session.clicks), 1)

        # Reset returns to the initial mask and removes every click point.
        logic.reset()
        np.testing.assert_array_equal(logic.segmentMask(), initial)
        self.assertEqual(positiveNode.GetNumberOfControlPoints(), 0)

        # The PET region tool: the hottest tumour voxel in the ROI; undo is exact.
        self._thresholdStep(logic, petNode, positiveRas, initial)

        # Bad input: a click outside the ROI is refused, its point removed, the segment unchanged.
        farRas = np.asarray(edgeRas) + np.array([0.0, 0.0, 1000.0])
        with self.assertRaisesRegex(ValueError, "outside"):
            logic.addClick(farRas, positive=True)
        self.assertEqual(positiveNode.GetNumberOfControlPoints(), 0)
        np.testing.assert_array_equal(logic.segmentMask(), initial)
        with self.assertRaisesRegex(ValueError, "No CT volume selected"):
            logic.segment(None, petNode, segmentationNode)
        np.testing.assert_array_equal(logic.segmentMask(), initial)
        self.delayDisplay("InteractiveRefine test passed")

    def test_InteractiveRefine2(self):
        """A two-class (GTVp + GTVn) model: both segments written from the session's label map; a
        lymph-node point is a GTVn click (the GTVn guidance channel only; the GTVp one stays
        empty); undo restores both segments exactly. (The random network refines both outputs:
        what each segment looks like after the click carries no meaning.)"""
        self.delayDisplay("Two-class model (GTVp + GTVn)")
        ctNode, petNode, truth = self._phantom()
        modelPath = self._twoClassModelPath()
        logic = InteractiveRefineLogic()
        try:
            roiNode, _ = self._roiOnTumourBorder(ctNode, truth)
            logic.segment(ctNode, petNode, None, roiNode, modelPath=modelPath, device="cpu")
            self.assertEqual(logic.classes, ("gtvp", "gtvn"))
            before = {name: logic.segmentMask(name) for name in logic.classes}
            nodeRas = self.backgroundRas(logic)
            self.assertIsNotNone(nodeRas, "no background voxel inside the ROI")
            logic.getNodalClickNode().AddControlPointWorld(*nodeRas)  # as with the GTVn button
            self.assertEqual([c.label for c in logic.session.clicks], ["gtvn"])
            slices = logic.session.package.spec.stages["refine"].slices()
            guidance = logic.session.refine_input()[0].numpy()[slices["clicks_positive"]]
            self.assertFalse(guidance[0].any(), "a GTVn click reached the GTVp guidance channel")
            self.assertTrue(guidance[1].any(), "the GTVn click is missing from its guidance channel")
            labels = logic.session.mask_on_ct()
            for value, name in ((1, "gtvp"), (2, "gtvn")):
                np.testing.assert_array_equal(logic.segmentMask(name), (labels == value).astype(np.uint8))
            self.assertIn("(GTVn)", logic.lastStatus)
            self.delayDisplay(logic.lastStatus)
            logic.undo()
            for name in logic.classes:
                np.testing.assert_array_equal(logic.segmentMask(name), before[name])
        finally:
            logic.clear()
        self.delayDisplay("InteractiveRefine two-class test passed")
