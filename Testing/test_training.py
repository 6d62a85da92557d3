"""`synthbrain-dev train` end to end on a tiny budget: the recipes write loadable, checksummed model folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthbrain_dev.cli import main
from SynthBrainLib import load_pipeline
from SynthBrainLib.models.store import ModelStore

pytestmark = pytest.mark.slow  # trains three demo models (phantoms + networks) once per module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    for model in ("brain-ldm-demo", "labels-demo", "label2image-demo"):
        code = main(
            [
                "train",
                model,
                "--out",
                str(base / model),
                "--subjects",
                "8",
                "--scale",
                "0.002",
                "--data",
                str(base / "phantoms"),
            ]
        )
        assert code == 0, f"synthbrain-dev train {model} exited with {code}"
    return base


def _train_args(model: str, out, trained, *extra: str) -> list[str]:
    return [
        "train",
        model,
        "--out",
        str(out),
        "--subjects",
        "8",
        "--scale",
        "0.002",
        "--data",
        str(trained / "phantoms"),
        *extra,
    ]


def test_recipes_write_valid_model_folders(trained):
    store = ModelStore(home=trained / "home", shipped=[])
    for model in ("brain-ldm-demo", "labels-demo", "label2image-demo"):
        installed = store.locate(str(trained / model))
        assert installed.complete, f"{model}: the trained folder lacks weights"
        checksums = {w.checksum for w in installed.weights.values()}
        assert checksums == {"verified"}, f"{model}: checksum states {checksums}"
        record = json.loads((trained / model / "training.json").read_text())
        command = record["command"]
        assert command.startswith(f"synthbrain-dev train {model}"), f"{model}: recorded command {command}"
        assert record["data"]["subjects"] == 8, f"{model}: recorded subjects {record['data']['subjects']}"
        assert all(net["steps"] >= 1 for net in record["networks"].values() if isinstance(net, dict) and "steps" in net)


def test_label_demo_trains_on_both_parts_of_its_population(trained):
    data = json.loads((trained / "labels-demo" / "training.json").read_text())["data"]
    parts = data["parts"]
    assert [p["subjects"] for p in parts] == [5, 3], f"8 subjects split two thirds / one third, got {parts}"
    assert parts[1]["wmh_load"] == "heavy" and parts[1]["p_tumour"] == 0.0, f"second part: heavy WMH only, {parts}"
    assert data["subjects"] == 8, f"both parts are stacked, got {data['subjects']} subjects"
    by_kind = data["subjects_by_lesions"]
    assert by_kind["wmh"] >= 3, f"the heavy part adds WMH-only subjects, got {by_kind}"


def test_label_demo_weights_its_diffusion_loss_on_lesions(trained):
    networks = json.loads((trained / "labels-demo" / "training.json").read_text())["networks"]
    weight = networks["diffusion_lesion_weight"]
    assert 1.0 < weight <= 10.0, f"lesion latent voxels weigh more than the rest (at most 10x), got {weight}"


def test_trained_models_run(trained):
    brain = load_pipeline(str(trained / "brain-ldm-demo"), device="cpu")
    variables = {v.name: v for v in brain.card.conditioning.variables}
    assert variables["age"].range == (45.0, 82.0), f"age range {variables['age'].range}"
    assert variables["ventricular_volume"].default_from, "ventricular_volume has a default_from rule"
    image = brain.generate(seed=0, age=60, steps=2).image
    assert image.shape == tuple(brain.card.output.shape) == (64, 80, 64)
    labels = load_pipeline(str(trained / "labels-demo"), device="cpu").generate(seed=0, steps=2)
    assert labels.partial_volumes.shape == (10, 64, 80, 64)
    l2i = load_pipeline(str(trained / "label2image-demo"), device="cpu")
    assert l2i.card.sequences.names == ("T1", "FLAIR", "T2")
    flair = l2i.generate(labels.labels, affine=labels.affine, sequence="FLAIR", seed=0).image
    assert flair.shape == (64, 80, 64), f"FLAIR shape {flair.shape}"
    assert np.isfinite(flair).all(), "the FLAIR image has non-finite voxels"


def test_existing_model_folder_is_not_replaced(trained, capsys):
    before = (trained / "brain-ldm-demo" / "card.json").read_bytes()
    code = main(_train_args("brain-ldm-demo", str(trained / "brain-ldm-demo"), trained))
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    assert "card.json already exists; pass --overwrite" in err, f"the error does not ask for --overwrite: {err}"
    assert (trained / "brain-ldm-demo" / "card.json").read_bytes() == before


def test_autoencoder_is_reused_and_only_the_unet_trains(trained, tmp_path):
    source = trained / "labels-demo"
    code = main(_train_args("labels-demo", str(tmp_path / "again"), trained, "--autoencoder-from", str(source)))
    assert code == 0, f"training with --autoencoder-from exited with {code}"
    old, new = (json.loads((folder / "card.json").read_text())["weights"] for folder in (source, tmp_path / "again"))
    assert new["autoencoder"]["sha256"] == old["autoencoder"]["sha256"]
    record = json.loads((tmp_path / "again" / "training.json").read_text())
    assert record["networks"]["autoencoder"]["reused_from"].endswith("autoencoder.safetensors")
    assert "--autoencoder-from" in record["command"]
    assert load_pipeline(str(tmp_path / "again"), device="cpu").generate(seed=0, steps=2).labels.shape == (64, 80, 64)


def test_autoencoder_from_another_model_is_refused(trained, tmp_path, capsys):
    code = main(
        _train_args("labels-demo", str(tmp_path / "x"), trained, "--autoencoder-from", str(trained / "brain-ldm-demo"))
    )
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    assert "holds 'brain-ldm-demo', not 'labels-demo'" in err, f"the error does not name both models: {err}"
    assert not (tmp_path / "x" / "card.json").exists()


def test_demo_cards_predict_v(trained):
    for model in ("brain-ldm-demo", "labels-demo"):
        card = load_pipeline(str(trained / model), device="cpu").card
        assert card.scheduler.objective == card.scheduler.kwargs["prediction_type"] == "v_prediction"
        assert "pndm" not in card.sampling.samplers


def test_same_weights_always_give_the_same_file(trained, tmp_path):
    """The sha256 in a card must identify the weights: writing them again gives the same bytes."""
    from safetensors.torch import load_file

    from synthbrain_dev.training.demo_models import write_model_folder

    source = trained / "labels-demo"
    card = json.loads((source / "card.json").read_text())
    states = {key: load_file(str(source / entry["file"])) for key, entry in card["weights"].items()}
    training = json.loads((source / "training.json").read_text())
    digests = set()
    for i in range(6):
        written = write_model_folder(tmp_path / f"copy{i}", json.loads(json.dumps(card)), states, training)
        digests.add(tuple(w.sha256 for w in written.weights.values()))
    assert digests == {tuple(entry["sha256"] for entry in card["weights"].values())}


def test_latent_demos_are_trained_for_guidance(trained):
    for model in ("brain-ldm-demo", "labels-demo"):
        pipe = load_pipeline(str(trained / model), device="cpu", precision="float32")
        guidance = pipe.card.sampling.guidance
        assert guidance is not None, f"{model}: the card has no sampling.guidance section"
        assert guidance.condition_dropout > 0 and guidance.null_value == -1.0, f"{model}: {guidance}"
        guided = pipe.generate(seed=0, steps=2, guidance=guidance.maximum)
        assert guided.provenance["guidance"] == guidance.maximum, f"{model}: provenance {guided.provenance}"


def test_sharpening_changes_only_the_decoder(trained, tmp_path):
    from safetensors.torch import load_file

    source, out = trained / "brain-ldm-demo", tmp_path / "sharp"
    code = main(_train_args("brain-ldm-demo", out, trained, "--sharpen-decoder-of", str(source)))
    assert code == 0, f"training with --sharpen-decoder-of exited with {code}"
    old, new = (json.loads((folder / "card.json").read_text())["weights"] for folder in (source, out))
    assert new["diffusion"]["sha256"] == old["diffusion"]["sha256"], "the diffusion UNet is kept byte for byte"
    before, after = (load_file(str(folder / "autoencoder.safetensors")) for folder in (source, out))
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv"))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv"))]
    assert encoder and all(before[k].equal(after[k]) for k in encoder), "the encoder (so the latents) is unchanged"
    assert any(not before[k].equal(after[k]) for k in decoder), "the decoder was fine-tuned"
    record = json.loads((out / "training.json").read_text())
    stage = record["networks"]["autoencoder"]["decoder_adversarial"]
    assert stage["steps"] >= 1 and stage["discriminator_loss_curve"], f"decoder stage record: {stage}"
    assert "--sharpen-decoder-of" in record["command"], record["command"]


def test_sharpening_a_label_model_is_refused(trained, tmp_path, capsys):
    code = main(
        _train_args("labels-demo", tmp_path / "y", trained, "--sharpen-decoder-of", str(trained / "labels-demo"))
    )
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    assert "labels-demo has no image decoder to sharpen; only brain-ldm-demo" in err, err
    assert not (tmp_path / "y").exists(), "nothing was written"


def test_training_continues_from_another_folders_unet(trained, tmp_path, capsys):
    from safetensors.torch import load_file

    from synthbrain_dev.training.demo_models import write_model_folder

    # A source whose UNet is far from any fresh start: its weights shifted by 0.5.
    source = trained / "labels-demo"
    card = json.loads((source / "card.json").read_text())
    states = {key: load_file(str(source / entry["file"])) for key, entry in card["weights"].items()}
    states["diffusion"] = {k: v.float() + 0.5 for k, v in states["diffusion"].items()}
    start = tmp_path / "start"
    write_model_folder(start, card, states, json.loads((source / "training.json").read_text()))
    out = tmp_path / "continued"
    extra = ("--autoencoder-from", str(start), "--diffusion-from", str(start))
    assert main(_train_args("labels-demo", str(out), trained, *extra)) == 0, "continued training runs"
    record = json.loads((out / "training.json").read_text())["networks"]["diffusion"]
    started = json.loads((start / "card.json").read_text())["weights"]["diffusion"]["sha256"]
    assert record["continued_from"]["sha256"] == started, "the start is recorded"
    before, after = load_file(str(start / "diffusion.safetensors")), load_file(str(out / "diffusion.safetensors"))
    changes = [float((after[k].float() - before[k].float()).abs().max()) for k in before]
    assert max(changes) > 0, "the UNet trained on"
    assert np.median(changes) < 0.1, f"from the start's weights, not fresh ones: median change {np.median(changes)}"
    other = str(trained / "brain-ldm-demo")
    code = main(_train_args("labels-demo", str(tmp_path / "y"), trained, "--diffusion-from", other))
    err = capsys.readouterr().err
    assert code == 2 and "holds 'brain-ldm-demo', not 'labels-demo'" in err, f"another model is refused: {err}"
    assert not (tmp_path / "y" / "card.json").exists(), "nothing written"
