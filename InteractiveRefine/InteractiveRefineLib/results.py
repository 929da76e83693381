"""What a :class:`~.session.RefinementSession` shows of its current state: clicks, classes, the
probability and the masks on the working and CT grids, timings, and the step's result. A mixin:
the session owns the history, the card and the image it reads."""
from __future__ import annotations

import numpy as np

from . import classes
from .errors import SessionStateError
from .inputs import image as image_inputs
from .state import State, StepResult


class SessionResults:
    @property
    def clicks(self) -> tuple:
        return self.history.current.clicks if len(self.history) else ()

    @property
    def classes(self) -> tuple:
        """The model's output classes (names, e.g. ``("gtvp", "gtvn")``), in channel order."""
        return self.card.classes

    @property
    def labels(self) -> dict:
        """Each class's value in the label maps: ``{name: label}``."""
        return {output.name: output.label for output in self.card.outputs}

    @property
    def step(self) -> int:
        return len(self.history) - 1

    @property
    def probability(self) -> np.ndarray:
        """Current foreground probability on the working grid (float32 ``[k, j, i]``; per class
        ``[C, k, j, i]`` for C > 1 output classes)."""
        return self._require_state().probability.astype(np.float32)

    @property
    def ct_box(self) -> tuple[slice, slice, slice]:
        """The ``[k, j, i]`` slices of the CT grid that the ROI covers (the only part written)."""
        return self._require_image().ct_box

    def mask_in_box(self) -> np.ndarray:
        """Current mask (uint8) on the CT grid restricted to :attr:`ct_box`: 0/1 for one class,
        else a label map (0 background, else the label of the most probable class above the
        threshold, :attr:`labels`), as every mask below."""
        return self._require_state().ct_mask.copy()

    def mask_on_ct(self) -> np.ndarray:
        """Current mask (uint8 ``[k, j, i]``) on the full CT grid, zero outside the ROI."""
        state = self._require_state()
        mask = np.zeros(self.ct.shape, dtype=np.uint8)
        mask[self.image.ct_box] = state.ct_mask
        return mask

    def mask_on_working_grid(self) -> np.ndarray:
        return classes.label_map(self.probability, self.card.threshold, self.card.labels)

    @property
    def timings(self) -> list:
        """Per-step timings (seconds) of the current history, step 0 first."""
        return [dict(s.timings) for s in self.history]

    def _result(self) -> StepResult:
        voxel_ml = float(np.prod(self.ct.grid.spacing)) / 1000.0
        return StepResult.of(self.history.current, self.step, str(self.device), voxel_ml)

    def _require_image(self) -> image_inputs.ImageCache:
        if self.image is None:
            raise SessionStateError("no image set: call set_image() first")
        return self.image

    def _require_state(self) -> State:
        self._require_image()
        if not len(self.history):
            raise SessionStateError("no segmentation yet: run the initial segmentation first")
        return self.history.current
