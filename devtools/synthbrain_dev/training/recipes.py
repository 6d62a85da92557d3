"""One recipe per demo model: the networks it trains on the phantom population and the card it
writes (:data:`RECIPES`, by demo id)."""

from __future__ import annotations

import numpy as np
import torch

from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.models.cards import NetworkSpec
from SynthBrainLib.models.schema import LESION_NAMES

from ..phantoms import PhantomPopulation
from ..phantoms.labels import LABEL_NAMES
from .autoencoders import Budget, autoencoder_stage, reused_network, sharpened_image_autoencoder
from .data import PhantomTrainingData, PopulationPart
from .demo_cards import (
    AE_PATCH,
    CONDITION_DROPOUT,
    IMAGE_AE,
    LABEL_AE,
    LABEL_COLOURS,
    NULL_CONDITION,
    SCHEDULE,
    SPADE,
    UNET_EMA,
    UNET_STEPS,
    age_typical_defaults,
    base_card,
    continuous_variable,
    latent_diffusion_sections,
    latent_scale_factor,
    latent_unet_kwargs,
    network_section,
    output_section,
    rounded_range,
)
from .trainers import (
    FitReport,
    Log,
    decoded_lesion_fractions,
    encode_means,
    lesion_loss_weights,
    style_statistics,
    train_label_autoencoder,
    train_latent_diffusion,
    train_spade,
)


def conditional_unet(
    ae_kwargs: dict,
    latents: np.ndarray,
    cond: np.ndarray,
    schedule: dict,
    seed: int,
    budget: Budget,
    log: Log,
    presence_groups: list[list[int]] | None = None,
    model_id: str = "",
    loss_weights: np.ndarray | None = None,
) -> tuple[dict, torch.nn.Module, FitReport]:
    """The latent diffusion UNet of a latent demo, trained on scaled ``latents`` with the conditions
    ``cond`` (N, K) concatenated and as cross-attention context, with condition dropout (for
    classifier-free guidance) and averaged weights; ``presence_groups`` (condition columns): the
    presence of each group as the UNet's class label too; ``budget.diffusion_from``: training continues
    from that folder's UNet of ``model_id``; ``loss_weights``: per-latent-voxel loss weights.
    Returns (its kwargs, the UNet, its training report)."""
    kwargs = latent_unet_kwargs(ae_kwargs["latent_channels"], cond.shape[1], concat=True)
    if presence_groups:
        kwargs["num_class_embeds"] = 2 ** len(presence_groups) + 1  # + the null class
    spec = NetworkSpec("diffusion", "DiffusionModelUNet", kwargs, "diffusion")
    start, origin = None, None
    if budget.diffusion_from is not None:
        start, origin = reused_network(spec, budget.diffusion_from, model_id, "--diffusion-from", log)
    unet, report = train_latent_diffusion(
        spec,
        latents,
        cond,
        schedule,
        ("concat", "crossattn"),
        budget.config(UNET_STEPS, batch=8, lr=3e-4, seed=seed, ema=UNET_EMA),
        condition_dropout=CONDITION_DROPOUT,
        null_value=NULL_CONDITION,
        presence_groups=presence_groups or (),
        log=log,
        start=start,
        loss_weights=loss_weights,
    )
    report.continued_from = origin
    return kwargs, unet, report


