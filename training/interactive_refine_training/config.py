"""Training configuration: the paper's protocol as defaults, JSON files and command-line overrides.

A configuration is a plain JSON-able dict with the sections below. ``DEFAULTS`` is the 2S-ICR
paper's protocol (sections 4.1-4.3); ``configs/*.json`` override parts of it, and the command
line overrides those (``--max-epochs 5`` or generically ``--set optimization.lr=3e-4``).
The merged configuration is written into every run folder and checkpoint, so a run is always
reproducible from its own files.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

from InteractiveRefineLib.networks import PAPER_NETWORK

DEFAULTS: dict = {
    "name": "paper",
    "seed": 0,
    "data": {
        # The classes the networks segment, one sigmoid output each (card "outputs"): names of
        # CLASS_LABELS (HECKTOR 2022 label values) or {"name", "label"} objects. One class (the
        # default, GTVp) is the 2S-ICR setting, its target ``label == label_value``; with several
        # (HN-UISeg: ["gtvp", "gtvn"]) the training label is one channel per class.
        "classes": ["gtvp"],
        "label_value": 1,  # GTVp: the target of a single-class configuration
        "image_channels": ["ct", "pet"],
        "roi_size_vox": [144, 144, 144],
        "spacing_mm": [1.0, 1.0, 1.0],
        "intensity_preset": "2sicr",
        # "label_centroid": ROI centred on the GTVp (paper 4.1), the image centre when there is none
        "roi_center": "label_centroid",
        "n_folds": 5,
        "split_seed": 0,
        # Cases whose ids give the same first regex group belong to one patient (same fold).
        "patient_id_regex": None,
        # Probability that a training sample's (normalised) PET channel is zeroed after the
        # augmentation, as for HN-UISeg's CT-only cases; > 0 makes the exported card pet_optional.
        "pet_dropout": 0.0,
    },
    "network": copy.deepcopy(PAPER_NETWORK),
    "optimization": {
        "loss": "DiceCE",  # Dice + BCE, uniform weights, smoothing 1e-5 (paper eq. 1-3)
        "optimizer": "AdamW",
        "lr": 1e-4,
        "weight_decay": 1e-5,
        "scheduler": "cosine",  # CosineAnnealingLR over max_epochs, to 0
        "max_epochs": 300,
        "patience": 50,  # early stopping on the validation metric
        "batch_size": 1,
        # None: one pass over the training cases; N: exactly N iterations (nnU-Net style)
        "iterations_per_epoch": None,
    },
    "augmentation": {
        "enabled": True,
        "affine_prob": 0.5,
        "rotate_deg": 45.0,
        "scale": 0.1,
        "shear": 0.1,
        "translate_vox": 32.0,
        "padding_mode": "reflection",  # MONAI's default for RandAffined
        "flip_prob": 0.5,
        "ct_contrast_prob": 0.25,
        "ct_gamma": [0.5, 1.5],
        "ct_shift_prob": 0.25,
        "ct_shift_offset": 0.1,
        "ct_noise_prob": 0.25,
        "ct_noise_std": 0.1,
        "ct_smooth_prob": 0.25,
        "ct_smooth_sigma": [0.25, 1.5],
    },
    "interaction": {
        # None: the trainer's own preset (refine: "2sicr", deepgrow: "deepgrow", deepedit: "deepedit")
        "simulated_user": None,
        "sigma_vox": 2.0,
        "truncate": 4.0,
        "min_clicks": 1,
        "max_clicks": 15,
        "mask_dropout": 0.2,
        "val_clicks": 10,
        "val_metric": "dice_last",  # Dice after the last validation click, or "dice_mean" (1..N)
        "deepedit_free_prob": 0.25,  # DeepEdit-25; 0.5 for DeepEdit-50; DeepGrow = 0
        # "random" (the paper: trained separately) or "initial": start the refine network from the
        # initial network's weights, new input channels zero (for short, budgeted runs)
        "refine_init": "random",
        "baseline_max_interactions": 15,
        # None, or the options of a refine input "pet_region" (the union of the one-click PET
        # threshold regions of the positive clicks), e.g. {"fraction": 0.4, "radius_mm": 10.0}
        "pet_region": None,
        # the share of training sequences that start as the engine's threshold_start does: a
        # positive click at the tumour's innermost voxel whose pet_region is the previous
        # probability (the refine network learns to keep a good threshold region and correct it)
        "threshold_start": 0.0,
        # the share of training sequences (of those not starting from a threshold region) that
        # start from the GTVp grown by a random number of voxels in grown_start_vox: a mask too
        # large around the tumour, which the refine network must trim without losing the tumour
        "grown_start": 0.0,
        "grown_start_vox": [2, 6],
        # the share of the remaining sequences that start from the GTVp plus the separate hot PET
        # regions (>= 40 % of the tumour's SUVmax): hot glands or brain marked with the tumour
        "hot_start": 0.0,
        # the share of the remaining sequences that start from the initial model's probability with
        # the GTVp (grown by missed_start_margin_vox) erased: a tumour the model missed, its false
        # positives elsewhere kept, as at an automatically placed ROI
        "missed_start": 0.0,
        "missed_start_margin_vox": 2,
        # --stage prompt (HN-UISeg stage 1): the probability that an iteration's click channels
        # hold the prompts drawn from the truth (else all zero), and where a component's positive
        # click goes: "random" (a voxel of the component, uniform) or "innermost" (its largest
        # distance to the border, where the hnuiseg user clicks)
        "prompt_prob": 0.5,
        "prompt_click": "random",
    },
    "runtime": {
        "device": "auto",
        "amp": "auto",  # on for CUDA, off on CPU
        "amp_dtype": "float16",  # "bfloat16" needs no gradient scaler
        "workers": 4,
        "augment_on": "auto",  # "workers" (CPU, loader processes), "device", or auto (workers on CUDA)
        "max_val_cases": None,  # validate on the first N validation cases only (budgeted runs)
        "max_minutes": None,
        "stop_after_epochs": None,  # end this invocation after N epochs (resume later)
        "val_every": 1,
        "cudnn_benchmark": True,
        "cache_dir": None,
        "tensorboard": True,
        "progress": True,
        "threads": None,
    },
}

#: Where ``--stage prompt`` puts a truth component's positive click (``interaction.prompt_click``).
PROMPT_CLICKS = ("random", "innermost")

#: Sections whose values may change when a run is resumed (they do not change the result).
RESUMABLE_SECTIONS = ("runtime",)

#: Label values of the class names (HECKTOR 2022+ and HNTS-MRG 2024: 1 GTVp, 2 GTVn).
CLASS_LABELS = {"gtvp": 1, "gtvn": 2}
CLASS_KEYS = {"name", "label"}


def deep_update(base: dict, override: dict) -> dict:
    """``base`` updated recursively with ``override`` (a new dict; inputs unchanged)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """``DEFAULTS`` updated with the JSON file at ``path`` and then with ``overrides``."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        try:
            from_file = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read training config {path}: {exc}") from exc
        unknown = set(from_file) - set(DEFAULTS) - {"description"}
        if unknown:
            raise ValueError(f"{path}: unknown config section(s) {sorted(unknown)}")
        config = deep_update(config, from_file)
    if overrides:
        config = deep_update(config, overrides)
    validate(config)
    return config


def set_dotted(overrides: dict, dotted: str, value) -> None:
    """``set_dotted(d, "optimization.lr", 1e-3)`` -> ``d["optimization"]["lr"] = 1e-3``."""
    node = overrides
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def parse_assignment(text: str) -> tuple[str, object]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is JSON when it parses, else a string."""
    if "=" not in text:
        raise ValueError(f"--set expects section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def validate(config: dict) -> None:
    """Raise ``ValueError`` naming the first inconsistent setting."""
    from InteractiveRefineLib.card import check_network, check_roi_multiple, size_divisor_of

    data, opt, inter = config["data"], config["optimization"], config["interaction"]
    check_network(config["network"])  # the checks a model card's network section gets
    check_roi_multiple(data["roi_size_vox"], size_divisor_of(config["network"]), "data.roi_size_vox")
    if not 1 <= int(inter["min_clicks"]) <= int(inter["max_clicks"]):
        raise ValueError("interaction: need 1 <= min_clicks <= max_clicks")
    if not 0.0 <= float(inter["mask_dropout"]) <= 1.0:
        raise ValueError("interaction.mask_dropout must lie in [0, 1]")
    if not 0.0 <= float(inter["deepedit_free_prob"]) < 1.0:
        raise ValueError("interaction.deepedit_free_prob must lie in [0, 1)")
    if inter.get("refine_init", "random") not in ("random", "initial"):
        raise ValueError("interaction.refine_init must be 'random' or 'initial'")
    if inter["val_metric"] not in ("dice_last", "dice_mean"):
        raise ValueError("interaction.val_metric must be 'dice_last' or 'dice_mean'")
    for start in ("threshold_start", "grown_start", "hot_start", "missed_start"):  # shares of the sequences
        if not 0.0 <= float(inter.get(start, 0.0)) <= 1.0:
            raise ValueError(f"interaction.{start} must lie in [0, 1]")
    if float(inter.get("threshold_start", 0.0)) > 0 and inter.get("pet_region") is None:
        raise ValueError("interaction.threshold_start needs interaction.pet_region (its starting region)")
    margin = inter.get("missed_start_margin_vox", 2)
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise ValueError(f"interaction.missed_start_margin_vox must be a whole number of voxels >= 0, "
                         f"got {margin!r}")
    grown = inter.get("grown_start_vox", [2, 6])
    whole = isinstance(grown, (list, tuple)) and len(grown) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in grown)
    if not whole or not 1 <= grown[0] <= grown[1]:
        raise ValueError(f"interaction.grown_start_vox must be [low, high] voxels with 1 <= low <= high, "
                         f"got {grown!r}")
    prompt_prob = inter.get("prompt_prob", 0.5)
    if (not isinstance(prompt_prob, (int, float)) or isinstance(prompt_prob, bool)
            or not 0.0 <= prompt_prob <= 1.0):
        raise ValueError(f"interaction.prompt_prob must be a probability in [0, 1] (HN-UISeg: 0.5), "
                         f"got {prompt_prob!r}")
    if inter.get("prompt_click", "random") not in PROMPT_CLICKS:
        raise ValueError(f"interaction.prompt_click must be one of {list(PROMPT_CLICKS)}, "
                         f"got {inter.get('prompt_click')!r}")
    if inter.get("pet_region") is not None:
        from InteractiveRefineLib.inputs.pet_region import options_of

        if "pet" not in data["image_channels"]:
            raise ValueError("interaction.pet_region needs 'pet' in data.image_channels")
        if not isinstance(inter["pet_region"], dict):
            raise ValueError("interaction.pet_region must be null or an object of options")
        options_of(inter["pet_region"])  # unknown keys or non-numbers: ValueError
    classes_of(config)  # names, label values: ValueError naming the problem
    if int(opt["batch_size"]) != 1:
        raise ValueError("optimization.batch_size: only 1 is supported (the paper's)")
    if data["image_channels"] not in (["ct"], ["ct", "pet"]):
        raise ValueError("data.image_channels must be ['ct'] or ['ct', 'pet']")
    pet_dropout = data.get("pet_dropout", 0.0)
    is_number = isinstance(pet_dropout, (int, float)) and not isinstance(pet_dropout, bool)
    if not is_number or not 0.0 <= pet_dropout <= 1.0:
        raise ValueError(f"data.pet_dropout must be a probability in [0, 1], got {pet_dropout!r}")
    if pet_dropout > 0 and "pet" not in data["image_channels"]:
        raise ValueError("data.pet_dropout > 0 needs 'pet' in data.image_channels")


