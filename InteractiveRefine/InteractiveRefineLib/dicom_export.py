"""The result as DICOM bound to the source CT series: DICOM SEG (highdicom) and RTSTRUCT (pydicom).

Both objects carry the CT's patient and study (StudyInstanceUID), its FrameOfReferenceUID, and
reference every CT instance (SeriesInstanceUID, SOP Instance UIDs), so a planning system files
them with the CT. Segments carry SNOMED CT codes: category 49755003 "Morphologically Altered
Structure", type 86049000 "Neoplasm, Primary" (GTVp) or 14799000 "Neoplasm, Secondary" (GTVn).

RTSTRUCT is written with pydicom: highdicom has no RTSTRUCT, and rt-utils needs opencv (about
60 MB) for what contourpy (a matplotlib dependency, already installed) does: per-slice contours
at the 0.5 iso-line of the mask (marching squares), which pass half way between an inside and an
outside voxel centre, so rasterising them again (even-odd rule) gives the same voxels.
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

import numpy as np

from . import __version__
from .errors import ImageError
from .geometry import LPS_TO_RAS, Grid

logger = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass(frozen=True)
class ClassCode:
    """A segment's name, label value, SNOMED CT property type and display colour (RGB)."""

    name: str
    value: int
    code: str
    meaning: str
    color: tuple


CATEGORY = ("49755003", "SCT", "Morphologically Altered Structure")
CLASSES = (
    ClassCode("GTVp", 1, "86049000", "Neoplasm, Primary", (255, 0, 0)),
    ClassCode("GTVn", 2, "14799000", "Neoplasm, Secondary", (0, 151, 206)),
)


def present_classes(labels: np.ndarray) -> list:
    """The :data:`CLASSES` with voxels in ``labels`` (refuses an empty result)."""
    present = [c for c in CLASSES if np.any(labels == c.value)]
    if not present:
        raise ImageError("the segmentation is empty: no GTVp or GTVn voxel to export")
    return present


def check_grid(grid: Grid, ct_datasets) -> None:
    """Refuse a mask whose grid is not the sorted CT series' (the SEG frames map to the CT slices)."""
    from .dicom_series import series_matrix

    expected = series_matrix(ct_datasets)
    shape = (len(ct_datasets), int(ct_datasets[0].Rows), int(ct_datasets[0].Columns))
    if tuple(grid.shape) != shape or not np.allclose(grid.ijk_to_ras, expected, atol=1e-3):
        raise ImageError(
            f"the mask's grid {tuple(grid.shape)} is not the source CT series' {shape}: DICOM export "
            "needs the mask on the CT grid read from that series")


# ------------------------------------------------------------------ SEG
def _segment_description(cls: ClassCode):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(
        name="InteractiveRefine", family=codes.cid7162.ArtificialIntelligence, version=__version__)
    return hd.seg.SegmentDescription(
        segment_number=cls.value, segment_label=cls.name,
        segmented_property_category=Code(*CATEGORY),
        segmented_property_type=Code(cls.code, "SCT", cls.meaning),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm,
        tracking_id=cls.name, tracking_uid=hd.UID())


