"""Segment every PET/CT case of a folder with InteractiveRefine, headless, through the module's Logic.

In Slicer (installed extension, or a clone added as a module path)::

    Slicer --no-main-window --python-script InteractiveRefine/InteractiveRefineBatch.py -- \\
        --input CASES --output OUT [--model DIR] [--clicks N] [--user PRESET] [--seed S] \\
        [--device auto|cpu|cuda]

With plain Python and slicer-core (from a clone: uses ``Testing/slicer/slicer_bootstrap.py``)::

    python InteractiveRefine/InteractiveRefineBatch.py --input CASES --output OUT [--clicks N]

Cases are found by ``InteractiveRefineLib.cases.find_cases`` (HECKTOR 2021/2022 names or a CSV
manifest). For each case the CT and PET are loaded as volume nodes, the Logic segments them, and
with ``--clicks N`` and a label the simulated user (``--user``: the 2S-ICR paper's ``2sicr``,
seeded, for a one-class model; HN-UISeg's per-class ``hnuiseg`` for a model with a gtvn output;
the engine's ``simulation.click_loop``, clicking inside the CT only) places N clicks as markups
points, exactly like a user; with a two-class model the label holds the card's values (GTVp 1,
GTVn 2) and each positive click carries its class (a GTVn click is a point of the lymph-node
list). Writes ``OUT/<id>.seg.nrrd`` (the GTVp segment, and GTVn for a model with a gtvn output, on
the CT geometry after the last click), ``OUT/metrics.csv`` with the GTVp's Dice and HD95 after
0..N clicks (empty without a label), the lesion measurements (SUVmax, SUVpeak, SUVmean, MTV, TLG)
and for a two-class model each class's Dice, HD95 and volume (``gtvp_dice``, ``gtvp_hd95_mm``,
``gtvn_dice``, ``gtvn_hd95_mm``, ``gtvp_volume_ml``, ``gtvn_volume_ml``), and
``OUT/session_log.csv`` (one row per case: seconds to the contour, clicks by kind, model, device).
A PET given as a DICOM folder is converted to SUVbw. Exit status 0 when every case worked, 1 otherwise.

This file also defines a hidden module class: Slicer loads every ``.py`` in a module folder as a
module, and finds one here instead of logging an error.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

try:  # Slicer's base class; absent in plain Python before the bootstrap
    from slicer.ScriptedLoadableModule import ScriptedLoadableModule
except ImportError:
    ScriptedLoadableModule = object

logger = logging.getLogger("InteractiveRefineBatch")

#: The one-click PET threshold floor (engine ``simulation.one_click_baseline``), on each case's
#: 0-click row: Dice of the 40 % and 50 % SUVmax regions from the tumour's innermost voxel and of
#: the model after that same click and of the session's own 40 % threshold click.
BASELINE_COLUMNS = ("threshold40_dice", "threshold50_dice", "model_one_click_dice", "threshold_click_dice")
#: Lesion measurements of the GTVp after every step (engine ``measurements``: SUVpeak is PERCIST's
#: 1 mL sphere; MTV = voxels >= 41 % of SUVmax, TLG = MTV x its SUVmean).
MEASUREMENT_COLUMNS = ("suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg")
METRICS_COLUMNS = ("case_id", "clicks", "dice", "hd95_mm", "volume_ml", "seconds", "device", "error",
                   *BASELINE_COLUMNS, *MEASUREMENT_COLUMNS)
#: A model with several classes (GTVp, GTVn) adds each class's Dice and HD95 (its segment as
#: written against the label's value of that class) after ``hd95_mm``, and each class's volume
#: (mL) after ``volume_ml`` (all classes together); the other columns stay the GTVp's (``dice`` and
#: ``hd95_mm`` equal ``gtvp_dice`` and ``gtvp_hd95_mm``, so they mean the same for every model).
CLASS_DICE_COLUMN = "{}_dice"
CLASS_HD95_COLUMN = "{}_hd95_mm"
CLASS_VOLUME_COLUMN = "{}_volume_ml"
#: The simulated user of ``--user`` when none is given: by the model's number of classes.
DEFAULT_USER = {1: "2sicr", 2: "hnuiseg"}


def metricsColumns(classes=("gtvp",)) -> tuple:
    """The CSV header: :data:`METRICS_COLUMNS`, plus for a model with several classes each class's
    ``<class>_dice``, ``<class>_hd95_mm`` (after ``hd95_mm``) and ``<class>_volume_ml`` (after
    ``volume_ml``), e.g. ``gtvp_dice, gtvp_hd95_mm, gtvn_dice, gtvn_hd95_mm``."""
    if len(classes) <= 1:
        return METRICS_COLUMNS
    columns = list(METRICS_COLUMNS)
    at = columns.index("volume_ml") + 1
    columns[at:at] = [CLASS_VOLUME_COLUMN.format(c) for c in classes]
    at = columns.index("hd95_mm") + 1
    columns[at:at] = [column.format(c) for c in classes for column in (CLASS_DICE_COLUMN, CLASS_HD95_COLUMN)]
    return tuple(columns)


def defaultUser(classes) -> str:
    """The simulated user when ``--user`` is not given: ``2sicr`` (one class), ``hnuiseg`` (several)."""
    return DEFAULT_USER[1] if len(classes) <= 1 else DEFAULT_USER[2]


def modelClasses(module, args) -> tuple:
    """The model's output classes (the package is loaded once, into the Logic's cache); a model
    that cannot be loaded counts as one class (each case then fails with its reason)."""
    logic = module.InteractiveRefineLogic()
    try:
        return tuple(logic.getModelPackage(args.model, args.device).spec.classes)
    except Exception as exc:  # noqa: BLE001 - reported per case
        logger.warning("the model could not be loaded: %s", exc)
        return ("gtvp",)
    finally:
        logic.clear()


class InteractiveRefineBatch(ScriptedLoadableModule):
    """Hidden placeholder module so that Slicer's module scan accepts this script."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "InteractiveRefine batch"
        parent.categories = []
        parent.hidden = True
        parent.contributors = ["InteractiveRefine developers (InteractiveRefine project)"]
        parent.helpText = "Headless batch segmentation; run with Slicer --python-script (see the file)."

    def runTest(self, msec=100, **kwargs):
        """Nothing to test in Slicer's self-test list: the batch is tested through its Logic."""


