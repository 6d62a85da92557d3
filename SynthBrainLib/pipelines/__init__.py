"""One pipeline class per model kind, and :func:`load_pipeline` to get the right one by name."""

from __future__ import annotations

from pathlib import Path

import torch

from ..cards import ModelCard
from ..checkpoints import read_state_dict
from ..errors import CheckpointError, ConditionError, ModelNotFoundError
from ..networks import load_networks
from .base import SynthesisPipeline
from .label_to_image import LabelToImagePipeline
from .latent_diffusion import ConditionalBrainPipeline, LabelGeneratorPipeline, LatentDiffusionPipeline

PIPELINES: dict[str, type[SynthesisPipeline]] = {
    "conditional_latent_diffusion": ConditionalBrainPipeline,
    "label_generator": LabelGeneratorPipeline,
    "label_to_image": LabelToImagePipeline,
}


def pipeline_class(card: ModelCard) -> type[SynthesisPipeline]:
    return PIPELINES[card.kind]


def read_style_codes(card: ModelCard, path: Path) -> dict[str, torch.Tensor]:
    """Per-sequence style statistics of a SPADE card: ``<SEQ>.mean`` and ``<SEQ>.std``, each (z_dim,)."""
    codes = read_state_dict(path)
    z_dim = card.networks["generator"].kwargs.get("z_dim") if "generator" in card.networks else None
    for seq in card.sequences.names:
        for stat in ("mean", "std"):
            key = f"{seq}.{stat}"
            if key not in codes:
                raise CheckpointError(f"style codes {Path(path).name} lack '{key}' (sequences: {', '.join(card.sequences.names)})")
            if codes[key].ndim != 1 or (z_dim is not None and codes[key].shape[0] != z_dim):
                raise CheckpointError(f"style codes {Path(path).name}: '{key}' has shape {tuple(codes[key].shape)}, expected ({z_dim},)")
    return codes


#: Keyword options of :func:`load_pipeline` (passed to the pipeline class).
PIPELINE_OPTIONS = ("precision", "decode", "tiles", "cache_size", "compile", "sdpa")


def load_pipeline(model: str | Path, *, device: str | torch.device = "auto", half: bool | None = None, store=None, **options) -> SynthesisPipeline:
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
    from ..device import Precision, resolve_device
    from ..store import ModelStore

    unknown = sorted(set(options) - set(PIPELINE_OPTIONS))
    if unknown:
        raise ConditionError(f"unknown option {unknown[0]!r}; load_pipeline takes {', '.join(PIPELINE_OPTIONS)}")
    if not isinstance(model, (str, Path)):
        raise ModelNotFoundError(f"model {model!r} is not a model id or a model folder path")

    Precision.for_device(resolve_device(device), half, options.get("precision"))  # fail on a bad device or precision before loading gigabytes
    if store is not None and not isinstance(store, ModelStore):
        raise ModelNotFoundError(f"store {store!r} is not a SynthBrainLib.ModelStore")
    store = store or ModelStore()
    installed = store.locate(model)
    card = installed.card
    paths = {k: w.path for k, w in installed.weights.items()}
    networks, layouts = load_networks(card, paths)
    tensors = {}
    if card.sequences is not None and card.sequences.weights:
        tensors[card.sequences.weights] = read_style_codes(card, paths[card.sequences.weights])
    info = installed.provenance()
    for name, spec in card.networks.items():
        if spec.weights in info:
            info[spec.weights]["layout"] = layouts.get(name)
    return pipeline_class(card)(card, networks, device=device, half=half, weights_info=info, tensors=tensors, **options)


__all__ = [
    "SynthesisPipeline",
    "LatentDiffusionPipeline",
    "ConditionalBrainPipeline",
    "LabelGeneratorPipeline",
    "LabelToImagePipeline",
    "PIPELINES",
    "load_pipeline",
    "pipeline_class",
    "read_style_codes",
]
