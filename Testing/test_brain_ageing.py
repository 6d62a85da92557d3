"""A patient's own scan at another age (ConditionalBrainPipeline.age, ``synthbrain age``) with the
shipped brain-ldm-demo, on a held-out phantom rendered by the phantom renderer (not by the model) and
stored as a scanner would (int16, another scale and offset)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from synthbrain_dev.evaluation.insertion_cases import POPULATION
from SynthBrainLib import ConditionError, SynthesisCancelled, load_pipeline
from SynthBrainLib.outputs.measure import measure_t1

pytestmark = pytest.mark.slow  # each ageing registers, inverts and regenerates (seconds)

FROM_AGE = 55.0


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("brain-ldm-demo", device="cpu")


@pytest.fixture(scope="module")
def scan():
    """(int16 scan, affine, sex) of a held-out phantom at 55, without lesions."""
    spec = dataclasses.replace(POPULATION.sample_spec(100_321), age=FROM_AGE, tumour=None, wmh_load=0.0)
    subject = POPULATION.make(spec)
    image = np.round(subject.images["T1"] * 900.0 + 15.0).astype(np.int16)
    return image, subject.affine, spec.sex


@pytest.fixture(scope="module")
def sweep(pipe, scan):
    image, affine, sex = scan
    return pipe.age(image, affine, age=FROM_AGE, sex=sex, to_age=[70.0, 80.0], seed=2)


def test_ageing_by_zero_years_gives_back_the_scan_bit_for_bit(pipe, scan):
    image, affine, sex = scan
    result = pipe.age(image, affine, age=FROM_AGE, sex=sex, to_age=FROM_AGE, seed=2)
    assert np.array_equal(result.image, image), "the same conditions regenerate the same brain: no deformation"
    assert not np.any(result.log_jacobian), "no volume change anywhere"
    assert result.provenance["ageing"]["deformation"]["largest_shift_mm"] == 0.0, "recorded as no shift"


def test_the_aged_scan_keeps_the_scans_grid_dtype_and_background(sweep, scan):
    image, affine, _ = scan
    aged = sweep[1]
    assert aged.image.dtype == image.dtype, f"dtype {aged.image.dtype}, the scan's is {image.dtype}"
    assert aged.image.shape == image.shape, f"shape {aged.image.shape}, the scan's is {image.shape}"
    assert np.array_equal(aged.affine, affine), "the scan's own grid"
    head = ndi.binary_dilation(image > 15, iterations=6)
    assert np.array_equal(aged.image[~head], image[~head]), "nothing changes far outside the brain"
    assert aged.log_jacobian.shape == image.shape, "the atrophy map is on the scan's grid"


def test_older_means_more_csf_deep_in_the_brain_step_by_step(sweep, scan):
    # the phantom's own ageing, 55 -> 70 -> 80, opens its ventricles by 7.6 and 7.6 mL; the library's
    # estimators (written for phantoms, not for this method) see part of it at the demo's 2.5 mm
    image, affine, _ = scan
    scale = lambda v: (v.astype(np.float32) - 15.0) / 900.0  # noqa: E731 - the phantom's own [0, 1]
    measured = [measure_t1(scale(v), affine) for v in (image, sweep[0].image, sweep[1].image)]
    deep = [m["deep_csf_ml"] for m in measured]
    assert deep[1] > deep[0] + 1.5, f"deep CSF 55 -> 70: {deep[0]:.1f} -> {deep[1]:.1f} mL"
    assert deep[2] > deep[1] + 1.5, f"deep CSF 70 -> 80: {deep[1]:.1f} -> {deep[2]:.1f} mL"
    ventricles = [m["ventricular_volume_ml"] for m in measured]
    assert ventricles[2] > ventricles[0] + 1.0, f"ventricles 55 -> 80: {ventricles[0]:.1f} -> {ventricles[2]:.1f} mL"
    brain = ndi.binary_erosion(ndi.binary_fill_holes(scale(image) > 0.05), iterations=2)
    expanded = sweep[1].log_jacobian[brain & (scale(image) < 0.3)]  # CSF-dark voxels inside the brain
    assert float(np.mean(expanded)) > 0.0, "the atrophy map says CSF spaces grow"


def test_the_aged_scan_is_marked_synthetic_with_both_ages(sweep):
    record = sweep[1].provenance
    assert record["synthetic"] is True, "marked synthetic"
    assert record["ageing"]["from_age"] == FROM_AGE, f"from {record['ageing']['from_age']}"
    assert record["ageing"]["to_age"] == 80.0, f"to {record['ageing']['to_age']}"
    assert record["conditions"]["to"]["age"] == 80.0, "the target conditions are recorded"
    assert (
        record["ageing"]["volumes_to"]["ventricular_volume"] > record["ageing"]["volumes_from"]["ventricular_volume"]
    ), "the ventricles were moved along the population's age trend"


def test_same_seed_same_aged_scan(pipe, scan, sweep):
    image, affine, sex = scan
    again = pipe.age(image, affine, age=FROM_AGE, sex=sex, to_age=80.0, seed=2)
    assert np.array_equal(again.image, sweep[1].image), "same seed, same device: same image"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"to_age": 95.0}, "age 95 is outside 45–82 years"),
        ({"sex": "other"}, "sex 'other'"),
        ({"to_age": "eighty"}, "to_age 'eighty' is not an age"),
        ({"image": "constant"}, "scan is constant"),
    ],
)
def test_refusals_are_one_line_and_leave_the_scan_as_it_was(pipe, scan, change, expected):
    image, affine, sex = scan
    kept = image.copy()
    options = {"age": FROM_AGE, "sex": sex, "to_age": 70.0, **change}
    given = options.pop("image", None)
    target = np.full_like(image, 7) if given == "constant" else image
    with pytest.raises(ConditionError) as err:
        pipe.age(target, affine, **options)
    assert expected in str(err.value), f"the message names the value: {err.value}"
    assert "\n" not in str(err.value), "one line"
    assert np.array_equal(image, kept), "the scan is untouched"


def test_a_scan_that_is_not_a_brain_is_refused_with_its_similarity(pipe, scan):
    image, affine, sex = scan
    noise = np.random.default_rng(0).integers(0, 900, image.shape).astype(np.int16)
    with pytest.raises(ConditionError, match="similar") as err:
        pipe.age(noise, affine, age=FROM_AGE, sex=sex, to_age=70.0, seed=0)
    assert "\n" not in str(err.value), "one line"


def test_a_model_without_age_refuses_ageing(model_folders, scan):
    from SynthBrainLib.pipelines.brain_ageing import age_scan

    class NoAge:  # a conditional brain model whose conditions cannot express age
        card = load_pipeline("brain-ldm-demo", device="cpu").card

    NoAge.card = dataclasses.replace(
        NoAge.card,
        conditioning=dataclasses.replace(
            NoAge.card.conditioning, variables=[v for v in NoAge.card.conditioning.variables if v.name != "age"]
        ),
    )
    image, affine, sex = scan
    with pytest.raises(ConditionError, match="has no age condition"):
        age_scan(NoAge(), image, affine, age=FROM_AGE, sex=sex, to_age=70.0)


def test_progress_reaches_the_end_and_cancel_stops_the_work(pipe, scan):
    image, affine, sex = scan
    seen = []

    def cancel_after_a_few():
        return len(seen) >= 5

    with pytest.raises(SynthesisCancelled):
        pipe.age(
            image, affine, age=FROM_AGE, sex=sex, to_age=70.0, seed=2,
            progress=lambda done, total: seen.append((done, total)), cancel=cancel_after_a_few,
        )  # fmt: skip
    dones = [d for d, _ in seen]
    assert dones == sorted(dones), f"progress only goes forward: {dones}"
    assert len(seen) < 40, f"cancelled early, after {len(seen)} reports"


def test_cli_age_writes_the_aged_scan_and_atrophy_map_and_leaves_the_input(tmp_path, scan):
    image, affine, sex = scan
    path, out, jac = tmp_path / "scan.nii.gz", tmp_path / "old.nii.gz", tmp_path / "jac.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    before = path.read_bytes()
    cmd = [sys.executable, "-m", "SynthBrainLib.cli", "age", str(path), "--model", "brain-ldm-demo"]
    cmd += ["--age", "55", "--sex", sex, "--to", "75", "--seed", "2", "--quiet", "-o", str(out), "--jacobian", str(jac)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-800:]
    assert path.read_bytes() == before, "the input scan is left as it was"
    aged = nib.load(out)
    assert aged.get_data_dtype() == np.int16, f"the scan's dtype, not {aged.get_data_dtype()}"
    assert "SYNTHETIC" in aged.header["descrip"].tobytes().decode(), "the file says it is synthetic"
    assert np.asarray(nib.load(jac).dataobj).shape == image.shape, "the atrophy map is on the scan's grid"
    record = json.loads(out.with_name("old.json").read_text())
    assert record["ageing"]["to_age"] == 75.0, "the sidecar records the target age"


def test_cli_age_refuses_a_target_outside_the_models_range_before_any_work(tmp_path, scan):
    image, affine, sex = scan
    path, out = tmp_path / "scan.nii.gz", tmp_path / "old.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    cmd = [sys.executable, "-m", "SynthBrainLib.cli", "age", str(path), "--model", "brain-ldm-demo"]
    cmd += ["--age", "55", "--to", "99", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, "refused"
    assert "age 99 is outside 45–82 years" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, f"one line: {done.stderr}"
    assert not out.exists(), "nothing written"
