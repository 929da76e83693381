"""Show uncertainty: the engine's estimate (``InteractiveRefineLib.uncertainty``) of the current
state as a scalar volume on the CT geometry, and its suggested next click as a markups point.

A mixin of :class:`~.logic.RefineLogic` (MRML only, no Qt). The entropy map (nats, 0 to C ln 2
for a model of C sigmoid classes: the sum of each class's binary entropy) goes into one volume
node ("IR uncertainty", replaced on repeat, under the CT's parent transform like the segmentation)
with a colour map, window/level 0 to C ln 2 and a colour legend (the colour bar, titled in nats,
its range that window); the Widget shows it as the foreground layer. The suggestion is one control
point in its own node ("IR suggested"), labelled "tumour?" or "not tumour?" ("GTVp?" / "GTVn?"
for a model with several classes: the class with the highest mean probability there);
:meth:`UncertaintyMixin.acceptSuggestion` places it as a regular click of that class (history and
undo as for a point placed in a view). Any later step makes the suggestion stale: it is removed.
"""
from __future__ import annotations

import math
import time

import numpy as np
import slicer
import vtk

#: The nodes this mixin makes, found again by this attribute (value: "uncertainty" / "suggestion").
ROLE_ATTRIBUTE = "InteractiveRefine.Role"
VOLUME_NAME = "IR uncertainty"
SUGGESTION_NAME = "IR suggested"
#: The largest binary entropy (nats): the top of the window for a one-class model.
MAX_ENTROPY = math.log(2.0)
#: The colour legend's title.
LEGEND_TITLE = "Uncertainty (nats)"


def maxEntropy(classes: int = 1) -> float:
    """The largest predictive entropy (nats) of ``classes`` sigmoid outputs: ``classes`` x ln 2."""
    return max(int(classes), 1) * MAX_ENTROPY
DEFAULT_PASSES = 8
#: Slicer's colour tables for the map, first found wins; else :data:`OWN_COLORS_NAME` is made.
COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
OWN_COLORS_NAME = "IR uncertainty colours"
#: Inferno's key colours (black, purple, red, orange, pale yellow) for the own table.
_INFERNO_KEYS = ((0.0, 0.0, 0.02), (0.34, 0.06, 0.43), (0.73, 0.21, 0.33), (0.98, 0.55, 0.04),
                 (0.99, 1.0, 0.64))
#: Entropy shown as transparent in the slice views (display threshold only; the values stay).
DISPLAY_FLOOR = 0.01
_SIGN_COLORS = {True: (0.15, 0.85, 0.25), False: (0.95, 0.20, 0.15)}


def findNode(scene, className: str, role: str):
    """The node of ``className`` this module made for ``role`` (None when there is none)."""
    for index in range(scene.GetNumberOfNodesByClass(className)):
        node = scene.GetNthNodeByClass(index, className)
        if node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node
    return None


def colorNodeId(scene) -> str:
    """A Slicer colour table suited to the map, else our own Inferno-like ramp (made once)."""
    for nodeId in COLOR_NODE_IDS:
        if scene.GetNodeByID(nodeId) is not None:
            return nodeId
    node = findNode(scene, "vtkMRMLColorTableNode", "uncertainty colours")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", OWN_COLORS_NAME)
        node.SetAttribute(ROLE_ATTRIBUTE, "uncertainty colours")
        node.SetTypeToUser()
        node.SetNumberOfColors(256)
        keys = np.asarray(_INFERNO_KEYS)
        positions = np.linspace(0.0, 1.0, len(keys))
        for i in range(256):
            rgb = [float(np.interp(i / 255.0, positions, keys[:, c])) for c in range(3)]
            node.SetColor(i, f"{i}", *rgb, 1.0)
    return node.GetID()


