"""Click point lists: markups nodes (tumour = GTVp, not tumour, threshold region, and for models
with a GTVn output lymph node = GTVn and lymph-node threshold region), their placement order (kept
in the parameter node, so a saved scene replays), labels and locks. The list a point is in is its
class: a point of the "nodal" list is a positive click of class ``gtvn`` and one of the
"nodalThreshold" list a PET threshold region of class ``gtvn``; "positive" and "threshold" points
are of the first class (GTVp); "negative" points are "not any class"."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

#: kind -> (parameter name, order prefix, node name, colour).
LISTS = {
    "positive": ("positiveClicks", "+", "IR tumour", (0.15, 0.85, 0.25)),
    "negative": ("negativeClicks", "-", "IR not tumour", (0.95, 0.20, 0.15)),
    "threshold": ("thresholdClicks", "T", "IR threshold", (0.95, 0.85, 0.10)),
    "nodal": ("nodalClicks", "N", "IR node (GTVn)", (0.0, 0.59, 0.81)),
    "nodalThreshold": ("nodalThresholdClicks", "R", "IR node region (GTVn)", (0.55, 0.85, 1.0)),
}
_PREFIX_KIND = {prefix: kind for kind, (_, prefix, _, _) in LISTS.items()}
#: Lists made only when used (a one-class model never needs the lymph-node list).
OPTIONAL_LISTS = ("nodal", "nodalThreshold")
#: kind -> the click's class (an engine output name; None: the first class, or none for negative).
KIND_LABEL = {"nodal": "gtvn", "nodalThreshold": "gtvn"}
#: The lists whose points are PET threshold regions (engine ``add_threshold``), by class.
THRESHOLD_KINDS = {"threshold": None, "nodalThreshold": "gtvn"}
#: The class names the status line shows: kind -> name.
KIND_NAMES = {"positive": "GTVp", "negative": "not tumour", "threshold": "GTVp region", "nodal": "GTVn",
              "nodalThreshold": "GTVn region"}


def kindFor(positive: bool, label: str | None) -> str:
    """The list of a point click: "nodal" for a positive ``gtvn`` click, else by its sign
    (``label`` None or ``gtvp``: the tumour list). ``ValueError`` for another class."""
    if not positive:
        return "negative"
    if label in (None, "gtvp"):
        return "positive"
    for kind, kindLabel in KIND_LABEL.items():
        if kindLabel == label and kind not in THRESHOLD_KINDS:
            return kind
    raise ValueError(f"No click list for the class {label!r}: the module places gtvp and gtvn points")


def thresholdKindFor(label: str | None) -> str:
    """The list of a threshold point of class ``label`` (None or ``gtvp``: "threshold", ``gtvn``:
    "nodalThreshold"); ``ValueError`` for another class."""
    for kind, kindLabel in THRESHOLD_KINDS.items():
        if kindLabel == (None if label == "gtvp" else label):
            return kind
    raise ValueError(f"No PET-region list for the class {label!r}: the module places gtvp and gtvn regions")


@dataclass(frozen=True)
class DesiredClick:
    """A click as the markups define it: its list (``kind``), node, control point ID, world RAS
    (mm) and, for a threshold point (:attr:`isThreshold`), the PET fraction it was placed with."""

    kind: str
    node: object
    pointId: str
    ras: tuple
    fraction: float = 0.0

    @property
    def positive(self) -> bool:
        return self.kind != "negative"

    @property
    def label(self) -> str | None:
        """The click's class for the engine (``add_click(..., label=)``, ``add_threshold(...,
        label=)``): "gtvn" for a lymph-node point or region, else None (the first class; a negative
        click is of no class)."""
        return KIND_LABEL.get(self.kind)

    @property
    def isThreshold(self) -> bool:
        """A PET threshold region (of :attr:`label`'s class), not a point click."""
        return self.kind in THRESHOLD_KINDS

    def matches(self, click) -> bool:
        """Whether the engine's ``Click`` is this one (sign, kind, class, position, fraction)."""
        import numpy as np

        kind = "threshold" if self.isThreshold else "point"
        if click.positive != self.positive or click.kind != kind:
            return False
        if getattr(click, "label", None) != self.label:
            return False
        if kind == "threshold" and abs(dict(click.options).get("fraction", 0.0) - self.fraction) > 1e-9:
            return False
        return bool(np.allclose(click.ras, self.ras, atol=1e-6))


def parseFraction(description: str, default: float) -> float:
    for item in description.split(";"):
        if item.startswith("fraction="):
            return float(item.split("=", 1)[1])
    return default


class ClickLists:
    """The point lists of one parameter node (``params``: the typed parameter node)."""

    def __init__(self, scene, params):
        self.scene = scene
        self.params = params
        self.busy = False  # True while this class edits points (observers ignore those events)

    def node(self, kind: str, create: bool = True):
        name, _, title, color = LISTS[kind]
        node = getattr(self.params, name)
        if node is None and create:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", title)
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            for setter in (display.SetSelectedColor, display.SetColor, display.SetActiveColor):
                setter(color)
            display.SetGlyphScale(2.0)
            display.SetTextScale(2.5)
            node.SetMarkupLabelFormat("%d")
            setattr(self.params, name, node)
        return node

    def nodes(self, create: bool = True) -> dict:
        """``{kind: node}``: the lists every session has (made with ``create``) and the optional
        ones (:data:`OPTIONAL_LISTS`) that exist."""
        nodes = {kind: self.node(kind, create and kind not in OPTIONAL_LISTS) for kind in LISTS}
        return {kind: node for kind, node in nodes.items() if node is not None or kind not in OPTIONAL_LISTS}

    def kindOf(self, node) -> str | None:
        for kind in LISTS:
            listNode = self.node(kind, create=False)
            if listNode is not None and node is not None and listNode.GetID() == node.GetID():
                return kind
        return None

    @contextmanager
    def editing(self):
        """Changes made here must not trigger the Logic's own observers."""
        previous, self.busy = self.busy, True
        try:
            yield
        finally:
            self.busy = previous

    def order(self) -> list:
        """``[(kind, point id), ...]`` in placement order."""
        return [(_PREFIX_KIND[item[0]], item[1:]) for item in self.params.clickOrder.split(";")
                if item and item[0] in _PREFIX_KIND]

    def setOrder(self, order) -> None:
        self.params.clickOrder = ";".join(LISTS[kind][1] + pointId for kind, pointId in order)

    def record(self, node, index: int, kind: str, order: list, fraction: float = 0.0) -> bool:
        """Append a newly defined point to ``order``; label, lock it (and note a threshold's
        fraction in its description). False when it was known already."""
        entry = (kind, node.GetNthControlPointID(index))
        if entry in order:
            return False
        order.append(entry)
        with self.editing():
            node.SetNthControlPointLabel(index, f"{LISTS[kind][1]}{len(order)}")
            node.SetNthControlPointLocked(index, True)  # moving a click would silently re-mean it
            if kind in THRESHOLD_KINDS and "fraction=" not in node.GetNthControlPointDescription(index):
                node.SetNthControlPointDescription(index, f"fraction={fraction:g}")
        return True

    @staticmethod
    def definedIndex(node, pointId: str) -> int:
        index = node.GetNthControlPointIndexByID(pointId)
        if index < 0 or node.GetNthControlPointPositionStatus(index) != node.PositionDefined:
            return -1
        return index

    def recordNew(self, node, indices, fraction: float) -> bool:
        """Record the defined, unknown points among ``indices`` of ``node``; True if any."""
        kind = self.kindOf(node)
        order = self.order()
        added = False
        for i in indices:
            inRange = 0 <= i < node.GetNumberOfControlPoints()
            if inRange and self.definedIndex(node, node.GetNthControlPointID(i)) >= 0:
                added |= self.record(node, i, kind, order, fraction)
        if added:
            self.setOrder(order)
        return added

    def desired(self, fraction: float) -> list:
        """Clicks the markups define, in placement order (dropping points that no longer exist);
        defined points missing from the order (placed while nobody observed) are appended."""
        nodes = self.nodes()
        order = [(k, p) for k, p in self.order() if k in nodes and self.definedIndex(nodes[k], p) >= 0]
        for kind, node in nodes.items():
            for index in range(node.GetNumberOfControlPoints()):
                if self.definedIndex(node, node.GetNthControlPointID(index)) >= 0:
                    self.record(node, index, kind, order, fraction)
        self.setOrder(order)
        clicks = []
        for kind, pointId in order:
            node = nodes[kind]
            index = node.GetNthControlPointIndexByID(pointId)
            ras = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(index, ras)
            pointFraction = parseFraction(node.GetNthControlPointDescription(index), fraction)
            clicks.append(DesiredClick(kind, node, pointId, tuple(float(v) for v in ras), pointFraction))
        return clicks

    def remove(self, click: DesiredClick) -> None:
        index = click.node.GetNthControlPointIndexByID(click.pointId)
        if index >= 0:
            with self.editing():
                click.node.RemoveNthControlPoint(index)
        self.setOrder([e for e in self.order() if e != (click.kind, click.pointId)])

    def clear(self) -> None:
        with self.editing():
            for node in self.nodes().values():
                node.RemoveAllControlPoints()
        self.setOrder([])
