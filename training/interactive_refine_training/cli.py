"""``interactive-refine-train``: phantoms, train, evaluate, export, metrics.

Each subcommand logs progress to stderr and prints a one-line JSON summary on stdout.
Training runs in one process, or under ``torchrun --nproc_per_node N`` for DDP.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from InteractiveRefineLib.card import CARD_FLAGS
from InteractiveRefineLib.cli import positive_int
from InteractiveRefineLib.click_regions import NO_REGION_REMOVAL_HELP
from InteractiveRefineLib.constraints import LOCAL_EDITS_HELP, LOCAL_EDITS_POSITIVE_HELP
from InteractiveRefineLib.runtime import apply_process_settings, threads_from_environment
from InteractiveRefineLib.simulated_user import SESSION_USER_PRESETS, SIMULATED_USER_PRESETS

logger = logging.getLogger("interactive_refine_training")

#: train option -> dotted configuration key
TRAIN_OVERRIDES = {
    "max_epochs": "optimization.max_epochs",
    "patience": "optimization.patience",
    "iterations_per_epoch": "optimization.iterations_per_epoch",
    "lr": "optimization.lr",
    "max_minutes": "runtime.max_minutes",
    "stop_after_epochs": "runtime.stop_after_epochs",
    "workers": "runtime.workers",
    "device": "runtime.device",
    "amp": "runtime.amp",
    "amp_dtype": "runtime.amp_dtype",
    "threads": "runtime.threads",
    "cache_dir": "runtime.cache_dir",
    "val_every": "runtime.val_every",
    "channels": "network.channels",
    "strides": "network.strides",
    "res_units": "network.num_res_units",
    "roi": "data.roi_size_vox",
    "label": "data.label_value",
    "classes": "data.classes",
    "n_folds": "data.n_folds",
    "seed": "seed",
    "user": "interaction.simulated_user",
    "deepedit_free_prob": "interaction.deepedit_free_prob",
    "mask_dropout": "interaction.mask_dropout",
    "pet_dropout": "data.pet_dropout",
    "min_clicks": "interaction.min_clicks",
    "max_clicks": "interaction.max_clicks",
    "val_clicks": "interaction.val_clicks",
    "prompt_prob": "interaction.prompt_prob",
}


#: The simulated-user presets of ``evaluate`` (the engine's; hnuiseg: HN-UISeg's per-class user;
#: suggest: the engine's suggested next click as the user).
EVALUATE_USER_PRESETS = list(SIMULATED_USER_PRESETS)
#: Those of ``train``: the training loop has no session, so not the presets that need one (suggest).
USER_PRESETS = [p for p in SIMULATED_USER_PRESETS if p not in SESSION_USER_PRESETS]


def name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def roi_size(text: str) -> list[int]:
    values = int_list(text)
    return values * 3 if len(values) == 1 else values


def optional_int(text: str):
    return None if text.lower() in ("none", "null", "") else int(text)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one stage on one fold")
    p.add_argument("--stage", required=True, choices=["initial", "refine", "deepgrow", "deepedit", "prompt"],
                   help="prompt: HN-UISeg's stage 1 (the refine layout, prompts drawn from the truth with "
                        "probability interaction.prompt_prob, no previous mask); its run starts "
                        "--stage initial (stage 2) and --stage refine (stage 3) via --init-weights")
    p.add_argument("--data", required=True, help="case folder (HECKTOR 2021/2022 layout) or CSV manifest")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, summary.json)")
    p.add_argument("--config", help="JSON config (default: the paper's protocol)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--initial", help="refine stage: initial run folder, checkpoint or model package")
    p.add_argument("--init-weights", metavar="SOURCE",
                   help="start this stage's network from SOURCE (a run folder or checkpoint of the same "
                        "stage, or a model package, e.g. the shipped default model): fine-tuning; "
                        "initial and refine also take a prompt run (HN-UISeg's stages 2 and 3)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_latest.pt")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config value")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--iterations-per-epoch", type=optional_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-minutes", type=float,
                   help="wall-clock budget; stops cleanly, keeps the best checkpoint")
    p.add_argument("--stop-after-epochs", type=int, help="end this invocation after N epochs (then --resume)")
    p.add_argument("--workers", type=int, help="data loader and cache-building processes")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on CUDA)")
    p.add_argument("--amp-dtype", choices=["float16", "bfloat16"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir",
                   help="preprocessed-case cache (default ~/.cache/interactive_refine_training)")
    p.add_argument("--val-every", type=int)
    p.add_argument("--channels", type=int_list, help="network channels, e.g. 16,32,64,128,256")
    p.add_argument("--strides", type=int_list, help="network strides, e.g. 1,2,2,2")
    p.add_argument("--res-units", type=int, help="residual units per block")
    p.add_argument("--roi", type=roi_size, help="ROI size in voxels: 144 or 144,144,144")
    p.add_argument("--label", type=int, help="label value of the target (1 = GTVp) of a single-class run")
    p.add_argument("--classes", type=name_list, metavar="NAMES",
                   help="output classes, one sigmoid each: gtvp (default), or gtvp,gtvn (HN-UISeg: "
                        "GTVp label 1 and GTVn label 2, one label channel and output per class)")
    p.add_argument("--n-folds", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--user", choices=USER_PRESETS, help="simulated-user preset")
    p.add_argument("--deepedit-free-prob", type=float, help="DeepEdit click-free fraction (0.25, 0.5)")
    p.add_argument("--mask-dropout", type=float)
    p.add_argument("--pet-dropout", type=float,
                   help="probability of zeroing a training sample's PET (CT-only ready; default 0)")
    p.add_argument("--min-clicks", type=int)
    p.add_argument("--max-clicks", type=int)
    p.add_argument("--val-clicks", type=int)
    p.add_argument("--prompt-prob", type=float,
                   help="--stage prompt: probability that an iteration's click channels hold the truth's "
                        "prompts (default 0.5, HN-UISeg's)")
    p.add_argument("--no-augmentation", action="store_true")
    p.set_defaults(func=cmd_train)


def _add_commands(sub) -> None:
    p = sub.add_parser("phantoms", help="generate synthetic PET/CT phantoms (HECKTOR 2022 layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, default=96, help="cube edge in voxels")
    p.add_argument("--spacing", type=float, default=1.0, help="CT voxel size in mm")
    p.add_argument("--pet-spacing", type=float, help="PET voxel size in mm (default: the CT grid)")
    p.add_argument("--prefix", default="PH")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--p-bulky", type=float, default=0.0,
                   help="chance of a bulky tumour (80-450 mL, hot rim, cold core, SUVmax ~7); default 0")
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("evaluate", help="simulated-user evaluation of model packages")
    p.add_argument("--model", action="append", required=True,
                   help="package folder, or [NAME=]PKG1,PKG2,... for an ensemble; repeat to compare")
    p.add_argument("--data", required=True, help="case folder or CSV manifest")
    p.add_argument("--cases", help="comma-separated case ids (default: all)")
    p.add_argument("--split-of", metavar="RUN_DIR", help="evaluate the validation cases of this run's fold")
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--user", choices=EVALUATE_USER_PRESETS,
                   help="simulated-user preset (default: 2sicr; hnuiseg for a multi-class model; suggest: "
                        "the engine's suggested next click, signed by the label, 2sicr's if there is none)")
    p.add_argument("--uncertainty-passes", type=positive_int, metavar="N",
                   help="--user suggest: passes of each click's uncertainty estimate (default 8)")
    p.add_argument("--label", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-surface", action="store_true", help="Dice only (skip HD95/ASSD/surface Dice)")
    p.add_argument("--refine-mode", default="full", choices=["full", "fast", "auto"],
                   help="full: the paper's whole-ROI refinement (default); auto: what this device's "
                        "user gets (the fast path on a CPU)")
    p.add_argument("--no-region-removal", action="store_true", help=NO_REGION_REMOVAL_HELP)
    p.add_argument("--threshold-start", action=argparse.BooleanOptionalAction, default=None,
                   help="the first positive click of each sequence is a 40 %% SUVmax threshold click "
                        "(the session's threshold_start: the model refines from that region; "
                        "default: as the model card says)")
    p.add_argument("--local-edits", action=argparse.BooleanOptionalAction, default=None,
                   help=LOCAL_EDITS_HELP)
    p.add_argument("--local-edits-positive", action=argparse.BooleanOptionalAction, default=None,
                   help=LOCAL_EDITS_POSITIVE_HELP)
    p.add_argument("--roi-center", default="label", choices=["label", "auto", "ct"],
                   help="ROI centre per case: label (the GTVp centroid, the paper's protocol; "
                        "default), auto (what a user without an ROI gets) or ct (the CT's centre)")
    p.add_argument("--uncertainty", type=int, default=0, metavar="N",
                   help="also the calibration of the N-pass uncertainty (TTA + MC dropout) at 0 clicks "
                        "and after the last: ECE and the entropy's error-detection AUC, per case")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write trained runs as an engine model package")
    p.add_argument("--initial", default="",
                   help="initial run folder(s), comma-separated (ensemble), or a model package whose "
                        "initial members (and their card records) are kept")
    p.add_argument("--refine", required=True,
                   help="refine (or deepgrow/deepedit) run folder(s), comma-separated")
    p.add_argument("--unanchored", default="",
                   help="refine run folder(s), or a model package whose refine members serve, for the "
                        "card's unanchored stage: negative clicks before any positive one at an "
                        "automatically placed ROI (default: none, the refine members answer every click)")
    p.add_argument("--card-flag", action="append", default=[], choices=CARD_FLAGS, metavar="SETTING",
                   help="switch on one of the card's click settings (repeatable): " + ", ".join(CARD_FLAGS))
    p.add_argument("--out", required=True)
    p.add_argument("--name")
    p.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    p.add_argument("--fast-window", type=positive_int, metavar="N",
                   help="the card's fast_path.window_vox: the CPU fast path's window edge for this "
                        "network (default: the engine's, 64)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("manifest", help="one CSV manifest of the labelled cases of several folders "
                                        "(e.g. phantoms and real cases trained together)")
    p.add_argument("--out", required=True, help="CSV file to write (columns id,ct,pet,label)")
    p.add_argument("--data", action="append", required=True, help="case folder or manifest (repeatable)")
    p.add_argument("--exclude", default="", help="comma-separated case ids to leave out (held out)")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("metrics", help="Dice/HD95/ASSD/surface Dice and DSCagg of mask folders")
    p.add_argument("--pred", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--labels", type=int_list, default=[1, 2])
    p.add_argument("--json", required=True)
    p.set_defaults(func=cmd_metrics)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interactive-refine-train",
                                     description="Train, evaluate and export 2S-ICR models.")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_commands(sub)
    return parser


def train_config(args) -> dict:
    from .config import load_config, parse_assignment, set_dotted

    overrides: dict = {}
    for option, dotted in TRAIN_OVERRIDES.items():
        value = getattr(args, option, None)
        if value is not None:
            set_dotted(overrides, dotted, value)
    if args.no_augmentation:
        set_dotted(overrides, "augmentation.enabled", False)
    for assignment in args.set:
        set_dotted(overrides, *parse_assignment(assignment))
    return load_config(args.config, overrides)


def cmd_train(args) -> dict:
    from . import distributed
    from .variants import TRAINERS

    config = train_config(args)
    ctx = distributed.setup(config["runtime"]["device"])
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        trainer = TRAINERS[args.stage](config, args.data, args.out, fold=args.fold, initial=args.initial,
                                       resume=args.resume, ctx=ctx, init_weights=args.init_weights)
        summary = trainer.run_training()
    finally:
        distributed.teardown(ctx)
    keys = ("trainer", "fold", "stop_reason", "epochs_run", "best_epoch", "best_metric", "metric", "seconds",
            "device")
    return {k: summary[k] for k in keys} | {"out": str(args.out)} if ctx.is_main else {}


def cmd_phantoms(args) -> dict:
    from . import phantoms

    shape = (args.shape,) * 3
    spacing = (args.spacing,) * 3
    pet_spacing = (args.pet_spacing,) * 3 if args.pet_spacing else None
    ids = phantoms.generate_dataset(args.out, args.n, seed=args.seed, shape=shape, spacing_mm=spacing,
                                    prefix=args.prefix, workers=args.workers, pet_spacing_mm=pet_spacing,
                                    p_bulky=args.p_bulky)
    return {"out": str(args.out), "cases": len(ids), "first": ids[:3]}


def cmd_evaluate(args) -> dict:
    from .evaluate import evaluate

    cases = [c for c in args.cases.split(",") if c] if args.cases else None
    if args.split_of:
        cases = json.loads((Path(args.split_of) / "splits.json").read_text())["val"]
    summary = evaluate(args.model, args.data, args.out, case_ids=cases, n_clicks=args.clicks,
                       n_seeds=args.seeds, device=args.device, user=args.user, label_value=args.label,
                       surface=not args.no_surface, refine_mode=args.refine_mode,
                       region_removal=not args.no_region_removal, uncertainty=args.uncertainty,
                       roi_center=args.roi_center, threshold_start=args.threshold_start,
                       local_edits=args.local_edits, local_edits_positive=args.local_edits_positive,
                       uncertainty_passes=args.uncertainty_passes)
    out = {"out": str(args.out), "n_cases": summary["n_cases"], "dice_mean": summary["dice_mean"]}
    if "suggest" in summary:
        out["suggest"] = summary["suggest"]
    if "uncertainty_calibration" in summary:
        out["uncertainty_calibration"] = summary["uncertainty_calibration"]
    return out


def cmd_export(args) -> dict:
    from .export import export_package

    split = lambda text: [p for p in text.split(",") if p]  # noqa: E731
    path = export_package(split(args.initial), split(args.refine), args.out, name=args.name, half=args.half,
                          fast_window=args.fast_window, unanchored_runs=split(args.unanchored),
                          flags=args.card_flag)
    return {"model": str(path)}


def cmd_manifest(args) -> dict:
    from .data import write_manifest

    excluded = [c for c in args.exclude.split(",") if c.strip()]
    counts = write_manifest(args.out, args.data, excluded)
    return {"manifest": args.out, "cases": counts}


def cmd_metrics(args) -> dict:
    from .seg_metrics import evaluate_folders

    result = evaluate_folders(args.pred, args.truth, args.labels)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return {"json": args.json, "aggregate": result["aggregate"]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        apply_process_settings(threads=threads_from_environment())  # before anything uses torch
        summary = args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # the engine's errors are ValueErrors too
        print(f"interactive-refine-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if summary:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
