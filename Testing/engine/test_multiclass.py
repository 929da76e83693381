"""Several output classes (GTVp and GTVn, HN-UISeg): the card, class-aware clicks and guidance,
label maps, the history, the ``hnuiseg`` simulated user, per-class Dice and the uncertainty."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from InteractiveRefineLib import classes, constraints
from InteractiveRefineLib.card import default_inputs_section, default_stages, parse_card
from InteractiveRefineLib.clicks import Click
from InteractiveRefineLib.errors import ClickError, ModelPackageError
from InteractiveRefineLib.geometry import Volume
from InteractiveRefineLib.inputs import InputContext, assemble
from InteractiveRefineLib.model_package import (
    GTVP_GTVN,
    create_random_model_package,
    default_card,
    load_model_package,
)
from InteractiveRefineLib.networks import TINY_NETWORK, TINY_ROI
from InteractiveRefineLib.phantom import make_phantom
from InteractiveRefineLib.session import RefinementSession
from InteractiveRefineLib.simulated_user import SimulatedClick, SimulatedUser
from InteractiveRefineLib.simulation import labels_on_grid, run_simulation


def _card(outputs=GTVP_GTVN) -> dict:
    card = default_card(network=dict(TINY_NETWORK), roi_size_vox=TINY_ROI, outputs=outputs)
    card["members"] = {stage: [{"file": f"{stage}_0.safetensors", "sha256": "0" * 64}]
                       for stage in ("initial", "refine")}
    return card


@pytest.fixture(scope="module")
def package_dir(two_class_package_dir):
    return two_class_package_dir


@pytest.fixture(scope="module")
def package(package_dir):
    return load_model_package(package_dir)


@pytest.fixture(scope="module")
def phantom():
    """The engine's phantom with a lymph node (label 2) beside the tumour (label 1)."""
    ct, pet, label = make_phantom()
    k, j, i = np.meshgrid(*[np.arange(n) for n in label.shape], indexing="ij")
    node = ((k - 20) * 2.0) ** 2 + (j - 48) ** 2 + (i - 62) ** 2 <= 6.0**2
    values = label.array.copy()
    values[node & (values == 0)] = 2
    return ct, pet, Volume.from_array(values, label.grid.ijk_to_ras)


def _session(package, ct, pet, **kwargs) -> RefinementSession:
    kwargs.setdefault("refine_mode", "full")
    session = RefinementSession(package, device="cpu", **kwargs)
    session.set_image(ct, pet, roi_center_ras=tuple(float(v) for v in ct.grid.center_ras()))
    session.initial()
    return session


def _centre(ct):
    return tuple(float(v) for v in ct.grid.center_ras())


# ------------------------------------------------------------------------------------ card
def test_card_with_two_classes_lays_out_per_class_channels(package):
    spec = package.spec
    assert spec.classes == ("gtvp", "gtvn") and spec.labels == (1, 2) and spec.activation == "sigmoid"
    refine = spec.stages["refine"]
    assert [(s.name, s.channels) for s in refine.inputs] == [
        ("ct", 1), ("pet", 1), ("previous_probability", 2), ("clicks_positive", 2), ("clicks_negative", 1)]
    assert refine.in_channels == 7 and spec.stages["initial"].in_channels == 2
    # one class: exactly the classic layout
    assert default_inputs_section(("ct", "pet")) == default_inputs_section(("ct", "pet"), n_classes=1)
    assert all("channels" not in entry for entry in default_inputs_section(("ct", "pet"))["refine"])
    assert default_stages(("ct",), n_classes=3)["refine"].in_channels == 1 + 3 + 3 + 1


TWO_GTVP = [{"name": "gtvp", "label": 1}, {"name": "gtvp", "label": 2}]
SAME_LABEL = [{"name": "gtvp", "label": 1}, {"name": "gtvn", "label": 1}]


