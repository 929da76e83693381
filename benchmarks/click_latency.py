#!/usr/bin/env python3
"""Per-click latency, peak memory and accuracy of full-ROI, windowed and reduced-precision refinement.

Loads a model package and a case, runs the initial segmentation once per session (one per
precision, one for ``auto``), then for every mode (``--modes full,fast``; ``+amp``: reduced
precision, e.g. ``full+amp``; ``auto``: the engine's own choices) a simulated-user loop of
``--clicks`` clicks from the same seed (each mode follows its own loop, as a user would: the next
click depends on that mode's mask). It also
replays the full loop's clicks in each other mode ("replay"): the same clicks, so the Dice
against the full-ROI mask isolates the approximation. Per click: click mapping, model and
back-mapping to the CT grid (the session's timings) plus the wall time around ``add_click``
(CUDA-synchronised); median and p90; one-time costs; peak memory. Prints a table and writes
JSON (DESIGN.md section 3; extend, never rename)::

    python benchmarks/click_latency.py --json out/latency.json                    # default model, CPU
    python benchmarks/click_latency.py --random-paper-model --json out/latency.json
    python benchmarks/click_latency.py --model DIR --device cuda --amp --json out.json
    python benchmarks/click_latency.py --model DIR --modes full,full+amp,fast+amp --json out.json

Runs under Python 3.9+ with or without psutil (peak RSS from ``resource`` then).
"""
from __future__ import annotations

import argparse
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

from InteractiveRefineLib.click_regions import NO_REGION_REMOVAL_HELP  # noqa: E402
from InteractiveRefineLib.geometry import read_volume  # noqa: E402
from InteractiveRefineLib.metrics import dice  # noqa: E402
from InteractiveRefineLib.simulated_user import SimulatedUser  # noqa: E402
from InteractiveRefineLib.simulation import label_centroid_ras, truth_on_grid  # noqa: E402

logger = logging.getLogger("click_latency")

#: The conftest's tiny network (tests), on a 64^3 ROI so that a 32^3 window is a real window.
TINY_NETWORK = {"channels": [4, 8, 16, 32], "strides": [1, 2, 2], "num_res_units": 1, "norm": "INSTANCE"}
TINY_ROI = (64, 64, 64)
CASES = {
    "CHGJ015": ("hecktor2020_chgj015", "CHGJ015_ct.nii.gz", "CHGJ015_pt.nii.gz", "CHGJ015_ct_gtvt.nii.gz"),
    "STS_001": ("sts_petct/hecktor_layout/STS_001", "STS_001__CT.nii.gz", "STS_001__PT.nii.gz",
                "STS_001.nii.gz"),
}


# ------------------------------------------------------------------------------ inputs
def data_dir() -> Path:
    return Path(os.environ.get("INTERACTIVE_REFINE_DATA", REPO.parent / "shared" / "data"))


def load_phantom(seed: int, roi_shape, spacing_mm=(1.0, 1.0, 1.0)):
    """The training package's phantom at the model's spacing (PET on a 4 mm grid, a field of
    view 16 voxels beyond the ROI, as in training), else the engine's simple one."""
    try:
        from interactive_refine_training.phantoms import generate_case
    except ImportError:
        from InteractiveRefineLib.demo import simple_phantom

        return ("phantom-simple",) + tuple(simple_phantom(seed))
    case = generate_case(seed, shape=tuple(int(n) + 16 for n in roi_shape),
                         spacing_mm=tuple(float(s) for s in spacing_mm), pet_spacing_mm=(4.0, 4.0, 4.0))
    return f"phantom-{seed}", case.ct, case.pet, case.label


