"""Lesions painted on a patient's scan, synthesised by a label-to-image model and blended into that
scan, with every voxel beyond the margin left as it was.

The steps (each a function of :mod:`SynthBrainLib.insertion`):

1. render the model's template labels in the scan's sequence and register that image to the scan
   (rigid, then affine; refused when the carried-over labels do not explain the scan);
2. carry the painted lesions into the model's space (partial volumes) and lay them over the template's
   tissue classes - or over the user's own segmentation of the scan;
3. synthesise the same tissue map with and without the lesions (same seed): their difference is what
   the lesion changes;
4. fit the scan's intensity scale to the synthetic one on normal-appearing tissue in a ring around the
   lesion; a white-matter lesion then takes the appearance of real ones (contrast to the tissue
   around it, penumbra, texture: :mod:`SynthBrainLib.insertion.appearance`) - the patient's own
   lesions when their mask is given, else published values - keeping the model's texture; the change
   is added to the scan under a weight that is 1 in the mask and falls to exactly 0 at ``margin_mm``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import ConditionError
from ..insertion import appearance, blending
from ..outputs.results import SynthesisResult
from .base import SynthesisPipeline
from .sampling import CancelFlag, ProgressCallback, check_cancel
from .scan_editing import DEFAULT_MARGIN_MM, ScanEdit, existing_mask

STAGES = 5


def insert_lesions(
    pipe: SynthesisPipeline,
    scan: np.ndarray,
    affine: np.ndarray,
    lesions: np.ndarray | Mapping[str, np.ndarray],
    *,
    sequence: str,
    lesions_affine: np.ndarray | None = None,
    tissue: np.ndarray | None = None,
    tissue_affine: np.ndarray | None = None,
    tissue_scheme: str = "model",
    existing_lesions: np.ndarray | None = None,
    existing_affine: np.ndarray | None = None,
    margin_mm: float = DEFAULT_MARGIN_MM,
    seed: int | None = None,
    skull_stripped: str | bool = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
) -> SynthesisResult:
    """``LabelToImagePipeline.insert``: insert synthetic lesions into a real scan; every voxel farther
    than ``margin_mm`` from the painted mask keeps the scan's own value (same dtype, bit for bit).

    Args:
        pipe: the label-to-image pipeline (``self`` when called as ``pipe.insert``).
        scan: (X, Y, Z) the patient's T1, FLAIR or T2 (any grid: oblique, anisotropic).
        affine: the scan's 4x4 voxel-to-RAS matrix.
        lesions: a label map on the scan grid with the model's lesion values (``wmh``, ``tumour``,
            ``edema``, ``gdtumour``: 6-9 in the brainSPADE schema), or masks by lesion name.
        sequence: the scan's sequence, one of the card's (e.g. ``FLAIR``).
        lesions_affine: the masks' affine when they were painted on another grid (resampled,
            nearest neighbour; refused if they miss the scan).
        tissue: the patient's own segmentation (on the scan grid, or on ``tissue_affine``'s),
            instead of the registered template's tissue classes.
        tissue_affine: the segmentation's affine when it lies on another grid (nearest neighbour).
        tissue_scheme: ``model`` (the card's label values) or ``freesurfer`` (FreeSurfer aseg /
            SynthSeg values, mapped by :data:`~SynthBrainLib.insertion.segmentations.FREESURFER_TO_SCHEMA`).
        existing_lesions: a mask of the patient's own lesions (nonzero = lesion), on the scan's grid or
            on ``existing_affine``'s: an inserted white-matter lesion then takes their contrast,
            penumbra and texture instead of the published values.
        margin_mm: width of the feathered blend around the mask (0-20 mm).
        seed: style / noise seed of the synthesis (``None`` draws one).
        skull_stripped: ``"auto"`` (default: a scan holding more than a brain is brain-extracted first),
            ``"yes"`` or ``"no"``. The brain mask (deepbet, :mod:`SynthBrainLib.extraction`) only guides
            the registration, the fit and the refusals: skull and neck keep their values bit for bit.
        progress / cancel: as for ``generate``.

    Returns:
        :class:`SynthesisResult`: ``image`` the scan with the lesions (its dtype and grid),
        ``labels`` the lesion mask on the scan grid (ground truth), provenance with the
        registration, intensity fit, appearance, lesion volumes (mL) and margin.

    Raises:
        ConditionError: empty mask, lesion outside the brain, mask on a grid that misses the scan,
            a registration that does not explain the scan, a sequence the model lacks, or a model
            without a template.
    """
    edit = ScanEdit.prepare(
        pipe,
        scan,
        affine,
        lesions,
        sequence=sequence,
        lesions_affine=lesions_affine,
        tissue=tissue,
        tissue_affine=tissue_affine,
        tissue_scheme=tissue_scheme,
        margin_mm=margin_mm,
        seed=seed,
        skull_stripped=skull_stripped,
        progress=progress,
        cancel=cancel,
        stages=STAGES,
        verb="place lesions in",
    )
    existing = existing_mask(existing_lesions, existing_affine, edit.scan, edit.affine)
    names, lesion_map = pipe.card.label_names, edit.lesion_map

    # the tissue map in model space, with and without the lesions
    tissue_pv = edit.tissue_pv()
    lesioned_pv = tissue_pv.copy()
    lesion_total = np.zeros(pipe.card.output.shape, np.float32)
    lesion_values = [int(v) for v in np.unique(lesion_map[lesion_map > 0])]
    for value in lesion_values:
        fraction = edit.to_model((lesion_map == value).astype(np.float32))
        lesioned_pv[value] += fraction
        lesion_total += fraction
    if not lesion_total.any():
        raise ConditionError("the lesion mask falls outside the model's field of view after registration")
    for channel in range(len(names)):
        if channel not in lesion_values:
            lesioned_pv[channel] *= np.clip(1.0 - lesion_total, 0.0, 1.0)
    lesioned_pv /= np.clip(lesioned_pv.sum(axis=0, keepdims=True), 1e-6, None)

    # synthesise both (the healthy one is the template image again when the tissue is the template's)
    healthy = edit.template_image if edit.user_tissue is None else edit.render(tissue_pv)
    lesioned = edit.render(lesioned_pv)
    pipe.report(progress, 3, STAGES)
    check_cancel(cancel)

    # match intensities on normal-appearing tissue around the lesion, take a real lesion's look, blend
    change_scan = blending.full_contrast(edit.to_scan(lesioned - healthy), edit.to_scan(lesion_total), lesion_map > 0)
    distance = blending.distance_mm(lesion_map > 0, edit.affine)
    fit = edit.fit(edit.to_scan(healthy), distance)
    weights = blending.feather_weights(distance, edit.margin_mm)
    change, look = _real_appearance(
        pipe, edit.scan, edit.affine, fit.slope * change_scan, weights, lesion_map, existing, edit.brain, edit.sequence
    )
    image = blending.blend(edit.scan, change, weights)
    pipe.report(progress, 4, STAGES)
    record = {"intensity_fit": fit.record(), "appearance": look}
    provenance = edit.provenance("insertion", f"{edit.sequence} scan with synthetic lesions inserted", weights, record)
    pipe.report(progress, STAGES, STAGES)
    return SynthesisResult(
        image=image,
        affine=edit.affine.copy(),
        provenance=provenance,
        labels=lesion_map,
        label_names=names,
        brain_mask=edit.brain_mask,
    )


def _real_appearance(pipe, scan, affine, change, weights, lesion_map, existing, brain, sequence):
    """White-matter lesions take the appearance of real ones: the patient's own (``existing``) or the
    published values for the sequence. Other lesion classes (tumours) keep the model's rendering:
    there is no reference for them. Returns (change, provenance record)."""
    names = pipe.card.label_names
    wmh = lesion_map == names.index("wmh") if "wmh" in names else np.zeros(lesion_map.shape, bool)
    if not wmh.any() or np.count_nonzero(lesion_map) != np.count_nonzero(wmh):
        return change, {"source": "model rendering (lesion classes without a reference appearance)"}
    if existing is not None:
        target = appearance.of_patient(scan, affine, existing, brain, sequence)
    else:
        target = appearance.reference(sequence)
    if target is None:
        return change, {"source": f"model rendering (no reference appearance for {sequence})"}
    avoid = wmh if existing is None else (wmh | existing)
    shaped, record = appearance.shape_change(scan, change, weights, wmh, affine, brain, target, avoid=avoid)
    return shaped, record
