"""One request checked against its model's card before any weight is read: the model's kind, its
conditions, sampler and steps, guidance scale, seed, sequence and lesion names, and the device,
precision and decode option names.

Torch-free (numpy only): the command line answers a bad argument at once, the Slicer module checks a
request on the main thread before a worker starts, and the pipelines run the same rules on every
call. The condition units, sampler and guidance rules themselves are in :mod:`.conditioning`; this
module composes them and holds the rules that are not about conditions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConditionError
from .cards import LabelClass, ModelCard
from .conditioning import MAX_SEED, ConditionValues, resolve_conditions, resolve_guidance, resolve_sampler, whole_number
from .device_names import check_decode_mode, check_precision_name, parse_device_name
from .modalities import ImageRequest, resolve_image_request
from .presets import DEFAULT_PRESET
from .schema import LESION_NAMES


@dataclass(frozen=True)
class CheckedRequest:
    """What :func:`check_request` resolved; ``None`` where the request left it to the card or to the
    run (a ``None`` seed is drawn when the request runs, see :func:`resolve_seed`)."""

    conditions: ConditionValues | None
    sampler: str | None
    steps: int | None
    guidance: float
    seed: int | None
    sequence: str | None
    #: The modality and output grid of a ``modality_image`` model; ``None`` for other kinds.
    image: ImageRequest | None = None


def check_request(
    card: ModelCard,
    *,
    kind: str | tuple[str, ...] | None = None,
    verb: str | None = None,
    conditions: Mapping[str, Any] | None = None,
    raw: Mapping[str, Any] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    preset: str = DEFAULT_PRESET,
    guidance: float | None = None,
    seed: int | None = None,
    sequence: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    decode: str | None = None,
    modality: str | None = None,
    skull_stripped: bool | None = None,
    size: Any = None,
    spacing: Any = None,
) -> CheckedRequest:
    """Check one request against ``card``; every rule that needs only the card.

    Args:
        card: the model's card.
        kind / verb: the ``card.kind`` the request needs (:mod:`.schema`) and what needs it, named in
            the error (``'generate'``); no check without ``kind``.
        conditions / raw: real-unit and model-unit condition values by name; checked when either is
            given (``{}`` checks the card's defaults).
        sampler / steps / preset: the sampler and step count (``None``: the preset's, else the
            card's); a model without a ``sampling`` section takes neither.
        guidance: classifier-free guidance scale (``None``: the card's). Pass it only for runs that
            take one (conditional brains and label generators).
        seed: a whole number in 0–:data:`~.conditioning.MAX_SEED`, or ``None`` (drawn when it runs).
        sequence: one of the card's sequences, any case (label-to-image models).
        device / precision / decode: option names, spelt right (whether the machine has the device
            is checked when the pipeline loads).
        modality / skull_stripped / size / spacing: the image a ``modality_image`` model makes
            (:mod:`.modalities`; ``None``: the card's default); other models refuse them.

    Returns:
        The resolved request.

    Raises:
        ConditionError: naming the value and what is allowed (``DeviceError`` for a device or
            precision name).
    """
    check_device_options(device, precision, decode)
    seed = check_seed(seed)
    if kind is not None:
        check_kind(card, kind, verb or str(kind))
    values = resolve_conditions(card.conditioning, conditions or {}, raw) if conditions is not None or raw else None
    sampler, steps = check_sampling(card, sampler, steps, preset)
    scale = resolve_guidance(card.id, card.sampling, guidance)
    if sequence is not None and card.sequences is not None:
        sequence = resolve_sequence(card, sequence)
    image = check_image_request(card, modality, skull_stripped, size, spacing)
    return CheckedRequest(values, sampler, steps, scale, seed, sequence, image)


def check_image_request(card: ModelCard, modality=None, skull_stripped=None, size=None, spacing=None):
    """The modality and grid of a ``modality_image`` model's request (defaults from its card); a
    model without a ``modalities`` section refuses any of them and gets ``None``."""
    if card.modalities is None or card.geometry is None:
        given = [n for n, v in (("modality", modality), ("size", size), ("spacing", spacing)) if v is not None]
        if skull_stripped is not None:
            given.append("skull_stripped")
        if given:
            raise ConditionError(f"{card.id} makes no chosen modality or grid; it takes no {', '.join(given)}")
        return None
    return resolve_image_request(
        card.modalities, card.geometry, modality=modality, skull_stripped=skull_stripped, size=size, spacing=spacing
    )


def check_device_options(device: str | None = None, precision: str | None = None, decode: str | None = None) -> None:
    """Device, precision and decode names, spelt right (``None``: not given)."""
    if device is not None:
        parse_device_name(device)
    if precision is not None:
        check_precision_name(precision)
    if decode is not None:
        check_decode_mode(decode)


def check_kind(card: ModelCard, kind: str | tuple[str, ...], verb: str) -> None:
    """The model is of ``kind`` (or one of several); else an error naming what needs that kind (``verb``)."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if card.kind not in kinds:
        raise ConditionError(f"model {card.id} is a {card.kind} model; '{verb}' needs a {' or '.join(kinds)} model")


def check_sampling(
    card: ModelCard, sampler: str | None, steps: int | None, preset: str = DEFAULT_PRESET
) -> tuple[str | None, int | None]:
    """The sampler and steps a request runs with (:func:`~.conditioning.resolve_sampler`); ``(None,
    None)`` for a model that renders in one network pass (no ``sampling`` section: the SPADE
    generator), which refuses a sampler or steps."""
    if card.sampling is not None:
        return resolve_sampler(card.sampling, card.scheduler, sampler, steps, preset)
    if sampler is not None or steps is not None:
        given = ", ".join(f"{k} {v!r}" for k, v in (("sampler", sampler), ("steps", steps)) if v is not None)
        raise ConditionError(
            f"{given}: {card.id} renders in one network pass (SPADE generator) and takes no sampler or steps"
        )
    return None, None


def check_seed(seed: Any) -> int | None:
    """A given seed as an int in 0–:data:`~.conditioning.MAX_SEED`; ``None`` stays ``None``."""
    return None if seed is None else whole_number("seed", seed, 0, MAX_SEED)


def resolve_seed(seed: Any) -> int:
    """A given seed is checked (:func:`check_seed`); ``None`` draws one, to be recorded in provenance."""
    return secrets.randbelow(2**31) if seed is None else check_seed(seed)


def resolve_sequence(card: ModelCard, name: Any) -> str:
    """The card's spelling of sequence ``name`` (any case; surrounding spaces ignored), e.g. ``flair``
    -> ``FLAIR``.

    Raises:
        ConditionError: ``sequence 'PD' is not one of T1, FLAIR, T2``.
    """
    names = card.sequences.names if card.sequences is not None else ()
    for known in names:
        if isinstance(name, str) and known.lower() == name.strip().lower():
            return known
    raise ConditionError(f"sequence {name!r} is not one of {', '.join(names) or 'none (the model takes no sequence)'}")


def lesion_classes(card: ModelCard) -> tuple[LabelClass, ...]:
    """The card's label classes that are lesions (:data:`~.schema.LESION_NAMES`), in the card's order."""
    return tuple(c for c in card.labels or () if c.name in LESION_NAMES)


def check_lesion_name(name: Any, label_names: tuple[str, ...]) -> str:
    """``name`` is a lesion class of a model with labels ``label_names``; returns it.

    Raises:
        ConditionError: ``lesion 'cyst' is not one of wmh, tumour, edema, gdtumour``.
    """
    if name not in LESION_NAMES or name not in label_names:
        raise ConditionError(f"lesion {name!r} is not one of {', '.join(n for n in LESION_NAMES if n in label_names)}")
    return name


#: What ``skull_stripped`` may say: the scan is brain only ("yes"), holds skull and neck ("no"), or
#: let the scan tell (:func:`SynthBrainLib.extraction.brain_mask.has_skull`).
SKULL_STRIPPED_CHOICES = ("auto", "yes", "no")


def check_skull_stripped(value) -> str:
    """``value`` as one of :data:`SKULL_STRIPPED_CHOICES` (``True``/``False`` read as yes/no).

    Raises:
        ConditionError: any other value.
    """
    if value is True or value is False:
        return "yes" if value else "no"
    if isinstance(value, str) and value.lower() in SKULL_STRIPPED_CHOICES:
        return value.lower()
    raise ConditionError(f"skull_stripped {value!r} is not one of {', '.join(SKULL_STRIPPED_CHOICES)}")
