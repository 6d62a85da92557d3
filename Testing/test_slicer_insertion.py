"""Lesions painted on a loaded scan and inserted into a copy of it, on real MRML (slicer-core): the
console Logic call and the panel's Insert button, with the shipped label2image-demo. The scan and the
painted segmentation are never modified; the new volume and the lesion segmentation come beside them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer_app
from scipy import ndimage as ndi

from synthbrain_dev.evaluation.insertion_cases import oblique_grid, painted_wmh, patient, patient_with_head
from SynthBrainLib.errors import ConditionError

pytestmark = pytest.mark.slow  # each insertion registers a template (seconds)

MODULE_DIR = Path(__file__).resolve().parent.parent / "SynthBrain"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


def scan_and_lesion(scene, demo_logic, made=None):
    """A FLAIR 'patient' on an oblique 1 x 1 x 3 mm grid as an int16 volume node (or the (image, affine,
    labels) of ``made``), and a segmentation on it with the lesion segments added and a white-matter
    ball painted as wmh."""
    from SynthBrainSlicer import scene as mrml

    image, affine, labels = made if made is not None else patient(1003, "FLAIR", grid=oblique_grid())
    scan = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "patient FLAIR")
    mrml.fill_volume(scan, np.round(image).astype(np.int16), affine)
    scan.CreateDefaultDisplayNodes()
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(scan)
    added = demo_logic.addLesionSegments(segmentation, model="label2image-demo")
    mask = painted_wmh(labels, affine, radius_mm=6.0)
    import slicer

    seg_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("wmh")
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        mrml.oriented_image(mask.astype(np.uint8), affine),
        segmentation,
        seg_id,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
    )
    return scan, segmentation, mask, affine, added


def test_console_insertion_adds_a_new_volume_and_lesion_segmentation_and_changes_nothing(demo_logic, mrml_app):
    from SynthBrainSlicer import scene as mrml

    scan, segmentation, mask, affine, added = scan_and_lesion(mrml_app.scene, demo_logic)
    assert added == ["wmh", "tumour", "edema", "gdtumour"], f"lesion segments added: {added}"
    before = mrml.volume_array(scan)
    painted_before, _ = mrml.segmentation_to_labels(segmentation, demo_logic.card("label2image-demo").labels, scan)

    volume, lesions = demo_logic.insertLesions(scan, segmentation, sequence="FLAIR", model="label2image-demo", seed=2)

    assert volume.GetID() != scan.GetID(), "a new volume, not the scan"
    assert np.array_equal(mrml.volume_array(scan), before), "the scan is unchanged"
    painted_after, _ = mrml.segmentation_to_labels(segmentation, demo_logic.card("label2image-demo").labels, scan)
    assert np.array_equal(painted_after, painted_before), "the painted segmentation is unchanged"
    result = mrml.volume_array(volume)
    assert result.dtype == before.dtype, f"the scan's type is kept: {result.dtype}"
    assert np.allclose(mrml.volume_affine(volume), mrml.volume_affine(scan)), "on the scan's grid"
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    far = ndi.distance_transform_edt(~mask, sampling=spacing) > 3.0
    assert np.array_equal(result[far], before[far]), "every voxel beyond the margin is the scan's own"
    assert result[mask].mean() > 1.2 * before[mask].mean(), "the painted WMH is hyperintense on FLAIR"
    assert volume.GetAttribute("SynthBrain.Synthetic") == "true", "the new volume is marked synthetic"
    provenance = json.loads(volume.GetAttribute("SynthBrain.Provenance"))
    assert provenance["slicer"]["scan"] == "patient FLAIR", "provenance names the scan"
    truth, _ = mrml.segmentation_to_labels(lesions, demo_logic.card("label2image-demo").labels, scan)
    assert np.array_equal(truth > 0, mask), "the lesion segmentation is the painted mask on the scan grid"


def test_a_segmentation_without_painted_lesions_is_refused_and_adds_nothing(demo_logic, mrml_app):
    scene = mrml_app.scene
    scan, segmentation, mask, affine, added = scan_and_lesion(scene, demo_logic)
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing painted")
    empty.SetReferenceImageGeometryParameterFromVolumeNode(scan)
    demo_logic.addLesionSegments(empty, model="label2image-demo")
    count = scene.GetNumberOfNodes()
    with pytest.raises(ConditionError, match="has no painted lesion on patient FLAIR; paint a segment named wmh"):
        demo_logic.insertLesions(scan, empty, sequence="FLAIR", model="label2image-demo")
    assert scene.GetNumberOfNodes() == count, "nothing was added to the scene"


def test_the_panels_insert_button_shows_the_result_beside_the_scan(demo_panel, mrml_app):
    from SynthBrainSlicer import scene as mrml

    scene = mrml_app.scene
    for view in ("Red", "Yellow"):  # what the application's layout creates
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(view)
    scan, segmentation, mask, affine, _ = scan_and_lesion(scene, demo_panel.widget.logic)
    before = mrml.volume_array(scan)
    p = demo_panel.parameters
    p.imageModel = "label2image-demo"
    from SynthBrainSlicer.choices import MRSequence

    p.painting.reference, p.painting.segmentation = scan, segmentation
    p.painting.sequence = MRSequence.FLAIR
    demo_panel.ui.insertMarginSlider.value = 2.0
    assert p.painting.margin == 2.0, "the margin slider is bound to the parameter node"
    demo_panel.ui.addLesionSegmentsButton.click()
    assert demo_panel.ui.statusLabel.text == "Added segments: none missing.", demo_panel.ui.statusLabel.text
    volumes_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    demo_panel.ui.insertButton.click()
    slicer_app.finish(demo_panel.widget, timeout=300)

    assert demo_panel.gui.dialogs == [], f"no error: {demo_panel.gui.dialogs}"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes_before + 1, "one new volume"
    new = scene.GetNthNodeByClass(volumes_before, "vtkMRMLScalarVolumeNode")
    assert np.array_equal(mrml.volume_array(scan), before), "the scan is unchanged"
    assert json.loads(new.GetAttribute("SynthBrain.Provenance"))["insertion"]["margin_mm"] == 2.0, "margin used"
    views = {c.GetLayoutName(): c for c in (scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(2))}
    assert views["Red"].GetBackgroundVolumeID() == scan.GetID(), "the scan in the left view"
    assert views["Yellow"].GetBackgroundVolumeID() == new.GetID(), "the result in the right view"
    assert views["Red"].GetLinkedControl() and views["Yellow"].GetLinkedControl(), "the views are linked"


def test_a_freesurfer_label_map_on_its_own_grid_is_the_tissue_map(demo_logic, mrml_app, realdata):
    """A real FreeSurfer aparc.a2009s+aseg as Slicer loads an .mgz (a label map on FreeSurfer's 256^3 LIA
    grid) with a scan on another, oblique 1 x 1 x 3 mm grid: the demo_logic hands the pipeline both grids.
    (slicer-core has no MGH reader; Slicer's application reads .mgz itself - here nibabel fills the nodes.)"""
    import nibabel as nib
    import slicer

    from SynthBrainLib.insertion.registration import resample_between
    from SynthBrainSlicer import scene as mrml

    scene = mrml_app.scene
    folder = realdata / "freesurfer-subject"
    norm, aseg = nib.load(folder / "norm.mgz"), nib.load(folder / "aparc.a2009s+aseg.mgz")
    seg = np.asanyarray(aseg.dataobj).astype(np.int32)
    tissue = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "aparc.a2009s+aseg")
    mrml.fill_volume(tissue, seg, aseg.affine)
    shape, grid = oblique_grid(angles=(8.0, -4.0, 6.0))
    centre = norm.affine @ np.append((np.asarray(norm.shape) - 1) / 2.0, 1.0)
    grid[:3, 3] += centre[:3] - (grid @ np.append((np.asarray(shape) - 1) / 2.0, 1.0))[:3]
    image = np.round(resample_between(np.asanyarray(norm.dataobj).astype(np.float32), norm.affine, shape, grid))
    scan = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1 on an oblique grid")
    mrml.fill_volume(scan, image.astype(np.int16), grid)
    white = np.round(resample_between(seg, aseg.affine, shape, grid, linear=False)) == 2
    core = np.argwhere(ndi.binary_erosion(white, iterations=3))
    offsets = (np.indices(shape) - core[len(core) // 2][:, None, None, None]) * np.array([1.0, 1.0, 3.0])[
        :, None, None, None
    ]
    mask = (np.linalg.norm(offsets, axis=0) <= 5) & white
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(scan)
    demo_logic.addLesionSegments(segmentation, model="label2image-demo")
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        mrml.oriented_image(mask.astype(np.uint8), grid),
        segmentation,
        segmentation.GetSegmentation().GetSegmentIdBySegmentName("wmh"),
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
    )
    volume, _ = demo_logic.insertLesions(
        scan,
        segmentation,
        sequence="T1",
        model="label2image-demo",
        seed=1,
        tissueNode=tissue,
        tissueLabels="freesurfer",
    )
    provenance = json.loads(volume.GetAttribute("SynthBrain.Provenance"))
    assert provenance["insertion"]["tissue"] == "user segmentation (freesurfer)", "the label map was the tissue map"
    result = mrml.volume_array(volume)
    far = ndi.distance_transform_edt(~mask, sampling=[1.0, 1.0, 3.0]) > 3.0
    assert np.array_equal(result[far], mrml.volume_array(scan)[far]), "every voxel beyond the margin is the scan's own"


