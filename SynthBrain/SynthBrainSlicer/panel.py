"""The SynthBrain panel's rules, without Qt: what the sliders show for a model card, which conditions
a run sends, the model selectors, and the sentences the user reads.

``SynthBrain.py`` only wires these to widgets. Widgets are used through the attributes PythonQt
gives them (``slider.minimum = 0``, ``combo.currentIndex``), so these functions are tested with
pytest on stand-in widgets and the real model cards.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from SynthBrainLib.errors import SynthBrainError

from .choices import AGE
from .dependencies import DependencyError
from .i18n import _

#: Widest values a parameter may ever hold (validation of saved scenes); sliders take each card's range.
AGE_BOUNDS = (0.0, 150.0)
VOLUME_BOUNDS = (0.0, 10000.0)
FRACTION_BOUNDS = (0.0, 1.0)
SIZE_BOUNDS = (1, 4096)
SPACING_BOUNDS = (0.01, 100.0)

#: parameter field -> (card condition, slider, label) for the conditioned-brain model.
BRAIN_CONDITIONS = {
    "age": ("age", "ageSlider", "ageLabel"),
    "ventricularVolume": ("ventricular_volume", "ventricularVolumeSlider", "ventricularVolumeLabel"),
    "brainVolume": ("brain_volume", "brainVolumeSlider", "brainVolumeLabel"),
}
#: parameter field -> (card condition, slider, label) for the label generator.
LESION_CONDITIONS = {
    "wmh": ("wmh", "wmhSlider", "wmhLabel"),
    "tumour": ("tumour", "tumourSlider", "tumourLabel"),
    "edema": ("edema", "edemaSlider", "edemaLabel"),
    "gdtumour": ("gdtumour", "gdtumourSlider", "gdtumourLabel"),
}
FIELD_BOUNDS = {
    "age": AGE_BOUNDS,
    "ventricularVolume": VOLUME_BOUNDS,
    "brainVolume": VOLUME_BOUNDS,
    "wmh": FRACTION_BOUNDS,
    "tumour": FRACTION_BOUNDS,
    "edema": FRACTION_BOUNDS,
    "gdtumour": FRACTION_BOUNDS,
}


# ---- sliders from model cards ----------------------------------------------------------------------
@dataclass(frozen=True)
class SliderSettings:
    """What a condition slider shows for one card variable."""

    minimum: float
    maximum: float
    singleStep: float
    decimals: int
    default: float
    suffix: str
    label: str
    toolTip: str
    #: the slider holds the model's own input value (0-1), not real units
    raw: bool = False


def is_assumed(variable) -> bool:
    """Whether the card marks this variable's real-unit mapping as our assumption, not published."""
    return getattr(variable, "normalisation", "") == "assumed"


def _step(lo: float, hi: float) -> tuple[float, int]:
    step = 10 ** math.floor(math.log10((hi - lo) / 100.0)) if hi > lo else 1.0
    return float(step), max(0, -int(math.floor(math.log10(step))))


def slider_settings(variable, raw: bool = False) -> SliderSettings:
    """Range, step, unit and text of a continuous card variable's slider (never hard-coded).

    ``raw``: for a variable whose mapping is assumed, the slider takes the model's input value
    (``variable.model_range``, usually 0-1) so that the assumption is bypassed.
    """
    raw = raw and is_assumed(variable)
    if raw:
        lo, hi = (float(v) for v in variable.model_range)
        rlo, rhi = variable.range
        default = lo + (float(variable.default) - rlo) / (rhi - rlo) * (hi - lo) if rhi > rlo else lo
        step, decimals = _step(lo, hi)
        label = _("{name} (model input):").format(name=variable.label)
        tip = _("The model's own input value, passed as is (the mapping to {unit} is not published). {note}").format(
            unit=variable.unit or _("real units"), note=variable.note
        )
        return SliderSettings(lo, hi, step, decimals, default, "", label, tip.strip(), True)
    lo, hi = (float(v) for v in variable.range)
    step, decimals = _step(lo, hi)
    unit = variable.unit if variable.unit and variable.unit != "fraction" else ""
    label = f"{variable.label} ({unit}):" if unit else f"{variable.label}:"
    tip = variable.note or variable.label
    if is_assumed(variable):
        label = _("{label} [assumed]").format(label=label.rstrip(":")) + ":"
        tip = _(
            "Assumed mapping: the model's authors publish no mapping from {unit} to the model's input. {note} "
            "Tick 'Raw model values' to give the input itself."
        ).format(unit=unit or _("real units"), note=variable.note)
    return SliderSettings(
        lo, hi, step, decimals, float(variable.default), f" {unit}" if unit else "", label, tip, False
    )