def writeEntropyVolume(scene, entropyOnCt: np.ndarray, ctNode, top: float = MAX_ENTROPY):
    """Put ``entropyOnCt`` (``[k, j, i]`` on the CT grid) into the uncertainty volume node (made
    when absent) with the CT's geometry and parent transform, colours, window 0 to ``top`` (the
    map's largest possible value, :func:`maxEntropy`) and a colour legend over that range."""
    node = findNode(scene, "vtkMRMLScalarVolumeNode", "uncertainty")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", VOLUME_NAME)
        node.SetAttribute(ROLE_ATTRIBUTE, "uncertainty")
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(entropyOnCt, dtype=np.float32))
    matrix = vtk.vtkMatrix4x4()
    ctNode.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveTransformNodeID(ctNode.GetTransformNodeID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    wasModifying = display.StartModify()
    display.SetAndObserveColorNodeID(colorNodeId(scene))
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, float(top))
    display.SetAutoThreshold(False)
    display.SetLowerThreshold(DISPLAY_FLOOR)
    display.SetUpperThreshold(float(top) + 1.0)
    display.SetApplyThreshold(True)
    display.EndModify(wasModifying)
    showColorLegend(node)
    return node


def showColorLegend(volumeNode):
    """The colour bar of the map in the views (Slicer's colour legend; its range follows the
    volume's window, 0 to C ln 2); None where the Colors module has no legend (older Slicer)."""
    colors = getattr(getattr(slicer, "modules", None), "colors", None)
    colorLogic = colors.logic() if colors is not None else None
    if colorLogic is None or not hasattr(colorLogic, "AddDefaultColorLegendDisplayNode"):
        return None
    legend = colorLogic.GetColorLegendDisplayNode(volumeNode)
    if legend is None:
        legend = colorLogic.AddDefaultColorLegendDisplayNode(volumeNode)
    if legend is None:
        return None
    legend.SetTitleText(LEGEND_TITLE)
    legend.SetLabelFormat("%.2f")
    legend.SetVisibility(True)
    return legend


