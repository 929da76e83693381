"""Synthetic head-and-neck FDG-PET/CT phantoms with GTVp/GTVn labels (HECKTOR 2022 layout).

For tests, CI-scale training and the shipped default model. The phantoms are tuned against the
measured statistics of the real cases in ``shared/docs/REAL_DATA_STATS.md`` (see
``training/scripts/phantom_stats.py``), so that a model trained on them learns what matters on
real PET/CT:

- the primary tumour (label 1) is a hot, heterogeneous PET region in the neck soft tissue next to
  the airway, and is barely visible on CT (its HU overlap muscle: p50 ~45, p5..p95 ~25..70);
- physiological uptake of similar SUV is *not* tumour: the brain at the top of the field of view
  (``p_brain``, default 0.8: in a 144 mm field centred on the GTVp its hot part starts ~10-35 mm
  above the tumour centre, holds ~50-250 mL, ~15x the tumour, at SUV p50 ~6 / p95 ~8.5, as in
  4 of the 5 measured HECKTOR fields), symmetric tonsils, parotid and submandibular glands
  (SUVmax ~3.5-5.5), lingual tonsil, vocal cords, active muscles, brown fat, sometimes an
  inflamed region as hot as the tumour; background soft tissue SUV p50 ~1.3;
- pathological lymph nodes (label 2, GTVn; generator 1.3): 0-3 per case (85 % of cases have one),
  lateral ovoids of 0.6-40 mL (median ~5 mL, as real pre-treatment GTVn contours) and SUV 2.5-10;
- the PET goes through a Gaussian PSF (5-7 mm FWHM), optional voxel integration onto a coarser
  PET grid (e.g. 4 mm) and signal-dependent, spatially correlated noise.

Geometry follows HECKTOR/ITK files with an identity LPS direction: array ``[k, j, i]`` with i
towards the patient's left, j posterior and k superior (``ijk_to_ras = diag(-sx, -sy, sz)``).

Anatomy is built in millimetres at a realistic size (neck ~100-125 mm wide) and shrunk by
``anatomy_scale`` when the field of view is too small for it (auto: ``min(1, FOV/132 mm)``
in-plane). Tumour volumes are log-uniform in 1-60 mL (bulky tumours, with probability ``p_bulky``:
80-450 mL, hot rim and cold core, SUVmax ~7, like the measured thigh sarcoma); the upper end is capped at
``max(60 * scale**3, 5 % of the FOV volume)`` for small fields of view (44 mL at 96^3 x 1 mm,
5.5 mL at 48^3 x 1 mm). The measured SUVmax in the GTVp is targeted log-normal around 13.5, clipped
to 3-25. With the brain, the (non-bulky) tumour sits at the oro-/nasopharynx level, 3-32 mm below
the skull base. ``field_statistics`` measures these properties in the model's 144 mm field; the
comparison with the real cases is in ``training/README.md`` (generator 1.2).

Everything is deterministic by seed (one ``numpy.random.default_rng(seed)`` drives each case):
the same seed and parameters give bit-identical arrays.
"""
from __future__ import annotations

import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from InteractiveRefineLib.geometry import Grid, Volume, inside_mask, resample, write_volume
from scipy import ndimage

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.3"

#: Documented ranges (full anatomical scale); see the module docstring for small fields of view.
TUMOUR_ML_RANGE = (1.0, 60.0)
SUVMAX_RANGE = (3.0, 25.0)
#: Bulky tumours (``p_bulky``): volume, and SUVmax (log-normal around 7, clipped to this range).
BULKY_ML_RANGE = (80.0, 450.0)
BULKY_SUVMAX_RANGE = (4.0, 12.0)
PSF_FWHM_RANGE_MM = (5.0, 7.0)
#: Pathological lymph nodes (GTVn, label 2; generator 1.3): the chance of 0, 1, 2, 3 nodes per
#: case and each node's volume (mL, log-uniform, at full anatomical scale), matched to the
#: pre-treatment GTVn contours of HNTS-MRG 2024 (training/README.md, "Lymph nodes").
NODE_COUNT_P = (0.15, 0.4, 0.3, 0.15)
NODE_ML_RANGE = (0.6, 40.0)
#: The nodes' own random stream: ``default_rng([seed, NODE_STREAM])``.
NODE_STREAM = 2
#: Chance that the brain sits at the top of the field of view (4 of the 5 measured H&N fields).
P_BRAIN = 0.8

# Tissue classes of the internal tissue map (index into the per-case HU / SUV tables).
(AIR, SKIN, FAT, MUSCLE, BLOOD, PAROTID, SUBMAND, THYROID, TONSIL, LINGUAL, VOCAL, HOTMUSCLE,
 BNODE, CORTICAL, CANCELLOUS, DISC, CSF, CORD, CARTILAGE, AIRWAY, BRAIN_GM, BRAIN_WM, BROWNFAT,
 TUMOUR, NECROSIS, NODE, INFLAM, TEETH, LOOSE) = range(29)
N_CLASSES = 29


@dataclass
class PhantomCase:
    """One synthetic study: CT (HU) and PET (SUV) volumes, the label on the CT grid and metadata."""

    ct: Volume
    pet: Volume
    label: Volume
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ helpers
def _smoothstep(x, lo, hi):
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _gauss_noise_gain(sigma_vox) -> float:
    """Standard deviation of white unit noise after a separable Gaussian filter of ``sigma_vox``."""
    gain = 1.0
    for s in np.atleast_1d(sigma_vox):
        if s <= 0:
            continue
        radius = int(4.0 * s + 0.5)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        w = np.exp(-0.5 * (x / s) ** 2)
        w /= w.sum()
        gain *= math.sqrt(float((w * w).sum()))
    return gain


def _smooth_noise(rng, shape, spacing_kji, corr_mm) -> np.ndarray:
    """A smooth random field (~N(0, 1)) of ``shape`` with correlation length ``corr_mm``.

    Drawn on a coarse lattice of ``corr_mm`` spacing, lightly smoothed and linearly interpolated,
    so its cost does not depend on the correlation length.
    """
    shape = tuple(int(n) for n in shape)
    coarse_shape = tuple(int(math.ceil(n * s / corr_mm)) + 3 for n, s in zip(shape, spacing_kji))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, 0.6, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    step = np.array([s / corr_mm for s in spacing_kji])
    offset = rng.uniform(0.0, 1.0, 3)
    out = ndimage.affine_transform(coarse, step, offset=offset, output_shape=shape, order=1,
                                   mode="nearest", prefilter=False)
    return out.astype(np.float32, copy=False)


def _rotation(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
    """Rotation matrix (x, y, z) from angles in radians (about z, then y, then x)."""
    cz, sz_ = math.cos(yaw), math.sin(yaw)
    cy, sy_ = math.cos(pitch), math.sin(pitch)
    cx, sx_ = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz_, 0], [sz_, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy_], [0, 1, 0], [-sy_, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx_], [0, sx_, cx]])
    return rz @ ry @ rx


class _Space:
    """Millimetre coordinates of the CT grid: x (i, patient left +), y (j, posterior +), z (k, up +)."""

    def __init__(self, shape_kji, spacing_ijk):
        self.shape = tuple(int(n) for n in shape_kji)
        self.spacing_ijk = tuple(float(s) for s in spacing_ijk)
        self.spacing_kji = self.spacing_ijk[::-1]
        nk, nj, ni = self.shape
        sx, sy, sz = self.spacing_ijk
        self.x = ((np.arange(ni) - (ni - 1) / 2.0) * sx).astype(np.float32)
        self.y = ((np.arange(nj) - (nj - 1) / 2.0) * sy).astype(np.float32)
        self.z = ((np.arange(nk) - (nk - 1) / 2.0) * sz).astype(np.float32)
        self.voxel_ml = sx * sy * sz / 1000.0

    def box(self, centre, half):
        """``[k, j, i]`` slices covering ``centre +- half`` (x, y, z mm), or None when empty."""
        slices = []
        for axis, vec in ((2, self.z), (1, self.y), (0, self.x)):
            lo = int(np.searchsorted(vec, centre[axis] - half[axis], side="left"))
            hi = int(np.searchsorted(vec, centre[axis] + half[axis], side="right"))
            if hi <= lo:
                return None
            slices.append(slice(lo, hi))
        return tuple(slices)

    def local(self, box, centre):
        """Broadcastable (dx, dy, dz) offsets (mm) of the voxels of ``box`` from ``centre``."""
        dz = (self.z[box[0]] - centre[2])[:, None, None]
        dy = (self.y[box[1]] - centre[1])[None, :, None]
        dx = (self.x[box[2]] - centre[0])[None, None, :]
        return dx, dy, dz

    def ellipsoid(self, centre, semi, rotation=None, pad=0.0):
        """(box, r2): normalised squared radius of a (rotated) ellipsoid in its bounding box."""
        semi = np.asarray(semi, dtype=float)
        rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
        half = np.sqrt(((rot * semi[None, :]) ** 2).sum(axis=1)) * (1.0 + pad)
        box = self.box(centre, half)
        if box is None:
            return None, np.zeros(0, np.float32)
        dx, dy, dz = self.local(box, centre)
        r2 = None
        for col in range(3):
            u = (rot[0, col] * dx + rot[1, col] * dy + rot[2, col] * dz) / semi[col]
            r2 = u * u if r2 is None else r2 + u * u
        return box, np.broadcast_to(r2, tuple(s.stop - s.start for s in box)).astype(np.float32)


