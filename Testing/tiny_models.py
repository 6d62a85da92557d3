"""Scaled-down cards of every pipeline kind, and model folders with random weights, for tests.

The cards keep the published cards' conditioning, schedules, label schema and sources and shrink
only the networks and grids, so the same code paths run in seconds on a CPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from synthbrain_dev.random_weights import perturb
from SynthBrainLib.models.cards import ModelCard, builtin_cards
from SynthBrainLib.models.networks import build_networks


def _affine(shape, spacing):
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    return a.tolist()


def tiny_brain_card(model_id: str = "tiny-brain-ldm") -> dict:
    """Brain LDM card (conditions, schedule, bundle source) with a 16^3 output and small networks."""
    card = copy.deepcopy(builtin_cards()["brain-ldm"].to_dict())
    card["id"] = model_id
    card["name"] = "Tiny Brain LDM (tests)"
    for w in card["weights"].values():
        w.pop("url", None)
    card["networks"]["autoencoder"]["kwargs"].update(
        channels=[8, 8], num_res_blocks=1, norm_num_groups=4, attention_levels=[False, False]
    )
    card["networks"]["diffusion"]["kwargs"].update(
        channels=[8, 16], num_res_blocks=1, norm_num_groups=4, attention_levels=[False, True], num_head_channels=[0, 16]
    )
    card["latent"]["shape"] = [3, 8, 8, 8]
    card["output"].update(shape=[16, 16, 16], spacing=[2.0, 2.0, 2.0], affine=_affine([16, 16, 16], [2.0, 2.0, 2.0]))
    card["sampling"]["default_steps"] = 4
    return card


#: A ``sampling.guidance`` section (classifier-free guidance) for tiny cards.
GUIDANCE = {"default": 2.0, "minimum": 1.0, "maximum": 6.0, "null_value": -1.0, "condition_dropout": 0.15}


def guided(card: dict, **changes) -> dict:
    """``card`` with a :data:`GUIDANCE` section (fields overridden by ``changes``), as if trained with
    condition dropout."""
    card["sampling"]["guidance"] = dict(GUIDANCE, **changes)
    return card


def tiny_labels_card(model_id: str = "tiny-labels") -> dict:
    card = copy.deepcopy(builtin_cards()["brainspade3d-labels"].to_dict())
    card["id"] = model_id
    card["name"] = "Tiny label generator (tests)"
    card["networks"]["autoencoder"]["kwargs"].update(
        channels=[8, 8], num_res_blocks=[1, 1], norm_num_groups=4, latent_channels=4, attention_levels=[False, False]
    )
    card["networks"]["diffusion"]["kwargs"].update(
        in_channels=4,
        out_channels=4,
        channels=[8, 16],
        attention_levels=[False, True],
        num_res_blocks=1,
        num_head_channels=[8, 16],
        norm_num_groups=4,
    )
    card["latent"] = {"shape": [4, 8, 8, 8], "scale_factor": 0.5}
    card["output"].update(shape=[16, 16, 16], spacing=[2.0, 2.0, 2.0], affine=_affine([16, 16, 16], [2.0, 2.0, 2.0]))
    card["sampling"]["default_steps"] = 4
    return card


def tiny_spade_card(model_id: str = "tiny-spade") -> dict:
    """SPADENet label-to-image card (style codes per sequence)."""
    card = copy.deepcopy(builtin_cards()["brainspade3d-image"].to_dict())
    card["id"] = model_id
    card["name"] = "Tiny SPADE (tests)"
    card["networks"]["generator"]["kwargs"].update(
        input_shape=[16, 16, 16], channels=[8, 16], z_dim=8, spade_intermediate_channels=8
    )
    card["output"].update(shape=[16, 16, 16], spacing=[2.0, 2.0, 2.0], affine=_affine([16, 16, 16], [2.0, 2.0, 2.0]))
    return card


def tiny_spade_ldm_card(model_id: str = "tiny-spade-ldm") -> dict:
    """SPADE latent-diffusion label-to-image card (sequence as class label)."""
    card = tiny_spade_card(model_id)
    card["weights"] = {"autoencoder": {"file": "autoencoder.pt"}, "diffusion": {"file": "diffusion.pt"}}
    card["networks"] = {
        "autoencoder": {
            "class": "SPADEAutoencoderKL",
            "weights": "autoencoder",
            "kwargs": {
                "spatial_dims": 3,
                "label_nc": 10,
                "in_channels": 1,
                "out_channels": 1,
                "latent_channels": 3,
                "channels": [8, 8],
                "num_res_blocks": [1, 1],
                "norm_num_groups": 4,
                "attention_levels": [False, False],
                "with_encoder_nonlocal_attn": False,
                "with_decoder_nonlocal_attn": False,
            },
        },
        "diffusion": {
            "class": "SPADEDiffusionModelUNet",
            "weights": "diffusion",
            "kwargs": {
                "spatial_dims": 3,
                "label_nc": 10,
                "in_channels": 3,
                "out_channels": 3,
                "channels": [8, 16],
                "num_res_blocks": 1,
                "attention_levels": [False, False],
                "norm_num_groups": 4,
                "num_class_embeds": 3,
            },
        },
    }
    card["scheduler"] = {
        "class": "DDIMScheduler",
        "objective": "epsilon",
        "kwargs": {
            "num_train_timesteps": 1000,
            "schedule": "scaled_linear_beta",
            "beta_start": 0.0015,
            "beta_end": 0.0195,
            "clip_sample": False,
        },
    }
    card["sampling"] = {"default_sampler": "ddim", "default_steps": 3, "samplers": ["ddim", "ddpm", "pndm"]}
    card["latent"] = {"shape": [3, 8, 8, 8], "scale_factor": 1.0}
    card["sequences"] = {"names": ["T1", "FLAIR", "T2"], "mode": "class_label"}
    return card


def rflow_card(model_id: str = "tiny-rflow") -> dict:
    """Tiny Brain LDM trained (notionally) with rectified flow."""
    card = tiny_brain_card(model_id)
    card["scheduler"] = {
        "class": "RFlowScheduler",
        "objective": "rflow",
        "kwargs": {"num_train_timesteps": 1000, "use_discrete_timesteps": False},
    }
    card["sampling"] = {"default_sampler": "rflow", "default_steps": 4, "samplers": ["rflow"]}
    return card


def tiny_modality_card(model_id: str = "tiny-nv-generate") -> dict:
    """NV-Generate-MR-Brain's card (modalities, geometry rules, rectified flow, guidance) with small
    MAISI networks and a 32 x 64 x 32 default grid at 2 mm."""
    card = copy.deepcopy(builtin_cards()["nv-generate-mr-brain"].to_dict())
    card["id"] = model_id
    card["name"] = "Tiny NV-Generate (tests)"
    for w in card["weights"].values():
        w.pop("url", None)
        w.pop("sha256", None)
    card["source"]["licence_acceptance"] = False
    card["networks"]["autoencoder"]["kwargs"].update(
        num_channels=[8, 8, 8], num_res_blocks=[1, 1, 1], norm_num_groups=4
    )
    card["networks"]["diffusion"]["kwargs"].update(
        num_channels=[8, 8, 16, 16], num_head_channels=[0, 0, 8, 8], num_res_blocks=1, norm_num_groups=4
    )
    card["geometry"].update(max_size=[96, 96, 64], default_size=[32, 64, 32], default_spacing=[2.0, 2.0, 2.0])
    card["output"].update(shape=[32, 64, 32], spacing=[2.0, 2.0, 2.0], affine=np.diag([2.0, 2.0, 2.0, 1.0]).tolist())
    card["sampling"]["default_steps"] = 3
    return card


def write_upstream_models(
    card_dict: dict, folder: Path, seed: int = 0, scale_factor: float = 0.9696779847145081, noise: float = 0.02
) -> dict[str, Path]:
    """The card's two networks with perturbed random weights, saved as NV-Generate's download script
    leaves them: ``folder/autoencoder_v1.pt`` (a bare state dict) and
    ``folder/diff_unet_3d_rflow-mr-brain_v1.pt`` (``{"unet_state_dict": ..., "scale_factor": tensor,
    "epoch": ..., "loss": ...}``, the training script's layout). Returns the paths by weight key."""
    card = ModelCard.from_dict(card_dict)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    nets = build_networks(card)
    paths = {}
    for name, net in nets.items():
        perturb(net, seed, scale=noise)
        key = card.networks[name].weights
        path = folder / card.weights[key].file
        if name == "diffusion":
            payload = {
                "unet_state_dict": net.state_dict(),
                "scale_factor": torch.tensor(scale_factor),
                "epoch": 100,
                "loss": 0.1,
                "num_train_timesteps": 1000,
            }
        else:
            payload = net.state_dict()
        torch.save(payload, path)
        paths[key] = path
    return paths


def write_modality_model(card_dict: dict, folder: Path, seed: int = 0) -> Path:
    """A model folder (card.json + upstream-layout weights, their sha256 in the card)."""
    from SynthBrainLib.outputs.digests import file_sha256

    card_dict = copy.deepcopy(card_dict)
    paths = write_upstream_models(card_dict, folder, seed, noise=TINY_NOISE)
    for key, path in paths.items():
        card_dict["weights"][key]["sha256"] = file_sha256(path)
    (folder / "card.json").write_text(json.dumps(card_dict, indent=2))
    return folder


#: How much noise the tiny models' random weights get (:func:`~synthbrain_dev.random_weights.perturb`):
#: more than the benchmarks' 0.02, so that the tiny networks' outputs vary visibly with their inputs.
TINY_NOISE = 0.05


def write_model_folder(card_dict: dict, folder: Path, seed: int = 0, fmt: str = "pt") -> Path:
    """card.json + random (perturbed) weights with their sha256 in the card; returns the folder."""
    from safetensors.torch import save_file

    from SynthBrainLib.outputs.digests import file_sha256

    folder.mkdir(parents=True, exist_ok=True)
    card_dict = copy.deepcopy(card_dict)
    card = ModelCard.from_dict(card_dict)
    torch.manual_seed(seed)
    nets = build_networks(card)
    for name, net in nets.items():
        perturb(net, seed, scale=TINY_NOISE)
        key = card.networks[name].weights
        fname = card.weights[key].file
        if fmt == "safetensors":
            fname = Path(fname).stem + ".safetensors"
            card_dict["weights"][key]["file"] = fname
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / fname))
        else:
            torch.save(net.state_dict(), folder / fname)
        card_dict["weights"][key]["sha256"] = file_sha256(folder / fname)
        card_dict["weights"][key].pop("md5", None)
    if card.sequences is not None and card.sequences.mode == "style_codes":
        z = card.networks["generator"].kwargs["z_dim"]
        g = torch.Generator().manual_seed(seed)
        codes = {}
        for i, seq in enumerate(card.sequences.names):
            codes[f"{seq}.mean"] = torch.randn(z, generator=g) + i
            codes[f"{seq}.std"] = torch.full((z,), 0.5)
        fname = card.weights[card.sequences.weights].file
        save_file(codes, str(folder / fname))
        card_dict["weights"][card.sequences.weights]["sha256"] = file_sha256(folder / fname)
    card_dict["weights_public"] = True
    (folder / "card.json").write_text(json.dumps(card_dict, indent=2))
    return folder


