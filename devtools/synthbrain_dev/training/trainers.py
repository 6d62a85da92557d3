"""Training loops for the demo models: image / label autoencoders, latent diffusion, SPADE.

One :func:`fit` loop serves every network: seeded batches, AdamW, a step budget and a wall-clock
budget, progress logging, and on the CPU bf16 autocast with channels-last 3D tensors where that is
faster (5x for the autoencoder convolutions here; the small latent UNet is faster in fp32).
Noise schedules and networks are MONAI's.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler

from SynthBrainLib.models.card_parts import presence_class_of
from SynthBrainLib.models.cards import NetworkSpec
from SynthBrainLib.models.networks import build_network
from SynthBrainLib.pipelines import label_to_image

Log = Callable[[str], None]


@dataclass
class FitConfig:
    """How long and how fast one network trains.

    Attributes:
        steps: optimiser steps (the run stops earlier if ``minutes`` runs out).
        batch: samples per step.
        lr: AdamW learning rate (cosine decay to 10 % over ``steps``, 2 % linear warm-up).
        minutes: wall-clock budget; ``None`` = no limit.
        bf16: bf16 autocast on the CPU (weights and optimiser stay fp32).
        channels_last: channels-last 3D memory format for the network and its inputs.
        seed: seeds initial weights and batch order.
        ema: decay of an exponential moving average of the weights that replaces them at the end
            (``None`` = keep the last weights). Diffusion models sample markedly better from
            averaged weights when, as here, they see few samples for few steps.
    """

    steps: int
    batch: int
    lr: float = 2e-4
    minutes: float | None = None
    bf16: bool = False
    channels_last: bool = False
    seed: int = 0
    log_every: int = 50
    ema: float | None = None


@dataclass
class FitReport:
    steps_done: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss of each log interval
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient
    #: Continued training: the network it started from (file, sha256, that network's training record).
    continued_from: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out = {
            "steps": self.steps_done,
            "seconds": round(self.seconds, 1),
            "loss_curve": [round(x, 6) for x in self.losses],
            "skipped_steps": self.skipped_steps,
        }
        if self.continued_from is not None:
            out["continued_from"] = self.continued_from
        return out


def _to_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last and x.ndim == 5 else x


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, np.ndarray, torch.Generator], torch.Tensor],
    n_samples: int,
    config: FitConfig,
    log: Log | None = None,
    name: str = "model",
) -> FitReport:
    """Train ``model`` in place.

    Args:
        model: the network (train mode is set here, eval mode on return).
        loss_fn: ``loss_fn(model, batch_indices, generator)`` -> scalar loss; it builds its batch
            from the indices (formatted with :func:`batch_tensor`).
        n_samples: size of the training set (batches are drawn without replacement per epoch).
        config: budget and precision.
        log: called with one progress line every ``config.log_every`` steps.
    """
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    warmup = max(1, config.steps // 50)

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    order: list[int] = []
    start = time.time()
    report = FitReport(0, 0.0)
    window: list[float] = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()
    params = [p for p in model.parameters() if p.requires_grad]
    averaged = [p.detach().clone() for p in params] if config.ema else None
    for step in range(config.steps):
        if config.minutes is not None and time.time() - start > config.minutes * 60:
            if log:
                log(f"{name}: time budget of {config.minutes:g} min reached at step {step}")
            break
        if len(order) < config.batch:
            order += rng.permutation(n_samples).tolist()
        idx, order = np.asarray(order[: config.batch]), order[config.batch :]
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with autocast:
            loss = loss_fn(model, idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            # A non-finite loss or gradient (bf16 overflow) would turn every weight into NaN: skip
            # the update, as a mixed-precision GradScaler does, and count it in the report.
            report.skipped_steps += 1
            if report.skipped_steps > max(10, config.steps // 100):
                raise FloatingPointError(f"{name}: {report.skipped_steps} steps with a non-finite loss or gradient")
            continue
        opt.step()
        if averaged is not None:
            # warm-up of the decay (as in Keras/timm) so early random weights fade out quickly
            decay = min(config.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(averaged, [p.detach() for p in params], 1.0 - decay)
        window.append(float(loss.detach()))
        report.steps_done = step + 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            report.losses.append(float(np.mean(window)))
            if log:
                log(
                    f"{name}: step {step + 1}/{config.steps} loss {report.losses[-1]:.5f} ({time.time() - start:.0f} s)"
                )
            window = []
    if window:
        report.losses.append(float(np.mean(window)))
    report.seconds = time.time() - start
    if averaged is not None:
        with torch.no_grad():
            for p, a in zip(params, averaged):
                p.copy_(a)
    model.eval()
    if config.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return report


def batch_tensor(
    array: np.ndarray,
    idx: np.ndarray,
    channels_last: bool = False,
    patch: tuple[int, int, int] | None = None,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Float32 batch of ``array[idx]`` (N, C, X, Y, Z); with ``patch``, one random crop per sample.

    Autoencoders are convolutional, so they train on crops: 8x more updates for the same compute
    than whole 64x80x64 volumes, which is what makes the CPU recipe converge in minutes.
    """
    if patch is None:
        return _to_format(torch.from_numpy(np.ascontiguousarray(array[idx])).float(), channels_last)
    crops = []
    for i in idx:
        starts = [int(torch.randint(0, size - p + 1, (1,), generator=gen)) for size, p in zip(array.shape[2:], patch)]
        crops.append(
            array[
                i,
                :,
                starts[0] : starts[0] + patch[0],
                starts[1] : starts[1] + patch[1],
                starts[2] : starts[2] + patch[2],
            ]
        )
    return _to_format(torch.from_numpy(np.ascontiguousarray(np.stack(crops))).float(), channels_last)


