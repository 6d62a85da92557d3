"""Model cards: one JSON file that fully describes a generative model.

A card names the MONAI networks (class from :mod:`monai.networks.nets` and constructor kwargs), the
noise schedule and the default sampler, the latent shape and scale factor, the conditioning variables
(real-world unit and range, and how they map to the model's input), the output geometry, the label
schema, the weight files with their checksums, and the licence and citation.

Cards are validated when loaded: a malformed card raises :class:`~SynthBrainLib.errors.CardError`
naming the card and the field, e.g. ``card brain-ldm: field 'output.spacing' must be 3 positive
numbers, got [1, 1]``. Nothing in a card is executed: network classes are looked up in a fixed
allow-list and kwargs are checked against the class signature.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import CardError

# The sampler registry lives in .samplers (no numpy: the command line lists it in --help); re-exported.
from .samplers import SAMPLER_CLASSES, SAMPLERS, TRAINING_OBJECTIVES, SamplerSpec  # noqa: F401

CARD_SCHEMA_VERSION = 1

#: Network classes a card may name. Only these are ever instantiated (no arbitrary imports).
NETWORK_CLASSES = (
    "AutoencoderKL",
    "DiffusionModelUNet",
    "SPADEAutoencoderKL",
    "SPADEDiffusionModelUNet",
    "SPADENet",
)


CONDITIONING_INPUTS = ("concat", "crossattn")
WEIGHT_FORMATS = ("auto", "monai", "generative", "safetensors")
NORMALISATION_STATUS = ("published", "assumed", "defined")

_HEX = re.compile(r"^[0-9a-f]+$")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: A card's ``kind`` names the pipeline class that runs it; the rules that depend on the kind (which
#: sections and networks it needs) are that class's ``check_card`` (SynthBrainLib.pipelines), so the
#: reader stays torch-free and a new kind is one pipeline class.
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


# ----------------------------------------------------------------------------------------------
# Field reader: every access names its field in the error.
# ----------------------------------------------------------------------------------------------
class _Fields:
    """Reads typed fields from a JSON object; errors name ``card <id>: field '<path>'``."""

    def __init__(self, data: Any, path: str, card_id: str) -> None:
        self.card_id = card_id
        self.path = path
        if not isinstance(data, dict):
            self.fail("", f"must be an object, got {_short(data)}")
        self.data: dict = data

    def fail(self, key: str, message: str) -> None:
        where = ".".join(p for p in (self.path, key) if p)
        raise CardError(f"card {self.card_id}: field '{where}' {message}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def _get(self, key: str, required: bool, default: Any) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail(key, "is required")
            return default
        return self.data[key]

    def str(
        self, key: str, required: bool = True, default: str | None = None, choices: Iterable[str] | None = None
    ) -> str | None:
        if self.data.get(key) is None:
            return self._get(key, required, default)
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {_short(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {_short(value)}")
        return value

    def number(
        self, key: str, required: bool = True, default: float | None = None, positive: bool = False
    ) -> float | None:
        value = self._get(key, required, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {_short(value)}")
        if positive and value <= 0:
            self.fail(key, f"must be positive, got {_short(value)}")
        return float(value)

    def integer(
        self, key: str, required: bool = True, default: int | None = None, minimum: int | None = None
    ) -> int | None:
        value = self._get(key, required, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {_short(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, required: bool = True, default: bool | None = None) -> bool | None:
        value = self._get(key, required, default)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_short(value)}")
        return value

    def numbers(
        self, key: str, length: int | None = None, positive: bool = False, integer: bool = False, required: bool = True
    ) -> tuple | None:
        value = self._get(key, required, None)
        if value is None:
            return None
        what = f"{length} " if length else ""
        kind = "positive " if positive else ""
        kind += "integers" if integer else "numbers"
        ok = isinstance(value, list) and (length is None or len(value) == length) and len(value) > 0
        if ok:
            for v in value:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    ok = False
                elif integer and not isinstance(v, int):
                    ok = False
                elif positive and v <= 0:
                    ok = False
        if not ok:
            self.fail(key, f"must be a list of {what}{kind}, got {_short(value)}")
        return tuple(int(v) if integer else float(v) for v in value)

    def obj(self, key: str, required: bool = True) -> "_Fields | None":
        value = self._get(key, required, None)
        if value is None:
            return None
        return _Fields(value, ".".join(p for p in (self.path, key) if p), self.card_id)

    def objects(self, key: str, required: bool = True) -> list["_Fields"]:
        value = self._get(key, required, [])
        if not isinstance(value, list):
            self.fail(key, f"must be a list of objects, got {_short(value)}")
        base = ".".join(p for p in (self.path, key) if p)
        return [_Fields(v, f"{base}[{i}]", self.card_id) for i, v in enumerate(value)]

    def mapping(self, key: str, required: bool = True) -> dict | None:
        value = self._get(key, required, None)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"must be an object, got {_short(value)}")
        return value


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------------------------
# Card parts
# ----------------------------------------------------------------------------------------------
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
    (model_hi - model_lo)``. A categorical one maps each choice to a model value. ``normalisation``
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
    variables: tuple[ConditionVariable, ...]
    inputs: tuple[str, ...]  # subset of CONDITIONING_INPUTS

    def variable(self, name: str) -> ConditionVariable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)


@dataclass(frozen=True)
class Scheduler:
    """The training noise schedule, as kwargs of the published ``monai.networks.schedulers`` class."""

    cls: str
    kwargs: Mapping[str, Any]
    objective: str  # key of TRAINING_OBJECTIVES


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance (Ho & Salimans 2022) of a model trained with condition dropout.

    At each step the network sees the conditions and the **null condition** (every conditioning
    value replaced by ``null_value``, what training fed with probability ``condition_dropout``);
    the prediction is ``uncond + scale * (cond - uncond)``. ``scale`` 1 is plain conditional sampling.
    """

    default: float
    minimum: float
    maximum: float
    null_value: float
    condition_dropout: float


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