def classes_of(config: dict) -> list[tuple[str, int]]:
    """``[(name, label value), ...]`` of the classes the networks segment, in output order.

    One class: its label value is ``data.label_value`` (so ``--label 2`` keeps working, and the
    default configuration is exactly the single-class one). Several: each class's own value
    (:data:`CLASS_LABELS` for a name, or the ``label`` of a ``{"name", "label"}`` entry).
    ValueError for an unknown name, a repeated name or label value, or an empty list."""
    data = config["data"]
    entries = data.get("classes", ["gtvp"])
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"data.classes must be a non-empty list of class names, got {entries!r}")
    out = []
    for entry in entries:
        if isinstance(entry, str):
            name, label = entry, CLASS_LABELS.get(entry)
            if label is None:
                raise ValueError(f"data.classes: unknown class {entry!r} (known: {sorted(CLASS_LABELS)}; "
                                 'or give {"name": ..., "label": ...})')
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str) and set(entry) <= CLASS_KEYS:
            name, label = entry["name"], entry.get("label", CLASS_LABELS.get(entry["name"]))
        else:
            raise ValueError(f"data.classes: expected a class name or {{name, label}}, got {entry!r}")
        if not isinstance(label, int) or isinstance(label, bool) or not 1 <= label <= 255:
            raise ValueError(f"data.classes: label of {name!r} must be an integer in 1..255, got {label!r}")
        out.append((name, int(label)))
    if len(out) == 1:
        out = [(out[0][0], int(data["label_value"]))]
    names, labels = [n for n, _ in out], [v for _, v in out]
    if len(set(names)) != len(names) or len(set(labels)) != len(labels):
        raise ValueError(f"data.classes: names and label values must be distinct, got {out}")
    return out


