"""MRML side of SynthBrain: arrays and results in, volume / segmentation / sequence nodes out.

Everything here runs on Slicer's main thread (MRML is not thread-safe) and needs no Qt, so it is
tested with pytest on real MRML (slicer-core). Nodes are created in the scene given as argument,
never in a global one.

Conventions (the same as SynthBrainLib's): numpy arrays are indexed ``[i, j, k]`` and come with a
4x4 voxel-to-RAS ``affine``, so a volume node's IJKToRAS matrix *is* that affine and
``slicer.util.arrayFromVolume`` (indexed ``[k, j, i]``) is ``array.transpose(2, 1, 0)``.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from SynthBrainLib.errors import SynthBrainError

#: Node attributes written on every result.
SYNTHETIC_ATTRIBUTE = "SynthBrain.Synthetic"
PROVENANCE_ATTRIBUTE = "SynthBrain.Provenance"
MODEL_ATTRIBUTE = "SynthBrain.Model"
SEED_ATTRIBUTE = "SynthBrain.Seed"
SOURCE_ATTRIBUTE = "SynthBrain.Source"
BROWSER_ATTRIBUTE = "SynthBrain.SequenceBrowser"
#: Segment tag holding the class's label value in the model's schema.
LABEL_VALUE_TAG = "SynthBrain.LabelValue"
#: Subject-hierarchy folder that collects every result.
FOLDER_NAME = "SynthBrain"
FOLDER_ATTRIBUTE = "SynthBrain.ResultsFolder"


def _user_error(message: str) -> Exception:
    return SynthBrainError(message)


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
def vtk_matrix(affine: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(affine[r][c]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def volume_affine(volume_node) -> np.ndarray:
    """The node's IJKToRAS matrix (in its parent transform's coordinates)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return numpy_matrix(matrix)


def volume_array(volume_node) -> np.ndarray:
    """A copy of the voxels indexed [i, j, k]."""
    return np.array(slicer.util.arrayFromVolume(volume_node).transpose(2, 1, 0), copy=True)


def to_world(node, affine: np.ndarray) -> np.ndarray:
    """``affine`` (in ``node``'s parent-transform coordinates) mapped to world RAS.

    The pipelines place label maps in model space by their world coordinates, so a segmentation
    under a linear transform is synthesised where it is displayed. A non-linear transform cannot be
    expressed as an affine: the user has to harden it first.
    """
    parent = node.GetParentTransformNode() if node is not None else None
    if parent is None:
        return np.asarray(affine, dtype=np.float64)
    if not parent.IsTransformToWorldLinear():
        raise _user_error(
            f"{node.GetName()} is under the non-linear transform {parent.GetName()}; harden the transform first"
        )
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return numpy_matrix(matrix) @ np.asarray(affine, dtype=np.float64)


def oriented_image(array: np.ndarray, affine: np.ndarray, vtk_type: int = vtk.VTK_UNSIGNED_CHAR):
    """A vtkOrientedImageData holding ``array`` ([i, j, k]) with IJK-to-RAS ``affine``."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*array.shape)
    image.AllocateScalars(vtk_type, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.asarray(array).transpose(2, 1, 0).ravel()
    image.SetImageToWorldMatrix(vtk_matrix(affine))
    return image


def oriented_image_array(image) -> tuple[np.ndarray, np.ndarray]:
    """(array [i, j, k], affine of voxel [0, 0, 0]) of a vtkOrientedImageData, whatever its extent."""
    extent = image.GetExtent()
    dims = tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3))
    if min(dims) <= 0 or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 0, 0), np.uint8), np.eye(4)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = np.array(flat.reshape(dims[::-1]).transpose(2, 1, 0), copy=True)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    shift = np.eye(4)
    shift[:3, 3] = [extent[0], extent[2], extent[4]]
    return array, numpy_matrix(matrix) @ shift


def geometry_image(affine: np.ndarray, shape: Sequence[int]):
    """An unallocated vtkOrientedImageData that only describes a grid."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, shape[0] - 1, 0, shape[1] - 1, 0, shape[2] - 1)
    image.SetImageToWorldMatrix(vtk_matrix(affine))
    return image