def train_brain_ldm_demo(
    data: PhantomTrainingData, budget: Budget, log: Log
) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict]:
    """T1 autoencoder + conditional latent diffusion (sex, age, ventricular and brain volume)."""
    ae_spec = NetworkSpec("autoencoder", "AutoencoderKL", IMAGE_AE, "autoencoder")
    ae, ae_record = autoencoder_stage(
        ae_spec,
        budget,
        "brain-ldm-demo",
        log,
        lambda: sharpened_image_autoencoder(ae_spec, data, budget, log),
    )
    latents = encode_means(ae, data.images[:, :1])
    scale = latent_scale_factor(latents)

    vent_lo, vent_hi = rounded_range(data.ventricular_ml, 5.0)
    brain_lo, brain_hi = rounded_range(data.brain_ml, 50.0)
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
        continuous_variable(
            "age", "Age", "years", 45.0, 82.0, 65.0, "Linear map of 45-82 years to 0-1 (the phantoms' age range)."
        ),
        continuous_variable(
            "ventricular_volume",
            "Ventricular volume",
            "mL",
            vent_lo,
            vent_hi,
            float(np.round(np.median(data.ventricular_ml))),
            f"Linear map of {vent_lo:g}-{vent_hi:g} mL to 0-1; volumes measured on each phantom's T1 with "
            "SynthBrainLib.outputs.measure (lateral + third ventricles).",
        ),
        continuous_variable(
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
    unet_kwargs, unet, unet_report = conditional_unet(
        IMAGE_AE, latents * scale, cond, SCHEDULE, 2, budget, log, model_id="brain-ldm-demo"
    )

    card = base_card(
        "brain-ldm-demo",
        "Brain LDM demo (MNI152 phantoms)",
        "conditional_latent_diffusion",
        "Small conditional latent diffusion model with Brain LDM's interface (sex, age, ventricular volume, "
        "brain volume; conditions concatenated and as cross-attention context) trained on this repository's "
        "MNI152 phantom population at 2.5 mm.",
        data,
    )
    card.update(
        latent_diffusion_sections(IMAGE_AE, unet_kwargs, SCHEDULE, latents, scale, variables),
        output=output_section(data, "T1w"),
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
    ae, ae_record = autoencoder_stage(
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
    scale = latent_scale_factor(latents)

    names = LESION_NAMES
    labels = {
        "wmh": "White-matter hyperintensities",
        "tumour": "Tumour (non-enhancing core)",
        "edema": "Edema",
        "gdtumour": "Enhancing tumour",
    }
    # Conditions: the lesion fractions the autoencoder gives back (what a request is measured
    # against after decoding), mapped logarithmically around each class's typical value so that a
    # small class (WMH, 0.5 %) is not squeezed next to 0 while a large one (edema) fills the range.
    lesion_channels = [LABEL_NAMES.index(n) for n in names]
    fractions = decoded_lesion_fractions(ae, latents, lesion_channels)
    # Kept as decoded, traces included: zeroing the classes a phantom lacks (the 1.4 trial in
    # docs/demo-models.md) taught "none asked" next to maps that still hold the decoder's traces;
    # unguided requests were no cleaner and guided tumour requests lost their tumour more often.
    absent = data.lesion_fractions[:, : len(names)] <= 0
    stray = (absent & (fractions > 0)).sum(axis=0)
    log("decoded traces of classes the phantom lacks: " + ", ".join(f"{n} {k}" for n, k in zip(names, stray)))
    variables, columns = [], []
    for j, name in enumerate(names):
        values = fractions[:, j]
        hi = float(np.ceil(values.max() * 1.1 * 1000) / 1000) or 0.01
        reference = float(np.median(values[values > 0])) if (values > 0).any() else hi / 2
        variable = continuous_variable(
            name,
            labels[name],
            "fraction",
            0.0,
            hi,
            0.0,
            f"Lesion volume / brain volume (voxels labelled {name} over non-background voxels, as the generated "
            f"label map has them); 0 asks for none. Logarithmic map of 0-{hi:g} to 0-1 around {reference:.4f}, the "
            "training median.",
        )
        variable["log_reference"] = reference
        variables.append(variable)
        columns.append(np.log1p(values / reference) / np.log1p(hi / reference))
    cond = np.stack(columns, axis=1).astype(np.float32)
    schedule = dict(SCHEDULE, beta_end=0.0195)
    # Which lesions are asked for at all also enters as a class label (every residual block sees
    # it through the timestep embedding): with the amounts alone, as constant channels and a
    # one-token context, the UNet left "no tumour" half-learnt, and requests for WMH or for a tumour
    # brought the other lesion kind (issue 23).
    groups = [["wmh"], ["tumour", "edema", "gdtumour"]]
    loss_weights = lesion_loss_weights(pv, lesion_channels, latents.shape[2:])
    lesion_weight = float(loss_weights.max())
    share = float((loss_weights > 1).mean())
    log(f"diffusion loss: lesion latent voxels {share:.3f} of all, weight {lesion_weight:.2f}")
    unet_kwargs, unet, unet_report = conditional_unet(
        LABEL_AE,
        latents * scale,
        cond,
        schedule,
        4,
        budget,
        log,
        presence_groups=[[list(names).index(n) for n in g] for g in groups],
        model_id="labels-demo",
        loss_weights=loss_weights,
    )

    card = base_card(
        "labels-demo",
        "Label generator demo (MNI152 phantoms)",
        "label_generator",
        "brainSPADE3D-style label generator: latent diffusion over 10-class partial-volume label maps "
        "(background, csf, gm, wm, dgm, brainstem, wmh, tumour, edema, gdtumour) conditioned on the four "
        "lesion volume fractions, trained on this repository's MNI152 phantoms at 2.5 mm. Unlike "
        "brainSPADE3D (cross-attention only), conditions also enter as concatenated channels, and which "
        "lesion kinds are asked for at all (WMH; tumour) as the UNet's class label.",
        data,
    )
    card.update(
        latent_diffusion_sections(LABEL_AE, unet_kwargs, schedule, latents, scale, variables, presence_groups=groups),
        output=output_section(data, "labels"),
        labels=[{"value": v, "name": n, "color": c} for v, n, c in LABEL_COLOURS],
    )
    for v in card["conditioning"]["variables"]:
        v["model_range"] = [0.0, 1.0]
    # Guided sampling steers away from the lesion group a request leaves out, pictured at its
    # training median (issue 23): without it, 94 % of WMH requests also got a tumour core.
    references = {v["name"]: v["log_reference"] for v in variables}
    card["sampling"]["guidance"]["negatives"] = [
        {"values": {n: references[n] for n in group}, "scale": NEGATIVE_SCALES[group[0]]} for group in groups
    ]
    card["sampling"]["guidance"]["default"] = LABELS_GUIDANCE
    # 1.1: presence class, balanced population with even WMH loads; 1.2: negatives (same weights);
    # 1.3: UNet retrained with a third of heavy WMH-only subjects, guidance 2; 1.5: 1.3's UNet
    # trained on with the lesion-weighted loss (2000 steps), negatives 4 / 2 (1.4: a trial, not shipped).
    card["version"] = "1.5.0"
    states = {"autoencoder": ae.state_dict(), "diffusion": unet.state_dict()}
    return (
        card,
        states,
        {
            "autoencoder": ae_record,
            "diffusion": unet_report.as_json(),
            "class_weights": class_weights.round(3).tolist(),
            "diffusion_lesion_weight": round(lesion_weight, 3),
            "latent_std": float(latents.std()),
        },
    )


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
    card = base_card(
        "label2image-demo",
        "Label-to-image demo (MNI152 phantoms)",
        "label_to_image",
        "SPADE generator (MONAI SPADENet's SPADE decoder, the brainSPADE design) rendering 10-class label "
        "maps as T1, FLAIR or T2 at 2.5 mm; the sequence is a fixed style code per sequence and one-hot "
        "channels appended to the label map (the VAE style encoder is not trained: see "
        "synthbrain_dev.training.trainers.train_spade). Trained on this repository's MNI152 phantoms.",
        data,
    )
    card.update(
        weights={
            "generator": {"file": "generator.safetensors", "format": "safetensors"},
            "style": {"file": "style_codes.safetensors", "format": "safetensors"},
            "template": {"file": "template.safetensors", "format": "safetensors"},
        },
        template={"weights": "template"},
        networks={"generator": network_section("SPADENet", "generator", kwargs)},
        conditioning={"inputs": [], "variables": []},
        output=output_section(data, "MR"),
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

#: labels-demo's negative-condition scales by presence group (its first variable) and its default
#: guidance, chosen on held-out seeds (1000+; the evaluation uses 0-127): see docs/demo-models.md,
#: "Only the lesions asked for" and, for 1.5's values, "A lesion-weighted diffusion loss".
NEGATIVE_SCALES = {"wmh": 2.0, "tumour": 4.0}
LABELS_GUIDANCE = 2.0

#: A recipe's own phantom population (the others use the default one). labels-demo: two thirds
#: balanced (no lesion, WMH only, a tumour only and both a quarter each on average, WMH loads
#: log-uniform over 0.05-6 %; on the default population, loads log-normal around 0.5 %, requests of
#: 2 % WMH brought tumour classes: large lesion loads there were mostly tumours), and one third
#: WMH-only subjects with loads of 1-6 %: on the balanced part alone, 38 WMH-only subjects had a load
#: above 2 % against 312 with a tumour, and asked for 4 % WMH the 1.2 UNet, even unguided, kept the
#: tumour classes below 0.1 % of the brain in 1 of 12 samples (issue 23).
RECIPE_POPULATIONS = {
    "labels-demo": (
        PopulationPart(2, 0, {"p_wmh": 0.325, "p_tumour": 0.5, "wmh_load": "even"}),
        PopulationPart(1, 1, {"p_wmh": 1.0, "p_tumour": 0.0, "wmh_load": "heavy"}),
    )
}


# ----------------------------------------------------------------------------------------------