def load_case(spec: str, seed: int, roi_shape=(144, 144, 144), spacing_mm=(1.0, 1.0, 1.0)):
    """``(name, ct, pet, label)`` for a named case, a case folder, a CT file, or ``phantom``
    (generated from ``seed``, or ``phantom:SEED``)."""
    if spec == "phantom" or spec.startswith("phantom:"):
        return load_phantom(int(spec.split(":", 1)[1]) if ":" in spec else seed, roi_shape, spacing_mm)
    if spec in CASES:
        folder, *names = CASES[spec]
        paths = [data_dir() / folder / n for n in names]
        if not paths[0].exists():
            raise SystemExit(
                f"case {spec} not found under {data_dir()} (set INTERACTIVE_REFINE_DATA, or use "
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
    """Whether PyTorch's CPU allocator asks for transparent huge pages (the engine sets
    ``THP_MEM_ALLOC_ENABLE=1`` unless the environment says otherwise) and the kernel's policy
    (``madvise`` or ``always``: granted; ``never``: ignored)."""
    policy = None
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        policy = text[text.index("[") + 1: text.index("]")]
    except (OSError, ValueError):
        pass
    return {"THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"), "kernel_policy": policy}


def timed_click(session, ras, positive, mode):
    """``(result, wall seconds, minor page faults)`` of one ``add_click``."""
    synchronize(session.device)
    faults = minor_page_faults()
    t0 = time.perf_counter()
    result = session.add_click(ras, positive, mode=mode)
    synchronize(session.device)
    wall = time.perf_counter() - t0
    return result, wall, None if faults is None else minor_page_faults() - faults


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def mean_dice_1_10(curve) -> float | None:
    after = curve[1:11]
    return float(np.mean(after)) if after else None


# ------------------------------------------------------------------------------ the loops
def inside_ct(session) -> np.ndarray:
    """Working-grid voxels whose centre lies in the CT (``Grid.contains_index``, as the session
    checks a click), ``[k, j, i]`` boolean: the ROI may reach beyond the CT's field of view."""
    shape = session.grid.shape
    mapping = session.ct.grid.ras_to_ijk @ session.grid.ijk_to_ras  # working (i, j, k) -> CT (i, j, k)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij", sparse=True)
    inside = np.ones(shape, dtype=bool)
    for axis, extent in enumerate(session.ct.shape[::-1]):
        row = mapping[axis]
        coordinate = row[0] * i + row[1] * j + row[2] * k + row[3]
        inside &= (coordinate >= -0.5) & (coordinate <= extent - 0.5)
    return inside


def next_click(user, session, truth_work, inside):
    """The simulated user's click on what it sees: the mask inside the CT field."""
    return user.next_click(session.mask_on_working_grid().astype(bool) & inside, truth_work)


def timed_confirm(session) -> float:
    """Seconds of ``session.confirm()`` (the exact float32 follow-up of a preview)."""
    synchronize(session.device)
    t0 = time.perf_counter()
    session.confirm()
    synchronize(session.device)
    return time.perf_counter() - t0


def run_loop(session, mode, n_clicks, seed, truth_ct, truth_work, confirm=False) -> dict:
    """``session.reset()`` then ``n_clicks`` simulated clicks refined in ``mode``.

    ``confirm``: after each click, what the user first sees (the preview) is scored, then
    ``session.confirm()`` computes the exact mask, which is scored and on which the next click
    is chosen (a user who waits for it).
    """
    session.reset()
    if confirm:  # a reduced-precision initial state too
        session.confirm()
    user = SimulatedUser("2sicr", np.random.default_rng(seed))
    inside = inside_ct(session)
    curve = [dice(session.mask_on_ct(), truth_ct)]
    preview = list(curve)
    clicks, per_click, masks = [], [], [session.mask_in_box().copy()]
    for _ in range(n_clicks):
        click = next_click(user, session, truth_work, inside)
        if click is None:
            break
        ras = session.grid.index_to_ras(np.array(click.index[::-1], dtype=float))
        result, wall, faults = timed_click(session, ras, click.positive, mode)
        timings = dict(result.timings, wall_s=wall, page_faults=faults, mode=result.mode,
                       window=result.window, exact=result.exact)
        if confirm:
            preview.append(dice(session.mask_on_ct(), truth_ct))
            timings["confirm_wall_s"] = timed_confirm(session)
            timings["exact_wall_s"] = wall + timings["confirm_wall_s"]
        per_click.append(timings)
        clicks.append({"ras": [float(v) for v in ras], "positive": click.positive})
        curve.append(dice(session.mask_on_ct(), truth_ct))
        masks.append(session.mask_in_box().copy())
    loop = {"clicks": clicks, "per_click": per_click, "dice": curve, "masks": masks}
    if confirm:
        loop["preview_dice"] = preview
    return loop


