"""A warm start when the module opens, the model-package cache, and compiled networks (issue 29).
A mixin of :class:`~.logic.RefineLogic`.

- :meth:`~WarmStartMixin.warmUp` (the Widget calls it when the module is shown): a daemon thread
  imports torch, MONAI and the engine, loads the panel's model package into the cache the next
  Segment reuses, and on CUDA creates the context. It returns at once, never raises (errors are
  logged; Segment then reports them as usual), never takes the session's lock, and does nothing
  while torch or MONAI are missing (their installation is offered at Segment, not here). A Segment
  pressed meanwhile waits for it (MONAI's imports break when two threads run them at once).
- The ``compileNetworks`` parameter (the panel's check box, on by default): sessions on CUDA
  ``torch.compile`` their refine networks in the background after the initial segmentation
  (``InferenceBackend.compile_in_background``); eager networks serve the clicks until the compiled
  ones are ready, and the status says when they are. Never on the CPU (compiling takes minutes
  there) unless :attr:`~WarmStartMixin.compileOnCpu`. A change applies at the next Segment.

Slicer's idle event loop holds the GIL (PythonQt runs without thread support), so the Widget's
timer calls :meth:`~WarmStartMixin.pollBackground`, whose short waits let these threads advance.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from . import dependencies

logger = logging.getLogger("InteractiveRefineSlicerLib.logic")

#: The warm-up thread's name (its log records are not relayed to the panel as an action's warnings).
WARMUP_THREAD = "InteractiveRefine-warmup"
#: The engine's compile thread (``InferenceBackend.compile_in_background``).
COMPILE_THREAD = "interactive-refine-compile"
_locksLock = threading.Lock()
_loadLocks: dict = {}  # one per package folder: a Segment waits for the warm-up's load of it


def _loadLock(key) -> threading.Lock:
    with _locksLock:
        return _loadLocks.setdefault(key, threading.Lock())


class WarmStartMixin:
    """Needs ``params``, ``session``, ``idleCallback`` and ``_log`` from the Logic."""

    #: Loaded model packages by (folder, card modification time), shared by every Logic.
    _packageCache: dict = {}
    #: ``torch.compile`` mode of the compiled networks (``InteractiveRefineLib.backend.COMPILE_MODES``).
    compileMode = "default"
    #: Compile on the CPU too (off: it takes minutes there); tests and scripts.
    compileOnCpu = False
    #: ``torch.compile`` backend; None: the engine's (inductor). Tests use "eager" (no C++ build).
    compileBackend = None
    _warmThread = None
    _compileAnnounced = None
    #: What the latest warm-up did: seconds per part (``import_s``, ``load_s``, ``cuda_s``,
    #: ``total_s``), ``skipped`` or ``error``; empty while none has finished.
    warmUpInfo: dict = {}

    # ------------------------------------------------------------ the package
    def getModelPackage(self, modelPath: str | None = None, device: str = "auto"):
        """The verified model package (empty path = the shipped default), loaded once per folder
        (``device`` is accepted for compatibility: a package is loaded on the CPU)."""
        return self._loadPackage(modelPath, announce=True)

    def _loadPackage(self, modelPath, announce: bool):
        from InteractiveRefineLib.model_package import load_model_package, resolve_model_dir

        path = os.path.abspath(str(resolve_model_dir(modelPath)))  # a shipped package's name, too
        card = os.path.join(path, "model.json")
        key = (path, os.path.getmtime(card) if os.path.isfile(card) else None)
        with _loadLock(key):  # a warm-up loading this package: wait for it rather than load it twice
            if key not in self._packageCache:
                if announce:  # the main thread (the warm-up thread must not call the panel)
                    self._log(f"Loading model from {path}")
                self._packageCache[key] = load_model_package(path if modelPath else None)
            return self._packageCache[key]

    # -------------------------------------------------------------- warm-up
    def warmUp(self, modelPath: str | None = None, device: str | None = None) -> bool:
        """Start the warm-up thread (see the module docstring) for ``modelPath`` and ``device``
        (None: the panel's). Returns at once: True when a warm-up started."""
        try:
            if self.warmUpRunning:
                return False
            missing = [p.describe() for p in dependencies.problems()]
            if missing:  # the Widget offers the installation at Segment
                self.warmUpInfo = {"skipped": "packages not as required: " + ", ".join(missing)}
                logger.info("Warm-up skipped: %s", self.warmUpInfo["skipped"])
                return False
            params = self.params
            modelPath = params.modelPath if modelPath is None else modelPath
            device = device or params.device or "auto"
            from InteractiveRefineLib.runtime import apply_process_settings

            apply_process_settings()  # before torch is imported, as for a session
            self.warmUpInfo = {}
            thread = threading.Thread(target=self._warmUp, args=(modelPath, device), name=WARMUP_THREAD,
                                      daemon=True)
            self._warmThread = thread
            thread.start()
            return True
        except Exception:  # noqa: BLE001 - a convenience: it must never disturb the panel
            logger.exception("Starting the warm-up failed")
            return False

    def _warmUp(self, modelPath, device) -> None:
        t0 = time.perf_counter()
        info = {}
        try:
            import monai  # noqa: F401 - the imports are the warm-up
            import torch
            from InteractiveRefineLib import session  # noqa: F401 - the engine's own imports

            info["import_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            self._loadPackage(modelPath, announce=False)
            info["load_s"] = time.perf_counter() - t1
            if device in ("auto", "cuda") and torch.cuda.is_available():
                t1 = time.perf_counter()
                torch.zeros(1, device="cuda")  # creates the CUDA context
                torch.cuda.synchronize()
                info["cuda_s"] = time.perf_counter() - t1
        except Exception as error:  # noqa: BLE001 - logged; Segment reports it the usual way
            info["error"] = f"{type(error).__name__}: {error}"
            logger.warning("Warm-up failed (Segment will report it): %s", info["error"])
        info["total_s"] = time.perf_counter() - t0
        self.warmUpInfo = info
        if "error" not in info:
            logger.info("Warm-up done in %.1f s: %s", info["total_s"],
                        ", ".join(f"{k} {v:.2f}" for k, v in info.items() if k != "total_s"))

    def _awaitWarmUp(self) -> None:
        """Before a new session: let a running warm-up end (two threads importing MONAI at once
        break its imports), calling ``idleCallback`` (the panel's processEvents) meanwhile; the
        package it loads is the one the session needs."""
        thread = self._warmThread
        while thread is not None and thread.is_alive():
            thread.join(0.05)
            if self.idleCallback:
                self.idleCallback()

    @property
    def warmUpRunning(self) -> bool:
        return self._warmThread is not None and self._warmThread.is_alive()

    def waitForWarmUp(self, timeoutSeconds=None) -> bool:
        """Wait for a running warm-up (scripts, tests); True when none runs any more."""
        if self._warmThread is not None:
            self._warmThread.join(timeoutSeconds)
        return not self.warmUpRunning

    # ---------------------------------------------------- compiled networks
    def setCompileNetworks(self, enabled: bool) -> None:
        """On: sessions on CUDA compile their refine networks in the background; from the next Segment."""
        self.params.compileNetworks = bool(enabled)

    def _setUpCompile(self, session):
        """The new session's compile switch (the engine starts compiling after the initial pass)."""
        backend = session.backend
        on = self.params.compileNetworks and (backend.device.type == "cuda" or self.compileOnCpu)
        backend.compile_mode = self.compileMode if on else None
        if self.compileBackend:
            backend.compile_backend = self.compileBackend
        self._compileAnnounced = None
        return session

    @property
    def compiling(self) -> bool:
        """True while the session's networks compile in the background."""
        return self.session is not None and self.session.backend.compiling

    @property
    def backgroundRunning(self) -> bool:
        """A warm-up or a compilation runs (the Widget's timer polls while this is True)."""
        return self.warmUpRunning or self.compiling

    def pollBackground(self, timeoutSeconds: float = 0.05) -> bool:
        """The Widget's timer: wait up to ``timeoutSeconds`` (releasing the GIL) for the warm-up or
        the compilation, say when the compiled network is ready; True while one still runs."""
        if self.warmUpRunning:
            self._warmThread.join(timeoutSeconds)
            if self.warmUpRunning:
                return True
        if self.compiling:
            self.session.backend.wait_compiled(timeoutSeconds)
            if self.compiling:
                return True
        self._announceCompile()
        return False

    def _announceCompile(self) -> None:
        """Once per session, when its compilation has ended: ready, or failed (eager clicks go on)."""
        session = self.session
        if session is None or session is self._compileAnnounced or not session.backend.compile_mode:
            return
        info = dict(session.backend.compile_info)
        if not info or session.backend.compiling:
            return
        self._compileAnnounced = session
        if "error" in info:
            self._log(f"Compiling the network failed after {info['seconds']:.0f} s ({info['error']}); "
                      "clicks run on the uncompiled network")
        else:
            self._log(f"Compiled network ready ({info['mode']} mode, compiled in {info['seconds']:.0f} s): "
                      "the next clicks use it")

    def _compileNote(self, result) -> str:
        """The status line's note after a step that ran on the compiled networks."""
        self._announceCompile()
        session = self.session
        used = session is not None and session.backend.last_compiled and not result.exact
        return ", compiled network" if used and result.mode == "full" else ""
