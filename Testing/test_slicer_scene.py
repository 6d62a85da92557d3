"""MRML conversions of the Slicer module (SynthBrain/SynthBrainSlicer/scene.py) on real MRML.

Runs against slicer-core (Slicer's MRML and module logics without the application). slicer-core is
part of the repository's test setup (pip install -e .[test,slicer-test]); without it these tests
fail at import instead of being skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import slicer
    import vtk
except ImportError as exc:  # pragma: no cover - CI installs slicer-core; say how, do not skip
    raise ImportError(
        "slicer-core is required for the Slicer module tests: pip install -e .[test,slicer-test]"
    ) from exc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "SynthBrain"))

from SynthBrainLib.models.cards import builtin_cards  # noqa: E402
from SynthBrainSlicer import scene as mrml  # noqa: E402

SCHEMA = builtin_cards()["brainspade3d-image"].labels
VALUE = {c.name: c.value for c in SCHEMA}


def rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return r


#: A grid unlike any model's: oblique (20 degrees about S), anisotropic, left-right flipped, offset.
USER_SHAPE = (30, 26, 22)
USER_AFFINE = rotation_z(20) @ np.array([[-1.5, 0, 0, 21.0], [0, 1.25, 0, -16.0], [0, 0, 1.75, -18.0], [0, 0, 0, 1]])
#: The tiny models' grid: 16^3 at 2 mm centred on the origin.
MODEL_SHAPE = (16, 16, 16)
MODEL_AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
MODEL_AFFINE[:3, 3] = -15.0


def world_points(affine: np.ndarray, shape) -> np.ndarray:
    """RAS of every voxel of a grid, shape (X, Y, Z, 3)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def phantom_labels(affine=MODEL_AFFINE, shape=MODEL_SHAPE) -> np.ndarray:
    """Concentric spheres: wm (r < 8 mm) inside gm (r < 12) inside csf (r < 14), background outside."""
    r = np.linalg.norm(world_points(affine, shape), axis=-1)
    labels = np.zeros(shape, np.uint8)
    labels[r < 14] = VALUE["csf"]
    labels[r < 12] = VALUE["gm"]
    labels[r < 8] = VALUE["wm"]
    return labels


