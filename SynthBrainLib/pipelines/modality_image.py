"""An MR image of a chosen modality on a chosen grid: NV-Generate-MR-Brain (MAISI-v2 rectified flow).

The request names the modality (T1w, T2w, FLAIR, SWI, MRA; whole head or skull-stripped), the
output size in voxels and the spacing in mm (:mod:`SynthBrainLib.models.modalities`). The diffusion
UNet (MONAI's ``DiffusionModelUNetMaisi``) takes the modality as a class label and the spacing (mm x
100) as an input; classifier-free guidance contrasts the modality with class 0 ("unknown"). The
loop is the one of every model (:func:`~SynthBrainLib.pipelines.sampling.denoise`, MONAI's
``RFlowScheduler``); the decoder is MONAI's ``AutoencoderKlMaisi``.

Equivalence with upstream (``scripts/diff_model_infer.py`` of NV-Generate-CTMR): the same noise
shape (latent 4 x size/4), timesteps (``set_timesteps`` with the latent's voxel count), network
inputs (timestep as a float, spacing x 100 rounded through float16 as upstream's half tensor,
labels ``[m, 0]`` under guidance), update (``RFlowScheduler.step``), decode of ``z / scale_factor``
and output scaling (x 1000, clipped below at 0). Differences: the starting noise is drawn on the CPU
from the seed (the same image on every device), the output stays float32 (upstream truncates to
int16), and the decode is whole (upstream decodes windows of 80^3 latent voxels; the latents of
sizes up to 320^3 voxels fit one window anyway).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..models.cards import ModelCard, card_field_error
from ..models.checkpoints import read_checkpoint_number
from ..models.modalities import ImageRequest
from ..models.schema import MODALITY_KIND
from ..outputs.results import SynthesisResult
from .base import SynthesisPipeline
from .sampling import CancelFlag, ProgressCallback

#: Upstream writes MR as the decoded image x 1000 (its training intensities were scaled to 0-1).
MR_SCALE = 1000.0


class ModalityImagePipeline(SynthesisPipeline):
    """A brain MR image of a chosen modality and grid from a rectified-flow latent diffusion model.

    Example::

        pipe = SynthBrainLib.load_pipeline("nv-generate-mr-brain")
        result = pipe.generate(modality="FLAIR", skull_stripped=True, size=(256, 256, 128),
                               spacing=(0.94, 0.94, 1.36), seed=1)
        result.save("flair.nii.gz")

    Args:
        scale_factor: the latent scale the UNet was trained with (read from the UNet checkpoint by
            :meth:`from_installed`; 1.0 for random weights). Other arguments: see
            :class:`~SynthBrainLib.pipelines.base.SynthesisPipeline`.
    """

    kind = MODALITY_KIND
    output_type = "image"
    required_sections = ("scheduler", "sampling", "modalities", "geometry")
    required_networks = ("autoencoder", "diffusion")
    #: The preview keeps the card's sampler (rectified flow) with fewer steps.
    preview_steps = 10

    def __init__(self, card: ModelCard, networks, *, scale_factor: float = 1.0, **options: Any) -> None:
        super().__init__(card, networks, **options)
        self.scale_factor = float(scale_factor)

    @classmethod
    def check_card(cls, card: ModelCard) -> None:
        """Besides the sections: the UNet denoises the autoencoder's latent, takes the spacing and a
        class label for every modality code, and guidance's null is the card's null code."""
        super().check_card(card)
        unet = card.networks["diffusion"].kwargs
        ae = card.networks["autoencoder"].kwargs
        latent = ae.get("latent_channels")
        if unet.get("in_channels") != latent or unet.get("out_channels") != latent:
            raise card_field_error(
                card, "networks.diffusion.kwargs.in_channels", f"must equal the autoencoder's latent_channels {latent}"
            )
        if not unet.get("include_spacing_input"):
            raise card_field_error(card, "networks.diffusion.kwargs.include_spacing_input", "must be true")
        codes = [m.code for m in card.modalities.choices] + [card.modalities.null_code]
        if not isinstance(unet.get("num_class_embeds"), int) or max(codes) >= unet["num_class_embeds"]:
            raise card_field_error(
                card,
                "networks.diffusion.kwargs.num_class_embeds",
                f"must exceed every modality code (up to {max(codes)}), got {unet.get('num_class_embeds')}",
            )
        guidance = card.sampling.guidance
        if guidance is not None and guidance.null_value != card.modalities.null_code:
            raise card_field_error(
                card, "sampling.guidance.null_value", f"must be the modalities' null_code {card.modalities.null_code}"
            )
        stride = cls.latent_stride(card) * 2 ** (len(unet.get("num_channels") or ()) - 1)
        if card.geometry.size_multiple % stride:
            raise card_field_error(
                card, "geometry.size_multiple", f"must be a multiple of {stride} (autoencoder x UNet downsampling)"
            )

    @staticmethod
    def latent_stride(card: ModelCard) -> int:
        """Image voxels per latent voxel along each axis: 2 per autoencoder level after the first."""
        return 2 ** (len(card.networks["autoencoder"].kwargs.get("num_channels") or ()) - 1)

    @classmethod
    def from_installed(cls, installed, *, device="auto", **options: Any) -> "ModalityImagePipeline":
        """Load the networks strictly, and the ``scale_factor`` stored in the UNet checkpoint (MAISI
        keeps it beside ``unet_state_dict``); it is recorded with the weights."""
        path = installed.weights["diffusion"].path
        scale = read_checkpoint_number(path, "scale_factor")
        pipe = super().from_installed(installed, device=device, scale_factor=scale, **options)
        pipe.weights_info.setdefault("diffusion", {})["scale_factor"] = scale
        return pipe

    def example_request(self) -> dict[str, Any]:
        """Skull-stripped FLAIR when the card has it (the benchmarks' request), else the card's
        default modality; the card's default grid."""
        flair = [m for m in self.card.modalities.choices if m.name == "FLAIR" and m.skull_stripped]
        chosen = flair[0] if flair else self.card.modalities.default
        return {"modality": chosen.name, "skull_stripped": chosen.skull_stripped}

    # ---- one request ---------------------------------------------------------------------------
    def generate(
        self,
        *,
        modality: str | None = None,
        skull_stripped: bool | None = None,
        size: Sequence[int] | None = None,
        spacing: Sequence[float] | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelFlag = None,
        preview: bool = False,
    ) -> SynthesisResult:
        """Generate one MR image.

        Args:
            modality: ``T1w`` | ``T2w`` | ``FLAIR`` | ``SWI`` | ``MRA`` as the card lists (any case;
                default: the card's).
            skull_stripped: brain only (``True``) or the whole head (``False``); default: the card's.
            size: output voxels (x, y, z), each a multiple of the card's ``geometry.size_multiple``
                (32) within its minimum and maximum (up to 512 x 512 x 256).
            spacing: voxel size in mm (x, y, z), each within the card's range (0.4-5 mm).
            seed: the same seed, request and device give the same image; ``None`` draws one.
            sampler / steps: ``rflow`` and its steps (default 30).
            guidance: classifier-free guidance scale against the "unknown" class (default: the
                card's, 2; 1 = none).
            progress / cancel / preview: as for every pipeline.

        Returns:
            :class:`SynthesisResult`: ``image`` float32 (X, Y, Z) = the decoded image x 1000,
            clipped below at 0; affine diag(spacing) with the origin at 0 (RAS), as upstream writes.

        Raises:
            ConditionError: a modality, size, spacing, sampler, steps, guidance or seed the card
                does not allow (one line, before any work).
            SynthesisCancelled: the cancel flag was set.
        """
        request, seed = self.sampling_request(
            progress=progress,
            cancel=cancel,
            preview=preview,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            seed=seed,
            modality=modality,
            skull_stripped=skull_stripped,
            size=size,
            spacing=spacing,
        )
        image, sampler, steps, guidance = request.image, request.sampler, request.steps, request.guidance
        key = self.cache_key(
            kind=self.output_type,
            image=image.record(),
            seed=seed,
            sampler=sampler,
            steps=steps,
            preview=bool(preview),
            guidance=guidance,
        )

        def make() -> SynthesisResult:
            decoded, how = self._sample_decoded(image, seed, sampler, steps, guidance, progress, cancel)
            run = {"decode": how, "preview": bool(preview), "guidance": guidance}
            return self.finish(image, seed, sampler, steps, decoded, run)

        return self.cached(key, make, progress)

    def network_inputs(self, image: ImageRequest, code: int) -> dict[str, torch.Tensor]:
        """The UNet's inputs besides the latent and timestep: ``class_labels`` (1,) and
        ``spacing_tensor`` (1, 3) = spacing in mm x 100, rounded through float16 as upstream's half
        tensor is."""
        spacing = torch.from_numpy(np.asarray(image.spacing, dtype=np.float64)[None] * 100.0).half().float()
        return {
            "class_labels": torch.tensor([code], dtype=torch.long, device=self.device),
            "spacing_tensor": spacing.to(self.device),
        }

    def latent_shape(self, image: ImageRequest) -> tuple[int, int, int, int]:
        """(C, x, y, z) of the latent of a request: the image size over the autoencoder's stride."""
        stride = self.latent_stride(self.card)
        channels = self.card.networks["diffusion"].kwargs["in_channels"]
        return (channels, *(s // stride for s in image.size))

    def _sample_decoded(
        self,
        image: ImageRequest,
        seed: int,
        sampler: str,
        steps: int,
        guidance: float,
        progress: ProgressCallback | None,
        cancel: CancelFlag,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        null = {}
        if guidance != 1.0:
            null = {
                "guidance": guidance,
                "null_unet_kwargs": self.network_inputs(image, self.card.modalities.null_code),
            }
        return self.diffuse_and_decode(
            seed=seed,
            sampler=sampler,
            steps=steps,
            unet_kwargs=self.network_inputs(image, image.modality.code),
            progress=progress,
            cancel=cancel,
            latent_shape=self.latent_shape(image),
            output_shape=image.size,
            scale_factor=self.scale_factor,
            **null,
        )

    def raw_output(self, decoded: torch.Tensor) -> np.ndarray:
        """(1, X, Y, Z) float32: the decoder output x 1000, clipped below at 0 (upstream's MR scaling)."""
        return (decoded[0].float().cpu() * MR_SCALE).clamp_min(0.0).numpy().astype(np.float32)

    @staticmethod
    def affine(image: ImageRequest) -> np.ndarray:
        """diag(spacing), origin 0: RAS voxel axes, as upstream's NIfTI has them."""
        return np.diag([*image.spacing, 1.0]).astype(np.float64)

    def finish(
        self,
        image: ImageRequest,
        seed: int,
        sampler: str,
        steps: int,
        decoded: torch.Tensor,
        run: Mapping[str, Any],
    ) -> SynthesisResult:
        output = self.raw_output(decoded)[0]
        m = image.modality
        description = (
            f"{m.name} {'skull-stripped' if m.skull_stripped else 'whole head'}, "
            + " x ".join(str(s) for s in image.size)
            + " voxels at "
            + " x ".join(f"{s:g}" for s in image.spacing)
            + " mm"
        )
        extra = {
            **image.record(),
            "description": description,
            "scale_factor": self.scale_factor,
            "postprocess": f"decoded image x {MR_SCALE:g}, clipped below at 0 (float32)",
            **run,
        }
        provenance = self.provenance(
            conditions={"modality": m.key, "size": list(image.size), "spacing_mm": list(image.spacing)},
            seed=seed,
            sampler=sampler,
            steps=steps,
            extra=extra,
        )
        return SynthesisResult(image=output, affine=self.affine(image), provenance=provenance)
