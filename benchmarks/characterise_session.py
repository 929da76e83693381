#!/usr/bin/env python
"""Per-step probability and mask hashes of a checkout's session for fixed clicks, undo, redo,
confirm and reset (tiny random networks on 64^3 and 104^3 ROIs; float32 and bfloat16; whole ROI
and window): run it on two checkouts and compare the JSON files to show that a refactor changed
no result.

    python benchmarks/characterise_session.py OLD_CHECKOUT old.json
    python benchmarks/characterise_session.py . new.json && cmp old.json new.json

Uses only the session API both versions share (``refine_mode``, ``fast_window``, ``amp``).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

TINY = {"channels": [4, 8, 16, 32], "strides": [1, 2, 2], "num_res_units": 1, "norm": "INSTANCE"}
CLICKS = [((30, 30, 34), True), ((12, 50, 20), False), ((60, 4, 58), True), ((20, 20, 20), False)]
CONFIGS = {64: [dict(refine_mode="full", amp=False), dict(refine_mode="fast", amp=False),
                dict(refine_mode="full", amp=True), dict(refine_mode="fast", amp=True)],
           104: [dict(refine_mode="full", amp=False), dict(refine_mode="fast", amp="auto"),
                 dict(refine_mode="full", amp="auto")]}


def digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def phantom(shape):
    """A hot sphere in PET and CT; CT on a 1 x 1 x 2 mm grid, PET on a coarser one. (The tests'
    ``conftest.hot_sphere_pair`` on another shape; kept here so that any checkout can be run.)"""
    from InteractiveRefineLib.geometry import Volume

    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    sphere = ((k - 24) * 2) ** 2 + (j - 45) ** 2 + (i - 50) ** 2 < 12**2
    ct = np.where(sphere, 60.0, 20.0) + rng.normal(0, 20, shape)
    pet = np.where(sphere, 8.0, 1.0) + rng.normal(0, 0.2, shape)
    pet_matrix = np.diag([2.0, 2.0, 4.0, 1.0])
    pet_matrix[:3, 3] = [0.5, 0.5, 1.0]
    return (Volume.from_array(ct.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])),
            Volume.from_array(pet[::2, ::2, ::2].astype(np.float32), pet_matrix))


def run(session, roi) -> list:
    def ras(kji):
        return session.grid.index_to_ras(np.array(kji[::-1], float))

    clicks = [(tuple(min(v, roi - 1) for v in c), p) for c, p in CLICKS]
    result = session.initial()
    steps = [(result.mode, result.exact, digest(session.probability), digest(session.mask_in_box()))]
    for kji, positive in clicks:
        result = session.add_click(ras(kji), positive)
        steps.append((result.mode, result.exact, digest(session.probability), digest(session.mask_in_box()),
                      result.removed_ml))
    session.undo()
    result = session.add_click(ras(clicks[-1][0]), clicks[-1][1])
    steps.append(("redo", result.exact, digest(session.probability), digest(session.mask_in_box())))
    result = session.confirm()
    steps.append(("confirm", result.exact, digest(session.probability), digest(session.mask_in_box())))
    session.undo()
    steps.append(("undo", digest(session.probability)))
    session.reset()
    steps.append(("reset", digest(session.probability)))
    return steps


def main(repo: Path, out: str) -> int:
    sys.path[:0] = [str(repo / "InteractiveRefine")]
    import torch
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package
    from InteractiveRefineLib.session import RefinementSession

    torch.set_num_threads(2)
    results = {}
    for roi, configs in CONFIGS.items():
        folder = Path(tempfile.mkdtemp()) / f"tiny{roi}"
        created = create_random_model_package(folder, network=TINY, roi_size_vox=(roi,) * 3, seed=1)
        package = load_model_package(created)
        for config in configs:
            session = RefinementSession(package, device="cpu", fast_window=32, **config)
            session.set_image(*phantom((48, 90, 90) if roi == 64 else (60, 120, 120)))
            results[f"{roi}-{config}"] = run(session, roi)
            print(roi, config, results[f"{roi}-{config}"][-3:], flush=True)
    Path(out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
