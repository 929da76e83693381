"""The training loop, structured like nnU-Net's trainer.

``run_training()`` reads like pseudocode; a variant (``variants.py``) overrides a hook or two:
``setup_stage`` (extra models), ``train_step`` (one iteration on one augmented sample) and
``validate_case`` (metrics of one validation case). Everything else, data, augmentation, AMP,
DDP, checkpoints, the wall-clock budget, early stopping and logs, lives here once.

Randomness (all derived from ``config["seed"]`` and recorded in every checkpoint):
network initialisation ``torch.manual_seed(seed)``; per epoch, the sampler order
(``DistributedSampler(seed=seed)``), the augmentation's random state and the numpy
``Generator`` of the simulated user and mask dropout come from ``SeedSequence([seed, epoch,
rank])``; the number of clicks of an iteration comes from ``SeedSequence([seed, epoch])``,
identical on every rank so DDP ranks run the same number of backward passes. Validation clicks
use ``SeedSequence([seed, VALIDATION_STREAM, case_index])``: the same clicks every epoch.
Whether a sample's PET is dropped (``data.pet_dropout``) comes from ``SeedSequence([its
augmentation seed, PET_DROPOUT_STREAM])``; with pet_dropout 0 nothing is drawn.
Re-seeding per epoch makes a resumed run continue exactly like an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from InteractiveRefineLib.backend import member_mean
from InteractiveRefineLib.networks import build_network

from . import distributed
from .augment import augment, build_augmentation
from .checkpoint import BEST, LATEST, load_checkpoint, save_checkpoint
from .config import (
    RESUMABLE_SECTIONS,
    classes_of,
    label_values,
    n_classes,
    preprocessing_settings,
    training_stages,
)
from .data import CachedDataset, build_cache, load_cases, split

logger = logging.getLogger("interactive_refine_training")

VALIDATION_STREAM = 104729
PET_DROPOUT_STREAM = 7919


class _EpochIndices(torch.utils.data.Sampler):
    """The current epoch's ``(case index, augmentation seed)`` keys, set by the trainer (works with
    persistent workers)."""

    def __init__(self):
        self.indices: list[tuple[int, int]] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SigmoidDiceBCELoss(torch.nn.Module):
    """Soft Dice (MONAI ``DiceLoss(sigmoid=True)``: per class, averaged over the classes, as
    HN-UISeg's eq. 2) plus the binary cross-entropy of every class channel and voxel (its eq. 1
    for independent sigmoids), uniform weights, smoothing 1e-5. Logits and target
    ``[B, C, k, j, i]``; on one channel it equals ``DiceCELoss(sigmoid=True)`` (tested)."""

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth)
        self.bce = torch.nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        return self.dice(logits, target) + self.bce(logits, target.to(logits.dtype))


def _init_worker(worker_id: int) -> None:
    """DataLoader worker start: one thread each, plain tensors through the MONAI transforms."""
    from monai.data import set_track_meta

    torch.set_num_threads(1)
    set_track_meta(False)


class Trainer:
    """Base trainer. Subclasses set ``name``, ``stage`` and override the hooks."""

    name = "base"
    stage = "initial"  # network input layout: "initial" (image) or "refine" (+ prev, pos, neg)
    default_user = "2sicr"
    metric_name = "dice"

    def __init__(self, config: dict, data, out_dir, fold: int = 0, initial=None, resume: bool = False,
                 ctx: distributed.DistContext | None = None, init_weights=None):
        self.out_dir = Path(out_dir)
        self.data_source = str(data)
        self.fold = int(fold)
        self.initial_source = initial
        self.pet_to_suv = (0.0, 1.0)  # the current sample's PET channel -> SUV (offset, scale)
        #: a run folder, checkpoint or model package whose network of this stage is the start
        #: (fine-tuning a trained model, e.g. the shipped one, on new data or for longer)
        self.init_weights = init_weights
        self.resume = resume
        self.config = self._resumed_config(config) if resume else config
        self.ctx = ctx or distributed.setup(self.config["runtime"]["device"])
        self.device = self.ctx.device
        self.epoch = 0
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict] = []
        self.stop_reason: str | None = None
        self._time_up = False
        self._seconds_per_iteration: float | None = None
        self._validation_seconds: float | None = None
        self._elapsed_before = 0.0

    # ============================================================ the loop (reads like pseudocode)
    def run_training(self) -> dict:
        self.on_train_start()
        while not self.should_stop():
            self.on_epoch_start()
            train_log = self.train_epoch()
            val_log = self.validate()
            self.on_epoch_end(train_log, val_log)
        self.on_train_end()
        return self.summary()

    # ================================================================================ hooks
    def setup_stage(self) -> None:
        """Extra models a stage needs (the refine stage loads its initial model here); may set
        ``self.network``'s starting weights (a resumed run overwrites them afterwards)."""

    def train_step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        """One iteration on one augmented sample ``[1, C, k, j, i]``; returns the loss."""
        raise NotImplementedError

    def validate_case(self, image: torch.Tensor, label: torch.Tensor, index: int) -> dict:
        """Metrics (floats, fixed keys) of one validation case."""
        raise NotImplementedError

    def validation_keys(self) -> list[str]:
        return ["dice"]

    #: Trainers besides this one whose runs ``--init-weights`` may name (e.g. the refine stage
    #: starts from a prompt run: HN-UISeg's stage 1 weights for its stage 3).
    init_from: tuple[str, ...] = ()

    def init_weights_state(self) -> dict:
        """The ``state_dict`` ``--init-weights`` starts this stage's network from."""
        from .checkpoint import load_stage_weights

        return load_stage_weights(self.init_weights, self.init_weights_trainer(), self.stage, self.config)

    def init_weights_trainer(self) -> str:
        """The trainer an ``--init-weights`` run must be of: this one, or the source run's own when
        it is one of :attr:`init_from` (a model package: this one's name, unused)."""
        from InteractiveRefineLib.card import CARD_NAME

        from .checkpoint import load_run

        source = Path(self.init_weights)
        if self.init_from and not (source / CARD_NAME).is_file():
            found = load_run(source).trainer
            if found in self.init_from:
                return found
        return self.name

    # ========================================================================== start / end
    def on_train_start(self) -> None:
        self._configure_runtime()
        self.train_paths, self.val_paths = self.prepare_data()
        torch.manual_seed(int(self.config["seed"]))
        self.network = self.build_network().to(self.device)
        self.setup_stage()  # before DDP wraps the network: a stage may initialise its weights
        if self.init_weights:  # a resumed run overwrites them afterwards
            self.network.load_state_dict(self.init_weights_state())
        self.train_network = self._wrap_ddp(self.network)
        self.optimizer, self.scheduler = self.build_optimizer()
        scale = self.amp and self.amp_dtype == torch.float16  # bfloat16 needs no loss scaling
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scale)
        self.loss_fn = self.build_loss()
        self.loader = self.build_loader()
        if self.resume:
            self.load_state(self.out_dir / LATEST)
        self.start_time = time.perf_counter()
        self.epochs_this_session = 0
        self._start_logging()

    def on_train_end(self) -> None:
        summary = self.summary()
        if self.ctx.is_main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            if self.writer is not None:
                self.writer.close()
        logger.info("%s training ended (%s) after %d epoch(s): best %s %.4f at epoch %d",
                    self.name, self.stop_reason, self.epoch, self.metric_name, self.best_metric,
                    self.best_epoch)
        self._stop_logging()

    def should_stop(self) -> bool:
        opt = self.config["optimization"]
        stop_after = self.config["runtime"].get("stop_after_epochs")
        if self.epoch >= int(opt["max_epochs"]):
            self.stop_reason = "max_epochs"
        elif self.bad_epochs >= int(opt["patience"]):
            self.stop_reason = "early_stopping"
        elif self._time_up or self._time_is_up(next_epoch=True):
            self.stop_reason = "time_budget"
        elif stop_after is not None and self.epochs_this_session >= int(stop_after):
            self.stop_reason = "stop_after_epochs"
        return self.stop_reason is not None

    # ================================================================================ epochs
    def on_epoch_start(self) -> None:
        seed, epoch, rank = int(self.config["seed"]), self.epoch, self.ctx.rank
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, rank]))
        self.shared_rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
        indices = self.epoch_indices(epoch)
        seeds = self.rng.integers(2**31 - 1, size=len(indices))
        self.sampler.indices = [(int(i), int(s)) for i, s in zip(indices, seeds)]
        self.network.train()

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's sample order: DistributedSampler passes, capped at iterations_per_epoch."""
        cap = self.config["optimization"].get("iterations_per_epoch")
        sampler = torch.utils.data.DistributedSampler(
            range(len(self.train_paths)), num_replicas=self.ctx.world_size, rank=self.ctx.rank,
            shuffle=True, seed=int(self.config["seed"]),
        )
        indices: list[int] = []
        passes = 0
        while passes == 0 or (cap is not None and len(indices) < int(cap)):
            sampler.set_epoch(epoch * 100_003 + passes)
            indices += list(sampler)
            passes += 1
        return indices[: int(cap)] if cap is not None else indices

    def train_epoch(self) -> dict:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        losses = []
        bar = tqdm(self.loader, desc=f"{self.name} epoch {self.epoch}", disable=not self._show_progress,
                   leave=False, dynamic_ncols=True)
        for batch in bar:
            t_iter = time.perf_counter()
            image = batch["image"][0].to(self.device, non_blocking=True).float()
            label = batch["label"][0].to(self.device, non_blocking=True)
            if self.augmentation is not None:  # on the device (else done in the loader, or none)
                self.augmentation.set_random_state(seed=int(batch["seed"][0]))
                image, label = augment(self.augmentation, image, label)
            image = self.drop_pet(image, int(batch["seed"][0]))
            self.pet_to_suv = tuple(float(v) for v in batch["pet_to_suv"][0])
            losses.append(self.train_step(image[None], label[None]))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            self._note_iteration(time.perf_counter() - t_iter)
            if self._time_is_up():
                self._time_up = True
                break
        loss = distributed.sum_across(self.ctx, [float(np.sum(losses)), float(len(losses))])
        out = {"train_loss": loss[0] / max(loss[1], 1.0), "iterations": len(losses),
               "train_seconds": time.perf_counter() - t0}
        if self.device.type == "cuda":
            out["max_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return out

    def drop_pet(self, image: torch.Tensor, sample_seed: int) -> torch.Tensor:
        """``image`` ``[C, k, j, i]`` with its PET channel zeroed with probability
        ``data.pet_dropout`` (HN-UISeg's zero-filled PET of CT-only cases); training samples only.

        The draw comes from ``SeedSequence([sample seed, PET_DROPOUT_STREAM])``, so it does not
        depend on where the sample was augmented, and pet_dropout 0 draws nothing (same run)."""
        data = self.config["data"]
        probability = float(data.get("pet_dropout", 0.0))
        if probability <= 0.0:
            return image
        draw = np.random.default_rng(np.random.SeedSequence([sample_seed, PET_DROPOUT_STREAM])).random()
        if draw >= probability:
            return image
        image = image.clone()
        image[list(data["image_channels"]).index("pet")] = 0.0
        return image

    def validate(self) -> dict:
        every = int(self.config["runtime"].get("val_every", 1))
        last = self.epoch + 1 >= int(self.config["optimization"]["max_epochs"])
        if (self.epoch + 1) % every and not (last or self._time_up):
            return {}
        t0 = time.perf_counter()
        self.network.eval()
        keys = self.validation_keys()
        totals = [0.0] * (len(keys) + 1)
        limit = self.config["runtime"].get("max_val_cases")
        paths = self.val_paths[: int(limit)] if limit else self.val_paths
        dataset = CachedDataset(paths, label_values(self.config))
        with torch.no_grad():
            for index in range(self.ctx.rank, len(dataset), self.ctx.world_size):
                item = dataset[index]
                image = torch.from_numpy(item["image"]).to(self.device).float()[None]
                label = torch.from_numpy(item["label"]).to(self.device)[None]
                self.pet_to_suv = tuple(float(v) for v in item["pet_to_suv"])
                values = self.validate_case(image, label, index)
                totals = [t + v for t, v in zip(totals, [values[k] for k in keys] + [1.0])]
        totals = distributed.sum_across(self.ctx, totals)
        self._validation_seconds = time.perf_counter() - t0
        out = {f"val_{k}": totals[i] / max(totals[-1], 1.0) for i, k in enumerate(keys)}
        out["val_seconds"] = self._validation_seconds
        return out

    def on_epoch_end(self, train_log: dict, val_log: dict) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        record = {"epoch": self.epoch, "lr": lr, **train_log, **val_log}
        improved = False
        if val_log:
            value = val_log[f"val_{self.metric_name}"]
            improved = value > self.best_metric
            if improved:
                self.best_metric, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            else:
                self.bad_epochs += 1
        self.history.append(record)
        self.epoch += 1
        self.epochs_this_session += 1
        if self.ctx.is_main:
            self._write_epoch(record, improved)

    # ======================================================================= construction
    def prepare_data(self) -> tuple[list, list]:
        data = self.config["data"]
        cases = load_cases(self.data_source)
        train_ids, val_ids = split([c.case_id for c in cases], self.fold, int(data["n_folds"]),
                                   int(data["split_seed"]), data.get("patient_id_regex"))
        self.train_ids, self.val_ids = train_ids, val_ids
        settings = preprocessing_settings(self.config)
        cache_dir = self.config["runtime"].get("cache_dir")
        workers = int(self.config["runtime"]["workers"])
        by_id = {c.case_id: c for c in cases}
        ordered = [by_id[i] for i in train_ids + val_ids]
        if self.ctx.local_rank == 0:
            paths = build_cache(ordered, settings, cache_dir, workers)
        distributed.barrier(self.ctx)
        if self.ctx.local_rank != 0:
            paths = build_cache(ordered, settings, cache_dir, 1)  # finds every file current
        return paths[: len(train_ids)], paths[len(train_ids):]

    def build_network(self):
        """The engine's network for this stage's inputs, one output channel per class."""
        in_channels = training_stages(self.config)[self.stage].in_channels
        return build_network(self.config["network"], in_channels, out_channels=n_classes(self.config))

    def build_optimizer(self):
        opt = self.config["optimization"]
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=float(opt["lr"]),
                                      weight_decay=float(opt["weight_decay"]))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=int(opt["max_epochs"]), eta_min=0.0
        )
        return optimizer, scheduler

    def build_loss(self):
        """Dice + BCE with one sigmoid per class (the paper's equations 1-3: uniform weights,
        smoothing 1e-5). One class: MONAI's ``DiceCELoss(sigmoid=True)``, as always. Several:
        :class:`SigmoidDiceBCELoss`, because ``DiceCELoss`` with more than one channel switches
        its CE term to a softmax cross-entropy across the channels, which is wrong for
        independent sigmoids (a background voxel, all targets 0, would add no CE at all)."""
        from monai.losses import DiceCELoss

        if n_classes(self.config) > 1:
            return SigmoidDiceBCELoss()
        return DiceCELoss(sigmoid=True, lambda_dice=1.0, lambda_ce=1.0, smooth_nr=1e-5, smooth_dr=1e-5)

    def build_loader(self):
        """The training loader; the augmentation runs in its workers or on the training device.

        ``runtime.augment_on``: ``"workers"`` warps on the CPU in the loader processes, in
        parallel with the GPU's work (on the device a warp costs about as much as a
        forward-backward pass; ``benchmarks/README.md`` has the figures); ``"device"`` warps on
        the training device in the main process; ``"auto"`` is "workers" on CUDA with workers > 0,
        else "device".
        """
        runtime, data = self.config["runtime"], self.config["data"]
        workers = int(runtime["workers"])
        where = runtime.get("augment_on", "auto")
        if where == "auto":
            where = "workers" if self.device.type == "cuda" and workers > 0 else "device"
        device = self.device if where == "device" else torch.device("cpu")
        transform = build_augmentation(self.config, data["image_channels"], data["roi_size_vox"], device)
        self.augmentation = transform if where == "device" else None
        self.sampler = _EpochIndices()
        dataset = CachedDataset(self.train_paths, label_values(self.config),
                                transform=transform if where == "workers" else None)
        cuda = self.device.type == "cuda"
        return torch.utils.data.DataLoader(
            dataset, batch_size=1, sampler=self.sampler, num_workers=workers, pin_memory=cuda,
            persistent_workers=workers > 0, worker_init_fn=_init_worker if workers > 0 else None,
            # Forked children of a CUDA (and OpenMP) parent may hang at exit: an H100 run spent
            # 42 s after its last epoch, 8 workers x the 5 s join timeout. Spawned ones start clean.
            multiprocessing_context="spawn" if cuda and workers > 0 else None,
            generator=torch.Generator().manual_seed(int(self.config["seed"])),
        )

    def _wrap_ddp(self, network):
        if not self.ctx.distributed:
            return network
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids)

    def _configure_runtime(self) -> None:
        from monai.data import set_track_meta

        runtime = self.config["runtime"]
        set_track_meta(False)  # plain tensors through the transforms: less overhead per call
        if runtime.get("threads"):
            torch.set_num_threads(int(runtime["threads"]))
        amp = runtime.get("amp", "auto")
        self.amp = (self.device.type == "cuda") if amp == "auto" else bool(amp)
        self.amp_dtype = torch.bfloat16 if runtime.get("amp_dtype") == "bfloat16" else torch.float16
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(runtime.get("cudnn_benchmark", True))
        self.user_preset = self.config["interaction"].get("simulated_user") or self.default_user
        self._show_progress = (self.ctx.is_main and bool(runtime.get("progress", True))
                               and sys.stderr.isatty())

    # ============================================================================== helpers
    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward pass and optimizer step (gradient scaling under float16 AMP)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits.float(), label)

    def probability(self, networks, x: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid probability of ``networks`` on ``x`` (no gradient), float32."""
        with torch.no_grad(), self.autocast():
            return member_mean(networks, lambda net: net(x))

    # ========================================================================= time budget
    def _note_iteration(self, seconds: float) -> None:
        """Running estimate of an iteration's duration; the first one of an invocation (cuDNN
        autotuning, loader start: many times a later one) is left out."""
        self._iterations_timed = getattr(self, "_iterations_timed", 0) + 1
        if self._iterations_timed == 1:
            return
        previous = self._seconds_per_iteration
        self._seconds_per_iteration = seconds if previous is None else 0.9 * previous + 0.1 * seconds

    def _time_is_up(self, next_epoch: bool = False) -> bool:
        """True on every rank when the budget leaves no room for another iteration + validation."""
        budget = self.config["runtime"].get("max_minutes")
        if budget is None:
            return False
        per_iteration = self._seconds_per_iteration or 0.0
        n_val = math.ceil(len(self.val_paths) / self.ctx.world_size)
        if self.config["runtime"].get("max_val_cases"):
            n_val = min(n_val, int(self.config["runtime"]["max_val_cases"]))
        validation = self._validation_seconds
        if validation is None:  # not measured yet: about one training iteration per case
            validation = n_val * per_iteration
        reserve = validation + 5.0 + (per_iteration if next_epoch else 0.0)
        elapsed = time.perf_counter() - self.start_time
        return distributed.any_across(self.ctx, elapsed + reserve > 60.0 * float(budget))

    # ======================================================================== checkpoints
    def state(self) -> dict:
        """Everything a resume needs, as plain containers (loads with weights_only=True)."""
        return {
            "trainer": self.name,
            "config": self.config,
            "fold": self.fold,
            "epoch": self.epoch,  # epochs completed
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "elapsed_seconds": self._elapsed_before + time.perf_counter() - self.start_time,
            "rng": {"torch": torch.get_rng_state(), "seed_scheme": "SeedSequence([seed, epoch, rank])"},
            "data": {"source": self.data_source, "train_ids": self.train_ids, "val_ids": self.val_ids},
        }

    def load_state(self, path: Path) -> None:
        checkpoint = load_checkpoint(path)
        self.network.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = int(checkpoint["epoch"])
        self.best_metric = float(checkpoint["best_metric"])
        self.best_epoch = int(checkpoint["best_epoch"])
        self.bad_epochs = int(checkpoint["bad_epochs"])
        self.history = list(checkpoint["history"])
        self._elapsed_before = float(checkpoint.get("elapsed_seconds", 0.0))
        torch.set_rng_state(checkpoint["rng"]["torch"])
        logger.info("resumed %s from %s at epoch %d", self.name, path, self.epoch)

    def _resumed_config(self, config: dict) -> dict:
        """The checkpoint's configuration with this invocation's runtime settings."""
        checkpoint = load_checkpoint(self.out_dir / LATEST)
        if checkpoint["trainer"] != self.name:
            raise ValueError(f"{self.out_dir} holds a {checkpoint['trainer']!r} run, not {self.name!r}")
        resumed = dict(checkpoint["config"])
        for section in RESUMABLE_SECTIONS:
            resumed[section] = config[section]
        changed = [k for k in config if k not in RESUMABLE_SECTIONS and config[k] != resumed.get(k)]
        if changed:
            logger.warning("resume keeps the checkpoint's settings for %s", changed)
        return resumed

    # ============================================================================= logging
    def _start_logging(self) -> None:
        self.writer = None
        self._log_handler = None
        if not self.ctx.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(self.out_dir / "training.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(self._log_handler)
        (self.out_dir / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        splits = {"fold": self.fold, "train": self.train_ids, "val": self.val_ids}
        (self.out_dir / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")
        if self.config["runtime"].get("tensorboard", True):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                logger.warning("tensorboard is not installed; no TensorBoard logs")
        logger.info("%s training: %d train / %d val cases, device %s x%d, AMP %s, user %s",
                    self.name, len(self.train_paths), len(self.val_paths), self.device,
                    self.ctx.world_size, self.amp, self.user_preset)

    def _stop_logging(self) -> None:
        if self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            self._log_handler.close()

    def _write_epoch(self, record: dict, improved: bool) -> None:
        state = self.state()
        save_checkpoint(self.out_dir / LATEST, state)
        if improved:
            save_checkpoint(self.out_dir / BEST, state)
        (self.out_dir / "history.json").write_text(json.dumps(self.history, indent=1) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()
        metric = record.get(f"val_{self.metric_name}")
        logger.info("epoch %d: loss %.4f, %s %s%s, lr %.2e, %d it in %.1f s + validation %.1f s",
                    record["epoch"], record["train_loss"], self.metric_name,
                    "-" if metric is None else f"{metric:.4f}", " (best)" if improved else "",
                    record["lr"], record["iterations"], record["train_seconds"],
                    record.get("val_seconds", 0.0))

    def summary(self) -> dict:
        import monai

        now = time.perf_counter()
        elapsed = self._elapsed_before + now - getattr(self, "start_time", now)
        return {
            "trainer": self.name, "fold": self.fold, "stop_reason": self.stop_reason,
            "epochs_run": self.epoch, "best_epoch": self.best_epoch,
            "best_metric": self.best_metric if math.isfinite(self.best_metric) else None,
            "metric": f"val_{self.metric_name}", "seconds": round(elapsed, 1),
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "world_size": self.ctx.world_size, "amp": self.amp, "simulated_user": self.user_preset,
            "classes": [name for name, _ in classes_of(self.config)],
            "torch": torch.__version__, "monai": monai.__version__,
            "data": {"source": self.data_source, "train_ids": self.train_ids, "val_ids": self.val_ids},
            "initial_source": str(self.initial_source) if self.initial_source else None,
            "init_weights": str(self.init_weights) if self.init_weights else None,
            "last": self.history[-1] if self.history else None,
        }
