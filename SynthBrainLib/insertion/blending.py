"""Blend a synthesised lesion into a real scan: a feathered weight that is exactly zero beyond the
margin, and the scanner's intensity scale fitted on normal-appearing tissue around the lesion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConditionError

#: Width of the ring of normal-appearing brain beyond the margin on which intensities are matched:
#: wide enough to hold several tissue classes (a ring of white matter alone has no contrast to fit a
#: scale on), narrow enough for a bias field to be nearly constant across it.
FIT_RING_MM = 25.0

#: Quantiles (%) matched between the synthetic and the real intensities of the ring.
FIT_QUANTILES = np.arange(2.0, 98.1, 2.0)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)


def distance_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel from the mask (0 inside), with the grid's own voxel spacing
    (anisotropic grids included; oblique grids have orthogonal axes, so spacing suffices)."""
    return ndi.distance_transform_edt(~mask.astype(bool), sampling=voxel_spacing(affine))


def feather_weights(distance: np.ndarray, margin_mm: float) -> np.ndarray:
    """1 inside the mask, a cosine ramp to 0 across ``margin_mm``, and exactly 0 from there on."""
    if margin_mm <= 0:
        return (distance == 0).astype(np.float64)
    ramp = 0.5 * (1.0 + np.cos(np.pi * np.clip(distance / margin_mm, 0.0, 1.0)))
    ramp[distance >= margin_mm] = 0.0
    return ramp


@dataclass(frozen=True)
class IntensityFit:
    """scan ~= slope * synthetic + intercept, fitted between the two intensity distributions of the ring
    (quantile to quantile: it needs no voxel-to-voxel correspondence, which an affine registration
    does not give at the scale of sulci)."""

    slope: float
    intercept: float
    r: float
    voxels: int

    def record(self) -> dict:
        return {
            "method": "quantile-quantile line (2nd-98th percentiles) on normal-appearing brain around the lesion",
            "slope": round(self.slope, 6),
            "intercept": round(self.intercept, 6),
            "quantile_pearson_r": round(self.r, 4),
            "voxels": self.voxels,
            "ring_mm": FIT_RING_MM,
        }


def fit_intensities(synthetic: np.ndarray, scan: np.ndarray, region: np.ndarray) -> IntensityFit:
    """Fit the scan's intensity scale to the synthetic image's on ``region``.

    Raises:
        ConditionError: too little normal-appearing brain around the lesion to fit on.
    """
    voxels = int(np.count_nonzero(region))
    if voxels < 200:
        raise ConditionError(
            f"only {voxels} voxels of normal-appearing brain lie within {FIT_RING_MM:g} mm of the lesion "
            "margin; the scan's intensities cannot be matched (is the lesion outside the brain?)"
        )
    x = np.percentile(synthetic[region].astype(np.float64), FIT_QUANTILES)
    y = np.percentile(scan[region].astype(np.float64), FIT_QUANTILES)
    slope, intercept = np.polyfit(x, y, 1)
    r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
    return IntensityFit(float(slope), float(intercept), r, voxels)


def full_contrast(change: np.ndarray, lesion_fraction: np.ndarray, mask: np.ndarray, floor: float = 0.25) -> np.ndarray:
    """Undo the partial-volume dilution of a lesion's change inside its painted mask.

    The model renders the lesion on its own (coarser) grid, so after resampling to the scan a small
    lesion's change is that of a lesion *fraction*: ``change ~= lesion_fraction x full change``
    (``lesion_fraction``: the painted mask carried to the model grid and back). Inside the mask the
    change is divided by that fraction (at least ``floor``) and kept within the range the model
    produced where the lesion filled at least half a model voxel, so nothing exceeds the model's own
    lesion contrast. Outside the mask the change is left as rendered (the feathered margin).
    """
    out = change.astype(np.float64).copy()
    inside = mask & (lesion_fraction > 0)
    if not inside.any():
        return out
    scaled = change[inside] / np.maximum(lesion_fraction[inside], floor)
    core = lesion_fraction[inside] >= 0.5
    reference = scaled[core] if core.any() else scaled[lesion_fraction[inside] >= np.max(lesion_fraction[inside]) / 2]
    out[inside] = np.clip(scaled, reference.min(), reference.max())
    return out


def blend(scan: np.ndarray, change: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``scan + weights * change`` where ``weights > 0``; every other voxel is the input's own value,
    in the input's dtype (integer scans are rounded and clipped to their type)."""
    out = scan.copy()
    region = weights > 0
    values = scan[region].astype(np.float64) + weights[region] * change[region]
    if np.issubdtype(scan.dtype, np.integer):
        info = np.iinfo(scan.dtype)
        values = np.clip(np.round(values), info.min, info.max)
    out[region] = values.astype(scan.dtype)
    return out
