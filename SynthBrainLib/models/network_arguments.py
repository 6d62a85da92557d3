"""A card's network arguments checked against their MONAI classes' signatures.

Not part of reading a card: it imports MONAI (seconds), and reading cards must stay quick (the
command line's argument checks, the Slicer module's model list).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping

from .card_fields import FieldReader, shown
from .card_parts import NetworkSpec


def check_network_arguments(card_id: str, networks: Mapping[str, NetworkSpec]) -> None:
    """Each network's kwargs (``networks``: a card's, by name) against its MONAI class's signature:
    no unknown argument, every required one, value types of numeric and boolean defaults, sizes
    within :data:`MAX_NETWORK_INT`.

    Not part of reading a card: it imports MONAI (seconds), and reading cards must stay quick (the
    command line's argument checks, the Slicer module's model list). Runs before any network is
    built: in every pipeline's card check and in the store's import check.

    Raises:
        CardError: naming the field, e.g. ``networks.diffusion.kwargs.hidden``.
    """
    for name, spec in networks.items():
        _check_kwargs(FieldReader({"kwargs": spec.kwargs}, f"networks.{name}", card_id), spec.cls, spec.kwargs)


def network_class_path(cls_name: str) -> str:
    """Where the network class is imported from, as errors name it (``monai.networks.nets.AutoencoderKL``)."""
    from .card_sections import NETWORK_MODULES

    return f"{NETWORK_MODULES.get(cls_name, 'monai.networks.nets')}.{cls_name}"


def monai_network_class(cls_name: str) -> type:
    """The MONAI class of an allowed network name (:data:`~.card_sections.NETWORK_CLASSES`): from
    ``monai.networks.nets``, or the module :data:`~.card_sections.NETWORK_MODULES` names. Only names on
    the allow-list are looked up, so a card cannot reach any other code."""
    import importlib

    from .card_sections import NETWORK_CLASSES, NETWORK_MODULES

    if cls_name not in NETWORK_CLASSES:
        raise ValueError(f"network class {cls_name!r} is not one of {', '.join(NETWORK_CLASSES)}")
    # deferred: importing monai takes seconds (see check_network_arguments)
    return getattr(importlib.import_module(NETWORK_MODULES.get(cls_name, "monai.networks.nets")), cls_name)


def _check_kwargs(n: FieldReader, cls_name: str, kwargs: Mapping[str, Any]) -> None:
    params = inspect.signature(monai_network_class(cls_name).__init__).parameters
    kw_fields = FieldReader(kwargs, f"{n.path}.kwargs", n.card_id)
    for key in kwargs:
        if key not in params or key == "self":
            kw_fields.fail(key, f"is not an argument of {network_class_path(cls_name)}")
    for pname, p in params.items():
        if pname == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty and pname not in kwargs:
            kw_fields.fail(pname, f"is required by {network_class_path(cls_name)}")
        if pname in kwargs:
            _check_kwarg_value(kw_fields, pname, kwargs[pname], p.default)


def _whole_numbers(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_whole_numbers(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


#: Largest integer a network argument may hold (channels, head sizes, ...); real models use < 2048.
MAX_NETWORK_INT = 8192


def _check_kwarg_value(k: "FieldReader", name: str, value: Any, default: Any) -> None:
    """Values a MONAI constructor would only reject late (after building or sampling) are refused
    here: the type of a numeric or boolean default (``norm_eps`` must be a number, not text), and
    integers beyond what any real network uses (a huge ``channels`` would exhaust memory)."""

    def ints(v):
        if isinstance(v, bool):
            return []
        if isinstance(v, int):
            return [v]
        if isinstance(v, (list, tuple)):
            return [x for item in v for x in ints(item)]
        return []

    if isinstance(default, bool) and not isinstance(value, bool):
        k.fail(name, f"must be true or false, got {shown(value)}")
    elif isinstance(default, float) and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        k.fail(name, f"must be a number, got {shown(value)}")
    elif isinstance(default, int) and not isinstance(default, bool) and not _whole_numbers(value):
        k.fail(name, f"must be a whole number (or a list of them), got {shown(value)}")
    if any(abs(x) > MAX_NETWORK_INT for x in ints(value)):
        k.fail(name, f"holds {max(ints(value), key=abs)}, beyond {MAX_NETWORK_INT} (no real network is that large)")
