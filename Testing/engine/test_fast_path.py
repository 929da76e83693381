"""The fast (windowed) refinement path and the latency benchmark (tiny random networks, CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from InteractiveRefineLib import geometry, netcopies, policy
from InteractiveRefineLib.clicks import encode_guidance, gaussian_kernel
from InteractiveRefineLib.inputs.interaction import guidance_in_box
from InteractiveRefineLib.session import RefinementSession
from session_checks import assert_ct_mask_is_the_back_mapping, assert_tracked_statistics_exact

from conftest import TINY_NETWORK, hot_sphere_pair

REPO = Path(__file__).resolve().parents[2]
ROI = (64, 64, 64)
WINDOW = 32  # tiny network: stride product 4, so the window is aligned to 4 voxels


@pytest.fixture(scope="module")
def package64(tmp_path_factory):
    """The tiny network on a 64^3 ROI, so that a 32^3 window is smaller than the ROI."""
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package

    folder = tmp_path_factory.mktemp("tiny64")
    return load_model_package(
        create_random_model_package(folder, network=TINY_NETWORK, roi_size_vox=ROI, seed=1)
    )


@pytest.fixture(scope="module")
def image():
    """A PET/CT pair on a 1 x 1 x 2 mm grid with a hot sphere (CT and PET on different grids)."""
    return hot_sphere_pair()


def _session(package, image, **kwargs):
    kwargs.setdefault("fast_window", WINDOW)
    session = RefinementSession(package, device="cpu", **kwargs)
    session.set_image(*image)
    session.initial()
    return session


def _ras(session, kji):
    return session.grid.index_to_ras(np.array(kji[::-1], dtype=float))


CLICKS = [((30, 30, 34), True), ((12, 50, 20), False), ((60, 4, 58), True)]


def _box(result):
    return tuple(slice(a, b) for a, b in result.window)


def test_auto_mode_refines_large_rois_on_the_cpu_in_a_window_when_a_full_pass_is_slow(
        package64, image, tmp_path, monkeypatch):
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package

    # A 64^3 ROI (like the shipped 72^3 model): a full pass is fast on the CPU, and exact.
    small = _session(package64, image)
    assert small.refine_mode == "full" and "calibrate_s" not in small.timings[0]
    assert small.add_click(_ras(small, CLICKS[0][0]), True).mode == "full"
    # Above 96^3 (the paper's 144^3) the initial pass decides: a window, calibrated once at the
    # initial state, when a whole-ROI pass takes longer than AUTO_FULL_SECONDS here ...
    edge = 100
    assert edge**3 > policy.LARGE_ROI_VOXELS
    large = load_model_package(create_random_model_package(
        tmp_path / "tiny100", network=TINY_NETWORK, roi_size_vox=(edge,) * 3, seed=1))
    monkeypatch.setattr(policy, "AUTO_FULL_SECONDS", 0.0)
    session = _session(large, image)
    assert session.refine_mode == "fast"
    result = session.add_click(_ras(session, CLICKS[0][0]), True)
    assert result.mode == "fast" and result.window is not None
    assert all(b - a == WINDOW and a % 4 == 0 for a, b in result.window)
    assert "calibrate_s" in session.timings[0]
    # ... and the whole ROI, with no calibration, when a whole-ROI pass is fast enough.
    monkeypatch.setattr(policy, "AUTO_FULL_SECONDS", 1e9)
    session = _session(large, image)
    assert session.refine_mode == "full" and "calibrate_s" not in session.timings[0]
    assert session.add_click(_ras(session, CLICKS[0][0]), True).mode == "full"
    assert RefinementSession(large, device="cpu", refine_mode="full").refine_mode == "full"


def test_a_package_can_choose_its_fast_window_and_a_bad_choice_is_refused(package64, image, tmp_path):
    """The card's ``fast_path.window_vox`` sets the window (an explicit ``fast_window`` wins);
    a window that is not a positive integer is refused when the package loads."""
    import json

    from InteractiveRefineLib.errors import ModelPackageError
    from InteractiveRefineLib.model_package import CARD_NAME, create_random_model_package, load_model_package

    folder = create_random_model_package(tmp_path / "w48", network=TINY_NETWORK, roi_size_vox=ROI, seed=1)
    card = json.loads((folder / CARD_NAME).read_text())
    card["fast_path"] = {"window_vox": 48}
    (folder / CARD_NAME).write_text(json.dumps(card))
    session = _session(load_model_package(folder), image, refine_mode="fast", fast_window=None)
    result = session.add_click(_ras(session, CLICKS[0][0]), True)
    assert session.fast_window == 48 and all(b - a == 48 for a, b in result.window)
    assert RefinementSession(load_model_package(folder), device="cpu", fast_window=32).fast_window == 32
    for bad in (0, "64", 12.5):
        card["fast_path"] = {"window_vox": bad}
        (folder / CARD_NAME).write_text(json.dumps(card))
        with pytest.raises(ModelPackageError, match="fast_path.window_vox must be a positive integer"):
            load_model_package(folder)


def test_modes_can_be_forced_per_session(package64, image):
    full = _session(package64, image, refine_mode="full")
    assert full.refine_mode == "full" and "calibrate_s" not in full.timings[0]
    assert full.add_click(_ras(full, CLICKS[0][0]), True).mode == "full"
    assert full.plan.refine_path == "full"
    fast = _session(package64, image, refine_mode="fast")
    assert fast.plan.refine_path == "window" and "calibrate_s" in fast.timings[0]
    assert fast.add_click(_ras(fast, CLICKS[0][0]), True).mode == "fast"
    with pytest.raises(ValueError, match="refine_mode"):
        RefinementSession(package64, device="cpu", refine_mode="quick")


def test_a_fast_click_changes_the_probability_only_inside_its_window(package64, image):
    """After the first click, outside the window nothing changes. The first click replaces the
    initial model's mask outside its window by the refine network's own prediction with no click
    (a full-ROI pass far from the click gives that too: the refine network also corrects where
    nobody clicked). Region removal off: with random weights a negative click's rejected region
    spans the ROI."""
    session = _session(package64, image, refine_mode="fast", region_removal=False)
    no_click = session.backend.predict("refine", session.refine_input()).astype(np.float16)
    assert not np.array_equal(no_click, session.probability)
    for step, (kji, positive) in enumerate(CLICKS):
        before = session.probability.copy()
        result = session.add_click(_ras(session, kji), positive)
        after = session.probability
        outside = np.ones(after.shape, dtype=bool)
        outside[_box(result)] = False
        assert np.array_equal(after[outside], (no_click if step == 0 else before)[outside])
        assert not np.array_equal(after[_box(result)], before[_box(result)])


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_the_ct_mask_is_the_back_mapping_of_the_probability_in_both_modes(package64, image, mode):
    session = _session(package64, image, refine_mode=mode)
    for kji, positive in CLICKS:
        assert session.add_click(_ras(session, kji), positive).mode == mode
        whole = geometry.resample(session.probability, session.grid, session.image.ct_box_grid, order=1)
        assert np.array_equal(session.mask_in_box(), (whole > session.package.threshold).astype(np.uint8))


def test_undo_after_a_fast_click_restores_the_previous_state_bit_for_bit(package64, image):
    session = _session(package64, image, refine_mode="fast")
    session.add_click(_ras(session, CLICKS[0][0]), True)
    mask, probability = session.mask_on_ct().copy(), session.probability.copy()
    session.add_click(_ras(session, CLICKS[1][0]), False)
    assert not np.array_equal(session.probability, probability)
    session.undo()
    assert np.array_equal(session.mask_on_ct(), mask)
    assert np.array_equal(session.probability, probability)
    session.reset()
    session.add_click(_ras(session, CLICKS[0][0]), True)
    assert np.array_equal(session.probability, probability)  # replay gives the same state


def test_same_clicks_give_the_same_mask_in_fast_mode(package64, image):
    results = []
    for _ in range(2):  # two sessions, each calibrated at its own initial state
        session = _session(package64, image, refine_mode="fast")
        for kji, positive in CLICKS:
            assert session.add_click(_ras(session, kji), positive).mode == "fast"
        results.append((session.mask_on_ct(), session.probability))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_a_roi_not_larger_than_the_window_is_refined_in_full(tiny_package, image):
    session = _session(tiny_package, image, fast_window=64)  # 48^3 ROI
    assert session.add_click(session.grid.center_ras(), True).mode == "full"


def test_window_guidance_equals_the_full_encoding_cropped():
    rng = np.random.default_rng(3)
    shape = (40, 44, 36)
    kernel = gaussian_kernel(2.0, 4.0)
    indices = [tuple(int(v) for v in rng.integers(0, shape)) for _ in range(6)]
    indices += [(0, 0, 0), (1, 2, 1), (39, 43, 35)]  # borders, and overlapping Gaussians
    positives = [bool(v) for v in rng.integers(0, 2, len(indices))]
    full = encode_guidance(
        shape, [c for c, p in zip(indices, positives) if p], [c for c, p in zip(indices, positives) if not p]
    )
    for center in [(20, 22, 18), (0, 0, 0), (39, 43, 35)]:
        box = geometry.window_box(center, shape, 16, align=4)
        for channel, sign in enumerate((True, False)):
            chosen = [ix for ix, p in zip(indices, positives) if p is sign]
            window = guidance_in_box(shape, chosen, kernel, box)
            assert np.array_equal(window, full[(channel,) + box])


def test_frozen_network_reproduces_instance_norm_with_the_inputs_own_statistics(package64):
    import torch

    net = package64.networks["refine"][0]
    x = torch.randn(1, 5, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    stats = {}
    with torch.inference_mode(), netcopies.record_norm_stats(net, stats):
        expected = net(x)
    frozen = netcopies.frozen_network(net, {k: (m.clone(), v.clone()) for k, (m, v) in stats.items()})
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in frozen.modules())
    with torch.inference_mode():
        assert torch.allclose(frozen(x), expected, atol=1e-4)
        assert torch.equal(net(x), expected)  # the package's network is untouched


def test_window_box_is_aligned_and_inside_the_roi():
    assert geometry.window_box((0, 70, 143), (144, 144, 144), 64, align=8) == (
        slice(0, 64), slice(40, 104), slice(80, 144))
    assert geometry.window_box((5, 5, 5), (48, 48, 48), 64, align=8) == (slice(0, 48),) * 3
    weights = geometry.blend_weights((slice(0, 16), slice(8, 24), slice(8, 24)), (32, 32, 32), 4)
    assert weights[0, 8, 8] == 1.0 and weights[8, 0, 8] == pytest.approx(0.2)
    assert weights.min() > 0 and weights.max() == 1.0


def test_latency_benchmark_writes_the_json_contract(tmp_path):
    out = tmp_path / "latency.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "click_latency.py"), "--random-tiny-model",
         "--case", "phantom", "--clicks", "2", "--window", "32", "--threads", "1",
         "--modes", "full,fast,full+amp", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["roi_voxels"] == 64**3
    assert result["peak_rss_mb"] > 0
    for mode in ("full", "fast", "full+amp"):
        summary = result["modes"][mode]
        for key in ("median_s", "p90_s", "mean_dice_1_10"):
            assert isinstance(summary[key], float)
        assert len(summary["dice"]) == 3 and summary["effective_modes"] == [mode.split("+")[0]]
        # the session's plan, as the engine made it
        assert summary["plan"]["precision"] == summary["precision"] and summary["plan"]["device"] == "cpu"
        assert summary["plan"]["refine_path"] == ("window" if mode == "fast" else "full")
    # "+amp" runs in its own reduced-precision session; the others in float32.
    assert result["amp_by_mode"] == {"full": False, "fast": False, "full+amp": True}
    assert set(result["one_time_s_by_session"]) == {"full", "fast", "full+amp"}  # a session per mode
    for mode in ("fast", "full+amp"):
        assert len(result["replay"][mode]["dice_vs_reference"]) == 3
    assert "median_s" in completed.stdout and "full+amp" in completed.stdout
    # The engine asked for huge-page allocations although the environment did not; every click
    # reports the page faults it caused (Linux).
    assert result["huge_pages"]["THP_MEM_ALLOC_ENABLE"] == "1"
    if sys.platform.startswith("linux"):
        faults = [c["page_faults"] for c in result["modes"]["full"]["per_click"]]
        assert len(faults) == 2 and all(isinstance(f, int) and f >= 0 for f in faults)
        assert "THP_MEM_ALLOC_ENABLE=1" in completed.stdout


def _fast_vs_full(out, *options):
    """``fast_vs_full.py`` on one held-out phantom, the tiny random network, 2 clicks, 32^3 window."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fast_vs_full.py"), "--random-tiny-model",
         "--cases", "phantom:900000", "--clicks", "2", "--window", "32", "--threads", "1",
         *options, "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def test_fast_vs_full_benchmark_tabulates_each_case(tmp_path):
    out = tmp_path / "fast_vs_full.json"
    completed = _fast_vs_full(out)
    summary = json.loads(out.read_text())
    (row,) = summary["cases"]
    assert row["case"] == "phantom-900000" and summary["window"] == 32
    # Both clicks were refined in a 32^3 window of the 64^3 ROI, not silently in full.
    assert (row["fast_windowed_clicks"], row["fast_clicks"]) == (2, 2)
    assert row["replay_minus_full"] == pytest.approx(
        row["replay_mean_dice_1_10"] - row["full_mean_dice_1_10"])
    assert (tmp_path / "fast_vs_full_phantom_900000.json").is_file()
    assert "| phantom-900000 |" in completed.stdout and "largest |difference|" in completed.stdout


