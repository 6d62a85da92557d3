"""What every edit of a patient's own scan shares (lesion insertion, lesion removal): the checked
inputs, the model's template registered to the scan, the tissue map carried into the model's space,
the intensity fit to the scanner's scale, and the provenance. Each edit only decides what it changes
inside its margin; every voxel beyond the margin keeps the scan's value, bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import ConditionError, SynthBrainError
from ..extraction.brain_mask import BrainMask, brain_of_scan, brain_only, extraction_record
from ..insertion import blending, registration, segmentations
from ..models.requests import check_skull_stripped, resolve_sequence
from ..outputs.io import check_affine, check_real_array
from ..outputs.resample import one_hot
from .sampling import check_call, check_cancel

#: Default feathering margin (mm) around the painted mask.
DEFAULT_MARGIN_MM = 3.0
MAX_MARGIN_MM = 20.0
#: A lesion mask with more than this share of its voxels outside the registered brain is refused.
MAX_OUTSIDE_BRAIN = 0.1


@dataclass
class ScanEdit:
    """One edit of a scan, prepared: inputs checked and on the scan's grid, the template registered.

    Attributes:
        lesion_map: (X, Y, Z) uint8, the model's lesion values painted on the scan's grid.
        user_tissue: the user's segmentation in the model's labels on the scan's grid, or None.
        reg: the template-to-scan :class:`~SynthBrainLib.insertion.registration.Registration`.
        template_image: the template rendered in the scan's sequence (model space).
        extraction: the brain mask of a scan that has its skull (None for a skull-stripped scan): it
            guides the registration, the fit and the refusals; the scan's own voxels are never changed by it.
    """

    pipe: Any
    scan: np.ndarray
    affine: np.ndarray
    sequence: str
    seed: int
    margin_mm: float
    lesion_map: np.ndarray
    user_tissue: np.ndarray | None
    tissue_scheme: str | None
    reg: Any = None
    template_labels: np.ndarray = None
    template_image: np.ndarray = None
    skull_stripped: str = "auto"
    extraction: BrainMask | None = None
    sequence_fit: dict = field(default_factory=dict)
    _brain_only: np.ndarray | None = field(default=None, repr=False)
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def prepare(
        cls,
        pipe,
        scan,
        affine,
        lesions,
        *,
        sequence: str,
        lesions_affine=None,
        tissue=None,
        tissue_affine=None,
        tissue_scheme: str = "model",
        margin_mm: float = DEFAULT_MARGIN_MM,
        seed: int | None = None,
        skull_stripped="auto",
        progress=None,
        cancel=None,
        stages: int,
        verb: str,
    ) -> "ScanEdit":
        """Check everything, then register the template (progress stages 1 and 2 of ``stages``).

        Raises:
            ConditionError: a bad input, a lesion outside the brain, or a registration that does not fit.
        """
        card = pipe.card
        check_call(progress, cancel, False)
        seq = resolve_sequence(card, sequence)
        if card.template is None or card.template.weights not in pipe.tensors:
            raise ConditionError(
                f"{card.id} has no registration template (card section 'template'), so it cannot {verb} "
                "a patient's scan"
            )
        scan, affine = check_scan(scan, affine)
        check_margin(margin_mm)
        skull_stripped = check_skull_stripped(skull_stripped)
        names = card.label_names
        lesion_map = segmentations.lesion_labels(
            on_scan_grid(lesions, lesions_affine, scan.shape, affine, what="lesion mask"), names, scan.shape
        )
        user_tissue = None
        if tissue is not None:
            tissue = on_scan_grid(tissue, tissue_affine, scan.shape, affine, what="tissue segmentation")
            user_tissue = segmentations.tissue_in_schema(tissue, names, tissue_scheme)
            if user_tissue.shape != scan.shape:
                raise ConditionError(f"tissue segmentation has shape {user_tissue.shape}, the scan {scan.shape}")
        edit = cls(
            pipe,
            scan,
            affine,
            seq,
            pipe.resolve_seed(seed),
            float(margin_mm),
            lesion_map,
            user_tissue,
            tissue_scheme if tissue is not None else None,
            skull_stripped=skull_stripped,
        )
        edit._register(progress, cancel, stages)
        return edit

    def _register(self, progress, cancel, stages: int) -> None:
        pipe, card = self.pipe, self.pipe.card
        self.template_labels = pipe.tensors[card.template.weights]["labels"].cpu().numpy()
        # the template rendered in the scan's sequence is the moving image
        self.template_image = pipe.template_image(self.sequence, self.seed)
        # a scan with its skull is registered (and checked) as its brain alone: the template has no skull
        self.extraction = brain_of_scan(self.scan, self.affine, self.skull_stripped)
        pipe.report(progress, 1, stages)
        check_cancel(cancel)
        self.reg = registration.register(
            self.template_image,
            card.output.affine,
            self.brain_only(),
            self.affine,
            self.template_labels,
            seed=self.seed,
        )
        self._check_sequence()
        pipe.report(progress, 2, stages)
        check_cancel(cancel)
        check_inside_brain(self.lesion_map, self.reg.brain_on_scan, self.affine)

    def _check_sequence(self) -> None:
        """Refuse a scan that another of the model's sequences explains clearly better inside the brain
        (:func:`~SynthBrainLib.insertion.registration.interior_similarity`, by more than
        :data:`~SynthBrainLib.insertion.registration.SEQUENCE_MARGIN`): a T1 given as FLAIR registers well -
        the brain's outline decides that - but its interior is a T1's."""
        pipe, card = self.pipe, self.pipe.card
        images = {self.sequence: self.template_image}
        for name in card.sequences.names:
            if name != self.sequence:
                images[name] = pipe.template_image(name, self.seed)
        if len(images) < 2:
            return
        brain = self.brain
        self.sequence_fit = registration.interior_similarity(
            images, card.output.affine, self.brain_only(), self.affine, brain, self.reg.scan_to_template
        )
        best = max(self.sequence_fit, key=self.sequence_fit.get)
        if self.sequence_fit[best] - self.sequence_fit[self.sequence] > registration.SEQUENCE_MARGIN:
            raise ConditionError(
                f"inside the brain the scan looks like a {best} (r = {self.sequence_fit[best]:.2f}), not a "
                f"{self.sequence} (r = {self.sequence_fit[self.sequence]:.2f}): is it a {self.sequence}?"
            )

    # ---- between the scan and the model's space ----------------------------------------------------
    @property
    def brain(self) -> np.ndarray:
        """(X, Y, Z) bool on the scan's grid: the registered template's brain (inside the extracted
        brain when the scan has its skull)."""
        if self.extraction is None:
            return self.reg.brain_on_scan
        return self.reg.brain_on_scan & self.extraction.mask

    @property
    def brain_mask(self) -> np.ndarray | None:
        """The extracted brain (bool, scan grid) of a scan that had its skull, else None."""
        return None if self.extraction is None else self.extraction.mask

    def brain_only(self) -> np.ndarray:
        """The scan, or for a scan with its skull a float copy that is 0 outside the brain (for registration
        and measuring only; the output is made from the scan itself)."""
        if self._brain_only is None:
            self._brain_only = brain_only(self.scan, self.affine, self.extraction)
        return self._brain_only

    def to_model(self, volume: np.ndarray, linear: bool = True) -> np.ndarray:
        """A volume on the scan's grid carried into the model's space (output grid)."""
        card = self.pipe.card
        on_template = registration.moved_affine(self.affine, self.reg.scan_to_template, into="template")
        return registration.resample_between(volume, on_template, card.output.shape, card.output.affine, linear=linear)

    def to_scan(self, volume: np.ndarray) -> np.ndarray:
        """A model-space volume on the scan's grid (linear)."""
        card = self.pipe.card
        on_scan = registration.moved_affine(card.output.affine, self.reg.scan_to_template, into="scan")
        return registration.resample_between(volume, on_scan, self.scan.shape, self.affine)

    def labels_on_scan(self) -> np.ndarray:
        """The registered template's labels on the scan's grid (nearest neighbour)."""
        card = self.pipe.card
        return registration.labels_on_scan(
            self.template_labels, card.output.affine, self.scan.shape, self.affine, self.reg.scan_to_template
        )

    def tissue_pv(self) -> np.ndarray:
        """(C, X, Y, Z) partial volumes of the tissue in model space: the template's, or the user's."""
        names = self.pipe.card.label_names
        if self.user_tissue is None:
            return one_hot(self.template_labels, len(names))
        return one_hot(self.to_model(self.user_tissue, linear=False).astype(np.uint8), len(names))

    def render(self, partial_volumes: np.ndarray) -> np.ndarray:
        """The model's image of a tissue map in the scan's sequence (model space, this edit's seed)."""
        return self.pipe.generate(partial_volumes, sequence=self.sequence, seed=self.seed).image

    # ---- the scan's own scale ---------------------------------------------------------------------
    def fit(self, synthetic_on_scan: np.ndarray, distance: np.ndarray):
        """The scanner's intensity scale fitted to the synthetic image on the brain in a ring beyond
        the margin (:func:`~SynthBrainLib.insertion.blending.fit_intensities`).

        Raises:
            ConditionError: the intensities do not follow the sequence (wrong sequence?).
        """
        ring = (distance > self.margin_mm) & (distance <= self.margin_mm + blending.FIT_RING_MM) & self.brain
        # On the scan itself, not its bias-corrected copy: the ring is a few mm wide, where the bias field
        # is nearly constant, so the fitted slope carries the local bias and the change lands in the
        # scan's own (uncorrected) scale.
        fit = blending.fit_intensities(synthetic_on_scan, self.scan, ring)
        if fit.slope <= 0:
            raise ConditionError(
                f"the scan's intensities around the lesion do not follow the synthetic {self.sequence} image "
                f"(fitted slope {fit.slope:.3g}); is the scan a {self.sequence}?"
            )
        return fit

    def provenance(self, what: str, description: str, weights: np.ndarray, record: dict) -> dict:
        """The result's provenance: the pipeline's, with ``record`` and this edit's inputs under ``what``."""
        names = self.pipe.card.label_names
        voxel_ml = float(np.prod(blending.voxel_spacing(self.affine))) / 1000.0
        values = [v for v in np.unique(self.lesion_map) if v != 0]
        volumes = {names[v]: round(float(np.count_nonzero(self.lesion_map == v)) * voxel_ml, 4) for v in values}
        scheme = self.tissue_scheme
        section = {
            "lesion_volumes_ml": volumes,
            "margin_mm": self.margin_mm,
            "registration": {
                **self.reg.record(),
                "sequence_fit_pearson_r": {k: round(v, 4) for k, v in self.sequence_fit.items()},
            },
            "tissue": "registered template" if scheme is None else f"user segmentation ({scheme})",
            "brain_extraction": extraction_record(self.skull_stripped, self.extraction),
            **record,
            "voxels_changed_at_most": int(np.count_nonzero(weights > 0)),
            "voxels_untouched": int(weights.size - np.count_nonzero(weights > 0)),
            "input": {
                "shape": list(self.scan.shape),
                "dtype": str(self.scan.dtype),
                "affine": np.asarray(self.affine).round(6).tolist(),
            },
            "seconds": round(time.perf_counter() - self.start, 2),
        }
        extra = {"sequence": self.sequence, "description": f"{description} ({', '.join(volumes)})", what: section}
        return self.pipe.provenance(seed=self.seed, extra=extra)


