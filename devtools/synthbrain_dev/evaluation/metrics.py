"""Small, explicit metrics of the evaluation reports and the benchmarks (MS-SSIM is MONAI's)."""

from __future__ import annotations

import itertools
import math

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


#: MS-SSIM of these reports: 3D, Gaussian kernel 5 and four scales - the demo grids (64 voxels) are
#: too small for MONAI's default 11-voxel kernel over five scales.
MS_SSIM_KERNEL = 5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363)
#: The smallest edge (voxels) four scales of a 5-voxel kernel fit.
MS_SSIM_MIN_EDGE = 37


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, min_edge: int = MS_SSIM_MIN_EDGE) -> float:
    """3D MS-SSIM (MONAI's ``MultiScaleSSIMMetric``, :data:`MS_SSIM_KERNEL`, four scales) of two
    volumes (X, Y, Z); NaN for volumes under ``min_edge`` voxels along an axis (0: always computed)."""
    if min(np.shape(a)) < min_edge:
        return float("nan")
    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=data_range, kernel_size=MS_SSIM_KERNEL, weights=MS_SSIM_WEIGHTS
    )
    x = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(b, np.float32))[None, None]
    return float(metric(x, y).mean())


def ms_ssim_pairs(volumes: list[np.ndarray], max_pairs: int = 64, seed: int = 0) -> tuple[float, float]:
    """Mean and std of :func:`ms_ssim` (data range 1) over pairs of volumes (all pairs, or
    ``max_pairs`` random ones)."""
    pairs = list(itertools.combinations(range(len(volumes)), 2))
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    values = [ms_ssim(volumes[i], volumes[j], min_edge=0) for i, j in pairs]
    return float(np.mean(values)), float(np.std(values))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio (dB) of ``a`` against ``b`` over ``data_range``; inf when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def compare(out: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> dict[str, float]:
    """Two outputs (C, X, Y, Z): max abs difference, PSNR (over ``data_range``, default the
    reference's range) and, for single-channel volumes large enough, MS-SSIM (clipped to 0-1)."""
    rng = float(ref.max() - ref.min()) if data_range is None else data_range
    res = {"max_abs": float(np.abs(out - ref).max()), "psnr_db": psnr(out, ref, rng or 1.0)}
    if out.shape[0] == 1 and min(out.shape[1:]) >= MS_SSIM_MIN_EDGE:
        res["ms_ssim"] = ms_ssim(np.clip(out[0], 0, 1), np.clip(ref[0], 0, 1))
    return res


def label_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Two partial-volume maps (C, X, Y, Z): Dice of their argmax label maps, the mean over the
    classes (background excluded) present in either; 1 when none is."""
    la, lb = a.argmax(0), b.argmax(0)
    scores = [dice(la == c, lb == c) for c in range(1, a.shape[0]) if (la == c).any() or (lb == c).any()]
    return float(np.mean(scores)) if scores else 1.0


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
