"""The exact follow-up of a preview: computed in the background (the engine's ``Worker``) and
written into the segment from the main thread. A mixin of :class:`~.logic.RefineLogic`."""
from __future__ import annotations


class ExactPassMixin:
    """Needs ``session``, ``params``, ``scheduler``, ``_worker``, ``_confirmJob``, ``_log``,
    ``_finishStep`` and ``_writeMask`` from the Logic."""

    def _stopConfirm(self, write: bool = True) -> None:
        """Cancel a background exact pass; one that finished first is written."""
        if self._worker is not None:
            self._worker.cancel()
        if write:
            self.applyConfirmed()
        self._confirmJob = None

    def _startConfirm(self) -> None:
        """After a step that left a preview: the exact mask, in the background with a scheduler
        (the Widget), else at once."""
        session = self.session
        if session is None or not session.needs_confirm or not self.params.exactFollowUp:
            return
        if self.confirmRunning:  # already on its way
            return
        if self.scheduler is None:
            self._showExact(session.confirm())
            return
        if self._worker is None:
            from InteractiveRefineLib.worker import Worker

            self._worker = Worker()
        self._confirmJob = self._worker.background(session.confirm)
        self._log("Computing the exact mask in the background (the next click cancels it)")
        if self.confirmStartedCallback:
            self.confirmStartedCallback()

    @property
    def confirmRunning(self) -> bool:
        return self._confirmJob is not None and self._confirmJob.running

    def waitForExactMask(self, timeoutSeconds=None) -> None:
        """Wait for a running background exact pass (scripts, tests); waiting releases the GIL."""
        if self._confirmJob is not None:
            self._confirmJob.join(timeoutSeconds)

    def pollExactMask(self, timeoutSeconds: float = 0.05) -> bool:
        """The Widget's timer: wait up to ``timeoutSeconds`` for the background exact pass, then
        write it if it is done. Slicer's main thread holds the GIL while its event loop idles
        (PythonQt runs without thread support), so the worker advances only while this waits."""
        self.waitForExactMask(timeoutSeconds)
        return self.applyConfirmed()

    def applyConfirmed(self) -> bool:
        """Main thread: write the finished background exact mask (True); False while it runs."""
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

    # ------------------------------------------------ cancellable new sessions
    def _runCancellable(self, session, function):
        """``function()`` (model work of a new ``session``: Segment, Replay) on a thread while the
        main thread waits with the GIL released and calls ``idleCallback`` (the Widget's
        processEvents) every 50 ms, so Cancel works; :meth:`cancel` stops it between two network
        layers (``ValueError``; the new session is discarded). Without ``idleCallback``: at once."""
        if self.idleCallback is None:
            return function()
        import threading

        from InteractiveRefineLib.backend import Cancelled

        cancel = self._foregroundCancel = threading.Event()
        outcome = {}

        def work():
            try:
                with session.backend.cancellable(cancel):
                    outcome["result"] = function()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
                outcome["error"] = exc

        thread = threading.Thread(target=work, name="InteractiveRefine-step", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.05)
            self.idleCallback()
        self._foregroundCancel = None
        if isinstance(outcome.get("error"), Cancelled):
            raise ValueError("Cancelled: the segment and the scene are as they were")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def cancel(self) -> None:
        """Stop a running Segment or Replay, or the background exact pass (the preview stays)."""
        if getattr(self, "_foregroundCancel", None) is not None:
            self._foregroundCancel.set()
        self._stopConfirm(write=False)
