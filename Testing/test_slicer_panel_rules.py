"""The panel's rules (SynthBrainSlicer.panel, .runs), on the real model cards and stand-in widgets."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "SynthBrain"))

import slicer_app  # noqa: E402
from tiny_models import tiny_brain_card  # noqa: E402

from SynthBrainLib.errors import ConditionError, ModelNotFoundError  # noqa: E402
from SynthBrainLib.models.cards import ModelCard, builtin_cards  # noqa: E402
from SynthBrainSlicer import panel  # noqa: E402
from SynthBrainSlicer.choices import Precision, Sampler, Sex  # noqa: E402
from SynthBrainSlicer.runs import PanelRuns  # noqa: E402


@pytest.fixture(scope="module")
def brain_ldm():
    return builtin_cards()["brain-ldm"]


def parameters(conditions=(), run=(), sweep=()):
    """The panel's parameter node as its packs (plain namespaces with the same fields)."""
    from SynthBrainSlicer.choices import Device

    return types.SimpleNamespace(
        brainModel="brain-ldm",
        conditions=types.SimpleNamespace(
            **{
                **dict(age=60.0, ventricularVolume=30.0, brainVolume=1300.0, sex=Sex.MALE, rawValues=False),
                **dict(measureVolumes=True),
                **dict(conditions),
            }
        ),
        run=types.SimpleNamespace(
            **{
                **dict(preview=False, sampler=Sampler.DDIM, steps=20, seed=3, precision=Precision.AUTO),
                **dict(device=Device.AUTO),
                **dict(run),
            }
        ),
        sweep=types.SimpleNamespace(**{**dict(ageFrom=50.0, ageTo=80.0, steps=4, typicalVolumes=False), **dict(sweep)}),
    )


def test_assumed_mapping_is_marked_and_published_one_is_not(brain_ldm):
    ventricles = panel.slider_settings(brain_ldm.conditioning.variable("ventricular_volume"))
    age = panel.slider_settings(brain_ldm.conditioning.variable("age"))
    assert "[assumed]" in ventricles.label, ventricles.label
    assert "Raw model values" in ventricles.toolTip, "the tooltip offers the raw value"
    assert "[assumed]" not in age.label, age.label


def test_brain_ldm_age_follows_the_authors_demo_app(brain_ldm):
    from SynthBrainLib.models.conditioning import resolve_conditions

    resolved = resolve_conditions(brain_ldm.conditioning, {"age": 63.0, "sex": "male"})
    assert resolved.model["age"] == pytest.approx((63 - 44) / (82 - 44)), "age maps as (years - 44) / (82 - 44)"
    assert resolved.model["sex"] == 1.0, "male = 1 in the authors' app"


def test_raw_slider_takes_the_model_input_range_and_its_default(brain_ldm):
    variable = brain_ldm.conditioning.variable("ventricular_volume")
    raw = panel.slider_settings(variable, raw=True)
    assert (raw.minimum, raw.maximum) == (0.0, 1.0), "the model's own input range"
    assert raw.default == pytest.approx(0.2), "the card default (20 mL) as a model input"
    assert raw.suffix == "", "no unit on a model input"
    published = panel.slider_settings(brain_ldm.conditioning.variable("age"), raw=True)
    assert published.maximum == 82.0, "raw mode leaves published mappings in real units"


def test_configure_slider_stays_within_the_parameter_bounds(brain_ldm):
    slider = slicer_app.ctkSliderWidget()
    panel.configure_slider(
        slider, panel.slider_settings(brain_ldm.conditioning.variable("brain_volume")), (0.0, 1500.0)
    )
    assert slider.maximum == 1500.0, "a card range wider than the parameter's validation bound is cut to the bound"
    assert slider.suffix == " mL", slider.suffix


def test_condition_values_split_raw_from_real_units(brain_ldm):
    p = parameters(conditions={"rawValues": True, "ventricularVolume": 0.7})
    conditions, raw = panel.brain_conditions(p, brain_ldm)
    assert raw == {"ventricular_volume": 0.7, "brain_volume": 1300.0}, raw
    assert conditions == {"age": 60.0, "sex": "male"}, conditions


def test_sweep_holds_conditions_but_lets_age_typical_volumes_follow_age():
    data = tiny_brain_card()
    data["conditioning"]["variables"][2]["default_from"] = {"intercept": -50.0, "coefficients": {"age": 1.0}}
    card = ModelCard.from_dict(data)
    conditions = {"age": 60.0, "sex": "female", "ventricular_volume": 20.0, "brain_volume": 1300.0}
    typical = panel.sweep_conditions(card, conditions, typicalVolumes=True)
    assert typical == {"sex": "female", "brain_volume": 1300.0}, typical
    fixed = panel.sweep_conditions(card, conditions, typicalVolumes=False)
    assert fixed == {"sex": "female", "ventricular_volume": 20.0, "brain_volume": 1300.0}, fixed


