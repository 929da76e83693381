"""Model packages: a folder with a ``model.json`` card and ``safetensors`` weight files.

The card (DESIGN.md section 3) states the network, preprocessing, click encoding, training data
and protocol, metrics, and the sha256 of every weight file. Loading verifies every checksum and
that each weight file matches the network the card describes; any mismatch raises
:class:`ModelPackageError` naming the file. Weights are never unpickled.

Card layout (``format_version`` 1)::

    {"format_version": 1, "name": ..., "version": ..., "license": ..., "intended_use": ...,
     "network": {"channels": [...], "strides": [...], "num_res_units": 2, "norm": "INSTANCE"},
     "preprocessing": {"image_channels": ["ct", "pet"], "spacing_mm": [1, 1, 1],
                       "roi_size_vox": [144, 144, 144], "intensity_preset": "2sicr",
                       "pet_optional": false},   # optional: true = may run CT-only (PET zero-filled)
     "clicks": {"encoding": "gaussian", "sigma_vox": 2.0, "truncate": 4.0,
                "simulated_user": "2sicr"},
     "inputs": {"initial": [{"name": "ct"}, ...], "refine": [...]},   # optional: card.py
     "outputs": [{"name": "gtvp", "label": 1}], "activation": "sigmoid",  # optional
     "threshold": 0.5,
     "members": {"initial": [{"file": "initial_0.safetensors", "sha256": ...}, ...],
                 "refine": [{"file": "refine_0.safetensors", "sha256": ...}, ...]},
     "training": {...}, "metrics": {...}}

A member may carry its own ``network`` section overriding the package-wide one. The card is
parsed once, at load, into the typed :class:`~.card.ModelCard` (``ModelPackage.spec``), which
every reader uses; ``ModelPackage.card`` keeps the JSON as read.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .card import (
    CARD_NAME,
    DEFAULT_OUTPUTS,
    FORMAT_VERSION,
    STAGES,
    ModelCard,
    default_inputs_section,
    default_stages,
    member_output_indices,
    parse_card,
    stages_of,
)
from .errors import ModelPackageError
from .networks import PAPER_NETWORK, build_network, select_outputs

logger = logging.getLogger(__name__)

#: Where the shipped default model lives (inside the module, so Slicer installs it).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "Resources" / "Models" / "default"
#: The folder of every package shipped with the module (the default and the opt-in ones); a
#: package there is also found by its folder name alone (:func:`resolve_model_dir`).
SHIPPED_MODELS_DIR = DEFAULT_MODEL_DIR.parent

#: The two HN-UISeg / HECKTOR 2022 classes: primary tumour (label 1) and lymph nodes (label 2).
GTVP_GTVN = ({"name": "gtvp", "label": 1}, {"name": "gtvn", "label": 2})

RESEARCH_USE = (
    "Research use only; not for clinical decisions. Check every contour before any use."
)


def default_card(
    name: str = "untrained",
    network: dict | None = None,
    image_channels=("ct", "pet"),
    roi_size_vox=(144, 144, 144),
    spacing_mm=(1.0, 1.0, 1.0),
    intensity_preset: str = "2sicr",
    simulated_user: str = "2sicr",
    outputs=None,
) -> dict:
    """A card with the paper's settings; callers fill in members, training and metrics.
    ``outputs``: the output classes (card ``outputs`` entries; None: GTVp alone); with more than
    one, the refine inputs get one previous-probability and positive-guidance channel per class."""
    outputs = [dict(output) for output in (outputs or DEFAULT_OUTPUTS)]
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": "0.0.0",
        "license": "Apache-2.0",
        "intended_use": RESEARCH_USE,
        "network": copy.deepcopy(network or PAPER_NETWORK),
        "preprocessing": {
            "image_channels": list(image_channels),
            "spacing_mm": [float(s) for s in spacing_mm],
            "roi_size_vox": [int(s) for s in roi_size_vox],
            "intensity_preset": intensity_preset,
        },
        "clicks": {
            "encoding": "gaussian",
            "sigma_vox": 2.0,
            "truncate": 4.0,
            "scaling": "minmax",
            "simulated_user": simulated_user,
        },
        "inputs": default_inputs_section(image_channels, n_classes=len(outputs)),
        "outputs": outputs,
        "activation": "sigmoid",
        "threshold": 0.5,
        "members": {"initial": [], "refine": []},
        "training": {},
        "metrics": {},
    }


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_card(card: dict, source: str = CARD_NAME) -> None:
    """Raise :class:`ModelPackageError` naming the first missing or invalid card field
    (:func:`~.card.parse_card` without keeping the result)."""
    parse_card(card, source)


@dataclass
class ModelPackage:
    """A loaded, verified package: the card (``card``: the JSON as read; ``spec``: typed) and the
    networks of each stage (eval mode, CPU). ``spec`` is parsed from ``card`` when not given."""

    path: Path
    card: dict
    networks: dict = field(default_factory=dict)
    spec: ModelCard = None

    def __post_init__(self):
        if self.spec is None:
            self.spec = parse_card(self.card, str(Path(self.path) / CARD_NAME))

    @property
    def image_channels(self) -> list[str]:
        return list(self.spec.image_channels)

    @property
    def needs_pet(self) -> bool:
        return self.spec.needs_pet

    @property
    def requires_pet(self) -> bool:
        """A PET must be given (a PET/CT model whose card lacks ``preprocessing.pet_optional``)."""
        return self.spec.requires_pet

    @property
    def roi_size_vox(self) -> tuple[int, int, int]:
        return self.spec.roi_size_vox

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.spec.spacing_mm

    @property
    def fast_window_vox(self) -> int | None:
        """The CPU fast path's window edge the package's author chose for its network (optional
        card field ``fast_path.window_vox``: the largest window whose pass stays interactive), or
        None for the engine's default."""
        return self.spec.fast_window_vox

    @property
    def intensity_preset(self) -> str:
        return self.spec.intensity_preset

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    def member_network_config(self, stage: str, index: int) -> dict:
        member = self.card["members"][stage][index]
        return member.get("network", self.spec.network)


