"""The module's typed parameter node, and the upgrade of scenes saved by earlier versions.

In Slicer the class is wrapped by ``slicer.parameterNodeWrapper`` (the Widget binds it to the
``.ui`` with ``connectGui``). ``slicer-core`` has no ``parameterNodeWrapper``; there a minimal
wrapper with the same storage format is used (bool as "True"/"False", numbers as ``str()``, node
references under the parameter's own name plus an empty same-named string), so a scene written
by either reads back in the other.

Earlier versions stored "true"/"false", other parameter names ("AutoRefine", "ModelPath") and node
references without a same-named string; ``parameterNodeWrapper`` would read those booleans as
False and overwrite those references with None. :func:`upgrade` converts such a node in place and
must run before the node is wrapped.
"""
from __future__ import annotations

import typing

import slicer

#: The current storage version of the parameter node (the "Version" parameter).
VERSION = "2"

#: Old name -> new name, for parameters (strings and booleans) of version-1 scenes.
_OLD_PARAMETERS = {
    "ModelPath": "modelPath", "Device": "device", "AutoRefine": "autoRefine",
    "RegionRemoval": "regionRemoval", "ExactFollowUp": "exactFollowUp", "SegmentID": "segmentId",
    "ClickOrder": "clickOrder",
}
#: Old reference role -> new name, for node references of version-1 scenes.
_OLD_REFERENCES = {
    "CT": "ct", "PET": "pet", "ROI": "roi", "Segmentation": "segmentation",
    "PositiveClicks": "positiveClicks", "NegativeClicks": "negativeClicks",
}
_BOOLEANS = ("autoRefine", "regionRemoval", "exactFollowUp", "thresholdStart")


def upgrade(node) -> bool:
    """Convert a version-1 parameter node (see the module docstring) in place; True if changed.

    Safe on a current node (nothing changes) and on an empty one.
    """
    if node is None or node.GetParameter("Version") == VERSION:
        return False
    changed = False
    for old, new in _OLD_PARAMETERS.items():
        if node.HasParameter(old):
            value = node.GetParameter(old)
            if new in _BOOLEANS:
                value = "False" if value.lower() == "false" else "True"
            node.SetParameter(new, value)
            node.UnsetParameter(old)
            changed = True
    for old, new in _OLD_REFERENCES.items():
        nodeId = node.GetNodeReferenceID(old)
        if nodeId:
            node.SetNodeReferenceID(new, nodeId)
            node.RemoveNodeReferenceIDs(old)
            node.SetParameter(new, "")  # what parameterNodeWrapper looks for before it writes a default
            changed = True
    node.SetParameter("Version", VERSION)
    return changed


def _serialize(node, name: str, kind, value) -> None:
    if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode):
        node.SetParameter(name, "")
        node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
    elif kind is bool:
        node.SetParameter(name, "True" if value else "False")
    else:
        node.SetParameter(name, str(value))


def _deserialize(node, name: str, kind):
    if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode):
        return node.GetNodeReference(name)
    text = node.GetParameter(name)
    if kind is bool:
        return text == "True"
    return kind(text) if kind in (int, float) else text


def _minimalWrapper(cls):
    """``parameterNodeWrapper``'s storage on slicer-core: typed attributes over a parameter node."""
    hints = typing.get_type_hints(cls)
    defaults = {name: getattr(cls, name, None) for name in hints}

    class Wrapped:
        __annotations__ = hints

        def __init__(self, parameterNode):
            object.__setattr__(self, "parameterNode", parameterNode)
            for name, kind in hints.items():  # like the real wrapper: a default where none is stored
                if not parameterNode.HasParameter(name):
                    _serialize(parameterNode, name, kind, defaults[name])

        def __getattr__(self, name):
            if name not in hints:
                raise AttributeError(name)
            return _deserialize(self.parameterNode, name, hints[name])

        def __setattr__(self, name, value):
            if name not in hints:
                raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
            _serialize(self.parameterNode, name, hints[name], value)

    Wrapped.__name__ = Wrapped.__qualname__ = cls.__name__
    Wrapped.__doc__ = cls.__doc__
    return Wrapped


try:
    from slicer.parameterNodeWrapper import parameterNodeWrapper
except ImportError:  # slicer-core: no parameterNodeWrapper (it needs the application's Qt)
    parameterNodeWrapper = _minimalWrapper


@parameterNodeWrapper
class InteractiveRefineParameterNode:
    """What the module's panel shows and a saved scene keeps.

    The node roles (``ct`` .. ``segmentation``) are the panel's choice; the running session keeps
    its own nodes (the Logic ends the session when they change). ``clickOrder`` lists the click
    points in placement order: ``+id`` tumour, ``-id`` not tumour, ``Tid`` threshold region, ``Nid``
    lymph node (GTVn), ``Rid`` lymph-node threshold region (GTVn).
    ``segmentId`` / ``nodalSegmentId``: the GTVp / GTVn segments the module writes.
    """

    ct: slicer.vtkMRMLScalarVolumeNode
    pet: slicer.vtkMRMLScalarVolumeNode
    roi: slicer.vtkMRMLMarkupsROINode
    segmentation: slicer.vtkMRMLSegmentationNode
    positiveClicks: slicer.vtkMRMLMarkupsFiducialNode
    negativeClicks: slicer.vtkMRMLMarkupsFiducialNode
    thresholdClicks: slicer.vtkMRMLMarkupsFiducialNode
    nodalClicks: slicer.vtkMRMLMarkupsFiducialNode
    nodalThresholdClicks: slicer.vtkMRMLMarkupsFiducialNode
    modelPath: str = ""
    device: str = "auto"
    autoRefine: bool = True
    regionRemoval: bool = True
    exactFollowUp: bool = True
    thresholdStart: bool = True  # as the model's card says (off: the model refines every point)
    thresholdPercent: int = 40
    compileNetworks: bool = True  # on CUDA only (:mod:`.warmstart`); from the next Segment
    segmentId: str = ""
    nodalSegmentId: str = ""
    clickOrder: str = ""


def wrap(node):
    """The typed view of a module parameter node (upgraded first when it is an older one)."""
    upgrade(node)
    node.SetParameter("Version", VERSION)
    return InteractiveRefineParameterNode(node)
