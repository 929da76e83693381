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
import logging
import threading
import time
import warnings
from collections import OrderedDict

import numpy as np

from . import netcopies, policy

logger = logging.getLogger(__name__)

#: ``torch.compile`` modes a session accepts (``compile=True`` is ``"default"``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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


class DeviceCopies:
    """Device tensors of the latest host probabilities (float16 ``[k, j, i]``), keyed by the numpy
    array itself: the device-resident click path (:attr:`InferenceBackend.device_path`) reads the
    previous probability and back-maps from these instead of copying whole-ROI arrays to the
    device. Holds at most ``size`` entries (a state older than that is copied again)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._items = OrderedDict()

    def put(self, array, tensor) -> None:
        self._items[id(array)] = (array, tensor)
        self._items.move_to_end(id(array))
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, array):
        item = self._items.get(id(array))
        return item[1] if item is not None and item[0] is array else None

    def of(self, array, device):
        """The device copy of ``array`` (made and kept when missing)."""
        tensor = self.get(array)
        if tensor is None:
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a read-only history array, only read
                tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
            self.put(array, tensor)
        return tensor

    def update(self, array, box) -> None:
        """Copy ``array[box]`` (changed on the host, e.g. by region removal) into its device copy."""
        tensor = self.get(array)
        if tensor is not None and box is not None and tensor.data_ptr() != array.ctypes.data:
            box = tuple(box) if array.ndim == 3 else (slice(None),) + tuple(box)  # [C, k, j, i]: every class
            tensor[box] = tensor.new_tensor(array[box])

    def clear(self) -> None:
        self._items.clear()


class InferenceBackend:
    """Runs a package's networks under a plan.

    Args:
        package: the loaded :class:`~.model_package.ModelPackage` (left untouched).
        plan: the session's :class:`~.policy.Plan`; :attr:`plan` may be replaced later (the
            refine path after a timed pass; the device after an out-of-memory fallback).
        hardware: what :func:`detect_hardware` found.

        device_path: keep the click on the device (:class:`DeviceCopies`, back-mapping with
            :func:`.backmap.to_ct_device`); None: on CUDA only (on the CPU the host path is the
            bit-exact reference).
        compile: ``torch.compile`` the whole-ROI networks for the card's fixed ROI shape in the
            background (:meth:`compile_in_background`): False, True (``"default"``) or one of
            :data:`COMPILE_MODES`. Exact (float32 ``confirm``) passes always run eagerly.

    ``networks`` maps a stage (``initial``, ``refine``, or a refiner's own key such as
    ``window``) to its members; ``compiled`` the stages whose compiled copies are ready.
    """

    def __init__(self, package, plan: policy.Plan, hardware: policy.Hardware, device_path=None,
                 compile=False):
        self.package = package
        self.plan = plan
        self.hardware = hardware
        self.roi = tuple(package.roi_size_vox)
        self.networks = {
            stage: [self._placed(net) for net in nets] for stage, nets in package.networks.items()
        }
        self._device_path = device_path
        self.resident = DeviceCopies()
        if compile is True:
            compile = "default"
        if compile and compile not in COMPILE_MODES:
            raise ValueError(f"compile must be False, True or one of {COMPILE_MODES}, got {compile!r}")
        self.compile_mode = compile or None
        self.compile_backend = "inductor"  # tests use "eager" (the machinery without a C++ build)
        self.compiled: dict = {}
        self.compile_info: dict = {}
        self._compile_thread = None
        #: seconds of the latest device-to-host copy of a prediction (a part of its model time)
        self.last_transfer_s = 0.0
        #: whether the latest prediction ran on compiled copies (not bit-equal to eager ones)
        self.last_compiled = False
        #: synchronise CUDA between the parts of a click so each part's time is its own (benchmarks)
        self.sync_timing = False

    @property
    def device_path(self) -> bool:
        """True when clicks keep their arrays on the device (the default on CUDA)."""
        if self._device_path is None:
            return self.device.type == "cuda"
        return bool(self._device_path)

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
        dtype = torch.float16 if self.plan.precision == "float16" else torch.bfloat16
        return torch.autocast("cuda" if self.device.type == "cuda" else "cpu", dtype=dtype)

    def predict(self, stage: str, x, *, exact: bool = False, window: bool = False) -> np.ndarray:
        """Mean sigmoid probability of ``stage``'s members for input ``x`` ``[1, C, k, j, i]``:
        ``[k, j, i]`` numpy (``[n, k, j, i]`` for a card with n > 1 output classes), float16 (what
        the history stores) for the ROI and float32 for a window on the CPU (it is blended).
        ``window``: ``x`` is a window and runs on the ``"window"`` networks. ``exact``: float32
        whatever the plan's precision."""
        self.last_transfer_s, self.last_compiled = 0.0, False
        return self.run(lambda inputs: self._members_mean(stage, inputs, window, exact), x, exact)

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
            self.compiled.clear()
            self.resident.clear()
            window = self.networks.pop("window", None)
            self.networks = {s: [self._placed(n) for n in nets] for s, nets in self.networks.items()}
            if window is not None:
                self.networks["window"] = [n.cpu() for n in window]
            with torch.inference_mode(), self.autocast(exact):
                return fn(x.cpu())

    def _members_mean(self, stage: str, x, window: bool, exact: bool = False):
        import torch
        from monai.inferers import sliding_window_inference

        if x.device.type == "cpu" and (window or self.channels_last):  # channels-last networks
            x = x.contiguous(memory_format=torch.channels_last_3d)
        whole = tuple(x.shape[2:]) == self.roi

        def forward(net):
            if window or whole:
                return net(x)
            return sliding_window_inference(x, self.roi, sw_batch_size=1, predictor=net, overlap=0.25,
                                            mode="gaussian")

        members = self.networks["window" if window else stage]
        if not (window or exact) and whole and stage in self.compiled:
            members, self.last_compiled = self.compiled[stage], True
        mean = member_mean(members, forward)[0]
        mean = mean[0] if mean.shape[0] == 1 else mean  # one class: [k, j, i]; C classes: [C, k, j, i]
        if window and not mean.is_cuda:
            return mean.float().cpu().numpy()
        # On CUDA copy back float16 either way: half the device-to-host bytes.
        half = mean.half()
        if half.is_cuda:
            torch.cuda.synchronize(half.device)  # the copy's time alone, not the network's
        t0 = time.perf_counter()
        array = half.cpu().numpy()
        self.last_transfer_s = time.perf_counter() - t0
        if self.device_path and not window:
            self.resident.put(array, half if half.is_cuda else torch.from_numpy(array))
        return array

    def synchronize(self) -> None:
        """Wait for the device's queued work when :attr:`sync_timing` is on (CUDA only)."""
        if self.sync_timing and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------- compiling
    def compile_in_background(self, stage: str = "refine") -> bool:
        """Start compiling ``stage``'s members (:attr:`compile_mode`) for the ROI's input shape on
        a thread of its own, with one pass on a zero input; eager copies serve every call until
        the compiled ones are ready (:attr:`compiled`). False when compiling is off or started."""
        if not self.compile_mode or stage in self.compiled or self._compile_thread is not None:
            return False
        self._compile_thread = threading.Thread(target=self._compile, args=(stage,), daemon=True,
                                                name="interactive-refine-compile")
        self._compile_thread.start()
        return True

    @property
    def compiling(self) -> bool:
        """True while a background compilation runs."""
        thread = self._compile_thread
        return thread is not None and thread.is_alive()

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for a background compilation; True when compiled copies are in use."""
        thread = self._compile_thread
        if thread is not None:
            thread.join(timeout)
        return bool(self.compiled)

    def _compile(self, stage: str) -> None:
        import torch

        t0 = time.perf_counter()
        device, plan = self.device, self.plan
        try:
            channels = self.package.spec.stages[stage].in_channels
            x = torch.zeros((1, channels) + self.roi, device=device)
            if device.type == "cpu" and self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            options = {"mode": self.compile_mode} if self.compile_backend == "inductor" else {}
            nets = [torch.compile(net, dynamic=False, backend=self.compile_backend, **options)
                    for net in self.networks[stage]]
            with torch.inference_mode(), self.autocast():
                for net in nets:
                    net(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            same = (self.plan.device, self.plan.precision) == (plan.device, plan.precision)
            if same:  # not after an out-of-memory move to the CPU meanwhile
                self.compiled[stage] = nets
            self.compile_info = {"stage": stage, "mode": self.compile_mode,
                                 "seconds": time.perf_counter() - t0}
        except Exception as error:  # noqa: BLE001 (a failed compile leaves eager inference in use)
            self.compile_info = {"stage": stage, "mode": self.compile_mode, "error": repr(error),
                                 "seconds": time.perf_counter() - t0}
            logger.warning("compiling the %s networks failed; they run eagerly: %r", stage, error)

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
