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
   lesion, and add the scaled difference to the scan under a weight that is 1 in the mask and falls to
   exactly 0 at ``margin_mm`` from it.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from ..errors import ConditionError, SynthBrainError
from ..insertion import blending, registration, segmentations
from ..models.requests import resolve_sequence
from ..outputs.io import check_affine, check_real_array
from ..outputs.resample import one_hot
from ..outputs.results import SynthesisResult
from .base import SynthesisPipeline
from .sampling import CancelFlag, ProgressCallback, check_call, check_cancel

#: Default feathering margin (mm) around the painted mask.
DEFAULT_MARGIN_MM = 3.0
MAX_MARGIN_MM = 20.0

#: A lesion mask with more than this share of its voxels outside the registered brain is refused.
MAX_OUTSIDE_BRAIN = 0.1

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
    margin_mm: float = DEFAULT_MARGIN_MM,
    seed: int | None = None,
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
        margin_mm: width of the feathered blend around the mask (0-20 mm).
        seed: style / noise seed of the synthesis (``None`` draws one).
        progress / cancel: as for ``generate``.

    Returns:
        :class:`SynthesisResult`: ``image`` the scan with the lesions (its dtype and grid),
        ``labels`` the lesion mask on the scan grid (ground truth), provenance with the
        registration, intensity fit, lesion volumes (mL) and margin.

    Raises:
        ConditionError: empty mask, lesion outside the brain, mask on a grid that misses the scan,
            a registration that does not explain the scan, a sequence the model lacks, or a model
            without a template.
    """
    start = time.perf_counter()
    card = pipe.card
    check_call(progress, cancel, False)
    seq = resolve_sequence(card, sequence)
    if card.template is None or card.template.weights not in pipe.tensors:
        raise ConditionError(
            f"{card.id} has no registration template (card section 'template'), so it cannot place lesions "
            "in a patient's scan"
        )
    scan, affine = _check_scan(scan, affine)
    if isinstance(margin_mm, bool) or not isinstance(margin_mm, (int, float)) or not 0 <= margin_mm <= MAX_MARGIN_MM:
        raise ConditionError(f"margin {margin_mm!r} mm is outside 0–{MAX_MARGIN_MM:g} mm")
    names = card.label_names
    lesion_map = segmentations.lesion_labels(
        _on_scan_grid(lesions, lesions_affine, scan.shape, affine, what="lesion mask"), names, scan.shape
    )
    user_tissue = None
    if tissue is not None:
        tissue = _on_scan_grid(tissue, tissue_affine, scan.shape, affine, what="tissue segmentation")
        user_tissue = segmentations.tissue_in_schema(tissue, names, tissue_scheme)
    if user_tissue is not None and user_tissue.shape != scan.shape:
        raise ConditionError(f"tissue segmentation has shape {user_tissue.shape}, the scan {scan.shape}")
    seed = pipe.resolve_seed(seed)
    template_labels = pipe.tensors[card.template.weights]["labels"].cpu().numpy()
    model_affine = card.output.affine

    # 1. register: the template rendered in the scan's sequence is the moving image
    template_image = pipe.generate(template_labels, sequence=seq, seed=seed).image
    pipe.report(progress, 1, STAGES)
    check_cancel(cancel)
    reg = registration.register(template_image, model_affine, scan, affine, template_labels, seed=seed)
    pipe.report(progress, 2, STAGES)
    check_cancel(cancel)
    brain_on_scan = reg.brain_on_scan
    _check_inside_brain(lesion_map, brain_on_scan, affine)

    # 2. the tissue map in model space, with and without the lesions
    on_template = registration.moved_affine(affine, reg.scan_to_template, into="template")
    if user_tissue is None:
        tissue_pv = one_hot(template_labels, len(names))
    else:
        carried = registration.resample_between(user_tissue, on_template, card.output.shape, model_affine, linear=False)
        tissue_pv = one_hot(carried.astype(np.uint8), len(names))
    lesioned_pv = tissue_pv.copy()
    lesion_total = np.zeros(card.output.shape, np.float32)
    lesion_values = [int(v) for v in np.unique(lesion_map[lesion_map > 0])]
    for value in lesion_values:
        fraction = registration.resample_between(
            (lesion_map == value).astype(np.float32), on_template, card.output.shape, model_affine
        )
        lesioned_pv[value] += fraction
        lesion_total += fraction
    if not lesion_total.any():
        raise ConditionError("the lesion mask falls outside the model's field of view after registration")
    for channel in range(len(names)):
        if channel not in lesion_values:
            lesioned_pv[channel] *= np.clip(1.0 - lesion_total, 0.0, 1.0)
    lesioned_pv /= np.clip(lesioned_pv.sum(axis=0, keepdims=True), 1e-6, None)

    # 3. synthesise both (the healthy one is the template image again when the tissue is the template's)
    healthy = template_image if user_tissue is None else pipe.generate(tissue_pv, sequence=seq, seed=seed).image
    lesioned = pipe.generate(lesioned_pv, sequence=seq, seed=seed).image
    pipe.report(progress, 3, STAGES)
    check_cancel(cancel)

    # 4. match intensities on normal-appearing tissue around the lesion, and blend
    on_scan = registration.moved_affine(model_affine, reg.scan_to_template, into="scan")
    healthy_scan = registration.resample_between(healthy, on_scan, scan.shape, affine)
    change_scan = registration.resample_between(lesioned - healthy, on_scan, scan.shape, affine)
    lesion_back = registration.resample_between(lesion_total, on_scan, scan.shape, affine)
    change_scan = blending.full_contrast(change_scan, lesion_back, lesion_map > 0)
    distance = blending.distance_mm(lesion_map > 0, affine)
    ring = (distance > margin_mm) & (distance <= margin_mm + blending.FIT_RING_MM) & brain_on_scan
    fit = blending.fit_intensities(healthy_scan, scan, ring)
    if fit.slope <= 0:
        raise ConditionError(
            f"the scan's intensities around the lesion do not follow the synthetic {seq} image (fitted slope "
            f"{fit.slope:.3g}); is the scan a {seq}?"
        )
    weights = blending.feather_weights(distance, float(margin_mm))
    image = blending.blend(scan, fit.slope * change_scan, weights)
    pipe.report(progress, 4, STAGES)
    scheme = tissue_scheme if tissue is not None else None
    provenance = _provenance(pipe, scan, affine, lesion_map, seq, seed, margin_mm, reg, fit, weights, scheme)
    provenance["insertion"]["seconds"] = round(time.perf_counter() - start, 2)
    pipe.report(progress, STAGES, STAGES)
    return SynthesisResult(
        image=image,
        affine=affine.copy(),
        provenance=provenance,
        labels=lesion_map,
        label_names=names,
    )


def _check_scan(scan: Any, affine: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        scan = np.asarray(scan)
        check_real_array(scan, "scan")
        affine = check_affine(affine, "the scan")
    except (SynthBrainError, TypeError, ValueError) as exc:
        raise ConditionError(str(exc)) from None
    if scan.ndim != 3:
        raise ConditionError(f"scan has {scan.ndim} dimensions; expected one volume (X, Y, Z)")
    if float(np.ptp(scan)) == 0.0:
        raise ConditionError("scan is constant: there is no image to insert into")
    return scan, affine


def _on_scan_grid(volumes, volumes_affine, shape, affine, *, what: str) -> np.ndarray | Mapping[str, np.ndarray]:
    """Label maps or masks painted on another grid, resampled (nearest) onto the scan's; refused if
    they miss it. Without ``volumes_affine`` they must already be on the scan's grid."""
    if volumes_affine is None:
        return volumes
    try:
        volumes_affine = check_affine(volumes_affine, f"the {what}")
    except SynthBrainError as exc:
        raise ConditionError(str(exc)) from None
    masks = dict(volumes) if isinstance(volumes, Mapping) else {None: np.asarray(volumes)}
    moved = {}
    for name, mask in masks.items():
        mask = np.asarray(mask)
        if mask.ndim != 3:
            raise ConditionError(f"{what} has {mask.ndim} dimensions; expected (X, Y, Z)")
        if mask.shape == tuple(shape) and np.allclose(volumes_affine, affine, atol=1e-4):
            moved[name] = mask
            continue
        out = registration.resample_between(mask, volumes_affine, shape, affine, linear=False)
        if np.count_nonzero(mask) and not np.count_nonzero(out):
            raise ConditionError(f"the {what}'s grid does not overlap the scan: none of its voxels falls inside")
        moved[name] = np.round(out).astype(mask.dtype if mask.dtype.kind in "iub" else np.int64)
    return moved[None] if None in moved else moved


