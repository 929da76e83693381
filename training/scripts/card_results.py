"""Record evaluation results in a model package's card (``metrics`` section).

    python training/scripts/card_results.py PACKAGE NAME=EVAL_DIR [NAME=EVAL_DIR ...] [--command "..."]
        [--recipe "..." --heldout PHANTOM_DIR]

For each ``evaluate`` output folder, the card gets the mean over cases (of the seed-averaged
values) of Dice and HD95 after 0..N clicks, the mean of clicks 1-10, the worst mean change of
Dice over one click, the number of cases and seeds, the command line that produced it, and per
case the same curves plus each seed's Dice curve (so ``interactive-refine simulate --seed S`` on
one case can be checked against the card).
With ``--recipe`` (the command that trained the package) the card also gets ``trained_on`` and
``compute``, a readable summary derived from its own ``training`` section (phantom generator,
seeds, split, epochs, wall time, best validation metric) and, with ``--heldout``, the seed range
of the held-out evaluation phantoms (that folder's ``phantoms.json``).
The card is not covered by the weight checksums, so the package stays valid.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path


def worst_step(dice: list) -> float | None:
    """The worst change of a mean-Dice curve over one click (its largest fall, negative; None for
    fewer than two points)."""
    steps = [b - a for a, b in zip(dice, dice[1:])]
    return min(steps) if steps else None


def _curves(per: dict) -> dict:
    """``{"dice_per_click", "hd95_mm_per_click", "dice_mean_1_10", "worst_mean_dice_change_per_click"}``
    of ``per`` = {clicks: {case: [(dice, hd95) per seed]}}, averaged over seeds then cases."""
    dice, hd95 = [], []
    for clicks in sorted(per):
        cases = per[clicks]
        case_dice = [sum(d for d, _ in v) / len(v) for v in cases.values()]
        case_hd = [x for x in (sum(h for _, h in v) / len(v) for v in cases.values()) if math.isfinite(x)]
        dice.append(round(sum(case_dice) / len(case_dice), 4))
        hd95.append(round(sum(case_hd) / len(case_hd), 2) if case_hd else None)
    worst = worst_step(dice)
    return {
        "dice_per_click": dice, "hd95_mm_per_click": hd95,
        "dice_mean_1_10": round(sum(dice[1:11]) / len(dice[1:11]), 4) if len(dice) > 1 else None,
        "worst_mean_dice_change_per_click": round(worst, 4) if worst is not None else None,
    }


def summarise(eval_dir: Path, column: str = "dice") -> dict:
    """The curves of ``eval_dir``'s ``per_case.csv``, of its ``column`` (``dice``: all classes
    together; e.g. ``dice_gtvp``: one class of a multi-class model); raises ValueError when the
    column is absent or empty in a row (a class a case does not have), and for the rows of several
    models (``evaluate --model A=... --model B=...``), which would otherwise be averaged together."""
    per = defaultdict(lambda: defaultdict(list))  # clicks -> case -> [(dice, hd95)]
    by_seed = defaultdict(lambda: defaultdict(dict))  # case -> seed -> {clicks: dice}
    seeds, models = set(), set()
    path = eval_dir / "per_case.csv"
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            models.add(row.get("model"))
            if row.get(column) in (None, "", "nan"):
                found = "has no column" if column not in row else f"has no value in case {row['case_id']}"
                raise ValueError(f"{path} {found} {column!r} (seed {row['seed']}, {row['clicks']} clicks)")
            seeds.add(row["seed"])
            hd = float(row["hd95_mm"]) if row.get("hd95_mm") not in (None, "", "nan") else math.nan
            dice = float(row[column])
            per[int(row["clicks"])][row["case_id"]].append((dice, hd))
            by_seed[row["case_id"]][row["seed"]][int(row["clicks"])] = dice
    if len(models) > 1:
        names = ", ".join(sorted(map(str, models)))
        raise ValueError(f"{path} holds {len(models)} models ({names}): "
                         "evaluate each model into its own folder")
    summary = {"cases": sorted(per[0]), "seeds": len(seeds), **_curves(per)}
    meta_file = eval_dir / "summary.json"  # how the session refined (evaluate's own record)
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        summary.update({k: meta[k] for k in ("refine_mode", "region_removal") if k in meta})
    summary["per_case"] = {}
    for case in sorted(by_seed):
        one = {clicks: {case: values[case]} for clicks, values in per.items() if case in values}
        summary["per_case"][case] = {
            **_curves(one),
            "dice_per_click_by_seed": {
                seed: [round(curve[t], 4) for t in sorted(curve)]
                for seed, curve in sorted(by_seed[case].items())
            },
        }
    return summary


def describe(card: dict, recipe: str, heldout: Path | None = None) -> None:
    """``trained_on`` and ``compute`` of a phantom-trained 2S-ICR card, from its ``training`` section."""
    training = card["training"]
    phantoms = training["phantoms"]
    first_run = training["initial"][0]
    seed, n_cases = int(phantoms["seed"]), int(phantoms["n_cases"])
    params = phantoms["parameters"]
    phantom_ids = set(phantoms.get("case_ids") or [])

    def ids(run):
        return run["data"]["train_ids"] + run["data"]["val_ids"]

    # The run trained on these phantoms (a fine-tuned stage may have its own data).
    data_run = next((r for r in training["refine"] + training["initial"] if phantom_ids & set(ids(r))),
                    first_run)
    n_train, n_val = len(data_run["data"]["train_ids"]), len(data_run["data"]["val_ids"])
    real = sorted(c for c in ids(data_run) if phantom_ids and c not in phantom_ids)
    card["trained_on"] = {
        "data": f"synthetic PET/CT phantoms ({phantoms['generator']})"
                + (f" and {len(real)} real PET/CT cases" if real else ""),
        "generator_version": phantoms["generator_version"], "seeds": [seed, seed + n_cases - 1],
        "n_cases": n_cases, "split": f"{n_train} train / {n_val} validation (fold {data_run['fold']})",
        "shape_kji": params["shape"], "spacing_mm": params["spacing_mm"][0],
        "pet_spacing_mm": params["pet_spacing_mm"][0],
    }
    if real:  # n_cases and seeds count the phantoms; the split counts both
        card["trained_on"]["real_cases"] = real
    if heldout is not None:
        record = json.loads((Path(heldout) / "phantoms.json").read_text())
        card["trained_on"]["held_out_evaluation_seeds"] = [
            int(record["seed"]), int(record["seed"]) + int(record["n_cases"]) - 1]

    def stage(run: dict) -> str:
        opt = run["protocol"]["optimization"]
        val = run["validation"]
        return (f"{run['epochs_run']} epochs x {opt['iterations_per_epoch']} iterations, lr {opt['lr']:g}, "
                f"{run['seconds'] / 60:.0f} min wall, stopped by {run['stop_reason']}, best epoch "
                f"{run['best_epoch']} ({val['metric']} {val['value']:.3f})")

    refine = training["refine"][0]
    inter = refine["protocol"]["interaction"]
    start = f"the {inter.get('refine_init', 'random')} network"
    if refine.get("init_weights"):
        start = f"the weights of {refine['init_weights']} (a warm restart)"
    card["compute"] = {
        "device": f"{first_run['device']} x{first_run['world_size']}, torch {first_run['torch']}, "
                  f"monai {first_run['monai']}",
        "initial": stage(first_run),
        "refine": stage(refine) + f"; {inter['min_clicks']}-{inter['max_clicks']} clicks per iteration, a "
                                  f"step per click; started from {start}",
        "recipe": recipe,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("results", nargs="+", metavar="NAME=EVAL_DIR")
    parser.add_argument("--command", default="", help="the command line that produced the results")
    parser.add_argument("--recipe", help="the command that trained the package (writes trained_on, compute)")
    parser.add_argument("--heldout", type=Path, help="folder of the held-out evaluation phantoms")
    args = parser.parse_args()
    card_path = Path(args.package) / "model.json"
    card = json.loads(card_path.read_text())
    metrics = card.setdefault("metrics", {})
    for item in args.results:
        name, folder = item.split("=", 1)
        metrics[name] = summarise(Path(folder))
        if args.command:
            metrics[name]["command"] = args.command
        print(name, json.dumps({k: v for k, v in metrics[name].items() if k != "per_case"}))
    if args.recipe:
        describe(card, args.recipe, args.heldout)
        print("trained_on", json.dumps(card["trained_on"]))
        print("compute", json.dumps(card["compute"]))
    card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