def segmentation_geometry(segmentation_node, reference_volume_node=None):
    """The grid a segmentation is exported on: the reference volume's, else the segmentation's own.

    The segmentation's own geometry is its reference image geometry: the Segment Editor sets it to
    the source volume the user paints on, and templates made here set it to the label map's grid.
    """
    if reference_volume_node is not None:
        # The reference grid expressed in the segmentation's coordinates, kept oblique: Slicer's
        # CreateOrientedImageDataFromVolumeNode resamples a rotated grid into a larger axis-aligned
        # box when the two nodes sit under different transforms, and the result would no longer
        # overlay the reference voxel for voxel.
        image = reference_volume_node.GetImageData()
        if image is None:
            raise _user_error(f"reference volume {reference_volume_node.GetName()} has no voxels")
        ref_to_seg = vtk.vtkMatrix4x4()
        if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            reference_volume_node.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), ref_to_seg
        ):
            raise _user_error(
                f"{reference_volume_node.GetName()} and {segmentation_node.GetName()} are related by a "
                "non-linear transform; harden it first"
            )
        return geometry_image(numpy_matrix(ref_to_seg) @ volume_affine(reference_volume_node), image.GetDimensions())
    segmentation = segmentation_node.GetSegmentation()
    text = segmentation.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    geometry = slicer.vtkOrientedImageData()
    if text:
        slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, geometry, False)
    extent = geometry.GetExtent()
    if not text or extent[1] < extent[0]:
        # No reference geometry recorded (e.g. a segmentation loaded from a file): use the
        # common grid of its binary labelmaps.
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(ids)
        common = segmentation.DetermineCommonLabelmapGeometry(slicer.vtkSegmentation.EXTENT_UNION_OF_SEGMENTS, ids)
        if not common:
            raise _user_error(f"segmentation {segmentation_node.GetName()} has no geometry; select a reference volume")
        slicer.vtkSegmentationConverter.DeserializeImageGeometry(common, geometry, False)
    return geometry


def set_segmentation_geometry(segmentation_node, affine: np.ndarray, shape: Sequence[int]) -> None:
    """Record a grid as the segmentation's reference image geometry (what it is painted and exported on)."""
    text = slicer.vtkSegmentationConverter.SerializeImageGeometry(geometry_image(affine, shape))
    segmentation_node.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), text
    )


# ----------------------------------------------------------------------------------------------
# Names, attributes, folders
# ----------------------------------------------------------------------------------------------
def unique_name(scene, base: str) -> str:
    """``base`` if unused, else ``base_1``, ``base_2``...: results never share (or take) a name."""
    return scene.GenerateUniqueName(base)


def mark_synthetic(node, provenance: dict[str, Any] | None) -> None:
    """Attributes every result carries; they are saved with the scene (.mrml)."""
    node.SetAttribute(SYNTHETIC_ATTRIBUTE, "true")
    if provenance:
        node.SetAttribute(PROVENANCE_ATTRIBUTE, json.dumps(provenance, sort_keys=True, default=_json_value))
        model = provenance.get("model", {})
        if isinstance(model, dict) and model.get("id"):
            node.SetAttribute(MODEL_ATTRIBUTE, str(model["id"]))
        if provenance.get("seed") is not None:
            node.SetAttribute(SEED_ATTRIBUTE, str(provenance["seed"]))


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays (e.g. a condition given as ``np.float32``) as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def provenance_of(node) -> dict[str, Any] | None:
    text = node.GetAttribute(PROVENANCE_ATTRIBUTE) if node is not None else None
    return json.loads(text) if text else None


def results_folder(scene) -> int:
    """Subject-hierarchy item of the "SynthBrain" folder under the scene (created on first use)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    scene_item = sh.GetSceneItemID()
    children = vtk.vtkIdList()
    sh.GetItemChildren(scene_item, children, False)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if sh.GetItemAttribute(item, FOLDER_ATTRIBUTE) == "true":
            return item
    folder = sh.CreateFolderItem(scene_item, FOLDER_NAME)
    sh.SetItemAttribute(folder, FOLDER_ATTRIBUTE, "true")
    return folder


def place_in_folder(scene, node) -> int:
    """Put ``node`` under the results folder; returns its subject-hierarchy item."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = results_folder(scene)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, folder)
    else:
        # Without the application, nothing creates subject-hierarchy items for new nodes.
        item = sh.CreateItem(folder, node)
    return item