@pytest.mark.parametrize("change, named", [
    (lambda c: c.update(outputs=TWO_GTVP), "distinct names"),
    (lambda c: c.update(outputs=SAME_LABEL), "distinct labels"),
    (lambda c: c.update(outputs=[]), "outputs must be a non-empty list"),
    (lambda c: c["inputs"]["refine"][2].update(channels=1), r"refine\[2\].channels.*previous_probability"),
    (lambda c: c["inputs"]["refine"][3].pop("channels"), r"refine\[3\].channels.*clicks_positive"),
    (lambda c: c["inputs"]["refine"][4].update(channels=2), r"refine\[4\].channels.*clicks_negative"),
    (lambda c: c["network"].update(out_channels=1), r"network.out_channels must be 2"),
])
def test_card_refuses_inconsistent_classes(change, named):
    card = _card()
    parse_card(copy.deepcopy(card))  # valid as written
    change(card)
    with pytest.raises(ModelPackageError, match=named):
        parse_card(card, "pkg/model.json")


def test_weights_with_other_output_channels_are_refused(package_dir, tmp_path):
    one_class = create_random_model_package(tmp_path / "one", network=TINY_NETWORK, roi_size_vox=TINY_ROI)
    card = json.loads((package_dir / "model.json").read_text())
    card["members"] = json.loads((one_class / "model.json").read_text())["members"]
    card["inputs"]["initial"] = default_inputs_section(("ct", "pet"))["initial"]
    (one_class / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match=r"initial_0.safetensors has 1 output channel.*2 output"):
        load_model_package(one_class)


def _with_two_class_initial(package_dir, tmp_path, outputs=("gtvp", "gtvn")):
    """A one-class GTVp package whose initial members are its own network and the two-class
    package's initial network (member ``outputs``), averaged."""
    import shutil

    one = create_random_model_package(tmp_path / "one", network=TINY_NETWORK, roi_size_vox=TINY_ROI, seed=3)
    shutil.copy(package_dir / "initial_0.safetensors", one / "initial_1.safetensors")
    card = json.loads((one / "model.json").read_text())
    source = json.loads((package_dir / "model.json").read_text())["members"]["initial"][0]
    card["members"]["initial"].append({"file": "initial_1.safetensors", "sha256": source["sha256"],
                                       "outputs": list(outputs)})
    (one / "model.json").write_text(json.dumps(card))
    return one


def test_a_two_class_initial_member_serves_a_one_class_card_with_its_gtvp_channel(package_dir, package,
                                                                                   phantom, tmp_path):
    import torch

    mixed = load_model_package(_with_two_class_initial(package_dir, tmp_path))
    assert mixed.spec.classes == ("gtvp",)
    own, borrowed = mixed.networks["initial"]
    x = torch.randn(1, 2, *TINY_ROI)
    with torch.no_grad():
        both = package.networks["initial"][0](x)
        assert torch.equal(borrowed(x), both[:, :1])  # the GTVp channel, exactly
    ct, pet, _ = phantom
    session = _session(mixed, ct, pet)
    assert session.history.current.probability.shape == TINY_ROI  # one class: [k, j, i]
    with torch.no_grad():  # the initial mask: the mean of both members' GTVp probabilities
        image = session.image.tensor
        gtvp = package.networks["initial"][0](image)[:, :1]
        expected = (torch.sigmoid(own(image)) + torch.sigmoid(gtvp)) / 2
    np.testing.assert_allclose(session.history.current.probability.astype(np.float32),
                               expected[0, 0].numpy(), atol=1e-3)
    session.add_click(_centre(ct), True)  # the one-class refinement network takes it from there
    assert session.history.current.probability.shape == TINY_ROI


@pytest.mark.parametrize("outputs, named", [
    (("gtvn",), r"members.initial\[1\].outputs must be names including every card output \['gtvp'\]"),
    (("gtvp", "gtvp"), r"members.initial\[1\].outputs must be a list of distinct output names"),
    (("gtvp",), r"initial_1.safetensors has 2 output channel.*1 output"),
])
def test_a_member_s_own_outputs_are_checked(package_dir, tmp_path, outputs, named):
    with pytest.raises(ModelPackageError, match=named):
        load_model_package(_with_two_class_initial(package_dir, tmp_path, outputs))


