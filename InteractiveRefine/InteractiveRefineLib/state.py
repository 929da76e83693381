"""The interaction history: immutable states and the list that undo, reset and confirm act on."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from .errors import ClickError, SessionStateError


@dataclass(frozen=True, eq=False)
class State:
    """One step of a session: the clicks so far and what the model made of them.

    ``probability``: float16 ``[k, j, i]`` on the working grid (``[C, k, j, i]`` for C > 1 output
    classes); ``ct_mask``: uint8 on the CT box (the back-mapping of ``probability``: 0/1, or a
    label map for C > 1, :mod:`.classes`); both read-only. ``click_indices``: working-grid
    ``(k, j, i)`` per click. ``mode``: ``full`` or ``fast`` (a window, whose ``(start, stop)`` per
    axis is ``window``). ``rejections``: boolean working-grid regions rejected by negative clicks
    (:mod:`.constraints`). ``removed_ml``: what this step removed as rejected regions. ``exact``:
    the float32 whole-ROI result of these clicks. ``memo``: values a refiner derived from this
    state and may reuse (e.g. the window refiner's first-norm moments).
    """

    clicks: tuple
    click_indices: tuple
    probability: np.ndarray
    ct_mask: np.ndarray
    timings: dict = field(default_factory=dict)
    mode: str = "full"
    window: tuple | None = None
    rejections: tuple = ()
    removed_ml: float = 0.0
    exact: bool = True
    memo: dict = field(default_factory=dict)
    #: what the user is told about this step beyond the mask (e.g. a threshold region's SUVmax)
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        for array in (self.probability, self.ct_mask):
            array.setflags(write=False)


@dataclass(frozen=True)
class StepResult:
    """What one step produced: step number (0 = initial), clicks so far, timings (seconds), the
    mask's voxels and volume, the device, the state's ``mode`` (``full``, ``fast``: a window,
    whose working-grid ``(start, stop)`` per axis is ``window``; ``threshold``: a PET threshold
    region), the mL removed as regions marked "not tumour", ``exact`` (the float32 whole-ROI
    result; False for a preview) and ``details`` (e.g. the threshold region's SUVmax)."""

    step: int
    n_clicks: int
    timings: dict
    voxels: int
    volume_ml: float
    device: str
    mode: str = "full"
    window: tuple | None = None
    removed_ml: float = 0.0
    exact: bool = True
    details: dict = field(default_factory=dict)

    @classmethod
    def of(cls, state: State, step: int, device: str, voxel_ml: float) -> StepResult:
        voxels = int(np.count_nonzero(state.ct_mask))  # a label map's voxels of any class
        return cls(step, len(state.clicks), dict(state.timings), voxels, voxels * voxel_ml, device,
                   state.mode, state.window, state.removed_ml, state.exact, dict(state.details))


@contextlib.contextmanager
def exclusive(lock):
    """Hold ``lock`` while inside; a :class:`SessionStateError` ("busy") when another call holds
    it (the session is not thread-safe: concurrent calls are refused, not queued)."""
    if not lock.acquire(blocking=False):
        raise SessionStateError("the session is busy with another call; cancel it or wait")
    try:
        yield
    finally:
        lock.release()


class History:
    """The states of one image, step 0 (the initial segmentation) first.

    ``version`` grows with every change, so that work computed from an older history
    (:meth:`replace`) is not written over a newer one.
    """

    def __init__(self):
        self._states: list = []
        self.version = 0

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, index):
        return self._states[index]

    def __iter__(self):
        return iter(self._states)

    @property
    def states(self) -> tuple:
        return tuple(self._states)

    @property
    def current(self) -> State | None:
        return self._states[-1] if self._states else None

    @property
    def initial(self) -> State | None:
        return self._states[0] if self._states else None

    def start(self, state: State) -> None:
        """Forget everything; ``state`` is the new step 0."""
        self._states = [state]
        self.version += 1

    def clear(self) -> None:
        self._states = []
        self.version += 1

    def push(self, state: State) -> None:
        self._states.append(state)
        self.version += 1

    def undo(self) -> State:
        """Drop the last step; :class:`ClickError` when only the initial state is left."""
        if len(self._states) < 2:
            raise ClickError("there is no click to undo")
        self._states.pop()
        self.version += 1
        return self._states[-1]

    def reset(self) -> State:
        """Back to step 0."""
        del self._states[1:]
        self.version += 1
        return self._states[0]

    def replace(self, first: int, states, *, version: int) -> bool:
        """Replace the steps from ``first`` on with ``states`` (same number of steps), unless the
        history changed since ``version``; returns whether it did."""
        states = list(states)
        if version != self.version or len(states) != len(self._states) - first:
            return False
        self._states[first:] = states
        self.version += 1
        return True
