"""Patients for the lesion-insertion tests and evaluation: held-out phantoms as a scanner would give
them (another intensity scale, a bias field, an oblique and anisotropic grid), and painted masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from SynthBrainLib.insertion.registration import resample_between
from SynthBrainLib.tools.phantoms import PhantomPopulation

POPULATION = PhantomPopulation(seed=0, spacing_mm=2.5, shape=(64, 80, 64))
WM = 3


def rotation(ax_deg: float, ay_deg: float, az_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad([ax_deg, ay_deg, az_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_grid(spacing=(1.0, 1.0, 3.0), angles=(10.0, -5.0, 15.0), fov_mm=(180.0, 220.0, 180.0)):
    """(shape, affine) of an oblique grid centred on the phantom grid's centre."""
    spacing = np.asarray(spacing, float)
    shape = tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing))
    affine = np.eye(4)
    affine[:3, :3] = rotation(*angles) * spacing
    centre = POPULATION.affine @ np.append((np.asarray(POPULATION.shape) - 1) / 2.0, 1.0)
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return shape, affine


def patient(index: int, sequence: str, *, grid=None, scale: float = 700.0, offset: float = 20.0, bias: float = 0.2):
    """A held-out phantom as a "patient": (scan, affine, true labels on the scan grid).

    The phantom's image is given another intensity scale and offset and a smooth multiplicative bias
    field (+-``bias``), then resampled (linear; labels nearest) onto ``grid`` (default: its own).
    """
    subject = POPULATION.subject(index)
    image = subject.images[sequence].astype(np.float64)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in image.shape], indexing="ij")
    field = 1.0 + bias * (0.6 * x + 0.3 * y - 0.4 * z) / 1.3
    image = image * field * scale + offset
    affine = POPULATION.affine
    labels = subject.labels
    if grid is not None:
        shape, target = grid
        image = resample_between(image, affine, shape, target).astype(np.float64)
        labels = np.round(resample_between(labels, affine, shape, target, linear=False)).astype(np.uint8)
        affine = target
    return image.astype(np.float32), affine, labels


def painted_wmh(labels: np.ndarray, affine: np.ndarray, radius_mm: float = 5.0, which: int = 0) -> np.ndarray:
    """A ball of ``radius_mm`` (mm, on any grid) at a deep white-matter point, clipped to white matter."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    deep = ndi.distance_transform_edt(labels == WM, sampling=spacing) > radius_mm + 2.0
    points = np.argwhere(deep)
    centre = points[(len(points) * (which + 1)) // 7]
    grid = np.indices(labels.shape).reshape(3, -1).T
    world = grid @ affine[:3, :3].T
    dist = np.linalg.norm(world - affine[:3, :3] @ centre, axis=1).reshape(labels.shape)
    return (dist <= radius_mm) & (labels == WM)