def add_user_volume(scene, name="user T1"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    mrml.fill_volume(node, np.zeros(USER_SHAPE, np.float32), USER_AFFINE)
    return node


def snapshot(scene):
    """Every node's ID, class, name, attributes and modification time."""
    rows = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        attributes = tuple(sorted((a, node.GetAttribute(a)) for a in (node.GetAttributeNames() or ())))
        rows.append((node.GetID(), node.GetClassName(), node.GetName(), attributes, node.GetMTime()))
    return rows


# ---------------------------------------------------------------------------------------------
def test_result_volume_geometry_voxels_and_display(mrml_app):
    scene = mrml_app.scene
    rng = np.random.default_rng(0)
    image = rng.random(USER_SHAPE).astype(np.float32)
    node = mrml.add_result_volume(
        scene, image, USER_AFFINE, "SynthBrain test", {"synthetic": True, "seed": 7, "model": {"id": "m"}}
    )

    assert np.allclose(mrml.volume_affine(node), USER_AFFINE)
    assert np.allclose(node.GetSpacing(), [1.5, 1.25, 1.75])
    assert np.allclose(node.GetOrigin(), USER_AFFINE[:3, 3])
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    assert np.allclose(mrml.numpy_matrix(directions)[:3, :3], USER_AFFINE[:3, :3] / [1.5, 1.25, 1.75])
    assert node.GetImageData().GetDimensions() == USER_SHAPE
    assert np.array_equal(slicer.util.arrayFromVolume(node), image.transpose(2, 1, 0))
    # voxel [i, j, k] sits at affine @ [i, j, k, 1] in RAS, as for the library
    ras = [0.0, 0.0, 0.0, 1.0]
    node.GetIJKToRASMatrix(directions)
    directions.MultiplyPoint([3, 4, 5, 1], ras)
    assert np.allclose(ras[:3], (USER_AFFINE @ [3, 4, 5, 1])[:3])

    display = node.GetDisplayNode()
    assert display is not None, "the result volume has a display node"
    assert not display.GetAutoWindowLevel(), "the result's window/level is fixed, not automatic"
    lo, hi = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    assert image.min() <= lo < hi <= image.max()
    assert hi - lo > 0.9 * (np.percentile(image, 99.5) - np.percentile(image, 0.5))


def test_result_attributes_folder_and_saved_scene(mrml_app, tmp_path):
    scene = mrml_app.scene
    provenance = {
        "synthetic": True,
        "seed": 11,
        "model": {"id": "tiny-brain-ldm"},
        "conditions": {"real_units": {"age": 70}},
    }
    node = mrml.add_result_volume(scene, np.ones(MODEL_SHAPE, np.float32), MODEL_AFFINE, "SynthBrain brain", provenance)
    other = mrml.add_result_volume(
        scene, np.ones(MODEL_SHAPE, np.float32), MODEL_AFFINE, "SynthBrain brain 2", provenance
    )

    assert node.GetAttribute("SynthBrain.Synthetic") == "true"
    assert json.loads(node.GetAttribute("SynthBrain.Provenance")) == provenance
    assert node.GetAttribute("SynthBrain.Model") == "tiny-brain-ldm"
    assert node.GetAttribute("SynthBrain.Seed") == "11"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.GetItemParent(sh.GetItemByDataNode(node))
    assert sh.GetItemName(folder) == "SynthBrain"
    assert sh.GetItemParent(sh.GetItemByDataNode(other)) == folder  # one folder for all results
    assert sh.GetItemParent(folder) == sh.GetSceneItemID()

    # Attributes are part of the scene file: a saved scene brings the provenance back.
    path = tmp_path / "scene.mrml"
    scene.SetURL(str(path))
    assert scene.Commit()
    restored = slicer.vtkMRMLScene()
    restored.SetURL(str(path))
    restored.Import()
    again = restored.GetFirstNodeByName(node.GetName())
    assert again is not None
    assert again.GetAttribute("SynthBrain.Synthetic") == "true"
    assert json.loads(again.GetAttribute("SynthBrain.Provenance")) == provenance


def test_unique_names_never_overwrite(mrml_app):
    scene = mrml_app.scene
    mine = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "SynthBrain T1w")
    mrml.fill_volume(mine, np.full(MODEL_SHAPE, 5.0, np.float32), MODEL_AFFINE)
    first = mrml.add_result_volume(scene, np.zeros(MODEL_SHAPE, np.float32), MODEL_AFFINE, "SynthBrain T1w", None)
    second = mrml.add_result_volume(scene, np.ones(MODEL_SHAPE, np.float32), MODEL_AFFINE, "SynthBrain T1w", None)

    names = [n.GetName() for n in (mine, first, second)]
    assert len(set(names)) == 3, f"names are not unique: {names}"
    assert names[0] == "SynthBrain T1w", f"the user's node was renamed: {names[0]}"
    assert len({n.GetID() for n in (mine, first, second)}) == 3
    assert np.all(slicer.util.arrayFromVolume(mine) == 5.0)
    assert np.all(slicer.util.arrayFromVolume(first) == 0.0)


def test_labels_to_segmentation_uses_schema_names_colours_values(mrml_app):
    scene = mrml_app.scene
    labels = phantom_labels()
    seg = mrml.labels_to_segmentation(scene, labels, MODEL_AFFINE, SCHEMA, "template")
    segmentation = seg.GetSegmentation()

    classes = [c for c in SCHEMA if c.value != 0]
    assert segmentation.GetNumberOfSegments() == len(classes)  # every class, present or not (wmh...: empty)
    for index, c in enumerate(classes):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        assert segment_id == c.name, f"segment id {segment_id}, class {c.name}"
        assert segment.GetName() == c.name, f"segment name {segment.GetName()}, class {c.name}"
        assert np.allclose(segment.GetColor(), np.asarray(c.color) / 255.0)
        tag = vtk.reference("")
        assert segment.GetTag(mrml.LABEL_VALUE_TAG, tag), f"segment {c.name} has no label value tag"
        assert int(str(tag)) == c.value, f"segment {c.name} label value tag {tag}, class value {c.value}"
    # Each segment holds exactly its class's voxels.
    geometry_volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "model grid")
    mrml.fill_volume(geometry_volume, np.zeros(MODEL_SHAPE, np.float32), MODEL_AFFINE)
    for name in ("csf", "gm", "wm", "tumour"):
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg, name, geometry_volume).transpose(2, 1, 0)
        assert np.array_equal(mask > 0, labels == VALUE[name]), name

    back, affine = mrml.segmentation_to_labels(seg, SCHEMA)
    assert np.array_equal(back, labels)
    assert np.allclose(affine, MODEL_AFFINE)


