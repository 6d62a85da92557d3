"""The request of a model that makes an MR image of a chosen modality on a chosen grid
(``card.kind`` ``modality_image``, e.g. NV-Generate-MR-Brain): the card's ``modalities`` and
``geometry`` sections, and one request (modality, skull-stripped or whole head, size, spacing)
checked against them.

Plain Python (no numpy, no torch): the command line and the Slicer panel refuse a bad modality, a
size that is not a multiple of the network's stride or a spacing out of range before torch is
imported.

Card sections::

    "modalities": {
      "choices": [{"name": "FLAIR", "skull_stripped": true, "code": 31, "label": "..."}, ...],
      "default": {"name": "T1w", "skull_stripped": false},
      "null_code": 0
    },
    "geometry": {
      "size_multiple": 32, "min_size": [64, 64, 64], "max_size": [512, 512, 256],
      "spacing_range": [0.4, 5.0],
      "default_size": [256, 256, 128], "default_spacing": [0.94, 0.94, 1.36]
    }
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConditionError
from .card_fields import FieldReader, shown


@dataclass(frozen=True)
class Modality:
    """One modality a model makes: its name (``FLAIR``), whole head or skull-stripped, the class code
    the network takes, and how faces label it."""

    name: str
    skull_stripped: bool
    code: int
    label: str

    @property
    def key(self) -> str:
        """``FLAIR`` or ``FLAIR skull-stripped``: one string per choice (the panel's selector)."""
        return f"{self.name} skull-stripped" if self.skull_stripped else self.name


@dataclass(frozen=True)
class Modalities:
    """A card's ``modalities`` section."""

    choices: tuple[Modality, ...]
    default: Modality
    null_code: int

    @property
    def names(self) -> tuple[str, ...]:
        """Modality names, each once, in the card's order."""
        return tuple(dict.fromkeys(m.name for m in self.choices))


@dataclass(frozen=True)
class Geometry:
    """A card's ``geometry`` section: the grids a request may ask for."""

    size_multiple: int
    min_size: tuple[int, int, int]
    max_size: tuple[int, int, int]
    spacing_range: tuple[float, float]
    default_size: tuple[int, int, int]
    default_spacing: tuple[float, float, float]


@dataclass(frozen=True)
class ImageRequest:
    """What :func:`resolve_image_request` resolved: the modality and the output grid."""

    modality: Modality
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def record(self) -> dict[str, Any]:
        """As provenance records it."""
        return {
            "modality": self.modality.name,
            "skull_stripped": self.modality.skull_stripped,
            "modality_code": self.modality.code,
            "size": list(self.size),
            "spacing_mm": list(self.spacing),
        }


# ----------------------------------------------------------------------------------------------
# Card sections
# ----------------------------------------------------------------------------------------------
def parse_modalities(card_id: str, data: Any) -> Modalities:
    """The ``modalities`` section of a card's JSON ``data``; :class:`CardError` naming the field."""
    f = FieldReader(data, "", card_id)
    s = f.obj("modalities")
    choices = []
    for m in s.objects("choices"):
        name = m.str("name")
        choice = Modality(
            name=name,
            skull_stripped=m.boolean("skull_stripped"),
            code=m.integer("code", minimum=0),
            label=m.str("label", required=False, default=name),
        )
        if any(c.key == choice.key for c in choices):
            m.fail("name", f"{shown(choice.key)} is listed twice")
        choices.append(choice)
    if not choices:
        s.fail("choices", "must list at least one modality")
    null_code = s.integer("null_code", minimum=0)
    if any(c.code == null_code for c in choices):
        s.fail("null_code", f"{null_code} is also a modality's code")
    d = s.obj("default")
    default_name, default_stripped = d.str("name"), d.boolean("skull_stripped")
    default = next((c for c in choices if c.name == default_name and c.skull_stripped == default_stripped), None)
    if default is None:
        d.fail("name", f"{shown(default_name)} (skull_stripped {default_stripped}) is not one of the choices")
    return Modalities(tuple(choices), default, null_code)


def parse_geometry(card_id: str, data: Any) -> Geometry:
    """The ``geometry`` section of a card's JSON ``data``; :class:`CardError` naming the field."""
    f = FieldReader(data, "", card_id)
    g = f.obj("geometry")
    multiple = g.integer("size_multiple", minimum=1)
    lo = g.numbers("min_size", length=3, positive=True, integer=True)
    hi = g.numbers("max_size", length=3, positive=True, integer=True)
    spacing_range = g.numbers("spacing_range", length=2, positive=True)
    size = g.numbers("default_size", length=3, positive=True, integer=True)
    spacing = g.numbers("default_spacing", length=3, positive=True)
    for key, values in (("min_size", lo), ("max_size", hi), ("default_size", size)):
        if any(v % multiple for v in values):
            g.fail(key, f"must be multiples of size_multiple {multiple}, got {list(values)}")
    if any(a > b for a, b in zip(lo, hi)):
        g.fail("max_size", f"must be at least min_size {list(lo)}, got {list(hi)}")
    if not spacing_range[0] < spacing_range[1]:
        g.fail("spacing_range", f"must be increasing, got {list(spacing_range)}")
    geometry = Geometry(multiple, lo, hi, spacing_range, size, spacing)
    try:
        check_size(geometry, size)
        check_spacing(geometry, spacing)
    except ConditionError as exc:
        g.fail("default_size", f"is not a request the section allows: {exc}")
    return geometry


# ----------------------------------------------------------------------------------------------
# One request
# ----------------------------------------------------------------------------------------------
def resolve_modality(modalities: Modalities, name: Any = None, skull_stripped: Any = None) -> Modality:
    """The modality ``name`` (any case; ``None``: the card's default) whole-head or skull-stripped
    (``None``: as the default).

    Raises:
        ConditionError: ``modality 'PD' is not one of T1w, T2w, FLAIR, SWI, MRA``.
    """
    if skull_stripped is not None and not isinstance(skull_stripped, bool):
        raise ConditionError(f"skull_stripped {skull_stripped!r} is not True or False")
    if name is None:
        name = modalities.default.name
    if not isinstance(name, str):
        raise ConditionError(f"modality {name!r} is not one of {', '.join(modalities.names)}")
    wanted = name.strip().lower()
    stripped = modalities.default.skull_stripped if skull_stripped is None else skull_stripped
    known = [m for m in modalities.choices if m.name.lower() == wanted]
    if not known:
        raise ConditionError(f"modality {name!r} is not one of {', '.join(modalities.names)}")
    match = next((m for m in known if m.skull_stripped == stripped), None)
    if match is None:
        raise ConditionError(
            f"modality {known[0].name} is not available {'skull-stripped' if stripped else 'with the whole head'}"
        )
    return match


def _three(what: str, value: Any, parse) -> tuple:
    """Three values from a sequence or from text ``"256,256,128"`` / ``"256x256x128"``."""
    items = value
    if isinstance(value, str):
        items = [v for v in value.replace("x", ",").replace(" ", ",").split(",") if v]
    try:
        if isinstance(items, (str, bytes)) or len(items) != 3:
            raise TypeError
        return tuple(parse(v) for v in items)
    except (TypeError, ValueError):
        raise ConditionError(f"{what} {value!r} is not three numbers (x, y, z)") from None


def _whole(v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError
    if isinstance(v, str):
        v = v.strip()
        if not v.isdigit():
            raise ValueError
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int) or type(v).__name__ in ("int64", "int32", "int16"):
        return int(v)
    raise TypeError


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise TypeError
    value = float(v.strip() if isinstance(v, str) else v)
    if not math.isfinite(value):
        raise ValueError
    return value


def check_size(geometry: Geometry, size: Any) -> tuple[int, int, int]:
    """The output size in voxels: three whole numbers, multiples of the network's stride, within
    the card's minimum and maximum.

    Raises:
        ConditionError: e.g. ``size 250 x 256 x 128: 250 is not a multiple of 32 (the network halves the
            grid 5 times)``.
    """
    values = _three("size", size, _whole)
    shown_size = " x ".join(str(v) for v in values)
    for v in values:
        if v % geometry.size_multiple:
            raise ConditionError(
                f"size {shown_size}: {v} is not a multiple of {geometry.size_multiple} (what the network accepts)"
            )
    for v, lo, hi in zip(values, geometry.min_size, geometry.max_size):
        if not lo <= v <= hi:
            allowed = " x ".join(f"{a}-{b}" for a, b in zip(geometry.min_size, geometry.max_size))
            raise ConditionError(f"size {shown_size} is outside {allowed}")
    return values


def check_spacing(geometry: Geometry, spacing: Any) -> tuple[float, float, float]:
    """The voxel spacing in mm: three numbers within the card's range.

    Raises:
        ConditionError: ``spacing 0.2 x 1 x 1 mm is outside 0.4-5 mm``.
    """
    values = _three("spacing", spacing, _number)
    lo, hi = geometry.spacing_range
    if not all(lo <= v <= hi for v in values):
        shown_spacing = " x ".join(f"{v:g}" for v in values)
        raise ConditionError(f"spacing {shown_spacing} mm is outside {lo:g}-{hi:g} mm")
    return values


def resolve_image_request(
    modalities: Modalities,
    geometry: Geometry,
    *,
    modality: Any = None,
    skull_stripped: Any = None,
    size: Sequence[int] | str | None = None,
    spacing: Sequence[float] | str | None = None,
) -> ImageRequest:
    """One request's modality and grid, defaults from the card where not given."""
    return ImageRequest(
        modality=resolve_modality(modalities, modality, skull_stripped),
        size=check_size(geometry, geometry.default_size if size is None else size),
        spacing=check_spacing(geometry, geometry.default_spacing if spacing is None else spacing),
    )
