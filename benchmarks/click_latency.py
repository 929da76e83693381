#!/usr/bin/env python3
"""Per-click latency, peak memory and accuracy of full-ROI, windowed and reduced-precision refinement.

Loads a model package and a case and opens one session per mode (``--modes full,fast``;
``+amp``: reduced precision, e.g. ``full+amp``; ``auto``: the engine's own plan), each running the
initial segmentation once. Then per mode a simulated-user loop of ``--clicks`` clicks from the
same seed, through the engine's ``simulation.click_loop`` (each mode follows its own loop, as a
user would: the next click depends on that mode's mask). It also replays the full loop's clicks
in each other mode ("replay"): the same clicks, so the Dice against the full-ROI mask isolates
the approximation. Per click: click mapping, model and back-mapping to the CT grid (the
session's timings) plus the wall time around ``add_click`` (CUDA-synchronised); median and p90;
one-time costs; peak memory; each session's plan. Prints a table and writes JSON (DESIGN.md
section 3; extend, never rename)::

    python benchmarks/click_latency.py --json out/latency.json                    # default model, CPU
    python benchmarks/click_latency.py --random-paper-model --json out/latency.json
    python benchmarks/click_latency.py --model DIR --device cuda --amp --json out.json
    python benchmarks/click_latency.py --model DIR --modes full,full+amp,fast+amp --json out.json
    python benchmarks/click_latency.py --random-paper-model --device cuda --modes \
        full,full+host,full+bf16,full+compile,full+bf16+compile --json out/gpu.json

Each mode also gets a per-part breakdown of its clicks (``breakdown_s``: input assembly, network,
region removal, back-mapping, host transfer, the rest; medians) and the run its cold-start
parts (``cold_start_s``: torch import, CUDA context, weights load, weights to the device, first
pass, background compile). Mode modifiers: ``+amp`` (float16 on CUDA, bfloat16 on the CPU),
``+bf16`` (bfloat16 everywhere), ``+compile`` (``torch.compile``d refine networks, waited for
before the clicks), ``+host`` (the host-side click path even on CUDA), ``+confirm``.

Runs under Python 3.9+ with or without psutil (peak RSS from ``resource`` then).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    import InteractiveRefineLib  # noqa: F401
except ImportError:  # not installed: use the checkout
    sys.path.insert(0, str(REPO / "InteractiveRefine"))

from InteractiveRefineLib.cases import find_data_dir  # noqa: E402
from InteractiveRefineLib.click_regions import NO_REGION_REMOVAL_HELP  # noqa: E402
from InteractiveRefineLib.geometry import inside_mask, read_volume  # noqa: E402
from InteractiveRefineLib.metrics import dice  # noqa: E402
from InteractiveRefineLib.networks import TINY_NETWORK  # noqa: E402
from InteractiveRefineLib.runtime import apply_process_settings  # noqa: E402
from InteractiveRefineLib.simulated_user import SimulatedUser  # noqa: E402
from InteractiveRefineLib.simulation import click_loop, label_centroid_ras, truth_on_grid  # noqa: E402

logger = logging.getLogger("click_latency")

#: The engine's tiny network (tests) on a 64^3 ROI, so that a 32^3 window is a real window.
TINY_ROI = (64, 64, 64)
CASES = {
    "CHGJ015": ("hecktor2020_chgj015", "CHGJ015_ct.nii.gz", "CHGJ015_pt.nii.gz", "CHGJ015_ct_gtvt.nii.gz"),
    "STS_001": ("sts_petct/hecktor_layout/STS_001", "STS_001__CT.nii.gz", "STS_001__PT.nii.gz",
                "STS_001.nii.gz"),
}


# ------------------------------------------------------------------------------ inputs
def load_phantom(seed: int, roi_shape, spacing_mm=(1.0, 1.0, 1.0)):
    """The training package's phantom at the model's spacing (PET on a 4 mm grid, a field of
    view 16 voxels beyond the ROI, as in training), else the engine's small one."""
    shape = tuple(int(n) + 16 for n in roi_shape)
    spacing_mm = tuple(float(s) for s in spacing_mm)
    try:
        from interactive_refine_training.phantoms import generate_case
    except ImportError:
        from InteractiveRefineLib.phantom import make_phantom

        return ("phantom-simple",) + make_phantom(seed, shape=shape, spacing_mm=spacing_mm,
                                                  pet_spacing_mm=(4.0, 4.0, 4.0))
    case = generate_case(seed, shape=shape, spacing_mm=spacing_mm, pet_spacing_mm=(4.0, 4.0, 4.0))
    return f"phantom-{seed}", case.ct, case.pet, case.label


