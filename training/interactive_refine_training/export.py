"""Export trained runs (folds) into an engine model package (``save_model_package``).

2S-ICR: ``--initial`` runs become the package's initial members, ``--refine`` runs its refine
members (several runs = an ensemble; the engine averages their probabilities).

Baselines (DeepGrow/DeepEdit) are single models with the refine input layout whose
previous-mask channel is always zero. They load in the unchanged engine as follows, both
exactly equivalent to the trained model:
- refine member: the trained weights with the input weights of the previous-mask channel set
  to zero, so whatever the engine feeds there (the previous probability) has no effect;
- initial member: the same network without the three interaction input channels (their input
  weights dropped). With all three channels zero they contribute nothing to any output voxel
  (zero padding keeps that true at the border too), so this is the baseline at zero clicks.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from InteractiveRefineLib import __version__ as engine_version
from InteractiveRefineLib.card import CARD_FLAGS, PET_VALUE_INPUTS, default_inputs_section, default_stages
from InteractiveRefineLib.model_package import default_card, load_model_package, save_model_package
from InteractiveRefineLib.networks import build_network, size_divisor, unwrapped

from .checkpoint import TrainedRun, load_run
from .config import classes_of, n_classes, outputs_section, refine_extra_inputs

logger = logging.getLogger(__name__)

BASELINES = ("deepgrow", "deepedit")
PROTOCOL_SECTIONS = ("seed", "data", "network", "optimization", "augmentation", "interaction")


def input_conv_names(network_config: dict, n_inputs: int) -> list[str]:
    """Names of the Conv3d modules that read the network input directly (found by tracing)."""
    network = build_network(network_config, n_inputs).eval()
    size = 2 * size_divisor(network_config)
    x = torch.zeros(1, n_inputs, size, size, size)
    found: list[str] = []
    def hook(name):
        return lambda module, args: found.append(name) if args[0] is x else None

    hooks = [module.register_forward_pre_hook(hook(name))
             for name, module in network.named_modules() if isinstance(module, torch.nn.Conv3d)]
    with torch.no_grad():
        network(x)
    for hook in hooks:
        hook.remove()
    return found


def _baseline_state(run: TrainedRun, stage: str) -> dict:
    # The baseline was trained with the classic refine layout, the one ``default_card`` writes
    # (per-class previous-probability channels for several classes).
    stages = default_stages(run.config["data"]["image_channels"], n_classes=n_classes(run.config))
    refine = stages["refine"].slices()
    previous = refine["previous_probability"]
    kept = [refine[spec.name] for spec in stages["initial"].inputs]  # the initial stage's inputs
    names = input_conv_names(run.config["network"], stages["refine"].in_channels)
    state = {k: v.clone() for k, v in run.state_dict.items()}
    for name in names:
        weight = state[f"{name}.weight"]
        if stage == "initial":
            state[f"{name}.weight"] = torch.cat([weight[:, part] for part in kept], dim=1).contiguous()
        else:
            weight[:, previous] = 0.0  # the previous-mask channel(s)
    return state


def member_state(run: TrainedRun, stage: str) -> dict:
    """The weights of ``run`` as a package member of ``stage``."""
    if run.trainer in BASELINES:
        return _baseline_state(run, stage)
    if run.trainer != stage:
        raise ValueError(f"{run.path} is a {run.trainer!r} run and cannot be a {stage!r} member")
    return run.state_dict


def _common(runs: list[TrainedRun], section: str, keys) -> dict:
    first = runs[0].config[section]
    for run in runs[1:]:
        for key in keys:
            if run.config[section][key] != first[key]:
                raise ValueError(f"{run.path}: {section}.{key} differs from {runs[0].path}")
    return first


def _run_record(run: TrainedRun) -> dict:
    summary = run.summary
    return {
        "run": str(run.path), "trainer": run.trainer, "fold": summary.get("fold"),
        "data": summary.get("data"),
        "protocol": {k: run.config[k] for k in PROTOCOL_SECTIONS},
        "epochs_run": summary.get("epochs_run"), "best_epoch": summary.get("best_epoch"),
        "stop_reason": summary.get("stop_reason"), "seconds": summary.get("seconds"),
        "device": summary.get("device_name"), "world_size": summary.get("world_size"),
        "amp": summary.get("amp"), "simulated_user": summary.get("simulated_user"),
        "torch": summary.get("torch"), "monai": summary.get("monai"),
        "validation": {"metric": summary.get("metric"), "value": summary.get("best_metric")},
        "init_weights": summary.get("init_weights"),
    }


def package_runs(path: str | os.PathLike, stage: str) -> list[TrainedRun]:
    """The ``stage`` members of an exported package as runs, their training records taken from
    the card: ``export --initial PACKAGE --refine NEW_RUN`` keeps a package's initial model
    (weights and card record) and replaces its refinement model, e.g. after fine-tuning."""
    package = load_model_package(path)
    spec = package.spec
    clicks = {"sigma_vox": spec.click_sigma_vox, "truncate": spec.click_truncate}
    extra = [{"name": s.name, "options": dict(s.options)} for s in spec.stages["refine"].inputs
             if s.name in PET_VALUE_INPUTS] if stage == "refine" else []
    classic = default_stages(spec.image_channels, clicks, extra, n_classes=len(spec.outputs))[stage]
    if spec.stages[stage] != classic:
        raise ValueError(f"{path}: the card's {stage!r} inputs are not the training layout {classic}")
    records = (package.card.get("training") or {}).get(stage) or []
    if len(records) != len(package.networks[stage]):
        raise ValueError(f"{path}: the card has no training record for each {stage!r} member")
    runs = []
    for network, record in zip(package.networks[stage], records):
        validation = record.get("validation") or {}
        summary = {
            "fold": record.get("fold"), "data": record.get("data"), "epochs_run": record.get("epochs_run"),
            "best_epoch": record.get("best_epoch"), "stop_reason": record.get("stop_reason"),
            "seconds": record.get("seconds"), "device_name": record.get("device"),
            "world_size": record.get("world_size"), "amp": record.get("amp"),
            "simulated_user": record.get("simulated_user"), "torch": record.get("torch"),
            "monai": record.get("monai"), "metric": validation.get("metric"),
            "best_metric": validation.get("value"), "init_weights": record.get("init_weights"),
        }
        runs.append(TrainedRun(Path(record.get("run") or path), record.get("trainer", stage),
                               record["protocol"], unwrapped(network).state_dict(), summary))
    return runs


def _load_runs(sources, stage: str) -> list[TrainedRun]:
    """Run folders / checkpoints, or model packages (their ``stage`` members)."""
    runs = []
    for source in sources:
        if (Path(source) / "model.json").is_file():
            runs += package_runs(source, stage)
        else:
            runs.append(load_run(source))
    return runs


def pet_dropout(config: dict) -> float:
    """A run's ``data.pet_dropout`` (0 for runs from before the setting)."""
    return float(config["data"].get("pet_dropout", 0.0))