def test_fast_vs_full_with_confirm_scores_the_previews_and_the_exact_masks(tmp_path):
    """``--fast fast+confirm``: each windowed preview is followed by the exact mask, which is
    float32 full-ROI refinement itself (same Dice, same masks); the previews are scored apart."""
    out = tmp_path / "confirm_vs_full.json"
    completed = _fast_vs_full(out, "--fast", "fast+confirm")
    (row,) = json.loads(out.read_text())["cases"]
    assert row["fast_minus_full"] == 0.0  # the exact masks' own loop is the float32 loop
    assert row["replay_preview_minus_full"] == pytest.approx(
        row["replay_preview_mean_dice_1_10"] - row["full_mean_dice_1_10"])
    assert 0.0 < row["replay_preview_min_dice_vs_full"] <= 1.0
    assert row["fast_exact_median_s"] > row["fast_median_s"] > 0
    case = json.loads((tmp_path / "confirm_vs_full_phantom_900000.json").read_text())
    mode = case["modes"]["fast+confirm"]
    assert len(mode["preview_dice"]) == len(mode["dice"]) == 3
    assert all(c["mode"] == "fast" and not c["exact"] for c in mode["per_click"])  # previews
    assert case["replay"]["fast+confirm"]["dice_vs_reference"] == [1.0, 1.0, 1.0]
    assert "previews" in completed.stdout and "exact mask s after the click" in completed.stdout