def test_a_refine_member_cannot_select_outputs(tmp_path):
    card = _card([{"name": "gtvp", "label": 1}])
    card["members"]["refine"][0]["outputs"] = ["gtvp", "gtvn"]
    with pytest.raises(ModelPackageError, match=r"members.refine\[0\].outputs must be the card's outputs"):
        parse_card(card, "pkg/model.json")


# ------------------------------------------------------------------------- clicks, inputs
def test_click_label_in_json():
    assert Click((1.0, 2.0, 3.0), True).to_json() == {"ras": [1.0, 2.0, 3.0], "positive": True}
    assert Click((1.0, 2.0, 3.0), True, label="gtvn").to_json()["label"] == "gtvn"


def test_a_gtvn_click_changes_only_the_gtvn_guidance(package, phantom):
    ct, pet, _ = phantom
    session = _session(package, ct, pet)
    slices = package.spec.stages["refine"].slices()
    before = session.refine_input()[0].numpy()
    session.add_click(_centre(ct), True, label="gtvn")
    after = session.refine_input()[0].numpy()
    positive, negative = slices["clicks_positive"], slices["clicks_negative"]
    assert not after[positive][0].any() and after[positive][1].max() == 1.0
    assert not after[negative].any()
    np.testing.assert_array_equal(after[slices["ct"]], before[slices["ct"]])
    # a GTVp click then fills channel 0 and leaves the GTVn channel as it was
    shifted = tuple(v + 6.0 for v in _centre(ct))
    session.add_click(shifted, True)
    third = session.refine_input()[0].numpy()
    assert third[positive][0].max() == 1.0
    np.testing.assert_array_equal(third[positive][1], after[positive][1])
    # a negative click (of no class) goes to the one negative channel
    session.add_click(tuple(v - 6.0 for v in _centre(ct)), False)
    assert session.refine_input()[0].numpy()[negative].max() == 1.0


def test_input_context_labels_default_to_class_zero(package, phantom):
    ct, pet, _ = phantom
    session = _session(package, ct, pet)
    stage = package.spec.stages["refine"]
    state = session.history.current
    box = tuple(slice(0, n) for n in session.grid.shape)
    index = session.click_index(_centre(ct))
    plain = InputContext(session.image, state.probability, (index,), (True,))
    labelled = InputContext(session.image, state.probability, (index,), (True,), None, (0,))
    np.testing.assert_array_equal(assemble(stage, plain, box).numpy(), assemble(stage, labelled, box).numpy())


# ----------------------------------------------------------------------- session, history
def test_unknown_label_is_refused_and_changes_nothing(package, phantom):
    ct, pet, _ = phantom
    session = _session(package, ct, pet)
    session.add_click(_centre(ct), True, label="gtvn")
    clicks, length = session.clicks, len(session.history)
    with pytest.raises(ClickError, match=r"'gtvx'.*\['gtvp', 'gtvn'\]"):
        session.add_click(_centre(ct), True, label="gtvx")
    with pytest.raises(ClickError, match="gtvx"):
        session.add_threshold(_centre(ct), label="gtvx")
    assert session.clicks == clicks and len(session.history) == length


def test_labelled_clicks_through_undo_reset_and_confirm(package, phantom):
    ct, pet, _ = phantom
    centre = np.array(_centre(ct))
    steps = [(centre, True, "gtvn"), (centre + 8.0, True, None), (centre - 8.0, False, None),
             (centre + (0.0, 6.0, 0.0), True, "gtvp")]
    preview = _session(package, ct, pet, amp=True)
    exact = _session(package, ct, pet, amp=False)
    assert preview.classes == ("gtvp", "gtvn") and preview.labels == {"gtvp": 1, "gtvn": 2}
    for ras, positive, label in steps:
        preview.add_click(tuple(ras), positive, label=label)
        exact.add_click(tuple(ras), positive, label=label)
    assert [c.label for c in preview.clicks] == ["gtvn", None, None, "gtvp"]
    assert preview.needs_confirm
    preview.confirm()
    for a, b in zip(preview.history, exact.history):  # bit for bit the float32 session
        np.testing.assert_array_equal(a.probability, b.probability)
        np.testing.assert_array_equal(a.ct_mask, b.ct_mask)
    mask = preview.mask_on_ct()
    preview.undo()
    assert [c.label for c in preview.clicks] == ["gtvn", None, None]
    np.testing.assert_array_equal(preview.mask_in_box(), exact.history[3].ct_mask)
    preview.add_click(tuple(steps[-1][0]), True, label="gtvp")  # replay: the same mask again
    preview.confirm()
    np.testing.assert_array_equal(preview.mask_on_ct(), mask)
    preview.reset()
    assert preview.clicks == () and preview.step == 0


