"""One owner of background model work: the exact follow-up pass of a preview.

A :class:`Worker` runs at most one background job at a time. :meth:`Worker.run` cancels that job
(and waits for it, within one network layer) before it runs anything that changes the session,
so the session itself never needs a thread. GUI front ends call :meth:`Worker.poll` with a short
timeout from their event loop: waiting on the thread releases the GIL, so the job advances at
full speed even where the GUI's main thread otherwise holds it between events.
"""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class Job:
    """A background job: its thread, its cancel event and, once done, its result."""

    def __init__(self, fn, done=None, name: str = "InteractiveRefine-worker"):
        self.cancel_event = threading.Event()
        self.result = None
        self.failed = False
        self._fn, self._done = fn, done
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)

    def _work(self) -> None:
        try:
            self.result = self._fn(self.cancel_event)
        except Exception:  # noqa: BLE001 - a worker must not die silently
            self.failed = True
            logger.exception("the background pass failed; the preview mask stays")
        if self._done is not None:
            self._done(self.result)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


class Worker:
    """Runs model work for one front end: a background job, and foreground calls that cancel it."""

    def __init__(self, name: str = "InteractiveRefine-worker"):
        self.name = name
        self.job: Job | None = None

    def background(self, fn, done=None) -> Job:
        """Start ``fn(cancel_event)`` in a daemon thread (after cancelling the running job);
        ``done(result)`` is called in that thread when it ends (None when cancelled or failed)."""
        self.cancel()
        self.job = Job(fn, done, self.name)
        self.job.thread.start()
        return self.job

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def cancel(self) -> None:
        """Cancel the background job and wait for it to stop (it stops between two layers)."""
        job, self.job = self.job, None
        if job is not None and job.thread is not threading.current_thread():
            job.cancel_event.set()
            job.join()

    def run(self, fn, *args, **kwargs):
        """Cancel the background job, then call ``fn(*args, **kwargs)`` here and return its result."""
        self.cancel()
        return fn(*args, **kwargs)

    def poll(self, timeout_s: float = 0.0) -> Job | None:
        """Wait up to ``timeout_s`` for the background job; returns it once it has finished
        (and forgets it), else None."""
        job = self.job
        if job is None:
            return None
        job.join(timeout_s)
        if job.running:
            return None
        self.job = None
        return job
