"""'synthbrain bench' on tiny models: the reference loop, worker measurements, tables, quality study."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SynthBrainLib import bench, load_pipeline
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
    with pytest.raises(SynthBrainError, match="path 'x=ddim:ten' : steps 'ten' is not a whole number".replace(" :", ":")):
        bench.parse_path("x=ddim:ten")


def test_bench_measures_paths_against_the_reference(model_folders):
    paths = [bench.REFERENCE, bench.parse_path("fast=dpm++2m:5:bfloat16:tiled")]
    report = bench.bench([str(model_folders["brain"])], paths=paths, repeats=2, reference_repeats=1)
    (m,) = report["models"]
    ref, fast = m["paths"]
    assert ref["path"]["reference"] and ref["steps_run"] == 50 and ref["repeats"] == 1
    assert fast["steps_run"] == 5 and fast["repeats"] == 2 and len(fast["end_to_end_s_all"]) == 2
    assert fast["precision"] == "bfloat16-autocast+channels_last_3d" and fast["speedup_vs_reference"] > 0
    assert fast["peak_rss_bytes"] > 10**7 and fast["step_s_median"] > 0
    assert set(fast["vs_reference"]) == {"max_abs", "psnr_db"}
    table = bench.format_table(report)
    assert "| tiny-brain-ldm | fast | dpm++2m 5, bfloat16, decode tiled |" in table and "1.00x" in table
    assert report["machine"]["torch"] and report["machine"]["cores"]
    json.dumps(report)


def test_explicit_paths_on_a_single_pass_model(model_folders):
    """'reference' and a sampler path mean nothing to a SPADE generator: they run without them."""
    paths = [bench.REFERENCE, bench.parse_path("fast=dpm++2m:5:bfloat16:full")]
    report = bench.bench([str(model_folders["spade"])], paths=paths, repeats=1, reference_repeats=1)
    ref, fast = report["models"][0]["paths"]
    assert ref["path"]["sampler"] is None and fast["path"]["steps"] is None
    assert fast["vs_reference"]["psnr_db"] > 20


def test_decode_check(model_folders):
    report = bench.bench_decode(str(model_folders["brain"]), variants=(("full", "float32", "global"), ("tiled", "float32", "global-exact")))
    full, tiled = report["variants"]
    assert full["mode"] == {"mode": "full"} and tiled["mode"]["mode"] == "tiled"
    assert tiled["vs_first"]["max_abs"] < 1e-4  # one window on this small grid: the same decode
    assert "| tiny-brain-ldm | full | float32+channels_last_3d | trained (installed) |" in bench.format_decode_table(report)


def test_quality_study_runs(model_folders):
    from SynthBrainLib.sampler_study import Candidate, format_quality_table, quality_study

    report = quality_study(str(model_folders["labels"]), samples=2, candidates=[Candidate("ddim", 5, "float32"), Candidate("ddim", 50, "float32")])
    rows = {r["candidate"]: r for r in report["candidates"]}
    assert rows["ddim 50 float32"]["dice_mean"] > 0.99  # the same sampler as the reference
    assert "Dice vs reference, mean / min" in format_quality_table(report)


def test_bench_cli_errors(capsys):
    from SynthBrainLib.cli import main

    assert main(["bench", "brain-ldm", "--repeats", "0"]) == 2
    assert "--repeats 0 is outside 1–1000" in capsys.readouterr().err
    assert main(["bench", "brain-ldm", "--path", "fast"]) == 2
    assert "path 'fast' is not NAME=SAMPLER:STEPS:PRECISION:DECODE" in capsys.readouterr().err
