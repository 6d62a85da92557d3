"""Numerical helpers: fast trilinear sampling and smooth random fields on regular grids.

Everything here is plain numpy/scipy and deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np


def trilinear_gather(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a channel-last volume at fractional voxel coordinates.

    Args:
        volume: float32 (X, Y, Z, C), C-contiguous. Coordinates outside the volume are clamped to
            its border, so pad the volume with the value wanted outside (e.g. background).
        coords: float (3, N) voxel coordinates (index space of ``volume``).

    Returns:
        float32 (N, C).
    """
    vol = np.ascontiguousarray(volume)
    nx, ny, nz, nc = vol.shape
    flat = vol.reshape(-1, nc)
    x = np.clip(coords[0], 0.0, nx - 1.0001)
    y = np.clip(coords[1], 0.0, ny - 1.0001)
    z = np.clip(coords[2], 0.0, nz - 1.0001)
    x0 = x.astype(np.int64)
    y0 = y.astype(np.int64)
    z0 = z.astype(np.int64)
    fx = (x - x0).astype(np.float32)[:, None]
    fy = (y - y0).astype(np.float32)[:, None]
    fz = (z - z0).astype(np.float32)[:, None]
    sy, sx = nz, ny * nz
    base = x0 * sx + y0 * sy + z0
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    out = flat[base] * (gx * gy * gz)
    out += flat[base + 1] * (gx * gy * fz)
    out += flat[base + sy] * (gx * fy * gz)
    out += flat[base + sy + 1] * (gx * fy * fz)
    out += flat[base + sx] * (fx * gy * gz)
    out += flat[base + sx + 1] * (fx * gy * fz)
    out += flat[base + sx + sy] * (fx * fy * gz)
    out += flat[base + sx + sy + 1] * (fx * fy * fz)
    return out


def _bspline3(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel."""
    t = np.abs(t)
    out = np.zeros_like(t)
    m1 = t < 1
    m2 = (t >= 1) & (t < 2)
    out[m1] = 2.0 / 3.0 - t[m1] ** 2 + 0.5 * t[m1] ** 3
    out[m2] = (2.0 - t[m2]) ** 3 / 6.0
    return out


def _bspline_taps(n_out: int, spacing_out: float, scale: float):
    """Cubic B-spline evaluation of a control grid with knot spacing ``scale`` (mm) at ``n_out``
    samples spaced ``spacing_out`` mm (the sample grid is centred on the control grid).

    Returns (idx, w, n_ctrl): idx int64 (n_out, 4) control indices, w float32 (n_out, 4) weights.
    """
    extent = (n_out - 1) * spacing_out
    n_ctrl = int(np.ceil(extent / scale)) + 4
    pos = (np.arange(n_out) * spacing_out - extent / 2.0) / scale + (n_ctrl - 1) / 2.0
    first = np.floor(pos).astype(np.int64) - 1
    idx = first[:, None] + np.arange(4)[None, :]
    w = _bspline3(pos[:, None] - idx)
    return np.clip(idx, 0, n_ctrl - 1), w.astype(np.float32), n_ctrl


def _apply_taps(arr: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    shape = [1] * arr.ndim
    shape[axis] = -1
    out = np.take(arr, idx[:, 0], axis=axis) * w[:, 0].reshape(shape)
    for t in range(1, 4):
        out += np.take(arr, idx[:, t], axis=axis) * w[:, t].reshape(shape)
    return out


def smooth_random_field(
    rng: np.random.Generator,
    shape,
    spacing_mm: float,
    scale_mm: float,
    n_fields: int = 1,
) -> np.ndarray:
    """Smooth Gaussian random fields on a regular grid (cubic B-spline of white noise).

    Args:
        rng: random generator (consumed deterministically).
        shape: (X, Y, Z) grid shape.
        spacing_mm: grid spacing (mm).
        scale_mm: control-point spacing (mm); features are roughly this size.
        n_fields: number of independent fields.

    Returns:
        float32 (n_fields, X, Y, Z), each field with zero mean and unit standard deviation
        (normalised empirically over the grid).
    """
    taps = [_bspline_taps(n, spacing_mm, scale_mm) for n in shape]
    ctrl = rng.standard_normal((n_fields,) + tuple(t[2] for t in taps)).astype(np.float32)
    f = ctrl
    for axis, (idx, w, _) in enumerate(taps):
        f = _apply_taps(f, axis + 1, idx, w)
    f -= f.mean(axis=(1, 2, 3), keepdims=True)
    f /= f.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    return f.astype(np.float32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 ramp: 0 for x <= 0, 1 for x >= 1, 3x^2 - 2x^3 between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
