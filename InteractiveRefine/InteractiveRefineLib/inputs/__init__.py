"""Network inputs by name: one builder per input a model card declares.

A card lists each stage's inputs in channel order (``ct``, ``pet``, ``previous_probability``,
``clicks_positive``, ``clicks_negative``; :mod:`..card`). :func:`assemble` fills them, in that
order, on a box of the working grid, so a new method adds an input by registering a builder
(:func:`register`) and naming it in its card, without touching the session.

A builder is a class with

- ``static``: its channels depend on the image only (filled once into a persistent input);
- ``local``: they change only near the newest interaction (a window can be refined alone);
- ``fill(out, spec, ctx, box)``: write its channels ``out`` (a ``[channels, *box]`` tensor view,
  on the backend's device) for ``box`` from the :class:`InputContext`.
"""
from __future__ import annotations

from dataclasses import dataclass

BUILDERS: dict = {}


def register(name: str):
    """Class decorator: the builder of the card input ``name``."""

    def decorate(cls):
        BUILDERS[name] = cls()
        return cls

    return decorate


def builder(name: str):
    from ..errors import ModelPackageError

    try:
        return BUILDERS[name]
    except KeyError:
        raise ModelPackageError(
            f"the model card asks for an input {name!r} that this version does not know; "
            f"known inputs: {sorted(BUILDERS)}"
        ) from None


@dataclass(frozen=True)
class InputContext:
    """What the builders read: the cached image (:class:`.image.ImageCache`), the state's
    probability (float16 numpy ``[k, j, i]``; ``[C, k, j, i]`` for C > 1 output classes) and the
    clicks (working-grid indices, signs); ``device_probability``: the same probability as a
    tensor on the backend's device, when the backend keeps one (the device-resident click path),
    else None. ``labels``: per click, its class index 0..C-1 (:mod:`..classes`; empty: every
    click is class 0; a negative click's index is not used)."""

    image: object
    probability: object
    indices: tuple
    positives: tuple
    device_probability: object = None
    labels: tuple = ()


def assemble(stage, ctx: InputContext, box, out=None, *, static: bool = True):
    """The network input ``[1, C, *box]`` of ``stage`` (a card :class:`~..card.StageSpec`), in
    card order, on the image's device. ``out``: a tensor to fill instead of a new one;
    ``static=False``: leave its static channels as an earlier call filled them (a persistent
    whole-ROI input)."""
    import torch

    if out is None:
        shape = tuple(s.stop - s.start for s in box)
        out = torch.zeros((1, stage.in_channels) + shape, dtype=torch.float32, device=ctx.image.tensor.device)
    for spec, channels in zip(stage.inputs, stage.slices().values()):
        build = builder(spec.name)
        if static or not build.static:
            build.fill(out[0, channels], spec, ctx, box)
    return out


def stack(stage, named: dict):
    """Concatenate already built tensors ``[B, channels, ...]`` (keyed by input name) along the
    channel axis in the card's order: the training package's batches."""
    import torch

    return torch.cat([named[spec.name] for spec in stage.inputs], dim=1)


from . import image, interaction, pet_region  # noqa: E402,F401  (registers the builders)
