"""Recipes that train the shipped demo models on the MNI152 phantom population.

``synthbrain-dev train brain-ldm-demo --out Resources/Models/brain-ldm-demo`` (and ``labels-demo``,
``label2image-demo``) builds the phantom dataset (cached), trains the networks with a fixed seed
and writes a model folder: ``card.json`` (with the sha256 of every weight file), the weights as
safetensors and ``training.json`` (the command, data statistics, loss curves, timings). The cards
use the same schema and the same loading code as the published models.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from SynthBrainLib._version import __version__
from SynthBrainLib.errors import OutputError, SynthBrainError
from SynthBrainLib.models.cards import ModelCard
from SynthBrainLib.models.store import default_home

from .autoencoders import Budget, check_sharpenable, sharpen_decoder_of
from .data import load_training_data
from .demo_cards import DEMO_IDS
from .model_folders import storage_check, write_model_folder
from .recipes import RECIPE_POPULATIONS, RECIPES
from .trainers import Log

__all__ = ["DEMO_IDS", "train_demo", "write_model_folder"]


def train_demo(
    model_id: str,
    out: str | Path,
    *,
    subjects: int = 320,
    seed: int = 0,
    scale: float = 1.0,
    minutes: float | None = None,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
    autoencoder_from: str | Path | None = None,
    diffusion_from: str | Path | None = None,
    sharpen_decoder: str | Path | None = None,
    log: Log = print,
) -> ModelCard:
    """Train one demo model end to end and write its model folder.

    Args:
        model_id: one of :data:`DEMO_IDS`.
        out: model folder to write (e.g. ``Resources/Models/brain-ldm-demo``).
        subjects: phantom subjects to train on (generated once, cached under ``data_dir``).
        seed: phantom population seed.
        scale: multiplies every step budget (1.0 = the shipped recipe).
        minutes: wall-clock cap per network.
        autoencoder_from: reuse the autoencoder of this existing model folder (see :class:`Budget`).
        diffusion_from: continue training the diffusion UNet of this existing model folder (see :class:`Budget`).
        sharpen_decoder: instead of training, fine-tune only the decoder of this trained model
            folder (:func:`sharpen_decoder_of`).
    """

    if model_id not in RECIPES:
        raise SynthBrainError(f"no training recipe for {model_id!r}; choose one of {', '.join(DEMO_IDS)}")
    if (Path(out) / "card.json").exists() and not overwrite:
        raise OutputError(f"{Path(out) / 'card.json'} already exists; pass --overwrite to replace the model")
    if autoencoder_from is not None and model_id == "label2image-demo":
        raise SynthBrainError("label2image-demo has no autoencoder to reuse")
    if autoencoder_from is not None and sharpen_decoder is not None:
        raise SynthBrainError("--autoencoder-from and --sharpen-decoder-of exclude each other; give one")
    if diffusion_from is not None and (model_id == "label2image-demo" or sharpen_decoder is not None):
        raise SynthBrainError("--diffusion-from needs a latent diffusion demo (brain-ldm-demo, labels-demo) trained")
    if sharpen_decoder is not None:
        check_sharpenable(model_id)
    start = time.time()
    data_dir = Path(data_dir) if data_dir else default_home() / "phantoms"
    data = load_training_data(subjects, seed=seed, cache=data_dir, population=RECIPE_POPULATIONS.get(model_id), log=log)
    log(f"{model_id}: {len(data)} phantom subjects loaded ({time.time() - start:.0f} s)")
    reuse = Path(autoencoder_from) if autoencoder_from is not None else None
    budget = Budget(
        scale=scale,
        minutes=minutes,
        autoencoder_from=reuse,
        diffusion_from=Path(diffusion_from) if diffusion_from is not None else None,
    )
    if sharpen_decoder is not None:
        card, states, record = sharpen_decoder_of(model_id, Path(sharpen_decoder), data, budget, log)
    else:
        card, states, record = RECIPES[model_id](data, budget, log)
    training = {
        "model": model_id,
        "command": " ".join(
            ["synthbrain-dev", "train", model_id, "--out", str(out), "--subjects", str(subjects), "--seed", str(seed)]
            + (["--scale", str(scale)] if scale != 1.0 else [])
            + (["--autoencoder-from", str(autoencoder_from)] if autoencoder_from is not None else [])
            + (["--diffusion-from", str(diffusion_from)] if diffusion_from is not None else [])
            + (["--sharpen-decoder-of", str(sharpen_decoder)] if sharpen_decoder is not None else [])
        ),
        "synthbrain": __version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} CPU(s), {platform.python_version()}",
        "seconds_total": round(time.time() - start, 1),
        "data": data.describe(),
        "networks": record,
    }
    training["storage"] = storage_check(card, states, data)
    log(f"{model_id}: float16 storage check {training['storage']}")
    card_obj = write_model_folder(Path(out), card, states, training, overwrite=overwrite)
    log(f"{model_id}: written to {out} in {time.time() - start:.0f} s")
    return card_obj