def write_seg(labels: np.ndarray, grid: Grid, ct_datasets, path, series_number: int = 901) -> str:
    """Write ``labels`` (``[k, j, i]`` on the sorted CT series' grid; 1 GTVp, 2 GTVn) as a DICOM SEG.

    Returns the SEG's SOPInstanceUID. Raises :class:`ImageError` before writing anything when
    the grid does not match the series or the labels are empty.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    check_grid(grid, ct_datasets)
    classes = present_classes(labels)
    pixels = np.zeros(labels.shape, dtype=np.uint8)
    for number, cls in enumerate(classes, start=1):  # segment numbers must be 1..n
        pixels[labels == cls.value] = number
    descriptions = [_segment_description(ClassCode(c.name, n, c.code, c.meaning, c.color))
                    for n, c in enumerate(classes, start=1)]
    seg = hd.seg.Segmentation(
        source_images=list(ct_datasets), pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="InteractiveRefine", manufacturer_model_name="InteractiveRefine",
        software_versions=__version__, device_serial_number="0", content_label="GTV",
        content_description="InteractiveRefine interactive PET/CT contour (research use)",
        series_description="InteractiveRefine GTV",
    )
    seg.save_as(str(path))
    return str(seg.SOPInstanceUID)


# ------------------------------------------------------------------ RTSTRUCT
def slice_contours(mask2d: np.ndarray) -> list:
    """Closed contours ``(N, 2)`` of a 2D mask ``[j, i]`` as ``(i, j)`` voxel indices."""
    import contourpy

    padded = np.pad(np.asarray(mask2d, dtype=np.float64), 1)
    generator = contourpy.contour_generator(z=padded, name="serial", line_type="Separate")
    out = []
    for line in generator.lines(0.5):
        points = np.asarray(line)[:-1] - 1.0  # closed: the last point repeats the first
        if len(points) >= 3:
            out.append(points)
    return out


def _copy(target, source, keywords) -> None:
    for keyword in keywords:
        if keyword in source:
            setattr(target, keyword, getattr(source, keyword))


def _item(**values):
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _rtstruct_header(ct, series_number: int):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    _copy(ds, ct, ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                   "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                   "FrameOfReferenceUID", "SpecificCharacterSet"))
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), series_number
    ds.SeriesDescription, ds.InstanceNumber = "InteractiveRefine GTV", 1
    ds.Manufacturer = ds.ManufacturerModelName = "InteractiveRefine"
    ds.SoftwareVersions = __version__
    ds.StructureSetLabel, ds.StructureSetName = "GTV", "InteractiveRefine"
    ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _referenced_frame(ct_datasets):
    ct = ct_datasets[0]
    images = [_item(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)
              for d in ct_datasets]
    series = _item(SeriesInstanceUID=ct.SeriesInstanceUID, ContourImageSequence=images)
    study = _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",  # Detached Study Management
                  ReferencedSOPInstanceUID=ct.StudyInstanceUID, RTReferencedSeriesSequence=[series])
    return _item(FrameOfReferenceUID=ct.FrameOfReferenceUID, RTReferencedStudySequence=[study])


def _roi_contours(mask: np.ndarray, matrix_lps: np.ndarray, ct_datasets) -> list:
    contours = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for points in slice_contours(mask[k]):
            ijk1 = np.column_stack([points, np.full(len(points), k), np.ones(len(points))])
            lps = (ijk1 @ matrix_lps.T)[:, :3]
            image = _item(ReferencedSOPClassUID=ct_datasets[k].SOPClassUID,
                          ReferencedSOPInstanceUID=ct_datasets[k].SOPInstanceUID)
            contours.append(_item(ContourImageSequence=[image], ContourGeometricType="CLOSED_PLANAR",
                                  NumberOfContourPoints=len(lps),
                                  ContourData=[f"{v:.4f}" for v in lps.ravel()]))
    return contours


def write_rtstruct(labels: np.ndarray, grid: Grid, ct_datasets, path, series_number: int = 902) -> str:
    """Write ``labels`` (as :func:`write_seg`) as an RTSTRUCT of CLOSED_PLANAR contours (LPS mm).

    One ROI per present class (RTROIInterpretedType GTV). Returns the SOPInstanceUID.
    """
    labels = np.asarray(labels)
    check_grid(grid, ct_datasets)
    classes = present_classes(labels)
    ds = _rtstruct_header(ct_datasets[0], series_number)
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame(ct_datasets)]
    matrix_lps = LPS_TO_RAS @ grid.ijk_to_ras
    frame = ct_datasets[0].FrameOfReferenceUID
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for number, cls in enumerate(classes, start=1):
        ds.StructureSetROISequence.append(_item(
            ROINumber=number, ReferencedFrameOfReferenceUID=frame, ROIName=cls.name,
            ROIGenerationAlgorithm="SEMIAUTOMATIC"))
        ds.ROIContourSequence.append(_item(
            ROIDisplayColor=list(cls.color), ReferencedROINumber=number,
            ContourSequence=_roi_contours(labels == cls.value, matrix_lps, ct_datasets)))
        code = _item(CodeValue=cls.code, CodingSchemeDesignator="SCT", CodeMeaning=cls.meaning)
        ds.RTROIObservationsSequence.append(_item(
            ObservationNumber=number, ReferencedROINumber=number, RTROIInterpretedType="GTV",
            ROIInterpreter="", RTROIIdentificationCodeSequence=[code]))
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom 3
    except TypeError:
        ds.save_as(str(path), write_like_original=False)  # pydicom 2.4 (Python 3.9)
    return str(ds.SOPInstanceUID)
