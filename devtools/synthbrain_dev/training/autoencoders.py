"""The autoencoder stage of the recipes: trained, reused from an existing model folder
(``--autoencoder-from``), or its image decoder sharpened adversarially (``--sharpen-decoder-of``);
and the step budget of a training run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.models.cards import NetworkSpec, load_card
from SynthBrainLib.models.checkpoints import load_weights, read_state_dict
from SynthBrainLib.models.networks import build_network
from SynthBrainLib.outputs.digests import verify_file

from .data import PhantomTrainingData
from .demo_cards import ADVERSARIAL_WEIGHT, AE_PATCH, DECODER_STEPS
from .trainers import (
    FitConfig,
    Log,
    finetune_decoder_adversarial,
    train_image_autoencoder,
)


@dataclass
class Budget:
    """Steps per network; ``scale`` shrinks every budget (e.g. 0.02 for a smoke run).

    ``autoencoder_from``: an existing model folder of the same demo whose autoencoder is reused
    (checked against its card's sha256) instead of trained again; only the diffusion UNet trains.
    ``diffusion_from``: an existing model folder of the same demo whose diffusion UNet is the starting
    point of this run's training (continued training; same architecture, sha256-checked).
    """

    scale: float = 1.0
    minutes: float | None = None
    autoencoder_from: Path | None = None
    diffusion_from: Path | None = None

    def config(self, steps: int, **kwargs) -> FitConfig:
        return FitConfig(steps=max(1, int(round(steps * self.scale))), minutes=self.minutes, **kwargs)


def reused_autoencoder(spec: NetworkSpec, folder: Path, model_id: str, log: Log) -> tuple[torch.nn.Module, dict]:
    """The autoencoder of an existing model folder of ``model_id``, sha256-checked and loaded strictly."""
    return reused_network(spec, folder, model_id, "--autoencoder-from", log)


def reused_network(
    spec: NetworkSpec, folder: Path, model_id: str, option: str, log: Log
) -> tuple[torch.nn.Module, dict]:
    """Network ``spec.name`` of an existing model folder of ``model_id`` (given as ``option``), built
    from ``spec`` - its card must have the same architecture -, sha256-checked and loaded strictly.
    Returns (the network in eval mode, a record: file, sha256, that network's own training record)."""

    folder = Path(folder)
    card = load_card(folder / "card.json")
    if card.id != model_id:
        raise SynthBrainError(f"{option} {folder} holds {card.id!r}, not {model_id!r}")
    if json.loads(json.dumps(card.networks[spec.name].kwargs)) != json.loads(json.dumps(spec.kwargs)):
        raise SynthBrainError(f"{option} {folder}: its {spec.name} network differs from the recipe's ({spec.kwargs})")
    weight = card.weights[card.networks[spec.name].weights]
    path = folder / weight.file
    digest = verify_file(path, weight.sha256, label=f"{model_id} {spec.name}")
    model = build_network(spec, model_id)
    load_weights(model, {k: v.float() for k, v in read_state_dict(path).items()}, "safetensors", name=str(path))
    previous = {}
    if (folder / "training.json").exists():
        previous = json.loads((folder / "training.json").read_text()).get("networks", {}).get(spec.name, {})
    log(f"{model_id}: {spec.name} taken from {path} (sha256 {digest[:12]}...)")
    return model.eval(), {"reused_from": str(path), "sha256": digest, "original_training": previous}


def autoencoder_stage(
    spec: NetworkSpec, budget: "Budget", model_id: str, log: Log, train: Callable[[], tuple[torch.nn.Module, Any]]
) -> tuple[torch.nn.Module, dict]:
    if budget.autoencoder_from is not None:
        return reused_autoencoder(spec, budget.autoencoder_from, model_id, log)
    model, report = train()
    return model, report if isinstance(report, dict) else report.as_json()


def _sharpen(ae: torch.nn.Module, data: PhantomTrainingData, budget: "Budget", log: Log) -> dict:
    """Fine-tune ``ae``'s decoder adversarially in place; the stage's training record."""
    ae, report, extra = finetune_decoder_adversarial(
        ae,
        data.images[:, :1],
        budget.config(DECODER_STEPS, batch=4, lr=2e-4, bf16=True, channels_last=True, seed=7),
        adversarial_weight=ADVERSARIAL_WEIGHT,
        patch=AE_PATCH,
        log=log,
    )
    return {**report.as_json(), **extra, "adversarial_weight": ADVERSARIAL_WEIGHT}


def sharpened_image_autoencoder(
    spec: NetworkSpec, data: PhantomTrainingData, budget: "Budget", log: Log
) -> tuple[torch.nn.Module, dict]:
    """The T1 autoencoder: L1 + edge L1 + KL on random crops, then its decoder sharpened with an
    adversarial patch loss (the encoder, hence the latents, unchanged)."""
    ae, report = train_image_autoencoder(
        spec,
        data.images[:, :1],
        budget.config(4000, batch=4, lr=1e-3, bf16=True, channels_last=True, seed=1),
        patch=AE_PATCH,
        log=log,
    )
    return ae, {**report.as_json(), "decoder_adversarial": _sharpen(ae, data, budget, log)}


#: Demos whose image decoder ``--sharpen-decoder-of`` can fine-tune (label decoders output classes).
SHARPENED = ("brain-ldm-demo",)


def check_sharpenable(model_id: str) -> None:
    """Refuse a demo whose decoder is not an image decoder (:data:`SHARPENED`)."""
    if model_id not in SHARPENED:
        raise SynthBrainError(
            f"--sharpen-decoder-of: {model_id} has no image decoder to sharpen; only {', '.join(SHARPENED)}"
        )


def sharpen_decoder_of(
    model_id: str, folder: Path, data: PhantomTrainingData, budget: "Budget", log: Log
) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict]:
    """A trained model folder with only its autoencoder's decoder fine-tuned adversarially.

    Every weight file of ``folder`` is sha256-checked against its card; the diffusion UNet is kept
    as it is, which is valid because the encoder (and so every latent it was trained on) does not
    change. Returns (card, states, training record) for :func:`write_model_folder`.
    """
    check_sharpenable(model_id)
    folder = Path(folder)
    card = load_card(folder / "card.json")
    ae, reused = reused_autoencoder(card.networks["autoencoder"], folder, model_id, log)
    weight = card.weights["diffusion"]
    verify_file(folder / weight.file, weight.sha256, label=f"{model_id} diffusion")
    diffusion = {k: v.float() for k, v in read_state_dict(folder / weight.file).items()}
    previous = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    record = dict(previous.get("networks", {}))
    record["autoencoder"] = {**reused, "decoder_adversarial": _sharpen(ae, data, budget, log)}
    record["earlier_stage"] = {k: previous.get(k) for k in ("command", "seconds_total", "synthbrain", "machine")}
    card_dict = json.loads((folder / "card.json").read_text())
    return card_dict, {"autoencoder": ae.state_dict(), "diffusion": diffusion}, record