@dataclass(frozen=True)
class ModelCard:
    """A validated model card. Build with :func:`load_card` or :meth:`from_dict`."""

    id: str
    name: str
    version: str
    kind: str
    description: str
    licence: str
    citation: str
    intended_use: str
    source: Mapping[str, Any]
    networks: Mapping[str, NetworkSpec]
    weights: Mapping[str, WeightFile]
    scheduler: Scheduler | None
    sampling: Sampling | None
    latent: Latent | None
    conditioning: Conditioning
    output: OutputGeometry
    labels: tuple[LabelClass, ...] | None
    sequences: Sequences | None
    template: Template | None
    weights_public: bool
    data: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> "ModelCard":
        card_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else "<unnamed>"
        f = _Fields(data, "", card_id)
        version = f.integer("schema_version")
        if version != CARD_SCHEMA_VERSION:
            f.fail("schema_version", f"must be {CARD_SCHEMA_VERSION}, got {version}")
        model_id = f.str("id")
        if not _ID.match(model_id):
            f.fail("id", f"must be lower-case letters, digits, '.', '_' or '-', got {_short(model_id)}")
        kind = f.str("kind")
        if not _KIND.match(kind):
            f.fail("kind", f"must be a pipeline kind name (lower-case letters and '_'), got {_short(kind)}")

        weights = _parse_weights(f)
        networks = _parse_networks(f, weights)
        scheduler = _parse_scheduler(f) if f.has("scheduler") else None
        sampling = _parse_sampling(f, scheduler) if f.has("sampling") else None
        latent = _parse_latent(f) if f.has("latent") else None
        conditioning = _parse_conditioning(f)
        output = _parse_output(f)
        labels = _parse_labels(f) if f.has("labels") else None
        sequences = _parse_sequences(f, weights) if f.has("sequences") else None
        template = _parse_template(f, weights) if f.has("template") else None

        card = cls(
            id=model_id,
            name=f.str("name"),
            version=f.str("version"),
            kind=kind,
            description=f.str("description"),
            licence=f.str("licence"),
            citation=f.str("citation"),
            intended_use=f.str("intended_use"),
            source=f.mapping("source"),
            networks=networks,
            weights=weights,
            scheduler=scheduler,
            sampling=sampling,
            latent=latent,
            conditioning=conditioning,
            output=output,
            labels=labels,
            sequences=sequences,
            template=template,
            weights_public=f.boolean("weights_public"),
            data=json.loads(json.dumps(data)),
            path=path,
        )
        return card

    # ---- helpers -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The card as JSON data (what was loaded)."""
        return json.loads(json.dumps(self.data))

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.labels) if self.labels else ()


