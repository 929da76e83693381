"""Labels from DICOM: a SEG segment as a label volume, an RTSTRUCT ROI rasterised onto a grid.

A SEG's frames are placed by their ImagePositionPatient (PlanePositionSequence), not by source
references: those are empty in some real SEGs (QIN-HEADNECK's). The result is a
:class:`~.geometry.Volume` on the SEG's own grid, value 1 inside the chosen segment; it is
resampled like any label file (``simulation.truth_on_grid``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError
from .geometry import LPS_TO_RAS, Grid, Volume

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class Segment:
    number: int
    label: str
    property_type: str  #: code meaning of SegmentedPropertyTypeCodeSequence


def is_dicom_seg(path) -> bool:
    """True when ``path`` is a DICOM file of the Segmentation Storage class."""
    path = Path(path)
    if not path.is_file() or path.name.lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")):
        return False
    try:
        import pydicom
    except ImportError:  # without pydicom no file is read as DICOM
        return False
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (pydicom.errors.InvalidDicomError, OSError):
        return False
    return str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS


def segments(ds) -> list:
    out = []
    for item in ds.SegmentSequence:
        types = getattr(item, "SegmentedPropertyTypeCodeSequence", None) or []
        meaning = str(types[0].CodeMeaning) if types else ""
        out.append(Segment(int(item.SegmentNumber), str(getattr(item, "SegmentLabel", "")), meaning))
    return out


def choose_segment(ds, segment=None) -> Segment:
    """The segment named by number (``2``, ``"2"``) or label/type (case-insensitive); None: the first."""
    available = segments(ds)
    if segment is None or str(segment).strip() == "":
        return available[0]
    text = str(segment).strip()
    for item in available:
        if text.isdigit() and int(text) == item.number:
            return item
        if text.lower() in (item.label.lower(), item.property_type.lower()):
            return item
    names = ", ".join(f"{s.number} {s.label!r}" for s in available)
    raise ImageError(f"the SEG has no segment {text!r}; it has: {names}")


def _functional(ds, frame, keyword: str):
    """A functional group's first item: the frame's own, else the shared one."""
    for groups in (frame, ds.SharedFunctionalGroupsSequence[0]):
        sequence = getattr(groups, keyword, None)
        if sequence:
            return sequence[0]
    raise ImageError(f"the SEG has no {keyword}")


def _frame_geometry(ds):
    frames = ds.PerFrameFunctionalGroupsSequence
    orientation = np.asarray(_functional(ds, frames[0], "PlaneOrientationSequence").ImageOrientationPatient,
                             dtype=float)
    measures = _functional(ds, frames[0], "PixelMeasuresSequence")
    positions = np.array([np.asarray(_functional(ds, f, "PlanePositionSequence").ImagePositionPatient,
                                     dtype=float) for f in frames])
    numbers = [int(_functional(ds, f, "SegmentIdentificationSequence").ReferencedSegmentNumber)
               for f in frames]
    return orientation, measures, positions, numbers


def _slice_step(measures, heights: np.ndarray) -> float:
    distinct = np.unique(np.round(heights, 3))
    if len(distinct) > 1:
        return float(np.min(np.diff(distinct)))
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        if getattr(measures, keyword, None):
            return float(getattr(measures, keyword))
    return 1.0


def read_seg(path, segment=None) -> tuple[Volume, Segment]:
    """One segment of a DICOM SEG as a ``(Volume, Segment)``: 1 inside, 0 outside (float32).

    The grid spans the frames of every segment (positions along the slice normal); a frame
    between the slices of that grid is refused.
    """
    import pydicom

    ds = pydicom.dcmread(str(path))
    if str(ds.SOPClassUID) != SEG_SOP_CLASS:
        raise ImageError(f"{path} is not a DICOM SEG (SOPClassUID {ds.SOPClassUID})")
    chosen = choose_segment(ds, segment)
    orientation, measures, positions, numbers = _frame_geometry(ds)
    normal = np.cross(orientation[:3], orientation[3:])
    heights = positions @ normal
    step = _slice_step(measures, heights)
    first = positions[int(np.argmin(heights))]
    k_float = (heights - heights.min()) / step
    k = np.rint(k_float).astype(int)
    if np.any(np.abs(k_float - k) > 0.1):
        raise ImageError(f"{path}: the SEG frames are not on one grid of {step:g} mm slices")
    frames = np.asarray(ds.pixel_array).reshape(len(numbers), int(ds.Rows), int(ds.Columns))
    # One empty slice before and after: resampling replicates a volume's edge voxels.
    array = np.zeros((int(k.max()) + 3, int(ds.Rows), int(ds.Columns)), dtype=np.float32)
    for index, number in enumerate(numbers):
        if number == chosen.number:
            array[k[index] + 1] = np.maximum(array[k[index] + 1], frames[index] > 0)
    row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = orientation[:3] * column_spacing, orientation[3:] * row_spacing
    lps[:3, 2], lps[:3, 3] = normal * step, first - normal * step
    return Volume.from_array(array, LPS_TO_RAS @ lps), chosen


#: SNOMED CT (and legacy SNOMED-RT) codes of the segmented property type -> HECKTOR label value.
CLASS_CODES = {"86049000": 1, "M-80003": 1, "14799000": 2, "M-80006": 2}
CLASS_LABELS = {"gtvp": 1, "gtvt": 1, "gtvn": 2}


def class_of(ds, segment: Segment) -> int | None:
    """HECKTOR value (1 GTVp, 2 GTVn) of a segment, by its property-type code, else its label."""
    item = next(s for s in ds.SegmentSequence if int(s.SegmentNumber) == segment.number)
    types = getattr(item, "SegmentedPropertyTypeCodeSequence", None) or []
    code = str(types[0].CodeValue) if types else ""
    return CLASS_CODES.get(code) or CLASS_LABELS.get(segment.label.strip().lower())


def read_seg_labels(path) -> Volume:
    """A SEG as a HECKTOR label map: GTVp (Neoplasm, Primary) = 1, GTVn (Secondary) = 2."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    classes = {s.number: class_of(ds, s) for s in segments(ds)}
    if not any(classes.values()):
        names = ", ".join(f"{s.number} {s.label!r}" for s in segments(ds))
        raise ImageError(f"{path}: no segment is a primary or secondary neoplasm ({names}); "
                         "choose one with --segment")
    array, grid = None, None
    for number, value in sorted(classes.items(), key=lambda item: item[1] or 0):
        if value:  # GTVp first: where segments overlap, the primary keeps the voxel
            volume = read_seg(path, number)[0]
            array = np.zeros_like(volume.array) if array is None else array
            grid = volume.grid
            array[(volume.array > 0) & (array == 0)] = value
    return Volume(array, grid)


