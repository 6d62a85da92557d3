"""Presets: what a request runs with when the user names no sampler, steps or precision.

* ``fast`` (default): the fewest-steps setting that the quality study (docs/benchmarks.md,
  *Few-step solvers*) found **as close to the converged result as the published DDIM 50 float32**,
  with measured volumes unchanged: UniPC with 12 steps, in bfloat16 on CPUs that compute it natively
  (AVX-512 BF16/AMX; float32 elsewhere) and float16 on CUDA as before. A card that does not list
  UniPC keeps its own sampler and steps; only the precision changes.
* ``published``: the card's own default sampler and steps in float32 on the CPU - for Brain LDM the
  model-zoo bundle's DDIM 50 - for reproducing a paper's setting.

Plain Python (no torch): the command line checks a preset before it imports anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConditionError


@dataclass(frozen=True)
class Preset:
    """Defaults of a preset; ``None`` means the card's own (sampler, steps) or the device's usual
    precision (float32 on the CPU, float16 on CUDA)."""

    name: str
    sampler: str | None
    steps: int | None
    cpu_precision: str | None
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "fast",
            "unipc",
            12,
            "bfloat16",
            "UniPC 12 steps, bfloat16 where the CPU computes it natively (as close to the converged result "
            "as the published DDIM 50; docs/benchmarks.md)",
        ),
        Preset("published", None, None, None, "the card's published sampler and steps, float32 on the CPU"),
    )
}

DEFAULT_PRESET = "fast"


def check_preset(name: object) -> Preset:
    """The :class:`Preset` called ``name``; :class:`ConditionError` naming the allowed ones otherwise."""
    if not isinstance(name, str) or name.strip().lower() not in PRESETS:
        raise ConditionError(f"preset {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name.strip().lower()]


def preset_sampling(preset: Preset, samplers: tuple[str, ...], default_sampler: str, default_steps: int):
    """(sampler, steps) a request without either runs: the preset's where the card lists its sampler,
    else the card's defaults."""
    if preset.sampler is not None and preset.sampler in samplers:
        return preset.sampler, preset.steps
    return default_sampler, default_steps
