"""The initial mask's false positives on real cases: volume outside the GTVp, and how much of it
lies more than 15 mm above the GTVp's top (the hot brain of a head-and-neck field), per model.

    python training/scripts/initial_false_positives.py --data CASES --model NAME=PACKAGE [...]
        [--roi-center auto|ct|label]

CASES: a case folder or CSV manifest (labels needed). Prints one line per model and case.
"""
from __future__ import annotations

import argparse

import numpy as np
from InteractiveRefineLib.cases import find_cases
from InteractiveRefineLib.dicom_import import read_label
from InteractiveRefineLib.dicom_series import read_pet
from InteractiveRefineLib.geometry import read_volume
from InteractiveRefineLib.model_package import load_model_package
from InteractiveRefineLib.runtime import apply_process_settings
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulation import label_centroid_ras

ABOVE_MM = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PACKAGE")
    parser.add_argument("--roi-center", default="auto", choices=["auto", "ct", "label"])
    args = parser.parse_args()
    apply_process_settings()
    cases = [c for c in find_cases(args.data) if c.label is not None]
    for spec in args.model:
        name, path = spec.split("=", 1)
        session = RefinementSession(load_model_package(path), device="cpu", refine_mode="full")
        outside_all = []
        for case in cases:
            ct, label = read_volume(case.ct), read_label(case.label)
            centre = label_centroid_ras(label) if args.roi_center == "label" else args.roi_center
            session.set_image(ct, read_pet(case.pet), roi_center_ras=centre)
            session.initial()
            mask, truth = session.mask_on_ct() > 0, label.array > 0.5
            ml = float(np.prod(ct.grid.spacing)) / 1000.0
            if ct.grid.ijk_to_ras[2, 2] <= 0:
                raise SystemExit(f"{case.case_id}: the CT's k axis does not run towards superior")
            reach = int(np.ceil(ABOVE_MM / ct.grid.spacing[2]))
            top = int(np.nonzero(truth.any(axis=(1, 2)))[0].max()) + reach
            above = np.zeros_like(mask)
            above[top + 1:] = True  # slices more than 15 mm above the GTVp's top (k runs to S)
            outside = float((mask & ~truth).sum()) * ml
            outside_all.append(outside)
            print(f"{name} {case.case_id}: initial mask {mask.sum() * ml:.1f} mL, "
                  f"GTVp {truth.sum() * ml:.1f} mL, outside the GTVp {outside:.1f} mL, "
                  f"of it > {ABOVE_MM:g} mm above the GTVp "
                  f"{(mask & above).sum() * ml:.1f} mL (ROI: {session.roi_placement.description})")
        print(f"{name} mean outside the GTVp: {np.mean(outside_all):.1f} mL over {len(cases)} cases")


if __name__ == "__main__":
    main()
