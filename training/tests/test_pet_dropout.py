"""``data.pet_dropout``: training samples with their PET channel zeroed (HN-UISeg's CT-only cases)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from interactive_refine_training.checkpoint import TrainedRun
from interactive_refine_training.config import DEFAULTS, load_config
from interactive_refine_training.export import _card
from interactive_refine_training.trainer import Trainer
from training_helpers import TINY_CONFIG, phantom_data, tiny_config


class _Recording(Trainer):
    """Records the samples the hooks get instead of training."""

    name = "initial"
    stage = "initial"

    def train_step(self, image, label) -> float:
        self.seen_train.append(image.detach().cpu().clone())
        return 0.0

    def validate_case(self, image, label, index) -> dict:
        self.seen_val.append(image.detach().cpu().clone())
        return {"dice": 0.0}


def _samples(tmp_path: Path, pet_dropout=None) -> tuple[list, list]:
    config = tiny_config(optimization={"max_epochs": 2, "iterations_per_epoch": 4})
    if pet_dropout is None:
        del config["data"]["pet_dropout"]  # a configuration from before the setting
    else:
        config["data"]["pet_dropout"] = pet_dropout
    trainer = _Recording(config, str(phantom_data()), tmp_path / f"run_{pet_dropout}")
    trainer.seen_train, trainer.seen_val = [], []
    trainer.run_training()
    return trainer.seen_train, trainer.seen_val


def test_pet_dropout_zeroes_training_pet_only_and_zero_changes_nothing(tmp_path):
    before, val_before = _samples(tmp_path, None)
    kept, val_kept = _samples(tmp_path, 0.0)
    dropped, val_dropped = _samples(tmp_path, 1.0)
    half, _ = _samples(tmp_path, 0.5)
    assert len(before) == len(kept) == len(dropped) == len(half) == 8  # 2 epochs x 4 iterations
    # 0.0 (the default): the very samples of a run without the setting
    assert all(torch.equal(a, b) for a, b in zip(before, kept))
    assert all(a[0, 1].abs().max() > 0 for a in kept)  # the phantoms' PET is there
    # 1.0: every training sample's PET channel is zero, its CT the same augmented CT
    assert all(torch.count_nonzero(d[0, 1]) == 0 for d in dropped)
    assert all(torch.equal(d[0, 0], k[0, 0]) for d, k in zip(dropped, kept))
    # validation always sees the PET
    assert all(torch.equal(a, b) for a, b in zip(val_dropped, val_kept)) and val_kept
    assert all(v[0, 1].abs().max() > 0 for v in val_dropped)
    # 0.5: some samples lose their PET, the others are unchanged
    zeroed = [torch.count_nonzero(h[0, 1]) == 0 for h in half]
    assert 0 < sum(zeroed) < len(half)
    assert all(torch.equal(h, k) for h, k, z in zip(half, kept, zeroed) if not z)


@pytest.mark.parametrize("value, channels", [(1.5, ["ct", "pet"]), (-0.1, ["ct", "pet"]),
                                             ("0.2", ["ct", "pet"]), (0.2, ["ct"])])
def test_a_bad_pet_dropout_is_refused(value, channels):
    with pytest.raises(ValueError, match="data.pet_dropout"):
        load_config(TINY_CONFIG, {"data": {"pet_dropout": value, "image_channels": channels}})


def test_paper_default_keeps_the_pet():
    assert DEFAULTS["data"]["pet_dropout"] == 0.0


@pytest.mark.parametrize("initial_dropout, refine_dropout, optional", [(0.0, 0.0, False), (0.2, 0.2, True),
                                                                       (0.2, 0.0, False)])
def test_export_marks_the_card_pet_optional_when_every_member_dropped_pet(initial_dropout, refine_dropout,
                                                                          optional):
    def run(trainer, dropout):
        config = tiny_config(data={"pet_dropout": dropout})
        return TrainedRun(Path(trainer), trainer, config, {}, {"simulated_user": "2sicr"})

    card = _card([run("initial", initial_dropout)], [run("refine", refine_dropout)], "tiny")
    assert card["preprocessing"]["pet_optional"] is optional
    ct_only = tiny_config(data={"image_channels": ["ct"]})
    card = _card([TrainedRun(Path("i"), "initial", ct_only, {}, {})],
                 [TrainedRun(Path("r"), "refine", ct_only, {}, {})], "tiny")
    assert "pet_optional" not in card["preprocessing"]


def test_pet_dropout_from_the_command_line():
    from interactive_refine_training.cli import build_parser, train_config

    args = build_parser().parse_args(["train", "--stage", "initial", "--data", "d", "--out", "o",
                                      "--config", str(TINY_CONFIG), "--pet-dropout", "0.25"])
    assert train_config(args)["data"]["pet_dropout"] == 0.25
