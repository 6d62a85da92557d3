"""A scan's bias field, estimated for registration and measuring only (never applied to an output).

SimpleITK's N4 runs on a copy block-averaged to about :data:`N4_SPACING_MM` (the field is smooth, so
the coarse copy gives the same field in a second instead of 4-11 s at full resolution on clinical
scans), inside the brain mask; the field is then evaluated on the scan's own grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..insertion.registration import to_sitk

#: N4 works on a copy with voxels of about this size (mm).
N4_SPACING_MM = 6.0
#: N4 iterations at each of its three fitting levels.
N4_ITERATIONS = 20


def bias_corrected(scan: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(X, Y, Z) float32: ``scan`` divided by its N4 bias field, estimated inside ``mask``; 0 outside it."""
    image = to_sitk(scan.astype(np.float32), affine)
    region = sitk.Cast(to_sitk(mask.astype(np.float32), affine), sitk.sitkUInt8)
    factors = [max(1, int(round(N4_SPACING_MM / s))) for s in image.GetSpacing()]
    small = sitk.BinShrink(image, factors)
    small_region = sitk.Cast(sitk.BinShrink(region, factors) > 0, sitk.sitkUInt8)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([N4_ITERATIONS] * 3)
    n4.Execute(small, small_region)
    log_field = np.transpose(sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)), (2, 1, 0))
    return np.where(mask, scan / np.exp(log_field), 0.0).astype(np.float32)
