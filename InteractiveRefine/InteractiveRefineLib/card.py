"""The model card, typed: what a package's networks take and give, checked once at load.

:func:`parse_card` reads a package's ``model.json`` into a frozen :class:`ModelCard`, which every
reader of a card field uses. An invalid field raises :class:`ModelPackageError` naming it.

Named inputs and outputs (optional sections; ``format_version`` 1)::

    "inputs": {"initial": [{"name": "ct"}, {"name": "pet"}],
               "refine": [{"name": "ct"}, {"name": "pet"}, {"name": "previous_probability"},
                          {"name": "clicks_positive"}, {"name": "clicks_negative"}]},
    "outputs": [{"name": "gtvp", "label": 1}],
    "activation": "sigmoid"

Outputs: 1..n classes with distinct names and distinct positive label values, e.g.
``[{"name": "gtvp", "label": 1}, {"name": "gtvn", "label": 2}]``. The activation is ``"sigmoid"``:
one sigmoid per class (channel c of the networks' output is class c; classes may overlap in
probability, and a label map takes the most probable class above the threshold,
:mod:`.classes`). The networks' output channels equal the number of outputs (a network section's
``out_channels``, when given, must say so). With C > 1 outputs the refine stage reads
``previous_probability`` with ``channels`` C (class c's probability) and ``clicks_positive`` with
``channels`` C (channel c: the guidance of the positive clicks of class c, the same encoding and
scaling per channel), while ``clicks_negative`` stays one channel (every negative click, as in
2S-ICR); :func:`default_inputs_section` with ``n_classes`` writes that layout.

A member may be a network trained for more classes than the card's outputs: its ``"outputs":
["gtvp", "gtvn"]`` names its own output channels in order, they must include every output of the
card, and the engine takes the card's channels from them (:func:`member_output_indices`). E.g. a
two-class initial network serves a one-class GTVp card, alone or averaged with one-class members.

An input entry is ``{"name", "channels" (1), "optional" (false), "options" ({})}``; the network's
input channels are the entries' channels in card order. A card without these sections gets
exactly the layout above (``image_channels``, then the previous probability and the positive and
negative guidance), so older cards load unchanged. The click inputs' options default to the
card's ``clicks`` section (``sigma_vox`` 2.0, ``truncate`` 4.0, ``scaling`` "minmax"), which
stays the one home of the click encoding: an input option that contradicts it is an error.
The ROI-size rule of the engine, the Slicer module and training lives here too.

Optional stages (:data:`OPTIONAL_STAGES`) are further refinement members for one situation; they
read the refine stage's inputs and are listed under ``members`` only::

    "members": {"initial": [...], "refine": [...], "unanchored": [{"file": ..., "sha256": ...}]}

``unanchored``: the networks for a negative click made before any positive click while the ROI
was placed automatically (nobody has yet said which hot region is the tumour); every other click
uses ``refine`` (:func:`.refiners.refine_stage`).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ImageError, ModelPackageError
from .intensity import PRESETS

CARD_NAME = "model.json"
STAGES = ("initial", "refine")
#: Optional refinement stages, listed in ``members`` only; they read the ``refine`` inputs.
OPTIONAL_STAGES = ("unanchored",)
FORMAT_VERSION = 1

#: Image inputs a card may name; ``preprocessing.image_channels`` lists those the model reads.
IMAGE_INPUTS = ("ct", "pet")
CLICK_INPUTS = ("clicks_positive", "clicks_negative")
#: Inputs computed from the PET's SUV values (the card's model must read PET).
PET_VALUE_INPUTS = ("pet_region",)
#: The refine stage's inputs after the images, in the layout of format-1 cards without inputs.
INTERACTION_INPUTS = ("previous_probability",) + CLICK_INPUTS
#: The click section's settings a click input reads, with their defaults.
CLICK_DEFAULTS = {"sigma_vox": 2.0, "truncate": 4.0, "scaling": "minmax"}
ACTIVATIONS = ("sigmoid",)
DEFAULT_OUTPUTS = ({"name": "gtvp", "label": 1},)
UNET = "monai.networks.nets.UNet"
#: The names of MONAI's ``Norm`` factory (``monai.networks.layers.factories.Norm.names``).
MONAI_NORMS = ("INSTANCE", "BATCH", "INSTANCE_NVFUSER", "GROUP", "LAYER", "LOCALRESPONSE", "SYNCBATCH")

_INPUT_KEYS = ("name", "channels", "optional", "options")
#: The card's click settings (true or false, default false; :class:`ModelCard`).
CARD_FLAGS = ("threshold_start", "local_edits_after_threshold", "local_edits_positive_clicks")


@dataclass(frozen=True)
class InputSpec:
    """One named network input: ``channels`` consecutive channels of the input tensor."""

    name: str
    channels: int = 1
    optional: bool = False
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class OutputSpec:
    """One network output (a probability channel) and the label value it segments."""

    name: str
    label: int = 1


@dataclass(frozen=True)
class StageSpec:
    """The inputs of one stage's networks, in channel order."""

    name: str
    inputs: tuple[InputSpec, ...]

    @property
    def in_channels(self) -> int:
        return sum(spec.channels for spec in self.inputs)

    def slices(self) -> dict[str, slice]:
        """The channel slice of each input, in card order."""
        out, start = {}, 0
        for spec in self.inputs:
            out[spec.name] = slice(start, start + spec.channels)
            start += spec.channels
        return out

    def channel(self, name: str) -> int:
        """The first channel of input ``name``; ModelPackageError when the stage lacks it."""
        found = self.slices().get(name)
        if found is None:
            raise ModelPackageError(
                f"the {self.name!r} stage has no input {name!r}; its inputs are "
                f"{[spec.name for spec in self.inputs]}"
            )
        return found.start

    def has(self, name: str) -> bool:
        return any(spec.name == name for spec in self.inputs)

    def spec(self, name: str) -> InputSpec | None:
        """The input ``name`` (None when the stage lacks it)."""
        return next((spec for spec in self.inputs if spec.name == name), None)


