"""The Logic's clinical additions: lesion measurements, the opt-in session log, PET DICOM as SUV.

A mixin of ``RefineLogic`` (MRML only, no Qt). The engine computes (``measurements``,
``session_log``, ``dicom_series``); this file only reads the Logic's state and makes nodes.
"""
from __future__ import annotations

import os
import time

import numpy as np
import slicer


class ClinicalMixin:
    """``lesionMeasurements()``, ``setSessionLog(path)`` / ``acceptContour()``, ``loadPetVolume(path)``."""

    _sessionLogPath = None
    _sessionLog = None

    # ------------------------------------------------------------ measurements
    def lesionMeasurements(self, mtvFraction: float = 0.41) -> dict:
        """``{"GTVp": {volume_ml, suv_max, suv_peak, suv_mean, mtv_ml, tlg, mtv_threshold,
        mtv_definition}}`` of the segment as written, on the session's PET (engine
        ``measurements.measure_classes``; SUV values None without a PET). A model with several
        classes: a row per class (``"GTVp"``, ``"GTVn"``, an empty class too), each measured on its
        own segment's voxels."""
        from InteractiveRefineLib.measurements import classes_of, measure_classes

        self._requireSession()
        session = self.session
        if len(session.classes) > 1:
            return measure_classes(self.labelMap(), session.ct.grid, session.image.pet,
                                   classes_of(session.labels), mtv_fraction=mtvFraction)
        return measure_classes(self.segmentMask(), session.ct.grid, session.image.pet,
                               mtv_fraction=mtvFraction)

    # ------------------------------------------------------------- session log
    def setSessionLog(self, path: str | None, caseId: str = "") -> None:
        """Append one row per accepted contour to the CSV ``path`` (None: no log, the default)."""
        self._sessionLogPath = os.fspath(path) if path else None
        self._sessionLogCase = caseId
        self._sessionLog = None

    def _logStep(self, action: str, seconds: float) -> None:
        """Called by ``_finishStep``: a new log at the initial model, the clicks after each step."""
        if self._sessionLogPath is None or self.session is None:
            return
        from InteractiveRefineLib.session_log import SessionLog

        if action == "initial model" or self._sessionLog is None:
            card = self.session.card
            started = time.perf_counter() - seconds  # Segment was pressed ``seconds`` ago
            self._sessionLog = SessionLog(self._sessionLogCase, card.name, card.version,
                                          str(self.session.device), t0=started)
        self._sessionLog.observe(self.session.clicks, action)

    def acceptContour(self) -> dict | None:
        """The user accepts the contour: append the session-log row (when a log is set); returns it."""
        if self._sessionLogPath is None or self._sessionLog is None:
            return None
        from InteractiveRefineLib.session_log import append_row

        volume = self.lastResult.volume_ml if self.lastResult is not None else None
        if volume is not None and len(self.classes) > 1:  # the first class's (GTVp), as the CLI's log
            volume = next(iter(self._classStatus()["classVolumes"].values()))
        self._sessionLog.accept(volume)
        row = self._sessionLog.row()
        append_row(self._sessionLogPath, row)
        self._sessionLog = None
        return row

    def loadCtVolume(self, path: str, name: str | None = None):
        """A CT volume node: a DICOM folder through the engine's reader (the grid a DICOM SEG or
        RTSTRUCT of the result refers to), a file through :meth:`loadVolume`."""
        if not os.path.isdir(path):
            return self.loadVolume(path, name)
        from InteractiveRefineLib.dicom_series import read_series

        volume = read_series(path, "CT").volume
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or os.path.basename(path))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array, dtype=np.float32))
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(volume.ijk_to_ras))
        return node

    # --------------------------------------------------------------- PET as SUV
    def loadPetVolume(self, path: str, name: str | None = None, allowImplausible: bool = False):
        """A PET volume node in SUVbw: a DICOM folder is converted (engine ``dicom_series``, tags
        refused by name), a file is loaded as it is (already SUV)."""
        if not os.path.isdir(path):
            return self.loadVolume(path, name)
        from InteractiveRefineLib.dicom_series import read_pet_series

        volume, info = read_pet_series(path, allow_implausible=allowImplausible)
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or os.path.basename(path))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array, dtype=np.float32))
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(volume.ijk_to_ras))
        node.SetAttribute("InteractiveRefine.SUV", info.method)
        return node