def test_label_maps_of_two_classes(package, phantom):
    probability = np.zeros((2, 2, 2, 2), dtype=np.float32)
    probability[0, 0] = 0.9  # GTVp alone
    probability[1, 1] = 0.8  # GTVn alone
    probability[:, 0, 0, 0] = (0.6, 0.7)  # both: the more probable wins
    probability[:, 1, 1, 1] = (0.3, 0.2)  # neither
    out = classes.label_map(probability, 0.5, (1, 2))
    assert out.dtype == np.uint8
    assert out[0, 0, 0] == 2 and out[0, 0, 1] == 1 and out[1, 0, 0] == 2 and out[1, 1, 1] == 0
    np.testing.assert_array_equal(classes.label_map(probability[0], 0.5), probability[0] > 0.5)
    # the session's masks: a label map on every grid, equal to a back-mapping from scratch
    ct, pet, _ = phantom
    session = _session(package, ct, pet)
    session.add_click(_centre(ct), True, label="gtvn")
    session.add_click(tuple(v + 8.0 for v in _centre(ct)), False)
    work = session.mask_on_working_grid()
    np.testing.assert_array_equal(work, classes.label_map(session.probability, 0.5, (1, 2)))
    assert set(np.unique(session.mask_on_ct())) <= {0, 1, 2}
    scratch = session._to_ct(session.history.current.probability)
    np.testing.assert_array_equal(session.mask_in_box(), scratch)
    assert session.history.current.ct_mask.any()


def test_negative_click_removes_the_region_from_every_class():
    probability = np.zeros((2, 6, 6, 6), dtype=np.float16)
    probability[0, 0:2, 0:2, 0:2] = 0.9  # a GTVp blob
    probability[1, 0:2, 2:3, 0:2] = 0.9  # touching GTVn voxels: one region of the union
    probability[0, 4:6, 4:6, 4:6] = 0.9  # the tumour elsewhere
    rejections = constraints.rejections_after((), probability, 0.5, (0, 0, 0), False)
    assert len(rejections) == 1 and rejections[0][0, 2, 0]
    proposal = probability.copy()
    box, removed = constraints.remove_rejected(proposal, rejections, [(0, 0, 0), (5, 5, 5)], [False, True],
                                               probability, 0.5)
    assert not proposal[:, 0:2, 0:3, 0:2].any() and proposal[0, 5, 5, 5] > 0.5 and removed == 12


def test_threshold_click_replaces_its_class_only(package, phantom):
    ct, pet, label = phantom
    session = _session(package, ct, pet)
    before = session.history.current.probability
    seed = label.grid.index_to_ras(np.argwhere(label.array == 1).mean(axis=0)[::-1])
    session.add_threshold(tuple(seed), pet_is_suv=True, label="gtvn")
    after = session.history.current.probability
    np.testing.assert_array_equal(after[0], before[0])
    assert (after[1] > 0.5).sum() > 0 and session.clicks[-1].label == "gtvn"


# --------------------------------------------------------------------- the simulated user
def test_hnuiseg_clicks_each_error_component_at_its_innermost_voxel():
    truth = np.zeros((20, 20, 20), dtype=np.uint8)
    truth[2:9, 2:9, 2:9] = 1  # GTVp, missed entirely: the largest error
    truth[12:17, 12:17, 12:17] = 2  # GTVn, missed
    prediction = np.zeros_like(truth)
    prediction[2:9, 2:9, 2:9] = 0
    prediction[12:15, 2:5, 2:5] = 1  # a false-positive GTVp blob (27 voxels)
    user = SimulatedUser("hnuiseg", np.random.default_rng(0))
    state = np.random.default_rng(0).bit_generator.state
    clicks = []
    for _ in range(4):
        click = user.next_click(prediction, truth)
        if click is None:
            break
        clicks.append(click)
        # the user's correction: the component holding the click becomes right
        from scipy import ndimage

        error = prediction != truth
        components, _ = ndimage.label(error, structure=np.ones((3, 3, 3), bool))
        fixed = components == components[click.index]
        prediction[fixed] = truth[fixed]
    assert clicks == [SimulatedClick((5, 5, 5), True, 0), SimulatedClick((14, 14, 14), True, 1),
                      SimulatedClick((13, 3, 3), False, None)]
    assert user.rng.bit_generator.state == state  # deterministic: no draw
    assert user.next_click(truth, truth) is None


