"""The module's output classes on MRML nodes: the GTVp and GTVn segments written from the
session's label map and read back, the lymph-node (GTVn) point list, and each class's volume and
each click's class for the status line. A mixin of :class:`~.logic.RefineLogic` (MRML only, no Qt).

A model with a ``gtvn`` output (GTVp and GTVn) writes both segments, each with its class's voxels
only; a one-class model writes the GTVp segment alone (its 0/1 mask) and has no GTVn points.
"""
from __future__ import annotations

import numpy as np

from . import segments


class ClassesMixin:
    """Needs ``params``, ``session``, ``sessionNodes`` and ``clickLists`` from the Logic."""

    def getNodalClickNode(self, create: bool = True):
        """The lymph-node (GTVn) point list (made only on request: one-class models never use it)."""
        return self.clickLists.node("nodal", create)

    def getNodalThresholdNode(self, create: bool = True):
        """The lymph-node (GTVn) PET-region point list (made only on request, as the GTVn list)."""
        return self.clickLists.node("nodalThreshold", create)

    def _checkClass(self, label, what: str) -> None:
        """Refuse (``ValueError``) a class the session's model does not segment, before any point
        is placed (``what``: "point", "PET region")."""
        if label is not None and label not in self.classes:
            raise ValueError(f"This model segments only {', '.join(self.classes)}: no {label} {what} "
                             f"(choose a model with a GTVn output for lymph-node {what}s)")

    @property
    def classes(self) -> tuple:
        """The running session's output classes (e.g. ``("gtvp", "gtvn")``; empty without one)."""
        return tuple(self.session.classes) if self.session is not None else ()

    @property
    def hasNodalClass(self) -> bool:
        """Whether lymph-node (GTVn) points can be placed: the session's model has a gtvn output."""
        return "gtvn" in self.classes

    #: class -> the parameter that stores its segment's ID.
    _SEGMENT_PARAMETERS = {"gtvp": "segmentId", "gtvn": "nodalSegmentId"}

    def _segmentIds(self, segmentationNode, classNames, create: bool = True) -> dict:
        """``{class: segment ID}`` of the module's segments for ``classNames`` (added with
        ``create``; a missing one is left out otherwise); the IDs are kept in the parameter node."""
        ids = {}
        for className in classNames:
            parameter = self._SEGMENT_PARAMETERS[className]
            found = segments.segmentId(segmentationNode, getattr(self.params, parameter), create, className)
            if found:
                ids[className] = found
                if create:
                    setattr(self.params, parameter, found)
        return ids

    def _writeMask(self, full: bool = False) -> float:
        nodes = self.sessionNodes
        self._writingSegment = True  # our own write is not a Segment Editor edit
        try:
            ids = self._segmentIds(nodes.segmentation, segments.classValues(self.session))
            return segments.writeMask(self.session, nodes.segmentation, ids, nodes.ct, full)
        finally:
            self._writingSegment = self._segmentEdited = False

    def _nodesForReading(self):
        """(segmentation, CT) of the session, else of the parameter node (e.g. a reloaded scene)."""
        nodes = self.sessionNodes or self.params
        segmentation, ct = nodes.segmentation, nodes.ct
        if segmentation is None:
            raise ValueError("No segmentation yet: press Segment first")
        return segmentation, ct

    def segmentMask(self, className: str = "gtvp"):
        """The segment of ``className`` (GTVp by default, or GTVn) read back, uint8 ``[k, j, i]``
        on the CT grid."""
        segmentation, ct = self._nodesForReading()
        ids = self._segmentIds(segmentation, (className,), create=False)
        if className not in ids:
            raise ValueError(f"The segmentation has no {segments.CLASS_SEGMENTS[className][0]} segment")
        return segments.readMask(segmentation, ids[className], ct)

    def labelMap(self):
        """The module's segments read back as one label map (uint8 ``[k, j, i]`` on the CT grid):
        0 background, the session's label of each class (GTVp 1, GTVn 2); for a one-class model
        the GTVp segment as 0/1, as ``session.mask_on_ct()``."""
        segmentation, ct = self._nodesForReading()
        values = segments.classValues(self.session) if self.session is not None else {"gtvp": 1, "gtvn": 2}
        ids = self._segmentIds(segmentation, values, create=False)
        if not ids:
            raise ValueError("The segmentation has no GTVp or GTVn segment")
        return segments.readLabelMap(segmentation, ids, values, ct)

    def _classStatus(self) -> dict:
        """For a model with several classes: each class's volume (mL, CT grid) and each click's
        class, for the status line (:func:`.status.describe`); nothing for a one-class model."""
        from .markups import KIND_NAMES

        session = self.session
        if session is None or len(session.classes) <= 1:
            return {}
        labels = session.mask_in_box()  # the whole label map lies in the ROI's CT box
        voxelMl = float(abs(np.prod(session.ct.grid.spacing))) / 1000.0
        volumes = {segments.CLASS_SEGMENTS.get(name, (name,))[0]: np.count_nonzero(labels == value) * voxelMl
                   for name, value in session.labels.items()}
        names = []
        for click in session.clicks:
            if not click.positive:
                names.append(KIND_NAMES["negative"])
            else:
                name = segments.CLASS_SEGMENTS.get(click.label or session.classes[0], (click.label,))[0]
                names.append(name + (" region" if click.kind == "threshold" else ""))
        status = {"classVolumes": volumes, "clickClasses": names}
        last = session.clicks[-1] if session.clicks else None
        if last is not None and last.kind == "threshold":  # the region's class, named beside its SUVmax
            name = last.label or session.classes[0]
            status["regionClass"] = segments.CLASS_SEGMENTS.get(name, (name,))[0]
        return status
