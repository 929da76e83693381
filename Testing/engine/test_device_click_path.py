"""The device-resident click path (issue 29), exercised on CPU torch: back-mapping on the device,
the previous probability from device copies, region removal in the foreground's box, the
compiled-network switch, bfloat16 on CUDA in the plan, and the benchmark's per-part breakdown."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from InteractiveRefineLib import backmap, click_regions, geometry, policy
from InteractiveRefineLib.geometry import Grid
from InteractiveRefineLib.runtime import user_cache_dir
from InteractiveRefineLib.session import RefinementSession

from conftest import TINY_NETWORK, hot_sphere_pair

REPO = Path(__file__).resolve().parents[2]
ROI = (64, 64, 64)


@pytest.fixture(scope="module")
def package64(tmp_path_factory):
    from InteractiveRefineLib.model_package import create_random_model_package, load_model_package

    folder = tmp_path_factory.mktemp("tiny64_device")
    return load_model_package(create_random_model_package(folder, network=TINY_NETWORK, roi_size_vox=ROI,
                                                          seed=1))


@pytest.fixture(scope="module")
def image():
    """A PET/CT pair on a 1 x 1 x 2 mm grid with a hot sphere (CT and PET on different grids)."""
    return hot_sphere_pair()


def _smooth_probability(shape, seed=0):
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    centre = np.array(shape) / 2 + rng.normal(0, 2, 3)
    r = np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)
    return (1.0 / (1.0 + np.exp((r - 12.0) / 2.0))).astype(np.float16)


def _grids():
    grid = Grid((40, 44, 48), np.diag([1.0, 1.0, 1.0, 1.0]))
    rotation = np.eye(4)
    angle = 0.3
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix = rotation @ np.diag([0.8, 0.75, 2.0, 1.0])
    matrix[:3, 3] = [3.1, 2.2, 0.7]
    return grid, Grid((22, 60, 58), matrix)


def _mismatch_is_at_the_threshold(a, b, probability, grid, ct_box_grid, threshold, tol=1e-4):
    """Where two CT masks differ, the host re-sampled probability is within ``tol`` of threshold."""
    differ = a != b
    if not differ.any():
        return True
    resampled = geometry.resample(probability.astype(np.float32), grid, ct_box_grid, order=1)
    return bool(np.all(np.abs(resampled[differ] - threshold) < tol))


def test_device_resampling_equals_the_host_one_within_float32_rounding():
    grid, ct_box_grid = _grids()
    probability = _smooth_probability(grid.shape).astype(np.float32)
    host = geometry.resample(probability, grid, ct_box_grid, order=1)
    inside = geometry.inside_mask(grid, ct_box_grid)
    # the device path is only asked for CT voxels whose neighbours lie in its crop: compare there
    box = geometry.bounding_box_in(grid, ct_box_grid)
    source = geometry.expand_box(box, grid.shape, 2)
    device = backmap.resample_linear(torch.from_numpy(probability[source]), geometry.sub_grid(grid, source),
                                     ct_box_grid).numpy()
    assert device.shape == host.shape
    assert np.abs(device - host)[inside].max() < 1e-5


@pytest.mark.parametrize("with_previous", [False, True])
def test_device_back_mapping_gives_the_host_mask(with_previous):
    from InteractiveRefineLib.state import State

    grid, ct_box_grid = _grids()
    threshold = 0.5
    before = _smooth_probability(grid.shape, seed=1)
    after = _smooth_probability(grid.shape, seed=2)
    previous = None
    box = None
    if with_previous:
        previous = State((), (), before, backmap.to_ct(before, threshold, grid, ct_box_grid), {})
        box = (slice(10, 30), slice(8, 30), slice(12, 40))
        after = before.copy()
        after[box] = _smooth_probability(grid.shape, seed=2)[box]
    host = backmap.to_ct(after, threshold, grid, ct_box_grid, previous, box)
    device = backmap.to_ct_device(torch.from_numpy(after), threshold, grid, ct_box_grid, previous, box,
                                  None if previous is None else torch.from_numpy(before))
    assert device.dtype == np.uint8 and device.shape == host.shape and host.sum() > 100
    assert _mismatch_is_at_the_threshold(host, device, after, grid, ct_box_grid, threshold)
    assert (host != device).sum() <= 2


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.4, 1e-8, 0.99, 1.0])
def test_float16_threshold_on_the_bits_equals_numpy(threshold):
    """Every float16 value (negative, -0, subnormal, inf, NaN included) is above the threshold on
    the bit patterns exactly when numpy says so."""
    from InteractiveRefineLib.classes import above_threshold

    every = np.arange(2 ** 16, dtype=np.uint16).view(np.float16)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(above_threshold(every, threshold), every > threshold)
    assert np.array_equal(above_threshold(every.astype(np.float32), threshold),
                          every.astype(np.float32) > threshold)


def _array_module(name):
    """numpy, or CuPy (on a GPU with CuPy installed; skipped elsewhere)."""
    if name == "numpy":
        return np
    cupy = pytest.importorskip("cupy", reason="region removal on the GPU needs CuPy")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return cupy


def _host(array):
    return array if isinstance(array, np.ndarray) else array.get()


@pytest.mark.parametrize("module", ["numpy", "cupy"])
def test_region_labelling_in_the_foreground_box_equals_the_whole_roi(module):
    """The same rule on the host (scipy) and on the GPU (cupyx.scipy.ndimage): equal to labelling
    the whole ROI with scipy."""
    xp = _array_module(module)
    rng = np.random.default_rng(3)
    foreground = np.zeros((30, 32, 34), bool)
    foreground[5:12, 6:14, 8:15] = True
    foreground[20:25, 20:28, 3:9] = True
    foreground[12, 14, 15] = True  # touches the first blob at a corner (26-connectivity)
    foreground |= rng.random(foreground.shape) > 0.995
    region = click_regions.rejected_region(xp.asarray(foreground), (6, 7, 9))
    from scipy import ndimage

    labels, _ = ndimage.label(foreground, structure=np.ones((3, 3, 3), bool))
    assert type(region) is type(xp.asarray(foreground))
    assert np.array_equal(_host(region), labels == labels[6, 7, 9])
    # suppressed: a positive click outside the foreground's box must count as background
    rejections = (labels == labels[21, 21, 4],)  # a host rejection is read on the GPU too
    on = xp.asarray(foreground)
    assert click_regions.suppressed(rejections, on, [(0, 0, 0)]) is not None
    assert click_regions.suppressed(rejections, on, [(22, 22, 5)]) is None
    assert click_regions.suppressed(rejections, xp.zeros_like(on), [(2, 2, 2)]) is not None
    # a positive click in the first blob: a rejection holding it is kept, the far rejected blob is removed
    touching = (labels == labels[6, 7, 9],)
    assert click_regions.suppressed(touching, on, [(6, 7, 9)]) is None
    assert np.array_equal(_host(click_regions.suppressed(rejections, on, [(6, 7, 9)])), rejections[0])


def test_region_removal_runs_where_the_click_path_does(package64):
    """Host arrays off the device path and on the CPU; CuPy only on CUDA's device path."""
    from InteractiveRefineLib.backend import InferenceBackend, detect_hardware

    hardware = detect_hardware()
    cpu = policy.plan(policy.Request("cpu", "full", False), hardware, 64 ** 3)
    for device_path in (None, False, True):
        backend = InferenceBackend(package64, cpu, hardware, device_path)
        assert click_regions.arrays_for(backend).name == "scipy"
    if torch.cuda.is_available():
        cuda = policy.plan(policy.Request("cuda", "full", False), hardware, 64 ** 3)
        try:
            import cupy  # noqa: F401
            expected = "cupy"
        except ImportError:
            expected = "scipy"
        assert click_regions.arrays_for(InferenceBackend(package64, cuda, hardware)).name == expected
        assert click_regions.arrays_for(InferenceBackend(package64, cuda, hardware, False)).name == "scipy"


