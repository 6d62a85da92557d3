"""The ``presence`` conditioning input: which lesion groups a request asks for at all, as the
diffusion UNet's class label (card section, the pipeline's network inputs, guidance, training)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import guided, tiny_labels_card, write_model_folder

from SynthBrainLib import CardError, load_pipeline
from SynthBrainLib.models.cards import ModelCard, NetworkSpec
from SynthBrainLib.pipelines.base import pipeline_class

GROUPS = [["wmh"], ["tumour", "edema", "gdtumour"]]


def presence_card(**changes) -> dict:
    """The tiny label generator with guidance and the presence input (two groups: 5 classes)."""
    card = guided(tiny_labels_card("tiny-presence"))
    card["conditioning"]["inputs"] = [*card["conditioning"]["inputs"], "presence"]
    card["conditioning"]["presence_groups"] = copy.deepcopy(GROUPS)
    card["networks"]["diffusion"]["kwargs"]["num_class_embeds"] = 5
    for key, value in changes.items():
        card["conditioning"][key] = value
    return card


@pytest.fixture(scope="module")
def presence_pipe(tmp_path_factory):
    folder = write_model_folder(presence_card(), tmp_path_factory.mktemp("presence") / "tiny-presence")
    return load_pipeline(str(folder), device="cpu", precision="float32")


def test_presence_groups_are_read_and_checked():
    card = ModelCard.from_dict(presence_card())
    assert card.conditioning.presence_groups == (("wmh",), ("tumour", "edema", "gdtumour")), "groups as written"
    assert card.conditioning.presence_null_class == 4, "two groups: classes 0-3, null 4"
    with pytest.raises(CardError, match=r"'conditioning.presence_groups' must be non-empty lists of names"):
        ModelCard.from_dict(presence_card(presence_groups=[["wmh"], ["oedema"]]))
    with pytest.raises(CardError, match=r"'conditioning.presence_groups' names a variable in two groups"):
        ModelCard.from_dict(presence_card(presence_groups=[["wmh"], ["wmh", "tumour"]]))
    plain = tiny_labels_card()
    plain["conditioning"]["presence_groups"] = GROUPS
    with pytest.raises(CardError, match=r"'conditioning.presence_groups' is only used with the 'presence' input"):
        ModelCard.from_dict(plain)


def test_the_unet_must_have_a_class_per_presence_combination_and_one_null():
    card = presence_card()
    card["networks"]["diffusion"]["kwargs"]["num_class_embeds"] = 4
    with pytest.raises(CardError, match=r"num_class_embeds' must be 5 \(2 \*\* 2 presence groups \+ the null class\)"):
        pipeline_class(ModelCard.from_dict(card))
    requested_null = guided(presence_card(), null="requested", single_condition_dropout=0.15)
    with pytest.raises(CardError, match=r"'sampling.guidance.null' must be 'all' with the presence input"):
        pipeline_class(ModelCard.from_dict(requested_null))


@pytest.mark.parametrize(
    "values, label",
    [([0, 0, 0, 0], 0), ([0.3, 0, 0, 0], 1), ([0, 0.2, 0, 0], 2), ([0, 0, 0.1, 0], 2), ([0.3, 0.1, 0.4, 0.2], 3)],
)
def test_a_request_becomes_the_class_of_the_groups_it_asks_for(presence_pipe, values, label):
    _, kwargs = presence_pipe._network_conditions(values)
    assert kwargs["class_labels"].tolist() == [label], f"{values} -> class {label}, got {kwargs['class_labels']}"


def record_class_labels(pipe, monkeypatch) -> list[list[int]]:
    """The class labels of every call of ``pipe``'s diffusion UNet from now on (one list per call)."""
    seen = []
    unet = pipe.networks["diffusion"]
    original = unet.forward

    def recording(x, timesteps, context=None, class_labels=None, **kw):
        seen.append(class_labels.tolist())
        return original(x, timesteps, context=context, class_labels=class_labels, **kw)

    monkeypatch.setattr(unet, "forward", recording)
    return seen


def test_guidance_pairs_the_request_class_with_the_null_class(presence_pipe, monkeypatch):
    seen = record_class_labels(presence_pipe, monkeypatch)
    a = presence_pipe.generate(seed=3, sampler="ddim", steps=2, guidance=3.0, wmh=0.02)
    assert seen and all(labels == [1, 4] for labels in seen), f"every step: wmh class and null class, got {seen}"
    b = presence_pipe.generate(seed=3, sampler="ddim", steps=2, guidance=3.0, wmh=0.02)
    assert np.array_equal(a.labels, b.labels), "same seed, same label map"


def test_training_feeds_each_sample_its_presence_class_and_dropped_samples_the_null(monkeypatch):
    import synthbrain_dev.training.trainers as trainers

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, timesteps, context=None, class_labels=None):
            seen.append((context.view(len(x), -1).clone(), class_labels.clone()))
            return torch.zeros_like(x[:, :2]) + self.bias

    monkeypatch.setattr(trainers, "build_network", lambda spec: Recorder())
    monkeypatch.setattr(
        trainers, "fit", lambda model, loss_fn, n, config, log, name: loss_fn(model, np.arange(n), torch.Generator())
    )
    rng = np.random.default_rng(2)
    conditions = (rng.uniform(0, 1, size=(256, 4)) * (rng.random((256, 4)) < 0.5)).astype(np.float32)
    schedule = {"num_train_timesteps": 100, "schedule": "linear_beta", "prediction_type": "epsilon"}
    spec = NetworkSpec("diffusion", "DiffusionModelUNet", {}, None)
    config = trainers.FitConfig(steps=1, batch=256)
    latents = np.zeros((256, 2, 4, 4, 4), np.float32)
    groups = [[0], [1, 2, 3]]
    trainers.train_latent_diffusion(
        spec, latents, conditions, schedule, ("crossattn",), config, 0.25, presence_groups=groups
    )
    rows, labels = seen[0]
    dropped = (rows == -1.0).all(dim=1)
    expected = (rows[:, 0] > 0).long() + 2 * (rows[:, 1:] > 0).any(dim=1).long()
    assert 0.1 < float(dropped.float().mean()) < 0.4, f"about a quarter dropped: {dropped.float().mean()}"
    assert bool((labels[dropped] == 4).all()), "dropped samples get the null class"
    assert bool((labels[~dropped] == expected[~dropped]).all()), "the others get their groups' bits"
    assert set(labels[~dropped].tolist()) == {0, 1, 2, 3}, "all four combinations occur"
    with pytest.raises(ValueError, match="presence classes need whole-condition dropout"):
        trainers.train_latent_diffusion(
            spec, latents, conditions, schedule, ("crossattn",), config, 0.0, presence_groups=groups
        )