def load_case(spec: str, seed: int, roi_shape=(144, 144, 144), spacing_mm=(1.0, 1.0, 1.0)):
    """``(name, ct, pet, label)`` for a named case, a case folder, a CT file, or ``phantom``
    (generated from ``seed``, or ``phantom:SEED``)."""
    if spec == "phantom" or spec.startswith("phantom:"):
        return load_phantom(int(spec.split(":", 1)[1]) if ":" in spec else seed, roi_shape, spacing_mm)
    if spec in CASES:
        folder, *names = CASES[spec]
        data = find_data_dir(containing=f"{folder}/{names[0]}")
        paths = [data / folder / n for n in names]
        if not paths[0].exists():
            raise SystemExit(
                f"case {spec} not found under {data} (set INTERACTIVE_REFINE_DATA, or use "
                "--case phantom)"
            )
        return (spec,) + tuple(read_volume(p) for p in paths)
    from InteractiveRefineLib.cases import find_cases

    path = Path(spec)
    folder = path.parent if path.is_file() and path.suffix != ".csv" else path
    cases = [c for c in find_cases(folder) if c.pet is not None and c.label is not None]
    if path.is_file() and path.suffix != ".csv":
        cases = [c for c in cases if c.ct == path] or cases
    if not cases:
        raise SystemExit(f"no case with CT, PET and label found at {spec}")
    case = cases[0]
    return case.case_id, read_volume(case.ct), read_volume(case.pet), read_volume(case.label)


def model_path(args, scratch: Path) -> tuple[Path, str]:
    """The package folder and what it is (``default``, ``given``, ``random-paper``, ...)."""
    from InteractiveRefineLib.model_package import DEFAULT_MODEL_DIR, create_random_model_package

    if args.random_paper_model:
        return create_random_model_package(scratch / "random_paper", seed=args.seed), "random-paper"
    if args.random_tiny_model:
        return create_random_model_package(
            scratch / "random_tiny", network=TINY_NETWORK, roi_size_vox=TINY_ROI, seed=args.seed
        ), "random-tiny"
    if args.model:
        return Path(args.model), "given"
    if (DEFAULT_MODEL_DIR / "model.json").is_file():
        return DEFAULT_MODEL_DIR, "default"
    raise SystemExit(
        f"the default model is not installed at {DEFAULT_MODEL_DIR}: pass --model DIR, or "
        "--random-paper-model to time a randomly initialised network of the paper's size"
    )


# ---------------------------------------------------------------------------- measuring
def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB), from ``resource`` (psutil is not needed)."""
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil

            return psutil.Process().memory_info().peak_wset / 2**20
        except (ImportError, AttributeError):
            return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minor_page_faults() -> int | None:
    """Minor page faults of this process so far (None where ``resource`` is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def huge_pages() -> dict:
    """Whether PyTorch's CPU allocator asks for transparent huge pages (``main`` applies the
    engine's process settings: ``THP_MEM_ALLOC_ENABLE=1`` unless the environment says otherwise)
    and the kernel's policy (``madvise`` or ``always``: granted; ``never``: ignored)."""
    policy = None
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        policy = text[text.index("[") + 1: text.index("]")]
    except (OSError, ValueError):
        pass
    return {"THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"), "kernel_policy": policy}


def timed_click(session):
    """The ``apply`` of :func:`click_loop`: ``session.add_click``, returning ``(result, wall
    seconds, minor page faults)`` (CUDA-synchronised)."""

    def click(ras, positive):
        synchronize(session.device)
        faults = minor_page_faults()
        t0 = time.perf_counter()
        result = session.add_click(ras, positive)
        synchronize(session.device)
        wall = time.perf_counter() - t0
        return result, wall, None if faults is None else minor_page_faults() - faults

    return click


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def mean_dice_1_10(curve) -> float | None:
    after = curve[1:11]
    return float(np.mean(after)) if after else None


# ------------------------------------------------------------------------------ the loops
def timed_confirm(session) -> float:
    """Seconds of ``session.confirm()`` (the exact float32 follow-up of a preview)."""
    synchronize(session.device)
    t0 = time.perf_counter()
    session.confirm()
    synchronize(session.device)
    return time.perf_counter() - t0


