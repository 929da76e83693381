"""CT-only input: a PET/CT model whose card says ``preprocessing.pet_optional`` runs without PET, its
normalised PET channel zero-filled (HN-UISeg); any other PET/CT model still refuses."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from InteractiveRefineLib.cli import main
from InteractiveRefineLib.errors import ImageError, ModelPackageError, ThresholdError
from InteractiveRefineLib.geometry import write_volume
from InteractiveRefineLib.model_package import default_card, load_model_package
from InteractiveRefineLib.phantom import make_phantom
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.uncertainty import estimate


@pytest.fixture(scope="module")
def optional_dir(tiny_package_dir, tmp_path_factory):
    """The tiny package (same weights) with ``preprocessing.pet_optional: true``."""
    out = shutil.copytree(tiny_package_dir, tmp_path_factory.mktemp("pet_optional") / "model")
    card = json.loads((out / "model.json").read_text())
    card["preprocessing"]["pet_optional"] = True
    (out / "model.json").write_text(json.dumps(card))
    return out


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


@pytest.fixture(scope="module")
def phantom_files(phantom, tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    paths = [folder / f"{name}.nii.gz" for name in ("ct", "pet", "label")]
    for volume, path in zip(phantom, paths):
        write_volume(volume, path)
    return [str(p) for p in paths]


def _session(model, ct, pet):
    session = RefinementSession(load_model_package(model), device="cpu", refine_mode="full")
    session.set_image(ct, pet, roi_center_ras=tuple(float(v) for v in ct.grid.center_ras()))  # one ROI
    return session


def test_the_card_states_whether_pet_is_optional(tiny_package, optional_dir):
    assert tiny_package.spec.pet_optional is False and tiny_package.requires_pet  # cards before the flag
    optional = load_model_package(optional_dir)
    assert optional.spec.pet_optional is True and optional.needs_pet and not optional.requires_pet
    card = default_card()
    card["preprocessing"]["pet_optional"] = "yes"
    with pytest.raises(ModelPackageError, match="preprocessing.pet_optional must be true or false"):
        _parse(card)
    card = default_card(image_channels=("ct",))
    card["preprocessing"]["pet_optional"] = True
    with pytest.raises(ModelPackageError, match="preprocessing.pet_optional must be false for a model "
                                                "without a 'pet' channel"):
        _parse(card)


def _parse(card):
    from InteractiveRefineLib.card import parse_card

    card["members"] = {s: [{"file": f"{s}_0.safetensors", "sha256": "0" * 64}] for s in ("initial", "refine")}
    return parse_card(card, "pkg/model.json")


def test_a_pet_optional_model_runs_on_the_ct_alone_with_the_pet_zero_filled(optional_dir, phantom):
    ct, pet, _ = phantom
    ct_only = _session(optional_dir, ct, None)
    assert ct_only.image.pet is None and ct_only.image.pet_coverage is None
    tensor = ct_only.image.tensor
    assert tensor.shape[1] == 2 and float(tensor[0, 1].abs().max()) == 0.0
    with_pet = _session(optional_dir, ct, pet)
    assert np.array_equal(tensor[0, 0].numpy(), with_pet.image.tensor[0, 0].numpy())  # the same CT
    result = ct_only.initial()
    # exactly the network on the PET/CT input with the PET channel zeroed
    x = with_pet.image.tensor.clone()
    x[0, 1] = 0.0
    expected = with_pet.backend.predict("initial", x)
    assert np.array_equal(ct_only.history.current.probability, expected)
    assert result.voxels == int(ct_only.mask_on_ct().sum())
    centre = ct.grid.center_ras()
    ct_only.add_click(centre, True)  # the refine stage takes the zero-filled PET too
    assert ct_only.step == 1
    with pytest.raises(ThresholdError, match="needs a PET image"):  # the threshold tool needs PET
        ct_only.add_threshold(centre)
    assert ct_only.step == 1


def test_without_the_flag_a_pet_ct_model_refuses_a_ct_alone_and_changes_nothing(tiny_package_dir, phantom):
    ct, pet, _ = phantom
    session = _session(tiny_package_dir, ct, pet)
    session.initial()
    before = session.image, session.mask_on_ct().copy()
    with pytest.raises(ImageError, match="this model needs a PET image; none was given"):
        session.set_image(ct, None)
    assert session.image is before[0] and np.array_equal(session.mask_on_ct(), before[1])


def test_the_flag_changes_nothing_when_a_pet_is_given(tiny_package_dir, optional_dir, phantom):
    ct, pet, _ = phantom
    old, flagged = _session(tiny_package_dir, ct, pet), _session(optional_dir, ct, pet)
    assert np.array_equal(old.image.tensor.numpy(), flagged.image.tensor.numpy())
    old.initial(), flagged.initial()
    for session in (old, flagged):
        session.add_click(ct.grid.center_ras(), True)
    assert np.array_equal(old.history.current.probability, flagged.history.current.probability)
    assert np.array_equal(old.mask_on_ct(), flagged.mask_on_ct())


def test_the_uncertainty_keeps_the_zero_filled_pet_zero(optional_dir, phantom, monkeypatch):
    ct, _, _ = phantom
    session = _session(optional_dir, ct, None)
    session.initial()
    seen = []
    predict = session.backend.predict

    def recording(stage, x, **kwargs):
        seen.append(x.clone())
        return predict(stage, x, **kwargs)

    monkeypatch.setattr(session.backend, "predict", recording)
    result = estimate(session, 6, seed=0)
    assert [a[0] for a in result.augmentations].count("noise") >= 1
    assert all(float(x[0, 1].abs().max()) == 0.0 for x in seen)  # noise on the CT only
    assert any(float((x[0, 0] - session.image.tensor[0, 0]).abs().max()) > 0 for x in seen)
    assert np.isfinite(result.entropy).all() and result.entropy.shape == session.grid.shape


def test_cli_segment_and_simulate_without_pet(tiny_package_dir, optional_dir, phantom_files, tmp_path,
                                              capsys):
    ct, _, label = phantom_files
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", "--ct", ct, "--model", str(optional_dir), "--device", "cpu",
                 "--out", str(out), "--suggest", "--uncertainty-passes", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.is_file() and summary["pet_zero_filled"] is True and summary["pet_coverage"] is None
    assert summary["uncertainty"]["passes"] == 2
    assert main(["simulate", "--ct", ct, "--label", label, "--model", str(optional_dir), "--device", "cpu",
                 "--clicks", "1", "--json", str(tmp_path / "sim.json")]) == 0
    capsys.readouterr()
    result = json.loads((tmp_path / "sim.json").read_text())
    assert result["pet_zero_filled"] is True and len(result["dice"]) == 2 and "baseline" not in result

    refused = tmp_path / "refused.nii.gz"
    assert main(["segment", "--ct", ct, "--model", str(tiny_package_dir), "--device", "cpu",
                 "--out", str(refused)]) == 2
    assert "this model needs --pet" in capsys.readouterr().err and not refused.exists()
    centre = "t+" + ",".join(f"{v:.2f}" for v in make_phantom()[0].grid.center_ras())
    for extra in (["--click", centre], ["--threshold-start"]):
        assert main(["segment", "--ct", ct, "--model", str(optional_dir), "--device", "cpu",
                     "--out", str(refused)] + extra) == 2
        assert "the PET threshold tool" in capsys.readouterr().err and not refused.exists()
