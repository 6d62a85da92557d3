"""The module panel, opened and used as a person would: SynthBrain.py's widget with its .ui, bound by
Slicer 5.12.3's own parameterNodeWrapper, on a real MRML scene with the tiny models. Only the widget
classes are stand-ins (Testing/slicer_app.py); clicks go through the buttons' signals, and runs
through the real worker thread.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import slicer_app

pytestmark = pytest.mark.skipif(not slicer_app.REFERENCE_WRAPPER.is_dir(), reason=slicer_app.REFERENCE_MISSING)


@pytest.fixture
def opened(monkeypatch, mrml_app, tiny_store):
    with slicer_app.opened_panel(monkeypatch, mrml_app, tiny_store) as panel:
        yield panel


def volumes(scene) -> list:
    return slicer_app.nodes(scene, "vtkMRMLScalarVolumeNode")


def test_the_panel_opens_without_an_error_and_chooses_an_installed_model(opened):
    assert opened.gui.dialogs == [], f"opening the panel showed {opened.gui.dialogs}"
    assert opened.parameters.brainModel == "tiny-brain-ldm", "a new scene starts with an installed brain model"
    assert opened.ui.brainModelSelector.itemData(opened.ui.brainModelSelector.currentIndex) == "tiny-brain-ldm", (
        "the selector shows it"
    )
    assert opened.ui.ageSlider.maximum == 82.0, "the age slider takes the card's range"


def test_choosing_a_model_in_its_selector_sets_the_parameter(opened):
    selector = opened.ui.brainModelSelector
    selector.choose(selector.findData("tiny-rflow"))
    assert opened.parameters.brainModel == "tiny-rflow", "a user's choice reaches the parameter node"


def test_a_model_set_from_the_console_is_shown_in_its_selector(opened):
    opened.parameters.brainModel = "from-another-computer"
    selector = opened.ui.brainModelSelector
    assert selector.itemText(selector.currentIndex) == "from-another-computer (not installed)", (
        "an unknown saved model stays visible"
    )


def test_generate_adds_a_synthetic_volume_and_shows_the_measured_volumes(opened):
    before = len(volumes(opened.scene))
    opened.parameters.run.seed = 3
    opened.ui.generateButton.click()
    assert opened.ui.generateButton.text == "Cancel", "while it runs, the button cancels"
    slicer_app.finish(opened.widget)
    added = [v for v in volumes(opened.scene)][before:]
    assert len(added) == 1, f"one volume added, got {len(added)}"
    assert added[0].GetAttribute("SynthBrain.Synthetic") == "true", "the result is marked synthetic"
    assert opened.ui.measuredLabel.text.startswith("Measured in the result: ventricles"), (
        f"measured volumes shown: {opened.ui.measuredLabel.text!r}"
    )
    assert opened.gui.dialogs[-1][0] == "setSliceViewerLayers", "the result is shown in the views"


def test_cancel_adds_nothing(opened):
    before = [n.GetID() for n in volumes(opened.scene)]
    opened.ui.generateButton.click()
    opened.ui.generateButton.click()  # now "Cancel"
    slicer_app.finish(opened.widget)
    assert [n.GetID() for n in volumes(opened.scene)] == before, "a cancelled run leaves the scene as it was"
    assert opened.ui.statusLabel.text.startswith("Cancelled"), opened.ui.statusLabel.text
    assert opened.ui.generateButton.text == "Generate brain", "the button reads Generate again"


def test_quick_preview_and_precision_apply_to_sweeps(opened):
    from SynthBrainSlicer.choices import Precision

    opened.parameters.run.preview = True
    opened.parameters.run.precision = Precision.BFLOAT16
    opened.parameters.sweep.steps = 2
    opened.ui.sweepButton.click()
    slicer_app.finish(opened.widget)
    sequences = [
        opened.scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
        for i in range(opened.scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode"))
    ]
    assert len(sequences) == 1, f"one sweep, got {len(sequences)} ({opened.gui.dialogs})"
    item = json.loads(sequences[0].GetNthDataNode(0).GetAttribute("SynthBrain.Provenance"))
    assert item["preview"] is True, "the sweep's items are previews"
    assert item["precision"].startswith("bfloat16"), f"the sweep ran in the chosen precision, got {item['precision']}"


def test_compare_shows_a_and_b_side_by_side_with_their_difference(opened):
    for view in ("Red", "Yellow"):  # what the application's layout creates
        composite = opened.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(view)
    assert not opened.ui.compareButton.enabled, "nothing to compare before A is pinned"
    opened.parameters.conditions.age = 50.0
    opened.ui.pinButton.click()
    opened.parameters.conditions.age = 80.0
    before = len(volumes(opened.scene))
    opened.ui.compareButton.click()
    slicer_app.finish(opened.widget)
    a, b, difference = volumes(opened.scene)[before:]
    left = [
        c
        for c in (opened.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(2))
        if c.GetLayoutName() == "Red"
    ][0]
    assert left.GetBackgroundVolumeID() == a.GetID(), "A in the left view"
    assert left.GetLinkedControl(), "the views are linked"
    assert opened.gui.layoutManager.layout == opened.module.slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView, (
        "side-by-side layout"
    )
    arrays = [slicer_app_array(n) for n in (a, b, difference)]
    assert np.allclose(arrays[2], arrays[1] - arrays[0], atol=1e-6), "the difference volume is B - A"
    assert (
        json.loads(a.GetAttribute("SynthBrain.Provenance"))["seed"]
        == json.loads(b.GetAttribute("SynthBrain.Provenance"))["seed"]
    ), "same seed"


def slicer_app_array(node) -> np.ndarray:
    import slicer

    return slicer.util.arrayFromVolume(node).astype(np.float64)


def test_raw_model_values_replace_an_assumed_mapping(opened):
    opened.ui.rawValuesCheckBox.checked = True
    assert opened.ui.ventricularVolumeSlider.maximum == 1.0, (
        "the assumed condition's slider takes the model's 0-1 input"
    )
    assert "model input" in opened.ui.ventricularVolumeLabel.text, opened.ui.ventricularVolumeLabel.text
    assert opened.ui.ageSlider.maximum == 82.0, "age has a published mapping: it stays in years"
    opened.parameters.conditions.ventricularVolume = 0.7
    opened.parameters.conditions.measureVolumes = False
    opened.ui.generateButton.click()
    slicer_app.finish(opened.widget)
    provenance = json.loads(volumes(opened.scene)[-1].GetAttribute("SynthBrain.Provenance"))
    assert provenance["conditions"]["model_units"]["ventricular_volume"] == pytest.approx(0.7), provenance["conditions"]
    assert provenance["conditions"]["given_as"]["ventricular_volume"] == "raw", "recorded as a raw model value"


def test_assumed_conditions_are_marked_in_the_panel(opened):
    assert "[assumed]" in opened.ui.ventricularVolumeLabel.text, opened.ui.ventricularVolumeLabel.text
    assert "[assumed]" not in opened.ui.ageLabel.text, "age follows the authors' published mapping"


def test_download_is_offered_for_a_model_that_is_not_installed(opened):
    opened.ui.modelSelector.currentIndex = opened.ui.modelSelector.findData("brain-ldm")
    assert opened.ui.downloadButton.enabled, "brain-ldm's weights are public: Download is offered"
    opened.ui.modelSelector.currentIndex = opened.ui.modelSelector.findData("tiny-brain-ldm")
    assert not opened.ui.downloadButton.enabled, "nothing to download for an installed model"


def test_reload_reloads_the_helper_packages(opened):
    import SynthBrainSlicer.panel  # noqa: F401  (loaded)

    saved = {
        name: module
        for name, module in sys.modules.items()
        if name.split(".")[0] in ("SynthBrainSlicer", "SynthBrainLib")
    }
    try:
        opened.widget.onReload()
        assert "SynthBrainSlicer.panel" not in sys.modules, (
            "Reload drops SynthBrainSlicer so that it is imported afresh"
        )
        assert "SynthBrainLib.errors" not in sys.modules, "and SynthBrainLib"
        assert opened.gui.reloaded == ["SynthBrain"], "and then reloads the module file through Slicer's own call"
    finally:
        sys.modules.update(saved)  # the rest of the test session keeps its classes


def test_get_module_logic_finds_the_logic_of_a_panel_made_without_a_parent(monkeypatch, mrml_app, tmp_path):
    """Slicer's own slicer.util.getModuleLogic (from slicer-core) on a panel made as a script makes it:
    without a parent, Slicer's ScriptedLoadableModuleWidget sets it up at once, and setup() makes the
    logic itself (no injection)."""
    import slicer

    monkeypatch.setenv("SYNTHBRAIN_HOME", str(tmp_path / "home"))
    slicer_app.install(monkeypatch, lambda: mrml_app.scene)
    module = slicer_app.import_module_file(monkeypatch)
    widget = module.SynthBrainWidget()
    assert widget.ui.generateButton.text == "Generate brain", "set up by Slicer's base class at once"
    scripted = type("qSlicerScriptedLoadableModule", (), {"name": "SynthBrain"})
    monkeypatch.setattr(slicer, "qSlicerScriptedLoadableModule", scripted, raising=False)
    monkeypatch.setattr(slicer.util, "getModule", lambda name: scripted())
    monkeypatch.setattr(slicer.util, "getModuleGui", lambda module: widget)
    try:
        logic = slicer.util.getModuleLogic("SynthBrain")
        assert isinstance(logic, module.SynthBrainLogic), type(logic)
        assert hasattr(logic, "generateBrain"), "the console API"
    finally:
        widget.cleanup()


def test_generate_label_template_gives_a_segmentation_and_a_volume_to_paint_on(opened):
    opened.parameters.labelModel = "tiny-labels"
    opened.parameters.painting.wmh = 0.0
    opened.ui.generateLabelsButton.click()
    slicer_app.finish(opened.widget)
    segmentation, reference = opened.parameters.painting.segmentation, opened.parameters.painting.reference
    assert segmentation is not None, f"a template to paint ({opened.gui.dialogs})"
    assert segmentation.IsA("vtkMRMLSegmentationNode"), segmentation.GetClassName()
    assert reference is not None, "and a volume of its labels to paint on"
    assert opened.ui.segmentEditorWidget.segmentationNode() is segmentation, "the embedded editor paints on it"


def test_use_as_template_copies_a_label_map_without_changing_it(opened, mrml_app):
    import slicer

    labels = np.zeros((16, 16, 16), np.int16)
    labels[4:12, 4:12, 4:12] = 3
    labelmap = slicer.util.addVolumeFromArray(
        labels.transpose(2, 1, 0).copy(), nodeClassName="vtkMRMLLabelMapVolumeNode"
    )
    before = slicer.util.arrayFromVolume(labelmap).copy()
    opened.parameters.painting.templateInput = labelmap
    opened.ui.useTemplateButton.click()
    segmentation = opened.parameters.painting.segmentation
    assert segmentation is not None, f"a template was made ({opened.gui.dialogs})"
    assert segmentation.GetID() != labelmap.GetID(), "a new node, not the input"
    assert np.array_equal(slicer.util.arrayFromVolume(labelmap), before), "the label map is untouched"
    assert opened.parameters.painting.reference is not None, "with a volume to paint on"


def test_leaving_the_module_and_closing_the_scene_release_the_embedded_editor(opened):
    """As Slicer's own Segment Editor module: an editor nobody sees stops observing the slice views and
    lets go of its segmentation (it would otherwise keep reacting to every view interaction)."""
    editor = opened.ui.segmentEditorWidget
    opened.widget.enter()
    assert ("setupViewObservations", ()) in editor.calls, "entering the module observes the views"
    segmentation = opened.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
    opened.parameters.painting.segmentation = segmentation
    assert editor.segmentationNode() is segmentation, "the editor paints the chosen segmentation"
    editor.calls.clear()
    opened.widget.exit()
    assert ("removeViewObservations", ()) in editor.calls, f"leaving the module removes them: {editor.calls}"
    opened.widget.enter()
    opened.parameters.painting.segmentation = segmentation
    editor.calls.clear()
    opened.scene.Clear(0)
    assert ("removeViewObservations", ()) in editor.calls, f"closing the scene removes them: {editor.calls}"
    assert editor.segmentationNode() is None, "and the editor lets go of the closed scene's segmentation"


def test_the_module_logic_is_initialised_once(monkeypatch, mrml_app, tiny_store):
    """SynthBrainLogic derives from the console logic and Slicer's ScriptedLoadableModuleLogic: each
    __init__ runs exactly once (Slicer's calls super().__init__() itself)."""
    slicer_app.install(monkeypatch, lambda: mrml_app.scene)
    module = slicer_app.import_module_file(monkeypatch)
    core = sys.modules["SynthBrainSlicer.logic"].SynthBrainLogic
    scripted = sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleLogic
    counts = {"core": 0, "scripted": 0}
    for key, cls in (("core", core), ("scripted", scripted)):
        original = cls.__init__

        def counting(self, *args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    logic = module.SynthBrainLogic(scene=mrml_app.scene, store=tiny_store)
    assert counts == {"core": 1, "scripted": 1}, f"each base class's __init__ runs once: {counts}"
    assert logic.moduleName == "SynthBrain", "Slicer's base class named the module"
    assert logic.store is tiny_store, "the console logic kept what it was given"
