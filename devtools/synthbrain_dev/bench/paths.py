"""What a benchmark measures: the synthesis paths (the bundle's reference loop, or a pipeline
configuration), named on the command line as ``NAME=SAMPLER:STEPS:PRECISION:DECODE``."""

from __future__ import annotations

from dataclasses import dataclass, replace

from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.models.conditioning import resolve_sampler
from SynthBrainLib.pipelines.base import SynthesisPipeline


@dataclass(frozen=True)
class PathSpec:
    """One way of synthesising: ``reference`` (the bundle's plain loop) or a pipeline configuration.

    ``sampler``/``steps`` ``None`` mean the ``preset``'s (:mod:`SynthBrainLib.models.presets`);
    ``preview`` uses the pipeline's preview settings; ``decode``, ``precision`` and ``preset`` as the
    pipeline options.
    """

    name: str
    sampler: str | None = None
    steps: int | None = None
    precision: str = "auto"
    decode: str = "auto"
    preview: bool = False
    reference: bool = False
    repeats: int | None = None  # overrides the benchmark's repeat count for this path
    preset: str = "fast"
    guidance: float | None = None  # classifier-free guidance scale; None: the card's default

    def describe(self, card=None) -> str:
        if self.reference:
            return "bundle loop: ddim 50, float32, full decode"
        sampling = card.sampling if card is not None else None
        sampler, steps = self.sampler or "-", self.steps if self.steps is not None else "-"
        if sampling is not None:
            try:
                sampler, steps = resolve_sampler(sampling, card.scheduler, self.sampler, self.steps, self.preset)
            except SynthBrainError:
                pass
        precision = f"auto ({self.preset} preset)" if self.precision == "auto" else self.precision
        if self.preview and card is not None and sampling is not None:
            sampler = self.sampler or (
                SynthesisPipeline.preview_sampler
                if SynthesisPipeline.preview_sampler in sampling.samplers
                else sampling.default_sampler
            )
            steps = self.steps or SynthesisPipeline.preview_steps
        if sampling is None:
            return f"{precision}, decode {self.decode}"
        guided = ""
        if sampling.guidance is not None:
            guided = f", guidance {self.guidance if self.guidance is not None else sampling.guidance.default:g}"
        return f"{sampler} {steps}, {precision}, decode {self.decode}{guided}"


REFERENCE = PathSpec("reference", "ddim", 50, "float32", "full", reference=True, preset="published")


def parse_path(text: str) -> PathSpec:
    """``NAME=SAMPLER:STEPS:PRECISION:DECODE[:REPEATS[:GUIDANCE]]`` (empty fields: the fast preset's
    and the card's guidance), e.g. ``fast=unipc:12:bfloat16:auto``, ``unguided=::::1:1``,
    ``NAME=preview``, ``NAME=published`` (the published preset) or ``reference``."""
    if text == "reference":
        return REFERENCE
    if "=" not in text:
        raise SynthBrainError(f"path {text!r} is not NAME=SAMPLER:STEPS:PRECISION:DECODE (or 'reference')")
    name, spec = text.split("=", 1)
    if spec == "preview":
        return PathSpec(name, preview=True, precision="auto")
    if spec == "published":
        return PathSpec(name, preset="published")
    sampler, steps, precision, decode, repeats, guidance = (spec.split(":") + [""] * 6)[:6]
    numbers = []
    for what, value in (("steps", steps), ("repeats", repeats)):
        try:
            numbers.append(int(value) if value else None)
        except ValueError:
            raise SynthBrainError(f"path {text!r}: {what} {value!r} is not a whole number") from None
    try:
        scale = float(guidance) if guidance else None
    except ValueError:
        raise SynthBrainError(f"path {text!r}: guidance {guidance!r} is not a number") from None
    return PathSpec(
        name, sampler or None, numbers[0], precision or "auto", decode or "auto", repeats=numbers[1], guidance=scale
    )


def default_paths(card) -> list[PathSpec]:
    """Reference, the published preset (the card's sampler and steps in float32, through our loop),
    the library's default (the fast preset), and the preview for diffusion models."""
    paths = [
        REFERENCE if card.sampling is not None else replace(REFERENCE, sampler=None, steps=None),
        PathSpec("published", preset="published"),
        PathSpec("default"),
    ]
    if card.sampling is not None and card.sampling.guidance is not None:
        # The bundle loop has no guidance: the unguided twins check our loop against it, and the
        # guided paths' time against theirs is what guidance costs.
        paths.insert(2, PathSpec("published-unguided", preset="published", guidance=1.0))
        paths.append(PathSpec("default-unguided", guidance=1.0))
    if card.sampling is not None:
        paths.append(PathSpec("preview", preview=True))
    return paths
