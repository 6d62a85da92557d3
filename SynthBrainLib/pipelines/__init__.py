"""One pipeline class per model kind, and :func:`load_pipeline` to get the right one by name."""

from __future__ import annotations

from pathlib import Path

import torch

# Importing a pipeline module registers its classes (SynthesisPipeline.__init_subclass__): a new
# model kind is a new module here and a card.
from .base import PIPELINE_OPTIONS, PIPELINES, SynthesisPipeline, locate_model, pipeline_class  # noqa: F401
from .label_to_image import LabelToImagePipeline
from .latent_diffusion import ConditionalBrainPipeline, LabelGeneratorPipeline, LatentDiffusionPipeline
from .modality_image import ModalityImagePipeline


def load_pipeline(
    model: str | Path, *, device: str | torch.device = "auto", store=None, **options
) -> SynthesisPipeline:
    """Load a model by id (installed or shipped) or by model-folder path, on ``device``.

    ``options`` go to the pipeline: ``precision`` (auto | float32 | bfloat16 | float16), ``decode``
    (auto | full | slab | tiled), ``tiles``, ``cache_size``, ``compile``, ``sdpa``
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
    installed = locate_model(model, store, device=device, options=options)
    return pipeline_class(installed.card).from_installed(installed, device=device, **options)


__all__ = [
    "SynthesisPipeline",
    "LatentDiffusionPipeline",
    "ConditionalBrainPipeline",
    "LabelGeneratorPipeline",
    "LabelToImagePipeline",
    "ModalityImagePipeline",
    "PIPELINES",
    "load_pipeline",
    "pipeline_class",
]
