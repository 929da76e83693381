"""Decide whether a candidate model may replace the shipped one, on the selection sets only.

    python training/scripts/select_model.py --baseline EVAL_DIR --candidate NAME=EVAL_DIR [...]
        [--select phantoms,real,real_auto] [--at 5,10] [--metric SET=COLUMN ...] [--max-drop 0.01]
        [--same-initial]

EVAL_DIR: an ``OUT_DIR`` of ``scripts/evaluate_default_model.sh`` (one ``evaluate`` folder per
set: ``phantoms``, ``real``, ``real_auto``, ``real_hn``, ``real_hn_auto``, ``heldout_sarcoma``), or
any folder whose sub-folders hold ``evaluate``'s ``per_case.csv``. The rule (write it down before evaluating
candidates; ``training/README.md`` has the runs it decided): on **every selection set** (``--select``;
default the held-out phantoms, CHGJ015 + STS_001 with the ROI at the tumour, and CHGJ015 at the
automatic ROI, which a user without an ROI gets) the candidate's mean Dice (seeds averaged per
case, then cases averaged; ``card_results.summarise``) at 0 clicks is higher than the baseline's,
and after each of ``--at`` clicks at least the baseline's. Every other set present in both folders
is printed as "reported only": it never enters the decision, so the cases reported as held out
stay held out. ``--metric real=dice_gtvp`` scores a set by another ``per_case.csv`` column (here the
GTVp of a multi-class model, on cases labelled with the GTVp only); ``dice`` (all classes together)
otherwise. ``--max-drop D`` adds issue 20's per-click rule: on every selection set, no single
click may lower the candidate's mean Dice by more than ``D`` unless the baseline's worst click
lowers it as much (a candidate whose first click erases good initial masks fails it).
``--same-initial`` is for candidates that keep the baseline's initial model (only the refinement
or a card setting changes): their first mask is the baseline's, so at 0 clicks "not below" replaces
"higher". Prints a
Markdown table (with the worst step of the mean over one click) and one verdict line per candidate;
exits 0 when at least one candidate passes, 1 when none does, 2 on unusable input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from card_results import summarise, worst_step  # noqa: E402

#: The default selection sets: the sub-folders of ``evaluate_default_model.sh`` that hold the
#: held-out phantoms, CHGJ015 + STS_001, and CHGJ015 at the automatic ROI (the cases models are chosen on).
SELECTION_SETS = ("phantoms", "real", "real_auto")


def curves(folder: Path, columns: dict | None = None) -> dict:
    """``{set name: mean Dice per click}`` of every sub-folder holding a ``per_case.csv`` (of the
    column ``columns[set name]``, ``dice`` by default); raises ValueError (``summarise``) for an
    evaluation of several models or a column a set lacks."""
    found = {}
    for sub in sorted(folder.iterdir()):
        if not (sub / "per_case.csv").is_file():
            continue
        found[sub.name] = summarise(sub, (columns or {}).get(sub.name, "dice"))["dice_per_click"]
    return found


def verdict(baseline: list, candidate: list, at: tuple, max_drop: float | None = None,
            same_initial: bool = False) -> list[str]:
    """The rule's failures on one set (empty: passed). ``same_initial``: the candidate keeps the
    baseline's initial model, so its first mask may equal the baseline's (at 0 clicks not below,
    instead of above)."""
    failures = []
    if max_drop is not None and len(candidate) > 1 and len(baseline) > 1:
        worst, allowed = worst_step(candidate), min(-max_drop, worst_step(baseline))
        if worst < allowed:
            failures.append(f"one click lowers Dice by {-worst:.3f} (allowed {-allowed:.3f})")
    if same_initial and candidate[0] < baseline[0]:
        failures.append(f"0 clicks {candidate[0]:.3f} below {baseline[0]:.3f}")
    elif not same_initial and not candidate[0] > baseline[0]:
        failures.append(f"0 clicks {candidate[0]:.3f} not above {baseline[0]:.3f}")
    for clicks in at:
        if clicks >= min(len(baseline), len(candidate)):
            failures.append(f"no Dice after {clicks} clicks")
        elif candidate[clicks] < baseline[clicks]:
            failures.append(f"{clicks} clicks {candidate[clicks]:.3f} below {baseline[clicks]:.3f}")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the shipped model's EVAL_DIR")
    parser.add_argument("--candidate", action="append", required=True, metavar="NAME=EVAL_DIR")
    parser.add_argument("--select", default=",".join(SELECTION_SETS),
                        help="comma-separated selection sets (sub-folder names)")
    parser.add_argument("--at", default="5,10", help="click counts where the candidate may not be worse")
    parser.add_argument("--metric", action="append", default=[], metavar="SET=COLUMN",
                        help="score SET by per_case.csv's column COLUMN (e.g. real=dice_gtvp; default dice)")
    parser.add_argument("--max-drop", type=float, default=None, metavar="D",
                        help="no click may lower the mean Dice by more than D (or than the baseline's "
                             "worst click does)")
    parser.add_argument("--same-initial", action="store_true",
                        help="candidates keep the baseline's initial model (a new refinement network or "
                             "card setting): at 0 clicks not below the baseline, instead of above it")
    args = parser.parse_args(argv)
    if args.max_drop is not None and args.max_drop < 0:
        parser.error(f"--max-drop takes a non-negative Dice, got {args.max_drop}")
    columns = dict(item.partition("=")[::2] for item in args.metric)
    if any(not k or not v for k, v in columns.items()):
        parser.error(f"--metric takes SET=COLUMN, got {args.metric}")
    select = [s for s in args.select.split(",") if s]
    try:
        at = tuple(int(v) for v in args.at.split(",") if v)
    except ValueError:
        parser.error(f"--at takes click counts such as 5,10, got {args.at!r}")
    try:
        base = curves(args.baseline, columns) if args.baseline.is_dir() else {}
        candidates = [(item.partition("=")[0], Path(item.partition("=")[2])) for item in args.candidate]
        names = [name for name, _ in candidates]
        if "" in names or len(set(names)) < len(names):
            raise ValueError(f"candidates need distinct names (NAME=EVAL_DIR), got {args.candidate}")
        found = {name: curves(folder, columns) if folder.is_dir() else {} for name, folder in candidates}
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    unused = [s for s in columns if s not in base]
    if unused:
        print(f"--metric names sets the baseline does not have: {', '.join(unused)}", file=sys.stderr)
        return 2
    missing = [s for s in select if s not in base]
    if missing:
        print(f"the baseline {args.baseline} has no evaluation of {', '.join(missing)} "
              "(a sub-folder with per_case.csv)", file=sys.stderr)
        return 2
    for item, (name, _) in zip(args.candidate, candidates):
        absent = [s for s in select if s not in found[name]]
        if absent:
            print(f"candidate {item!r}: no evaluation of {', '.join(absent)} "
                  "(NAME=EVAL_DIR with a sub-folder per set)", file=sys.stderr)
            return 2
    shown = [0, *at]
    print("| candidate | set | use | " + " | ".join(f"{c} clicks (baseline)" for c in shown)
          + " | worst step (baseline) |")
    print("|---|---|---|" + "---|" * (len(shown) + 1))
    passed, verdicts = [], []
    for name, _ in candidates:
        cand = found[name]
        failures = []
        for set_name in [*select, *sorted(s for s in cand if s in base and s not in select)]:
            use = "selection" if set_name in select else "reported only"
            b, c = base[set_name], cand[set_name]
            cells = " | ".join(f"{c[t]:.3f} ({b[t]:.3f})" if t < min(len(b), len(c)) else "-"
                               for t in shown)
            column = columns.get(set_name, "dice")
            shown_set = set_name if column == "dice" else f"{set_name} ({column})"
            steps = f"{worst_step(c):+.3f} ({worst_step(b):+.3f})" if min(len(b), len(c)) > 1 else "-"
            print(f"| {name} | {shown_set} | {use} | {cells} | {steps} |")
            if set_name in select:
                failures += [f"{set_name}: {f}" for f in verdict(b, c, at, args.max_drop, args.same_initial)]
        verdicts.append(f"{name}: " + ("PASS" if not failures else "FAIL (" + "; ".join(failures) + ")"))
        if not failures:
            passed.append(name)
    print("", *verdicts, sep="\n")
    print(f"passed: {', '.join(passed) if passed else 'none; keep the baseline'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
