"""Cold start of the Slicer Logic: a fresh process (Slicer just started: the module loaded, no
torch yet) to the first mask, with and without the warm-up the Widget starts when the module
opens. Real MRML through slicer-core, STS_001, the shipped model (or ``--model``).

    .venv/bin/python Testing/slicer/cold_start.py [--device cpu] [--repeats 2] [--model DIR]

Each run is a new process. Modes: ``cold`` (no warm-up: Segment loads torch, MONAI and the
model), ``warm`` (warm-up when the module opens; Segment once it has finished, i.e. after the
user's own time to load the images and place the ROI), ``warm_at_once`` (Segment right after the
warm-up started: it waits for the warm-up's load instead of loading again). Times: ``segment_s``
(pressing Segment to the mask in the segment), ``open_to_mask_s`` (module open to the mask, the
user's time left out for ``warm``), ``warmup_s``. Not a pytest test (no ``test_`` prefix).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("cold", "warm", "warm_at_once")


def one_run(mode: str, device: str, model: str) -> dict:
    t_start = time.perf_counter()
    logging.basicConfig(level=logging.INFO)  # stderr: e.g. "Loading model from" (a load by Segment)
    sys.path.insert(0, str(HERE))
    import slicer_bootstrap

    slicer_bootstrap.bootstrap()
    module = slicer_bootstrap.load_module()
    assert "torch" not in sys.modules
    from conftest import data_path

    logic = module.InteractiveRefineLogic()
    out = {"mode": mode, "slicer_start_s": time.perf_counter() - t_start}
    t_open = time.perf_counter()
    if mode != "cold":
        assert logic.warmUp(model, device)
    case = ("sts_petct", "hecktor_layout", "STS_001")
    ct = logic.loadVolume(str(data_path(*case, "STS_001__CT.nii.gz")), "CT")
    pet = logic.loadVolume(str(data_path(*case, "STS_001__PT.nii.gz")), "PET")
    if mode == "warm":
        logic.waitForWarmUp()
        out["warmup"] = logic.warmUpInfo
    t0 = time.perf_counter()
    logic.segment(ct, pet, None, None, modelPath=model, device=device)
    mask = logic.segmentMask()
    t1 = time.perf_counter()
    out.update(segment_s=t1 - t0, open_to_mask_s=t1 - (t0 if mode == "warm" else t_open),
               voxels=int(mask.sum()), process_s=t1 - t_start)
    if mode == "warm_at_once":
        logic.waitForWarmUp()
        out["warmup"] = logic.warmUpInfo
    timings = logic.lastResult.timings
    out["engine"] = {k: round(v, 3) for k, v in timings.items() if isinstance(v, float)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="", help="a model package folder (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.device, args.model)))
        return 0
    results = []
    for _ in range(args.repeats):
        for mode in args.modes.split(","):
            done = subprocess.run([sys.executable, __file__, "--one", mode, "--device", args.device,
                                   "--model", args.model], capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{mode:>13}: Segment -> mask {r['segment_s']:.2f} s, module open -> mask "
                  f"{r['open_to_mask_s']:.2f} s, warm-up {r.get('warmup', {}).get('total_s', 0):.2f} s",
                  flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