def _load_member(path: Path, spec: ModelCard, stage: str, member: dict):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weight_path = path / member["file"]
    if not weight_path.is_file():
        raise ModelPackageError(f"weight file missing: {weight_path}")
    actual = sha256_of(weight_path)
    if actual != member["sha256"]:
        raise ModelPackageError(
            f"checksum mismatch for weight file {weight_path}: the card says "
            f"{member['sha256'][:12]}..., the file has {actual[:12]}...; the file was modified or "
            "corrupted, refusing to load it"
        )
    names, indices = member_output_indices(member, spec.outputs)
    network = build_network(member.get("network", spec.network), spec.stages[stage].in_channels, len(names))
    try:
        state = load_file(str(weight_path))
    except (SafetensorError, OSError) as exc:
        raise ModelPackageError(f"cannot read weight file {weight_path}: {exc}") from exc
    _check_out_channels(state, names, weight_path)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelPackageError(
            f"weight file {weight_path} does not match the {stage} network described in "
            f"{path / CARD_NAME}: {' '.join(first[:3])[:400]}"
        ) from exc
    network.eval()
    if list(indices) != list(range(len(names))):  # a member trained for more classes
        network = select_outputs(network, indices)
    return network


def _check_out_channels(state: dict, names: list, weight_path) -> None:
    """ModelPackageError when the weights' output channels (the last bias: the UNet's output
    convolution) differ from the member's number of outputs (``names``: the card's, or the
    member's own ``outputs``)."""
    biases = [key for key in state if key.endswith("bias")]
    if not biases:
        return
    found = int(state[biases[-1]].shape[0])
    if found != len(names):
        raise ModelPackageError(
            f"weight file {weight_path} has {found} output channel(s), but its card declares "
            f"{len(names)} output(s) {list(names)}: the network's out_channels must equal them")


def shipped_models() -> list[str]:
    """The names of the packages shipped with the module (folders of :data:`SHIPPED_MODELS_DIR`
    holding a card), e.g. ``["default", "gtvp_gtvn", "pet_region"]``."""
    if not SHIPPED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_MODELS_DIR.iterdir() if (p / CARD_NAME).is_file())


