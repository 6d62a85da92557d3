"""Tasks that age a patient's own scan (``ConditionalBrainPipeline.age``): one target age (the aged
scan and its atrophy map) or a sweep of ages (a sequence to scrub). Builders check everything before
any work and touch the scene only in ``apply``; the scan is never modified."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from SynthBrainLib import errors
from SynthBrainLib.models.requests import check_skull_stripped

from . import scene as mrml
from .brain_tasks import AGE, _resolved, sweep_ages
from .choices import BRAIN_KIND
from .image_tasks import add_brain_mask, add_scan_copy, scan_of
from .settings import RunSettings
from .tasks import Task

#: The log-Jacobian map's window: +-0.5 is a 65 % larger or 40 % smaller local volume.
JACOBIAN_WINDOW = (-0.5, 0.5)


def _check(logic, card, scanVolumeNode, age: float, sex: str | None, targets: Sequence[float], settings) -> dict:
    """The request's conditions, each target age checked against the card (one-line errors)."""
    if AGE not in card.conditioning.names:
        raise errors.ConditionError(f"model {card.id} has no '{AGE}' condition: it cannot age a scan")
    conditions = {AGE: age, **({"sex": sex} if sex is not None else {})}
    for target in (age, *targets):
        logic.check(card, {**conditions, AGE: target}, None, settings)
    return conditions


def _age(logic, card, settings, scan, affine, conditions, to_age, skullStripped, progress, cancel):
    pipe = logic.pipeline(card.id, settings.device, settings.precision)
    return pipe.age(
        scan,
        affine,
        age=conditions[AGE],
        sex=conditions.get("sex"),
        to_age=to_age,
        seed=settings.seed,
        skull_stripped=skullStripped,
        progress=progress,
        cancel=cancel,
        **({"steps": settings.steps} if settings.steps is not None else {}),
    )


def ageing(
    logic,
    scanVolumeNode,
    settings: RunSettings,
    *,
    age: float,
    toAge: float,
    sex: str | None = None,
    skullStripped: str = "auto",
) -> Task:
    """The scan as it would look at ``toAge`` (the patient is ``age`` at the scan).

    ``apply`` adds the aged scan (the scan's type and grid, marked synthetic) and its atrophy map (the
    deformation's log-Jacobian, float32, diverging colours: negative where tissue shrinks) and returns
    ``(aged volume, log-Jacobian volume)``; for a scan with its skull (``skullStripped`` ``auto`` or
    ``no``) also the brain mask that guided the registration, as a segmentation.
    """
    skullStripped = check_skull_stripped(skullStripped)
    settings, card = _resolved(logic, BRAIN_KIND, settings)
    scan, affine = scan_of(scanVolumeNode)
    conditions = _check(logic, card, scanVolumeNode, age, sex, (toAge,), settings)
    parent = scanVolumeNode.GetParentTransformNode()
    localAffine = mrml.volume_affine(scanVolumeNode)
    scene, seed, name = logic.scene, settings.seed, scanVolumeNode.GetName()

    def compute(progress, cancel):
        return _age(logic, card, settings, scan, affine, conditions, float(toAge), skullStripped, progress, cancel)

    def apply(result):
        provenance = dict(result.provenance, slicer={"scan": name})
        add_brain_mask(scene, scanVolumeNode, result.brain_mask, localAffine, parent, provenance)
        aged = add_scan_copy(
            scene, scanVolumeNode, result.image, localAffine, parent, provenance, f"at age {float(toAge):g}", seed
        )
        jacobian = mrml.add_result_volume(
            scene,
            result.log_jacobian,
            localAffine,
            f"{name} atrophy map {float(age):g}-{float(toAge):g} seed {seed}",
            dict(provenance, description="log-Jacobian of the ageing deformation (negative: tissue lost)"),
            parent_transform=parent,
            window=JACOBIAN_WINDOW,
        )
        return logic.kept(aged), logic.kept(jacobian)

    return Task(f"{card.id} ageing of {name}", compute, apply, scene=scene)


def ageing_sweep(
    logic,
    scanVolumeNode,
    settings: RunSettings,
    *,
    age: float,
    ageTo: float,
    count: int,
    sex: str | None = None,
    skullStripped: str = "auto",
) -> Task:
    """The scan at ``count`` ages from ``age`` (the patient's, first frame: the scan itself) to
    ``ageTo``, from one inversion. ``apply`` gives a sequence node indexed by age, with a browser to
    scrub through it (its ID is the sequence's ``SynthBrain.SequenceBrowser`` attribute).
    ``skullStripped`` as for :func:`ageing`."""
    skullStripped = check_skull_stripped(skullStripped)
    settings, card = _resolved(logic, BRAIN_KIND, settings)
    scan, affine = scan_of(scanVolumeNode)
    ages = sweep_ages(age, ageTo, count)
    conditions = _check(logic, card, scanVolumeNode, age, sex, ages, settings)
    unit = card.conditioning.variable(AGE).unit
    scene, sequencesLogic, seed, name = logic.scene, logic.sequencesLogic(), settings.seed, scanVolumeNode.GetName()
    world = mrml.to_world(scanVolumeNode, mrml.volume_affine(scanVolumeNode))

    def compute(progress, cancel):
        return _age(logic, card, settings, scan, affine, conditions, ages, skullStripped, progress, cancel)

    def apply(results):
        title = f"{name} aged {ages[0]:g}-{ages[-1]:g} {unit} seed {seed}"
        # the sequence's frames are in world coordinates: a transformed scan's frames line up with it
        items = [(f"{a:g}", np.asarray(r.image), world, r.provenance) for a, r in zip(ages, results)]
        sweep = {"variable": AGE, "unit": unit, "values": ages, "scan": name}
        summary = dict(results[-1].provenance, conditions=None, description=title, sweep=sweep)
        sequence, _, _ = mrml.add_volume_sequence(scene, items, title, AGE, unit, summary, sequencesLogic)
        return logic.kept(sequence)

    return Task(f"{card.id} ageing sweep of {name}", compute, apply, scene=scene)
