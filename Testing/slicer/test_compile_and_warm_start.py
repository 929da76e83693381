"""Compiled networks and the warm start in the Slicer Logic (issue 29), on real MRML (slicer-core)
with the real STS_001 PET/CT and real (tiny) networks.

The compilation uses torch.compile's "eager" backend (the machinery without a C++ build) and is
held back by an event the test sets later: only that step is delayed. Segment and clicks must
complete while it is pending; the next click after it ends runs on the compiled copies.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_logic import pick_clicks, segment_sts


def wait_background(logic, limit_s: float = 120.0) -> None:
    """The Widget's timer: poll until neither the warm-up nor the compilation runs."""
    t0 = time.perf_counter()
    while logic.pollBackground(0.05):
        assert time.perf_counter() - t0 < limit_s, "the background work did not finish"


@pytest.fixture
def held_compile(monkeypatch):
    """InferenceBackend._compile waits for ``release`` (set by the test, or after 300 s) first."""
    from InteractiveRefineLib import backend, policy

    monkeypatch.setattr(policy, "AUTO_FULL_SECONDS", 1e9)  # whole-ROI clicks: the path that compiles
    release, started = threading.Event(), threading.Event()
    compile_ = backend.InferenceBackend._compile

    def held(self, stage):
        started.set()
        release.wait(300)
        return compile_(self, stage)

    monkeypatch.setattr(backend.InferenceBackend, "_compile", held)
    yield release, started
    release.set()


@pytest.fixture
def compiling_logic(logic):
    logic.compileOnCpu, logic.compileBackend = True, "eager"
    messages = []
    logic.logCallback = messages.append
    return logic, messages


def click(logic, ras, positive):
    logic.getClickNodes()[0 if positive else 1].AddControlPointWorld(*ras)  # as placing it in a view
    np.testing.assert_array_equal(logic.segmentMask(), logic.session.mask_on_ct())
    return logic.clickTimings[-1]


def test_segment_and_clicks_do_not_wait_for_the_compilation(compiling_logic, module, sts_nodes,
                                                            tiny_package_dir, held_compile):
    logic, messages = compiling_logic
    release, started = held_compile
    t0 = time.perf_counter()
    segment_sts(logic, sts_nodes, tiny_package_dir)
    backend = logic.session.backend
    assert started.wait(60) and backend.compile_mode == "default"
    assert logic.compiling and logic.backgroundRunning and not backend.compiled
    before = logic.segmentMask()
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    for ras, positive in ((positive_ras, True), (negative_ras, False)):
        click(logic, ras, positive)
        assert not release.is_set() and logic.compiling  # still pending: the click did not wait
        assert "compiled network" not in logic.lastStatus
    assert len(logic.session.clicks) == 2 and not np.array_equal(logic.segmentMask(), before)
    assert logic.pollBackground(0.01)  # the Widget's timer keeps polling
    pending_s = time.perf_counter() - t0
    assert not any("Compiled network ready" in m for m in messages)

    release.set()
    wait_background(logic)
    ready = [m for m in messages if m.startswith("Compiled network ready")]
    assert len(ready) == 1 and "default mode" in ready[0], messages
    assert backend.compiled.get("refine")
    n = len(messages)
    click(logic, positive_ras + np.array([0.0, 0.0, 2.0]), True)
    compiled_steps = [m for m in messages[n:] if m.endswith(", compiled network")]
    assert compiled_steps, messages[n:]  # the click ran on the compiled copies: a preview ...
    assert logic.lastResult.exact  # ... that the exact (eager) pass replaced at once (no scheduler)
    assert len(logic.session.clicks) == 3 and pending_s < 300


def test_a_failing_compilation_leaves_eager_clicks_working(compiling_logic, module, sts_nodes,
                                                           tiny_package_dir, held_compile, monkeypatch):
    import torch

    logic, messages = compiling_logic
    release, started = held_compile
    warnings = []
    logic.warningCallback = warnings.append

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    segment_sts(logic, sts_nodes, tiny_package_dir)
    assert started.wait(60)
    release.set()
    wait_background(logic)
    failed = [m for m in messages if m.startswith("Compiling the network failed")]
    assert len(failed) == 1 and "no C++ compiler found" in failed[0] and "uncompiled" in failed[0]
    positive_ras, negative_ras = pick_clicks(module, logic, sts_nodes)
    click(logic, positive_ras, True)
    click(logic, negative_ras, False)
    backend = logic.session.backend
    assert not backend.compiled and not backend.last_compiled and len(logic.session.clicks) == 2
    assert "compiled network" not in logic.lastStatus
    assert not warnings  # the compile thread's record is not relayed as the click's warning
    assert sum("Compiling the network failed" in m for m in messages) == 1  # said once


def test_the_switch_and_the_cpu_default(logic, sts_nodes, tiny_package_dir, monkeypatch):
    from InteractiveRefineLib import policy

    monkeypatch.setattr(policy, "AUTO_FULL_SECONDS", 1e9)
    assert logic.params.compileNetworks is True  # the default: on, for CUDA sessions
    segment_sts(logic, sts_nodes, tiny_package_dir)
    backend = logic.session.backend
    assert backend.device.type == "cpu" and backend.compile_mode is None and not logic.compiling
    logic.compileOnCpu, logic.compileBackend = True, "eager"
    logic.setCompileNetworks(False)  # off: no compilation at the next Segment
    assert logic.getParameterNode().GetParameter("compileNetworks") == "False"
    segment_sts(logic, sts_nodes, tiny_package_dir)
    assert logic.session.backend.compile_mode is None and not logic.backgroundRunning
    logic.setCompileNetworks(True)
    segment_sts(logic, sts_nodes, tiny_package_dir)
    assert logic.session.backend.compile_mode == "default"
    assert logic.session.backend.compile_backend == "eager"
    wait_background(logic)


