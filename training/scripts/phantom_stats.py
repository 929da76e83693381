#!/usr/bin/env python
"""Print a Markdown table of synthetic-phantom statistics next to the real CHGJ015 values.

The statistics are those of ``shared/docs/REAL_DATA_STATS.md`` (body = CT > -300 HU; soft tissue
= -100..100 HU outside the labels; fat = -150..-50 HU; bone > 300 HU; PET resampled onto the CT
grid; hot regions = connected regions outside the labels above 50 % of the GTVp SUVmax, at
least 0.03 mL). Phantom columns give the median and the min-max over the generated cases.

    python training/scripts/phantom_stats.py --n 20 --size 96
    python training/scripts/phantom_stats.py --n 20 --size 96 --pet-spacing 4 \
        --real ../shared/data/hecktor2020_chgj015

With ``--real FOLDER`` (holding ``CHGJ015_{ct,pt,ct_gtvt}.nii.gz``) the CHGJ015 column is
recomputed from the files with the same code; otherwise the documented values are shown.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    from interactive_refine_training import phantoms
except ImportError:  # run from a checkout without the training package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from interactive_refine_training import phantoms

ROWS = [
    ("tumour volume (mL)", "tumour_ml", "{:.1f}"),
    ("CT HU in tumour p5", "tumour_hu_p5", "{:.0f}"),
    ("CT HU in tumour p50", "tumour_hu_p50", "{:.0f}"),
    ("CT HU in tumour p95", "tumour_hu_p95", "{:.0f}"),
    ("CT HU soft tissue (−100..100) p5", "soft_hu_p5", "{:.0f}"),
    ("CT HU soft tissue p50", "soft_hu_p50", "{:.0f}"),
    ("CT HU soft tissue p95", "soft_hu_p95", "{:.0f}"),
    ("fat fraction of body", "fat_fraction", "{:.2f}"),
    ("bone fraction of body", "bone_fraction", "{:.3f}"),
    ("SUVmax in tumour", "suvmax", "{:.1f}"),
    ("SUVmean in tumour", "suvmean", "{:.1f}"),
    ("SUV outside tumour p50", "out_suv_p50", "{:.2f}"),
    ("SUV outside tumour p95", "out_suv_p95", "{:.2f}"),
    ("SUV outside tumour p99", "out_suv_p99", "{:.1f}"),
    ("SUV outside tumour max", "out_suv_max", "{:.1f}"),
    ("hot regions > 50 % SUVmax (count)", "hot_regions", "{:.0f}"),
    ("largest hot region (mL)", "hot_largest_ml", "{:.1f}"),
    ("largest hot region / tumour volume", "hot_largest_x_tumour", "{:.1f}"),
]


def real_statistics(folder: Path) -> dict:
    """Statistics of CHGJ015 computed with the phantoms' own code (HECKTOR 2020 file names)."""
    from InteractiveRefineLib.geometry import Volume, read_volume

    ct = read_volume(folder / "CHGJ015_ct.nii.gz")
    pet = read_volume(folder / "CHGJ015_pt.nii.gz")
    lab = read_volume(folder / "CHGJ015_ct_gtvt.nii.gz")
    label = Volume.from_array((lab.array > 0.5).astype(np.uint8), lab.ijk_to_ras)
    return phantoms.case_statistics(phantoms.PhantomCase(ct, pet, label, {}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="number of phantoms")
    parser.add_argument("--size", type=int, default=96, help="cube edge (voxels)")
    parser.add_argument("--spacing", type=float, default=1.0, help="CT voxel size (mm)")
    parser.add_argument("--pet-spacing", type=float, default=None,
                        help="PET voxel size (mm), default CT grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=None, help="folder with the CHGJ015 files")
    args = parser.parse_args(argv)

    rows, seconds, flags = [], [], {"brain": 0, "hot": 0, "necrotic": 0, "nodes": 0}
    for i in range(args.n):
        t0 = time.perf_counter()
        case = phantoms.generate_case(args.seed + i, shape=(args.size,) * 3, spacing_mm=(args.spacing,) * 3,
                                      pet_spacing_mm=args.pet_spacing)
        seconds.append(time.perf_counter() - t0)
        stats = phantoms.case_statistics(case)
        rows.append(stats)
        flags["brain"] += bool(case.meta["brain"])
        flags["hot"] += stats["hot_largest_ml"] >= 0.5
        flags["necrotic"] += bool(case.meta["necrotic_core"])
        flags["nodes"] += case.meta["n_nodes"] > 0

    real = dict(phantoms.CHGJ015_STATS)
    source = "REAL_DATA_STATS.md"
    if args.real is not None:
        real = real_statistics(args.real)
        source = f"recomputed from {args.real}"

    pet_desc = f"PET {args.pet_spacing} mm grid" if args.pet_spacing else "PET on the CT grid"
    print(f"Phantoms: {args.n} cases, {args.size}^3 at {args.spacing} mm, {pet_desc}, seeds "
          f"{args.seed}..{args.seed + args.n - 1}, generator {phantoms.GENERATOR_VERSION}. "
          f"CHGJ015 column: {source}.\n")
    print("| statistic | phantoms: median | phantoms: min – max | CHGJ015 |")
    print("|---|---|---|---|")
    for name, key, fmt in ROWS:
        values = np.array([r[key] for r in rows], dtype=float)
        print(f"| {name} | {fmt.format(np.median(values))} | {fmt.format(values.min())} – "
              f"{fmt.format(values.max())} | {fmt.format(real[key])} |")
    n = args.n
    print(f"\nCases with brain in the FOV: {flags['brain']}/{n}; with a hot non-tumour region >= 0.5 mL: "
          f"{flags['hot']}/{n}; necrotic core: {flags['necrotic']}/{n}; with GTVn: {flags['nodes']}/{n}.")
    print(f"Generation time per case: median {np.median(seconds):.2f} s, max {max(seconds):.2f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
