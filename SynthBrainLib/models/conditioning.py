"""A request checked against its card, without torch: conditioning values from real-world units
(years, mL, female/male) to the model's input units and back, the sampler and its steps, and whole
numbers such as seeds. The command line runs these checks before importing torch, so a bad
argument is answered at once.

A card's :class:`~SynthBrainLib.models.cards.ConditionVariable` says how each variable maps. Users give real
units; where the published normalisation is unknown (the card says ``normalisation: assumed``) they
may instead give the model's own value ("raw", usually 0–1), which is passed through unchanged.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import ConditionError
from .cards import Conditioning, ConditionVariable, Sampling, Scheduler
from .presets import DEFAULT_PRESET, check_preset, preset_sampling
from .samplers import MIN_STEPS, SAMPLER_CLASSES, TRAINING_OBJECTIVES

#: Seeds are whole numbers from 0 to this (torch generators take 64-bit seeds).
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ConditionValues:
    """Resolved conditions of one call.

    Attributes:
        real: value of each variable in real units (a choice name for categorical variables; for a
            raw value between two categories, the nearest choice).
        model: value of each variable in model units, in the card's variable order.
        given_as: ``"real"``, ``"raw"`` or ``"default"`` for each variable.
    """

    real: dict[str, float | str]
    model: dict[str, float]
    given_as: dict[str, str] = field(default_factory=dict)

    def vector(self) -> list[float]:
        """Model-unit values in the card's order (the tensor the network receives)."""
        return list(self.model.values())

    def describe(self, conditioning: Conditioning) -> str:
        """Short human-readable text, e.g. ``age 70 years, sex female``."""
        parts = []
        for v in conditioning.variables:
            value = self.real[v.name]
            if isinstance(value, str):
                parts.append(f"{v.name} {value}")
            else:
                parts.append(f"{v.name} {value:g}{(' ' + v.unit) if v.unit and v.unit != 'fraction' else ''}")
        return ", ".join(parts)


def _fmt_range(v: ConditionVariable) -> str:
    lo, hi = v.range
    return f"{lo:g}–{hi:g}" + (f" {v.unit}" if v.unit else "")


