"""Real units to model units, ranges and raw values."""

from __future__ import annotations

import pytest

from SynthBrainLib.errors import ConditionError
from SynthBrainLib.models.cards import builtin_cards
from SynthBrainLib.models.conditioning import resolve_conditions


@pytest.fixture(scope="module")
def ldm():
    return builtin_cards()["brain-ldm"].conditioning


def test_real_units_map_linearly(ldm):
    c = resolve_conditions(ldm, {"age": 82, "sex": "Male", "ventricular_volume": 50, "brain_volume": 1400})
    assert c.model == pytest.approx({"sex": 1.0, "age": 1.0, "ventricular_volume": 0.5, "brain_volume": 0.5})
    assert c.real["sex"] == "male"
    assert c.given_as == {"sex": "real", "age": "real", "ventricular_volume": "real", "brain_volume": "real"}
    assert c.vector() == pytest.approx([1.0, 1.0, 0.5, 0.5])


def test_defaults_fill_missing_values(ldm):
    c = resolve_conditions(ldm, {"age": 44})
    assert c.model["age"] == 0.0
    assert c.given_as["brain_volume"] == "default"
    assert c.model["brain_volume"] == pytest.approx(0.4)


def test_raw_values_bypass_the_assumed_mapping(ldm):
    c = resolve_conditions(ldm, {"age": 60}, raw={"brain_volume": 0.25, "sex": 1})
    assert c.model["brain_volume"] == 0.25, f"a raw value is used as given: {c.model}"
    assert c.given_as["brain_volume"] == "raw", f"a raw value is recorded as raw: {c.given_as}"
    assert c.real["brain_volume"] == pytest.approx(1200.0), f"a raw value maps back to real units: {c.real}"
    assert c.real["sex"] == "male", f"raw sex 1 is male: {c.real}"


@pytest.mark.parametrize(
    "values, raw, message",
    [
        ({"age": 300}, None, "age 300 is outside 44–82 years"),
        ({"age": 43.9}, None, "age 43.9 is outside 44–82 years"),
        ({"ventricular_volume": -1}, None, "ventricular_volume -1 is outside 0–100 mL"),
        ({"sex": "other"}, None, "sex 'other' is not one of female, male"),
        ({"age": "old"}, None, "age 'old' is not a number"),
        ({"age": float("nan")}, None, "age nan is not a finite number"),
        (
            {"height": 180},
            None,
            "unknown condition 'height'; this model takes: sex, age, ventricular_volume, brain_volume",
        ),
        (None, {"age": 1.5}, "age (model units) 1.5 is outside 0–1"),
        ({"age": 60}, {"age": 0.5}, "age was given both in real units and as a raw model value; give one"),
    ],
)
def test_bad_values_are_rejected_with_the_range(ldm, values, raw, message):
    with pytest.raises(ConditionError) as err:
        resolve_conditions(ldm, values, raw)
    assert str(err.value) == message


def test_lesion_fractions_identity_mapping():
    cond = builtin_cards()["brainspade3d-labels"].conditioning
    c = resolve_conditions(cond, {"wmh": 0.05, "edema": 0.2})
    assert c.model == pytest.approx({"wmh": 0.05, "tumour": 0.0, "edema": 0.2, "gdtumour": 0.0})
    with pytest.raises(ConditionError, match="wmh 0.5 is outside 0–0.0923 fraction"):
        resolve_conditions(cond, {"wmh": 0.5})


def test_default_from_other_variables():
    from tiny_models import tiny_brain_card

    from SynthBrainLib.models.cards import ModelCard

    data = tiny_brain_card()
    data["conditioning"]["variables"][2]["default_from"] = {
        "intercept": -50.0,
        "coefficients": {"age": 1.0, "sex": 5.0},
    }
    cond = ModelCard.from_dict(data).conditioning
    c = resolve_conditions(cond, {"age": 80, "sex": "male"})
    assert c.real["ventricular_volume"] == pytest.approx(35.0)
    assert c.given_as["ventricular_volume"] == "default for age 80, sex male"
    assert resolve_conditions(cond, {"age": 45}).real["ventricular_volume"] == 0.0  # clipped to the range
    assert resolve_conditions(cond, {"age": 80, "ventricular_volume": 12}).real["ventricular_volume"] == 12.0
    assert list(c.real) == ["sex", "age", "ventricular_volume", "brain_volume"]
    data["conditioning"]["variables"][2]["default_from"]["coefficients"] = {"height": 1.0}
    with pytest.raises(
        Exception, match="default_from.coefficients.height' must name a variable that has a plain default"
    ):
        ModelCard.from_dict(data)


def test_a_log_reference_puts_the_typical_value_mid_range_and_round_trips():
    import copy
    import math

    from SynthBrainLib.models.cards import ModelCard

    data = copy.deepcopy(builtin_cards()["brainspade3d-labels"].to_dict())
    for v in data["conditioning"]["variables"]:
        v["range"], v["log_reference"], v["model_range"] = [0.0, 0.06], 0.005, [0.0, 1.0]
        v.pop("typical_range", None)
    card = ModelCard.from_dict(data)
    c = resolve_conditions(card.conditioning, {"wmh": 0.005, "tumour": 0.06})
    assert c.model["wmh"] == pytest.approx(math.log(2) / math.log(13)), "ln(1 + r/r) / ln(1 + hi/r)"
    assert c.model["tumour"] == pytest.approx(1.0), "the top of the range is 1"
    assert c.model["edema"] == 0.0, "none asked is 0"
    raw = resolve_conditions(card.conditioning, raw={"wmh": c.model["wmh"]})
    assert raw.real["wmh"] == pytest.approx(0.005), "a raw model value maps back to its real units"
    data["conditioning"]["variables"][0]["log_reference"] = 0.0
    with pytest.raises(Exception, match="log_reference"):
        ModelCard.from_dict(data)
