"""Evaluate model packages with the simulated user, exactly as a user would get them.

Every case goes through the engine's ``RefinementSession`` (the ROI centred on the GTVp
centroid, as the paper's cropped data) and ``simulation.run_simulation``: the simulated user
clicks on the session's working grid (truth resampled there with nearest neighbour), its click
goes to ``add_click`` as a RAS point, and DSC, HD95, ASSD, surface Dice at 1 mm and the changed
voxels are measured on the CT grid of the case after 0..N clicks, for every seed.

A model is one package folder, or several joined by commas (fold packages): their members are
pooled into one ensemble whose probabilities the engine averages, and the clicks come from the
ensemble's prediction (paper 4.2). ``NAME=PATH[,PATH...]`` names a model in the tables.

Multi-class models (card outputs e.g. GTVp and GTVn): the session's CT-grid mask is a label map
(0, 1, 2); after every step each class is scored on its own (``mask == label`` against ``label ==
label``): Dice, HD95 (and ASSD, surface Dice), and the sums of HECKTOR 2022's aggregated Dice
(DSCagg, over the cases) per class (:mod:`.seg_metrics`). The rows gain ``dice_<class>``,
``hd95_mm_<class>``, ... and ``overlap2_ml_<class>`` / ``volume_sum_ml_<class>``; the tables a
per-class section; their plain ``dice``, ``hd95_mm``, ... (the main tables) are the engine's
``run_simulation`` curves, which score all classes together (any class against any class).
Single-class reports are unchanged.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from InteractiveRefineLib.dicom_import import read_label
from InteractiveRefineLib.dicom_series import read_pet
from InteractiveRefineLib.errors import ImageError
from InteractiveRefineLib.geometry import read_volume
from InteractiveRefineLib.metrics import json_number
from InteractiveRefineLib.model_package import ModelPackage, load_model_package
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulation import baseline_fields, run_simulation

from . import reporting
from .data import load_cases, roi_center_ras
from .seg_metrics import class_metrics

logger = logging.getLogger(__name__)
#: Where :func:`run_evaluation` centres each case's ROI: the GTVp centroid (the paper), the
#: automatic placement a user without an ROI gets, or the CT's centre.
ROI_CENTERS = ("label", "auto", "ct")

#: The simulated user of multi-class models when none is named: the engine's HN-UISeg preset (one
#: click per connected component and class).
MULTI_CLASS_USER = "hnuiseg"

#: Card sections that must agree for packages to be pooled into one ensemble.
ENSEMBLE_SECTIONS = ("network", "preprocessing", "clicks", "threshold", "inputs", "outputs")


def _ensemble_sections(package: ModelPackage) -> dict:
    """The typed card's values of each of ``ENSEMBLE_SECTIONS`` (the click section as written:
    its simulated user too)."""
    spec = package.spec
    return {
        "network": spec.network,
        "preprocessing": (spec.image_channels, spec.spacing_mm, spec.roi_size_vox, spec.intensity_preset),
        "clicks": package.card.get("clicks"),
        "threshold": spec.threshold,
        "inputs": spec.stages,
        "outputs": (spec.outputs, spec.activation),
    }


def parse_model(spec: str) -> tuple[str, list[str]]:
    """``"NAME=a,b"`` -> ``("NAME", ["a", "b"])``; without a name, the first folder's name."""
    name, _, paths = spec.rpartition("=") if "=" in spec else ("", "", spec)
    folders = [p for p in paths.split(",") if p]
    if not folders:
        raise ValueError(f"no model folder in {spec!r}")
    if not name:
        name = Path(folders[0]).name + (f"-ensemble{len(folders)}" if len(folders) > 1 else "")
    return name, folders


def load_ensemble(folders: list[str]) -> ModelPackage:
    """One package whose members are all members of ``folders`` (which must agree)."""
    packages = [load_model_package(f) for f in folders]
    first = packages[0]
    expected = _ensemble_sections(first)
    for other in packages[1:]:
        sections = _ensemble_sections(other)
        for section in ENSEMBLE_SECTIONS:
            if sections[section] != expected[section]:
                raise ValueError(f"{other.path}: card section {section!r} differs from {first.path}; "
                                 "these packages cannot form one ensemble")
    if len(packages) == 1:
        return first
    card = dict(first.card)
    card["name"] = "+".join(p.spec.name for p in packages)
    networks = {stage: [net for p in packages for net in p.networks[stage]] for stage in first.networks}
    return ModelPackage(path=first.path, card=card, networks=networks)


