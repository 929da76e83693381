"""Training package of InteractiveRefine: datasets, trainers, evaluation and export for 2S-ICR.

It imports the engine (``InteractiveRefineLib``) for every piece of preprocessing, click
encoding, simulated user and network construction, so a model trained here loads in Slicer
unchanged. Command line: ``interactive-refine-train`` (see ``cli.py``).
"""
from __future__ import annotations

import InteractiveRefineLib  # noqa: F401  (first: it sets the allocator option torch reads once)

__version__ = "0.1.0"
