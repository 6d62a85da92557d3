"""Speed options on tiny models: precision, memory layout, DPM-Solver++, tiled decoding, preview, cache, SDPA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import CountingUNet

from SynthBrainLib import ConditionError, DeviceError, load_pipeline
from SynthBrainLib.models.networks import build_network
from SynthBrainLib.pipelines.base import use_sdpa
from SynthBrainLib.pipelines.decoding import (
    TileSettings,
    blend_weights,
    decode,
    decode_full,
    decode_tiled,
    window_overlaps,
    window_shape,
)
from SynthBrainLib.pipelines.device import Precision

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def brain(model_folders):
    # float32: the reference the speed options are compared with (the default preset may be bfloat16)
    return load_pipeline(str(model_folders["brain"]), device="cpu", precision="float32")


# ---- precision --------------------------------------------------------------------------------
def test_precision_options():
    assert Precision.for_device(CPU).name == "float32+channels_last_3d", "auto on the CPU, published preset"
    bf16 = Precision.for_device(CPU, "bfloat16").name
    assert bf16 == "bfloat16-autocast+channels_last_3d", f"bfloat16 on the CPU: {bf16}"
    assert Precision.for_device(CPU, "float32").short == "float32", "float32's short name"
    with pytest.raises(DeviceError, match="half precision is only available on CUDA devices"):
        Precision.for_device(CPU, "float16")
    with pytest.raises(DeviceError, match="precision 'fp8' is not one of auto, float32, mixed, bfloat16, float16"):
        Precision.for_device(CPU, "fp8")


def test_mixed_precision_runs_noisy_steps_in_float32(model_folders, brain):
    from SynthBrainLib.pipelines.sampling import make_scheduler, noise_ratio

    mixed = Precision.for_device(CPU, "mixed")
    assert mixed.name == "mixed(float32 above sigma/alpha 2, else bfloat16-autocast)+channels_last_3d", mixed.name
    assert mixed.short == "mixed", mixed.short
    sch = make_scheduler(brain.card.scheduler, "dpm++2m", 10, CPU)
    dtypes = [mixed.for_noise_ratio(noise_ratio(sch, "dpm++2m", t)).dtype for t in sch.timesteps]
    assert dtypes[0] == torch.float32, f"the noisiest step runs in float32: {dtypes}"
    assert dtypes[-1] == torch.bfloat16, f"the last step runs in bfloat16: {dtypes}"
    assert dtypes == sorted(dtypes, key=lambda d: d == torch.bfloat16), f"float32 steps first, then bfloat16: {dtypes}"
    assert noise_ratio(sch, "rflow", 500) == 1.0, "rectified flow at t=500 has noise ratio 1"
    assert noise_ratio(sch, "ddim", 999) > 50, "DDIM at t=999 is almost all noise"
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu", precision="mixed")
    a, b = pipe.generate(seed=4, steps=3), pipe.generate(seed=4, steps=3)
    assert np.array_equal(a.image, b.image), "mixed precision is deterministic"
    assert a.provenance["precision"] == mixed.name, f"provenance records the precision: {a.provenance['precision']}"


def test_bfloat16_is_deterministic_and_close_to_float32(model_folders, brain):
    fast = load_pipeline(str(model_folders["brain"]), device="cpu", precision="bfloat16")
    a, b = fast.generate(seed=4, steps=3), fast.generate(seed=4, steps=3)
    assert np.array_equal(a.image, b.image)
    assert a.provenance["precision"] == "bfloat16-autocast+channels_last_3d"
    ref = brain.generate(seed=4, steps=3)
    assert np.abs(a.image - ref.image).max() < 0.1


def test_bfloat16_pipelines_keep_16_bit_unet_weights_with_the_autocast_result(model_folders):
    stored = load_pipeline(str(model_folders["brain"]), device="cpu", precision="bfloat16")
    unet = stored.networks["diffusion"]
    convs = [m for m in unet.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.Linear))]
    assert all(m.weight.dtype == torch.bfloat16 for m in convs), "convolution and linear weights are bfloat16"
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.weight.dtype == torch.float32 for m in norms), "norm weights stay float32"
    cast = load_pipeline(str(model_folders["brain"]), device="cpu", precision="bfloat16")
    cast.networks["diffusion"].float()  # what autocast did before: float32 weights, cast at every call
    a, b = stored.generate(seed=3, steps=3), cast.generate(seed=3, steps=3)
    assert np.abs(a.image - b.image).max() < 1e-6, "16-bit weights give the autocast result"
    mixed = load_pipeline(str(model_folders["brain"]), device="cpu", precision="mixed")
    weights = [m.weight.dtype for m in mixed.networks["diffusion"].modules() if isinstance(m, torch.nn.Conv3d)]
    assert set(weights) == {torch.float32}, "mixed runs some steps in float32: its weights stay float32"


def test_channels_last_matches_contiguous_layout(model_folders, brain):
    plain = load_pipeline(str(model_folders["brain"]), device="cpu", precision="float32")
    plain.precision = Precision(CPU, torch.float32, channels_last=False)
    for net in plain.networks.values():
        net.to(memory_format=torch.contiguous_format)
    a, b = plain.generate(seed=2, steps=3), brain.generate(seed=2, steps=3)
    assert np.abs(a.image - b.image).max() < 1e-4


# ---- DPM-Solver++ in the pipelines --------------------------------------------------------------
def test_dpm_solver_in_pipeline(brain, model_folders):
    calls = []
    a = brain.generate(seed=1, sampler="dpm++2m", steps=5, progress=lambda s, t: calls.append((s, t)))
    b = brain.generate(seed=1, sampler="dpm++2m", steps=5)
    assert np.array_equal(a.image, b.image), "DPM-Solver++ is deterministic"
    assert a.provenance["sampler"] == "dpm++2m", f"provenance records the sampler: {a.provenance['sampler']}"
    assert a.provenance["steps"] == 5, f"provenance records the steps: {a.provenance['steps']}"
    assert calls == [(i, 6) for i in range(1, 7)], f"progress counts 1 to 6 of 6: {calls}"
    labels = load_pipeline(str(model_folders["labels"]), device="cpu")  # brainSPADE card: not listed
    with pytest.raises(
        ConditionError, match="sampler 'dpm\\+\\+2m' does not fit this model \\(its card does not list it\\)"
    ):
        labels.generate(seed=1, sampler="dpm++2m", steps=3)


# ---- tiled decoding -----------------------------------------------------------------------------
def _tiny_autoencoder(brain):
    spec = brain.card.networks["autoencoder"]
    torch.manual_seed(0)
    ae = build_network(spec)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return ae


def test_window_geometry():
    assert window_shape((80, 112, 80), 2, 10**9) == (80, 112, 80)
    assert window_shape((80, 112, 80), 2, 2_000_000) == (80, 39, 80)  # slabs across the longest axis
    roi = window_shape((20, 40, 18), 2, 20 * 16 * 18 * 8)
    assert roi == (20, 16, 18)
    ov = window_overlaps((20, 40, 18), roi, 0.25)
    assert ov[0] == 0.0, f"no overlap along an axis the window covers: {ov}"
    assert ov[2] == 0.0, f"no overlap along an axis the window covers: {ov}"
    assert int(16 * (1 - ov[1])) == 8, f"8 shared voxels = 2 * BORDER + 2: {ov}"
    w = blend_weights((20, 40, 18), roi, ov)
    assert w.shape == (1, 1, 20, 16, 18), f"one weight per window voxel: {w.shape}"
    assert float(w.min()) > 0, "blend weights are positive"
    profile = w[0, 0, 0, :, 0]
    assert profile[:3].max() < 1e-5, f"the first border voxels get (almost) no weight: {profile}"
    assert profile[-3:].max() < 1e-5, f"the last border voxels get (almost) no weight: {profile}"
    assert float(profile[8]) == 1.0, f"the window centre gets full weight: {profile}"


@pytest.mark.parametrize(
    "norm, fast_stats, tolerance", [("global", False, 1e-4), ("global", True, 0.05), ("window", False, 0.5)]
)
def test_tiled_decode_matches_full_decode(brain, norm, fast_stats, tolerance):
    ae = _tiny_autoencoder(brain)
    prec = Precision(CPU)
    latent = torch.randn(1, 3, 20, 40, 18, generator=torch.Generator().manual_seed(0))
    full = decode_full(ae, latent, prec)
    settings = TileSettings(max_window_voxels=20 * 16 * 18 * 8, norm=norm, fast_stats=fast_stats)
    tiled = decode_tiled(ae, latent, prec, settings)
    assert tiled.shape == full.shape == (1, 1, 40, 80, 36)
    diff = (tiled - full).abs()
    assert float(diff.max()) < tolerance, float(diff.max())
    mse = float((diff**2).mean())
    rng = float(full.max() - full.min())
    assert 10 * np.log10(rng**2 / mse) > (30.0 if norm == "window" else 50.0)


def test_decode_modes_and_provenance(model_folders, brain):
    tiled = load_pipeline(str(model_folders["brain"]), device="cpu", decode="tiled")
    r = tiled.generate(seed=1, steps=2)
    assert r.provenance["decode"]["mode"] == "tiled", f"provenance records tiled decoding: {r.provenance['decode']}"
    assert r.provenance["decode"]["norm"] == "global", f"tiled decoding defaults to global norm: {r.provenance}"
    assert brain.generate(seed=1, steps=2).provenance["decode"] == {"mode": "full"}  # auto: small outputs decode whole
    with pytest.raises(ConditionError, match="decode 'sliced' is not one of auto, full, slab, tiled"):
        load_pipeline(str(model_folders["brain"]), device="cpu", decode="sliced")
    spade = load_pipeline(str(model_folders["spade_ldm"]), device="cpu", decode="tiled")
    with pytest.raises(ConditionError, match="decode 'tiled' is not available for SPADE decoders"):
        spade.generate(np.zeros((16, 16, 16), np.uint8), seed=1)
    ae = _tiny_autoencoder(brain)
    out, how = decode(ae, torch.zeros(1, 3, 8, 8, 8), Precision(CPU), mode="auto", output_shape=(16, 16, 16))
    assert how == {"mode": "full"}, f"auto decodes a small output whole: {how}"
    assert out.shape == (1, 1, 16, 16, 16), f"decoded shape: {out.shape}"
    with pytest.raises(ConditionError, match="tile overlap 1.5 is outside 0–0.9"):
        TileSettings(overlap=1.5).check()


# ---- preview and cache --------------------------------------------------------------------------
def test_preview_uses_the_preview_sampler_and_steps(brain):
    r = brain.generate(seed=3, preview=True, age=60)
    assert (r.provenance["sampler"], r.provenance["steps"], r.provenance["preview"]) == (
        "dpm++2m",
        brain.preview_steps,
        True,
    )
    r = brain.generate(seed=3, preview=True, steps=2)
    assert r.provenance["steps"] == 2


def test_cache_answers_repeats_with_copies(model_folders):
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu", cache_size=2)
    counter = CountingUNet(pipe.networks["diffusion"])
    pipe.networks["diffusion"] = counter
    a = pipe.generate(seed=1, steps=3, age=60)
    assert counter.calls == 3
    progress = []
    b = pipe.generate(seed=1, steps=3, age=60, progress=lambda s, t: progress.append((s, t)))
    assert counter.calls == 3, f"a repeat runs no UNet step: {counter.calls} calls"
    assert progress == [(1, 1)], f"a cache hit reports one step of one: {progress}"
    assert np.array_equal(a.image, b.image), "a cache hit returns the same image"
    assert a.provenance == b.provenance, "a cache hit returns the same provenance"
    b.image[:] = 0  # callers get copies
    assert np.array_equal(pipe.generate(seed=1, steps=3, age=60).image, a.image)
    pipe.generate(seed=2, steps=3, age=60)  # another seed: a miss
    pipe.generate(seed=1, steps=3, age=61)  # other conditions: a miss; evicts seed 1 / age 60 (size 2)
    assert counter.calls == 9
    pipe.generate(seed=1, steps=3, age=60)
    assert counter.calls == 12
    pipe.generate(seed=1, age=60, preview=True)  # a preview is another request
    assert counter.calls == 12 + pipe.preview_steps
    with pytest.raises(ConditionError, match="cache_size -1 is outside 0–10000"):
        load_pipeline(str(model_folders["brain"]), device="cpu", cache_size=-1)


def test_label_to_image_cache(model_folders):
    pipe = load_pipeline(str(model_folders["spade"]), device="cpu", cache_size=4)
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 3
    a = pipe.generate(labels, seed=1)
    labels2 = labels.copy()
    labels2[5, 5, 5] = 2
    assert pipe.generate(labels, seed=1).provenance == a.provenance
    other = pipe.generate(labels2, seed=1)  # other labels: a miss
    assert other.provenance["input"]["labels_sha256"] != a.provenance["input"]["labels_sha256"]
    assert len(pipe._cache) == 2


# ---- attention ----------------------------------------------------------------------------------
def test_sdpa_attention_matches_math_attention(model_folders, brain):
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu", sdpa=True, precision="float32")
    assert pipe.sdpa
    assert use_sdpa(pipe.networks["diffusion"]) > 0
    a, b = pipe.generate(seed=5, steps=3), brain.generate(seed=5, steps=3)
    assert np.abs(a.image - b.image).max() < 1e-4


def test_compile_mode_is_checked(model_folders):
    with pytest.raises(ConditionError, match="compile 'fastest' is not one of default, reduce-overhead, max-autotune"):
        load_pipeline(str(model_folders["brain"]), device="cpu", compile="fastest")


# ---- command line -------------------------------------------------------------------------------
def test_generate_speed_flags(model_folders, tmp_path, capsys):
    import json

    from SynthBrainLib.cli import main

    out = tmp_path / "b.nii.gz"
    code = main(
        [
            "generate",
            "--model",
            str(model_folders["brain"]),
            "-o",
            str(out),
            "--quiet",
            "--seed",
            "2",
            "--precision",
            "bfloat16",
            "--decode",
            "tiled",
            "--preview-steps",
            "2",
        ]
    )
    assert code == 0, capsys.readouterr().err
    side = json.loads((tmp_path / "b.json").read_text())
    assert (side["sampler"], side["steps"], side["preview"]) == ("dpm++2m", 2, True)
    assert side["precision"].startswith("bfloat16"), f"--precision is recorded: {side['precision']}"
    assert side["decode"]["mode"] == "tiled", f"--decode is recorded: {side['decode']}"
    code = main(
        [
            "generate",
            "--model",
            str(model_folders["brain"]),
            "-o",
            str(tmp_path / "c.nii.gz"),
            "--quiet",
            "--precision",
            "half",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    expected = "synthbrain: error: precision 'half' is not one of auto, float32, mixed, bfloat16, float16"
    assert err.strip() == expected, err
    code = main(
        [
            "generate",
            "--model",
            str(model_folders["brain"]),
            "-o",
            str(tmp_path / "c.nii.gz"),
            "--quiet",
            "--preview-steps",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, f"exit status {code}: {err}"
    assert "--preview-steps 0 must be at least 1" in err, err
