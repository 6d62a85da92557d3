"""The synthbrain command line: the happy paths and a one-line error for every bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_models import tiny_brain_card, write_old_format_bundle

from SynthBrainLib.cli import main


def run(capsys, *argv):
    """Run the CLI in-process; argparse's own errors exit via SystemExit, ours return a code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    return tmp_path / "home"


def test_import_bundle_then_generate(tmp_path, capsys, home, monkeypatch):
    """The acceptance path of the core issue, on a scaled-down Brain LDM bundle with old checkpoints."""
    card = tiny_brain_card()
    shipped = tmp_path / "cards"
    (shipped / card["id"]).mkdir(parents=True)
    (shipped / card["id"] / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", str(shipped))
    bundle = write_old_format_bundle(card, tmp_path / "bundle")

    code, out, err = run(capsys, "--home", home, "models", "import", bundle, "--allow-unverified")
    assert code == 0, err
    assert "tiny-brain-ldm diffusion:" in out, f"the import reports the diffusion weights: {out}"
    assert "mismatch-accepted" in out, f"the import reports the accepted checksum mismatch: {out}"

    out_file = tmp_path / "out" / "brain.nii.gz"
    code, out, err = run(
        capsys,
        "--home",
        home,
        "generate",
        "--model",
        "tiny-brain-ldm",
        "--age",
        70,
        "--sex",
        "male",
        "--steps",
        2,
        "--device",
        "cpu",
        "--seed",
        3,
        "-o",
        out_file,
        "--preview",
        tmp_path / "out" / "brain.png",
        "--quiet",
    )
    assert code == 0, err
    img = nib.load(str(out_file))
    assert img.shape == (16, 16, 16), f"volume shape: {img.shape}"
    assert np.allclose(img.header.get_zooms(), 2.0), f"voxel size: {img.header.get_zooms()}"
    descrip = img.header["descrip"].tobytes().decode()
    assert descrip.startswith("SYNTHETIC tiny-brain-ldm seed=3"), f"the header marks the volume synthetic: {descrip}"
    prov = json.loads((tmp_path / "out" / "brain.json").read_text())
    assert prov["synthetic"], "the sidecar marks the volume synthetic"
    assert prov["steps"] == 2, f"the sidecar records the steps: {prov['steps']}"
    assert prov["conditions"]["real_units"]["age"] == 70.0, f"the sidecar records the age: {prov['conditions']}"
    assert prov["weights"]["diffusion"]["layout"] == "generative", "the sidecar records the old checkpoint layout"
    png = (tmp_path / "out" / "brain.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # 16^3 voxels of 2 mm -> each slice drawn 2x2 pixels per voxel: three 32-pixel slices + 2-pixel gaps
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (3 * (32 + 2), 32 + 2)

    code, out, err = run(capsys, "--home", home, "models", "list")
    assert code == 0, f"models list: exit status {code}: {err}"
    listed = any(line.startswith("tiny-brain-ldm") and "installed" in line for line in out.splitlines())
    assert listed, f"models list shows the model installed: {out}"
    code, out, err = run(capsys, "--home", home, "models", "verify", "tiny-brain-ldm")
    assert code == 0, f"models verify: exit status {code}: {err}"
    assert out.count("ok (mismatch-accepted)") == 2, f"both weight files verify as accepted: {out}"
    code, out, _ = run(capsys, "--home", home, "models", "path", "tiny-brain-ldm")
    assert out.strip() == str(home / "models" / "tiny-brain-ldm"), f"models path: {out}"


def test_labels_and_image_from_labels(tmp_path, capsys, model_folders):
    labels = tmp_path / "labels.nrrd"
    code, out, err = run(
        capsys,
        "labels",
        "--model",
        model_folders["labels"],
        "--wmh",
        0.05,
        "--seed",
        1,
        "--steps",
        4,
        "-o",
        labels,
        "--partial-volumes",
        tmp_path / "pv.nii.gz",
        "--quiet",
    )
    assert code == 0, err
    assert {Path(p).name for p in out.split()} == {"labels.nrrd", "pv.nii.gz", "labels.json", "pv.json"}
    from SynthBrainLib.models.cards import load_card
    from SynthBrainLib.models.requests import lesion_classes
    from SynthBrainLib.outputs.io import read_volume

    made = set(np.unique(read_volume(labels)[0]).astype(int).tolist())
    unrequested = [c for c in lesion_classes(load_card(Path(model_folders["labels"]) / "card.json")) if c.name != "wmh"]
    assert len(unrequested) == 3, f"the tiny label model has the three tumour classes: {unrequested}"
    for c in unrequested:
        told = f"{c.name} was not requested but appeared" in err
        assert told == (c.value in made), f"note for unrequested {c.name} (made: {sorted(made)}): {err}"
    image = tmp_path / "flair.nii.gz"
    code, out, err = run(
        capsys,
        "image-from-labels",
        labels,
        "--model",
        model_folders["spade"],
        "--sequence",
        "FLAIR",
        "--seed",
        2,
        "-o",
        image,
        "--quiet",
    )
    assert code == 0, err
    lab, lab_affine = read_volume(labels)
    img, img_affine = read_volume(image)
    assert img.shape == lab.shape, f"the image has the label map's shape: {img.shape} vs {lab.shape}"
    assert np.allclose(img_affine, lab_affine, atol=1e-5), "the image has the label map's affine"
    assert json.loads((tmp_path / "flair.json").read_text())["sequence"] == "FLAIR"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--age", "300"], "age 300 is outside 44–82 years"),
        (["--sex", "other"], "sex 'other' is not one of female, male"),
        (["--ventricular-volume", "-5"], "ventricular_volume -5 is outside 0–100 mL"),
        (["--raw", "brain_volume=2"], "brain_volume (model units) 2 is outside 0–1"),
        (["--raw", "age"], "argument --raw: 'age' is not NAME=VALUE"),
        (["--steps", "0"], "steps 0 is outside 1–1000"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--sampler", "euler"], "sampler 'euler' is not one of ddpm, ddim, pndm, rflow"),
        (["--seed", "-4"], "seed -4 is outside 0–"),
        (["--device", "mps"], "device 'mps' is not supported"),
        (["--device", "tpu"], "device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        (["--device", ""], "device '' is not one of auto, cpu, cuda, cuda:N"),
        (["--sampler", ""], "sampler '' is not one of ddpm, ddim, pndm, rflow"),
    ],
)
def test_bad_generate_input_gives_one_line_and_no_file(tmp_path, capsys, model_folders, args, message):
    out_file = tmp_path / "o.nii.gz"
    code, _, err = run(capsys, "generate", "--model", model_folders["brain"], "-o", out_file, "--quiet", *args)
    assert code == 2, f"exit status {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"the error is one line: {err}"
    assert message in lines[0], f"the error says {message!r}: {err}"
    assert "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == [], "a refused generate writes nothing"


def test_existing_output_is_refused_before_work(tmp_path, capsys, model_folders):
    out_file = tmp_path / "o.nii.gz"
    out_file.write_bytes(b"precious")
    code, _, err = run(capsys, "generate", "--model", model_folders["brain"], "-o", out_file, "--quiet")
    assert code == 2, f"exit status {code}: {err}"
    assert "o.nii.gz already exists; pass --overwrite" in err, err
    assert out_file.read_bytes() == b"precious", "the existing file is untouched"
    assert not (tmp_path / "o.json").exists(), "no sidecar is written"
    code, _, err = run(
        capsys, "generate", "--model", model_folders["brain"], "-o", out_file, "--quiet", "--overwrite", "--steps", 1
    )
    assert code == 0, f"--overwrite: exit status {code}: {err}"
    assert out_file.read_bytes() != b"precious", "--overwrite replaces the file"


def test_outputs_that_cannot_be_written_are_refused_before_work(tmp_path, capsys, model_folders):
    blocker = tmp_path / "afile"
    blocker.write_bytes(b"x")
    code, _, err = run(
        capsys, "generate", "--model", model_folders["brain"], "-o", blocker / "sub" / "o.nii.gz", "--quiet"
    )
    assert code == 2, f"exit status {code}: {err}"
    expected = f"synthbrain: error: cannot write into {blocker / 'sub'}: {blocker} is a file, not a folder"
    assert err.strip() == expected, err
    # a label map and its partial volumes would share one provenance sidecar
    code, _, err = run(
        capsys,
        "labels",
        "--model",
        model_folders["labels"],
        "-o",
        tmp_path / "l.nii.gz",
        "--partial-volumes",
        tmp_path / "l.nii",
        "--quiet",
    )
    assert code == 2, f"exit status {code}: {err}"
    expected = f"synthbrain: error: two outputs would be written to {tmp_path / 'l.json'}; give them different names"
    assert err.strip() == expected, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"], "nothing is written"


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path, capsys, model_folders, monkeypatch):
    import SynthBrainLib.outputs.atomic_files as atomic_files

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # the volumes are written first (io's own temporary files); the PNG last, through replaced_atomically
    monkeypatch.setattr(atomic_files, "temporary_sibling", disk_full)
    code, _, err = run(
        capsys,
        "generate",
        "--model",
        model_folders["brain"],
        "--steps",
        1,
        "-o",
        tmp_path / "o.nii.gz",
        "--preview",
        tmp_path / "o.png",
        "--quiet",
    )
    assert code == 2, f"exit status {code}: {err}"
    assert err.strip() == f"synthbrain: error: cannot write {tmp_path / 'o.png'}: No space left on device", err
    assert list(tmp_path.iterdir()) == [], "a failed write leaves nothing, not even the volumes"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "nope", "-o", "{tmp}/x.nii.gz"], "model 'nope' is not known"),
        (
            ["generate", "--model", "brain-ldm", "-o", "{tmp}/x.nii.gz"],
            "weights of brain-ldm (autoencoder.pt, model.pt) are not installed (they come in the MONAI bundle "
            "brain_image_synthesis_latent_diffusion_model); run: synthbrain models download brain-ldm",
        ),
        (
            ["generate", "--model", "{brain}", "-o", "{tmp}/x.png"],
            "output file '{tmp}/x.png' must end in .nii.gz, .nii, .nrrd",
        ),
        (
            ["generate", "--model", "{labels}", "-o", "{tmp}/x.nii.gz"],
            "is a label_generator model; 'generate' needs a conditional_latent_diffusion or modality_image model",
        ),
        (
            ["labels", "--model", "{labels}", "--wmh", "0.5", "-o", "{tmp}/x.nii.gz"],
            "wmh 0.5 is outside 0–0.0923 fraction",
        ),
        (
            ["image-from-labels", "{tmp}/missing.nii.gz", "--model", "{spade}", "-o", "{tmp}/x.nii.gz"],
            "missing.nii.gz does not exist",
        ),
        (
            ["image-from-labels", "{labelfile}", "--model", "{spade}", "--sequence", "PD", "-o", "{tmp}/x.nii.gz"],
            "sequence 'PD' is not one of T1, FLAIR, T2",
        ),
        (
            ["image-from-labels", "{tmp}", "--model", "{spade}", "-o", "{tmp}/x.nii.gz"],
            "input {tmp} is a folder; give a volume file",
        ),
        (["models", "import", "{tmp}/nothing"], "nothing does not exist"),
        (["models", "download", "brainspade3d-image"], "weights are not public"),
    ],
)
def test_bad_input_messages(tmp_path, capsys, home, model_folders, argv, message):
    work = tmp_path / "work"
    work.mkdir()
    label_file = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(label_file))
    fill = {
        "tmp": work,
        "brain": model_folders["brain"],
        "labels": model_folders["labels"],
        "spade": model_folders["spade"],
        "labelfile": label_file,
    }
    argv = ["--home", str(home)] + [a.format(**{k: str(v) for k, v in fill.items()}) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2, f"exit status {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"the error is one line: {err}"
    assert message.format(tmp=work) in lines[0], f"the error says {message!r}: {err}"
    assert list(work.iterdir()) == [], "a refused command writes nothing"


@pytest.mark.slow  # seven interpreter starts that import torch: ~16 s on 2 cores
def test_console_script_help_and_error():
    exe = shutil.which("synthbrain") or str(Path(sys.executable).with_name("synthbrain"))
    for sub in ([], ["generate"], ["labels"], ["image-from-labels"], ["models"], ["models", "import"]):
        res = subprocess.run([exe, *sub, "--help"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{sub} --help: exit status {res.returncode}: {res.stderr}"
        assert "usage: synthbrain" in res.stdout, f"{sub} --help prints usage: {res.stdout}"
    res = subprocess.run(
        [exe, "generate", "--model", "nope", "-o", "x.nii.gz"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, f"exit status {res.returncode}: {res.stderr}"
    assert res.stderr.strip().count("\n") == 0, f"the error is one line: {res.stderr}"
    assert "model 'nope' is not known" in res.stderr, res.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--model", "brain-ldm-demo", "-o", "{tmp}/a.nii.gz", "--device", "tpu"],
        ["generate", "--model", "brain-ldm-demo", "-o", "{tmp}/a.nii.gz", "--precision", "half"],
        ["generate", "--model", "brain-ldm-demo", "-o", "{tmp}/a.nii.gz", "--decode", "sliced"],
        ["generate", "--model", "brain-ldm-demo", "-o", "{tmp}/a.nii.gz", "--steps", "0"],
        ["generate", "--model", "brain-ldm-demo", "-o", "{tmp}/a.nii.gz", "--age", "300"],
        ["batch", "--model", "brain-ldm-demo", "-n", "0", "--out", "{tmp}/b"],
        ["batch", "--model", "brain-ldm-demo", "-n", "2", "--out", "{tmp}/b", "--range", "age=1:500"],
        ["batch", "--model", "brain-ldm-demo", "-n", "2", "--out", "{tmp}/b", "--device", "mps"],
    ],
    ids=["device", "precision", "decode", "steps", "age", "count", "range", "batch-device"],
)
def test_a_bad_argument_is_answered_before_torch_is_imported(argv, tmp_path):
    args = [a.format(tmp=tmp_path) for a in argv]
    code = (
        "import sys\nfrom SynthBrainLib.cli import main\n"
        f"status = main({args!r})\nprint(status, 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    status, torch_loaded = proc.stdout.split()
    assert status == "2", f"a bad argument exits with status 2: {proc.stdout} {proc.stderr}"
    assert torch_loaded == "False", f"torch was imported before the error: {proc.stderr.strip()}"
    assert len(proc.stderr.strip().splitlines()) == 1, f"one line: {proc.stderr}"
    assert list(tmp_path.iterdir()) == [], "nothing written"


def verbs_of(parser) -> dict:
    """The parsers of a command's verbs, by name."""
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return action.choices


def test_synthbrain_has_the_users_verbs_only():
    from SynthBrainLib.cli import build_parser

    verbs = set(verbs_of(build_parser()))
    expected = {"generate", "labels", "image-from-labels", "insert-lesions", "remove-lesions", "age", "batch", "models"}
    assert verbs == expected, f"synthbrain's verbs: {sorted(verbs)}"


def test_shared_flags_have_one_default_everywhere():
    from SynthBrainLib.cli import build_parser

    verbs = verbs_of(build_parser())
    for name, parser in verbs.items():
        defaults = {a.dest: a.default for a in parser._actions}
        if "device" in defaults:
            assert defaults["device"] == "auto", f"{name}: --device defaults to {defaults['device']!r}"
    for name in ("generate", "labels", "image-from-labels", "insert-lesions", "remove-lesions", "age"):
        seed = {a.dest: a.default for a in verbs[name]._actions}["seed"]
        assert seed is None, f"{name}: a sample seed is drawn and recorded when not given, not {seed!r}"
    base = {a.dest: a.default for a in verbs["batch"]._actions}["seed"]
    assert base == 0, f"batch: the base seed is fixed so that a restart derives the same seeds, not {base!r}"


def test_a_developer_verb_is_not_a_user_verb(capsys):
    code, _, err = run(capsys, "bench", "brain-ldm")
    assert code == 2, f"exit status {code}: {err}"
    assert "invalid choice: 'bench'" in err, f"synthbrain has no bench verb: {err}"
