"""The trainers: 2S-ICR initial and refinement models, the DeepGrow/DeepEdit baselines and
HN-UISeg's prompt pre-training.

All use the engine's network (``networks.build_network``), click encoding
(``clicks.encode_guidance`` with the card's sigma) and simulated user (``SimulatedUser``).

- ``InitialTrainer``: image -> GTVp (paper 4.3).
- ``RefineTrainer``: (image, previous probability, positive, negative) -> GTVp. The starting
  mask is the frozen initial model's probability on the augmented image; 1-15 clicks
  (uniform) per iteration; a backward pass and optimizer step after every click; mask dropout
  (previous probability replaced by 0.5 with p = 0.2).
- ``DeepEditTrainer``: MONAI DeepEdit's protocol on the same network and input layout: with
  probability ``deepedit_free_prob`` a click-free iteration (all guidance zero), otherwise a seed
  click plus ``baseline_max_interactions`` no-gradient rounds, each adding a click with
  probability 1 - j / max (MONAI ``Interaction``), then one backward pass. DeepGrow/DeepEdit have
  no previous-mask input: that channel is always zero, and the export zeroes its weights so
  the engine's refine stage (which feeds the previous probability there) computes exactly the
  baseline. The click-free model is exported as the package's initial member.
- ``DeepGrowTrainer``: DeepEdit-0 (no click-free iterations), the "deepgrow" user preset.
- ``PromptTrainer`` (``--stage prompt``; HN-UISeg's stage 1, pre-training with prompts): the
  refine layout with the previous probability always zero (as DeepEdit); with probability
  ``interaction.prompt_prob`` (0.5) the click channels hold prompts drawn from the truth
  (:func:`prompt_clicks`: one positive click per 26-connected component of each class, as many
  random negative clicks outside every class's truth), otherwise all zero; one forward/backward
  pass per iteration. It validates as DeepEdit does (automatic Dice at 0 clicks, then the
  simulated user's clicks, ``hnuiseg`` by default). Its run starts ``--stage refine`` (stage 3,
  same layout) and ``--stage initial`` (stage 2: the image channels' weights, so the initial
  network starts computing exactly the prompt network with every prompt zero) via ``--init-weights``.
"""
from __future__ import annotations

import numpy as np
import torch
from InteractiveRefineLib.clicks import encode_guidance
from InteractiveRefineLib.inputs import stack
from InteractiveRefineLib.inputs.pet_region import region_channel
from InteractiveRefineLib.simulated_user import SimulatedUser
from scipy import ndimage

from .checkpoint import load_initial_networks, load_stage_weights, remap_input_weights, widen_input_weights
from .config import training_stages
from .trainer import VALIDATION_STREAM, Trainer

#: 26-connectivity: the truth components of the prompts (as the ``hnuiseg`` user's error components).
COMPONENT_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


#: ``interaction.hot_start``: a PET region is hot at this fraction of the tumour's SUVmax (the
#: one-click floor's 40 %), and counts when it has at least this many working-grid voxels
HOT_START_FRACTION = 0.4
HOT_START_MIN_VOXELS = 27


def drawn_tumour(trainer, start: str, truth: np.ndarray):
    """The GTVp mask when ``trainer``'s sequence draws the start ``interaction.<start>`` (its share
    of the sequences), else None. A share of 0 draws no random number, so configs without the
    start train on the same sequences as before it existed."""
    share = float(trainer.config["interaction"].get(start, 0.0))
    tumour = truth if truth.dtype == bool else truth == 1  # a class map: GTVp
    if share <= 0.0 or not tumour.any() or trainer.rng.random() >= share:
        return None
    return tumour


class Clicks:
    """Clicks of one interaction sequence as working-grid indices ``(k, j, i)``."""

    def __init__(self):
        self.positive: list = []
        self.negative: list = []
        self.labels: list = []  # the class index of each positive click (0: GTVp; one class: all 0)
        self.suv = None  # the sample's PET in SUV, when an input reads it (pet_region)
        self.regions: dict = {}  # the pet_region of each positive click, found once

    def add(self, click) -> None:
        (self.positive if click.positive else self.negative).append(click.index)
        if click.positive:
            self.labels.append(getattr(click, "label", None) or 0)

    def __len__(self) -> int:
        return len(self.positive) + len(self.negative)


