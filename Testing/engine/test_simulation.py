"""The one simulated-user click loop (``simulation.click_loop``), on a stand-in session: what the
user sees, where it may click, and who applies the click."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from InteractiveRefineLib.geometry import Grid
from InteractiveRefineLib.simulated_user import SimulatedUser
from InteractiveRefineLib.simulation import LoopStep, click_loop

ROI = (8, 8, 8)


class FakeSession:
    """The part of ``RefinementSession`` the loop uses: an 8^3 working grid whose i >= 4 half lies
    outside the CT, a working-grid mask, and ``add_click`` setting the clicked voxel."""

    def __init__(self):
        self.grid = Grid(ROI, np.eye(4))
        self.ct = SimpleNamespace(grid=Grid((8, 8, 4), np.eye(4)))
        self.mask = np.zeros(ROI, dtype=bool)
        self.applied = []

    def mask_on_working_grid(self) -> np.ndarray:
        return self.mask.astype(np.uint8)

    def add_click(self, ras, positive):
        index = tuple(int(round(v)) for v in np.asarray(ras)[::-1])
        self.mask[index] = positive
        self.applied.append((index, positive))
        return f"result {len(self.applied)}"


def test_the_loop_clicks_only_inside_the_ct_and_applies_each_click_through_the_session():
    session = FakeSession()
    truth = np.ones(ROI, dtype=bool)  # the tumour fills the ROI, also beyond the CT
    steps = list(click_loop(session, truth, 5, SimulatedUser("2sicr", np.random.default_rng(0))))
    assert [s.step for s in steps] == [1, 2, 3, 4, 5]
    assert all(isinstance(s, LoopStep) and s.click.positive for s in steps)
    assert all(s.click.index[2] < 4 for s in steps), "a click outside the CT"
    # RAS of the working-grid index; the session's own add_click placed it and its result is yielded.
    assert [s.click.index for s in steps] == [index for index, _ in session.applied]
    assert [s.result for s in steps] == [f"result {n}" for n in range(1, 6)]
    np.testing.assert_allclose(steps[0].ras, np.array(steps[0].click.index[::-1], dtype=float))


def test_the_loop_ends_when_no_error_is_left_inside_the_ct():
    session = FakeSession()
    session.mask[:, :, :4] = True  # right inside the CT; the truth beyond it cannot be clicked
    truth = np.ones(ROI, dtype=bool)
    assert list(click_loop(session, truth, 3, SimulatedUser("2sicr"))) == []
    # With every voxel allowed, the same user finds the error beyond the CT edge.
    inside = np.ones(ROI, dtype=bool)
    (step,) = click_loop(session, truth, 1, SimulatedUser("2sicr"), inside=inside)
    assert step.click.index[2] >= 4


def test_a_given_apply_places_the_clicks_and_the_loop_body_runs_between_them():
    session = FakeSession()
    truth = np.zeros(ROI, dtype=bool)
    truth[2:6, 2:6, 0:3] = True
    before = []

    def apply(ras, positive):
        before.append(int(session.mask.sum()))  # the mask the click was chosen on
        return session.add_click(ras, positive)

    signs = []
    for step in click_loop(session, truth, 4, SimulatedUser("2sicr", np.random.default_rng(1)), apply=apply):
        signs.append(step.click.positive)
        session.mask[:] = False  # what the body does is what the next click is chosen on
    assert before == [0, 0, 0, 0]  # not 0, 1, 2, 3: each click came after the body's reset
    assert signs == [True] * 4  # an empty mask has only missed tumour
