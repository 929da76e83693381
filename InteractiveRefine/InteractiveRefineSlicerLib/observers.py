"""Markups events -> refinements (run now, later through the Widget's scheduler, or after the
running action) and the sync of the session with the click points. A mixin of :class:`~.logic.RefineLogic`."""
from __future__ import annotations

import logging
import time

import vtk

logger = logging.getLogger("InteractiveRefineSlicerLib.logic")


class MarkupsObserverMixin:
    """Needs from the Logic: ``clickLists``, ``params``, ``session``, ``scheduler``, ``_busy``,
    ``_action``, ``_checkGeometryUnchanged``, ``_stopConfirm``, ``_startConfirm``, ``_writeMask``,
    ``_finishStep``, ``_log``, ``_reportError``, ``clickTimings`` and ``lastResult``."""

    @vtk.calldata_type(vtk.VTK_INT)
    def onPointPositionDefined(self, caller, event, index=None):
        """A point's position became defined (placed in a view, or by a script); preview points
        are ignored. ``index`` is None when events were batched: then every point is checked."""
        lists = self.clickLists
        if lists.busy:
            return
        indices = range(caller.GetNumberOfControlPoints()) if index is None else [index]
        if not lists.recordNew(caller, indices, self.params.thresholdPercent / 100.0):
            return
        if self.session is None:
            self._log("Click recorded; press Segment to start refining")
        elif self.params.autoRefine:
            self._schedule(lambda: self._sync(applyPending=True))

    @vtk.calldata_type(vtk.VTK_INT)
    def onPointRemoved(self, caller, event, index=None):
        """A click point was deleted (or its position unset) outside the Logic: follow the markups."""
        if not self.clickLists.busy and self.session is not None:
            self._schedule(lambda: self._sync(applyPending=self.params.autoRefine))

    def _schedule(self, function) -> None:
        """Run ``function`` now or through :attr:`scheduler`; while an action runs, once it ends.
        Errors cannot propagate through a VTK observer or a timer: they go to the error callback."""
        if self._busy:
            self._syncQueued = True
        elif self.scheduler is not None:
            self.scheduler(lambda: self._runReporting(function))
        else:
            self._runReporting(function)

    def _runReporting(self, function) -> None:
        try:
            if self._busy:
                self._syncQueued = True
                return
            function()
        except ValueError as exc:
            self._reportError(str(exc))
        except Exception as exc:  # noqa: BLE001 - an observer must not die silently
            logger.exception("refinement failed")
            self._reportError(f"Refinement failed: {exc}")

    def _sync(self, applyPending: bool, action: str = "click"):
        """Bring the session in step with the markups: undo to the common prefix, then add the rest
        (undo restores stored states: bit for bit). A click the engine refuses is removed from the
        markups and reported as ``ValueError`` after the valid ones were applied."""
        if self.session is None:  # e.g. a scheduled sync after the session ended
            return None
        with self._action("the click"):
            t0 = time.perf_counter()
            desired = self.clickLists.desired(self.params.thresholdPercent / 100.0)
            current = self.session.clicks
            common = 0
            while common < min(len(current), len(desired)) and desired[common].matches(current[common]):
                common += 1
            todo = desired[common:] if applyPending else []
            if common == len(current) and not todo:
                return self.lastResult  # nothing to do (e.g. a preview point was removed)
            try:
                self._checkGeometryUnchanged()
            except ValueError:
                for click in todo:
                    self.clickLists.remove(click)  # keep markups and mask in step
                raise
            self._stopConfirm(write=False)
            self._warnIfEdited(bool(todo))
            result = None
            while len(self.session.clicks) > common:
                result = self.session.undo()
            result, errors, timings = self._applyClicks(todo, result)
            if result is not None:
                self._recordStep(result, timings, action, time.perf_counter() - t0)
        if errors:
            raise ValueError("Click ignored and removed: " + "; ".join(errors))
        return self.lastResult

    def _applyClicks(self, todo, result):
        from InteractiveRefineLib.errors import InteractiveRefineError

        errors, timings = [], []
        for click in todo:
            tClick = time.perf_counter()
            try:
                if click.isThreshold:
                    result = self.session.add_threshold(click.ras, fraction=click.fraction, label=click.label)
                else:
                    result = self.session.add_click(click.ras, click.positive, label=click.label)
            except InteractiveRefineError as exc:
                self.clickLists.remove(click)
                errors.append(str(exc))
                continue
            timings.append(dict(result.timings, total_s=time.perf_counter() - tClick))
        return result, errors, timings

    def _recordStep(self, result, timings, action: str, seconds: float) -> None:
        writeSeconds = self._writeMask()
        if timings:
            timings[-1]["write_s"] = writeSeconds
            timings[-1]["total_s"] += writeSeconds
            if action == "click":
                seconds = timings[-1]["total_s"]
        self.clickTimings.extend(timings)
        self._finishStep(result, action, seconds)
        self._startConfirm()

    # ----------------------------------------------- Segment Editor edits
    def _watchSegmentEdits(self, segmentationNode) -> None:
        """Notice edits of the segment made outside the Logic (e.g. in Segment Editor)."""
        self._segmentEdited = self._writingSegment = False
        segmentation = segmentationNode.GetSegmentation()
        if not self.hasObserver(segmentation, segmentation.SegmentModified, self.onSegmentModified):
            self.addObserver(segmentation, segmentation.SegmentModified, self.onSegmentModified)

    def onSegmentModified(self, caller=None, event=None) -> None:
        if self.session is not None and not getattr(self, "_writingSegment", False):
            self._segmentEdited = True

    def _warnIfEdited(self, refining: bool) -> None:
        """The engine refines from its own mask: say so instead of overwriting edits silently."""
        if refining and getattr(self, "_segmentEdited", False):
            self._segmentEdited = False
            self._warn("The GTVp segment was edited outside InteractiveRefine; this click refines the "
                       "module's own mask, so those edits inside the ROI are replaced (Undo restores them "
                       "only as the module's mask)")
