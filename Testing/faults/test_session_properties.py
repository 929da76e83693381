"""Property test: random add_click / undo / reset sequences on a tiny network.

Hypothesis draws at least 300 sequences (derandomized: the same ones on every run) of clicks
anywhere in a 16^3 ROI, clicks outside it, undo and reset, and checks after every step that
- undo restores the previous state's probability and CT mask bit for bit;
- reset returns the initial mask, bit for bit;
- a refused click (outside the ROI, nothing to undo) changes nothing;
- replaying the surviving clicks from the initial state reproduces the mask.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from InteractiveRefineLib.errors import InteractiveRefineError
from InteractiveRefineLib.model_package import create_random_model_package
from InteractiveRefineLib.networks import TINY_NETWORK
from InteractiveRefineLib.phantom import make_phantom
from InteractiveRefineLib.session import RefinementSession

ROI = (16, 16, 16)
SEQUENCES = 300

_voxel = st.tuples(*(st.integers(0, n - 1) for n in ROI))
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("click"), _voxel, st.booleans()),
        st.tuples(st.just("outside"), st.just(None), st.booleans()),
        st.tuples(st.just("undo"), st.just(None), st.just(None)),
        st.tuples(st.just("reset"), st.just(None), st.just(None)),
    ),
    min_size=1, max_size=8,
)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a 16^3 ROI, thread hand-offs cost more than the convolutions."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def session(tmp_path_factory, one_thread):
    package = create_random_model_package(tmp_path_factory.mktemp("tiny16"), network=TINY_NETWORK,
                                          roi_size_vox=ROI, seed=0)
    ct, pet, _ = make_phantom(seed=0, shape=(24, 32, 32))
    session = RefinementSession(package, device="cpu", refine_mode="full", amp=False)
    session.set_image(ct, pet)
    session.initial()
    return session


def _snapshot(session):
    return session.probability.copy(), session.mask_on_ct().copy()


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _apply(session, operation, stack, clicks, stats) -> None:
    kind, voxel, positive = operation
    before = _snapshot(session)
    if kind == "click":
        ras = session.grid.index_to_ras(np.array(voxel[::-1], dtype=float))
        session.add_click(ras, positive)
        stack.append(before)
        clicks.append((ras, positive))
        return
    if kind == "reset":
        session.reset()
        assert _same(_snapshot(session), stack[0]), "reset did not return the initial mask"
        del stack[1:], clicks[:]
        return
    if kind == "undo" and len(stack) > 1:
        session.undo()
        assert _same(_snapshot(session), stack.pop()), "undo was not bit-exact"
        clicks.pop()
        return
    with pytest.raises(InteractiveRefineError):  # nothing to undo, or a click outside the ROI
        if kind == "undo":
            session.undo()
        else:
            session.add_click(session.grid.index_to_ras(np.array([-40.0, 5.0, 5.0])), positive)
    stats["refused"] += 1
    assert _same(_snapshot(session), before), "a refused action changed the state"


def test_random_click_undo_reset_sequences_keep_their_guarantees(session):
    stats = {"sequences": 0, "steps": 0, "refused": 0, "replays": 0}
    initial = (session.reset(), _snapshot(session))[1]

    @settings(max_examples=SEQUENCES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operations=OPERATIONS)
    def sequence(operations):
        session.reset()
        stack, clicks = [initial], []
        for operation in operations:
            _apply(session, operation, stack, clicks, stats)
            stats["steps"] += 1
        final = _snapshot(session)
        session.reset()
        for ras, positive in clicks:
            session.add_click(ras, positive)
        assert _same(_snapshot(session), final), "replaying the clicks gave another mask"
        stats["replays"] += 1
        stats["sequences"] += 1

    sequence()
    print(f"property test: {stats}, violations: 0")
    assert stats["sequences"] >= SEQUENCES and stats["replays"] == stats["sequences"]