def configure_slider(slider, settings: SliderSettings, bounds: tuple[float, float]) -> None:
    """Apply ``settings`` to a ctkSliderWidget, within the parameter's validation ``bounds``."""
    slider.decimals = settings.decimals
    slider.singleStep = settings.singleStep
    slider.minimum = max(settings.minimum, bounds[0])
    slider.maximum = min(settings.maximum, bounds[1])
    slider.suffix = settings.suffix
    slider.toolTip = settings.toolTip


def condition_values(
    card,
    fields: Mapping[str, tuple[str, str, str]],
    values: Mapping[str, Any],
    raw: bool = False,
    sex: str | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """``(conditions, raw)`` to send for a card, from the panel's field values.

    ``fields`` maps parameter fields to card conditions (:data:`BRAIN_CONDITIONS`); conditions the
    card lacks are left out. With ``raw``, assumed variables go in ``raw`` (model input values).
    """
    names = card.conditioning.names
    conditions: dict[str, Any] = {}
    rawValues: dict[str, float] = {}
    for field, (name, _slider, _label) in fields.items():
        if name not in names or field not in values:
            continue
        variable = card.conditioning.variable(name)
        if raw and is_assumed(variable) and variable.kind == "continuous":
            rawValues[name] = float(values[field])
        else:
            conditions[name] = values[field]
    if sex is not None and "sex" in names:
        conditions["sex"] = sex
    return conditions, rawValues


def sweep_conditions(card, conditions: Mapping[str, Any], typicalVolumes: bool) -> dict[str, Any]:
    """The conditions an age sweep holds fixed: all but age; with ``typicalVolumes``, conditions
    whose card default follows age (``default_from``) are left unset so that they follow it."""
    kept = {k: v for k, v in conditions.items() if k != AGE}
    if typicalVolumes:
        kept = {
            k: v
            for k, v in kept.items()
            if not (k in card.conditioning.names and card.conditioning.variable(k).default_from)
        }
    return kept


# ---- applying a card to the panel ------------------------------------------------------------------
def apply_conditions(
    ui, parameters, card, fields: Mapping[str, tuple[str, str, str]], setDefaults: bool, raw: bool = False
) -> None:
    """Sliders and labels of ``fields`` take the card's ranges, units and notes; with ``setDefaults``
    (a user's new choice of model) the parameters take the card's defaults. Conditions the card
    lacks are disabled."""
    for field, (name, sliderName, labelName) in fields.items():
        slider, label = getattr(ui, sliderName), getattr(ui, labelName)
        present = name in card.conditioning.names and card.conditioning.variable(name).kind == "continuous"
        slider.enabled = label.enabled = present
        if not present:
            slider.toolTip = _("Model {model} has no '{name}' condition.").format(model=card.id, name=name)
            continue
        settings = slider_settings(card.conditioning.variable(name), raw=raw)
        configure_slider(slider, settings, FIELD_BOUNDS[field])
        label.text, label.toolTip = settings.label, settings.toolTip
        if setDefaults:
            setattr(parameters, field, min(max(settings.default, slider.minimum), slider.maximum))


def apply_brain_card(ui, parameters, card, setDefaults: bool) -> None:
    """The conditioned-brain section and the age sweep for a brain model's card (``parameters``: the
    whole parameter node; its ``conditions``, ``sweep`` and ``run`` packs take the card's defaults)."""
    from .choices import Sampler, Sex

    conditions = parameters.conditions
    apply_conditions(ui, conditions, card, BRAIN_CONDITIONS, setDefaults, raw=conditions.rawValues)
    names = card.conditioning.names
    ui.sexSelector.enabled = "sex" in names
    if "sex" in names:
        variable = card.conditioning.variable("sex")
        ui.sexSelector.toolTip = variable.note
        if setDefaults and variable.default in [s.value for s in Sex]:
            conditions.sex = Sex(variable.default)
    ui.sweepCollapsibleButton.enabled = ui.ageingCollapsibleButton.enabled = AGE in names
    if AGE in names:
        settings = slider_settings(card.conditioning.variable(AGE))
        for field, end in (("ageFrom", settings.minimum), ("ageTo", settings.maximum)):
            configure_slider(getattr(ui, "sweep" + field[0].upper() + field[1:] + "Slider"), settings, AGE_BOUNDS)
            if setDefaults:
                setattr(parameters.sweep, field, end)
        for slider in (ui.ageingAgeSlider, ui.ageingToAgeSlider):
            configure_slider(slider, settings, AGE_BOUNDS)
    if card.sampling is not None:
        ui.stepsSpinBox.maximum = card.sampling.max_steps
        if setDefaults:
            parameters.run.sampler, parameters.run.steps = Sampler.DEFAULT, card.sampling.default_steps


# ---- what a run sends -------------------------------------------------------------------------------
def brain_conditions(parameters, card) -> tuple[dict[str, Any], dict[str, float]]:
    """``(conditions, raw)`` of the conditioned-brain section."""
    pack = parameters.conditions
    values = {field: getattr(pack, field) for field in BRAIN_CONDITIONS}
    return condition_values(card, BRAIN_CONDITIONS, values, raw=pack.rawValues, sex=pack.sex.value)


def run_settings(parameters, model: str, seed: int, sampling: bool = True):
    """The :class:`~SynthBrainSlicer.settings.RunSettings` of a run started from the panel. Quick
    preview takes the pipeline's preview sampler and steps, not the Advanced ones (sweeps too);
    'Model default' leaves sampler and steps to the preset (fast, or the card's published ones).
    ``sampling=False``: the model's own sampler and steps (label maps and painted segmentations)."""
    from .settings import RunSettings

    run = parameters.run
    chosen = run.sampler.samplerName if sampling and not run.preview else None
    return RunSettings(
        model=model or None,
        seed=seed,
        sampler=chosen,
        steps=run.steps if chosen is not None else None,
        device=run.device.value,
        precision=run.precision.precisionName,
        preview=sampling and run.preview,
    )


def brain_request(parameters, card) -> dict[str, Any]:
    """Keyword arguments of ``logic.brainTask`` for the panel's state."""
    conditions, raw = brain_conditions(parameters, card)
    settings = run_settings(parameters, parameters.brainModel, parameters.run.seed)
    return dict(settings=settings, raw=raw, measure=parameters.conditions.measureVolumes, **conditions)


def sweep_request(parameters, card) -> dict[str, Any]:
    """Keyword arguments of ``logic.ageSweepTask`` (ages included) for the panel's state."""
    conditions, raw = brain_conditions(parameters, card)
    sweep = parameters.sweep
    return dict(
        ageFrom=sweep.ageFrom,
        ageTo=sweep.ageTo,
        count=sweep.steps,
        settings=run_settings(parameters, parameters.brainModel, parameters.run.seed),
        raw=raw,
        **sweep_conditions(card, conditions, sweep.typicalVolumes),
    )


def ageing_request(parameters, sweep: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``logic.ageingTask`` (or, with ``sweep``, ``logic.ageingSweepTask``: the
    ages from the age at the scan to the target age) for the panel's state."""
    pack = parameters.ageing
    settings = run_settings(parameters, parameters.brainModel, parameters.run.seed, sampling=False)
    ages = dict(ageTo=pack.toAge, count=pack.count) if sweep else dict(toAge=pack.toAge)
    return dict(
        scanVolumeNode=pack.scan,
        settings=settings,
        age=pack.age,
        sex=pack.sex.value,
        skullStripped=pack.skullStripped.value,
        **ages,
    )


def compare_request(pinned: tuple[dict, dict], parameters, card) -> dict[str, Any]:
    """Keyword arguments of ``logic.compareTask``: the pinned conditions as A, the current ones as B."""
    (conditionsA, rawA), (conditionsB, rawB) = pinned, brain_conditions(parameters, card)
    settings = run_settings(parameters, parameters.brainModel, parameters.run.seed)
    return dict(conditionsA=conditionsA, conditionsB=conditionsB, rawA=rawA, rawB=rawB, settings=settings)


def labels_request(parameters, card) -> dict[str, Any]:
    """Keyword arguments of ``logic.labelsTask``: the lesion sliders, with the painting section's seed."""
    pack = parameters.painting
    conditions, raw = condition_values(card, LESION_CONDITIONS, {f: getattr(pack, f) for f in LESION_CONDITIONS})
    settings = run_settings(parameters, parameters.labelModel, pack.seed, sampling=False)
    return dict(settings=settings, raw=raw, **conditions)


def painting_settings(parameters):
    """Run settings of a synthesis or insertion on painted segments (the painting section's seed)."""
    return run_settings(parameters, parameters.imageModel, parameters.painting.seed, sampling=False)


def describe_conditions(conditions: Mapping[str, Any], raw: Mapping[str, float] | None = None) -> str:
    """'age 70, sex female, ventricular_volume (model input) 0.3'."""
    parts = [f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in conditions.items()]
    parts += [_("{name} (model input) {value:g}").format(name=k, value=v) for k, v in (raw or {}).items()]
    return ", ".join(parts) or _("card defaults")


# ---- model selectors ---------------------------------------------------------------------------------
def fill_combo(combo, items: Iterable[tuple[str, Any]], current: str | None, missing: str | None = None) -> None:
    """Replace a combo box's (text, data) items without emitting signals and select ``current``.

    An unknown ``current`` (a model saved in the scene, not installed here) stays listed as
    "(not installed)" (or ``missing``); an empty one selects nothing.
    """
    wasBlocked = combo.blockSignals(True)
    try:
        combo.clear()
        for text, data in items:
            combo.addItem(text, data)
        select_data(combo, current, missing)
    finally:
        combo.blockSignals(wasBlocked)


def select_data(combo, value: str | None, missing: str | None = None) -> None:
    """Select the item whose data is ``value`` (adding a "(not installed)" item, or ``missing``
    formatted with ``model``, if it is unknown)."""
    index = combo.findData(value) if value else -1
    if value and index < 0:
        combo.addItem((missing or _("{model} (not installed)")).format(model=value), value)
        index = combo.count - 1
    if combo.currentIndex != index:
        combo.currentIndex = index


def selected_data(combo) -> str:
    """The data (model id) of the selected item, or ''."""
    index = combo.currentIndex
    return str(combo.itemData(index) or "") if index >= 0 else ""


class ModelSelectors:
    """Keeps the three model selectors and the parameter node's model fields in step.

    Slicer's ``connectGui`` cannot bind them: since Slicer 5.8 its built-in combo-box connector
    claims every QComboBox/ctkComboBox bound to a ``str`` and demands a fixed ``Choice`` list, while
    the installed models change at run time. So the selectors carry no ``SlicerParameterName`` and
    are synced here: a user's choice writes the field, a field change (a loaded scene, the console)
    selects the item.
    """

    def __init__(self, selectors: Mapping[str, Any]) -> None:
        #: parameter field -> combo box, e.g. {"brainModel": ui.brainModelSelector}
        self.selectors = dict(selectors)
        self._parameters = None
        self._slots: dict[str, Any] = {}

    def connect(self, parameters) -> None:
        self.disconnect()
        self._parameters = parameters
        for field, combo in self.selectors.items():

            def slot(index, _f=field, _c=combo):
                return self._chosen(_f, _c)

            combo.currentIndexChanged.connect(slot)
            self._slots[field] = slot
        self.update()

    def disconnect(self) -> None:
        for field, slot in self._slots.items():
            self.selectors[field].currentIndexChanged.disconnect(slot)
        self._slots.clear()
        self._parameters = None

    def _chosen(self, field: str, combo) -> None:
        if self._parameters is not None and getattr(self._parameters, field) != selected_data(combo):
            setattr(self._parameters, field, selected_data(combo))

    def update(self) -> None:
        """Select each field's model in its combo box (without echoing back)."""
        if self._parameters is None:
            return
        for field, combo in self.selectors.items():
            wasBlocked = combo.blockSignals(True)
            try:
                select_data(combo, getattr(self._parameters, field))
            finally:
                combo.blockSignals(wasBlocked)


def fill_model_selectors(modelSelector, selectors: "ModelSelectors", statuses, parameters, defaultModel) -> list[str]:
    """Fill the Model section's list (every card) and each kind's selector (its cards, "(not
    installed)" marked). A field still empty (a new scene) gets ``defaultModel(kind)``; returns
    the kinds that got one (their sliders then take the card's defaults)."""
    from .choices import KIND_NAMES, MODEL_FIELDS

    shown = selected_data(modelSelector) or (statuses[0].id if statuses else None)
    fill_combo(modelSelector, [(f"{s.id} ({KIND_NAMES.get(s.kind, s.kind)})", s.id) for s in statuses], shown)
    defaulted = []
    for field, kind in MODEL_FIELDS.items():
        items = [
            (s.id if s.installed else _("{model} (not installed)").format(model=s.id), s.id)
            for s in statuses
            if s.kind == kind
        ]
        fill_combo(selectors.selectors[field], items, getattr(parameters, field))
        if not getattr(parameters, field):
            setattr(parameters, field, defaultModel(kind) or "")
            defaulted.append(kind)
    selectors.update()
    return defaulted


# ---- sentences ---------------------------------------------------------------------------------------
def is_user_error(exc: BaseException) -> bool:
    """SynthBrainLib's errors (one-line messages) and failed installs. (SynthBrainLib.errors
    imports without torch, so this works before the dependencies are installed.)"""
    return isinstance(exc, (SynthBrainError, DependencyError))


def _install_words(remedy) -> str:
    if remedy.detail == "download":
        return _("use Download weights in the Model section")
    return _("use Import model... in the Model section")


#: The panel's words for the library's remedies (SynthBrainLib.errors.Remedy): buttons, not flags.
REMEDY_WORDS = {
    "overwrite": lambda r: _("choose another name, or allow replacing the file"),
    "allow_unverified": lambda r: _(
        "to import your own weights anyway, use the console: logic.importModel(path, allowUnverified=True)"
    ),
    "alignment_centre": lambda r: _(
        "from the console, synthesizeFromSegmentation(..., alignment='centre') moves the labels into view"
    ),
    "verify_weights": lambda r: _("check the model's status in the Model section, or choose Precision float32"),
    "more_precision": lambda r: _("or choose Precision float32"),
    "install_weights": _install_words,
    "reinstall_weights": lambda r: _("delete the model's folder in the model cache, then {how}").format(
        how=_install_words(r)
    ),
    "name_the_model": lambda r: _("choose the model and the weights the file belongs to"),
    "new_model_id": lambda r: _("import it under an id of its own (console: logic.importModel(path, model='new-id'))"),
    "other_home": lambda r: _("set SYNTHBRAIN_HOME to a folder you can write to, then restart Slicer"),
    "insert_lesions": lambda r: _("to put lesions into a loaded scan, use Insert lesions into this scan"),
    "accept_licence": lambda r: _("read the licence, then tick 'I accept the model's licence' and download again"),
}


def error_message(exc: BaseException) -> str:
    """One clear sentence for the user; unexpected errors go to the log with their traceback."""
    name = type(exc).__name__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SynthBrainError):
        remedy = getattr(exc, "remedy", None)
        text = exc.message if remedy is None else f"{exc.message}; {REMEDY_WORDS[remedy.action](remedy)}"
        text = text or name
    elif is_user_error(exc):
        text = first or name
    elif name == "OutOfMemoryError":
        text = _("the GPU ran out of memory; choose CPU as the device, or close other programs that use the GPU")
    else:
        logging.error("SynthBrain failed", exc_info=exc)
        text = _("SynthBrain failed unexpectedly ({kind}: {message}); details are in the Python console").format(
            kind=name, message=first or _("no message")
        )
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def measured_text(measured: Mapping[str, float] | None, provenance: Mapping[str, Any] | None) -> str:
    """'Measured in the result: ventricles 23.4 mL (asked 30), brain 1262 mL (asked 1300).'

    ``provenance``: the result's; the requested values are its conditions in real units.
    """
    if not measured:
        return ""
    requested = ((provenance or {}).get("conditions") or {}).get("real_units") or {}
    parts = []
    for key, what in (("ventricular_volume", _("ventricles")), ("brain_volume", _("brain"))):
        if key in measured:
            asked = requested.get(key)
            value = f"{measured[key]:.1f} mL" if measured[key] < 100 else f"{measured[key]:.0f} mL"
            parts.append(
                _("{what} {value} (asked {asked:g})").format(what=what, value=value, asked=float(asked))
                if isinstance(asked, (int, float))
                else f"{what} {value}"
            )
    return _("Measured in the result: {parts}.").format(parts=", ".join(parts)) if parts else ""
