"""Segmentations to paint on, in a model's label schema (main thread, instant): a template from the
user's label map or segmentation, the volume the Segment Editor paints on, and empty lesion
segments added to a segmentation drawn on a scan."""

from __future__ import annotations

from SynthBrainLib import errors
from SynthBrainLib.models.requests import lesion_classes

from . import scene as mrml
from .choices import IMAGE_KIND, LABELS_KIND
from .image_tasks import require


def schema_card(logic, model: str | None):
    """The card whose label schema templates follow: the label-to-image model's by default."""
    if model is not None:
        card = logic.card(model)
    else:
        modelId = logic.defaultModel(IMAGE_KIND) or logic.defaultModel(LABELS_KIND)
        if modelId is None:
            raise errors.ModelNotFoundError(
                "no label-to-image or label generator model is installed; import one in the Model section"
            )
        card = logic.card(modelId)
    if not card.labels:
        raise errors.ConditionError(f"model {card.id} has no label schema")
    return card


def template_from_node(logic, node, *, model: str | None = None, name: str | None = None):
    """A new schema segmentation (to paint on) from a label-map volume or a segmentation.

    Label-map values must follow the schema; segments are matched to classes by name. The input
    node is not modified.
    """
    require(
        node, ("vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"), "select a segmentation or a label-map volume"
    )
    card = schema_card(logic, model)
    name = name or f"SynthBrain template from {node.GetName()}"
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        return mrml.labelmap_to_segmentation(logic.scene, node, card.labels, name)
    return mrml.segmentation_to_schema(logic.scene, node, card.labels, name)


def paint_volume(logic, segmentationNode, *, model: str | None = None):
    """A scalar volume of the template's label values on its grid, to paint on in the Segment Editor."""
    require(segmentationNode, "vtkMRMLSegmentationNode", "select a segmentation to paint")
    card = schema_card(logic, model)
    return mrml.label_volume(logic.scene, segmentationNode, card.labels, f"{segmentationNode.GetName()} grid")


def add_lesion_segments(logic, segmentationNode, *, model: str | None = None) -> list[str]:
    """Add the empty lesion segments (in the model's colours) that ``segmentationNode`` lacks."""
    require(segmentationNode, "vtkMRMLSegmentationNode", "select a segmentation to paint lesions in")
    card = schema_card(logic, model)
    return mrml.add_empty_segments(segmentationNode, lesion_classes(card))
