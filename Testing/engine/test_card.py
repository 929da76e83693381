"""The typed model card: format-1 cards without an inputs section, named inputs, validation, and
the ROI-size rule."""
from __future__ import annotations

import copy
import json

import pytest
from InteractiveRefineLib.card import (
    MONAI_NORMS,
    InputSpec,
    ModelCard,
    StageSpec,
    default_stages,
    parse_card,
)
from InteractiveRefineLib.errors import ImageError, ModelPackageError
from InteractiveRefineLib.model_package import (
    DEFAULT_MODEL_DIR,
    ModelPackage,
    default_card,
    load_model_package,
)
from InteractiveRefineLib.networks import in_channels

REFINE_NAMES = ["ct", "pet", "previous_probability", "clicks_positive", "clicks_negative"]
MEMBERS = {stage: [{"file": f"{stage}_0.safetensors", "sha256": "0" * 64}] for stage in ("initial", "refine")}


def old_card(image_channels=("ct", "pet"), **changes) -> dict:
    """A card as written before named inputs existed (no inputs, outputs or activation)."""
    card = default_card(image_channels=image_channels)
    for key in ("inputs", "outputs", "activation"):
        card.pop(key)
    card["members"] = copy.deepcopy(MEMBERS)
    card.update(changes)
    return card


def test_old_card_gets_the_classic_layout():
    for images in (("ct", "pet"), ("ct",)):
        spec = parse_card(old_card(images))
        refine, initial = spec.stages["refine"], spec.stages["initial"]
        assert [s.name for s in initial.inputs] == list(images)
        assert [s.name for s in refine.inputs] == list(images) + REFINE_NAMES[2:]
        assert initial.in_channels == in_channels("initial", len(images)) == len(images)
        assert refine.in_channels == in_channels("refine", len(images)) == len(images) + 3
        assert refine.channel("previous_probability") == len(images)
        assert refine.slices()["clicks_negative"] == slice(len(images) + 2, len(images) + 3)
        for name in ("clicks_positive", "clicks_negative"):
            options = refine.inputs[refine.channel(name)].options
            assert options == {"sigma_vox": 2.0, "truncate": 4.0, "scaling": "minmax"}
        assert [(o.name, o.label) for o in spec.outputs] == [("gtvp", 1)]
        assert spec.activation == "sigmoid" and spec.needs_pet == ("pet" in images)


def test_shipped_card_loads_with_the_classic_layout_and_the_pet_region_input():
    raw = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    spec = parse_card(raw)
    assert [s.name for s in spec.stages["refine"].inputs] == REFINE_NAMES + ["pet_region"]
    assert spec.stages["refine"].in_channels == 6 and spec.stages["initial"].in_channels == 2
    assert spec.stages["refine"].inputs[-1].options["fraction"] == 0.4
    assert spec.roi_size_vox == tuple(raw["preprocessing"]["roi_size_vox"])
    assert spec.size_divisor == 4 and spec.threshold == 0.5 and spec.name == raw["name"]
    assert spec.raw == raw and spec.raw is not raw


def test_click_options_come_from_the_clicks_section():
    card = old_card()
    card["clicks"].update(sigma_vox=3.0, truncate=2.5)
    spec = parse_card(card)
    assert (spec.click_sigma_vox, spec.click_truncate) == (3.0, 2.5)
    refine = spec.stages["refine"]
    assert refine.inputs[refine.channel("clicks_positive")].options["sigma_vox"] == 3.0
    assert spec.stages == default_stages(["ct", "pet"], card["clicks"])


def test_new_cards_write_the_inputs_section_and_read_back_the_same():
    written = default_card()
    written["members"] = copy.deepcopy(MEMBERS)
    assert written["inputs"]["refine"] == [{"name": name} for name in REFINE_NAMES]
    again = json.loads(json.dumps(written))
    spec = parse_card(again)
    assert spec.stages == parse_card(old_card()).stages
    assert spec.outputs == parse_card(old_card()).outputs


