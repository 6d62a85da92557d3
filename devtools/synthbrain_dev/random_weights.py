"""Networks with random weights for timing and testing: a card's architecture without its training.

MONAI zero-initialises some output convolutions (the diffusion UNet's last one), so an untouched
random network predicts zeros and every sampler would return the same latent: :func:`perturb` adds
seeded noise to every parameter. The benchmarks time published models whose weights are not
installed this way, and the test suite's tiny models are made the same way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from SynthBrainLib.errors import ModelNotFoundError
from SynthBrainLib.models.cards import ModelCard
from SynthBrainLib.models.networks import build_networks
from SynthBrainLib.models.store import ModelStore
from SynthBrainLib.outputs.digests import file_sha256
from SynthBrainLib.pipelines import load_pipeline, pipeline_class

#: How the reports name such weights.
RANDOM_WEIGHTS = "random (perturbed, seed 0)"


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> torch.nn.Module:
    """Add ``scale`` x N(0, 1) noise (drawn from ``seed``) to every parameter, in place, so that
    random-weight networks give non-zero, input-dependent outputs; returns ``module``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))
    return module


def build_pipeline(
    model: str,
    *,
    device: str,
    precision: str,
    decode: str,
    random_weights: bool = False,
    store=None,
    preset: str = "fast",
):
    """The model's pipeline with its weights, or - when they are not installed or ``random_weights`` -
    from its card with perturbed random weights. Returns (pipeline, weights description)."""
    store = store or ModelStore()
    if not random_weights:
        try:
            pipe = load_pipeline(model, device=device, store=store, preset=preset, precision=precision, decode=decode)
            return pipe, "trained (installed)"
        except ModelNotFoundError:
            pass
    card = store.locate(model, require_complete=False).card
    torch.manual_seed(0)
    networks = build_networks(card)
    for net in networks.values():
        perturb(net)
    pipe = pipeline_class(card)(card, networks, device=device, preset=preset, precision=precision, decode=decode)
    return pipe, RANDOM_WEIGHTS


def random_weights_folder(model: str, folder: Path, seed: int = 0) -> Path:
    """A model folder ``<model>-random-weights`` with ``model``'s card and random (perturbed) weights."""
    card = ModelStore().locate(model, require_complete=False).card
    data = copy.deepcopy(card.to_dict())
    data["id"] = f"{card.id}-random-weights"
    data["name"] = f"{card.name} - random weights (timing only)"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for name, net in build_networks(ModelCard.from_dict(data)).items():
        perturb(net, seed)
        key = card.networks[name].weights
        entry = data["weights"][key]
        entry["file"] = f"{key}.safetensors"
        entry["format"] = "auto"
        for field in ("md5", "url", "bundle_path"):
            entry.pop(field, None)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / entry["file"]))
        entry["sha256"] = file_sha256(folder / entry["file"])
        del net
    data["source"] = {"type": "random-weights", "card": card.id, "note": "timing only"}
    data["weights_public"] = False
    (folder / "card.json").write_text(json.dumps(data, indent=2))
    return folder
