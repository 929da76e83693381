"""Clinical outputs of ``interactive-refine segment``: measurements, DICOM SEG/RTSTRUCT, session log.

:func:`add_segment_options` adds the options; :func:`prepare` checks every target and reads the
source CT series, :func:`check_ct` matches it with the session's CT grid, both *before* the model
runs (a refused option writes nothing); :func:`finish` writes the objects after the mask (none
for an empty contour, with a warning) and returns the JSON summary's additions:
``measurements`` (per class, :mod:`.measurements`), ``dicom_seg``, ``rtstruct`` and
``session_log``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageError
from .measurements import DEFAULT_MTV_FRACTION

logger = logging.getLogger(__name__)

SUV_OVERRIDE_HELP = ("use a PET DICOM series whose SUV tags look implausible (weight, dose, delay, "
                     "SUVmax outside 1..100): each is logged as a warning instead of refused")


def add_pet_options(parser) -> None:
    parser.add_argument("--allow-implausible-suv", action="store_true", help=SUV_OVERRIDE_HELP)


def add_segment_options(parser) -> None:
    parser.add_argument("--dicom-seg", metavar="SEG.dcm",
                        help="also write the result as a DICOM SEG referencing the CT series (--ct "
                             "must be that DICOM folder)")
    parser.add_argument("--rtstruct", metavar="RS.dcm",
                        help="also write the result as an RTSTRUCT referencing the CT series")
    parser.add_argument("--session-log", metavar="CSV",
                        help="append a row (time to the contour, clicks by kind, model, device) to CSV")
    parser.add_argument("--mtv-fraction", type=float, default=DEFAULT_MTV_FRACTION,
                        help="MTV = contour voxels with SUV >= this fraction of its SUVmax "
                             f"(default {DEFAULT_MTV_FRACTION}, the EANM 41%%)")


@dataclass
class Targets:
    """Checked output paths and the sorted source CT instances (None without DICOM output)."""

    seg: Path | None
    rtstruct: Path | None
    log: Path | None
    ct_datasets: list | None


def prepare(args) -> Targets:
    """Check the DICOM and log targets and read the CT series; raises before any work."""
    from .output_files import check_output

    inputs = (args.ct, args.pet)
    seg = check_output(args.dicom_seg, "--dicom-seg", inputs, image=False) if args.dicom_seg else None
    rtstruct = check_output(args.rtstruct, "--rtstruct", inputs, image=False) if args.rtstruct else None
    log = check_output(args.session_log, "--session-log", inputs, image=False) if args.session_log else None
    out = Path(args.out) if getattr(args, "out", None) else None
    paths = [p.resolve() for p in (out, seg, rtstruct, log) if p is not None]
    if len(set(paths)) < len(paths):
        raise ImageError("--out, --dicom-seg, --rtstruct and --session-log must be different files")
    datasets = None
    if seg or rtstruct:
        if not Path(args.ct).is_dir():
            raise ImageError(f"--dicom-seg/--rtstruct reference the source CT series: --ct must be its "
                             f"DICOM folder, got the file {args.ct}")
        from .dicom_series import load_datasets, sort_datasets

        datasets = sort_datasets(load_datasets(args.ct, "CT"))
    return Targets(seg, rtstruct, log, datasets)


def check_ct(targets: Targets, grid) -> None:
    """Refuse, before the model runs, a CT grid that is not the DICOM series' (SEG frames map to it)."""
    if targets.ct_datasets is not None:
        from .dicom_export import check_grid

        check_grid(grid, targets.ct_datasets)


def finish(args, session, targets: Targets, log, labels) -> dict:
    """Measurements, DICOM objects and the session-log row for the final ``labels`` (CT grid; a
    model with several classes: a label map, measured per class, a row for each even when empty)."""
    from .measurements import classes_of, measure_classes

    grid = session.ct.grid
    pet = session.image.pet if session.image is not None else None
    classes = classes_of(session.labels) if len(session.classes) > 1 else None
    out = {"measurements": measure_classes(labels, grid, pet, classes, mtv_fraction=args.mtv_fraction)}
    if targets.ct_datasets is not None and not labels.any():
        logger.warning("the contour is empty: no DICOM SEG or RTSTRUCT written")
        out["dicom_skipped"] = "empty contour"
    elif targets.ct_datasets is not None:
        from .dicom_export import write_rtstruct, write_seg
        from .output_files import write_atomically

        if targets.seg:
            write_atomically(targets.seg,
                             lambda tmp: write_seg(labels, grid, targets.ct_datasets, tmp), "SEG")
            out["dicom_seg"] = str(targets.seg)
        if targets.rtstruct:
            write_atomically(targets.rtstruct,
                             lambda tmp: write_rtstruct(labels, grid, targets.ct_datasets, tmp), "RTSTRUCT")
            out["rtstruct"] = str(targets.rtstruct)
    if targets.log:
        from .session_log import append_row

        log.accept(next(iter(out["measurements"].values()))["volume_ml"])  # the first class's
        append_row(targets.log, log.row())
        out["session_log"] = str(targets.log)
    return out