class Replay:
    """A user who repeats given clicks (:class:`SimulatedClick`, working-grid indices) in order,
    whatever the mask: every mode's session has the same working grid."""

    def __init__(self, clicks):
        self._clicks = iter(list(clicks))

    def next_click(self, prediction, truth):
        return next(self._clicks, None)


def run_loop(session, user, n_clicks, truth_ct, truth_work, inside, confirm=False,
             reference=None) -> dict:
    """``session.reset()`` then up to ``n_clicks`` clicks of ``user`` through the engine's
    :func:`click_loop`, each timed; Dice against the truth after each click (``dice``).

    ``confirm``: after each click, what the user first sees (the preview) is scored, then
    ``session.confirm()`` computes the exact mask, which is scored and on which the next click
    is chosen (a user who waits for it). ``reference``: CT-box masks after each click of another
    loop (index t = after t clicks); adds the Dice against them (``dice_vs_reference``).
    """
    session.reset()
    if confirm:  # a reduced-precision initial state too
        session.confirm()
    loop = {"clicks": [], "simulated": [], "per_click": [], "masks": []}
    _score(loop, "", session, truth_ct, reference, 0)
    if confirm:
        _score(loop, "preview_", session, truth_ct, reference, 0)
    for step in click_loop(session, truth_work, n_clicks, user, inside=inside, apply=timed_click(session)):
        result, wall, faults = step.result
        timings = dict(result.timings, wall_s=wall, page_faults=faults, mode=result.mode,
                       window=result.window, exact=result.exact)
        if confirm:
            _score(loop, "preview_", session, truth_ct, reference, step.step)
            timings["confirm_wall_s"] = timed_confirm(session)
            timings["exact_wall_s"] = wall + timings["confirm_wall_s"]
        loop["per_click"].append(timings)
        loop["clicks"].append({"ras": [float(v) for v in step.ras], "positive": step.click.positive})
        loop["simulated"].append(step.click)
        _score(loop, "", session, truth_ct, reference, step.step)
    return loop


def _score(loop, prefix, session, truth_ct, reference, step) -> None:
    """Append the Dice of the session's mask (``prefix``: ``"preview_"`` before a confirm) against
    the truth, and against ``reference[step]`` when given; without a prefix, keep the CT-box mask."""
    loop.setdefault(prefix + "dice", []).append(dice(session.mask_on_ct(), truth_ct))
    if reference is not None:
        agreement = 1.0 if step == 0 else dice(session.mask_in_box(), reference[step])
        loop.setdefault(prefix + "dice_vs_reference", []).append(agreement)
    if not prefix:
        loop["masks"].append(session.mask_in_box().copy())


def replay(session, loop, truth_ct, truth_work, inside, confirm=False) -> dict:
    """The clicks of ``loop`` (another mode's :func:`run_loop`) in ``session``: Dice against the
    truth and against that loop's masks. ``confirm``: each click's preview is scored, then
    confirmed (the next click starts from the exact mask)."""
    clicks = loop["simulated"]
    again = run_loop(session, Replay(clicks), len(clicks), truth_ct, truth_work, inside,
                     confirm=confirm, reference=loop["masks"])
    out = {"dice": again["dice"], "dice_vs_reference": again["dice_vs_reference"],
           "mean_dice_1_10": mean_dice_1_10(again["dice"])}
    if confirm:
        out.update(preview_dice=again["preview_dice"],
                   preview_dice_vs_reference=again["preview_dice_vs_reference"],
                   mean_preview_dice_1_10=mean_dice_1_10(again["preview_dice"]))
    return out


def warm_up(session, mode, seed, truth_work, inside) -> float | None:
    """Seconds of one click (and its confirm in a ``+confirm`` mode), then undone: the first
    refinement builds oneDNN/cuDNN plans, so it is kept out of the statistics. None when the
    user finds no error to click."""
    user = SimulatedUser("2sicr", np.random.default_rng(seed))
    steps = list(click_loop(session, truth_work, 1, user, inside=inside, apply=timed_click(session)))
    if not steps:
        return None
    seconds = steps[0].result[1]
    if confirms(mode):
        seconds += timed_confirm(session)
    session.undo()
    return seconds


