"""The brain mask of a whole-head scan (deepbet's procedure), and whether a scan needs one.

deepbet (MIT) finds the brain in two passes: a 128^3 network on the whole volume gives a bounding box,
a 256^3 network inside that box (10 % margin) gives the mask; the largest connected part is kept and
its holes filled. Both passes see the scan in its closest RAS voxel order, resized without
interpolation ("nearest-exact"), so thick-slice 2D scans go in at their own resolution. Chosen by
measurement against HD-BET, ROBEX, BET (brainextractor), ITK skull stripping and Otsu thresholds on
real clinical and research scans (docs/evaluation/lesion-insertion.md, "Clinical scans").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ..errors import CheckpointError, ConditionError
from ..insertion.blending import voxel_spacing
from ..models.requests import check_skull_stripped
from .bias_field import bias_corrected
from .linknet import LinkNet3d
from .weights import DEEPBET, ExtractorRelease, load_networks, weights_path

#: A brain mask outside this volume (mL) is not a brain: the extraction is refused.
PLAUSIBLE_BRAIN_ML = (500.0, 2300.0)
#: A scan whose filled foreground (voxels that differ from its most common value) exceeds this volume
#: holds more than a brain (largest brains ~2000 mL): skull, scalp or neck. Measured: skull-stripped
#: real scans 1135-1531 mL, clinical whole-head scans 3288-3525 mL (docs/evaluation/lesion-insertion.md).
WHOLE_HEAD_ML = 2200.0

_NETWORKS: dict = {}


@dataclass(frozen=True)
class BrainMask:
    """A brain mask on the scan's grid.

    Attributes:
        mask: (X, Y, Z) bool, True in the brain.
        volume_ml: its volume.
        method: e.g. ``"deepbet 1.0.2"``.
        weights_sha256: sha256 of the weights file used.
        seconds: wall time.
    """

    mask: np.ndarray
    volume_ml: float
    method: str
    weights_sha256: str
    seconds: float

    def record(self) -> dict:
        return {
            "method": self.method,
            "weights_sha256": self.weights_sha256,
            "brain_volume_ml": round(self.volume_ml, 1),
            "seconds": round(self.seconds, 2),
        }


def voxel_ml(affine: np.ndarray) -> float:
    return float(np.prod(voxel_spacing(affine))) / 1000.0


def foreground_ml(scan: np.ndarray, affine: np.ndarray) -> float:
    """Volume (mL) of the largest connected region of voxels that differ from the scan's most common
    value, holes filled: the brain for a skull-stripped scan, the head (or the whole field of view,
    when there is no exact background) for a raw one."""
    step = max(1, int(round(np.cbrt(scan.size / 4e6))))  # count on a coarser copy of very large scans
    sub = np.asarray(scan[::step, ::step, ::step])
    values, counts = np.unique(sub, return_counts=True)
    foreground = sub != values[counts.argmax()]
    labels, n = ndi.label(foreground)
    if n == 0:
        return 0.0
    largest = labels == (np.bincount(labels.ravel())[1:].argmax() + 1)
    return float(np.count_nonzero(ndi.binary_fill_holes(largest))) * voxel_ml(affine) * step**3


def has_skull(scan: np.ndarray, affine: np.ndarray) -> bool:
    """Whether the scan holds more than a brain (see :data:`WHOLE_HEAD_ML`)."""
    return foreground_ml(scan, affine) > WHOLE_HEAD_ML


class BrainExtractor:
    """deepbet's two networks, loaded once per weights file and process.

    Args:
        release: which weights (fetched and converted on first use: :mod:`.weights`).
        home: the model store's home; the weights are in its ``extraction`` folder (default
            ``$SYNTHBRAIN_HOME``, or the CLI's ``--home``).
        threshold: probability above which a voxel is brain.
    """

    def __init__(self, release: ExtractorRelease = DEEPBET, *, home: Path | None = None, threshold: float = 0.5):
        self.release, self.threshold = release, float(threshold)
        key = str(weights_path(release, home))
        if key not in _NETWORKS:
            states, digest = load_networks(release, home=home)
            nets = {}
            for name, state in states.items():
                net = LinkNet3d().eval()
                missing, unexpected = net.load_state_dict(state, strict=False)
                if missing or unexpected:
                    raise CheckpointError(
                        f"{release.file_name} network {name!r} does not fit: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}"
                    )
                nets[name] = net
            _NETWORKS[key] = (nets, digest)
        self.networks, self.weights_sha256 = _NETWORKS[key]

    def __call__(self, scan: np.ndarray, affine: np.ndarray) -> BrainMask:
        """The brain mask of ``scan`` ((X, Y, Z), any orientation and spacing; 4x4 voxel-to-RAS ``affine``).

        Raises:
            ConditionError: the mask's volume is not a brain's (:data:`PLAUSIBLE_BRAIN_ML`).
        """
        start = time.perf_counter()
        to_ras, from_ras = _orientation(affine)
        x = torch.from_numpy(np.ascontiguousarray(_apply(np.asarray(scan, np.float32), to_ras)))
        x = torch.nan_to_num(x)
        with torch.inference_mode():
            prob = self._probabilities(x)
        mask = prob > self.threshold
        mask = _largest_filled(mask)
        mask = _apply(mask, from_ras)
        volume = float(np.count_nonzero(mask)) * voxel_ml(affine)
        low, high = PLAUSIBLE_BRAIN_ML
        if not low <= volume <= high:
            raise ConditionError(
                f"brain extraction found {volume:.0f} mL of brain, outside the {low:.0f}-{high:.0f} mL of a brain: "
                "is this a head scan? (if it is already skull-stripped, say so)"
            )
        method = f"{self.release.name} {self.release.version}"
        return BrainMask(mask, volume, method, self.weights_sha256, time.perf_counter() - start)

    def _probabilities(self, x: torch.Tensor) -> np.ndarray:
        small = F.interpolate(x[None, None], (128, 128, 128), mode="nearest-exact")[0, 0]
        low, high = torch.quantile(small, 0.005), torch.quantile(small, 0.995)
        box_prob = self.networks["bbox"](_normalise(small, low, high)[None, None])[0, 1].numpy()
        box = _box_with_margin(_largest(box_prob > 0.5), x.shape, margin=0.1)
        inside = F.interpolate(x[box][None, None], (256, 256, 256), mode="nearest-exact")[0, 0]
        brain = self.networks["brain"](_normalise(inside, low, high)[None, None])[0, 1]
        prob = np.zeros(tuple(x.shape), np.float32)
        prob[box] = F.interpolate(brain[None, None], tuple(x[box].shape), mode="nearest-exact")[0, 0].numpy()
        return prob


def _normalise(x: torch.Tensor, low, high) -> torch.Tensor:
    # deepbet's input scale: robust range to [0, 1], then ImageNet-like mean 0.449 / std 0.226
    x = ((x - low) / (high - low)).clamp(0, 1)
    return 0.226 * (x - x.mean()) / x.std() + 0.449


_FULL = ndi.generate_binary_structure(3, 3)  # 26-connected, as deepbet's cc3d


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask, structure=_FULL)
    if n <= 1:
        return mask
    return labels == (np.bincount(labels.ravel())[1:].argmax() + 1)


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    return ndi.binary_fill_holes(_largest(mask))


def _box_with_margin(small: np.ndarray, shape, margin: float) -> tuple[slice, ...]:
    """deepbet's bounding box: rows whose mean occupancy exceeds 2 %, scaled to ``shape``, grown by
    ``margin`` on each side."""
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        rows = np.nonzero(small.mean(axis=others) > 0.02)[0]
        if rows.size == 0:
            raise ConditionError("brain extraction found no brain in the scan: is this a head scan?")
        scale = shape[axis] / small.shape[axis]
        centre = round(float((rows.max() + 1 + rows.min()) / 2 * scale))
        size = round(float((rows.max() + 1 - rows.min()) * scale * (1 + 2 * margin)))
        box.append(slice(max(0, int(centre - size / 2)), min(int(shape[axis]), int(centre + size / 2))))
    return tuple(box)


def _orientation(affine: np.ndarray):
    import nibabel as nib

    current = nib.orientations.io_orientation(np.asarray(affine, np.float64))
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    return nib.orientations.ornt_transform(current, ras), nib.orientations.ornt_transform(ras, current)


def _apply(array: np.ndarray, transform) -> np.ndarray:
    import nibabel as nib

    return nib.orientations.apply_orientation(array, transform)


def brain_of_scan(scan: np.ndarray, affine: np.ndarray, skull_stripped="auto") -> BrainMask | None:
    """The brain mask of a scan that still has its skull, or None for a skull-stripped one.

    Args:
        skull_stripped: ``"yes"`` (no extraction), ``"no"`` (always extract) or ``"auto"``
            (extract when :func:`has_skull`).

    Raises:
        ConditionError: a bad ``skull_stripped``, or a mask that is not a brain's.
        CheckpointError: the extractor's weights are missing and cannot be fetched.
    """
    choice = check_skull_stripped(skull_stripped)
    if choice == "yes" or (choice == "auto" and not has_skull(scan, affine)):
        return None
    return BrainExtractor()(scan, affine)


def brain_only(scan: np.ndarray, affine: np.ndarray, extraction: BrainMask | None) -> np.ndarray:
    """``scan`` itself, or (with an extraction) a float32 copy that is 0 outside the brain mask and
    corrected for its bias field (N4, :mod:`SynthBrainLib.extraction.bias_field`)."""
    if extraction is None:
        return scan
    return bias_corrected(scan, affine, extraction.mask)


def extraction_record(skull_stripped: str, extraction: BrainMask | None) -> dict:
    """Provenance of the brain extraction (or of why there was none)."""
    if extraction is not None:
        return {"skull_stripped": skull_stripped, **extraction.record()}
    why = "given as skull-stripped" if skull_stripped == "yes" else "detected as skull-stripped (no skull or neck)"
    return {"skull_stripped": skull_stripped, "method": f"none: {why}"}
