"""Small, explicit metrics for the evaluation reports (MS-SSIM is MONAI's)."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return pearson(ra, rb)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else 1.0


def ms_ssim_pairs(volumes: list[np.ndarray], max_pairs: int = 64, seed: int = 0) -> tuple[float, float]:
    """Mean and std of MS-SSIM over pairs of volumes (all pairs, or ``max_pairs`` random ones).

    3D, data range 1, Gaussian kernel 5 and four scales: the demo grids (64 voxels) are too small
    for MONAI's default 11-voxel kernel over five scales.
    """

    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=1.0, kernel_size=5, weights=(0.0448, 0.2856, 0.3001, 0.2363)
    )
    pairs = list(itertools.combinations(range(len(volumes)), 2))
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    values = []
    for i, j in pairs:
        x = torch.from_numpy(np.ascontiguousarray(volumes[i], np.float32))[None, None]
        y = torch.from_numpy(np.ascontiguousarray(volumes[j], np.float32))[None, None]
        values.append(float(metric(x, y).mean()))
    return float(np.mean(values)), float(np.std(values))


def mean_gradient_magnitude(volume: np.ndarray, mask: np.ndarray) -> float:
    """Mean |grad| (intensity per voxel, central differences) over ``mask``: a sharpness measure
    that compares images on the same grid and intensity scale (a blurred edge has a lower mean)."""
    v = np.asarray(volume, np.float32)
    g2 = sum(np.gradient(v, axis=a) ** 2 for a in range(v.ndim))
    return float(np.sqrt(g2)[np.asarray(mask, bool)].mean()) if np.any(mask) else float("nan")


def high_frequency_energy(volume: np.ndarray, cutoff: float = 0.25) -> float:
    """Share of the (mean-removed) spectral energy above ``cutoff`` cycles per voxel (Nyquist is
    0.5) of a 3D volume: the fine detail a blurred image lacks."""
    v = np.asarray(volume, np.float64)
    power = np.abs(np.fft.fftn(v - v.mean())) ** 2
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in v.shape], indexing="ij")
    radius = np.sqrt(sum(f**2 for f in freqs))
    total = power.sum()
    return float(power[radius > cutoff].sum() / total) if total > 0 else float("nan")


def median_ratio(generated, requested) -> float:
    """Median of generated / requested over the pairs with a positive request (nan if none)."""
    g, r = np.asarray(generated, np.float64), np.asarray(requested, np.float64)
    keep = r > 0
    return float(np.median(g[keep] / r[keep])) if keep.any() else float("nan")


def is_monotonic_increasing(values, tolerance: float = 0.0) -> bool:
    """Never falling by more than ``tolerance`` from one value to the next, and ending above where
    it started: a flat sequence (a slider that changes nothing) is not increasing."""
    v = np.asarray(values, np.float64)
    return bool(np.all(np.diff(v) >= -tolerance) and v[-1] > v[0])
