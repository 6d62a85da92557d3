"""Template-to-scan registration with SimpleITK (rigid, then affine), reported as one RAS matrix.

SimpleITK works in LPS physical coordinates with (z, y, x) arrays; everything here takes and returns
(X, Y, Z) arrays with 4x4 voxel-to-RAS affines, and the result is the matrix ``scan_to_template``
(RAS mm -> RAS mm), so resampling either way is an affine composition (see :func:`moved_affine`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import ConditionError
from .blending import distance_mm

#: RAS <-> LPS (an involution)
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Below this similarity (Pearson r between the scan and the registered template rendering in the
#: scan's sequence, over the template's brain dilated by 5 mm) the registration is taken to have
#: failed. Measured on phantoms (docs/evaluation/lesion-insertion.md): registered 0.79-0.89; the same
#: results moved by 15 mm or turned by 20 degrees 0.34-0.66.
MIN_SIMILARITY = 0.7

#: The check region: the template's brain dilated by this much.
CHECK_DILATION_MM = 5.0


@dataclass(frozen=True)
class Registration:
    """Where the template lies in the scan.

    Attributes:
        scan_to_template: 4x4, RAS mm of the scan -> RAS mm of the template (model) space.
        similarity: Pearson r between the scan and the registered template image (see :data:`MIN_SIMILARITY`).
        stages: the stages run, e.g. ``("rigid", "affine")``.
        metric: final Mattes mutual information per stage (lower is better).
        seconds: wall time.
        brain_on_scan: (X, Y, Z) bool on the scan grid, where the registered template's brain lies
            (computed once for the similarity check; callers reuse it).
    """

    scan_to_template: np.ndarray
    similarity: float
    stages: tuple[str, ...]
    metric: tuple[float, ...]
    seconds: float
    brain_on_scan: np.ndarray = field(compare=False, repr=False, default=None)

    def record(self) -> dict:
        """JSON-ready parameters for provenance."""
        return {
            "method": "SimpleITK Mattes mutual information, " + " then ".join(self.stages),
            "scan_to_template_ras": np.round(self.scan_to_template, 6).tolist(),
            "similarity_pearson_r": round(self.similarity, 4),
            "final_metric": [round(m, 5) for m in self.metric],
            "seconds": round(self.seconds, 2),
        }


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """An (X, Y, Z) array on a voxel-to-RAS grid as a SimpleITK image (float32)."""
    affine = np.asarray(affine, np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    lps = _FLIP @ affine
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array.astype(np.float32), (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    return image


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 LPS matrix of an affine SimpleITK transform (read off four mapped points)."""
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    matrix = np.eye(4)
    matrix[:3, 3] = mapped[0]
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    return matrix


def moved_affine(affine: np.ndarray, scan_to_template: np.ndarray, *, into: str) -> np.ndarray:
    """The affine under which data of one space lies in the other's world coordinates.

    ``into="template"``: data on the scan grid (``affine``) seen in template space; resample it with
    this affine onto the template grid. ``into="scan"``: template-grid data seen in scan space.
    """
    if into == "template":
        return scan_to_template @ affine
    if into == "scan":
        return np.linalg.inv(scan_to_template) @ affine
    raise ValueError(into)