def uncertainty_calibration(session, label, label_value: int, passes: int) -> dict:
    """The calibration (``InteractiveRefineLib.uncertainty.calibration``) of the session's
    current state's uncertainty from ``passes`` passes, against the label on the working grid,
    over the voxels inside the CT: ECE, error-detection AUC, and the estimate's seconds. Several
    classes: each class's mean probability against its label (``ece_<class>``,
    ``error_auc_<class>``, the entropy summed over the classes), ``ece`` / ``error_auc`` their
    mean."""
    from InteractiveRefineLib.geometry import inside_mask
    from InteractiveRefineLib.simulation import truth_on_grid
    from InteractiveRefineLib.uncertainty import calibration, estimate

    result = estimate(session, passes)
    inside = inside_mask(session.ct.grid, session.grid)
    outputs = session.card.outputs
    if len(outputs) > 1:  # per class: its mean probability against label == its value
        out: dict = {"uncertainty_seconds": round(result.seconds, 3), "error_voxels": 0}
        per_class = []
        for c, output in enumerate(outputs):
            truth = truth_on_grid(label, session.grid, output.label)
            values = calibration(result.mean[c], result.entropy, truth, session.card.threshold, mask=inside)
            out[f"ece_{output.name}"] = json_number(values["ece"])
            out[f"error_auc_{output.name}"] = json_number(values["error_auc"])
            out["error_voxels"] += values["error_voxels"]
            per_class.append(values)
        # the row's ece / error_auc: the mean over the classes (those defined)
        for key in ("ece", "error_auc"):
            defined = [v[key] for v in per_class if v[key] is not None]
            out[key] = json_number(sum(defined) / len(defined)) if defined else None
        return out
    truth = truth_on_grid(label, session.grid, label_value)
    values = calibration(result.mean, result.entropy, truth, session.card.threshold, mask=inside)
    return {"ece": json_number(values["ece"]), "error_auc": json_number(values["error_auc"]),
            "error_voxels": values["error_voxels"], "uncertainty_seconds": round(result.seconds, 3)}


def model_classes(package) -> list[tuple[str, int]]:
    """``[(name, label value)]`` of a package's outputs, in channel order."""
    return [(output.name, int(output.label)) for output in package.spec.outputs]


class ClassScorer:
    """Per-class metrics of a multi-class session's CT-grid label map after every step.

    ``truths``: ``{name: (label value, boolean truth on the CT grid)}``. ``step()`` appends one
    ``{field: value}`` dict (``dice_<name>``, ``hd95_mm_<name>``, ... and the DSCagg sums in mL:
    ``overlap2_ml_<name>`` = 2|P∩T|, ``volume_sum_ml_<name>`` = |P|+|T|)."""

    def __init__(self, session, truths: dict, surface: bool):
        self.session, self.truths, self.surface = session, truths, surface
        self.voxel_ml = float(np.prod(session.ct.grid.spacing)) / 1000.0
        self.steps: list[dict] = []

    def step(self) -> None:
        mask = self.session.mask_on_ct()
        spacing = self.session.ct.grid.spacing
        values = {}
        for name, (value, truth) in self.truths.items():
            metrics, (overlap2, volume_sum) = class_metrics(mask == value, truth, spacing, self.surface)
            values.update({f"{key}_{name}": metric for key, metric in metrics.items()})
            values[f"overlap2_ml_{name}"] = overlap2 * self.voxel_ml
            values[f"volume_sum_ml_{name}"] = volume_sum * self.voxel_ml
        self.steps.append(values)

    def curve(self, n_clicks: int) -> list[dict]:
        """The steps 0..n_clicks; a sequence that stopped early (no error left) repeats its last
        state, as the engine's curves do."""
        steps = list(self.steps[: n_clicks + 1])
        while len(steps) < n_clicks + 1:
            steps.append(dict(steps[-1]))
        return steps