def _card(initial: list[TrainedRun], refine: list[TrainedRun], name: str,
          unanchored: list[TrainedRun] = ()) -> dict:
    unanchored = list(unanchored)
    runs = initial + refine + unanchored
    data = _common(runs, "data", ("image_channels", "roi_size_vox", "spacing_mm", "intensity_preset",
                                  "label_value"))
    network = _common(refine + unanchored + initial, "network",
                      ("channels", "strides", "num_res_units", "norm"))
    inter = _common(refine + unanchored, "interaction", ("sigma_vox", "truncate"))
    classes = classes_of(refine[0].config)
    for run in refine[1:] + unanchored:
        if classes_of(run.config) != classes:
            raise ValueError(f"{run.path}: data.classes {classes_of(run.config)} differ from "
                             f"{refine[0].path}'s {classes}")
    for run in initial:  # an initial network may segment more classes: the card takes its own from it
        if not set(classes) <= set(classes_of(run.config)):
            raise ValueError(f"{run.path}: data.classes {classes_of(run.config)} do not include "
                             f"{refine[0].path}'s {classes}")
    user = refine[0].summary.get("simulated_user") or "2sicr"
    card = default_card(name=name, network=network, image_channels=data["image_channels"],
                        roi_size_vox=data["roi_size_vox"], spacing_mm=data["spacing_mm"],
                        intensity_preset=data["intensity_preset"], simulated_user=user)
    card["clicks"].update(sigma_vox=float(inter["sigma_vox"]), truncate=float(inter["truncate"]))
    extra = refine_extra_inputs(refine[0].config)
    if any(refine_extra_inputs(r.config) != extra for r in refine[1:] + unanchored):
        raise ValueError("the refine runs differ in their extra inputs (interaction.pet_region)")
    if extra or len(classes) > 1:  # the classic layout plus these / per class: named explicitly
        card["inputs"] = default_inputs_section(data["image_channels"], extra, n_classes=len(classes))
    if len(classes) > 1:  # one sigmoid per class (HN-UISeg: GTVp, GTVn)
        card["outputs"] = outputs_section(refine[0].config)
        card["activation"] = "sigmoid"
    if "pet" in data["image_channels"]:  # every member learnt zero-filled PET: it may run CT-only
        card["preprocessing"]["pet_optional"] = all(pet_dropout(r.config) > 0 for r in runs)
    method = refine[0].trainer if refine[0].trainer in BASELINES else "2sicr"
    card["training"] = {
        "method": method, "engine_version": engine_version, "label_value": int(data["label_value"]),
        **({"classes": outputs_section(refine[0].config)} if len(classes) > 1 else {}),
        "initial": [_run_record(r) for r in initial], "refine": [_run_record(r) for r in refine],
        **({"unanchored": [_run_record(r) for r in unanchored]} if unanchored else {}),
        "phantoms": _phantom_record(runs),
    }
    # an initial network of more classes (e.g. GTVp + GTVn for a GTVp card): the card takes its classes
    # (and a dropout other than the refine network's keeps its own network section)
    card["members"]["initial"] = [
        {**({"outputs": [n for n, _ in classes_of(r.config)]} if classes_of(r.config) != classes else {}),
         **({"network": dict(r.config["network"])} if r.config["network"].get("dropout", 0.0)
            != network.get("dropout", 0.0) else {})} for r in initial]
    card["metrics"] = {
        "validation": {
            stage: [{"fold": r.summary.get("fold"), "metric": r.summary.get("metric"),
                     "value": r.summary.get("best_metric")} for r in members]
            for stage, members in (("initial", initial), ("refine", refine), ("unanchored", unanchored))
            if members
        }
    }
    return card


