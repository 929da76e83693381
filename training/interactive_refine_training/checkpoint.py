"""Checkpoints as plain dicts (never pickled objects) and loading trained networks.

A checkpoint holds the trainer's name, the full configuration, the epoch, the model, optimizer,
scheduler and gradient-scaler states, the best metric, the history and the RNG states: only
tensors, numbers, strings, lists and dicts, so it loads with ``torch.load(weights_only=True)``.
A run folder holds ``checkpoint_latest.pt``, ``checkpoint_best.pt``, ``config.json`` and
``summary.json``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import classes_of, n_classes, training_stages

logger = logging.getLogger(__name__)

#: Working geometry: may differ between a fine-tuning run and the weights it starts from.
GEOMETRY_KEYS = ("roi_size_vox", "spacing_mm")

LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """``torch.save`` to a temporary file, then an atomic rename (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class TrainedRun:
    """A finished (or stopped) run: its best weights, configuration and summary."""

    path: Path
    trainer: str
    config: dict
    state_dict: dict
    summary: dict


def load_run(source: str | os.PathLike) -> TrainedRun:
    """A run folder (its best checkpoint) or a checkpoint file."""
    source = Path(source)
    checkpoint_path = source / BEST if source.is_dir() else source
    if source.is_dir() and not checkpoint_path.is_file():
        checkpoint_path = source / LATEST
    checkpoint = load_checkpoint(checkpoint_path)
    run_dir = checkpoint_path.parent
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return TrainedRun(run_dir, checkpoint["trainer"], checkpoint["config"], checkpoint["model"], summary)


def load_initial_networks(source: str | os.PathLike, config: dict, device) -> list:
    """The initial model(s) a refinement run starts from, in eval mode on ``device``.

    ``source`` is an initial run folder, its checkpoint file, or an exported model package
    (every ``initial`` member; their probabilities are averaged like the engine does). The
    network and preprocessing must match ``config``.
    """
    from InteractiveRefineLib.card import CARD_NAME, default_stages
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.networks import build_network

    source = Path(source)
    if (source / CARD_NAME).is_file():
        package = load_model_package(source)
        _check_package_matches(package.spec, config, source)
        networks = package.networks["initial"]
    else:
        run = load_run(source)
        if run.trainer != "initial":
            raise ValueError(f"{source} is a {run.trainer!r} run; the refine stage needs an initial run")
        _check_same(run.config["data"], config["data"], source, ("roi_size_vox", "spacing_mm",
                    "intensity_preset", "image_channels"))
        _check_classes([(n, v) for n, v in classes_of(run.config)], config, source)
        channels = default_stages(config["data"]["image_channels"])["initial"].in_channels
        network = build_network(run.config["network"], channels, out_channels=n_classes(run.config))
        network.load_state_dict(run.state_dict)
        networks = [network]
    for net in networks:
        net.to(device).eval()
        net.requires_grad_(False)
    return networks


def load_stage_weights(source: str | os.PathLike, trainer: str, stage: str, config: dict) -> dict:
    """The float32 ``state_dict`` a run of ``trainer`` (network layout ``stage``) starts from:
    a run folder or checkpoint of the same trainer, or a model package (its first ``stage``
    member). Network, image channels and intensity preset must match ``config``; the working
    geometry may differ (the networks are fully convolutional: fine-tuning a 2 mm, 72^3 model at
    1 mm, 144^3 is a choice, logged as a warning). A single-class source of a multi-class run
    (e.g. the shipped GTVp model for GTVp + GTVn) gives every class a copy of its output
    (:func:`widen_output_weights`)."""
    from InteractiveRefineLib.card import CARD_NAME
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.networks import unwrapped

    source = Path(source)
    if (source / CARD_NAME).is_file():
        package = load_model_package(source)
        pre = _card_data(package.spec)
        _check_same(pre, config["data"], source, ("image_channels", "intensity_preset"))
        _warn_geometry(pre, config["data"], source)
        card_network = {k: v for k, v in package.spec.network.items() if k != "architecture"}
        wanted = {k: config["network"][k] for k in card_network if k in config["network"]}
        if {k: _normal(v) for k, v in wanted.items()} != {k: _normal(card_network[k]) for k in wanted}:
            raise ValueError(f"{source}: network {card_network} differs from this run's {config['network']}")
        if stage not in package.networks:
            raise ValueError(f"{source} has no {stage!r} member")
        member = package.networks[stage][0]
        if unwrapped(member) is not member:
            raise ValueError(f"{source}: its first {stage} member is a network of more classes than the "
                             "card's outputs; start from that network's own run or package")
        state = member.state_dict()
        sources = _input_sources(package.spec, config, source, stage)
        if sources != list(range(package.spec.stages[stage].in_channels)):
            # e.g. a classic refine member fine-tuned with the pet_region input (new channels start
            # with zero weights), or a single-class member for GTVp + GTVn (each class's click and
            # previous-probability channel starts as a copy of the one)
            logger.info("%s: input channels %s of the run from the source's %s (None: zero weights)",
                        source, list(range(len(sources))), sources)
            state = remap_input_weights(state, config["network"], package.spec.stages[stage].in_channels,
                                        sources)
    else:
        run = load_run(source)
        if run.trainer != trainer:
            raise ValueError(f"{source} is a {run.trainer!r} run; this is a {trainer!r} run")
        _check_same(run.config["data"], config["data"], source, ("intensity_preset", "image_channels"))
        _warn_geometry(run.config["data"], config["data"], source)
        state = run.state_dict
    classes, in_channels = n_classes(config), training_stages(config)[stage].in_channels
    if classes > 1 and _out_channels(state, config["network"], in_channels) == 1:
        logger.info("%s: one output; each of the run's %d classes starts as a copy of it", source, classes)
        state = widen_output_weights(state, config["network"], in_channels, classes)
    return {k: v.detach().float().clone() if v.is_floating_point() else v.clone() for k, v in state.items()}


def _out_channels(state: dict, network_config: dict, in_channels: int) -> int:
    """The output channels of a ``state_dict`` of the engine's network (from its last bias)."""
    from InteractiveRefineLib.networks import build_network

    last = [k for k in build_network(network_config, in_channels).state_dict() if k.endswith("bias")][-1]
    return int(state[last].shape[0])


def widen_output_weights(state: dict, network_config: dict, in_channels: int, classes: int) -> dict:
    """A one-output ``state`` as the weights of the same network with ``classes`` outputs, each
    output an exact copy of the one (per-class channels of the output layers: an output-only
    dimension repeats the weights, a class-to-class one gets them on its diagonal and zeros off
    it, so no class reads another; instance norm is per channel). Fine-tuning then separates
    the classes."""
    from InteractiveRefineLib.networks import build_network

    target = build_network(network_config, in_channels, out_channels=classes).state_dict()
    out = {}
    for key, value in state.items():
        want = tuple(target[key].shape)
        if tuple(value.shape) == want:
            out[key] = value.detach().clone()
            continue
        dims = [d for d, (a, b) in enumerate(zip(value.shape, want)) if a != b]
        if len(value.shape) != len(want) or any(value.shape[d] != 1 or want[d] != classes for d in dims):
            raise ValueError(f"cannot widen {key} from {tuple(value.shape)} to {want}")
        if len(dims) == 1:
            out[key] = value.detach().repeat_interleave(classes, dim=dims[0]).clone()
        else:  # class -> class (e.g. the last residual unit's convolution): diagonal
            widened = torch.zeros(want, dtype=value.dtype)
            for c in range(classes):
                index = [slice(None)] * len(want)
                for d in dims:
                    index[d] = slice(c, c + 1)
                widened[tuple(index)] = value.detach()
            out[key] = widened
    return out


def _normal(value):
    return [float(v) if isinstance(v, (int, float)) else v for v in value] if isinstance(
        value, (list, tuple)) else value


def _differing(a: dict, b: dict, keys):
    return [key for key in keys if _normal(a[key]) != _normal(b[key])]


def _check_same(a: dict, b: dict, source, keys) -> None:
    for key in _differing(a, b, keys):
        raise ValueError(f"{source}: data.{key} is {a[key]!r} but this run uses {b[key]!r}")


def _warn_geometry(source_data: dict, data: dict, source) -> None:
    for key in _differing(source_data, data, GEOMETRY_KEYS):
        logger.warning("fine-tuning across geometry: %s has %s %s, this run %s", source, key,
                       source_data[key], data[key])


def _card_data(spec) -> dict:
    """A typed card's preprocessing as the ``data`` keys of a training configuration."""
    return {"roi_size_vox": list(spec.roi_size_vox), "spacing_mm": list(spec.spacing_mm),
            "image_channels": list(spec.image_channels), "intensity_preset": spec.intensity_preset}


def _check_layout(spec, config: dict, source, stage: str) -> int:
    """The package's ``stage`` inputs must be the layout training builds (names and channels), or
    its beginning (inputs added after them, e.g. ``pet_region``); returns the added channels."""

    def names(layout):
        return [(s.name, s.channels) for s in layout.inputs]

    found, wanted = names(spec.stages[stage]), names(training_stages(config)[stage])
    if found != wanted[: len(found)]:
        raise ValueError(f"{source}: the card's {stage!r} inputs {found} differ from the training "
                         f"layout {wanted}")
    return sum(channels for _, channels in wanted[len(found):])


#: Inputs with one channel per output class (:mod:`InteractiveRefineLib.card`).
PER_CLASS_INPUTS = ("previous_probability", "clicks_positive")


def _input_sources(spec, config: dict, source, stage: str) -> list:
    """For each input channel of the run's ``stage`` layout, the source card's channel it starts
    from: the same input, a single-class source's one channel for every class of a per-class input
    (:data:`PER_CLASS_INPUTS`), or None for an input the source lacks (zero weights); a source
    input the run lacks is dropped. ValueError when an input's channels differ otherwise."""
    found = {s.name: (sl, s.channels) for s, sl in zip(spec.stages[stage].inputs,
                                                     spec.stages[stage].slices().values())}
    wanted = training_stages(config)[stage]

    out = []
    for want in wanted.inputs:
        if want.name not in found:
            out += [None] * want.channels
            continue
        channels, count = found[want.name]
        if count == want.channels:
            out += list(range(channels.start, channels.stop))
        elif count == 1 and want.name in PER_CLASS_INPUTS:
            out += [channels.start] * want.channels
        else:
            raise ValueError(f"{source}: the card's {stage!r} input {want.name!r} has {count} channel(s), "
                             f"the training layout {want.channels}")
    return out


def remap_input_weights(state: dict, network_config: dict, in_channels: int, sources: list) -> dict:
    """``state`` (a network of ``in_channels`` inputs) for the inputs ``sources``: new channel n
    reads with the weights of old channel ``sources[n]`` (None: zero weights) in every convolution
    that reads the network input."""
    from .export import input_conv_names

    state = {k: v.detach().clone() for k, v in state.items()}
    for name in input_conv_names(network_config, in_channels):
        weight = state[f"{name}.weight"]
        zero = torch.zeros_like(weight[:, :1])
        state[f"{name}.weight"] = torch.cat([zero if n is None else weight[:, n:n + 1] for n in sources], 1)
    return state


def widen_input_weights(state: dict, network_config: dict, in_channels: int, added: int) -> dict:
    """``state`` with ``added`` input channels appended (zero weights) to every convolution that
    reads the network input, for a network of ``in_channels`` inputs: it computes what it computed
    before whatever the new channels hold."""
    return remap_input_weights(state, network_config, in_channels - added,
                               list(range(in_channels - added)) + [None] * added)


def _check_classes(found: list, config: dict, source) -> None:
    """The classes (``[(name, label)]``) of the source must be the run's when either has several
    (a single-class source keeps working with ``--label``)."""
    wanted = classes_of(config)
    if (len(found) > 1 or len(wanted) > 1) and list(found) != list(wanted):
        raise ValueError(f"{source}: classes {found} differ from this run's data.classes {wanted}")


def _check_package_matches(spec, config: dict, source) -> None:
    _check_classes([(o.name, o.label) for o in spec.outputs], config, source)
    data = config["data"]
    _check_same(_card_data(spec), data, source,
                ("roi_size_vox", "spacing_mm", "image_channels", "intensity_preset"))
    _check_layout(spec, config, source, "initial")