def test_labels_outside_schema_are_refused(mrml_app):
    from SynthBrainLib.errors import SynthBrainError

    labels = phantom_labels()
    labels[0, 0, 0] = 42
    before = snapshot(mrml_app.scene)
    with pytest.raises(SynthBrainError, match="42"):
        mrml.labels_to_segmentation(mrml_app.scene, labels, MODEL_AFFINE, SCHEMA, "bad")
    assert snapshot(mrml_app.scene) == before


def test_lesion_painted_on_other_geometry_exports_on_that_geometry(mrml_app):
    """Template in model space, lesion painted (updateSegmentBinaryLabelmapFromArray) on an oblique
    user grid: the label map comes out on the user grid, lesion voxel for voxel, tissue resampled
    where it is in the world."""
    scene = mrml_app.scene
    seg = mrml.labels_to_segmentation(scene, phantom_labels(), MODEL_AFFINE, SCHEMA, "template")
    user = add_user_volume(scene)
    seg.SetReferenceImageGeometryParameterFromVolumeNode(user)  # what the Segment Editor does
    painted = np.zeros(USER_SHAPE, np.uint8)
    painted[12:17, 10:14, 8:12] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted.transpose(2, 1, 0), seg, "tumour", user)

    labels, affine = mrml.segmentation_to_labels(seg, SCHEMA)
    assert labels.shape == USER_SHAPE
    assert np.allclose(affine, USER_AFFINE)
    assert np.all(labels[painted > 0] == VALUE["tumour"])
    assert np.all(labels[painted == 0] != VALUE["tumour"])
    # Tissue is where it is in the world: deep inside the wm sphere -> wm; far outside -> background.
    r = np.linalg.norm(world_points(USER_AFFINE, USER_SHAPE), axis=-1)
    assert np.all(labels[(r < 6) & (painted == 0)] == VALUE["wm"])
    assert np.all(labels[r > 17] == 0)
    assert np.any(labels == VALUE["gm"]), "grey matter is on the user grid"
    assert np.any(labels == VALUE["csf"]), "CSF is on the user grid"

    # An explicit reference volume wins over the segmentation's own geometry.
    model_grid = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "model grid")
    mrml.fill_volume(model_grid, np.zeros(MODEL_SHAPE, np.float32), MODEL_AFFINE)
    on_model, model_affine = mrml.segmentation_to_labels(seg, SCHEMA, model_grid)
    assert on_model.shape == MODEL_SHAPE, f"labels on the reference grid have shape {on_model.shape}"
    assert np.allclose(model_affine, MODEL_AFFINE), "the labels come out with the reference volume's affine"


def test_overlapping_segments_higher_value_wins_and_unknown_segments_are_refused(mrml_app):
    from SynthBrainLib.errors import SynthBrainError

    scene = mrml_app.scene
    seg = mrml.labels_to_segmentation(scene, phantom_labels(), MODEL_AFFINE, SCHEMA, "template")
    seg.GetSegmentation().AddEmptySegment("my notes", "my notes", [1, 1, 1])
    with pytest.raises(
        SynthBrainError,
        match=r"^segment 'my notes' of template is not a class of the model \(csf, .*\); rename or delete it$",
    ):
        mrml.segmentation_to_labels(seg, SCHEMA)  # its voxels would silently vanish
    seg.GetSegmentation().RemoveSegment("my notes")
    grid = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "grid")
    mrml.fill_volume(grid, np.zeros(MODEL_SHAPE, np.float32), MODEL_AFFINE)
    block = np.zeros(MODEL_SHAPE, np.uint8)
    block[6:10, 6:10, 6:10] = 1
    # Segments overlap only when the user allows it; then the lesion must win over tissue.
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        mrml.oriented_image(block, MODEL_AFFINE), seg, "edema", slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX
    )
    labels, _ = mrml.segmentation_to_labels(seg, SCHEMA, grid)
    assert np.all(labels[block > 0] == VALUE["edema"])


