"""Classifier-free guidance: card section, the one sampling loop, the pipelines, training dropout."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import guided as with_guidance
from tiny_models import tiny_brain_card, write_model_folder

from SynthBrainLib import CardError, ConditionError, load_pipeline
from SynthBrainLib.models.cards import ModelCard, NetworkSpec
from SynthBrainLib.models.conditioning import resolve_guidance
from SynthBrainLib.pipelines.device import Precision
from SynthBrainLib.pipelines.sampling import denoise, make_scheduler


def _guided_card(**changes) -> dict:
    return with_guidance(tiny_brain_card("tiny-guided"), **changes)


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    folder = write_model_folder(_guided_card(), tmp_path_factory.mktemp("guided") / "tiny-guided")
    return load_pipeline(str(folder), device="cpu", precision="float32")


def test_card_guidance_section_is_read_and_checked():
    spec = ModelCard.from_dict(_guided_card()).sampling.guidance
    assert (spec.default, spec.minimum, spec.maximum, spec.null_value) == (2.0, 1.0, 6.0, -1.0), f"parsed: {spec}"
    with pytest.raises(CardError, match=r"field 'sampling.guidance.default' must be within minimum–maximum"):
        ModelCard.from_dict(_guided_card(default=9.0))
    with pytest.raises(CardError, match=r"field 'sampling.guidance.condition_dropout' must be between 0 and 1"):
        ModelCard.from_dict(_guided_card(condition_dropout=0.0))


def test_guidance_values_are_resolved_against_the_card():
    sampling = ModelCard.from_dict(_guided_card()).sampling
    plain = ModelCard.from_dict(tiny_brain_card()).sampling
    assert resolve_guidance("m", sampling, None) == 2.0, "None takes the card's default"
    assert resolve_guidance("m", plain, None) == 1.0, "a model without guidance runs unguided"
    assert resolve_guidance("m", plain, 1) == 1.0, "1 (no guidance) is always allowed"
    with pytest.raises(ConditionError, match="guidance 7 is outside 1–6 for model m"):
        resolve_guidance("m", sampling, 7)
    with pytest.raises(ConditionError, match="guidance 3: model plain was not trained with condition dropout"):
        resolve_guidance("plain", plain, 3)
    with pytest.raises(ConditionError, match="guidance 'strong' is not a number"):
        resolve_guidance("m", sampling, "strong")


class _ContextEcho(torch.nn.Module):
    """Predicts a value that depends on the latent, the timestep and the cross-attention context."""

    def forward(self, x, timesteps, context=None):
        c = context.sum(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return 0.1 * x[:, :2] + 0.01 * c + 1e-4 * timesteps.view(-1, 1, 1, 1, 1)


class _ManualGuidance(torch.nn.Module):
    """The guided prediction computed by hand from two separate calls."""

    def __init__(self, inner, null_context, scale):
        super().__init__()
        self.inner, self.null, self.scale = inner, null_context, scale

    def forward(self, x, timesteps, context=None):
        cond, null = self.inner(x, timesteps, context), self.inner(x, timesteps, self.null)
        return null + self.scale * (cond - null)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "unipc"])
def test_the_loop_steps_with_uncond_plus_scale_times_the_difference(sampler):
    card = ModelCard.from_dict(_guided_card())
    noise = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    context, null = torch.tensor([[[0.3, 0.7]]]), torch.full((1, 1, 2), -1.0)
    prec = Precision(torch.device("cpu"))
    run = dict(sampler=sampler, precision=prec)
    guided = denoise(
        _ContextEcho(),
        make_scheduler(card.scheduler, sampler, 5, torch.device("cpu")),
        noise,
        unet_kwargs={"context": context},
        guidance=3.0,
        null_unet_kwargs={"context": null},
        **run,
    )
    manual = denoise(
        _ManualGuidance(_ContextEcho(), null, 3.0),
        make_scheduler(card.scheduler, sampler, 5, torch.device("cpu")),
        noise,
        unet_kwargs={"context": context},
        **run,
    )
    assert torch.allclose(guided, manual, atol=1e-5), f"{sampler}: one batched call equals the two-call formula"


def test_guidance_changes_the_output_deterministically_and_is_recorded(guided):
    a = guided.generate(seed=4, steps=3, guidance=4.0, age=70)
    b = guided.generate(seed=4, steps=3, guidance=4.0, age=70)
    plain = guided.generate(seed=4, steps=3, guidance=1.0, age=70)
    assert np.array_equal(a.image, b.image), "same seed and guidance give the same image"
    assert not np.allclose(a.image, plain.image), "guidance changes the image"
    assert a.provenance["guidance"] == 4.0, f"guidance is in the provenance: {a.provenance.get('guidance')}"
    assert guided.generate(seed=4, steps=3, age=70).provenance["guidance"] == 2.0, "the card's default scale"


def test_a_model_without_guidance_training_refuses_a_scale(model_folders):
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu")
    with pytest.raises(ConditionError, match="was not trained with condition dropout"):
        pipe.generate(seed=1, steps=2, guidance=2.5)
    assert pipe.generate(seed=1, steps=2).provenance["guidance"] == 1.0, "unguided by default"


def recording_trainer(monkeypatch, batch: int):
    """The trainers module with a network that records the conditions it is fed and a ``fit`` that
    runs the loss twice on a batch of ``batch`` samples; returns (trainers, the recorded contexts)."""
    import synthbrain_dev.training.trainers as trainers

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, timesteps, context=None):
            seen.append(context.detach().clone())
            return torch.zeros_like(x[:, :2]) + self.bias

    monkeypatch.setattr(trainers, "build_network", lambda spec: Recorder())
    monkeypatch.setattr(
        trainers,
        "fit",
        lambda model, loss_fn, n, config, log, name: [
            loss_fn(model, np.arange(batch), torch.Generator().manual_seed(s)) for s in range(2)
        ],
    )
    return trainers, seen


def test_condition_dropout_in_training_feeds_the_null_condition(monkeypatch):
    trainers, seen = recording_trainer(monkeypatch, 64)
    conditions = np.random.default_rng(0).uniform(0, 1, size=(64, 3)).astype(np.float32)
    schedule = {"num_train_timesteps": 100, "schedule": "linear_beta", "prediction_type": "epsilon"}
    latents = np.zeros((64, 2, 4, 4, 4), np.float32)
    spec = NetworkSpec("diffusion", "DiffusionModelUNet", {}, None)
    config = trainers.FitConfig(steps=1, batch=64)
    trainers.train_latent_diffusion(spec, latents, conditions, schedule, ("crossattn",), config, 0.25)
    rows = torch.cat(seen).view(-1, 3)
    null_rows = (rows == -1.0).all(dim=1)
    real_rows = torch.isclose(rows, torch.from_numpy(np.concatenate([conditions, conditions]))).all(dim=1)
    assert 0.1 < float(null_rows.float().mean()) < 0.4, (
        f"about a quarter of the rows are null: {null_rows.float().mean()}"
    )
    assert bool((null_rows | real_rows).all()), "every row is either the null condition or the sample's own"
    seen.clear()
    trainers.train_latent_diffusion(spec, latents, copy.deepcopy(conditions), schedule, ("crossattn",), config)
    assert not bool((torch.cat(seen) == -1.0).any()), "without dropout the null condition never appears"


def test_single_condition_dropout_nulls_conditions_one_by_one(monkeypatch):
    trainers, seen = recording_trainer(monkeypatch, 256)
    conditions = np.random.default_rng(1).uniform(0, 1, size=(256, 4)).astype(np.float32)
    schedule = {"num_train_timesteps": 100, "schedule": "linear_beta", "prediction_type": "epsilon"}
    spec = NetworkSpec("diffusion", "DiffusionModelUNet", {}, None)
    config = trainers.FitConfig(steps=1, batch=256)
    trainers.train_latent_diffusion(
        spec, np.zeros((256, 2, 4, 4, 4), np.float32), conditions, schedule, ("crossattn",), config,
        single_condition_dropout=0.3,
    )  # fmt: skip
    rows = torch.cat(seen).view(-1, 4)
    nulled = rows == -1.0
    partly = nulled.any(dim=1) & ~nulled.all(dim=1)
    assert float(partly.float().mean()) > 0.5, f"most rows have some but not all conditions nulled: {partly.mean()}"
    assert 0.2 < float(nulled.float().mean()) < 0.4, f"each condition is nulled about 30 % of the time: {nulled.mean()}"


def test_requested_null_replaces_only_what_the_request_asks_for(model_folders):
    labels = copy.deepcopy(ModelCard.from_dict(__import__("tiny_models").tiny_labels_card()).to_dict())
    with pytest.raises(CardError, match="single_condition_dropout"):
        ModelCard.from_dict(with_guidance(copy.deepcopy(labels), null="requested"))
    card = ModelCard.from_dict(with_guidance(labels, null="requested", single_condition_dropout=0.15))
    pipe = load_pipeline(str(model_folders["labels"]), device="cpu")
    pipe.card = card
    values = [0.4, 0.0, 0.0, 0.7]
    assert pipe.null_vector(values) == [-1.0, 0.0, 0.0, -1.0], "requested lesions nulled, 'none' kept"
    pipe.card = ModelCard.from_dict(with_guidance(copy.deepcopy(labels)))
    assert pipe.null_vector(values) == [-1.0] * 4, "the default null replaces every condition"
