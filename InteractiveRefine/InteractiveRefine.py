"""InteractiveRefine: interactive head-and-neck tumour (GTVp) contouring on PET/CT (2S-ICR).

Four classes, one role each (DESIGN.md section 2):

- :class:`InteractiveRefine`: the module's description.
- :class:`InteractiveRefineWidget`: thin Qt panel; it wires widgets to the Logic and shows
  the Logic's errors (``slicer.util.errorDisplay``). It is the only class that touches Qt.
- :class:`InteractiveRefineLogic`: MRML only, works without the Widget (tests, batch): builds
  an engine session from volume nodes (parent transforms included), writes the result into the
  "GTVp" segment, turns markups control points into clicks, undo, reset and replay.
- :class:`InteractiveRefineTest`: the self-test; runs in Slicer and under pytest (slicer-core).

torch, MONAI and the engine (InteractiveRefineLib) are imported only inside functions, so Slicer
starts without them; the Widget offers to install them on first use. The Logic applies the
process-wide settings (``InteractiveRefineLib.runtime``) when it creates a session, not at
Slicer's start.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)

#: The segment the module writes (and only this one); its colour is fixed.
SEGMENT_NAME = "GTVp"
SEGMENT_COLOR = (0.95, 0.65, 0.10)
#: Click point colours: green = tumour (positive), red = not tumour (negative).
POSITIVE_COLOR = (0.15, 0.85, 0.25)
NEGATIVE_COLOR = (0.95, 0.20, 0.15)

#: Parameter-node reference roles and parameter names (saved with the scene).
CT_ROLE = "CT"
PET_ROLE = "PET"
ROI_ROLE = "ROI"
SEGMENTATION_ROLE = "Segmentation"
POSITIVE_ROLE = "PositiveClicks"
NEGATIVE_ROLE = "NegativeClicks"
MODEL_PATH_PARAM = "ModelPath"
DEVICE_PARAM = "Device"
AUTO_REFINE_PARAM = "AutoRefine"
REGION_REMOVAL_PARAM = "RegionRemoval"
EXACT_FOLLOW_UP_PARAM = "ExactFollowUp"
SEGMENT_ID_PARAM = "SegmentID"
#: Placement order of the clicks: "+<point id>;-<point id>;..." (+ positive node, - negative node).
CLICK_ORDER_PARAM = "ClickOrder"

DEVICES = ("auto", "cpu", "cuda")

#: Python packages the engine needs beyond what Slicer bundles (numpy, scipy, SimpleITK are
#: bundled and never reinstalled). torch comes through the PyTorch extension (PyTorchUtils).
TORCH_REQUIREMENT = ">=2.1"
PIP_REQUIREMENTS = ("monai>=1.3,<1.6", "safetensors>=0.4")


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
        self.parent.contributors = ["InteractiveRefine developers"]
        self.parent.helpText = """
Interactive contouring of the primary head-and-neck tumour (GTVp) on PET/CT with the two-stage
Interactive Click Refinement method (2S-ICR). Select CT and PET (and optionally an ROI box), press
<b>Segment</b>, then place <b>tumour</b> (green, key P) and <b>not tumour</b> (red, key N) points:
each point refines the 3D segment. <b>Undo last click</b> (key U) and <b>Reset</b> step back exactly.
Clicks are kept as markups, so a saved scene can be reopened and replayed.
<br><b>Research use only; not for clinical decisions.</b>
"""
        self.parent.acknowledgementText = """
