"""Task builders for the conditioned models: a brain, a label map, two brains compared, an age sweep.

Each builder checks the request on the calling (main) thread, so mistakes are reported before any
thread starts, and returns a :class:`~SynthBrainSlicer.tasks.Task`: ``compute`` generates with
SynthBrainLib, ``apply`` adds the nodes. ``logic`` is the :class:`~SynthBrainSlicer.logic.SynthBrainLogic`
(models, pipelines, scene); ``settings`` a :class:`~SynthBrainSlicer.settings.RunSettings`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import numpy as np

from SynthBrainLib import errors
from SynthBrainLib.outputs.interrupts import is_cancelled

from . import scene as mrml
from .choices import AGE, BRAIN_KIND, LABELS_KIND
from .settings import RunSettings
from .tasks import Task

#: Node attribute with the volumes measured in a generated brain (JSON, mL).
MEASURED_ATTRIBUTE = "SynthBrain.MeasuredVolumes"


def brain(logic, settings: RunSettings, *, raw=None, measure: bool = False, **conditions: Any) -> Task:
    """A conditioned brain: ``compute`` gives a SynthesisResult, ``apply`` a volume node.

    ``measure``: also measure the result's ventricular and brain volume (mL) from the image with
    SynthBrainLib's image-based estimators (not the model), into the node's
    ``SynthBrain.MeasuredVolumes`` attribute (see :func:`measured_volumes`).
    """

    def apply(scene, card, result, measured):
        name = f"SynthBrain {card.output.modality} {describe(result)} seed {result.provenance.get('seed')}"
        node = mrml.add_result_volume(scene, result.image, result.affine, name, result.provenance)
        if measured:
            node.SetAttribute(MEASURED_ATTRIBUTE, json.dumps(measured, sort_keys=True))
        return node

    return _conditioned(logic, BRAIN_KIND, "brain", apply, settings, raw, conditions, measure)


def labels(logic, settings: RunSettings, *, raw=None, **conditions: Any) -> Task:
    """A label map from the label generator: ``apply`` gives a schema segmentation node."""

    def apply(scene, card, result, measured):
        real = (result.provenance.get("conditions") or {}).get("real_units", {})
        lesions = ", ".join(f"{k} {v:g}" for k, v in real.items() if isinstance(v, (int, float)) and v)
        name = f"SynthBrain labels {lesions or 'healthy'} seed {result.provenance.get('seed')}"
        return mrml.labels_to_segmentation(scene, result.labels, result.affine, card.labels, name, result.provenance)

    return _conditioned(logic, LABELS_KIND, "labels", apply, settings, raw, conditions)


def _conditioned(logic, kind, what, apply, settings, raw, conditions, measure=False) -> Task:
    """Check on the calling thread, generate in ``compute``, add nodes in ``apply``."""
    settings, card = _resolved(logic, kind, settings)
    logic.check(card, conditions, raw, settings)
    scene = logic.scene

    def compute(progress, cancel):
        result = generate(logic, card.id, settings, raw, conditions, progress, cancel)
        return result, (measure_volumes(result.image, result.affine) if measure else None)

    return Task(f"{card.id} {what}", compute, lambda payload: logic.kept(apply(scene, card, *payload)), scene=scene)


def _resolved(logic, kind: str, settings: RunSettings):
    """``settings`` with the model and seed decided (the kind's installed model, a drawn seed), and its card."""
    modelId = logic.resolveModel(settings.model, kind)
    settings = dataclasses.replace(settings, model=modelId, seed=logic.resolveSeed(settings.seed))
    return settings, logic.card(modelId)


def generate(logic, modelId, settings: RunSettings, raw, conditions, progress, cancel):
    """One ``generate`` of a conditioned pipeline with the logic's guidance (worker thread)."""
    pipe = logic.pipeline(modelId, settings.device, settings.precision)
    options = {} if logic.guidance is None else {"guidance": logic.guidance}
    return pipe.generate(
        raw=raw, progress=progress, cancel=cancel, **settings.generate_options(), **options, **conditions
    )


def _share(progress: Callable | None, index: int, count: int):
    """Progress of item ``index`` of ``count`` as a share of the whole run."""

    def report(step, total):
        if progress is not None:
            progress(index * total + step, count * total)

    return report


def compare(logic, conditionsA: dict, conditionsB: dict, settings: RunSettings, *, rawA=None, rawB=None) -> Task:
    """Two brains from the same seed (so the same noise) under two sets of conditions, and B - A.

    ``apply`` gives ``(volumeA, volumeB, difference)``: three volume nodes on one grid; the
    difference is float32 in the image's intensity units, marked synthetic with both provenances.
    """
    settings, card = _resolved(logic, BRAIN_KIND, settings)
    pairs = ((conditionsA, rawA), (conditionsB, rawB))
    for conditions, raw in pairs:
        logic.check(card, conditions, raw, settings)
    scene, seed = logic.scene, settings.seed

    def compute(progress, cancel):
        return [
            generate(logic, card.id, settings, raw, conditions, _share(progress, i, 2), cancel)
            for i, (conditions, raw) in enumerate(pairs)
        ]

    def apply(results):
        a, b = results
        volumeA = mrml.add_result_volume(
            scene, a.image, a.affine, f"SynthBrain A {describe(a)} seed {seed}", a.provenance
        )
        volumeB = mrml.add_result_volume(
            scene, b.image, b.affine, f"SynthBrain B {describe(b)} seed {seed}", b.provenance
        )
        delta = (b.image - a.image).astype(np.float32)
        limit = float(np.abs(delta).max()) or 1.0
        provenance = {
            "description": "difference B - A of two SynthBrain results with the same seed",
            "seed": seed,
            "model": a.provenance.get("model"),
            "a": a.provenance,
            "b": b.provenance,
        }
        difference = mrml.add_result_volume(
            scene, delta, a.affine, f"SynthBrain B - A seed {seed}", provenance, window=(-limit, limit)
        )
        return tuple(logic.kept(node) for node in (volumeA, volumeB, difference))

    return Task(f"{card.id} comparison", compute, apply, scene=scene)


def sweep_ages(ageFrom: float, ageTo: float, count: int) -> list[float]:
    """The ages of a sweep (``count`` evenly from ``ageFrom`` to ``ageTo``), or a one-line error."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 2 <= int(count) <= 200:
        raise errors.ConditionError(f"an age sweep needs 2 to 200 steps, got {count!r}")
    ages = [round(float(a), 3) for a in np.linspace(float(ageFrom), float(ageTo), int(count))]
    if len({f"{a:g}" for a in ages}) < len(ages):  # the sequence is indexed by these texts
        raise errors.ConditionError(
            f"ages {float(ageFrom):g} to {float(ageTo):g} in {int(count)} steps are not distinct; widen "
            "the range or take fewer steps"
        )
    return ages


def age_sweep(
    logic, ageFrom: float, ageTo: float, count: int, settings: RunSettings, *, raw=None, **conditions
) -> Task:
    """The same brain (same seed and other conditions) at ``count`` ages from ``ageFrom`` to ``ageTo``.

    ``apply`` gives a sequence node indexed by age (its browser's ID is the sequence's
    ``SynthBrain.SequenceBrowser`` attribute).
    """
    settings, card = _resolved(logic, BRAIN_KIND, settings)
    if AGE not in card.conditioning.names:
        raise errors.ConditionError(f"model {card.id} has no '{AGE}' condition to sweep")
    if AGE in conditions:
        raise errors.ConditionError("give the sweep's ages as ageFrom and ageTo, not age")
    ages = sweep_ages(ageFrom, ageTo, count)
    for age in (ages[0], ages[-1]):
        logic.check(card, {**conditions, AGE: age}, raw, settings)
    unit = card.conditioning.variable(AGE).unit
    scene, sequencesLogic = logic.scene, logic.sequencesLogic()

    def compute(progress, cancel):
        results = []
        for index, age in enumerate(ages):
            if is_cancelled(cancel):
                raise errors.SynthesisCancelled()
            share = _share(progress, index, len(ages))
            results.append(generate(logic, card.id, settings, raw, {**conditions, AGE: age}, share, cancel))
        return results

    def apply(results):
        name = f"SynthBrain age sweep {ages[0]:g}-{ages[-1]:g} {unit} seed {settings.seed}"
        items = [(f"{age:g}", r.image, r.affine, r.provenance) for age, r in zip(ages, results)]
        sweep = {"variable": AGE, "unit": unit, "values": ages, "fixed": dict(conditions), "raw": dict(raw or {})}
        summary = dict(results[0].provenance, conditions=None, description=name, sweep=sweep)
        sequence, _, _ = mrml.add_volume_sequence(scene, items, name, AGE, unit, summary, sequencesLogic)
        return logic.kept(sequence)

    return Task(f"{card.id} age sweep", compute, apply, scene=scene)


def measure_volumes(image: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Ventricular and brain volume (mL) measured in a generated T1 by SynthBrainLib's image-based
    estimators (mask, bias correction, tissue classes; no model involved)."""
    from SynthBrainLib.outputs.measure import measure_t1

    measured = measure_t1(image, affine)
    return {
        "ventricular_volume": round(measured["ventricular_volume_ml"], 2),
        "brain_volume": round(measured["brain_volume_ml"], 2),
    }


def measured_volumes(node) -> dict[str, float] | None:
    """The volumes measured in a generated brain (``measure=True``), or None."""
    text = node.GetAttribute(MEASURED_ATTRIBUTE) if node is not None else None
    return json.loads(text) if text else None


def describe(result) -> str:
    return str(result.provenance.get("description") or "").replace("_", " ")
