"""The sections of a model card, each read and validated from its JSON by one ``parse_*`` function.

Nothing in a card is executed: network classes are looked up in a fixed allow-list (their kwargs are
checked against MONAI's signatures by :mod:`.network_arguments`, which imports MONAI), and sizes are
bounded far below what would exhaust memory.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from . import card_parts as parts
from .card_fields import FieldReader, printable, shown
from .samplers import SAMPLER_CLASSES, TRAINING_OBJECTIVES

#: Network classes a card may name. Only these are ever instantiated (no arbitrary imports).
NETWORK_CLASSES = (
    "AutoencoderKL",
    "DiffusionModelUNet",
    "SPADEAutoencoderKL",
    "SPADEDiffusionModelUNet",
    "SPADENet",
    "AutoencoderKlMaisi",
    "DiffusionModelUNetMaisi",
)

#: Where an allowed class lives when not in ``monai.networks.nets`` (MONAI 1.6 keeps MAISI's networks
#: under ``monai.apps``).
NETWORK_MODULES = {
    "AutoencoderKlMaisi": "monai.apps.generation.maisi.networks.autoencoderkl_maisi",
    "DiffusionModelUNetMaisi": "monai.apps.generation.maisi.networks.diffusion_model_unet_maisi",
}


CONDITIONING_INPUTS = ("concat", "crossattn", "presence")
WEIGHT_FORMATS = ("auto", "monai", "generative", "safetensors")
NORMALISATION_STATUS = ("published", "assumed", "defined")

_HEX = re.compile(r"^[0-9a-f]+$")

#: Bounds on sizes a card sets (far beyond any real model, well below what would exhaust memory).
MAX_TRAIN_TIMESTEPS = 100_000
MAX_LATENT_ELEMENTS = 2**24
MAX_OUTPUT_VOXELS = 2**28
MAX_OUTPUT_EDGE = 2048


def parse_weights(f: FieldReader) -> dict[str, parts.WeightFile]:
    section = f.obj("weights")
    out: dict[str, parts.WeightFile] = {}
    for key in section.data:
        w = section.obj(key)
        file = w.str("file")
        if "/" in file or "\\" in file or file.startswith(".") or not printable(file) or len(file) > 200:
            w.fail("file", f"must be a plain file name (printable, at most 200 characters), got {shown(file)}")
        bundle_path = w.str("bundle_path", required=False)
        if bundle_path is not None and (
            bundle_path.startswith(("/", "\\"))
            or ".." in bundle_path.replace("\\", "/").split("/")
            or ":" in bundle_path
            or not printable(bundle_path)
        ):
            w.fail("bundle_path", f"must be a relative path inside the bundle, got {shown(bundle_path)}")
        sha256 = w.str("sha256", required=False)
        md5 = w.str("md5", required=False)
        if sha256 is not None and (len(sha256) != 64 or not _HEX.match(sha256)):
            w.fail("sha256", f"must be 64 lower-case hex digits, got {shown(sha256)}")
        if md5 is not None and (len(md5) != 32 or not _HEX.match(md5)):
            w.fail("md5", f"must be 32 lower-case hex digits, got {shown(md5)}")
        url = w.str("url", required=False)
        if url is not None and not url.startswith(("http://", "https://")):
            w.fail("url", f"must be an http(s) URL, got {shown(url)}")
        out[key] = parts.WeightFile(
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


def parse_networks(f: FieldReader, weights: Mapping[str, parts.WeightFile]) -> dict[str, parts.NetworkSpec]:
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
            n.fail("weights", f"names {shown(weight_key)}, which is not in 'weights' ({', '.join(weights) or 'none'})")
        out[name] = parts.NetworkSpec(name=name, cls=cls_name, kwargs=dict(kwargs), weights=weight_key)
    return out


def parse_scheduler(f: FieldReader) -> parts.Scheduler:
    s = f.obj("scheduler")
    cls_name = s.str("class", choices=tuple(SAMPLER_CLASSES.values()))
    kwargs = s.mapping("kwargs")
    k = FieldReader(kwargs, "scheduler.kwargs", f.card_id)
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
        s.fail("objective", f"must be 'rflow' for RFlowScheduler, got {shown(objective)}")
    if objective != "rflow":
        prediction = kwargs.get("prediction_type", "epsilon")
        if prediction != objective:
            k.fail("prediction_type", f"must equal scheduler.objective ({objective}), got {shown(prediction)}")
    return parts.Scheduler(cls=cls_name, kwargs=dict(kwargs), objective=objective)


def parse_sampling(
    f: FieldReader, scheduler: parts.Scheduler | None, conditioning: parts.Conditioning
) -> parts.Sampling:
    s = f.obj("sampling")
    if scheduler is None:
        s.fail("", "needs a 'scheduler' section")
    allowed = TRAINING_OBJECTIVES[scheduler.objective]
    samplers = s.raw("samplers")
    if not isinstance(samplers, list) or not samplers or any(x not in allowed for x in samplers):
        s.fail("samplers", f"must be a non-empty list from {', '.join(allowed)}, got {shown(samplers)}")
    default = s.str("default_sampler", choices=samplers)
    timesteps = int(scheduler.kwargs["num_train_timesteps"])
    max_steps = s.integer("max_steps", required=False, default=timesteps, minimum=1)
    if max_steps > timesteps:
        s.fail("max_steps", f"must be at most scheduler.kwargs.num_train_timesteps ({timesteps}), got {max_steps}")
    steps = s.integer("default_steps", minimum=1)
    if steps > max_steps:
        s.fail("default_steps", f"must be at most max_steps ({max_steps}), got {steps}")
    guidance = parse_guidance(s.obj("guidance"), conditioning) if s.has("guidance") else None
    return parts.Sampling(
        default_sampler=default, default_steps=steps, samplers=tuple(samplers), max_steps=max_steps, guidance=guidance
    )


#: How a guided model's null condition is made (see :class:`~.card_parts.Guidance`).
GUIDANCE_NULLS = ("all", "requested")


def parse_guidance(g: FieldReader, conditioning: parts.Conditioning) -> parts.Guidance:
    lo, hi = g.number("minimum"), g.number("maximum")
    if not 1.0 <= lo <= hi <= 100.0:
        g.fail("maximum", f"minimum and maximum must satisfy 1 <= minimum <= maximum <= 100, got {lo:g} and {hi:g}")
    default = g.number("default")
    if not lo <= default <= hi:
        g.fail("default", f"must be within minimum–maximum ({lo:g}–{hi:g}), got {default:g}")
    # Optional: a published model may not say at what rate it dropped its conditions (NV-Generate).
    dropout = g.number("condition_dropout", required=False)
    if dropout is not None and not 0.0 < dropout < 1.0:
        g.fail("condition_dropout", f"must be between 0 and 1 (exclusive), got {dropout:g}")
    null = g.str("null", required=False, default="all", choices=GUIDANCE_NULLS)
    single = g.number("single_condition_dropout", required=False, default=0.0)
    if not 0.0 <= single < 1.0:
        g.fail("single_condition_dropout", f"must be between 0 and 1, got {single:g}")
    if null == "requested" and single == 0.0:
        g.fail("null", "'requested' needs a model trained with single_condition_dropout > 0")
    negatives = tuple(parse_negative(n, conditioning) for n in g.objects("negatives", required=False))
    return parts.Guidance(default, lo, hi, g.number("null_value"), dropout, null, single, negatives)


def parse_negative(n: FieldReader, conditioning: parts.Conditioning) -> parts.NegativeCondition:
    """One of ``sampling.guidance.negatives``: ``values``, real-unit values of continuous variables
    inside their range and above its low end (a negative of "none" would push towards the lesion),
    and ``scale`` > 0."""
    values = n.mapping("values")
    if not values:
        n.fail("values", "must name at least one conditioning variable")
    for name, value in values.items():
        try:
            variable = conditioning.variable(name)
        except KeyError:
            n.fail(f"values.{name}", f"must name a conditioning variable ({', '.join(conditioning.names)})")
        if variable.kind != "continuous":
            n.fail(f"values.{name}", "must be a continuous variable")
        lo, hi = variable.range
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
            n.fail(f"values.{name}", f"must be a number above {lo:g} and at most {hi:g}, got {shown(value)}")
    return parts.NegativeCondition(
        values={k: float(v) for k, v in values.items()}, scale=n.number("scale", positive=True)
    )


def parse_latent(f: FieldReader) -> parts.Latent:
    s = f.obj("latent")
    shape = s.numbers("shape", length=4, positive=True, integer=True)
    if math.prod(shape) > MAX_LATENT_ELEMENTS:
        s.fail("shape", f"holds {math.prod(shape)} values, more than {MAX_LATENT_ELEMENTS}")
    return parts.Latent(shape=shape, scale_factor=s.number("scale_factor", positive=True))


def parse_conditioning(f: FieldReader) -> parts.Conditioning:
    s = f.obj("conditioning")
    inputs = s.raw("inputs", [])
    if not isinstance(inputs, list) or any(x not in CONDITIONING_INPUTS for x in inputs):
        s.fail("inputs", f"must be a list from {', '.join(CONDITIONING_INPUTS)}, got {shown(inputs)}")
    variables = []
    for v in s.objects("variables"):
        name = v.str("name")
        if not re.match(r"^[a-z][a-z0-9_]*$", name):
            v.fail("name", f"must be a lower-case identifier, got {shown(name)}")
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
            log_reference = v.number("log_reference", required=False, positive=True)
            default_from = v.obj("default_from", required=False)
            if default_from is not None:
                default_from.number("intercept")
                coefficients = default_from.mapping("coefficients")
                cf = FieldReader(coefficients, f"{default_from.path}.coefficients", f.card_id)
                for key in coefficients:
                    cf.number(key)
                default_from = default_from.data
            variables.append(
                parts.ConditionVariable(
                    **common,
                    range=(lo, hi),
                    model_range=model_range,
                    default=default,
                    typical_range=typical,
                    default_from=default_from,
                    log_reference=log_reference,
                )
            )
        else:
            choices = v.mapping("choices")
            cf = FieldReader(choices, f"{v.path}.choices", f.card_id)
            if not choices:
                v.fail("choices", "must name at least one choice")
            for key in choices:
                value = cf.number(key)
                if not model_range[0] <= value <= model_range[1]:
                    cf.fail(key, f"must lie in model_range {model_range[0]:g}–{model_range[1]:g}, got {value:g}")
            default = v.str("default", choices=list(choices))
            variables.append(
                parts.ConditionVariable(
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
    if variables and not {"concat", "crossattn"}.intersection(inputs):
        s.fail("inputs", "must say how the variables enter the network (concat and/or crossattn)")
    return parts.Conditioning(
        variables=tuple(variables), inputs=tuple(inputs), presence_groups=parse_presence_groups(s, inputs, names)
    )


def parse_presence_groups(s: FieldReader, inputs: list, names: list[str]) -> tuple[tuple[str, ...], ...]:
    """``conditioning.presence_groups``: lists of variable names, each variable in one group at most;
    required with the ``presence`` input, refused without it."""
    groups = s.raw("presence_groups", None)
    if "presence" not in inputs:
        if groups is not None:
            s.fail("presence_groups", "is only used with the 'presence' input")
        return ()
    ok = isinstance(groups, list) and groups and all(isinstance(g, list) and g for g in groups)
    if not ok or any(n not in names for g in groups for n in g):
        s.fail("presence_groups", f"must be non-empty lists of names from {', '.join(names)}, got {shown(groups)}")
    flat = [n for g in groups for n in g]
    if len(set(flat)) != len(flat):
        s.fail("presence_groups", "names a variable in two groups")
    return tuple(tuple(g) for g in groups)


def parse_output(f: FieldReader) -> parts.OutputGeometry:
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
        s.fail("affine", f"must be a 4x4 matrix with last row [0, 0, 0, 1], got {shown(affine_data)}")
    if not np.allclose(np.linalg.norm(affine[:3, :3], axis=0), spacing, rtol=1e-4):
        s.fail(
            "affine",
            f"column norms {np.linalg.norm(affine[:3, :3], axis=0).round(4).tolist()} do not match spacing "
            f"{list(spacing)}",
        )
    lo, hi = s.numbers("intensity_range", length=2)
    if not lo < hi:
        s.fail("intensity_range", f"must be increasing, got {[lo, hi]}")
    return parts.OutputGeometry(
        shape=shape,
        spacing=spacing,
        affine=affine,
        intensity_range=(lo, hi),
        modality=s.str("modality"),
        geometry_published=s.boolean("geometry_published"),
        note=s.str("note", required=False, default=""),
    )


def parse_labels(f: FieldReader) -> tuple[parts.LabelClass, ...]:
    out = []
    for i, c in enumerate(f.objects("labels")):
        value = c.integer("value", minimum=0)
        if value != i:
            c.fail("value", f"must equal the channel index {i}, got {value}")
        color = c.numbers("color", length=3, integer=True)
        if any(not 0 <= x <= 255 for x in color):
            c.fail("color", f"must be 3 integers in 0–255, got {list(color)}")
        out.append(parts.LabelClass(value=value, name=c.str("name"), color=color))
    if len(out) < 2:
        f.fail("labels", "must list at least two classes")
    return tuple(out)


def parse_template(f: FieldReader, weights: Mapping[str, parts.WeightFile]) -> parts.Template:
    t = f.obj("template")
    key = t.str("weights")
    if key not in weights:
        t.fail("weights", f"names {shown(key)}, which is not in 'weights'")
    return parts.Template(weights=key)


def parse_sequences(f: FieldReader, weights: Mapping[str, parts.WeightFile]) -> parts.Sequences:
    s = f.obj("sequences")
    names = s.raw("names")
    if not isinstance(names, list) or not names or any(not isinstance(n, str) or not n for n in names):
        s.fail("names", f"must be a non-empty list of sequence names, got {shown(names)}")
    mode = s.str("mode", choices=("style_codes", "class_label"))
    key = s.str("weights", required=mode == "style_codes")
    if key is not None and key not in weights:
        s.fail("weights", f"names {shown(key)}, which is not in 'weights'")
    label_channels = s.raw("label_channels") if s.has("label_channels") else False
    if not isinstance(label_channels, bool):
        s.fail("label_channels", f"must be true or false, got {shown(label_channels)}")
    return parts.Sequences(names=tuple(names), mode=mode, weights=key, label_channels=label_channels)
