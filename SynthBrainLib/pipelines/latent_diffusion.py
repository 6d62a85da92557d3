"""Conditional latent diffusion: Brain LDM (images) and the brainSPADE3D label generator (label maps)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..models.card_parts import NegativeCondition
from ..models.cards import ModelCard, card_field_error
from ..models.conditioning import ConditionValues
from ..models.schema import BRAIN_KIND, LABELS_KIND, LESION_NAMES
from ..outputs.measure import measure_ventricular_volume_ml
from ..outputs.results import SynthesisResult
from .base import SynthesisPipeline
from .brain_ageing import age_scan
from .sampling import CancelFlag, NegativeBranch, ProgressCallback


class LatentDiffusionPipeline(SynthesisPipeline):
    """Sample a latent with the card's diffusion UNet, then decode it with the card's autoencoder.

    Conditions enter as the card says: broadcast to constant channels concatenated to the latent
    (``concat``) and/or as a (B, 1, K) cross-attention context (``crossattn``), in the card's order;
    ``presence``: which lesion groups are asked for at all, as the UNet's class label.
    """

    required_sections = ("scheduler", "sampling", "latent")
    required_networks = ("autoencoder", "diffusion")

    @classmethod
    def check_card(cls, card: ModelCard) -> None:
        """Besides the sections: the UNet takes the latent plus the concatenated conditions, its
        cross-attention width is the number of conditions, and the decoder makes the output grid."""
        super().check_card(card)
        unet = card.networks["diffusion"].kwargs
        extra = len(card.conditioning.variables) if "concat" in card.conditioning.inputs else 0
        if unet.get("in_channels") != card.latent.shape[0] + extra:
            raise card_field_error(
                card,
                "networks.diffusion.kwargs.in_channels",
                f"must be latent channels {card.latent.shape[0]} + {extra} concatenated conditions, got "
                f"{unet.get('in_channels')}",
            )
        if "crossattn" in card.conditioning.inputs and unet.get("cross_attention_dim") != len(
            card.conditioning.variables
        ):
            raise card_field_error(
                card,
                "networks.diffusion.kwargs.cross_attention_dim",
                f"must equal the number of conditioning variables ({len(card.conditioning.variables)})",
            )
        if "presence" in card.conditioning.inputs:
            classes = card.conditioning.presence_null_class + 1
            if unet.get("num_class_embeds") != classes:
                raise card_field_error(
                    card,
                    "networks.diffusion.kwargs.num_class_embeds",
                    f"must be {classes} (2 ** {len(card.conditioning.presence_groups)} presence groups + the null "
                    f"class), got {unet.get('num_class_embeds')}",
                )
            guidance = card.sampling.guidance
            if guidance is not None and guidance.null != "all":
                raise card_field_error(
                    card, "sampling.guidance.null", "must be 'all' with the presence input (one null class)"
                )
        # The decoder upsamples the latent by 2 per level after the first: the image it makes must
        # be the card's output grid (else the result would not fit its own affine).
        levels = len(card.networks["autoencoder"].kwargs.get("channels") or ())
        if levels:
            expected = [int(n) * 2 ** (levels - 1) for n in card.latent.shape[1:]]
            if list(card.output.shape) != expected:
                raise card_field_error(
                    card,
                    "output.shape",
                    f"must be the decoded latent's shape {expected} (latent {list(card.latent.shape[1:])} x "
                    f"{2 ** (levels - 1)}), got {list(card.output.shape)}",
                )

    def raw_output(self, decoded: torch.Tensor) -> np.ndarray:
        """The decoder output (1, C, X, Y, Z) post-processed as results hold it, (C, X, Y, Z) float32
        (also applied to the bundle's reference loop by the benchmarks)."""
        raise NotImplementedError

    def _sample_decoded(
        self,
        cond: ConditionValues,
        seed: int,
        sampler: str,
        steps: int,
        progress: ProgressCallback | None,
        cancel: CancelFlag,
        guidance: float = 1.0,
        negatives: Sequence[tuple[NegativeCondition, list[float]]] = (),
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Run diffusion and decoding; return the decoder output (1, C, X, Y, Z) float32 on the CPU
        and how it was decoded. ``guidance`` != 1: classifier-free guidance against the card's null
        condition (:meth:`null_vector`), steering away from ``negatives`` (:meth:`negative_vectors`)."""
        values = cond.vector()
        concat, unet_kwargs = self._network_conditions(values)
        null = {}
        if guidance != 1.0:
            null_concat, null_kwargs = self._network_conditions(self.null_vector(values))
            null = {
                "guidance": guidance,
                "null_concat": null_concat,
                "null_unet_kwargs": null_kwargs,
                "negatives": [NegativeBranch(n.scale, *self._network_conditions(vector)) for n, vector in negatives],
            }
        return self.diffuse_and_decode(
            seed=seed,
            sampler=sampler,
            steps=steps,
            concat=concat,
            unet_kwargs=unet_kwargs,
            progress=progress,
            cancel=cancel,
            **null,
        )

    def null_vector(self, values) -> list[float]:
        """The null condition of classifier-free guidance for model-unit ``values`` (card
        ``sampling.guidance.null``): every value replaced by the null value, or only the requested
        ones (above their variable's lowest model value)."""
        spec = self.card.sampling.guidance
        if spec.null == "all":
            return [spec.null_value] * len(values)
        asked = self.card.conditioning.asked(values)
        return [spec.null_value if a else value for value, a in zip(values, asked)]

    def negative_vectors(self, values) -> list[tuple[NegativeCondition, list[float]]]:
        """The card's negative conditions (``sampling.guidance.negatives``) that apply to model-unit
        ``values`` - those whose every variable the request leaves at its lowest model value, when it
        asks for something else - each with its model-unit vector: ``values`` with the negative's
        values set. A request for nothing gets none: guidance amplifies "lesion" in general only when
        some lesion is asked for, and pushing a request for nothing away from every lesion kind at
        once made stray enhancing-tumour voxels (labels-demo: 3 of 32 no-lesion requests)."""
        spec = self.card.sampling.guidance
        variables = self.card.conditioning.variables
        asked = self.card.conditioning.asked(values)
        out = []
        for negative in spec.negatives if spec is not None and any(asked) else ():
            if not any(a for a, v in zip(asked, variables) if v.name in negative.values):
                vector = [
                    v.to_model(negative.values[v.name]) if v.name in negative.values else value
                    for v, value in zip(variables, values)
                ]
                out.append((negative, vector))
        return out

    def _network_conditions(self, values) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """Model-unit condition values as the UNet takes them: constant channels (1, K, x, y, z) to
        concatenate and/or a cross-attention context (1, 1, K), as the card says."""
        card = self.card
        vector = torch.tensor(values, dtype=torch.float32, device=self.device).view(1, 1, -1)
        concat = None
        unet_kwargs: dict[str, Any] = {}
        if "concat" in card.conditioning.inputs:
            k = vector.shape[-1]
            concat = vector.view(1, k, 1, 1, 1).expand(1, k, *card.latent.shape[1:]).contiguous()
        if "crossattn" in card.conditioning.inputs:
            unet_kwargs["context"] = vector
        if "presence" in card.conditioning.inputs:
            guidance = card.sampling.guidance
            null = guidance is not None and all(v == guidance.null_value for v in values)
            label = card.conditioning.presence_null_class if null else card.conditioning.presence_class(values)
            unet_kwargs["class_labels"] = torch.tensor([label], dtype=torch.long, device=self.device)
        return concat, unet_kwargs

    def generate(
        self,
        *,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        raw: Mapping[str, float] | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelFlag = None,
        preview: bool = False,
        guidance: float | None = None,
        **conditions: Any,
    ) -> SynthesisResult:
        """Generate one output from conditions: an image (:class:`ConditionalBrainPipeline`) or a
        label map (:class:`LabelGeneratorPipeline`).

        Args:
            seed: noise seed; the same seed, conditions, sampler and device give the same output.
                ``None`` draws a seed (recorded in the provenance).
            sampler: ``ddim`` | ``ddpm`` | ``pndm`` | ``rflow`` | ``dpm++2m`` | ``dpm++3m`` | ``unipc``
                as the card allows (default: the preset's where the card lists it, else the card's).
            steps: number of sampling steps (default: the preset's, else the card's).
            raw: model-unit values (usually 0–1) for variables whose real-unit mapping is unknown,
                e.g. ``raw={"brain_volume": 0.4}``.
            progress: ``progress(step, total)`` after each diffusion step and after decoding.
            cancel: a ``threading.Event`` or a callable; checked before every step.
            preview: a quick low-step result for interactive use: unless given, ``sampler`` and
                ``steps`` are the pipeline's :attr:`preview_sampler` / :attr:`preview_steps`.
            guidance: classifier-free guidance scale (``None``: the card's default; 1 = none). Only
                models trained with condition dropout (card ``sampling.guidance``) take another
                value; each step then runs the network on the conditions and on the null condition
                (one batched call: about twice the step's work).
            **conditions: real-unit values by the card's names; unset ones take the card's default.
                Brain LDM: ``age=70`` (years), ``sex="female"``, ``ventricular_volume=30`` (mL),
                ``brain_volume`` (mL). Label generator: lesion volume fractions ``wmh``, ``tumour``,
                ``edema``, ``gdtumour`` (0 asks for no lesion of that kind).

        Returns:
            :class:`SynthesisResult` on the card's output grid and affine, as :meth:`finish` makes it:
            ``image`` float32 (X, Y, Z) clipped to the card's intensity range (conditional brain), or
            ``labels`` uint8 (X, Y, Z) with ``partial_volumes`` float32 (C, X, Y, Z) and ``image``
            ``None`` (label generator).

        Raises:
            ConditionError: unknown condition, value outside the card's range, bad sampler, steps,
                guidance or seed.
            SynthesisCancelled: the cancel flag was set.
        """
        request, seed = self.sampling_request(
            progress=progress,
            cancel=cancel,
            preview=preview,
            sampler=sampler,
            steps=steps,
            conditions=conditions,
            raw=raw,
            guidance=guidance,
            seed=seed,
        )
        cond, sampler, steps, guidance = request.conditions, request.sampler, request.steps, request.guidance
        key = self.cache_key(
            kind=self.output_type,
            conditions=self._conditions_record(cond),
            seed=seed,
            sampler=sampler,
            steps=steps,
            preview=bool(preview),
            guidance=guidance,
        )

        def make() -> SynthesisResult:
            negatives = self.negative_vectors(cond.vector()) if guidance != 1.0 else []
            decoded, how = self._sample_decoded(cond, seed, sampler, steps, progress, cancel, guidance, negatives)
            extra = {"decode": how, "preview": bool(preview), "guidance": guidance}
            if negatives:  # provenance: what this run steered away from
                extra["negative_conditions"] = [{"values": dict(n.values), "scale": n.scale} for n, _ in negatives]
            return self.finish(cond, seed, sampler, steps, decoded, extra)

        return self.cached(key, make, progress)

    def finish(
        self, cond: ConditionValues, seed: int, sampler: str, steps: int, decoded: torch.Tensor, extra: dict[str, Any]
    ) -> SynthesisResult:
        """The result of one run: this kind's output made from the decoder output ``decoded``
        (1, C, X, Y, Z) float32, with its provenance (``extra``: how it was decoded, preview, guidance)."""
        raise NotImplementedError

    def _provenance(
        self, cond: ConditionValues, seed: int, sampler: str, steps: int, output: dict[str, Any], run: dict[str, Any]
    ) -> dict[str, Any]:
        """The provenance of one run: the conditions, seed, sampler and steps; ``output``, what this
        kind records about its output; their description; and ``run``, how it ran (decode, preview,
        guidance)."""
        extra = {**output, "description": cond.describe(self.card.conditioning), **run}
        return self.provenance(
            conditions=self._conditions_record(cond), seed=seed, sampler=sampler, steps=steps, extra=extra
        )

    def _conditions_record(self, cond: ConditionValues) -> dict[str, Any]:
        return {
            "real_units": cond.real,
            "model_units": cond.model,
            "given_as": cond.given_as,
            "units": {v.name: v.unit for v in self.card.conditioning.variables},
            "normalisation": {v.name: v.normalisation for v in self.card.conditioning.variables},
        }


class ConditionalBrainPipeline(LatentDiffusionPipeline):
    """Brain LDM: a T1 brain from sex, age, ventricular volume and brain volume.

    Example::

        pipe = SynthBrainLib.load_pipeline("brain-ldm")
        result = pipe.generate(age=70, sex="female", seed=1)
        result.save("brain.nii.gz")
    """

    kind = BRAIN_KIND
    output_type = "image"
    #: The patient's own scan at another age: see :func:`~SynthBrainLib.pipelines.brain_ageing.age_scan`
    #: (``pipe.age(scan, affine, age=55, sex="female", to_age=80)``).
    age = age_scan

    def raw_output(self, decoded: torch.Tensor) -> np.ndarray:
        """Clipped to the card's intensity range."""
        lo, hi = self.card.output.intensity_range
        return decoded[0].float().cpu().clamp(lo, hi).numpy().astype(np.float32)

    def measured_volume_ml(self, output: np.ndarray) -> float | None:
        """Ventricular volume of the T1 (:func:`~SynthBrainLib.outputs.measure.measure_ventricular_volume_ml`)."""
        return measure_ventricular_volume_ml(output[0], self.card.output.affine)

    def requested_volume_ml(self, conditions: Mapping[str, Any]) -> float | None:
        value = conditions.get("ventricular_volume")
        return None if value is None else float(value)

    def finish(
        self, cond: ConditionValues, seed: int, sampler: str, steps: int, decoded: torch.Tensor, extra: dict[str, Any]
    ) -> SynthesisResult:
        """``image`` float32 (X, Y, Z): the decoder output clipped to the card's intensity range."""
        lo, hi = self.card.output.intensity_range
        image = self.raw_output(decoded)[0]
        provenance = self._provenance(
            cond, seed, sampler, steps, {"postprocess": f"decoder output clipped to [{lo:g}, {hi:g}]"}, extra
        )
        return SynthesisResult(image=image, affine=self.card.output.affine.copy(), provenance=provenance)


class LabelGeneratorPipeline(LatentDiffusionPipeline):
    """brainSPADE3D label generator: tissue and lesion label maps from lesion-volume conditions.

    The decoder's C channels go through a softmax to give partial-volume maps; their argmax is the
    label map. The result's provenance lists, per lesion condition, whether the lesion appeared.
    """

    kind = LABELS_KIND
    output_type = "labels"
    required_sections = (*LatentDiffusionPipeline.required_sections, "labels")

    @classmethod
    def check_card(cls, card: ModelCard) -> None:
        """Besides the latent rules: the autoencoder's channels are the label classes."""
        super().check_card(card)
        if card.networks["autoencoder"].kwargs.get("in_channels") != len(card.labels):
            raise card_field_error(
                card,
                "networks.autoencoder.kwargs.in_channels",
                f"must equal the number of label classes ({len(card.labels)})",
            )

    def raw_output(self, decoded: torch.Tensor) -> np.ndarray:
        """Class probabilities (softmax over the decoder's channels): partial-volume maps."""
        return torch.softmax(decoded[0].float().cpu(), dim=0).numpy().astype(np.float32)

    def measured_volume_ml(self, output: np.ndarray) -> float | None:
        """Total lesion volume of the label map (argmax of the partial volumes)."""
        names = self.card.label_names
        lesion = [names.index(n) for n in LESION_NAMES if n in names]
        voxel_ml = float(np.prod(self.card.output.spacing)) / 1000.0
        return float(np.isin(output.argmax(0), lesion).sum() * voxel_ml)

    def finish(
        self, cond: ConditionValues, seed: int, sampler: str, steps: int, decoded: torch.Tensor, extra: dict[str, Any]
    ) -> SynthesisResult:
        """``labels`` uint8 (X, Y, Z), the argmax of ``partial_volumes`` float32 (C, X, Y, Z), and
        ``image`` ``None``; the provenance lists, per requested lesion, whether it appeared."""
        pv = self.raw_output(decoded)
        labels = pv.argmax(axis=0).astype(np.uint8)
        names = self.card.label_names
        lesions = lesion_report(labels, names, cond.real, self.card.output.spacing)
        provenance = self._provenance(
            cond,
            seed,
            sampler,
            steps,
            {"labels": {str(i): n for i, n in enumerate(names)}, "lesions": lesions},
            extra,
        )
        return SynthesisResult(
            image=None,
            affine=self.card.output.affine.copy(),
            provenance=provenance,
            labels=labels,
            partial_volumes=pv,
            label_names=names,
        )


def lesion_report(
    labels: np.ndarray, names: tuple[str, ...], requested: Mapping[str, Any], spacing
) -> dict[str, dict[str, Any]]:
    """For each requested lesion class: requested fraction, whether it appeared, its volume.

    ``fraction`` is the lesion's voxel count divided by the count of non-background voxels.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    brain = max(int(np.count_nonzero(labels)), 1)
    report = {}
    for name, value in requested.items():
        if name not in names:
            continue
        count = int(np.count_nonzero(labels == names.index(name)))
        report[name] = {
            "requested": value,
            "present": count > 0,
            "fraction": count / brain,
            "volume_ml": count * voxel_ml,
        }
    return report
