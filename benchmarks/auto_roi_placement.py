"""Automatic ROI placement vs the CT centre on the real head-and-neck cases.

Per case: where the shipped model's box (72^3 voxels of 2 mm) goes with ``--roi-center ct`` and
with the automatic placement (``InteractiveRefineLib.auto_roi``); the distance from the GTVp
centroid to the box centre; the fraction of the GTVp inside the box; the hot volume (PET SUV > 2.5
outside the GTVp) inside the box; and the brain part of it (more than 15 mm above the GTVp's top).

    .venv/bin/python benchmarks/auto_roi_placement.py [FOLDER ...]

FOLDER: case folders under the shared data (default: hecktor2020_chgj015 and hecktor2020_lowres;
the four lowres cases are held out: report, never tune).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "InteractiveRefine"))
from InteractiveRefineLib import cases, geometry  # noqa: E402
from InteractiveRefineLib.auto_roi import auto_roi_center  # noqa: E402
from InteractiveRefineLib.geometry import read_volume  # noqa: E402

BOX_VOX, BOX_MM, HOT_SUV, BRAIN_ABOVE_MM = (72, 72, 72), (2.0, 2.0, 2.0), 2.5, 15.0


def _in_box(grid, centre):
    return geometry.inside_mask(geometry.working_grid(grid, centre, BOX_VOX, BOX_MM), grid)


def measure(case) -> list[str]:
    ct, pet, label = read_volume(case.ct), read_volume(case.pet), read_volume(case.label)
    placed = auto_roi_center(ct, pet, 144.0)
    gtv = label.array > 0.5
    points = label.grid.index_to_ras(np.argwhere(gtv)[:, ::-1].astype(float))
    centroid, top_s = points.mean(axis=0), points[:, 2].max()
    k = np.arange(pet.shape[0], dtype=float)
    s = pet.grid.index_to_ras(np.stack([np.zeros_like(k), np.zeros_like(k), k], axis=-1))[:, 2]
    gtv_on_pet = geometry.resample(label.array, label.grid, pet.grid, order=0) > 0.5
    hot = (pet.array > HOT_SUV) & ~gtv_on_pet
    brain = hot & (s > top_s + BRAIN_ABOVE_MM)[:, None, None]
    voxel_ml = float(np.prod(pet.grid.spacing)) / 1000.0
    lines = [f"{case.case_id}: automatic = {placed.method} ({placed.reason}; "
             f"{placed.details.get('seconds')} s); brain voxels (SUV > {HOT_SUV}, > {BRAIN_ABOVE_MM:g} mm "
             f"above the GTVp): {brain.sum() * voxel_ml:.1f} mL"]
    for name, centre in (("ct", ct.grid.center_ras()), ("auto", np.asarray(placed.center_ras))):
        fraction = (gtv & _in_box(label.grid, centre)).sum() / gtv.sum()
        inside = _in_box(pet.grid, centre)
        hot_ml, brain_ml = hot[inside].sum() * voxel_ml, brain[inside].sum() * voxel_ml
        lines.append(f"  {name:4s} centre {np.round(centre, 1).tolist()}  GTVp centroid distance "
                     f"{np.linalg.norm(centre - centroid):5.1f} mm  GTVp in box {fraction:.3f}  hot outside "
                     f"GTVp {hot_ml:6.1f} mL  brain {brain_ml:5.1f} mL")
    return lines


def main(folders) -> None:
    data = cases.find_data_dir()
    for folder in folders or ["hecktor2020_chgj015", "hecktor2020_lowres"]:
        for case in cases.find_cases(data / folder):
            if case.pet is not None and case.label is not None:
                print("\n".join(measure(case)))


if __name__ == "__main__":
    main(sys.argv[1:])