def _paint(tis, box, mask, value, where=None):
    """Set ``tis[box][mask] = value`` (only where ``where[box]`` holds, when given)."""
    if box is None:
        return
    sub = tis[box]
    if where is not None:
        mask = mask & where[box]
    sub[mask] = value


# ------------------------------------------------------------------------------- parameters
def _tissue_tables(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-case mean HU, HU texture amplitude, mean SUV and SUV texture amplitude per class."""
    hu = np.zeros(N_CLASSES, np.float32)
    hu_tex = np.zeros(N_CLASSES, np.float32)
    suv = np.zeros(N_CLASSES, np.float32)
    suv_tex = np.zeros(N_CLASSES, np.float32)
    u = rng.uniform
    muscle_hu = u(38, 50)
    values = {
        # class: (HU, HU texture, SUV, SUV texture (relative))
        AIR: (-1000, 0, 0.0, 0), SKIN: (u(15, 35), 5, u(0.7, 1.1), 0.1),
        FAT: (u(-98, -80), 7, u(0.5, 0.8), 0.2), MUSCLE: (muscle_hu, 5, u(1.3, 1.8), 0.22),
        BLOOD: (u(35, 45), 3, u(1.5, 2.2), 0.05), PAROTID: (u(-15, 25), 12, u(1.4, 2.8), 0.15),
        SUBMAND: (u(30, 45), 6, u(1.6, 3.4), 0.12), THYROID: (u(70, 110), 10, u(1.2, 2.4), 0.1),
        TONSIL: (u(40, 55), 6, u(2.2, 4.6), 0.15), LINGUAL: (u(45, 60), 6, u(2.2, 5.5), 0.2),
        VOCAL: (muscle_hu, 5, u(1.8, 4.0), 0.1), HOTMUSCLE: (muscle_hu, 5, u(2.2, 5.5), 0.15),
        BNODE: (u(30, 45), 5, u(1.3, 2.6), 0.1), CORTICAL: (u(450, 750), 100, u(0.4, 0.8), 0.1),
        CANCELLOUS: (u(200, 380), 70, u(1.8, 3.5), 0.15), DISC: (u(70, 100), 10, u(0.6, 1.0), 0.1),
        CSF: (u(5, 15), 3, u(0.3, 0.6), 0.1), CORD: (u(30, 40), 4, u(1.3, 2.0), 0.1),
        CARTILAGE: (u(120, 220), 60, u(0.5, 0.9), 0.1), AIRWAY: (-1000, 0, 0.0, 0),
        BRAIN_GM: (u(36, 44), 3, u(6.5, 11.5), 0.1), BRAIN_WM: (u(26, 33), 3, u(2.8, 4.5), 0.1),
        BROWNFAT: (u(-85, -60), 10, u(2.0, 8.0), 0.35), TUMOUR: (muscle_hu + u(-5, 8), 4, 0.0, 0),
        NECROSIS: (u(15, 30), 6, 0.0, 0), NODE: (u(30, 45), 6, 0.0, 0),
        INFLAM: (muscle_hu + u(0, 8), 6, 0.0, 0), TEETH: (u(1600, 2600), 300, u(0.3, 0.6), 0.1),
        LOOSE: (u(-45, 5), 15, u(0.9, 1.3), 0.2),
    }
    for cls, (h, ht, s, st) in values.items():
        hu[cls], hu_tex[cls], suv[cls], suv_tex[cls] = h, ht, s, st
    return hu, hu_tex, suv, suv_tex


def _check_probability(name: str, value) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _auto_scale(shape_kji, spacing_ijk) -> float:
    half = min(shape_kji[2] * spacing_ijk[0], shape_kji[1] * spacing_ijk[1]) / 2.0
    return float(np.clip(half / 66.0, 0.3, 1.0))


# --------------------------------------------------------------------------------- generator
def generate_case(
    seed: int,
    shape=(96, 96, 96),
    spacing_mm=(1.0, 1.0, 1.0),
    pet_spacing_mm=None,
    *,
    anatomy_scale: float | None = None,
    tumour_ml_range=TUMOUR_ML_RANGE,
    suvmax_range=SUVMAX_RANGE,
    psf_fwhm_mm: float | None = None,
    p_brain: float = P_BRAIN,
    p_bulky: float = 0.0,
) -> PhantomCase:
    """One head-and-neck PET/CT phantom, deterministic by ``seed``.

    ``shape`` is ``(k, j, i)`` voxels of the CT grid, ``spacing_mm`` its ``(i, j, k)`` voxel size.
    ``pet_spacing_mm`` (a number or ``(i, j, k)``) puts the PET on its own coarser grid covering
    the same field of view; ``None`` keeps it on the CT grid. The label (uint8, CT grid) holds
    0 background, 1 GTVp, 2 GTVn. ``anatomy_scale`` (default: automatic from the field of view)
    shrinks the anatomy; ``psf_fwhm_mm`` defaults to a random 5-7 mm; ``p_brain`` is the chance
    that the brain sits in the upper part of the field of view, above the tumour. ``p_bulky`` is
    the chance of a bulky tumour instead (``BULKY_ML_RANGE``, capped at 15 % of the FOV volume):
    large, low SUVmax (``BULKY_SUVMAX_RANGE``), a hot heterogeneous rim around a cold necrotic
    core, free to bulge out of the neck; with the brain, only a slab of it at the top.
    ``p_bulky=0`` draws no random number for it.
    """
    _check_probability("p_bulky", p_bulky)
    rng = np.random.default_rng(int(seed))
    space = _Space(shape, spacing_mm)
    nk, nj, ni = space.shape
    s = float(anatomy_scale) if anatomy_scale else _auto_scale(space.shape, space.spacing_ijk)
    u = rng.uniform
    hu, hu_tex, suv, suv_tex = _tissue_tables(rng)
    X = space.x[None, None, :]
    Y = space.y[None, :, None]
    zs = space.z
    z_top, z_bot = float(zs[-1]), float(zs[0])
    fov_z = z_top - z_bot

    # ---- vertical placement: nominal levels (mm at scale 1) with the skull base at +55
    SKULL_BASE = 55.0
    bulky = bool(p_bulky > 0 and rng.uniform() < p_bulky)
    brain = bool(rng.uniform() < p_brain)
    if brain and bulky:  # a bulky mass fills the FOV centre: only a slab of brain at the top
        z_sb = z_top - u(0.08, 0.22) * fov_z
    elif brain:  # the upper third of the FOV, ~5-35 mm above the (pharyngeal) tumour
        z_sb = z_top - u(0.2, 0.45) * fov_z  # skull base position in the FOV (scaled mm)
    else:
        z_sb = z_top + u(0.02, 0.25) * fov_z + 5.0 * s
    # level(z) = z / s + shift maps FOV z (mm) to the nominal anatomical level
    shift = SKULL_BASE - z_sb / s

    def level(z):
        return np.asarray(z) / s + shift

    def zpos(lev):  # nominal level -> FOV z (mm)
        return (lev - shift) * s

    lev = level(zs).astype(np.float64)  # per slice

    # ---- body outline: superellipse whose axes and centre vary along z
    ax0, ay0 = u(52, 64), u(48, 58)
    head_x, head_y = u(6, 16), u(18, 30)
    shoulders = u(20, 45) if rng.uniform() < 0.3 else 0.0
    wob = rng.uniform(0, 2 * np.pi, 4)
    face = _smoothstep(lev, 10.0, 40.0)
    ax = (ax0 + head_x * face + shoulders * _smoothstep(-lev, 55.0, 85.0)
          + 2.0 * np.sin(lev / 23.0 + wob[0])) * s
    ay = (ay0 + head_y * face + 1.5 * np.sin(lev / 19.0 + wob[1])) * s
    cx = (u(-4, 4) + 2.0 * np.sin(lev / 31.0 + wob[2])) * s
    cy = ((-0.45 * head_y * face + 1.5 * np.sin(lev / 29.0 + wob[3])) * s
          + u(-0.05, 0.05) * nj * space.spacing_ijk[1])
    power = u(2.0, 2.6)
    dx = X - cx[:, None, None].astype(np.float32)
    dy = Y - cy[:, None, None].astype(np.float32)
    rho = (np.abs(dx) / ax[:, None, None].astype(np.float32)) ** power \
        + (np.abs(dy) / ay[:, None, None].astype(np.float32)) ** power
    rho **= 1.0 / power
    field_a = _smooth_noise(rng, space.shape, space.spacing_kji, 14.0 * s)  # fat planes, textures
    field_b = _smooth_noise(rng, space.shape, space.spacing_kji, 30.0 * s)  # slow modulation
    rho *= 1.0 + 0.025 * field_b
    dist = np.sqrt(dx * dx + dy * dy)
    depth = dist * (1.0 - rho) / np.maximum(rho, 1e-3)  # radial depth under the skin (mm)
    body = rho < 1.0
    del dx, dy, dist

    tis = np.full(space.shape, AIR, dtype=np.uint8)
    tis[body] = MUSCLE
    # fat planes between muscles (zero set of a smooth field) and subcutaneous fat
    # (with a margin of loose, fat-infiltrated connective tissue), and subcutaneous fat
    plane_w = u(0.08, 0.14)
    afield = np.abs(field_a)
    tis[body & (afield < plane_w * u(2.0, 3.0))] = LOOSE
    tis[body & (afield < plane_w)] = FAT
    del afield
    fat_t = u(3.0, 7.0) * s * (1.0 + 0.35 * field_b)
    tis[body & (depth < fat_t)] = FAT
    skin_t = max(1.2 * s, 0.8)
    tis[body & (depth < skin_t)] = SKIN

    # ---- airway path (nominal), then vessels, glands, bone
    lev_col = lev
    aw_x = (u(-3, 3) + 2.0 * np.sin(lev_col / 27.0 + u(0, 6.3))) * s
    oro = _smoothstep(lev_col, -12.0, 8.0)
    aw_y = (-26.0 * (1 - oro) - 8.0 * oro + u(-3, 3)) * s
    tr_r = u(7, 9)
    oro_rx, oro_ry = u(7, 13), u(4.5, 7.5)
    cords = np.exp(-0.5 * ((lev_col + 22.0) / 3.0) ** 2)
    aw_rx = (tr_r * (1 - oro) + oro_rx * oro) * (1.0 - 0.55 * cords) * s
    aw_ry = (tr_r * (1 - oro) + oro_ry * oro) * s
    aw_exists = lev_col < 48.0
    y_vert = u(8, 13) * s  # vertebral body centre (posterior of the airway)

    def airway_at(lev_value):
        idx = int(np.argmin(np.abs(lev_col - lev_value)))
        return float(aw_x[idx]), float(aw_y[idx]), float(aw_rx[idx]), float(aw_ry[idx])

    # vessels (carotid, jugular), bilateral, along the neck below the skull base
    for side in (-1, 1):
        vessels = ((0.33 * ax0 + 2, u(3.2, 4.5), -7.0), (0.33 * ax0 + 11, u(4.5, 7.0), -4.0))
        for lateral, radius, dy_v in vessels:
            cxv = side * lateral * s
            box = space.box((cxv, y_vert + dy_v * s, 0.0), (radius * s * 1.5 + 2, radius * s * 1.5, 1e4))
            if box is None:
                continue
            ddx, ddy, _ = space.local(box, (cxv, y_vert + dy_v * s, 0.0))
            zb = zs[box[0]][:, None, None]
            wander = (1.5 * s) * np.sin(zb / (20.0 * s) + side)
            m = ((ddx - wander) ** 2 + ddy ** 2 < (radius * s) ** 2) & (zb < zpos(SKULL_BASE - 5))
            _paint(tis, box, m, BLOOD, where=body)

    # salivary glands, thyroid
    gland_specs = []
    gland_specs += [(PAROTID, (side * 0.78 * ax0, u(2, 10), u(30, 40)), (u(9, 12), u(15, 20), u(13, 18)))
                    for side in (-1, 1)]
    gland_specs += [(SUBMAND, (side * 0.5 * ax0, u(-32, -24), u(0, 10)), (u(8, 11), u(10, 13), u(7, 10)))
                    for side in (-1, 1)]
    gland_specs += [(THYROID, (side * (tr_r + 9), -24.0, u(-58, -46)), (u(6, 8), u(8, 10), u(12, 16)))
                    for side in (-1, 1)]
    for cls, (gx, gy, gl), semi in gland_specs:
        centre = (gx * s, gy * s, zpos(gl))
        box, r2 = space.ellipsoid(centre, np.array(semi) * s, _rotation(u(-0.3, 0.3)))
        if box is not None:
            _paint(tis, box, r2 <= 1.0, cls, where=body & (depth > 2.5 * s))

    # tonsils, lingual tonsil, vocal cords
    tl = u(20, 30)
    tx, ty, trx, _ = airway_at(tl)
    for side in (-1, 1):
        box, r2 = space.ellipsoid((tx + side * (trx + 3.5 * s), ty + 2 * s, zpos(tl)),
                                  np.array((u(5.5, 8), u(8, 11), u(10, 15))) * s)
        _paint(tis, box, r2 <= 1.0, TONSIL, where=body)
    if rng.uniform() < 0.75:
        lx, ly, _, lry = airway_at(12.0)
        box, r2 = space.ellipsoid((lx, ly - lry - 6 * s, zpos(12.0)),
                                  np.array((u(11, 15), u(5, 7), u(8, 12))) * s)
        _paint(tis, box, r2 <= 1.0, LINGUAL, where=body)
    if rng.uniform() < 0.6:
        vx, vy, _, _ = airway_at(-22.0)
        for side in (-1, 1):
            box, r2 = space.ellipsoid((vx + side * 5.5 * s, vy, zpos(-22.0)), np.array((3.5, 9, 3)) * s)
            _paint(tis, box, r2 <= 1.0, VOCAL, where=body)
    hot_muscles = []
    if rng.uniform() < 0.3:
        choice = int(rng.integers(3))
        hot_muscles.append(("longus_colli", "pterygoids", "tongue")[choice])
        for side in (-1, 1):
            if choice == 0:
                centre, semi = (side * 7.0 * s, y_vert - 11.0 * s, zpos(-5.0)), (4, 3, 35)
            elif choice == 1:
                centre, semi = (side * 0.55 * ax0 * s, -2.0 * s, zpos(40.0)), (7, 12, 11)
            else:
                centre, semi = (0.0, -30.0 * s, zpos(20.0)), (12, 14, 9)
            box, r2 = space.ellipsoid(centre, np.array(semi) * s)
            _paint(tis, box, r2 <= 1.0, HOTMUSCLE, where=body & (depth > 3 * s))

    # benign (unlabelled) lymph nodes of mild uptake
    for _ in range(int(rng.integers(0, 5))):
        side = 1 if rng.uniform() < 0.5 else -1
        centre = (side * u(0.3, 0.6) * ax0 * s, u(-15, 15) * s, zpos(u(-45, 35)))
        box, r2 = space.ellipsoid(centre, np.array((u(2.5, 4.5), u(2.5, 4.5), u(3.5, 6))) * s,
                                  _rotation(u(0, np.pi)))
        _paint(tis, box, r2 <= 1.0, BNODE, where=body & (depth > 4 * s))

    # ---- bone: cervical spine (bodies, discs, arch), mandible, teeth, hyoid, laryngeal cartilage
    bone = np.zeros(space.shape, dtype=bool)
    vert_top = zpos(SKULL_BASE)
    rx_v, ry_v = u(8, 10) * s, u(7, 9) * s
    period, phase = u(17, 20), u(0, 20)
    spine_c = (float(np.mean(cx)) * 0.5, y_vert, 0.0)
    half = (30 * s, 45 * s, 1e4)
    box_sp = space.box(spine_c, half)
    if box_sp is not None:
        ddx, ddy, _ = space.local(box_sp, spine_c)
        zb = zs[box_sp[0]][:, None, None]
        below = zb < vert_top
        lvl = (zb / s + shift + phase) % period
        vb = ((ddx / rx_v) ** 2 + (ddy / ry_v) ** 2 <= 1.0) & below
        disc = vb & (lvl < 4.5)
        canal_y = ry_v + 7.5 * s
        rc = np.sqrt(ddx ** 2 + (ddy - canal_y) ** 2)
        arch = (rc > 6.5 * s) & (rc < 11.5 * s) & (ddy > canal_y - 4 * s) & below
        lat = ((((np.abs(ddx) - (rx_v + 5 * s)) / (5.5 * s)) ** 2 + ((ddy - 4 * s) / (5 * s)) ** 2 <= 1.0)
               & below)
        spinous = ((ddx / (3 * s)) ** 2 + ((ddy - canal_y - 15 * s) / (9 * s)) ** 2 <= 1.0) & below
        # the arches are one per vertebra as well (gaps at the discs' level)
        arch_lvl = (lvl > 2.0) & (lvl < period - 3.0)
        vert = (vb & ~disc) | ((arch | lat | spinous) & arch_lvl)
        sub_b = bone[box_sp]
        sub_b |= vert & body[box_sp]
        sub = tis[box_sp]
        sub[disc & body[box_sp]] = DISC
        canal = (rc <= 6.5 * s) & below & body[box_sp]
        sub[canal] = CSF
        sub[(((ddx / (4.5 * s)) ** 2 + ((ddy - canal_y) / (3.8 * s)) ** 2) <= 1.0) & canal] = CORD

    # mandible: U-shaped arch (body) with rami, teeth on top, maxillary arch above
    mand_lo, mand_hi = u(2, 8), u(22, 28)
    y_mc, axm, aym, th = u(-18, -10), 0.72 * ax0, u(34, 40), u(7, 10)
    for (lo, hi, yc, a, b, t, cls) in ((mand_lo, mand_hi, y_mc, axm, aym, th, None),
                                       (mand_hi, mand_hi + 5, y_mc, axm - 2, aym - 2, th - 2, TEETH),
                                       (mand_hi + 12, mand_hi + 20, y_mc - 2, axm - 4, aym - 3, th, None)):
        centre = (0.0, yc * s, zpos((lo + hi) / 2))
        box = space.box(centre, ((a + t) * s, (b + t) * s, (hi - lo) / 2 * s))
        if box is None:
            continue
        ddx, ddy, _ = space.local(box, centre)
        r = np.sqrt((ddx / (a * s)) ** 2 + (ddy / (b * s)) ** 2)
        ring = (np.abs(r - 1.0) * min(a, b) * s < t * s / 2) & (ddy < 4 * s)
        ring = np.broadcast_to(ring, tuple(sl.stop - sl.start for sl in box))
        if cls is None:
            bone[box] |= ring & body[box]
        else:
            _paint(tis, box, ring, cls, where=body)
    for side in (-1, 1):  # rami
        box, r2 = space.ellipsoid((side * axm * s, (y_mc + 10) * s, zpos(mand_hi + 12)),
                                  np.array((3.5, 11, 16)) * s, _rotation(0.0, 0.0, -0.4))
        if box is not None:
            bone[box] |= (r2 <= 1.0) & body[box]
    # hyoid
    centre = (0.0, -22.0 * s, zpos(0.0))
    box = space.box(centre, (22 * s, 20 * s, 2 * s))
    if box is not None:
        ddx, ddy, _ = space.local(box, centre)
        r = np.sqrt((ddx / (17 * s)) ** 2 + (ddy / (13 * s)) ** 2)
        m = np.broadcast_to((np.abs(r - 1.0) * 13 < 1.8) & (ddy < 2 * s),
                            tuple(sl.stop - sl.start for sl in box))
        bone[box] |= m & body[box]
    # thyroid / cricoid cartilage around the larynx (partly calcified)
    box = space.box((float(np.mean(aw_x)), -26 * s, zpos(-22)), (25 * s, 25 * s, 15 * s))
    if box is not None:
        kk = np.arange(box[0].start, box[0].stop)
        cxl, cyl = aw_x[kk][:, None, None], aw_y[kk][:, None, None]
        rxl = (tr_r + 4.0) * s
        ddx = space.x[box[2]][None, None, :] - cxl
        ddy = space.y[box[1]][None, :, None] - cyl
        r = np.sqrt(ddx ** 2 + ddy ** 2)
        m = (r > rxl) & (r < rxl + 2.5 * s) & (ddy < 3 * s)
        _paint(tis, box, m, CARTILAGE, where=body)

    # bone tissue: cortical shell and cancellous core
    if bone.any():
        core = ndimage.binary_erosion(bone, iterations=max(1, int(round(1.5 * s / min(space.spacing_ijk)))))
        tis[bone] = CORTICAL
        tis[core] = CANCELLOUS

    # ---- airway (air) with its lumen path; brain and skull on top
    box = space.box((float(np.mean(aw_x)), float(np.mean(aw_y)), 0.0),
                    (float(np.max(np.abs(aw_x - np.mean(aw_x))) + np.max(aw_rx)) + 2,
                     float(np.max(np.abs(aw_y - np.mean(aw_y))) + np.max(aw_ry)) + 2, 1e4))
    airway = np.zeros(space.shape, dtype=bool)
    aw_core = np.zeros(space.shape, dtype=bool)
    if box is not None:
        kk = np.arange(box[0].start, box[0].stop)
        ddx = (space.x[box[2]][None, None, :] - aw_x[kk][:, None, None]) / aw_rx[kk][:, None, None]
        ddy = (space.y[box[1]][None, :, None] - aw_y[kk][:, None, None]) / aw_ry[kk][:, None, None]
        r2 = ddx ** 2 + ddy ** 2
        ex = aw_exists[kk][:, None, None]
        airway[box] = (r2 <= 1.0) & ex
        aw_core[box] = (r2 <= 0.3) & ex
    airway &= body & (depth > 3 * s)
    tis[airway] = AIRWAY

    brain_mask = np.zeros(space.shape, dtype=bool)
    if brain:
        # narrow at its base (temporal lobes, cerebellum): ~10-20x a typical GTVp in a 144 mm field
        bc = (float(np.mean(cx)), float(cy[-1]) + u(8, 16) * s, z_sb + 67 * s)
        semi = np.array(((ax0 + head_x) * 0.72, (ay0 + head_y) * 0.6, 75.0)) * s
        skull_t = u(6, 9) * s
        box, r2 = space.ellipsoid(bc, semi + skull_t)
        if box is not None:
            dxb, ddy, dzz = space.local(box, bc)
            floor = z_sb - 0.25 * ddy  # skull base, lower posteriorly
            zb = dzz + bc[2]
            r2_in = (dxb / semi[0]) ** 2 + (ddy / semi[1]) ** 2 + (dzz / semi[2]) ** 2
            inner = (r2_in <= 1.0) & (zb > floor)
            skull = (r2 <= 1.0) & (zb > floor - skull_t) & ~inner
            sub = tis[box]
            sub[skull & body[box]] = CORTICAL
            bm = inner & body[box]
            gm_field = field_a[box]
            sub[bm] = BRAIN_WM
            gm = bm & ((r2_in > 0.72) | (gm_field > u(-0.2, 0.4)))
            sub[gm] = BRAIN_GM
            brain_mask[box] = bm
            bone[box] |= skull & body[box]

    # brown fat (only within fat, lower neck / supraclavicular, posterior cervical)
    brown = False
    if rng.uniform() < 0.25:
        brown = True
        thr = u(0.3, 0.9)
        for side in (-1, 1):
            box, r2 = space.ellipsoid((side * 0.55 * ax0 * s, 15 * s, zpos(u(-70, -35))),
                                      np.array((22, 25, 30)) * s)
            if box is not None:
                m = (r2 <= 1.0) & (tis[box] == FAT) & (field_b[box] * 0.5 + field_a[box] > thr)
                _paint(tis, box, m, BROWNFAT)

    # ---- primary tumour (label 1): irregular blob next to the airway wall
    fov_ml = nk * nj * ni * space.voxel_ml
    lo_ml, hi_ml = tumour_ml_range
    vmax = min(hi_ml, max(hi_ml * s ** 3, 0.05 * fov_ml))
    vmin = min(lo_ml, vmax / 3.0)
    if bulky:
        vmax = min(BULKY_ML_RANGE[1], 0.15 * fov_ml)
        vmin = min(BULKY_ML_RANGE[0], vmax / 2.0)
    target_ml = _loguniform(rng, vmin, vmax)
    r_eq = (3.0 * target_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)  # mm
    margin = 2.0 + 0.6 * r_eq
    z_lo_lev, z_hi_lev = -35.0, 38.0
    zmin = max(zpos(z_lo_lev), z_bot + margin)
    zmax = min(zpos(z_hi_lev), z_top - margin, (z_sb - 10 * s - r_eq) if brain else 1e9)
    if brain and not bulky:  # oro-/nasopharynx level: the brain's lower edge ~5-35 mm above the tumour centre
        zmin = max(zmin, z_sb - 32.0 * s)
        zmax = min(z_top - margin, z_sb - 3.0 * s - 0.5 * r_eq)
    if zmax <= zmin:  # small FOV: the FOV wins over the anatomical levels
        zmin, zmax = z_bot + margin, max(z_bot + margin, min(z_top - margin, z_sb - 8 * s - 0.6 * r_eq))
    tz = u(zmin, zmax) if zmax > zmin else (zmin + zmax) / 2
    ax_, ay_, arx, ary = airway_at(float(level(tz)))
    where = rng.uniform()
    if where < 0.6:  # lateral wall
        theta = (0.0 if rng.uniform() < 0.5 else np.pi) + u(-0.6, 0.6)
    elif where < 0.8:  # anterior (supraglottic larynx / base of tongue)
        theta = -np.pi / 2 + u(-0.5, 0.5)
    else:  # posterior pharyngeal wall
        theta = np.pi / 2 + u(-0.5, 0.5)
    rim = math.hypot(arx * math.cos(theta), ary * math.sin(theta))
    dist_c = rim + u(0.3, 0.7) * r_eq
    tc = np.array((ax_ + dist_c * math.cos(theta), ay_ + dist_c * math.sin(theta), tz))
    allowed = body & (depth > 3.0 * s) & ~bone & ~aw_core & ~brain_mask & (tis != CSF) & (tis != CORD)
    t_allowed = allowed
    if bulky:
        # a bulky mass fills one side of the neck around the FOV centre and may push out of it
        # (exophytic); it spares bone, airway and brain (10 mm) and stays 4 mm inside the FOV
        side = 1.0 if math.cos(theta) >= 0 else -1.0
        tc = np.array((side * u(0.3, 0.55) * r_eq, u(-0.2, 0.2) * r_eq,
                       0.5 * (z_top + z_bot) + u(-0.1, 0.1) * fov_z))
        n_brain = max(1, int(round(10.0 / min(space.spacing_ijk))))
        near_brain = ndimage.binary_dilation(brain_mask, iterations=n_brain)
        t_allowed = ~bone & ~aw_core & ~near_brain & (tis != CSF) & (tis != CORD)
        edge = max(1, int(math.ceil(4.0 / min(space.spacing_ijk))))
        inside_fov = np.zeros(space.shape, dtype=bool)
        inside_fov[edge:-edge, edge:-edge, edge:-edge] = True
        t_allowed &= inside_fov
    n_lobes = int(rng.integers(2, 6))
    lobes = []
    for n in range(n_lobes):
        off = rng.normal(0, 0.35 * r_eq, 3) if n else np.zeros(3)
        semi = r_eq * np.array((u(0.6, 1.2), u(0.6, 1.2), u(0.7, 1.5))) * (1.0 if n == 0 else u(0.5, 0.9))
        lobes.append((tc + off, semi, _rotation(u(0, np.pi), u(-0.4, 0.4), u(-0.4, 0.4))))
    half = np.full(3, 2.2 * r_eq + 4.0)
    tbox = space.box(tc, half)
    label = np.zeros(space.shape, dtype=np.uint8)
    necrotic = False
    t_hetero = None
    if tbox is not None:
        bshape = tuple(sl.stop - sl.start for sl in tbox)
        dxl, dyl, dzl = space.local(tbox, (0.0, 0.0, 0.0))
        potential = np.full(bshape, -10.0, np.float32)
        for centre, semi, rot in lobes:
            r2 = 0.0
            for col in range(3):
                uu = (rot[0, col] * (dxl - centre[0]) + rot[1, col] * (dyl - centre[1])
                      + rot[2, col] * (dzl - centre[2])) / semi[col]
                r2 = r2 + uu * uu
            np.maximum(potential, 1.0 - np.sqrt(r2), out=potential)
        rough = _smooth_noise(rng, bshape, space.spacing_kji, max(3.0, 0.45 * r_eq))
        potential += u(0.12, 0.3) * rough
        # keep ~2.5 mm of soft tissue between the GTVp and air / bone / cartilage (clean CT HU)
        t_sub = tis[tbox]
        hard = bone[tbox] | (t_sub == AIRWAY) | (t_sub == CARTILAGE) | (t_sub == TEETH)
        n_dil = max(1, int(round(2.5 / min(space.spacing_ijk))))
        ok = t_allowed[tbox] & ~ndimage.binary_dilation(hard, iterations=n_dil)
        vals = potential[ok]
        goal_vox = max(1, int(round(target_ml / space.voxel_ml)))
        n_target = goal_vox
        for _attempt in range(4):  # one connected blob of the target volume
            n_target = max(1, min(n_target, vals.size))
            thr = np.partition(vals, vals.size - n_target)[vals.size - n_target]
            tm = ok & (potential >= thr)
            lab, n_comp = ndimage.label(tm)
            if n_comp > 1:
                sizes = np.bincount(lab.ravel())
                sizes[0] = 0
                tm = lab == int(np.argmax(sizes))
            tm = ndimage.binary_fill_holes(tm) & ok
            got = int(tm.sum())
            if got >= 0.95 * goal_vox or n_target >= vals.size:
                break
            n_target += goal_vox - got
        label[tbox][tm] = 1
        sub = tis[tbox]
        # a rim of soft tissue around the tumour (no fat right at its border)
        rim = ndimage.binary_dilation(tm, iterations=max(1, int(round(1.5 / min(space.spacing_ijk)))))
        if bulky:  # skin over the part outside the neck
            skin = ndimage.binary_dilation(tm, iterations=max(1, int(round(2.0 / min(space.spacing_ijk)))))
            sub[skin & (sub == AIR)] = SKIN
        rim &= (sub == FAT) | (sub == LOOSE) | (sub == BROWNFAT)
        sub[rim] = MUSCLE
        sub[tm] = TUMOUR
        t_hetero = _smooth_noise(rng, bshape, space.spacing_kji, max(3.0, 0.3 * r_eq))
        tumour_ml_now = float(tm.sum()) * space.voxel_ml
        if tumour_ml_now > 8.0 and (bulky or rng.uniform() < 0.55):
            edt = ndimage.distance_transform_edt(tm, sampling=space.spacing_kji)
            core = edt > (u(0.4, 0.6) if bulky else u(0.45, 0.65)) * float(edt.max())
            if core.any():
                necrotic = True
                sub[core] = NECROSIS
    tumour_mask = label == 1

    # ---- pathological lymph nodes (label 2), lateral, moderate uptake
    tumour_side = 1 if tc[0] >= float(np.mean(aw_x)) else -1
    z_node = (z_bot + 8 * s, (z_sb - 10 * s) if brain else z_top - 8 * s)
    # Generator 1.2's node draws are still made on the case's stream (and their nodes dropped), so
    # that every other property of a seed's phantom stays that of 1.2; the nodes of 1.3 come from
    # their own stream (_nodes).
    _nodes_1_2_draws(rng, space, label, allowed, ax0, s, zpos, z_node, tumour_side)
    node_suv, node_paint = [], []
    node_rng = np.random.default_rng([int(seed), NODE_STREAM])
    for box, m, value in _nodes(node_rng, space, label, allowed, ax0, s, zpos, z_node, tumour_side):
        label[box][m] = 2
        tis[box][m] = NODE
        node_suv.append(value)
        node_paint.append((box, m, value))
    node_mask = label == 2

    # ---- an inflamed / physiological focus as hot as the tumour (a distractor), sometimes
    # log-normal around SUVmax 10 (HECKTOR-like spread), clipped to the documented range
    suv_target = float(np.clip(math.exp(rng.normal(math.log(13.5), 0.45)), *suvmax_range))
    if bulky:
        suv_target = float(np.clip(math.exp(rng.normal(math.log(7.0), 0.3)), *BULKY_SUVMAX_RANGE))
        suv *= u(0.45, 0.75)  # limb-like background (the sarcoma case: body SUV p50 ~0.5)
    inflam = None
    if rng.uniform() < 0.25:
        for _try in range(4):
            side = -1 if rng.uniform() < 0.6 else 1
            z_hi = (z_sb - 8 * s) if brain else z_top - 6 * s
            centre = (side * u(0.15, 0.6) * ax0 * s, u(-30, 20) * s, u(z_bot + 6 * s, z_hi))
            semi = np.array((u(4, 10), u(4, 10), u(4, 12))) * s
            box, r2 = space.ellipsoid(centre, semi, _rotation(u(0, np.pi)))
            if box is None:
                continue
            m = (r2 <= 1.0) & allowed[box] & (label[box] == 0)
            if (label[box] > 0).any() or m.sum() < 8:
                continue
            tis[box][m] = INFLAM
            inflam = u(0.6, 1.1)
            break
    tonsil_hot = bool(rng.uniform() < 0.12)
    if tonsil_hot:
        suv[TONSIL] = max(suv[TONSIL], u(0.7, 1.2) * suv_target * 1.6)

    # ---- CT: class means + textures + noise, slight smoothing (partial volume)
    ct = hu[tis]
    tex = hu_tex[tis]
    ct += tex * field_a
    if tbox is not None and t_hetero is not None:
        sub = ct[tbox]
        m = (tis[tbox] == TUMOUR) | (tis[tbox] == NECROSIS)
        sub[m] += 4.0 * t_hetero[m]
    ct_sigma_mm = u(0.5, 0.8)
    ct_sigma = [ct_sigma_mm / sp for sp in space.spacing_kji]
    ct_noise_sd = u(9, 17)
    gain = _gauss_noise_gain(ct_sigma)
    noise = rng.standard_normal(space.shape, dtype=np.float32)
    noise *= ct_noise_sd / gain
    ct += noise
    del noise
    ct = ndimage.gaussian_filter(ct, ct_sigma, mode="nearest")
    np.clip(ct, -1024, 3071, out=ct)
    ct = np.rint(ct).astype(np.float32)

    # ---- PET activity: background (texture-modulated), then the tumour (scaled to its target)
    act = suv[tis]
    act *= 1.0 + suv_tex[tis] * (0.6 * field_b + 0.4 * field_a)
    if brown:
        bm = tis == BROWNFAT
        act[bm] *= np.clip(1.0 + 0.5 * field_a[bm], 0.3, 2.0)
    for box, m, value in node_paint:
        sub = act[box]
        sub[m] = value * (1.0 + 0.1 * field_a[box][m])
    if inflam is not None:
        act[tis == INFLAM] = inflam * suv_target * 1.5
    np.maximum(act, 0.0, out=act)
    act[tumour_mask] = 0.0

    fwhm = float(psf_fwhm_mm) if psf_fwhm_mm else u(*PSF_FWHM_RANGE_MM)
    psf_sigma_mm = fwhm / 2.355
    pet_grid = None
    if pet_spacing_mm is not None:
        pet_sp = np.broadcast_to(np.asarray(pet_spacing_mm, dtype=float), (3,))
        # voxel integration over the coarser PET voxel, as a Gaussian of equal variance
        box_sd = np.sqrt(np.maximum(pet_sp ** 2 - np.asarray(space.spacing_ijk) ** 2, 0.0) / 12.0)
        sig_ijk = np.sqrt(psf_sigma_mm ** 2 + box_sd ** 2)
        blur_sigma = [sig_ijk[2] / space.spacing_kji[0], sig_ijk[1] / space.spacing_kji[1],
                      sig_ijk[0] / space.spacing_kji[2]]
    else:
        blur_sigma = [psf_sigma_mm / sp for sp in space.spacing_kji]
    pet = ndimage.gaussian_filter(act, blur_sigma, mode="constant", truncate=3.0)

    tumour_profile = {}
    if tbox is not None and tumour_mask.any():
        pad = [int(math.ceil(3.0 * sg)) + 1 for sg in blur_sigma]
        pbox = tuple(slice(max(0, sl.start - p), min(n, sl.stop + p))
                     for sl, p, n in zip(tbox, pad, space.shape))
        inner = tuple(slice(sl.start - pb.start, sl.stop - pb.start) for sl, pb in zip(tbox, pbox))
        t_act = np.zeros(tuple(sl.stop - sl.start for sl in pbox), np.float32)
        tis_t = tis[tbox]
        if bulky:  # more heterogeneous; the necrotic core keeps some uptake
            h = np.clip(0.5 + 0.25 * t_hetero, 0.2, 1.0)
            core_rel = u(0.08, 0.22)
        else:
            h = np.clip(0.7 + 0.2 * t_hetero, 0.3, 1.0)
            core_rel = u(0.08, 0.2)
        # rim-enhanced, heterogeneous uptake; a cold necrotic core in some large tumours
        prof = np.where(tis_t == TUMOUR, h, 0.0).astype(np.float32)
        prof = np.where(tis_t == NECROSIS, core_rel * (1.0 + 0.3 * t_hetero), prof)
        t_act[inner] = np.where(tumour_mask[tbox], prof, 0.0)
        t_blur = ndimage.gaussian_filter(t_act, blur_sigma, mode="constant", truncate=3.0)
        bg = pet[pbox]
        lm = tumour_mask[pbox]
        # measured SUVmax after noise runs ~10 % above the noise-free maximum
        goal = suv_target / 1.08
        scale = goal / max(float(t_blur[lm].max()), 1e-6)
        for _ in range(3):
            total = bg + scale * t_blur
            idx = np.argmax(np.where(lm, total, -np.inf))
            bgp, tp = bg.flat[idx], t_blur.flat[idx]
            scale = max((goal - bgp) / max(tp, 1e-6), 0.3 * goal / max(float(t_blur[lm].max()), 1e-6))
        pet[pbox] += scale * t_blur
        tumour_profile = {"intrinsic_peak_suv": round(float(scale * prof.max()), 2)}

    if pet_spacing_mm is not None:
        ct_grid_matrix = _ijk_to_ras(space)
        ct_grid = Grid(space.shape, ct_grid_matrix)
        extent = np.array([ni, nj, nk]) * np.asarray(space.spacing_ijk)
        n_pet = np.maximum(1, np.round(extent / pet_sp).astype(int))
        pm = np.diag([-pet_sp[0], -pet_sp[1], pet_sp[2], 1.0])
        centre_ras = ct_grid.center_ras()
        pm[:3, 3] = centre_ras - pm[:3, :3] @ ((n_pet - 1) / 2.0)
        pet_grid = Grid((int(n_pet[2]), int(n_pet[1]), int(n_pet[0])), pm)
        pet = resample(pet, ct_grid, pet_grid, order=1)
        pet_spacing_kji = tuple(float(v) for v in pet_sp[::-1])
    else:
        pet_spacing_kji = space.spacing_kji

    # noise: signal-dependent (Poisson-like), spatially correlated over ~2 mm
    k_rel, k_sqrt = u(0.04, 0.08), u(0.06, 0.12)
    nsig = [max(2.0 / sp, 0.5) for sp in pet_spacing_kji]
    pnoise = rng.standard_normal(pet.shape, dtype=np.float32)
    pnoise = ndimage.gaussian_filter(pnoise, nsig, mode="wrap")
    pnoise *= 1.0 / _gauss_noise_gain(nsig)
    np.maximum(pet, 0.0, out=pet)
    pet += (k_rel * pet + k_sqrt * np.sqrt(pet) + 0.01) * pnoise
    np.maximum(pet, 0.0, out=pet)
    pet = pet.astype(np.float32, copy=False)

    # ---- volumes and metadata
    matrix = _ijk_to_ras(space)
    ct_vol = Volume.from_array(ct, matrix)
    label_vol = Volume.from_array(label, matrix)
    pet_vol = Volume.from_array(pet, matrix if pet_grid is None else pet_grid.ijk_to_ras)
    suvmax, suvmean = _tumour_suv(pet_vol, label_vol)
    meta = {
        "seed": int(seed),
        "generator_version": GENERATOR_VERSION,
        "shape_kji": [int(n) for n in space.shape],
        "spacing_mm": [float(v) for v in space.spacing_ijk],
        "pet_spacing_mm": None if pet_grid is None else [float(v) for v in pet_grid.spacing],
        "anatomy_scale": round(s, 4),
        "tumour_ml": round(float(tumour_mask.sum()) * space.voxel_ml, 3),
        "tumour_ml_target": round(target_ml, 3),
        "tumour_voxels": int(tumour_mask.sum()),
        "suvmax": round(suvmax, 3),
        "suvmean": round(suvmean, 3),
        "suvmax_target": round(suv_target, 3),
        "necrotic_core": necrotic,
        "bulky": bulky,
        "n_nodes": int(len(node_suv)),
        "nodes_ml": round(float(node_mask.sum()) * space.voxel_ml, 3),
        "brain": brain and bool(brain_mask.any()),
        "brown_fat": brown,
        "hot_muscle": hot_muscles,
        "hot_tonsils": tonsil_hot,
        "inflammation_focus": inflam is not None,
        "psf_fwhm_mm": round(fwhm, 3),
        "ct_noise_hu": round(ct_noise_sd, 2),
        "tumour_centroid_ras": [round(float(v), 2) for v in _centroid_ras(label_vol)],
        **tumour_profile,
    }
    return PhantomCase(ct_vol, pet_vol, label_vol, meta)


def _node_center(draw, side: int, ax0: float, s: float, zpos, z_node) -> tuple:
    """A node centre: lateral (35-62 % of the neck's half-width), at a nominal level -40..30 mm."""
    u = draw.uniform
    zc = float(np.clip(zpos(u(-40, 30)), *z_node))
    return (side * u(0.35, 0.62) * ax0 * s, u(-12, 10) * s, zc)


def _nodes_1_2_draws(rng, space, label, allowed, ax0, s, zpos, z_node, tumour_side) -> None:
    """Consume exactly the draws of generator 1.2's nodes from the case's stream (their
    acceptance depends on the geometry, so it is recomputed on a scratch label)."""
    u = rng.uniform
    scratch = None
    for _ in range(int(rng.choice(4, p=(0.4, 0.3, 0.2, 0.1)))):
        side = tumour_side if rng.uniform() < 0.75 else -tumour_side
        lev_n = u(-40, 30)
        zc = float(np.clip(zpos(lev_n), *z_node))
        centre = (side * u(0.35, 0.62) * ax0 * s, u(-12, 10) * s, zc)
        semi = np.array((u(3.5, 8), u(3.5, 8), u(5, 12))) * s
        box, r2 = space.ellipsoid(centre, semi, _rotation(u(0, np.pi), u(-0.3, 0.3)))
        if box is None:
            continue
        scratch = label.copy() if scratch is None else scratch
        m = (r2 <= 1.0) & allowed[box] & (scratch[box] == 0)
        if m.sum() < 0.4 * (4.0 / 3.0 * np.pi * np.prod(semi)) / (space.voxel_ml * 1000.0):
            continue
        scratch[box][m] = 2
        u(2.5, 10.0)


def _nodes(draw, space, label, allowed, ax0, s, zpos, z_node, tumour_side) -> list:
    """Generator 1.3's pathological nodes ``[(box, mask, SUV)]``, matched to real GTVn contours
    (``training/README.md``, "Lymph nodes"): 0-3 per case (``NODE_COUNT_P``), volume log-uniform
    in ``NODE_ML_RANGE`` (x anatomy scale^3), ovoid and longest along the neck, 75 % on the
    tumour's side; up to 3 placements each, kept when >= 40 % of it lies in the neck's soft
    tissue off the tumour and 2 voxels apart from the other nodes. Uptake SUV 2.5-10 (painted;
    partial volume lowers the measured SUVmax of small nodes)."""
    u = draw.uniform
    out = []
    work = label.copy()
    for _ in range(int(draw.choice(len(NODE_COUNT_P), p=NODE_COUNT_P))):
        volume_ml = _loguniform(draw, *NODE_ML_RANGE) * s ** 3
        r_eq = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        shape = np.array((u(0.75, 1.15), u(0.75, 1.15), u(1.0, 1.6)))
        semi = r_eq * shape / float(np.prod(shape)) ** (1.0 / 3.0)
        side = tumour_side if u() < 0.75 else -tumour_side
        suv_node = u(2.5, 10.0)
        for _try in range(3):
            centre = _node_center(draw, side, ax0, s, zpos, z_node)
            box, r2 = space.ellipsoid(centre, semi, _rotation(u(0, np.pi), u(-0.3, 0.3)))
            if box is None:
                continue
            # off the tumour, and 2 voxels apart from the other nodes (touching nodes would merge)
            apart = ~ndimage.binary_dilation(work[box] == 2, structure=np.ones((3, 3, 3), bool), iterations=2)
            m = (r2 <= 1.0) & allowed[box] & (work[box] == 0) & apart
            if m.sum() >= 0.4 * volume_ml / space.voxel_ml:
                work[box][m] = 2
                out.append((box, m, suv_node))
                break
    return out


def _ijk_to_ras(space: _Space) -> np.ndarray:
    """HECKTOR-like orientation (identity LPS direction), the FOV centred at RAS (0, 0, 0)."""
    sx, sy, sz = space.spacing_ijk
    m = np.diag([-sx, -sy, sz, 1.0])
    m[:3, 3] = [-float(space.x[0]) * 1.0, -float(space.y[0]) * 1.0, float(space.z[0])]
    return m


def _centroid_ras(label: Volume):
    idx = np.argwhere(label.array == 1)
    if idx.size == 0:
        return (float("nan"),) * 3
    kji = idx.mean(axis=0)
    return label.grid.index_to_ras(kji[::-1])


def _tumour_suv(pet: Volume, label: Volume, value: int = 1) -> tuple[float, float]:
    """SUVmax and SUVmean of the PET (linearly resampled onto the label grid) inside the label."""
    mask = label.array == value
    if not mask.any():
        return 0.0, 0.0
    if pet.grid.shape == label.grid.shape and np.allclose(pet.ijk_to_ras, label.ijk_to_ras):
        vals = pet.array[mask]
    else:
        from InteractiveRefineLib.geometry import mask_box, sub_grid

        box = mask_box(mask)
        vals = resample(pet.array, pet.grid, sub_grid(label.grid, box), order=1)[mask[box]]
    return float(vals.max()), float(vals.mean())


# ----------------------------------------------------------------------------- statistics
#: The measured values of the real head-and-neck case (shared/docs/REAL_DATA_STATS.md).
CHGJ015_STATS = {
    "tumour_ml": 2.54, "tumour_hu_p5": 26.0, "tumour_hu_p50": 47.0, "tumour_hu_p95": 68.0,
    "soft_hu_p5": -88.0, "soft_hu_p50": 22.0, "soft_hu_p95": 67.0, "fat_fraction": 0.19,
    "bone_fraction": 0.11, "suvmax": 14.2, "suvmean": 8.5, "out_suv_p50": 1.31, "out_suv_p95": 3.47,
    "out_suv_p99": 10.2, "out_suv_max": 14.4, "hot_regions": 3, "hot_largest_ml": 45.0,
    "hot_largest_x_tumour": 17.6,
}


def case_statistics(case: PhantomCase, min_region_ml: float = 0.03) -> dict:
    """The statistics of REAL_DATA_STATS.md for one case (PET resampled onto the CT grid).

    Body = CT > -300 HU; soft tissue = -100..100 HU outside the labels; "hot regions" are the
    connected regions outside the labels above 50 % of the GTVp SUVmax (at least
    ``min_region_ml``).
    """
    ct, lab = case.ct.array, case.label.array
    if case.pet.grid.shape == case.ct.grid.shape and np.allclose(case.pet.ijk_to_ras, case.ct.ijk_to_ras):
        pet = case.pet.array
    else:
        pet = resample(case.pet.array, case.pet.grid, case.ct.grid, order=1)
    voxel_ml = float(np.prod(case.ct.grid.spacing)) / 1000.0
    tum = lab == 1
    body = ct > -300
    soft = (ct > -100) & (ct < 100) & (lab == 0)
    outside = body & (lab == 0)
    stats = {"tumour_ml": float(tum.sum()) * voxel_ml}
    stats.update(zip(("tumour_hu_p5", "tumour_hu_p50", "tumour_hu_p95"), np.percentile(ct[tum], (5, 50, 95))))
    stats.update(zip(("soft_hu_p5", "soft_hu_p50", "soft_hu_p95"), np.percentile(ct[soft], (5, 50, 95))))
    nb = max(int(body.sum()), 1)
    stats["fat_fraction"] = float(((ct >= -150) & (ct <= -50) & body).sum()) / nb
    stats["bone_fraction"] = float((ct > 300).sum()) / nb
    stats["suvmax"] = float(pet[tum].max())
    stats["suvmean"] = float(pet[tum].mean())
    stats.update(zip(("out_suv_p50", "out_suv_p95", "out_suv_p99"),
                     np.percentile(pet[outside], (50, 95, 99))))
    stats["out_suv_max"] = float(pet[outside].max())
    hot = (pet > 0.5 * stats["suvmax"]) & (lab == 0)
    regions, n = ndimage.label(hot)
    sizes = np.bincount(regions.ravel())[1:] * voxel_ml if n else np.zeros(0)
    sizes = sizes[sizes >= min_region_ml]
    stats["hot_regions"] = int(sizes.size)
    stats["hot_largest_ml"] = float(sizes.max()) if sizes.size else 0.0
    stats["hot_largest_x_tumour"] = stats["hot_largest_ml"] / max(stats["tumour_ml"], 1e-9)
    return {k: float(v) if k != "hot_regions" else v for k, v in stats.items()}


def field_statistics(ct, pet, label, field_mm: float = 144.0, voxel_mm: float = 2.0) -> dict:
    """Statistics of a ``field_mm`` cube centred on the GTVp centroid, all on one ``voxel_mm`` grid.

    CT and PET are resampled linearly, the label linearly and thresholded at 0.5, onto the
    model's input field (144 mm at 2 mm); field voxels outside the scan are ignored. Body = CT >
    -300 HU. The brain is the connected region of SUV >= 4 at 0..70 HU that reaches the top
    15 mm of the scanned field and lies above the tumour (at least 5 mL). "Glands" are hot regions
    (SUV >= max(2.5, 2 x background), 0.3-40 mL, not tumour or brain) whose centroid mirrors
    another's across the body midline within 12 mm; the rest above 50 % of the tumour SUVmax
    count as other hot regions.
    """
    n = int(round(field_mm / voxel_mm))
    lab_grid = label.grid
    centre = _mask_centroid_ras(label.array == 1, lab_grid)
    m = np.diag([-voxel_mm, -voxel_mm, voxel_mm, 1.0])
    m[:3, 3] = centre - m[:3, :3] @ np.full(3, (n - 1) / 2.0)
    grid = Grid((n, n, n), m)
    valid = inside_mask(ct.grid, grid) & inside_mask(pet.grid, grid)
    c = resample(ct.array.astype(np.float32), ct.grid, grid, order=1, cval=-1024.0)
    p = resample(pet.array.astype(np.float32), pet.grid, grid, order=1)
    tum = (resample((label.array == 1).astype(np.float32), lab_grid, grid, order=1) > 0.5) & valid
    vml = voxel_mm ** 3 / 1000.0
    body = (c > -300) & valid
    other = body & ~ndimage.binary_dilation(tum, iterations=2)
    st = {"tumour_ml": tum.sum() * vml, "suvmax": float(p[tum].max()), "suvmean": float(p[tum].mean()),
          "tumour_hu": float(np.median(c[tum])), "body_fraction": body.sum() / max(valid.sum(), 1)}
    bg = float(np.median(p[other]))
    st["bg_suv"] = bg
    fat = other & (c >= -190) & (c <= -30)
    bone = other & (c > 300)
    muscle = other & (c >= 20) & (c <= 80) & (p < 2.5)
    st["fat_hu"] = float(np.median(c[fat])) if fat.any() else np.nan
    st["bone_hu"] = float(np.median(c[bone])) if bone.any() else np.nan
    st["muscle_hu"] = float(np.median(c[muscle])) if muscle.any() else np.nan
    st["fat_fraction"] = fat.sum() / max(body.sum(), 1)
    st["bone_fraction"] = bone.sum() / max(body.sum(), 1)
    mean = ndimage.uniform_filter(p, 5)
    sq = ndimage.uniform_filter(p * p, 5)
    cov = np.sqrt(np.maximum(sq - mean * mean, 0)) / np.maximum(mean, 1e-3)
    core = ndimage.binary_erosion(muscle, iterations=1)
    st["pet_cov"] = float(np.median(cov[core])) if core.any() else np.nan
    # brain
    kk = np.nonzero(valid.any(axis=(1, 2)))[0]
    k_top = kk.max()
    k_t = np.argwhere(tum)[:, 0].mean()
    cand = (p >= 4.0) & (c >= 0) & (c <= 70) & body & ~tum
    cand[: int(k_t) + 1] = False
    regs, nreg = ndimage.label(cand)
    brain = np.zeros_like(cand)
    top = int(round(15.0 / voxel_mm))
    if nreg:
        hits = np.unique(regs[k_top - top:k_top + 1])
        sizes = np.bincount(regs.ravel())
        for r in hits[hits > 0]:
            if sizes[r] * vml >= 5.0:
                brain |= regs == r
    st["brain"] = float(brain.any())
    st["brain_ml"] = brain.sum() * vml
    st["brain_x_tumour"] = st["brain_ml"] / st["tumour_ml"]
    if brain.any():
        st["brain_suv_p50"], st["brain_suv_p95"] = (float(v) for v in np.percentile(p[brain], (50, 95)))
        st["brain_dz_mm"] = (np.percentile(np.argwhere(brain)[:, 0], 2) - k_t) * voxel_mm
    else:
        st["brain_suv_p50"] = st["brain_suv_p95"] = st["brain_dz_mm"] = np.nan
    # glands: symmetric hot pairs
    hot = (p >= max(2.5, 2.0 * bg)) & other & ~ndimage.binary_dilation(brain, iterations=1)
    regs, nreg = ndimage.label(hot)
    sizes = np.bincount(regs.ravel()) * vml
    keep = [r for r in range(1, nreg + 1) if 0.3 <= sizes[r] <= 40.0]
    cents = {r: np.argwhere(regs == r).mean(axis=0) * voxel_mm for r in keep}
    xs = np.argwhere(body)[:, 2]
    mid = float(np.median(xs)) * voxel_mm
    pairs, used = [], set()
    for a in keep:
        for b in keep:
            if a < b and a not in used and b not in used:
                ca, cb = cents[a], cents[b]
                mirrored = np.array((cb[0], cb[1], 2 * mid - cb[2]))
                if abs(ca[2] - mid) > 8 and np.linalg.norm(ca - mirrored) <= 12.0:
                    pairs.append((a, b))
                    used |= {a, b}
    st["sym_pairs"] = len(pairs)
    if pairs:
        st["gland_suvmax"] = float(np.median([max(p[regs == a].max(), p[regs == b].max()) for a, b in pairs]))
        st["gland_ml"] = float(np.median([sizes[r] for ab in pairs for r in ab]))
    else:
        st["gland_suvmax"] = st["gland_ml"] = np.nan
    thr = 0.5 * st["suvmax"]
    hot2 = (p > thr) & other & ~brain
    regs, nreg = ndimage.label(hot2)
    sizes = np.bincount(regs.ravel())[1:] * vml
    st["hot_regions"] = int((sizes >= 0.1).sum())
    return {k: float(v) for k, v in st.items()}


def node_statistics(label: Volume, pet: Volume | None = None, value: int = 2,
                    min_ml: float = 0.05) -> dict:
    """The pathological lymph nodes (``label == value``, GTVn) of one case: ``n_nodes`` (connected
    components, 26-connectivity, of at least ``min_ml``), ``node_ml`` (each node's volume, mL,
    largest first), ``nodes_ml`` (their sum) and, with a PET, ``node_suvmax`` (each node's SUVmax:
    the PET linearly resampled onto the label grid, as :func:`_tumour_suv`)."""
    mask = np.rint(label.array) == value
    voxel_ml = float(np.prod(label.grid.spacing)) / 1000.0
    regions, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel())[1:] * voxel_ml if n else np.zeros(0)
    keep = [r + 1 for r in np.argsort(-sizes) if sizes[r] >= min_ml]
    out = {"n_nodes": len(keep), "node_ml": [float(sizes[r - 1]) for r in keep]}
    out["nodes_ml"] = float(sum(out["node_ml"]))
    if pet is not None:
        on_label = pet.array if (pet.grid.shape == label.grid.shape and np.allclose(
            pet.ijk_to_ras, label.ijk_to_ras)) else resample(pet.array, pet.grid, label.grid, order=1)
        out["node_suvmax"] = [float(on_label[regions == r].max()) for r in keep]
    return out


def _mask_centroid_ras(mask, grid):
    kji = np.argwhere(mask).mean(axis=0)
    return grid.index_to_ras(kji[::-1])


# ------------------------------------------------------------------------------------- files
def write_case(case: PhantomCase, out_dir, case_id: str) -> Path:
    """Write ``out_dir/<id>/<id>__CT.nii.gz``, ``<id>__PT.nii.gz`` and ``<id>.nii.gz`` (HECKTOR 2022)."""
    folder = Path(out_dir) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(case.ct, folder / f"{case_id}__CT.nii.gz", dtype=np.int16)
    write_volume(case.pet, folder / f"{case_id}__PT.nii.gz", dtype=np.float32)
    write_volume(case.label, folder / f"{case_id}.nii.gz", dtype=np.uint8)
    return folder


def _case_id(prefix: str, index: int, n_cases: int) -> str:
    width = max(3, len(str(max(n_cases - 1, 0))))
    return f"{prefix}-{index:0{width}d}"


def _generate_one(job) -> dict:
    out_dir, case_id, seed, kwargs = job
    case = generate_case(seed, **kwargs)
    write_case(case, out_dir, case_id)
    return {"id": case_id, **case.meta}


def generate_dataset(
    out_dir,
    n_cases: int,
    seed: int = 0,
    shape=(96, 96, 96),
    spacing_mm=(1.0, 1.0, 1.0),
    prefix: str = "PH",
    workers: int = 1,
    pet_spacing_mm=None,
    **kwargs,
) -> list[str]:
    """Write ``n_cases`` phantoms (case ``i`` uses seed ``seed + i``) and ``phantoms.json``.

    Case ids are ``<prefix>-000``, ``<prefix>-001``, ... Extra keyword arguments go to
    :func:`generate_case`. ``workers > 1`` generates in parallel processes (same output).
    """
    for name in ("p_bulky", "p_brain"):
        if name in kwargs:
            _check_probability(name, kwargs[name])  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"shape": tuple(int(n) for n in shape), "spacing_mm": tuple(float(v) for v in spacing_mm),
              "pet_spacing_mm": pet_spacing_mm, **kwargs}
    jobs = [(str(out), _case_id(prefix, i, n_cases), int(seed) + i, params) for i in range(int(n_cases))]
    if workers and workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=get_context("spawn")) as pool:
            metas = list(pool.map(_generate_one, jobs))
    else:
        metas = [_generate_one(job) for job in jobs]
    record = {
        "generator": "interactive_refine_training.phantoms",
        "generator_version": GENERATOR_VERSION,
        "n_cases": int(n_cases),
        "seed": int(seed),
        "prefix": prefix,
        "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
        "layout": "HECKTOR 2022: <id>/<id>__CT.nii.gz, <id>__PT.nii.gz, <id>.nii.gz (0 bg, 1 GTVp, 2 GTVn)",
        "cases": metas,
    }
    (out / "phantoms.json").write_text(json.dumps(record, indent=1))
    logger.info("wrote %d phantoms to %s", len(metas), out)
    return [m["id"] for m in metas]


__all__ = ["GENERATOR_VERSION", "PhantomCase", "generate_case", "write_case", "generate_dataset",
           "case_statistics", "field_statistics", "node_statistics", "CHGJ015_STATS", "P_BRAIN",
           "TUMOUR_ML_RANGE", "SUVMAX_RANGE", "BULKY_ML_RANGE", "BULKY_SUVMAX_RANGE"]
