"""Lesions removed from a patient's scan (lesion filling): the masked lesions are replaced by synthetic
normal-appearing tissue of the classes around them, in the scan's own intensity scale and noise, and
every voxel beyond the margin keeps the scan's value. Uses: FreeSurfer or registration on MS brains,
a healthy counterfactual, teaching (FSL's ``lesion_filling`` fills with sampled white-matter values;
this renders the tissue the lesion hides with the model).

The steps (shared with insertion: :class:`~SynthBrainLib.pipelines.scan_editing.ScanEdit`):

1. register the model's template to the scan (refused when it does not fit);
2. the healthy tissue map in model space: the template's, or the user's own segmentation with every
   lesion class replaced by the nearest tissue class; where the removed lesions lie, white matter
   (a white-matter lesion hides white matter; the template's classes right at a periventricular
   lesion would put ventricle there);
3. render it in the scan's sequence, carry it to the scan, fit the scanner's scale on the brain
   beyond the margin, and bring it to the level of the white matter right around the lesion;
4. give it the scan's texture (noise drawn with the seed, to the standard deviation the scan has
   around the lesion) and blend it in under a weight that is 1 in the mask and 0 at the margin,
   beyond the mask only on white matter (see :func:`_fill`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConditionError
from ..insertion import blending
from ..insertion.appearance import RING_MM
from ..models.schema import LESION_NAMES
from ..outputs.resample import one_hot
from ..outputs.results import SynthesisResult
from .base import SynthesisPipeline
from .sampling import CancelFlag, ProgressCallback, check_cancel
from .scan_editing import DEFAULT_MARGIN_MM, ScanEdit

STAGES = 5


def remove_lesions(
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
    skull_stripped: str | bool = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
) -> SynthesisResult:
    """``LabelToImagePipeline.remove``: remove the lesions of ``lesions`` from a real scan; every voxel
    farther than ``margin_mm`` from the mask keeps the scan's own value (same dtype, bit for bit).

    Args:
        pipe: the label-to-image pipeline (``self`` when called as ``pipe.remove``).
        scan: (X, Y, Z) the patient's T1, FLAIR or T2 (any grid).
        affine: the scan's 4x4 voxel-to-RAS matrix.
        lesions: the lesions to remove, as for insertion: a label map with the model's lesion values
            (every one of them is removed) or masks by lesion name.
        sequence, lesions_affine, tissue, tissue_affine, tissue_scheme, margin_mm, seed, skull_stripped,
            progress, cancel: as for :func:`~SynthBrainLib.pipelines.lesion_insertion.insert_lesions`.

    Returns:
        :class:`SynthesisResult`: ``image`` the scan without the lesions (its dtype and grid),
        ``labels`` the removed lesions' mask, provenance with the registration, the fit and the fill.

    Raises:
        ConditionError: as for insertion (empty mask, a mask outside the brain, a registration that
            does not explain the scan, ...).
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
        verb="remove lesions from",
    )
    mask = edit.lesion_map > 0
    healthy = edit.render(_healed(edit))
    pipe.report(progress, 3, STAGES)
    check_cancel(cancel)

    healthy_scan = edit.to_scan(healthy)
    distance = blending.distance_mm(mask, edit.affine)
    fit = edit.fit(healthy_scan, distance)
    fill, where, record = _fill(edit, fit.slope * healthy_scan + fit.intercept, mask, distance)
    weights = blending.feather_weights(distance, edit.margin_mm) * where
    image = blending.blend(edit.scan, fill - edit.scan.astype(np.float64), weights)
    pipe.report(progress, 4, STAGES)
    provenance = edit.provenance(
        "removal",
        f"{edit.sequence} scan with lesions removed (synthetic fill)",
        weights,
        {"intensity_fit": fit.record(), "fill": record},
    )
    pipe.report(progress, STAGES, STAGES)
    return SynthesisResult(
        image=image,
        affine=edit.affine.copy(),
        provenance=provenance,
        labels=edit.lesion_map,
        label_names=pipe.card.label_names,
        brain_mask=edit.brain_mask,
    )


def _tissue_labels(edit: ScanEdit) -> np.ndarray:
    """The tissue labels in model space: the template's, or the user's with every lesion class replaced
    by the nearest tissue class (a lesion the user's segmentation also labels - FreeSurfer's WM
    hypointensities - is gone too)."""
    if edit.user_tissue is None:
        return edit.template_labels.astype(np.uint8)
    names = edit.pipe.card.label_names
    labels = edit.to_model(edit.user_tissue, linear=False).astype(np.uint8)
    lesion = np.isin(labels, [i for i, n in enumerate(names) if n in LESION_NAMES])
    if lesion.any() and (~lesion & (labels > 0)).any():
        _, nearest = ndi.distance_transform_edt(lesion | (labels == 0), return_indices=True)
        labels[lesion] = labels[tuple(index[lesion] for index in nearest)]
    return labels