Implements 2S-ICR (two-stage interactive click refinement for OPC GTVp on PET/CT). The engine is
built on PyTorch and MONAI.
"""


#
# InteractiveRefineLogic
#


@dataclass(frozen=True)
class _DesiredClick:
    """A click as the markups define it: sign, node, control point ID and world RAS (mm)."""

    positive: bool
    node: object
    pointId: str
    ras: tuple


class InteractiveRefineLogic(ScriptedLoadableModuleLogic, VTKObservationMixin):
    """Everything the module does, on MRML nodes only (no Qt): usable from tests and scripts.

    Lifecycle::

        logic = InteractiveRefineLogic()
        result = logic.segment(ctNode, petNode, segmentationNode)    # initial model
        logic.addClick((r, a, s), positive=True)                     # or place a point in a view
        logic.undo(); logic.reset(); logic.replayClicks()

    Clicks are control points of two markups nodes (positive, negative) that the Logic observes:
    a point refines when its position is defined (``PointPositionDefinedEvent``), never while it
    is a placement preview. Bad input raises ``ValueError`` with a message for the user and leaves
    the segmentation as it was. Errors raised while handling a markups event cannot propagate
    through VTK; they go to :attr:`errorCallback` (the Widget shows them) or the log.

    Callbacks the Widget may attach (all optional):
    ``logCallback(message)``, ``progressCallback(message, percent)``,
    ``errorCallback(message)``, ``resultCallback(stepResult)``, ``scheduler(function)``, and
    ``confirmStartedCallback()``.

    Exact follow-up (on by default, :meth:`setExactFollowUp`): where the engine shows a click
    first as a preview (bfloat16, or a window around the click, on a CPU), the exact float32
    whole-ROI mask is computed next and replaces the preview in the segment. With a
    :attr:`scheduler` (the Widget) it runs in a background thread that the next click cancels,
    and :meth:`applyConfirmed` (the Widget's timer calls it) writes it; without one (tests,
    batch) it runs at once.

    One Logic per scene should be active: Logic instances share the module's parameter node
    (``clear()`` an instance before handing the scene to another).
    """

    #: Loaded model packages, shared by every Logic instance: {(path, device, card mtime): package}.
    _packageCache: dict = {}

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self.logCallback = None
        self.progressCallback = None
        self.errorCallback = None
        self.resultCallback = None
        #: ``scheduler(function)`` runs refinements triggered by markups events later (the Widget
        #: passes a zero-delay Qt timer); None runs them at once (tests, batch).
        self.scheduler = None
        #: ``confirmStartedCallback()``: a background exact pass started; poll :meth:`applyConfirmed`.
        self.confirmStartedCallback = None
        #: The one owner of background model work (the engine's ``worker.Worker``), made with the session.
        self._worker = None
        self._confirmJob = None
        self.session = None
        self.lastResult = None
        #: One status line for the last step: clicks, GTVp volume, device, action and its seconds.
        self.lastStatus = ""
        #: One entry per applied click (append-only until the next Segment): engine timings plus
        #: ``write_s`` and ``total_s`` (point defined -> segment written), seconds.
        self.clickTimings = []
        self._geometryKey = None
        self._markupsBusy = False

    # ---------------------------------------------------------------- parameters
    def setDefaultParameters(self, parameterNode) -> None:
        defaults = {
            MODEL_PATH_PARAM: "", DEVICE_PARAM: "auto", AUTO_REFINE_PARAM: "true",
            REGION_REMOVAL_PARAM: "true", EXACT_FOLLOW_UP_PARAM: "true",
        }
        for name, value in defaults.items():
            if not parameterNode.GetParameter(name):
                parameterNode.SetParameter(name, value)

    def _parameterNode(self):
        node = self.getParameterNode()
        self.setDefaultParameters(node)
        return node

    def autoRefine(self) -> bool:
        return self._parameterNode().GetParameter(AUTO_REFINE_PARAM) != "false"

    def setAutoRefine(self, enabled: bool) -> None:
        self._parameterNode().SetParameter(AUTO_REFINE_PARAM, "true" if enabled else "false")

    def regionRemoval(self) -> bool:
        """Whether a negative point on a separate region of the mask removes that whole region
        (the engine's ``click_regions``); applies from the next click on."""
        return self._parameterNode().GetParameter(REGION_REMOVAL_PARAM) != "false"

    def setRegionRemoval(self, enabled: bool) -> None:
        self._parameterNode().SetParameter(REGION_REMOVAL_PARAM, "true" if enabled else "false")
        if self.session is not None:
            self.session.region_removal = bool(enabled)

    def exactFollowUp(self) -> bool:
        """Whether a preview mask is followed by the exact one (see the class docstring)."""
        return self._parameterNode().GetParameter(EXACT_FOLLOW_UP_PARAM) != "false"

    def setExactFollowUp(self, enabled: bool) -> None:
        """Turn the exact follow-up on (the current preview is confirmed now) or off (a running
        background pass is cancelled; the preview stays)."""
        self._parameterNode().SetParameter(EXACT_FOLLOW_UP_PARAM, "true" if enabled else "false")
        if self.session is None:
            return
        if enabled:
            self._startConfirm()
        else:
            self._stopConfirm()

    def _stopConfirm(self) -> None:
        """Cancel a background exact pass (the preview stays); one that finished first is
        written, so that the segment always shows the session's current mask."""
        if self._worker is not None:
            self._worker.cancel()
        self.applyConfirmed()
        self._confirmJob = None

    def _startConfirm(self) -> None:
        """After a step that left a preview: the exact mask, in the background with a scheduler
        (the Widget), else at once."""
        if self.session is None or not self.session.needs_confirm or not self.exactFollowUp():
            return
        if self.confirmRunning:  # already on its way
            return
        if self.scheduler is None:
            self._showExact(self.session.confirm())
            return
        if self._worker is None:
            from InteractiveRefineLib.worker import Worker

            self._worker = Worker()
        self._confirmJob = self._worker.background(self.session.confirm)
        self._log("Computing the exact mask in the background (the next click cancels it)")
        if self.confirmStartedCallback:
            self.confirmStartedCallback()

    @property
    def confirmRunning(self) -> bool:
        """True while a background exact pass runs."""
        return self._confirmJob is not None and self._confirmJob.running

    def waitForExactMask(self, timeoutSeconds=None) -> None:
        """Wait for a running background exact pass (scripts, tests); waiting releases the GIL."""
        job = self._confirmJob
        if job is not None:
            job.join(timeoutSeconds)

    def applyConfirmed(self) -> bool:
        """Main thread: once the background exact pass has finished, write its mask into the
        segment (True); False while it runs or when there is nothing to write."""
        job = self._confirmJob
        if job is None or job.running:
            return False
        self._confirmJob = None
        if self.session is None or self.session.needs_confirm:  # cancelled, or it failed (logged)
            return False
        self._showExact(self.session.confirm())  # already exact: the current result at once
        return True

    def _showExact(self, result) -> None:
        """Write the session's (exact) mask and report the step with the seconds it took."""
        seconds = result.timings.get("confirm_total_s", 0.0)
        self._finishStep(result, "exact mask", seconds + self._writeMask())

    def _log(self, message: str) -> None:
        logger.info("%s", message)
        if self.logCallback:
            self.logCallback(message)

    def _progress(self, message: str, percent: int) -> None:
        if self.progressCallback:
            self.progressCallback(message, percent)

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def transformToWorld(node) -> np.ndarray:
        """4x4 matrix from the node's local RAS to world RAS (identity without a parent transform)."""
        parent = node.GetParentTransformNode()
        if parent is None:
            return np.eye(4)
        if not parent.IsTransformToWorldLinear():
            raise ValueError(
                f"'{node.GetName()}' is under a non-linear transform ('{parent.GetName()}'): harden "
                "the transform (Transforms module) before segmenting"
            )
        matrix = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    def volumeFromNode(self, volumeNode, role: str = "CT"):
        """The engine's ``Volume`` of a scalar volume node, with its IJK-to-world-RAS matrix."""
        from InteractiveRefineLib.geometry import Volume

        if volumeNode is None:
            raise ValueError(f"No {role} volume selected: choose the {role} image")
        imageData = volumeNode.GetImageData()
        if imageData is None or 0 in imageData.GetDimensions():
            raise ValueError(f"The {role} volume '{volumeNode.GetName()}' has no image data")
        if imageData.GetNumberOfScalarComponents() != 1:
            raise ValueError(
                f"The {role} volume '{volumeNode.GetName()}' has "
                f"{imageData.GetNumberOfScalarComponents()} components; a scalar volume is needed"
            )
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        matrix = self.transformToWorld(volumeNode) @ slicer.util.arrayFromVTKMatrix(ijkToRas)
        return Volume.from_array(slicer.util.arrayFromVolume(volumeNode), matrix)

    @staticmethod
    def _roiSize(roiNode, ctGrid, package) -> tuple:
        """Working-grid size ``(k, j, i)`` in voxels covering the ROI box along the CT axes.

        At least the model's ROI and a multiple of the network's stride product (the engine's
        requirements for sliding-window inference: ``ModelCard.roi_size_for``).
        """
        half = np.asarray(roiNode.GetSize(), dtype=float) / 2.0
        objectCorners = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
        objectCorners[:, :3] *= half
        objectToWorld = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix())
        corners = (objectCorners @ objectToWorld.T)[:, :3]  # world RAS, parent transforms included
        extentIjk = np.ptp(corners @ ctGrid.direction, axis=0)  # mm along the CT's i, j, k axes
        voxelsIjk = np.ceil(extentIjk / np.asarray(package.spacing_mm))
        return package.spec.roi_size_for(voxelsIjk[::-1])

    # ------------------------------------------------------------------- model
    def getModelPackage(self, modelPath: str | None = None, device: str = "auto"):
        """The verified model package (empty path = the shipped default), loaded once per (path, device)."""
        from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR, load_model_package

        path = os.path.abspath(modelPath) if modelPath else str(DEFAULT_MODEL_DIR)
        card = os.path.join(path, "model.json")
        stamp = os.path.getmtime(card) if os.path.isfile(card) else None
        key = (path, device, stamp)
        if key not in self._packageCache:
            self._log(f"Loading model from {path}")
            self._packageCache[key] = load_model_package(path if modelPath else None)
        return self._packageCache[key]

    def _newSession(self, ctNode, petNode, roiNode, modelPath, device):
        """A session with its image set (validates everything; touches no node)."""
        from InteractiveRefineLib.runtime import apply_process_settings

        apply_process_settings()  # before the model loads torch; warns when torch came earlier
        from InteractiveRefineLib.session import RefinementSession

        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        ct = self.volumeFromNode(ctNode, "CT")
        pet = self.volumeFromNode(petNode, "PET") if petNode is not None else None
        self._progress("Loading the model", 5)
        package = self.getModelPackage(modelPath, device)
        session = RefinementSession(package, device=device, region_removal=self.regionRemoval())
        center = size = None
        if roiNode is not None:
            if roiNode.GetNumberOfDefinedControlPoints() < 1:
                raise ValueError(
                    f"The ROI '{roiNode.GetName()}' is not placed yet: place it or clear the ROI selection"
                )
            centerWorld = [0.0, 0.0, 0.0]
            roiNode.GetCenterWorld(centerWorld)
            center = np.array(centerWorld)
            size = self._roiSize(roiNode, ct.grid, package)
        self._progress("Preparing the images", 25)
        session.set_image(ct, pet, roi_center_ras=center, roi_size_vox=size)
        return session

    def _geometryOf(self, ctNode, petNode) -> tuple:
        ctMatrix = self.transformToWorld(ctNode)
        petMatrix = self.transformToWorld(petNode) if petNode is not None else None
        return ctMatrix, petMatrix

    def _checkGeometryUnchanged(self) -> None:
        """Clicks are only valid on the geometry the session was built on."""
        pn = self._parameterNode()
        ct, pet = self._geometryOf(pn.GetNodeReference(CT_ROLE), pn.GetNodeReference(PET_ROLE))
        ctOld, petOld = self._geometryKey
        moved = not np.allclose(ct, ctOld, atol=1e-6) or (
            (pet is None) != (petOld is None) or (pet is not None and not np.allclose(pet, petOld, atol=1e-6))
        )
        if moved:
            raise ValueError(
                "The CT or PET was moved (its transform changed) after Segment: press Segment again"
            )

    # ------------------------------------------------------------ segmentation
    def _segmentId(self, segmentationNode, create: bool = True) -> str | None:
        segmentation = segmentationNode.GetSegmentation()
        stored = self._parameterNode().GetParameter(SEGMENT_ID_PARAM)
        if stored and segmentation.GetSegment(stored) is not None:
            return stored
        segmentId = segmentation.GetSegmentIdBySegmentName(SEGMENT_NAME)
        if not segmentId and create:
            segmentId = segmentation.AddEmptySegment("", SEGMENT_NAME, SEGMENT_COLOR)
        if segmentId:
            self._parameterNode().SetParameter(SEGMENT_ID_PARAM, segmentId)
        return segmentId or None

    @staticmethod
    def _checkSegmentationTransform(segmentationNode, ctNode) -> None:
        """The result moves with the CT only if the segmentation shares the CT's parent transform."""
        if segmentationNode is None:
            return
        segParent = segmentationNode.GetTransformNodeID()
        if segParent == ctNode.GetTransformNodeID():
            return
        segmentation = segmentationNode.GetSegmentation()
        others = [
            segmentation.GetNthSegmentID(i)
            for i in range(segmentation.GetNumberOfSegments())
            if segmentation.GetNthSegment(i).GetName() != SEGMENT_NAME
        ]
        if others:
            raise ValueError(
                f"The segmentation '{segmentationNode.GetName()}' holds other segments and is under a "
                "different transform than the CT: choose another segmentation or move it under the "
                "CT's transform"
            )

    def _prepareSegmentation(self, segmentationNode, ctNode):
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{ctNode.GetName()} GTVp")
            )
        if segmentationNode.GetDisplayNode() is None:
            segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetAndObserveTransformNodeID(ctNode.GetTransformNodeID())
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(ctNode)
        return segmentationNode

    def _writeMask(self, full: bool = False) -> float:
        """Write the session's mask into the GTVp segment; return the seconds it took.

        ``full`` rewrites the whole CT grid (clears anything outside the ROI); otherwise only the
        CT box under the ROI is replaced, which is all a click can change.
        """
        t0 = time.perf_counter()
        pn = self._parameterNode()
        segmentationNode = pn.GetNodeReference(SEGMENTATION_ROLE)
        ctNode = pn.GetNodeReference(CT_ROLE)
        segmentId = self._segmentId(segmentationNode)
        if full:
            slicer.util.updateSegmentBinaryLabelmapFromArray(
                self.session.mask_on_ct(), segmentationNode, segmentId, ctNode
            )
        else:
            self._writeBox(segmentationNode, segmentId, ctNode)
        return time.perf_counter() - t0

    def _writeBox(self, segmentationNode, segmentId, ctNode) -> None:
        from vtk.util import numpy_support

        box = self.session.ct_box
        mask = np.ascontiguousarray(self.session.mask_in_box(), dtype=np.uint8)
        extent = [box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1]
        image = slicer.vtkOrientedImageData()
        image.SetExtent(extent)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.ravel()
        ijkToRas = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(ijkToRas)  # the segmentation shares the CT's parent transform
        image.SetImageToWorldMatrix(ijkToRas)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, segmentationNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE, extent
        )
        if not ok:
            raise RuntimeError(f"writing segment '{segmentId}' of '{segmentationNode.GetName()}' failed")

    def segmentMask(self) -> np.ndarray:
        """The GTVp segment read back from the segmentation, uint8 ``[k, j, i]`` on the CT grid."""
        pn = self._parameterNode()
        segmentationNode = pn.GetNodeReference(SEGMENTATION_ROLE)
        if segmentationNode is None:
            raise ValueError("No segmentation yet: press Segment first")
        segmentId = self._segmentId(segmentationNode, create=False)
        return slicer.util.arrayFromSegmentBinaryLabelmap(
            segmentationNode, segmentId, pn.GetNodeReference(CT_ROLE)
        )

    # ------------------------------------------------------------------ markups
    def getClickNodes(self, create: bool = True) -> tuple:
        """The (positive, negative) markups point lists, created (green, red) when missing."""
        pn = self._parameterNode()
        nodes = []
        for role, name, color in (
            (POSITIVE_ROLE, "IR tumour", POSITIVE_COLOR),
            (NEGATIVE_ROLE, "IR not tumour", NEGATIVE_COLOR),
        ):
            node = pn.GetNodeReference(role)
            if node is None and create:
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
                node.CreateDefaultDisplayNodes()
                display = node.GetDisplayNode()
                display.SetSelectedColor(color)
                display.SetColor(color)
                display.SetActiveColor(color)
                display.SetGlyphScale(2.0)
                display.SetTextScale(2.5)
                node.SetMarkupLabelFormat("%d")
                pn.SetNodeReferenceID(role, node.GetID())
            nodes.append(node)
        return tuple(nodes)

    def setClickNodes(self, positiveNode, negativeNode) -> None:
        """Use existing point lists as the positive and negative clicks (and observe them)."""
        pn = self._parameterNode()
        pn.SetNodeReferenceID(POSITIVE_ROLE, positiveNode.GetID() if positiveNode else None)
        pn.SetNodeReferenceID(NEGATIVE_ROLE, negativeNode.GetID() if negativeNode else None)
        self._observeClickNodes()

    def _observeClickNodes(self) -> None:
        self.removeObservers()
        for node in self.getClickNodes():
            self.addObserver(node, node.PointPositionDefinedEvent, self.onPointPositionDefined)
            self.addObserver(node, node.PointRemovedEvent, self.onPointRemoved)
            self.addObserver(node, node.PointPositionUndefinedEvent, self.onPointRemoved)

    @contextmanager
    def _editingMarkups(self):
        """Changes the Logic makes to the markups must not trigger the Logic's own observers."""
        previous, self._markupsBusy = self._markupsBusy, True
        try:
            yield
        finally:
            self._markupsBusy = previous

    def _clickOrder(self) -> list:
        text = self._parameterNode().GetParameter(CLICK_ORDER_PARAM)
        return [(item[0] == "+", item[1:]) for item in text.split(";") if item]

    def _setClickOrder(self, order) -> None:
        text = ";".join(("+" if positive else "-") + pointId for positive, pointId in order)
        self._parameterNode().SetParameter(CLICK_ORDER_PARAM, text)

    def _recordPoint(self, node, index: int, positive: bool, order: list) -> None:
        """Append a newly defined point to the click order; label it with its number and lock it."""
        entry = (positive, node.GetNthControlPointID(index))
        if entry in order:
            return
        order.append(entry)
        with self._editingMarkups():
            node.SetNthControlPointLabel(index, f"{'+' if positive else '-'}{len(order)}")
            node.SetNthControlPointLocked(index, True)  # moving a click would silently re-mean it

    def desiredClicks(self) -> list:
        """Clicks the markups define, in placement order (pruning points that no longer exist).

        Defined points missing from the stored order (placed while the Logic was not observing)
        are appended, positive list first.
        """
        positiveNode, negativeNode = self.getClickNodes()
        order = [
            (positive, pointId)
            for positive, pointId in self._clickOrder()
            if self._definedIndex(positiveNode if positive else negativeNode, pointId) >= 0
        ]
        known = set(order)
        for positive, node in ((True, positiveNode), (False, negativeNode)):
            for index in range(node.GetNumberOfControlPoints()):
                entry = (positive, node.GetNthControlPointID(index))
                if (
                    entry not in known
                    and node.GetNthControlPointPositionStatus(index) == node.PositionDefined
                ):
                    self._recordPoint(node, index, positive, order)
                    known.add(entry)
        self._setClickOrder(order)
        clicks = []
        for positive, pointId in order:
            node = positiveNode if positive else negativeNode
            ras = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(node.GetNthControlPointIndexByID(pointId), ras)
            clicks.append(_DesiredClick(positive, node, pointId, tuple(float(v) for v in ras)))
        return clicks

    @staticmethod
    def _definedIndex(node, pointId: str) -> int:
        index = node.GetNthControlPointIndexByID(pointId)
        if index < 0 or node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            return -1
        return index

    def _removePoint(self, node, pointId: str) -> None:
        index = node.GetNthControlPointIndexByID(pointId)
        if index >= 0:
            with self._editingMarkups():
                node.RemoveNthControlPoint(index)
        entry = (self._isPositiveNode(node), pointId)
        self._setClickOrder([e for e in self._clickOrder() if e != entry])

    def _isPositiveNode(self, node) -> bool:
        positiveNode = self.getClickNodes()[0]
        return node is not None and node.GetID() == positiveNode.GetID()

    def _clearClickPoints(self) -> None:
        with self._editingMarkups():
            for node in self.getClickNodes():
                node.RemoveAllControlPoints()
        self._setClickOrder([])

    # ------------------------------------------------------------ observers
    @vtk.calldata_type(vtk.VTK_INT)
    def onPointPositionDefined(self, caller, event, index=None):
        """A point's position became defined (placed in a view, or set by a script).

        Preview points (the place widget's point under the mouse) are not defined and are ignored.
        ``index`` is None when events were batched (StartModify/EndModify): then every point is
        checked.
        """
        if self._markupsBusy:
            return
        positive = self._isPositiveNode(caller)
        order = self._clickOrder()
        known = set(order)
        indices = range(caller.GetNumberOfControlPoints()) if index is None else [index]
        added = False
        for i in indices:
            if i < 0 or i >= caller.GetNumberOfControlPoints():
                continue
            if caller.GetNthControlPointPositionStatus(i) != caller.PositionDefined:
                continue
            if (positive, caller.GetNthControlPointID(i)) in known:
                continue
            self._recordPoint(caller, i, positive, order)
            added = True
        if not added:
            return
        self._setClickOrder(order)
        if self.session is None:
            self._log("Click recorded; press Segment to start refining")
            return
        if self.autoRefine():
            self._schedule(lambda: self._sync(applyPending=True))

    @vtk.calldata_type(vtk.VTK_INT)
    def onPointRemoved(self, caller, event, index=None):
        """A click point was deleted (or its position unset) outside the Logic: follow the markups."""
        if self._markupsBusy or self.session is None:
            return
        self._schedule(lambda: self._sync(applyPending=self.autoRefine()))

    def _schedule(self, function) -> None:
        """Run ``function`` now, or through :attr:`scheduler` (the Widget defers it until the
        markups widget has finished handling the mouse event). Errors cannot propagate through a
        VTK observer or a timer: they are reported to :attr:`errorCallback` or the log."""
        if self.scheduler is not None:
            self.scheduler(lambda: self._runReporting(function))
        else:
            self._runReporting(function)

    def _runReporting(self, function) -> None:
        try:
            function()
        except ValueError as exc:
            self._reportError(str(exc))
        except Exception as exc:  # noqa: BLE001 - an observer must not die silently (VTK prints and drops it)
            logger.exception("refinement failed")
            self._reportError(f"Refinement failed: {exc}")

    def _reportError(self, message: str) -> None:
        if self.errorCallback:
            self.errorCallback(message)
        else:
            logger.error("%s", message)

    # ----------------------------------------------------------------- actions
    def segment(self, ctNode, petNode, segmentationNode=None, roiNode=None, modelPath=None, device=None):
        """Run the initial model and write the GTVp segment on the CT geometry.

        Args:
            ctNode: CT scalar volume node (required).
            petNode: PET scalar volume node, on any grid overlapping the CT (None only for a CT-only model).
            segmentationNode: where the "GTVp" segment goes (created when None); other segments
                are left untouched. It gets the CT's parent transform, so the result moves with
                the volumes.
            roiNode: optional markups ROI: the region the model sees (default: the model's ROI
                size centred on the CT).
            modelPath: model package folder; None or "" = the parameter node's, else the default model.
            device: "auto", "cpu" or "cuda"; None = the parameter node's.

        Starts over: previous click points are removed. Returns the engine's ``StepResult``.
        Raises ``ValueError`` (nothing changed) on bad input.
        """
        pn = self._parameterNode()
        if ctNode is None:
            raise ValueError("No CT volume selected: choose the CT image")
        if modelPath is None:
            modelPath = pn.GetParameter(MODEL_PATH_PARAM)
        device = device or pn.GetParameter(DEVICE_PARAM) or "auto"
        self._checkSegmentationTransform(segmentationNode, ctNode)
        geometry = self._geometryOf(ctNode, petNode)
        self._stopConfirm()  # the previous session's background pass would compete for the CPU
        t0 = time.perf_counter()
        session = self._newSession(ctNode, petNode, roiNode, modelPath, device)
        self._progress("Running the initial model", 50)
        result = session.initial()

        # Every check passed: commit to the scene.
        self._progress("Writing the segment", 90)
        segmentationNode = self._prepareSegmentation(segmentationNode, ctNode)
        for role, node in (
            (CT_ROLE, ctNode),
            (PET_ROLE, petNode),
            (ROI_ROLE, roiNode),
            (SEGMENTATION_ROLE, segmentationNode),
        ):
            pn.SetNodeReferenceID(role, node.GetID() if node is not None else None)
        pn.SetParameter(MODEL_PATH_PARAM, modelPath or "")
        pn.SetParameter(DEVICE_PARAM, device)
        pn.SetParameter(SEGMENT_ID_PARAM, "")
        self.session, self._geometryKey = session, geometry
        self.clickTimings = []
        self._observeClickNodes()
        self._clearClickPoints()
        self._writeMask(full=True)
        self._progress("Done", 100)
        self._finishStep(result, "initial model", time.perf_counter() - t0)
        self._startConfirm()
        return self.lastResult

    def addClick(self, ras, positive: bool):
        """Place a click point at world ``ras`` (mm) in the positive or negative list and refine.

        The same path as a point placed in a view. A click outside the ROI or the CT raises
        ``ValueError``; its point is removed again and the segment is unchanged.
        """
        self._requireSession()
        node = self.getClickNodes()[0 if positive else 1]
        with self._editingMarkups():
            index = node.AddControlPointWorld(*[float(v) for v in ras])
        order = self._clickOrder()
        self._recordPoint(node, index, bool(positive), order)
        self._setClickOrder(order)
        return self._sync(applyPending=True)

    def refinePendingClicks(self):
        """Apply the clicks placed while auto-refine was off (in placement order)."""
        self._requireSession()
        return self._sync(applyPending=True)

    def undo(self):
        """Remove the last placed click point and restore the previous mask exactly."""
        self._requireSession()
        desired = self.desiredClicks()
        if not desired:
            raise ValueError("There is no click to undo")
        last = desired[-1]
        self._removePoint(last.node, last.pointId)
        return self._sync(applyPending=False, action="undo")

    def reset(self):
        """Remove every click point and return to the initial model's mask."""
        self._requireSession()
        t0 = time.perf_counter()
        self._stopConfirm()
        self._clearClickPoints()
        result = self.session.reset()
        self._writeMask()
        self._finishStep(result, "reset", time.perf_counter() - t0)
        self._startConfirm()
        return self.lastResult

    def replayClicks(self):
        """Rebuild the session from the parameter node (e.g. a reloaded scene) and replay the clicks.

        Uses the CT, PET, ROI, model and device stored with the scene and applies the click points
        in their placement order; the segment is rewritten with the result.
        """
        pn = self._parameterNode()
        ctNode, petNode = pn.GetNodeReference(CT_ROLE), pn.GetNodeReference(PET_ROLE)
        segmentationNode = pn.GetNodeReference(SEGMENTATION_ROLE)
        if ctNode is None or segmentationNode is None:
            raise ValueError("Nothing to replay: the scene has no InteractiveRefine CT and segmentation")
        geometry = self._geometryOf(ctNode, petNode)
        self._stopConfirm()
        session = self._newSession(
            ctNode,
            petNode,
            pn.GetNodeReference(ROI_ROLE),
            pn.GetParameter(MODEL_PATH_PARAM),
            pn.GetParameter(DEVICE_PARAM) or "auto",
        )
        result = session.initial()
        self.session, self._geometryKey = session, geometry
        self.clickTimings = []
        self._observeClickNodes()
        self._writeMask(full=True)
        self._finishStep(result, "initial model", result.timings.get("total_s", 0.0))
        self._sync(applyPending=True, action="replay")
        self._startConfirm()
        return self.lastResult

    def _sync(self, applyPending: bool, action: str = "click"):
        """Bring the session in step with the markups: undo to the common prefix, then add the rest.

        Undo restores stored states, so removing a click restores the earlier mask bit for bit.
        A click the engine refuses (outside the ROI or the CT) is removed from the markups and
        reported as ``ValueError`` after the valid ones were applied.
        """
        from InteractiveRefineLib.errors import InteractiveRefineError

        t0 = time.perf_counter()
        if self.session is None:  # e.g. a scheduled sync after the scene was closed
            return None
        desired = self.desiredClicks()
        current = self.session.clicks
        common = 0
        while (
            common < min(len(current), len(desired))
            and current[common].positive == desired[common].positive
            and np.allclose(current[common].ras, desired[common].ras, atol=1e-6)
        ):
            common += 1
        if common == len(current) and (common == len(desired) or not applyPending):
            return self.lastResult  # nothing to do (e.g. a preview point was removed)
        try:
            self._checkGeometryUnchanged()
        except ValueError:
            for click in desired[common:] if applyPending else []:
                self._removePoint(click.node, click.pointId)  # keep markups and mask in step
            raise
        self._stopConfirm()
        result = None
        while len(self.session.clicks) > common:
            result = self.session.undo()
        errors, timings = [], []
        for click in desired[common:] if applyPending else []:
            tClick = time.perf_counter()
            try:
                result = self.session.add_click(click.ras, click.positive)
            except InteractiveRefineError as exc:
                self._removePoint(click.node, click.pointId)
                errors.append(str(exc))
                continue
            timings.append(dict(result.timings, total_s=time.perf_counter() - tClick))
        if result is not None:
            writeSeconds = self._writeMask()
            if timings:
                timings[-1]["write_s"] = writeSeconds
                timings[-1]["total_s"] += writeSeconds
            self.clickTimings.extend(timings)
            seconds = timings[-1]["total_s"] if timings and action == "click" else time.perf_counter() - t0
            self._finishStep(result, action, seconds)
            self._startConfirm()
        if errors:
            raise ValueError("Click ignored and removed: " + "; ".join(errors))
        return self.lastResult

    def _finishStep(self, result, action: str, seconds: float):
        self.lastResult = result
        pending = len(self._clickOrder()) - result.n_clicks
        precision = ""
        if self.session is not None and self.session.amp and not result.exact:
            precision = f" ({self.session.precision})"
        status = (
            f"{result.n_clicks} click(s), GTVp {result.volume_ml:.1f} mL, device {result.device}"
            f"{precision}, {action} {seconds:.2f} s"
        )
        if result.window is not None:  # a fast click: refined in a window around it
            status += " in a " + "x".join(str(b - a) for a, b in result.window) + " window"
        if not result.exact:
            status += ", preview" + (": exact mask follows" if self.exactFollowUp() else "")
        if result.removed_ml > 0:
            status += f", removed {result.removed_ml:.1f} mL marked not tumour"
        if pending > 0:
            status += f", {pending} pending click(s)"
        requested = self._parameterNode().GetParameter(DEVICE_PARAM)
        if requested == "cuda" and not str(result.device).startswith("cuda"):
            status += " (CUDA is not available: running on the CPU)"
        self.lastStatus = status
        self._log(self.lastStatus)
        if self.resultCallback:
            self.resultCallback(result)
        return result

    def _requireSession(self) -> None:
        if self.session is None:
            raise ValueError(
                "No segmentation yet: press Segment first (or replay the clicks of a loaded scene)"
            )

    def clear(self) -> None:
        """Forget the session and stop observing (scene closed); the scene keeps its nodes."""
        if self._worker is not None:
            self._worker.cancel()
        self._confirmJob = None
        self.removeObservers()
        self.session = None
        self.lastResult = None
        self.lastStatus = ""
        self._geometryKey = None

    # -------------------------------------------------------------- utilities
    @staticmethod
    def loadVolume(path: str, name: str | None = None):
        """Load a volume file into the scene through the Volumes logic (works without the GUI)."""
        name = name or os.path.basename(path).split(".")[0]
        node = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), name)
        if node is None:
            raise ValueError(f"Cannot load the volume {path}")
        return node

    @staticmethod
    def saveSegmentation(segmentationNode, path: str) -> None:
        """Write a segmentation node to ``.seg.nrrd`` through its storage node."""
        storage = segmentationNode.GetStorageNode()
        if storage is None:
            segmentationNode.AddDefaultStorageNode()
            storage = segmentationNode.GetStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentationNode):
            raise ValueError(f"Cannot write the segmentation to {path}")