def summarise(loop: dict) -> dict:
    per_click = loop["per_click"]
    totals = [c["wall_s"] for c in per_click]
    out = {
        "median_s": percentile(totals, 50),
        "p90_s": percentile(totals, 90),
        "mean_s": float(np.mean(totals)) if totals else None,
        "mean_dice_1_10": mean_dice_1_10(loop["dice"]),
        "dice": loop["dice"],
        "clicks": loop["clicks"],
        "per_click": per_click,
        "effective_modes": sorted({c["mode"] for c in per_click}),
    }
    for part in ("map_s", "norm_s", "model_s", "removal_s", "transfer_s", "backmap_s", "total_s"):
        out["median_" + part] = percentile([c.get(part, 0.0) for c in per_click], 50)
    out["breakdown_s"] = breakdown(per_click)
    if "preview_dice" in loop:  # a confirm mode: the preview, then the exact mask
        out["preview_dice"] = loop["preview_dice"]
        out["mean_preview_dice_1_10"] = mean_dice_1_10(loop["preview_dice"])
        for part in ("confirm_wall_s", "exact_wall_s"):
            out["median_" + part] = percentile([c[part] for c in per_click], 50)
        out["p90_exact_wall_s"] = percentile([c["exact_wall_s"] for c in per_click], 90)
    faults = [c["page_faults"] for c in per_click if c.get("page_faults") is not None]
    out["median_page_faults"] = percentile(faults, 50)
    return out


#: The parts of a click (``breakdown_s``), from the session's timings and the wall time.
PARTS = ("input_assembly_s", "network_s", "window_norm_s", "region_removal_s", "backmap_s",
         "host_transfer_s", "other_s", "wall_s")


def click_parts(c: dict) -> dict:
    """One click's parts: input assembly (``map_s``), network (``model_s`` less the copy to the
    host), the window's norm statistics, region removal, back-mapping, the device-to-host copy,
    and the rest of the wall time (click mapping, history, Python)."""
    transfer = c.get("transfer_s", 0.0)
    parts = {"input_assembly_s": c.get("map_s", 0.0), "network_s": c.get("model_s", 0.0) - transfer,
             "window_norm_s": c.get("norm_s", 0.0), "region_removal_s": c.get("removal_s", 0.0),
             "backmap_s": c.get("backmap_s", 0.0), "host_transfer_s": transfer}
    parts["other_s"] = c["wall_s"] - sum(parts.values())
    parts["wall_s"] = c["wall_s"]
    return parts


def breakdown(per_click) -> dict:
    """Median of each part over the clicks (None without clicks)."""
    rows = [click_parts(c) for c in per_click]
    return {part: percentile([r[part] for r in rows], 50) for part in PARTS}


# ---------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model package folder (default: the shipped default model)")
    p.add_argument("--random-paper-model", action="store_true",
                   help="a randomly initialised package with the paper's network and 144^3 ROI")
    p.add_argument("--random-tiny-model", action="store_true",
                   help="a random tiny network on a 64^3 ROI (tests)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--case", default="CHGJ015",
                   help="CHGJ015, STS_001, phantom (seed --seed), phantom:SEED, or a case folder / CT file "
                        "(HECKTOR names)")
    p.add_argument("--clicks", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="full,fast",
                   help="comma-separated: full, fast, full+amp, fast+amp (+amp: reduced precision, "
                        "bfloat16 on the CPU, float16 on CUDA; the others run in float32), auto "
                        "(the engine's defaults: its own choice of mode and precision), "
                        "+confirm after any but full (e.g. auto+confirm: each click's preview "
                        "followed by the exact float32 mask, session.confirm())")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--window", type=int, default=None,
                   help="fast window edge (default: the model card's, else the engine's)")
    p.add_argument("--amp", action="store_true", help="every mode in reduced precision (adds +amp)")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="every mode with torch.compile'd refine networks (adds +compile); MODE: a "
                        "torch.compile mode for every +compile mode (default: 'default')")
    p.add_argument("--device-path", choices=["auto", "on", "off"], default="auto",
                   help="keep each click's arrays on the device: auto (on CUDA only), on (also on the "
                        "CPU: a dry run of the CUDA code path), off; a +host mode is always off")
    p.add_argument("--no-replay", action="store_true", help="skip replaying the full loop's clicks")
    p.add_argument("--no-region-removal", dest="region_removal", action="store_false",
                   help=NO_REGION_REMOVAL_HELP)
    p.add_argument("--json", required=True, help="output JSON path")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES) or len(set(modes)) < len(modes):
        p.error(f"--modes must list modes once each: a base ({', '.join(BASES)}) and modifiers in this "
                f"order: {AMP} or {BF16}, {COMPILE}, {HOST}, {CONFIRM} (not on plain full; no precision "
                f"on auto); got {args.modes!r}")
    parts = [mode_parts(m) for m in modes]
    if args.amp:
        parts = [dict(x, precision=x["precision"] or ("" if x["base"] == "auto" else "amp")) for x in parts]
    if args.compile:
        parts = [dict(x, compiled=True) for x in parts]
    args.modes = list(dict.fromkeys(mode_name(**x) for x in parts))
    args.compile_mode = args.compile or "default"
    args.device_path = {"auto": None, "on": True, "off": False}[args.device_path]
    return args