# ----------------------------------------------------------------------------------------------
# Autoencoders
# ----------------------------------------------------------------------------------------------
def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) per sample, summed over latent voxels, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-8) - 1)
    return kl.flatten(1).sum(1).mean()


def gradient_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between finite differences: keeps edges sharp where plain L1 blurs."""
    total = 0.0
    for dim in (2, 3, 4):
        total = total + (torch.diff(a, dim=dim) - torch.diff(b, dim=dim)).abs().mean()
    return total / 3


def train_image_autoencoder(
    spec: NetworkSpec,
    images: np.ndarray,
    config: FitConfig,
    kl_weight: float = 1e-6,
    patch: tuple[int, int, int] | None = None,
    log: Log | None = None,
) -> tuple[torch.nn.Module, FitReport]:
    """AutoencoderKL on (N, 1, X, Y, Z) images in [0, 1] (or random ``patch`` crops): L1 + edge L1 + KL."""
    torch.manual_seed(config.seed)
    model = build_network(spec)

    def loss_fn(m, idx, gen):
        x = batch_tensor(images, idx, config.channels_last, patch, gen)
        recon, mu, sigma = m(x)
        recon = recon.float()
        return (recon - x).abs().mean() + 0.5 * gradient_loss(recon, x) + kl_weight * kl_loss(mu.float(), sigma.float())

    report = fit(model, loss_fn, len(images), config, log, name="image autoencoder")
    return model, report


def train_label_autoencoder(
    spec: NetworkSpec,
    partial_volumes: np.ndarray,
    config: FitConfig,
    kl_weight: float = 1e-6,
    class_weights: np.ndarray | None = None,
    patch: tuple[int, int, int] | None = None,
    log: Log | None = None,
) -> tuple[torch.nn.Module, FitReport]:
    """AutoencoderKL on (N, C, X, Y, Z) partial volumes: soft cross-entropy of the decoder logits + KL.

    ``class_weights`` up-weights rare classes (lesions) so that small lesions survive the
    round trip through the latent.
    """
    torch.manual_seed(config.seed)
    model = build_network(spec)
    weights = torch.as_tensor(
        class_weights if class_weights is not None else np.ones(partial_volumes.shape[1]), dtype=torch.float32
    ).view(1, -1, 1, 1, 1)

    def loss_fn(m, idx, gen):
        target = batch_tensor(partial_volumes, idx, config.channels_last, patch, gen)
        logits, mu, sigma = m(target)
        logp = F.log_softmax(logits.float(), dim=1)
        ce = -(weights * target * logp).sum(1).mean()
        return ce + kl_weight * kl_loss(mu.float(), sigma.float())

    report = fit(model, loss_fn, len(partial_volumes), config, log, name="label autoencoder")
    return model, report


def finetune_decoder_adversarial(
    autoencoder: torch.nn.Module,
    images: np.ndarray,
    config: FitConfig,
    adversarial_weight: float = 0.02,
    patch: tuple[int, int, int] | None = None,
    log: Log | None = None,
) -> tuple[torch.nn.Module, FitReport, dict[str, Any]]:
    """Sharpen an image AutoencoderKL's decoder with an adversarial patch loss; the encoder is frozen.

    An L1-trained decoder renders what is common to all images a latent could stand for, which is
    a blurred image. A patch discriminator (MONAI ``PatchDiscriminator``, least-squares
    ``PatchAdversarialLoss``; the Brain LDM autoencoder was trained with both) penalises that. Only
    the decoder side (``post_quant_conv`` and ``decoder``) trains, so the latents - and a diffusion
    UNet trained on them - stay valid. The decoder sees posterior means, as the UNet's latents are.

    Loss of the decoder: L1 + 0.5 edge L1 + ``adversarial_weight`` x adversarial; the
    discriminator takes one AdamW step per decoder step inside the loss function, so that
    :func:`fit` serves this loop too.

    Returns:
        the autoencoder (decoder fine-tuned, in eval mode), the decoder's report, and the
        discriminator's loss curve.
    """
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator

    torch.manual_seed(config.seed)
    for name, p in autoencoder.named_parameters():
        p.requires_grad_(name.startswith(("decoder.", "post_quant_conv.")))
    frozen = [m for n, m in autoencoder.named_children() if n not in ("decoder", "post_quant_conv")]
    disc = PatchDiscriminator(spatial_dims=3, channels=32, in_channels=1, out_channels=1, num_layers_d=3)
    disc_opt = torch.optim.AdamW(disc.parameters(), lr=config.lr, weight_decay=1e-4)
    adversarial = PatchAdversarialLoss(criterion="least_squares")
    disc_losses: list[float] = []

    def critic(volume: torch.Tensor) -> torch.Tensor:
        # float32 outside autocast: bf16 autocast gave the discriminator's gradients inf/NaN norms
        # at random on this CPU (BatchNorm3d backward), which stalled it or poisoned the decoder.
        with torch.autocast(volume.device.type, enabled=False):
            return disc(volume.float())[-1]

    def loss_fn(m, idx, gen):
        for module in frozen:  # fit() sets train mode; the frozen encoder keeps its eval behaviour
            module.eval()
        x = batch_tensor(images, idx, config.channels_last, patch, gen)
        with torch.no_grad():
            mu, _ = m.encode(x)
        recon = m.decode(mu)
        # discriminator step on this batch (real vs the decoder's current output)
        disc.train()
        d_loss = 0.5 * (
            adversarial(critic(recon.detach()), target_is_real=False, for_discriminator=True)
            + adversarial(critic(x), target_is_real=True, for_discriminator=True)
        )
        disc_opt.zero_grad(set_to_none=True)
        d_loss.float().backward()
        d_norm = torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
        if torch.isfinite(d_loss) and torch.isfinite(d_norm):  # as fit() does for the decoder
            disc_opt.step()
            disc_losses.append(float(d_loss.detach()))
        g_adv = adversarial(critic(recon), target_is_real=True, for_discriminator=False)
        recon = recon.float()
        return (recon - x).abs().mean() + 0.5 * gradient_loss(recon, x) + adversarial_weight * g_adv

    report = fit(autoencoder, loss_fn, len(images), config, log, name="decoder (adversarial)")
    for p in autoencoder.parameters():
        p.requires_grad_(True)
    autoencoder.eval()
    every = max(1, config.log_every)
    curve = [float(np.mean(disc_losses[i : i + every])) for i in range(0, len(disc_losses), every)]
    return autoencoder, report, {"discriminator_loss_curve": [round(x, 6) for x in curve]}


@torch.inference_mode()
def encode_means(autoencoder: torch.nn.Module, data: np.ndarray, batch: int = 4) -> np.ndarray:
    """Posterior means of the autoencoder's latent for every sample: (N, C_latent, x, y, z)."""
    out = []
    for i in range(0, len(data), batch):
        x = torch.from_numpy(np.ascontiguousarray(data[i : i + batch])).float()
        out.append(autoencoder.encode(x)[0].numpy())
    return np.concatenate(out)