def test_console_removal_fills_the_painted_lesion_and_changes_nothing_else(demo_logic, mrml_app):
    """The phantom patient's painted WMH is first inserted, then removed from that result: the filled
    voxels come back to the white matter's level; the scan and the segmentation stay as they were."""
    from SynthBrainSlicer import scene as mrml

    scan, segmentation, mask, affine, _ = scan_and_lesion(mrml_app.scene, demo_logic)
    lesioned, _ = demo_logic.insertLesions(scan, segmentation, sequence="FLAIR", model="label2image-demo", seed=2)
    before = mrml.volume_array(lesioned)
    removed = demo_logic.removeLesions(lesioned, segmentation, sequence="FLAIR", model="label2image-demo", seed=2)
    result = mrml.volume_array(removed)
    assert removed.GetID() != lesioned.GetID(), "a new volume"
    assert np.array_equal(mrml.volume_array(lesioned), before), "the scan it worked on is unchanged"
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    far = ndi.distance_transform_edt(~mask, sampling=spacing) > 3.0
    assert np.array_equal(result[far], before[far]), "every voxel beyond the margin is the scan's own"
    original = mrml.volume_array(scan)
    filled, healthy = result[mask].mean(), original[mask].mean()
    assert abs(filled / healthy - 1.0) < 0.1, f"the fill is at the level before the lesion: {filled} vs {healthy}"
    provenance = json.loads(removed.GetAttribute("SynthBrain.Provenance"))
    assert provenance["removal"]["fill"]["white_matter_level"] > 0, "the fill is recorded"
    assert removed.GetAttribute("SynthBrain.Synthetic") == "true", "marked synthetic"


