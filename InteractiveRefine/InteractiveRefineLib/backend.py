"""The inference backend: the session's own network copies and how they run.

In the style of a MONAI ``Inferer``: the strategy (device, precision, layout) is fixed by the
session's :class:`~.policy.Plan`, and the backend owns everything that depends on it: deep copies
of the package's networks placed on the device (the package is never changed), autocast,
channels-last inputs, sliding-window inference for ROIs larger than the model's, the mean over
ensemble members, the fallback to the CPU when the GPU runs out of memory (with a warning), and
cancellation between two layers.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np

from . import netcopies, policy


class Cancelled(Exception):
    """A cancellable pass (:meth:`InferenceBackend.cancellable`) was cancelled."""


def detect_hardware() -> policy.Hardware:
    import torch

    return policy.Hardware(cuda=bool(torch.cuda.is_available()), cpu_bfloat16=cpu_bfloat16_supported())


def cpu_bfloat16_supported() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX, through oneDNN); without
    it bfloat16 autocast is emulated and slower than float32."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                    and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    except (AttributeError, RuntimeError):  # an older or differently built torch: stay in float32
        return False


def to_float16(values) -> np.ndarray:
    """``values`` (a torch tensor or numpy array) as the float16 numpy array the history stores,
    converted by torch (numpy's conversion takes a slow path for the subnormal values a
    probability map is full of; both give the same bits)."""
    import torch

    if isinstance(values, np.ndarray):
        values = torch.from_numpy(np.ascontiguousarray(values))
    return values.half().cpu().numpy()


def member_mean(members, forward):
    """Mean sigmoid probability (float32) of an ensemble: ``forward(net)`` gives each member's
    logits."""
    import torch

    total = None
    for net in members:
        prob = torch.sigmoid(forward(net).float())
        total = prob if total is None else total + prob
    return total / len(members)


class InferenceBackend:
    """Runs a package's networks under a plan.

    Args:
        package: the loaded :class:`~.model_package.ModelPackage` (left untouched).
        plan: the session's :class:`~.policy.Plan`; :attr:`plan` may be replaced later (the
            refine path after a timed pass; the device after an out-of-memory fallback).
        hardware: what :func:`detect_hardware` found.

    ``networks`` maps a stage (``initial``, ``refine``, or a refiner's own key such as
    ``window``) to its members.
    """

    def __init__(self, package, plan: policy.Plan, hardware: policy.Hardware):
        self.package = package
        self.plan = plan
        self.hardware = hardware
        self.roi = tuple(package.roi_size_vox)
        self.networks = {
            stage: [self._placed(net) for net in nets] for stage, nets in package.networks.items()
        }

    @property
    def device(self):
        import torch

        return torch.device(self.plan.device)

    @property
    def channels_last(self) -> bool:
        return self.plan.layout == "channels_last"

    def _placed(self, net):
        """A copy of ``net`` on the plan's device, in the plan's layout."""
        if self.channels_last:
            return netcopies.cpu_network(net.cpu())
        return copy.deepcopy(net).to(self.device)

    def autocast(self, exact: bool = False):
        """The plan's reduced precision as an autocast context (none for float32 or ``exact``)."""
        import torch

        if exact or not self.plan.reduced_precision:
            return contextlib.nullcontext()
        if self.plan.precision == "float16":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def predict(self, stage: str, x, *, exact: bool = False, window: bool = False) -> np.ndarray:
        """Mean sigmoid probability of ``stage``'s members for input ``x`` ``[1, C, k, j, i]``:
        ``[k, j, i]`` numpy, float16 (what the history stores) for the ROI and float32 for a
        window on the CPU (it is blended). ``window``: ``x`` is a window and runs on the
        ``"window"`` networks. ``exact``: float32 whatever the plan's precision."""
        return self.run(lambda inputs: self._members_mean(stage, inputs, window), x, exact)

    def run(self, fn, x, exact: bool = False):
        """``fn(x)`` on the device, in inference mode and the plan's precision; on GPU
        out-of-memory, move to the CPU (:func:`policy.after_oom`) with a warning and run it there."""
        import torch

        try:
            with torch.inference_mode(), self.autocast(exact):
                return fn(x.to(self.device))
        except torch.cuda.OutOfMemoryError:
            warnings.warn("GPU out of memory; falling back to the CPU for this session", stacklevel=3)
            torch.cuda.empty_cache()
            self.plan = policy.after_oom(self.plan, self.hardware, int(np.prod(self.roi)))
            window = self.networks.pop("window", None)
            self.networks = {s: [self._placed(n) for n in nets] for s, nets in self.networks.items()}
            if window is not None:
                self.networks["window"] = [n.cpu() for n in window]
            with torch.inference_mode(), self.autocast(exact):
                return fn(x.cpu())

    def _members_mean(self, stage: str, x, window: bool):
        import torch
        from monai.inferers import sliding_window_inference

        if x.device.type == "cpu" and (window or self.channels_last):  # channels-last networks
            x = x.contiguous(memory_format=torch.channels_last_3d)

        def forward(net):
            if window or tuple(x.shape[2:]) == self.roi:
                return net(x)
            return sliding_window_inference(x, self.roi, sw_batch_size=1, predictor=net, overlap=0.25,
                                            mode="gaussian")

        mean = member_mean(self.networks["window" if window else stage], forward)[0, 0]
        # On CUDA copy back float16 either way: half the device-to-host bytes.
        return to_float16(mean) if mean.is_cuda or not window else mean.float().cpu().numpy()

    def calibrate(self, stage: str, x) -> tuple:
        """One pass of ``stage``'s members on ``x`` recording every instance norm's statistics:
        ``(per-member statistics, float16 mean probability)``."""
        def record(inputs):
            recorded = []

            def forward(net):
                recorded.append({})
                with netcopies.record_norm_stats(net, recorded[-1]):
                    return net(inputs)

            mean = member_mean(self.networks[stage], forward)
            return recorded, to_float16(mean[0, 0])

        return self.run(record, x)

    @contextlib.contextmanager
    def cancellable(self, cancel):
        """While inside, every layer of the backend's networks checks the
        :class:`threading.Event` ``cancel`` before it runs and raises :class:`Cancelled` once set."""
        if cancel is None:
            yield
            return

        def check(module, inputs):
            if cancel.is_set():
                raise Cancelled()

        if cancel.is_set():
            raise Cancelled()
        handles = [
            module.register_forward_pre_hook(check)
            for nets in self.networks.values() for net in nets for module in net.modules()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