def test_explicit_inputs_round_trip():
    card = old_card()
    card["inputs"] = {
        "initial": [{"name": "ct"}, {"name": "pet"}],
        "refine": [
            {"name": "ct"}, {"name": "pet"}, {"name": "previous_probability"},
            {"name": "clicks_positive", "options": {"sigma_vox": 2.0, "truncate": 4.0, "scaling": "minmax"}},
            {"name": "clicks_negative"},
            {"name": "prior_gradient", "channels": 2, "optional": True, "options": {"blur_mm": 3}},
        ],
    }
    card["outputs"] = [{"name": "gtvp", "label": 1}]
    card["activation"] = "sigmoid"
    spec = parse_card(json.loads(json.dumps(card)))
    refine = spec.stages["refine"]
    assert refine.in_channels == 7 and refine.has("prior_gradient") and not refine.has("memory")
    assert refine.slices()["prior_gradient"] == slice(5, 7)
    assert refine.inputs[-1] == InputSpec("prior_gradient", 2, True, {"blur_mm": 3})
    assert [s.name for s in spec.stages["initial"].inputs] == ["ct", "pet"]
    with pytest.raises(ModelPackageError, match="'memory'"):
        refine.channel("memory")
    assert isinstance(hash(refine), int)  # usable as a cache key


def test_package_reads_its_typed_card(tiny_package):
    spec = tiny_package.spec
    assert isinstance(spec, ModelCard) and spec.stages["refine"].in_channels == 5
    assert tiny_package.roi_size_vox == spec.roi_size_vox == (48, 48, 48)
    assert tiny_package.spacing_mm == spec.spacing_mm and tiny_package.threshold == spec.threshold
    assert tiny_package.image_channels == ["ct", "pet"] and tiny_package.needs_pet
    assert tiny_package.card["inputs"]["initial"] == [{"name": "ct"}, {"name": "pet"}]
    rebuilt = ModelPackage(path=tiny_package.path, card=tiny_package.card)  # parsed when not given
    assert rebuilt.spec == spec


def test_old_card_package_loads(tiny_package_dir, tmp_path):
    import shutil

    copy_dir = shutil.copytree(tiny_package_dir, tmp_path / "old")
    card = json.loads((copy_dir / "model.json").read_text())
    for key in ("inputs", "outputs", "activation"):
        card.pop(key)
    (copy_dir / "model.json").write_text(json.dumps(card))
    package = load_model_package(copy_dir)
    assert package.networks["refine"][0].model[0].conv.unit0.conv.in_channels == 5
    assert package.spec.stages == load_model_package(tiny_package_dir).spec.stages


def _set(card: dict, dotted: str, value) -> dict:
    node = card
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return card


@pytest.mark.parametrize("field, value, named", [
    ("preprocessing.roi_size_vox", ["144", "144", "144"], "preprocessing.roi_size_vox"),
    ("preprocessing.roi_size_vox", [144, 144], "preprocessing.roi_size_vox"),
    ("preprocessing.roi_size_vox", [146, 144, 144], "multiples of 8"),
    ("preprocessing.spacing_mm", [0, 0, 0], "preprocessing.spacing_mm"),
    ("preprocessing.spacing_mm", [1.0, float("nan"), 1.0], "preprocessing.spacing_mm"),
    ("preprocessing.image_channels", ["pet"], "preprocessing.image_channels"),
    ("preprocessing.intensity_preset", "nope", "preprocessing.intensity_preset"),
    ("threshold", "high", "threshold"),
    ("threshold", 1.0, "threshold"),
    ("network.norm", "WEIRD", "network.norm"),
    ("network.strides", [1, 2, 2], "network.strides"),
    ("network.channels", [16], "network.channels"),
    ("members.refine", [], "members.refine"),
    ("members.initial", [{"file": "initial_0.safetensors"}], r"members.initial\[0\]"),
    ("clicks.sigma_vox", -1, "clicks.sigma_vox"),
    ("clicks.encoding", "disk", "clicks.encoding"),
    ("activation", "softmax", "activation"),
    ("outputs", [{"name": "gtvp", "label": 0}], r"outputs\[0\].label"),
    ("fast_path", {"window_vox": 0}, "fast_path.window_vox"),
    ("inputs", {"initial": [{"name": "ct"}]}, "inputs.refine"),
    ("inputs", {"initial": [{"name": "ct"}], "refine": [{"name": "ct"}, {"name": "ct"}],
                "fusion": [{"name": "ct"}]}, "inputs"),
    ("inputs", {"initial": [{"name": "ct"}], "refine": [{"name": "ct"}, {"name": "ct"}]}, "inputs.refine"),
    ("inputs", {"initial": [{"name": "ct"}], "refine": [{"name": "clicks_positive", "channels": 0}]},
     r"inputs.refine\[0\].channels"),
    ("inputs", {"initial": [{"name": "ct"}], "refine": [{"name": "clicks_positive",
                                                          "options": {"sigma_vox": 5.0}}]},
     r"inputs.refine\[0\].options.sigma_vox"),
])
def test_malformed_field_is_named(field, value, named):
    card = _set(old_card(), field, value)
    with pytest.raises(ModelPackageError, match=named):
        parse_card(card, "pkg/model.json")


