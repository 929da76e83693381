"""The GTVp and GTVn segments: where they go, what may be written, and writing a changed CT box
into them from the session's label map (0 background, 1 GTVp, 2 GTVn; a one-class model: 0/1 and
the GTVp segment only)."""
from __future__ import annotations

import time

import numpy as np
import slicer
import vtk

#: The GTVp segment (every model writes it); its colour is fixed.
SEGMENT_NAME = "GTVp"
SEGMENT_COLOR = (0.95, 0.65, 0.10)
#: The GTVn segment (models with a ``gtvn`` output); the colour of the engine's DICOM SEG.
NODAL_SEGMENT_NAME = "GTVn"
NODAL_SEGMENT_COLOR = (0.0, 151 / 255, 206 / 255)
BINARY_LABELMAP = "Binary labelmap"
_TERMINOLOGY = ("Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered "
                "Structure~SCT^{code}^{meaning}~^^~Anatomic codes - DICOM master list~^^~^^")
#: Slicer terminology of the segments (SNOMED CT codes, as in the engine's DICOM SEG and RTSTRUCT,
#: ``dicom_export``), so Slicer's DICOM SEG exporter writes "Morphologically Altered Structure /
#: Neoplasm, Primary" (GTVp) and "... / Neoplasm, Secondary" (GTVn, the involved lymph nodes).
GTVP_TERMINOLOGY = _TERMINOLOGY.format(code="86049000", meaning="Neoplasm, Primary")
GTVN_TERMINOLOGY = _TERMINOLOGY.format(code="14799000", meaning="Neoplasm, Secondary")
#: Output class (card name) -> (segment name, colour, terminology).
CLASS_SEGMENTS = {
    "gtvp": (SEGMENT_NAME, SEGMENT_COLOR, GTVP_TERMINOLOGY),
    "gtvn": (NODAL_SEGMENT_NAME, NODAL_SEGMENT_COLOR, GTVN_TERMINOLOGY),
}
MODULE_SEGMENTS = tuple(name for name, _, _ in CLASS_SEGMENTS.values())


def checkSegmentation(segmentationNode, ctNode) -> None:
    """Refuse (``ValueError``, nothing changed) a target the result cannot be written into.

    - A segmentation whose source representation is not a binary labelmap (e.g. "Planar contour"
      from a DICOM RTSTRUCT): writing a labelmap into it fails ("Importing of segment failed").
      :func:`convertToLabelmap` converts it, after the user agreed.
    - One under another transform than the CT that holds other segments (moving it would move them).
    """
    if segmentationNode is None:
        return
    segmentation = segmentationNode.GetSegmentation()
    source = segmentation.GetSourceRepresentationName()
    if segmentation.GetNumberOfSegments() and source != BINARY_LABELMAP:
        raise ValueError(
            f"The segmentation '{segmentationNode.GetName()}' holds {source} segments (e.g. from a "
            "DICOM RTSTRUCT): convert it to a binary labelmap first, or choose 'Create new segmentation'"
        )
    if segmentationNode.GetTransformNodeID() == ctNode.GetTransformNodeID():
        return
    others = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    if [name for name in others if name not in MODULE_SEGMENTS]:
        raise ValueError(
            f"The segmentation '{segmentationNode.GetName()}' holds other segments and is under a "
            "different transform than the CT: choose another segmentation or move it under the "
            "CT's transform"
        )


def convertToLabelmap(segmentationNode) -> None:
    """Make the binary labelmap the source representation (its contours are kept as a derived one)."""
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSourceRepresentationName() == BINARY_LABELMAP:
        return
    if not segmentationNode.CreateBinaryLabelmapRepresentation():
        raise ValueError(
            f"The segments of '{segmentationNode.GetName()}' cannot be converted to a binary labelmap "
            "(is the SlicerRT extension installed?): choose 'Create new segmentation'"
        )
    segmentation.SetSourceRepresentationName(BINARY_LABELMAP)


