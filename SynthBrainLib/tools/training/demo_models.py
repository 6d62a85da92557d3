"""Recipes that train the shipped demo models on the MNI152 phantom population.

``synthbrain train brain-ldm-demo --out Resources/Models/brain-ldm-demo`` (and ``labels-demo``,
``label2image-demo``) builds the phantom dataset (cached), trains the networks with a fixed seed
and writes a model folder: ``card.json`` (with the sha256 of every weight file), the weights as
safetensors and ``training.json`` (the command, data statistics, loss curves, timings). The cards
use the same schema and the same loading code as the published models.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..._version import __version__
from ...errors import OutputError, SynthBrainError
from ...models.cards import ModelCard, NetworkSpec, load_card
from ...models.checkpoints import load_weights, read_state_dict
from ...models.networks import build_network
from ...models.store import default_home
from ...outputs.atomic_files import temporary_sibling
from ...outputs.digests import file_sha256, verify_file
from ...pipelines import pipeline_class
from ..phantoms import PhantomPopulation
from .data import PhantomTrainingData, load_training_data
from .trainers import (
    FitConfig,
    encode_means,
    finetune_decoder_adversarial,
    style_statistics,
    train_image_autoencoder,
    train_label_autoencoder,
    train_latent_diffusion,
    train_spade,
)

DEMO_IDS = ("brain-ldm-demo", "labels-demo", "label2image-demo")
Log = Callable[[str], None]

LABEL_COLOURS = [
    (0, "background", [0, 0, 0]),
    (1, "csf", [84, 160, 227]),
    (2, "gm", [128, 174, 128]),
    (3, "wm", [241, 214, 145]),
    (4, "dgm", [177, 122, 101]),
    (5, "brainstem", [111, 184, 210]),
    (6, "wmh", [255, 255, 0]),
    (7, "tumour", [230, 30, 30]),
    (8, "edema", [90, 200, 90]),
    (9, "gdtumour", [200, 0, 200]),
]
#: Brain LDM's noise schedule; the demos predict v instead of epsilon (see trainers.train_latent_diffusion).
SCHEDULE = {
    "num_train_timesteps": 1000,
    "schedule": "scaled_linear_beta",
    "beta_start": 0.0015,
    "beta_end": 0.0205,
    "clip_sample": False,
    "prediction_type": "v_prediction",
}
#: Averaged weights for the latent UNets (FitConfig.ema).
UNET_EMA = 0.999
#: Optimiser steps of the latent UNets (batch 8): ~90 passes over the 320 phantoms.
UNET_STEPS = 3500
#: Classifier-free guidance of the latent demos (Ho & Salimans 2022): the UNets see the null
#: condition (every conditioning value -1; model-unit conditions lie in [0, 1]) for this share of
#: training samples, and sample with ``uncond + w (cond - uncond)``. Without it the first demos
#: followed their conditions weakly (requested vs measured ventricles r = 0.53). The default scale
#: was chosen from the guidance table of docs/evaluation (see docs/demo-models.md).
CONDITION_DROPOUT = 0.15
NULL_CONDITION = -1.0
GUIDANCE = {"default": 3.0, "minimum": 1.0, "maximum": 8.0}
#: Adversarial fine-tuning of the image decoder (trainers.finetune_decoder_adversarial): steps and
#: the weight of the adversarial term beside L1 + edge L1. Measured on held-out phantoms in
#: docs/demo-models.md.
DECODER_STEPS = 400
ADVERSARIAL_WEIGHT = 0.05
LICENCE = (
    "Apache-2.0 (SynthBrain). Trained only on phantoms derived from the MNI ICBM152 2009a template (see "
    "NOTICE_MNI152.txt beside the demo models)."
)
CITATION = (
    "SynthBrain demo model trained on MNI152-derived phantoms. Architecture after Pinaya et al., Brain imaging "
    "generation with latent diffusion models, DGM4MICCAI 2022, and Fernandez et al., A 3D generative model of "
    "pathological multi-modal MR images and segmentations, DGM4MICCAI 2023."
)
INTENDED_USE = (
    "Demonstration and software testing only: trained on synthetic phantoms, not on patients. Not for research "
    "conclusions about anatomy, nor for clinical use."
)


@dataclass
class Budget:
    """Steps per network; ``scale`` shrinks every budget (e.g. 0.02 for a smoke run).

    ``autoencoder_from``: an existing model folder of the same demo whose autoencoder is reused
    (checked against its card's sha256) instead of trained again; only the diffusion UNet trains.
    """

    scale: float = 1.0
    minutes: float | None = None
    autoencoder_from: Path | None = None

    def config(self, steps: int, **kwargs) -> FitConfig:
        return FitConfig(steps=max(1, int(round(steps * self.scale))), minutes=self.minutes, **kwargs)


# ----------------------------------------------------------------------------------------------
# Card pieces
# ----------------------------------------------------------------------------------------------
def _output(data: PhantomTrainingData, modality: str) -> dict:
    return {
        "shape": list(data.shape),
        "spacing": [float(s) for s in data.spacing],
        "affine": np.asarray(data.affine).round(6).tolist(),
        "intensity_range": [0.0, 1.0],
        "modality": modality,
        "geometry_published": True,
        "note": "Phantom grid: RAS, centred on the MNI152 brain; images skull-stripped, intensities in [0, 1].",
    }


def _continuous(name: str, label: str, unit: str, lo: float, hi: float, default: float, note: str) -> dict:
    return {
        "name": name,
        "label": label,
        "kind": "continuous",
        "unit": unit,
        "range": [lo, hi],
        "default": default,
        "normalisation": "defined",
        "note": note,
    }


def _rounded_range(values: np.ndarray, step: float, pad: float = 0.1) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    lo = max(0.0, np.floor((lo - pad * span) / step) * step)
    hi = np.ceil((hi + pad * span) / step) * step
    return float(lo), float(hi)


def _base_card(model_id: str, name: str, kind: str, description: str, data: PhantomTrainingData) -> dict:
    return {
        "schema_version": 1,
        "id": model_id,
        "name": name,
        "version": "1.0.0",
        "kind": kind,
        "description": description,
        "licence": LICENCE,
        "citation": CITATION,
        "intended_use": INTENDED_USE,
        "source": {
            "type": "synthbrain-demo",
            "training_command": f"synthbrain train {model_id}",
            "phantoms": data.describe(),
        },
        "weights_public": True,
    }


def _network(cls: str, weights: str, kwargs: dict) -> dict:
    return {"class": cls, "weights": weights, "kwargs": kwargs}


# ----------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------
IMAGE_AE = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 8,
    "channels": [16, 32, 64],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
    "norm_eps": 1e-06,
    "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
}
LABEL_AE = dict(IMAGE_AE, in_channels=10, out_channels=10)
#: Autoencoders train on random crops of this size (1/8 of the 64x80x64 grid): see trainers.batch_tensor.
AE_PATCH = (32, 40, 32)


def _unet(latent_channels: int, n_conditions: int, concat: bool) -> dict:
    return {
        "spatial_dims": 3,
        "in_channels": latent_channels + (n_conditions if concat else 0),
        "out_channels": latent_channels,
        "channels": [32, 64, 64],
        "num_res_blocks": 1,
        "attention_levels": [False, False, True],
        "num_head_channels": [0, 0, 32],
        "norm_num_groups": 16,
        "norm_eps": 1e-06,
        "resblock_updown": True,
        "with_conditioning": True,
        "transformer_num_layers": 1,
        "cross_attention_dim": n_conditions,
        "upcast_attention": True,
    }


#: Default sampler and steps of the latent-diffusion demos (the card's sampling defaults).
DEMO_SAMPLING = {"default_sampler": "ddim", "default_steps": 50}


def _latent_diffusion_sections(
    ae_kwargs: dict, unet_kwargs: dict, schedule: dict, latents: np.ndarray, scale: float, variables: list[dict]
) -> dict:
    """Card sections shared by the two latent-diffusion demos (weights, networks, sampling, latent)."""
    return {
        "weights": {
            "autoencoder": {"file": "autoencoder.safetensors", "format": "safetensors"},
            "diffusion": {"file": "diffusion.safetensors", "format": "safetensors"},
        },
        "networks": {
            "autoencoder": _network("AutoencoderKL", "autoencoder", ae_kwargs),
            "diffusion": _network("DiffusionModelUNet", "diffusion", unet_kwargs),
        },
        "scheduler": {
            "class": "DDIMScheduler",
            "objective": schedule.get("prediction_type", "epsilon"),
            "kwargs": schedule,
        },
        "sampling": {
            **DEMO_SAMPLING,
            "samplers": ["ddim", "ddpm", "dpm++2m", "dpm++3m", "unipc"]
            + (["pndm"] if schedule.get("prediction_type", "epsilon") == "epsilon" else []),
            "max_steps": 1000,
            "guidance": {**GUIDANCE, "null_value": NULL_CONDITION, "condition_dropout": CONDITION_DROPOUT},
        },
        "latent": {"shape": [latents.shape[1], *latents.shape[2:]], "scale_factor": scale},
        "conditioning": {"inputs": ["concat", "crossattn"], "variables": variables},
    }


def reused_autoencoder(spec: NetworkSpec, folder: Path, model_id: str, log: Log) -> tuple[torch.nn.Module, dict]:
    """The autoencoder of an existing model folder of ``model_id``, sha256-checked and loaded strictly."""

    folder = Path(folder)
    card = load_card(folder / "card.json")
    if card.id != model_id:
        raise SynthBrainError(f"--autoencoder-from {folder} holds {card.id!r}, not {model_id!r}")
    weight = card.weights["autoencoder"]
    path = folder / weight.file
    digest = verify_file(path, weight.sha256, label=f"{model_id} autoencoder")
    model = build_network(spec, model_id)
    load_weights(model, {k: v.float() for k, v in read_state_dict(path).items()}, "safetensors", name=str(path))
    previous = {}
    if (folder / "training.json").exists():
        previous = json.loads((folder / "training.json").read_text()).get("networks", {}).get("autoencoder", {})
    log(f"{model_id}: autoencoder reused from {path} (sha256 {digest[:12]}...)")
    return model.eval(), {"reused_from": str(path), "sha256": digest, "original_training": previous}


def _autoencoder(
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


def _scale_factor(latents: np.ndarray) -> float:
    """1 / std of the latents, so diffusion sees unit variance (Rombach et al.); rounded for the card."""
    return float(np.round(1.0 / latents.std(), 4))


def age_typical_defaults(data: PhantomTrainingData) -> dict[str, dict]:
    """Least-squares ``default_from`` models of the measured volumes on age (years) and sex (0/1).

    An unset volume then defaults to what is typical for the requested age and sex, so that
    "older" means older anatomy; a volume the user sets is used as given.
    """
    design = np.stack([np.ones(len(data)), data.age, data.sex.astype(np.float64)], axis=1)
    out = {}
    for name, values in (("ventricular_volume", data.ventricular_ml), ("brain_volume", data.brain_ml)):
        coef, *_ = np.linalg.lstsq(design, values.astype(np.float64), rcond=None)
        residual = values - design @ coef
        out[name] = {
            "intercept": round(float(coef[0]), 4),
            "coefficients": {"age": round(float(coef[1]), 5), "sex": round(float(coef[2]), 4)},
            "note": f"least-squares fit on the {len(data)} training phantoms (residual sd {residual.std():.1f} mL)",
        }
    return out


def train_brain_ldm_demo(
    data: PhantomTrainingData, budget: Budget, log: Log
) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict]:
    """T1 autoencoder + conditional latent diffusion (sex, age, ventricular and brain volume)."""
    ae_spec = NetworkSpec("autoencoder", "AutoencoderKL", IMAGE_AE, "autoencoder")
    ae, ae_record = _autoencoder(
        ae_spec,
        budget,
        "brain-ldm-demo",
        log,
        lambda: sharpened_image_autoencoder(ae_spec, data, budget, log),
    )
    latents = encode_means(ae, data.images[:, :1])
    scale = _scale_factor(latents)

    vent_lo, vent_hi = _rounded_range(data.ventricular_ml, 5.0)
    brain_lo, brain_hi = _rounded_range(data.brain_ml, 50.0)
    variables = [
        {
            "name": "sex",
            "label": "Sex",
            "kind": "categorical",
            "choices": {"female": 0.0, "male": 1.0},
            "default": "female",
            "normalisation": "defined",
            "note": "0 = female, 1 = male, as the phantoms were made.",
        },
        _continuous(
            "age", "Age", "years", 45.0, 82.0, 65.0, "Linear map of 45-82 years to 0-1 (the phantoms' age range)."
        ),
        _continuous(
            "ventricular_volume",
            "Ventricular volume",
            "mL",
            vent_lo,
            vent_hi,
            float(np.round(np.median(data.ventricular_ml))),
            f"Linear map of {vent_lo:g}-{vent_hi:g} mL to 0-1; volumes measured on each phantom's T1 with "
            "SynthBrainLib.outputs.measure (lateral + third ventricles).",
        ),
        _continuous(
            "brain_volume",
            "Brain volume",
            "mL",
            brain_lo,
            brain_hi,
            float(np.round(np.median(data.brain_ml))),
            f"Linear map of {brain_lo:g}-{brain_hi:g} mL to 0-1; tissue volume measured on each phantom's T1 "
            "(not head-size normalised).",
        ),
    ]
    for v, typical in zip(variables[2:], age_typical_defaults(data).values()):
        v["default_from"] = typical
    cond = np.stack(
        [
            data.sex.astype(np.float32),
            (data.age - 45.0) / 37.0,
            (data.ventricular_ml - vent_lo) / (vent_hi - vent_lo),
            (data.brain_ml - brain_lo) / (brain_hi - brain_lo),
        ],
        axis=1,
    ).astype(np.float32)
    unet_kwargs = _unet(IMAGE_AE["latent_channels"], 4, concat=True)
    unet_spec = NetworkSpec("diffusion", "DiffusionModelUNet", unet_kwargs, "diffusion")
    unet, unet_report = train_latent_diffusion(
        unet_spec,
        latents * scale,
        cond,
        SCHEDULE,
        ("concat", "crossattn"),
        budget.config(UNET_STEPS, batch=8, lr=3e-4, seed=2, ema=UNET_EMA),
        condition_dropout=CONDITION_DROPOUT,
        null_value=NULL_CONDITION,
        log=log,
    )

    card = _base_card(
        "brain-ldm-demo",
        "Brain LDM demo (MNI152 phantoms)",
        "conditional_latent_diffusion",
        "Small conditional latent diffusion model with Brain LDM's interface (sex, age, ventricular volume, "
        "brain volume; conditions concatenated and as cross-attention context) trained on this repository's "
        "MNI152 phantom population at 2.5 mm.",
        data,
    )
    card.update(
        _latent_diffusion_sections(IMAGE_AE, unet_kwargs, SCHEDULE, latents, scale, variables),
        output=_output(data, "T1w"),
    )
    states = {"autoencoder": ae.state_dict(), "diffusion": unet.state_dict()}
    log_record = {"autoencoder": ae_record, "diffusion": unet_report.as_json(), "latent_std": float(latents.std())}
    return card, states, log_record


def rare_class_weights(partial_volumes: np.ndarray) -> np.ndarray:
    """(C,) loss weights: sqrt of inverse class frequency relative to the mean foreground class,
    clipped to 1-10 (background 1), so that small lesions count."""
    freq = partial_volumes.mean(axis=(0, 2, 3, 4))
    weights = np.clip((freq[1:].mean() / np.maximum(freq, 1e-6)) ** 0.5, 1.0, 10.0).astype(np.float32)
    weights[0] = 1.0
    return weights


def train_labels_demo(
    data: PhantomTrainingData, budget: Budget, log: Log
) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict]:
    """Label autoencoder (10-class partial volumes) + latent diffusion conditioned on lesion fractions."""
    pv = data.partial_volumes
    class_weights = rare_class_weights(pv)
    ae_spec = NetworkSpec("autoencoder", "AutoencoderKL", LABEL_AE, "autoencoder")
    ae, ae_record = _autoencoder(
        ae_spec,
        budget,
        "labels-demo",
        log,
        lambda: train_label_autoencoder(
            ae_spec,
            pv,
            budget.config(4000, batch=4, lr=1e-3, bf16=True, channels_last=True, seed=3),
            class_weights=class_weights,
            patch=AE_PATCH,
            log=log,
        ),
    )
    latents = encode_means(ae, pv)
    scale = _scale_factor(latents)

    names = ("wmh", "tumour", "edema", "gdtumour")
    labels = {
        "wmh": "White-matter hyperintensities",
        "tumour": "Tumour (non-enhancing core)",
        "edema": "Edema",
        "gdtumour": "Enhancing tumour",
    }
    variables, columns = [], []
    for j, name in enumerate(names):
        values = data.lesion_fractions[:, j]
        hi = float(np.ceil(values.max() * 1.1 * 1000) / 1000) or 0.01
        variables.append(
            _continuous(
                name,
                labels[name],
                "fraction",
                0.0,
                hi,
                0.0,
                f"Lesion volume / brain volume (voxels labelled {name} over non-background voxels); 0 asks "
                f"for none. Linear map of 0-{hi:g} to 0-1.",
            )
        )
        columns.append(values / hi)
    cond = np.stack(columns, axis=1).astype(np.float32)
    unet_kwargs = _unet(LABEL_AE["latent_channels"], 4, concat=True)
    unet_spec = NetworkSpec("diffusion", "DiffusionModelUNet", unet_kwargs, "diffusion")
    schedule = dict(SCHEDULE, beta_end=0.0195)
    unet, unet_report = train_latent_diffusion(
        unet_spec,
        latents * scale,
        cond,
        schedule,
        ("concat", "crossattn"),
        budget.config(UNET_STEPS, batch=8, lr=3e-4, seed=4, ema=UNET_EMA),
        condition_dropout=CONDITION_DROPOUT,
        null_value=NULL_CONDITION,
        log=log,
    )

    card = _base_card(
        "labels-demo",
        "Label generator demo (MNI152 phantoms)",
        "label_generator",
        "brainSPADE3D-style label generator: latent diffusion over 10-class partial-volume label maps "
        "(background, csf, gm, wm, dgm, brainstem, wmh, tumour, edema, gdtumour) conditioned on the four "
        "lesion volume fractions, trained on this repository's MNI152 phantoms at 2.5 mm. Unlike "
        "brainSPADE3D (cross-attention only), conditions also enter as concatenated channels.",
        data,
    )
    card.update(
        _latent_diffusion_sections(LABEL_AE, unet_kwargs, schedule, latents, scale, variables),
        output=_output(data, "labels"),
        labels=[{"value": v, "name": n, "color": c} for v, n, c in LABEL_COLOURS],
    )
    for v in card["conditioning"]["variables"]:
        v["model_range"] = [0.0, 1.0]
    states = {"autoencoder": ae.state_dict(), "diffusion": unet.state_dict()}
    return (
        card,
        states,
        {
            "autoencoder": ae_record,
            "diffusion": unet_report.as_json(),
            "class_weights": class_weights.round(3).tolist(),
            "latent_std": float(latents.std()),
        },
    )


SPADE = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "label_nc": 10,
    "channels": [16, 32, 64, 64],
    "z_dim": 16,
    "is_vae": True,
    "spade_intermediate_channels": 32,
    "norm": "INSTANCE",
    "upsampling_mode": "nearest",
}


def train_label2image_demo(
    data: PhantomTrainingData, budget: Budget, log: Log
) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict]:
    """SPADENet from partial volumes to T1 / FLAIR / T2; the sequence is a style code."""
    n_seq = len(data.sequences)
    kwargs = dict(SPADE, input_shape=list(data.shape), label_nc=SPADE["label_nc"] + n_seq)
    spec = NetworkSpec("generator", "SPADENet", kwargs, "generator")
    model, report, style_codes = train_spade(
        spec,
        data.partial_volumes,
        data.images,
        budget.config(5000, batch=2, lr=3e-4, bf16=True, channels_last=True, seed=5),
        log=log,
        sequence_channels=True,
        class_weights=rare_class_weights(data.partial_volumes),
    )
    codes = style_statistics(style_codes, data.sequences)
    template = template_state(data)
    card = _base_card(
        "label2image-demo",
        "Label-to-image demo (MNI152 phantoms)",
        "label_to_image",
        "SPADE generator (MONAI SPADENet's SPADE decoder, the brainSPADE design) rendering 10-class label "
        "maps as T1, FLAIR or T2 at 2.5 mm; the sequence is a fixed style code per sequence and one-hot "
        "channels appended to the label map (the VAE style encoder is not trained: see "
        "SynthBrainLib.tools.training.trainers.train_spade). Trained on this repository's MNI152 phantoms.",
        data,
    )
    card.update(
        weights={
            "generator": {"file": "generator.safetensors", "format": "safetensors"},
            "style": {"file": "style_codes.safetensors", "format": "safetensors"},
            "template": {"file": "template.safetensors", "format": "safetensors"},
        },
        template={"weights": "template"},
        networks={"generator": _network("SPADENet", "generator", kwargs)},
        conditioning={"inputs": [], "variables": []},
        output=_output(data, "MR"),
        labels=[{"value": v, "name": n, "color": c} for v, n, c in LABEL_COLOURS],
        sequences={"names": list(data.sequences), "mode": "style_codes", "weights": "style", "label_channels": True},
    )
    states = {"generator": model.state_dict(), "style": codes, "template": template}
    return card, states, {"generator": report.as_json()}


def template_state(data: PhantomTrainingData) -> dict[str, torch.Tensor]:
    """The undeformed phantom template's labels on the training grid (the card's ``template``), which
    lesion insertion registers to patients' scans."""
    spacing = float(np.linalg.norm(data.affine[:3, 0]))
    population = PhantomPopulation(seed=0, spacing_mm=spacing, shape=tuple(data.images.shape[2:]))
    if not np.allclose(population.affine, data.affine, atol=1e-6):
        raise SynthBrainError("the phantom population's grid is not the training data's grid")
    return {"labels": torch.from_numpy(population.template_labels())}