def _session(package, image, **kwargs):
    session = RefinementSession(package, device="cpu", refine_mode="full", amp=False, **kwargs)
    session.set_image(*image)
    session.initial()
    return session


CLICKS = [((50.0, 45.0, 48.0), True), ((40.0, 40.0, 44.0), False), ((55.0, 50.0, 50.0), True)]


def _play(session):
    results = [session.add_click(ras, positive) for ras, positive in CLICKS]
    return results, [s.probability for s in session.history], [s.ct_mask for s in session.history]


def test_device_path_on_the_cpu_gives_the_host_results(package64, image):
    host = _session(package64, image)
    device = _session(package64, image, device_path=True)
    assert not host.backend.device_path and device.backend.device_path
    _, host_p, host_m = _play(host)
    results, device_p, device_m = _play(device)
    for a, b in zip(host_p, device_p):  # the previous probability from device copies: bit-equal
        assert np.array_equal(a, b)
    for a, b, p in zip(host_m, device_m, host_p):
        assert _mismatch_is_at_the_threshold(a, b, p, host.grid, host.image.ct_box_grid, host.card.threshold)
        # float64 interpolation as scipy's: even this random model's many exact 0.5 ties agree
        assert np.array_equal(a, b)
    for result in results:
        for part in ("map_s", "model_s", "removal_s", "backmap_s", "transfer_s"):
            assert part in result.timings


