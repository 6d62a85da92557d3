"""Image-based volume estimators for skull-stripped T1 images in [0, 1].

They use only the image and its affine (no labels), so they apply equally to phantoms and to
model-generated images. Pipeline shared by the estimators:

1. :func:`brain_mask_from_image`: voxels brighter than a small threshold, holes filled, largest
   connected component (the image must be skull-stripped: background 0).
2. :func:`bias_correct`: a smooth multiplicative bias estimated from white-matter-like voxels
   (normalised Gaussian convolution, ~20 mm), iterated twice.
3. :func:`tissue_means`: CSF / GM / WM mean intensities by 1-D k-means on the brain voxels.
4. :func:`csf_fraction`: partial-volume CSF fraction per voxel, linear between the CSF and GM means.

:func:`measure_brain_volume_ml` sums the tissue fraction (1 - CSF fraction) over the brain mask.
:func:`measure_ventricular_volume_ml` sums the CSF fraction over the deep, central CSF components
that are enclosed by tissue in all three slice orientations (:func:`ventricle_region`).
:func:`measure_t1` returns them (and the deep-CSF baseline) from one analysis. Volumes are in mL (voxel volume from the
affine, which must map voxels to RAS mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


def voxel_size_mm(affine: np.ndarray) -> np.ndarray:
    """(3,) voxel edge lengths (mm) from a 4x4 voxel -> mm affine."""
    return np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(0))


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Voxel volume (mL) from a 4x4 voxel -> mm affine."""
    return float(abs(np.linalg.det(np.asarray(affine, np.float64)[:3, :3]))) / 1000.0