def read_label(path, segment=None) -> Volume:
    """``--label``: a DICOM SEG (all of it as GTVp = 1 / GTVn = 2, or the ``segment`` chosen as 1)
    or a label file (as stored)."""
    from .geometry import read_volume

    if is_dicom_seg(path):
        return read_seg_labels(path) if segment in (None, "") else read_seg(path, segment)[0]
    if segment not in (None, ""):
        raise ImageError(f"--segment applies to a DICOM SEG label; {path} is not one")
    return read_volume(path)


# ------------------------------------------------------------------ RTSTRUCT
def rtstruct_roi_names(ds) -> dict:
    """``{ROIName: ROINumber}`` of an RTSTRUCT dataset."""
    return {str(item.ROIName): int(item.ROINumber) for item in ds.StructureSetROISequence}


def read_rtstruct_mask(path, roi_name: str, grid: Grid) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask on ``grid`` of one RTSTRUCT ROI (even-odd rule per slice).

    Each CLOSED_PLANAR contour is put on the grid slice nearest to it (the grid's k axis must
    be along the contours' normal, as for the CT series the contours were drawn on).
    """
    import pydicom
    from matplotlib.path import Path as Polygon

    ds = pydicom.dcmread(str(path))
    names = rtstruct_roi_names(ds)
    if roi_name not in names:
        raise ImageError(f"{path} has no ROI {roi_name!r}; it has {sorted(names)}")
    item = next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == names[roi_name])
    mask = np.zeros(grid.shape, dtype=bool)
    nj, ni = grid.shape[1], grid.shape[2]
    jj, ii = np.mgrid[0:nj, 0:ni]
    centres = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    for contour in getattr(item, "ContourSequence", None) or []:
        lps = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        ras = lps * np.array([-1.0, -1.0, 1.0])
        index = grid.ras_to_index(ras)
        k = int(np.rint(index[:, 2].mean()))
        if not 0 <= k < grid.shape[0]:
            continue
        inside = Polygon(index[:, :2]).contains_points(centres).reshape(nj, ni)
        mask[k] ^= inside
    return mask
