"""Corrupted copies of real files, made in a test's temporary folder (never in shared/data).

Each maker takes the source path and a destination folder and returns the path of the faulty
copy; the fault-injection tests run the command line on them.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel
import numpy as np


def sha256_tree(paths) -> dict:
    """sha256 of every file under ``paths`` (files or folders), to show inputs are unchanged."""
    digests = {}
    for path in paths:
        path = Path(path)
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            if file.is_file():
                digests[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def truncated(src: Path, dst: Path, fraction: float = 1 / 3) -> Path:
    """The first ``fraction`` of the file's bytes."""
    data = src.read_bytes()
    out = dst / f"truncated_{src.name}"
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def bad_crc(src: Path, dst: Path) -> Path:
    """A gzip file whose CRC-32 trailer is wrong (the data itself intact)."""
    data = bytearray(src.read_bytes())
    data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])
    out = dst / f"crc_{src.name}"
    out.write_bytes(bytes(data))
    return out


def uncompressed_truncated(src: Path, dst: Path) -> Path:
    """An uncompressed .nii with its voxel data cut in half."""
    image = nibabel.load(str(src))
    full = dst / (src.name.replace(".nii.gz", "") + "_full.nii")
    nibabel.save(image, str(full))
    data = full.read_bytes()
    out = dst / f"truncated_{full.name}"
    out.write_bytes(data[: len(data) // 2])
    return out


def header_dims(src: Path, dst: Path, dims) -> Path:
    """The image with its NIfTI header's ``dim`` field replaced (the data untouched)."""
    image = nibabel.load(str(src))
    raw = image.header.binaryblock
    header = nibabel.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw), check=False)
    header["dim"] = dims
    out = dst / f"dims_{src.name}"
    with nibabel.openers.ImageOpener(str(out), "wb") as handle:
        handle.write(header.binaryblock)
        handle.write(b"\0" * (int(header["vox_offset"]) - 348))
        handle.write(np.asarray(image.dataobj).astype(image.get_data_dtype()).tobytes(order="F"))
    return out


def with_values(src: Path, dst: Path, name: str, change, dtype=None) -> Path:
    """A copy whose voxel array is ``change(array)`` (same geometry), saved as ``dtype``."""
    image = nibabel.load(str(src))
    array = change(np.asarray(image.dataobj, dtype=np.float64))
    array = array.astype(dtype or np.float32)
    out = dst / name
    nibabel.save(nibabel.Nifti1Image(array, image.affine), str(out))
    return out


def with_affine(src: Path, dst: Path, name: str, change) -> Path:
    """A copy whose RAS affine is ``change(affine)`` (qform and sform both set)."""
    image = nibabel.load(str(src))
    affine = change(image.affine.copy())
    copy = nibabel.Nifti1Image(np.asarray(image.dataobj), affine)
    copy.set_qform(affine, code=1)
    copy.set_sform(affine, code=1)
    out = dst / name
    nibabel.save(copy, str(out))
    return out


def shifted(src: Path, dst: Path, name: str, offset_mm) -> Path:
    """A copy moved by ``offset_mm`` (RAS)."""
    def move(affine):
        affine[:3, 3] += np.asarray(offset_mm, dtype=float)
        return affine

    return with_affine(src, dst, name, move)


def sheared(src: Path, dst: Path, name: str, amount: float = 0.3) -> Path:
    """A copy whose i axis leans into j (a sheared, non-orthogonal grid)."""
    def shear(affine):
        affine[:3, 1] += amount * affine[:3, 0]
        return affine

    return with_affine(src, dst, name, shear)


def flipped(src: Path, dst: Path, name: str, axes) -> Path:
    """The same physical image stored with ``axes`` (numpy axes of the nibabel [i, j, k] array)
    reversed: another storage order, the same voxels in RAS."""
    image = nibabel.load(str(src))
    array = np.asarray(image.dataobj)
    affine = image.affine.copy()
    for axis in axes:
        array = np.flip(array, axis)
        affine[:3, 3] += affine[:3, axis] * (image.shape[axis] - 1)
        affine[:3, axis] *= -1
    out = dst / name
    copy = nibabel.Nifti1Image(np.ascontiguousarray(array), affine)
    copy.set_qform(affine, code=1)
    copy.set_sform(affine, code=1)
    nibabel.save(copy, str(out))
    return out


def dicom_copy(src: Path, dst: Path, name: str, drop=None, extra: Path | None = None) -> Path:
    """A DICOM folder copy without the file at sorted index ``drop``, plus the files of
    ``extra`` (another series)."""
    out = dst / name
    out.mkdir()
    files = sorted(p for p in src.iterdir() if p.is_file())
    for index, file in enumerate(files):
        if index != drop:
            shutil.copy(file, out / file.name)
    for file in sorted(extra.iterdir()) if extra else ():
        if file.is_file():
            shutil.copy(file, out / f"other_{file.name}")
    return out


def card_with(package: Path, dst: Path, section: str | None, key: str, value) -> Path:
    """A copy of a model package whose card has ``[section][key] = value``."""
    out = dst / f"model_{key}"
    shutil.copytree(package, out)
    card = json.loads((out / "model.json").read_text())
    (card[section] if section else card)[key] = value
    (out / "model.json").write_text(json.dumps(card))
    return out


def transposed(src: Path, dst: Path, name: str) -> Path:
    """The same physical image stored with its first two axes swapped (i <-> j)."""
    image = nibabel.load(str(src))
    array = np.ascontiguousarray(np.swapaxes(np.asarray(image.dataobj), 0, 1))
    affine = image.affine.copy()
    affine[:, [0, 1]] = affine[:, [1, 0]]
    copy = nibabel.Nifti1Image(array, affine)
    copy.set_qform(affine, code=1)
    copy.set_sform(affine, code=1)
    out = dst / name
    nibabel.save(copy, str(out))
    return out
