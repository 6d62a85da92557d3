"""Resampling volumes between voxel grids in world (RAS mm) coordinates, with torch only."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _normalised_grid(src_shape, src_affine, dst_shape, dst_affine, device) -> torch.Tensor:
    """Sampling grid for ``grid_sample``: each destination voxel's position in the source, in [-1, 1]."""
    transform = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    t = torch.as_tensor(transform, dtype=torch.float64, device=device)
    axes = [torch.arange(n, dtype=torch.float64, device=device) for n in dst_shape]
    ii, jj, kk = torch.meshgrid(*axes, indexing="ij")
    src = [t[r, 0] * ii + t[r, 1] * jj + t[r, 2] * kk + t[r, 3] for r in range(3)]
    # grid_sample reads the last dimension as (w, h, d) = (k, j, i) and maps -1/1 to the first/last voxel.
    norm = [2.0 * s / max(n - 1, 1) - 1.0 for s, n in zip(src, src_shape)]
    return torch.stack([norm[2], norm[1], norm[0]], dim=-1).unsqueeze(0).float()


def resample(
    volume: np.ndarray | torch.Tensor,
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    mode: str = "bilinear",
    fill: float = 0.0,
) -> np.ndarray:
    """Resample a (X, Y, Z) or (C, X, Y, Z) volume onto another grid.

    Args:
        volume: source voxels indexed [c, i, j, k].
        src_affine / dst_affine: 4x4 voxel-to-RAS-mm matrices of the source and destination grids.
        dst_shape: destination (X, Y, Z).
        mode: ``bilinear`` (trilinear in 3D) or ``nearest``.
        fill: value outside the source field of view (per channel if ``volume`` has channels
            and ``fill`` is a sequence).

    Returns:
        float32 array of shape ``dst_shape`` or (C, *dst_shape).
    """
    data = torch.as_tensor(np.ascontiguousarray(volume) if isinstance(volume, np.ndarray) else volume).float()
    squeeze = data.ndim == 3
    if squeeze:
        data = data.unsqueeze(0)
    src_shape = tuple(data.shape[1:])
    grid = _normalised_grid(src_shape, src_affine, tuple(dst_shape), dst_affine, data.device)
    fills = torch.as_tensor(np.broadcast_to(np.asarray(fill, dtype=np.float32), (data.shape[0],)).copy())
    # Resample (value - fill) with zero padding, then add fill back: out-of-view voxels get `fill`.
    shifted = data - fills.view(-1, 1, 1, 1)
    out = F.grid_sample(shifted.unsqueeze(0), grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    out = out + fills.view(-1, 1, 1, 1)
    out = out.numpy().astype(np.float32, copy=False)
    return out[0] if squeeze else out


def same_grid(shape_a, affine_a, shape_b, affine_b, tol: float = 1e-3) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=tol)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(X, Y, Z) integer labels to (C, X, Y, Z) float32 one-hot maps."""
    eye = np.eye(num_classes, dtype=np.float32)
    return np.moveaxis(eye[labels.astype(np.int64)], -1, 0)


def foreground_centre(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS position of the centre of the bounding box of the non-zero voxels."""
    idx = np.argwhere(volume > 0)
    if idx.size == 0:
        centre = (np.asarray(volume.shape) - 1) / 2.0
    else:
        centre = (idx.min(0) + idx.max(0)) / 2.0
    return (np.asarray(affine) @ np.append(centre, 1.0))[:3]
