"""'synthbrain-dev bench' on tiny models: the reference loop, worker measurements, tables, quality study."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_models import guided, tiny_brain_card

from synthbrain_dev import bench
from SynthBrainLib import load_pipeline
from SynthBrainLib.errors import SynthBrainError


def test_reference_loop_equals_the_pipelines_ddim(model_folders):
    """The bundle's plain loop and the pipeline's loop (DDIM 50, float32) give the same image."""
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu", precision="float32", decode="full")
    ref = bench.reference_sample(pipe, 3, conditions={"age": 70})
    for net in pipe.networks.values():
        pipe.precision.prepare(net)
    ours = pipe.generate(seed=3, sampler="ddim", steps=50, age=70).image
    assert ref.shape == (1, 16, 16, 16)
    assert np.abs(ref[0] - ours).max() < 1e-4


def test_parse_path():
    assert bench.parse_path("reference") == bench.REFERENCE
    p = bench.parse_path("fast=dpm++2m:12:bfloat16:tiled")
    assert (p.name, p.sampler, p.steps, p.precision, p.decode) == ("fast", "dpm++2m", 12, "bfloat16", "tiled")
    assert bench.parse_path("p=preview").preview
    assert bench.parse_path("d=:::").steps is None
    with pytest.raises(
        SynthBrainError, match="path 'x=ddim:ten' : steps 'ten' is not a whole number".replace(" :", ":")
    ):
        bench.parse_path("x=ddim:ten")


def test_paths_carry_a_guidance_scale():
    assert bench.parse_path("u=::::1:1").guidance == 1.0, "the sixth field is the guidance scale"
    assert bench.parse_path("d=unipc:12").guidance is None, "no field: the card's default"
    with pytest.raises(SynthBrainError, match="path 'g=:::::strong': guidance 'strong' is not a number"):
        bench.parse_path("g=:::::strong")


def test_guided_models_are_benchmarked_with_and_without_guidance():
    from SynthBrainLib.models.cards import ModelCard

    card = guided(tiny_brain_card("tiny-guided"), default=3.0)
    card = ModelCard.from_dict(card)
    paths = {p.name: p for p in bench.default_paths(card)}
    assert paths["published-unguided"].guidance == paths["default-unguided"].guidance == 1.0, "unguided twins"
    assert paths["default"].guidance is None, "the default path runs the card's guidance"
    assert paths["default"].describe(card).endswith("guidance 3"), paths["default"].describe(card)
    plain = ModelCard.from_dict(tiny_brain_card())
    assert "default-unguided" not in {p.name for p in bench.default_paths(plain)}, "no twins without guidance"


@pytest.mark.slow  # bench workers in subprocesses: 8–12 s
def test_bench_measures_paths_against_the_reference(model_folders):
    paths = [bench.REFERENCE, bench.parse_path("fast=dpm++2m:5:bfloat16:tiled")]
    report = bench.bench([str(model_folders["brain"])], paths=paths, repeats=2, reference_repeats=1)
    (m,) = report["models"]
    ref, fast = m["paths"]
    assert ref["path"]["reference"], "the first path is the reference"
    assert ref["steps_run"] == 50, f"the reference runs the bundle's 50 steps: {ref['steps_run']}"
    assert ref["repeats"] == 1, f"the reference runs reference_repeats times: {ref['repeats']}"
    assert fast["steps_run"] == 5, f"the fast path runs its 5 steps: {fast['steps_run']}"
    assert fast["repeats"] == 2, f"the fast path runs `repeats` times: {fast['repeats']}"
    assert len(fast["end_to_end_s_all"]) == 2, f"one timing per repeat: {fast['end_to_end_s_all']}"
    assert fast["precision"] == "bfloat16-autocast+channels_last_3d", f"precision recorded: {fast['precision']}"
    assert fast["speedup_vs_reference"] > 0, f"speedup is positive: {fast['speedup_vs_reference']}"
    assert fast["peak_rss_bytes"] > 10**7, f"peak memory is measured: {fast['peak_rss_bytes']}"
    assert fast["step_s_median"] > 0, f"step time is measured: {fast['step_s_median']}"
    assert set(fast["vs_reference"]) == {"max_abs", "psnr_db"}, f"comparison fields: {fast['vs_reference']}"
    table = bench.format_table(report)
    row = "| tiny-brain-ldm | fast | dpm++2m 5, bfloat16, decode tiled |"
    assert row in table, f"the table describes the path:\n{table}"
    assert "1.00x" in table, f"the table gives the reference's own speedup:\n{table}"
    assert report["machine"]["torch"], "the report names the torch version"
    assert report["machine"]["cores"], "the report counts the cores"
    json.dumps(report)


@pytest.mark.slow  # bench workers in subprocesses: 8–12 s
def test_explicit_paths_on_a_single_pass_model(model_folders):
    """'reference' and a sampler path mean nothing to a SPADE generator: they run without them."""
    paths = [bench.REFERENCE, bench.parse_path("fast=dpm++2m:5:bfloat16:full")]
    report = bench.bench([str(model_folders["spade"])], paths=paths, repeats=1, reference_repeats=1)
    ref, fast = report["models"][0]["paths"]
    assert ref["path"]["sampler"] is None, f"no sampler for a single-pass model: {ref['path']}"
    assert fast["path"]["steps"] is None, f"no steps for a single-pass model: {fast['path']}"
    assert fast["vs_reference"]["psnr_db"] > 20, f"bfloat16 stays close to float32: {fast['vs_reference']}"


@pytest.mark.slow  # decode workers in subprocesses: 8–12 s
def test_decode_check(model_folders):
    report = bench.bench_decode(
        str(model_folders["brain"]), variants=(("full", "float32", "global"), ("tiled", "float32", "global-exact"))
    )
    full, tiled = report["variants"]
    assert full["mode"] == {"mode": "full"}, f"the first variant decodes whole: {full['mode']}"
    assert tiled["mode"]["mode"] == "tiled", f"the second variant decodes in tiles: {tiled['mode']}"
    # one window on this small grid: the same decode
    assert tiled["vs_first"]["max_abs"] < 1e-4, f"tiled equals full here: {tiled['vs_first']}"
    table = bench.format_decode_table(report)
    assert "| tiny-brain-ldm | full | float32+channels_last_3d | trained (installed) |" in table, table


def test_quality_study_runs(model_folders):
    from synthbrain_dev.sampler_study import Candidate, format_quality_table, quality_study

    report = quality_study(
        str(model_folders["labels"]),
        samples=2,
        candidates=[Candidate("ddim", 5, "float32"), Candidate("ddim", 50, "float32")],
    )
    rows = {r["candidate"]: r for r in report["candidates"]}
    assert rows["ddim 50 float32"]["dice_mean"] > 0.99  # the same sampler as the reference
    assert "Dice vs reference, mean / min" in format_quality_table(report)


def test_bench_cli_errors(capsys):
    from synthbrain_dev.cli import main

    assert main(["bench", "brain-ldm", "--repeats", "0"]) == 2, "--repeats 0 exits with status 2"
    err = capsys.readouterr().err
    assert err.startswith("synthbrain-dev: error: --repeats 0 is outside 1–1000"), f"one line names it: {err}"
    assert main(["bench", "brain-ldm", "--path", "fast"]) == 2, "a path without NAME= exits with status 2"
    err = capsys.readouterr().err
    assert "path 'fast' is not NAME=SAMPLER:STEPS:PRECISION:DECODE" in err, f"the error names the form: {err}"


@pytest.mark.slow  # a bench worker in a subprocess
def test_guided_path_measures_the_batched_call(tmp_path):
    from tiny_models import write_model_folder

    card = guided(tiny_brain_card("tiny-guided"), default=3.0)
    folder = write_model_folder(card, tmp_path / "tiny-guided")
    report = bench.bench([str(folder)], paths=[bench.parse_path("default=:2")], repeats=1)
    (entry,) = report["models"][0]["paths"]
    calls = entry["unet_call_s"]
    assert calls["batch_1"] > 0 and calls["batch_2"] > 0, f"both calls were timed: {calls}"
    assert "guidance as one batched call costs" in bench.format_table(report), "the table says what guidance costs"