def n_classes(config: dict) -> int:
    """The number of network outputs (one sigmoid per class)."""
    return len(classes_of(config))


def label_values(config: dict):
    """The target label value(s) of a configuration: ``data.label_value`` (an int) for one class,
    else the tuple of the classes' values (training label channel c = ``label == values[c]``)."""
    classes = classes_of(config)
    return classes[0][1] if len(classes) == 1 else tuple(label for _, label in classes)


def outputs_section(config: dict) -> list[dict]:
    """The card's ``outputs``: one ``{"name", "label"}`` per class, in channel order."""
    return [{"name": name, "label": label} for name, label in classes_of(config)]


def preprocessing_settings(config: dict) -> dict:
    """The settings that determine a case's cached arrays (and nothing else).

    The cache holds the whole label map whatever the classes; several classes only change where
    a case without a GTVp centres its ROI (on the other classes' centroid), so only they add the
    key ``roi_center_labels`` (a single-class configuration keeps its cache)."""
    data = config["data"]
    settings = {
        "format": 2,  # 2: with "pet_to_suv" (the PET channel's map back to SUV)
        "label_value": int(data["label_value"]),
        "image_channels": list(data["image_channels"]),
        "roi_size_vox": [int(v) for v in data["roi_size_vox"]],
        "spacing_mm": [float(v) for v in data["spacing_mm"]],
        "intensity_preset": data["intensity_preset"],
        "roi_center": data["roi_center"],
    }
    values = label_values(config)
    if isinstance(values, tuple):
        settings["label_value"] = values[0]
        settings["roi_center_labels"] = list(values)
    return settings


def refine_extra_inputs(config: dict) -> list:
    """The refine stage's inputs after the classic layout (card ``inputs`` entries)."""
    options = config["interaction"].get("pet_region")
    return [] if options is None else [{"name": "pet_region", "options": dict(options)}]


def training_stages(config: dict) -> dict:
    """The card stages (:class:`~InteractiveRefineLib.card.StageSpec`) a run's networks take:
    the engine's classic layout for the run's classes (several: the previous probability and the
    positive clicks with one channel per class) plus :func:`refine_extra_inputs`."""
    from InteractiveRefineLib.card import default_stages

    inter = config["interaction"]
    clicks = {"sigma_vox": float(inter["sigma_vox"]), "truncate": float(inter["truncate"])}
    return default_stages(config["data"]["image_channels"], clicks, refine_extra_inputs(config),
                          n_classes=n_classes(config))


def settings_hash(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