# ----------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------
def _printable(text: str) -> bool:
    """No control characters (NUL, newlines, escapes): they cut or fake file names and log lines."""
    return all(ch.isprintable() for ch in text)


def _parse_weights(f: _Fields) -> dict[str, WeightFile]:
    section = f.obj("weights")
    out: dict[str, WeightFile] = {}
    for key in section.data:
        w = section.obj(key)
        file = w.str("file")
        if "/" in file or "\\" in file or file.startswith(".") or not _printable(file) or len(file) > 200:
            w.fail("file", f"must be a plain file name (printable, at most 200 characters), got {_short(file)}")
        bundle_path = w.str("bundle_path", required=False)
        if bundle_path is not None and (
            bundle_path.startswith(("/", "\\"))
            or ".." in bundle_path.replace("\\", "/").split("/")
            or ":" in bundle_path
            or not _printable(bundle_path)
        ):
            w.fail("bundle_path", f"must be a relative path inside the bundle, got {_short(bundle_path)}")
        sha256 = w.str("sha256", required=False)
        md5 = w.str("md5", required=False)
        if sha256 is not None and (len(sha256) != 64 or not _HEX.match(sha256)):
            w.fail("sha256", f"must be 64 lower-case hex digits, got {_short(sha256)}")
        if md5 is not None and (len(md5) != 32 or not _HEX.match(md5)):
            w.fail("md5", f"must be 32 lower-case hex digits, got {_short(md5)}")
        url = w.str("url", required=False)
        if url is not None and not url.startswith(("http://", "https://")):
            w.fail("url", f"must be an http(s) URL, got {_short(url)}")
        out[key] = WeightFile(
            key=key,
            file=file,
            sha256=sha256,
            md5=md5,
            url=url,
            bundle_path=bundle_path,
            format=w.str("format", required=False, default="auto", choices=WEIGHT_FORMATS),
            size_bytes=w.integer("size_bytes", required=False, minimum=1),
        )
    files = [w.file for w in out.values()]
    if len(set(files)) != len(files):
        f.fail("weights", "names the same file twice")
    return out


def _parse_networks(f: _Fields, weights: Mapping[str, WeightFile]) -> dict[str, NetworkSpec]:
    section = f.obj("networks")
    if not section.data:
        section.fail("", "must name at least one network")
    out = {}
    for name in section.data:
        n = section.obj(name)
        cls_name = n.str("class", choices=NETWORK_CLASSES)
        kwargs = n.mapping("kwargs")
        weight_key = n.str("weights", required=False)
        if weight_key is not None and weight_key not in weights:
            n.fail("weights", f"names {_short(weight_key)}, which is not in 'weights' ({', '.join(weights) or 'none'})")
        out[name] = NetworkSpec(name=name, cls=cls_name, kwargs=dict(kwargs), weights=weight_key)
    return out


def check_network_arguments(card: "ModelCard") -> None:
    """Each network's kwargs against its MONAI class's signature: no unknown argument, every
    required one, value types of numeric and boolean defaults, sizes within :data:`MAX_NETWORK_INT`.

    Not part of reading a card: it imports MONAI (seconds), and reading cards must stay quick (the
    command line's argument checks, the Slicer module's model list). Runs before any network is
    built: in every pipeline's card check and in the store's import check.

    Raises:
        CardError: naming the field, e.g. ``networks.diffusion.kwargs.hidden``.
    """
    for name, spec in card.networks.items():
        _check_kwargs(_Fields({"kwargs": spec.kwargs}, f"networks.{name}", card.id), spec.cls, spec.kwargs)


def _check_kwargs(n: _Fields, cls_name: str, kwargs: Mapping[str, Any]) -> None:
    import monai.networks.nets as nets  # deferred: importing monai takes seconds (see check_network_arguments)

    params = inspect.signature(getattr(nets, cls_name).__init__).parameters
    kw_fields = _Fields(kwargs, f"{n.path}.kwargs", n.card_id)
    for key in kwargs:
        if key not in params or key == "self":
            kw_fields.fail(key, f"is not an argument of monai.networks.nets.{cls_name}")
    for pname, p in params.items():
        if pname == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty and pname not in kwargs:
            kw_fields.fail(pname, f"is required by monai.networks.nets.{cls_name}")
        if pname in kwargs:
            _check_kwarg_value(kw_fields, pname, kwargs[pname], p.default)


