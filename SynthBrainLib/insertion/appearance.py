"""How a white-matter lesion looks against the tissue around it: measured the same way on real lesions
and on inserted ones, and imposed on an inserted lesion.

Three numbers describe it (:func:`measure`), each relative to the mean ``N`` of normal-appearing
brain 2-6 mm around the lesion (more than 2 mm from any other lesion):

* **contrast** ``L / N``: the lesion's mean intensity over ``N`` (FLAIR, T2 > 1; T1 < 1);
* **penumbra**: how much of the lesion's excess ``L - N`` remains in the 0-2 mm shell around it
  (a sharp edge 0, no edge 1);
* **cv**: standard deviation / mean inside the lesion (texture).

The model renders a lesion's texture and shape; its contrast comes from the phantoms it was trained
on, which are brighter than real lesions. :func:`shape_change` keeps the model's texture and imposes
a target :class:`LesionAppearance`: the published values of :data:`REFERENCE` (each with its
source), or the patient's own lesions measured on the scan (:func:`of_patient`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConditionError

#: Normal-appearing tissue around a lesion: this far from it (mm)...
RING_MM = (2.0, 6.0)
#: ... and at least this far from any other lesion.
AVOID_MM = 2.0
#: The shell just outside a lesion whose excess intensity is its penumbra (mm).
PENUMBRA_MM = 2.0
#: Decay lengths (mm) tried for the excess outside an inserted lesion.
DECAYS_MM = tuple(np.geomspace(0.2, 6.0, 24))


@dataclass(frozen=True)
class LesionAppearance:
    """What an inserted lesion is made to look like on one sequence (see the module docstring)."""

    sequence: str
    contrast: float
    penumbra: float
    cv: float | None  # None: the model's texture on the scan's own noise
    source: str

    def record(self) -> dict:
        return {
            "sequence": self.sequence,
            "contrast": round(self.contrast, 4),
            "penumbra": round(self.penumbra, 4),
            "cv": None if self.cv is None else round(self.cv, 4),
            "source": self.source,
        }


@dataclass(frozen=True)
class Measured:
    """How one lesion (or a set of lesions) looks on an image (see :func:`measure`)."""

    contrast: float
    penumbra: float
    cv: float
    edge: float  # mean gradient magnitude (per mm) on the lesion's border voxels / N
    ring_voxels: int
    lesion_ml: float

    def record(self) -> dict:
        return {k: round(float(v), 5) for k, v in self.__dict__.items()}


def spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)


def _regions(lesion: np.ndarray, avoid: np.ndarray | None, brain: np.ndarray, spacing: np.ndarray):
    """(distance from the lesion in mm, the normal-appearing ring, the 0-2 mm shell)."""
    distance = ndi.distance_transform_edt(~lesion, sampling=spacing)
    others = np.zeros_like(lesion) if avoid is None else (avoid.astype(bool) & ~lesion)
    near_others = ndi.distance_transform_edt(~others, sampling=spacing) <= AVOID_MM if others.any() else others
    ring = (distance > RING_MM[0]) & (distance <= RING_MM[1]) & brain & ~near_others
    shell = (distance > 0) & (distance <= PENUMBRA_MM) & brain & ~near_others
    return distance, ring, shell


def measure(
    image: np.ndarray, lesion: np.ndarray, affine: np.ndarray, brain: np.ndarray, avoid: np.ndarray | None = None
) -> Measured:
    """Contrast, penumbra, cv and edge of ``lesion`` (bool mask) on ``image``; ``avoid``: other lesions,
    kept out of the ring; ``brain``: where normal tissue may be (the ring stays inside it).

    Raises:
        ConditionError: no normal-appearing tissue around the lesion to compare with.
    """
    spacing = spacing_of(affine)
    lesion = lesion.astype(bool)
    _, ring, shell = _regions(lesion, avoid, brain.astype(bool), spacing)
    if ring.sum() < 10 or not lesion.any():
        raise ConditionError("a lesion has no normal-appearing brain 2-6 mm around it to measure it against")
    values = image.astype(np.float64)
    inside, around = values[lesion], values[ring].mean()
    excess = inside.mean() - around
    gradient = np.linalg.norm(np.stack(np.gradient(values, *spacing)), axis=0)
    border = ndi.binary_dilation(lesion) & ~ndi.binary_erosion(lesion)
    penumbra = (values[shell].mean() - around) / excess if shell.any() and excess != 0 else 0.0
    return Measured(
        contrast=float(inside.mean() / around),
        penumbra=float(penumbra),
        cv=float(inside.std() / inside.mean()),
        edge=float(gradient[border].mean() / around),
        ring_voxels=int(ring.sum()),
        lesion_ml=float(lesion.sum() * np.prod(spacing) / 1000.0),
    )


#: Published lesion / normal-appearing white matter values (white-matter lesions: MS lesions and
#: WMH). Contrast: the median of the sources for each sequence; penumbra: Nasrallah's rings. The
#: real MS patient the evaluation measures (ms-patient07) is NOT among the sources.
#:
#: * Freire & Ferrari, arXiv:1807.09619 (2018): MS lesions on FLAIR (ISBI 2015 data) 25 % brighter
#:   than white matter -> 1.25.
#: * Senra Filho et al., MS-MIST, Biomed Phys Eng Express 5:035003 (2019), doi:10.1088/2057-1976/ab08fc:
#:   the simulator's default lesion/healthy factors FLAIR 1.323, T2 1.374, T1 0.791 (code defaults,
#:   DeformImage.xml; their origin is not documented).
#: * Nasrallah et al., AJNR 2019 (CARDIA, n = 463, WMH), Table 2: lesion / 2-4 mm ring / 0-2 mm ring
#:   means FLAIR 136 / 79.4 / 98.9, T2 115 / 74.1 / 88.3, T1 116 / 142 / 132 -> contrast (lesion over
#:   the 2-4 mm ring, the closest to our 2-6 mm) 1.71, 1.55, 0.82; penumbra (0-2 mm excess over the
#:   lesion's) 0.34, 0.35, 0.38.
REFERENCE: dict[str, LesionAppearance] = {
    "FLAIR": LesionAppearance(
        "FLAIR", 1.32, 0.34, None, "published (median of Freire 2018 1.25, MS-MIST 2019 1.32, Nasrallah 2019 1.71)"
    ),
    "T2": LesionAppearance("T2", 1.46, 0.35, None, "published (median of MS-MIST 2019 1.37, Nasrallah 2019 1.55)"),
    "T1": LesionAppearance("T1", 0.805, 0.38, None, "published (median of MS-MIST 2019 0.79, Nasrallah 2019 0.82)"),
}


def reference(sequence: str) -> LesionAppearance | None:
    """The published appearance of white-matter lesions on ``sequence``, or None (no source)."""
    return REFERENCE.get(sequence)


#: Lesions smaller than this (voxels) are left out of the within-lesion texture: their voxels are
#: mostly border.
MIN_TEXTURE_VOXELS = 10


def of_patient(
    scan: np.ndarray, affine: np.ndarray, existing: np.ndarray, brain: np.ndarray, sequence: str
) -> LesionAppearance:
    """The appearance of the patient's own lesions (``existing``: their mask on the scan's grid), what
    an inserted lesion is then made to look like. Contrast and penumbra are measured on all of them
    together; the texture is the voxel-weighted mean of each lesion's own cv (a pooled cv would count
    the differences between lesions as texture).

    Raises:
        ConditionError: the mask is empty or has no normal-appearing tissue around it.
    """
    existing = existing.astype(bool)
    if not existing.any():
        raise ConditionError("the mask of the patient's existing lesions is empty")
    measured = measure(scan, existing, affine, brain, avoid=existing)
    components, count = ndi.label(existing)
    values = scan.astype(np.float64)
    cvs, sizes = [], []
    for index in range(1, count + 1):
        inside = values[components == index]
        if inside.size >= MIN_TEXTURE_VOXELS and inside.mean() != 0:
            cvs.append(inside.std() / abs(inside.mean()))
            sizes.append(inside.size)
    cv = float(np.average(cvs, weights=sizes)) if cvs else measured.cv
    return LesionAppearance(
        sequence,
        measured.contrast,
        measured.penumbra,
        cv,
        f"this patient's lesions ({count} lesions, {measured.lesion_ml:.2f} mL)",
    )


def shape_change(
    scan: np.ndarray,
    change: np.ndarray,
    weights: np.ndarray,
    lesion: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    target: LesionAppearance,
    avoid: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The intensity change that gives the inserted ``lesion`` the ``target`` appearance on ``scan``.

    Inside the lesion the model's change keeps its pattern (texture); its level is set so that the
    lesion's contrast is the target's, its spread (with ``target.cv``) so that its texture is, and
    outside the lesion the excess decays as ``exp(-d / decay)``, the decay chosen so that the
    penumbra is the target's. The result is to be blended under ``weights`` (it is 0 wherever they
    are), so every voxel beyond the margin keeps the scan's value.

    Returns:
        (change, record): the change (scan units, float64, the scan's shape), and what was achieved.
    """
    spacing = spacing_of(affine)
    box = _box(weights > 0, lesion, spacing)
    S, W, L, B = (a[box] for a in (scan.astype(np.float64), weights, lesion.astype(bool), brain.astype(bool)))
    A = None if avoid is None else avoid[box]
    distance, ring, shell = _regions(L, A, B, spacing)
    if ring.sum() < 10:
        raise ConditionError("the lesion has no normal-appearing brain 2-6 mm around it to match the scan's contrast")
    texture = change[box][L].astype(np.float64)
    mean = texture.mean()
    unit = texture / mean if abs(mean) > 1e-6 * max(1.0, abs(S[L]).mean()) else np.ones_like(texture)
    best = None
    for decay in DECAYS_MM:
        profile = np.where(L, 0.0, np.exp(-distance / decay))
        profile[L] = unit
        k, spread, achieved = _levels(S, W * profile, L, ring, shell, target)
        if k is None:
            continue
        error = abs(achieved["penumbra"] - target.penumbra)
        if best is None or error < best[0]:
            best = (error, decay, k, spread, achieved, profile)
    if best is None:
        raise ConditionError(
            f"the scan's intensities around the lesion cannot give it a contrast of {target.contrast:g} "
            f"(the {target.sequence} reference); is the scan a {target.sequence}?"
        )
    _, decay, k, spread, achieved, profile = best
    profile[L] = 1.0 + spread * (unit - 1.0)
    out = np.zeros(scan.shape, np.float64)
    out[box] = k * profile * (W > 0)
    record = {"target": target.record(), "decay_mm": round(float(decay), 3), "achieved": achieved}
    return out, record