def replay(session, clicks, mode, truth_ct, reference_masks, confirm=False) -> dict:
    """The given clicks in ``mode``: Dice against the truth and against ``reference_masks``
    (the CT-box masks after each click of the loop that chose the clicks). ``confirm``: each
    click's preview is scored, then confirmed (the next click starts from the exact mask)."""
    session.reset()
    if confirm:
        session.confirm()
    curve, agreement = [dice(session.mask_on_ct(), truth_ct)], [1.0]
    preview, preview_agreement = list(curve), [1.0]
    for t, click in enumerate(clicks, start=1):
        session.add_click(click["ras"], click["positive"], mode=mode)
        if confirm:
            preview.append(dice(session.mask_on_ct(), truth_ct))
            preview_agreement.append(dice(session.mask_in_box(), reference_masks[t]))
            session.confirm()
        curve.append(dice(session.mask_on_ct(), truth_ct))
        agreement.append(dice(session.mask_in_box(), reference_masks[t]))
    out = {"dice": curve, "dice_vs_reference": agreement, "mean_dice_1_10": mean_dice_1_10(curve)}
    if confirm:
        out.update(preview_dice=preview, preview_dice_vs_reference=preview_agreement,
                   mean_preview_dice_1_10=mean_dice_1_10(preview))
    return out


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
    for part in ("map_s", "norm_s", "model_s", "backmap_s", "total_s"):
        out["median_" + part] = percentile([c.get(part, 0.0) for c in per_click], 50)
    if "preview_dice" in loop:  # a confirm mode: the preview, then the exact mask
        out["preview_dice"] = loop["preview_dice"]
        out["mean_preview_dice_1_10"] = mean_dice_1_10(loop["preview_dice"])
        for part in ("confirm_wall_s", "exact_wall_s"):
            out["median_" + part] = percentile([c[part] for c in per_click], 50)
        out["p90_exact_wall_s"] = percentile([c["exact_wall_s"] for c in per_click], 90)
    faults = [c["page_faults"] for c in per_click if c.get("page_faults") is not None]
    out["median_page_faults"] = percentile(faults, 50)
    return out


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
    p.add_argument("--fast-grow", action="store_true",
                   help="grow the window (x1.5, up to the whole ROI) while the change reaches its faces")
    p.add_argument("--margin", type=int, default=None, help="fast blending margin (default: the engine's)")
    p.add_argument("--fast-norm", default="tracked", choices=["tracked", "frozen", "window"],
                   help="fast-path normalisation statistics (default: the engine's, tracked)")
    p.add_argument("--amp", action="store_true", help="every mode in reduced precision (adds +amp)")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                   help="CUDA: keep cuDNN's default algorithms (the session tunes them by default)")
    p.add_argument("--no-replay", action="store_true", help="skip replaying the full loop's clicks")
    p.add_argument("--no-region-removal", dest="region_removal", action="store_false",
                   help=NO_REGION_REMOVAL_HELP)
    p.add_argument("--json", required=True, help="output JSON path")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.amp:
        modes = [m if AMP in m or m.startswith("auto") else m.replace(CONFIRM, "") + AMP
                 + (CONFIRM if confirms(m) else "") for m in modes]
    if not modes or set(modes) - set(MODES) or len(set(modes)) < len(modes):
        p.error(f"--modes must list some of {', '.join(MODES)} once each, got {args.modes!r}")
    args.modes = modes
    return args