def test_pet_input_needs_a_pet_image():
    card = old_card(("ct",))
    card["inputs"] = {"initial": [{"name": "ct"}, {"name": "pet"}], "refine": [{"name": "ct"}]}
    with pytest.raises(ModelPackageError, match=r"inputs.initial\[1\].name"):
        parse_card(card)


def test_missing_section_and_version_are_named():
    card = old_card()
    del card["clicks"]
    with pytest.raises(ModelPackageError, match="missing field 'clicks'"):
        parse_card(card)
    with pytest.raises(ModelPackageError, match="format_version 2 is not supported"):
        parse_card(old_card(format_version=2))
    card = old_card()
    del card["preprocessing"]["spacing_mm"]
    with pytest.raises(ModelPackageError, match="preprocessing.spacing_mm"):
        parse_card(card)


def test_known_norms_are_monai_s():
    from monai.networks.layers.factories import Norm

    assert set(MONAI_NORMS) == set(Norm.names)
    for norm in ("instance", "BATCH", ["GROUP", {"num_groups": 4}]):
        parse_card(_set(old_card(), "network.norm", norm))


def test_roi_size_rule():
    spec = parse_card(old_card(), "x")  # paper network: strides 1, 2, 2, 2 -> multiples of 8
    assert spec.size_divisor == 8 and spec.roi_size_vox == (144, 144, 144)
    assert spec.roi_size_for() == (144, 144, 144)
    assert spec.roi_size_for((10, 150, 144)) == (144, 152, 144)
    assert spec.roi_size_for((200.2, 160.0, 0)) == (208, 160, 144)
    with pytest.raises(ImageError, match="three non-negative voxel counts"):
        spec.roi_size_for((100, 100))
    spec.check_roi_size((144, 152, 208))
    for bad in ((136, 144, 144), (148, 144, 144), (144, 144)):
        with pytest.raises(ImageError, match=r"must be at least the model's \(144, 144, 144\) and a "
                                             r"multiple of 8 voxels"):
            spec.check_roi_size(bad)
    assert spec.check_roi_size(spec.roi_size_for((301, 7, 160))) is None


def test_member_networks_are_checked_and_set_the_divisor():
    card = old_card()
    card["members"]["refine"][0]["network"] = {"channels": [4, 8, 16], "strides": [1, 2]}
    assert parse_card(card).size_divisor == 8
    card["members"]["refine"][0]["network"] = {"channels": [4, 8, 16], "strides": [1, 32]}
    with pytest.raises(ModelPackageError, match="multiples of 32"):  # 144 is not
        parse_card(card)
    card["members"]["refine"][0]["network"] = {"channels": [4, 8, 16], "strides": [1]}
    with pytest.raises(ModelPackageError, match=r"members.refine\[0\].network.strides"):
        parse_card(card)


def test_stage_spec_without_cards():
    stage = StageSpec("refine", (InputSpec("a", 2), InputSpec("b")))
    assert stage.in_channels == 3 and stage.channel("b") == 2 and stage.slices()["a"] == slice(0, 2)


def test_a_network_dropout_rate_adds_dropout_layers_and_bad_rates_are_refused(tmp_path):
    """``network.dropout`` (HN-UISeg's MC-dropout rate) builds dropout layers the uncertainty
    passes keep active; without it every dropout layer has rate 0, as before the key existed."""
    import torch
    from InteractiveRefineLib.card import check_network
    from InteractiveRefineLib.networks import TINY_NETWORK, build_network

    with_dropout = build_network({**TINY_NETWORK, "dropout": 0.05}, 5)
    plain = build_network(TINY_NETWORK, 5)
    dropouts = [m for m in with_dropout.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert dropouts and all(m.p == 0.05 for m in dropouts)
    assert all(m.p == 0.0 for m in plain.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd))
    assert list(with_dropout.state_dict()) == list(plain.state_dict())  # old weights load into either
    for bad in (1.0, -0.1, "0.05", True):
        with pytest.raises(ModelPackageError, match="network.dropout"):
            check_network({**TINY_NETWORK, "dropout": bad})
