"""Messages to the user (log, progress, warnings, errors) and one action at a time. A mixin of
:class:`~.logic.RefineLogic`."""
from __future__ import annotations

import logging
from contextlib import contextmanager

logger = logging.getLogger("InteractiveRefineSlicerLib.logic")
#: Threads whose records are not an action's warnings (the warm-up; the engine's compilation,
#: whose outcome :mod:`.warmstart` reports).
_BACKGROUND_THREADS = ("InteractiveRefine-warmup", "interactive-refine-compile")


class _WarningRelay(logging.Handler):
    """Engine warnings during an action (e.g. low PET coverage) go to the user, not only the log."""

    def __init__(self, sink):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record):
        if record.name.startswith("InteractiveRefineLib.runtime"):  # process settings: log only
            return
        if record.threadName in _BACKGROUND_THREADS:  # not the action's: said from the main thread
            return
        self.sink(record.getMessage())


class ReportingMixin:
    """Needs the callbacks, ``session``, ``params``, ``_busy``, ``_syncQueued`` and ``_schedule``."""

    def _log(self, message: str) -> None:
        logger.info("%s", message)
        if self.logCallback:
            self.logCallback(message)

    def _progress(self, message: str, percent: int) -> None:
        if self.progressCallback:
            self.progressCallback(message, percent)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.warningCallback:
            self.warningCallback(message)

    def _reportError(self, message: str) -> None:
        if self.errorCallback:
            self.errorCallback(message)
        else:
            logger.error("%s", message)

    @property
    def busy(self) -> bool:
        return self._busy

    @contextmanager
    def _action(self, name: str):
        """One action at a time: a nested one (e.g. from events processed in a progress callback)
        is refused; markups events that arrive meanwhile are applied afterwards."""
        if self._busy:
            raise ValueError(f"InteractiveRefine is busy: {name} waits until the current step has finished")
        relay = _WarningRelay(self._warn)
        engineLogger = logging.getLogger("InteractiveRefineLib")
        self._busy = True
        engineLogger.addHandler(relay)
        if self.busyCallback:
            self.busyCallback(True)
        try:
            yield
        finally:
            engineLogger.removeHandler(relay)
            self._busy = False
            if self.busyCallback:
                self.busyCallback(False)
        if self._syncQueued and self.session is not None:
            self._syncQueued = False
            self._schedule(lambda: self._sync(applyPending=self.params.autoRefine))