def class_truths(label, ct_grid, classes) -> dict:
    """``{name: (label value, truth mask on the CT grid)}`` (nearest-neighbour resampling)."""
    from InteractiveRefineLib.simulation import truth_on_grid

    return {name: (value, truth_on_grid(label, ct_grid, value)) for name, value in classes}


def evaluate_case(session, case, label, n_clicks, seeds, user, label_value, surface,
                  uncertainty: int = 0, classes=None, uncertainty_passes: int | None = None) -> list[dict]:
    """Rows (one per seed and click count) of one model on one case. ``uncertainty`` N > 0: the
    rows at 0 clicks and after the last click also hold the calibration of the N-pass uncertainty
    (:func:`uncertainty_calibration`; at 0 clicks the same for every seed). ``classes``
    (``[(name, label value)]``, several): each row also holds the per-class metrics of the
    session's label map (:class:`ClassScorer`); the plain metrics (``dice``, ...) are the
    engine's, which score all classes together (any class against any class). ``user`` "suggest"
    (``uncertainty_passes`` passes per click): the rows after a click also hold ``fallback`` (1: the
    2sicr user clicked, for want of a suggestion) and ``suggest_seconds`` (that click's estimate)."""
    rows = []
    at_zero: dict = {}
    multi = classes is not None and len(classes) > 1
    truths = class_truths(label, session.ct.grid, classes) if multi else None
    scorer = None

    def on_step(step, values):
        if uncertainty and step == 0 and not at_zero:
            at_zero.update(uncertainty_calibration(session, label, label_value, uncertainty))
        if scorer is not None:
            scorer.step()

    for seed in seeds:
        scorer = ClassScorer(session, truths, surface) if multi else None
        result = run_simulation(session, label, n_clicks, seed=seed, preset=user,
                                label_value=label_value, surface_metrics=surface, on_step=on_step,
                                uncertainty_passes=uncertainty_passes)
        per_class = scorer.curve(n_clicks) if scorer is not None else None
        last = {}
        if uncertainty and n_clicks:  # the session is at the last click
            last = uncertainty_calibration(session, label, label_value, uncertainty)
        seconds = [None] + result["seconds_per_click"] + [None] * n_clicks
        base = baseline_fields(result.get("baseline"))
        for t in range(n_clicks + 1):
            row = {"case_id": case.case_id, "seed": seed, "clicks": t,
                   "changed_voxels": result["changed_voxels"][t], "seconds": seconds[t], **base}
            row.update({k: result[k][t] for k in reporting.METRICS})
            row.update(at_zero if t == 0 else last if t == n_clicks else {})
            if per_class is not None:
                row.update(per_class[t])
            if "suggest" in result and 1 <= t <= len(result["suggest"]["uncertainty_seconds"]):
                row["fallback"] = int(t in result["suggest"]["fallback_steps"])
                row["suggest_seconds"] = result["suggest"]["uncertainty_seconds"][t - 1]
            rows.append(row)
    return rows