#: Benchmark modes: the session's refine mode, in float32 or with ``+amp`` in reduced precision;
#: ``auto``: the session's defaults (``refine_mode="auto"``, ``amp="auto"``); ``+confirm`` (any
#: mode but ``full``): each click's preview followed by ``session.confirm()``. Every mode runs in
#: a session of its own.
AMP = "+amp"
BF16 = "+bf16"
COMPILE = "+compile"
HOST = "+host"
CONFIRM = "+confirm"
BASES = ("full", "fast", "auto")
BASE_MODES = ("full", "fast", "full" + AMP, "fast" + AMP, "auto")


def mode_name(base: str, precision: str = "", compiled: bool = False, host: bool = False,
              confirm: bool = False) -> str:
    """The benchmark mode's name: ``base[+amp|+bf16][+compile][+host][+confirm]``."""
    return (base + ("+" + precision if precision else "") + (COMPILE if compiled else "")
            + (HOST if host else "") + (CONFIRM if confirm else ""))


def _all_modes() -> tuple:
    names = []
    for base in BASES:
        for precision in ("", "amp", "bf16"):
            for compiled in (False, True):
                for host in (False, True):
                    for confirm in (False, True):
                        if base == "auto" and precision:
                            continue  # auto picks its own precision
                        if confirm and base == "full" and not (precision or compiled):
                            continue  # float32 eager full-ROI clicks are exact already
                        names.append(mode_name(base, precision, compiled, host, confirm))
    return tuple(BASE_MODES) + tuple(n for n in names if n not in BASE_MODES)


#: Every valid mode name (the plain ones first).
MODES = _all_modes()


def mode_parts(mode: str) -> dict:
    """The arguments of :func:`mode_name` that give ``mode``."""
    base, *modifiers = mode.split("+")
    precision = next((m for m in modifiers if m in ("amp", "bf16")), "")
    return {"base": base, "precision": precision, "compiled": "compile" in modifiers,
            "host": "host" in modifiers, "confirm": "confirm" in modifiers}


def confirms(mode: str) -> bool:
    return mode.endswith(CONFIRM)


def session_settings(mode: str, device_path=None, compile_mode: str = "default") -> dict:
    """``RefinementSession`` arguments of a benchmark mode (``"fast+amp"`` -> fast, reduced
    precision; ``"auto"``: the session's defaults; ``+bf16``: bfloat16 also on CUDA;
    ``+compile``: compiled refine networks; ``+host``: the host-side click path)."""
    parts = mode_parts(mode)
    if parts["base"] == "auto":
        settings = {"refine_mode": "auto", "amp": "auto"}
    else:
        settings = {"refine_mode": parts["base"], "amp": bool(parts["precision"])}
        if parts["precision"] == "bf16":
            settings["amp_dtype"] = "bfloat16"
    settings["compile"] = compile_mode if parts["compiled"] else False
    settings["device_path"] = False if parts["host"] else device_path
    return settings


def plan_fields(session) -> dict:
    """The session's plan (device, precision, layout, refine path, retime, warm-up, notes)."""
    return dataclasses.asdict(session.plan)


def reduced(session) -> bool:
    """True when the session's networks run in reduced precision."""
    return session.precision != "float32"


def load_inputs(args, one_time: dict):
    """``(package folder, its kind, package, (case name, ct, pet, label))``; records the model
    load time in ``one_time``."""
    from InteractiveRefineLib.model_package import load_model_package

    with tempfile.TemporaryDirectory() as scratch:
        package_dir, model_kind = model_path(args, Path(scratch))
        t0 = time.perf_counter()
        package = load_model_package(package_dir)
        one_time["model_load_s"] = time.perf_counter() - t0
    case = load_case(args.case, args.seed, package.roi_size_vox, package.spacing_mm)
    return package_dir, model_kind, package, case


