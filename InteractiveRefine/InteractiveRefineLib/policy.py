"""Where and how the networks run: a pure decision table, no torch, no networks.

:func:`plan` turns what the user asked for (:class:`Request`), what the machine has
(:class:`Hardware`) and the size of the model's ROI into a :class:`Plan`: the device, the
precision, the memory layout of the networks and the refinement path. The session, the command
line and the benchmarks read the plan; nobody else holds thresholds.

The rule (``refine_mode="auto"``, ``amp="auto"``):

- On CUDA, and for ROIs of at most :data:`LARGE_ROI_VOXELS` voxels, every click refines the whole
  ROI in float32 (exact).
- On the CPU for larger ROIs (the paper's 144^3): bfloat16 where the CPU computes it natively,
  channels-last network copies, and the refine path is decided from a timed pass (``measure``):
  the initial model's pass, scaled by the ratio of refine to initial members, estimates a
  whole-ROI refinement; at most :data:`AUTO_FULL_SECONDS` refines the whole ROI, more refines a
  window around each click. An estimate within twice the limit is timed once more (the process's
  first pass also builds its kernels) before deciding.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

#: ROIs above this many voxels (96^3) count as large: CPU sessions use channels-last copies,
#: reduced precision by default and may refine in a window.
LARGE_ROI_VOXELS = 96**3
#: ``auto`` on a large CPU ROI refines the whole ROI when a whole-ROI pass takes at most this.
AUTO_FULL_SECONDS = 1.0

#: The rules above in words, for command-line help and messages.
AUTO_REFINE_RULE = (
    f"the whole ROI, except on the CPU for ROIs above 96^3 (the paper's 144^3) whose whole-ROI "
    f"pass takes over {AUTO_FULL_SECONDS:g} s there: a window around the click"
)
AUTO_PRECISION_RULE = "bfloat16 on a CPU that computes it natively, for ROIs above 96^3, else float32"

DEVICES = ("auto", "cpu", "cuda")
REFINE_MODES = ("auto", "full", "fast")
PRECISIONS = ("float32", "bfloat16", "float16")
#: Refine paths: the whole ROI, a window around the click, or not decided yet (time a pass).
REFINE_PATHS = ("full", "window", "measure")


@dataclass(frozen=True)
class Request:
    """What the caller asked for: ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``),
    ``refine_mode`` (``auto``, ``full``, ``fast``), ``amp`` (True, False or ``"auto"``) and
    ``amp_dtype``: the reduced precision on CUDA, ``"float16"`` (None: the default) or
    ``"bfloat16"`` (the CPU always uses bfloat16)."""

    device: str = "auto"
    refine_mode: str = "auto"
    amp: object = "auto"
    amp_dtype: object = None

    def __post_init__(self):
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.refine_mode not in REFINE_MODES:
            raise ValueError(f"refine_mode must be one of {REFINE_MODES}, got {self.refine_mode!r}")
        if self.amp not in (True, False, "auto"):
            raise ValueError(f"amp must be True, False or 'auto', got {self.amp!r}")
        if self.amp_dtype not in (None, "float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be None, 'float16' or 'bfloat16', got {self.amp_dtype!r}")


@dataclass(frozen=True)
class Hardware:
    """What this machine offers: CUDA, and native bfloat16 arithmetic on the CPU."""

    cuda: bool = False
    cpu_bfloat16: bool = False


@dataclass(frozen=True)
class Plan:
    """How a session runs its networks.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N``. ``precision``: ``float32``, ``bfloat16`` (CPU, or
    CUDA when asked for) or ``float16`` (CUDA). ``layout``: ``contiguous`` or ``channels_last``
    (CPU copies for large ROIs); it depends on the device and the ROI, never on the precision,
    so an exact float32 pass of a reduced-precision session uses the same network copies as a
    float32 session.
    ``refine_path``: ``full``, ``window`` or ``measure``. ``retime``: the measured pass was close
    to the limit; time another. ``warmup``: run one discarded refine pass after the initial
    segmentation (CUDA kernel selection). ``notes``: why, in words.
    """

    device: str
    precision: str
    layout: str
    refine_path: str
    retime: bool = False
    warmup: bool = False
    notes: tuple = ()

    @property
    def reduced_precision(self) -> bool:
        return self.precision != "float32"

    @property
    def refine_mode(self) -> str:
        """``full`` or ``fast`` (a window), as the session and its results name it."""
        return "fast" if self.refine_path == "window" else "full"


def resolve_device(requested: str, hardware: Hardware) -> tuple:
    """``(device, note)``: ``auto`` picks CUDA when present; CUDA asked for without CUDA falls
    back to the CPU with a note (the caller warns)."""
    if requested == "cpu":
        return "cpu", None
    if hardware.cuda:
        return ("cuda" if requested == "auto" else requested), None
    if requested != "auto":
        return "cpu", "CUDA was requested but is not available; running on the CPU"
    return "cpu", None


def plan(request: Request, hardware: Hardware, roi_voxels: int, *, members_ratio: float = 1.0,
         measured_pass_s: tuple = ()) -> Plan:
    """The plan for a model whose ROI has ``roi_voxels`` voxels.

    ``members_ratio``: refine members per initial member (a whole-ROI refinement costs this many
    initial passes). ``measured_pass_s``: the initial pass's wall times so far, in seconds; with
    ``refine_mode="auto"`` on a large CPU ROI they decide the refine path (none yet: ``measure``).
    """
    device, note = resolve_device(request.device, hardware)
    notes = (note,) if note else ()
    cpu = device == "cpu"
    large = int(roi_voxels) > LARGE_ROI_VOXELS
    amp = request.amp
    if amp == "auto":
        amp = cpu and large and hardware.cpu_bfloat16
    reduced = "bfloat16" if cpu or request.amp_dtype == "bfloat16" else "float16"
    precision = reduced if amp else "float32"
    layout = "channels_last" if cpu and large else "contiguous"
    path, retime = _refine_path(request.refine_mode, cpu and large, members_ratio, ())
    current = Plan(device, precision, layout, path, retime, not cpu and path == "full", notes)
    if path == "measure" and measured_pass_s:
        return after_measure(current, measured_pass_s, members_ratio)
    return current


def _refine_path(refine_mode: str, large_cpu: bool, members_ratio: float, measured: tuple) -> tuple:
    if refine_mode != "auto":
        return ("window" if refine_mode == "fast" else "full"), False
    if not large_cpu:
        return "full", False
    if not measured:
        return "measure", False
    estimate = min(measured) * members_ratio
    if len(measured) == 1 and AUTO_FULL_SECONDS < estimate <= 2 * AUTO_FULL_SECONDS:
        return "measure", True
    return ("full" if estimate <= AUTO_FULL_SECONDS else "window"), False


def after_measure(current: Plan, measured_pass_s: tuple, members_ratio: float = 1.0) -> Plan:
    """The plan once the initial pass was timed (``current.refine_path == "measure"``): the
    refine path from ``measured_pass_s`` (seconds, one or two passes), or ``retime``."""
    path, retime = _refine_path("auto", True, members_ratio, tuple(measured_pass_s))
    notes = current.notes
    if path == "window":
        notes += (f"a whole-ROI pass takes over {AUTO_FULL_SECONDS:g} s here: refining in a window",)
    return replace(current, refine_path=path, retime=retime, notes=notes)


def for_initial(current: Plan, request: Request) -> Plan:
    """The plan for a new initial segmentation: ``auto`` on a large CPU ROI times it again."""
    if request.refine_mode == "auto" and current.device == "cpu" and current.layout == "channels_last":
        return replace(current, refine_path="measure", retime=False)
    return current


def after_oom(current: Plan, hardware: Hardware, roi_voxels: int) -> Plan:
    """The plan after the GPU ran out of memory: the CPU, float16 becomes bfloat16 where the CPU
    has it (else float32), the CPU's layout for this ROI; the refine path stays."""
    precision = "float32"
    if current.reduced_precision and hardware.cpu_bfloat16:
        precision = "bfloat16"
    layout = "channels_last" if int(roi_voxels) > LARGE_ROI_VOXELS else "contiguous"
    return replace(current, device="cpu", precision=precision, layout=layout, warmup=False,
                   notes=current.notes + ("GPU out of memory: moved to the CPU",))
