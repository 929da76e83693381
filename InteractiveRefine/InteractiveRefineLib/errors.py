"""Errors raised at the engine's public boundary.

Every error is a ``ValueError`` subclass carrying a message that names the offending value and
what was expected, so callers (CLI, Slicer Logic) can show it to the user as it is.
"""
from __future__ import annotations


class InteractiveRefineError(ValueError):
    """Base class of all input errors raised by the engine."""


class ImageError(InteractiveRefineError):
    """An image is missing, unreadable, empty, contains NaN, or does not fit the other image."""


class ClickError(InteractiveRefineError):
    """A click lies outside the image or the region of interest, or cannot be undone."""


class ModelPackageError(InteractiveRefineError):
    """A model package is missing files, has a bad card, or weights that fail verification."""


class SessionStateError(InteractiveRefineError):
    """A session method was called in the wrong order (e.g. a click before the initial run)."""


class ThresholdError(ClickError):
    """A PET threshold region cannot be made at a click (no uptake there, or a PET not in SUV)."""


class OutputError(InteractiveRefineError):
    """An output cannot be written: a folder, an input file, no permission, a full disk."""