def parseArguments(argv):
    moduleDir = str(Path(__file__).resolve().parent)  # the engine lies beside this file
    if moduleDir not in sys.path:
        sys.path.insert(0, moduleDir)
    from InteractiveRefineLib.click_regions import NO_REGION_REMOVAL_HELP
    from InteractiveRefineLib.simulated_user import SIMULATED_USER_PRESETS

    if "--" in argv:  # Slicer passes the script arguments after "--"
        argv = argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(
        prog="InteractiveRefineBatch", description="Segment every PET/CT case of a folder (GTVp)."
    )
    parser.add_argument("--input", required=True, help="case folder (HECKTOR layout) or CSV manifest")
    parser.add_argument("--output", required=True, help="folder for <id>.seg.nrrd and metrics.csv")
    parser.add_argument("--model", default="", help="model package folder (default: the shipped model)")
    parser.add_argument("--clicks", type=int, default=0, help="simulated clicks per case (needs a label)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated user")
    parser.add_argument("--user", "--preset", dest="user", default=None, choices=list(SIMULATED_USER_PRESETS),
                        help="simulated-user preset (default: 2sicr, the paper's, for a one-class model; "
                             "hnuiseg, per class, for a model with a gtvn output)")
    parser.add_argument("--label-value", type=int, default=1,
                        help="label value of the GTVp (HECKTOR: 1; one-class models: a model with a gtvn "
                             "output reads its card's values, GTVp 1 and GTVn 2)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-region-removal", action="store_true", help=NO_REGION_REMOVAL_HELP)
    parser.add_argument("--dicom-export", action="store_true",
                        help="for cases whose CT is a DICOM folder, also write <id>.seg.dcm (DICOM SEG) and "
                             "<id>.rtstruct.dcm referencing that series")
    args = parser.parse_args(argv)
    if args.clicks < 0:
        parser.error("--clicks must be 0 or more")
    if args.seed < 0:
        parser.error(f"--seed must be 0 or more, got {args.seed}")
    return args


