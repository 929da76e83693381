"""Output files that appear whole or not at all.

:func:`check_output` refuses a target before any work is done (a folder, a path below a file, an
unknown extension, an input file, a folder where nothing can be written);
:func:`write_atomically` writes to a temporary file in the target's folder, fsyncs it and renames
it over the target, so an interruption, a full disk or an error leaves the previous file (or
none) and no partial one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError

#: Extensions an image output may have (SimpleITK picks the format from it); one file each.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), path.suffix)


def _same_file(a: Path, b) -> bool:
    b = Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path, what: str = "--out", inputs=(), image: bool = True) -> Path:
    """The target ``path`` as a Path; OutputError naming it unless it can be written.

    ``inputs``: files or folders the target must not be (or lie in, for a folder).
    ``image``: the target must have one of :data:`IMAGE_SUFFIXES`."""
    path = Path(path)
    if image and _suffix(path) not in IMAGE_SUFFIXES:
        raise OutputError(f"{what} {path}: unknown image extension; expected one of "
                          f"{', '.join(IMAGE_SUFFIXES)}")
    for source in inputs:
        if source and (_same_file(path, source) or (Path(source).is_dir()
                                                      and Path(source).resolve() in path.resolve().parents)):
            raise OutputError(f"{what} {path} is an input ({source}); choose another output file")
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file (a folder or a device)")
    if path.is_file() and not os.access(path, os.W_OK):  # read-only, or immutable (even for root)
        raise OutputError(f"{what} {path} is read-only; choose another output file or make it writable")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".interactive-refine-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {folder}: {exc.strerror or exc}") from exc
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path, write, what: str = "output") -> None:
    """Call ``write(temporary_path)`` and rename the result over ``path`` (same folder, fsynced).

    OutputError names ``path`` when writing fails (a full disk, no permission); the temporary
    file is removed on every way out, an interruption included."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_suffix(path))
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except (OSError, RuntimeError) as exc:  # RuntimeError: SimpleITK's writer
        detail = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
        raise OutputError(f"cannot write the {what} {path}: {detail}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomically(path, text: str, what: str = "output") -> None:
    """:func:`write_atomically` for a text file."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    write_atomically(path, write, what)