#
# InteractiveRefineWidget
#


class InteractiveRefineWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: selectors, Segment, click placement (P / N keys), Undo (U), Reset, status."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUIFromParameterNode = False
        self._shortcuts = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/InteractiveRefine.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = InteractiveRefineLogic()
        self.logic.logCallback = self.onLogicLog
        self.logic.progressCallback = self.onLogicProgress
        self.logic.errorCallback = self.onLogicError
        self.logic.resultCallback = self.onLogicResult
        # Refine after the markups widget has finished handling the click, not inside its event.
        self.logic.scheduler = lambda function: qt.QTimer.singleShot(0, function)
        # While an exact mask is computed in the background, look for it five times a second.
        self._confirmTimer = qt.QTimer()
        self._confirmTimer.setInterval(200)
        self._confirmTimer.connect("timeout()", self.onConfirmTimer)
        self.logic.confirmStartedCallback = self._confirmTimer.start

        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItems(list(DEVICES))
        for placeWidget in (self.ui.positivePlaceWidget, self.ui.negativePlaceWidget):
            placeWidget.setMRMLScene(slicer.mrmlScene)
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
            placeWidget.buttonsVisible = False
            placeWidget.placeButton().show()
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for selector in (
            self.ui.ctSelector,
            self.ui.petSelector,
            self.ui.roiSelector,
            self.ui.segmentationSelector,
        ):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.autoRefineCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.regionRemovalCheckBox.connect("toggled(bool)", self.onRegionRemovalToggled)
        self.ui.exactFollowUpCheckBox.connect("toggled(bool)", self.onExactFollowUpToggled)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.resetButton.connect("clicked(bool)", self.onResetButton)
        self.ui.replayButton.connect("clicked(bool)", self.onReplayButton)

        self.initializeParameterNode()

    def cleanup(self):
        self._confirmTimer.stop()
        self.removeObservers()
        self._removeShortcuts()
        if self.logic:
            self.logic.clear()

    def enter(self):
        self.initializeParameterNode()
        self._installShortcuts()

    def exit(self):
        self._removeShortcuts()
        self._setPlaceMode(None)
        if self._parameterNode:
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode
            )

    def onSceneStartClose(self, caller, event):
        self._setPlaceMode(None)
        self.logic.clear()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---------------------------------------------------------- parameter node
    def initializeParameterNode(self):
        node = self.logic.getParameterNode()
        self.logic.setDefaultParameters(node)
        if not node.GetNodeReference(CT_ROLE):
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                node.SetNodeReferenceID(CT_ROLE, first.GetID())
        self.setParameterNode(node)

    def setParameterNode(self, node):
        if self._parameterNode:
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode
            )
        self._parameterNode = node
        if node:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        self._updatingGUIFromParameterNode = True
        try:
            self.ui.ctSelector.setCurrentNode(node.GetNodeReference(CT_ROLE))
            self.ui.petSelector.setCurrentNode(node.GetNodeReference(PET_ROLE))
            self.ui.roiSelector.setCurrentNode(node.GetNodeReference(ROI_ROLE))
            self.ui.segmentationSelector.setCurrentNode(node.GetNodeReference(SEGMENTATION_ROLE))
            self.ui.modelPathLineEdit.currentPath = node.GetParameter(MODEL_PATH_PARAM)
            self.ui.deviceComboBox.currentText = node.GetParameter(DEVICE_PARAM) or "auto"
            self.ui.autoRefineCheckBox.checked = node.GetParameter(AUTO_REFINE_PARAM) != "false"
            self.ui.regionRemovalCheckBox.checked = node.GetParameter(REGION_REMOVAL_PARAM) != "false"
            self.ui.exactFollowUpCheckBox.checked = node.GetParameter(EXACT_FOLLOW_UP_PARAM) != "false"
            positiveNode, negativeNode = (
                node.GetNodeReference(POSITIVE_ROLE),
                node.GetNodeReference(NEGATIVE_ROLE),
            )
            self.ui.positivePlaceWidget.setCurrentNode(positiveNode)
            self.ui.negativePlaceWidget.setCurrentNode(negativeNode)
            hasCt = node.GetNodeReference(CT_ROLE) is not None
            hasSession = self.logic.session is not None
            self.ui.segmentButton.enabled = hasCt
            self.ui.segmentButton.toolTip = "Run the initial model" if hasCt else "Select a CT volume first"
            for widget in (
                self.ui.positivePlaceWidget,
                self.ui.negativePlaceWidget,
                self.ui.undoButton,
                self.ui.resetButton,
            ):
                widget.enabled = hasSession
            self.ui.refineButton.enabled = hasSession and not self.ui.autoRefineCheckBox.checked
            self.ui.replayButton.enabled = (
                positiveNode is not None and node.GetNodeReference(SEGMENTATION_ROLE) is not None
            )
        finally:
            self._updatingGUIFromParameterNode = False

    def onRegionRemovalToggled(self, checked):
        if not self._updatingGUIFromParameterNode:
            self.logic.setRegionRemoval(checked)

    def onExactFollowUpToggled(self, checked):
        if not self._updatingGUIFromParameterNode:
            self.logic.setExactFollowUp(checked)

    def onConfirmTimer(self):
        """Write the background exact mask once it is there; stop polling when nothing runs."""
        try:
            self.logic.applyConfirmed()
        except Exception as exc:  # noqa: BLE001 - a timer must not die silently
            logger.exception("writing the exact mask failed")
            self.onLogicError(f"Writing the exact mask failed: {exc}")
        if not self.logic.confirmRunning:
            self._confirmTimer.stop()

    def updateParameterNodeFromGUI(self, *args):
        node = self._parameterNode
        if node is None or self._updatingGUIFromParameterNode:
            return
        wasModified = node.StartModify()
        try:
            for role, selector in (
                (CT_ROLE, self.ui.ctSelector),
                (PET_ROLE, self.ui.petSelector),
                (ROI_ROLE, self.ui.roiSelector),
                (SEGMENTATION_ROLE, self.ui.segmentationSelector),
            ):
                node.SetNodeReferenceID(role, selector.currentNodeID)
            node.SetParameter(MODEL_PATH_PARAM, self.ui.modelPathLineEdit.currentPath.strip())
            node.SetParameter(DEVICE_PARAM, self.ui.deviceComboBox.currentText)
            node.SetParameter(AUTO_REFINE_PARAM, "true" if self.ui.autoRefineCheckBox.checked else "false")
        finally:
            node.EndModify(wasModified)

    # ------------------------------------------------------------------ actions
    def onSegmentButton(self):
        if not self.ensureDependencies():
            return
        node = self._parameterNode
        self.ui.progressBar.show()
        try:
            with slicer.util.tryWithErrorDisplay("Segmentation failed.", waitCursor=True):
                self.logic.segment(
                    node.GetNodeReference(CT_ROLE),
                    node.GetNodeReference(PET_ROLE),
                    node.GetNodeReference(SEGMENTATION_ROLE),
                    node.GetNodeReference(ROI_ROLE),
                    modelPath=node.GetParameter(MODEL_PATH_PARAM),
                    device=node.GetParameter(DEVICE_PARAM),
                )
                self._showSegmentation()
        finally:
            self.ui.progressBar.hide()
            self.updateGUIFromParameterNode()

    def onRefineButton(self):
        with slicer.util.tryWithErrorDisplay("Refinement failed.", waitCursor=True):
            self.logic.refinePendingClicks()

    def onUndoButton(self):
        with slicer.util.tryWithErrorDisplay("Undo failed.", waitCursor=True):
            self.logic.undo()

    def onResetButton(self):
        with slicer.util.tryWithErrorDisplay("Reset failed.", waitCursor=True):
            self.logic.reset()

    def onReplayButton(self):
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Replay failed.", waitCursor=True):
            self.logic.replayClicks()
        self.updateGUIFromParameterNode()

    def _showSegmentation(self):
        ctNode = self._parameterNode.GetNodeReference(CT_ROLE)
        petNode = self._parameterNode.GetNodeReference(PET_ROLE)
        slicer.util.setSliceViewerLayers(background=ctNode, foreground=petNode, foregroundOpacity=0.3)

    def _setPlaceMode(self, positive):
        """Persistent place mode for the positive (True) or negative (False) list; None = off."""
        for placeWidget, isPositive in (
            (self.ui.positivePlaceWidget, True),
            (self.ui.negativePlaceWidget, False),
        ):
            if placeWidget.currentNode() is not None:
                placeWidget.setPlaceModeEnabled(positive is isPositive)

    def _installShortcuts(self):
        self._removeShortcuts()
        for key, callback in (
            ("p", lambda: self._setPlaceMode(True)),
            ("n", lambda: self._setPlaceMode(False)),
            ("u", self.onUndoButton),
        ):
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
        slicer.app.processEvents()

    def onLogicProgress(self, message, percent):
        self.ui.progressBar.value = percent
        self.ui.progressBar.format = f"{message} (%p%)"
        slicer.app.processEvents()

    def onLogicError(self, message):
        slicer.util.errorDisplay(message)

    def onLogicResult(self, result):
        self.ui.statusLabel.text = self.logic.lastStatus

    # --------------------------------------------------------------- dependencies
    def ensureDependencies(self) -> bool:
        """Check torch, MONAI and safetensors; offer to install the missing ones (confirmation first).

        torch is installed through the PyTorch extension (PyTorchUtils), the others with pinned
        ranges through Slicer's pip; numpy/SciPy/SimpleITK (bundled with Slicer) are never touched.
        """
        import subprocess

        missing = _missingPackages()
        if not missing:
            return True
        if slicer.app.testingEnabled():
            slicer.util.errorDisplay(
                f"Missing Python packages: {', '.join(missing)} (not installed in testing mode)"
            )
            return False
        text = (
            "InteractiveRefine needs these Python packages, which are not installed yet:\n\n"
            + "\n".join(f"  - {name}" for name in missing)
            + "\n\nInstall them now? This downloads several hundred MB and may take minutes."
        )
        if not slicer.util.confirmOkCancelDisplay(text, "Install dependencies"):
            return False
        try:
            with slicer.util.WaitCursor():
                _installPackages(missing)
        except (RuntimeError, ImportError, OSError, subprocess.CalledProcessError) as exc:
            slicer.util.errorDisplay(
                f"Installing the dependencies failed: {exc}\nRestart Slicer and try again."
            )
            return False
        return not _missingPackages()