def _levels(S, C, L, ring, shell, target):
    """(level k, texture spread s, achieved measures) of ``S + k * C`` for the target's contrast (and cv)."""
    n = S[ring].mean() + 0.0
    c_ring, c_lesion = C[ring].mean(), C[L].mean()
    denominator = c_lesion - target.contrast * c_ring
    if abs(denominator) < 1e-12:
        return None, None, None
    k = (target.contrast * n - S[L].mean()) / denominator
    if k * c_lesion * (target.contrast - 1.0) <= 0:  # the change would go the wrong way
        return None, None, None
    spread = 1.0
    if target.cv is not None:
        spread = _spread(S[L], k * C[L], target.cv)
    final = S + k * C
    ring_mean = final[ring].mean()
    excess = final[L].mean() - ring_mean
    achieved = {
        "contrast": round(float(final[L].mean() / ring_mean), 4),
        "penumbra": round(float((final[shell].mean() - ring_mean) / excess) if shell.any() else 0.0, 4),
    }
    return k, spread, achieved


def _spread(scan_in: np.ndarray, change_in: np.ndarray, cv: float) -> float:
    """The factor on the change's deviations from its mean inside the lesion that gives ``cv``
    (0 when the scan's own texture there is already above it)."""
    deviation = change_in - change_in.mean()
    mean = (scan_in + change_in).mean()
    a = np.mean(deviation**2)
    b = 2.0 * np.mean((scan_in - scan_in.mean()) * deviation)
    c = np.var(scan_in) - (cv * mean) ** 2
    if a <= 0:
        return 1.0
    disc = b * b - 4.0 * a * c
    if disc < 0:
        return 0.0
    roots = [(-b + sign * np.sqrt(disc)) / (2.0 * a) for sign in (1.0, -1.0)]
    positive = [r for r in roots if r >= 0]
    return float(min(positive)) if positive else 0.0


def _box(region: np.ndarray, lesion: np.ndarray, spacing: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``region`` and the lesion's 2-6 mm ring, with one voxel to spare."""
    pad = np.ceil((RING_MM[1] + AVOID_MM) / spacing).astype(int) + 1
    points = np.argwhere(region | lesion)
    lo = np.maximum(points.min(axis=0) - pad, 0)
    hi = np.minimum(points.max(axis=0) + pad + 1, region.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
