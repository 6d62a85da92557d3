"""The one request check (SynthBrainLib.models.requests): every rule a request must pass against its
model's card, in one place for the command line, the Slicer module and the pipelines; torch-free."""

from __future__ import annotations

import pytest
from tiny_models import guided, tiny_brain_card, tiny_spade_card

from SynthBrainLib.errors import ConditionError, DeviceError
from SynthBrainLib.models.cards import ModelCard, builtin_cards
from SynthBrainLib.models.requests import (
    check_lesion_name,
    check_request,
    lesion_classes,
    resolve_seed,
    resolve_sequence,
)
from SynthBrainLib.models.schema import BRAIN_KIND, IMAGE_KIND, LABELS_KIND, LESION_NAMES


@pytest.fixture(scope="module")
def cards():
    return {
        "brain": ModelCard.from_dict(tiny_brain_card()),
        "guided": ModelCard.from_dict(guided(tiny_brain_card("tiny-guided"))),
        "spade": ModelCard.from_dict(tiny_spade_card()),
        "labels": builtin_cards()["brainspade3d-labels"],
    }


def test_a_sound_request_comes_back_resolved(cards):
    request = check_request(cards["guided"], kind=BRAIN_KIND, conditions={"age": 70, "sex": "MALE"}, seed=3)
    assert request.conditions.real["sex"] == "male", f"the sex as the card spells it: {request.conditions.real}"
    assert request.conditions.real["age"] == 70.0, f"the age in years: {request.conditions.real}"
    assert (request.sampler, request.steps) == ("unipc", 12), f"the fast preset: {request.sampler, request.steps}"
    published = check_request(cards["guided"], preset="published")
    assert (published.sampler, published.steps) == ("ddim", 4), f"the card's: {published.sampler, published.steps}"
    assert request.guidance == 2.0, f"the card's guidance scale: {request.guidance}"
    assert request.seed == 3, f"the seed: {request.seed}"
    assert check_request(cards["brain"]).seed is None, "no seed given: drawn when the request runs"


@pytest.mark.parametrize(
    "card, arguments, message",
    [
        ("labels", {"kind": BRAIN_KIND, "verb": "generate"}, "is a label_generator model; 'generate' needs a"),
        ("brain", {"conditions": {"age": 300}}, "age 300 is outside 44–82 years"),
        ("brain", {"conditions": {}, "raw": {"brain_volume": 2}}, "brain_volume (model units) 2 is outside 0–1"),
        ("brain", {"sampler": "euler"}, "sampler 'euler' is not one of"),
        ("brain", {"steps": 0}, "steps 0 is outside 1–1000"),
        ("brain", {"guidance": 3.0}, "guidance 3: model tiny-brain-ldm was not trained with condition dropout"),
        ("guided", {"guidance": 7.0}, "guidance 7 is outside 1–6 for model tiny-guided"),
        ("brain", {"seed": -1}, "seed -1 is outside 0–"),
        ("brain", {"seed": 1.5}, "seed 1.5 is not a whole number"),
        ("spade", {"sequence": "PD"}, "sequence 'PD' is not one of T1, FLAIR, T2"),
        ("spade", {"steps": 5}, "steps 5: tiny-spade renders in one network pass"),
        ("brain", {"decode": "sliced"}, "decode 'sliced' is not one of auto, full, slab, tiled"),
    ],
    ids=["kind", "condition", "raw", "sampler", "steps", "unguided", "guidance-range", "seed", "seed-fraction"]
    + ["sequence", "one-pass", "decode"],
)
def test_each_rule_refuses_in_one_line(cards, card, arguments, message):
    with pytest.raises(ConditionError) as refused:
        check_request(cards[card], **arguments)
    assert message in str(refused.value), f"the error says {message!r}: {refused.value}"
    assert "\n" not in str(refused.value), f"one line: {refused.value!r}"


def test_device_and_precision_names_are_device_errors(cards):
    with pytest.raises(DeviceError, match="device 'tpu' is not one of auto, cpu, cuda, cuda:N"):
        check_request(cards["brain"], device="tpu")
    with pytest.raises(DeviceError, match="precision 'fp8' is not one of"):
        check_request(cards["brain"], precision="fp8")


def test_a_sequence_is_found_in_any_case(cards):
    assert resolve_sequence(cards["spade"], "flair") == "FLAIR", "lower case"
    assert resolve_sequence(cards["spade"], " T2 ") == "T2", "surrounding spaces"
    assert check_request(cards["spade"], kind=IMAGE_KIND, sequence="t1").sequence == "T1", "through check_request"
    with pytest.raises(ConditionError, match=r"^sequence 3 is not one of T1, FLAIR, T2$"):
        resolve_sequence(cards["spade"], 3)


def test_lesion_names_come_from_the_schema(cards):
    assert tuple(c.name for c in lesion_classes(cards["labels"])) == LESION_NAMES, "the card's lesion classes"
    assert [c.value for c in lesion_classes(cards["labels"])] == [6, 7, 8, 9], "brainSPADE3D's lesion values"
    assert lesion_classes(cards["brain"]) == (), "a model without labels has no lesion class"
    assert check_lesion_name("wmh", cards["labels"].label_names) == "wmh", "a lesion class is accepted"
    with pytest.raises(ConditionError, match="lesion 'gm' is not one of wmh, tumour, edema, gdtumour"):
        check_lesion_name("gm", cards["labels"].label_names)


def test_the_slicer_modules_old_import_of_the_lesion_names_still_works():
    from SynthBrainLib.insertion.segmentations import LESION_NAMES as old_place

    assert old_place is LESION_NAMES, "re-exported, not defined again"


def test_seeds_are_drawn_or_checked():
    drawn = resolve_seed(None)
    assert 0 <= drawn < 2**31, f"a drawn seed: {drawn}"
    assert resolve_seed(7) == 7, "a given seed is kept"


def test_kinds_are_the_pipelines_kinds():
    from SynthBrainLib.pipelines import ConditionalBrainPipeline, LabelGeneratorPipeline, LabelToImagePipeline

    assert ConditionalBrainPipeline.kind == BRAIN_KIND, f"conditional brain: {ConditionalBrainPipeline.kind}"
    assert LabelGeneratorPipeline.kind == LABELS_KIND, f"label generator: {LabelGeneratorPipeline.kind}"
    assert LabelToImagePipeline.kind == IMAGE_KIND, f"label to image: {LabelToImagePipeline.kind}"