def test_2sicr_on_class_maps_gives_the_true_class():
    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[1:5, 1:5, 1:5] = 2
    user = SimulatedUser("2sicr", np.random.default_rng(0))
    click = user.next_click(np.zeros_like(truth), truth)
    assert click.positive and click.label == 1 and truth[click.index] == 2
    # the same error on boolean maps: the same voxel, no class (one class, as before)
    binary = SimulatedUser("2sicr", np.random.default_rng(0)).next_click(np.zeros((10,) * 3, bool), truth > 0)
    assert binary == SimulatedClick(click.index, True)
    negative = SimulatedUser("2sicr", np.random.default_rng(0)).next_click(truth, np.zeros_like(truth))
    assert not negative.positive and negative.label is None


# -------------------------------------------------------------------- simulation, uncertainty
def test_simulation_reports_dice_per_class(package, phantom):
    ct, pet, label = phantom
    session = RefinementSession(package, device="cpu", refine_mode="full")
    session.set_image(ct, pet, roi_center_ras=_centre(ct))
    out = run_simulation(session, label, 3, seed=0, preset="hnuiseg", surface_metrics=False, baseline=False)
    assert set(out["dice_per_class"]) == {"gtvp", "gtvn"}
    assert all(len(curve) == 4 for curve in out["dice_per_class"].values()) and len(out["dice"]) == 4
    assert all(0.0 <= v <= 1.0 for curve in out["dice_per_class"].values() for v in curve)
    assert all(c.get("label") in (None, "gtvp", "gtvn") for c in out["clicks"])
    truth = labels_on_grid(label, session.ct.grid, (1, 2))
    final = classes.labels_of(session.mask_on_ct(), (1, 2))
    from InteractiveRefineLib.metrics import dice

    assert out["dice_per_class"]["gtvn"][len(out["clicks"])] == pytest.approx(dice(final == 2, truth == 2))
    json.dumps(out)


