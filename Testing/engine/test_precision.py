"""Reduced-precision inference (``amp``): bfloat16 on the CPU, float16 on CUDA."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from InteractiveRefineLib import geometry, netcopies, policy
from InteractiveRefineLib.backend import cpu_bfloat16_supported
from InteractiveRefineLib.session import RefinementSession

from conftest import TINY_NETWORK, data_path


def test_auto_precision_is_reduced_only_for_large_rois_on_a_cpu_with_bfloat16(tiny_package, tmp_path):
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package

    assert RefinementSession(tiny_package, device="cpu").amp is False  # small ROI: float32
    edge = 100
    assert edge**3 > policy.LARGE_ROI_VOXELS
    large = load_model_package(create_random_model_package(
        tmp_path / "tiny100", network=TINY_NETWORK, roi_size_vox=(edge,) * 3, seed=1))
    assert RefinementSession(large, device="cpu").amp is cpu_bfloat16_supported()
    assert RefinementSession(large, device="cpu", amp=False).amp is False
    assert RefinementSession(tiny_package, device="cpu", amp=True).amp is True
    with pytest.raises(ValueError, match="amp must be True, False or 'auto'"):
        RefinementSession(tiny_package, device="cpu", amp="bfloat16")


def test_the_bfloat16_network_computes_the_same_function_and_leaves_the_package_alone(tiny_package):
    """The CPU bfloat16 copy normalises through batch statistics in channels-last layout; in
    float32 it gives the network's own output, and the package's networks stay as they were
    (another session may share them)."""
    import torch

    net = tiny_package.networks["refine"][0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    copy = netcopies.cpu_network(net)
    norms = [m for _, m in netcopies.instance_norms(copy)]
    assert norms and all(type(m).__name__ == "BatchStatsInstanceNorm3d" for m in norms)
    assert all(type(m) is torch.nn.InstanceNorm3d for _, m in netcopies.instance_norms(net))
    x = torch.randn((1, 5) + tuple(tiny_package.roi_size_vox), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = net(x)
        got = copy(x.contiguous(memory_format=torch.channels_last_3d))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = copy(x.contiguous(memory_format=torch.channels_last_3d)).float()
    assert torch.allclose(got, expected, atol=1e-3)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    assert (reduced - expected).abs().max() < 0.05 * expected.abs().max()
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bfloat16_refinement_follows_float32_on_the_real_case():
    """The shipped model on CHGJ015: the clicks of a float32 full-ROI loop replayed with bfloat16
    inference give nearly the same masks (Dice >= 0.95 per click: bfloat16 rounding flips
    voxels near the threshold, and how many depends on the thread count's summation order,
    0.96-0.99 measured on 1 and 2 threads) and the same accuracy (within 0.01)."""
    from InteractiveRefineLib.metrics import dice
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.simulation import label_centroid_ras, run_simulation

    folder = data_path("hecktor2020_chgj015")
    ct, pet, label = (geometry.read_volume(folder / f"CHGJ015_{s}.nii.gz") for s in ("ct", "pt", "ct_gtvt"))
    package, centre = load_model_package(), label_centroid_ras(label)
    truth = label.array > 0
    sessions = {}
    for amp in (False, True):
        # every click refined by the network (the shipped card's threshold start would skip one)
        session = RefinementSession(package, device="cpu", refine_mode="full", amp=amp, threshold_start=False)
        session.set_image(ct, pet, roi_center_ras=centre)
        sessions[amp] = session
    clicks = run_simulation(sessions[False], label, 6, seed=0, surface_metrics=False)["clicks"]
    sessions[False].reset()
    sessions[True].initial()
    curves = {False: [], True: []}
    for click in clicks:
        masks = {}
        for amp, session in sessions.items():
            assert session.add_click(click["ras"], click["positive"]).mode == "full"
            masks[amp] = session.mask_on_ct().astype(bool)
            curves[amp].append(dice(masks[amp], truth))
        assert dice(masks[True], masks[False]) >= 0.95
    assert abs(np.mean(curves[True]) - np.mean(curves[False])) <= 0.01
    assert np.mean(curves[False]) > 0.5  # the clicks found the tumour: the comparison means something


_FAULTS_SCRIPT = """
import resource, os
from InteractiveRefineLib.runtime import apply_process_settings
apply_process_settings()  # what every entry point does before torch is used
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(1)
before = faults()
for _ in range(8):  # what a click does: whole-ROI activations allocated, written, freed
    x = torch.ones(1, 8, 144, 144, 144, dtype=torch.bfloat16)
    del x
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), faults() - before)
"""


def _allocation_faults(environment_value):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if environment_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = environment_value
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_process_settings_give_torch_huge_page_allocations_unless_turned_off():
    policy = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not policy.is_file() or "[never]" in policy.read_text():
        pytest.skip("this kernel grants no transparent huge pages")
    value, faults_on = _allocation_faults(None)
    off, faults_off = _allocation_faults("0")
    assert (value, off) == ("1", "0")  # set by apply_process_settings; a value already set is kept
    # Eight 48 MB activations: ~12,000 4 KB page faults each without, a few dozen 2 MB ones with.
    assert faults_off > 8 * 10000
    assert faults_on < faults_off / 10


def test_stored_probabilities_are_numpys_float16_of_the_float32_ones(tiny_package):
    """The session converts each probability map to float16 in torch (numpy's conversion is slow
    on subnormal values, which a probability map is full of): bit for bit what numpy gives."""
    import torch

    logits = torch.linspace(-110.0, 40.0, 200_001)  # sigmoid spans subnormal to 1
    probability = torch.sigmoid(logits)
    assert (probability.numpy() < 6.1e-5).any() and (probability.numpy() > 0).any()
    assert np.array_equal(probability.half().numpy().view(np.uint16),
                          probability.numpy().astype(np.float16).view(np.uint16))
    session = RefinementSession(tiny_package, device="cpu", amp=False, refine_mode="full")
    volume = geometry.Volume.from_array(
        np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    pet = geometry.Volume.from_array(volume.array + 1.0, volume.ijk_to_ras)  # the PET may not be the CT
    session.set_image(volume, pet, roi_center_ras=(40.0, 40.0, 40.0))
    session.initial()
    assert session.history.initial.probability.dtype == np.float16