def test_quick_preview_replaces_sampler_and_steps_in_every_request(brain_ldm):
    p = parameters(run={"preview": True})
    assert panel.brain_request(p, brain_ldm)["settings"].preview is True, "generate"
    sweep = panel.sweep_request(p, brain_ldm)["settings"]
    assert sweep.preview is True, f"sweep: {sweep}"
    assert (sweep.sampler, sweep.steps) == (None, None), (
        f"the preview's own sampler and steps, not the Advanced ones: {sweep}"
    )
    compare = panel.compare_request(({"age": 50.0}, {}), p, brain_ldm)
    assert compare["settings"].preview is True, f"compare: {compare}"
    assert compare["conditionsA"] == {"age": 50.0}, f"the pinned conditions are A: {compare}"


def test_every_request_carries_the_run_settings_whole(brain_ldm):
    from SynthBrainSlicer.settings import RunSettings

    settings = panel.brain_request(parameters(), brain_ldm)["settings"]
    expected = RunSettings(model="brain-ldm", seed=3, sampler="ddim", steps=20, device="auto", precision=None)
    assert settings == expected, f"one frozen value with the panel's choices: {settings}"


def test_fill_combo_keeps_the_selection_and_emits_nothing():
    combo = slicer_app.ctkComboBox()
    emitted = []
    combo.currentIndexChanged.connect(emitted.append)
    panel.fill_combo(combo, [("a", "a"), ("b", "b")], "b")
    assert combo.currentIndex == 1, "the current model stays selected"
    panel.fill_combo(combo, [("a", "a")], "gone")
    assert combo.itemText(combo.currentIndex) == "gone (not installed)", "an unknown model stays listed"
    assert emitted == [], "refilling emits nothing"
    assert not combo.signalsBlocked(), "signals are unblocked afterwards"


def test_model_selectors_follow_the_parameters_both_ways():
    combo = slicer_app.ctkComboBox()
    panel.fill_combo(combo, [("x", "x"), ("y", "y")], "x")
    params = types.SimpleNamespace(brainModel="x")
    selectors = panel.ModelSelectors({"brainModel": combo})
    selectors.connect(params)
    combo.choose(1)
    assert params.brainModel == "y", "a choice writes the field"
    params.brainModel = "x"
    selectors.update()
    assert combo.currentIndex == 0, "a field change selects the item"
    selectors.disconnect()
    combo.choose(1)
    assert params.brainModel == "x", "disconnected selectors write nothing"


@pytest.mark.parametrize(
    "error, sentence",
    [
        (ConditionError("age 120 is outside 44–82 years"), "Age 120 is outside 44–82 years."),
        (ModelNotFoundError("weights of brain-ldm are not installed."), "Weights of brain-ldm are not installed."),
    ],
)
def test_library_errors_are_shown_as_their_sentence(error, sentence):
    assert panel.error_message(error) == sentence


def test_unexpected_errors_are_one_line_pointing_at_the_console():
    text = panel.error_message(RuntimeError("boom\nTraceback details"))
    assert text == "SynthBrain failed unexpectedly (RuntimeError: boom); details are in the Python console.", text


def test_gpu_out_of_memory_says_what_to_do():
    oom = type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2 GiB")
    assert "choose CPU as the device" in panel.error_message(oom)


def test_measured_text_puts_requested_beside_measured():
    provenance = {"conditions": {"real_units": {"ventricular_volume": 30, "brain_volume": 1300}}}
    text = panel.measured_text({"ventricular_volume": 23.44, "brain_volume": 1262.2}, provenance)
    assert text == "Measured in the result: ventricles 23.4 mL (asked 30), brain 1262 mL (asked 1300).", text


def test_a_task_that_cannot_be_built_starts_no_run():
    button, bar, status = slicer_app.QPushButton(), slicer_app.QProgressBar(), slicer_app.QLabel()
    button.text = "Generate"
    shown = []
    runs = PanelRuns({"generateButton": button}, bar, status, shown.append)

    def bad_task():
        raise ConditionError("age 300 is outside 44–82 years")

    assert not runs.click(button, bad_task, lambda result: None), "no run"
    assert isinstance(shown[0], ConditionError), shown
    assert button.text == "Generate", "the button is unchanged"
    assert not runs.running, "no run is going"
