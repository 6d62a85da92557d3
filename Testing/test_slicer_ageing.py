"""A patient's scan aged on real MRML (slicer-core) with the shipped brain-ldm-demo: the console calls
(one target age, a sweep into a sequence) and the panel's "Age this scan" section under Slicer
5.12.3's own parameterNodeWrapper. The scan is never modified; results come beside it."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer_app

from synthbrain_dev.evaluation.insertion_cases import POPULATION
from SynthBrainLib.errors import ConditionError

pytestmark = pytest.mark.slow  # each ageing registers, inverts and regenerates (seconds)

MODULE_DIR = Path(__file__).resolve().parent.parent / "SynthBrain"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


def patient_t1(scene):
    """A held-out phantom's T1 at 60 as an int16 volume node (a scanner's scale), and its sex."""
    from SynthBrainSlicer import scene as mrml

    spec = dataclasses.replace(POPULATION.sample_spec(100_444), age=60.0, tumour=None, wmh_load=0.0)
    subject = POPULATION.make(spec)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "patient T1")
    mrml.fill_volume(node, np.round(subject.images["T1"] * 800.0 + 10.0).astype(np.int16), subject.affine)
    node.CreateDefaultDisplayNodes()
    return node, spec.sex


def test_console_ageing_adds_the_aged_scan_and_its_atrophy_map(demo_logic, mrml_app):
    from SynthBrainSlicer import scene as mrml

    scan, sex = patient_t1(mrml_app.scene)
    before = mrml.volume_array(scan)
    aged, atrophy = demo_logic.ageScan(scan, age=60, sex=sex, toAge=80, seed=1)
    assert np.array_equal(mrml.volume_array(scan), before), "the scan is unchanged"
    result = mrml.volume_array(aged)
    assert result.dtype == before.dtype, f"the scan's type is kept: {result.dtype}"
    assert np.allclose(mrml.volume_affine(aged), mrml.volume_affine(scan)), "on the scan's grid"
    assert not np.array_equal(result, before), "the aged scan differs from the scan"
    assert aged.GetAttribute("SynthBrain.Synthetic") == "true", "the aged scan is marked synthetic"
    record = json.loads(aged.GetAttribute("SynthBrain.Provenance"))
    assert record["ageing"]["to_age"] == 80.0, f"provenance records the target age: {record['ageing']}"
    assert record["slicer"]["scan"] == "patient T1", "provenance names the scan"
    jacobian = mrml.volume_array(atrophy)
    assert jacobian.shape == before.shape, "the atrophy map is on the scan's grid"
    assert jacobian.min() < 0 < jacobian.max(), "the map shows both shrinkage and growth"
    assert atrophy.GetAttribute("SynthBrain.Synthetic") == "true", "the atrophy map is marked synthetic"


def test_console_sweep_gives_a_sequence_from_the_scans_age(demo_logic, mrml_app):
    from SynthBrainSlicer import scene as mrml

    scan, sex = patient_t1(mrml_app.scene)
    sequence = demo_logic.ageScanSweep(scan, age=60, sex=sex, ageTo=76, count=3, seed=1)
    values = [sequence.GetNthIndexValue(i) for i in range(sequence.GetNumberOfDataNodes())]
    assert values == ["60", "68", "76"], f"one frame per age: {values}"
    first = mrml.volume_array(sequence.GetNthDataNode(0))
    assert np.array_equal(first, mrml.volume_array(scan).astype(first.dtype)), "the first frame is the scan itself"


def test_a_target_outside_the_models_range_is_refused_and_adds_nothing(demo_logic, mrml_app):
    scan, sex = patient_t1(mrml_app.scene)
    count = mrml_app.scene.GetNumberOfNodes()
    with pytest.raises(ConditionError, match="age 99 is outside 45–82 years"):
        demo_logic.ageScan(scan, age=60, sex=sex, toAge=99)
    assert mrml_app.scene.GetNumberOfNodes() == count, "nothing was added to the scene"


def test_the_panels_age_button_shows_the_aged_scan_beside_the_scan_with_the_atrophy_map(demo_panel, mrml_app):
    from SynthBrainSlicer import scene as mrml
    from SynthBrainSlicer.choices import Sex

    scene = mrml_app.scene
    for view in ("Red", "Yellow"):  # what the application's layout creates
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(view)
    scan, sex = patient_t1(scene)
    p = demo_panel.parameters
    p.brainModel = "brain-ldm-demo"
    p.ageing.scan, p.ageing.sex = scan, Sex(sex)
    demo_panel.ui.ageingAgeSlider.value = 60.0
    demo_panel.ui.ageingToAgeSlider.value = 75.0
    assert (p.ageing.age, p.ageing.toAge) == (60.0, 75.0), "the sliders are bound to the parameter node"
    volumes_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    demo_panel.ui.ageScanButton.click()
    slicer_app.finish(demo_panel.widget, timeout=300)

    assert demo_panel.gui.dialogs == [], f"no error: {demo_panel.gui.dialogs}"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes_before + 2, "aged scan + atrophy map"
    aged = scene.GetNthNodeByClass(volumes_before, "vtkMRMLScalarVolumeNode")
    record = json.loads(aged.GetAttribute("SynthBrain.Provenance"))
    assert record["ageing"]["to_age"] == 75.0, "the target age from the slider"
    views = {c.GetLayoutName(): c for c in (scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(2))}
    assert views["Red"].GetBackgroundVolumeID() == scan.GetID(), "the scan in the left view"
    assert views["Yellow"].GetBackgroundVolumeID() == aged.GetID(), "the aged scan in the right view"
    atrophy = scene.GetNthNodeByClass(volumes_before + 1, "vtkMRMLScalarVolumeNode")
    assert views["Yellow"].GetForegroundVolumeID() == atrophy.GetID(), "the atrophy map over the aged scan"
    assert views["Yellow"].GetForegroundOpacity() > 0, "the atrophy map is visible"
    assert mrml.volume_array(scan).dtype == np.int16, "the scan is untouched"


def test_cancel_from_the_panel_stops_the_ageing_and_adds_nothing(demo_panel, mrml_app):
    from SynthBrainSlicer.choices import Sex

    scene = mrml_app.scene
    scan, sex = patient_t1(scene)
    p = demo_panel.parameters
    p.brainModel = "brain-ldm-demo"
    p.ageing.scan, p.ageing.sex, p.ageing.age, p.ageing.toAge = scan, Sex(sex), 60.0, 75.0
    count = scene.GetNumberOfNodes()
    demo_panel.ui.ageScanButton.click()
    demo_panel.ui.ageScanButton.click()  # the running button cancels
    slicer_app.finish(demo_panel.widget, timeout=300)
    assert scene.GetNumberOfNodes() == count, "a cancelled run adds nothing"
    assert "cancel" in demo_panel.ui.statusLabel.text.lower(), f"the panel says so: {demo_panel.ui.statusLabel.text!r}"
