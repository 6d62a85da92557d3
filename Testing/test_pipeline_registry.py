"""A model kind is one pipeline class plus a card: the class registers itself, checks its own card
rules, and every caller (loading, batch planning, benchmarks) asks it instead of switching on the kind."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import tiny_brain_card, write_model_folder

from synthbrain_dev.bench import PathSpec, run_request
from SynthBrainLib.batch import plan_batch
from SynthBrainLib.errors import CardError
from SynthBrainLib.models.cards import ModelCard, card_field_error
from SynthBrainLib.pipelines import PIPELINES, ConditionalBrainPipeline, load_pipeline, pipeline_class


@pytest.fixture
def negative_kind():
    """A new kind defined the only way a new kind needs: one class (here: a brain model whose images
    are shown inverted, and whose cards must allow at least 5 steps)."""

    class NegativeBrainPipeline(ConditionalBrainPipeline):
        kind = "negative_brain"

        @classmethod
        def check_card(cls, card: ModelCard) -> None:
            super().check_card(card)
            if card.sampling.max_steps < 5:
                raise card_field_error(card, "sampling.max_steps", "must be at least 5 for kind negative_brain")

        def raw_output(self, decoded):
            lo, hi = self.card.output.intensity_range
            return (hi + lo) - super().raw_output(decoded)

    yield NegativeBrainPipeline
    PIPELINES.pop("negative_brain", None)


def test_the_shipped_kinds_are_registered_by_their_classes():
    assert set(PIPELINES) >= {"conditional_latent_diffusion", "label_generator", "label_to_image"}, (
        f"registered kinds: {sorted(PIPELINES)}"
    )


def test_a_new_kind_is_one_class_plus_a_card(negative_kind, tmp_path):
    card = tiny_brain_card("tiny-negative")
    card["kind"] = "negative_brain"
    folder = write_model_folder(card, tmp_path / "tiny-negative")
    pipe = load_pipeline(str(folder), device="cpu")
    assert type(pipe) is negative_kind, f"the card's kind picks the new class, got {type(pipe).__name__}"
    plain = ConditionalBrainPipeline(
        ModelCard.from_dict({**card, "kind": "conditional_latent_diffusion"}), pipe.networks, device="cpu"
    )
    a = pipe.generate(seed=3, steps=4).image
    b = plain.generate(seed=3, steps=4).image
    lo, hi = pipe.card.output.intensity_range
    assert np.allclose(a, (hi + lo) - b, atol=1e-5), "the new class's own post-processing is what generate returns"
    plan = plan_batch(pipe.card, str(folder), count=2, base_seed=1)
    assert len(plan.conditions) == 2, "batch plans a new kind that generates from conditions without being told"
    out = run_request(pipe, PathSpec("tiny", "ddim", 4, "float32", "full"), seed=3)
    assert out.shape == (1, *pipe.card.output.shape), f"the benchmark runs the new kind through its hooks: {out.shape}"


def test_a_new_kind_checks_its_own_card_rules(negative_kind):
    card = tiny_brain_card("tiny-negative")
    card["kind"] = "negative_brain"
    card["sampling"]["max_steps"] = 4
    card["sampling"]["default_steps"] = 4
    read = ModelCard.from_dict(card)  # the torch-free reader does not know the kind's rules
    with pytest.raises(CardError, match="field 'sampling.max_steps' must be at least 5 for kind negative_brain"):
        pipeline_class(read)


def test_an_unknown_kind_is_refused_before_any_weight_is_read(tmp_path):
    card = tiny_brain_card("tiny-gan")
    card["kind"] = "gan"
    folder = write_model_folder(card, tmp_path / "tiny-gan")
    with pytest.raises(CardError, match="field 'kind' must be one of conditional_latent_diffusion, label_generator"):
        load_pipeline(str(folder), device="cpu")


def test_two_classes_cannot_claim_one_kind(negative_kind):
    with pytest.raises(TypeError, match="kind 'negative_brain' is run by NegativeBrainPipeline already"):

        class Impostor(ConditionalBrainPipeline):
            kind = "negative_brain"