RECIPES = {
    "brain-ldm-demo": train_brain_ldm_demo,
    "labels-demo": train_labels_demo,
    "label2image-demo": train_label2image_demo,
}


# ----------------------------------------------------------------------------------------------
#: Shipped weights are stored in float16 (networks still run in float32): it halves the download
#: (the three demos stay under 40 MB) at a cost that train_demo measures and records (storage_check).
STORAGE_DTYPE = torch.float16


def _stored(states: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype) -> dict[str, dict[str, torch.Tensor]]:
    """Floating-point tensors in the storage ``dtype``; integer ones (label maps) as they are."""
    return {
        key: {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous() for k, v in state.items()}
        for key, state in states.items()
    }


def storage_check(
    card: dict,
    states: dict[str, dict[str, torch.Tensor]],
    data: PhantomTrainingData,
    dtype: torch.dtype = STORAGE_DTYPE,
) -> dict[str, Any]:
    """Output difference between float32 weights and weights rounded to ``dtype`` (same seeds).

    Images: max abs difference and PSNR (data range 1); label maps: voxels whose argmax changes.
    """

    model_card = ModelCard.from_dict(json.loads(json.dumps(card)))
    outputs = []
    for variant in (states, _stored(states, dtype)):
        networks = {}
        for name, spec in model_card.networks.items():
            net = build_network(spec, model_card.id)
            net.load_state_dict({k: v.float() for k, v in variant[spec.weights].items()})
            networks[name] = net
        tensors = {
            k: {n: (t.float() if t.is_floating_point() else t) for n, t in variant[k].items()}
            for k in variant
            if k not in {s.weights for s in model_card.networks.values()}
        }
        pipe = pipeline_class(model_card)(model_card, networks, device="cpu", tensors=tensors)
        if pipe.input_name == "labels":  # the model renders a label map: a real phantom's
            labels = data.partial_volumes[0].astype(np.float32).argmax(0)
            results = [
                pipe.generate(labels, affine=data.affine, sequence=seq, seed=0) for seq in model_card.sequences.names
            ]
        else:
            results = [pipe.generate(seed=seed, steps=10) for seed in range(2)]
        outputs.append(results)
    record: dict[str, Any] = {"dtype": str(dtype).replace("torch.", ""), "compared_outputs": len(outputs[0])}
    if pipe.output_type == "labels":
        changed = [float(np.mean(a.labels != b.labels)) for a, b in zip(*outputs)]
        record["label_voxels_changed_fraction"] = max(changed)
    else:
        diff = [float(np.abs(a.image - b.image).max()) for a, b in zip(*outputs)]
        mse = [float(np.mean((a.image - b.image) ** 2)) for a, b in zip(*outputs)]
        record["max_abs_difference"] = max(diff)
        record["psnr_db"] = min(10 * np.log10(1.0 / max(m, 1e-20)) for m in mse)
    return record


