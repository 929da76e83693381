"""Command line tool ``interactive-refine`` (DESIGN.md section 3).

Subcommands:
- ``segment``: initial segmentation plus optional clicks; writes the mask on the CT grid.
- ``simulate``: the paper's simulated user for N clicks; metrics after every click.
- ``demo``: the whole loop on the sample data (or a generated phantom), with a PNG.
- ``create-model``: a package with random weights, for pipeline tests only.

A click is ``+R,A,S`` (positive: the first class, GTVp), ``-R,A,S`` (negative: not any class),
``n+R,A,S`` (positive lymph node, GTVn: models with a ``gtvn`` output) or ``t+R,A,S`` (the PET
threshold region), RAS millimetres as Slicer shows them. A model with several classes writes a
label map (0 background, 1 GTVp, 2 GTVn); ``--out-dir`` writes one 0/1 file per class.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from . import clinical
from .click_regions import NO_REGION_REMOVAL_HELP
from .constraints import LOCAL_EDITS_HELP, LOCAL_EDITS_POSITIVE_HELP
from .errors import InteractiveRefineError
from .networks import TINY_NETWORK, TINY_ROI
from .runtime import apply_process_settings, threads_from_environment
from .session_log import SessionLog
from .simulated_user import SIMULATED_USER_PRESETS
from .threshold import DEFAULT_METHOD, METHODS

logger = logging.getLogger("interactive-refine")

#: ``--model`` of every command: a folder, or a shipped package by name (model_package.resolve_model_dir).
MODEL_HELP = ("model package folder, or a shipped model's name: pet_region, gtvp_gtvn "
              "(default: the shipped default model)")


def parse_triplet(text: str, what: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise InteractiveRefineError(f"{what} must be three numbers R,A,S in mm, got {text!r}")
    return values


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def parse_click(text: str) -> tuple[tuple[float, float, float], bool]:
    """``+R,A,S`` -> (ras, True); ``-R,A,S`` -> (ras, False)."""
    ras, positive, kind = parse_any_click(text)
    if kind != "point":
        raise InteractiveRefineError(f"a point click must start with + or -, got {text!r}")
    return ras, positive


def parse_any_click(text: str) -> tuple[tuple[float, float, float], bool, str]:
    """:func:`parse_click` plus ``t+R,A,S`` -> (ras, True, "threshold"): the PET threshold
    region around the point; the third value is the click's kind."""
    kind = "threshold" if text[:2] == "t+" else "point"
    sign = text[1:] if kind == "threshold" else text
    if not sign or sign[0] not in "+-":
        raise InteractiveRefineError(
            "a click must start with + (tumour), - (not tumour) or t+ (PET threshold region), "
            f"e.g. +12.5,-40,8; got {text!r}"
        )
    return parse_triplet(sign[1:], "click"), sign[0] == "+", kind


#: Click prefixes that name a class: ``n+`` is a positive click on the lymph-node class.
CLASS_PREFIXES = {"n": "gtvn"}


def parse_class_click(text: str) -> tuple[tuple[float, float, float], bool, str, str | None]:
    """:func:`parse_any_click` plus the click's class: ``n+R,A,S`` -> (ras, True, "point", "gtvn");
    other clicks have class None (a positive click: the model's first class)."""
    if text[:1] in CLASS_PREFIXES and text[1:2] in ("+", "-"):
        if text[1] == "-":
            raise InteractiveRefineError(
                f"a negative click means 'not any class': write -R,A,S, not {text[:2]}R,A,S (got {text!r})")
        return parse_triplet(text[2:], "click"), True, "point", CLASS_PREFIXES[text[0]]
    ras, positive, kind = parse_any_click(text)
    return ras, positive, kind, None


def _check_click_classes(session, clicks) -> None:
    """Every click's class is one of the model's outputs (before the model runs: nothing written)."""
    for _, _, _, label in clicks:
        if label is not None and label not in session.classes:
            raise InteractiveRefineError(
                f"n+ clicks mark a lymph node (class {label!r}), but this model segments only "
                f"{', '.join(session.classes)}: use + clicks, or a model with a {label} output")


