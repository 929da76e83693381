"""``interactive-refine demo``: the whole loop on the sample case, with a picture.

Uses the real head-and-neck case CHGJ015 from the shared data folder when present
(:func:`.cases.find_data_dir`), otherwise the engine's small phantom (:mod:`.phantom`). The
model's ROI is centred on the reference tumour, as a user's ROI box around it would be (and as
the paper and ``evaluate`` centre it). Runs the initial model and 5 simulated clicks, and writes
``demo.png`` (CT and PET with the mask contour and the clicks after 0, 1, 3 and 5 clicks) and
``demo.json``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .cases import find_data_dir
from .geometry import Volume, read_volume
from .phantom import make_phantom

logger = logging.getLogger(__name__)

SHOWN_STEPS = (0, 1, 3, 5)
#: The sample case: folder under the shared data folder, and its CT, PET and label files.
SAMPLE_CASE = ("hecktor2020_chgj015", "CHGJ015_ct.nii.gz", "CHGJ015_pt.nii.gz", "CHGJ015_ct_gtvt.nii.gz")
#: The phantom used without the sample case: a neck-sized field of view, 1 x 1 x 1.5 mm CT voxels.
PHANTOM_SHAPE = (96, 160, 160)
PHANTOM_SPACING_MM = (1.0, 1.0, 1.5)


def load_demo_case(data_dir: Path | None, seed: int = 0):
    """``(name, ct, pet, label)``: CHGJ015 when available, else the engine's small phantom."""
    folder_name, *files = SAMPLE_CASE
    folder = find_data_dir(data_dir, containing=folder_name) / folder_name
    if folder.is_dir():
        return ("CHGJ015",) + tuple(read_volume(folder / name) for name in files)
    logger.warning("sample data not found at %s; running the demo on a generated phantom", folder)
    return ("phantom",) + make_phantom(seed, shape=PHANTOM_SHAPE, spacing_mm=PHANTOM_SPACING_MM,
                                       pet_spacing_mm=(4.0, 4.0, 4.0), tumour_radius_mm=12.0)


def run_demo(out_dir: Path, model=None, device: str = "auto", seed: int = 0, data_dir=None) -> dict:
    from .model_package import load_model_package
    from .session import RefinementSession
    from .simulation import label_centroid_ras, run_simulation

    name, ct, pet, label = load_demo_case(data_dir, seed)
    session = RefinementSession(load_model_package(model), device=device)
    centre = label_centroid_ras(label)
    session.set_image(ct, pet, roi_center_ras=centre)
    masks = {}

    def keep(step, values):
        if step in SHOWN_STEPS:
            masks[step] = session.mask_on_ct().copy()

    result = run_simulation(session, label, max(SHOWN_STEPS), seed=seed, on_step=keep)
    for step in SHOWN_STEPS:  # the user had nothing left to correct: the mask stayed
        masks.setdefault(step, masks[max(s for s in masks if s <= step)])
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "demo.png"
    render(png, name, ct, pet, label, masks, result["clicks"], result["dice"])
    result.update({"case": name, "model": session.package.spec.name, "device": str(session.device),
                   "roi_center_ras": None if centre is None else [round(float(v), 2) for v in centre]})
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return {"case": name, "png": str(png), "dice": [round(d, 4) for d in result["dice"]]}


def _display_slice(ct: Volume, label: Volume) -> int:
    from .simulation import truth_on_grid

    truth = truth_on_grid(label, ct.grid)
    counts = truth.sum(axis=(1, 2))
    return int(np.argmax(counts)) if counts.any() else ct.shape[0] // 2


def render(path: Path, name, ct: Volume, pet: Volume, label: Volume, masks: dict, clicks, dice):
    """CT (top) and PET (bottom) at the tumour's largest axial slice after 0, 1, 3, 5 clicks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import geometry
    from .simulation import truth_on_grid

    k = _display_slice(ct, label)
    pet_on_ct = geometry.resample(pet.array, pet.grid, ct.grid, order=1)
    truth = truth_on_grid(label, ct.grid)

    def view(array):  # axial slice k; for LPS-aligned scans: anterior up, patient right on the left
        return array[k]

    fig, axes = plt.subplots(2, len(SHOWN_STEPS), figsize=(4 * len(SHOWN_STEPS), 8.4))
    pet_max = float(np.percentile(pet_on_ct[k], 99.9)) or 1.0
    for col, step in enumerate(SHOWN_STEPS):
        for row, (image, cmap, vmin, vmax) in enumerate(
            ((ct.array, "gray", -200, 300), (pet_on_ct, "hot", 0, pet_max))
        ):
            ax = axes[row, col]
            ax.imshow(view(image), cmap=cmap, vmin=vmin, vmax=vmax, origin="upper")
            ax.contour(view(truth.astype(float)), levels=[0.5], colors="deepskyblue", linewidths=1.0)
            ax.contour(view(masks[step].astype(float)), levels=[0.5], colors="lime", linewidths=1.4)
            for click in clicks[:step]:
                i, j, kk = ct.grid.ras_to_index(np.array(click["ras"]))
                if abs(kk - k) <= 3:
                    ax.plot(i, j, marker="o" if click["positive"] else "X", markersize=9,
                            color="lime" if click["positive"] else "red", markeredgecolor="white")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                d = dice[step] if step < len(dice) else dice[-1]
                ax.set_title(f"{step} click{'s' if step != 1 else ''}: Dice {d:.3f}")
    axes[0, 0].set_ylabel("CT")
    axes[1, 0].set_ylabel("PET")
    fig.suptitle(
        f"InteractiveRefine on {name}, axial slice {k}. Green: mask; blue: reference;\n"
        "green dot: positive click, red X: negative click (within 3 slices)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
