"""What a pipeline call returns: arrays, their geometry, and where they came from."""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import Remedy, SynthBrainError
from .io import write_result


@dataclass
class SynthesisResult:
    """The output of one synthesis call.

    Attributes:
        image: float32 (X, Y, Z) synthetic image, or ``None`` for a label generator.
        affine: 4x4 voxel [i, j, k] to RAS mm matrix of every array here.
        provenance: JSON-ready record (see :func:`build_provenance`); ``provenance["synthetic"]`` is
            always ``True``.
        labels: uint8 (X, Y, Z) label map (argmax of ``partial_volumes``) when the model makes labels.
        partial_volumes: float32 (C, X, Y, Z) class probabilities summing to 1 per voxel.
        label_names: class name of each label value / channel.
        brain_mask: bool (X, Y, Z) on the scan's grid: the brain extracted from a patient's scan that had
            its skull (edits and ageing of such a scan; None otherwise). It guided the registration only.
    """

    image: np.ndarray | None
    affine: np.ndarray
    provenance: dict[str, Any]
    labels: np.ndarray | None = None
    partial_volumes: np.ndarray | None = None
    label_names: tuple[str, ...] = field(default_factory=tuple)
    brain_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        # A damaged checkpoint or an overflow in low precision gives NaN; clamping keeps NaN and an
        # argmax turns it into background, so without this check a blank "result" would be saved.
        for name in ("image", "partial_volumes"):
            array = getattr(self, name)
            if array is not None and not np.isfinite(array).all():
                bad = int(array.size - np.isfinite(array).sum())
                model = self.provenance.get("model", {}).get("id", "the model")
                raise SynthBrainError(
                    f"{model} produced {bad} non-finite values (NaN/inf) in its {name.replace('_', ' ')}, so nothing "
                    "was returned: its weights may be damaged, or the precision too low",
                    remedy=Remedy("verify_weights", model=model),
                )

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        arr = self.image if self.image is not None else self.labels
        return tuple(arr.shape)

    def channels(self) -> np.ndarray:
        """The output as channels (C, X, Y, Z) float32: the image as one channel, or the label map's
        partial volumes (what benchmarks and quality studies compare)."""
        out = self.image[None] if self.image is not None else self.partial_volumes
        return np.asarray(out, np.float32)

    def save(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        partial_volumes: str | Path | None = None,
        labels: str | Path | None = None,
    ) -> list[Path]:
        """Write the image (or, for a label generator, the label map) and its provenance JSON.

        Args:
            path: ``.nii``, ``.nii.gz`` or ``.nrrd`` file.
            overwrite: replace existing files; without it an existing file is an error.
            partial_volumes: also write the (C, X, Y, Z) class probabilities to this file.
            labels: also write the label map of a result that has an image (the lesion mask of an
                insertion) to this file.

        Returns:
            The files written (data files first, then their JSON sidecars).
        """

        return write_result(self, path, overwrite=overwrite, partial_volumes=partial_volumes, labels=labels)


def build_provenance(
    *,
    card,
    weights: dict[str, Any],
    conditions: dict[str, Any] | None,
    seed: int | None,
    sampler: str | None,
    steps: int | None,
    device: str,
    precision: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record stored beside every output (JSON sidecar, NIfTI/NRRD header, MRML attribute)."""
    import monai
    import torch

    record = {
        "synthetic": True,
        "generator": f"SynthBrain {__version__}",
        "model": {
            "id": card.id,
            "name": card.name,
            "card_version": card.version,
            "kind": card.kind,
            "citation": card.citation,
            "licence": card.licence,
        },
        "weights": weights,
        "conditions": conditions,
        "seed": seed,
        "sampler": sampler,
        "steps": steps,
        "device": device,
        "precision": precision,
        "versions": {
            "synthbrain": __version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        record.update(extra)
    return record
