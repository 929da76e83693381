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

``--field`` measures what the model sees instead: the 144 mm cube centred on the GTVp centroid,
resampled to 2 mm (``phantoms.field_statistics``: tumour, background, HU of fat / muscle / bone,
brain, symmetric hot glands, PET noise), for the phantoms next to the five real head-and-neck
cases (CHGJ015 and the four ``hecktor2020_lowres`` cases under ``--data``):

    python training/scripts/phantom_stats.py --field --n 20 --size 144 --spacing 1 --pet-spacing 4

``--nodes`` compares the pathological lymph nodes (label 2, GTVn; ``phantoms.node_statistics``:
26-connected components of at least 0.05 mL) with real GTVn contours: the 16 pre-treatment masks
of HNTS-MRG 2024 under ``--data/hntsmrg2024_masks`` (15 pre-RT masks registered to mid-RT, and
patient 2's native pre-RT mask; MR-based contours, MD Anderson; no PET), and the nodes' SUVmax
with the published PET/CT values quoted in ``NODE_LITERATURE``:

    python training/scripts/phantom_stats.py --nodes --n 40 --size 144 --spacing 1 --pet-spacing 4
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
from InteractiveRefineLib.geometry import Volume, read_volume

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HN_CASES = ("hecktor2020_chgj015", "hecktor2020_lowres/CHGJ007", "hecktor2020_lowres/CHGJ010",
            "hecktor2020_lowres/CHGJ026", "hecktor2020_lowres/CHGJ038")

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


FIELD_ROWS = [
    ("tumour volume (mL)", "tumour_ml", "{:.1f}"),
    ("SUVmax in tumour", "suvmax", "{:.1f}"),
    ("SUVmean in tumour", "suvmean", "{:.1f}"),
    ("CT HU in tumour p50", "tumour_hu", "{:.0f}"),
    ("body fraction of the field", "body_fraction", "{:.2f}"),
    ("background SUV (body median)", "bg_suv", "{:.2f}"),
    ("PET local CoV in muscle (10 mm window)", "pet_cov", "{:.2f}"),
    ("fat HU p50 (−190..−30)", "fat_hu", "{:.0f}"),
    ("muscle HU p50 (20..80, SUV < 2.5)", "muscle_hu", "{:.0f}"),
    ("bone HU p50 (> 300)", "bone_hu", "{:.0f}"),
    ("fat fraction of body", "fat_fraction", "{:.2f}"),
    ("bone fraction of body", "bone_fraction", "{:.3f}"),
    ("brain in the field (cases; 1/0)", "brain", "share"),
    ("brain volume in the field (mL)", "brain_ml", "{:.0f}"),
    ("brain volume / tumour volume", "brain_x_tumour", "{:.1f}"),
    ("brain SUV p50", "brain_suv_p50", "{:.1f}"),
    ("brain SUV p95", "brain_suv_p95", "{:.1f}"),
    ("brain lower edge above tumour centre (mm)", "brain_dz_mm", "{:.0f}"),
    ("symmetric hot pairs (glands, tonsils)", "sym_pairs", "{:.0f}"),
    ("gland SUVmax (pair median)", "gland_suvmax", "{:.1f}"),
    ("gland volume, each (mL)", "gland_ml", "{:.1f}"),
    ("other hot regions > 50 % tumour SUVmax", "hot_regions", "{:.0f}"),
]


#: Published values for pathological cervical nodes on FDG-PET/CT, beside the measured masks.
NODE_LITERATURE = {
    "node_suvmax": "SUVmax of the largest node of a metastatic nodal basin >= 3.16 in 74 % of 86 basins "
                   "('Utility of SUVmax on 18F-FDG PET in detecting cervical nodal metastases', Cancer "
                   "Imaging 2016, doi:10.1186/s40644-016-0095-z); best metastatic-node cut-off 3.5 in oral "
                   "SCC (SpringerPlus 2015, doi:10.1186/s40064-015-1521-6)",
}


def real_node_masks(data: Path) -> list[Path]:
    """The 16 pre-treatment HNTS-MRG 2024 masks (0 background, 1 GTVp, 2 GTVn)."""
    root = data / "hntsmrg2024_masks"
    return (sorted((root / "prediction_masks").glob("*_preRT_mask_registered.nii.gz"))
            + sorted((root / "registration_example_patient2").glob("*_preRT_mask.nii.gz")))


def node_table(phantom_rows, real_rows) -> list[str]:
    """Markdown lines: per node statistic, phantoms next to the real masks and the literature."""

    def summary(values, fmt="{:.1f}"):
        v = np.asarray(values, dtype=float)
        if not v.size:
            return "–"
        return f"{fmt.format(np.median(v))} ({fmt.format(v.min())} – {fmt.format(v.max())})"

    def per_case(rows, key):
        return [r[key] for r in rows]

    def flat(rows, key):
        return [v for r in rows for v in r.get(key, [])]

    def with_nodes(rows):
        return [r for r in rows if r["n_nodes"]]

    lines = ["| GTVn statistic | phantoms: median (min – max) | HNTS-MRG 2024 pre-RT masks: median "
             "(min – max) | published (PET/CT) |", "|---|---|---|---|"]
    n_ph, n_re = len(phantom_rows), len(real_rows)
    lines.append(f"| cases with GTVn | {len(with_nodes(phantom_rows))}/{n_ph} | "
                 f"{len(with_nodes(real_rows))}/{n_re} | – |")
    for name, rows_of, key, fmt in (
        ("nodes per case", lambda r: r, "n_nodes", "{:.0f}"),
        ("nodes per case with GTVn", with_nodes, "n_nodes", "{:.0f}"),
        ("total GTVn volume per case with GTVn (mL)", with_nodes, "nodes_ml", "{:.1f}"),
        ("largest node per case with GTVn (mL)", with_nodes, "largest_ml", "{:.1f}"),
    ):
        cells = []
        for values in (per_case(rows_of(phantom_rows), key), per_case(rows_of(real_rows), key)):
            mean = f", mean {np.mean(values):.2f}" if key == "n_nodes" and len(values) else ""
            cells.append(summary(values, fmt) + mean)
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | – |")
    lines.append(f"| node volume, each (mL) | {summary(flat(phantom_rows, 'node_ml'))} | "
                 f"{summary(flat(real_rows, 'node_ml'))} | – |")
    suv = flat(phantom_rows, "node_suvmax")
    above = f"; >= 3.16 in {np.mean(np.asarray(suv) >= 3.16) * 100:.0f} %" if suv else ""
    lines.append(f"| node SUVmax, each{above} | {summary(suv)} | no PET | {NODE_LITERATURE['node_suvmax']} |")
    return lines


def nodes_main(args) -> int:
    rows = []
    for i in range(args.n):
        case = phantoms.generate_case(args.seed + i, shape=(args.size,) * 3, spacing_mm=(args.spacing,) * 3,
                                      pet_spacing_mm=args.pet_spacing, p_bulky=args.p_bulky)
        rows.append(phantoms.node_statistics(case.label, case.pet))
    real = [phantoms.node_statistics(read_volume(path)) for path in real_node_masks(args.data)]
    for row in rows + real:
        row["largest_ml"] = max(row["node_ml"], default=0.0)
    pet_desc = f"PET on a {args.pet_spacing} mm grid" if args.pet_spacing else "PET on the CT grid"
    print(f"Phantoms: {args.n} cases, {args.size}^3 at {args.spacing} mm, {pet_desc}, seeds "
          f"{args.seed}..{args.seed + args.n - 1}, generator {phantoms.GENERATOR_VERSION}; real: "
          f"{len(real)} pre-treatment HNTS-MRG 2024 GTVn masks from {args.data / 'hntsmrg2024_masks'}. "
          "Nodes: 26-connected components of label 2 of at least 0.05 mL.\n")
    print("\n".join(node_table(rows, real)))
    return 0


def read_hn_case(folder: Path):
    """CT, PET and GTVp label (uint8) of a HECKTOR case folder (2020 or 2022+ file names)."""
    ct = sorted(folder.glob("*__CT.nii.gz")) or sorted(folder.glob("*_ct.nii.gz"))
    pt = sorted(folder.glob("*__PT.nii.gz")) or sorted(folder.glob("*_pt.nii.gz"))
    lab = [f for f in folder.glob("*.nii.gz") if f.name.endswith(("_gtvt.nii.gz",))
           or f.name == f"{folder.name}.nii.gz"]
    ct, pet, lab = read_volume(ct[0]), read_volume(pt[0]), read_volume(lab[0])
    label = Volume.from_array((lab.array > 0.5).astype(np.uint8), lab.ijk_to_ras)
    return ct, pet, label


def field_table(phantom_rows, real_rows, real_names) -> list[str]:
    """Markdown lines: per statistic, phantom median (range) next to real median (range) and cases."""
    lines = ["| statistic | phantoms: median (min – max) | real H&N: median (min – max) | "
             + " | ".join(real_names) + " |", "|---|---|---|" + "---|" * len(real_names)]

    def cell(values, fmt):
        v = np.array(values, dtype=float)
        if fmt == "share":
            return f"{int(np.nansum(v))}/{v.size}"
        v = v[np.isfinite(v)]
        if not v.size:
            return "–"
        return f"{fmt.format(np.median(v))} ({fmt.format(v.min())} – {fmt.format(v.max())})"

    for name, key, fmt in FIELD_ROWS:
        ph = [r[key] for r in phantom_rows]
        re = [r[key] for r in real_rows]
        per = [("{:.0f}" if fmt == "share" else fmt).format(v) if np.isfinite(v) else "–" for v in re]
        lines.append(f"| {name} | {cell(ph, fmt)} | {cell(re, fmt)} | " + " | ".join(per) + " |")
    return lines


def real_statistics(folder: Path) -> dict:
    """Statistics of CHGJ015 computed with the phantoms' own code (HECKTOR 2020 file names)."""
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
    parser.add_argument("--field", action="store_true",
                        help="statistics of the 144 mm field centred on the tumour (2 mm grid), phantoms "
                             "next to the five real head-and-neck cases under --data")
    parser.add_argument("--nodes", action="store_true",
                        help="the GTVn (label 2) nodes: counts, volumes, SUVmax, next to the real HNTS-MRG "
                             "2024 masks under --data and published values")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="shared data folder (with --field, --nodes)")
    parser.add_argument("--p-bulky", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.field:
        return field_main(args)
    if args.nodes:
        return nodes_main(args)

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


def field_main(args) -> int:
    rows, seconds = [], []
    for i in range(args.n):
        t0 = time.perf_counter()
        case = phantoms.generate_case(args.seed + i, shape=(args.size,) * 3, spacing_mm=(args.spacing,) * 3,
                                      pet_spacing_mm=args.pet_spacing, p_bulky=args.p_bulky)
        seconds.append(time.perf_counter() - t0)
        rows.append(phantoms.field_statistics(case.ct, case.pet, case.label))
    names, real = [], []
    for rel in HN_CASES:
        folder = args.data / rel
        names.append(folder.name.replace("hecktor2020_", "").upper())
        real.append(phantoms.field_statistics(*read_hn_case(folder)))
    pet_desc = f"PET on a {args.pet_spacing} mm grid" if args.pet_spacing else "PET on the CT grid"
    print(f"Phantoms: {args.n} cases, {args.size}^3 at {args.spacing} mm, {pet_desc}, "
          f"p_bulky {args.p_bulky}, "
          f"seeds {args.seed}..{args.seed + args.n - 1}, generator {phantoms.GENERATOR_VERSION}; "
          f"real: {len(real)} HECKTOR 2020 cases from {args.data}. Field: 144 mm cube centred on the "
          "GTVp centroid, resampled to 2 mm.\n")
    print("\n".join(field_table(rows, real, names)))
    print(f"\nGeneration time per case: median {np.median(seconds):.2f} s, max {max(seconds):.2f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
