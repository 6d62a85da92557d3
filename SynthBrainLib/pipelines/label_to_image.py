"""Label map to image (brainSPADE3D image generator): SPADE, with a choice of MR sequence."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..errors import ConditionError, Remedy, SynthBrainError
from ..models.cards import ModelCard, card_field_error
from ..models.requests import check_sampling, resolve_sequence
from ..models.schema import IMAGE_KIND, LESION_NAMES, TISSUE_NAMES
from ..outputs.io import check_affine, check_real_array
from ..outputs.resample import foreground_centre, one_hot, resample, same_grid
from ..outputs.results import SynthesisResult
from .base import SynthesisPipeline
from .lesion_insertion import insert_lesions
from .lesion_removal import remove_lesions
from .sampling import CancelFlag, ProgressCallback, check_call, check_cancel

ALIGNMENTS = ("world", "centre")


class LabelToImagePipeline(SynthesisPipeline):
    """Render a label map (any grid) as a T1, FLAIR or T2 image with the card's SPADE network.

    Two architectures are supported, as the card says:

    * ``generator``: ``monai.networks.nets.SPADENet`` (the brainSPADE design). The sequence is a
      style: a style code drawn from per-sequence statistics stored with the weights.
    * ``autoencoder`` + ``diffusion``: ``SPADEAutoencoderKL`` + ``SPADEDiffusionModelUNet`` (SPADE
      latent diffusion), sequence as the UNet's class label; sampled with the shared loop.

    The labels are resampled to the model grid (partial volumes, trilinear), synthesised there, and
    the image is resampled back onto the input grid, so it overlays the input voxel for voxel.
    """

    kind = IMAGE_KIND
    output_type = "image"
    input_name = "labels"
    required_sections = ("labels", "sequences")

    @classmethod
    def check_card(cls, card: ModelCard) -> None:
        """Besides labels and sequences: a SPADE generator, or SPADE latent diffusion; the generator's
        label channels are the label classes (plus one per sequence where sequences are label channels)."""
        super().check_card(card)
        if "generator" not in card.networks and "diffusion" not in card.networks:
            raise card_field_error(
                card,
                "networks",
                "must define 'generator' (SPADENet) or 'autoencoder' + 'diffusion' (SPADE latent diffusion)",
            )
        if "generator" in card.networks:
            expected = len(card.labels) + (len(card.sequences.names) if card.sequences.label_channels else 0)
            if card.networks["generator"].kwargs.get("label_nc") != expected:
                why = (
                    "label classes + sequences (sequences.label_channels)"
                    if card.sequences.label_channels
                    else "label classes"
                )
                raise card_field_error(
                    card,
                    "networks.generator.kwargs.label_nc",
                    f"must be {expected} ({why}), got {card.networks['generator'].kwargs.get('label_nc')}",
                )

    def example_request(self) -> dict[str, Any]:
        """A deterministic label map on the model grid: nested ellipsoids of the first classes."""
        shape = self.card.output.shape
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
        r = np.sqrt((grid**2).sum(0))
        labels = np.zeros(shape, np.uint8)
        for k in range(1, min(len(self.card.labels), 6)):
            labels[r < 0.95 - 0.15 * (k - 1)] = k
        return {"labels": labels}

    def generate(
        self,
        labels: np.ndarray,
        *,
        affine: np.ndarray | None = None,
        sequence: str = "T1",
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        alignment: str = "world",
        progress: ProgressCallback | None = None,
        cancel: CancelFlag = None,
        preview: bool = False,
    ) -> SynthesisResult:
        """Synthesise an image that matches ``labels``.

        Args:
            labels: integer label map (X, Y, Z) with the card's label values, or partial-volume maps
                (C, X, Y, Z) in the card's channel order.
            affine: 4x4 voxel-to-RAS matrix of ``labels``; ``None`` means the model's own grid.
            sequence: one of the card's sequences (e.g. ``T1``, ``FLAIR``, ``T2``; any case).
            seed: style / noise seed (``None`` draws one).
            sampler / steps: for SPADE latent-diffusion cards only.
            alignment: ``world`` maps the labels to the model grid by their RAS coordinates;
                ``centre`` first moves the centre of the labelled region onto the grid centre (for
                label maps drawn in another space).
            progress / cancel / preview: as for the other pipelines (``preview`` changes only SPADE
                latent-diffusion cards; the SPADE GAN is one network evaluation anyway).

        Returns:
            :class:`SynthesisResult` with ``image`` float32 on the input grid and the input affine.
        """
        card = self.card
        check_call(progress, cancel, preview)
        seq = resolve_sequence(card, sequence)
        if alignment not in ALIGNMENTS:
            raise ConditionError(f"alignment {alignment!r} is not one of {', '.join(ALIGNMENTS)}")
        seed = self.resolve_seed(seed)
        if preview and card.sampling is not None:
            sampler, steps = self.preview_settings(sampler, steps)
        sampler, steps = check_sampling(card, sampler, steps, self.preset)
        pv_in, in_affine = self._check_labels(labels, affine)
        self._check_has_tissue(pv_in)
        key = self.cache_key(
            kind=self.kind,
            labels=hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(),
            labels_shape=list(np.shape(labels)),
            labels_dtype=str(np.asarray(labels).dtype),
            affine=np.asarray(in_affine).round(9).tolist(),
            sequence=seq,
            alignment=alignment,
            seed=seed,
            sampler=sampler,
            steps=steps,
            preview=bool(preview),
        )
        return self.cached(
            key,
            lambda: self._render(
                labels, pv_in, in_affine, seq, alignment, seed, sampler, steps, preview, progress, cancel
            ),
            progress,
        )

    def _render(
        self, labels, pv_in, in_affine, seq, alignment, seed, sampler, steps, preview, progress, cancel
    ) -> SynthesisResult:
        """Resample to the model grid, synthesise, resample back; the result with its provenance."""
        card = self.card
        in_shape = pv_in.shape[1:]
        model_shape, model_affine = card.output.shape, card.output.affine
        # Where the model grid sits in the input's world: identity for "world"; a shift for "centre".
        shift = np.eye(4)
        if alignment == "centre":
            shift[:3, 3] = (
                foreground_centre(1.0 - pv_in[0], in_affine)
                - (model_affine @ np.append((np.asarray(model_shape) - 1) / 2.0, 1.0))[:3]
            )
        placed_affine = shift @ model_affine
        fill = np.zeros(len(card.labels), dtype=np.float32)
        fill[0] = 1.0
        if same_grid(in_shape, in_affine, model_shape, placed_affine):
            pv = pv_in
        else:
            pv = resample(pv_in, in_affine, model_shape, placed_affine, fill=fill)
            pv /= np.clip(pv.sum(axis=0, keepdims=True), 1e-6, None)
            if (pv_in[0] < 0.5).any() and not (pv[0] < 0.5).any():
                raise ConditionError(
                    f"the labelled region does not overlap {card.id}'s field of view (the "
                    f"{card.output.shape[0]}x{card.output.shape[1]}x{card.output.shape[2]} "
                    "model grid in world coordinates)",
                    remedy=Remedy("alignment_centre"),
                )
        seg = torch.from_numpy(np.ascontiguousarray(pv)).unsqueeze(0).to(self.device)

        check_cancel(cancel)
        if "generator" in self.networks:
            image, sampler, steps, how = self._spade_gan(seg, seq, seed, progress), None, None, None
        else:
            image, how = self._spade_ldm(seg, seq, seed, sampler, steps, progress, cancel)
        lo, hi = card.output.intensity_range
        image = np.clip(image, lo, hi)
        if not same_grid(in_shape, in_affine, model_shape, placed_affine):
            image = resample(image, placed_affine, in_shape, in_affine, fill=lo)
        provenance = self.provenance(
            seed=seed,
            sampler=sampler,
            steps=steps,
            extra={
                "sequence": seq,
                "alignment": alignment,
                "input": {
                    "shape": list(in_shape),
                    "affine": np.asarray(in_affine).round(6).tolist(),
                    "labels_sha256": hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest(),
                },
                "postprocess": (
                    f"clipped to [{lo:g}, {hi:g}]; resampled (trilinear) from the model grid to the input grid"
                ),
                "description": f"{seq} from labels",
                "preview": bool(preview),
                **({"decode": how} if how is not None else {}),
            },
        )
        return SynthesisResult(
            image=image.astype(np.float32), affine=np.asarray(in_affine, dtype=np.float64).copy(), provenance=provenance
        )

    #: How many renders of the registration template (one per sequence and seed) a pipeline keeps.
    TEMPLATE_RENDERS_KEPT = 6

    def template_image(self, sequence: str, seed: int) -> np.ndarray:
        """(X, Y, Z) float32: the card's template labels rendered in ``sequence`` with ``seed`` (model
        space), kept for the next call: every scan edit registers this image and checks the sequence
        against the other sequences' renders, and the same (sequence, seed) gives the same image."""
        memo = self.__dict__.setdefault("_template_renders", OrderedDict())
        key = (sequence, int(seed), self.precision.name)
        if key not in memo:
            labels = self.tensors[self.card.template.weights]["labels"].cpu().numpy()
            memo[key] = self.generate(labels, sequence=sequence, seed=seed).image
            while len(memo) > self.TEMPLATE_RENDERS_KEPT:
                memo.popitem(last=False)
        memo.move_to_end(key)
        return memo[key].copy()

    #: Insert synthetic lesions into a real scan: see :func:`~SynthBrainLib.pipelines.lesion_insertion.insert_lesions`
    #: (``pipe.insert(scan, affine, lesions, sequence="FLAIR")``).
    insert = insert_lesions
    #: Remove lesions from a real scan (lesion filling): see
    #: :func:`~SynthBrainLib.pipelines.lesion_removal.remove_lesions` (``pipe.remove(scan, affine, lesions, ...)``).
    remove = remove_lesions

    # ---- inputs -------------------------------------------------------------------------------
    def _check_labels(self, labels: np.ndarray, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return (C, X, Y, Z) float32 partial volumes and the input affine."""
        card = self.card
        n = len(card.labels)
        try:
            labels = np.asarray(labels)
        except (TypeError, ValueError) as exc:  # ragged nested lists and the like
            raise ConditionError(f"labels are not an array: {exc}") from None
        try:
            check_real_array(labels, "labels")
        except SynthBrainError as exc:
            raise ConditionError(str(exc)) from None
        if labels.ndim == 4 and labels.shape[0] == 1 and n > 1:
            labels = labels[0]  # a label map stored as (X, Y, Z, 1), as some tools write it
        if labels.ndim == 3:
            if not np.issubdtype(labels.dtype, np.integer) and not np.all(np.isfinite(labels)):
                raise ConditionError(
                    "labels must be an integer label map (X, Y, Z); this one holds NaN or infinite values"
                )
            if not (np.issubdtype(labels.dtype, np.integer) or np.all(np.mod(labels, 1) == 0)):
                raise ConditionError("labels must be an integer label map (X, Y, Z) or partial volumes (C, X, Y, Z)")
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= n:
                bad = lo if lo < 0 else hi
                schema = ", ".join(f"{c.value} {c.name}" for c in card.labels)
                raise ConditionError(f"label value {bad} is not in the model's schema (0–{n - 1}: {schema})")
            pv = one_hot(labels, n)
        elif labels.ndim == 4:
            if labels.shape[0] != n:
                raise ConditionError(
                    f"partial volumes have {labels.shape[0]} channels; the model's schema has {n} "
                    f"({', '.join(card.label_names)})"
                )
            pv = labels.astype(np.float32)
            if not np.all(np.isfinite(pv)) or pv.min() < -1e-3 or pv.max() > 1 + 1e-3:
                raise ConditionError("partial volumes must be finite and within 0–1")
            pv = np.clip(pv, 0, 1)
            pv /= np.clip(pv.sum(axis=0, keepdims=True), 1e-6, None)
        else:
            raise ConditionError(
                f"labels have {labels.ndim} dimensions; expected a label map (X, Y, Z) or partial volumes (C, X, Y, Z)"
            )
        if affine is None:
            if tuple(pv.shape[1:]) != tuple(card.output.shape):
                raise ConditionError(
                    f"labels of shape {tuple(pv.shape[1:])} need an affine; without one they must be on the "
                    f"model grid {tuple(card.output.shape)}"
                )
            affine = card.output.affine
        try:
            affine = check_affine(affine, "the labels")
        except SynthBrainError as exc:
            raise ConditionError(f"affine must be an invertible 4x4 voxel-to-RAS matrix ({exc})") from None
        return pv, affine

    def _check_has_tissue(self, pv: np.ndarray) -> None:
        """A whole brain is rendered from tissue classes: lesions alone would give a blob in noise."""
        names = self.card.label_names
        tissue = [names.index(n) for n in TISSUE_NAMES if n in names]
        lesion = [i for i, n in enumerate(names) if n in LESION_NAMES]
        if tissue and lesion and pv[lesion].sum() > 0 and pv[tissue].sum() == 0:
            raise ConditionError(
                "the labels hold lesions but no tissue (csf, gm or wm): this renders a whole new brain from a "
                "label map",
                remedy=Remedy("insert_lesions"),
            )

    # ---- the two architectures ----------------------------------------------------------------
    def _spade_gan(self, seg: torch.Tensor, seq: str, seed: int, progress: ProgressCallback | None) -> np.ndarray:
        styles = self.tensors[self.card.sequences.weights]
        mean, std = styles[f"{seq}.mean"], styles[f"{seq}.std"]
        z = mean + std * self.seeded_normal(tuple(mean.shape), seed)
        if self.card.sequences.label_channels:
            seg = torch.cat(
                [seg, sequence_channels(self.card.sequences.names.index(seq), len(self.card.sequences.names), seg)],
                dim=1,
            )
        with torch.inference_mode(), self.precision.autocast():
            out = self.networks["generator"].decode(seg, z.unsqueeze(0))
        self.report(progress, 1, 1)
        return out[0, 0].float().cpu().numpy()

    def _spade_ldm(self, seg, seq, seed, sampler, steps, progress, cancel) -> tuple[np.ndarray, dict[str, Any]]:
        card = self.card
        unet_kwargs: dict[str, Any] = {"seg": seg}
        if card.sequences.mode == "class_label":
            unet_kwargs["class_labels"] = torch.tensor([card.sequences.names.index(seq)], device=self.device)
        out, how = self.diffuse_and_decode(
            seed=seed,
            sampler=sampler,
            steps=steps,
            unet_kwargs=unet_kwargs,
            decoder_inputs=(seg,),
            progress=progress,
            cancel=cancel,
        )
        return out[0, 0].numpy(), how


def sequence_channels(index: int | torch.Tensor, n_sequences: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot sequence channels shaped like ``like`` (B, C, X, Y, Z) -> (B, n_sequences, X, Y, Z).

    ``index``: one sequence for the whole batch, or (B,) one per item (training). Training and
    synthesis both build the channels here, so their order cannot drift apart.
    """
    index = torch.as_tensor(index, device=like.device).expand(like.shape[0])
    onehot = torch.nn.functional.one_hot(index, n_sequences).to(like.dtype)
    return onehot.view(*onehot.shape, 1, 1, 1).expand(-1, -1, *like.shape[2:])
