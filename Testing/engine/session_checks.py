"""Checks several engine test modules make on a live ``RefinementSession``."""
from __future__ import annotations

import numpy as np
from InteractiveRefineLib import fast_refine, geometry


def assert_ct_mask_is_the_back_mapping(session) -> None:
    """The CT-grid mask equals the whole probability resampled onto the CT box and thresholded."""
    whole = geometry.resample(session.probability, session.grid, session._ct_box_grid, order=1)
    assert np.array_equal(session.mask_in_box(), (whole > session.package.threshold).astype(np.uint8))


def assert_tracked_statistics_exact(session) -> None:
    """The current state's tracked first-norm statistics equal those a full-ROI pass records on
    the same input (previous probability and clicks of the state)."""
    import torch

    state = session._history[-1]
    net = session._networks["refine"][0]
    name, _ = fast_refine.first_norm(net)
    whole = tuple(slice(0, n) for n in session.grid.shape)
    positives = [c.positive for c in state.clicks]
    x = session._refine_input(state.probability, state.click_indices, positives, whole)
    stats = {}
    with torch.inference_mode(), fast_refine.record_norm_stats(net, stats):
        net(x)
    mean, var = fast_refine.moments_to_stats(state.moments[0], int(np.prod(session.grid.shape)))
    assert torch.allclose(mean, stats[name][0], rtol=1e-4, atol=1e-5)
    assert torch.allclose(var, stats[name][1], rtol=1e-4, atol=1e-5)
