"""The GTVp segment: where it goes, what may be written, and writing a changed CT box into it."""
from __future__ import annotations

import time

import numpy as np
import slicer
import vtk

#: The segment the module writes (and only this one); its colour is fixed.
SEGMENT_NAME = "GTVp"
SEGMENT_COLOR = (0.95, 0.65, 0.10)
BINARY_LABELMAP = "Binary labelmap"
#: Slicer terminology of the GTVp (SNOMED CT codes, as in the engine's DICOM SEG), so Slicer's DICOM
#: SEG exporter writes "Morphologically Altered Structure / Neoplasm, Primary".
GTVP_TERMINOLOGY = ("Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered "
                    "Structure~SCT^86049000^Neoplasm, Primary~^^~Anatomic codes - DICOM master list~^^~^^")


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
    if [name for name in others if name != SEGMENT_NAME]:
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


def segmentId(segmentationNode, stored: str = "", create: bool = True) -> str:
    """The GTVp segment's ID: ``stored`` while it exists, else the segment named GTVp (added)."""
    segmentation = segmentationNode.GetSegmentation()
    if stored and segmentation.GetSegment(stored) is not None:
        return stored
    found = segmentation.GetSegmentIdBySegmentName(SEGMENT_NAME)
    if not found and create:
        found = segmentation.AddEmptySegment("", SEGMENT_NAME, SEGMENT_COLOR)
        segmentation.GetSegment(found).SetTag("TerminologyEntry", GTVP_TERMINOLOGY)
    return found or ""


def writeMask(session, segmentationNode, segmentId: str, ctNode, full: bool = False) -> float:
    """Write the session's mask into the segment; return the seconds it took.

    ``full`` rewrites the whole CT grid (clears anything outside the ROI); otherwise only the CT
    box under the ROI is replaced, which is all a click can change.
    """
    t0 = time.perf_counter()
    if full:
        slicer.util.updateSegmentBinaryLabelmapFromArray(session.mask_on_ct(), segmentationNode, segmentId,
                                                          ctNode)
    else:
        writeBox(session.ct_box, session.mask_in_box(), segmentationNode, segmentId, ctNode)
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


def saveSegmentation(segmentationNode, path: str) -> None:
    """Write a segmentation node to ``.seg.nrrd`` through its storage node."""
    storage = segmentationNode.GetStorageNode()
    if storage is None:
        segmentationNode.AddDefaultStorageNode()
        storage = segmentationNode.GetStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentationNode):
        raise ValueError(f"Cannot write the segmentation to {path}")
