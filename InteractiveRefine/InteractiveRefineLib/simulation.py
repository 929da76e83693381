"""The simulated interaction loop (paper Algorithm 1) on one case, as the user would get it.

:func:`click_loop` is the one click loop: the simulated user sees the session's working grid
(the truth is resampled onto it with nearest neighbour) inside the CT, and its click is
converted to RAS and applied exactly like a Slicer markup. ``interactive-refine simulate``
and the training package's ``evaluate`` (through :func:`run_simulation`), the headless batch
(through the Slicer Logic) and the latency benchmark all drive it. Metrics are computed on the
CT grid against the label, i.e. on what the user receives. The training loop, a backward pass
per click on tensors, shares only :class:`~.simulated_user.SimulatedUser`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from . import classes, geometry
from .errors import ImageError, InteractiveRefineError
from .geometry import Volume
from .metrics import all_metrics, dice, json_number
from .simulated_user import SimulatedClick, make_user
from .threshold import innermost_point

#: The threshold fractions of the one-click baseline (:func:`one_click_baseline`).
BASELINE_FRACTIONS = (0.4, 0.5)

#: The per-step metric curves of :func:`run_simulation` (index t = after t clicks).
CURVES = ("dice", "hd95_mm", "assd_mm", "surface_dice_1mm")


def truth_on_grid(label: Volume, grid: geometry.Grid, label_value: int = 1) -> np.ndarray:
    """Boolean mask of ``label == label_value`` resampled (nearest) onto ``grid``."""
    binary = (np.rint(label.array) == label_value).astype(np.float32)
    return geometry.resample(binary, label.grid, grid, order=0, cval=0.0) > 0.5


def labels_on_grid(label: Volume, grid: geometry.Grid, labels=(1, 2)) -> np.ndarray:
    """The class map of a label map (uint8: 0 background, c + 1 where ``label == labels[c]``,
    e.g. GTVp 1 and GTVn 2), resampled (nearest) onto ``grid``: what the simulated user reads for
    a model with several classes."""
    values = classes.labels_of(np.rint(label.array), labels).astype(np.float32)
    return np.rint(geometry.resample(values, label.grid, grid, order=0, cval=0.0)).astype(np.uint8)


def label_centroid_ras(label: Volume, label_value: int = 1):
    """RAS centroid of ``label == label_value`` (the paper centres its ROI on the GTVp), or None
    when the label has no such voxel."""
    voxels = np.argwhere(np.rint(label.array) == label_value)
    if not len(voxels):
        return None
    return label.grid.index_to_ras(voxels.mean(axis=0)[::-1])


class LoopStep(NamedTuple):
    """One click of :func:`click_loop`."""

    step: int  #: 1 for the first click
    click: SimulatedClick  #: the user's click: working-grid index ``(k, j, i)`` and sign
    ras: np.ndarray  #: the click in RAS mm, as given to ``apply``
    result: Any  #: what ``apply`` returned (by default the session's ``StepResult``)


def click_loop(
    session,
    truth_work: np.ndarray,
    n_clicks: int,
    user,
    inside: np.ndarray | None = None,
    apply: Callable[[np.ndarray, bool], Any] | None = None,
) -> Iterator[LoopStep]:
    """Up to ``n_clicks`` clicks of ``user`` on ``session``, one :class:`LoopStep` per click.

    Args:
        session: a :class:`~.session.RefinementSession` whose image and initial state are set.
        truth_work: boolean ``[k, j, i]`` truth on ``session.grid`` (:func:`truth_on_grid`), or
            for a model with several classes an integer class map (:func:`labels_on_grid`): then
            the user sees the session's label map as a class map, and a positive click carries
            its class (``apply(ras, positive, label=name)``).
        n_clicks: the most clicks; the loop stops earlier when the user returns None (no error
            left on what it sees).
        user: anything with ``next_click(prediction, truth) -> SimulatedClick | None``
            (:class:`~.simulated_user.SimulatedUser`).
        inside: boolean ``[k, j, i]`` working-grid voxels the user can click; None (default):
            those inside the CT (:func:`geometry.inside_mask`), since the ROI may extend past
            the CT's field of view. The user sees prediction and truth only there.
        apply: ``apply(ras, positive)`` places the click; None: ``session.add_click``. The
            batch passes the Slicer Logic's ``addClick``, the benchmark a timed click.

    The caller's loop body runs between two clicks: what it does to the session (scoring,
    ``confirm()``, ``undo()``) is what the user sees when choosing the next click.
    """
    if inside is None:
        inside = geometry.inside_mask(session.ct.grid, session.grid)
    multi = np.asarray(truth_work).dtype != bool
    if multi:
        truth = np.where(inside, truth_work, 0).astype(np.uint8)
    else:
        truth = np.asarray(truth_work, dtype=bool) & inside
    if apply is None:
        apply = session.add_click
    for step in range(1, int(n_clicks) + 1):
        mask = session.mask_on_working_grid()
        if multi:
            prediction = np.where(inside, classes.labels_of(mask, session.card.labels), 0).astype(np.uint8)
        else:
            prediction = mask.astype(bool) & inside
        click = user.next_click(prediction, truth)
        if click is None:
            return
        ras = session.grid.index_to_ras(np.array(click.index[::-1], dtype=float))
        if click.label is None:
            yield LoopStep(step, click, ras, apply(ras, click.positive))
        else:
            yield LoopStep(step, click, ras, apply(ras, click.positive, label=session.classes[click.label]))


def run_simulation(
    session,
    label: Volume,
    n_clicks: int,
    seed: int = 0,
    preset: str = "2sicr",
    label_value: int = 1,
    surface_metrics: bool = True,
    on_step=None,
    exact: bool = True,
    baseline: bool = True,
    label_name: str | None = None,
    uncertainty_passes: int | None = None,
) -> dict:
    """Initial segmentation plus ``n_clicks`` simulated clicks; metrics after every step.

    ``session`` must already have its image set. Returns the ``simulate --json`` structure:
    ``dice``, ``hd95_mm``, ``assd_mm``, ``surface_dice_1mm`` and ``changed_voxels`` (index t =
    after t clicks), ``clicks`` (RAS + sign) and ``seconds_per_click``. Stops early when the
    prediction has no error left on the working grid (remaining entries repeat the last state).
    ``on_step(t, metrics)`` is called after each step (progress reporting).

    ``exact`` (default): every preview (a step refined in reduced precision or in a window) is
    replaced by the exact float32 whole-ROI mask (``session.confirm()``) before it is scored and
    the next click is chosen, so the results do not depend on the CPU's bfloat16 support;
    ``seconds_per_click`` is the preview's time and ``exact_seconds_per_click`` the time to the
    exact mask. False scores the previews.

    ``baseline`` (with a PET): also ``out["baseline"]``, the classical one-click floor from the
    tumour's innermost voxel (:func:`one_click_baseline`). ``label_name``: the label's file, for
    the message when it has no such voxel inside the CT.

    A model with several classes (GTVp, GTVn): ``label`` is a label map with the card's label
    values (``label_value`` is not used), the user sees class maps (:func:`labels_on_grid`) and
    gives each positive click its class, ``out["dice_per_class"]`` holds each class's Dice per
    step (``{"gtvp": [...], "gtvn": [...]}``), the curves above score all classes together (any
    class against any class), each click has its ``label`` and the baseline is the first class's.

    ``preset`` "suggest" (the engine's suggested next click as the user, :class:`~.simulated_user.
    SuggestUser`, ``uncertainty_passes`` passes per click; None: the engine's default): also
    ``out["suggest"]``, its ``passes``, ``fallback_clicks`` (clicks the 2sicr user made because
    there was no suggestion), ``fallback_steps`` and ``uncertainty_seconds`` per click.
    """
    multi = len(session.classes) > 1
    truth_ct = _truth(label, session.ct.grid, session, label_value)
    if not truth_ct.any():
        where = f"{label_name}: " if label_name else ""
        wanted = f"value {label_value}" if not multi else f"a value among {list(session.card.labels)}"
        raise ImageError(f"{where}the label has no voxel with {wanted} inside the CT")
    inside = geometry.inside_mask(session.ct.grid, session.grid)
    truth_work = _truth(label, session.grid, session, label_value)
    user = make_user(preset, seed, session, uncertainty_passes, inside)
    out = {key: [] for key in CURVES + ("changed_voxels", "clicks", "seconds_per_click")}
    out.update(seed=seed, preset=preset)
    if multi:
        out["dice_per_class"] = {name: [] for name in session.classes}
    if exact:
        out["exact_seconds_per_click"] = []
    score = _Scorer(session, truth_ct, out, surface_metrics, on_step)

    session.initial()
    _make_exact(session, exact)
    if baseline and session.image.pet is not None:
        out["baseline"] = one_click_baseline(session, truth_ct == 1 if multi else truth_ct, exact)
    score()
    timed = _timed(session.add_click)
    for step in click_loop(session, truth_work, n_clicks, user, inside=inside, apply=timed):
        seconds = step.result[1]
        out["seconds_per_click"].append(seconds)
        if exact:
            out["exact_seconds_per_click"].append(seconds + _make_exact(session, exact))
        click = {"ras": [float(v) for v in step.ras], "positive": step.click.positive}
        if step.click.label is not None:
            click["label"] = session.classes[step.click.label]
        result = step.result[0]
        if result.removed_ml > 0:  # region removal took regions marked "not tumour" away
            click["removed_ml"] = round(float(result.removed_ml), 3)
        if "stage" in result.details:  # a card stage other than refine answered (e.g. unanchored)
            click["stage"] = result.details["stage"]
        if "kept_rejected" in result.details:  # a region marked "not tumour" stays: this click is beside it
            click["kept_rejected"] = result.details["kept_rejected"]
        out["clicks"].append(click)
        score()
    if hasattr(user, "summary"):
        out["suggest"] = user.summary()
    _pad(out, n_clicks)
    return out


def _truth(label: Volume, grid, session, label_value: int) -> np.ndarray:
    """The truth on ``grid``: boolean (one class) or a class map (several classes)."""
    if len(session.classes) > 1:
        return labels_on_grid(label, grid, session.card.labels)
    return truth_on_grid(label, grid, label_value)


def _pad(out: dict, n_clicks: int) -> None:
    """Repeat the last step up to ``n_clicks`` (the user stopped: no error left)."""
    while len(out["dice"]) < n_clicks + 1:
        for key in CURVES:
            out[key].append(out[key][-1])
        for curve in out.get("dice_per_class", {}).values():
            curve.append(curve[-1])
        out["changed_voxels"].append(0)


def _timed(apply: Callable) -> Callable:
    """``apply`` that returns ``(its result, wall seconds)``."""

    def run(ras, positive, **label):
        t0 = time.perf_counter()
        result = apply(ras, positive, **label)
        return result, time.perf_counter() - t0

    return run


def _make_exact(session, exact: bool) -> float:
    """Seconds to replace a preview by the exact mask (``session.confirm()``; 0 when exact)."""
    t0 = time.perf_counter()
    if exact and session.needs_confirm:
        session.confirm()
    return time.perf_counter() - t0


class _Scorer:
    """Appends the metrics of the session's current CT-grid mask to :func:`run_simulation`'s
    curves (``changed_voxels``: voxels that differ from the previous step's mask)."""

    def __init__(self, session, truth_ct, out: dict, surface_metrics: bool, on_step):
        self.session, self.truth_ct, self.out = session, truth_ct, out
        self.truth_any = truth_ct if truth_ct.dtype == bool else truth_ct > 0  # all classes together
        self.surface_metrics, self.on_step = surface_metrics, on_step
        self.previous = None

    def __call__(self) -> None:
        labelled = self.session.mask_on_ct()
        per_class = self.out.get("dice_per_class")
        if per_class is not None:  # several classes: each class's Dice, then all together
            labelled = classes.labels_of(labelled, self.session.card.labels)
            for c, curve in enumerate(per_class.values()):
                curve.append(json_number(dice(labelled == c + 1, self.truth_ct == c + 1)))
        mask = labelled.astype(bool)
        if self.surface_metrics:
            values = all_metrics(mask, self.truth_any, self.session.ct.grid.spacing)
        else:
            values = {"dice": dice(mask, self.truth_any)}
        for key in CURVES:
            self.out[key].append(json_number(values.get(key, float("nan"))))
        changed = 0 if self.previous is None else int((labelled != self.previous).sum())
        self.out["changed_voxels"].append(changed)
        self.previous = labelled
        if self.on_step is not None:
            self.on_step(len(self.out["dice"]) - 1, values)


def threshold_dice(pet, seed_ras, truth_ct: np.ndarray, ct_grid, fraction: float, method: str | None = None):
    """``(Dice, region)`` of the PET threshold region (:func:`.threshold.threshold_region`) around
    ``seed_ras``, mapped to the CT grid, against ``truth_ct``; raises what the region raises
    (:class:`~.errors.ThresholdError`, e.g. no uptake there)."""
    from .threshold import threshold_region

    region = threshold_region(pet, seed_ras, fraction, method=method)
    on_ct = geometry.resample(region.mask.astype(np.float32), pet.grid, ct_grid, order=1) > 0.5
    return float(dice(on_ct, truth_ct)), region


def one_click_baseline(session, truth_ct: np.ndarray, exact: bool = True,
                       fractions=BASELINE_FRACTIONS) -> dict:
    """The one-click floor a clinician compares with, from one click at the tumour's innermost
    voxel (largest distance to the label's border): Dice of the PET threshold regions (the
    connected region of PET >= f x the SUVmax within 10 mm, on the PET grid, mapped to the CT;
    :mod:`.threshold`), and Dice of the model after that same click as its first, positive click
    (``model_one_click``) and after the session's threshold click (``threshold_click``: the region
    inside the ROI, as the threshold tool gives it). Leaves the session at its initial state.

    A value is None, with the reason under ``notes``, when the click lies outside the ROI or the
    threshold is refused (e.g. no uptake there).
    """
    ct_grid, pet = session.ct.grid, session.image.pet
    seed = innermost_point(truth_ct, ct_grid)
    out = {"click_ras": [round(float(v), 3) for v in seed], "threshold": {}, "notes": []}
    for fraction in fractions:
        key = f"{fraction:g}"
        try:
            score, region = threshold_dice(pet, seed, truth_ct, ct_grid, fraction)
        except InteractiveRefineError as exc:
            out["threshold"][key] = None
            out["notes"].append(f"threshold {key}: {exc}")
            continue
        out["threshold"][key] = dict(dice=json_number(score), **region.summary())
    steps = {"model_one_click": lambda: session.add_click(seed, True),
             "threshold_click": lambda: session.add_threshold(seed, fractions[0], pet_is_suv=True)}
    for key, step in steps.items():
        try:
            step()
            _make_exact(session, exact)
            mask = session.mask_on_ct()  # the first class's (a label map's first label)
            out[key] = json_number(dice(mask == session.card.labels[0] if len(session.classes) > 1
                                        else mask.astype(bool), truth_ct))
        except InteractiveRefineError as exc:
            out[key] = None
            out["notes"].append(f"{key}: {exc}")
        if session.step:
            session.reset()
    return out


def baseline_fields(baseline: dict | None) -> dict:
    """:func:`one_click_baseline`'s result as flat table columns (empty without one):
    ``threshold40_dice``, ``threshold50_dice``, ``model_one_click_dice``, ``threshold_click_dice``."""
    if not baseline:
        return {}
    regions = baseline.get("threshold", {})
    return {"threshold40_dice": (regions.get("0.4") or {}).get("dice"),
            "threshold50_dice": (regions.get("0.5") or {}).get("dice"),
            "model_one_click_dice": baseline.get("model_one_click"),
            "threshold_click_dice": baseline.get("threshold_click")}