@dataclass(frozen=True)
class ModelCard:
    """A parsed, validated card (:func:`parse_card`).

    ``raw``: a copy of the JSON as read, for the fields no engine code interprets (training,
    metrics, members). ``network``: the package-wide network section. ``stages``: the inputs
    of each of :data:`STAGES`, and of the optional stages the card has members for (the refine
    inputs). ``spacing_mm``: working-grid spacing along (i, j, k);
    ``roi_size_vox``: the model's ROI (k, j, i). ``size_divisor``: spatial sizes every member
    network takes are multiples of it (the product of its strides). ``pet_optional``
    (``preprocessing.pet_optional``, default false): a PET/CT model trained with PET dropped may
    run on CT alone, its normalised PET channel zero-filled (HN-UISeg). ``threshold_start``
    (default false): the refinement network was trained to refine from a one-click PET threshold
    region, so a session makes the first positive click (of each class) a 40 % SUVmax threshold
    click of that class where the PET has uptake (unless its user says otherwise).
    ``local_edits_after_threshold`` (default
    false): once the mask is a PET threshold region, a network click keeps only the changes that
    connect to it (:func:`.constraints.keep_connected_changes`). ``local_edits_positive_clicks``
    (default false): every positive network click keeps only the changes that connect to it.
    """

    raw: Mapping = field(hash=False, repr=False)
    name: str
    version: str
    network: Mapping = field(hash=False)
    stages: Mapping[str, StageSpec] = field(hash=False)
    outputs: tuple[OutputSpec, ...]
    activation: str
    threshold: float
    spacing_mm: tuple[float, float, float]
    roi_size_vox: tuple[int, int, int]
    intensity_preset: str
    image_channels: tuple[str, ...]
    click_sigma_vox: float
    click_truncate: float
    fast_window_vox: int | None
    size_divisor: int
    pet_optional: bool = False
    threshold_start: bool = False
    local_edits_after_threshold: bool = False
    local_edits_positive_clicks: bool = False

    @property
    def member_stages(self) -> tuple[str, ...]:
        """The stages this package has members for: :data:`STAGES`, then the optional stages
        its ``members`` lists (e.g. ``("initial", "refine", "unanchored")``)."""
        return tuple(self.stages)

    @property
    def classes(self) -> tuple[str, ...]:
        """The output names, in channel order (e.g. ``("gtvp", "gtvn")``)."""
        return tuple(output.name for output in self.outputs)

    @property
    def labels(self) -> tuple[int, ...]:
        """The label value of each output, in channel order."""
        return tuple(output.label for output in self.outputs)

    @property
    def needs_pet(self) -> bool:
        """The model reads a PET channel (given, or zero-filled when :attr:`pet_optional`)."""
        return "pet" in self.image_channels

    @property
    def requires_pet(self) -> bool:
        """A PET image must be given: the model reads PET and its card does not allow CT-only."""
        return self.needs_pet and not self.pet_optional

    def roi_size_for(self, extent_vox_kji=None) -> tuple[int, int, int]:
        """The working-grid size ``(k, j, i)`` covering ``extent_vox_kji`` voxels (rounded up):
        each axis at least the model's ROI and a multiple of :attr:`size_divisor`. None: the
        model's ROI."""
        if extent_vox_kji is None:
            return self.roi_size_vox
        try:
            extent = [float(v) for v in extent_vox_kji]
        except (TypeError, ValueError):
            extent = []
        if len(extent) != 3 or not all(math.isfinite(v) and v >= 0 for v in extent):
            raise ImageError(
                f"ROI extent must be three non-negative voxel counts (k, j, i), got {extent_vox_kji!r}"
            )
        divisor = self.size_divisor
        return tuple(
            -(-max(int(math.ceil(v)), minimum) // divisor) * divisor
            for v, minimum in zip(extent, self.roi_size_vox)
        )

    def check_roi_size(self, size_kji) -> None:
        """ImageError unless ``size_kji`` is at least the model's ROI and a multiple of
        :attr:`size_divisor` on every axis."""
        try:
            size = tuple(int(v) for v in size_kji)
        except (TypeError, ValueError):
            size = ()
        divisor = self.size_divisor
        if (
            len(size) != 3
            or any(s < r for s, r in zip(size, self.roi_size_vox))
            or any(s % divisor for s in size)
        ):
            shown = size if len(size) == 3 else size_kji
            raise ImageError(
                f"ROI size {shown} must be at least the model's {self.roi_size_vox} and a "
                f"multiple of {divisor} voxels"
            )


# ------------------------------------------------------------------------ field checks
def _fail(source: str | None, name: str, expected: str, value) -> ModelPackageError:
    return ModelPackageError(f"{source + ': ' if source else ''}{name} must be {expected}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_ints(value, count: int | None = None) -> bool:
    if not isinstance(value, (list, tuple)) or not value or (count is not None and len(value) != count):
        return False
    return all(_is_int(v) and v > 0 for v in value)


def _section(raw: Mapping, key: str, source: str | None) -> Mapping:
    if not isinstance(raw.get(key), Mapping):
        raise _fail(source, key, "a JSON object", raw.get(key))
    return raw[key]


def size_divisor_of(network: Mapping) -> int:
    """The product of a ``network`` section's strides: spatial sizes the network takes must be
    multiples of it."""
    divisor = 1
    for stride in network["strides"]:
        divisor *= int(stride)
    return divisor


def check_network(network, name: str = "network", source: str | None = None) -> None:
    """ModelPackageError (a ValueError) naming the first invalid field of a ``network`` section."""
    if not isinstance(network, Mapping):
        raise _fail(source, name, "a JSON object", network)
    arch = network.get("architecture", UNET)
    if arch != UNET:
        raise _fail(source, f"{name}.architecture", repr(UNET), arch)
    channels, strides = network.get("channels"), network.get("strides")
    if not _positive_ints(channels) or len(channels) < 2:
        raise _fail(source, f"{name}.channels", "a list of at least two positive integers", channels)
    if not _positive_ints(strides, len(channels) - 1):
        raise _fail(source, f"{name}.strides",
                    f"{len(channels) - 1} positive integers (one fewer than channels)", strides)
    units = network.get("num_res_units", 2)
    if not _is_int(units) or units < 0:
        raise _fail(source, f"{name}.num_res_units", "a non-negative integer", units)
    dropout = network.get("dropout", 0.0)
    if not _is_number(dropout) or not 0.0 <= float(dropout) < 1.0:
        raise _fail(source, f"{name}.dropout", "a number in [0, 1) (the MC-dropout rate)", dropout)
    norm = network.get("norm", "INSTANCE")
    norm_name = norm[0] if isinstance(norm, (list, tuple)) and len(norm) == 2 and isinstance(
        norm[1], Mapping) else norm
    if not isinstance(norm_name, str) or norm_name.upper() not in MONAI_NORMS:
        raise _fail(source, f"{name}.norm",
                    f"a MONAI norm name, one of {list(MONAI_NORMS)} (or [name, {{arguments}}])", norm)


def check_roi_multiple(size, divisor: int, name: str = "preprocessing.roi_size_vox",
                       source: str | None = None) -> tuple[int, int, int]:
    """``size`` as a tuple; ModelPackageError (a ValueError) unless it is three positive
    integers that are multiples of ``divisor``: the sizes a network with that stride product
    takes."""
    if not _positive_ints(size, 3) or any(v % divisor for v in size):
        raise _fail(source, name, f"three positive integers that are multiples of {divisor}", size)
    return tuple(size)


def _numbers(value, count: int, name: str, source: str | None) -> tuple[float, ...]:
    if not (isinstance(value, (list, tuple)) and len(value) == count
            and all(_is_number(v) and v > 0 for v in value)):
        raise _fail(source, name, f"{count} positive finite numbers", value)
    return tuple(float(v) for v in value)


def _positive(section: Mapping, key: str, default: float, name: str, source) -> float:
    value = section.get(key, default)
    if not _is_number(value) or value <= 0:
        raise _fail(source, name, "a positive finite number", value)
    return float(value)


def _preprocessing(raw: Mapping, source) -> tuple[Mapping, tuple[str, ...]]:
    """The ``preprocessing`` section and its image channels."""
    pre = _section(raw, "preprocessing", source)
    for key in ("image_channels", "spacing_mm", "roi_size_vox", "intensity_preset"):
        if key not in pre:
            raise ModelPackageError(f"{source}: missing field 'preprocessing.{key}'")
    if pre["intensity_preset"] not in PRESETS:
        raise _fail(source, "preprocessing.intensity_preset", f"one of {sorted(PRESETS)}",
                    pre["intensity_preset"])
    channels = pre["image_channels"]
    if not isinstance(channels, (list, tuple)) or list(channels) not in (["ct"], ["ct", "pet"]):
        raise _fail(source, "preprocessing.image_channels", "['ct'] or ['ct', 'pet']", channels)
    optional = pre.get("pet_optional", False)
    if not isinstance(optional, bool):
        raise _fail(source, "preprocessing.pet_optional", "true or false", optional)
    if optional and "pet" not in channels:
        raise _fail(source, "preprocessing.pet_optional", "false for a model without a 'pet' channel",
                    optional)
    return pre, tuple(channels)


def _members(raw: Mapping, source) -> list:
    """The members' own ``network`` sections (checked; most members have none)."""
    members = _section(raw, "members", source)
    unknown = sorted(set(members) - set(STAGES + OPTIONAL_STAGES))
    if unknown:
        raise _fail(source, "members", f"keyed by the stages {list(STAGES)} and optionally "
                    f"{list(OPTIONAL_STAGES)}", f"stage(s) {unknown}")
    networks = []
    for stage in stages_of(members):
        listed = members.get(stage)
        if not isinstance(listed, list) or not listed:
            raise _fail(source, f"members.{stage}", "a non-empty list of {file, sha256} entries", listed)
        for index, member in enumerate(listed):
            where = f"members.{stage}[{index}]"
            if not isinstance(member, Mapping) or not all(
                isinstance(member.get(k), str) and member.get(k) for k in ("file", "sha256")
            ):
                raise _fail(source, where, "an object with 'file' and 'sha256' strings", member)
            if "network" in member:
                check_network(member["network"], f"{where}.network", source)
                networks.append(member["network"])
    return networks


def _click_options(clicks: Mapping, source) -> dict:
    """The click inputs' default options: the ``clicks`` section's encoding settings."""
    encoding = clicks.get("encoding", "gaussian")
    if encoding != "gaussian":
        raise _fail(source, "clicks.encoding", "'gaussian'", encoding)
    scaling = clicks.get("scaling", CLICK_DEFAULTS["scaling"])
    if scaling != "minmax":
        raise _fail(source, "clicks.scaling", "'minmax'", scaling)
    return {
        "sigma_vox": _positive(clicks, "sigma_vox", CLICK_DEFAULTS["sigma_vox"], "clicks.sigma_vox", source),
        "truncate": _positive(clicks, "truncate", CLICK_DEFAULTS["truncate"], "clicks.truncate", source),
        "scaling": scaling,
    }


# ------------------------------------------------------------------------ inputs and outputs
#: The refine inputs with one channel per class (the others have one channel whatever C is).
PER_CLASS_INPUTS = ("previous_probability", "clicks_positive")


def default_inputs_section(image_channels: Sequence[str], refine_extra: Sequence[Mapping] = (),
                           n_classes: int = 1) -> dict:
    """The ``inputs`` section of the classic layout (JSON): initial = the images; refine = the
    images, the previous probability and the positive and negative guidance, then the entries
    ``refine_extra`` (e.g. ``{"name": "pet_region", "options": {...}}``). ``n_classes`` > 1: the
    previous probability and the positive guidance have that many channels (one per class)."""
    images = [{"name": name} for name in image_channels]
    interaction = [{"name": name} for name in INTERACTION_INPUTS]
    if int(n_classes) > 1:
        for entry in interaction:
            if entry["name"] in PER_CLASS_INPUTS:
                entry["channels"] = int(n_classes)
    return {
        "initial": copy.deepcopy(images),
        "refine": copy.deepcopy(images) + interaction
        + [copy.deepcopy(dict(entry)) for entry in refine_extra],
    }


def default_stages(image_channels: Sequence[str], clicks: Mapping | None = None,
                   refine_extra: Sequence[Mapping] = (), n_classes: int = 1) -> dict[str, StageSpec]:
    """The typed stages of the classic layout (a card without ``inputs`` gets them), with the
    refine stage's extra inputs ``refine_extra`` after it, for ``n_classes`` outputs."""
    options = _click_options(clicks or {}, None)
    section = default_inputs_section(image_channels, refine_extra, n_classes)
    return _stages(section, tuple(image_channels), options, None)


def _check_class_channels(stages: Mapping[str, StageSpec], outputs, source) -> None:
    """The refine stage's per-class inputs must have one channel per output class, and the
    negative guidance one channel."""
    count = len(outputs)
    for index, spec in enumerate(stages["refine"].inputs):
        where = f"inputs.refine[{index}].channels"
        if spec.name in PER_CLASS_INPUTS and spec.channels != count:
            raise _fail(source, where, f"{count} for {spec.name!r} (one channel per output class "
                        f"{[o.name for o in outputs]})", spec.channels)
        if spec.name == "clicks_negative" and spec.channels != 1:
            raise _fail(source, where, "1 for 'clicks_negative' (every negative click in one channel)",
                        spec.channels)


def member_output_indices(member: Mapping, outputs, where: str = "members", source=None) -> tuple:
    """``(names, indices)``: a member's own output channel names (its ``outputs`` field, default
    the card's ``outputs``) and the channel of each card output in them; ModelPackageError when
    the field is not a list of distinct names or lacks a card output."""
    card_names = [o.name for o in outputs]
    names = member.get("outputs", card_names)
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)):
        raise _fail(source, f"{where}.outputs", "a list of distinct output names", names)
    missing = [n for n in card_names if n not in names]
    if missing:
        raise _fail(source, f"{where}.outputs", f"names including every card output {card_names}", names)
    return list(names), tuple(names.index(n) for n in card_names)


