"""Negative conditions of guided sampling (card ``sampling.guidance.negatives``): steering away from
lesion kinds the request does not ask for - card section, the one sampling loop, the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_presence import presence_card, record_class_labels
from tiny_models import write_model_folder

from SynthBrainLib import CardError, load_pipeline
from SynthBrainLib.models.cards import ModelCard
from SynthBrainLib.pipelines.device import Precision
from SynthBrainLib.pipelines.sampling import NegativeBranch, denoise, make_scheduler

TUMOUR = {"tumour": 0.01, "edema": 0.03, "gdtumour": 0.01}


def negative_card(negatives) -> dict:
    card = presence_card()
    card["sampling"]["guidance"]["negatives"] = negatives
    return card


@pytest.fixture(scope="module")
def negative_pipe(tmp_path_factory):
    card = negative_card([{"values": TUMOUR, "scale": 4.0}, {"values": {"wmh": 0.01}, "scale": 1.5}])
    folder = write_model_folder(card, tmp_path_factory.mktemp("negative") / "tiny-negative")
    return load_pipeline(str(folder), device="cpu", precision="float32")


def test_negative_conditions_are_read_and_checked():
    spec = ModelCard.from_dict(negative_card([{"values": TUMOUR, "scale": 4.0}])).sampling.guidance
    assert [(dict(n.values), n.scale) for n in spec.negatives] == [(TUMOUR, 4.0)], f"parsed: {spec.negatives}"
    bad = {
        r"negatives\[0\].values.oedema' must name a conditioning variable": {"values": {"oedema": 0.1}, "scale": 2},
        r"negatives\[0\].values.wmh' must be a number above 0 and at most 0.0923, got 0": {
            "values": {"wmh": 0},
            "scale": 2,
        },
        r"negatives\[0\].values.wmh' must be a number above 0 and at most 0.0923, got 0.5": {
            "values": {"wmh": 0.5},
            "scale": 2,
        },
        r"negatives\[0\].scale' must be positive": {"values": {"wmh": 0.01}, "scale": 0},
        r"negatives\[0\].values' must name at least one": {"values": {}, "scale": 2},
    }
    for message, negative in bad.items():
        with pytest.raises(CardError, match=message):
            ModelCard.from_dict(negative_card([negative]))


class _ContextEcho(torch.nn.Module):
    def forward(self, x, timesteps, context=None):
        return 0.1 * x + 0.01 * context.sum(dim=(1, 2)).view(-1, 1, 1, 1, 1) + 1e-4 * timesteps.view(-1, 1, 1, 1, 1)


class _ManualNegative(torch.nn.Module):
    """``null + w (cond - null) + s (cond - negative)`` from three separate calls."""

    def __init__(self, null, negative, w, s):
        super().__init__()
        self.inner, self.null, self.negative, self.w, self.s = _ContextEcho(), null, negative, w, s

    def forward(self, x, timesteps, context=None):
        cond, null = self.inner(x, timesteps, context), self.inner(x, timesteps, self.null)
        negative = self.inner(x, timesteps, self.negative)
        return null + self.w * (cond - null) + self.s * (cond - negative)


def test_the_loop_adds_scale_times_cond_minus_negative_to_the_guided_prediction():
    card = ModelCard.from_dict(negative_card([{"values": TUMOUR, "scale": 4.0}]))
    noise = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    context, null, negative = torch.tensor([[[0.3, 0.0]]]), torch.full((1, 1, 2), -1.0), torch.tensor([[[0.3, 0.5]]])

    def run(unet, **kwargs):
        scheduler = make_scheduler(card.scheduler, "ddim", 5, torch.device("cpu"))
        precision = Precision(torch.device("cpu"))
        return denoise(unet, scheduler, noise, sampler="ddim", precision=precision, **kwargs)

    batched = run(
        _ContextEcho(),
        unet_kwargs={"context": context},
        guidance=3.0,
        null_unet_kwargs={"context": null},
        negatives=[NegativeBranch(2.5, None, {"context": negative})],
    )
    manual = run(_ManualNegative(null, negative, 3.0, 2.5), unet_kwargs={"context": context})
    assert torch.allclose(batched, manual, atol=1e-5), "one batched call equals the three-call formula"
    plain = run(_ContextEcho(), unet_kwargs={"context": context})
    unguided = run(
        _ContextEcho(), unet_kwargs={"context": context}, negatives=[NegativeBranch(2.5, None, {"context": negative})]
    )
    assert torch.equal(plain, unguided), "guidance 1 (none) ignores negatives"


def test_a_negative_applies_only_when_the_request_asks_for_none_of_it(negative_pipe):
    names = negative_pipe.card.conditioning.names
    wmh_only = [0.4, 0.0, 0.0, 0.0]
    applied = negative_pipe.negative_vectors(wmh_only)
    assert [dict(n.values) for n, _ in applied] == [TUMOUR], "asked for WMH: only the tumour negative applies"
    vector = dict(zip(names, applied[0][1]))
    assert vector["wmh"] == 0.4, "the negative keeps what was asked for"
    assert all(vector[k] > 0 for k in TUMOUR), f"and sets the tumour group: {vector}"
    assert negative_pipe.negative_vectors([0.0, 0.0, 0.0, 0.0]) == [], "asked for nothing: none apply"
    tumour_only = negative_pipe.negative_vectors([0.0, 0.1, 0.0, 0.0])
    assert [dict(n.values) for n, _ in tumour_only] == [{"wmh": 0.01}], "asked for a tumour: the WMH negative"
    assert negative_pipe.negative_vectors([0.4, 0.0, 0.2, 0.0]) == [], "asked for both groups (edema): none apply"


def test_negatives_join_the_guided_call_with_their_presence_class_and_are_recorded(negative_pipe, monkeypatch):
    seen = record_class_labels(negative_pipe, monkeypatch)
    a = negative_pipe.generate(seed=3, sampler="ddim", steps=2, guidance=3.0, wmh=0.02)
    assert seen and all(labels == [1, 4, 3] for labels in seen), f"request, null, request + tumour; got {seen}"
    recorded = a.provenance["negative_conditions"]
    assert recorded == [{"values": TUMOUR, "scale": 4.0}], f"provenance names what was steered away from: {recorded}"
    b = negative_pipe.generate(seed=3, sampler="ddim", steps=2, guidance=3.0, wmh=0.02)
    assert np.array_equal(a.partial_volumes, b.partial_volumes), "same seed, same label map"
    seen.clear()
    c = negative_pipe.generate(seed=3, sampler="ddim", steps=2, guidance=1.0, wmh=0.02)
    assert seen and all(labels == [1] for labels in seen), f"guidance 1: the request alone, got {seen}"
    assert "negative_conditions" not in c.provenance, "unguided runs record no negatives"