def test_region_removal_on_the_gpu_gives_the_host_masks(package64, image):
    """On CUDA the device path labels with CuPy; the same network's clicks give the host path's
    probabilities, rejections and removed volumes."""
    _array_module("cupy")
    sessions = []
    for device_path in (False, True):
        session = RefinementSession(package64, device="cuda", refine_mode="full", amp=False,
                                    device_path=device_path)
        session.set_image(*image)
        session.initial()
        sessions.append(session)
    host, gpu = sessions
    assert click_regions.arrays_for(gpu.backend).name == "cupy"
    _, host_p, _ = _play(host)
    _, gpu_p, _ = _play(gpu)
    for a, b in zip(host_p, gpu_p):
        assert np.array_equal(a, b)
    for a, b in zip(host.history, gpu.history):
        assert a.removed_ml == b.removed_ml and len(a.rejections) == len(b.rejections)
        assert all(np.array_equal(x, _host(y)) for x, y in zip(a.rejections, b.rejections))


def test_compile_off_is_bit_identical_and_compiled_clicks_are_confirmed(package64, image):
    plain = _session(package64, image)
    off = _session(package64, image, compile=False)
    _, plain_p, plain_m = _play(plain)
    _, off_p, off_m = _play(off)
    assert all(np.array_equal(a, b) for a, b in zip(plain_p + plain_m, off_p + off_m))
    assert off.backend.compile_mode is None and not off.backend.compiled
    with pytest.raises(ValueError, match="compile"):
        RefinementSession(package64, device="cpu", compile="fastest")

    # the machinery with torch.compile's "eager" backend (no C++ build on a test machine)
    session = RefinementSession(package64, device="cpu", refine_mode="full", amp=False, compile=True)
    session.backend.compile_backend = "eager"
    session.set_image(*image)
    session.initial()
    assert session.backend.wait_compiled(timeout=300), session.backend.compile_info
    assert session.backend.compile_info["mode"] == "default" and "error" not in session.backend.compile_info
    for ras, positive in CLICKS:
        result = session.add_click(ras, positive)
        assert not result.exact  # a compiled pass is a preview: confirm() makes it the eager one
    session.confirm()
    for a, b in zip(plain_p + plain_m, [s.probability for s in session.history]
                    + [s.ct_mask for s in session.history]):
        assert np.array_equal(a, b)


def test_bfloat16_on_cuda_in_the_plan_and_the_inductor_cache(monkeypatch):
    cuda = policy.Hardware(cuda=True)
    assert policy.plan(policy.Request("cuda", "full", True, "bfloat16"), cuda, 144**3).precision == "bfloat16"
    assert policy.plan(policy.Request("cuda", "full", True), cuda, 144**3).precision == "float16"
    assert policy.plan(policy.Request("cpu", "full", True, "float16"), cuda, 144**3).precision == "bfloat16"
    assert policy.plan(policy.Request("cuda", "full", False, "bfloat16"), cuda, 144**3).precision == "float32"
    with pytest.raises(ValueError, match="amp_dtype"):
        policy.Request("cuda", "full", True, "half")
    assert user_cache_dir({"XDG_CACHE_HOME": "/c"}, "linux") == os.path.join("/c", "InteractiveRefine")
    code = ("import os\nfrom InteractiveRefineLib.runtime import apply_process_settings\n"
            "apply_process_settings()\nprint(os.environ['TORCHINDUCTOR_CACHE_DIR'])\n")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = "/tmp/xdg"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert done.stdout.strip() == os.path.join("/tmp/xdg", "InteractiveRefine", "inductor"), done.stderr
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(env, TORCHINDUCTOR_CACHE_DIR="/mine"), timeout=120)
    assert done.stdout.strip() == "/mine"  # a value already set is kept


def test_latency_benchmark_writes_the_breakdown(tmp_path):
    out = tmp_path / "latency.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "click_latency.py"), "--random-tiny-model",
         "--case", "phantom", "--clicks", "2", "--threads", "1", "--no-replay", "--device-path", "on",
         "--modes", "full,full+bf16,full+host", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(out.read_text())
    parts = ("input_assembly_s", "network_s", "region_removal_s", "backmap_s", "host_transfer_s",
             "other_s", "wall_s")
    for mode in ("full", "full+bf16", "full+host"):
        summary = result["modes"][mode]
        assert set(parts) <= set(summary["breakdown_s"])
        assert all(isinstance(summary["breakdown_s"][p], float) for p in parts)
        assert summary["compile"] is None
    assert result["modes"]["full"]["device_path"] and not result["modes"]["full+host"]["device_path"]
    assert result["modes"]["full"]["region_removal"] == "scipy"  # CuPy only on CUDA
    assert result["modes"]["full+bf16"]["precision"] == "bfloat16"
    cold = result["cold_start_s"]
    for key in ("cuda_context_s", "weights_load_s", "weights_to_device_s", "first_pass_s"):
        assert key in cold
    assert "breakdown" in completed.stdout