def prepareSegmentation(scene, segmentationNode, ctNode):
    """The target segmentation (created when None) on the CT's geometry and transform."""
    if segmentationNode is None:
        segmentationNode = scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{ctNode.GetName()} GTVp")
        )
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetAndObserveTransformNodeID(ctNode.GetTransformNodeID())
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(ctNode)
    return segmentationNode


def segmentId(segmentationNode, stored: str = "", create: bool = True, className: str = "gtvp") -> str:
    """The ID of the segment of ``className`` (GTVp, GTVn): ``stored`` while it exists, else the
    segment of that name (added, with its colour and terminology)."""
    segmentation = segmentationNode.GetSegmentation()
    if stored and segmentation.GetSegment(stored) is not None:
        return stored
    name, color, terminology = CLASS_SEGMENTS[className]
    found = segmentation.GetSegmentIdBySegmentName(name)
    if not found and create:
        found = segmentation.AddEmptySegment("", name, color)
        segmentation.GetSegment(found).SetTag("TerminologyEntry", terminology)
    return found or ""


def classValues(session) -> dict:
    """``{class: value in the session's masks}``: the card labels (GTVp 1, GTVn 2) for several
    classes, ``{"gtvp": 1}`` for a one-class model (its 0/1 mask)."""
    if len(session.classes) > 1:
        return {name: int(value) for name, value in session.labels.items() if name in CLASS_SEGMENTS}
    return {"gtvp": 1}


def writeMask(session, segmentationNode, segmentIds, ctNode, full: bool = False) -> float:
    """Write the session's label map into the segments (``segmentIds``: ``{class: segment ID}``, or
    one ID for GTVp); return the seconds it took. Each segment gets the voxels of its class only.

    ``full`` rewrites the whole CT grid (clears anything outside the ROI); otherwise only the CT
    box under the ROI is replaced, which is all a click can change.
    """
    t0 = time.perf_counter()
    if isinstance(segmentIds, str):
        segmentIds = {"gtvp": segmentIds}
    values = classValues(session)
    labels = session.mask_on_ct() if full else session.mask_in_box()
    for className, segment in segmentIds.items():
        mask = (labels == values[className]).astype(np.uint8)
        if full:
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segment, ctNode)
        else:
            writeBox(session.ct_box, mask, segmentationNode, segment, ctNode)
    return time.perf_counter() - t0


def writeBox(box, mask, segmentationNode, segmentId: str, ctNode) -> None:
    """Replace the segment inside the CT voxel ``box`` (slices k, j, i) by ``mask``."""
    from vtk.util import numpy_support

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    extent = [box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1]
    image = slicer.vtkOrientedImageData()
    image.SetExtent(extent)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.ravel()
    ijkToRas = vtk.vtkMatrix4x4()
    ctNode.GetIJKToRASMatrix(ijkToRas)  # the segmentation shares the CT's parent transform
    image.SetImageToWorldMatrix(ijkToRas)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, logic.MODE_REPLACE, extent):
        raise RuntimeError(f"writing segment '{segmentId}' of '{segmentationNode.GetName()}' failed")


def readMask(segmentationNode, segmentId: str, ctNode) -> np.ndarray:
    """The segment as uint8 ``[k, j, i]`` on the CT grid."""
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, ctNode)


def readLabelMap(segmentationNode, segmentIds: dict, values: dict, ctNode) -> np.ndarray:
    """The segments (``{class: segment ID}``) as one uint8 label map on the CT grid (``values``:
    ``{class: label}``; where segments overlap after an edit, the later class wins)."""
    labels = None
    for className, segment in segmentIds.items():
        mask = readMask(segmentationNode, segment, ctNode)
        if labels is None:
            labels = np.zeros(mask.shape, dtype=np.uint8)
        labels[mask > 0] = values[className]
    return labels


def saveSegmentation(segmentationNode, path: str) -> None:
    """Write a segmentation node to ``.seg.nrrd`` through its storage node."""
    storage = segmentationNode.GetStorageNode()
    if storage is None:
        segmentationNode.AddDefaultStorageNode()
        storage = segmentationNode.GetStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentationNode):
        raise ValueError(f"Cannot write the segmentation to {path}")
