#!/usr/bin/env python
"""Fixed-fraction and background-corrected PET threshold regions on the real cases: a Markdown table.

For every case with a PET and a label, one click at the tumour's innermost voxel (largest
distance to the label's border on the CT grid, :func:`InteractiveRefineLib.threshold.innermost_point`,
as :func:`InteractiveRefineLib.simulation.one_click_baseline` places it), the PET threshold regions
of :func:`InteractiveRefineLib.threshold.threshold_region` on the PET grid, mapped to the CT grid
(linear, > 0.5, as the baseline does), and their Dice with the label on the CT grid:

* fixed 40 % and fixed 50 % of the local SUVmax (``method="fixed"``);
* background-corrected, ``SUVbg + f x (SUVmax - SUVbg)`` (``method="background"``; SUVbg the
  median SUV 10-20 mm outside the 40 % region), at f = 0.41 and f = 0.5: the two values of the
  EANM guideline v2.0 (Boellaard et al. 2015), chosen before any measurement, not tuned on data.

No model runs. Cases are grouped by folder: sarcoma (under sts_*) and head and neck (the others).

    .venv/bin/python training/scripts/threshold_methods.py \\
        --data /work/shared/data/hecktor2020_chgj015 --data /work/shared/data/hecktor2020_lowres \\
        --data /work/shared/data/sts_petct/hecktor_layout --data /work/shared/data/sts_ibsi \\
        --out runs/s34/threshold_methods.md
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
from InteractiveRefineLib.errors import InteractiveRefineError  # noqa: E402
from InteractiveRefineLib.geometry import read_volume  # noqa: E402
from InteractiveRefineLib.simulation import threshold_dice, truth_on_grid  # noqa: E402
from InteractiveRefineLib.threshold import innermost_point  # noqa: E402

#: (column, method, fraction): fixed 40 % and 50 %, background-corrected at the EANM's 41 % and 50 %
METHODS = (("fixed 40 %", "fixed", 0.4), ("fixed 50 %", "fixed", 0.5),
           ("background 41 %", "background", 0.41), ("background 50 %", "background", 0.5))


def group_of(folder: str) -> str:
    """``sarcoma`` for a folder under an ``sts*`` folder (sts_petct/hecktor_layout, sts_ibsi),
    else ``H&N`` (hecktor2020_*)."""
    parts = Path(folder).resolve().parts
    return "sarcoma" if any(part.lower().startswith("sts") for part in parts) else "H&N"


def case_row(case, group: str) -> dict:
    ct, pet, label = read_volume(case.ct), read_volume(case.pet), read_volume(case.label)
    truth_ct = truth_on_grid(label, ct.grid)
    seed = innermost_point(truth_ct, ct.grid)
    voxel_ml = float(np.prod(ct.grid.spacing)) / 1000.0
    row = {"case": case.case_id, "group": group, "label_ml": round(float(truth_ct.sum()) * voxel_ml, 2),
           "click_ras": [round(float(v), 2) for v in seed], "dice": {}, "regions": {}, "notes": []}
    for column, method, fraction in METHODS:
        try:
            row["dice"][column], region = threshold_dice(pet, seed, truth_ct, ct.grid, fraction, method)
        except InteractiveRefineError as exc:
            row["dice"][column] = None
            row["notes"].append(f"{column}: {exc}")
            continue
        row["regions"][column] = region.summary()
    return row


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def markdown(rows: list[dict]) -> str:
    columns = [c for c, _, _ in METHODS]
    lines = ["| case | group | label mL | SUVmax | SUVbg | " + " | ".join(columns) + " | best |",
             "|---" * (6 + len(columns)) + "|"]
    for r in rows:
        first = next(iter(r["regions"].values()), {})
        background = next((s["background_suv"] for s in r["regions"].values() if "background_suv" in s),
                          None)
        scored = {c: v for c, v in r["dice"].items() if v is not None}
        best = max(scored, key=scored.get) if scored else "n/a"
        lines.append(f"| {r['case']} | {r['group']} | {r['label_ml']:.1f} | {_cell(first.get('suvmax'))} | "
                     f"{_cell(background)} | " + " | ".join(_cell(r["dice"].get(c)) for c in columns)
                     + f" | {best} |")
    lines += ["", "| group | cases | " + " | ".join(f"mean Dice, {c}" for c in columns) + " |",
              "|---" * (2 + len(columns)) + "|"]
    groups = {"H&N": [r for r in rows if r["group"] == "H&N"],
              "H&N, hecktor2020_lowres only (held out)":
                  [r for r in rows if r.get("folder") == "hecktor2020_lowres"],
              "sarcoma": [r for r in rows if r["group"] == "sarcoma"]}
    for name, members in groups.items():
        if members:
            scored = sum(any(v is not None for v in r["dice"].values()) for r in members)
            cases = str(len(members)) + ("" if scored == len(members) else f" ({scored} with a region)")
            means = [_cell(_mean([r["dice"].get(c) for r in members])) for c in columns]
            lines.append(f"| {name} | {cases} | " + " | ".join(means) + " |")
    lines += ["", "Cases where a method's Dice is above the fixed 40 % region's (of the cases with both):"]
    reference = columns[0]
    for name, members in groups.items():
        counts = []
        for c in columns[1:]:
            pairs = [(r["dice"].get(c), r["dice"].get(reference)) for r in members]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            counts.append(f"{c} {sum(a > b for a, b in pairs)}/{len(pairs)}")
        if members:
            lines.append(f"- {name}: " + ", ".join(counts))
    notes = [f"- {r['case']}: {n}" for r in rows for n in r["notes"]]
    if notes:
        lines += ["", "Refused regions:", *notes]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True,
                        help="a case folder (find_cases); repeat; hecktor* folders are head and neck")
    parser.add_argument("--out", help="also write the Markdown table here")
    parser.add_argument("--json", help="also write the per-case results as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for folder in args.data:
        for case in find_cases(folder):
            if case.pet is None or case.label is None:
                continue
            row = case_row(case, group_of(folder))
            row["folder"] = Path(folder).name
            rows.append(row)
            print(f"{case.case_id}: " + ", ".join(f"{c} {_cell(v)}" for c, v in row["dice"].items()),
                  file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        command = "    .venv/bin/python training/scripts/threshold_methods.py " + " ".join(
            f"--data {d}" for d in args.data) + f" --out {args.out}"
        Path(args.out).write_text(
            "# PET threshold methods on the real cases (one click at the tumour's innermost voxel)\n\n"
            "Dice on the CT grid. Background-corrected: SUVbg + f x (SUVmax - SUVbg), SUVbg the median SUV "
            "10-20 mm outside the 40 % region; f = 0.41 and 0.5 fixed beforehand (EANM guideline v2.0), "
            "not tuned on these cases.\n\n" + command + "\n\n" + table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
