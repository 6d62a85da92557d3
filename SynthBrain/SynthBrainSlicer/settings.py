"""How one run is made, as one value: the panel and the console build a :class:`RunSettings`, and
every task builder takes it whole (instead of the same eight keywords passed along by position)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class RunSettings:
    """Which model, seed and sampler a run uses, and where it runs.

    ``None`` means the default: the kind's installed model, a drawn seed (recorded in the
    provenance), the preset's sampler and steps, the logic's ``device`` and ``precision``.
    ``preview``: the pipeline's quick preview (few steps) unless ``sampler``/``steps`` are given.
    """

    model: str | None = None
    seed: int | None = None
    sampler: str | None = None
    steps: int | None = None
    device: str | None = None
    precision: str | None = None
    preview: bool = False

    @classmethod
    def split(cls, keywords: Mapping[str, Any]) -> tuple[RunSettings, dict[str, Any]]:
        """``(settings, the other keywords)`` from a console call's keywords, e.g.
        ``generateBrain(age=72, seed=3)`` -> ``(RunSettings(seed=3), {"age": 72})``."""
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in keywords.items() if k in names})
        return settings, {k: v for k, v in keywords.items() if k not in names}

    def generate_options(self) -> dict[str, Any]:
        """The keywords of a pipeline's ``generate`` these settings fix."""
        return {
            "seed": self.seed,
            "sampler": self.sampler,
            "steps": self.steps,
            **({"preview": True} if self.preview else {}),
        }
