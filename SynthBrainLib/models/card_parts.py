"""The parts of a model card, as the reader makes them (frozen dataclasses; no torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class WeightFile:
    """One checkpoint file of a model.

    Attributes:
        key: name the networks refer to (e.g. ``"diffusion"``).
        file: file name inside the model folder (e.g. ``"model.pt"``).
        sha256 / md5: expected checksums (lower-case hex) when known; verified on import and download.
        url: where ``synthbrain models download`` fetches it from, if anywhere.
        bundle_path: path inside a MONAI bundle folder (e.g. ``"models/model.pt"``).
        format: ``auto`` (detect), ``monai`` (current key layout), ``generative`` (old
            GenerativeModels layout, converted on load) or ``safetensors``.
        size_bytes: expected size, when known.
    """

    key: str
    file: str
    sha256: str | None = None
    md5: str | None = None
    url: str | None = None
    bundle_path: str | None = None
    format: str = "auto"
    size_bytes: int | None = None

    @property
    def has_checksum(self) -> bool:
        return bool(self.sha256 or self.md5)


@dataclass(frozen=True)
class NetworkSpec:
    """A network built from ``monai.networks.nets.<cls>(**kwargs)`` with weights ``weights``."""

    name: str
    cls: str
    kwargs: Mapping[str, Any]
    weights: str | None


@dataclass(frozen=True)
class ConditionVariable:
    """One conditioning variable.

    A continuous variable maps real units linearly: ``model = model_lo + (real - lo) / (hi - lo) *
    (model_hi - model_lo)``, or, with ``log_reference`` r, logarithmically: ``model = model_lo +
    ln(1 + (real - lo) / r) / ln(1 + (hi - lo) / r) * (model_hi - model_lo)`` (a lesion volume
    fraction: a value typical for the class, r, lands in the middle of the model's range however
    small the class is). A categorical one maps each choice to a model value. ``normalisation``
    says whether that mapping is ``published`` by the model's authors, ``assumed`` by us (the card's
    ``note`` says what is unknown), or ``defined`` by whoever trained the model (known exactly).
    """

    name: str
    label: str
    kind: str  # "continuous" | "categorical"
    unit: str
    default: float | str
    normalisation: str
    note: str = ""
    range: tuple[float, float] | None = None
    model_range: tuple[float, float] = (0.0, 1.0)
    choices: Mapping[str, float] | None = None
    typical_range: tuple[float, float] | None = None
    default_from: Mapping[str, Any] | None = None
    log_reference: float | None = None

    def to_model(self, real: float) -> float:
        """A continuous variable's model value for a real-unit value in its range."""
        lo, hi = self.range
        mlo, mhi = self.model_range
        if self.log_reference is None:
            share = (real - lo) / (hi - lo)
        else:
            share = math.log1p((real - lo) / self.log_reference) / math.log1p((hi - lo) / self.log_reference)
        return mlo + share * (mhi - mlo)

    def to_real(self, model: float) -> float:
        """The inverse of :meth:`to_model`."""
        lo, hi = self.range
        mlo, mhi = self.model_range
        share = (model - mlo) / (mhi - mlo)
        if self.log_reference is None:
            return lo + share * (hi - lo)
        return lo + self.log_reference * math.expm1(share * math.log1p((hi - lo) / self.log_reference))

    def typical_default(self, values: Mapping[str, float]) -> float | None:
        """The default given other variables, when the card has a ``default_from`` model.

        ``default_from = {"intercept": a, "coefficients": {"age": b, "sex": c}}`` gives
        ``a + b * age + c * sex`` (real units for continuous variables, model value for categorical
        ones), clipped to the range: e.g. the ventricular volume typical for an age.
        """
        if not self.default_from:
            return None
        value = float(self.default_from["intercept"])
        for name, coef in self.default_from["coefficients"].items():
            value += float(coef) * float(values[name])
        lo, hi = self.range
        return float(min(max(value, lo), hi))

    @property
    def option(self) -> str:
        """The CLI flag that sets this variable, e.g. ``--ventricular-volume``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Conditioning:
    """How the request enters the network: the variables (model units) and ``inputs``, a subset of
    ``concat`` (constant channels), ``crossattn`` (a one-token context) and ``presence``.

    ``presence``: which groups of variables the request asks for at all (a value above the
    variable's lowest model value) as one class label of the UNet's class embedding, which is added
    to the timestep embedding and so reaches every residual block: bit ``g`` for
    ``presence_groups[g]``, ``2 ** len(groups)`` for the null condition of guidance. The amounts
    still enter through ``concat`` / ``crossattn``.
    """

    variables: tuple[ConditionVariable, ...]
    inputs: tuple[str, ...]  # subset of CONDITIONING_INPUTS
    presence_groups: tuple[tuple[str, ...], ...] = ()

    def variable(self, name: str) -> ConditionVariable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def presence_null_class(self) -> int:
        """The class label of the null condition when ``presence`` is an input."""
        return 2 ** len(self.presence_groups)

    def asked(self, values) -> list[bool]:
        """Which of the model-unit ``values`` (in the card's variable order) a request asks for: those
        above their variable's lowest model value ("0 asks for none")."""
        return [value > v.model_range[0] for v, value in zip(self.variables, values)]

    def presence_class(self, values) -> int:
        """The ``presence`` class label of model-unit ``values`` (in the card's variable order):
        bit ``g`` set when any variable of group ``g`` is asked for (:meth:`asked`)."""
        columns = [[self.names.index(name) for name in group] for group in self.presence_groups]
        return presence_class_of(self.asked(values), columns)


def presence_class_of(asked: Sequence[bool], groups: Sequence[Sequence[int]]) -> int:
    """The class label of the ``presence`` input (training and sampling share it): bit ``g`` set when
    any column of ``groups[g]`` is ``asked`` for."""
    return sum(2**g for g, columns in enumerate(groups) if any(asked[i] for i in columns))


@dataclass(frozen=True)
class Scheduler:
    """The training noise schedule, as kwargs of the published ``monai.networks.schedulers`` class."""

    cls: str
    kwargs: Mapping[str, Any]
    objective: str  # key of TRAINING_OBJECTIVES


@dataclass(frozen=True)
class NegativeCondition:
    """A condition that guided sampling steers away from whenever the request asks for none of it:
    ``values`` (real units, by variable name) replace the request's values of those variables, and
    every step adds ``scale * (cond - negative)`` to the guided prediction (negative prompting).

    Why: a label generator asked for WMH alone made small tumours too, because guidance amplifies
    "lesion" in general; pushing away from "the same request plus a typical tumour" removes them
    (issue 23). Applied only when every variable in ``values`` is at its lowest value in the request,
    so it never fights what was asked for, and the request asks for something else."""

    values: Mapping[str, float]
    scale: float


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance (Ho & Salimans 2022) of a model trained with condition dropout.

    At each step the network sees the conditions and the **null condition**; the prediction is
    ``uncond + scale * (cond - uncond)``. ``scale`` 1 is plain conditional sampling. ``null``:

    * ``all``: every conditioning value replaced by ``null_value`` (what training fed with
      probability ``condition_dropout``);
    * ``requested``: only the conditions the request asks for (a value above the variable's lowest
      model value) are replaced; the others - "none of this lesion" - stay as they are in both
      predictions, so guidance pushes towards what was asked and never towards lesions in general.
      It needs a model trained with each condition also dropped on its own
      (``single_condition_dropout``).
    """

    default: float
    minimum: float
    maximum: float
    null_value: float
    #: ``None``: the model's publisher does not say.
    condition_dropout: float | None
    null: str = "all"
    single_condition_dropout: float = 0.0
    #: Conditions steered away from when not asked for (only while guiding: scale != 1).
    negatives: tuple[NegativeCondition, ...] = ()


@dataclass(frozen=True)
class Sampling:
    default_sampler: str
    default_steps: int
    samplers: tuple[str, ...]
    max_steps: int
    #: ``None``: not trained for classifier-free guidance (a scale other than 1 is refused).
    guidance: Guidance | None = None


@dataclass(frozen=True)
class Latent:
    shape: tuple[int, ...]  # (C, X, Y, Z)
    scale_factor: float


@dataclass(frozen=True)
class OutputGeometry:
    """Voxel grid of the model's output: arrays are indexed [i, j, k], ``affine`` maps them to RAS mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    intensity_range: tuple[float, float]
    modality: str
    geometry_published: bool
    note: str = ""


@dataclass(frozen=True)
class LabelClass:
    value: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Template:
    """The label map of the template the model was trained around, on the model's output grid
    (``labels``: uint8, the card's label values), stored in weight ``weights``. Lesion insertion
    registers it to a patient's scan to carry its tissue classes across."""

    weights: str


@dataclass(frozen=True)
class Sequences:
    """Label-to-image models: the MR sequences they render and how a sequence is chosen.

    ``mode`` is ``style_codes`` (a style latent drawn from per-sequence statistics stored in weight
    ``weights``; SPADENet as in brainSPADE) or ``class_label`` (the sequence index is passed as the
    diffusion UNet's ``class_labels``).

    ``label_channels``: the sequence also enters as one-hot channels appended to the label map
    (the SPADE normalisation then depends on class *and* sequence; the network's ``label_nc`` is
    the number of classes plus the number of sequences).
    """

    names: tuple[str, ...]
    mode: str
    weights: str | None
    label_channels: bool = False