def _phantom_record(runs: list[TrainedRun]):
    """The phantom generator's record (``phantoms.json`` beside the data, or beside the case folders
    of a CSV manifest), when trained on phantoms."""
    for run in runs:
        source = (run.summary.get("data") or {}).get("source")
        if source:
            folders = [Path(source)]
            if Path(source).suffix.lower() == ".csv" and Path(source).is_file():
                from InteractiveRefineLib.cases import read_manifest

                folders = list(dict.fromkeys(case.ct.parent.parent for case in read_manifest(source)))
            for candidate in [f / name for f in folders for name in ("phantoms.json", "dataset.json")]:
                if candidate.is_file():
                    try:
                        record = json.loads(candidate.read_text())
                    except json.JSONDecodeError:
                        logger.warning("cannot parse %s", candidate)
                        continue
                    cases = record.pop("cases", None) or []  # per-case details stay in the file
                    record["case_ids"] = [c.get("id") for c in cases if isinstance(c, dict)]
                    record["record"] = str(candidate)
                    return record
    return None


def export_package(initial_runs, refine_runs, out: str | os.PathLike, name: str | None = None,
                   half: bool = False, fast_window: int | None = None, unanchored_runs=(),
                   flags=()) -> Path:
    """Write a model package from run folders (or checkpoints, or packages' members); returns
    its folder. ``fast_window``: the card's ``fast_path.window_vox`` (the CPU fast path's window
    edge for this network), or None for the engine's default. ``unanchored_runs``: refine runs
    (or packages, their refine members) for the card's optional ``unanchored`` stage: negative
    clicks before any positive one at an automatically placed ROI (:mod:`InteractiveRefineLib.card`).
    ``flags``: card click settings to switch on (:data:`CARD_FLAGS`, e.g. ``threshold_start``).

    ``initial_runs`` may be empty when every refine run is a DeepGrow/DeepEdit baseline: the
    baseline then serves as its own initial model.
    """
    if fast_window is not None and int(fast_window) < 1:
        raise ValueError(f"the fast window must be a positive number of voxels, got {fast_window}")
    unknown = sorted(set(flags) - set(CARD_FLAGS))
    if unknown:
        raise ValueError(f"unknown card setting(s) {unknown}; these can be switched on: {list(CARD_FLAGS)}")
    refine = _load_runs(refine_runs, "refine")
    if not refine:
        raise ValueError("export needs at least one --refine run")
    initial = _load_runs(initial_runs, "initial")
    if not initial:
        if not all(r.trainer in BASELINES for r in refine):
            raise ValueError("--initial is required unless every --refine run is a deepgrow/deepedit run")
        initial = list(refine)
    unanchored = _load_runs(unanchored_runs, "refine")
    card = _card(initial, refine, name or Path(out).name, unanchored)
    if fast_window is not None:
        card["fast_path"] = {"window_vox": int(fast_window)}
    card.update({flag: True for flag in flags})
    states = {
        "initial": [member_state(r, "initial") for r in initial],
        "refine": [member_state(r, "refine") for r in refine],
        **({"unanchored": [member_state(r, "refine") for r in unanchored]} if unanchored else {}),
    }
    if half:
        states = {s: [{k: v.half() if v.is_floating_point() else v for k, v in sd.items()} for sd in sds]
                  for s, sds in states.items()}
        card["weights_dtype"] = "float16"
    path = save_model_package(out, card, states)
    load_model_package(path)  # verify: checksums, shapes, float16 -> float32 loading
    logger.info("exported %s (%d initial, %d refine, %d unanchored members)", path, len(initial), len(refine),
                len(unanchored))
    return path
