"""What every pipeline shares: device and precision, seeds, weights, decoding, caching and provenance."""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConditionError, ModelNotFoundError
from ..models.cards import ModelCard, card_field_error, check_network_arguments
from ..models.checkpoints import read_style_codes, read_template
from ..models.networks import load_networks
from ..models.presets import DEFAULT_PRESET, check_preset
from ..models.requests import check_request, resolve_seed
from ..models.samplers import MIN_STEPS, SAMPLERS
from ..models.store import ModelStore
from ..outputs.results import SynthesisResult, build_provenance
from . import decoding
from .decoding import TileSettings, check_decode_mode
from .device import Precision, describe_device, resolve_device
from .sampling import CancelFlag, NegativeBranch, ProgressCallback, check_call, check_cancel, denoise, make_scheduler

#: ``compile`` option values: ``torch.compile`` mode for the diffusion UNet (``reduce-overhead``
#: adds CUDA graphs on CUDA).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


#: Keyword options of :func:`~SynthBrainLib.pipelines.load_pipeline` (passed to the pipeline class).
PIPELINE_OPTIONS = ("preset", "precision", "decode", "tiles", "cache_size", "compile", "sdpa")


def locate_model(model: str | Path, store: ModelStore | None, *, device, options: Mapping[str, Any]):
    """Check the load arguments (before any gigabyte is read) and find the installed model."""
    unknown = sorted(set(options) - set(PIPELINE_OPTIONS))
    if unknown:
        raise ConditionError(f"unknown option {unknown[0]!r}; load_pipeline takes {', '.join(PIPELINE_OPTIONS)}")
    if not isinstance(model, (str, Path)):
        raise ModelNotFoundError(f"model {model!r} is not a model id or a model folder path")
    Precision.for_device(resolve_device(device), options.get("precision"), options.get("preset", DEFAULT_PRESET))
    if store is not None and not isinstance(store, ModelStore):
        raise ModelNotFoundError(f"store {store!r} is not a SynthBrainLib.ModelStore")
    return (store or ModelStore()).locate(model)


#: ``card.kind`` -> the pipeline class that runs it; filled by every subclass that names a ``kind``.
PIPELINES: dict[str, type["SynthesisPipeline"]] = {}


def pipeline_class(card: ModelCard) -> type["SynthesisPipeline"]:
    """The pipeline class for ``card.kind``, after its kind rules (:meth:`SynthesisPipeline.check_card`).

    Raises:
        CardError: no pipeline runs that kind, or the card breaks the kind's rules.
    """
    cls = PIPELINES.get(card.kind)
    if cls is None:
        raise card_field_error(card, "kind", f"must be one of {', '.join(sorted(PIPELINES))}, got {card.kind!r}")
    cls.check_card(card)
    return cls


