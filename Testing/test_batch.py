"""'synthbrain batch': deterministic per-sample seeds, resume after a kill, torchrun sharding, manifest."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SynthBrainLib.batch import Range, plan_batch, read_conditions_csv, sample_seed
from SynthBrainLib.errors import ConditionError
from SynthBrainLib.models.cards import load_card
from SynthBrainLib.outputs.io import read_volume

ARGS = ["--range", "age=50:80", "--range", "sex=female,male", "--seed", "11", "--quiet", "--device", "cpu"]


def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _batch(model, out, n, *extra, torchrun: int = 0, **kwargs):
    args = ["batch", "--model", str(model), "-n", str(n), "--out", str(out), *ARGS, *extra]
    if torchrun:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(torchrun),
            "--master-port",
            str(29500 + os.getpid() % 1000),
        ]
        cmd = launcher + ["-m", "SynthBrainLib.cli", *args]
    else:
        cmd = [sys.executable, "-m", "SynthBrainLib.cli", *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _run(*a, **k):
    proc = _batch(*a, **k)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out, err


def _manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _volumes(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_volume(p)[0] for p in sorted(folder.glob("sample_*.nii.gz"))}


def test_sample_seeds_are_a_fixed_function_of_base_seed_and_index():
    assert sample_seed(0, 0) == sample_seed(0, 0), "the same base seed and index give the same seed"
    assert sample_seed(0, 0) != sample_seed(0, 1), "another index gives another seed"
    assert sample_seed(0, 1) != sample_seed(1, 1), "another base seed gives another seed"
    assert 0 <= sample_seed(2**63 - 1, 10**6) < 2**63, "seeds fit in a non-negative int64"
    assert sample_seed(11, 3) == int.from_bytes(
        __import__("hashlib").sha256(b"synthbrain-batch:11:3").digest()[:8], "big"
    ) & (2**63 - 1)


def test_plan_checks_every_sample(model_folders, tmp_path):
    card = load_card(model_folders["brain"] / "card.json")
    plan = plan_batch(card, "m", count=4, base_seed=3, ranges=[Range.parse("age=50:60"), Range.parse("sex=male")])
    assert [c["sex"] for c in plan.conditions] == ["male"] * 4, f"a one-value range fixes sex: {plan.conditions}"
    assert all(50 <= c["age"] <= 60 for c in plan.conditions), f"ages stay inside 50:60: {plan.conditions}"
    again = plan_batch(card, "m", count=6, base_seed=3, ranges=[Range.parse("age=50:60"), Range.parse("sex=male")])
    assert again.conditions[:4] == plan.conditions  # sample i does not depend on N
    with pytest.raises(ConditionError, match="range age=100:100: age 100 is outside 44–82 years"):
        plan_batch(card, "m", count=2, base_seed=0, ranges=[Range.parse("age=100:100")])
    with pytest.raises(
        ConditionError, match="range age=40:60: age 40 is outside 44–82 years"
    ):  # an end, not a drawn value
        plan_batch(card, "m", count=2, base_seed=0, ranges=[Range.parse("age=40:60")])
    with pytest.raises(ConditionError, match="range sex=female,other: sex 'other' is not one of female, male"):
        plan_batch(card, "m", count=2, base_seed=0, ranges=[Range.parse("sex=female,other")])
    with pytest.raises(ConditionError, match="range 'age=nan:60': both ends must be finite numbers"):
        Range.parse("age=nan:60")
    with pytest.raises(
        ConditionError, match="condition 'height' is not one of sex, age, ventricular_volume, brain_volume"
    ):
        plan_batch(card, "m", count=2, base_seed=0, ranges=[Range.parse("height=1:2")])
    with pytest.raises(ConditionError, match="sample count 0 is outside 1–1000000"):
        plan_batch(card, "m", count=0, base_seed=0)
    with pytest.raises(ConditionError, match="range 'age=80:50': low end 80 is above high end 50"):
        Range.parse("age=80:50")
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("age,sex\n60,female\n,male\n90,male\n")
    rows = read_conditions_csv(csv_file)
    assert rows[1] == {"sex": "male"}
    with pytest.raises(ConditionError, match="row 3 of the conditions file: age 90 is outside 44–82 years"):
        plan_batch(card, "m", count=None, base_seed=0, rows=rows)
    assert plan_batch(card, "m", count=2, base_seed=0, rows=rows).count == 2


@pytest.mark.slow  # two batches in subprocesses, one under torchrun: 10–17 s
def test_torchrun_two_ranks_equal_one_process(model_folders, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(model_folders["brain"], one, 5)
    _run(model_folders["brain"], two, 5, torchrun=2)
    assert _manifest(one) == _manifest(two)
    rows = _manifest(one)
    assert [r["index"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert len({r["seed"] for r in rows}) == 5, f"every sample has its own seed: {rows}"
    assert rows[2]["seed"] == str(sample_seed(11, 2)), "sample 2's seed is sample_seed(base, 2)"
    assert {r["sex"] for r in rows} <= {"female", "male"}, f"sex is drawn from the range: {rows}"
    assert all(50 <= float(r["age"]) <= 80 for r in rows), f"age is drawn from 50:80: {rows}"
    a, b = _volumes(one), _volumes(two)
    assert a.keys() == b.keys(), "two ranks write the same sample files as one process"
    assert all(np.array_equal(a[k], b[k]) for k in a), "two ranks write the same volumes as one process"
    side = json.loads((one / "sample_00003.json").read_text())
    assert side["batch"]["index"] == 3, "the sidecar records the sample's index"
    assert side["seed"] == sample_seed(11, 3), "the sidecar records the sample's seed"


@pytest.mark.slow  # six batch subprocesses: 20–34 s
def test_killed_batch_resumes_without_losing_or_duplicating(model_folders, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    n = 8
    _run(model_folders["brain"], full, n, "--steps", "4")
    proc = _batch(model_folders["brain"], killed, n, "--steps", "4")
    deadline = time.time() + 60
    while time.time() < deadline and len(list(killed.glob("sample_*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    done_before = sorted(p.name for p in killed.glob("sample_*.json"))
    assert 2 <= len(done_before) < n, done_before
    # what a kill can leave: a temporary file, and an image whose sidecar was not yet renamed
    (killed / ".sample_00007.nii.gz.synthbrain-tmp.abc123.nii.gz").write_bytes(b"partial")
    shutil.copy(full / "sample_00006.nii.gz", killed / "sample_00006.nii.gz")
    (killed / "sample_00006.json").unlink(missing_ok=True)
    out, err = _run(model_folders["brain"], killed, n, "--steps", "4")
    assert f"{len(done_before)} of {n} samples already done" in err
    assert _manifest(full) == _manifest(killed)
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in full.iterdir())  # no leftovers
    a, b = _volumes(full), _volumes(killed)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # a finished batch reruns as a no-op; other settings into the same folder are refused
    _, err = _run(model_folders["brain"], killed, n, "--steps", "4")
    assert f"{n} of {n} samples already done" in err
    # a finished file damaged later (its sidecar records its sha256) is made again
    (killed / "sample_00001.nii.gz").write_bytes(b"damaged")
    _, err = _run(model_folders["brain"], killed, n, "--steps", "4")
    assert f"{n - 1} of {n} samples already done" in err
    assert np.array_equal(_volumes(killed)["sample_00001.nii.gz"], a["sample_00001.nii.gz"])
    proc = _batch(model_folders["brain"], killed, n, "--steps", "3")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, f"exit status {proc.returncode}: {err}"
    assert "holds a batch made with other settings" in err, f"other settings into a finished folder are refused: {err}"
    assert len(err.strip().splitlines()) == 1, f"the refusal is one line: {err}"


def test_batch_refuses_bad_input(model_folders, tmp_path, capsys):
    from SynthBrainLib.cli import main

    code = main(["batch", "--model", str(model_folders["spade"]), "-n", "2", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    expected = "is a label_to_image model, which needs labels as input; 'batch' makes images"
    assert expected in err, f"a SPADE model is refused: {err}"
    code = main(
        [
            "batch",
            "--model",
            str(model_folders["brain"]),
            "--out",
            str(tmp_path / "x"),
            "--quiet",
            "--range",
            "age=20:30",
            "-n",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    assert err.strip() == "synthbrain: error: range age=20:30: age 20 is outside 44–82 years", err
    assert not (tmp_path / "x").exists(), "a refused batch creates no output folder"


@pytest.mark.slow  # two batch commands in subprocesses, one under torchrun (gloo, 2 CPU processes): ~15 s
def test_throughput_tool_times_one_process_and_torchrun_on_the_same_plan(model_folders):
    from synthbrain_dev.throughput import format_table, throughput

    report = throughput(str(model_folders["brain"]), 3, configurations=((1, 1), (2, 1)), extra=["--steps", "2"])
    runs = report["runs"]
    assert [(r["processes"], r["threads"]) for r in runs] == [(1, 1), (2, 1)], "both configurations ran"
    assert all(r["samples_per_hour"] > 0 for r in runs), f"a rate for each: {runs}"
    assert runs[1]["identical_to_first"], "torchrun's two ranks write the same volumes as one process (1 thread each)"
    assert runs[1]["max_abs_diff_vs_first"] == 0.0, "and the reported difference is zero"
    assert "2 x 1" in format_table(report), "the table names the configuration"