def node_parent_folder_name(scene, node) -> str | None:
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = sh.GetItemByDataNode(node)
    return sh.GetItemName(sh.GetItemParent(item)) if item else None


# ----------------------------------------------------------------------------------------------
# Volumes
# ----------------------------------------------------------------------------------------------
def fill_volume(volume_node, array: np.ndarray, affine: np.ndarray) -> None:
    """Set voxels ([i, j, k]) and IJKToRAS of a volume node (in or out of a scene)."""
    volume_node.SetIJKToRASMatrix(vtk_matrix(affine))
    slicer.util.updateVolumeFromArray(volume_node, np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))


def window_level(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """(min, max) display range: percentiles of the foreground (voxels above the minimum)."""
    data = np.asarray(array, dtype=np.float64)
    if data.size == 0:
        return 0.0, 1.0
    foreground = data[data > data.min()]
    sample = foreground if foreground.size > 0.01 * data.size else data.ravel()
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if not hi > lo:
        lo, hi = float(data.min()), float(data.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def apply_window_level(volume_node, lo: float, hi: float) -> None:
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(lo, hi)


def add_result_volume(
    scene,
    image: np.ndarray,
    affine: np.ndarray,
    name: str,
    provenance: dict | None,
    parent_transform=None,
    window: tuple[float, float] | None = None,
    keep_dtype: bool = False,
):
    """A new scalar volume holding a synthetic image, under the SynthBrain folder.

    Never reuses a node: each call adds one with a name no other node has. The voxels are stored
    as float32, or in the image's own type with ``keep_dtype`` (a patient's scan with inserted
    lesions keeps the scan's values bit for bit).
    """
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", unique_name(scene, name))
    fill_volume(node, np.asarray(image) if keep_dtype else np.asarray(image, dtype=np.float32), affine)
    if parent_transform is not None:
        node.SetAndObserveTransformNodeID(parent_transform.GetID())
    node.CreateDefaultDisplayNodes()
    apply_window_level(node, *(window or window_level(image)))
    mark_synthetic(node, provenance)
    place_in_folder(scene, node)
    return node


# ----------------------------------------------------------------------------------------------
# Label maps <-> segmentations
# ----------------------------------------------------------------------------------------------
def _classes(classes: Iterable) -> list[tuple[int, str, tuple[float, float, float]]]:
    """(value, name, colour 0-1) of each non-background class of a card's label schema."""
    out = []
    for c in classes:
        value, name, color = int(c.value), str(c.name), tuple(float(x) / 255.0 for x in c.color)
        if value != 0:
            out.append((value, name, color))
    return out


def segment_id_for(segmentation_node, name: str) -> str | None:
    """The segment whose name is ``name`` (case-insensitive), or None."""
    segmentation = segmentation_node.GetSegmentation()
    wanted = name.strip().lower()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        if segmentation.GetSegment(segment_id).GetName().strip().lower() == wanted:
            return segment_id
    return None


def labels_to_segmentation(
    scene,
    labels: np.ndarray,
    affine: np.ndarray,
    classes: Iterable,
    name: str,
    provenance: dict | None = None,
    parent_transform=None,
):
    """A new segmentation with one segment per class of the schema (background excepted).

    Segment IDs and names are the schema's class names, colours its colours, and each segment's
    ``SynthBrain.LabelValue`` tag its label value; classes absent from ``labels`` get an empty
    segment so that they can be painted. The segmentation's reference geometry is the label map's
    grid.
    """
    labels = np.asarray(labels)
    schema = _classes(classes)
    known = {v for v, _, _ in schema} | {0}
    present = set(np.unique(labels).tolist())
    if not present <= known:
        bad = sorted(present - known)
        raise _user_error(
            f"label values {bad} are not in the model's schema ({', '.join(f'{v} {n}' for v, n, _ in schema)})"
        )
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", unique_name(scene, name))
    node.CreateDefaultDisplayNodes()
    if parent_transform is not None:
        node.SetAndObserveTransformNodeID(parent_transform.GetID())
    set_segmentation_geometry(node, affine, labels.shape)
    segmentation = node.GetSegmentation()
    for value, class_name, color in schema:
        segment_id = segmentation.AddEmptySegment(class_name, class_name, color)
        segmentation.GetSegment(segment_id).SetTag(LABEL_VALUE_TAG, str(value))
        if value in present:
            mask = oriented_image((labels == value).astype(np.uint8), affine)
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                mask, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
            )
    if provenance is not None:
        mark_synthetic(node, provenance)
    place_in_folder(scene, node)
    return node


def add_empty_segments(segmentation_node, classes: Iterable) -> list[str]:
    """Add an empty segment per class (name, colour, label-value tag) that the segmentation lacks
    (matched by name, case-insensitive); returns the names added."""
    segmentation = segmentation_node.GetSegmentation()
    have = {
        segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName().strip().lower()
        for i in range(segmentation.GetNumberOfSegments())
    }
    added = []
    for value, class_name, color in _classes(classes):
        if class_name.lower() in have:
            continue
        segment_id = segmentation.AddEmptySegment(class_name, class_name, color)
        segmentation.GetSegment(segment_id).SetTag(LABEL_VALUE_TAG, str(value))
        added.append(class_name)
    return added


def segmentation_to_labels(
    segmentation_node, classes: Iterable, reference_volume_node=None
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a segmentation into a label map with the schema's values, on its own geometry.

    Segments are matched to classes by name (case-insensitive); several segments of one name are
    merged, and a segment of any other name is an error (its voxels would silently vanish).
    Where segments overlap, the class with the higher label value wins (lesions over tissue). The
    grid is ``reference_volume_node``'s when given, else the segmentation's reference geometry
    (the volume the user painted on).

    Returns:
        (labels uint8 [i, j, k], affine) with the affine in the segmentation's parent-transform
        coordinates (see :func:`to_world`).
    """
    schema = _classes(classes)
    value_of = {str(c.name).strip().lower(): int(c.value) for c in classes}  # background included: it adds nothing
    names = ", ".join(n for _, n, _ in schema)
    segmentation = segmentation_node.GetSegmentation()
    matched, unknown = [], []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        name = segmentation.GetSegment(segment_id).GetName().strip()
        value = value_of.get(name.lower())
        if value is None:
            unknown.append(name)
        elif value != 0:
            matched.append((value, index, segment_id))
    if unknown:
        raise _user_error(
            f"segment {', '.join(map(repr, unknown))} of {segmentation_node.GetName()} is not a class of the "
            f"model ({names}); rename or delete it"
        )
    if not matched:
        raise _user_error(
            f"segmentation {segmentation_node.GetName()} has no segment named after a model class ({names})"
        )
    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for value, _, segment_id in sorted(matched):  # painted in increasing label value: the higher one wins an overlap
        ids.InsertNextValue(segment_id)
        values.InsertNextValue(value)
    geometry = segmentation_geometry(segmentation_node, reference_volume_node)
    merged = slicer.vtkOrientedImageData()
    if not segmentation_node.GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry, ids, values
    ):
        raise _user_error(
            f"segmentation {segmentation_node.GetName()} could not be converted to a label map; it needs a "
            "binary labelmap representation (Segmentations module: Representations, Binary labelmap, Create)"
        )
    labels, affine = oriented_image_array(merged)
    return labels.astype(np.uint8), affine


def segments_mask(segmentation_node, reference_volume_node) -> np.ndarray:
    """Every segment of a segmentation, whatever its name, as one bool mask on the reference volume's grid."""
    segmentation = segmentation_node.GetSegmentation()
    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for index in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(index))
        values.InsertNextValue(1)
    if ids.GetNumberOfValues() == 0:
        raise _user_error(f"segmentation {segmentation_node.GetName()} has no segment")
    merged = slicer.vtkOrientedImageData()
    geometry = segmentation_geometry(segmentation_node, reference_volume_node)
    if not segmentation_node.GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry, ids, values
    ):
        raise _user_error(f"segmentation {segmentation_node.GetName()} could not be converted to a label map")
    mask, _ = oriented_image_array(merged)
    return mask > 0


