"""The simulated interaction loop (paper Algorithm 1) on one case, as the user would get it.

The simulated user sees the session's working grid (the truth is resampled onto it with nearest
neighbour); its click is converted to RAS and given to ``session.add_click`` exactly like a
Slicer markup. Metrics are computed on the CT grid against the label, i.e. on what the user
receives. Used by ``interactive-refine simulate``, the training package's ``evaluate`` and the
latency benchmark.
"""
from __future__ import annotations

import time

import numpy as np

from . import geometry
from .errors import ImageError
from .geometry import Volume
from .metrics import all_metrics, dice, json_number
from .simulated_user import SimulatedUser


def truth_on_grid(label: Volume, grid: geometry.Grid, label_value: int = 1) -> np.ndarray:
    """Boolean mask of ``label == label_value`` resampled (nearest) onto ``grid``."""
    binary = (np.rint(label.array) == label_value).astype(np.float32)
    return geometry.resample(binary, label.grid, grid, order=0, cval=0.0) > 0.5


def label_centroid_ras(label: Volume, label_value: int = 1):
    """RAS centroid of ``label == label_value`` (the paper centres its ROI on the GTVp), or None
    when the label has no such voxel."""
    voxels = np.argwhere(np.rint(label.array) == label_value)
    if not len(voxels):
        return None
    return label.grid.index_to_ras(voxels.mean(axis=0)[::-1])


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
) -> dict:
    """Initial segmentation plus ``n_clicks`` simulated clicks; metrics after every step.

    ``session`` must already have its image set. Returns the ``simulate --json`` structure:
    ``dice``, ``hd95_mm``, ``assd_mm``, ``surface_dice_1mm`` and ``changed_voxels`` (index t =
    after t clicks), ``clicks`` (RAS + sign) and ``seconds_per_click``. Stops early when the
    prediction has no error left on the working grid (remaining entries repeat the last state).
    ``on_step(t, metrics)`` is called after each step (progress reporting).

    ``exact`` (default): every preview (a step refined in reduced precision or in a window; only
    on a CPU with a large ROI) is replaced by the exact float32 whole-ROI mask
    (``session.confirm()``) before it is scored and the next click is chosen, so the results do
    not depend on the CPU's bfloat16 support; ``seconds_per_click`` is the preview's time and
    ``exact_seconds_per_click`` the time to the exact mask. False scores the previews.
    """
    ct_grid = session.ct.grid
    truth_ct = truth_on_grid(label, ct_grid, label_value)
    if not truth_ct.any():
        raise ImageError(f"the label has no voxel with value {label_value} inside the CT")
    # Where the ROI extends past the CT, the user can only click inside the image.
    inside = geometry.inside_mask(ct_grid, session.grid)
    truth_work = truth_on_grid(label, session.grid, label_value) & inside
    user = SimulatedUser(preset, np.random.default_rng(seed))
    spacing = ct_grid.spacing
    out = {key: [] for key in ("dice", "hd95_mm", "assd_mm", "surface_dice_1mm", "changed_voxels")}
    out.update({"clicks": [], "seconds_per_click": [], "seed": seed, "preset": preset})
    if exact:
        out["exact_seconds_per_click"] = []

    def record(previous):
        mask = session.mask_on_ct().astype(bool)
        if surface_metrics:
            values = all_metrics(mask, truth_ct, spacing)
        else:
            values = {"dice": dice(mask, truth_ct)}
        for key in ("dice", "hd95_mm", "assd_mm", "surface_dice_1mm"):
            out[key].append(json_number(values.get(key, float("nan"))))
        out["changed_voxels"].append(0 if previous is None else int((mask != previous).sum()))
        if on_step is not None:
            on_step(len(out["dice"]) - 1, values)
        return mask

    def make_exact() -> float:
        t0 = time.perf_counter()
        if exact and session.needs_confirm:
            session.confirm()
        return time.perf_counter() - t0

    session.initial()
    make_exact()
    mask = record(None)
    for _ in range(n_clicks):
        click = user.next_click(session.mask_on_working_grid().astype(bool) & inside, truth_work)
        if click is None:
            break
        ras = session.grid.index_to_ras(np.array(click.index[::-1], dtype=float))
        t0 = time.perf_counter()
        session.add_click(ras, click.positive)
        out["seconds_per_click"].append(time.perf_counter() - t0)
        if exact:
            out["exact_seconds_per_click"].append(out["seconds_per_click"][-1] + make_exact())
        out["clicks"].append({"ras": [float(v) for v in ras], "positive": click.positive})
        mask = record(mask)
    while len(out["dice"]) < n_clicks + 1:  # no error left: the mask stays as it is
        for key in ("dice", "hd95_mm", "assd_mm", "surface_dice_1mm"):
            out[key].append(out[key][-1])
        out["changed_voxels"].append(0)
    return out