def run_evaluation(models: dict, cases, n_clicks: int, seeds, device: str = "auto", user: str = "2sicr",
                   label_value: int = 1, surface: bool = True, refine_mode: str = "full",
                   region_removal: bool = True, uncertainty: int = 0,
                   roi_center: str = "label", threshold_start: bool | None = None,
                   uncertainty_passes: int | None = None, local_edits: bool | None = None,
                   local_edits_positive: bool | None = None) -> list[dict]:
    """Rows for every model, case, seed and click count 0..``n_clicks``.

    ``refine_mode`` "full" evaluates the paper's method (the refine network on the whole ROI);
    "auto" evaluates what a user of this device gets (the fast path on a CPU).
    ``region_removal`` False evaluates the networks alone, without the session's rule that a
    negative click removes the whole region it lands on (``InteractiveRefineLib.click_regions``).
    ``uncertainty`` N > 0: the calibration of the N-pass uncertainty too (:func:`evaluate_case`).
    ``roi_center``: where each case's ROI goes: ``label`` (the GTVp centroid, the paper's
    protocol), ``auto`` (what a user without an ROI gets: ``InteractiveRefineLib.auto_roi``) or
    ``ct`` (the CT's centre). ``threshold_start``: the first positive click of each sequence is
    a 40 % SUVmax threshold click (the session's option; the model refines from that region; None:
    as the model card says). ``uncertainty_passes``: the "suggest" user's passes per click.
    ``local_edits``, ``local_edits_positive``: the session's options of the same names (None: as the
    card says).
    """
    if roi_center not in ROI_CENTERS:
        raise ValueError(f"roi_center must be one of {ROI_CENTERS}, got {roi_center!r}")
    sessions = {name: RefinementSession(package, device=device, refine_mode=refine_mode,
                                        region_removal=region_removal, threshold_start=threshold_start,
                                        local_edits=local_edits, local_edits_positive=local_edits_positive)
                for name, package in models.items()}
    needs_pet = any(p.needs_pet for p in models.values())
    classes = {name: model_classes(package) for name, package in models.items()}
    # a case without a GTVp centres a multi-class model's ROI on its other classes (e.g. the nodes)
    others = sorted({value for found in classes.values() if len(found) > 1 for _, value in found})
    rows = []
    for index, case in enumerate(cases):
        ct = read_volume(case.ct)
        pet = read_pet(case.pet) if needs_pet and case.pet is not None else None  # DICOM: SUVbw
        label = read_label(case.label)  # a DICOM SEG too (GTVp 1, GTVn 2 by its codes)
        center = roi_center_ras(ct, label, label_value, others) if roi_center == "label" else roi_center
        for name, session in sessions.items():
            t0 = time.perf_counter()
            try:
                session.set_image(ct, pet, roi_center_ras=center)
                case_rows = evaluate_case(session, case, label, n_clicks, seeds, user, label_value, surface,
                                          uncertainty, classes[name], uncertainty_passes)
            except ImageError as exc:
                logger.warning("skipping case %s for %s: %s", case.case_id, name, exc)
                continue
            rows += [{"model": name, **row} for row in case_rows]
            last = [r["dice"] for r in case_rows if r["clicks"] == n_clicks]
            logger.info("[%d/%d] %s %s: DSC %.3f -> %.3f (%.1f s)", index + 1, len(cases), name, case.case_id,
                        case_rows[0]["dice"], sum(last) / len(last), time.perf_counter() - t0)
    return rows