#: Benchmark modes: the session's refine mode, in float32 or with ``+amp`` in reduced precision;
#: ``auto``: the session's defaults (``refine_mode="auto"``, ``amp="auto"``); ``+confirm`` (any
#: mode but ``full``): each click's preview followed by ``session.confirm()``, in a session of
#: its own.
AMP = "+amp"
CONFIRM = "+confirm"
BASE_MODES = ("full", "fast", "full" + AMP, "fast" + AMP, "auto")
MODES = BASE_MODES + tuple(m + CONFIRM for m in BASE_MODES if m != "full")


def confirms(mode: str) -> bool:
    return mode.endswith(CONFIRM)


def _base(mode: str) -> str:
    return mode[: -len(CONFIRM)] if confirms(mode) else mode


def refine_mode(mode: str) -> str | None:
    """The per-click mode of a benchmark mode (``"fast+amp"`` -> ``"fast"``; ``"auto"`` -> None:
    the session's choice)."""
    mode = _base(mode)
    if mode == "auto":
        return None
    return mode[: -len(AMP)] if mode.endswith(AMP) else mode


def session_key(mode: str) -> str:
    """Modes sharing a session: one per precision, one for ``auto``, and one per ``+confirm`` mode
    (confirm replaces its session's states with exact ones)."""
    base = _base(mode)
    key = "auto" if base == "auto" else "reduced" if base.endswith(AMP) else "float32"
    return key + CONFIRM if confirms(mode) else key