def labelmap_to_segmentation(scene, labelmap_node, classes: Iterable, name: str):
    """A new schema segmentation from a label-map volume whose values follow the schema."""
    labels = volume_array(labelmap_node)
    if not np.all(np.mod(labels, 1) == 0):
        raise _user_error(f"{labelmap_node.GetName()} is not an integer label map")
    return labels_to_segmentation(
        scene,
        labels.astype(np.int64),
        volume_affine(labelmap_node),
        classes,
        name,
        parent_transform=labelmap_node.GetParentTransformNode(),
    )


def segmentation_to_schema(scene, segmentation_node, classes: Iterable, name: str, reference_volume_node=None):
    """A new schema segmentation from an existing one (segments matched by name); the input is untouched."""
    labels, affine = segmentation_to_labels(segmentation_node, classes, reference_volume_node)
    return labels_to_segmentation(
        scene, labels, affine, classes, name, parent_transform=segmentation_node.GetParentTransformNode()
    )


def label_volume(scene, segmentation_node, classes: Iterable, name: str):
    """A scalar volume on the segmentation's grid holding its label values (a backdrop to paint on)."""
    labels, affine = segmentation_to_labels(segmentation_node, classes)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", unique_name(scene, name))
    fill_volume(node, labels.astype(np.float32), affine)
    if segmentation_node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(segmentation_node.GetParentTransformNode().GetID())
    node.CreateDefaultDisplayNodes()
    apply_window_level(node, 0.0, float(max(v for v, _, _ in _classes(classes))))
    node.SetAttribute(SOURCE_ATTRIBUTE, segmentation_node.GetID())
    place_in_folder(scene, node)
    return node