def test_segmentation_without_schema_segments_is_refused(mrml_app):
    from SynthBrainLib.errors import SynthBrainError

    seg = mrml_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "someone else's")
    seg.GetSegmentation().AddEmptySegment("Segment_1", "Segment_1", [1, 0, 0])
    with pytest.raises(SynthBrainError, match="segment 'Segment_1' of someone else's is not a class of the model"):
        mrml.segmentation_to_labels(seg, SCHEMA)
    seg.GetSegmentation().RemoveSegment("Segment_1")
    with pytest.raises(SynthBrainError, match="no segment named after a model class"):
        mrml.segmentation_to_labels(seg, SCHEMA)


def test_segments_sharing_a_class_name_are_merged(mrml_app):
    seg = mrml_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "two tumours")
    mrml.set_segmentation_geometry(seg, MODEL_AFFINE, MODEL_SHAPE)
    a, b = np.zeros(MODEL_SHAPE, np.uint8), np.zeros(MODEL_SHAPE, np.uint8)
    a[2:4, 2:4, 2:4] = 1
    b[9:12, 9:12, 9:12] = 1
    for segment_id, name, mask in (("t1", "Tumour", a), ("t2", "tumour", b)):
        seg.GetSegmentation().AddEmptySegment(segment_id, name, [1, 0, 0])
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            mrml.oriented_image(mask, MODEL_AFFINE),
            seg,
            segment_id,
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
        )
    labels, _ = mrml.segmentation_to_labels(seg, SCHEMA)
    assert (labels == VALUE["tumour"]).sum() == a.sum() + b.sum()


def test_segmentation_without_reference_geometry_uses_its_labelmaps(mrml_app):
    """E.g. a .seg.nrrd written by a script: no reference geometry, only binary labelmaps."""
    seg = mrml_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "scripted")
    mask = np.zeros(MODEL_SHAPE, np.uint8)
    mask[3:7, 4:9, 5:8] = 1
    segment = slicer.vtkSegment()
    segment.SetName("tumour")
    segment.AddRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), mrml.oriented_image(mask, MODEL_AFFINE)
    )
    seg.GetSegmentation().AddSegment(segment, "tumour")
    labels, affine = mrml.segmentation_to_labels(seg, SCHEMA)
    assert (labels == VALUE["tumour"]).sum() == mask.sum()
    world = affine @ np.append(np.argwhere(labels == VALUE["tumour"]).mean(axis=0), 1.0)
    assert np.allclose(world, MODEL_AFFINE @ np.append(np.argwhere(mask).mean(axis=0), 1.0))


def test_labelmap_and_segmentation_templates(mrml_app):
    scene = mrml_app.scene
    labels = phantom_labels(USER_AFFINE, USER_SHAPE)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "my labels")
    mrml.fill_volume(labelmap, labels.astype(np.int16), USER_AFFINE)
    seg = mrml.labelmap_to_segmentation(scene, labelmap, SCHEMA, "from labelmap")
    back, affine = mrml.segmentation_to_labels(seg, SCHEMA)
    assert np.array_equal(back, labels), "the label map survives the round trip through a segmentation"
    assert np.allclose(affine, USER_AFFINE), "the label map keeps its affine through the round trip"

    # A segmentation with differently-ordered, differently-cased segment names maps by name.
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "renamed")
    other.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(mrml.geometry_image(USER_AFFINE, USER_SHAPE)),
    )
    for name in ("WM", "CSF", "GM"):
        other.GetSegmentation().AddEmptySegment(name, name, [0.5, 0.5, 0.5])
        mask = mrml.oriented_image((labels == VALUE[name.lower()]).astype(np.uint8), USER_AFFINE)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            mask, other, name, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        )
    copy = mrml.segmentation_to_schema(scene, other, SCHEMA, "from segmentation")
    assert copy.GetID() != other.GetID()
    assert other.GetSegmentation().GetNumberOfSegments() == 3  # input untouched
    assert np.array_equal(mrml.segmentation_to_labels(copy, SCHEMA)[0], labels)