# ------------------------------------------------------------------ warm start
@pytest.fixture
def counted_loads(monkeypatch):
    """load_model_package, counted and slowed by 1 s (the warm-up must return before it ends)."""
    from InteractiveRefineLib import model_package

    loads = []
    load = model_package.load_model_package

    def counted(path=None):
        loads.append(path)
        time.sleep(1.0)
        return load(path)

    monkeypatch.setattr(model_package, "load_model_package", counted)
    return loads


def test_warm_up_returns_at_once_and_segment_reuses_its_package(logic, sts_nodes, tmp_path, counted_loads):
    from InteractiveRefineLib.model_package import create_random_model_package

    from conftest import TINY_NETWORK, TINY_ROI

    folder = create_random_model_package(tmp_path / "warm", network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                         seed=3)
    logic.params.modelPath = str(folder)
    t0 = time.perf_counter()
    assert logic.warmUp() is True
    assert time.perf_counter() - t0 < 0.5 and logic.warmUpRunning and logic.backgroundRunning
    assert logic.warmUp() is False  # one at a time
    wait_background(logic)
    assert "error" not in logic.warmUpInfo and {"import_s", "load_s", "total_s"} <= set(logic.warmUpInfo)
    assert len(counted_loads) == 1
    cached = logic.getModelPackage(str(folder), "cpu")
    segment_sts(logic, sts_nodes, folder)
    assert len(counted_loads) == 1 and logic.session.package is cached  # no second load


def test_the_model_field_takes_a_shipped_models_name(logic, tmp_path, monkeypatch):
    """Typing ``gtvp_gtvn`` in the Model field loads the shipped opt-in package, whatever the
    working directory, and the Logic caches it like a folder."""
    monkeypatch.chdir(tmp_path)
    package = logic.getModelPackage("gtvp_gtvn", "cpu")
    assert package.spec.name == "interactive-refine-gtvp-gtvn" and package.path.name == "gtvp_gtvn"
    assert logic.getModelPackage("gtvp_gtvn", "cpu") is package


def test_segment_during_the_warm_up_waits_for_its_load(logic, sts_nodes, tmp_path, counted_loads):
    from InteractiveRefineLib.model_package import create_random_model_package

    from conftest import TINY_NETWORK, TINY_ROI

    folder = create_random_model_package(tmp_path / "warm2", network=TINY_NETWORK, roi_size_vox=TINY_ROI,
                                         seed=4)
    assert logic.warmUp(str(folder), "cpu")
    segment_sts(logic, sts_nodes, folder)  # at once: the load under way is not repeated
    assert len(counted_loads) == 1
    logic.waitForWarmUp(60)


def test_a_broken_model_path_is_logged_by_the_warm_up_and_reported_by_segment(
        logic, module, sts_nodes, tmp_path, caplog):
    broken = tmp_path / "no_model_here"
    broken.mkdir()
    with caplog.at_level("WARNING", logger="InteractiveRefineSlicerLib.logic"):
        assert logic.warmUp(str(broken), "cpu") is True  # no exception into the panel
        assert logic.waitForWarmUp(120)
    assert "error" in logic.warmUpInfo
    assert any("Warm-up failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(Exception) as warmed:
        segment_sts(logic, sts_nodes, broken)
    fresh = module.InteractiveRefineLogic()
    try:
        with pytest.raises(Exception) as cold:
            segment_sts(fresh, sts_nodes, broken)
    finally:
        fresh.clear()
    assert type(warmed.value) is type(cold.value) and str(warmed.value) == str(cold.value)
    assert str(warmed.value) and logic.session is None


def test_the_warm_up_is_skipped_without_its_dependencies(logic, monkeypatch):
    from InteractiveRefineSlicerLib import dependencies

    missing = [dependencies.Problem("monai", "==1.5.2", None)]
    monkeypatch.setattr(dependencies, "problems", lambda *args: missing)
    monkeypatch.setattr(dependencies, "install", lambda *args: pytest.fail("the warm-up installed packages"))
    assert logic.warmUp() is False
    assert not logic.warmUpRunning and "monai" in logic.warmUpInfo["skipped"]


def test_the_warm_up_never_raises(logic, monkeypatch):
    from InteractiveRefineSlicerLib import dependencies

    def broken(*args):
        raise OSError("metadata unreadable")

    monkeypatch.setattr(dependencies, "problems", broken)
    assert logic.warmUp() is False


def test_segment_right_after_the_warm_up_in_a_fresh_process(tiny_package_dir):
    """Slicer just started (no torch yet): Segment pressed while the warm-up still imports torch
    and MONAI waits for it (two threads importing MONAI at once break its imports) and loads nothing twice."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("cold_start.py")
    done = subprocess.run([sys.executable, str(script), "--one", "warm_at_once", "--device", "cpu",
                           "--model", str(tiny_package_dir)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in result["warmup"] and result["voxels"] >= 0
    assert "Loading model from" not in done.stderr  # the warm-up's load was reused