def stages_of(members: Mapping) -> tuple[str, ...]:
    """:data:`STAGES` and the optional stages that a card's ``members`` section lists."""
    return STAGES + tuple(stage for stage in OPTIONAL_STAGES if stage in members)


def _check_out_channels(raw: Mapping, outputs, source) -> None:
    """A network section's ``out_channels``, when given, must equal the number of outputs (of the
    member's own ``outputs``, when it lists them)."""
    sections = [("network", raw["network"], len(outputs))]
    for stage in stages_of(raw["members"]):
        for i, member in enumerate(raw["members"][stage]):
            where = f"members.{stage}[{i}]"
            names, _ = member_output_indices(member, outputs, where, source)
            if stage != "initial" and names != [o.name for o in outputs]:  # its inputs are per class
                raise _fail(source, f"{where}.outputs", f"the card's outputs {[o.name for o in outputs]} (a "
                            "refine network reads one channel per class)", names)
            if "network" in member:
                sections.append((f"{where}.network", member["network"], len(names)))
    for name, network, count in sections:
        if "out_channels" in network and network["out_channels"] != count:
            raise _fail(source, f"{name}.out_channels", f"{count} (one per output of the network)",
                        network["out_channels"])


def _input(entry, where: str, image_channels, click_options: Mapping, source) -> InputSpec:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise _fail(source, where, "an object with a 'name' string", entry)
    unknown = sorted(set(entry) - set(_INPUT_KEYS))
    if unknown:
        raise _fail(source, where, f"an object with keys among {list(_INPUT_KEYS)}", entry)
    name = entry["name"]
    if name in IMAGE_INPUTS and name not in image_channels:
        raise _fail(source, f"{where}.name", f"an image listed in preprocessing.image_channels "
                    f"{list(image_channels)}", name)
    channels, optional = entry.get("channels", 1), entry.get("optional", False)
    options = entry.get("options", {})
    if not _is_int(channels) or channels < 1:
        raise _fail(source, f"{where}.channels", "a positive integer", channels)
    if not isinstance(optional, bool):
        raise _fail(source, f"{where}.optional", "true or false", optional)
    if not isinstance(options, Mapping):
        raise _fail(source, f"{where}.options", "a JSON object", options)
    if name in PET_VALUE_INPUTS:
        if "pet" not in image_channels:
            raise _fail(source, f"{where}.name", "an input of a model whose image_channels include 'pet'",
                        name)
        from .inputs.pet_region import DEFAULTS, options_of

        try:
            options = options_of(options)
        except (TypeError, ValueError):
            raise _fail(source, f"{where}.options", f"an object of numbers among {sorted(DEFAULTS)}",
                        options) from None
    if name in CLICK_INPUTS:
        for key, value in options.items():
            if key in click_options and value != click_options[key]:
                raise _fail(source, f"{where}.options.{key}",
                            f"{click_options[key]!r} (as in the clicks section)", value)
        options = {**click_options, **options}
    return InputSpec(name, channels, optional, copy.deepcopy(dict(options)))


