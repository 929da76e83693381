"""Render the Extensions Index screenshot headless: the real Logic on real MRML (slicer-core), VTK
offscreen rendering. Test-tree only (never installed).

    .venv/bin/python Testing/slicer/make_screenshot.py [output.png]

CHGJ015 (HECKTOR 2020, in the shared data folder), the shipped default model on the CPU, an ROI on
the tumour, then one PET-region point (40 % of the local SUVmax) at the tumour's hottest voxel.
The picture: the axial CT slice through that point with the PET (SUV above 2.5) blended in, the
GTVp segment's outline (cyan), the point (white) and the module's status line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUTPUT = HERE.parents[1] / "Screenshots" / "InteractiveRefine-1.png"
WIDTH = 600


def run_logic():
    """(CT array, PET on the CT grid, GTVp mask, click points [k, j, i], status line)."""
    import slicer_bootstrap

    from conftest import data_path

    slicer_bootstrap.bootstrap()
    module = slicer_bootstrap.load_module()
    import slicer
    from InteractiveRefineSlicerLib import volumes

    scene = slicer.mrmlScene
    load = module.InteractiveRefineLogic.loadVolume
    ct = load(str(data_path("hecktor2020_chgj015", "CHGJ015_ct.nii.gz")), "CT")
    pet = load(str(data_path("hecktor2020_chgj015", "CHGJ015_pt.nii.gz")), "PET")
    label = load(str(data_path("hecktor2020_chgj015", "CHGJ015_ct_gtvt.nii.gz")), "label")
    truth = slicer.util.arrayFromVolume(label) > 0
    scene.RemoveNode(label)
    toWorld = volumes.ijkToWorld(ct)
    world = lambda kji: (toWorld @ np.append(np.asarray(kji, float)[::-1], 1.0))[:3]  # noqa: E731
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roi.SetCenter(*world(np.argwhere(truth).mean(axis=0)))
    roi.SetSize(100.0, 100.0, 100.0)
    logic = module.InteractiveRefineLogic()
    logic.segment(ct, pet, None, roi, modelPath="", device="cpu")
    petOnCt = _petOnCt(ct, pet)
    hot = np.argwhere(truth)[np.argmax(petOnCt[truth])]
    points = [hot]
    logic.addThreshold(world(hot), percent=40)
    mask = logic.segmentMask().astype(bool)
    return slicer.util.arrayFromVolume(ct), petOnCt, mask, points, logic.lastStatus


def _petOnCt(ct, pet):
    from InteractiveRefineLib.geometry import resample
    from InteractiveRefineSlicerLib import volumes

    ctVolume, petVolume = volumes.volumeFromNode(ct), volumes.volumeFromNode(pet, "PET")
    return resample(petVolume.array, petVolume.grid, ctVolume.grid)


def compose(ctArray, petArray, mask, points, k):
    """RGB uint8 of axial slice ``k``: CT (window -160..240 HU), PET (hot, SUV 0..10), outline, points."""
    from scipy import ndimage

    grey = np.clip((ctArray[k] + 160.0) / 400.0, 0, 1)
    suv = np.clip(petArray[k] / 12.0, 0, 1)
    hot = np.stack([np.clip(3 * suv, 0, 1), np.clip(3 * suv - 1, 0, 1), np.clip(3 * suv - 2, 0, 1)], -1)
    alpha = 0.55 * (petArray[k] > 2.5)[..., None]
    rgb = (1 - alpha) * grey[..., None] + alpha * hot
    slice_ = mask[k]
    outline = ndimage.binary_dilation(slice_) & ~ndimage.binary_erosion(slice_)
    rgb[outline] = (0.15, 0.95, 0.95)  # cyan: visible on hot PET (the segment itself is orange in Slicer)
    for colour, point in zip(((1.0, 1.0, 1.0),), points):
        kk, jj, ii = point
        if abs(kk - k) <= 3:
            yy, xx = np.ogrid[: rgb.shape[0], : rgb.shape[1]]
            rgb[(yy - jj) ** 2 + (xx - ii) ** 2 <= 4] = colour
    _, jj, ii = points[0]
    crop = 110  # voxels either side of the point: the neck around the tumour
    rgb = rgb[max(jj - crop, 0): jj + crop, max(ii - crop, 0): ii + crop]
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def render(rgb, status: str, path: Path) -> None:
    """Show ``rgb`` and the status line in an offscreen VTK render window; write it as PNG."""
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    height, width = rgb.shape[:2]
    image.SetDimensions(width, height, 1)
    # Rows go anterior -> posterior in the array; VTK's y axis points up: flip so anterior is up.
    flat = np.ascontiguousarray(rgb[::-1]).reshape(-1, 3)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    actor = vtk.vtkImageActor()
    actor.GetMapper().SetInputData(image)
    renderer = vtk.vtkRenderer()
    renderer.AddActor(actor)
    text = vtk.vtkTextActor()
    text.SetInput("InteractiveRefine: " + status.replace(", click", ",\nclick", 1))
    text.GetTextProperty().SetFontSize(13)
    text.SetPosition(8, 8)
    renderer.AddViewProp(text)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.AddRenderer(renderer)
    window.SetSize(WIDTH, int(WIDTH * height / width) + 40)
    renderer.ResetCamera()
    renderer.GetActiveCamera().Zoom(1.4)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetCompressionLevel(9)
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else OUTPUT
    path.parent.mkdir(parents=True, exist_ok=True)
    ctArray, petArray, mask, points, status = run_logic()
    k = int(points[0][0])
    render(compose(ctArray, petArray, mask, points, k), status, path)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB; {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