# ----------------------------------------------------------------------------------------------
# Sequences
# ----------------------------------------------------------------------------------------------
def add_volume_sequence(
    scene,
    items: Sequence[tuple[str, np.ndarray, np.ndarray, dict | None]],
    name: str,
    index_name: str,
    index_unit: str,
    provenance: dict | None = None,
    sequences_logic=None,
):
    """A sequence of volumes (one per index value) and a browser to scrub through it.

    Args:
        items: (index value text, image [i, j, k], affine, provenance of that item).
        sequences_logic: Slicer's Sequences module logic; it creates the browser's proxy volume
            (the node shown in the views). Without it the proxy appears when the logic first
            updates the browser.

    Returns:
        (sequence node, browser node, proxy node or None).
    """
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", unique_name(scene, name))
    sequence.SetIndexName(index_name)
    sequence.SetIndexUnit(index_unit)
    sequence.SetIndexType(sequence.NumericIndex)
    lo = min(window_level(image)[0] for _, image, _, _ in items)
    hi = max(window_level(image)[1] for _, image, _, _ in items)
    for value, image, affine, item_provenance in items:
        volume = slicer.vtkMRMLScalarVolumeNode()
        volume.SetName(f"{name} {index_name} {value}")
        fill_volume(volume, np.asarray(image, dtype=np.float32), affine)
        mark_synthetic(volume, item_provenance)
        sequence.SetDataNodeAtValue(volume, value)
    mark_synthetic(sequence, provenance)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", unique_name(scene, f"{name} browser"))
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())  # the name in Slicer 5.10 and 5.12
    browser.SetSelectedItemNumber(0)
    sequence.SetAttribute(BROWSER_ATTRIBUTE, browser.GetID())
    browser.SetAttribute(SYNTHETIC_ATTRIBUTE, "true")
    proxy = None
    if sequences_logic is not None:
        sequences_logic.UpdateProxyNodesFromSequences(browser)
        proxy = browser.GetProxyNode(sequence)
    if proxy is not None:
        proxy.CreateDefaultDisplayNodes()
        # One fixed window for every item, so that brightness does not jump while scrubbing.
        apply_window_level(proxy, lo, hi)
        proxy.SetAttribute(SYNTHETIC_ATTRIBUTE, "true")
        place_in_folder(scene, proxy)
    for node in (sequence, browser):
        place_in_folder(scene, node)
    return sequence, browser, proxy