def _missingPackages() -> list:
    import importlib.util

    names = []
    if importlib.util.find_spec("torch") is None:
        names.append(f"torch{TORCH_REQUIREMENT} (through the PyTorch extension)")
    for requirement in PIP_REQUIREMENTS:
        module = requirement.split(">")[0].split("<")[0].split("=")[0]
        if importlib.util.find_spec(module) is None:
            names.append(requirement)
    return names


def _installPackages(missing) -> None:
    if any(name.startswith("torch") for name in missing):
        try:
            import PyTorchUtils
        except ImportError as exc:
            raise RuntimeError("Install the 'PyTorch' extension from the Extensions Manager first") from exc
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT
        )
        if torch is None:
            raise RuntimeError("PyTorch was not installed")
    for requirement in PIP_REQUIREMENTS:
        if requirement in missing:
            # --no-deps: MONAI's only dependencies are torch and numpy, which must stay Slicer's own.
            slicer.util.pip_install(f"{requirement} --no-deps")


#
# InteractiveRefineTest
#


class InteractiveRefineTest(ScriptedLoadableModuleTest):
    """Self-test: real PET/CT when available (else a phantom), the Logic end to end.

    Data: the engine's data folder (``$INTERACTIVE_REFINE_DATA``, else ``shared/data`` beside the
    repository: ``InteractiveRefineLib.cases.find_data_dir``), case ``sts_petct/hecktor_layout/STS_001``;
    else the engine's phantom. Model: ``$INTERACTIVE_REFINE_TEST_MODEL`` (a package
    folder, or "tiny"), else the default model when installed, else a tiny random network made
    in a temporary folder (pipeline check only: its masks carry no meaning).
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
        from InteractiveRefineLib.networks import TINY_NETWORK
        from InteractiveRefineLib.runtime import apply_process_settings

        apply_process_settings()  # as the Logic does, but before the tiny network below uses torch
        choice = os.environ.get("INTERACTIVE_REFINE_TEST_MODEL", "")
        if choice and choice != "tiny":
            return choice
        if not choice and os.path.isfile(os.path.join(str(DEFAULT_MODEL_DIR), "model.json")):
            return ""
        folder = self._tempDir()
        return str(create_random_model_package(folder, network=TINY_NETWORK, roi_size_vox=(48,) * 3, seed=0))

    def _dataDir(self) -> str:
        from InteractiveRefineLib.cases import find_data_dir

        return str(find_data_dir())

    def _loadInputs(self):
        """(CT node, PET node, tumour label array on the CT grid or None)."""
        case = os.path.join(self._dataDir(), "sts_petct", "hecktor_layout", "STS_001")
        if os.path.isfile(os.path.join(case, "STS_001__CT.nii.gz")):
            self.delayDisplay("Loading STS_001 PET/CT")
            logic = InteractiveRefineLogic
            ct = logic.loadVolume(os.path.join(case, "STS_001__CT.nii.gz"), "STS_001 CT")
            pet = logic.loadVolume(os.path.join(case, "STS_001__PT.nii.gz"), "STS_001 PET")
            label = logic.loadVolume(os.path.join(case, "STS_001.nii.gz"), "STS_001 label")
            truth = slicer.util.arrayFromVolume(label) > 0
            slicer.mrmlScene.RemoveNode(label)
            return ct, pet, truth
        self.delayDisplay("Real data not found; using a generated phantom")
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
        ijkToRas = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(ijkToRas)
        matrix = InteractiveRefineLogic.transformToWorld(ctNode) @ slicer.util.arrayFromVTKMatrix(ijkToRas)
        ras = np.asarray(ras, float)
        homogeneous = np.concatenate([ras, np.ones(ras.shape[:-1] + (1,))], axis=-1)
        ijk = (homogeneous @ np.linalg.inv(matrix).T)[..., :3]
        return np.rint(ijk[..., ::-1]).astype(int)

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

    # -------------------------------------------------------------------- test
    def test_InteractiveRefine1(self):
        """Segment, a positive and a negative click, undo, reset, and bad input."""
        self.delayDisplay("Starting InteractiveRefine test")
        ctNode, petNode, truth = self._loadInputs()
        modelPath = self._modelPath()
        logic = InteractiveRefineLogic()

        # Segment. An ROI centred on the tumour's border so it holds tumour and background.
        tumourIndex = np.argwhere(truth)
        edge = tumourIndex[np.argmax(tumourIndex[:, 2])]  # most-lateral tumour voxel along i
        ijkToRas = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(ijkToRas)
        edgeRas = (slicer.util.arrayFromVTKMatrix(ijkToRas) @ np.append(edge[::-1], 1.0))[:3]
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "IR test ROI")
        roiNode.SetCenter(*edgeRas)
        roiNode.SetSize(40.0, 40.0, 40.0)
        result = logic.segment(ctNode, petNode, None, roiNode, modelPath=modelPath, device="cpu")
        segmentationNode = logic.getParameterNode().GetNodeReference(SEGMENTATION_ROLE)
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
