#!/usr/bin/env python
"""The one-click PET threshold floor beside a model, per real case: a Markdown table and JSON.

For each case and each ROI placement (the CT's centre, and centred on the label: the paper's
cropping), one ``run_simulation`` with the 2S-ICR simulated user gives the model's Dice at 0, 1,
3 and 5 clicks and the one-click baseline from the tumour's innermost voxel: the 40 % and 50 %
SUVmax regions (PET grid, mapped to the CT), the model after that same click as its first,
positive click, and the session's 40 % threshold click (the region inside the ROI).

    python training/scripts/threshold_floor.py --data ../shared/data/hecktor2020_lowres \
        --data ../shared/data/hecktor2020_chgj015 --data ../shared/data/sts_petct --json out/floor.json
    python training/scripts/threshold_floor.py --data ... --threshold-start   # the session option
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

try:
    import InteractiveRefineLib  # noqa: F401
except ImportError:  # run from a checkout without the engine installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "InteractiveRefine"))

from InteractiveRefineLib.cases import find_cases  # noqa: E402
from InteractiveRefineLib.constraints import LOCAL_EDITS_HELP  # noqa: E402
from InteractiveRefineLib.errors import InteractiveRefineError  # noqa: E402
from InteractiveRefineLib.geometry import read_volume  # noqa: E402
from InteractiveRefineLib.model_package import load_model_package  # noqa: E402
from InteractiveRefineLib.runtime import apply_process_settings  # noqa: E402
from InteractiveRefineLib.simulated_user import SimulatedUser  # noqa: E402
from InteractiveRefineLib.simulation import (  # noqa: E402
    baseline_fields,
    click_loop,
    label_centroid_ras,
    run_simulation,
    truth_on_grid,
)
from InteractiveRefineLib.threshold import innermost_point  # noqa: E402

CURVE = (0, 1, 3, 5)
#: the clinician's workflow from the one-click floor: the first click at the tumour's innermost
#: voxel (a threshold click, or a model click), then the simulated user's corrections
STARTS = {"threshold": "threshold click + user", "model": "model click + user"}


def from_innermost(session, label, start: str, clicks: int, seed: int) -> dict:
    """Dice after 1..``clicks`` clicks when the first is at the tumour's innermost voxel (``start``:
    the session's 40 % threshold click or a model click there) and the rest are the 2S-ICR
    simulated user's; the float32 whole-ROI mask is scored and shown to the user at each step."""
    from InteractiveRefineLib.metrics import dice

    truth_ct = truth_on_grid(label, session.ct.grid)
    truth_work = truth_on_grid(label, session.grid)
    session.initial()
    seed_ras = innermost_point(truth_ct, session.ct.grid)
    card_start, session.threshold_start = session.threshold_start, False  # the model's own click
    try:
        if start == "threshold":
            session.add_threshold(seed_ras, pet_is_suv=True)
        else:
            session.add_click(seed_ras, True)
    except InteractiveRefineError as exc:  # e.g. a refused threshold click: no curve
        return {"error": str(exc)}
    finally:
        session.threshold_start = card_start

    def scored() -> float:
        session.confirm()
        return float(dice(session.mask_on_ct().astype(bool), truth_ct))

    curve = {1: scored()}
    user = SimulatedUser("2sicr", np.random.default_rng(seed))
    for step in click_loop(session, truth_work, clicks - 1, user):
        curve[step.step + 1] = scored()
    for t in range(2, clicks + 1):  # the user stopped: no error left
        curve.setdefault(t, curve[t - 1])
    return curve