class PendingMask:
    """``probability > 0.5`` on its way to the CPU.

    On CUDA the copy goes into pinned memory without blocking and an event marks its end, so a
    backward pass queued after it runs on the GPU while the CPU computes the next click from
    this mask (the simulated user's distance transform is the CPU's part of an interaction).
    """

    def __init__(self, probability: torch.Tensor):
        mask = probability[0, 0] > 0.5 if probability.shape[1] == 1 else class_map(probability[0] > 0.5,
                                                                                    probability[0])
        self.event = None
        if mask.is_cuda:
            self.host = torch.empty(mask.shape, dtype=mask.dtype, pin_memory=True)
            self.host.copy_(mask, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = mask

    def result(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


def class_map(above: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 class map ``[k, j, i]`` of per-class masks ``above`` ``[C, k, j, i]`` (0 background,
    c + 1 for class c: the engine's simulated user's multi-class input); where several classes
    are on, the one with the highest ``scores`` (default: the first)."""
    if scores is None:  # the first class wins
        scores = -torch.arange(above.shape[0], device=above.device, dtype=torch.float32).view(-1, 1, 1, 1)
    ranked = torch.where(above, scores.float().expand(above.shape), torch.tensor(-2.0, device=above.device))
    return torch.where(above.any(0), ranked.argmax(0) + 1, 0).to(torch.uint8)


def truth_of(label: torch.Tensor) -> np.ndarray:
    """The simulated user's truth: bool ``[k, j, i]`` for one class, a class map for C > 1
    (label channels ``[1, C, k, j, i]``, channel c = class c)."""
    if label.shape[1] == 1:
        return label[0, 0].cpu().numpy() > 0.5
    return class_map(label[0] > 0.5).cpu().numpy()


def dice_of(probability: torch.Tensor, label: torch.Tensor) -> float:
    """Dice of ``probability > 0.5`` against a binary label (1.0 when both are empty)."""
    prediction = probability > 0.5
    truth = label > 0.5
    denominator = int(prediction.sum()) + int(truth.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int((prediction & truth).sum()) / denominator


class InitialTrainer(Trainer):
    name = "initial"
    stage = "initial"
    init_from = ("prompt",)

    def init_weights_state(self) -> dict:
        """A prompt run (HN-UISeg stage 1 weights for its stage 2): its weights without the input
        weights of the previous probability and click channels, which the prompt network reads as
        zero when no prompt is given, so this network starts out computing exactly that."""
        if self.init_weights_trainer() != "prompt":
            return super().init_weights_state()
        return prompt_free_state(load_stage_weights(self.init_weights, "prompt", "refine", self.config),
                                 self.config)

    def train_step(self, image, label) -> float:
        with self.autocast():
            logits = self.train_network(image)
        loss = self.loss(logits, label)
        self.optimizer_step(loss)
        return float(loss.detach())

    def validate_case(self, image, label, index) -> dict:
        return {"dice": dice_of(self.probability([self.network], image), label)}


class RefineTrainer(Trainer):
    name = "refine"
    stage = "refine"
    default_user = "2sicr"
    init_from = ("prompt",)  # HN-UISeg: stage 3 starts from the stage 1 weights (same layout)

    @property
    def metric_name(self) -> str:
        return self.config["interaction"]["val_metric"]

    # ---------------------------------------------------------------------------- hooks
    def setup_stage(self) -> None:
        if not self.initial_source:
            raise ValueError("the refine stage needs --initial (initial run folder, checkpoint or package)")
        self.initial_networks = load_initial_networks(self.initial_source, self.config, self.device)
        if self.config["interaction"].get("refine_init", "random") == "initial" and not self.init_weights:
            self.network.load_state_dict(widened_state(self.initial_networks[0], self.config))

    def starting_probability(self, image: torch.Tensor) -> torch.Tensor:
        """Probability at t = 0: the frozen initial model's."""
        return self.probability(self.initial_networks, image)

    def previous_channel(self, probability: torch.Tensor, training: bool) -> torch.Tensor:
        """The previous probability, or 0.5 everywhere with the mask-dropout probability."""
        if training and self.rng.random() < float(self.config["interaction"]["mask_dropout"]):
            return torch.full_like(probability, 0.5)
        return probability

    def train_step(self, image, label) -> float:
        inter = self.config["interaction"]
        truth = truth_of(label)
        user = SimulatedUser(self.user_preset, self.rng)
        # Shared across ranks: every DDP rank runs the same number of backward passes.
        n_clicks = int(self.shared_rng.integers(int(inter["min_clicks"]), int(inter["max_clicks"]) + 1))
        clicks, losses = Clicks(), []
        start = self.threshold_start(image, truth, clicks)
        if start is None:
            start = self.grown_start(truth, image)
        if start is None:
            start = self.hot_start(truth, image)
        if start is None:
            start = self.missed_start(truth, image)
        probability = self.starting_probability(image) if start is None else start
        prediction = PendingMask(probability)
        for _ in range(n_clicks):
            self.add_click(user, clicks, prediction.result(), truth)  # None left: same clicks again
            x = self.refine_input(image, self.previous_channel(probability, True), clicks)
            with self.autocast():
                logits = self.train_network(x)
            probability = torch.sigmoid(logits.detach().float())
            prediction = PendingMask(probability)  # queued before the backward pass: overlaps it
            loss = self.loss(logits, label)
            self.optimizer_step(loss)
            losses.append(loss.detach())
        return float(torch.stack(losses).mean())

    def validation_keys(self) -> list[str]:
        n = int(self.config["interaction"]["val_clicks"])
        return [f"dice_{t}" for t in range(n + 1)] + ["dice_last", "dice_mean"]

    def validate_case(self, image, label, index) -> dict:
        n = int(self.config["interaction"]["val_clicks"])
        seeds = np.random.SeedSequence([int(self.config["seed"]), VALIDATION_STREAM, index])
        user = SimulatedUser(self.user_preset, np.random.default_rng(seeds))
        truth = truth_of(label)
        probability = self.starting_probability(image)
        clicks, dices = Clicks(), [dice_of(probability, label)]
        for _ in range(n):
            self.add_click(user, clicks, PendingMask(probability).result(), truth)
            x = self.refine_input(image, self.previous_channel(probability, False), clicks)
            probability = self.probability([self.network], x)
            dices.append(dice_of(probability, label))
        out = {f"dice_{t}": d for t, d in enumerate(dices)}
        out.update(dice_last=dices[-1], dice_mean=float(np.mean(dices[1:])) if n else dices[0])
        return out

    # -------------------------------------------------------------------------- helpers
    def threshold_start(self, image, truth: np.ndarray, clicks: Clicks):
        """With probability ``interaction.threshold_start``, the sequence starts as the engine's
        ``threshold_start`` session does: a positive click at the tumour's innermost voxel (largest
        distance to the label's border) whose PET region (the ``pet_region`` channel) is the
        previous probability ``[1, 1, k, j, i]``; the click joins ``clicks``. None when not drawn, or
        when the click has no region (a dropped PET, too little uptake): the initial model's start."""
        tumour = drawn_tumour(self, "threshold_start", truth)
        if tumour is None:
            return None
        distance = ndimage.distance_transform_edt(tumour)
        index = tuple(int(v) for v in np.unravel_index(int(np.argmax(distance)), truth.shape))
        spec = next(spec for spec in self.refine_stage.inputs if spec.name == "pet_region")
        clicks.positive.append(index)
        clicks.labels.append(0)  # the threshold region is the first class's (GTVp)
        region = self.pet_region(image, clicks, spec.options)
        if not bool(region.any()):
            clicks.positive.pop()
            clicks.labels.pop()
            return None
        others = self.refine_stage.spec("previous_probability").channels - 1  # GTVn etc.: none yet
        return torch.cat([region.float()] + [torch.zeros_like(region, dtype=torch.float32)] * others, 1)

    def grown_start(self, truth: np.ndarray, image):
        """With probability ``interaction.grown_start``, the sequence starts from the GTVp grown by
        a ball of a random radius in ``interaction.grown_start_vox`` (voxels): an initial mask too
        large around the tumour, whose first simulated click is a negative one on the excess.
        Returns the previous probability ``[1, C, k, j, i]`` (other classes empty), or None."""
        tumour = drawn_tumour(self, "grown_start", truth)
        if tumour is None:
            return None
        low, high = (int(v) for v in self.config["interaction"].get("grown_start_vox", [2, 6]))
        radius = int(self.rng.integers(low, high + 1))
        steps = np.arange(-radius, radius + 1) ** 2
        ball = steps[:, None, None] + steps[None, :, None] + steps[None, None, :] <= radius ** 2
        return self.mask_start(ndimage.binary_dilation(tumour, structure=ball), image)

    def mask_start(self, mask: np.ndarray, image):
        """The previous probability ``[1, C, k, j, i]`` of a start that marks ``mask`` as the
        first class (GTVp) and nothing as the others (GTVn etc.)."""
        others = self.refine_stage.spec("previous_probability").channels - 1
        region = torch.from_numpy(mask[None, None].astype(np.float32)).to(image.device)
        return torch.cat([region] + [torch.zeros_like(region)] * others, 1)

    def hot_start(self, truth: np.ndarray, image):
        """With probability ``interaction.hot_start``, the sequence starts from the GTVp plus every
        separate hot region of the PET (SUV at least 40 % of the tumour's SUVmax, at least 27
        voxels, not touching the tumour grown by 2 voxels): the tumour found, hot glands or brain
        marked with it, as at an automatically placed ROI. The first simulated click is then a
        negative one on a hot region that the refinement should remove whole. Returns
        ``[1, C, k, j, i]`` (other classes empty), or None when not drawn or nothing is hot."""
        tumour = drawn_tumour(self, "hot_start", truth)
        if tumour is None:
            return None
        channels = self.config["data"]["image_channels"]
        if "pet" not in channels:
            return None
        offset, scale = self.pet_to_suv
        suv = image[0, channels.index("pet")].float().cpu().numpy() * np.float32(scale) + np.float32(offset)
        labels, _ = ndimage.label(suv >= HOT_START_FRACTION * float(suv[tumour].max()), COMPONENT_STRUCTURE)
        touching = np.unique(labels[ndimage.binary_dilation(tumour, COMPONENT_STRUCTURE, 2)])
        sizes = np.bincount(labels.ravel())
        keep = sizes >= HOT_START_MIN_VOXELS
        keep[0] = False
        keep[touching] = False
        if not keep.any():
            return None
        return self.mask_start(tumour | keep[labels], image)

    def missed_start(self, truth: np.ndarray, image):
        """With probability ``interaction.missed_start``, the sequence starts from the initial
        model's probability with the GTVp (grown by ``interaction.missed_start_margin_vox``)
        erased: what a user sees when the ROI is placed automatically and the model marks other
        hot tissue but misses the tumour, whose first simulated click is then usually a positive
        one on a tumour the previous mask does not hold. Returns ``[1, C, k, j, i]``, or None."""
        tumour = drawn_tumour(self, "missed_start", truth)
        if tumour is None:
            return None
        margin = int(self.config["interaction"].get("missed_start_margin_vox", 2))
        erased = ndimage.binary_dilation(tumour, COMPONENT_STRUCTURE, margin) if margin else tumour
        probability = self.starting_probability(image).clone()
        keep = torch.from_numpy(~erased).to(probability.device)
        probability[:, 0] *= keep  # the GTVp channel; other classes keep the model's masks
        return probability

    def add_click(self, user, clicks: Clicks, prediction: np.ndarray, truth: np.ndarray):
        """The simulated user's next click on a boolean prediction (None when no error is left)."""
        click = user.next_click(prediction, truth)
        if click is not None:
            clicks.add(click)
        return click

    def refine_input(self, image, previous, clicks: Clicks) -> torch.Tensor:
        """The refine stage's input ``[1, C, k, j, i]`` in the card's channel order (the engine's
        :func:`~InteractiveRefineLib.inputs.stack`): image channels, previous probability,
        positive and negative guidance."""
        inter = self.config["interaction"]
        guidance = encode_guidance(image.shape[2:], clicks.positive, clicks.negative,
                                   sigma=float(inter["sigma_vox"]), truncate=float(inter["truncate"]))
        stage = self.refine_stage
        n_classes = stage.spec("clicks_positive").channels
        if n_classes > 1:  # one positive channel per class (the engine's multi-class layout)
            per_class = [encode_guidance(image.shape[2:], [p for p, c in zip(clicks.positive, clicks.labels)
                                                           if c == k], [], sigma=float(inter["sigma_vox"]),
                                         truncate=float(inter["truncate"]))[0] for k in range(n_classes)]
            guidance = np.concatenate([np.stack(per_class), guidance[1:2]])
        guidance = torch.from_numpy(guidance[None]).to(image.device, non_blocking=True)
        names = self.config["data"]["image_channels"]
        named = {name: image[:, i:i + 1] for i, name in enumerate(names)}
        named.update(previous_probability=previous.to(image.dtype), clicks_positive=guidance[:, :n_classes],
                     clicks_negative=guidance[:, n_classes:])
        if stage.has("pet_region"):
            spec = next(spec for spec in stage.inputs if spec.name == "pet_region")
            named["pet_region"] = self.pet_region(image, clicks, spec.options)
        return stack(stage, named)

    @property
    def refine_stage(self):
        """The refine stage's inputs (:func:`~.config.training_stages`), parsed once per run."""
        if getattr(self, "_refine_stage", None) is None:
            self._refine_stage = training_stages(self.config)["refine"]
        return self._refine_stage

    def pet_region(self, image, clicks: Clicks, options) -> torch.Tensor:
        """The engine's ``pet_region`` channel ``[1, 1, k, j, i]`` of the positive clicks, from the
        sample's (augmented) PET channel mapped back to SUV."""
        if clicks.suv is None:
            pet = image[0, self.config["data"]["image_channels"].index("pet")].float().cpu().numpy()
            offset, scale = self.pet_to_suv
            # A dropped PET (data.pet_dropout: all zeros) has no region, as the engine without PET.
            clicks.suv = pet * np.float32(scale) + np.float32(offset) if pet.any() else np.zeros_like(pet)
        spacing = [float(v) for v in self.config["data"]["spacing_mm"][::-1]]
        channel = region_channel(clicks.suv, clicks.positive, spacing, options, clicks.regions)
        return torch.from_numpy(channel[None, None]).to(image.device, image.dtype, non_blocking=True)


class DeepEditTrainer(RefineTrainer):
    name = "deepedit"
    default_user = "deepedit"

    @property
    def free_prob(self) -> float:
        return float(self.config["interaction"]["deepedit_free_prob"])

    def setup_stage(self) -> None:
        """A single interactive model: no initial model is loaded."""

    def starting_probability(self, image):
        """t = 0: the model itself with all guidance zero (click-free)."""
        channels = self.refine_stage.spec("previous_probability").channels  # one per class
        zeros = image.new_zeros((image.shape[0], channels) + tuple(image.shape[2:]))
        return self.probability([self.network], self.refine_input(image, zeros, Clicks()))

    def previous_channel(self, probability, training):
        """DeepGrow/DeepEdit take no previous mask: the channel is always zero."""
        return torch.zeros_like(probability)

    def train_step(self, image, label) -> float:
        x, _ = self.training_input(image, label)
        self.network.train()
        with self.autocast():
            logits = self.train_network(x)
        loss = self.loss(logits, label)
        self.optimizer_step(loss)
        return float(loss.detach())

    def training_input(self, image, label) -> tuple[torch.Tensor, Clicks]:
        """An iteration's network input and its clicks: click-free with probability
        :attr:`free_prob`, else the clicks of :meth:`simulate_interactions`; no previous mask."""
        clicks = Clicks()
        if self.rng.random() >= self.free_prob:
            self.simulate_interactions(image, label, clicks)
        return self.refine_input(image, torch.zeros_like(label), clicks), clicks

    def simulate_interactions(self, image, label, clicks: Clicks) -> None:
        """MONAI's Interaction: seed click, then rounds adding a click with p = 1 - j / max."""
        rounds = int(self.config["interaction"]["baseline_max_interactions"])
        truth = label[0, 0].cpu().numpy() > 0.5
        user = SimulatedUser(self.user_preset, self.rng)
        zeros = torch.zeros_like(label)
        self.add_click(user, clicks, np.zeros_like(truth), truth)  # the seed: from an empty prediction
        self.network.eval()
        for j in range(rounds):
            probability = self.probability([self.network], self.refine_input(image, zeros, clicks))
            if self.rng.random() < 1.0 - j / rounds:
                self.add_click(user, clicks, PendingMask(probability).result(), truth)


class DeepGrowTrainer(DeepEditTrainer):
    name = "deepgrow"
    default_user = "deepgrow"

    @property
    def free_prob(self) -> float:
        return 0.0


class PromptTrainer(DeepEditTrainer):
    """HN-UISeg's stage 1: prompts drawn from the truth with probability ``prompt_prob``."""

    name = "prompt"
    default_user = "hnuiseg"  # validation's clicks (HN-UISeg's per-class, per-component user)

    @property
    def free_prob(self) -> float:
        return 1.0 - float(self.config["interaction"].get("prompt_prob", 0.5))

    def simulate_interactions(self, image, label, clicks: Clicks) -> None:
        prompt_clicks(label, self.rng, self.config["interaction"].get("prompt_click", "random"), clicks)


def prompt_clicks(label: torch.Tensor, rng: np.random.Generator, placement: str = "random",
                  clicks: Clicks | None = None) -> Clicks:
    """HN-UISeg's stage 1 prompts of a training label ``[1, C, k, j, i]`` (channel c = class c):
    for each class, one positive click (class c) per 26-connected component of its truth, at a
    uniformly drawn voxel of the component (``placement="random"``) or its innermost one
    (``"innermost"``: largest Euclidean distance to its border, the first in C order on a tie),
    and as many negative clicks at uniformly drawn voxels outside the truth of *every* class (the
    layout has one negative channel for all classes, so a negative click never lies on another
    class's truth either; distinct voxels per class unless there are too few). Added to
    ``clicks`` (a new :class:`Clicks` when None), which is returned."""
    clicks = Clicks() if clicks is None else clicks
    truth = label[0].cpu().numpy() > 0.5
    outside = np.flatnonzero(~truth.any(0))
    for c, mask in enumerate(truth):
        components, count = ndimage.label(mask, structure=COMPONENT_STRUCTURE)
        for number, box in enumerate(ndimage.find_objects(components), 1):
            inside = components[box] == number
            if placement == "innermost":
                distance = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1, 1:-1]
                local = np.unravel_index(int(np.argmax(distance)), inside.shape)
            else:
                voxels = np.flatnonzero(inside)
                local = np.unravel_index(int(voxels[rng.integers(voxels.size)]), inside.shape)
            clicks.positive.append(tuple(int(v + s.start) for v, s in zip(local, box)))
            clicks.labels.append(c)
        if count and outside.size:
            picks = rng.choice(outside.size, size=count, replace=count > outside.size)
            clicks.negative += [tuple(int(v) for v in np.unravel_index(int(outside[p]), mask.shape))
                                for p in picks]
    return clicks


def prompt_free_state(state: dict, config: dict) -> dict:
    """A refine-layout ``state`` (a prompt run's) as initial-layout weights: only the input
    weights of the image channels are kept; the initial network then computes what the refine
    network computes with the previous probability and every click channel zero."""
    stages = training_stages(config)
    slices = stages["refine"].slices()
    kept = [c for spec in stages["initial"].inputs
            for c in range(slices[spec.name].start, slices[spec.name].stop)]
    return remap_input_weights(state, config["network"], stages["refine"].in_channels, kept)


def widened_state(initial_network, config: dict) -> dict:
    """The initial network's weights in the refine layout: the input weights of the previous
    probability and the two guidance channels start at zero, so the refine network starts out
    computing exactly the initial model (``interaction.refine_init = "initial"``)."""
    from InteractiveRefineLib.networks import unwrapped

    if unwrapped(initial_network) is not initial_network:
        raise ValueError("interaction.refine_init 'initial' copies the first initial member, a network of "
                         "more classes than this run's: start from --init-weights or refine_init 'random'")
    stages = training_stages(config)
    added = stages["refine"].in_channels - stages["initial"].in_channels
    return widen_input_weights(initial_network.state_dict(), config["network"], stages["refine"].in_channels,
                               added)


TRAINERS = {cls.name: cls for cls in (InitialTrainer, RefineTrainer, DeepEditTrainer, DeepGrowTrainer,
                                      PromptTrainer)}