def _join_click_values(argv: list[str]) -> list[str]:
    """Let ``--click -1,2,3`` through: argparse would take ``-1,2,3`` for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--click" and i + 1 < len(argv):
            out.append(f"--click={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


#: ``--precision`` -> the session's ``amp``
PRECISIONS = {"auto": "auto", "float32": False, "reduced": True, "bfloat16": True}


def _session(args, ct_path, pet_path):
    from .dicom_series import read_pet
    from .geometry import read_volume
    from .model_package import load_model_package
    from .session import RefinementSession

    if pet_path and Path(ct_path).exists() and Path(pet_path).exists() and (
            Path(ct_path).resolve() == Path(pet_path).resolve() or os.path.samefile(ct_path, pet_path)):
        raise InteractiveRefineError(f"--ct and --pet name the same file {ct_path}; expected two images")
    package = load_model_package(args.model)
    ct = read_volume(ct_path)
    pet = read_pet(pet_path, getattr(args, "allow_implausible_suv", False)) if pet_path else None
    if package.requires_pet and pet is None:
        raise InteractiveRefineError("this model needs --pet (its card does not allow CT-only input)")
    if package.needs_pet and pet is None:
        logger.warning("no --pet: the model runs on the CT alone, its PET channel zero-filled (the card "
                       "allows CT-only input)")
    session = RefinementSession(package, device=args.device, refine_mode=args.refine_mode,
                                fast_window=args.fast_window, region_removal=not args.no_region_removal,
                                amp=PRECISIONS[args.precision],
                                threshold_start=getattr(args, "threshold_start", None),
                                local_edits=getattr(args, "local_edits", None),
                                local_edits_positive=getattr(args, "local_edits_positive", None),
                                compile=getattr(args, "compile", None) or False,
                                amp_dtype="bfloat16" if args.precision == "bfloat16" else None)
    session.set_image(ct, pet, roi_center_ras=parse_roi_center(args.roi_center),
                      allow_low_pet_coverage=args.allow_low_pet_coverage)
    roi = session.roi_placement
    logger.info("ROI: %s, centre RAS %s (%s)", roi.description, roi.as_dict()["center_ras"], roi.reason)
    return session


def parse_roi_center(text):
    """``--roi-center``: ``auto`` (the default), ``ct`` or ``R,A,S``."""
    if text is None or text.strip().lower() in ("auto", "ct"):
        return "auto" if text is None else text.strip().lower()
    return parse_triplet(text, "--roi-center (auto, ct or R,A,S)")


def _roi(session) -> dict:
    """The ROI's placement for JSON summaries: centre, method and reason."""
    return session.roi_placement.as_dict()


def _pet_coverage(session):
    """Fraction of the ROI the PET covers (JSON summaries), None without a PET."""
    coverage = session.image.pet_coverage
    return None if coverage is None else round(coverage, 3)


def _pet_zero_filled(session) -> bool:
    """A PET/CT model ran on the CT alone (no PET given; its card allows it)."""
    return session.card.needs_pet and session.image.pet is None


def cmd_segment(args) -> dict:
    from .geometry import Volume, write_volume
    from .output_files import check_output

    clicks = [parse_class_click(c) for c in args.click or []]
    _check_threshold_has_pet(args, any(kind == "threshold" for _, _, kind, _ in clicks))
    if args.out is None and args.out_dir is None:
        raise InteractiveRefineError("segment needs --out (the label map) and/or --out-dir (one file per "
                                     "class)")
    if args.out:
        check_output(args.out, "--out", inputs=(args.ct, args.pet))  # before any work
    if args.out_dir:
        _check_out_dir(args, ("gtvp", "gtvn"))
    if args.uncertainty:
        check_output(args.uncertainty, "--uncertainty", inputs=(args.ct, args.pet, args.out))
    targets = clinical.prepare(args)
    log = SessionLog(case_id=Path(args.ct).name.split(".")[0])
    session = _session(args, args.ct, args.pet)
    _check_click_classes(session, clicks)  # before the model runs
    per_class = _check_out_dir(args, session.classes) if args.out_dir else {}
    clinical.check_ct(targets, session.ct.grid)  # before the model runs
    log.model, log.model_version = session.card.name, session.card.version
    results = [session.initial()]
    for ras, positive, kind, label in clicks:
        if kind == "threshold":
            results.append(session.add_threshold(ras, args.threshold_percent / 100.0,
                                                 pet_is_suv=args.pet_is_suv or None,
                                                 method=getattr(args, "threshold_method", None)))
        else:
            results.append(session.add_click(ras, positive, label=label))
    previews = session.needs_confirm
    if previews and not args.keep_previews:
        session.confirm()  # the exact float32 whole-ROI mask of the same clicks
    mask = Volume(session.mask_on_ct(), session.ct.grid)
    if args.out:
        write_volume(mask, args.out, dtype=np.uint8)
    for name, path in per_class.items():
        value = session.labels[name] if len(session.classes) > 1 else 1
        write_volume(Volume((mask.array == value).astype(np.uint8), mask.grid), path, dtype=np.uint8)
    last = results[-1]
    log.device = str(last.device)
    log.observe(session.clicks)
    extra = clinical.finish(args, session, targets, log, mask.array)
    if args.uncertainty or args.suggest:
        extra["uncertainty"] = _uncertainty(args, session)
    if per_class:
        extra["out_dir"] = {name: str(path) for name, path in per_class.items()}
    if len(session.classes) > 1:
        extra["labels"] = dict(session.labels)
        extra["click_classes"] = [c.label or (session.classes[0] if c.positive else None)
                                  for c in session.clicks]
    return extra | {
        "out": None if args.out is None else str(args.out),
        "voxels": last.voxels, "volume_ml": round(last.volume_ml, 3),
        "clicks": len(clicks), "device": last.device, "pet_coverage": _pet_coverage(session),
        "roi": _roi(session),
        "pet_zero_filled": _pet_zero_filled(session),
        "threshold_regions": [r.details["threshold"] for r in results if "threshold" in r.details],
        "refine_mode": session.refine_mode, "precision": session.precision,
        "exact": not (previews and args.keep_previews),
        "timings_s": {"preprocess": round(session.preprocess_seconds, 4),
                      "initial": round(results[0].timings["total_s"], 4),
                      "per_click": [round(r.timings["total_s"], 4) for r in results[1:]]},
    }