def _whole_numbers(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_whole_numbers(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


#: Largest integer a network argument may hold (channels, head sizes, ...); real models use < 2048.
MAX_NETWORK_INT = 8192


def _check_kwarg_value(k: "_Fields", name: str, value: Any, default: Any) -> None:
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
        k.fail(name, f"must be true or false, got {_short(value)}")
    elif isinstance(default, float) and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    ):
        k.fail(name, f"must be a number, got {_short(value)}")
    elif isinstance(default, int) and not isinstance(default, bool) and not _whole_numbers(value):
        k.fail(name, f"must be a whole number (or a list of them), got {_short(value)}")
    if any(abs(x) > MAX_NETWORK_INT for x in ints(value)):
        k.fail(name, f"holds {max(ints(value), key=abs)}, beyond {MAX_NETWORK_INT} (no real network is that large)")


def _parse_scheduler(f: _Fields) -> Scheduler:
    s = f.obj("scheduler")
    cls_name = s.str("class", choices=tuple(SAMPLER_CLASSES.values()))
    kwargs = s.mapping("kwargs")
    k = _Fields(kwargs, "scheduler.kwargs", f.card_id)
    timesteps = k.integer("num_train_timesteps", minimum=1)
    if timesteps > MAX_TRAIN_TIMESTEPS:
        k.fail("num_train_timesteps", f"must be at most {MAX_TRAIN_TIMESTEPS}, got {timesteps}")
    if cls_name != "RFlowScheduler":
        k.str("schedule", choices=("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"))
        if kwargs.get("schedule") != "cosine":
            lo, hi = k.number("beta_start", positive=True), k.number("beta_end", positive=True)
            if not lo < hi < 1:
                k.fail("beta_end", f"must be above beta_start and below 1, got {hi}")
    objective = s.str("objective", choices=tuple(TRAINING_OBJECTIVES))
    if cls_name == "RFlowScheduler" and objective != "rflow":
        s.fail("objective", f"must be 'rflow' for RFlowScheduler, got {_short(objective)}")
    if objective != "rflow":
        prediction = kwargs.get("prediction_type", "epsilon")
        if prediction != objective:
            k.fail("prediction_type", f"must equal scheduler.objective ({objective}), got {_short(prediction)}")
    return Scheduler(cls=cls_name, kwargs=dict(kwargs), objective=objective)


def _parse_sampling(f: _Fields, scheduler: Scheduler | None) -> Sampling:
    s = f.obj("sampling")
    if scheduler is None:
        s.fail("", "needs a 'scheduler' section")
    allowed = TRAINING_OBJECTIVES[scheduler.objective]
    samplers = s.raw("samplers")
    if not isinstance(samplers, list) or not samplers or any(x not in allowed for x in samplers):
        s.fail("samplers", f"must be a non-empty list from {', '.join(allowed)}, got {_short(samplers)}")
    default = s.str("default_sampler", choices=samplers)
    timesteps = int(scheduler.kwargs["num_train_timesteps"])
    max_steps = s.integer("max_steps", required=False, default=timesteps, minimum=1)
    if max_steps > timesteps:
        s.fail("max_steps", f"must be at most scheduler.kwargs.num_train_timesteps ({timesteps}), got {max_steps}")
    steps = s.integer("default_steps", minimum=1)
    if steps > max_steps:
        s.fail("default_steps", f"must be at most max_steps ({max_steps}), got {steps}")
    guidance = _parse_guidance(s.obj("guidance")) if s.has("guidance") else None
    return Sampling(
        default_sampler=default, default_steps=steps, samplers=tuple(samplers), max_steps=max_steps, guidance=guidance
    )


def _parse_guidance(g: _Fields) -> Guidance:
    lo, hi = g.number("minimum"), g.number("maximum")
    if not 1.0 <= lo <= hi <= 100.0:
        g.fail("maximum", f"minimum and maximum must satisfy 1 <= minimum <= maximum <= 100, got {lo:g} and {hi:g}")
    default = g.number("default")
    if not lo <= default <= hi:
        g.fail("default", f"must be within minimum–maximum ({lo:g}–{hi:g}), got {default:g}")
    dropout = g.number("condition_dropout")
    if not 0.0 < dropout < 1.0:
        g.fail("condition_dropout", f"must be between 0 and 1 (exclusive), got {dropout:g}")
    return Guidance(default, lo, hi, g.number("null_value"), dropout)


#: Bounds on sizes a card sets (far beyond any real model, well below what would exhaust memory).
MAX_TRAIN_TIMESTEPS = 100_000
MAX_LATENT_ELEMENTS = 2**24
MAX_OUTPUT_VOXELS = 2**28
MAX_OUTPUT_EDGE = 2048


def _parse_latent(f: _Fields) -> Latent:
    s = f.obj("latent")
    shape = s.numbers("shape", length=4, positive=True, integer=True)
    if math.prod(shape) > MAX_LATENT_ELEMENTS:
        s.fail("shape", f"holds {math.prod(shape)} values, more than {MAX_LATENT_ELEMENTS}")
    return Latent(shape=shape, scale_factor=s.number("scale_factor", positive=True))


def _parse_conditioning(f: _Fields) -> Conditioning:
    s = f.obj("conditioning")
    inputs = s.raw("inputs", [])
    if not isinstance(inputs, list) or any(x not in CONDITIONING_INPUTS for x in inputs):
        s.fail("inputs", f"must be a list from {', '.join(CONDITIONING_INPUTS)}, got {_short(inputs)}")
    variables = []
    for v in s.objects("variables"):
        name = v.str("name")
        if not re.match(r"^[a-z][a-z0-9_]*$", name):
            v.fail("name", f"must be a lower-case identifier, got {_short(name)}")
        kind = v.str("kind", choices=("continuous", "categorical"))
        common = dict(
            name=name,
            label=v.str("label"),
            kind=kind,
            unit=v.str("unit", required=kind == "continuous", default=""),
            normalisation=v.str("normalisation", choices=NORMALISATION_STATUS),
            note=v.str("note", required=False, default=""),
        )
        model_range = v.numbers("model_range", length=2, required=False) or (0.0, 1.0)
        if not model_range[0] < model_range[1]:
            v.fail("model_range", f"must be increasing, got {list(model_range)}")
        if kind == "continuous":
            lo, hi = v.numbers("range", length=2)
            if not lo < hi:
                v.fail("range", f"must be increasing, got {[lo, hi]}")
            default = v.number("default")
            if not lo <= default <= hi:
                v.fail("default", f"must lie in range {lo:g}–{hi:g}, got {default:g}")
            typical = v.numbers("typical_range", length=2, required=False)
            if typical is not None and not lo <= typical[0] <= typical[1] <= hi:
                v.fail("typical_range", f"must lie inside range {lo:g}–{hi:g}, got {list(typical)}")
            default_from = v.obj("default_from", required=False)
            if default_from is not None:
                default_from.number("intercept")
                coefficients = default_from.mapping("coefficients")
                cf = _Fields(coefficients, f"{default_from.path}.coefficients", f.card_id)
                for key in coefficients:
                    cf.number(key)
                default_from = default_from.data
            variables.append(
                ConditionVariable(
                    **common,
                    range=(lo, hi),
                    model_range=model_range,
                    default=default,
                    typical_range=typical,
                    default_from=default_from,
                )
            )
        else:
            choices = v.mapping("choices")
            cf = _Fields(choices, f"{v.path}.choices", f.card_id)
            if not choices:
                v.fail("choices", "must name at least one choice")
            for key in choices:
                value = cf.number(key)
                if not model_range[0] <= value <= model_range[1]:
                    cf.fail(key, f"must lie in model_range {model_range[0]:g}–{model_range[1]:g}, got {value:g}")
            default = v.str("default", choices=list(choices))
            variables.append(
                ConditionVariable(
                    **common,
                    choices={k: float(x) for k, x in choices.items()},
                    model_range=model_range,
                    default=default,
                )
            )
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        s.fail("variables", "names a variable twice")
    for i, v in enumerate(variables):
        for ref in (v.default_from or {}).get("coefficients", {}):
            target = next((w for w in variables if w.name == ref), None)
            if target is None or target.default_from:
                s.fail(
                    f"variables[{i}].default_from.coefficients.{ref}", "must name a variable that has a plain default"
                )
    if variables and not inputs:
        s.fail("inputs", "must say how the variables enter the network (concat and/or crossattn)")
    return Conditioning(variables=tuple(variables), inputs=tuple(inputs))


def _parse_output(f: _Fields) -> OutputGeometry:
    s = f.obj("output")
    shape = s.numbers("shape", length=3, positive=True, integer=True)
    if max(shape) > MAX_OUTPUT_EDGE or math.prod(shape) > MAX_OUTPUT_VOXELS:
        s.fail(
            "shape",
            f"must be at most {MAX_OUTPUT_EDGE} voxels a side and {MAX_OUTPUT_VOXELS} in all, got {list(shape)}",
        )
    spacing = s.numbers("spacing", length=3, positive=True)
    affine_data = s.raw("affine")
    try:
        affine = np.asarray(affine_data, dtype=np.float64)
        ok = affine.shape == (4, 4) and np.all(np.isfinite(affine)) and np.allclose(affine[3], [0, 0, 0, 1])
    except (TypeError, ValueError):
        ok = False
    if not ok:
        s.fail("affine", f"must be a 4x4 matrix with last row [0, 0, 0, 1], got {_short(affine_data)}")
    if not np.allclose(np.linalg.norm(affine[:3, :3], axis=0), spacing, rtol=1e-4):
        s.fail(
            "affine",
            f"column norms {np.linalg.norm(affine[:3, :3], axis=0).round(4).tolist()} do not match spacing "
            f"{list(spacing)}",
        )
    lo, hi = s.numbers("intensity_range", length=2)
    if not lo < hi:
        s.fail("intensity_range", f"must be increasing, got {[lo, hi]}")
    return OutputGeometry(
        shape=shape,
        spacing=spacing,
        affine=affine,
        intensity_range=(lo, hi),
        modality=s.str("modality"),
        geometry_published=s.boolean("geometry_published"),
        note=s.str("note", required=False, default=""),
    )


def _parse_labels(f: _Fields) -> tuple[LabelClass, ...]:
    out = []
    for i, c in enumerate(f.objects("labels")):
        value = c.integer("value", minimum=0)
        if value != i:
            c.fail("value", f"must equal the channel index {i}, got {value}")
        color = c.numbers("color", length=3, integer=True)
        if any(not 0 <= x <= 255 for x in color):
            c.fail("color", f"must be 3 integers in 0–255, got {list(color)}")
        out.append(LabelClass(value=value, name=c.str("name"), color=color))
    if len(out) < 2:
        f.fail("labels", "must list at least two classes")
    return tuple(out)


def _parse_template(f: _Fields, weights: Mapping[str, WeightFile]) -> Template:
    t = f.obj("template")
    key = t.str("weights")
    if key not in weights:
        t.fail("weights", f"names {_short(key)}, which is not in 'weights'")
    return Template(weights=key)


def _parse_sequences(f: _Fields, weights: Mapping[str, WeightFile]) -> Sequences:
    s = f.obj("sequences")
    names = s.raw("names")
    if not isinstance(names, list) or not names or any(not isinstance(n, str) or not n for n in names):
        s.fail("names", f"must be a non-empty list of sequence names, got {_short(names)}")
    mode = s.str("mode", choices=("style_codes", "class_label"))
    key = s.str("weights", required=mode == "style_codes")
    if key is not None and key not in weights:
        s.fail("weights", f"names {_short(key)}, which is not in 'weights'")
    label_channels = s.raw("label_channels") if s.has("label_channels") else False
    if not isinstance(label_channels, bool):
        s.fail("label_channels", f"must be true or false, got {_short(label_channels)}")
    return Sequences(names=tuple(names), mode=mode, weights=key, label_channels=label_channels)


def card_field_error(card: ModelCard, field: str, message: str) -> CardError:
    """The error of a card rule checked outside the reader (e.g. a pipeline's kind rules), worded as
    the reader's own: ``card <id>: field '<field>' <message>``."""
    return CardError(f"card {card.id}: field '{field}' {message}")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card JSON file."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise CardError(f"card {path!r} is not a file path")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CardError(f"cannot read card {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CardError(f"card {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"card {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise CardError(f"card {path} is not valid JSON for a card: nested too deeply") from None
    return ModelCard.from_dict(data, path=path)


BUILTIN_CARD_DIR = Path(__file__).with_name("cards")


def builtin_cards() -> dict[str, ModelCard]:
    """Cards of the published models that ship with the package, by id."""
    cards = {}
    for p in sorted(BUILTIN_CARD_DIR.glob("*.json")):
        card = load_card(p)
        cards[card.id] = card
    return cards
