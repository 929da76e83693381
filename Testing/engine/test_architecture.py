"""The engine's parts on their own: the policy's decision table (no networks), the backend's own
network copies and out-of-memory fallback, the history, and a new card input plugged in by a
builder alone."""
from __future__ import annotations

import numpy as np
import pytest
from InteractiveRefineLib import policy
from InteractiveRefineLib.policy import Hardware, Request

LARGE = 144**3
SMALL = 72**3
CPU_BF16 = Hardware(cuda=False, cpu_bfloat16=True)
CPU_PLAIN = Hardware(cuda=False, cpu_bfloat16=False)
GPU = Hardware(cuda=True, cpu_bfloat16=True)
CL, CO = "channels_last", "contiguous"


@pytest.mark.parametrize(
    "request_, hardware, voxels, measured, expected",
    [
        # device, precision, layout, refine path, retime, warmup
        (Request(), GPU, LARGE, (), ("cuda", "float32", CO, "full", False, True)),
        (Request(amp=True), GPU, LARGE, (), ("cuda", "float16", CO, "full", False, True)),
        (Request(refine_mode="fast"), GPU, LARGE, (),
         ("cuda", "float32", CO, "window", False, False)),
        (Request(), CPU_BF16, SMALL, (), ("cpu", "float32", CO, "full", False, False)),
        (Request(), CPU_BF16, LARGE, (), ("cpu", "bfloat16", CL, "measure", False, False)),
        (Request(), CPU_PLAIN, LARGE, (), ("cpu", "float32", CL, "measure", False, False)),
        (Request(), CPU_BF16, LARGE, (0.5,), ("cpu", "bfloat16", CL, "full", False, False)),
        (Request(), CPU_BF16, LARGE, (1.5,), ("cpu", "bfloat16", CL, "measure", True, False)),
        (Request(), CPU_BF16, LARGE, (1.5, 0.9), ("cpu", "bfloat16", CL, "full", False, False)),
        (Request(), CPU_BF16, LARGE, (1.5, 1.2), ("cpu", "bfloat16", CL, "window", False, False)),
        (Request(), CPU_BF16, LARGE, (2.5,), ("cpu", "bfloat16", CL, "window", False, False)),
        (Request(amp=False), CPU_BF16, LARGE, (), ("cpu", "float32", CL, "measure", False, False)),
        (Request(refine_mode="full"), CPU_BF16, LARGE, (9.0,),
         ("cpu", "bfloat16", CL, "full", False, False)),
        (Request(device="cuda"), CPU_PLAIN, SMALL, (), ("cpu", "float32", CO, "full", False, False)),
        (Request(device="cpu"), GPU, SMALL, (), ("cpu", "float32", CO, "full", False, False)),
    ],
)
def test_the_plan_is_a_decision_table(request_, hardware, voxels, measured, expected):
    plan = policy.plan(request_, hardware, voxels, measured_pass_s=measured)
    assert (plan.device, plan.precision, plan.layout, plan.refine_path, plan.retime, plan.warmup) == expected


