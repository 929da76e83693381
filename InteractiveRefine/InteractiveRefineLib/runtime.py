"""Process-wide settings, applied once by each entry point before torch is used.

Importing the engine changes nothing in the process. The entry points (the ``interactive-refine``
and ``interactive-refine-train`` command lines, the benchmarks, the Slicer Logic when it creates
a session, the batch script) call :func:`apply_process_settings` first:

- ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already has a value (``0`` turns it off).
  PyTorch's CPU allocator then backs tensors of 2 MB and more with transparent huge pages
  (Linux; elsewhere PyTorch ignores it). A click allocates and frees dozens of whole-ROI
  activations; with 4 KB pages the kernel faults and zeroes each of them again on every click.
  PyTorch reads the variable once, at its first CPU allocation, so it must be set before torch
  is used: when torch is already imported the call says so (``ProcessSettings.too_late`` and a
  logged warning), since the setting may then have no effect in this process.
- torch's intra-op thread count, when ``threads`` is given (the command lines take it from
  ``$INTERACTIVE_REFINE_THREADS``: :func:`threads_from_environment`).
- ``TORCHINDUCTOR_CACHE_DIR``, unless already set: ``torch.compile``'s kernel cache (the
  ``compile`` session option) under the user's cache folder (:func:`user_cache_dir`), so a
  compiled network is built once per machine, not in a temporary folder per boot.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Mapping

from .errors import InteractiveRefineError

logger = logging.getLogger(__name__)

#: PyTorch's switch for transparent huge pages in its CPU allocator.
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"
#: torch thread count for the command lines (unset: torch's own choice).
THREADS_VARIABLE = "INTERACTIVE_REFINE_THREADS"
#: Where torch.compile's inductor keeps its compiled kernels.
INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def user_cache_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The user's cache folder for this project: ``%LOCALAPPDATA%`` (Windows),
    ``~/Library/Caches`` (macOS), else ``$XDG_CACHE_HOME`` or ``~/.cache``; then
    ``InteractiveRefine``."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = os.path.expanduser("~")
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    elif platform == "darwin":
        base = os.path.join(home, "Library", "Caches")
    else:
        base = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(base, "InteractiveRefine")

#: Whether an earlier call set the variable after torch was imported (reported on every call).
_late = {"value": False}


@dataclass(frozen=True)
class ProcessSettings:
    """What :func:`apply_process_settings` found and did.

    Attributes:
        huge_pages: the value of ``THP_MEM_ALLOC_ENABLE`` after the call.
        threads: torch's thread count when the call set it, else ``None``.
        too_late: True when the variable was set (by this or an earlier call) after torch was
            imported: PyTorch may have read it already, so huge pages may be off.
    """

    huge_pages: str
    threads: int | None
    too_late: bool


def threads_from_environment(environ: Mapping[str, str] | None = None) -> int | None:
    """``$INTERACTIVE_REFINE_THREADS`` as a positive int; ``None`` when unset or empty."""
    text = (os.environ if environ is None else environ).get(THREADS_VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InteractiveRefineError(f"{THREADS_VARIABLE} must be a positive integer, got {text!r}")
    return value


def apply_process_settings(threads: int | None = None) -> ProcessSettings:
    """Set the process-wide options; call it before torch is imported. Safe to call again.

    Args:
        threads: torch intra-op threads (``torch.set_num_threads``); ``None`` leaves torch's choice.

    Returns:
        a :class:`ProcessSettings`; ``too_late`` is True (and a warning is logged once) when
        ``THP_MEM_ALLOC_ENABLE`` had to be set while torch was already imported.
    """
    if threads is not None and int(threads) < 1:
        raise InteractiveRefineError(f"threads must be a positive integer, got {threads!r}")
    if HUGE_PAGES_VARIABLE not in os.environ:
        os.environ[HUGE_PAGES_VARIABLE] = "1"
        if "torch" in sys.modules:
            _late["value"] = True
            logger.warning(
                "%s=1 was set after torch was imported: PyTorch reads it once, at its first CPU "
                "allocation, so huge-page allocations may be off in this process (set it in the "
                "environment, or apply the settings before importing torch)", HUGE_PAGES_VARIABLE,
            )
    if INDUCTOR_CACHE_VARIABLE not in os.environ:
        os.environ[INDUCTOR_CACHE_VARIABLE] = os.path.join(user_cache_dir(), "inductor")
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    return ProcessSettings(os.environ[HUGE_PAGES_VARIABLE], None if threads is None else int(threads),
                           _late["value"])
