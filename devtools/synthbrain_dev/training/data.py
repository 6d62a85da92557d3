"""The phantom population as training arrays (built once, cached on disk, loaded into memory)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from SynthBrainLib.models.schema import LESION_NAMES

from ..phantoms import PhantomPopulation, build_dataset, load_subject
from ..phantoms.dataset import subject_filename


@dataclass
class PhantomTrainingData:
    """All subjects of a phantom dataset, stacked.

    Attributes:
        images: float32 (N, 3, X, Y, Z): T1, FLAIR, T2 in [0, 1].
        partial_volumes: float16 (N, 10, X, Y, Z), brainSPADE3D class order (half precision to
            halve memory; batches are converted to float32).
        sex: int (N,) 0 female, 1 male; age: years (N,).
        ventricular_ml / brain_ml: volumes *measured* on each subject's T1 (mL).
        lesion_fractions: (N, 4) wmh, tumour, edema, gdtumour volume / brain volume.
        affine, shape, spacing: the shared grid.
    """

    images: np.ndarray
    partial_volumes: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    ventricular_ml: np.ndarray
    brain_ml: np.ndarray
    lesion_fractions: np.ndarray
    affine: np.ndarray
    sequences: tuple[str, ...]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[2:])

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def subjects_by_lesions(self) -> dict[str, int]:
        """Subjects with no lesion, WMH only, a tumour (any of its classes) only, and both."""
        wmh = self.lesion_fractions[:, 0] > 0
        tumour = (self.lesion_fractions[:, 1:] > 0).any(axis=1)
        return {
            "none": int((~wmh & ~tumour).sum()),
            "wmh": int((wmh & ~tumour).sum()),
            "tumour": int((~wmh & tumour).sum()),
            "both": int((wmh & tumour).sum()),
        }

    def describe(self) -> dict[str, Any]:
        """Statistics recorded in the card's source and in training.json."""
        return {
            "population": "synthbrain_dev.phantoms (MNI ICBM152 2009a)",
            "seed": self.manifest.get("seed"),
            **{k: self.manifest[k] for k in ("p_wmh", "p_tumour", "wmh_load", "parts") if k in self.manifest},
            "subjects": len(self),
            "spacing_mm": self.spacing[0],
            "shape": list(self.shape),
            "age_range": [float(self.age.min()), float(self.age.max())],
            "female": int((self.sex == 0).sum()),
            "male": int((self.sex == 1).sum()),
            "ventricular_volume_ml_range": [
                round(float(self.ventricular_ml.min()), 1),
                round(float(self.ventricular_ml.max()), 1),
            ],
            "brain_volume_ml_range": [round(float(self.brain_ml.min()), 1), round(float(self.brain_ml.max()), 1)],
            "subjects_by_lesions": self.subjects_by_lesions(),
            "subjects_with_lesion": {
                n: int((self.lesion_fractions[:, j] > 0).sum()) for j, n in enumerate(LESION_NAMES)
            },
            "lesion_fraction_medians": {
                n: round(float(np.median(self.lesion_fractions[self.lesion_fractions[:, j] > 0, j])), 5)
                if (self.lesion_fractions[:, j] > 0).any()
                else 0.0
                for j, n in enumerate(LESION_NAMES)
            },
        }


@dataclass(frozen=True)
class PopulationPart:
    """One part of a recipe's training population: ``share`` of the subjects, drawn from the
    population ``seed + seed_offset`` with the :class:`PhantomPopulation` keywords ``params``."""

    share: float
    seed_offset: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)


def part_sizes(n: int, parts: Sequence[PopulationPart]) -> list[int]:
    """Subjects per part for ``n`` in all: each part its share, rounded, the first part the rest."""
    if not parts or any(p.share <= 0 for p in parts):
        raise ValueError(f"population parts need positive shares, got {[p.share for p in parts]}")
    total = sum(p.share for p in parts)
    rest = [int(round(n * p.share / total)) for p in parts[1:]]
    return [n - sum(rest), *rest]


def _part_folder(cache: Path, seed: int, spacing_mm: float, shape, params: Mapping[str, Any]) -> Path:
    variant = "".join(f"-{k}{v}" for k, v in sorted(params.items()))
    return Path(cache) / f"mni152-seed{seed}-{spacing_mm:g}mm-{'x'.join(map(str, shape))}{variant}"


def load_training_data(
    n: int,
    *,
    seed: int = 0,
    cache: Path,
    spacing_mm: float = 2.5,
    shape=(64, 80, 64),
    population: Sequence[PopulationPart] | None = None,
    log: Callable[[str], None] = print,
) -> PhantomTrainingData:
    """Build (resumably) and load ``n`` subjects of the phantom population ``seed``.

    ``population``: a recipe's own population as :class:`PopulationPart` s, whose subjects are
    stacked in order (subjects 0.. of each part's population, each part cached in a folder of its
    own); ``None``: the default population."""

    parts = tuple(population or (PopulationPart(1.0),))
    sizes = part_sizes(n, parts)
    plan: list[Path] = []
    for part, count in zip(parts, sizes):
        part_seed = seed + part.seed_offset
        folder = _part_folder(cache, part_seed, spacing_mm, shape, part.params)
        missing = [i for i in range(count) if not (folder / subject_filename(i)).exists()]
        if missing:
            log(f"building {len(missing)} phantom subjects in {folder} (resumable)")
            build_dataset(
                PhantomPopulation(seed=part_seed, spacing_mm=spacing_mm, shape=shape, **part.params),
                count,
                folder,
                workers=min(2, os.cpu_count() or 1),
                progress=False,
            )
        plan += [folder / subject_filename(i) for i in range(count)]
    manifest = json.loads((plan[0].parent / "manifest.json").read_text())
    if len(parts) > 1:
        manifest["parts"] = [
            {"subjects": c, "seed": seed + p.seed_offset, **dict(p.params)} for p, c in zip(parts, sizes)
        ]
    sequences = ("T1", "FLAIR", "T2")
    shape = tuple(manifest["shape"])
    # Filled in place, one subject at a time: stacking a list of loaded subjects would hold every
    # array twice (13 GB peak for 320 subjects instead of ~3.5 GB).
    images = np.empty((n, len(sequences), *shape), np.float32)
    partial_volumes = np.empty((n, 10, *shape), np.float16)
    metas, specs, affine = [], [], None
    for i, path in enumerate(plan):
        record = load_subject(path)
        for j, seq in enumerate(sequences):
            images[i, j] = record["images"][seq]
        partial_volumes[i] = record["partial_volumes"]
        metas.append(record["meta"])
        specs.append(record["spec"])
        affine = record["affine"] if affine is None else affine
    return PhantomTrainingData(
        images=images,
        partial_volumes=partial_volumes,
        sex=np.array([1 if spec.sex == "male" else 0 for spec in specs]),
        age=np.array([spec.age for spec in specs], np.float32),
        ventricular_ml=np.array([m["measured_ventricular_volume_ml"] for m in metas], np.float32),
        brain_ml=np.array([m["measured_brain_volume_ml"] for m in metas], np.float32),
        lesion_fractions=np.array([m["conditioning"] for m in metas], np.float32),
        affine=np.asarray(affine, np.float64),
        sequences=sequences,
        manifest=manifest,
    )