def test_tracked_statistics_equal_those_of_a_full_pass_after_fast_clicks(package64, image):
    """The "tracked" fast path keeps the first instance norm's statistics exact: after several
    fast clicks (each updating them only where the input changed) they equal the statistics a
    full-ROI pass records on the same input."""
    session = _session(package64, image, refine_mode="fast")
    for kji, positive in CLICKS:
        assert session.add_click(_ras(session, kji), positive).mode == "fast"
    assert_tracked_statistics_exact(session)
    assert session.timings[-1]["norm_s"] > 0


def test_tracked_fast_path_follows_full_refinement_on_the_real_case():
    """The shipped model on CHGJ015, a 64^3 window in its 72^3 ROI, the simulated user's clicks of
    a full-ROI loop replayed: with tracked statistics the window masks match the full-ROI masks
    (Dice >= 0.92; measured 0.927-0.984 with model 0.4.0) once a positive click marks the tumour.
    Before that the clicks are negative ones on the hot brain, whose full-ROI response reaches
    past the window, which is why ``auto`` refines this 72^3 model's whole ROI."""
    from InteractiveRefineLib.metrics import dice
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.simulation import label_centroid_ras, run_simulation

    from conftest import data_path

    folder = data_path("hecktor2020_chgj015")
    ct, pet, label = (geometry.read_volume(folder / f"CHGJ015_{s}.nii.gz") for s in ("ct", "pt", "ct_gtvt"))
    package, centre = load_model_package(), label_centroid_ras(label)
    # every click refined by a network (the shipped card's threshold start would skip one)
    full = RefinementSession(package, device="cpu", refine_mode="full", threshold_start=False)
    full.set_image(ct, pet, roi_center_ras=centre)
    clicks = run_simulation(full, label, 6, seed=0, surface_metrics=False)["clicks"]
    full.reset()
    reference = []
    for click in clicks:
        full.add_click(click["ras"], click["positive"])
        reference.append(full.mask_in_box().astype(bool))
    fast = RefinementSession(package, device="cpu", refine_mode="fast", fast_window=64, threshold_start=False)
    fast.set_image(ct, pet, roi_center_ras=centre)
    fast.initial()
    agreement = []
    for click, expected in zip(clicks, reference):
        assert fast.add_click(click["ras"], click["positive"]).mode == "fast"
        agreement.append(dice(fast.mask_in_box().astype(bool), expected))
    marked = next(n for n, click in enumerate(clicks) if click["positive"])
    assert min(agreement[marked:]) >= 0.92, agreement