def test_parent_transform_world_affine(mrml_app):
    from SynthBrainLib.errors import SynthBrainError

    scene = mrml_app.scene
    seg = mrml.labels_to_segmentation(scene, phantom_labels(), MODEL_AFFINE, SCHEMA, "template")
    shift = np.eye(4)
    shift[:3, 3] = [3.0, -2.0, 1.0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    transform.SetMatrixTransformToParent(mrml.vtk_matrix(shift))
    seg.SetAndObserveTransformNodeID(transform.GetID())
    labels, affine = mrml.segmentation_to_labels(seg, SCHEMA)
    assert np.allclose(affine, MODEL_AFFINE)  # local coordinates: unchanged
    assert np.allclose(mrml.to_world(seg, affine), shift @ MODEL_AFFINE)

    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    transform.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(SynthBrainError, match="harden"):
        mrml.to_world(seg, affine)


def test_volume_sequence_and_browser(mrml_app):
    scene = mrml_app.scene
    ages = ["50", "65", "80"]
    images = [(np.full(MODEL_SHAPE, float(a)) + np.linspace(0, 1, 16)[:, None, None]).astype(np.float32) for a in ages]
    items = [
        (a, img, MODEL_AFFINE, {"synthetic": True, "seed": 3, "conditions": {"real_units": {"age": float(a)}}})
        for a, img in zip(ages, images)
    ]
    sequence, browser, proxy = mrml.add_volume_sequence(
        scene, items, "SynthBrain age sweep", "age", "years", {"synthetic": True, "seed": 3}, mrml_app.sequences
    )

    assert sequence.GetNumberOfDataNodes() == 3
    assert sequence.GetIndexName() == "age", f"sequence index name {sequence.GetIndexName()}"
    assert sequence.GetIndexUnit() == "years", f"sequence index unit {sequence.GetIndexUnit()}"
    assert sequence.GetIndexType() == sequence.NumericIndex
    assert [sequence.GetNthIndexValue(i) for i in range(3)] == ages
    for index, (age, image) in enumerate(zip(ages, images)):
        item = sequence.GetNthDataNode(index)
        assert item.GetAttribute("SynthBrain.Synthetic") == "true"
        assert json.loads(item.GetAttribute("SynthBrain.Provenance"))["conditions"]["real_units"]["age"] == float(age)
        assert np.array_equal(slicer.util.arrayFromVolume(item), image.transpose(2, 1, 0))
        assert np.allclose(mrml.volume_affine(item), MODEL_AFFINE)
    assert sequence.GetAttribute("SynthBrain.Synthetic") == "true"
    assert sequence.GetAttribute("SynthBrain.SequenceBrowser") == browser.GetID()
    primary = (
        browser.GetMasterSequenceNode()
        if hasattr(browser, "GetMasterSequenceNode")
        else browser.GetPrimarySequenceNode()
    )
    assert primary is sequence
    assert proxy is not None, "the sequence has a proxy node"
    assert browser.GetProxyNode(sequence) is proxy, "the browser shows the sequence through the returned proxy"
    # Scrubbing: the proxy shows the selected age; one fixed window for all ages.
    browser.SetSelectedItemNumber(2)
    mrml_app.sequences.UpdateProxyNodesFromSequences(browser)
    assert np.array_equal(slicer.util.arrayFromVolume(proxy), images[2].transpose(2, 1, 0))
    display = proxy.GetDisplayNode()
    assert not display.GetAutoWindowLevel()
    assert display.GetWindowLevelMin() <= 50.5, f"window minimum {display.GetWindowLevelMin()} cuts off age 50"
    assert display.GetWindowLevelMax() >= 80.5, f"window maximum {display.GetWindowLevelMax()} cuts off age 80"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in (sequence, browser, proxy):
        assert mrml.node_parent_folder_name(scene, node) == "SynthBrain"
    assert sh is not None


def test_label_volume_backdrop(mrml_app):
    scene = mrml_app.scene
    labels = phantom_labels()
    seg = mrml.labels_to_segmentation(scene, labels, MODEL_AFFINE, SCHEMA, "template")
    volume = mrml.label_volume(scene, seg, SCHEMA, "template grid")
    assert np.allclose(mrml.volume_affine(volume), MODEL_AFFINE)
    assert np.array_equal(mrml.volume_array(volume), labels.astype(np.float32))
