"""The model-zoo bundle's own sampling path, written like its ``scripts/sampler.py`` and sharing no
code with the pipelines' loop, and one request along any path."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler

from SynthBrainLib.models.conditioning import resolve_conditions
from SynthBrainLib.pipelines import LatentDiffusionPipeline

from .paths import PathSpec


def reference_sample(
    pipe,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    conditions: dict[str, Any] | None = None,
    steps: int = 50,
) -> np.ndarray:
    """The model-zoo bundle's path (``scripts/sampler.py``): a plain DDIM loop, 50 steps, float32,
    under ``torch.no_grad``, then ``decode_stage_2_outputs`` of the whole latent. Same starting noise
    and conditioning tensors as the pipelines (``conditions`` in real units; default: the card's).
    Returns the output (C, X, Y, Z) float32, post-processed as the pipeline does
    (``pipe.raw_output``: clipped to the card's intensity range; class probabilities for label
    generators)."""

    card = pipe.card
    unet, autoencoder = pipe.networks["diffusion"], pipe.networks["autoencoder"]
    for net in (unet, autoencoder):
        net.to(memory_format=torch.contiguous_format)
    kwargs = {
        k: v
        for k, v in card.scheduler.kwargs.items()
        if k in ("num_train_timesteps", "schedule", "beta_start", "beta_end", "clip_sample", "prediction_type")
    }
    scheduler = DDIMScheduler(**kwargs)
    scheduler.set_timesteps(steps)
    noise = pipe.seeded_normal((1, *card.latent.shape), seed)
    conditioning = torch.tensor(
        resolve_conditions(card.conditioning, conditions or {}, None).vector(), dtype=torch.float32, device=pipe.device
    ).view(1, 1, -1)
    image = noise
    with torch.no_grad():
        cond_concat = conditioning.squeeze(1).unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)
        cond_concat = cond_concat.expand(list(cond_concat.shape[0:2]) + list(noise.shape[2:]))
        for i, t in enumerate(scheduler.timesteps):
            x = torch.cat((image, cond_concat), dim=1) if "concat" in card.conditioning.inputs else image
            context = conditioning if "crossattn" in card.conditioning.inputs else None
            model_output = unet(x=x, timesteps=torch.Tensor((t,)).to(noise.device).long(), context=context)
            image, _ = scheduler.step(model_output, t, image)
            if progress is not None:
                progress(i + 1, steps + 1)
        sample = autoencoder.decode_stage_2_outputs(image / card.latent.scale_factor)
    if progress is not None:
        progress(steps + 1, steps + 1)
    return pipe.raw_output(sample)


def run_request(pipe, path: PathSpec, seed: int, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """One synthesis along ``path``; returns the raw output (C, X, Y, Z) float32 for comparisons
    (image channel, or the label generator's partial volumes)."""
    if path.reference and has_reference_loop(pipe):
        return reference_sample(pipe, seed, progress)
    guidance = {} if path.guidance is None else {"guidance": path.guidance}
    result = pipe.generate(
        **pipe.example_request(),
        seed=seed,
        sampler=path.sampler,
        steps=path.steps,
        progress=progress,
        preview=path.preview,
        **guidance,
    )
    return result.channels()


def has_reference_loop(pipe) -> bool:
    """Whether the model-zoo bundle's plain DDIM loop (:func:`reference_sample`) runs this pipeline:
    latent diffusion of the whole output from conditions."""
    return isinstance(pipe, LatentDiffusionPipeline)