#: Session arguments per :func:`session_key`
SESSION_SETTINGS = {"float32": {"amp": False}, "reduced": {"amp": True},
                    "auto": {"amp": "auto", "refine_mode": "auto"}}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    from InteractiveRefineLib import fast_refine
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.session import RefinementSession, cpu_bfloat16_supported

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    one_time = {}
    with tempfile.TemporaryDirectory() as scratch:
        package_dir, model_kind = model_path(args, Path(scratch))
        t0 = time.perf_counter()
        package = load_model_package(package_dir)
        one_time["model_load_s"] = time.perf_counter() - t0
        name, ct, pet, label = load_case(args.case, args.seed, package.roi_size_vox, package.spacing_mm)

    # One session per precision (and one for "auto"); each runs the initial model once.
    sessions, one_time_by_session = {}, {}
    for key in dict.fromkeys(session_key(m) for m in args.modes):
        own = [refine_mode(m) for m in args.modes if session_key(m) == key]
        settings = dict({"refine_mode": "fast" if "fast" in own else "full"},
                        **SESSION_SETTINGS[key.replace(CONFIRM, "")])
        costs = dict(one_time)
        t0 = time.perf_counter()
        session = RefinementSession(
            package, device=args.device, fast_window=args.window,
            fast_margin=fast_refine.DEFAULT_MARGIN if args.margin is None else args.margin,
            fast_norm=args.fast_norm, fast_grow=args.fast_grow, region_removal=args.region_removal,
            cudnn_benchmark=args.cudnn_benchmark, **settings,
        )
        costs["session_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        session.set_image(ct, pet, roi_center_ras=_label_centre(label))
        costs["set_image_s"] = time.perf_counter() - t0
        synchronize(session.device)
        t0 = time.perf_counter()
        initial = session.initial()
        synchronize(session.device)
        costs["initial_s"] = time.perf_counter() - t0
        costs["initial_model_s"] = initial.timings["model_s"]
        costs["calibrate_s"] = initial.timings.get("calibrate_s", 0.0)
        costs["warmup_s"] = {}
        costs.update(refine_mode=session.refine_mode, amp=session.amp, precision=session.precision)
        sessions[key], one_time_by_session[key] = session, costs
    cuda = session.device.type == "cuda"
    truth_ct = truth_on_grid(label, ct.grid)
    truth_work = truth_on_grid(label, session.grid)

    # Warm-up: the first refinement per mode builds oneDNN/cuDNN plans; excluded from the stats.
    warm_click = next_click(
        SimulatedUser("2sicr", np.random.default_rng(args.seed)), session, truth_work, inside_ct(session)
    )
    for mode in args.modes:
        if warm_click is None:
            break
        own = sessions[session_key(mode)]
        ras = own.grid.index_to_ras(np.array(warm_click.index[::-1], dtype=float))
        _, seconds, _ = timed_click(own, ras, warm_click.positive, refine_mode(mode))
        if confirms(mode):
            seconds += timed_confirm(own)
        one_time_by_session[session_key(mode)]["warmup_s"][mode] = seconds
        own.undo()

    modes, loops = {}, {}
    for mode in args.modes:
        own = sessions[session_key(mode)]
        if cuda:
            torch.cuda.reset_peak_memory_stats(own.device)
        loops[mode] = run_loop(own, refine_mode(mode), args.clicks, args.seed, truth_ct, truth_work,
                               confirm=confirms(mode))
        modes[mode] = summarise(loops[mode])
        modes[mode]["amp"], modes[mode]["precision"] = own.amp, own.precision
        modes[mode]["rss_peak_so_far_mb"] = peak_rss_mb()
        if cuda:
            modes[mode]["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(own.device) / 2**20

    replays = {}
    if not args.no_replay and "full" in loops and len(args.modes) > 1:
        reference = loops["full"]["masks"]
        for mode in args.modes:
            if mode != "full":
                replays[mode] = dict(replay(sessions[session_key(mode)], loops["full"]["clicks"],
                                            refine_mode(mode), truth_ct, reference, confirm=confirms(mode)),
                                     clicks_from="full")

    result = {
        "device": str(session.device),
        "device_name": torch.cuda.get_device_name(session.device) if cuda else platform.processor()
        or platform.machine(),
        "roi_voxels": int(np.prod(session.grid.shape)),
        "roi_shape": list(session.grid.shape),
        "modes": modes,
        "replay": replays,
        "peak_rss_mb": peak_rss_mb(),
        # the first session's (the float32 one when a float32 mode ran); every session's below
        "one_time_s": next(iter(one_time_by_session.values())),
        "one_time_s_by_session": one_time_by_session,
        "fast": {"window": session.fast_window, "margin": session.fast_margin, "norm": session.fast_norm,
                 "grow": session.fast_grow},
        "model": {"path": str(package_dir), "kind": model_kind, "name": package.card.get("name"),
                  "network": package.card.get("network")},
        "case": name,
        "clicks_requested": args.clicks,
        "seed": args.seed,
        "region_removal": session.region_removal,
        "amp": any(m["amp"] for m in modes.values()),  # some mode ran in reduced precision
        "amp_by_mode": {mode: m["amp"] for mode, m in modes.items()},
        "cpu_bfloat16": cpu_bfloat16_supported(),
        "cudnn_benchmark": bool(args.cudnn_benchmark),
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
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def _label_centre(label):
    """RAS centre of the label's foreground (the paper's ROI is centred on the GTVp)."""
    centre = label_centroid_ras(label, 1)
    if centre is None:
        raise SystemExit("the label has no voxel with value 1")
    return centre


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


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
    for mode, r in result["replay"].items():
        if "mean_preview_dice_1_10" in r:
            lines.append(
                f"replay of full's clicks in {mode}: previews mean Dice 1-10 "
                f"{_fmt(r['mean_preview_dice_1_10'])}, preview vs full mask per click "
                f"{' '.join(f'{d:.3f}' for d in r['preview_dice_vs_reference'][1:])}"
            )
        lines.append(
            f"replay of full's clicks in {mode}: mean Dice 1-10 {_fmt(r['mean_dice_1_10'])}, "
            f"Dice vs full mask per click {' '.join(f'{d:.3f}' for d in r['dice_vs_reference'][1:])}"
        )
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
