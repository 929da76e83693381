"""InteractiveRefine engine: 2S-ICR interactive PET/CT segmentation in pure Python.

The engine never imports slicer, qt, vtk, ctk, the Slicer module's code, the training package or
the benchmarks (``Testing/engine/test_imports.py``). The Slicer module, the command line tool and
the training package all import it, so preprocessing, click encoding and network construction
exist exactly once.

Conventions (DESIGN.md section 3):
- World coordinates are RAS millimetres, as Slicer displays them.
- Numpy volumes are indexed ``[k, j, i]`` (slice, row, column), as Slicer's ``arrayFromVolume``.
- A 4x4 ``ijk_to_ras`` matrix maps a column vector ``(i, j, k, 1)`` to ``(r, a, s, 1)``.

Importing the package changes nothing in the process: the entry points apply the process-wide
settings (PyTorch's allocator option, threads) through :mod:`.runtime`.
"""
from __future__ import annotations

__version__ = "0.1.0"