# ------------------------------------------------------------- exact follow-up (confirm)
def _history_arrays(session):
    return [(s.probability.copy(), s.ct_mask.copy(), s.clicks) for s in session.history]


@pytest.mark.parametrize("preview", [dict(refine_mode="fast"), dict(refine_mode="full", amp=True)],
                         ids=["window", "bfloat16"])
def test_confirm_turns_the_previews_into_the_float32_whole_roi_masks(package64, image, preview):
    """A preview (a window, or bfloat16) becomes, after confirm(), bit for bit what a float32
    full-ROI session gives for the same clicks, at every step of the history (undo included)."""
    reference = _session(package64, image, refine_mode="full", amp=False)
    session = _session(package64, image, **preview)
    for kji, positive in CLICKS:
        expected = reference.add_click(_ras(reference, kji), positive)
        assert expected.exact
        result = session.add_click(_ras(session, kji), positive)
        assert not result.exact and session.needs_confirm
    assert any(not np.array_equal(a[0], b[0])
               for a, b in zip(_history_arrays(session)[1:], _history_arrays(reference)[1:]))
    clicks = session.clicks
    confirmed = session.confirm()
    assert confirmed.exact and not session.needs_confirm
    assert confirmed.n_clicks == 3 and session.clicks == clicks
    assert confirmed.timings["confirm_s"] > 0 and "model_s" in confirmed.timings  # preview's kept
    for (p, m, c), (p_ref, m_ref, c_ref) in zip(_history_arrays(session), _history_arrays(reference)):
        assert c == c_ref
        assert np.array_equal(p.view(np.uint16), p_ref.view(np.uint16))
        assert np.array_equal(m, m_ref)
    assert_ct_mask_is_the_back_mapping(session)
    if preview["refine_mode"] == "fast":  # the next window click finds the first norm's moments
        assert session.history.current.memo.get("moments") is not None
    # Undo restores the confirmed previous mask; a new preview is confirmed on its own.
    session.undo()
    reference.undo()
    assert np.array_equal(session.mask_on_ct(), reference.mask_on_ct())
    kept = list(session.history)
    session.add_click(_ras(session, CLICKS[2][0]), CLICKS[2][1])
    assert session.needs_confirm
    if preview["refine_mode"] == "fast":
        assert_tracked_statistics_exact(session)
    session.confirm()
    assert list(session.history)[:-1] == kept and all(a is b for a, b in zip(session.history, kept))
    reference.add_click(_ras(reference, CLICKS[2][0]), CLICKS[2][1])
    assert np.array_equal(session.mask_on_ct(), reference.mask_on_ct())
    assert session.confirm().exact  # nothing left to do


