"""Brain extraction of scans with skull and neck (SynthBrainLib.extraction): deepbet's network rebuilt
as a plain module, its TorchScript weights read without running their code, fetched and checked once;
the skull detector; and lesion insertion, removal and refusals on a real clinical scan with skull."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from SynthBrainLib.errors import CheckpointError, ConditionError
from SynthBrainLib.extraction import weights
from SynthBrainLib.extraction.brain_mask import BrainExtractor, foreground_ml, has_skull
from SynthBrainLib.extraction.linknet import LinkNet3d
from SynthBrainLib.extraction.torchscript_tensors import read_tensors
from SynthBrainLib.models.requests import check_skull_stripped


def _traced(seed: int) -> tuple[LinkNet3d, bytes]:
    """A LinkNet3d with random weights and its TorchScript trace, saved as deepbet saves its networks."""
    torch.manual_seed(seed)
    net = LinkNet3d().eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 64, 64, 64)), buffer)
    return net, buffer.getvalue()


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory):
    """A wheel laid out as deepbet's (``data/models/*.pt``) holding two random traced networks, and the
    release that points at it."""
    folder = tmp_path_factory.mktemp("wheel")
    path = folder / "deepbet-0.0-py3-none-any.whl"
    nets = {}
    with zipfile.ZipFile(path, "w") as wheel:
        for seed, (name, member) in enumerate(weights.DEEPBET.members.items()):
            nets[name], data = _traced(seed)
            wheel.writestr(member, data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    release = weights.ExtractorRelease(
        "deepbet", "0.0", "http://127.0.0.1:9/deepbet-0.0-py3-none-any.whl", digest, weights.DEEPBET.members, "MIT", ""
    )
    return path, release, nets


def test_the_torchscript_tensors_are_read_exactly_without_running_the_file():
    net, data = _traced(3)
    tensors = read_tensors(data)
    expected = net.state_dict()
    assert set(tensors) == set(expected), f"the same names: {sorted(set(tensors) ^ set(expected))[:4]}"
    assert all(torch.equal(tensors[k], expected[k]) for k in expected), "every tensor bit-identical"


def test_the_plain_network_computes_what_the_trace_computes():
    net, data = _traced(4)
    rebuilt = LinkNet3d().eval()
    rebuilt.load_state_dict(read_tensors(data), strict=True)
    trace = torch.jit.load(io.BytesIO(data))  # our own trace, made above: safe to run here
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        difference = (rebuilt(x) - trace(x)).abs().max().item()
    assert difference == 0.0, f"the rebuilt network and the trace differ by {difference}"


def test_a_pickle_that_asks_for_anything_but_modules_and_tensors_is_refused():
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model/data.pkl", pickle.dumps(Payload(), protocol=2))
    with pytest.raises(CheckpointError) as err:
        read_tensors(archive.getvalue(), label="evil.pt")
    assert "print is not allowed in a weights file" in str(err.value), str(err.value)
    assert "\n" not in str(err.value), "one line"


def test_weights_are_installed_from_the_wheel_once_checked(tmp_path, fake_wheel):
    wheel, release, nets = fake_wheel
    path = weights.install_weights(release, home=tmp_path, wheel=wheel)
    assert path == tmp_path / "extraction" / "deepbet-0.0.safetensors", f"kept in the store's folder: {path}"
    states, digest = weights.load_networks(release, home=tmp_path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest(), "the weights' sha256 is reported"
    for name, net in nets.items():
        same = all(torch.equal(states[name][k], v) for k, v in net.state_dict().items())
        assert same, f"network {name} round-trips through safetensors"


def test_a_wheel_with_another_checksum_is_refused(tmp_path, fake_wheel):
    wheel, release, _ = fake_wheel
    other = tmp_path / wheel.name
    other.write_bytes(wheel.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match="not the published"):
        weights.install_weights(release, home=tmp_path / "home", wheel=other)
    assert not (tmp_path / "home" / "extraction" / release.file_name).exists(), "nothing installed"


def test_offline_without_the_weights_says_what_to_do_in_one_line(tmp_path, fake_wheel):
    _, release, _ = fake_wheel
    with pytest.raises(CheckpointError) as err:
        weights.install_weights(release, home=tmp_path)
    message = str(err.value)
    assert "synthbrain models download brain-extraction" in message, message
    assert "\n" not in message, "one line"


def test_the_cli_downloads_the_extractor_into_its_home(tmp_path, fake_wheel, monkeypatch, capsys):
    from SynthBrainLib.cli import main

    wheel, release, _ = fake_wheel
    monkeypatch.setattr(weights, "DEEPBET", dataclasses.replace(release, url=wheel.as_uri()))
    assert main(["--home", str(tmp_path), "models", "download", "brain-extraction", "--quiet"]) == 0
    assert (tmp_path / "extraction" / release.file_name).is_file(), "the weights are in --home/extraction"
    assert "licence MIT" in capsys.readouterr().err, "the licence is shown"


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("YES", "yes"), (False, "no"), (True, "yes")])
def test_skull_stripped_choices(value, expected):
    assert check_skull_stripped(value) == expected, f"{value!r} reads as {expected}"


def test_a_bad_skull_stripped_value_is_one_line():
    with pytest.raises(ConditionError, match=r"skull_stripped 'maybe' is not one of auto, yes, no"):
        check_skull_stripped("maybe")


def test_the_skull_detector_tells_a_head_from_a_brain():
    from synthbrain_dev.evaluation.insertion_cases import patient, patient_with_head

    brain, affine, _ = patient(1001, "T1")
    head, head_affine, _ = patient_with_head(1001, "T1")
    assert not has_skull(brain, affine), f"a brain alone: {foreground_ml(brain, affine):.0f} mL"
    assert has_skull(head, head_affine), f"a head with noise: {foreground_ml(head, head_affine):.0f} mL"


# ---- with deepbet's published weights (fetched from PyPI once per machine) ------------------------
@pytest.fixture(scope="module")
def extractor():
    return BrainExtractor()


CLINICAL = "ms-patient12-clinical"


@pytest.mark.slow
def test_a_phantom_heads_brain_is_found(extractor):
    from synthbrain_dev.evaluation.insertion_cases import patient_with_head

    head, affine, labels = patient_with_head(1002, "FLAIR")
    found = extractor(head, affine)
    truth = labels > 0
    dice = 2 * (found.mask & truth).sum() / (found.mask.sum() + truth.sum())
    assert dice > 0.9, f"Dice with the true brain {dice:.3f}"
    assert found.record()["method"] == "deepbet 1.0.2", found.record()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["FLAIR", "T1W", "T2W"])
def test_the_clinical_scans_brain_masks_agree_in_volume(realdata, extractor, name):
    from SynthBrainLib.outputs.io import read_volume

    scan, affine = read_volume(realdata / CLINICAL / f"study1_{name}.nii.gz")
    assert has_skull(scan, affine), f"{name} has its skull"
    found = extractor(scan, affine)
    # deepbet 1.0.2's own package gave 1489 / 1504 / 1521 mL on these scans (docs/evaluation/brain-extraction.md)
    assert 1450 <= found.volume_ml <= 1560, f"{name}: brain {found.volume_ml:.0f} mL"


@pytest.mark.slow
def test_a_non_brain_image_with_a_background_of_noise_is_refused(extractor):
    rng = np.random.default_rng(1)
    noise = rng.normal(300.0, 60.0, (200, 200, 60)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    with pytest.raises(ConditionError) as err:
        extractor(noise, affine)
    assert "\n" not in str(err.value), "one line"


@pytest.fixture(scope="module")
def pipe():
    from SynthBrainLib import load_pipeline

    return load_pipeline("label2image-demo", device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name, sequence", [("FLAIR", "FLAIR"), ("T1W", "T1"), ("T2W", "T2")])
def test_a_wmh_is_inserted_into_the_clinical_scan_with_its_skull_and_removed_again(realdata, pipe, name, sequence):
    """The issue's targets on ms-patient12-clinical (the evaluation's own measures, clinical_scans.py)."""
    from synthbrain_dev.evaluation import clinical_scans
    from SynthBrainLib.outputs.io import read_volume

    scan, affine = read_volume(realdata / CLINICAL / f"study1_{name}.nii.gz")
    kept = scan.copy()
    lesion = clinical_scans.deep_white_matter_ball(pipe, scan, affine, sequence)
    case = clinical_scans.edit_case(pipe, scan, affine, sequence, lesion)
    assert case["brain_extraction"]["method"] == "deepbet 1.0.2", f"the brain was extracted: {case['brain_extraction']}"
    assert case["similarity"] >= 0.7, f"the registration check passed: r = {case['similarity']:.3f}"
    assert case["untouched_voxels_changed"] == 0, "every voxel beyond the margin is the scan's own"
    assert case["outside_brain_voxels"] > 1_000_000, "the skull and neck were there to keep"
    assert case["dtype_kept"], "the scan's dtype is kept"
    contrast = case["inserted"]["contrast"]
    if sequence == "T1":
        assert contrast < 0.9, f"hypointense on T1: {contrast:.3f}"
    else:
        assert contrast > 1.15, f"hyperintense on {sequence}: {contrast:.3f}"
    assert case["slices_showing"] == case["slices_painted"], f"every painted slice shows the lesion: {case}"
    assert case["removal_untouched_changed"] == 0, "removal keeps every voxel beyond the margin"
    assert abs(case["removed_over_original"] - 1) < abs(case["inserted_over_original"] - 1) / 2, (
        f"removal brings the lesion's voxels back towards the scan's own: {case['removed_over_original']:.3f}"
    )
    assert np.array_equal(scan, kept), "the input array is unchanged"


@pytest.mark.slow
def test_a_clinical_t1_given_as_flair_is_refused_in_one_line(realdata, pipe):
    from synthbrain_dev.evaluation import clinical_scans
    from SynthBrainLib.outputs.io import read_volume

    scan, affine = read_volume(realdata / CLINICAL / "study1_T1W.nii.gz")
    lesion = clinical_scans.deep_white_matter_ball(pipe, scan, affine, "T1")
    kept = scan.copy()
    with pytest.raises(ConditionError) as err:
        pipe.insert(scan, affine, {"wmh": lesion}, sequence="FLAIR", seed=1)
    assert "looks like a T1" in str(err.value) and "is it a FLAIR?" in str(err.value), str(err.value)
    assert "\n" not in str(err.value), "one line"
    assert np.array_equal(scan, kept), "the scan is unchanged"


def test_the_cli_refuses_a_bad_skull_stripped_value_before_any_work(tmp_path, capsys):
    from SynthBrainLib.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["insert-lesions", "scan.nii.gz", "--lesions", "m.nii.gz", "--sequence", "FLAIR", "--model",
              "label2image-demo", "--skull-stripped", "maybe", "-o", str(tmp_path / "o.nii.gz")])  # fmt: skip
    assert exit_.value.code == 2, "a usage error"
    assert "--skull-stripped: invalid choice: 'maybe'" in capsys.readouterr().err, "names the value"
    assert not list(tmp_path.iterdir()), "nothing written"


@pytest.mark.slow
def test_a_phantom_head_is_aged_with_its_skull_scalp_and_neck_kept():
    from scipy import ndimage as ndi

    from synthbrain_dev.evaluation.insertion_cases import patient_with_head
    from SynthBrainLib import load_pipeline
    from SynthBrainLib.pipelines.brain_ageing import AGEING_REACH_MM

    brains = load_pipeline("brain-ldm-demo", device="cpu")
    head, affine, labels = patient_with_head(1101, "T1")
    same = brains.age(head, affine, age=60, sex="female", to_age=60, seed=1)
    assert np.array_equal(same.image, head), "ageing by 0 years changes nothing"
    older = brains.age(head, affine, age=60, sex="female", to_age=80, seed=1)
    record = older.provenance["ageing"]["brain_extraction"]
    assert record["method"] == "deepbet 1.0.2", f"the brain was extracted: {record}"
    beyond = ndi.distance_transform_edt(~older.brain_mask, sampling=np.linalg.norm(affine[:3, :3], axis=0))
    far = beyond > AGEING_REACH_MM
    assert np.array_equal(older.image[far], head[far]), "skull, scalp and neck keep their values"
    assert np.count_nonzero(older.image != head) > 10_000, "the brain itself changed"