def write_old_format_bundle(card_dict: dict, folder: Path, seed: int = 0) -> Path:
    """A folder laid out like the MONAI model-zoo bundle, with checkpoints written by the old
    GenerativeModels package (monai-generative 0.2.3), as the published Brain LDM bundle has."""
    import generative.networks.nets as old_nets

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    config = {
        "imports": ["$import torch"],
        "load_old": 1,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "load_autoencoder": "$__import__('os').system('echo pwned > PWNED')",
    }
    keys = card_dict["source"]["network_keys"]
    torch.manual_seed(seed)
    for name, spec in card_dict["networks"].items():
        kwargs = dict(spec["kwargs"])
        config[keys[name]] = {"_target_": f"monai.networks.nets.{spec['class']}", **kwargs}
        kwargs["num_channels"] = kwargs.pop("channels")
        kwargs.pop("use_flash_attention", None)
        net = perturb(getattr(old_nets, spec["class"])(**kwargs), seed, scale=TINY_NOISE)
        bundle_path = card_dict["weights"][spec["weights"]]["bundle_path"]
        torch.save(net.state_dict(), folder / bundle_path)
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    return folder


def count_parameters(module: torch.nn.Module) -> int:
    """How many numbers a network holds (the published model sizes are quoted in millions)."""
    return sum(p.numel() for p in module.parameters())


def untrained_pipeline(pipeline_class, card: ModelCard, *, device: str = "cpu", seed: int = 0, **options):
    """A pipeline of ``pipeline_class`` with ``card``'s architecture and *random* weights (MONAI's
    initialisation, seeded); its provenance records ``weights: {"random_untrained": true}``."""
    torch.manual_seed(seed)
    return pipeline_class(card, build_networks(card), device=device, **options)


class CountingUNet(torch.nn.Module):
    """Wraps a network and counts its forward calls (to see whether a result came from a cache)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)
