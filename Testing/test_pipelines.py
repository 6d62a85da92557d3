"""Every pipeline kind on tiny random-weight models: determinism, progress, cancel, samplers, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tiny_models import CountingUNet, untrained_pipeline

from SynthBrainLib import (
    ConditionalBrainPipeline,
    ConditionError,
    DeviceError,
    LabelGeneratorPipeline,
    LabelToImagePipeline,
    SynthesisCancelled,
    load_pipeline,
)
from SynthBrainLib.models.conditioning import resolve_sampler
from SynthBrainLib.pipelines.device import resolve_device


@pytest.fixture(scope="module")
def pipes(model_folders):
    return {name: load_pipeline(str(folder), device="cpu") for name, folder in model_folders.items()}


def _output(result):
    return result.image if result.image is not None else result.partial_volumes


def test_pipeline_classes(pipes):
    assert isinstance(pipes["brain"], ConditionalBrainPipeline), "the brain model loads as ConditionalBrainPipeline"
    assert isinstance(pipes["labels"], LabelGeneratorPipeline), "the label model loads as LabelGeneratorPipeline"
    assert isinstance(pipes["spade"], LabelToImagePipeline), "the SPADE model loads as LabelToImagePipeline"
    assert isinstance(pipes["spade_ldm"], LabelToImagePipeline), "the SPADE LDM model loads as LabelToImagePipeline"


@pytest.mark.parametrize("name", ["brain", "labels", "rflow"])
@pytest.mark.parametrize("sampler", [None, "ddpm", "ddim", "pndm"])
def test_same_seed_same_output_different_seed_different(pipes, name, sampler):
    pipe = pipes[name]
    if sampler is not None and sampler not in pipe.card.sampling.samplers:
        with pytest.raises(ConditionError, match=f"sampler '{sampler}' does not fit this model"):
            pipe.generate(seed=1, sampler=sampler, steps=3)
        return
    a = pipe.generate(seed=1, sampler=sampler, steps=4)
    b = pipe.generate(seed=1, sampler=sampler, steps=4)
    c = pipe.generate(seed=2, sampler=sampler, steps=4)
    assert np.array_equal(_output(a), _output(b)), "the same seed gives the same output"
    assert not np.allclose(_output(a), _output(c)), "a different seed gives a different output"
    assert a.provenance["seed"] == 1, f"provenance seed {a.provenance['seed']}"
    expected = sampler or resolve_sampler(pipe.card.sampling, pipe.card.scheduler, None, None, pipe.preset)[0]
    assert a.provenance["sampler"] == expected, f"provenance sampler {a.provenance['sampler']}, expected {expected}"


def test_conditions_change_the_output(pipes):
    pipe = pipes["brain"]
    young = pipe.generate(seed=3, age=45)
    old = pipe.generate(seed=3, age=82)
    assert not np.allclose(young.image, old.image)
    assert old.provenance["conditions"]["model_units"]["age"] == 1.0
    assert old.provenance["conditions"]["real_units"]["age"] == 82.0


def test_brain_result_geometry_and_provenance(pipes):
    pipe = pipes["brain"]
    r = pipe.generate(seed=5, age=70, sex="male", raw={"brain_volume": 0.3})
    assert r.image.shape == (16, 16, 16), f"image shape {r.image.shape}"
    assert r.image.dtype == np.float32, f"image dtype {r.image.dtype}"
    assert r.image.min() >= 0.0, f"image minimum {r.image.min()} is below 0"
    assert r.image.max() <= 1.0, f"image maximum {r.image.max()} is above 1"
    assert np.allclose(r.affine, pipe.card.output.affine), "the result is on the model card's output grid"
    p = r.provenance
    assert p["synthetic"] is True, "provenance marks the image synthetic"
    assert p["model"]["id"] == "tiny-brain-ldm", f"provenance model id {p['model']['id']}"
    conditions = p["conditions"]
    assert conditions["given_as"]["brain_volume"] == "raw", "brain_volume is recorded as given raw"
    assert conditions["model_units"]["brain_volume"] == 0.3, "a raw brain_volume is passed through unchanged"
    assert p["conditions"]["normalisation"]["age"] == "published"  # the authors' demo app gives the age mapping
    assert p["conditions"]["normalisation"]["ventricular_volume"] == "assumed"
    assert set(p["weights"]) == {"autoencoder", "diffusion"}, f"provenance weights {set(p['weights'])}"
    assert len(p["weights"]["diffusion"]["sha256"]) == 64, "provenance holds the diffusion weights' SHA-256"
    assert (p["sampler"], p["steps"]) == ("unipc", 12), f"the fast preset's sampler and steps: {p['steps']}"
    assert p["preset"] == "fast", "provenance records the preset"
    assert p["versions"]["monai"], "provenance records the MONAI version"


def test_progress_reports_every_step_and_decode(pipes):
    calls = []
    pipes["brain"].generate(seed=1, steps=3, progress=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)], f"progress calls {calls}"
    calls.clear()
    pipes["labels"].generate(seed=1, sampler="pndm", steps=4, progress=lambda s, t: calls.append((s, t)))
    total = calls[-1][1]
    assert [s for s, _ in calls] == list(range(1, total + 1)), f"progress steps {calls}"
    assert all(t == total for _, t in calls), f"progress totals change: {calls}"


def test_cancel_stops_within_one_step(pipes):
    pipe = pipes["brain"]
    original = pipe.networks["diffusion"]
    counter = CountingUNet(original)
    pipe.networks["diffusion"] = counter
    try:
        event = threading.Event()

        def progress(step, total):
            if step == 2:
                event.set()

        with pytest.raises(SynthesisCancelled):
            pipe.generate(seed=1, steps=10, progress=progress, cancel=event)
        assert counter.calls == 2  # the step after the flag was set never ran
        with pytest.raises(SynthesisCancelled):
            pipe.generate(seed=1, cancel=lambda: True)
        assert counter.calls == 2
    finally:
        pipe.networks["diffusion"] = original


def test_cancel_before_decoding(pipes):
    pipe = pipes["labels"]
    flag = {"stop": False}

    def progress(step, total):
        flag["stop"] = step == total - 1  # after the last diffusion step, before decoding

    with pytest.raises(SynthesisCancelled):
        pipe.generate(seed=1, steps=2, sampler="ddim", progress=progress, cancel=lambda: flag["stop"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps 0 is outside 1–1000"),
        ({"steps": 5000}, "steps 5000 is outside 1–1000"),
        ({"sampler": "euler"}, "sampler 'euler' is not one of ddpm, ddim, pndm, rflow"),
        ({"sampler": "rflow"}, "sampler 'rflow' does not fit this model (it was trained with the epsilon objective)"),
        ({"seed": -1}, "seed -1 is outside 0–"),
        ({"sampler": "pndm", "steps": 3}, "steps 3 is outside 4–1000 for the pndm sampler"),
        ({"age": 300}, "age 300 is outside 44–82 years"),
    ],
)
def test_bad_arguments(pipes, kwargs, message):
    with pytest.raises(ConditionError) as err:
        pipes["brain"].generate(**kwargs)
    assert str(err.value).startswith(message)


def test_label_generator_outputs(pipes):
    r = pipes["labels"].generate(seed=4, wmh=0.05, steps=2, sampler="ddim")
    assert r.image is None, "a label generator returns no image"
    assert r.labels.dtype == np.uint8, f"label dtype {r.labels.dtype}"
    assert r.labels.shape == (16, 16, 16), f"label shape {r.labels.shape}"
    assert r.partial_volumes.shape == (10, 16, 16, 16), f"partial volume shape {r.partial_volumes.shape}"
    assert np.allclose(r.partial_volumes.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(r.partial_volumes.argmax(axis=0), r.labels)
    lesions = r.provenance["lesions"]
    assert set(lesions) == {"wmh", "tumour", "edema", "gdtumour"}
    count = int((r.labels == 6).sum())
    assert lesions["wmh"]["present"] == (count > 0), f"wmh present {lesions['wmh']['present']} with {count} voxels"
    assert lesions["wmh"]["requested"] == 0.05, f"wmh requested {lesions['wmh']['requested']}"
    assert lesions["wmh"]["fraction"] == pytest.approx(count / max(int((r.labels > 0).sum()), 1))
    assert r.label_names[6] == "wmh"


def _label_map(shape=(20, 24, 18), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[3:-3, 3:-3, 3:-3] = rng.integers(1, 10, size=tuple(s - 6 for s in shape))
    return labels


@pytest.mark.parametrize("name", ["spade", "spade_ldm"])
def test_label_to_image_returns_the_input_grid(pipes, name):
    pipe = pipes[name]
    labels = _label_map()
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) * np.array([1.2, 1.5, 1.8])
    affine = np.eye(4)
    affine[:3, :3] = rot
    affine[:3, 3] = [14.0, -12.0, -15.0]
    r = pipe.generate(labels, affine=affine, sequence="flair", seed=2)
    assert r.image.shape == labels.shape, f"image shape {r.image.shape}, labels {labels.shape}"
    assert r.image.dtype == np.float32, f"image dtype {r.image.dtype}"
    assert np.allclose(r.affine, affine)
    assert r.provenance["sequence"] == "FLAIR"
    assert r.provenance["input"]["shape"] == list(labels.shape)
    again = pipe.generate(labels, affine=affine, sequence="FLAIR", seed=2)
    assert np.array_equal(r.image, again.image)
    t1 = pipe.generate(labels, affine=affine, sequence="T1", seed=2)
    assert not np.allclose(r.image, t1.image)


def test_label_to_image_on_model_grid_needs_no_affine(pipes):
    pipe = pipes["spade"]
    labels = _label_map((16, 16, 16))
    r = pipe.generate(labels, seed=1)
    assert np.allclose(r.affine, pipe.card.output.affine)
    pv = np.eye(10, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    assert np.allclose(pipe.generate(pv, seed=1).image, r.image, atol=1e-5)


def test_label_to_image_centre_alignment_moves_labels_into_view(pipes):
    pipe = pipes["spade"]
    labels = _label_map((16, 16, 16))
    far = pipe.card.output.affine.copy()
    far[:3, 3] += 500.0  # drawn far from the model's field of view
    in_view = pipe.generate(labels, affine=pipe.card.output.affine, seed=1)
    centred = pipe.generate(labels, affine=far, seed=1, alignment="centre")
    assert np.allclose(centred.image, in_view.image, atol=1e-4)
    with pytest.raises(ConditionError, match="does not overlap .* use alignment='centre'"):
        pipe.generate(labels, affine=far, seed=1, alignment="world")  # would render an empty grid


@pytest.mark.parametrize(
    "labels, affine, kwargs, message",
    [
        (
            np.full((16, 16, 16), 12, np.uint8),
            None,
            {},
            "label value 12 is not in the model's schema (0–9: 0 background, 1 csf",
        ),
        (np.zeros((5, 16, 16, 16), np.float32), None, {}, "partial volumes have 5 channels; the model's schema has 10"),
        (np.zeros((8, 8, 8), np.uint8), None, {}, "labels of shape (8, 8, 8) need an affine"),
        (np.zeros((16, 16, 16), np.uint8), np.zeros((4, 4)), {}, "affine must be an invertible 4x4"),
        (np.zeros((16, 16, 16), np.uint8), None, {"sequence": "DWI"}, "sequence 'DWI' is not one of T1, FLAIR, T2"),
        (np.zeros((16, 16, 16), np.uint8), None, {"alignment": "best"}, "alignment 'best' is not one of world, centre"),
        (
            np.zeros((16, 16, 16), np.uint8),
            None,
            {"steps": 5},
            "steps 5: tiny-spade renders in one network pass (SPADE generator) and takes no sampler or steps",
        ),
        (
            np.zeros((16, 16, 16), np.uint8),
            None,
            {"sampler": "ddim", "steps": 5},
            "sampler 'ddim', steps 5: tiny-spade renders in one network pass",
        ),
    ],
)
def test_label_to_image_bad_inputs(pipes, labels, affine, kwargs, message):
    with pytest.raises(ConditionError) as err:
        pipes["spade"].generate(labels, affine=affine, **kwargs)
    assert str(err.value).startswith(message)


def test_wrong_pipeline_class_is_refused(model_folders):
    with pytest.raises(
        ConditionError,
        match="is a label_generator model; ConditionalBrainPipeline runs conditional_latent_diffusion models",
    ):
        ConditionalBrainPipeline.from_pretrained(str(model_folders["labels"]), device="cpu")


def test_a_pipeline_built_without_weights_says_so(pipes):
    pipe = untrained_pipeline(ConditionalBrainPipeline, pipes["brain"].card)
    r = pipe.generate(seed=0, steps=1)
    assert r.provenance["weights"] == {"random_untrained": True}, f"provenance weights: {r.provenance['weights']}"


def test_devices():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(DeviceError, match="device 'mps' is not supported: Apple MPS lacks the 3D operations"):
        resolve_device("mps")
    with pytest.raises(DeviceError, match="device 'tpu' is not one of auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device 'cuda:1' was requested but CUDA is not available"):
            resolve_device("cuda:1")


def test_half_precision_is_cuda_only(model_folders):
    with pytest.raises(DeviceError, match="half precision is only available on CUDA"):
        load_pipeline(str(model_folders["brain"]), device="cpu", precision="float16")


def test_the_old_half_flag_is_an_unknown_option(model_folders):
    with pytest.raises(ConditionError, match="unknown option 'half'; load_pipeline takes preset, precision"):
        load_pipeline(str(model_folders["brain"]), device="cpu", half=True)


def test_numpy_integers_are_accepted_and_fractions_refused(pipes):
    pipe = pipes["brain"]
    a = pipe.generate(seed=np.int64(3), steps=np.int32(2)).image
    assert np.array_equal(a, pipe.generate(seed=3, steps=2).image)
    with pytest.raises(ConditionError, match=r"^seed 1.5 is not a whole number; allowed: 0–"):
        pipe.generate(seed=1.5, steps=2)
    with pytest.raises(ConditionError, match=r"^steps 2.0 is not a whole number; allowed: 1–1000$"):
        pipe.generate(seed=1, steps=2.0)
    with pytest.raises(ConditionError, match=r"^seed True is not a whole number"):
        pipe.generate(seed=True, steps=2)


def test_label_map_with_a_trailing_channel_axis_is_a_label_map(pipes):
    labels = _label_map((16, 16, 16))
    plain = pipes["spade"].generate(labels, seed=2).image
    assert np.array_equal(
        pipes["spade"].generate(labels[None], seed=2).image, plain
    )  # (1, X, Y, Z), e.g. from a (X, Y, Z, 1) NIfTI