def decoded_lesion_fractions(
    autoencoder: torch.nn.Module, latents: np.ndarray, lesion_channels: list[int], batch: int = 4
) -> np.ndarray:
    """(N, K) fraction of each lesion class in every training label map as the autoencoder gives it
    back (decoded posterior means, argmax; over non-background voxels, as a result's lesion report
    counts them). A label generator conditioned on these makes what it is asked for after decoding:
    the label decoder widens thin white-matter lesions (about 1.6x on the phantoms)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(latents), batch):
            z = torch.from_numpy(np.ascontiguousarray(latents[i : i + batch])).float()
            labels = autoencoder.decode(z).argmax(dim=1).numpy()
            brain = np.maximum((labels > 0).sum(axis=(1, 2, 3)), 1)
            out.append(np.stack([(labels == c).sum(axis=(1, 2, 3)) / brain for c in lesion_channels], axis=1))
    return np.concatenate(out).astype(np.float32)


def lesion_loss_weights(
    partial_volumes: np.ndarray, lesion_channels: list[int], latent_shape: tuple[int, int, int], batch: int = 64
) -> np.ndarray:
    """(N, 1, x, y, z) diffusion-loss weights at latent resolution: 1, and the rare-class weight
    ``clip(sqrt(1 / share), 1, 10)`` (as ``recipes.rare_class_weights`` weighs the autoencoder's classes)
    on latent voxels whose block, or a neighbouring block, holds lesion (the lesion classes' partial
    volumes summing above 0.5). ``share``: those voxels' share of all latent voxels.

    Why: a median tumour core is one or two latent voxels of 5120, so under a plain MSE getting the
    tumour right is a rounding error of the loss, and the UNet made tumours all or nothing (issue 23).
    """
    factor = partial_volumes.shape[2] // latent_shape[0]
    masks = []
    for i in range(0, len(partial_volumes), batch):
        lesion = partial_volumes[i : i + batch, lesion_channels].astype(np.float32).sum(axis=1, keepdims=True) > 0.5
        blocks = F.max_pool3d(torch.from_numpy(lesion).float(), factor)
        masks.append(F.max_pool3d(blocks, 3, stride=1, padding=1).numpy())
    mask = np.concatenate(masks)
    if mask.shape[2:] != tuple(latent_shape):
        raise ValueError(f"lesion masks pool to {mask.shape[2:]}, not the latent shape {tuple(latent_shape)}")
    share = float(mask.mean())
    weight = float(np.clip((1.0 / max(share, 1e-6)) ** 0.5, 1.0, 10.0))
    return (1.0 + (weight - 1.0) * mask).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Latent diffusion
# ----------------------------------------------------------------------------------------------
def train_latent_diffusion(
    spec: NetworkSpec,
    latents: np.ndarray,
    conditions: np.ndarray,
    schedule: Mapping[str, Any],
    inputs: tuple[str, ...],
    config: FitConfig,
    condition_dropout: float = 0.0,
    log: Log | None = None,
    null_value: float = -1.0,
    single_condition_dropout: float = 0.0,
    presence_groups: Sequence[Sequence[int]] = (),
    start: torch.nn.Module | None = None,
    loss_weights: np.ndarray | None = None,
) -> tuple[torch.nn.Module, FitReport]:
    """DiffusionModelUNet on scaled latents (MONAI DDPMScheduler.add_noise), objective from ``schedule``.

    ``schedule["prediction_type"]`` picks the target: ``epsilon`` (the noise; Brain LDM) or
    ``v_prediction`` (Salimans & Ho 2022: v = sqrt(abar) noise - sqrt(1 - abar) x0). The demos use v:
    with epsilon the x0 implied at high noise is the prediction error times 1/sqrt(abar) (100x at
    t=999 here), and the small demo UNets trained on 320 phantoms produced no brain shape at all.

    Args:
        latents: (N, C, x, y, z), already multiplied by the card's scale factor.
        conditions: (N, K) model-unit conditions, fed as the card says (``concat`` channels and/or
            ``crossattn`` context).
        schedule: the card's scheduler kwargs (num_train_timesteps, schedule, betas).
        condition_dropout: probability that a training sample's conditions are all replaced by
            ``null_value`` (the null condition of classifier-free guidance; card
            ``sampling.guidance``). Model-unit conditions lie in [0, 1], so the default -1 is never
            a real request.
        single_condition_dropout: probability that each condition of a sample not dropped as a
            whole is replaced by ``null_value`` on its own (what guidance with ``null: requested``
            needs: the network learns what each condition adds while the others stay).
        presence_groups: with the card's ``presence`` input, the condition columns of each group:
            the class label is bit ``g`` for every group with a condition above 0 (model units),
            ``2 ** len(groups)`` where the conditions were dropped as a whole.
        start: a trained network of the same architecture to continue from (``--diffusion-from``);
            ``None`` starts from fresh weights.
        loss_weights: (N, 1, x, y, z) per-voxel weights of the squared error (e.g.
            :func:`lesion_loss_weights`), normalised by their batch mean; ``None``: plain MSE.
    """
    for name, p in (("condition_dropout", condition_dropout), ("single_condition_dropout", single_condition_dropout)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} {p!r} is outside [0, 1)")
    if presence_groups and (single_condition_dropout > 0 or condition_dropout == 0):
        raise ValueError("presence classes need whole-condition dropout (one null class) and no single dropout")

    torch.manual_seed(config.seed)
    model = build_network(spec)
    if start is not None:
        model.load_state_dict(start.state_dict())
    kwargs = {k: v for k, v in schedule.items() if k in ("num_train_timesteps", "schedule", "beta_start", "beta_end")}
    scheduler = DDPMScheduler(**kwargs)
    objective = schedule.get("prediction_type", "epsilon")
    if objective not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type {objective!r} is not one of epsilon, v_prediction")
    T = scheduler.num_train_timesteps
    if loss_weights is not None and (len(loss_weights) != len(latents) or loss_weights.shape[2:] != latents.shape[2:]):
        raise ValueError(f"loss_weights {loss_weights.shape} do not match the latents {latents.shape}")

    def loss_fn(m, idx, gen):
        z = batch_tensor(latents, idx)
        c = torch.from_numpy(conditions[idx]).float()
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        if condition_dropout > 0:
            dropped = torch.rand(len(idx), generator=gen) < condition_dropout
            c = torch.where(dropped[:, None], torch.full_like(c, null_value), c)
        if single_condition_dropout > 0:
            single = torch.rand(c.shape, generator=gen) < single_condition_dropout
            c = torch.where(single, torch.full_like(c, null_value), c)
        kwargs = {}
        if presence_groups:
            # Model units start at 0 in the demos: a condition above 0 is asked for.
            labels = torch.tensor([presence_class_of((row > 0).tolist(), presence_groups) for row in c])
            kwargs["class_labels"] = torch.where(dropped, 2 ** len(presence_groups), labels)
        noisy = scheduler.add_noise(original_samples=z, noise=noise, timesteps=t)
        model_in = noisy
        if "concat" in inputs:
            model_in = torch.cat([noisy, c.view(len(idx), -1, 1, 1, 1).expand(-1, -1, *z.shape[2:])], dim=1)
        context = c.view(len(idx), 1, -1) if "crossattn" in inputs else None
        pred = m(model_in, timesteps=t, context=context, **kwargs)
        target = noise if objective == "epsilon" else scheduler.get_velocity(z, noise, t)
        if loss_weights is None:
            return F.mse_loss(pred.float(), target)
        w = batch_tensor(loss_weights, idx)
        return ((pred.float() - target) ** 2 * w).mean() / w.mean()

    report = fit(model, loss_fn, len(latents), config, log, name="diffusion UNet")
    return model, report


# ----------------------------------------------------------------------------------------------
# SPADE (label map -> image)
# ----------------------------------------------------------------------------------------------
#: Spread of the style code around its sequence's code, in training and at synthesis.
STYLE_NOISE = 0.1


def sequence_style_codes(n_sequences: int, z_dim: int, scale: float = 2.0) -> torch.Tensor:
    """One fixed, mutually orthogonal style code per sequence, (S, z_dim): sequence s is ``scale``
    on its own block of ``z_dim // S`` coordinates and 0 elsewhere."""
    if z_dim < n_sequences:
        raise ValueError(f"z_dim {z_dim} is smaller than the number of sequences {n_sequences}")
    block = z_dim // n_sequences
    codes = torch.zeros(n_sequences, z_dim)
    for s in range(n_sequences):
        codes[s, s * block : (s + 1) * block] = scale / block**0.5
    return codes


def train_spade(
    spec: NetworkSpec,
    partial_volumes: np.ndarray,
    images: np.ndarray,
    config: FitConfig,
    log: Log | None = None,
    sequence_channels: bool = False,
    class_weights: np.ndarray | None = None,
) -> tuple[torch.nn.Module, FitReport, torch.Tensor]:
    """SPADENet's SPADE decoder on (label map, image) pairs with the sequence as a fixed style code: L1 + edge L1.

    Why not the VAE style encoder of brainSPADE: trained here (KL weight 1e-3, 5000 steps), its
    posterior noise was far larger than the differences between the sequences' codes, so the
    decoder learnt to ignore the code and rendered T1 and FLAIR alike. A fixed code per sequence
    (:func:`sequence_style_codes`, plus :data:`STYLE_NOISE`) makes the sequence explicit; the
    encoder is kept (untrained) so that the network is MONAI's SPADENet as the card names it.

    Args:
        partial_volumes: (N, C, X, Y, Z) label partial volumes, one per subject.
        images: (N, S, X, Y, Z): the subject's image in each of S sequences; every sample draws
            one (subject, sequence) pair.
        sequence_channels: append the sequence as S one-hot channels to the label map (the
            network's ``label_nc`` must be C + S). Without them SPADE's label-driven modulation is
            the same for every sequence and only the style code tells sequences apart; trained
            here that way, small WMH came out bright on T1 as on FLAIR.
        class_weights: (C,) per-class weights of the L1 loss (voxel weight = partial volumes
            times weights), so that small lesions get their sequence's contrast.

    Returns:
        the network, its training report, and the (S, z_dim) style codes of the sequences
        (:func:`style_statistics` turns them into the pipeline's ``<SEQ>.mean``/``.std``).
    """

    torch.manual_seed(config.seed)
    model = build_network(spec)
    n_seq = images.shape[1]
    codes = sequence_style_codes(n_seq, int(spec.kwargs["z_dim"]))
    weights = (
        None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32).view(1, -1, 1, 1, 1)
    )

    def loss_fn(m, idx, gen):
        seq = torch.randint(0, n_seq, (len(idx),), generator=gen)
        seg = batch_tensor(partial_volumes, idx, config.channels_last)
        x = _to_format(
            torch.from_numpy(np.ascontiguousarray(images[idx, seq.numpy()][:, None])).float(), config.channels_last
        )
        z = codes[seq] + STYLE_NOISE * torch.randn(len(idx), codes.shape[1], generator=gen)
        seg_in = seg
        if sequence_channels:
            channels = label_to_image.sequence_channels(seq, n_seq, seg)
            seg_in = _to_format(torch.cat([seg, channels], dim=1), config.channels_last)
        out = m.decode(seg_in, z).float()
        error = (out - x).abs()
        if weights is None:
            l1 = error.mean()
        else:
            voxel = (seg.float() * weights).sum(1, keepdim=True)
            l1 = (voxel * error).sum() / voxel.sum()
        return l1 + 0.5 * gradient_loss(out, x)

    report = fit(model, loss_fn, len(partial_volumes), config, log, name="SPADE generator")
    return model, report, codes


def style_statistics(codes: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``<SEQ>.mean`` (the sequence's code) and ``<SEQ>.std`` (:data:`STYLE_NOISE`) for the pipeline."""
    out = {}
    for s, name in enumerate(names):
        out[f"{name}.mean"] = codes[s].clone()
        out[f"{name}.std"] = torch.full_like(codes[s], STYLE_NOISE)
    return out
