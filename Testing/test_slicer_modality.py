"""The Slicer faces of a modality-image model (NV-Generate-MR-Brain's kind): the console call, the
panel's modality section under Slicer 5.12.3's own parameterNodeWrapper, the comparison of two
modalities from one seed, and the licence a download must be accepted under. Runs with the tiny
modality model (``model_folders["modality"]``) on real MRML; only the widget classes are stand-ins
(Testing/slicer_app.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import slicer_app
from test_slicer_scene import snapshot

from SynthBrainLib import load_pipeline
from SynthBrainLib.errors import ConditionError, ModelNotFoundError
from SynthBrainSlicer import scene as mrml
from SynthBrainSlicer.tasks import BackgroundRun

MODEL = "tiny-nv-generate"
LICENSED = "nv-generate-mr-brain"  # the built-in card: licence_acceptance true, weights not installed


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def offline(monkeypatch):
    """Every URL unreachable; returns the URLs something tried to open."""
    tried = []

    def urlopen(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("no network in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return tried


def provenance(node) -> dict:
    return json.loads(node.GetAttribute("SynthBrain.Provenance"))


def volumes(scene) -> list:
    return slicer_app.nodes(scene, "vtkMRMLScalarVolumeNode")


# ---- the console ---------------------------------------------------------------------------------
def test_the_console_call_adds_a_synthetic_volume_of_the_requested_image(slicer_logic, model_folders):
    node = slicer_logic.generateModalityImage(
        model=MODEL, modality="flair", skullStripped=True, size=(32, 64, 32), spacing=(2, 2, 3), seed=4
    )
    expected = load_pipeline(str(model_folders["modality"]), device="cpu").generate(
        modality="FLAIR", skull_stripped=True, size=(32, 64, 32), spacing=(2, 2, 3), seed=4
    )
    record = provenance(node)
    assert node.GetAttribute("SynthBrain.Synthetic") == "true", "the result is marked synthetic"
    assert record["modality"] == "FLAIR", f"the provenance names the modality: {record['modality']}"
    assert record["skull_stripped"] is True, "and that it is skull-stripped"
    assert record["size"] == [32, 64, 32], f"and the size: {record['size']}"
    assert record["spacing_mm"] == [2.0, 2.0, 3.0], f"and the spacing: {record['spacing_mm']}"
    assert record["seed"] == 4, f"and the seed: {record['seed']}"
    assert record["model"]["id"] == MODEL, f"and the model: {record['model']['id']}"
    assert np.array_equal(mrml.volume_array(node), expected.image), "the voxels are the library's result"
    assert np.allclose(mrml.volume_affine(node), np.diag([2.0, 2.0, 3.0, 1.0])), "on the requested grid"
    assert "FLAIR skull-stripped" in node.GetName(), f"the node is named by its modality: {node.GetName()}"
    assert node.GetName().endswith("seed 4"), f"and its seed: {node.GetName()}"


def test_without_a_model_or_request_the_installed_model_makes_its_cards_default(slicer_logic):
    node = slicer_logic.generateModalityImage(seed=2)
    record = provenance(node)
    assert record["model"]["id"] == MODEL, "the installed modality-image model is used"
    assert (record["modality"], record["skull_stripped"]) == ("T1w", False), "the card's default modality"
    assert record["size"] == [32, 64, 32], f"the card's default size: {record['size']}"


def test_two_calls_never_overwrite_a_node(slicer_logic):
    first = slicer_logic.generateModalityImage(seed=2)
    second = slicer_logic.generateModalityImage(seed=2)
    assert first.GetID() != second.GetID(), "each call adds a node of its own"
    assert first.GetName() != second.GetName(), "with a name of its own"


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        ({"modality": "PD"}, "is not one of T1w, T2w, FLAIR, SWI, MRA"),
        ({"size": (40, 64, 32)}, "not a multiple of 32"),
        ({"spacing": (0.1, 2, 2)}, "outside 0.4-5 mm"),
    ],
    ids=["modality", "size", "spacing"],
)
def test_a_request_the_card_refuses_stops_before_any_worker_and_changes_nothing(
    slicer_logic, mrml_app, monkeypatch, request_, words
):
    started, loaded = [], []
    monkeypatch.setattr(BackgroundRun, "start", lambda run: started.append(run) or run)
    monkeypatch.setattr(slicer_logic, "pipeline", lambda *args, **kwargs: loaded.append(args))
    before = snapshot(mrml_app.scene)
    with pytest.raises(ConditionError) as refused:
        slicer_logic.generateModalityImage(model=MODEL, background=True, **request_)
    message = str(refused.value)
    assert words in message, f"the refusal says what is wrong: {message}"
    assert "\n" not in message, f"in one line: {message!r}"
    assert started == [], "no worker thread was started"
    assert loaded == [], "no pipeline was loaded"
    assert snapshot(mrml_app.scene) == before, "the scene is unchanged"


def test_a_model_of_another_kind_is_refused(slicer_logic):
    with pytest.raises(ConditionError) as refused:
        slicer_logic.modalityTask(model="tiny-brain-ldm")
    assert "not a modality image model" in str(refused.value), str(refused.value)


def test_two_modalities_of_one_seed_are_the_same_head_in_two_contrasts(slicer_logic):
    a, b = slicer_logic.compareModalities("T1w", {"modality": "FLAIR", "skullStripped": True}, model=MODEL, seed=3)
    pa, pb = provenance(a), provenance(b)
    assert (pa["modality"], pb["modality"]) == ("T1w", "FLAIR"), "A and B are the two modalities"
    assert pb["skull_stripped"] is True, "B's own skull-stripping is kept"
    assert pa["seed"] == pb["seed"] == 3, "from one seed"
    assert np.allclose(mrml.volume_affine(a), mrml.volume_affine(b)), "on one grid"
    assert not np.array_equal(mrml.volume_array(a), mrml.volume_array(b)), "in two contrasts"
    with pytest.raises(ConditionError, match="A and B are both T1w"):
        slicer_logic.compareModalities("T1w", "t1w", model=MODEL, seed=3)


def test_the_console_download_asks_for_the_licence_before_any_network_access(slicer_logic, offline):
    with pytest.raises(ModelNotFoundError) as refused:
        slicer_logic.downloadModel(LICENSED)
    assert "accept" in str(refused.value), f"the refusal asks to accept the licence: {refused.value}"
    assert offline == [], f"nothing was fetched before accepting: {offline}"
    with pytest.raises(Exception) as failed:
        slicer_logic.downloadModel(LICENSED, acceptLicence=True)
    assert offline, f"once accepted, the download goes ahead (and meets no network): {failed.value}"


# ---- the panel -----------------------------------------------------------------------------------
@pytest.fixture
def opened(monkeypatch, mrml_app, tiny_store):
    if not slicer_app.REFERENCE_WRAPPER.is_dir():
        pytest.skip(slicer_app.REFERENCE_MISSING)
    with slicer_app.opened_panel(monkeypatch, mrml_app, tiny_store) as panel:
        panel.widget.logic.device = "cpu"
        yield panel


def choose_modality(opened, name: str) -> None:
    selector = opened.ui.modalitySelector
    selector.choose(selector.findData(name))


def test_the_section_takes_the_models_card_and_binds_to_its_pack(opened):
    ui, pack = opened.ui, opened.parameters.modality  # read fresh after each change: a pack is a snapshot
    assert opened.gui.dialogs == [], f"opening the panel showed {opened.gui.dialogs}"
    assert opened.parameters.modalityModel == MODEL, "a new scene starts with the installed modality model"
    items = [ui.modalitySelector.itemText(i) for i in range(ui.modalitySelector.count)]
    assert items == ["T1w", "T2w", "FLAIR", "SWI", "MRA"], f"the selector lists the card's modalities: {items}"
    assert (pack.modality, pack.skullStripped) == ("T1w", False), "the card's default modality"
    assert (pack.sizeX, pack.sizeY, pack.sizeZ) == (32, 64, 32), "the card's default size"
    assert (pack.spacingX, pack.spacingY, pack.spacingZ) == (2.0, 2.0, 2.0), "the card's default spacing"
    assert ui.modalitySizeXSpinBox.singleStep == 32, "sizes go in steps of the card's multiple"
    assert (ui.modalitySizeYSpinBox.minimum, ui.modalitySizeYSpinBox.maximum) == (64, 96), "within its limits"
    assert (ui.modalitySpacingXSpinBox.minimum, ui.modalitySpacingXSpinBox.maximum) == (0.4, 5.0), "spacing range"
    choose_modality(opened, "FLAIR")
    assert opened.parameters.modality.modality == "FLAIR", "choosing a modality writes the pack"
    ui.modalitySkullStrippedCheckBox.checked = True
    assert opened.parameters.modality.skullStripped is True, "the check box is bound"
    ui.modalitySizeXSpinBox.value = 64
    assert opened.parameters.modality.sizeX == 64, "the size spin boxes are bound"
    ui.modalitySpacingZSpinBox.value = 3.0
    assert opened.parameters.modality.spacingZ == 3.0, "the spacing spin boxes are bound"
    opened.parameters.modality.modality = "SWI"
    assert ui.modalitySelector.currentText == "SWI", "a modality set from the console is shown"


def test_generate_image_adds_the_requested_volume(opened):
    before = len(volumes(opened.scene))
    choose_modality(opened, "T2w")
    opened.ui.modalitySkullStrippedCheckBox.checked = True
    opened.ui.modalitySizeXSpinBox.value = 64
    opened.parameters.modality.seed = 7
    opened.ui.generateModalityButton.click()
    assert opened.ui.generateModalityButton.text == "Cancel", "while it runs, the button cancels"
    slicer_app.finish(opened.widget)
    added = volumes(opened.scene)[before:]
    assert len(added) == 1, f"one volume added, got {len(added)} ({opened.gui.dialogs})"
    record = provenance(added[0])
    assert added[0].GetAttribute("SynthBrain.Synthetic") == "true", "the result is marked synthetic"
    assert (record["modality"], record["skull_stripped"]) == ("T2w", True), "the section's modality"
    assert record["size"] == [64, 64, 32], f"the section's size: {record['size']}"
    assert record["seed"] == 7, "the section's seed"
    assert opened.gui.dialogs[-1][0] == "setSliceViewerLayers", "the result is shown in the views"


def test_a_size_off_the_networks_stride_is_refused_before_a_run_starts(opened):
    opened.parameters.modality.sizeX = 40  # from the console: the spin box steps by 32
    before = snapshot(opened.scene)
    opened.ui.generateModalityButton.click()
    assert not opened.widget.runs.running, "no run started"
    kind, text = opened.gui.dialogs[-1]
    assert kind == "errorDisplay", f"the user is told: {opened.gui.dialogs}"
    assert "not a multiple of 32" in text, f"in one sentence saying why: {text}"
    assert snapshot(opened.scene) == before, "the scene is unchanged"


def test_compare_shows_two_modalities_of_one_seed_side_by_side(opened):
    for view in ("Red", "Yellow"):  # what the application's layout creates
        opened.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(view)
    assert not opened.ui.modalityCompareButton.enabled, "nothing to compare before A is pinned"
    opened.ui.modalityPinButton.click()
    assert opened.ui.modalityCompareLabel.text == "A: T1w whole head", opened.ui.modalityCompareLabel.text
    choose_modality(opened, "FLAIR")
    before = len(volumes(opened.scene))
    opened.ui.modalityCompareButton.click()
    slicer_app.finish(opened.widget)
    added = volumes(opened.scene)[before:]
    assert len(added) == 2, f"A and B added, got {len(added)} ({opened.gui.dialogs})"
    a, b = added
    assert (provenance(a)["modality"], provenance(b)["modality"]) == ("T1w", "FLAIR"), "the two modalities"
    assert provenance(a)["seed"] == provenance(b)["seed"], "from one seed"
    composites = {c.GetLayoutName(): c for c in slicer_app.nodes(opened.scene, "vtkMRMLSliceCompositeNode")}
    assert composites["Red"].GetBackgroundVolumeID() == a.GetID(), "A in the left view"
    assert composites["Yellow"].GetBackgroundVolumeID() == b.GetID(), "B in the right view"
    assert composites["Red"].GetLinkedControl(), "the views are linked"
    side_by_side = opened.module.slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert opened.gui.layoutManager.layout == side_by_side, "side-by-side layout"


def test_download_needs_the_licence_box_ticked_and_asks_before_any_network_access(opened, offline):
    ui = opened.ui
    ui.modelSelector.currentIndex = ui.modelSelector.findData(LICENSED)
    assert ui.licenceCheckBox.visible, "the licence box is shown for a card that asks for acceptance"
    assert ui.licenceCheckBox.enabled, "and can be ticked"
    assert "NVIDIA Open Model License" in ui.licenceCheckBox.toolTip, "the card's licence is shown"
    assert not ui.licenceCheckBox.checked, "it starts unticked"
    assert ui.downloadButton.enabled, "Download is offered"
    ui.downloadButton.click()
    slicer_app.finish(opened.widget)
    kind, text = opened.gui.dialogs[-1]
    assert kind == "errorDisplay", f"the download was refused: {opened.gui.dialogs}"
    assert "I accept the model's licence" in text, f"the refusal names the box to tick: {text}"
    assert offline == [], f"nothing was fetched: {offline}"
    ui.licenceCheckBox.checked = True
    ui.downloadButton.click()
    slicer_app.finish(opened.widget)
    assert offline, "once ticked, the download goes ahead (and meets no network here)"
    ui.modelSelector.currentIndex = ui.modelSelector.findData(MODEL)
    assert not ui.licenceCheckBox.visible, "the box is hidden for a card that does not ask for it"
    ui.modelSelector.currentIndex = ui.modelSelector.findData(LICENSED)
    assert not ui.licenceCheckBox.checked, "acceptance is given anew for each model"