def _healed(edit: ScanEdit) -> np.ndarray:
    """(C, X, Y, Z) partial volumes of the healthy tissue in model space: white matter where the
    removed lesions lie (their fraction of each model voxel), the tissue labels elsewhere."""
    names = edit.pipe.card.label_names
    partial = one_hot(_tissue_labels(edit), len(names))
    lesion = np.clip(edit.to_model((edit.lesion_map > 0).astype(np.float32)), 0.0, 1.0)
    partial *= 1.0 - lesion
    partial[names.index("wm")] += lesion
    return partial


def _fill(edit: ScanEdit, synthetic: np.ndarray, mask: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, dict]:
    """What the removed lesions are replaced by: the scan's own white-matter level around them, with the
    model's texture and the scan's noise; and where, around them, the scan is pulled towards it.

    * The level: each brain voxel 2-6 mm from the lesions is classed by its own intensity (the nearest
      of the levels the fitted synthetic image has for csf, grey, white and deep grey matter); the
      median of the scan's white-matter voxels there. (The template's classes are not used for this:
      at a periventricular lesion they put ventricle where the scan has white matter, and the model's
      2.5 mm voxels mix the two.)
    * The texture: the model's image with its smooth part (2 mm) replaced by that level, plus noise
      drawn with the edit's seed (Gaussian, correlated over half a voxel) up to the high-frequency
      deviation the scan has around the lesion.
    * Beyond the mask, within the margin, only voxels the intensity classes call white matter are pulled
      towards the fill (a lesion's faint rim); ventricle and cortex keep their values.

    Returns:
        (fill, where): the fill on the scan grid, and a bool map of where it may be blended in.
    """
    names = edit.pipe.card.label_names
    spacing = blending.voxel_spacing(edit.affine)
    scan = edit.scan.astype(np.float64)
    on_scan = edit.user_tissue if edit.user_tissue is not None else edit.labels_on_scan()
    classes = [names.index(n) for n in ("csf", "gm", "wm", "dgm") if n in names]
    levels = {
        c: float(np.median(synthetic[(on_scan == c) & edit.brain]))
        for c in classes
        if ((on_scan == c) & edit.brain).any()
    }
    wm = names.index("wm")
    if wm not in levels:
        raise ConditionError("the registered tissue has no white matter to take the fill's level from")
    values, keys = np.array(list(levels.values())), np.array(list(levels))

    def is_white(region: np.ndarray) -> np.ndarray:
        return keys[np.abs(scan[region][:, None] - values[None, :]).argmin(axis=1)] == wm

    ring = (distance > RING_MM[0]) & (distance <= RING_MM[1]) & edit.brain
    white = scan[ring][is_white(ring)]
    if white.size < 10:
        raise ConditionError(
            "the lesion has no normal-appearing white matter 2-6 mm around it to match the scan's level"
        )
    level = _centred_level(scan[ring], float(np.median(white)), wm, levels)
    sigma = 2.0 / spacing  # the model's texture: what a 2 mm smoothing removes
    fill = level * (1.0 + (synthetic - ndi.gaussian_filter(synthetic, sigma)) / levels[wm])
    margin = (distance > 0) & (distance <= edit.margin_mm) & edit.brain
    where = mask.copy()
    where[margin] = is_white(margin)
    scan_noise = _detail(scan, ring)
    sd = float(np.sqrt(max(scan_noise**2 - _detail(fill, mask) ** 2, 0.0)))
    if sd > 0:
        rng = np.random.default_rng(edit.seed)
        noise = ndi.gaussian_filter(rng.standard_normal(scan.shape), 0.5)
        fill = fill + noise * (sd / max(_detail(noise, where), 1e-12))
    record = {
        "method": "the scan's white-matter level 2-6 mm around the lesions (voxels classed by intensity), the "
        "model's texture of white matter rendered where the lesions were, seeded noise; beyond the mask only "
        "white-matter voxels within the margin are pulled towards it",
        "white_matter_level": round(level, 5),
        "white_matter_voxels_around": int(white.size),
        "noise_sd": round(sd, 5),
        "scan_detail_sd_around": round(scan_noise, 5),
        "margin_voxels_pulled": int(np.count_nonzero(where & ~mask)),
        "lesion_ml": round(float(mask.sum() * np.prod(spacing) / 1000.0), 4),
    }
    return fill, where, record


def _centred_level(values: np.ndarray, start: float, wm: int, levels: dict) -> float:
    """The white matter's level in ``values``: the median of the values within half the distance to the
    nearest other class's level, on both sides, around the level found so far (a few rounds from
    ``start``). Classing each voxel by its nearest level cuts white matter's distribution on one side
    only when a neighbouring class is close (on T2 grey matter lies just above white matter, and nothing
    below it), which biases a plain median of the voxels classed white."""
    others = [abs(v - levels[wm]) for c, v in levels.items() if c != wm]
    half = 0.5 * min(others) if others else np.inf
    level = start
    for _ in range(5):
        near = values[np.abs(values - level) <= half]
        if near.size < 10:
            break
        level = float(np.median(near))
    return level


def _detail(values: np.ndarray, region: np.ndarray) -> float:
    """Standard deviation of the high-frequency part (value - its 1-voxel Gaussian smoothing) on ``region``."""
    detail = values - ndi.gaussian_filter(values, 1.0)
    return float(detail[region].std()) if region.any() else 0.0
