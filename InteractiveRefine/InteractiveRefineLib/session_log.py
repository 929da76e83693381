"""A per-case session log a clinician can hand to a study: time to the accepted contour, clicks.

One CSV row per case (:data:`COLUMNS`): wall seconds from Segment to the accepted contour, the
clicks placed by kind (a click undone still counts: it was work), undo and reset counts, the
model and the device. The log watches the session's click list after every step
(:meth:`SessionLog.observe`), so it needs no hook in the click path::

    log = SessionLog(case_id="CHGJ007", model=package.spec.name, device="cpu")  # Segment pressed
    ...  log.observe(session.clicks, "click")  after each step ("undo", "reset", ...)
    log.accept(volume_ml); append_row(path, log.row())

The batch always writes ``session_log.csv``; the CLI with ``segment --session-log CSV``; the
Slicer Logic after ``setSessionLog(path)``.
"""
from __future__ import annotations

import csv
import datetime
import time
from pathlib import Path

COLUMNS = (
    "case_id", "started", "seconds_to_accept", "clicks_positive", "clicks_negative", "clicks_threshold",
    "clicks_total", "undos", "resets", "model", "model_version", "device", "volume_ml",
)


class SessionLog:
    """Counts one case's interaction from Segment (construction) to :meth:`accept`."""

    def __init__(self, case_id: str = "", model: str = "", model_version: str = "", device: str = "",
                 clock=time.perf_counter, t0: float | None = None):
        self.case_id, self.model, self.model_version, self.device = case_id, model, model_version, device
        self._clock = clock
        self._t0 = clock() if t0 is None else t0  #: when Segment was pressed (``clock``'s seconds)
        self.started = datetime.datetime.now().isoformat(timespec="seconds")
        self.counts = {"positive": 0, "negative": 0, "threshold": 0}
        self.undos = self.resets = 0
        self._seen = ()
        self.seconds = None
        self.volume_ml = None

    @staticmethod
    def kind(click) -> str:
        if getattr(click, "kind", "point") == "threshold":
            return "threshold"
        return "positive" if click.positive else "negative"

    def observe(self, clicks, action: str = "click") -> None:
        """The session's clicks after a step; ``action`` "undo" or "reset" is counted as such."""
        clicks = tuple(clicks)
        common = 0
        while common < min(len(clicks), len(self._seen)) and clicks[common] == self._seen[common]:
            common += 1
        for click in clicks[common:]:
            self.counts[self.kind(click)] += 1
        if action == "undo":
            self.undos += 1
        elif action == "reset":
            self.resets += 1
        self._seen = clicks

    def accept(self, volume_ml: float | None = None) -> None:
        """The contour is accepted now (written or exported): stops the clock."""
        self.seconds = self._clock() - self._t0
        self.volume_ml = volume_ml

    def row(self) -> dict:
        if self.seconds is None:
            self.accept(self.volume_ml)
        return {
            "case_id": self.case_id, "started": self.started, "seconds_to_accept": round(self.seconds, 3),
            "clicks_positive": self.counts["positive"], "clicks_negative": self.counts["negative"],
            "clicks_threshold": self.counts["threshold"], "clicks_total": sum(self.counts.values()),
            "undos": self.undos, "resets": self.resets, "model": self.model,
            "model_version": self.model_version, "device": self.device,
            "volume_ml": "" if self.volume_ml is None else round(float(self.volume_ml), 3),
        }


def append_row(path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (header written when the file is new or empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({key: row.get(key, "") for key in COLUMNS})
