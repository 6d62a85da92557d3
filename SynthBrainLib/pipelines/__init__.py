"""One pipeline class per model kind, and :func:`load_pipeline` to get the right one by name."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.cards import ModelCard
from .base import PIPELINE_OPTIONS, SynthesisPipeline, locate_model  # noqa: F401  (re-export, public before the re-layer)
from .label_to_image import LabelToImagePipeline
from .latent_diffusion import ConditionalBrainPipeline, LabelGeneratorPipeline, LatentDiffusionPipeline

PIPELINES: dict[str, type[SynthesisPipeline]] = {
    "conditional_latent_diffusion": ConditionalBrainPipeline,
    "label_generator": LabelGeneratorPipeline,
    "label_to_image": LabelToImagePipeline,
}


def pipeline_class(card: ModelCard) -> type[SynthesisPipeline]:
    return PIPELINES[card.kind]


def load_pipeline(
    model: str | Path, *, device: str | torch.device = "auto", half: bool | None = None, store=None, **options
) -> SynthesisPipeline:
    """Load a model by id (installed or shipped) or by model-folder path, on ``device``.

    ``options`` go to the pipeline: ``precision`` (auto | float32 | bfloat16 | float16), ``decode``
    (auto | full | tiled), ``tiles``, ``cache_size``, ``compile``, ``sdpa``
    (see :class:`~SynthBrainLib.pipelines.base.SynthesisPipeline`).

    Example::

        pipe = load_pipeline("brain-ldm-demo")
        result = pipe.generate(age=70, sex="female", seed=1)
        fast = load_pipeline("brain-ldm-demo", precision="bfloat16", cache_size=16)
        preview = fast.generate(age=70, seed=1, preview=True)

    Raises:
        ModelNotFoundError: unknown model or weights not installed (the message says how to install).
        CheckpointError: a weight file is corrupt or does not fit the card's network.
        DeviceError: the device is not available.
    """
    installed = locate_model(model, store, device=device, half=half, options=options)
    return pipeline_class(installed.card).from_installed(installed, device=device, half=half, **options)


__all__ = [
    "SynthesisPipeline",
    "LatentDiffusionPipeline",
    "ConditionalBrainPipeline",
    "LabelGeneratorPipeline",
    "LabelToImagePipeline",
    "PIPELINES",
    "load_pipeline",
    "pipeline_class",
]
