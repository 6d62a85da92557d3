"""The demo models' cards, written by the training recipes: the constants of the recipes (schedule,
guidance, step budgets, licence and citation) and the card sections built from the training data.
The cards use the same schema and the same loading code as the published models."""

from __future__ import annotations

import numpy as np

from .data import PhantomTrainingData

DEMO_IDS = ("brain-ldm-demo", "labels-demo", "label2image-demo")


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


# ----------------------------------------------------------------------------------------------
# Card pieces
# ----------------------------------------------------------------------------------------------
def output_section(data: PhantomTrainingData, modality: str) -> dict:
    return {
        "shape": list(data.shape),
        "spacing": [float(s) for s in data.spacing],
        "affine": np.asarray(data.affine).round(6).tolist(),
        "intensity_range": [0.0, 1.0],
        "modality": modality,
        "geometry_published": True,
        "note": "Phantom grid: RAS, centred on the MNI152 brain; images skull-stripped, intensities in [0, 1].",
    }


def continuous_variable(name: str, label: str, unit: str, lo: float, hi: float, default: float, note: str) -> dict:
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


def rounded_range(values: np.ndarray, step: float, pad: float = 0.1) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    lo = max(0.0, np.floor((lo - pad * span) / step) * step)
    hi = np.ceil((hi + pad * span) / step) * step
    return float(lo), float(hi)


def base_card(model_id: str, name: str, kind: str, description: str, data: PhantomTrainingData) -> dict:
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
            "training_command": f"synthbrain-dev train {model_id}",
            "phantoms": data.describe(),
        },
        "weights_public": True,
    }


def network_section(cls: str, weights: str, kwargs: dict) -> dict:
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


def latent_unet_kwargs(latent_channels: int, n_conditions: int, concat: bool) -> dict:
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


def latent_diffusion_sections(
    ae_kwargs: dict,
    unet_kwargs: dict,
    schedule: dict,
    latents: np.ndarray,
    scale: float,
    variables: list[dict],
    presence_groups: list[list[str]] | None = None,
) -> dict:
    """Card sections shared by the two latent-diffusion demos (weights, networks, sampling, latent);
    ``presence_groups``: the variables' groups of the ``presence`` input (class labels)."""
    return {
        "weights": {
            "autoencoder": {"file": "autoencoder.safetensors", "format": "safetensors"},
            "diffusion": {"file": "diffusion.safetensors", "format": "safetensors"},
        },
        "networks": {
            "autoencoder": network_section("AutoencoderKL", "autoencoder", ae_kwargs),
            "diffusion": network_section("DiffusionModelUNet", "diffusion", unet_kwargs),
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
            "guidance": {
                **GUIDANCE,
                "null_value": NULL_CONDITION,
                "condition_dropout": CONDITION_DROPOUT,
            },
        },
        "latent": {"shape": [latents.shape[1], *latents.shape[2:]], "scale_factor": scale},
        "conditioning": {
            "inputs": ["concat", "crossattn"] + (["presence"] if presence_groups else []),
            "variables": variables,
            **({"presence_groups": presence_groups} if presence_groups else {}),
        },
    }


def latent_scale_factor(latents: np.ndarray) -> float:
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