def write_reports(rows: list[dict], n_clicks: int, out_dir: Path, meta: dict) -> dict:
    """per_case.csv, table.md, table.csv, dice_vs_clicks.png, wilcoxon.csv (2+ models), summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reporting.write_rows(rows, out_dir / "per_case.csv")
    table = reporting.summary_table(rows, n_clicks)
    reporting.write_table_csv(table, out_dir / "table.csv")
    header = (f"## Simulated-user evaluation ({meta['n_cases']} cases, {len(meta['seeds'])} seed(s), "
              f"user preset {meta['user']!r}; mean ± sd over cases)")
    classes = meta.get("classes") or {}
    if classes:
        header += "; multi-class models: the foreground (any class) against the union of the classes"
    text = (reporting.markdown(table, n_clicks, header) + _suggest_markdown(meta.get("suggest"))
            + reporting.baseline_markdown(rows)
            + reporting.uncertainty_markdown(rows, n_clicks)
            + reporting.class_markdown(rows, n_clicks, classes))
    (out_dir / "table.md").write_text(text)
    reporting.plot_dice_curves(rows, n_clicks, out_dir / "dice_vs_clicks.png")
    files = ["per_case.csv", "table.csv", "table.md", "dice_vs_clicks.png"]
    tests = []
    if len({r["model"] for r in rows}) > 1:
        tests = reporting.wilcoxon_tests(rows, n_clicks, "dice")
        reporting.write_tests_csv(tests, out_dir / "wilcoxon.csv")
        files.append("wilcoxon.csv")
    dice: dict = {}
    for entry in table:
        if entry["metric"] == "dice":
            dice.setdefault(entry["model"], {})[entry["column"]] = json_number(entry["mean"])
    summary = {**meta, "dice_mean": dice, "files": files + ["summary.json"]}
    per_class = reporting.class_summary(rows, n_clicks, classes)
    if per_class:
        summary["per_class"] = per_class
    calibration = reporting.uncertainty_per_case(rows)
    if calibration:
        summary["uncertainty_calibration"] = calibration
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def suggest_summary(rows: list[dict], passes: int | None) -> dict:
    """The "suggest" user's record over all rows: its passes per click, the clicks it made, those
    where the 2sicr user clicked instead (no suggestion) and the mean seconds of an estimate."""
    from InteractiveRefineLib.uncertainty import DEFAULT_PASSES

    clicked = [r for r in rows if "fallback" in r]
    seconds = [r["suggest_seconds"] for r in clicked]
    return {"passes": DEFAULT_PASSES if passes is None else passes, "clicks": len(clicked),
            "fallback_clicks": sum(r["fallback"] for r in clicked),
            "seconds_per_estimate": json_number(sum(seconds) / len(seconds)) if seconds else None}


def _suggest_markdown(suggest: dict | None) -> str:
    if not suggest:
        return ""
    seconds = suggest["seconds_per_estimate"]
    return (f"\n'suggest' user: {suggest['passes']} uncertainty passes per click"
            + (f" ({seconds:.2f} s per estimate, mean)" if seconds is not None else "")
            + f"; {suggest['fallback_clicks']} of {suggest['clicks']} clicks fell back to the 2sicr user "
              "(no suggestion).\n")


def evaluate(model_specs, data, out_dir, case_ids=None, n_clicks: int = 10, n_seeds: int = 3,
             device: str = "auto", user: str | None = None, label_value: int = 1, surface: bool = True,
             refine_mode: str = "full", region_removal: bool = True, uncertainty: int = 0,
             roi_center: str = "label", threshold_start: bool | None = None,
             uncertainty_passes: int | None = None, local_edits: bool | None = None,
             local_edits_positive: bool | None = None) -> dict:
    """The ``evaluate`` subcommand: load models and cases, run, write the reports. ``user`` None:
    ``"2sicr"``, or :data:`MULTI_CLASS_USER` when a model has several classes; "suggest": the
    engine's suggested next click as the user (``uncertainty_passes`` passes per click), with
    ``suggest`` in the summary (:func:`suggest_summary`)."""
    if isinstance(uncertainty, bool) or not isinstance(uncertainty, int) or uncertainty < 0:
        raise ValueError(f"uncertainty passes must be a non-negative integer, got {uncertainty!r}")
    models = {}
    for spec in model_specs:
        name, folders = parse_model(spec)
        if name in models:
            raise ValueError(f"two models are named {name!r}; name them with NAME=PATH")
        models[name] = load_ensemble(folders)
    cases = load_cases(data, case_ids)
    seeds = list(range(n_seeds))
    classes = {name: model_classes(package) for name, package in models.items()}
    if user is None:  # the paper's user of each setting: HN-UISeg's per class, 2S-ICR's for one class
        user = MULTI_CLASS_USER if any(len(found) > 1 for found in classes.values()) else "2sicr"
    rows = run_evaluation(models, cases, n_clicks, seeds, device, user, label_value, surface, refine_mode,
                          region_removal, uncertainty, roi_center, threshold_start, uncertainty_passes,
                          local_edits, local_edits_positive)
    if not rows:
        raise ValueError("no case could be evaluated (see the warnings)")
    meta = {"models": {n: p.spec.name for n, p in models.items()}, "data": str(data),
            "n_cases": len({r["case_id"] for r in rows}), "seeds": seeds, "clicks": n_clicks, "user": user,
            "label_value": label_value, "device": device, "refine_mode": refine_mode,
            "region_removal": region_removal, "roi_center": roi_center, "threshold_start": threshold_start,
            "local_edits": local_edits, "local_edits_positive": local_edits_positive}
    if uncertainty:
        meta["uncertainty_passes"] = uncertainty
    if user == "suggest":
        meta["suggest"] = suggest_summary(rows, uncertainty_passes)
    if any(len(found) > 1 for found in classes.values()):
        meta["classes"] = {name: [{"name": n, "label": v} for n, v in found]
                           for name, found in classes.items()}
    return write_reports(rows, n_clicks, Path(out_dir), meta)