def _check_out_dir(args, names) -> dict:
    """``--out-dir``: ``{class: DIR/<class>.nii.gz}``, each target checked (nothing written yet)."""
    from .output_files import check_output

    folder = Path(args.out_dir)
    if folder.exists() and not folder.is_dir():
        raise InteractiveRefineError(f"--out-dir {folder} is a file, not a folder")
    inputs = (args.ct, args.pet, args.out, args.uncertainty)
    return {name: check_output(folder / f"{name}.nii.gz", "--out-dir", inputs=inputs) for name in names}


def _check_threshold_has_pet(args, threshold_clicks: bool) -> None:
    """The PET threshold tool (t+ clicks, --threshold-start) reads PET values: refuse it without
    --pet before any work (a CT-only run of a PET-optional model has no PET to threshold)."""
    if args.pet is None and (threshold_clicks or getattr(args, "threshold_start", False)):
        tool = "t+ clicks" if threshold_clicks else "--threshold-start"
        raise InteractiveRefineError(f"the PET threshold tool ({tool}) needs --pet; none was given")


def _uncertainty(args, session) -> dict:
    """The final state's uncertainty (:mod:`.uncertainty`): its summary with the suggested next
    click, and the entropy map on the CT grid written to ``--uncertainty``."""
    from .geometry import Volume, resample, write_volume
    from .uncertainty import estimate

    result = estimate(session, args.uncertainty_passes)
    summary = result.summary()
    if args.uncertainty:
        on_ct = resample(result.entropy, session.grid, session.ct.grid, order=1)
        write_volume(Volume(on_ct, session.ct.grid), args.uncertainty, dtype=np.float32)
        summary["file"] = str(args.uncertainty)
    return summary


def cmd_simulate(args) -> dict:
    from .dicom_import import read_label
    from .output_files import check_output, write_text_atomically
    from .simulation import run_simulation

    _check_threshold_has_pet(args, False)
    if args.json:
        check_output(args.json, "--json", inputs=(args.ct, args.pet, args.label), image=False)
    session = _session(args, args.ct, args.pet)
    label = read_label(args.label, args.segment)

    def progress(step, values):
        logger.info("step %d: Dice %.4f", step, values["dice"])

    result = run_simulation(
        session, label, args.clicks, seed=args.seed, preset=args.user, label_value=args.label_value,
        on_step=progress, exact=not args.keep_previews, label_name=str(args.label),
        uncertainty_passes=args.uncertainty_passes,
    )
    result["device"] = str(session.device)
    result["model"] = session.package.spec.name
    result["refine_mode"] = session.refine_mode
    result["precision"] = session.precision
    result["pet_coverage"] = _pet_coverage(session)
    result["roi"] = _roi(session)
    result["pet_zero_filled"] = _pet_zero_filled(session)
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=2) + "\n", "JSON")
    summary = {"dice": [round(d, 4) for d in result["dice"]], "json": args.json, "roi": result["roi"]}
    if "dice_per_class" in result:  # a model with several classes: each class's curve too
        summary["dice_per_class"] = {name: [round(d, 4) for d in curve]
                                     for name, curve in result["dice_per_class"].items()}
    if "suggest" in result:  # --user suggest: the clicks the 2sicr user made for want of a suggestion
        summary["fallback_clicks"] = result["suggest"]["fallback_clicks"]
    return summary


