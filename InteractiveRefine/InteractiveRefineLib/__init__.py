"""InteractiveRefine engine: 2S-ICR interactive PET/CT segmentation in pure Python.

The engine never imports slicer, qt, vtk or ctk. The Slicer module, the command line tool and
the training package all import it, so preprocessing, click encoding and network construction
exist exactly once.

Conventions (DESIGN.md section 3):
- World coordinates are RAS millimetres, as Slicer displays them.
- Numpy volumes are indexed ``[k, j, i]`` (slice, row, column), as Slicer's ``arrayFromVolume``.
- A 4x4 ``ijk_to_ras`` matrix maps a column vector ``(i, j, k, 1)`` to ``(r, a, s, 1)``.
"""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

#: PyTorch's CPU allocator backs tensors of 2 MB and more with transparent huge pages when this
#: variable is set before its first allocation (Linux; PyTorch's CPU performance tuning guide).
#: A click allocates and frees dozens of whole-ROI activations (a 144^3 x 8 bfloat16 one is
#: 48 MB); with 4 KB pages the kernel faults and zeroes every one of them again on each click,
#: 2 MB pages cut that work (README, "Performance": ~170,000 -> ~8,000 page faults per click).
#: The engine is imported before torch everywhere in the project (the Slicer module, both
#: command lines, the training package), so setting it here takes effect; a value already in
#: the environment (``0`` turns it off) is kept. Elsewhere than Linux PyTorch ignores it.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
