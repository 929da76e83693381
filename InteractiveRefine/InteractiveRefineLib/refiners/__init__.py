"""Refiners: how one click turns the previous state into a new probability.

Every refiner answers the same protocol, so the session does not know which one it runs:

- ``refine(state, clicks, *, exact, first) -> Proposal``: the new probability after ``clicks``
  (a :class:`Clicks`) from ``state``; ``exact`` asks for the float32 whole-ROI result; ``first``
  says that ``state`` is the initial segmentation;
- ``settle(proposal, state, probability, changed) -> dict``: values the refiner keeps with the
  new state (its ``memo``), once the constraints and the back-mapping are done;
- ``prepare(initial) -> float``: one-time work after the initial segmentation (seconds);
- ``settled(state)``: the state that :meth:`~..session.RefinementSession.confirm` left current.

:mod:`.full` is the paper's method on the whole ROI (the exact reference); :mod:`.window`
refines a window around the click.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Clicks:
    """The clicks after the new one: working-grid indices and signs, newest last, and the newest
    :class:`~..clicks.Click` itself (its kind and options), when there is one. ``labels``: per
    click, its class index 0..C-1 (empty: every click is class 0; :mod:`..classes`). ``stage``:
    the card stage whose networks refine them (:func:`refine_stage`)."""

    indices: tuple
    positives: tuple
    latest: object = None
    labels: tuple = ()
    stage: str = "refine"


def refine_stage(card, positives, roi_placement) -> str:
    """The card stage that refines after the clicks whose signs are ``positives`` (newest last):
    ``"unanchored"`` when the card has that stage, no click so far is positive, and the ROI was
    placed automatically (``roi_placement``: an :class:`..auto_roi.AutoRoi` the user did not
    give): nobody has yet said which hot region is the tumour. Otherwise ``"refine"``."""
    unanchored = not any(positives) and roi_placement is not None and not roi_placement.given
    return "unanchored" if unanchored and "unanchored" in card.stages else "refine"


@dataclass(frozen=True)
class Proposal:
    """A refiner's result before the constraints: float16 ``probability`` (writable, ROI);
    ``changed``: the box where it may differ from the previous state's (None: anywhere);
    ``window``: the box the network ran on (None: the whole ROI); ``exact``: float32 whole ROI;
    ``timings``: seconds; ``memo``: what :meth:`settle` needs; ``mode``: the step's name for the
    user (``full``, ``fast``, ``threshold``); ``details``: what the user is told besides the mask."""

    probability: np.ndarray
    changed: tuple | None
    window: tuple | None
    exact: bool
    timings: dict
    memo: dict = field(default_factory=dict)
    mode: str = "full"
    details: dict = field(default_factory=dict)