def setUpSlicer():
    """The InteractiveRefine module file, with slicer-core bootstrapped when there is no application."""
    import slicer

    moduleDir = Path(__file__).resolve().parent
    if getattr(slicer, "app", None) is None:
        bootstrapDir = moduleDir.parent / "Testing" / "slicer"
        if not (bootstrapDir / "slicer_bootstrap.py").is_file():
            raise SystemExit(
                f"No Slicer application and no slicer-core bootstrap at {bootstrapDir}: run this script "
                "with Slicer --python-script, or from a clone of the repository"
            )
        sys.path.insert(0, str(bootstrapDir))
        import slicer_bootstrap

        return slicer_bootstrap.load_module()
    if str(moduleDir) not in sys.path:
        sys.path.insert(0, str(moduleDir))
    import InteractiveRefine

    return InteractiveRefine


def caseMetrics(logic, truth, spacing, className: str = "gtvp") -> tuple:
    """(Dice, HD95 mm) of the class's segment as written in the segmentation against the label
    (``truth``: boolean, on the CT grid); empty strings without a label."""
    from InteractiveRefineLib.metrics import dice, hd95, json_number

    if truth is None:
        return "", ""
    mask = logic.segmentMask(className).astype(bool)
    return json_number(dice(mask, truth)), json_number(hd95(mask, truth, spacing))


def classMetrics(logic, truthClasses, classes, spacing) -> dict:
    """Each class's ``<class>_dice`` and ``<class>_hd95_mm`` (``truthClasses``: the label's class
    map on the CT grid, 0 background and c + 1 class c; None: no label, empty cells)."""
    row = {}
    for c, name in enumerate(classes):
        truth = None if truthClasses is None else truthClasses == c + 1
        row[CLASS_DICE_COLUMN.format(name)], row[CLASS_HD95_COLUMN.format(name)] = caseMetrics(
            logic, truth, spacing, name)
    return row


def labelTruth(label, grid, session, labelValue: int):
    """(GTVp truth, class map) of the label on ``grid``: for a one-class model the boolean mask of
    ``labelValue`` and None; for several classes the class map of the card's label values
    (engine ``labels_on_grid``: 0 background, c + 1 class c) and its first class as the GTVp."""
    from InteractiveRefineLib.simulation import labels_on_grid, truth_on_grid

    if label is None:
        return None, None
    if len(session.classes) <= 1:
        return truth_on_grid(label, grid, labelValue), None
    truthClasses = labels_on_grid(label, grid, session.card.labels)
    return truthClasses == 1, truthClasses


def baselineRow(session, truth) -> dict:
    """The one-click floor's CSV columns for a case with a label and a PET (else none). The
    session ends at its initial state, which the segment shows."""
    from InteractiveRefineLib.simulation import baseline_fields, one_click_baseline

    if truth is None or session.image.pet is None:
        return {}
    return baseline_fields(one_click_baseline(session, truth))


def writeDicom(session, case, output: Path) -> None:
    """``<id>.seg.dcm`` (DICOM SEG) and ``<id>.rtstruct.dcm`` of the case's final mask, referencing
    its CT DICOM series (engine ``dicom_export``); an empty contour writes neither."""
    from InteractiveRefineLib.dicom_export import write_rtstruct, write_seg
    from InteractiveRefineLib.dicom_series import load_datasets, sort_datasets
    from InteractiveRefineLib.output_files import write_atomically

    labels = session.mask_on_ct()
    if not labels.any():
        logger.warning("%s: the contour is empty: no DICOM SEG or RTSTRUCT written", case.case_id)
        return
    datasets = sort_datasets(load_datasets(case.ct, "CT"))
    grid = session.ct.grid
    write_atomically(output / f"{case.case_id}.seg.dcm",
                     lambda tmp: write_seg(labels, grid, datasets, tmp), "SEG")
    write_atomically(output / f"{case.case_id}.rtstruct.dcm",
                     lambda tmp: write_rtstruct(labels, grid, datasets, tmp), "RTSTRUCT")