def open_session(package, mode, args, ct, pet, centre, one_time: dict):
    """A mode's session with its image and initial state; ``(session, its one-time costs)``."""
    from InteractiveRefineLib.session import RefinementSession

    costs = dict(one_time)
    t0 = time.perf_counter()
    session = RefinementSession(package, device=args.device, fast_window=args.window,
                                region_removal=args.region_removal,
                                **session_settings(mode, args.device_path, args.compile_mode))
    synchronize(session.device)
    costs["session_s"] = time.perf_counter() - t0  # the network copies placed on the device
    session.backend.sync_timing = True  # each part of a click timed alone (CUDA)
    t0 = time.perf_counter()
    session.set_image(ct, pet, roi_center_ras=centre)
    costs["set_image_s"] = time.perf_counter() - t0
    synchronize(session.device)
    t0 = time.perf_counter()
    initial = session.initial()
    synchronize(session.device)
    costs["initial_s"] = time.perf_counter() - t0
    costs["initial_model_s"] = initial.timings["model_s"]
    costs["calibrate_s"] = initial.timings.get("calibrate_s", 0.0)
    costs["warmup_s"] = {}
    costs.update(refine_mode=session.refine_mode, amp=reduced(session), precision=session.precision)
    if session.backend.compile_mode:  # compiled in the background: wait, so the clicks use it
        t0 = time.perf_counter()
        costs["compiled"] = session.backend.wait_compiled()
        costs["compile_wait_s"] = time.perf_counter() - t0
        costs["compile"] = dict(session.backend.compile_info)
    return session, costs


def cuda_context_seconds(device: str) -> float | None:
    """Seconds to create the CUDA context (None without CUDA): the first cold-start part."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return None
    t0 = time.perf_counter()
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def cold_start(by_session: dict, torch_import_s, cuda_context_s) -> dict:
    """The cold-start parts: the first session's one-time costs, and the first compiling
    session's compile time (it ran in the background after its initial segmentation)."""
    first = next(iter(by_session.values()))
    compile_info = next((c["compile"] for c in by_session.values() if c.get("compile")), {})
    return {"torch_import_s": torch_import_s, "cuda_context_s": cuda_context_s,
            "weights_load_s": first["model_load_s"], "weights_to_device_s": first["session_s"],
            "set_image_s": first["set_image_s"], "first_pass_s": first["initial_model_s"],
            "first_initial_s": first["initial_s"], "compile_s": compile_info.get("seconds"),
            "compile_error": compile_info.get("error")}


