"""The module's own self-test (``InteractiveRefineTest``), run by pytest on slicer-core."""

from __future__ import annotations


def test_self_test_runs(module, scene, monkeypatch):
    # The tiny random network keeps this at a few seconds on 2 CPU cores; in Slicer the self-test
    # uses the default model when it is installed.
    monkeypatch.setenv("INTERACTIVE_REFINE_TEST_MODEL", "tiny")
    module.InteractiveRefineTest().runTest()


def test_self_test_is_registered(module):
    import slicer

    assert "InteractiveRefine" in slicer.selfTests