def cmd_create_model(args) -> dict:
    from .model_package import create_random_model_package

    network = None
    roi = (144, 144, 144)
    if args.tiny:
        network, roi = TINY_NETWORK, TINY_ROI
    path = create_random_model_package(args.out, network=network, roi_size_vox=roi, seed=args.seed,
                                       outputs=2 if args.gtvn else None)
    return {"model": str(path), "note": "random weights: for pipeline tests only"}


def cmd_demo(args) -> dict:
    from .demo import run_demo

    return run_demo(
        out_dir=Path(args.out), model=args.model, device=args.device, seed=args.seed,
        data_dir=Path(args.data) if args.data else None,
    )


def _add_session_options(p, pet_required: bool = False) -> None:
    """Options of every subcommand that runs a session on a CT (and PET)."""
    from .backend import COMPILE_MODES
    from .policy import AUTO_PRECISION_RULE, AUTO_REFINE_RULE

    p.add_argument("--ct", required=True, help="CT file (NIfTI/NRRD/MHA) or DICOM folder")
    p.add_argument("--pet", required=pet_required, help="PET (SUV) file or DICOM folder")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--roi-center", default="auto", metavar="auto|ct|R,A,S",
                   help="ROI centre: auto (default: the head-and-neck field below the brain on "
                        "PET, else centred on the body), ct (the CT's centre) or R,A,S in mm")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--refine-mode", default="auto", choices=["auto", "full", "fast"],
                   help=f"auto: {AUTO_REFINE_RULE}; full: always the whole ROI (the paper's "
                        "method); fast: always a window")
    p.add_argument("--precision", default="auto", choices=sorted(PRECISIONS),
                   help=f"auto: {AUTO_PRECISION_RULE}; reduced: bfloat16 on the CPU, float16 on "
                        "CUDA; bfloat16: bfloat16 on either; float32")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   choices=list(COMPILE_MODES),
                   help="torch.compile the refine networks for the ROI's shape in the background after "
                        "the initial segmentation (eager passes serve the clicks until it is done; its "
                        "kernels are cached under the user's cache folder); MODE: "
                        + ", ".join(COMPILE_MODES) + " (default: default); off by default")
    p.add_argument("--fast-window", type=positive_int, default=None, metavar="N",
                   help="edge in voxels of the fast path's window (default: the model card's "
                        "fast_path.window_vox, else 64)")
    p.add_argument("--no-region-removal", action="store_true", help=NO_REGION_REMOVAL_HELP)
    clinical.add_pet_options(p)
    p.add_argument("--allow-low-pet-coverage", action="store_true",
                   help="accept a PET that covers less than half of the ROI (refused by default)")
    p.add_argument("--keep-previews", action="store_true",
                   help="keep the fast previews (bfloat16 or a window: on a CPU, for ROIs above "
                        "96^3) instead of recomputing them in float32 over the whole ROI "
                        "(session.confirm()); faster, not exact")
    p.add_argument("--threshold-start", action=argparse.BooleanOptionalAction, default=None,
                   help="the first positive click adds the 40%% SUVmax PET region around it "
                        "(where the PET has uptake there) instead of a model refinement "
                        "(default: as the model card says)")
    p.add_argument("--local-edits", action=argparse.BooleanOptionalAction, default=None,
                   help=LOCAL_EDITS_HELP)
    p.add_argument("--local-edits-positive", action=argparse.BooleanOptionalAction, default=None,
                   help=LOCAL_EDITS_POSITIVE_HELP)