def test_existing_lesions_give_the_inserted_one_their_look(demo_logic, mrml_app):
    from SynthBrainSlicer import scene as mrml

    scene = mrml_app.scene
    scan, segmentation, mask, affine, _ = scan_and_lesion(scene, demo_logic)
    shifted = np.roll(mask, 12, axis=0)  # "the patient's own lesion": a hyperintense ball elsewhere in the brain
    image = mrml.volume_array(scan).astype(np.float64)
    image[shifted] *= 1.25
    patient = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "patient with a lesion")
    mrml.fill_volume(patient, np.round(image).astype(np.int16), affine)
    existing = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "existing lesions")
    mrml.fill_volume(existing, shifted.astype(np.uint8), affine)
    volume, _ = demo_logic.insertLesions(
        patient, segmentation, sequence="FLAIR", model="label2image-demo", seed=2, existingLesionsNode=existing
    )
    look = json.loads(volume.GetAttribute("SynthBrain.Provenance"))["insertion"]["appearance"]
    assert look["target"]["source"].startswith("this patient's lesions"), (
        f"the patient's lesions were the reference: {look}"
    )
    assert abs(look["achieved"]["contrast"] - look["target"]["contrast"]) < 0.02, f"their contrast was given: {look}"


def test_the_panel_inserts_into_a_scan_with_skull_using_the_patients_lesions_and_shows_the_brain_mask(
    demo_panel, mrml_app
):
    """A whole-head thick-slice phantom: the panel's skull choice and its patient's-lesions selector
    both reach the insertion; the brain mask that guided it comes as a segmentation beside the scan."""
    from SynthBrainSlicer import scene as mrml
    from SynthBrainSlicer.choices import MRSequence, SkullStripped

    scene = mrml_app.scene
    image, affine, labels = patient_with_head(1002, "FLAIR")
    own = np.roll(painted_wmh(labels, affine, radius_mm=6.0), 10, axis=0)  # "the patient's own lesion"
    image[own] *= 1.3
    scan, segmentation, mask, affine, _ = scan_and_lesion(scene, demo_panel.widget.logic, (image, affine, labels))
    before = mrml.volume_array(scan)
    existing = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "existing lesions")
    mrml.fill_volume(existing, own.astype(np.uint8), affine)
    p = demo_panel.parameters
    p.imageModel = "label2image-demo"
    p.painting.reference, p.painting.segmentation = scan, segmentation
    p.painting.sequence = MRSequence.FLAIR
    p.painting.existingLesions = existing
    demo_panel.ui.skullStrippedSelector.currentIndex = 2
    assert p.painting.skullStripped is SkullStripped.NO, "the skull selector is bound to the parameter node"
    segmentations_before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")

    demo_panel.ui.insertButton.click()
    slicer_app.finish(demo_panel.widget, timeout=300)

    assert demo_panel.gui.dialogs == [], f"no error: {demo_panel.gui.dialogs}"
    new = [v for v in slicer_app.nodes(scene, "vtkMRMLScalarVolumeNode") if v.GetAttribute("SynthBrain.Provenance")][-1]
    insertion = json.loads(new.GetAttribute("SynthBrain.Provenance"))["insertion"]
    assert insertion["brain_extraction"]["method"] == "deepbet 1.0.2", f"the brain was extracted: {insertion}"
    assert insertion["appearance"]["target"]["source"].startswith("this patient's lesions"), "existing lesions used"
    far = ndi.distance_transform_edt(~mask, sampling=np.linalg.norm(affine[:3, :3], axis=0)) > 3.0
    assert np.array_equal(mrml.volume_array(new)[far], before[far]), "skull, neck and all beyond the margin kept"
    assert np.array_equal(mrml.volume_array(scan), before), "the scan is unchanged"
    added = slicer_app.nodes(scene, "vtkMRMLSegmentationNode")[segmentations_before:]
    brain = [n for n in added if n.GetAttribute("SynthBrain.BrainExtraction")]
    assert len(brain) == 1, f"one brain-mask segmentation: {[n.GetName() for n in added]}"
    record = json.loads(brain[0].GetAttribute("SynthBrain.BrainExtraction"))
    assert 900 < record["brain_volume_ml"] < 2000, f"its volume is a brain's: {record}"
    assert brain[0].GetAttribute("SynthBrain.Synthetic") is None, "the mask is the patient's, not synthetic"