def case_rows(package, case, clicks: int, seed: int, threshold_start: bool | None,
              region_removal: bool, from_start: bool = False, local_edits: bool | None = None) -> list[dict]:
    from InteractiveRefineLib.session import RefinementSession

    ct, pet, label = read_volume(case.ct), read_volume(case.pet), read_volume(case.label)
    rows = []
    for placement, centre in (("CT centre", "ct"), ("tumour", label_centroid_ras(label))):
        session = RefinementSession(package, device="cpu", threshold_start=threshold_start,
                                    region_removal=region_removal, local_edits=local_edits)
        session.set_image(ct, pet, roi_center_ras=centre)
        out = run_simulation(session, label, clicks, seed=seed, surface_metrics=False)
        fields = baseline_fields(out["baseline"])
        rows.append({
            "case": case.case_id, "roi": placement, "threshold40": fields["threshold40_dice"],
            "threshold50": fields["threshold50_dice"], "model_one_click": fields["model_one_click_dice"],
            "threshold_click": fields["threshold_click_dice"],
            "curve": {t: out["dice"][t] for t in CURVE if t <= clicks}, "notes": out["baseline"]["notes"],
        })
        if from_start:
            for start in STARTS:
                rows[-1][f"{start}_start"] = from_innermost(session, label, start, clicks, seed)
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(value):
        return "n/a" if value is None else f"{value:.3f}"

    lines = ["| case | ROI | 40 % region | 50 % region | model, 1 click there | threshold click | "
             + " | ".join(f"user {t}" for t in CURVE) + " |", "|---" * (6 + len(CURVE)) + "|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['roi']} | {cell(r['threshold40'])} | {cell(r['threshold50'])} | "
                     f"{cell(r['model_one_click'])} | {cell(r['threshold_click'])} | "
                     + " | ".join(cell(r["curve"].get(t)) for t in CURVE) + " |")
    return "\n".join(lines)


def from_innermost_markdown(rows: list[dict], clicks: int) -> str:
    steps = [t for t in (1, 2, 3, 5, 10) if t <= clicks]
    lines = ["| case | ROI | first click | " + " | ".join(f"{t} clicks" for t in steps) + " |",
             "|---" * (3 + len(steps)) + "|"]
    means: dict = {}
    for r in rows:
        for start, name in STARTS.items():
            curve = r.get(f"{start}_start")
            if curve is None:
                continue
            if "error" in curve:
                lines.append(f"| {r['case']} | {r['roi']} | {name} | refused: {curve['error']} |")
                continue
            lines.append(f"| {r['case']} | {r['roi']} | {name} | "
                         + " | ".join(f"{curve[t]:.3f}" for t in steps) + " |")
            for t in steps:
                means.setdefault((r["roi"], name, t), []).append(curve[t])
    for roi in dict.fromkeys(r["roi"] for r in rows):
        for name in STARTS.values():
            if (roi, name, steps[0]) in means:
                lines.append(f"| **mean** | {roi} | {name} | "
                             + " | ".join(f"{np.mean(means[(roi, name, t)]):.3f}" for t in steps) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, help="case folder (repeat)")
    p.add_argument("--model", help="model package folder (default: the shipped model)")
    p.add_argument("--clicks", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold-start", action=argparse.BooleanOptionalAction, default=None,
                   help="the session's threshold_start (default: as the model card says)")
    p.add_argument("--no-region-removal", action="store_true")
    p.add_argument("--local-edits", action=argparse.BooleanOptionalAction, default=None,
                   help=LOCAL_EDITS_HELP)
    p.add_argument("--from-innermost", action="store_true",
                   help="also the curves whose first click is at the innermost voxel (a threshold click, "
                        "or a model click) and whose later clicks are the simulated user's")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    apply_process_settings()
    package = load_model_package(args.model)
    rows = []
    for folder in args.data:
        for case in find_cases(folder):
            if case.pet is None or case.label is None:
                continue
            rows += case_rows(package, case, args.clicks, args.seed, args.threshold_start,
                              not args.no_region_removal, args.from_innermost, args.local_edits)
            print(markdown(rows[-2:]).splitlines()[-1], file=sys.stderr)
    print(markdown(rows))
    if args.from_innermost:
        print("\n" + from_innermost_markdown(rows, args.clicks))
    for placement in ("CT centre", "tumour"):
        chosen = [r for r in rows if r["roi"] == placement]
        keys = ("threshold40", "model_one_click", "threshold_click")
        means = {k: np.mean([r[k] for r in chosen if r[k] is not None]) for k in keys}
        print(f"mean over {len(chosen)} cases, ROI at the {placement}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