def _number(name: str, value: Any, what: str = "") -> float:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    if isinstance(value, bool):
        raise ConditionError(f"{name}{what} {shown} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConditionError(f"{name}{what} {shown} is not a number") from None
    except OverflowError:
        raise ConditionError(f"{name}{what} {shown} is not a finite number") from None
    if not math.isfinite(number):
        raise ConditionError(f"{name}{what} {shown} is not a finite number")
    return number


def real_to_model(v: ConditionVariable, value: Any) -> tuple[float | str, float]:
    """Validate a real-unit value; return (normalised real value, model value)."""
    if v.kind == "categorical":
        if not isinstance(value, str):
            raise ConditionError(f"{v.name} {value!r} is not one of {', '.join(v.choices)}")
        key = value.strip().lower()
        if key not in v.choices:
            raise ConditionError(f"{v.name} {value!r} is not one of {', '.join(v.choices)}")
        return key, float(v.choices[key])
    number = _number(v.name, value)
    lo, hi = v.range
    if not lo <= number <= hi:
        raise ConditionError(f"{v.name} {number:g} is outside {_fmt_range(v)}")
    return number, v.to_model(number)


def model_to_real(v: ConditionVariable, model_value: float) -> float | str:
    """Inverse mapping (for reporting a raw value in real units)."""
    if v.kind == "categorical":
        return min(v.choices, key=lambda k: abs(v.choices[k] - model_value))
    return v.to_real(model_value)


def resolve_conditions(
    conditioning: Conditioning,
    values: Mapping[str, Any] | None = None,
    raw: Mapping[str, Any] | None = None,
) -> ConditionValues:
    """Check and convert one call's conditions.

    Args:
        conditioning: the card's conditioning section.
        values: real-unit values by variable name; ``None`` entries mean "use the default".
        raw: model-unit values by variable name, for variables whose published normalisation is
            unknown or for reproducing a bundle's own numbers.

    Raises:
        ConditionError: unknown name, a variable given twice, a value that is not a number, or a
            value outside the card's range (the message names the value and the range).
    """
    if raw is not None and not isinstance(raw, Mapping):
        raise ConditionError(
            f"raw {raw!r} is not a mapping of condition names to model values, e.g. raw={{'brain_volume': 0.4}}"
        )
    values = {k: v for k, v in (values or {}).items() if v is not None}
    raw = {k: v for k, v in (raw or {}).items() if v is not None}
    known = conditioning.names
    for name in list(values) + list(raw):
        if name not in known:
            allowed = ", ".join(known) if known else "none"
            raise ConditionError(f"unknown condition {name!r}; this model takes: {allowed}")
    for name in values:
        if name in raw:
            raise ConditionError(f"{name} was given both in real units and as a raw model value; give one")

    real: dict[str, float | str] = {}
    model: dict[str, float] = {}
    given: dict[str, str] = {}
    # Variables whose default depends on others (default_from) are resolved after those others.
    ordered = sorted(
        conditioning.variables, key=lambda v: v.default_from is not None and v.name not in values and v.name not in raw
    )
    for v in ordered:
        if v.name in raw:
            number = _number(v.name, raw[v.name], " (model units)")
            mlo, mhi = v.model_range
            if not mlo <= number <= mhi:
                raise ConditionError(f"{v.name} (model units) {number:g} is outside {mlo:g}–{mhi:g}")
            model[v.name] = number
            real[v.name] = model_to_real(v, number)
            given[v.name] = "raw"
        elif v.name in values:
            real[v.name], model[v.name] = real_to_model(v, values[v.name])
            given[v.name] = "real"
        elif v.default_from:
            inputs = {n: (model[n] if isinstance(real[n], str) else real[n]) for n in v.default_from["coefficients"]}
            real[v.name], model[v.name] = real_to_model(v, v.typical_default(inputs))
            given[v.name] = "default for " + ", ".join(
                f"{n} {real[n] if isinstance(real[n], str) else format(real[n], 'g')}" for n in inputs
            )
        else:
            real[v.name], model[v.name] = real_to_model(v, v.default)
            given[v.name] = "default"
    order = [v.name for v in conditioning.variables]
    return ConditionValues(
        real={n: real[n] for n in order}, model={n: model[n] for n in order}, given_as={n: given[n] for n in order}
    )


def whole_number(name: str, value: Any, lo: int, hi: int, suffix: str = "") -> int:
    """``value`` as a Python int in [lo, hi]; numpy integers are accepted, floats and bools are not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ConditionError(f"{name} {value!r} is not a whole number; allowed: {lo}–{hi}{suffix}")
    if not lo <= int(value) <= hi:
        raise ConditionError(f"{name} {int(value)} is outside {lo}–{hi}{suffix}")
    return int(value)


def resolve_sampler(
    sampling: Sampling, scheduler: Scheduler, sampler: str | None, steps: int | None, preset: str = DEFAULT_PRESET
) -> tuple[str, int]:
    """Validate a sampler name and step count against the card; fill in the ``preset``'s defaults
    (:mod:`.presets`): its sampler and steps where the card lists that sampler, else the card's.
    Steps of a sampler the user named are the preset's only for the preset's own sampler."""
    if sampler is not None and not isinstance(sampler, str):
        raise ConditionError(f"sampler {sampler!r} is not one of {', '.join(SAMPLER_CLASSES)}")
    default_sampler, default_steps = preset_sampling(
        check_preset(preset), sampling.samplers, sampling.default_sampler, sampling.default_steps
    )
    name = (default_sampler if sampler is None else sampler).lower()
    if name not in SAMPLER_CLASSES:
        raise ConditionError(f"sampler {sampler!r} is not one of {', '.join(SAMPLER_CLASSES)}")
    if name not in sampling.samplers:
        why = (
            f"it was trained with the {scheduler.objective} objective"
            if name not in TRAINING_OBJECTIVES[scheduler.objective]
            else "its card does not list it"
        )
        raise ConditionError(
            f"sampler {name!r} does not fit this model ({why}); use one of {', '.join(sampling.samplers)}"
        )
    n = steps if steps is not None else default_steps if name == default_sampler else sampling.default_steps
    lo = MIN_STEPS[name]
    return name, whole_number("steps", n, lo, sampling.max_steps, f" for the {name} sampler" if lo > 1 else "")


def resolve_guidance(card_id: str, sampling: Sampling | None, guidance: Any) -> float:
    """The classifier-free guidance scale of a request: ``None`` gives the card's default (1, i.e.
    none, for a model not trained with condition dropout); a given scale must be within the card's
    range, and a model without guidance training takes only 1."""
    spec = sampling.guidance if sampling is not None else None
    if guidance is None:
        return spec.default if spec is not None else 1.0
    if isinstance(guidance, (bool, np.bool_)) or not isinstance(guidance, numbers.Real) or not math.isfinite(guidance):
        raise ConditionError(f"guidance {guidance!r} is not a number")
    value = float(guidance)
    if spec is None:
        if value != 1.0:
            raise ConditionError(
                f"guidance {value:g}: model {card_id} was not trained with condition dropout, so it has no "
                "classifier-free guidance; leave guidance at 1"
            )
        return 1.0
    if not spec.minimum <= value <= spec.maximum:
        raise ConditionError(f"guidance {value:g} is outside {spec.minimum:g}–{spec.maximum:g} for model {card_id}")
    return value
