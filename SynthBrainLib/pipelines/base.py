"""What every pipeline shares: device and precision, seeds, weights and provenance."""

from __future__ import annotations

import secrets
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from ..cards import ModelCard
from ..device import Precision, describe_device, resolve_device
from ..errors import ConditionError
from ..networks import build_networks
from ..results import build_provenance
from ..sampling import CancelFlag, ProgressCallback, check_cancel, denoise, make_scheduler

MAX_SEED = 2**63 - 1


class SynthesisPipeline:
    """Base of the three pipeline kinds.

    Args:
        card: the validated model card.
        networks: the card's networks by name (weights already loaded).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        half: fp16 autocast on CUDA (default on CUDA; refused on the CPU).
        weights_info: per weight key, what was loaded (file, sha256, whether its checksum matched a
            published one, key layout); recorded in every result's provenance.
        tensors: extra tensors the card refers to (e.g. per-sequence style codes), by weight key.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        card: ModelCard,
        networks: Mapping[str, torch.nn.Module],
        *,
        device: str | torch.device = "auto",
        half: bool | None = None,
        weights_info: Mapping[str, Any] | None = None,
        tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> None:
        if card.kind != self.kind:
            raise ConditionError(f"model {card.id} is a {card.kind} model; {type(self).__name__} runs {self.kind} models")
        self.card = card
        self.device = resolve_device(device)
        self.precision = Precision.for_device(self.device, half)
        self.networks = {name: net.to(self.device).eval() for name, net in networks.items()}
        self.weights_info = dict(weights_info) if weights_info is not None else {"random_untrained": True}
        self.tensors = {k: {n: t.to(self.device) for n, t in v.items()} for k, v in (tensors or {}).items()}

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str, *, device: str | torch.device = "auto", half: bool | None = None, store=None) -> "SynthesisPipeline":
        """Load an installed or shipped model by id, or a model folder (card.json + weights) by path."""
        from . import load_pipeline

        pipe = load_pipeline(model, device=device, half=half, store=store)
        if not isinstance(pipe, cls):
            raise ConditionError(f"model {pipe.card.id} is a {pipe.card.kind} model; {cls.__name__} runs {cls.kind} models")
        return pipe

    @classmethod
    def from_card(cls, card: ModelCard, *, device: str | torch.device = "auto", half: bool | None = None, seed: int = 0) -> "SynthesisPipeline":
        """A pipeline with the card's architecture and *random* weights (tests, benchmarks).

        Provenance records ``weights: {"random_untrained": true}``: outputs are noise-like.
        """
        torch.manual_seed(seed)
        return cls(card, build_networks(card), device=device, half=half)

    # ---- helpers for subclasses --------------------------------------------------------------
    @staticmethod
    def resolve_seed(seed: int | None) -> int:
        """A given seed is checked; ``None`` draws one (recorded in provenance)."""
        if seed is None:
            return secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ConditionError(f"seed {seed!r} is outside 0–{MAX_SEED}")
        return seed

    def seeded_normal(self, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """Standard normal noise drawn on the CPU from ``seed`` then moved: the same on every device."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=torch.float32).to(self.device)

    def device_generator(self, seed: int) -> torch.Generator:
        """Generator for noise drawn during sampling (DDPM), on the pipeline's device."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def provenance(self, *, conditions=None, seed=None, sampler=None, steps=None, extra=None) -> dict[str, Any]:
        return build_provenance(
            card=self.card,
            weights=self.weights_info,
            conditions=conditions,
            seed=seed,
            sampler=sampler,
            steps=steps,
            device=describe_device(self.device),
            precision=self.precision.name,
            extra=extra,
        )

    def diffuse_and_decode(
        self,
        *,
        seed: int,
        sampler: str,
        steps: int,
        concat: torch.Tensor | None = None,
        unet_kwargs: Mapping[str, Any] | None = None,
        decoder_inputs: tuple = (),
        progress: ProgressCallback | None = None,
        cancel: CancelFlag = None,
    ) -> torch.Tensor:
        """Latent diffusion with the card's ``diffusion`` UNet, then the ``autoencoder`` decoder.

        Args:
            seed: seeds the starting latent (drawn on the CPU) and DDPM's per-step noise.
            sampler / steps: validated sampler name and step count.
            concat / unet_kwargs: conditioning built once (see :func:`~SynthBrainLib.sampling.denoise`).
            decoder_inputs: extra arguments of ``decode_stage_2_outputs`` after the latent (SPADE: seg).
            progress: called once per network evaluation and once after decoding.
            cancel: checked before every step and before decoding.

        Returns:
            Decoder output (1, C, X, Y, Z), float32, on the CPU.
        """
        card = self.card
        check_cancel(cancel)
        latent_shape = (1, *card.latent.shape)
        noise = self.seeded_normal(latent_shape, seed)
        scheduler = make_scheduler(card.scheduler, sampler, steps, self.device, sample_numel=int(np.prod(latent_shape[2:])))
        total = len(scheduler.timesteps) + 1  # network evaluations (PNDM adds warm-up steps) + decoding
        latent = denoise(
            self.networks["diffusion"],
            scheduler,
            noise,
            sampler=sampler,
            precision=self.precision,
            concat=concat,
            unet_kwargs=unet_kwargs,
            generator=self.device_generator(seed) if sampler == "ddpm" else None,
            progress=progress,
            cancel=cancel,
            total=total,
        )
        check_cancel(cancel)
        with torch.inference_mode(), self.precision.autocast():
            decoded = self.networks["autoencoder"].decode_stage_2_outputs(latent / card.latent.scale_factor, *decoder_inputs)
        self.report(progress, total, total)
        return decoded.float().cpu()

    @staticmethod
    def report(progress: ProgressCallback | None, step: int, total: int) -> None:
        if progress is not None:
            progress(step, total)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.card.id!r}, device={str(self.device)!r})"