def test_plan_details_members_notes_and_bad_requests():
    # Two refine members per initial one: a 0.6 s initial pass means a 1.2 s refinement.
    plan = policy.plan(Request(), CPU_BF16, LARGE, members_ratio=2.0, measured_pass_s=(0.6, 0.6))
    assert plan.refine_path == "window"
    assert "not available" in policy.plan(Request(device="cuda"), CPU_PLAIN, SMALL).notes[0]
    measured = policy.after_measure(policy.plan(Request(), CPU_BF16, LARGE), (3.0,))
    assert measured.refine_path == "window" and measured.refine_mode == "fast"
    assert "window" in measured.notes[-1]
    oom = policy.after_oom(policy.plan(Request(amp=True), GPU, LARGE), CPU_PLAIN, LARGE)
    assert (oom.device, oom.precision, oom.layout) == ("cpu", "float32", CL) and oom.refine_path == "full"
    small_oom = policy.after_oom(policy.plan(Request(amp=True), GPU, SMALL), CPU_BF16, SMALL)
    assert small_oom.precision == "bfloat16"
    for bad in (dict(device="tpu"), dict(refine_mode="quick"), dict(amp="yes")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Request(**bad)


def test_the_backend_owns_its_copies_and_falls_back_to_the_cpu_on_out_of_memory(tiny_package):
    import torch
    from InteractiveRefineLib.backend import InferenceBackend

    before = {k: v.clone() for k, v in tiny_package.networks["refine"][0].state_dict().items()}
    plan = policy.plan(Request(device="cpu"), CPU_PLAIN, SMALL)
    backend = InferenceBackend(tiny_package, plan, CPU_PLAIN)
    assert all(a is not b for a, b in zip(backend.networks["refine"], tiny_package.networks["refine"]))
    calls = []

    def run(x):  # the first attempt runs out of GPU memory
        calls.append(x.device.type)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("out of memory")
        return backend.networks["refine"][0](x)

    x = torch.zeros((1, 5) + tuple(tiny_package.roi_size_vox))
    with pytest.warns(UserWarning, match="GPU out of memory"):
        backend.run(run, x)
    assert calls == ["cpu", "cpu"] and "out of memory" in backend.plan.notes[-1]
    for key, value in tiny_package.networks["refine"][0].state_dict().items():
        assert torch.equal(value, before[key])  # the package's networks are untouched
    assert next(tiny_package.networks["refine"][0].parameters()).device.type == "cpu"


def test_history_undo_reset_and_replace():
    from InteractiveRefineLib.errors import ClickError
    from InteractiveRefineLib.state import History, State

    def state(value):
        return State((value,), (), np.full((2, 2, 2), value, np.float16), np.zeros((1, 1, 1), np.uint8))

    history = History()
    history.start(state(0))
    with pytest.raises(ClickError, match="no click to undo"):
        history.undo()
    history.push(state(1))
    history.push(state(2))
    with pytest.raises(ValueError):
        history.current.probability[0, 0, 0] = 5  # read-only
    version = history.version
    assert history.undo().clicks == (1,) and history.version > version
    assert not history.replace(1, [state(9)], version=version)  # changed meanwhile: refused
    assert history.replace(1, [state(9)], version=history.version)
    assert [s.clicks for s in history] == [(0,), (9,)]
    assert history.reset() is history.initial and len(history) == 1


def test_a_new_card_input_plugs_in_with_a_builder_and_no_session_change(tmp_path):
    """A card whose refine stage declares one more input (here a constant channel) runs through
    the unchanged session once a builder for that name is registered; the input tensor carries
    the channel where the card puts it."""
    import torch
    from InteractiveRefineLib import inputs
    from InteractiveRefineLib.errors import ModelPackageError
    from InteractiveRefineLib.model_package import default_card, load_model_package, save_model_package
    from InteractiveRefineLib.networks import TINY_NETWORK, build_network
    from InteractiveRefineLib.phantom import make_phantom
    from InteractiveRefineLib.session import RefinementSession

    card = default_card(network=TINY_NETWORK, roi_size_vox=(48, 48, 48))
    card["inputs"]["refine"].insert(2, {"name": "test_constant", "options": {"value": 0.25}})
    torch.manual_seed(0)
    states = {s: [build_network(TINY_NETWORK, n).state_dict()]
              for s, n in (("initial", 2), ("refine", 6))}
    package = load_model_package(save_model_package(tmp_path / "plugged", card, states))
    refine = package.spec.stages["refine"]
    assert refine.in_channels == 6 and refine.channel("test_constant") == 2
    ct, pet, _ = make_phantom()
    session = RefinementSession(package, device="cpu", refine_mode="full")
    session.set_image(ct, pet)
    session.initial()
    with pytest.raises(ModelPackageError, match="test_constant"):
        session.add_click(session.grid.center_ras(), True)  # no builder yet: a clear error
    assert session.step == 0

    @inputs.register("test_constant")
    class Constant:
        static, local = True, False

        def fill(self, out, spec, ctx, box):
            out.fill_(float(spec.options["value"]))

    try:
        result = session.add_click(session.grid.center_ras(), True)
        x = session.refine_input()
        assert result.n_clicks == 1 and x.shape[1] == 6
        assert torch.all(x[0, 2] == 0.25)
        assert torch.equal(x[0, 3], torch.from_numpy(session.probability))  # previous_probability
    finally:
        inputs.BUILDERS.pop("test_constant")
