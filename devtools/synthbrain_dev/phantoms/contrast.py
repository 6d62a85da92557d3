"""MR contrasts rendered from partial-volume label maps.

An image is the partial-volume-weighted mean of per-tissue intensities (:data:`INTENSITY_TABLE`),
so voxels on tissue edges get intermediate values, times a smooth multiplicative bias field, with
Rician noise, skull-stripped (0 where the voxel is mostly background) and divided by its 99.5th
brain percentile, then clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np

from .fields import smooth_random_field
from .labels import BACKGROUND, LABEL_NAMES, one_hot

SEQUENCES = ("T1", "FLAIR", "T2")

#: Mean intensity of each tissue (rows: :data:`LABEL_NAMES` order) in each sequence (columns:
#: T1, FLAIR, T2), before bias, noise and normalisation. Orderings (tested in test_phantoms.py):
#:   T1:    gdtumour > wm > brainstem > wmh > dgm > gm > edema > tumour > csf
#:   FLAIR: wmh > edema > gdtumour > tumour > gm > dgm > brainstem > wm > csf
#:   T2:    csf > tumour > edema > wmh > gdtumour > gm > dgm > brainstem > wm
INTENSITY_TABLE = {
    #              T1     FLAIR  T2
    "background": (0.00, 0.00, 0.00),
    "csf": (0.24, 0.10, 1.00),
    "gm": (0.56, 0.58, 0.58),
    "wm": (0.86, 0.45, 0.38),
    "dgm": (0.64, 0.52, 0.50),
    "brainstem": (0.78, 0.50, 0.44),
    "wmh": (0.68, 0.88, 0.76),
    "tumour": (0.34, 0.66, 0.86),
    "edema": (0.50, 0.84, 0.78),
    "gdtumour": (0.95, 0.74, 0.66),
}

#: (10, 3) array view of :data:`INTENSITY_TABLE`.
INTENSITY_MATRIX = np.array([INTENSITY_TABLE[n] for n in LABEL_NAMES], np.float32)


def tissue_intensities(sequence: str) -> np.ndarray:
    """(10,) float32 mean tissue intensities of ``sequence`` ("T1", "FLAIR" or "T2")."""
    try:
        col = SEQUENCES.index(sequence.upper())
    except ValueError:
        raise ValueError(f"unknown sequence {sequence!r}; expected one of {SEQUENCES}") from None
    return INTENSITY_MATRIX[:, col].copy()


def render_contrast(
    partial_volumes: np.ndarray,
    sequence: str,
    rng=None,
    *,
    spacing_mm: float = 2.5,
    bias_strength: float = 0.10,
    noise_sigma: float = 0.025,
    texture: float = 0.03,
    percentile: float = 99.5,
) -> np.ndarray:
    """Render one MR contrast from partial volumes (or a one-hot label map).

    Args:
        partial_volumes: float (10, X, Y, Z) partial volumes in :data:`LABEL_NAMES` order
            (a uint8 label map (X, Y, Z) is accepted and one-hot encoded).
        sequence: "T1", "FLAIR" or "T2".
        rng: ``numpy.random.Generator``, an int seed, or None for a clean image (no bias field,
            texture or noise).
        spacing_mm: voxel size, sets the physical scale of the bias field and texture.
        bias_strength: standard deviation of the log bias field (smooth, ~60 mm features).
        noise_sigma: Rician noise level relative to the brightest tissue intensity (1.0).
        texture: standard deviation of a fine (~5 mm) multiplicative within-tissue texture.
        percentile: the image is divided by this percentile of its brain voxels and clipped.

    Returns:
        float32 (X, Y, Z) in [0, 1]; 0 outside the brain (voxels whose background fraction >= 0.5).
    """
    pv = np.asarray(partial_volumes)
    if pv.ndim == 3:
        pv = one_hot(pv)
    if pv.shape[0] != len(LABEL_NAMES):
        raise ValueError(f"expected {len(LABEL_NAMES)} channels, got {pv.shape[0]}")
    mu = tissue_intensities(sequence)
    img = np.tensordot(mu, pv.astype(np.float32, copy=False), axes=(0, 0)).astype(np.float32)
    shape = img.shape
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        fields = smooth_random_field(rng, shape, spacing_mm, 60.0, 1)
        img *= np.exp(bias_strength * fields[0])
        if texture > 0:
            img *= 1.0 + texture * smooth_random_field(rng, shape, spacing_mm, 6.0, 1)[0]
        n = rng.standard_normal((2,) + shape, dtype=np.float32) * noise_sigma
        img = np.sqrt((img + n[0]) ** 2 + n[1] ** 2)
    inside = pv[BACKGROUND] < 0.5
    img[~inside] = 0.0
    if inside.any():
        scale = float(np.percentile(img[inside], percentile))
        if scale > 0:
            img /= scale
    return np.clip(img, 0.0, 1.0).astype(np.float32)