def _stages(section, image_channels, click_options, source) -> dict[str, StageSpec]:
    if not isinstance(section, Mapping):
        raise _fail(source, "inputs", f"an object with an input list for each of {list(STAGES)}", section)
    unknown = sorted(set(section) - set(STAGES))
    if unknown:
        raise _fail(source, "inputs", f"keyed by the stages {list(STAGES)}", f"stage(s) {unknown}")
    stages = {}
    for stage in STAGES:
        entries = section.get(stage)
        if not isinstance(entries, list) or not entries:
            raise _fail(source, f"inputs.{stage}", "a non-empty list of inputs", entries)
        inputs = tuple(_input(entry, f"inputs.{stage}[{i}]", image_channels, click_options, source)
                       for i, entry in enumerate(entries))
        names = [spec.name for spec in inputs]
        if len(set(names)) != len(names):
            raise _fail(source, f"inputs.{stage}", "inputs with distinct names", names)
        stages[stage] = StageSpec(stage, inputs)
    return stages


def _outputs(raw: Mapping, source) -> tuple[OutputSpec, ...]:
    entries = raw.get("outputs", list(DEFAULT_OUTPUTS))
    if not isinstance(entries, list) or not entries:
        raise _fail(source, "outputs", "a non-empty list of outputs", entries)
    outputs = []
    for index, entry in enumerate(entries):
        where = f"outputs[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise _fail(source, where, "an object with a 'name' string", entry)
        label = entry.get("label", 1)
        if not _is_int(label) or label < 1:
            raise _fail(source, f"{where}.label", "a positive integer", label)
        outputs.append(OutputSpec(entry["name"], label))
    for key in ("name", "label"):
        values = [getattr(output, key) for output in outputs]
        if len(set(values)) != len(values):
            raise _fail(source, "outputs", f"outputs with distinct {key}s", values)
    if any(output.label > 255 for output in outputs):
        raise _fail(source, "outputs", "labels of at most 255 (a uint8 label map)",
                    [output.label for output in outputs])
    return tuple(outputs)