def _run_stage(fixed, moving, initial, *, shrink, seed: int, iterations: int) -> tuple[sitk.Transform, float]:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)  # regular sampling: the same points on every run
    method.SetMetricSamplingPercentage(0.25, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel([max(s / 2.0, 0.0) for s in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    return result, float(method.GetMetricValue())


def register(
    template: np.ndarray,
    template_affine: np.ndarray,
    scan: np.ndarray,
    scan_affine: np.ndarray,
    template_labels: np.ndarray,
    *,
    min_similarity: float = MIN_SIMILARITY,
    seed: int = 0,
) -> Registration:
    """Register ``template`` (an image of the template's labels in the scan's sequence) to ``scan``.

    Args:
        template: (X, Y, Z) image on the template (model) grid; background 0.
        template_affine: its voxel-to-RAS affine.
        scan: (X, Y, Z) the patient's scan, any grid (oblique and anisotropic included).
        scan_affine: its voxel-to-RAS affine.
        template_labels: (X, Y, Z) integer labels on the template grid (0 = background), used to check
            the result.
        min_similarity: refuse below this (see :data:`MIN_SIMILARITY`).
        seed: sampling seed (the same inputs and seed give the same matrix).

    Raises:
        ConditionError: the registered template does not match the scan (similarity too low).
    """
    start = time.perf_counter()
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    # One thread: the metric's sums then run in one order, so the same inputs give the same matrix.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(template, template_affine, scan, scan_affine, template_labels, min_similarity, seed, start)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


#: The scan is registered at about this voxel size (mm): the template is coarser still (2.5 mm for the
#: demo), so finer voxels only cost time (a 1 mm scan took 19 s instead of 3 s, to the same matrix).
REGISTRATION_SPACING_MM = 2.0


def _register(template, template_affine, scan, scan_affine, template_labels, min_similarity, seed, start):
    fixed = to_sitk(_robust_unit(scan), scan_affine)
    spacing = np.array(fixed.GetSpacing())
    factors = [max(1, int(f)) for f in np.floor(REGISTRATION_SPACING_MM / spacing + 1e-6)]
    if max(factors) > 1:
        fixed = sitk.BinShrink(fixed, factors)  # block averages: no aliasing
    moving = to_sitk(template, template_affine)
    # Start from the centres of mass (the scan's head and the template's brain overlap roughly).
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    rigid, rigid_metric = _run_stage(fixed, moving, initial, shrink=(4, 2), seed=seed, iterations=150)
    affine_init = sitk.AffineTransform(3)
    lps = transform_matrix(rigid)
    affine_init.SetMatrix(tuple(lps[:3, :3].ravel()))
    affine_init.SetTranslation(tuple(lps[:3, 3]))
    affine, affine_metric = _run_stage(fixed, moving, affine_init, shrink=(2, 1), seed=seed, iterations=150)
    scan_to_template = _FLIP @ transform_matrix(affine) @ _FLIP
    brain = labels_on_scan(template_labels, template_affine, scan.shape, scan_affine, scan_to_template) > 0
    r = similarity(template, template_affine, scan, scan_affine, brain, scan_to_template)
    reg = Registration(
        scan_to_template=scan_to_template,
        similarity=r,
        stages=("rigid", "affine"),
        metric=(rigid_metric, affine_metric),
        seconds=time.perf_counter() - start,
        brain_on_scan=brain,
    )
    if r < min_similarity:
        raise ConditionError(
            f"the template could not be aligned to the scan (similarity r = {r:.2f}, below {min_similarity:.2f}); "
            "nothing was inserted: is it a brain scan of the given sequence?"
        )
    return reg


def similarity(template, template_affine, scan, scan_affine, brain_on_scan, scan_to_template) -> float:
    """Pearson r between the scan and the template image carried onto the scan grid, over the
    template's brain (``brain_on_scan``, bool on the scan grid) dilated by :data:`CHECK_DILATION_MM`
    (0 when that region is nearly empty)."""
    region = distance_mm(brain_on_scan, scan_affine) <= CHECK_DILATION_MM
    moved = moved_affine(template_affine, scan_to_template, into="scan")
    return _correlation(scan, scan_affine, template, moved, region)


def _correlation(scan, scan_affine, image, image_affine, region) -> float:
    """Pearson r between ``scan`` and ``image`` resampled onto its grid, over ``region`` (0 when the
    region has under 100 voxels or either side is constant there)."""
    if region.sum() < 100:
        return 0.0
    a = scan[region].astype(np.float64)
    b = resample_between(image, image_affine, scan.shape, scan_affine)[region].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


#: The sequence check compares the scan with the template inside the brain, deeper than this (mm):
#: the brain's edge against its background correlates with any sequence's template.
INTERIOR_MM = 3.0


#: A scan is refused as not of the given sequence when another sequence's template explains its brain's
#: interior better by more than this (Pearson r). Measured (docs/evaluation/lesion-insertion.md, "Clinical
#: scans"), on 12 phantoms and 7 real scans each given as every sequence: the right sequence was beaten by
#: at most 0.049 (a phantom FLAIR, whose renderer makes grey and white matter nearly equal, like a T1); every
#: wrong sequence of the real scans by 0.145 or more, every T1/T2 and T2/FLAIR mix-up of the phantoms by 0.299.
SEQUENCE_MARGIN = 0.1


def interior_similarity(images, template_affine, scan, scan_affine, brain_on_scan, scan_to_template) -> dict:
    """Pearson r between the scan and each of ``images`` (sequence -> template image, model space),
    carried onto the scan with the registration, inside the brain deeper than :data:`INTERIOR_MM`.

    Inside the brain the sequences differ (CSF dark on T1 and FLAIR, bright on T2; grey matter darker
    than white on T1, brighter on FLAIR and T2), so the right sequence explains it best
    (:data:`SEQUENCE_MARGIN`).
    """
    inner = distance_mm(~brain_on_scan, scan_affine) > INTERIOR_MM
    moved = moved_affine(template_affine, scan_to_template, into="scan")
    return {name: _correlation(scan, scan_affine, image, moved, inner) for name, image in images.items()}


def labels_on_scan(labels, template_affine, scan_shape, scan_affine, scan_to_template) -> np.ndarray:
    """Template labels carried onto the scan grid (nearest neighbour)."""
    image = to_sitk(labels.astype(np.float32), moved_affine(template_affine, scan_to_template, into="scan"))
    reference = to_sitk(np.zeros(scan_shape, np.float32), scan_affine)
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    return np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0)).astype(labels.dtype)


def resample_between(
    array: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray, *, linear: bool = True
) -> np.ndarray:
    """Resample (X, Y, Z) data from one grid onto another (both in the same world), 0 outside."""
    image = to_sitk(array.astype(np.float32), affine)
    reference = to_sitk(np.zeros(tuple(shape), np.float32), target_affine)
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(image, reference, sitk.Transform(), interp, 0.0)
    return np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))


def _robust_unit(scan: np.ndarray) -> np.ndarray:
    """The scan scaled by its 99.5th percentile of non-zero voxels (registration sees similar ranges)."""
    values = scan[scan > 0]
    top = float(np.percentile(values, 99.5)) if values.size else 1.0
    return np.clip(scan / max(top, 1e-6), 0.0, 1.5).astype(np.float32)
