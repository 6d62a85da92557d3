"""Task builders for a model that makes an MR image of a chosen modality on a chosen grid (``card.kind``
``modality_image``, e.g. NV-Generate-MR-Brain): one image, or two modalities from one seed.

As every builder: the request (modality, skull-stripped or whole head, size, spacing, sampler, steps,
guidance, seed) is checked on the calling (main) thread by SynthBrainLib's ``check_request`` before
any thread starts, ``compute`` runs the pipeline's ``generate``, and ``apply`` adds new volume nodes
(marked synthetic, with their provenance); no existing node is changed.
"""

from __future__ import annotations

from typing import Any, Mapping

from SynthBrainLib import errors

from . import scene as mrml
from .brain_tasks import _resolved, _share
from .choices import MODALITY_KIND
from .settings import RunSettings
from .tasks import Task


def modality_image(
    logic,
    settings: RunSettings,
    *,
    modality: str | None = None,
    skullStripped: bool | None = None,
    size=None,
    spacing=None,
    guidance: float | None = None,
) -> Task:
    """One MR image: ``apply`` gives a volume node on the requested grid (``None``: the card's default
    modality, skull-stripping, size and spacing; ``guidance`` ``None``: the card's scale)."""
    settings, card = _resolved(logic, MODALITY_KIND, settings)
    image = _checked(logic, card, settings, modality, skullStripped, size, spacing, guidance)
    scene = logic.scene

    def compute(progress, cancel):
        return generate(logic, card.id, settings, image, guidance, progress, cancel)

    def apply(result):
        return logic.kept(add_image(scene, image, result, "", settings.seed))

    return Task(f"{card.id} {image.modality.key}", compute, apply, scene=scene)


def modality_comparison(
    logic,
    modalityA,
    modalityB,
    settings: RunSettings,
    *,
    skullStripped: bool | None = None,
    size=None,
    spacing=None,
    guidance: float | None = None,
) -> Task:
    """Two modalities from the same seed on the same grid (the same starting noise, so the same
    synthetic head in two contrasts). ``modalityA``/``modalityB``: a name (``"FLAIR"``, skull-stripped
    as ``skullStripped``) or ``{"modality": "FLAIR", "skullStripped": True}``.

    ``apply`` gives ``(volumeA, volumeB)``. No difference volume: two contrasts do not subtract.
    """
    settings, card = _resolved(logic, MODALITY_KIND, settings)
    images = [
        _checked(logic, card, settings, *_choice(value, skullStripped, which), size, spacing, guidance)
        for which, value in (("A", modalityA), ("B", modalityB))
    ]
    if images[0].modality == images[1].modality:
        raise errors.ConditionError(
            f"A and B are both {images[0].modality.key}; choose another modality (or skull-stripping) for B"
        )
    scene, seed = logic.scene, settings.seed

    def compute(progress, cancel):
        return [
            generate(logic, card.id, settings, image, guidance, _share(progress, i, 2), cancel)
            for i, image in enumerate(images)
        ]

    def apply(results):
        return tuple(
            logic.kept(add_image(scene, image, result, f"{which} ", seed))
            for which, image, result in zip("AB", images, results)
        )

    keys = " vs ".join(image.modality.key for image in images)
    return Task(f"{card.id} {keys}", compute, apply, scene=scene)


def _choice(value: Any, skullStripped: bool | None, which: str) -> tuple[Any, Any]:
    """(modality, skull-stripped) of one side of a comparison."""
    if isinstance(value, str):
        return value, skullStripped
    if isinstance(value, Mapping) and set(value) <= {"modality", "skullStripped"} and "modality" in value:
        return value["modality"], value.get("skullStripped", skullStripped)
    raise errors.ConditionError(
        f"modality {which} {value!r} is neither a name ('FLAIR') nor {{'modality': 'FLAIR', 'skullStripped': True}}"
    )


def _checked(logic, card, settings, modality, skullStripped, size, spacing, guidance):
    """The request's modality and grid (SynthBrainLib's ``ImageRequest``), or a one-line error."""
    request = logic.check(
        card,
        {},
        None,
        settings,
        guidance=guidance,
        modality=modality,
        skull_stripped=skullStripped,
        size=size,
        spacing=spacing,
    )
    return request.image


def generate(logic, modelId: str, settings: RunSettings, image, guidance, progress, cancel):
    """One ``generate`` of the modality-image pipeline (worker thread)."""
    pipe = logic.pipeline(modelId, settings.device, settings.precision)
    return pipe.generate(
        modality=image.modality.name,
        skull_stripped=image.modality.skull_stripped,
        size=image.size,
        spacing=image.spacing,
        guidance=guidance,
        progress=progress,
        cancel=cancel,
        **settings.generate_options(),
    )


def add_image(scene, image, result, prefix: str, seed):
    """A new volume node of one result, e.g. 'SynthBrain FLAIR skull-stripped 256x256x128 seed 3'."""
    grid = "x".join(str(s) for s in image.size)
    name = f"SynthBrain {prefix}{image.modality.key} {grid} seed {seed}"
    return mrml.add_result_volume(scene, result.image, result.affine, name, result.provenance)
