"""Task builders that work on nodes the user has: an image from a painted segmentation, and lesions
inserted into a loaded scan. Inputs are read from the scene here, on the main thread; ``compute``
runs the pipeline (any thread); ``apply`` adds new nodes and never modifies the inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from SynthBrainLib import errors
from SynthBrainLib.models.card_parts import LabelClass
from SynthBrainLib.models.requests import (  # numpy only: loads before torch is installed
    check_skull_stripped,
    lesion_classes,
)
from SynthBrainLib.models.schema import LESION_NAMES

from . import scene as mrml
from .choices import IMAGE_KIND
from .settings import RunSettings
from .tasks import Task


def require(node, classes: str | tuple[str, ...], message: str) -> None:
    """A one-line error when ``node`` is missing or not one of the MRML ``classes``."""
    classes = (classes,) if isinstance(classes, str) else classes
    if node is None:
        raise errors.ConditionError(message)
    if not hasattr(node, "IsA") or not any(node.IsA(c) for c in classes):
        what = node.GetClassName() if hasattr(node, "GetClassName") else type(node).__name__
        name = node.GetName() if hasattr(node, "GetName") else repr(node)
        raise errors.ConditionError(f"{message} ({name} is a {what})")


def _image_model(logic, settings: RunSettings, sequence: str):
    """(settings with model and seed decided, card, the sequence's name as the card spells it)."""
    modelId = logic.resolveModel(settings.model, IMAGE_KIND)
    card = logic.card(modelId)
    sequence = logic.checkSequence(card, sequence)
    logic.check(card, {}, None, settings)
    return dataclasses.replace(settings, model=modelId, seed=logic.resolveSeed(settings.seed)), card, sequence


def synthesis(
    logic, segmentationNode, settings: RunSettings, *, sequence: str = "T1", referenceVolumeNode=None, alignment="world"
) -> Task:
    """An image rendered from a (painted) segmentation, on the segmentation's own grid.

    The segmentation is read into a label map with the model's label values, on
    ``referenceVolumeNode``'s grid or else the segmentation's reference geometry (the volume it was
    painted on). The pipeline resamples it to model space, synthesises, and resamples the image back,
    so the new volume overlays the segmentation voxel for voxel (under its parent transform too).
    """
    require(segmentationNode, "vtkMRMLSegmentationNode", "select a segmentation to synthesise from")
    if referenceVolumeNode is not None:
        require(referenceVolumeNode, "vtkMRMLScalarVolumeNode", "the reference must be a scalar volume")
    settings, card, sequence = _image_model(logic, settings, sequence)
    labels, affine = mrml.segmentation_to_labels(segmentationNode, card.labels, referenceVolumeNode)
    if not labels.any():
        raise errors.ConditionError(
            f"segmentation {segmentationNode.GetName()} is empty on its grid; paint at least one segment"
        )
    worldAffine = mrml.to_world(segmentationNode, affine)
    parent = segmentationNode.GetParentTransformNode()
    source = {
        "segmentation": segmentationNode.GetName(),
        "reference_volume": referenceVolumeNode.GetName() if referenceVolumeNode else None,
    }
    scene, seed = logic.scene, settings.seed

    def compute(progress, cancel):
        pipe = logic.pipeline(card.id, settings.device, settings.precision)
        return pipe.generate(
            labels,
            affine=worldAffine,
            sequence=sequence,
            seed=seed,
            sampler=settings.sampler,
            steps=settings.steps,
            alignment=alignment,
            progress=progress,
            cancel=cancel,
        )

    def apply(result):
        provenance = dict(result.provenance, slicer=source)
        name = f"SynthBrain {sequence} from {source['segmentation']} seed {seed}"
        return logic.kept(
            mrml.add_result_volume(scene, result.image, affine, name, provenance, parent_transform=parent)
        )

    return Task(f"{card.id} {sequence}", compute, apply, scene=scene)


def lesion_labels(card, segmentationNode, scanVolumeNode) -> np.ndarray:
    """The lesion segments (``wmh``, ``tumour``, ``edema``, ``gdtumour``) painted in a segmentation, as the
    model's label values on the scan's grid; tissue segments are ignored."""
    require(segmentationNode, "vtkMRMLSegmentationNode", "select the segmentation with the painted lesions")
    labels, _ = mrml.segmentation_to_labels(segmentationNode, card.labels, scanVolumeNode)
    lesion_values = [c.value for c in lesion_classes(card)]
    lesions = np.where(np.isin(labels, lesion_values), labels, 0).astype(np.uint8)
    if not lesions.any():
        raise errors.ConditionError(
            f"segmentation {segmentationNode.GetName()} has no painted lesion on {scanVolumeNode.GetName()}; "
            f"paint a segment named {', '.join(LESION_NAMES)}"
        )
    return lesions


def scan_of(scanVolumeNode) -> tuple[np.ndarray, np.ndarray]:
    """(voxels, world affine) of a loaded MR scan, or a one-line error for anything else."""
    require(scanVolumeNode, "vtkMRMLScalarVolumeNode", "select the scan to work on")
    if scanVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise errors.ConditionError(f"{scanVolumeNode.GetName()} is a label map; select an MR scan")
    return mrml.volume_array(scanVolumeNode), mrml.to_world(scanVolumeNode, mrml.volume_affine(scanVolumeNode))


def tissue_of(card, tissueNode, tissueLabels: str, scanVolumeNode):
    """(tissue labels, their world affine or None when on the scan's grid, their scheme) of the
    patient's own segmentation or label map (None: the registered template's tissue is used)."""
    if tissueNode is None:
        return None, None, tissueLabels
    if tissueNode.IsA("vtkMRMLSegmentationNode"):
        tissue, _ = mrml.segmentation_to_labels(tissueNode, card.labels, scanVolumeNode)
        return tissue, None, "model"
    # A label map on its own grid (FreeSurfer's aseg as Slicer loads an .mgz: 256^3, LIA): the
    # pipeline resamples it onto the scan's grid by world coordinates.
    require(tissueNode, "vtkMRMLLabelMapVolumeNode", "the tissue must be a segmentation or a label map")
    return mrml.volume_array(tissueNode), mrml.to_world(tissueNode, mrml.volume_affine(tissueNode)), tissueLabels


def existing_of(existingLesionsNode, scanVolumeNode):
    """(mask, its world affine or None when on the scan's grid) of the patient's own lesions: every
    segment of a segmentation, or the nonzero voxels of a label map; (None, None) without a node."""
    if existingLesionsNode is None:
        return None, None
    require(existingLesionsNode, ("vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"), "the patient's lesions")
    if existingLesionsNode.IsA("vtkMRMLSegmentationNode"):
        return mrml.segments_mask(existingLesionsNode, scanVolumeNode), None
    return mrml.volume_array(existingLesionsNode) != 0, mrml.to_world(
        existingLesionsNode, mrml.volume_affine(existingLesionsNode)
    )


@dataclasses.dataclass
class ScanEditInputs:
    """What an edit of a patient's scan (insertion, removal) reads from the scene before it runs:
    the scan's array and geometry, the image model, the painted lesions and the tissue map."""

    scanVolumeNode: object
    scan: np.ndarray
    affine: np.ndarray
    settings: RunSettings
    card: object
    sequence: str
    lesions: np.ndarray
    tissue: tuple
    parent: object
    localAffine: np.ndarray
    source: dict
    skullStripped: str = "auto"

    @classmethod
    def read(
        cls, logic, scanVolumeNode, segmentationNode, settings, sequence, tissueNode, tissueLabels, verb, skullStripped
    ):
        skullStripped = check_skull_stripped(skullStripped)
        scan, affine = scan_of(scanVolumeNode)
        settings, card, sequence = _image_model(logic, settings, sequence)
        if card.template is None:
            raise errors.ConditionError(f"model {card.id} has no registration template; it cannot {verb}")
        return cls(
            scanVolumeNode, scan, affine, settings, card, sequence,
            lesions=lesion_labels(card, segmentationNode, scanVolumeNode),
            tissue=tissue_of(card, tissueNode, tissueLabels, scanVolumeNode),
            parent=scanVolumeNode.GetParentTransformNode(),
            localAffine=mrml.volume_affine(scanVolumeNode),
            source={"scan": scanVolumeNode.GetName(), "segmentation": segmentationNode.GetName()},
            skullStripped=skullStripped,
        )  # fmt: skip

    def arguments(self) -> tuple[tuple, dict]:
        """The arguments ``insert`` and ``remove`` share: (scan, affine, lesions) and the sequence and
        tissue keywords."""
        tissue, tissueAffine, tissueScheme = self.tissue
        keywords = dict(
            sequence=self.sequence,
            tissue=tissue,
            tissue_affine=tissueAffine,
            tissue_scheme=tissueScheme,
            skull_stripped=self.skullStripped,
        )
        return (self.scan, self.affine, self.lesions), keywords

    def add_copy(self, scene, result, provenance, what: str):
        """The edited image as a new volume beside the scan (:func:`add_scan_copy`), and the brain mask
        the edit used when the scan had its skull (:func:`add_brain_mask`)."""
        add_brain_mask(scene, self.scanVolumeNode, result.brain_mask, self.localAffine, self.parent, provenance)
        return add_scan_copy(
            scene,
            self.scanVolumeNode,
            result.image,
            self.localAffine,
            self.parent,
            provenance,
            what,
            self.settings.seed,
        )


def insertion(
    logic,
    scanVolumeNode,
    segmentationNode,
    settings: RunSettings,
    *,
    sequence: str,
    margin: float = 3.0,
    tissueNode=None,
    tissueLabels: str = "model",
    existingLesionsNode=None,
    skullStripped: str = "auto",
) -> Task:
    """Lesions painted on a patient's scan, inserted into a copy of that scan.

    The pipeline registers its template to the scan, synthesises the lesions in ``sequence`` and
    blends them in (see ``LabelToImagePipeline.insert``). ``apply`` adds a new volume (the scan's type
    and grid, every voxel beyond ``margin`` mm of the lesions unchanged) and a new segmentation of the
    inserted lesions, both marked synthetic, and returns them; the scan and the painted segmentation
    are not modified. ``tissueNode``: the patient's own tissue segmentation or label map
    (``tissueLabels`` ``model`` or ``freesurfer``) instead of the registered template's.
    ``existingLesionsNode``: the patient's own lesions (a segmentation, all its segments, or a label
    map): inserted white-matter lesions then take their appearance instead of the published one.
    ``skullStripped``: ``auto`` (a scan with skull and neck is brain-extracted for the registration;
    the mask is added as a segmentation), ``yes`` or ``no``.
    """
    edit = ScanEditInputs.read(
        logic, scanVolumeNode, segmentationNode, settings, sequence, tissueNode, tissueLabels, "insert lesions",
        skullStripped,
    )  # fmt: skip
    existing, existingAffine = existing_of(existingLesionsNode, scanVolumeNode)
    if existingLesionsNode is not None:
        edit.source["existing_lesions"] = existingLesionsNode.GetName()
    card, scene, seed = edit.card, logic.scene, edit.settings.seed

    def compute(progress, cancel):
        pipe = logic.pipeline(card.id, edit.settings.device, edit.settings.precision)
        args, shared = edit.arguments()
        return pipe.insert(
            *args, **shared, existing_lesions=existing, existing_affine=existingAffine, margin_mm=margin,
            seed=seed, progress=progress, cancel=cancel,
        )  # fmt: skip

    def apply(result):
        provenance = dict(result.provenance, slicer=edit.source)
        volume = edit.add_copy(scene, result, provenance, "with synthetic lesions")
        truth = mrml.labels_to_segmentation(
            scene,
            result.labels,
            edit.localAffine,
            lesion_classes(card),
            f"{edit.source['scan']} inserted lesions seed {seed}",
            provenance,
            parent_transform=edit.parent,
        )
        return logic.kept(volume), logic.kept(truth)

    return Task(f"{card.id} lesion insertion", compute, apply, scene=scene)


def removal(
    logic,
    scanVolumeNode,
    segmentationNode,
    settings: RunSettings,
    *,
    sequence: str,
    margin: float = 3.0,
    tissueNode=None,
    tissueLabels: str = "model",
    skullStripped: str = "auto",
) -> Task:
    """The lesions painted in ``segmentationNode`` (its lesion segments) removed from a copy of the scan:
    replaced by synthetic normal-appearing white matter at the scan's own level and noise (see
    ``LabelToImagePipeline.remove``). ``apply`` adds the new volume (the scan's type and grid, every
    voxel beyond ``margin`` mm of the lesions unchanged, marked synthetic) and returns it; the scan and
    the segmentation are not modified. ``skullStripped`` as for :func:`insertion`."""
    edit = ScanEditInputs.read(
        logic, scanVolumeNode, segmentationNode, settings, sequence, tissueNode, tissueLabels, "remove lesions",
        skullStripped,
    )  # fmt: skip
    card, scene, seed = edit.card, logic.scene, edit.settings.seed

    def compute(progress, cancel):
        pipe = logic.pipeline(card.id, edit.settings.device, edit.settings.precision)
        args, shared = edit.arguments()
        return pipe.remove(*args, **shared, margin_mm=margin, seed=seed, progress=progress, cancel=cancel)

    def apply(result):
        provenance = dict(result.provenance, slicer=edit.source)
        return logic.kept(edit.add_copy(scene, result, provenance, "lesions removed"))

    return Task(f"{card.id} lesion removal", compute, apply, scene=scene)


#: Node attribute of a brain mask: how it was extracted (method, weights' sha256, volume), as JSON.
BRAIN_EXTRACTION_ATTRIBUTE = "SynthBrain.BrainExtraction"
#: The extracted brain's segment: its name and colour (Slicer's "brain" colour of its generic anatomy table).
BRAIN_SEGMENT = LabelClass(1, "brain (extracted)", (250, 250, 225))


def add_brain_mask(scene, scanVolumeNode, mask, localAffine, parent, provenance):
    """The brain mask a run used on a scan with its skull, as a segmentation beside the scan (None when
    there was none): it only guided the registration, the fit and the checks."""
    if mask is None:
        return None
    # not synthetic: the patient's own brain, as the extractor found it; the attribute says how
    node = mrml.labels_to_segmentation(
        scene,
        np.asarray(mask, np.uint8),
        localAffine,
        [BRAIN_SEGMENT],
        f"{scanVolumeNode.GetName()} brain mask",
        None,
        parent_transform=parent,
    )
    found = [v["brain_extraction"] for v in provenance.values() if isinstance(v, dict) and "brain_extraction" in v]
    node.SetAttribute(BRAIN_EXTRACTION_ATTRIBUTE, json.dumps(found[0] if found else {}, sort_keys=True))
    return node


def add_scan_copy(scene, scanVolumeNode, image, localAffine, parent, provenance, what: str, seed):
    """A new volume beside the scan (its type, grid, parent transform and window), marked synthetic."""
    name = f"{scanVolumeNode.GetName()} {what} seed {seed}"
    volume = mrml.add_result_volume(
        scene, image, localAffine, name, provenance, parent_transform=parent, keep_dtype=True
    )
    display, original = volume.GetDisplayNode(), scanVolumeNode.GetDisplayNode()
    if display is not None and original is not None:  # the same window as the scan, to compare
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(original.GetWindow(), original.GetLevel())
    return volume
