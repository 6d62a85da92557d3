"""Patients for the lesion-insertion tests and evaluation: held-out phantoms as a scanner would give
them (another intensity scale, a bias field, an oblique and anisotropic grid), and painted masks."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi

from SynthBrainLib.insertion.registration import resample_between

from ..phantoms import PhantomPopulation

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


def patient(
    index: int,
    sequence: str,
    *,
    grid=None,
    scale: float = 700.0,
    offset: float = 20.0,
    bias: float = 0.2,
    painted: tuple = (),
):
    """A held-out phantom as a "patient": (scan, affine, true labels on the scan grid).

    The phantom's image is given another intensity scale and offset and a smooth multiplicative bias
    field (+-``bias``), then resampled (linear; labels nearest) onto ``grid`` (default: its own).
    ``painted``: lesions the phantom renderer paints in first (``((mask on the phantom grid, name),)``),
    for the detection ceiling.
    """
    spec = POPULATION.sample_spec(index)
    if painted:
        spec = dataclasses.replace(spec, painted_lesions=painted)
    subject = POPULATION.make(spec)
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


def wmh_centre(labels: np.ndarray, affine: np.ndarray, radius_mm: float = 5.0, which: int = 0) -> np.ndarray:
    """RAS mm of a deep white-matter point (at least ``radius_mm`` + 2 mm inside white matter)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    deep = ndi.distance_transform_edt(labels == WM, sampling=spacing) > radius_mm + 2.0
    points = np.argwhere(deep)
    centre = points[(len(points) * (which + 1)) // 7]
    return affine[:3, :3] @ centre + affine[:3, 3]


def ball(shape, affine: np.ndarray, centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels of a grid whose centres lie within ``radius_mm`` of ``centre_mm``."""
    grid = np.indices(shape).reshape(3, -1).T
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(world - centre_mm, axis=1) <= radius_mm).reshape(shape)


def painted_wmh(labels: np.ndarray, affine: np.ndarray, radius_mm: float = 5.0, which: int = 0) -> np.ndarray:
    """A ball of ``radius_mm`` (mm, on any grid) at a deep white-matter point, clipped to white matter."""
    centre = wmh_centre(labels, affine, radius_mm, which)
    return ball(labels.shape, affine, centre, radius_mm) & (labels == WM)


#: Intensity of the tissue around the brain, relative to the white matter, per sequence (roughly as on the
#: clinical scans of ms-patient12-clinical): the CSF rim, the skull (cortical bone: no signal) and the scalp
#: fat and neck muscle.
HEAD_TISSUE = {
    "T1": {"csf": 0.3, "skull": 0.08, "scalp": 1.3},
    "FLAIR": {"csf": 0.25, "skull": 0.08, "scalp": 0.9},
    "T2": {"csf": 1.6, "skull": 0.08, "scalp": 1.1},
}


def patient_with_head(index: int, sequence: str, *, spacing=(0.9, 0.9, 4.0), noise: float = 0.02):
    """A held-out phantom as a clinical scan: thick slices (``spacing``, slightly oblique), a CSF rim,
    skull, scalp and neck around the brain, and background noise everywhere, as a scanner writes it
    (no exact zeros). Returns (scan, affine, true labels on the scan grid; 0 outside the brain)."""
    grid = oblique_grid(spacing=spacing, angles=(4.0, -3.0, 6.0), fov_mm=(220.0, 240.0, 200.0))
    scan, affine, labels = patient(index, sequence, grid=grid)
    spacing_mm = np.linalg.norm(affine[:3, :3], axis=0)
    brain = labels > 0
    outside = ndi.distance_transform_edt(~brain, sampling=spacing_mm)
    world = np.tensordot(affine[:3, :3], np.indices(scan.shape, dtype=np.float32), axes=1)
    world += affine[:3, 3, None, None, None]
    centre = np.array([w[brain].mean() for w in world])
    neck = (world[2] < world[2][brain].min() + 20.0) & (np.hypot(world[0] - centre[0], world[1] - centre[1] - 10) < 45)
    white = float(np.median(scan[labels == WM]))
    look = HEAD_TISSUE[sequence]
    head = scan.astype(np.float64)
    head[(outside > 0) & (outside <= 2.5)] = white * look["csf"]
    skull = (outside > 2.5) & (outside <= 8.0)
    head[skull] = white * look["skull"]
    head[((outside > 8.0) & (outside <= 14.0)) | (neck & (outside > 8.0))] = white * look["scalp"]
    rng = np.random.default_rng(index)
    head = ndi.gaussian_filter(head, 0.6) + rng.normal(0.0, noise * white, scan.shape)
    return np.clip(head, 0.0, None).astype(np.float32), affine, labels
