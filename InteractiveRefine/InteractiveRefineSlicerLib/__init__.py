"""The Slicer side of InteractiveRefine without Qt: MRML nodes <-> the engine.

Every function takes the MRML scene (or nodes) as an argument, so the same code serves the Slicer
module's Widget, the headless batch, tests on ``slicer-core`` and a web front end. Nothing here
imports ``qt``, ``ctk`` or the engine at file scope; importing the package has no side effect.
"""
