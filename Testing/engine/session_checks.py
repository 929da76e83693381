"""Checks several engine test modules make on a live ``RefinementSession``."""
from __future__ import annotations

import numpy as np
from InteractiveRefineLib import geometry, netcopies


def assert_ct_mask_is_the_back_mapping(session) -> None:
    """The CT-grid mask equals the whole probability resampled onto the CT box and thresholded."""
    whole = geometry.resample(session.probability, session.grid, session.image.ct_box_grid, order=1)
    assert np.array_equal(session.mask_in_box(), (whole > session.package.threshold).astype(np.uint8))


def assert_tracked_statistics_exact(session) -> None:
    """The current state's tracked first-norm statistics equal those a full-ROI pass records on
    the same input (previous probability and clicks of the state)."""
    import torch

    state = session.history.current
    net = session.backend.networks["refine"][0]
    name, _ = netcopies.first_norm(net)
    x = session.refine_input(state)
    stats = {}
    with torch.inference_mode(), netcopies.record_norm_stats(net, stats):
        net(x)
    mean, var = netcopies.moments_to_stats(state.memo["moments"][0], int(np.prod(session.grid.shape)))
    assert torch.allclose(mean, stats[name][0], rtol=1e-4, atol=1e-5)
    assert torch.allclose(var, stats[name][1], rtol=1e-4, atol=1e-5)