def check_scan(scan: Any, affine: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        scan = np.asarray(scan)
        check_real_array(scan, "scan")
        affine = check_affine(affine, "the scan")
    except (SynthBrainError, TypeError, ValueError) as exc:
        raise ConditionError(str(exc)) from None
    if scan.ndim != 3:
        raise ConditionError(f"scan has {scan.ndim} dimensions; expected one volume (X, Y, Z)")
    if float(np.ptp(scan)) == 0.0:
        raise ConditionError("scan is constant: there is no image to edit")
    return scan, affine


def check_margin(margin_mm: Any) -> None:
    if isinstance(margin_mm, bool) or not isinstance(margin_mm, (int, float)) or not 0 <= margin_mm <= MAX_MARGIN_MM:
        raise ConditionError(f"margin {margin_mm!r} mm is outside 0–{MAX_MARGIN_MM:g} mm")


def on_scan_grid(volumes, volumes_affine, shape, affine, *, what: str) -> np.ndarray | Mapping[str, np.ndarray]:
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


def check_inside_brain(lesion_map: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> None:
    painted = lesion_map > 0
    outside = int(np.count_nonzero(painted & ~brain))
    total = int(np.count_nonzero(painted))
    if outside > MAX_OUTSIDE_BRAIN * total:
        voxel_ml = float(np.prod(blending.voxel_spacing(affine))) / 1000.0
        raise ConditionError(
            f"{outside} of {total} lesion voxels ({outside * voxel_ml:.2f} mL) lie outside the brain; "
            f"at most {MAX_OUTSIDE_BRAIN:.0%} may"
        )


def existing_mask(existing, existing_affine, scan: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
    """The patient's existing lesions as a bool mask on the scan's grid (nonzero = lesion), or None."""
    if existing is None:
        return None
    mask = np.asarray(on_scan_grid(existing, existing_affine, scan.shape, affine, what="existing-lesion mask")) > 0
    if mask.shape != scan.shape:
        raise ConditionError(f"existing-lesion mask has shape {mask.shape}, the scan {scan.shape}")
    return mask