def _check_inside_brain(lesion_map: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> None:
    painted = lesion_map > 0
    outside = int(np.count_nonzero(painted & ~brain))
    total = int(np.count_nonzero(painted))
    if outside > MAX_OUTSIDE_BRAIN * total:
        voxel_ml = float(np.prod(blending.voxel_spacing(affine))) / 1000.0
        raise ConditionError(
            f"{outside} of {total} lesion voxels ({outside * voxel_ml:.2f} mL) lie outside the brain; "
            f"at most {MAX_OUTSIDE_BRAIN:.0%} may"
        )


def _provenance(pipe, scan, affine, lesion_map, seq, seed, margin_mm, reg, fit, weights, tissue_scheme) -> dict:
    names = pipe.card.label_names
    voxel_ml = float(np.prod(blending.voxel_spacing(affine))) / 1000.0
    volumes = {
        names[v]: round(float(np.count_nonzero(lesion_map == v)) * voxel_ml, 4) for v in np.unique(lesion_map) if v != 0
    }
    return pipe.provenance(
        seed=seed,
        extra={
            "sequence": seq,
            "description": f"{seq} scan with synthetic lesions inserted ({', '.join(volumes)})",
            "insertion": {
                "lesion_volumes_ml": volumes,
                "margin_mm": float(margin_mm),
                "registration": reg.record(),
                "intensity_fit": fit.record(),
                "tissue": "registered template" if tissue_scheme is None else f"user segmentation ({tissue_scheme})",
                "voxels_changed_at_most": int(np.count_nonzero(weights > 0)),
                "voxels_untouched": int(weights.size - np.count_nonzero(weights > 0)),
                "input": {
                    "shape": list(scan.shape),
                    "dtype": str(scan.dtype),
                    "affine": np.asarray(affine).round(6).tolist(),
                },
            },
        },
    )