# ------------------------------------------------------------------------ the card
def _header(raw, source) -> None:
    if not isinstance(raw, Mapping):
        raise ModelPackageError(f"{source}: expected a JSON object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelPackageError(
            f"{source}: format_version {raw.get('format_version')!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    for key in ("name", "network", "preprocessing", "clicks", "members"):
        if key not in raw:
            raise ModelPackageError(f"{source}: missing field {key!r}")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise _fail(source, "name", "a non-empty string", raw["name"])


def _scalars(raw: Mapping, source) -> dict:
    threshold = raw.get("threshold", 0.5)
    if not _is_number(threshold) or not 0.0 < threshold < 1.0:
        raise _fail(source, "threshold", "a number between 0 and 1 (exclusive)", threshold)
    activation = raw.get("activation", ACTIVATIONS[0])
    if activation not in ACTIVATIONS:
        raise _fail(source, "activation", f"one of {list(ACTIVATIONS)}", activation)
    fast_path = raw.get("fast_path", {})
    window = fast_path.get("window_vox") if isinstance(fast_path, Mapping) else fast_path
    if window is not None and (not _is_int(window) or window < 1):
        raise _fail(source, "fast_path.window_vox", "a positive integer", window)
    flags = {}
    for key in CARD_FLAGS:
        flags[key] = raw.get(key, False)
        if not isinstance(flags[key], bool):
            raise _fail(source, key, "true or false", flags[key])
    return {"threshold": float(threshold), "activation": activation, "fast_window_vox": window, **flags}


def parse_card(raw: dict, source: str = CARD_NAME) -> ModelCard:
    """The typed card of ``raw`` (a ``model.json`` dict); ModelPackageError naming the first
    missing or invalid field. ``source`` prefixes the messages (the card's path)."""
    _header(raw, source)
    raw = copy.deepcopy(dict(raw))
    check_network(raw["network"], "network", source)
    divisor = size_divisor_of(raw["network"])
    for network in _members(raw, source):  # a member's own network must take the same sizes
        divisor = math.lcm(divisor, size_divisor_of(network))
    pre, image_channels = _preprocessing(raw, source)
    click_options = _click_options(_section(raw, "clicks", source), source)
    outputs = _outputs(raw, source)
    _check_out_channels(raw, outputs, source)
    section = raw["inputs"] if "inputs" in raw else default_inputs_section(image_channels,
                                                                           n_classes=len(outputs))
    stages = _stages(section, image_channels, click_options, source)
    _check_class_channels(stages, outputs, source)
    for stage in stages_of(raw["members"])[len(STAGES):]:  # optional stages read the refine inputs
        stages[stage] = StageSpec(stage, stages["refine"].inputs)
    return ModelCard(
        raw=raw,
        name=raw["name"],
        version=str(raw.get("version", "0.0.0")),
        network=copy.deepcopy(raw["network"]),
        stages=stages,
        outputs=outputs,
        spacing_mm=_numbers(pre["spacing_mm"], 3, "preprocessing.spacing_mm", source),
        roi_size_vox=check_roi_multiple(pre["roi_size_vox"], divisor, "preprocessing.roi_size_vox", source),
        intensity_preset=pre["intensity_preset"],
        image_channels=image_channels,
        click_sigma_vox=click_options["sigma_vox"],
        click_truncate=click_options["truncate"],
        size_divisor=divisor,
        pet_optional=pre.get("pet_optional", False),
        **_scalars(raw, source),
    )
