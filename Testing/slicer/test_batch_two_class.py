"""InteractiveRefineBatch.py with a two-class (GTVp + GTVn) model on real MRML: the simulated user
clicks per class (``hnuiseg`` by default), each positive click reaches the Logic with its class,
and metrics.csv has each class's Dice and HD95. The case is the engine's phantom written in the
HECKTOR layout with a label holding GTVp (1) and a synthetic lymph node (2)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "InteractiveRefine"))

import InteractiveRefineBatch  # noqa: E402


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_two_label_case(folder: Path, case_id: str = "PHANTOM_001") -> Path:
    """The phantom's CT, PET and a label: 1 its tumour, 2 a 6 mm sphere 4 mm beside it towards the
    body centre (a "node" inside the automatic ROI)."""
    from InteractiveRefineLib.geometry import Volume, write_volume
    from InteractiveRefineLib.phantom import make_phantom

    ct, pet, label = make_phantom(0)
    case = folder / case_id
    case.mkdir(parents=True)
    tumour = label.array > 0
    kji = np.argwhere(tumour)
    centre = kji.mean(axis=0)
    ras_centre = ct.ijk_to_ras @ np.append(centre[::-1], 1.0)
    shape = label.array.shape
    grid_kji = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = (np.c_[grid_kji[:, ::-1], np.ones(len(grid_kji))] @ ct.ijk_to_ras.T)[:, :3]
    node_centre = ras_centre[:3] + np.array([-19.0, 0.0, 0.0])
    node = (np.linalg.norm(ras - node_centre, axis=1) <= 6.0).reshape(shape)
    values = np.where(tumour, 1, np.where(node, 2, 0)).astype(np.uint8)
    assert (values == 2).sum() > 50
    write_volume(ct, case / f"{case_id}__CT.nii.gz")
    write_volume(pet, case / f"{case_id}__PT.nii.gz")
    write_volume(Volume.from_array(values, label.ijk_to_ras), case / f"{case_id}.nii.gz", dtype=np.uint8)
    return folder


def test_metrics_columns_per_class():
    one = InteractiveRefineBatch.metricsColumns(("gtvp",))
    assert one == InteractiveRefineBatch.METRICS_COLUMNS  # one class: today's header exactly
    two = InteractiveRefineBatch.metricsColumns(("gtvp", "gtvn"))
    at = two.index("hd95_mm")
    assert two[at + 1:at + 5] == ("gtvp_dice", "gtvp_hd95_mm", "gtvn_dice", "gtvn_hd95_mm")
    at = two.index("volume_ml")
    assert two[at + 1:at + 3] == ("gtvp_volume_ml", "gtvn_volume_ml")
    assert [c for c in two if c in one] == list(one)  # the same columns, in the same order
    assert InteractiveRefineBatch.defaultUser(("gtvp",)) == "2sicr"
    assert InteractiveRefineBatch.defaultUser(("gtvp", "gtvn")) == "hnuiseg"


def test_user_option():
    parse = InteractiveRefineBatch.parseArguments
    assert parse(["--input", "a", "--output", "b"]).user is None  # by the model's classes
    assert parse(["--input", "a", "--output", "b", "--user", "deepgrow"]).user == "deepgrow"
    assert parse(["--input", "a", "--output", "b", "--preset", "2sicr"]).user == "2sicr"  # the old name
    with pytest.raises(SystemExit):
        parse(["--input", "a", "--output", "b", "--user", "nobody"])


def test_two_class_batch_clicks_per_class_and_scores_each_class(scene, two_class_package_dir, tmp_path,
                                                                 module, monkeypatch):
    import slicer
    from InteractiveRefineLib import simulated_user
    from InteractiveRefineSlicerLib.logic import RefineLogic

    cases = write_two_label_case(tmp_path / "cases")
    placed = []  # (positive, label) of every click the batch gives the Logic
    original = RefineLogic.addClick

    def spy(self, ras, positive, label=None):
        result = original(self, ras, positive, label=label)
        nodal = self.getNodalClickNode(create=False)
        placed.append((positive, label, nodal.GetNumberOfControlPoints() if nodal is not None else 0))
        return result

    monkeypatch.setattr(RefineLogic, "addClick", spy)
    # The random network's false positives outweigh the synthetic node, so HN-UISeg alone would
    # click "not tumour" only: the user's first click goes to the node, then the real preset.
    presets = []

    class NodeFirst(simulated_user.SimulatedUser):
        def __init__(self, preset, *args, **kwargs):
            presets.append(preset)
            super().__init__(preset, *args, **kwargs)
            self.first = True

        def next_click(self, prediction, truth):
            if self.first:
                self.first = False
                node = np.argwhere(truth == 2)  # the truth it sees is the class map (0, 1, 2)
                assert len(node), "the user sees no GTVn"
                return simulated_user.SimulatedClick(tuple(int(v) for v in node[len(node) // 2]), True, 1)
            return super().next_click(prediction, truth)

    monkeypatch.setattr(simulated_user, "SimulatedUser", NodeFirst)
    out = tmp_path / "out"
    status = InteractiveRefineBatch.main(
        ["--input", str(cases), "--output", str(out), "--model", str(two_class_package_dir),
         "--clicks", "4", "--device", "cpu"]
    )
    assert status == 0
    assert presets == ["hnuiseg"]  # the default user for a two-class model
    header = next(csv.reader(open(out / "metrics.csv", newline="")))
    assert tuple(header) == InteractiveRefineBatch.metricsColumns(("gtvp", "gtvn"))
    rows = read_rows(out / "metrics.csv")
    assert [int(r["clicks"]) for r in rows] == list(range(len(rows))) and len(rows) >= 2
    for row in rows:
        for name in ("gtvp", "gtvn"):
            assert 0.0 <= float(row[f"{name}_dice"]) <= 1.0
        assert row["dice"] == row["gtvp_dice"] and row["hd95_mm"] == row["gtvp_hd95_mm"]
        assert float(row["volume_ml"]) == pytest.approx(
            float(row["gtvp_volume_ml"]) + float(row["gtvn_volume_ml"]), abs=0.01)
    # hnuiseg (the default for two classes) clicks per class: positive clicks carry their class,
    # a GTVn click is a point of the lymph-node list, as an interactive one.
    assert len(placed) == len(rows) - 1
    assert all(label in ("gtvp", "gtvn") for positive, label, _ in placed if positive)
    assert all(label is None for positive, label, _ in placed if not positive)
    assert placed[0] == (True, "gtvn", 1)  # the node click: a point of the lymph-node list
    # It changed the GTVn (its volume and Dice are scored after it).
    assert [rows[1][k] for k in ("gtvn_volume_ml", "gtvn_dice")] != [rows[0][k] for k in ("gtvn_volume_ml",
                                                                                          "gtvn_dice")]

    segmentation = slicer.modules.segmentations.logic().LoadSegmentationFromFile(
        str(out / "PHANTOM_001.seg.nrrd"))
    names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
    assert {"GTVp", "GTVn"} <= names


def test_one_class_batch_keeps_its_columns_on_a_two_label_case(scene, tiny_package_dir, tmp_path):
    """A one-class model on a label with 1 and 2: today's header, GTVp (value 1) scored, 2sicr."""
    cases = write_two_label_case(tmp_path / "cases")
    out = tmp_path / "out"
    status = InteractiveRefineBatch.main(
        ["--input", str(cases), "--output", str(out), "--model", str(tiny_package_dir),
         "--clicks", "1", "--device", "cpu"]
    )
    assert status == 0
    header = next(csv.reader(open(out / "metrics.csv", newline="")))
    assert tuple(header) == InteractiveRefineBatch.METRICS_COLUMNS
    rows = read_rows(out / "metrics.csv")
    assert [int(r["clicks"]) for r in rows] == [0, 1]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
