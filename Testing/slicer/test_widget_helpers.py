"""Place mode and shortcuts: what the Widget does with Slicer's place widgets, checked with
a thin stand-in for ``qSlicerMarkupsPlaceWidget`` (slicer-core has no Qt) over the real MRML
interaction and selection nodes."""

from __future__ import annotations

import pytest
import slicer


class PlaceWidgetStandIn:
    """``qSlicerMarkupsPlaceWidget``'s place-mode behaviour (``qSlicerMarkupsPlaceWidget.cxx``):
    enabling makes its node the active place node and enters persistent place mode; disabling
    always resets the interaction node to view-transform mode, whoever was placing."""

    def __init__(self, node, interaction, selection):
        self.node, self.interaction, self.selection = node, interaction, selection

    def currentNode(self):
        return self.node

    @property
    def placeModeEnabled(self) -> bool:
        return (self.interaction.GetCurrentInteractionMode() == self.interaction.Place
                and self.selection.GetActivePlaceNodeID() == self.node.GetID())

    def setPlaceModeEnabled(self, enabled: bool) -> None:
        if enabled:
            self.selection.SetReferenceActivePlaceNodeClassName(self.node.GetClassName())
            self.selection.SetActivePlaceNodeID(self.node.GetID())
            self.interaction.SetPlaceModePersistence(1)
            self.interaction.SetCurrentInteractionMode(self.interaction.Place)
        else:
            self.interaction.SetCurrentInteractionMode(self.interaction.ViewTransform)


def old_set_place_mode(widgets, positive):
    """The module's earlier loop (kept here to show the stand-in reproduces the defect)."""
    for widget, is_positive in ((widgets["positive"], True), (widgets["negative"], False)):
        if widget.currentNode() is not None:
            widget.setPlaceModeEnabled(positive is is_positive)


@pytest.fixture
def place(scene):
    interaction = scene.AddNewNodeByClass("vtkMRMLInteractionNode")
    selection = scene.AddNewNodeByClass("vtkMRMLSelectionNode")
    widgets = {kind: PlaceWidgetStandIn(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", kind),
                                        interaction, selection)
               for kind in ("positive", "negative", "threshold")}
    return widgets, interaction, selection


def test_the_stand_in_reproduces_the_old_defect(place):
    widgets, interaction, _ = place
    old_set_place_mode(widgets, True)
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform  # P did nothing


@pytest.mark.parametrize("kind", ["positive", "negative", "threshold"])
def test_the_key_enters_place_mode_for_its_list(module, place, kind):
    widgets, interaction, selection = place
    module.setPlaceMode(widgets, kind)
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    assert selection.GetActivePlaceNodeID() == widgets[kind].node.GetID()
    other = "negative" if kind == "positive" else "positive"
    module.setPlaceMode(widgets, other)  # switching lists keeps placing, into the other list
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    assert selection.GetActivePlaceNodeID() == widgets[other].node.GetID()
    module.setPlaceMode(widgets, None)  # exit(): ours stops
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def test_leaving_the_module_keeps_another_modules_placement(module, place, scene):
    widgets, interaction, selection = place
    theirs = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "another module's points")
    PlaceWidgetStandIn(theirs, interaction, selection).setPlaceModeEnabled(True)
    module.setPlaceMode(widgets, None)  # exit() and scene close
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    assert selection.GetActivePlaceNodeID() == theirs.GetID()


def test_shortcuts_are_not_bare_letters(module):
    keys = [key for key, _ in module.SHORTCUTS]
    actions = {action for _, action in module.SHORTCUTS}
    assert actions == {"positive", "negative", "threshold", "undo", "accept", "nodal"}
    assert all("+" in key and len(key.split("+")[-1]) == 1 for key in keys)  # a modifier and a key
    assert len(set(keys)) == len(keys)


def test_the_widget_polls_with_a_wait_from_its_timer(module):
    """Item 3 on the Widget's side: its timer calls the Logic's waiting poll."""
    import inspect

    source = inspect.getsource(module.InteractiveRefineWidget.onConfirmTimer)
    assert "pollExactMask(POLL_WAIT_S)" in source
    assert 0.01 <= module.POLL_WAIT_S <= 0.1 and module.POLL_INTERVAL_MS <= 20
    assert slicer  # the scene fixture ran on real MRML