def resolve_model_dir(path: str | os.PathLike | None) -> Path:
    """The package folder that ``path`` names: None or ``""`` the shipped default model; a bare
    name that is no file or folder here but a shipped package's (``"gtvp_gtvn"``) that package;
    anything else the folder as given."""
    if path is None or str(path) == "":
        return DEFAULT_MODEL_DIR
    given = Path(path)
    shipped = SHIPPED_MODELS_DIR / given.name
    if str(path) == given.name and not given.exists() and (shipped / CARD_NAME).is_file():
        return shipped
    return given


def load_model_package(path: str | os.PathLike | None = None) -> ModelPackage:
    """Load and verify a model package folder, or a shipped package by its name (default: the
    shipped default model; :func:`resolve_model_dir`)."""
    path = resolve_model_dir(path)
    card_path = path / CARD_NAME
    if not card_path.is_file():
        names = shipped_models()
        hint = f"; shipped models, by name: {', '.join(names)}" if names else ""
        if path == DEFAULT_MODEL_DIR:
            hint = "; the default model is not installed, pass --model DIR"
        raise ModelPackageError(f"model card not found: {card_path}{hint}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{card_path} is not valid JSON: {exc}") from exc
    spec = parse_card(card, str(card_path))
    package = ModelPackage(path=path, card=card, spec=spec)
    for stage in spec.member_stages:
        package.networks[stage] = [
            _load_member(path, spec, stage, member) for member in card["members"][stage]
        ]
    logger.info("loaded model %r from %s (%s members)", spec.name, path,
                ", ".join(f"{len(package.networks[stage])} {stage}" for stage in spec.member_stages))
    return package


def save_model_package(path: str | os.PathLike, card: dict, state_dicts: dict) -> Path:
    """Write ``state_dicts`` (``{"initial": [sd, ...], "refine": [sd, ...]}``, optionally an
    optional stage's too, e.g. ``"unanchored"``) and the card.

    Member files are named ``<stage>_<index>.safetensors``; their sha256 is filled into the card.
    Returns the package folder.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    card = copy.deepcopy(card)
    for stage in stages_of(state_dicts):
        members = []
        for index, state in enumerate(state_dicts[stage]):
            file_name = f"{stage}_{index}.safetensors"
            tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            save_file(tensors, str(path / file_name))
            previous = card["members"].get(stage, [])
            member = dict(previous[index]) if index < len(previous) else {}
            member.update({"file": file_name, "sha256": sha256_of(path / file_name)})
            members.append(member)
        card["members"][stage] = members
    for stage in set(card["members"]) - set(stages_of(state_dicts)):  # no weights: not listed
        del card["members"][stage]
    parse_card(card)
    (path / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return path


def create_random_model_package(
    path: str | os.PathLike,
    network: dict | None = None,
    roi_size_vox=(144, 144, 144),
    image_channels=("ct", "pet"),
    seed: int = 0,
    ensemble: int = 1,
    refine_extra=(),
    outputs=None,
) -> Path:
    """A package with randomly initialised weights, for tests and pipeline checks only.
    ``refine_extra``: card input entries after the classic refine inputs (e.g. ``pet_region``).
    ``outputs``: the output classes (card ``outputs`` entries, e.g. :data:`GTVP_GTVN`), or an
    integer C for ``gtvp``, ``gtvn`` and further ``class<c>`` with labels 1..C; None: GTVp alone
    (the classic one-class package)."""
    import torch

    if isinstance(outputs, int):
        outputs = [dict(entry) for entry in GTVP_GTVN[:outputs]] + [
            {"name": f"class{c}", "label": c + 1} for c in range(len(GTVP_GTVN), outputs)]
    card = default_card(
        name="random-untrained", network=network, roi_size_vox=roi_size_vox,
        image_channels=image_channels, outputs=outputs,
    )
    n_classes = len(card["outputs"])
    card["intended_use"] = "Pipeline testing only: randomly initialised weights, no training."
    card["training"] = {"data": "none", "seed": seed}
    torch.manual_seed(seed)
    if refine_extra:
        card["inputs"] = default_inputs_section(image_channels, refine_extra, n_classes)
    stages = default_stages(image_channels, card["clicks"], refine_extra, n_classes)  # the card's layout
    states = {
        stage: [
            build_network(card["network"], stages[stage].in_channels, n_classes).state_dict()
            for _ in range(ensemble)
        ]
        for stage in STAGES
    }
    return save_model_package(path, card, states)