def brain_mask_from_image(image: np.ndarray, threshold: float = 0.04) -> np.ndarray:
    """bool (X, Y, Z) brain mask of a skull-stripped image: ``image > threshold``, holes filled,
    largest 26-connected component."""
    m = np.asarray(image) > threshold
    if not m.any():
        return m
    lab, n = ndi.label(m, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    return ndi.binary_fill_holes(m)


def _kmeans_1d(x: np.ndarray, init, iters: int = 25) -> np.ndarray:
    c = np.array(init, np.float64)
    for _ in range(iters):
        a = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
        new = np.array([x[a == k].mean() if np.any(a == k) else c[k] for k in range(len(c))])
        if np.allclose(new, c, atol=1e-5):
            break
        c = new
    return np.sort(c)


def tissue_means(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(3,) mean intensities of CSF, GM and WM in ``mask`` (1-D k-means, 3 classes)."""
    x = np.asarray(image, np.float64)[mask]
    if x.size < 10:
        return np.array([0.25, 0.55, 0.85])
    return _kmeans_1d(x, np.percentile(x, [5, 45, 85]))


def bias_correct(image: np.ndarray, mask: np.ndarray, spacing_mm, sigma_mm: float = 20.0, iterations: int = 2):
    """Divide out a smooth multiplicative bias field estimated from white-matter-like voxels.

    Returns (corrected image, bias field); both float32 (X, Y, Z); the bias has mean ~1 over WM.
    """
    img = np.asarray(image, np.float32)
    sig = sigma_mm / np.asarray(spacing_mm, np.float64)
    bias = np.ones_like(img)
    corrected = img.copy()
    for _ in range(iterations):
        mu = tissue_means(corrected, mask)
        wm = mask & (corrected > 0.5 * (mu[1] + mu[2]))
        if wm.sum() < 50:
            break
        num = ndi.gaussian_filter(np.where(wm, img, 0.0).astype(np.float32), sig, mode="constant")
        den = ndi.gaussian_filter(wm.astype(np.float32), sig, mode="constant")
        b = num / np.maximum(den, 1e-3)
        b /= float(np.median(b[wm]))
        # extrapolate smoothly where there is little WM
        b = np.where(den > 0.02, b, 1.0).astype(np.float32)
        bias = b
        corrected = np.where(mask, img / np.maximum(bias, 0.2), 0.0).astype(np.float32)
    return corrected, bias


def csf_fraction(image: np.ndarray, mask: np.ndarray, means) -> np.ndarray:
    """float32 CSF partial-volume fraction: 1 at/below the CSF mean, 0 at/above the GM mean,
    linear between; 0 outside ``mask``."""
    csf_mu, gm_mu = float(means[0]), float(means[1])
    f = (gm_mu - np.asarray(image, np.float32)) / max(gm_mu - csf_mu, 1e-3)
    return np.where(mask, np.clip(f, 0.0, 1.0), 0.0).astype(np.float32)


@dataclass
class T1Analysis:
    """Intermediate results of :func:`analyse_t1` (arrays on the image grid)."""

    mask: np.ndarray  # bool brain mask
    corrected: np.ndarray  # bias-corrected image
    means: np.ndarray  # (3,) CSF, GM, WM means of the corrected image
    csf: np.ndarray  # CSF fraction
    depth_mm: np.ndarray  # distance to the outside of the mask (mm)
    voxel_ml: float


def analyse_t1(t1: np.ndarray, affine: np.ndarray) -> T1Analysis:
    """Mask, bias correction, tissue means, CSF fraction and depth map of a T1 image."""
    t1 = np.asarray(t1, np.float32)
    sp = voxel_size_mm(affine)
    mask = brain_mask_from_image(t1)
    corrected, _ = bias_correct(t1, mask, sp)
    means = tissue_means(corrected, mask)
    csf = csf_fraction(corrected, mask, means)
    depth = ndi.distance_transform_edt(mask, sampling=sp).astype(np.float32)
    return T1Analysis(mask, corrected, means, csf, depth, voxel_volume_ml(affine))


def measure_brain_volume_ml(t1: np.ndarray, affine: np.ndarray) -> float:
    """Brain parenchyma volume (mL) of a skull-stripped T1 in [0, 1]: the sum over the brain mask
    of the tissue fraction 1 - :func:`csf_fraction` of the bias-corrected image."""
    a = analyse_t1(t1, affine)
    return float((a.mask.sum() - a.csf.sum(dtype=np.float64)) * a.voxel_ml)


def enclosed_csf_votes(a: T1Analysis, tissue_below: float = 0.4) -> np.ndarray:
    """int8 (X, Y, Z) in 0..3: in how many of the three slice orientations (sagittal, coronal,
    axial) a voxel lies in a hole of the tissue mask (``mask & csf < tissue_below``), i.e. in CSF
    enclosed by tissue within that slice. Ventricles are enclosed in all three; sulci, fissures and
    most cisterns open onto the brain surface in at least one."""
    tissue = a.mask & (a.csf < tissue_below)
    votes = np.zeros(tissue.shape, np.int8)
    for axis in range(3):
        filled = np.zeros_like(tissue)
        for k in range(tissue.shape[axis]):
            sl = [slice(None)] * 3
            sl[axis] = k
            sl = tuple(sl)
            filled[sl] = ndi.binary_fill_holes(tissue[sl])
        votes += filled & ~tissue
    return votes


#: Box (in units of the brain mask's standard deviation along R, A, S, from its centroid) that the
#: centroid of a ventricular CSF component must lie in: |u_R| < 0.9, -0.9 < u_A < 1.4, u_S > -0.25.
VENTRICLE_BOX_SD = ((-0.9, 0.9), (-0.9, 1.4), (-0.25, np.inf))


def ventricle_region(
    a: T1Analysis,
    affine: np.ndarray,
    *,
    min_depth_mm: float = 12.0,
    tissue_below: float = 0.4,
    min_component_ml: float = 0.3,
    min_median_csf: float = 0.8,
    box_sd=VENTRICLE_BOX_SD,
) -> np.ndarray:
    """bool (X, Y, Z) mask of the lateral + third ventricles estimated from a T1 analysis.

    1. candidate voxels: CSF enclosed by tissue in all three slice orientations
       (:func:`enclosed_csf_votes` == 3) and deeper than ``min_depth_mm`` below the mask surface;
    2. their 26-connected components are kept if they hold >= ``min_component_ml``, their median
       CSF fraction is >= ``min_median_csf`` (mostly pure CSF: excludes dark tumour cores and
       partial-volume pockets) and their centroid lies in :data:`VENTRICLE_BOX_SD`, a central box
       in brain-normalised RAS coordinates (above the basal cisterns, medial to the Sylvian
       fissures, in front of the parieto-occipital sulci);
    3. the kept components are dilated by one voxel (26-neighbourhood) inside the mask so that the
       partial-volume rim is counted.
    The RAS world axes come from ``affine``; the grid axes should be close to anatomical axes.
    """
    votes = enclosed_csf_votes(a, tissue_below)
    core = (votes == 3) & (a.depth_mm > min_depth_mm)
    s26 = np.ones((3, 3, 3), bool)
    lab, n = ndi.label(core, structure=s26)
    if n == 0:
        return core
    aff = np.asarray(affine, np.float64)
    pts = np.argwhere(a.mask).astype(np.float64)
    world = pts @ aff[:3, :3].T + aff[:3, 3]
    mu, sd = world.mean(0), world.std(0) + 1e-6
    idx = np.arange(1, n + 1)
    sizes = ndi.sum(core, lab, idx) * a.voxel_ml
    cents = np.array(ndi.center_of_mass(core, lab, idx)) @ aff[:3, :3].T + aff[:3, 3]
    u = (cents - mu) / sd
    keep = []
    for j in range(n):
        if sizes[j] < min_component_ml:
            continue
        if not all(lo < u[j, d] < hi for d, (lo, hi) in enumerate(box_sd)):
            continue
        if np.median(a.csf[lab == j + 1]) < min_median_csf:
            continue
        keep.append(j + 1)
    region = np.isin(lab, keep)
    return ndi.binary_dilation(region, structure=s26) & a.mask


def measure_ventricular_volume_ml(t1: np.ndarray, affine: np.ndarray) -> float:
    """Lateral + third ventricle volume (mL) of a skull-stripped T1 in [0, 1] on a RAS grid.

    Sum of the partial-volume CSF fraction (:func:`csf_fraction` of the bias-corrected image) over
    :func:`ventricle_region`: deep, central CSF components enclosed by tissue in every slice
    orientation, dilated by one voxel. Evaluate at 2-2.5 mm or finer (see docs/phantoms.md).
    """
    a = analyse_t1(t1, affine)
    region = ventricle_region(a, affine)
    return float(a.csf[region].sum(dtype=np.float64) * a.voxel_ml)


def measure_deep_csf_ml(t1: np.ndarray, affine: np.ndarray, erosion_mm: float = 20.0) -> float:
    """Baseline from evaluation.md: CSF fraction summed over the brain mask eroded by
    ``erosion_mm`` (no component selection). Kept for comparison."""
    a = analyse_t1(t1, affine)
    return float(a.csf[a.depth_mm > erosion_mm].sum(dtype=np.float64) * a.voxel_ml)


def measure_t1(t1: np.ndarray, affine: np.ndarray, deep_csf_erosion_mm: float = 20.0) -> dict:
    """Every estimate from one analysis: {"ventricular_volume_ml", "brain_volume_ml",
    "deep_csf_ml"} (the last as :func:`measure_deep_csf_ml`)."""
    a = analyse_t1(t1, affine)
    region = ventricle_region(a, affine)
    return {
        "ventricular_volume_ml": float(a.csf[region].sum(dtype=np.float64) * a.voxel_ml),
        "brain_volume_ml": float((a.mask.sum() - a.csf.sum(dtype=np.float64)) * a.voxel_ml),
        "deep_csf_ml": float(a.csf[a.depth_mm > deep_csf_erosion_mm].sum(dtype=np.float64) * a.voxel_ml),
    }
