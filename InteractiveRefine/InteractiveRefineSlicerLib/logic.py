"""The module's actions on MRML nodes, without Qt: segment, clicks, threshold regions, undo,
reset, replay, the background exact pass and Show uncertainty (:mod:`.uncertainty`).

A model with a ``gtvn`` output writes the GTVp and GTVn segments from its label map (:mod:`.classes`);
its lymph-node points and PET regions (:mod:`.markups`) are GTVn clicks; a one-class model refuses them.

The scene is an argument (``RefineLogic(scene)``), so the same Logic serves the Slicer Widget, the
batch, tests on slicer-core and a web front end. Bad input raises ``ValueError`` and changes
nothing. The running session keeps its own nodes (:attr:`sessionNodes`): changing the panel's CT,
PET, ROI or segmentation, or removing one of those nodes, ends the session (its click points stay).
While an action runs, another one is refused (``ValueError``) and markups events are queued.
The warm start and compiled networks: :mod:`.warmstart`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import slicer
import vtk
from slicer.util import VTKObservationMixin

from . import dependencies, markups, parameters, segments, volumes
from .classes import ClassesMixin
from .clinical import ClinicalMixin
from .exactpass import ExactPassMixin
from .observers import MarkupsObserverMixin
from .reporting import ReportingMixin
from .uncertainty import UncertaintyMixin
from .warmstart import WarmStartMixin

logger = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
MODULE_NAME = "InteractiveRefine"


@dataclass(frozen=True)
class SessionNodes:
    """The nodes a session was built on (not the panel's current choice)."""

    ct: object
    pet: object
    roi: object
    segmentation: object

    def ids(self) -> set:
        return {n.GetID() for n in (self.ct, self.pet, self.roi, self.segmentation) if n is not None}


class RefineLogic(ReportingMixin, MarkupsObserverMixin, ExactPassMixin, ClinicalMixin, UncertaintyMixin,
                  ClassesMixin, WarmStartMixin, VTKObservationMixin):
    """See the module docstring. Callbacks (all optional): ``logCallback(message)``,
    ``progressCallback(message, percent)``, ``errorCallback(message)``, ``warningCallback(message)``,
    ``resultCallback(stepResult)``, ``busyCallback(busy)``, ``scheduler(function)`` (runs refinements
    triggered by markups events later; None: at once) and ``confirmStartedCallback()``."""

    def __init__(self, scene=None, segmentationsLogic=None):
        if getattr(self, "Observations", None):  # initialised twice (the Slicer base's super().__init__)
            self.removeObservers()
        VTKObservationMixin.__init__(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.segmentationsLogic = segmentationsLogic
        self.logCallback = self.progressCallback = self.errorCallback = self.warningCallback = None
        self.resultCallback = self.busyCallback = self.scheduler = self.confirmStartedCallback = None
        #: ``idleCallback()``: called every 50 ms while Segment/Replay run (the Widget: processEvents).
        self.idleCallback = None
        self.session = self.sessionNodes = self.lastResult = None
        self.lastStatus = ""
        self.warnings = []
        #: Accept a PET covering less than half of the ROI (refused by default, as in the CLI).
        self.allowLowPetCoverage = False
        #: One entry per applied click: engine timings plus ``write_s`` and ``total_s`` (seconds).
        self.clickTimings = []
        self._worker = self._confirmJob = self._geometryKey = None
        self._busy = self._syncQueued = False
        self.addObserver(self.scene, self.scene.NodeAboutToBeRemovedEvent, self.onNodeAboutToBeRemoved)
        self.addObserver(self.scene, self.scene.StartCloseEvent,
                         lambda *args: self.clear(keepSceneObservers=True))

    # ------------------------------------------------------------ parameters
    def getParameterNode(self):
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            node.SetName(MODULE_NAME)
            node = self.scene.AddNode(node)
        return node

    @property
    def params(self):
        """The typed parameter node (upgraded from an older scene first)."""
        node = self.getParameterNode()
        if getattr(self, "_paramsNode", None) is not node:
            self._params, self._paramsNode = parameters.wrap(node), node
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParametersModified)
        return self._params

    @property
    def clickLists(self):
        params = self.params
        if getattr(self, "_clickLists", None) is None or self._clickLists.params is not params:
            self._clickLists = markups.ClickLists(self.scene, params)
        return self._clickLists

    def setAutoRefine(self, enabled: bool) -> None:
        self.params.autoRefine = bool(enabled)

    def setRegionRemoval(self, enabled: bool) -> None:
        self.params.regionRemoval = bool(enabled)
        if self.session is not None:
            self.session.region_removal = bool(enabled)

    def setThresholdStart(self, enabled: bool) -> None:
        """On: the first "tumour" point starts from its PET threshold region when the card asks."""
        self.params.thresholdStart = bool(enabled)
        if self.session is not None:
            self.session.threshold_start = bool(enabled) and self.session.card.threshold_start

    @property
    def thresholdStartAvailable(self) -> bool:
        """Whether the threshold-start setting matters: before a session, or with a model whose card
        asks for a threshold start (the default model 0.5.0 refines every point; a *PET region*
        point gives the threshold region on demand)."""
        return self.session is None or bool(self.session.card.threshold_start)

    def setExactFollowUp(self, enabled: bool) -> None:
        """On: the current preview is confirmed now; off: a running background pass is cancelled."""
        self.params.exactFollowUp = bool(enabled)
        if self.session is not None:
            self._startConfirm() if enabled else self._stopConfirm()

    def getClickNodes(self, create: bool = True) -> tuple:
        """The (tumour, not tumour) point lists; :meth:`getThresholdNode` holds threshold points."""
        lists = self.clickLists
        return lists.node("positive", create), lists.node("negative", create)

    def getThresholdNode(self, create: bool = True):
        return self.clickLists.node("threshold", create)

    def _newSession(self, nodes: SessionNodes, modelPath, device):
        """A session with its image set (validates everything; touches no node)."""
        self._awaitWarmUp()  # its imports and model load (WarmStartMixin)
        from InteractiveRefineLib.runtime import apply_process_settings

        apply_process_settings()  # before the model loads torch (not at Slicer's start)
        from InteractiveRefineLib.session import RefinementSession

        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        old = [p.describe() for p in dependencies.problems() if p.name in ("torch", "monai") and p.installed]
        if old:  # e.g. another extension's older torch: MONAI 1.5.2 would fail later, obscurely
            raise ValueError(f"InteractiveRefine needs {', '.join(old)}: upgrade from the module panel")
        ct = volumes.volumeFromNode(nodes.ct, "CT")
        pet = volumes.volumeFromNode(nodes.pet, "PET") if nodes.pet is not None else None
        self._progress("Loading the model", 5)
        package = self.getModelPackage(modelPath, device)
        session = self._setUpCompile(RefinementSession(  # compiled networks: WarmStartMixin
            package, device=device, region_removal=self.params.regionRemoval,
            threshold_start=None if self.params.thresholdStart else False))
        center = size = None
        if nodes.roi is not None:
            center = volumes.roiCenter(nodes.roi)
            size = volumes.roiSize(nodes.roi, ct.grid, package)
        self._progress("Preparing the images", 25)
        session.set_image(ct, pet, roi_center_ras=center, roi_size_vox=size,
                          allow_low_pet_coverage=self.allowLowPetCoverage)
        if nodes.roi is None:  # no ROI node: placed automatically (InteractiveRefineLib.auto_roi)
            roi = session.roi_placement
            self._log(f"ROI: {roi.description}, centre RAS {roi.as_dict()['center_ras']} ({roi.reason})")
        coverage = session.image.pet_coverage
        if coverage is not None and coverage < 1.0:  # said in the status, not only in the log file
            self._log(f"The PET covers {100 * coverage:.0f}% of the region of interest")
        return session

    # ---------------------------------------------------- session and nodes
    def _startSession(self, session, nodes: SessionNodes) -> None:
        self.session, self.sessionNodes = session, nodes
        self._geometryKey = volumes.geometryOf(nodes.ct, nodes.pet)
        self.clickTimings = []
        if "gtvn" in session.classes:  # the Widget's GTVn place buttons need the lists
            self.getNodalClickNode(), self.getNodalThresholdNode()
        self._observeClickNodes()
        self._watchSegmentEdits(nodes.segmentation)

    def endSession(self, reason: str) -> None:
        """Forget the session (its click points and segment stay in the scene)."""
        if self.session is None:
            return
        self._stopConfirm(write=False)
        self.session = self.sessionNodes = self.lastResult = None
        self._log(f"Session ended: {reason}. Press Segment (or Replay) to continue")

    def onParametersModified(self, caller=None, event=None) -> None:
        """The panel chose other inputs: a session on the old ones must not continue on them."""
        nodes, params = self.sessionNodes, self._params
        if nodes is None:
            return
        for name in ("ct", "pet", "roi", "segmentation"):
            old, new = getattr(nodes, name), getattr(params, name)
            if (old.GetID() if old else None) != (new.GetID() if new else None):
                self.endSession(f"the {name.upper() if name != 'segmentation' else name} selection changed")
                return

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAboutToBeRemoved(self, caller, event, node=None) -> None:
        if self.sessionNodes is not None and node is not None and node.GetID() in self.sessionNodes.ids():
            self.endSession(f"'{node.GetName()}' was removed")

    def _observeClickNodes(self) -> None:
        for node in self.clickLists.nodes().values():
            for event, callback in ((node.PointPositionDefinedEvent, self.onPointPositionDefined),
                                    (node.PointRemovedEvent, self.onPointRemoved),
                                    (node.PointPositionUndefinedEvent, self.onPointRemoved)):
                if not self.hasObserver(node, event, callback):
                    self.addObserver(node, event, callback)

    def _checkGeometryUnchanged(self) -> None:
        nodes = self.sessionNodes
        if not volumes.sameGeometry(volumes.geometryOf(nodes.ct, nodes.pet), self._geometryKey):
            raise ValueError("The CT or PET was moved (its transform changed) after Segment: "
                             "press Segment again")

    # -------------------------------------------------------------- actions
    def segment(self, ctNode, petNode, segmentationNode=None, roiNode=None, modelPath=None, device=None,
                convertSegmentation: bool = False):
        """Run the initial model and write the GTVp segment on the CT geometry (segmentation created
        when None; its other segments untouched). ``convertSegmentation``: a target whose source
        representation is not a binary labelmap (DICOM RTSTRUCT) is converted (ask first), else
        refused. Removes previous click points. Returns the engine's ``StepResult``; raises
        ``ValueError`` (nothing changed) on bad input."""
        with self._action("Segment"):
            params = self.params
            if ctNode is None:
                raise ValueError("No CT volume selected: choose the CT image")
            modelPath = params.modelPath if modelPath is None else modelPath
            device = device or params.device or "auto"
            if not convertSegmentation:
                segments.checkSegmentation(segmentationNode, ctNode)
            self._stopConfirm(write=False)  # the previous session's pass would compete for the CPU
            t0 = time.perf_counter()
            nodes = SessionNodes(ctNode, petNode, roiNode, None)
            session = self._newSession(nodes, modelPath, device)
            self._progress("Running the initial model", 50)
            result = self._runCancellable(session, session.initial)
            if convertSegmentation and segmentationNode is not None:
                segments.convertToLabelmap(segmentationNode)
                segments.checkSegmentation(segmentationNode, ctNode)
            # Every check passed: commit to the scene.
            segmentationNode = segments.prepareSegmentation(self.scene, segmentationNode, ctNode)
            nodes = SessionNodes(ctNode, petNode, roiNode, segmentationNode)
            self.session = None  # the parameter changes below must not end the new session
            self._storeInputs(nodes, modelPath, device)
            self._startSession(session, nodes)
            self.clickLists.clear()
            self._writeMask(full=True)
            self._progress("Done", 100)
            self._finishStep(result, "initial model", time.perf_counter() - t0)
            self._startConfirm()
        return self.lastResult

    def _storeInputs(self, nodes: SessionNodes, modelPath, device) -> None:
        params = self.params
        node = params.parameterNode if hasattr(params, "parameterNode") else self.getParameterNode()
        wasModifying = node.StartModify()
        params.ct, params.pet = nodes.ct, nodes.pet
        params.roi, params.segmentation = nodes.roi, nodes.segmentation
        params.modelPath, params.device, params.segmentId = modelPath or "", device, ""
        params.nodalSegmentId = ""
        node.EndModify(wasModifying)

    def addClick(self, ras, positive: bool, label: str | None = None):
        """Place a click point at world ``ras`` (mm) and refine, as a point placed in a view.
        ``label``: the class of a positive click ("gtvn": a lymph-node point; None or "gtvp": a
        tumour point); a negative click is "not any class". A click the engine refuses raises
        ``ValueError``; its point is removed and the segments unchanged. A class the model does not
        segment is refused before any point is placed."""
        self._requireSession()
        kind = markups.kindFor(positive, label)
        self._checkClass(label if positive else None, "point")
        return self._addPoint(kind, ras)

    def addThreshold(self, ras, percent: float | None = None, label: str | None = None):
        """Place a threshold point: the PET region >= ``percent`` % (default: the panel's, 40) of the
        local SUVmax replaces the mask of ``label``'s class (None, "gtvp": the threshold list; "gtvn":
        the lymph-node region list); refused (``ValueError``, nothing changed) without uptake."""
        self._requireSession()
        kind = markups.thresholdKindFor(label)
        self._checkClass(label, "PET region")
        if percent is not None:
            self.params.thresholdPercent = int(round(percent))
        return self._addPoint(kind, ras)

    def _addPoint(self, kind: str, ras):
        self._requireSession()
        lists = self.clickLists
        node = lists.node(kind)
        self._observeClickNodes()  # an optional list (GTVn) may be new
        with lists.editing():
            index = node.AddControlPointWorld(*[float(v) for v in ras])
        lists.recordNew(node, [index], self.params.thresholdPercent / 100.0)
        return self._sync(applyPending=True)

    def refinePendingClicks(self):
        """Apply the clicks placed while auto-refine was off (in placement order)."""
        self._requireSession()
        return self._sync(applyPending=True)

    def undo(self):
        """Remove the last placed click point and restore the previous mask exactly."""
        self._requireSession()
        desired = self.clickLists.desired(self.params.thresholdPercent / 100.0)
        if not desired:
            raise ValueError("There is no click to undo")
        self.clickLists.remove(desired[-1])
        return self._sync(applyPending=False, action="undo")

    def reset(self):
        """Remove every click point and return to the initial model's mask."""
        self._requireSession()
        with self._action("Reset"):
            t0 = time.perf_counter()
            self._stopConfirm(write=False)
            self.clickLists.clear()
            result = self.session.reset()
            self._writeMask()
            self._finishStep(result, "reset", time.perf_counter() - t0)
            self._startConfirm()
        return self.lastResult

    def replayClicks(self):
        """Rebuild the session from the parameter node (e.g. a reloaded scene) and replay the click
        points in placement order (threshold points as threshold regions)."""
        params = self.params
        nodes = SessionNodes(params.ct, params.pet, params.roi, params.segmentation)
        if nodes.ct is None or nodes.segmentation is None:
            raise ValueError("Nothing to replay: the scene has no InteractiveRefine CT and segmentation")
        with self._action("Replay"):
            self._stopConfirm(write=False)
            session = self._newSession(nodes, params.modelPath, params.device or "auto")
            result = self._runCancellable(session, session.initial)
            self._startSession(session, nodes)
            self._writeMask(full=True)
            self._finishStep(result, "initial model", result.timings.get("total_s", 0.0))
        self._sync(applyPending=True, action="replay")
        self._startConfirm()
        return self.lastResult

    def _finishStep(self, result, action: str, seconds: float):
        from .status import describe

        self.lastResult = result
        session = self.session
        reduced = session is not None and session.amp and not result.exact
        precision = f" ({session.precision})" if reduced else ""
        self.lastStatus = describe(result, action, seconds, len(self.clickLists.order()) - result.n_clicks,
                                   precision, self.params.exactFollowUp, self.params.device,
                                   **self._classStatus()) + self._compileNote(result)
        self._log(self.lastStatus)
        self._logStep(action, seconds)  # the opt-in session log (ClinicalMixin.setSessionLog)
        self._uncertaintyAfterStep()  # a suggestion of an earlier state goes (UncertaintyMixin)
        if self.resultCallback:
            self.resultCallback(result)
        return result

    def _requireSession(self) -> None:
        if self._busy:  # before any point is added or removed
            raise ValueError("InteractiveRefine is busy: wait until the current step has finished")
        if self.session is None:
            raise ValueError("No segmentation yet: press Segment first "
                             "(or replay the clicks of a loaded scene)")

    def clear(self, keepSceneObservers: bool = False) -> None:
        """Forget the session and stop observing (scene closed); the scene keeps its nodes."""
        self._stopConfirm(write=False)
        self.removeObservers() if not keepSceneObservers else self._removeNodeObservers()
        self.session = self.sessionNodes = self.lastResult = self._geometryKey = None
        self._paramsNode = None
        self.lastStatus = ""

    def _removeNodeObservers(self) -> None:
        for observed, event, method, _group, _tag, _priority in list(self.Observations):
            if observed is not self.scene:
                self.removeObserver(observed, event, method)

    def loadVolume(self, path: str, name: str | None = None):
        return volumes.loadVolume(self.scene, path, name)

    @staticmethod
    def saveSegmentation(segmentationNode, path: str) -> None:
        segments.saveSegmentation(segmentationNode, path)