def _add_segment(sub) -> None:
    seg = sub.add_parser("segment", help="segment, apply clicks, write the mask on the CT grid")
    _add_session_options(seg)
    seg.add_argument("--click", action="append", metavar="+R,A,S|-R,A,S|n+R,A,S|t+R,A,S",
                     help="a positive (+: tumour, GTVp) or negative (-: not any class) click, n+ for a "
                          "positive lymph-node (GTVn) click (models with a gtvn output), or t+ for the "
                          "PET threshold region around the point (PET >= --threshold-percent of the "
                          "SUVmax within 10 mm); repeat for more")
    seg.add_argument("--uncertainty", metavar="FILE",
                     help="write the final state's uncertainty (predictive entropy, nats, of N passes "
                          "with test-time augmentation and MC dropout) on the CT grid")
    seg.add_argument("--suggest", action="store_true",
                     help="report the suggested next click (the most uncertain region not clicked yet), "
                          "with its sign and class")
    seg.add_argument("--uncertainty-passes", type=positive_int, default=8, metavar="N",
                     help="passes for --uncertainty/--suggest (default 8)")
    seg.add_argument("--threshold-percent", type=float, default=40.0, metavar="P",
                     help="percentage of the local SUVmax for t+ clicks (default 40; 50 is common)")
    seg.add_argument("--threshold-method", choices=METHODS, default=DEFAULT_METHOD,
                     help="t+ clicks: fixed (PET >= P %% of the SUVmax; the default) or background "
                          "(background-corrected: PET >= SUVbg + P %% of (SUVmax - SUVbg), SUVbg the median "
                          "SUV 10-20 mm outside the 40 %% region)")
    seg.add_argument("--pet-is-suv", action="store_true",
                     help="the PET is SUV even though its body median looks implausible for SUV")
    seg.add_argument("--out", help="output mask (e.g. mask.nii.gz): 0/1, or a label map (0 background, "
                                   "1 GTVp, 2 GTVn) for a model with several classes")
    seg.add_argument("--out-dir", metavar="DIR",
                     help="also (or instead) write one 0/1 mask per class: DIR/gtvp.nii.gz, DIR/gtvn.nii.gz")
    clinical.add_segment_options(seg)
    seg.set_defaults(func=cmd_segment)


def _add_simulate(sub) -> None:
    sim = sub.add_parser("simulate", help="simulated user: DSC after each of N clicks")
    _add_session_options(sim)
    sim.add_argument("--label", required=True, help="ground-truth label file on any grid, or a DICOM SEG")
    sim.add_argument("--segment", help="the DICOM SEG's segment: number or label (default: the first)")
    sim.add_argument("--label-value", type=int, default=1,
                     help="label value of GTVp (default 1; a model with several classes reads the "
                          "card's labels: 1 GTVp, 2 GTVn)")
    sim.add_argument("--clicks", type=non_negative_int, default=10)
    sim.add_argument("--seed", type=non_negative_int, default=0)
    sim.add_argument("--user", default="2sicr", choices=list(SIMULATED_USER_PRESETS),
                     help="simulated-user preset (default: the paper's; hnuiseg: HN-UISeg's one click per "
                          "error component and class, for GTVp/GTVn models; suggest: clicks the engine's "
                          "suggested next click, signed by the label, or the 2sicr click when there is none)")
    sim.add_argument("--uncertainty-passes", type=positive_int, default=None, metavar="N",
                     help="--user suggest: passes of each click's uncertainty estimate (default 8)")
    sim.add_argument("--json", help="write the per-click results as JSON here")
    sim.set_defaults(func=cmd_simulate)


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="full loop on the sample data or a phantom; writes a PNG")
    demo.add_argument("--model", help=MODEL_HELP)
    demo.add_argument("--data", help="shared data folder (default: $INTERACTIVE_REFINE_DATA, ../shared/data)")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--seed", type=non_negative_int, default=0)
    demo.set_defaults(func=cmd_demo)


def _add_create_model(sub) -> None:
    create = sub.add_parser("create-model", help="a model package with RANDOM weights (testing)")
    create.add_argument("--out", required=True)
    create.add_argument("--tiny", action="store_true", help="tiny network and 48^3 ROI")
    create.add_argument("--seed", type=non_negative_int, default=0)
    create.add_argument("--gtvn", action="store_true", help="two output classes: GTVp (1) and GTVn (2)")
    create.set_defaults(func=cmd_create_model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interactive-refine",
        description="Interactive PET/CT tumour segmentation (2S-ICR). Coordinates are RAS mm.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_segment, _add_simulate, _add_demo, _add_create_model):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = _join_click_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    previous = _stop_on_sigterm()
    try:
        apply_process_settings(threads=threads_from_environment())  # before anything uses torch
        summary = args.func(args)
    except InteractiveRefineError as exc:
        print(f"interactive-refine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: outputs are written atomically, so none is partial
        print(f"interactive-refine {args.command}: interrupted; no output was written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(json.dumps(summary))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_sigterm():
    """SIGTERM stops like Ctrl-C; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


if __name__ == "__main__":
    sys.exit(main())