class SynthesisPipeline:
    """Base of the three pipeline kinds.

    Args:
        card: the validated model card.
        networks: the card's networks by name (weights already loaded).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        preset: ``fast`` (default) | ``published``: the sampler, steps and precision a request
            runs with when it names none (:mod:`SynthBrainLib.models.presets`); recorded in provenance.
        precision: ``auto`` (the preset's: ``fast`` = bfloat16 on CPUs with AVX-512 BF16/AMX, else
            float32; float16 autocast on CUDA) | ``float32`` | ``bfloat16`` | ``mixed`` | ``float16``
            (CUDA only).
        decode: ``auto`` | ``full`` | ``slab`` | ``tiled``: how latents are decoded (see
            :mod:`SynthBrainLib.pipelines.decoding`; ``auto`` decodes in slabs when a full decode would
            need more than 1 GB on the CPU or half of a GPU's memory); recorded in provenance.
        tiles: window size, overlap, blending and GroupNorm statistics of tiled decoding.
        cache_size: keep this many results in an in-memory LRU cache keyed by (model and weights,
            resolved conditions, seed, sampler, steps, precision, decoding); a repeated request is
            answered from it with a copy. 0 (default) disables it.
        compile: ``torch.compile`` the diffusion UNet with this mode (``default``,
            ``reduce-overhead`` = CUDA graphs on CUDA, ``max-autotune``); ``None`` (default) does not.
        sdpa: use scaled-dot-product attention in the networks' attention blocks (MONAI's
            ``use_flash_attention``); ``None`` = on CUDA only (no gain measured on the CPU).
        weights_info: per weight key, what was loaded (file, sha256, whether its checksum matched a
            published one, key layout); recorded in every result's provenance.
        tensors: extra tensors the card refers to (e.g. per-sequence style codes), by weight key.
    """

    #: The ``card.kind`` this class runs; a subclass that sets it is registered in :data:`PIPELINES`.
    kind: ClassVar[str] = ""
    #: What a result holds: ``image`` (``result.image``) or ``labels`` (``result.labels`` and
    #: ``partial_volumes``); tools compare and measure outputs by it.
    output_type: ClassVar[str] = "image"
    #: The input ``generate`` needs besides conditions (``labels`` for label-to-image); ``None``: the
    #: model generates from conditions alone (what ``batch`` runs).
    input_name: ClassVar[str | None] = None
    #: Sections and networks the card must have for this kind.
    required_sections: ClassVar[tuple[str, ...]] = ()
    required_networks: ClassVar[tuple[str, ...]] = ()

    #: ``generate(preview=True)``: the sampler (when the card allows it) and step count of the quick
    #: preview. Chosen from the step/quality measurements in docs/benchmarks.md.
    preview_sampler: str = "dpm++2m"
    preview_steps: int = 10

    def __init__(
        self,
        card: ModelCard,
        networks: Mapping[str, torch.nn.Module],
        *,
        device: str | torch.device = "auto",
        preset: str = DEFAULT_PRESET,
        precision: str | None = None,
        decode: str = "auto",
        tiles: TileSettings | None = None,
        cache_size: int = 0,
        compile: str | None = None,
        sdpa: bool | None = None,
        weights_info: Mapping[str, Any] | None = None,
        tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> None:
        if card.kind != self.kind:
            raise ConditionError(
                f"model {card.id} is a {card.kind} model; {type(self).__name__} runs {self.kind} models"
            )
        self.check_card(card)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or not 0 <= cache_size <= 10_000:
            raise ConditionError(f"cache_size {cache_size!r} is outside 0–10000")
        if compile is not None and compile not in COMPILE_MODES:
            raise ConditionError(f"compile {compile!r} is not one of {', '.join(COMPILE_MODES)}")
        self.card = card
        self.preset = check_preset(preset).name
        self.device = resolve_device(device)
        self.precision = Precision.for_device(self.device, precision, self.preset)
        self.decode_mode = check_decode_mode(decode)
        if tiles is not None and not isinstance(tiles, TileSettings):
            raise ConditionError(f"tiles {tiles!r} is not a TileSettings")
        self.tiles = tiles or TileSettings()
        self.tiles.check()
        self.networks = {name: self.precision.prepare(net.to(self.device).eval()) for name, net in networks.items()}
        if "diffusion" in self.networks:  # the big one: its weights in 16 bits where every call autocasts
            self.precision.store_weights(self.networks["diffusion"])
        self.sdpa = self.device.type == "cuda" if sdpa is None else bool(sdpa)
        if self.sdpa:
            for net in self.networks.values():
                use_sdpa(net)
        self.compile = compile
        if compile is not None and "diffusion" in self.networks:
            self.networks["diffusion"] = torch.compile(self.networks["diffusion"], mode=compile)
        self.weights_info = dict(weights_info) if weights_info is not None else {"random_untrained": True}
        self.tensors = {k: {n: t.to(self.device) for n, t in v.items()} for k, v in (tensors or {}).items()}
        self.cache_size = cache_size
        self._cache: OrderedDict[str, SynthesisResult] = OrderedDict()
        self._cache_lock = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in PIPELINES and PIPELINES[cls.kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"kind {cls.kind!r} is run by {PIPELINES[cls.kind].__name__} already")
            PIPELINES[cls.kind] = cls

    # ---- what differs by kind ---------------------------------------------------------------
    @classmethod
    def check_card(cls, card: ModelCard) -> None:
        """The card rules of this kind and the networks' arguments (the reader checked everything
        else); raises :class:`CardError`. Subclasses extend it."""
        check_network_arguments(card.id, card.networks)
        for section in cls.required_sections:
            if getattr(card, section) is None:
                raise card_field_error(card, section, f"is required for kind {card.kind}")
        for name in cls.required_networks:
            if name not in card.networks:
                raise card_field_error(card, "networks", f"must define '{name}' for kind {card.kind}")

    def example_request(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`generate` for a valid request that needs no user input (the
        card's default conditions; an input where the kind needs one). Benchmarks and tests use it."""
        return {}

    def measured_volume_ml(self, output: np.ndarray) -> float | None:
        """The volume this kind's sliders act on, measured on a raw output (C, X, Y, Z) in mL, by an
        estimator independent of the model; ``None`` where the kind has none."""
        return None

    def requested_volume_ml(self, conditions: Mapping[str, Any]) -> float | None:
        """The requested counterpart of :meth:`measured_volume_ml` (``None``: not requested)."""
        return None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, model: str, *, device: str | torch.device = "auto", store=None, **options: Any
    ) -> "SynthesisPipeline":
        """Load an installed or shipped model by id, or a model folder (card.json + weights) by path.

        ``options``: ``precision``, ``decode``, ``tiles``, ``cache_size``, ``compile``, ``sdpa``
        (see the class).
        """
        installed = locate_model(model, store, device=device, options=options)
        if installed.card.kind != cls.kind:
            raise ConditionError(
                f"model {installed.card.id} is a {installed.card.kind} model; {cls.__name__} runs {cls.kind} models"
            )
        return cls.from_installed(installed, device=device, **options)

    @classmethod
    def from_installed(cls, installed, *, device: str | torch.device = "auto", **options: Any) -> "SynthesisPipeline":
        """Build the networks of an installed model (:class:`~SynthBrainLib.models.store.InstalledModel`)
        and load their weights strictly, with the style codes where the card has them."""
        card = installed.card
        cls.check_card(card)  # before any weight is read
        paths = {k: w.path for k, w in installed.weights.items()}
        networks, layouts = load_networks(card, paths)
        tensors = {}
        if card.sequences is not None and card.sequences.weights:
            tensors[card.sequences.weights] = read_style_codes(card, paths[card.sequences.weights])
        if card.template is not None and card.template.weights in paths:
            tensors[card.template.weights] = read_template(card, paths[card.template.weights])
        info = installed.provenance()
        for name, spec in card.networks.items():
            if spec.weights in info:
                info[spec.weights]["layout"] = layouts.get(name)
        return cls(card, networks, device=device, weights_info=info, tensors=tensors, **options)

    # ---- helpers for subclasses --------------------------------------------------------------
    #: A given seed is checked; ``None`` draws one, recorded in provenance
    #: (:func:`~SynthBrainLib.models.requests.resolve_seed`).
    resolve_seed = staticmethod(resolve_seed)

    def seeded_normal(self, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        """Standard normal noise drawn on the CPU from ``seed`` then moved: the same on every device."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=torch.float32).to(self.device)

    def device_generator(self, seed: int) -> torch.Generator:
        """Generator for noise drawn during sampling (DDPM), on the pipeline's device."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def provenance(self, *, conditions=None, seed=None, sampler=None, steps=None, extra=None) -> dict[str, Any]:
        extra = dict(extra or {}, preset=self.preset)
        if self.compile is not None:
            extra["compile"] = self.compile
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
        guidance: float = 1.0,
        null_concat: torch.Tensor | None = None,
        null_unet_kwargs: Mapping[str, Any] | None = None,
        negatives: Sequence[NegativeBranch] = (),
        latent_shape: tuple[int, ...] | None = None,
        output_shape: tuple[int, int, int] | None = None,
        scale_factor: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Latent diffusion with the card's ``diffusion`` UNet, then the ``autoencoder`` decoder.

        Args:
            seed: seeds the starting latent (drawn on the CPU) and DDPM's per-step noise.
            sampler / steps: validated sampler name and step count.
            concat / unet_kwargs: conditioning built once (see :func:`~SynthBrainLib.pipelines.sampling.denoise`).
            decoder_inputs: extra arguments of ``decode_stage_2_outputs`` after the latent (SPADE: seg).
            progress: called once per network evaluation and once after decoding.
            cancel: checked before every step and before decoding.
            guidance / null_concat / null_unet_kwargs / negatives: classifier-free guidance and the
                conditions it steers away from (see :func:`~SynthBrainLib.pipelines.sampling.denoise`).
            latent_shape / output_shape / scale_factor: the latent (C, x, y, z), the decoded grid and
                the latent scale of this request (default: the card's ``latent`` and ``output``); a
                model whose requests choose their grid passes its own.

        Returns:
            Decoder output (1, C, X, Y, Z), float32, on the CPU, and how it was decoded (for provenance).
        """
        card = self.card
        check_cancel(cancel)
        latent_shape = (1, *(latent_shape or card.latent.shape))
        noise = self.seeded_normal(latent_shape, seed)
        scheduler = make_scheduler(
            card.scheduler, sampler, steps, self.device, sample_numel=int(np.prod(latent_shape[2:]))
        )
        total = len(scheduler.timesteps) + 1  # network evaluations (PNDM adds warm-up steps) + decoding
        latent = denoise(
            self.networks["diffusion"],
            scheduler,
            noise,
            sampler=sampler,
            precision=self.precision,
            concat=concat,
            unet_kwargs=unet_kwargs,
            generator=self.device_generator(seed) if SAMPLERS[sampler].stochastic else None,
            progress=progress,
            cancel=cancel,
            total=total,
            guidance=guidance,
            null_concat=null_concat,
            null_unet_kwargs=null_unet_kwargs,
            negatives=negatives,
        )
        check_cancel(cancel)
        decoded, how = decoding.decode(
            self.networks["autoencoder"],
            latent / (card.latent.scale_factor if scale_factor is None else scale_factor),
            self.precision,
            mode=self.decode_mode,
            output_shape=output_shape or card.output.shape,
            decoder_inputs=decoder_inputs,
            settings=self.tiles,
        )
        self.report(progress, total, total)
        return decoded.cpu(), how

    # ---- requests, preview and cache -----------------------------------------------------------
    def sampling_request(
        self,
        *,
        progress: ProgressCallback | None,
        cancel: CancelFlag,
        preview: bool,
        sampler: str | None,
        steps: int | None,
        **fields: Any,
    ) -> tuple[Any, int]:
        """The checked request of a sampling ``generate`` call and its seed (drawn when not given):
        the call's own arguments first (:func:`check_call`), then the preview's sampler and steps, then
        :func:`~SynthBrainLib.models.requests.check_request` with ``fields`` (``guidance``, ``seed``
        and what the kind asks for: ``conditions``/``raw``, or the image request's fields)."""
        check_call(progress, cancel, preview)
        if preview:
            sampler, steps = self.preview_settings(sampler, steps)
        request = check_request(self.card, sampler=sampler, steps=steps, preset=self.preset, **fields)
        return request, resolve_seed(request.seed)

    def preview_settings(self, sampler: str | None, steps: int | None) -> tuple[str | None, int | None]:
        """Sampler and steps of a preview: the given ones, else :attr:`preview_sampler` (when the card
        allows it, else the card's default) and :attr:`preview_steps`."""
        sampling = self.card.sampling
        if sampling is None:
            return sampler, steps
        if sampler is None:
            sampler = self.preview_sampler if self.preview_sampler in sampling.samplers else sampling.default_sampler
        if steps is None:
            steps = max(self.preview_steps, MIN_STEPS.get(sampler.lower(), 1))
        return sampler, steps

    def cache_key(self, **parts: Any) -> str | None:
        """Key of a request in the result cache (``None`` when caching is off): the model and its
        weight digests, the pipeline's precision and decoding, and ``parts`` (resolved conditions,
        seed, sampler, steps, ...)."""
        if self.cache_size <= 0:
            return None
        weights = {k: v.get("sha256") for k, v in self.weights_info.items() if isinstance(v, dict)} or {
            "random": id(self)
        }
        identity = {
            "model": self.card.id,
            "card_version": self.card.version,
            "weights": weights,
            "precision": self.precision.name,
            "decode": self.decode_mode,
            "tiles": self.tiles.record(self.precision),
            "compile": self.compile,
            "sdpa": self.sdpa,
        }
        return json.dumps({**identity, **parts}, sort_keys=True, default=_jsonable)

    def cached(
        self, key: str | None, make: Callable[[], SynthesisResult], progress: ProgressCallback | None = None
    ) -> SynthesisResult:
        """``make()``, or a copy of the cached result for ``key``; results are stored as copies, so
        callers may change what they get back."""
        if key is None:
            return make()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                result = copy.deepcopy(hit)
        if hit is not None:
            self.report(progress, 1, 1)
            return result
        result = make()
        with self._cache_lock:
            self._cache[key] = copy.deepcopy(result)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    @staticmethod
    def report(progress: ProgressCallback | None, step: int, total: int) -> None:
        if progress is not None:
            progress(step, total)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.card.id!r}, device={str(self.device)!r})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def use_sdpa(module: torch.nn.Module) -> int:
    """Switch MONAI attention blocks to ``torch.nn.functional.scaled_dot_product_attention``
    (their ``use_flash_attention`` path); returns how many blocks were switched."""
    count = 0
    for m in module.modules():
        if (
            hasattr(m, "use_flash_attention")
            and not getattr(m, "save_attn", False)
            and getattr(m, "rel_positional_embedding", None) is None
        ):
            if not isinstance(getattr(m, "use_flash_attention"), bool):
                continue
            m.use_flash_attention = True
            count += 1
    return count
