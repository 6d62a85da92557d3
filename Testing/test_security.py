"""Hostile and broken inputs (issue 11), as one table: each row is an input that must end in one line
on stderr (``synthbrain: error: ...``), exit status 2, and no file written - plus the checks that
need more than a row: the model-id takeover, concurrent writers, the torch floor.

Rows run the real CLI in-process on the shipped demo models (``--home`` in a temporary folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hostile.fixtures import (
    SHIPPED,
    card_folder,
    card_of,
    custom_card,
    deep_json,
    files_under,
    nifti_with_sform,
    save_nii,
    set_field,
    takeover_card,
)

from SynthBrainLib.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return (code, *capsys.readouterr())


def with_field(path: str, value):
    """The shipped brain demo's card under the id ``custom``, with field ``path`` (``a.b``) set to ``value``."""
    return set_field(custom_card(), path, value)


def bundle(tmp: Path, inference: str) -> Path:
    folder = tmp / "bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "inference.json").write_text(inference)
    return folder


GEN = ("generate", "--model", "brain-ldm-demo", "--preview-steps", "2", "--seed", "1", "--quiet")
IMG = ("image-from-labels", "--model", "label2image-demo", "--sequence", "FLAIR", "--seed", "1", "--quiet")

#: (id, setup(tmp) -> CLI arguments after --home, what the error line must contain)
ROWS = [
    # 1. a model id taken without its checksum
    (
        "takeover-shipped-id",
        lambda t: ("models", "import", card_folder(t, takeover_card())),
        "claims the id 'brain-ldm-demo' of a shipped model",
    ),
    (
        "import-under-builtin-id",
        lambda t: ("models", "import", card_folder(t, dict(takeover_card(), id="mine")), "--model", "brain-ldm"),
        "'brain-ldm' is the id of a built-in model",
    ),
    # 4. tracebacks that must be one line
    (
        "complex-label-map",
        lambda t: (*IMG, save_nii(t / "l.nii.gz", np.zeros((8, 8, 8), np.complex64)), "-o", t / "o" / "x.nii.gz"),
        "complex64 values",
    ),
    (
        "rgb-label-map",
        lambda t: (
            *IMG,
            save_nii(t / "l.nii.gz", np.zeros((8, 8, 8), [("R", "u1"), ("G", "u1"), ("B", "u1")])),
            "-o",
            t / "o" / "x.nii.gz",
        ),
        "records (e.g. RGB colour)",
    ),
    ("inference-json-list", lambda t: ("models", "import", bundle(t, "[1, 2]")), "inference.json"),
    ("inference-json-string", lambda t: ("models", "import", bundle(t, '"text"')), "inference.json"),
    ("card-nested-200000-deep", lambda t: ("models", "import", card_folder(t, deep_json())), "not valid JSON"),
    (
        "card-huge-channels",
        lambda t: ("models", "import", card_folder(t, custom_card(channels=[32, 10**6, 64]))),
        "beyond 8192",
    ),
    (
        "card-huge-latent",
        lambda t: ("models", "import", card_folder(t, with_field("latent.shape", [8, 4096, 4096, 4096]))),
        "latent.shape",
    ),
    (
        "card-huge-timesteps",
        lambda t: (
            "models",
            "import",
            card_folder(t, with_field("scheduler.kwargs.num_train_timesteps", 10**9)),
        ),
        "num_train_timesteps",
    ),
    (
        "card-huge-default-steps",
        lambda t: ("models", "import", card_folder(t, with_field("sampling.default_steps", 10**9))),
        "default_steps",
    ),
    (
        "card-norm-eps-text",
        lambda t: ("models", "import", card_folder(t, custom_card(norm_eps="tiny"))),
        "norm_eps",
    ),
    (
        "batch-csv-not-utf8",
        lambda t: (
            "batch",
            "--model",
            "brain-ldm-demo",
            "--out",
            t / "o",
            "--conditions",
            _write(t / "c.csv", b"age\n\xff\xfe70\n"),
        ),
        "UTF-8",
    ),
    (
        "batch-out-is-a-file",
        lambda t: ("batch", "--model", "brain-ldm-demo", "-n", "1", "--out", _write(t / "file", b"x")),
        "is a file, not a folder",
    ),
    (
        "batch-out-under-proc",
        lambda t: ("batch", "--model", "brain-ldm-demo", "-n", "1", "--out", "/proc/synthbrain-out"),
        "/proc/synthbrain-out",
    ),
    ("home-is-a-file", lambda t: ("--home", _write(t / "homefile", b"x"), "models", "list"), "is a file, not a folder"),
    ("output-name-300-chars", lambda t: (*GEN, "-o", t / "o" / ("b" * 300 + ".nii.gz")), "at most 240"),
    # 5. accepted although wrong
    (
        "label-map-zero-affine",
        lambda t: (
            *IMG,
            nifti_with_sform(t / "l.nii", np.zeros((8, 8, 8), np.uint8), np.zeros((4, 4))),
            "-o",
            t / "o" / "x.nii.gz",
        ),
        "no usable voxel-to-world matrix",
    ),
    (
        "label-map-singular-affine",
        lambda t: (
            *IMG,
            nifti_with_sform(t / "l.nii", np.zeros((8, 8, 8), np.uint8), np.diag([1.0, 1.0, 0.0, 1.0])),
            "-o",
            t / "o" / "x.nii.gz",
        ),
        "no usable voxel-to-world matrix",
    ),
    (
        "card-output-shape-not-decoded-shape",
        lambda t: ("models", "import", card_folder(t, with_field("output.shape", [64, 80, 72]))),
        "output.shape",
    ),
    (
        "card-weight-name-with-nul",
        lambda t: (
            "models",
            "import",
            card_folder(t, with_field("weights.diffusion.file", "diffusion\x00.pt")),
        ),
        "plain file name",
    ),
    (
        "card-bundle-path-outside",
        lambda t: (
            "models",
            "import",
            card_folder(t, with_field("weights.diffusion.bundle_path", "../../etc/passwd")),
        ),
        "relative path inside the bundle",
    ),
    # 6. low
    (
        "preview-steps-named",
        lambda t: ("generate", "--model", "brain-ldm-demo", "--preview-steps", "100000", "-o", t / "o" / "x.nii.gz"),
        "--preview-steps 100000",
    ),
    ("device-not-text-like", lambda t: (*GEN, "--device", "gpu7", "-o", t / "o" / "x.nii.gz"), "device 'gpu7'"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("row_id, setup, needle", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(row_id, setup, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv = setup(inputs)
    home = tmp_path / "home"
    before = files_under(tmp_path)
    code, out, err = run(capsys, *(argv if argv[0] == "--home" else ("--home", home, *argv)))
    lines = err.strip().splitlines()
    assert code == 2, f"{row_id}: exit {code}, stderr {err[-600:]!r}"
    assert len(lines) == 1, f"{row_id}: one line on stderr, got {err[-600:]!r}"
    assert lines[0].startswith("synthbrain: error: "), f"{row_id}: {lines[0]!r}"
    assert needle in lines[0], f"{row_id}: {lines[0]!r} does not say {needle!r}"
    assert files_under(tmp_path) - before <= {"home"}, f"{row_id}: wrote {sorted(files_under(tmp_path) - before)}"


def test_takeover_folder_does_not_change_what_the_shipped_id_runs(tmp_path, capsys, monkeypatch):
    """The issue's high-severity case end to end: after the refused import, brain-ldm-demo still
    runs the shipped weights, and the folder imports fine under an id of its own."""
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    home = tmp_path / "home"
    folder = card_folder(tmp_path, takeover_card())
    first = tmp_path / "a.nii.gz"
    assert run(capsys, "--home", home, *GEN, "-o", first)[0] == 0, "the shipped model runs"
    code, _, err = run(capsys, "--home", home, "models", "import", folder)
    assert code == 2, err
    second = tmp_path / "b.nii.gz"
    assert run(capsys, "--home", home, *GEN, "-o", second)[0] == 0
    assert np.array_equal(nib.load(str(first)).get_fdata(), nib.load(str(second)).get_fdata()), (
        "the same weights as before"
    )
    code, out, err = run(capsys, "--home", home, "models", "import", folder, "--model", "my-brain")
    assert code == 0, f"importing under its own id works: {err}"
    assert "my-brain" in out, out


def test_weights_bound_to_another_card_are_refused(tmp_path, capsys, monkeypatch):
    """A cache entry whose install.json was verified against another card (made by hand, or by an
    older store) is not paired with the card now known under that id."""
    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    home = tmp_path / "home"
    folder = card_folder(tmp_path, dict(card_of(), id="my-brain"))
    assert run(capsys, "--home", home, "models", "import", folder)[0] == 0, "a folder of its own id imports"
    record_path = home / "models" / "my-brain" / "install.json"
    record = json.loads(record_path.read_text())
    assert len(record["card_sha256"]) == 64, "install.json records the card it verified against"
    record["card_sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    code, _, err = run(capsys, "--home", home, "generate", "--model", "my-brain", *GEN[3:], "-o", tmp_path / "x.nii.gz")
    assert code == 2, f"exit status {code}: {err}"
    assert "verified against another card" in err, err


def test_a_failing_cache_entry_never_hides_the_shipped_model(tmp_path, capsys, monkeypatch):
    """For a shipped id, a cache entry that fails its checks gives way to the verified shipped copy;
    and a card that only changes wording keeps its installed weights bound (the digest covers the
    weights and networks, not the prose)."""
    from SynthBrainLib.models.cards import ModelCard
    from SynthBrainLib.models.store import card_digest

    monkeypatch.setenv("SYNTHBRAIN_SHIPPED_MODELS", "")
    home = tmp_path / "home"
    assert run(capsys, "--home", home, "models", "import", SHIPPED / "brain-ldm-demo")[0] == 0, (
        "the shipped folder imports"
    )
    record_path = home / "models" / "brain-ldm-demo" / "install.json"
    record = json.loads(record_path.read_text())
    record["card_sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    code, _, err = run(capsys, "--home", home, *GEN, "-o", tmp_path / "x.nii.gz")
    assert code == 0, f"the shipped copy runs: {err}"
    provenance = json.loads((tmp_path / "x.json").read_text())
    assert {w["location"] for w in provenance["weights"].values()} == {"shipped"}, provenance["weights"]
    card = card_of()
    reworded = ModelCard.from_dict(dict(card, description="other words", version="9.9.9"))
    assert card_digest(reworded) == card_digest(ModelCard.from_dict(card)), "prose and version are not bound"
    other_weights = dict(
        card, weights={**card["weights"], "diffusion": dict(card["weights"]["diffusion"], sha256="1" * 64)}
    )
    assert card_digest(ModelCard.from_dict(other_weights)) != card_digest(ModelCard.from_dict(card)), "checksums are"


def test_dangling_symlink_at_the_output_is_not_replaced(tmp_path, capsys):
    link = tmp_path / "out.nii.gz"
    link.symlink_to(tmp_path / "nowhere.nii.gz")
    code, _, err = run(capsys, "--home", tmp_path / "home", *GEN, "-o", link)
    assert code == 2, f"exit status {code}: {err}"
    assert "already exists" in err, err
    assert link.is_symlink(), "the symlink is still there"
    assert os.readlink(link) == str(tmp_path / "nowhere.nii.gz"), "and still points where it did"


def test_a_file_finished_by_another_process_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """The check-then-write race, made deterministic: the destination appears after the up-front
    check and before the rename. The other process's file stays; nothing of ours is left."""
    from SynthBrainLib.errors import OutputError
    from SynthBrainLib.outputs import io

    target = tmp_path / "brain.nii.gz"
    real = io.file_sha256

    def other_process_finishes(path):
        target.write_bytes(b"the other process's image")
        return real(path)

    monkeypatch.setattr(io, "file_sha256", other_process_finishes)
    with pytest.raises(OutputError, match="written by another process meanwhile"):
        io.write_volume(target, np.zeros((4, 4, 4), np.float32), np.eye(4), {"model": {"id": "x"}, "seed": 1})
    assert target.read_bytes() == b"the other process's image", "not replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["brain.nii.gz"], "no sidecar, no temporary file of ours"


@pytest.mark.slow
def test_two_processes_writing_one_file_never_both_succeed(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", SYNTHBRAIN_HOME=str(tmp_path / "home"))
    for trial in range(3):
        target = tmp_path / f"same{trial}.nii.gz"
        command = [sys.executable, "-m", "SynthBrainLib.cli", *GEN, "-o", str(target)]
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)
        ]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], f"trial {trial}: exit codes {codes}: {[err[-300:] for _, err in results]}"
        assert not [p for p in tmp_path.iterdir() if ".synthbrain-tmp." in p.name], "no temporaries left"


def test_two_different_batches_cannot_share_a_folder(tmp_path):
    """batch.json is claimed exclusively: the second batch (other settings) is refused even when
    both start at the same moment."""
    from SynthBrainLib import batch
    from SynthBrainLib.errors import OutputError
    from SynthBrainLib.models.store import ModelStore

    card = ModelStore(home=tmp_path / "home").card("brain-ldm-demo")
    plans = [
        batch.plan_batch(card, "brain-ldm-demo", count=2, base_seed=seed, settings={"model_id": card.id})
        for seed in (1, 2)
    ]
    start, outcomes = threading.Barrier(2), []

    def claim(plan):
        start.wait()
        try:
            batch._check_batch_file(tmp_path, plan, rank=0)
            outcomes.append("claimed")
        except OutputError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["claimed", "refused"], outcomes


def test_damaged_batch_sidecars_are_remade_not_blocking(tmp_path):
    from SynthBrainLib import batch
    from SynthBrainLib.models.store import ModelStore

    card = ModelStore(home=tmp_path / "home").card("brain-ldm-demo")
    plan = batch.plan_batch(card, "brain-ldm-demo", count=1, base_seed=1, settings={"model_id": card.id})
    plan.file(tmp_path, 0).write_bytes(b"image")
    for damaged in ("{}", "[1, 2]", "not json", '{"batch": "x"}'):
        (tmp_path / "sample_00000.json").write_text(damaged)
        assert batch._finished(plan, tmp_path, 0) is False, f"sidecar {damaged!r}: the sample is made again"


def test_torch_floor_keeps_weights_only_safe(monkeypatch, tmp_path):
    """pyproject asks for torch >= 2.10, and the library refuses .pt files on an older torch."""
    import re

    import torch
    from packaging.requirements import Requirement

    from SynthBrainLib.errors import CheckpointError
    from SynthBrainLib.models import checkpoints

    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)
    torch_req = next(Requirement(r) for r in re.findall(r'"([^"]+)"', block) if Requirement(r).name == "torch")
    for vulnerable in ("2.5.1", "2.9.1"):
        assert not torch_req.specifier.contains(vulnerable), (
            f"pyproject allows torch {vulnerable} (weights_only bypassable)"
        )
    assert torch_req.specifier.contains("2.10.0"), torch_req
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    with pytest.raises(CheckpointError, match="upgrade to torch >= 2.10"):
        checkpoints.read_state_dict(path)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda p, i: p.generate(sex=["female"], preview=True, seed=1), "sex ['female']"),
        (lambda p, i: p.generate(sampler=5, seed=1), "sampler 5"),
        (lambda p, i: p.generate(cancel="yes", preview=True, seed=1), "cancel 'yes'"),
        (lambda p, i: p.generate(progress=5, preview=True, seed=1), "progress 5"),
        (lambda p, i: p.generate(raw=["x"], preview=True, seed=1), "raw ['x']"),
        (lambda p, i: p.generate(preview="yes", seed=1), "preview 'yes'"),
        (lambda p, i: i.generate(np.zeros((64, 80, 64), np.uint8), affine="eye", sequence="T1", seed=1), "affine"),
        (lambda p, i: i.generate("abc", sequence="T1", seed=1), "labels holds <U3"),
        (lambda p, i: i.generate(np.zeros((0, 80, 64), np.uint8), sequence="T1", seed=1), "labels is empty"),
        (lambda p, i: i.generate(np.zeros((64, 80, 64), complex), sequence="T1", seed=1), "complex128"),
        (lambda p, i: __import__("SynthBrainLib").load_pipeline("brain-ldm-demo", device=0), "device 0"),
        (lambda p, i: __import__("SynthBrainLib").load_pipeline("brain-ldm-demo", foo=1), "unknown option 'foo'"),
        (lambda p, i: p.generate(preview=True, seed=1).save(5), "output file 5"),
        (lambda p, i: __import__("SynthBrainLib").read_volume(5), "input file 5"),
        (lambda p, i: __import__("SynthBrainLib").ModelStore(home=5), "home 5"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_api_wrong_types_raise_the_librarys_one_line_error(call, needle, demo_pipelines):
    from SynthBrainLib.errors import SynthBrainError

    with pytest.raises(SynthBrainError) as raised:
        call(*demo_pipelines)
    assert "\n" not in str(raised.value), str(raised.value)
    assert needle in str(raised.value), str(raised.value)


@pytest.fixture(scope="module")
def demo_pipelines():
    import SynthBrainLib

    return SynthBrainLib.load_pipeline("brain-ldm-demo", device="cpu"), SynthBrainLib.load_pipeline(
        "label2image-demo", device="cpu"
    )


def test_each_face_words_the_remedy_for_its_users(tmp_path, capsys):
    """The library says what to do as data (Remedy); the CLI words it as flags, the Python API as
    arguments, the Slicer panel as its buttons - and the library message itself names no flag."""
    import sys as _sys

    from SynthBrainLib.cli.remedies import describe
    from SynthBrainLib.errors import OutputError, Remedy

    _sys.path.insert(0, str(REPO / "SynthBrain"))
    from SynthBrainSlicer.panel import error_message

    error = OutputError("brain.nii.gz already exists", remedy=Remedy("overwrite"))
    assert "--" not in error.message, "the library's message names no command-line flag"
    assert str(error) == "brain.nii.gz already exists; pass overwrite=True to replace it", str(error)
    assert describe(error) == "brain.nii.gz already exists; pass --overwrite to replace it", describe(error)
    missing = OutputError("weights missing", remedy=Remedy("install_weights", model="brain-ldm", detail="download"))
    assert "Download weights" in error_message(missing), error_message(missing)
    assert "synthbrain models download brain-ldm" in describe(missing), describe(missing)