def test_uncertainty_of_two_classes(package, phantom):
    from InteractiveRefineLib.uncertainty import estimate, predictive_entropy

    ct, pet, _ = phantom
    session = _session(package, ct, pet)
    session.add_click(_centre(ct), True, label="gtvn")
    result = estimate(session, passes=2, seed=0)
    assert result.mean.shape == (2,) + session.grid.shape and result.entropy.shape == session.grid.shape
    np.testing.assert_allclose(result.entropy, predictive_entropy(result.mean[0]) + predictive_entropy(
        result.mean[1]), rtol=1e-6)
    again = estimate(session, passes=2, seed=0)
    np.testing.assert_array_equal(result.entropy, again.entropy)
    if result.suggestion is not None:
        s = result.suggestion
        best = int(np.argmax(result.mean[(slice(None),) + s.index]))
        assert s.label == session.classes[best]
        assert s.positive == bool(result.mean[(best,) + s.index] >= 0.5)
        assert result.summary()["suggestion"]["label"] == s.label


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_device_resident_path_with_two_classes(package, phantom, device):
    """The device-resident click path (forced on the CPU, the default on CUDA) keeps every class's
    device copy equal to the history, through region removal, and back-maps like the host."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ct, pet, _ = phantom
    session = RefinementSession(package, device=device, refine_mode="full", device_path=True, amp=False)
    session.set_image(ct, pet, roi_center_ras=_centre(ct))
    session.initial()
    host = _session(package, ct, pet, amp=False)
    centre = np.array(_centre(ct))
    steps = [(centre, True, "gtvn"), (centre + 9.0, False, None), (centre - 5.0, True, None)]
    for ras, positive, label in steps:
        session.add_click(tuple(ras), positive, label=label)
        host.add_click(tuple(ras), positive, label=label)
        state = session.history.current
        resident = session.backend.resident.get(state.probability)
        if resident is not None:
            np.testing.assert_array_equal(resident.cpu().numpy(), state.probability)
        np.testing.assert_array_equal(session.mask_in_box(), session._to_ct(state.probability))
    if device == "cpu":
        np.testing.assert_array_equal(session.history.current.probability, host.history.current.probability)
    else:
        agree = (session.mask_on_working_grid() == host.mask_on_working_grid()).mean()
        assert agree > 0.99


def test_device_copies_update_every_class():
    import torch
    from InteractiveRefineLib.backend import DeviceCopies

    array = np.full((2, 4, 4, 4), 0.75, dtype=np.float16)
    copies = DeviceCopies()
    copies.put(array, torch.from_numpy(array.copy()))
    array[:, 1:3, 0:2, 0:4] = 0
    copies.update(array, (slice(1, 3), slice(0, 2), slice(0, 4)))
    np.testing.assert_array_equal(copies.get(array).numpy(), array)


def test_simulation_passes_each_clicks_class_to_the_session(package, phantom, monkeypatch):
    import InteractiveRefineLib.simulation as simulation

    class Scripted:  # a user whose clicks are known: a GTVn click, then a negative one
        def __init__(self, *args, **kwargs):
            self.clicks = [SimulatedClick((24, 24, 24), True, 1), SimulatedClick((10, 10, 10), False)]

        def next_click(self, prediction, truth):
            assert prediction.dtype == np.uint8 and truth.max() <= 2  # class maps
            return self.clicks.pop(0) if self.clicks else None

    monkeypatch.setattr(simulation, "make_user", Scripted)
    ct, pet, label = phantom
    session = RefinementSession(package, device="cpu", refine_mode="full")
    session.set_image(ct, pet, roi_center_ras=_centre(ct))
    out = run_simulation(session, label, 3, seed=0, surface_metrics=False, baseline=False)
    assert [c.get("label") for c in out["clicks"]] == ["gtvn", None]
    assert [c.label for c in session.clicks] == ["gtvn", None]
    assert len(out["dice_per_class"]["gtvp"]) == 4 and out["changed_voxels"][-1] == 0


def test_threshold_start_takes_the_first_positive_click_of_each_class(package, phantom):
    """A two-class card with ``threshold_start``: the first GTVp and the first GTVn click each
    become their class's PET region; a class's later clicks refine."""
    ct, pet, label = phantom
    tumour = tuple(label.grid.index_to_ras(np.argwhere(label.array == 1).mean(axis=0)[::-1]))
    node = tuple(label.grid.index_to_ras(np.argwhere(label.array == 2).mean(axis=0)[::-1]))
    hot = pet.array.copy()  # the node takes up FDG (SUV 6 in a 6 mm ball)
    k, j, i = np.meshgrid(*[np.arange(n) for n in hot.shape], indexing="ij")
    ci, cj, ck = pet.grid.ras_to_index(node)
    si, sj, sk = pet.grid.spacing
    hot[((i - ci) * si) ** 2 + ((j - cj) * sj) ** 2 + ((k - ck) * sk) ** 2 <= 6.0**2] = 6.0
    session = _session(package, ct, Volume.from_array(hot, pet.grid.ijk_to_ras), threshold_start=True)
    assert session.add_click(tumour, True).mode == "threshold"
    gtvp = session.history.current.probability[0].copy()
    assert session.add_click(node, True, label="gtvn").mode == "threshold"  # GTVn's first: its region
    np.testing.assert_array_equal(session.history.current.probability[0], gtvp)  # GTVp's untouched
    assert (session.history.current.probability[1] > 0.5).sum() > 0
    assert session.add_click(tumour, True).mode == "full"
    assert session.add_click(node, True, "gtvn").mode == "full"
    assert [c.kind for c in session.clicks] == ["threshold", "threshold", "point", "point"]