def measure_modes(args, sessions, one_time_by_session, truth_ct, truth_work, inside):
    """Warm every mode up, then run its loop; ``(per-mode summaries, per-mode loops)``."""
    import torch

    for mode, own in sessions.items():
        seconds = warm_up(own, mode, args.seed, truth_work, inside)
        if seconds is not None:
            one_time_by_session[mode]["warmup_s"][mode] = seconds
    modes, loops = {}, {}
    for mode, own in sessions.items():
        cuda = own.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(own.device)
        user = SimulatedUser("2sicr", np.random.default_rng(args.seed))
        loops[mode] = run_loop(own, user, args.clicks, truth_ct, truth_work, inside, confirm=confirms(mode))
        modes[mode] = summarise(loops[mode])
        modes[mode].update(amp=reduced(own), precision=own.precision, plan=plan_fields(own),
                           compile=own.backend.compile_mode, compiled=bool(own.backend.compiled),
                           device_path=own.backend.device_path, region_removal=region_backend(own))
        modes[mode]["rss_peak_so_far_mb"] = peak_rss_mb()
        if cuda:
            modes[mode]["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(own.device) / 2**20
    return modes, loops


def region_backend(session) -> str:
    """Where the session's region removal labels: "scipy" (host) or "cupy" (GPU); an older checkout
    (the before run) has only the host."""
    try:
        from InteractiveRefineLib.click_regions import arrays_for
    except ImportError:
        return "scipy"
    return arrays_for(session.backend).name


def replay_modes(args, sessions, loops, truth_ct, truth_work, inside) -> dict:
    """The full loop's clicks replayed in every other mode (nothing without a ``full`` mode)."""
    if args.no_replay or "full" not in loops or len(args.modes) < 2:
        return {}
    return {
        mode: dict(replay(own, loops["full"], truth_ct, truth_work, inside, confirm=confirms(mode)),
                   clicks_from="full")
        for mode, own in sessions.items() if mode != "full"
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    apply_process_settings(threads=args.threads or None)  # before torch is used
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    imported = "torch" in sys.modules  # then the import below costs nothing: not a cold start
    t0 = time.perf_counter()
    import torch  # noqa: F401 (timed: a cold-start part)

    torch_import_s = None if imported else time.perf_counter() - t0
    cuda_context_s = cuda_context_seconds(args.device)
    one_time = {}
    package_dir, model_kind, package, (name, ct, pet, label) = load_inputs(args, one_time)
    centre = _label_centre(label)
    sessions, one_time_by_session = {}, {}  # one session per mode; each runs the initial model once
    for mode in args.modes:
        sessions[mode], one_time_by_session[mode] = open_session(package, mode, args, ct, pet, centre,
                                                                 one_time)
    session = sessions[args.modes[-1]]
    truth_ct = truth_on_grid(label, ct.grid)
    truth_work = truth_on_grid(label, session.grid)
    inside = inside_mask(ct.grid, session.grid)  # every session has the same working grid
    modes, loops = measure_modes(args, sessions, one_time_by_session, truth_ct, truth_work, inside)
    replays = replay_modes(args, sessions, loops, truth_ct, truth_work, inside)
    result = describe(args, session, package, package_dir, model_kind, name, load_before)
    result.update(modes=modes, replay=replays, one_time_s=next(iter(one_time_by_session.values())),
                  cold_start_s=cold_start(one_time_by_session, torch_import_s, cuda_context_s),
                  one_time_s_by_session=one_time_by_session,
                  amp=any(m["amp"] for m in modes.values()),  # some mode ran in reduced precision
                  amp_by_mode={mode: m["amp"] for mode, m in modes.items()})
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def describe(args, session, package, package_dir, model_kind, name, load_before) -> dict:
    """The run's setting: device, ROI, model, case, machine, versions and memory (the JSON's
    keys besides the modes)."""
    import torch
    from InteractiveRefineLib.backend import cpu_bfloat16_supported
    from InteractiveRefineLib.refiners.window import MARGIN

    cuda = session.device.type == "cuda"
    result = {
        "device": str(session.device),
        "device_name": torch.cuda.get_device_name(session.device) if cuda else platform.processor()
        or platform.machine(),
        "roi_voxels": int(np.prod(session.grid.shape)),
        "roi_shape": list(session.grid.shape),
        "peak_rss_mb": peak_rss_mb(),
        "fast": {"window": session.fast_window, "margin": MARGIN},  # the window path's (fixed) blend
        "model": {"path": str(package_dir), "kind": model_kind, "name": package.spec.name,
                  "network": package.spec.network},
        "case": name,
        "clicks_requested": args.clicks,
        "seed": args.seed,
        "region_removal": args.region_removal,
        "cpu_bfloat16": cpu_bfloat16_supported(),
        "huge_pages": huge_pages(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before) if load_before else None,
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
    }
    if cuda:
        result["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(session.device) / 2**20
    return result


def _label_centre(label):
    """RAS centre of the label's foreground (the paper's ROI is centred on the GTVp)."""
    centre = label_centroid_ras(label, 1)
    if centre is None:
        raise SystemExit("the label has no voxel with value 1")
    return tuple(float(v) for v in centre)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _replay_lines(result: dict) -> list[str]:
    """Per replayed mode: its previews (a ``+confirm`` mode) and its masks against full's."""
    lines = []
    for mode, r in result["replay"].items():
        for prefix, masks in (("preview_", "previews"), ("", "masks")):
            if f"mean_{prefix}dice_1_10" in r:
                per_click = " ".join(f"{d:.3f}" for d in r[prefix + "dice_vs_reference"][1:])
                lines.append(f"replay of full's clicks in {mode}, {masks}: mean Dice 1-10 "
                             f"{_fmt(r[f'mean_{prefix}dice_1_10'])}, Dice vs full mask per click {per_click}")
    return lines


def _breakdown_lines(result: dict) -> list[str]:
    """Per mode, the median of each part of a click (ms), and the cold-start parts (s)."""
    names = ("input", "network", "win-norm", "removal", "backmap", "transfer", "other", "wall")
    width = max([6] + [len(mode) for mode in result["modes"]])
    lines = [f"breakdown (median ms per click)  {'mode':<{width}} "
             + " ".join(f"{n:>9}" for n in names) + "  precision compile device-path removal-on"]
    for mode, m in result["modes"].items():
        b = m["breakdown_s"]
        cells = " ".join(f"{_fmt(None if b[p] is None else b[p] * 1000, 1):>9}" for p in PARTS)
        path = "on" if m["device_path"] else "off"
        lines.append(f"breakdown (median ms per click)  {mode:<{width}} {cells}  {m['precision']} "
                     f"{m['compile'] or 'off'} {path} {m.get('region_removal', '?')}")
    cold = result["cold_start_s"]
    lines.append("cold start (s): " + ", ".join(
        f"{k[:-2].replace('_', ' ')} {_fmt(v)}" for k, v in cold.items() if k.endswith("_s")
    ) + (f"; compile failed: {cold['compile_error']}" if cold.get("compile_error") else ""))
    return lines


def format_table(result: dict) -> str:
    width = max([6] + [len(mode) for mode in result["modes"]])
    lines = [
        f"device {result['device']} ({result['device_name']}), threads {result['threads']}, "
        f"ROI {'x'.join(str(s) for s in result['roi_shape'])} ({result['roi_voxels']} voxels), "
        f"model {result['model']['kind']} {result['model']['name']!r}, case {result['case']}, "
        f"load average {_fmt((result['load_average_before'] or [None])[0], 2)}",
        f"{'mode':<{width}} {'median_s':>9} {'p90_s':>7} {'map_s':>7} {'norm_s':>7} {'model_s':>8} "
        f"{'backmap_s':>9} {'faults':>7} "
        f"{'meanDice1-10':>12}  Dice per click",
    ]
    for mode, m in result["modes"].items():
        curve = " ".join(f"{d:.3f}" for d in m["dice"])
        lines.append(
            f"{mode:<{width}} {_fmt(m['median_s']):>9} {_fmt(m['p90_s']):>7} {_fmt(m['median_map_s']):>7} "
            f"{_fmt(m['median_norm_s']):>7} "
            f"{_fmt(m['median_model_s']):>8} {_fmt(m['median_backmap_s']):>9} "
            f"{_fmt(m['median_page_faults'], 0):>7} "
            f"{_fmt(m['mean_dice_1_10']):>12}  {curve}"
        )
    for mode, m in result["modes"].items():
        if "mean_preview_dice_1_10" in m:
            lines.append(
                f"{mode}: preview median {_fmt(m['median_s'])} s after the click, exact mask median "
                f"{_fmt(m['median_exact_wall_s'])} s (p90 {_fmt(m['p90_exact_wall_s'])}; confirm "
                f"{_fmt(m['median_confirm_wall_s'])} s); mean Dice 1-10 of the previews "
                f"{_fmt(m['mean_preview_dice_1_10'])}, of the exact masks {_fmt(m['mean_dice_1_10'])}"
            )
    lines += _replay_lines(result)
    lines += _breakdown_lines(result)
    for key, one in result["one_time_s_by_session"].items():
        lines.append(
            f"one-time ({key} session: {one['refine_mode']}, {one['precision']}): "
            f"model load {_fmt(one['model_load_s'])} s, set_image "
            f"{_fmt(one['set_image_s'])} s, initial {_fmt(one['initial_s'])} s (model "
            f"{_fmt(one['initial_model_s'])}, calibration {_fmt(one['calibrate_s'])}), warm-up "
            + ", ".join(f"{k} {_fmt(v)} s" for k, v in one["warmup_s"].items())
        )
    pages = result.get("huge_pages") or {}
    memory = (f"peak RSS {_fmt(result['peak_rss_mb'], 0)} MB; faults: median minor page faults "
              f"per click; THP_MEM_ALLOC_ENABLE={pages.get('THP_MEM_ALLOC_ENABLE')}, "
              f"kernel transparent huge pages: {pages.get('kernel_policy')}")
    if "peak_cuda_allocated_mb" in result:
        memory += f", peak CUDA allocated {_fmt(result['peak_cuda_allocated_mb'], 0)} MB"
    lines.append(memory)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
