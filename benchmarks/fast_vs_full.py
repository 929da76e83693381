#!/usr/bin/env python3
"""Accuracy of the fast path (a window, or reduced precision) against full-ROI refinement over several cases.

Runs ``click_latency.py`` once per case (held-out phantoms from seeds never used in training,
and the real cases CHGJ015 and STS_001 when ``../shared/data`` or ``$INTERACTIVE_REFINE_DATA``
has them), then prints one Markdown table: per case the mean Dice over clicks 1-10 of full-ROI
refinement, of the full loop's clicks replayed in fast mode (same clicks: the approximation
alone), of the fast path's own simulated loop, and the median seconds per click of both::

    python benchmarks/fast_vs_full.py --threads 1 --json out/fast_vs_full.json
    python benchmarks/fast_vs_full.py --window 32 --json out/fast_vs_full_w32.json
    python benchmarks/fast_vs_full.py --fast full+amp --json out/bf16_vs_full.json   # precision alone

Every option not listed here (``--model``, ``--window``, ``--threads``, ``--clicks``, ...) goes
to ``click_latency.py`` unchanged; each case's full JSON is kept next to ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import click_latency  # noqa: E402

#: Seeds of the held-out phantoms: the evaluation's range (scripts/evaluate_default_model.sh),
#: far from the training seeds (1000 + n).
HELDOUT_SEEDS = (900000, 900001, 900002, 900003, 900004)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=None,
                   help="comma-separated click_latency cases (default: 5 held-out phantoms, "
                        "CHGJ015 and STS_001 where present)")
    p.add_argument("--fast", default="fast", choices=[m for m in click_latency.MODES if m != "full"],
                   help="the mode compared with float32 full-ROI refinement (default: fast, the "
                        "window in float32; full+amp: the whole ROI in reduced precision)")
    p.add_argument("--json", required=True, help="summary JSON; per-case JSONs go beside it")
    return p.parse_known_args(argv)


def default_cases() -> list[str]:
    from InteractiveRefineLib.cases import find_data_dir

    cases = [f"phantom:{seed}" for seed in HELDOUT_SEEDS]
    for name, (folder, ct, *_rest) in click_latency.CASES.items():
        data = find_data_dir(containing=f"{folder}/{ct}")
        if (data / folder / ct).exists():
            cases.append(name)
        else:
            print(f"skipping {name}: not found under {data} (set INTERACTIVE_REFINE_DATA)", file=sys.stderr)
    return cases


def summarise_case(result: dict, fast: str = "fast") -> dict:
    modes = result["modes"]
    row = {
        "case": result["case"],
        "full_mean_dice_1_10": modes["full"]["mean_dice_1_10"],
        "fast_mean_dice_1_10": modes[fast]["mean_dice_1_10"],
        "replay_mean_dice_1_10": result["replay"][fast]["mean_dice_1_10"],
        "full_median_s": modes["full"]["median_s"],
        "fast_median_s": modes[fast]["median_s"],
        "fast_p90_s": modes[fast]["p90_s"],
        # clicks the fast loop really refined in a window (a window that would cover the whole
        # ROI is refined in full)
        "fast_windowed_clicks": sum(c["mode"] == "fast" for c in modes[fast]["per_click"]),
        "fast_clicks": len(modes[fast]["per_click"]),
    }
    row["replay_minus_full"] = row["replay_mean_dice_1_10"] - row["full_mean_dice_1_10"]
    row["fast_minus_full"] = row["fast_mean_dice_1_10"] - row["full_mean_dice_1_10"]
    if click_latency.confirms(fast):  # previews, each followed by the exact mask
        replayed = result["replay"][fast]
        row["replay_preview_mean_dice_1_10"] = replayed["mean_preview_dice_1_10"]
        row["replay_preview_minus_full"] = row["replay_preview_mean_dice_1_10"] - row["full_mean_dice_1_10"]
        row["replay_preview_min_dice_vs_full"] = min(replayed["preview_dice_vs_reference"][1:])
        row["fast_exact_median_s"] = modes[fast]["median_exact_wall_s"]
        row["fast_exact_p90_s"] = modes[fast]["p90_exact_wall_s"]
    return row


def format_markdown(rows: list[dict], window: int, fast: str = "fast") -> str:
    if click_latency.confirms(fast):
        return _format_confirm(rows, fast)
    label = f"fast ({window}³)" if fast.startswith("fast") else fast
    if fast.endswith(click_latency.AMP):
        label += ", reduced precision"
    header = ["case", "full: mean Dice 1-10", f"{label}, full's clicks", "difference", f"{fast}, own loop",
              "difference", "full s/click", f"{fast} s/click", "windowed clicks"]
    cells = [
        [r["case"], f"{r['full_mean_dice_1_10']:.3f}", f"{r['replay_mean_dice_1_10']:.3f}",
         f"{r['replay_minus_full']:+.3f}", f"{r['fast_mean_dice_1_10']:.3f}", f"{r['fast_minus_full']:+.3f}",
         f"{r['full_median_s']:.2f}", f"{r['fast_median_s']:.2f}",
         f"{r['fast_windowed_clicks']}/{r['fast_clicks']}"]
        for r in rows
    ]
    return _markdown(header, cells,
                     _largest(rows, same_clicks="replay_minus_full", own_loops="fast_minus_full"))


def _format_confirm(rows: list[dict], fast: str) -> str:
    """The table for a ``+confirm`` mode: what the user sees first (the preview, from the exact
    previous mask) and then (the exact mask), against float32 full-ROI refinement."""
    header = ["case", "full: mean Dice 1-10", f"{fast} previews, full's clicks", "difference",
              "preview vs full mask, lowest per click", "exact masks, own loop", "difference", "full s/click",
              "preview s/click (p90)", "exact mask s after the click (p90)"]
    cells = [
        [r["case"], f"{r['full_mean_dice_1_10']:.3f}", f"{r['replay_preview_mean_dice_1_10']:.3f}",
         f"{r['replay_preview_minus_full']:+.3f}", f"{r['replay_preview_min_dice_vs_full']:.3f}",
         f"{r['fast_mean_dice_1_10']:.3f}", f"{r['fast_minus_full']:+.3f}", f"{r['full_median_s']:.2f}",
         f"{r['fast_median_s']:.2f} ({r['fast_p90_s']:.2f})",
         f"{r['fast_exact_median_s']:.2f} ({r['fast_exact_p90_s']:.2f})"]
        for r in rows
    ]
    return _markdown(header, cells,
                     _largest(rows, previews="replay_preview_minus_full", exact_masks="fast_minus_full"))


def _largest(rows: list[dict], **keys: str) -> str:
    """``largest |difference|: NAME VALUE, ...``: per name, the largest absolute row value of its key."""
    parts = [f"{name.replace('_', ' ')} {max(abs(r[key]) for r in rows):.3f}" for name, key in keys.items()]
    return "largest |difference|: " + ", ".join(parts)


def _markdown(header: list[str], rows: list[list[str]], footer: str) -> str:
    """A Markdown table, a blank line and ``footer``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines + ["", footer])


def main(argv=None) -> int:
    args, passthrough = parse_args(argv)
    from InteractiveRefineLib.runtime import apply_process_settings

    apply_process_settings()  # before torch is used (each case's click_latency run applies it too)
    if any(a in ("--case", "--modes", "--amp") or a.startswith(("--case=", "--modes=")) for a in passthrough):
        raise SystemExit("use --cases and --fast here; float32 full-ROI refinement is the reference")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else default_cases()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, window = [], None
    for case in cases:
        case_json = out.with_name(f"{out.stem}_{case.replace(':', '_')}.json")
        click_latency.main(
            passthrough + ["--case", case, "--modes", f"full,{args.fast}", "--json", str(case_json)]
        )
        result = json.loads(case_json.read_text())
        window = result["fast"]["window"]
        rows.append(summarise_case(result, args.fast))
    table = format_markdown(rows, window, args.fast)
    print(table)
    summary = {
        "cases": rows,
        "window": window,
        "compared": args.fast,
        "max_abs_replay_minus_full": float(np.max([abs(r["replay_minus_full"]) for r in rows])),
        "max_abs_fast_minus_full": float(np.max([abs(r["fast_minus_full"]) for r in rows])),
        "markdown": table,
        "argv": passthrough,
    }
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
