"""Seconds for the N-pass uncertainty estimate (test-time augmentation + MC dropout) after the
initial segmentation and after one click, and for one suggestion.

    python benchmarks/uncertainty_cost.py                          # shipped model, CHGJ015, 8 passes
    python benchmarks/uncertainty_cost.py --random-paper-model --case phantom   # 144^3, paper's network
    python benchmarks/uncertainty_cost.py --passes 8 --repeats 2 --threads 2 --json out/uncertainty.json

Prints one JSON object: per state (``initial``, ``one_click``) the wall seconds of each repeat of
``uncertainty.estimate`` and of ``uncertainty.suggest``, the ROI, the device and the model. The
case and model options are ``click_latency.py``'s.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from click_latency import load_case, model_path  # noqa: E402 (the same cases and models)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="CHGJ015",
                   help="CHGJ015, STS_001, phantom[:SEED], a folder or a CT file")
    p.add_argument("--model", help="package folder (default: the shipped model)")
    p.add_argument("--random-paper-model", action="store_true",
                   help="a random network of the paper's size, 144^3")
    p.add_argument("--random-tiny-model", action="store_true")
    p.add_argument("--passes", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from InteractiveRefineLib.runtime import apply_process_settings

    apply_process_settings(threads=args.threads)
    from InteractiveRefineLib import uncertainty
    from InteractiveRefineLib.model_package import load_model_package
    from InteractiveRefineLib.session import RefinementSession
    from InteractiveRefineLib.simulation import label_centroid_ras

    with tempfile.TemporaryDirectory() as scratch:
        path, kind = model_path(args, Path(scratch))
        package = load_model_package(path)
        roi = package.spec.roi_size_vox
        name, ct, pet, label = load_case(args.case, args.seed, roi, package.spec.spacing_mm[::-1])
        session = RefinementSession(package, device=args.device, refine_mode="full", amp=False,
                                    threshold_start=False)
        centre = label_centroid_ras(label)
        session.set_image(ct, pet, roi_center_ras=centre, allow_low_pet_coverage=True)
        session.initial()
        out = {"case": name, "model": kind, "roi_vox": list(roi), "device": str(session.device),
               "passes": args.passes, "threads": args.threads}
        for state in ("initial", "one_click"):
            if state == "one_click":
                session.add_click(centre, positive=True)
            estimates, suggestions = [], []
            for repeat in range(args.repeats):
                t0 = time.perf_counter()
                found = uncertainty.estimate(session, passes=args.passes, seed=args.seed + repeat)
                t1 = time.perf_counter()
                uncertainty.suggest(session, found.mean, found.entropy)
                estimates.append(round(t1 - t0, 3))
                suggestions.append(round(time.perf_counter() - t1, 3))
            out[state] = {"estimate_s": estimates, "suggest_s": suggestions}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