def processCase(module, case, args, writeRow) -> None:
    """Segment one case, apply the simulated clicks, write ``<id>.seg.nrrd`` and the metric rows."""
    import numpy as np
    import slicer
    from InteractiveRefineLib.geometry import read_volume
    from InteractiveRefineLib.simulated_user import SimulatedUser
    from InteractiveRefineLib.simulation import click_loop

    logic = module.InteractiveRefineLogic()
    logic.setAutoRefine(True)
    logic.setCompileNetworks(False)  # every mask is exact: a compiled click would only be redone eagerly
    logic.setRegionRemoval(not args.no_region_removal)
    try:
        ct = logic.loadCtVolume(str(case.ct), f"{case.case_id} CT")  # a DICOM folder too
        # A PET DICOM folder becomes SUVbw (engine ``suv``; a bad tag fails the case by name).
        pet = logic.loadPetVolume(str(case.pet), f"{case.case_id} PET") if case.pet else None
        logic.setSessionLog(Path(args.output) / "session_log.csv", case.case_id)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{case.case_id} GTVp")
        t0 = time.perf_counter()
        result = logic.segment(ct, pet, segmentation, None, modelPath=args.model, device=args.device)
        session = logic.session
        label = read_volume(case.label) if case.label else None
        truth, truthClasses = labelTruth(label, session.ct.grid, session, args.label_value)
        spacing = session.ct.grid.spacing
        multi = len(session.classes) > 1

        def record(clicks, seconds, extra=None):
            diceValue, hd95Value = caseMetrics(logic, truth, spacing)
            perClass = logic.lesionMeasurements()
            measured = perClass["GTVp"]
            volumes = {}
            if multi:
                from InteractiveRefineLib.measurements import display_name

                volumes = {CLASS_VOLUME_COLUMN.format(name): perClass[display_name(name)]["volume_ml"]
                           for name in session.classes}
                volumes.update(classMetrics(logic, truthClasses, session.classes, spacing))
            writeRow(
                {
                    **(extra or {}),
                    **volumes,
                    **{key: measured[key] for key in MEASUREMENT_COLUMNS},
                    "case_id": case.case_id,
                    "clicks": clicks,
                    "dice": diceValue,
                    "hd95_mm": hd95Value,
                    "volume_ml": round(logic.lastResult.volume_ml, 3),
                    "seconds": round(seconds, 4),
                    "device": result.device,
                    "error": "",
                }
            )

        record(0, time.perf_counter() - t0, baselineRow(session, truth))
        if args.clicks and truth is None:
            logger.warning("%s has no label: no simulated clicks", case.case_id)
        elif args.clicks:
            preset = args.user or defaultUser(session.classes)
            user = SimulatedUser(preset, rng=np.random.default_rng(args.seed))
            # One class: a boolean truth; several: the class map, and each positive click has its class.
            truthWork, workClasses = labelTruth(label, session.grid, session, args.label_value)
            if multi:
                truthWork = workClasses
            done = 0
            # The engine's click loop; each click goes through the Logic (``addClick(..., label=)``),
            # as a markup of its list would.
            for step in click_loop(session, truthWork, args.clicks, user, apply=logic.addClick):
                done = step.step
                record(done, logic.clickTimings[-1]["total_s"])
            if done < args.clicks:
                logger.info("%s: no error left after %d click(s)", case.case_id, done)
        logic.saveSegmentation(segmentation, str(Path(args.output) / f"{case.case_id}.seg.nrrd"))
        if args.dicom_export and Path(case.ct).is_dir():
            writeDicom(session, case, Path(args.output))
        logic.acceptContour()  # the case's row of session_log.csv
    finally:
        logic.clear()
        slicer.mrmlScene.Clear(0)


def run(args) -> int:
    module = setUpSlicer()
    from InteractiveRefineLib.cases import find_cases
    from InteractiveRefineLib.errors import InteractiveRefineError
    from InteractiveRefineLib.runtime import apply_process_settings

    apply_process_settings()  # before any model loads torch

    try:
        cases = find_cases(args.input)
    except InteractiveRefineError as exc:
        logger.error("%s", exc)
        return 1
    os.makedirs(args.output, exist_ok=True)
    open(Path(args.output) / "session_log.csv", "w").close()  # this run's cases only
    failed = []
    with open(Path(args.output) / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=metricsColumns(modelClasses(module, args)))
        writer.writeheader()

        def writeRow(row):
            writer.writerow(row)
            handle.flush()

        for case in cases:
            logger.info("case %s", case.case_id)
            try:
                processCase(module, case, args, writeRow)
            except (ValueError, OSError, RuntimeError) as exc:  # one bad case: report it, go on
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                logger.error("%s: %s", case.case_id, reason)
                failed.append(case.case_id)
                writeRow({"case_id": case.case_id, "clicks": 0, "error": reason})
    print(json.dumps({"cases": len(cases), "failed": failed, "output": str(args.output)}))
    return 1 if failed else 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parseArguments(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    status = main()
    import slicer

    if getattr(slicer, "app", None) is not None:
        slicer.util.exit(status)  # leave the (window-less) application
    else:
        sys.exit(status)
