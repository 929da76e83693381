"""Volume and ROI nodes -> the engine's ``Volume`` and working-grid size (world RAS, parent
transforms included). No Qt; the engine is imported inside functions."""
from __future__ import annotations

import os

import numpy as np
import slicer
import vtk


def transformToWorld(node) -> np.ndarray:
    """4x4 matrix from the node's local RAS to world RAS (identity without a parent transform)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise ValueError(
            f"'{node.GetName()}' is under a non-linear transform ('{parent.GetName()}'): harden "
            "the transform (Transforms module) before segmenting"
        )
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def ijkToWorld(volumeNode) -> np.ndarray:
    """4x4 matrix from the volume's voxel indices (i, j, k) to world RAS."""
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    return transformToWorld(volumeNode) @ slicer.util.arrayFromVTKMatrix(ijkToRas)


def volumeFromNode(volumeNode, role: str = "CT"):
    """The engine's ``Volume`` of a scalar volume node, with its IJK-to-world-RAS matrix."""
    from InteractiveRefineLib.geometry import Volume

    if volumeNode is None:
        raise ValueError(f"No {role} volume selected: choose the {role} image")
    imageData = volumeNode.GetImageData()
    if imageData is None or 0 in imageData.GetDimensions():
        raise ValueError(f"The {role} volume '{volumeNode.GetName()}' has no image data")
    if imageData.GetNumberOfScalarComponents() != 1:
        raise ValueError(
            f"The {role} volume '{volumeNode.GetName()}' has "
            f"{imageData.GetNumberOfScalarComponents()} components; a scalar volume is needed"
        )
    return Volume.from_array(slicer.util.arrayFromVolume(volumeNode), ijkToWorld(volumeNode))


def roiCenter(roiNode) -> np.ndarray:
    if roiNode.GetNumberOfDefinedControlPoints() < 1:
        raise ValueError(f"The ROI '{roiNode.GetName()}' is not placed yet: place it or clear the "
                         "ROI selection")
    center = [0.0, 0.0, 0.0]
    roiNode.GetCenterWorld(center)
    return np.array(center)


def roiSize(roiNode, ctGrid, package) -> tuple:
    """Working-grid size ``(k, j, i)`` in voxels covering the ROI box along the CT axes: at least
    the model's ROI and a multiple of the network's stride product (``ModelCard.roi_size_for``)."""
    half = np.asarray(roiNode.GetSize(), dtype=float) / 2.0
    objectCorners = np.array([[x, y, z, 1.0] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    objectCorners[:, :3] *= half
    objectToWorld = slicer.util.arrayFromVTKMatrix(roiNode.GetObjectToWorldMatrix())
    corners = (objectCorners @ objectToWorld.T)[:, :3]  # world RAS, parent transforms included
    extentIjk = np.ptp(corners @ ctGrid.direction, axis=0)  # mm along the CT's i, j, k axes
    voxelsIjk = np.ceil(extentIjk / np.asarray(package.spacing_mm))
    return package.spec.roi_size_for(voxelsIjk[::-1])


def geometryOf(ctNode, petNode) -> tuple:
    """The (CT, PET) parent-transform matrices: clicks are valid only while these are unchanged."""
    return transformToWorld(ctNode), (transformToWorld(petNode) if petNode is not None else None)


def sameGeometry(a, b) -> bool:
    (ct, pet), (ctOld, petOld) = a, b
    if not np.allclose(ct, ctOld, atol=1e-6) or (pet is None) != (petOld is None):
        return False
    return pet is None or np.allclose(pet, petOld, atol=1e-6)


def worldToIndex(volumeNode, ras) -> np.ndarray:
    """Voxel indices ``[k, j, i]`` (rounded) of world RAS points ``(..., 3)``."""
    ras = np.asarray(ras, float)
    homogeneous = np.concatenate([ras, np.ones(ras.shape[:-1] + (1,))], axis=-1)
    ijk = (homogeneous @ np.linalg.inv(ijkToWorld(volumeNode)).T)[..., :3]
    return np.rint(ijk[..., ::-1]).astype(int)


def loadVolume(scene, path: str, name: str | None = None, volumesLogic=None):
    """Load a volume file into ``scene`` through the Volumes logic (works without the GUI)."""
    volumesLogic = volumesLogic or slicer.modules.volumes.logic()
    if volumesLogic.GetMRMLScene() is not scene:
        raise ValueError("the Volumes logic belongs to another scene")
    from InteractiveRefineLib.input_checks import check_file_complete

    check_file_complete(path)  # Slicer's reader accepts a truncated .nii.gz and reads NaN as 0
    name = name or os.path.basename(path).split(".")[0]
    node = volumesLogic.AddArchetypeVolume(str(path), name)
    if node is None:
        raise ValueError(f"Cannot load the volume {path}")
    return node