def write_model_folder(
    out: Path,
    card: dict,
    states: dict[str, dict[str, torch.Tensor]],
    training: dict,
    overwrite: bool = False,
    dtype: torch.dtype = STORAGE_DTYPE,
) -> ModelCard:
    """Write weights (safetensors in ``dtype``), card.json with their sha256, and training.json;
    atomically per file. The card is validated before anything is written.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if (out / "card.json").exists() and not overwrite:
        raise OutputError(f"{out / 'card.json'} already exists; pass --overwrite to replace the model")
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for key, state in states.items():
            tmp = temporary_sibling(out / card["weights"][key]["file"], suffix=".safetensors")
            # One metadata key only: safetensors writes its metadata map in hash order, which
            # changes between processes, so two keys made the same weights hash differently
            # (and a reused autoencoder look like a new one).
            metadata = {
                "synthbrain": json.dumps(
                    {"model": card["id"], "training_data": "synthetic MNI152 phantoms"}, sort_keys=True
                )
            }
            save_file(_stored({key: state}, dtype)[key], tmp, metadata=metadata)
            card["weights"][key]["sha256"] = file_sha256(tmp)
            card["weights"][key]["size_bytes"] = Path(tmp).stat().st_size
            staged.append((Path(tmp), out / card["weights"][key]["file"]))
        model_card = ModelCard.from_dict(card)
        for name, payload in (("card.json", card), ("training.json", training)):
            tmp = temporary_sibling(out / name, suffix=".json")
            tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
            staged.append((Path(tmp), out / name))
        for tmp, dest in staged:
            os.replace(tmp, dest)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return model_card


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
    if sharpen_decoder is not None:
        check_sharpenable(model_id)
    start = time.time()
    data_dir = Path(data_dir) if data_dir else default_home() / "phantoms"
    data = load_training_data(subjects, seed=seed, cache=data_dir, log=log)
    log(f"{model_id}: {len(data)} phantom subjects loaded ({time.time() - start:.0f} s)")
    reuse = Path(autoencoder_from) if autoencoder_from is not None else None
    budget = Budget(scale=scale, minutes=minutes, autoencoder_from=reuse)
    if sharpen_decoder is not None:
        card, states, record = sharpen_decoder_of(model_id, Path(sharpen_decoder), data, budget, log)
    else:
        card, states, record = RECIPES[model_id](data, budget, log)
    training = {
        "model": model_id,
        "command": " ".join(
            ["synthbrain", "train", model_id, "--out", str(out), "--subjects", str(subjects), "--seed", str(seed)]
            + (["--scale", str(scale)] if scale != 1.0 else [])
            + (["--autoencoder-from", str(autoencoder_from)] if autoencoder_from is not None else [])
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