def test_a_cancelled_confirm_leaves_the_previews_and_the_clicks_as_they_were(package64, image):
    import threading

    session = _session(package64, image, refine_mode="fast")
    for kji, positive in CLICKS[:2]:
        session.add_click(_ras(session, kji), positive)
    before = list(session.history)
    arrays = _history_arrays(session)
    cancel = threading.Event()
    # Cancelled in the middle of the first float32 network pass (after its first layer).
    first = next(iter(session.backend.networks["refine"][0].modules()))
    handle = next(m for m in first.modules() if not list(m.children())).register_forward_hook(
        lambda *args: cancel.set())
    try:
        assert session.confirm(cancel) is None
    finally:
        handle.remove()
    assert all(a is b for a, b in zip(session.history, before)) and len(session.history) == 3
    for (p, m, c), (p0, m0, c0) in zip(_history_arrays(session), arrays):
        assert c == c0 and np.array_equal(p, p0) and np.array_equal(m, m0)
    assert session.needs_confirm


def test_a_click_through_the_worker_cancels_the_background_confirm_and_the_next_one_catches_up(
        package64, image):
    from InteractiveRefineLib.worker import Worker

    reference = _session(package64, image, refine_mode="full", amp=False)
    session = _session(package64, image, refine_mode="fast")
    worker = Worker()
    assert not session.needs_confirm  # the float32 initial state is exact already
    for kji, positive in CLICKS[:2]:
        worker.run(session.add_click, _ras(session, kji), positive)
        reference.add_click(_ras(reference, kji), positive)
    job = worker.background(session.confirm)
    assert job is not None
    result = worker.run(session.add_click, _ras(session, CLICKS[2][0]), CLICKS[2][1])  # cancels or follows it
    assert not job.running and not worker.running
    assert result.n_clicks == 3 and not result.exact and len(session.history) == 4
    reference.add_click(_ras(reference, CLICKS[2][0]), CLICKS[2][1])
    done = []
    worker.background(session.confirm, done=done.append).join()
    assert len(done) == 1 and done[0].exact and done[0].n_clicks == 3
    assert np.array_equal(session.mask_on_ct(), reference.mask_on_ct())
    assert np.array_equal(session.probability, reference.probability)


def test_a_call_while_a_confirm_runs_is_refused_as_busy_and_changes_nothing(package64, image):
    from InteractiveRefineLib.errors import SessionStateError

    session = _session(package64, image, refine_mode="fast")
    session.add_click(_ras(session, CLICKS[0][0]), True)
    entered, gate = threading.Event(), threading.Event()
    layer = next(m for m in session.backend.networks["refine"][0].modules() if not list(m.children()))

    def hold(module, inputs):  # the confirm's first layer waits until the test lets it go
        entered.set()
        gate.wait(10)

    handle = layer.register_forward_pre_hook(hold)
    thread = threading.Thread(target=session.confirm)
    thread.start()
    try:
        assert entered.wait(10)
        with pytest.raises(SessionStateError, match="busy"):
            session.undo()
        with pytest.raises(SessionStateError, match="busy"):
            session.add_click(_ras(session, CLICKS[1][0]), False)
    finally:
        gate.set()
        thread.join()
        handle.remove()
    assert len(session.history) == 2 and not session.needs_confirm
