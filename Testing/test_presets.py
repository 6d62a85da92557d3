"""Presets: the fast default (UniPC 12, bfloat16 where native) and the published setting one option away."""

from __future__ import annotations

import json

import pytest
import torch

from SynthBrainLib import ConditionError, DeviceError, load_pipeline
from SynthBrainLib.models import presets
from SynthBrainLib.models.conditioning import resolve_sampler
from SynthBrainLib.models.store import ModelStore
from SynthBrainLib.pipelines import device as device_module
from SynthBrainLib.pipelines.device import Precision

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def brain_card():
    return ModelStore(shipped=[]).card("brain-ldm")


def test_fast_preset_runs_unipc_12_where_the_card_lists_it(brain_card):
    s, sch = brain_card.sampling, brain_card.scheduler
    assert resolve_sampler(s, sch, None, None) == ("unipc", 12), "fast: UniPC 12 steps"
    assert resolve_sampler(s, sch, None, None, "published") == ("ddim", 50), "published: the bundle's DDIM 50"
    assert resolve_sampler(s, sch, "ddim", None) == ("ddim", 50), "a named sampler keeps the card's steps"
    assert resolve_sampler(s, sch, None, 20) == ("unipc", 20), "named steps go to the preset's sampler"


def test_a_card_without_the_fast_sampler_keeps_its_own(brain_card):
    from dataclasses import replace

    sampling = replace(brain_card.sampling, samplers=("ddim", "ddpm"))
    assert resolve_sampler(sampling, brain_card.scheduler, None, None) == ("ddim", 50), "card defaults"


def test_unknown_preset_is_refused_in_one_line():
    with pytest.raises(ConditionError, match="preset 'quick' is not one of fast, published"):
        presets.check_preset("quick")


@pytest.mark.parametrize("native", [True, False])
def test_fast_precision_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: native)
    fast = Precision.for_device(CPU)
    expected = torch.bfloat16 if native else torch.float32
    assert Precision.for_device(CPU, None, "fast").dtype == expected, f"fast on a CPU with bf16={native}"
    assert fast.dtype == torch.float32, "without a preset the library's own default stays float32"
    assert Precision.for_device(CPU, None, "published").dtype == torch.float32, "published: float32"
    assert Precision.for_device(CPU, "float32", "fast").dtype == torch.float32, "an explicit precision wins"
    with pytest.raises(DeviceError, match="float16"):
        Precision.for_device(CPU, "float16", "fast")


def test_pipeline_records_its_preset_and_runs_the_preset_sampler(model_folders, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    fast = load_pipeline(str(model_folders["brain"]), device="cpu")
    published = load_pipeline(str(model_folders["brain"]), device="cpu", preset="published")
    r = fast.generate(seed=1)
    assert (r.provenance["sampler"], r.provenance["steps"]) == ("unipc", 12), "fast preset sampler and steps"
    assert r.provenance["preset"] == "fast", "the preset is in the provenance"
    assert r.provenance["precision"].startswith("bfloat16"), f"bf16 on a bf16 CPU: {r.provenance['precision']}"
    p = published.generate(seed=1)
    card = published.card.sampling
    assert (p.provenance["sampler"], p.provenance["steps"]) == (card.default_sampler, card.default_steps)
    assert p.provenance["preset"] == "published", "published is recorded"
    assert p.provenance["precision"].startswith("float32"), "published runs float32 on the CPU"
    with pytest.raises(ConditionError, match="preset 'slow' is not one of fast, published"):
        load_pipeline(str(model_folders["brain"]), device="cpu", preset="slow")


def test_cli_published_flag(model_folders, tmp_path, capsys):
    from SynthBrainLib.cli import main

    args = ["generate", "--model", str(model_folders["brain"]), "--quiet", "--seed", "3"]
    assert main(args + ["-o", str(tmp_path / "f.nii.gz")]) == 0, capsys.readouterr().err
    assert main(args + ["-o", str(tmp_path / "p.nii.gz"), "--published"]) == 0, capsys.readouterr().err
    fast = json.loads((tmp_path / "f.json").read_text())
    published = json.loads((tmp_path / "p.json").read_text())
    assert (fast["preset"], fast["sampler"]) == ("fast", "unipc"), f"default is the fast preset: {fast['sampler']}"
    assert (published["preset"], published["sampler"]) == ("published", "ddim"), "--published: the card's sampler"
