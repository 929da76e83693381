"""Training package of InteractiveRefine: datasets, trainers, evaluation and export for 2S-ICR.

It imports the engine (``InteractiveRefineLib``) for every piece of preprocessing, click
encoding, simulated user and network construction, so a model trained here loads in Slicer
unchanged. Command line: ``interactive-refine-train`` (see ``cli.py``), which applies the
process-wide settings (``InteractiveRefineLib.runtime``) before torch is used.
"""
from __future__ import annotations

__version__ = "0.1.0"