class UncertaintyMixin:
    """``showUncertainty()``, ``getSuggestionNode()``, ``acceptSuggestion()``, ``clearSuggestion()``.
    Needs ``scene``, ``session``, ``sessionNodes``, ``_requireSession``, ``_action``,
    ``_checkGeometryUnchanged``, ``waitForExactMask``, ``applyConfirmed``, ``addClick`` and ``_log``."""

    #: The engine's ``Uncertainty`` of the last Show uncertainty (None before).
    lastUncertainty = None
    #: The status line of the last Show uncertainty (passes, seconds, the suggestion).
    uncertaintyStatus = ""
    _uncertaintyKey = None

    def _stateKey(self):
        session = self.session
        if session is None:
            return None
        clicks = tuple((c.kind, c.positive, getattr(c, "label", None), tuple(float(v) for v in c.ras))
                       for c in session.clicks)
        return id(session), clicks

    def getUncertaintyNode(self):
        """The uncertainty volume node (None before the first Show uncertainty)."""
        return findNode(self.scene, "vtkMRMLScalarVolumeNode", "uncertainty")

    def getSuggestionNode(self, create: bool = False):
        """The suggested-point node (made with ``create``; None otherwise when absent)."""
        node = findNode(self.scene, "vtkMRMLMarkupsFiducialNode", "suggestion")
        if node is None and create:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", SUGGESTION_NAME)
            node.SetAttribute(ROLE_ATTRIBUTE, "suggestion")
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            display.SetGlyphScale(3.0)
            display.SetTextScale(3.0)
            node.SetLocked(True)  # a suggestion, not a click: accept it (Shift+A) or place your own
        return node

    def showUncertainty(self, passes: int = DEFAULT_PASSES, seed: int = 0):
        """Estimate the uncertainty of the current state (``passes`` augmented network passes), write
        its entropy map on the CT geometry into the uncertainty volume node and the suggested next
        click into the suggestion node; return the volume node. Before Segment, or with bad
        ``passes``: ``ValueError`` and no node is made or changed."""
        if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
            raise ValueError(f"passes must be a positive whole number, got {passes!r}")
        self._requireSession()
        with self._action("Show uncertainty"):
            self._checkGeometryUnchanged()
            self.waitForExactMask()  # the estimate is of the exact state, never of a half-written one
            self.applyConfirmed()
            from InteractiveRefineLib.geometry import resample
            from InteractiveRefineLib.uncertainty import estimate

            session = self.session
            t0 = time.perf_counter()
            result = estimate(session, int(passes), int(seed))
            top = maxEntropy(len(session.classes))
            onCt = resample(result.entropy, session.grid, session.ct.grid, order=1)
            onCt = np.clip(np.nan_to_num(onCt, nan=0.0), 0.0, top)
            node = writeEntropyVolume(self.scene, onCt, self.sessionNodes.ct, top)
            self._showSuggestion(result.suggestion)
            seconds = time.perf_counter() - t0
            self.lastUncertainty, self._uncertaintyKey = result, self._stateKey()
            suggestion = result.suggestion
            hint = ("no uncertain region left to click" if suggestion is None else
                    f"suggested: {self._suggestionText(suggestion)} "
                    f"({suggestion.volume_ml:.1f} mL uncertain; Shift+A accepts)")
            self.uncertaintyStatus = (f"Uncertainty: {len(result.augmentations)} passes, {seconds:.2f} s, "
                                      f"max {float(result.entropy.max()):.2f} of {top:.2f} nats, {hint}")
            self._log(self.uncertaintyStatus)
        return node

    def _suggestedLabel(self, suggestion):
        """The class a positive suggestion adds to: its label for a model with several classes,
        else None (the one class)."""
        session = self.session
        if session is None or len(session.classes) <= 1 or not suggestion.positive:
            return None
        return suggestion.label

    def _suggestionText(self, suggestion) -> str:
        """"tumour?" / "not tumour?", or the class ("GTVp?", "GTVn?") for several classes."""
        from .segments import CLASS_SEGMENTS

        label = self._suggestedLabel(suggestion)
        if label is not None:
            return CLASS_SEGMENTS.get(label, (label,))[0] + "?"
        return "tumour?" if suggestion.positive else "not tumour?"

    def _showSuggestion(self, suggestion) -> None:
        if suggestion is None:
            self.clearSuggestion()
            return
        label = self._suggestedLabel(suggestion)
        node = self.getSuggestionNode(create=True)
        wasModifying = node.StartModify()
        node.RemoveAllControlPoints()
        index = node.AddControlPointWorld(*[float(v) for v in suggestion.ras])
        node.SetNthControlPointLabel(index, self._suggestionText(suggestion))
        description = f"positive={int(suggestion.positive)}" + (f";label={label}" if label else "")
        node.SetNthControlPointDescription(index, description)
        node.SetNthControlPointLocked(index, True)
        display = node.GetDisplayNode()
        for setter in (display.SetSelectedColor, display.SetColor, display.SetActiveColor):
            setter(_SIGN_COLORS[suggestion.positive])
        node.EndModify(wasModifying)

    def suggestion(self):
        """``(ras, positive)`` of the suggested point, or None (its class: :meth:`suggestionLabel`)."""
        node = self.getSuggestionNode()
        if node is None or node.GetNumberOfControlPoints() == 0:
            return None
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(0, ras)
        return tuple(ras), "positive=1" in node.GetNthControlPointDescription(0).split(";")

    def suggestionLabel(self):
        """The class of the suggested point ("gtvp", "gtvn") for a model with several classes and a
        positive suggestion; None otherwise (or without a suggestion)."""
        node = self.getSuggestionNode()
        if node is None or node.GetNumberOfControlPoints() == 0:
            return None
        for item in node.GetNthControlPointDescription(0).split(";"):
            if item.startswith("label="):
                return item.split("=", 1)[1]
        return None

    def acceptSuggestion(self, positive: bool | None = None):
        """Place the suggested point as a click of its class (``positive`` None: the suggested sign;
        True/False flips it as the user decides; a negative click has no class) and refine, as a
        point placed in a view (undo works); the suggestion is removed. Returns the step's result;
        ``ValueError`` without a suggestion."""
        self._requireSession()
        suggested = self.suggestion()
        if suggested is None:
            raise ValueError("No suggested point: press Show uncertainty first")
        ras, suggestedPositive = suggested
        positive = suggestedPositive if positive is None else bool(positive)
        result = self.addClick(ras, positive, label=self.suggestionLabel() if positive else None)
        self.clearSuggestion()
        return result

    def clearSuggestion(self) -> None:
        node = self.getSuggestionNode()
        if node is not None and node.GetNumberOfControlPoints():
            node.RemoveAllControlPoints()

    def _uncertaintyAfterStep(self) -> None:
        """Called by ``_finishStep``: a suggestion of another state than the current one is removed."""
        if self._uncertaintyKey is None or self._stateKey() == self._uncertaintyKey:
            return
        self._uncertaintyKey = None
        if self.suggestion() is not None:
            self.clearSuggestion()
        if self.getUncertaintyNode() is not None:
            self._log("The uncertainty map is of an earlier state: press Show uncertainty to update it")
