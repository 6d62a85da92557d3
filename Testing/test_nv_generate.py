"""NV-Generate-MR-Brain (MAISI-v2 rectified flow): the card, strict loading of upstream-layout
checkpoints, equivalence with MONAI's own networks and upstream's sampling step, output scaling and
geometry, and the faces' refusals.

The real weights cannot be fetched here: the networks are built from the upstream kwargs with
perturbed random weights and saved as NV-Generate's download script leaves them.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_models import tiny_modality_card, write_modality_model, write_upstream_models

from SynthBrainLib.errors import CheckpointError, ConditionError, ModelNotFoundError
from SynthBrainLib.models.cards import ModelCard, builtin_cards

#: Upstream's network kwargs (NV-Generate-CTMR configs/config_network_rflow.json), as MONAI takes
#: them on a CPU: use_flash_attention and norm_float16 off (the only two changes; same parameters).
UPSTREAM_AE = dict(
    spatial_dims=3,
    in_channels=1,
    out_channels=1,
    latent_channels=4,
    num_channels=[64, 128, 256],
    num_res_blocks=[2, 2, 2],
    norm_num_groups=32,
    norm_eps=1e-06,
    attention_levels=[False, False, False],
    with_encoder_nonlocal_attn=False,
    with_decoder_nonlocal_attn=False,
    use_checkpointing=False,
    use_convtranspose=False,
    norm_float16=False,
    num_splits=4,
    dim_split=1,
)
UPSTREAM_UNET = dict(
    spatial_dims=3,
    in_channels=4,
    out_channels=4,
    num_channels=[64, 128, 256, 512],
    attention_levels=[False, False, True, True],
    num_head_channels=[0, 0, 32, 32],
    num_res_blocks=2,
    use_flash_attention=False,
    include_top_region_index_input=False,
    include_bottom_region_index_input=False,
    include_spacing_input=True,
    num_class_embeds=128,
    resblock_updown=True,
    include_fc=True,
)
SCALE_FACTOR = 0.9696779847145081  # v1's, from upstream's notebook log


def nv_card() -> ModelCard:
    return builtin_cards()["nv-generate-mr-brain"]


def monai_networks(kwargs_ae=UPSTREAM_AE, kwargs_unet=UPSTREAM_UNET):
    """Upstream's networks as MONAI's own classes build them."""
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi
    from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi

    return AutoencoderKlMaisi(**kwargs_ae).eval(), DiffusionModelUNetMaisi(**kwargs_unet).eval()


# ---- the card ------------------------------------------------------------------------------------
def test_card_is_built_from_the_upstream_configs():
    card = nv_card()
    assert card.kind == "modality_image", f"kind: {card.kind}"
    assert card.networks["autoencoder"].cls == "AutoencoderKlMaisi", "MONAI's MAISI autoencoder"
    assert card.networks["diffusion"].cls == "DiffusionModelUNetMaisi", "MONAI's MAISI UNet"
    ae = {k: v for k, v in card.networks["autoencoder"].kwargs.items()}
    unet = {k: v for k, v in card.networks["diffusion"].kwargs.items()}
    assert ae == UPSTREAM_AE, f"autoencoder kwargs differ from upstream's: {ae}"
    assert unet == UPSTREAM_UNET, f"UNet kwargs differ from upstream's: {unet}"
    assert card.scheduler.cls == "RFlowScheduler", "MONAI's RFlowScheduler"
    assert card.sampling.default_steps == 30, "30 steps, as upstream"
    assert card.sampling.guidance.default == 2.0, "the current upstream config's guidance scale"
    assert card.sampling.guidance.null_value == 0, "guidance's null class is 0"
    assert card.weights["autoencoder"].sha256.startswith("1f8a7a056d0e"), "the CT autoencoder's published sha256"
    assert "ef9759bf221265b2704569cdeeac20bbf03b62ee" in card.weights["diffusion"].url, "HF revision pinned"
    codes = {m.key: m.code for m in card.modalities.choices}
    expected = {"T1w": 9, "T2w": 10, "FLAIR": 11, "SWI": 20, "MRA": 16, "FLAIR skull-stripped": 31}
    assert {k: codes[k] for k in expected} == expected, f"upstream's modality codes: {codes}"


def test_card_validates_with_its_pipeline_class():
    from SynthBrainLib.pipelines import ModalityImagePipeline, pipeline_class

    assert pipeline_class(nv_card()) is ModalityImagePipeline, "the modality_image kind is one pipeline class"


def test_card_refuses_a_guidance_null_that_is_not_the_null_class():
    from SynthBrainLib.errors import CardError
    from SynthBrainLib.pipelines import pipeline_class

    data = copy.deepcopy(nv_card().to_dict())
    data["sampling"]["guidance"]["null_value"] = 5
    with pytest.raises(CardError, match="null_value"):
        pipeline_class(ModelCard.from_dict(data))


# ---- requests --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_, match",
    [
        ({"modality": "PD"}, "modality 'PD' is not one of T1w, T2w, FLAIR, SWI, MRA"),
        ({"size": (250, 256, 128)}, "250 is not a multiple of 32"),
        ({"size": (256, 256, 512)}, "outside"),
        ({"spacing": (0.2, 1, 1)}, "outside 0.4-5 mm"),
        ({"size": "256,256"}, "not three numbers"),
        ({"skull_stripped": "yes"}, "not True or False"),
    ],
)
def test_a_bad_request_is_one_line_naming_the_value(request_, match):
    from SynthBrainLib.models.requests import check_request

    with pytest.raises(ConditionError, match=match) as caught:
        check_request(nv_card(), **request_)
    assert "\n" not in str(caught.value), "one line"


def test_a_request_resolves_case_and_text_sizes():
    from SynthBrainLib.models.requests import check_request

    image = check_request(nv_card(), modality="flair", skull_stripped=True, size="256x256x128", spacing="1,1,1.5").image
    assert (image.modality.name, image.modality.code) == ("FLAIR", 31), f"FLAIR skull-stripped: {image.modality}"
    assert image.size == (256, 256, 128), f"size: {image.size}"
    assert image.spacing == (1.0, 1.0, 1.5), f"spacing: {image.spacing}"


def test_other_models_refuse_a_modality():
    from SynthBrainLib.models.requests import check_request

    with pytest.raises(ConditionError, match="takes no modality"):
        check_request(builtin_cards()["brain-ldm"], modality="T1w")


@pytest.mark.parametrize(
    "argv",
    [
        ["--modality", "PD"],
        ["--size", "250,256,128"],
        ["--spacing", "0.2,1,1"],
        ["--age", "60"],
    ],
    ids=["modality", "size", "spacing", "condition"],
)
def test_cli_refuses_before_torch_is_imported_even_without_weights(argv, tmp_path):
    args = ["generate", "--model", "nv-generate-mr-brain", "-o", str(tmp_path / "a.nii.gz"), *argv]
    code = (
        "import sys\nfrom SynthBrainLib.cli import main\n"
        f"status = main({args!r})\nprint(status, 'torch' in sys.modules)"
    )
    env = {"SYNTHBRAIN_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    status, torch_loaded = proc.stdout.split()
    assert status == "2", f"refused with status 2: {proc.stdout} {proc.stderr}"
    assert torch_loaded == "False", f"torch was imported before the refusal: {proc.stderr}"
    assert len(proc.stderr.strip().splitlines()) == 1, f"one line: {proc.stderr}"
    assert "not installed" not in proc.stderr, f"the request is judged before the weights: {proc.stderr}"
    assert not (tmp_path / "a.nii.gz").exists(), "nothing written"


# ---- the tiny model: pipeline behaviour ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from SynthBrainLib.pipelines import load_pipeline

    folder = write_modality_model(tiny_modality_card(), tmp_path_factory.mktemp("nv") / "tiny-nv")
    return load_pipeline(str(folder), device="cpu", precision="float32")


def test_scale_factor_is_read_from_the_unet_checkpoint_and_recorded(tiny_pipe):
    assert tiny_pipe.scale_factor == pytest.approx(SCALE_FACTOR), f"scale factor: {tiny_pipe.scale_factor}"
    result = tiny_pipe.generate(seed=1, steps=2)
    recorded = result.provenance["weights"]["diffusion"]["scale_factor"]
    assert recorded == pytest.approx(SCALE_FACTOR), f"provenance's scale factor: {recorded}"


def test_same_seed_same_image_and_the_request_sets_the_grid(tiny_pipe):
    a = tiny_pipe.generate(modality="T2w", size=(64, 64, 32), spacing=(1.5, 1.0, 2.5), seed=4, steps=2)
    b = tiny_pipe.generate(modality="T2w", size=(64, 64, 32), spacing=(1.5, 1.0, 2.5), seed=4, steps=2)
    c = tiny_pipe.generate(modality="FLAIR", size=(64, 64, 32), spacing=(1.5, 1.0, 2.5), seed=4, steps=2)
    assert np.array_equal(a.image, b.image), "same seed and request -> same image"
    assert not np.array_equal(a.image, c.image), "another modality -> another image"
    assert a.image.shape == (64, 64, 32), f"the requested size: {a.image.shape}"
    assert np.allclose(a.affine, np.diag([1.5, 1.0, 2.5, 1.0])), f"diag(spacing), origin 0: {a.affine}"
    prov = a.provenance
    assert prov["synthetic"] is True, "marked synthetic"
    assert (prov["modality"], prov["modality_code"], prov["spacing_mm"]) == ("T2w", 10, [1.5, 1.0, 2.5]), prov


def test_progress_and_cancel(tiny_pipe):
    import threading

    from SynthBrainLib.errors import SynthesisCancelled

    calls = []
    tiny_pipe.generate(seed=1, steps=3, progress=lambda s, t: calls.append((s, t)))
    assert calls[-1] == (4, 4), f"3 steps + decoding reported: {calls}"
    stop = threading.Event()
    stop.set()
    with pytest.raises(SynthesisCancelled):
        tiny_pipe.generate(seed=1, steps=3, cancel=stop)


def test_strict_loading_names_a_missing_and_an_unexpected_key(tmp_path):
    from SynthBrainLib.pipelines import load_pipeline

    folder = write_modality_model(tiny_modality_card(), tmp_path / "m")
    path = folder / "diff_unet_3d_rflow-mr-brain_v1.pt"
    payload = torch.load(path, weights_only=True)
    removed = sorted(payload["unet_state_dict"])[0]
    del payload["unet_state_dict"][removed]
    payload["unet_state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(payload, path)
    import json

    from SynthBrainLib.outputs.digests import file_sha256

    card = json.loads((folder / "card.json").read_text())
    card["weights"]["diffusion"]["sha256"] = file_sha256(path)  # the file is the card's: only its keys are wrong
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as caught:
        load_pipeline(str(folder), device="cpu")
    assert removed in str(caught.value), f"the missing key is named: {caught.value}"
    assert "extra.weight" in str(caught.value), f"the unexpected key is named: {caught.value}"


def test_a_pickle_with_code_is_refused(tmp_path):
    from SynthBrainLib.models.checkpoints import read_checkpoint_number

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"unet_state_dict": {}, "scale_factor": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint_number(path, "scale_factor")


@pytest.mark.parametrize("zip_format", [True, False])
def test_the_scale_factor_is_read_from_either_checkpoint_format(tmp_path, zip_format):
    from SynthBrainLib.models.checkpoints import read_checkpoint_number

    path = tmp_path / "unet.pt"
    data = {"unet_state_dict": {"w": torch.ones(1000)}, "scale_factor": torch.tensor(1.25)}
    torch.save(data, path, _use_new_zipfile_serialization=zip_format)
    assert read_checkpoint_number(path, "scale_factor") == 1.25, f"zip format {zip_format}: the stored number"


def test_download_refuses_without_accepting_the_licence_before_any_fetch(store, monkeypatch):
    import SynthBrainLib.models.store_writing as writing

    def no_network(*args, **kwargs):
        raise AssertionError("nothing may be fetched before the licence is accepted")

    monkeypatch.setattr(writing, "download_file", no_network)
    with pytest.raises(ModelNotFoundError, match="NVIDIA Open Model License") as caught:
        store.download("nv-generate-mr-brain")
    assert caught.value.remedy.action == "accept_licence", f"remedy: {caught.value.remedy}"


# ---- the real architecture: import and equivalence (random, perturbed weights) ----------------------
@pytest.fixture(scope="module")
def upstream_models(tmp_path_factory):
    """Upstream's ``models/`` folder with perturbed random weights of the real architecture."""
    folder = tmp_path_factory.mktemp("ctmr") / "models"
    write_upstream_models(nv_card().to_dict(), folder, seed=7, scale_factor=SCALE_FACTOR)
    return folder


@pytest.fixture(scope="module")
def imported(upstream_models, tmp_path_factory):
    """``synthbrain models import models/ --model nv-generate-mr-brain`` into a fresh home."""
    from SynthBrainLib.cli import main

    home = tmp_path_factory.mktemp("home")
    status = main(
        [
            "--home",
            str(home),
            "models",
            "import",
            str(upstream_models),
            "--model",
            "nv-generate-mr-brain",
            "--allow-unverified",
        ]
    )
    assert status == 0, "import succeeded"
    return home


@pytest.mark.slow
def test_upstream_layout_imports_strictly(imported):
    from SynthBrainLib.models.store import ModelStore

    installed = ModelStore(home=imported, shipped=[]).locate("nv-generate-mr-brain")
    assert installed.complete, "both files installed"
    checks = {k: w.checksum for k, w in installed.weights.items()}
    assert checks["diffusion"] == "unpublished", f"no published hash for the UNet: {checks}"
    assert checks["autoencoder"] == "mismatch-accepted", f"random AE differs from the published one: {checks}"


@pytest.fixture(scope="module")
def real_pipe(imported):
    from SynthBrainLib.models.store import ModelStore
    from SynthBrainLib.pipelines import load_pipeline

    return load_pipeline(
        "nv-generate-mr-brain", device="cpu", precision="float32", store=ModelStore(home=imported, shipped=[])
    )


@pytest.fixture(scope="module")
def reference(upstream_models):
    """MONAI's own networks from upstream's kwargs, loaded as upstream loads them (same files)."""
    ae, unet = monai_networks()
    ae.load_state_dict(torch.load(upstream_models / "autoencoder_v1.pt", weights_only=True))
    ckpt = torch.load(upstream_models / "diff_unet_3d_rflow-mr-brain_v1.pt", weights_only=True)
    unet.load_state_dict(ckpt["unet_state_dict"])
    return ae, unet, float(ckpt["scale_factor"])


@pytest.mark.slow
def test_networks_compute_as_monai_own(real_pipe, reference):
    ae, unet, _ = reference
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 16, 8, generator=g)
    inputs = dict(
        timesteps=torch.tensor([978.5, 978.5]),
        spacing_tensor=torch.tensor([[94.0, 94.0, 136.0]] * 2),
        class_labels=torch.tensor([31, 0]),
    )
    with torch.inference_mode():
        ours = real_pipe.networks["diffusion"](x, **inputs).float()
        theirs = unet(x, **inputs)
        decoded_ours = real_pipe.networks["autoencoder"].decode_stage_2_outputs(x[:1] / SCALE_FACTOR).float()
        decoded_theirs = ae.decode_stage_2_outputs(x[:1] / SCALE_FACTOR)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), f"UNet differs: {(ours - theirs).abs().max()}"
    assert torch.allclose(decoded_ours, decoded_theirs, atol=1e-4, rtol=1e-4), (
        f"decoder differs: {(decoded_ours - decoded_theirs).abs().max()}"
    )


class Recorder(torch.nn.Module):
    """The UNet, recording each call's latent."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, x, **kwargs):
        self.inputs.append(x.detach().clone())
        return self.inner(x, **kwargs)


@pytest.mark.slow
def test_one_sampling_step_is_upstreams_update(real_pipe, reference):
    """Upstream's loop body (scripts/diff_model_infer.py): timestep as a float tensor, spacing x 100
    as a half tensor, every input doubled with labels [m, 0], uncond + s (cond - uncond), then
    RFlowScheduler.step(v, t, x, next_t); 30 steps set with the latent's voxel count."""
    from monai.networks.schedulers import RFlowScheduler

    from SynthBrainLib.errors import SynthesisCancelled

    _, unet, _ = reference
    recorder = Recorder(real_pipe.networks["diffusion"])
    real_pipe.networks["diffusion"] = recorder
    try:
        with pytest.raises(SynthesisCancelled):  # three network calls are all this test needs
            real_pipe.generate(
                modality="FLAIR",
                skull_stripped=True,
                size=(32, 64, 32),
                spacing=(0.94, 0.94, 1.36),
                seed=3,
                steps=30,
                cancel=lambda: len(recorder.inputs) >= 3,
            )
    finally:
        real_pipe.networks["diffusion"] = recorder.inner
    scheduler = RFlowScheduler(
        1000, use_discrete_timesteps=False, use_timestep_transform=True, sample_method="uniform", scale=1.4
    )
    scheduler.set_timesteps(30, input_img_size_numel=int(np.prod(recorder.inputs[0].shape[2:])))
    spacing = torch.from_numpy(np.array([0.94, 0.94, 1.36]).astype(float)[None] * 1e2).half()
    modality = 31 * torch.ones(1, dtype=torch.long)
    # Steps 1 and 2: the second starts at a fractional timestep (978.5), where truncating it would show.
    for i in (0, 1):
        x, t, next_t = recorder.inputs[i][:1], scheduler.timesteps[i], scheduler.timesteps[i + 1]
        inputs = {
            "x": torch.cat([x] * 2),
            "timesteps": torch.cat([torch.Tensor((t,))] * 2),
            "spacing_tensor": torch.cat([spacing] * 2).float(),  # float16 values, as the CPU takes them
            "class_labels": torch.cat([modality, torch.zeros_like(modality)]),
        }
        with torch.inference_mode():
            cond, uncond = unet(**inputs).chunk(2)
            expected, _ = scheduler.step(uncond + 2.0 * (cond - uncond), t, x, next_t)
        got = recorder.inputs[i + 1][:1]
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (
            f"step {i + 1} (t={float(t)}) differs from upstream's: {(got - expected).abs().max()}"
        )


@pytest.mark.slow
def test_written_nifti_has_upstreams_scaling_and_geometry(real_pipe, reference, tmp_path):
    ae, _, scale = reference
    latents = []
    original = real_pipe.networks["autoencoder"].decode_stage_2_outputs

    def capture(z, *args):
        latents.append(z.detach().clone())
        return original(z, *args)

    real_pipe.networks["autoencoder"].decode_stage_2_outputs = capture
    try:
        result = real_pipe.generate(modality="T1w", size=(32, 64, 32), spacing=(1.2, 0.9, 2.0), seed=5, steps=2)
    finally:
        del real_pipe.networks["autoencoder"].decode_stage_2_outputs
    with torch.inference_mode():
        decoded = ae.decode_stage_2_outputs(latents[0]).squeeze().numpy()
    expected = np.clip(decoded * 1000.0, 0, None)
    written = result.save(tmp_path / "t1.nii.gz")[0]
    img = nib.load(written)
    data = np.asarray(img.dataobj, dtype=np.float32)
    assert np.allclose(data, expected, atol=0.05), f"x 1000, clipped at 0: {np.abs(data - expected).max()}"
    assert np.allclose(img.affine, np.diag([1.2, 0.9, 2.0, 1.0])), f"RAS diag(spacing): {img.affine}"
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S"), "RAS axes"
    assert "SYNTHETIC" in img.header["descrip"].tobytes().decode().upper(), "marked synthetic in the file"
    assert data.min() >= 0, "clipped below at 0"
    assert scale == pytest.approx(SCALE_FACTOR), "the reference read the same scale factor"


# ---- decoding in windows (MAISI's memory-bounded decode) ---------------------------------------------
def test_auto_decodes_large_grids_in_windows_and_small_ones_whole():
    from SynthBrainLib.models.networks import build_network
    from SynthBrainLib.pipelines.decoding import auto_decode_mode
    from SynthBrainLib.pipelines.device import Precision, resolve_device

    ae = build_network(nv_card().networks["autoencoder"])
    prec = Precision.for_device(resolve_device("cpu"), "bfloat16")
    assert auto_decode_mode(ae, (256, 256, 128), prec) == "windows", "256x256x128 would not fit 6 GB whole"
    assert auto_decode_mode(ae, (128, 128, 64), prec) == "full", "a small grid decodes whole"


def test_windows_cover_the_grid_and_equal_the_full_decode_when_one_window_suffices(tiny_pipe):
    from SynthBrainLib.pipelines.decoding import decode_full, decode_windows

    ae = tiny_pipe.networks["autoencoder"]
    z = torch.randn(1, 4, 16, 24, 16, generator=torch.Generator().manual_seed(0))
    full = decode_full(ae, z, tiny_pipe.precision)
    grid = tuple(full.shape[2:])
    whole, how = decode_windows(ae, z, tiny_pipe.precision, grid, max_output_voxels=10**9)
    split, how_split = decode_windows(ae, z, tiny_pipe.precision, grid, max_output_voxels=32 * 32 * 32)
    assert how["latent_window"] == [16, 24, 16], f"one window holds the latent: {how}"
    assert torch.allclose(whole, full, atol=1e-5), f"one window = the full decode: {(whole - full).abs().max()}"
    assert how_split["latent_window"] == [8, 12, 8], f"halved to the budget, 12 along MAISI's split axis: {how_split}"
    assert split.shape == full.shape, f"windows decode the whole grid: {tuple(split.shape)}"
    assert torch.isfinite(split).all(), "every voxel covered (no division by a zero weight)"
    with pytest.raises(ConditionError, match=r"output grid \[64, 96, 60\] is not the latent \[16, 24, 16\] zoomed"):
        decode_windows(ae, z, tiny_pipe.precision, (64, 96, 60))


def test_cli_generates_a_modality_image_with_its_provenance(tmp_path, capsys):
    import json

    from SynthBrainLib.cli import main

    folder = write_modality_model(tiny_modality_card(), tmp_path / "tiny-nv")
    out = tmp_path / "flair.nii.gz"
    argv = ["--home", str(tmp_path / "home"), "generate", "--model", str(folder), "--modality", "flair"]
    argv += ["--skull-stripped", "--size", "32,64,32", "--spacing", "2,1.5,2", "--steps", "2", "--seed", "1"]
    status = main([*argv, "-o", str(out), "--quiet"])
    assert status == 0, f"generate succeeded: {capsys.readouterr().err}"
    img = nib.load(out)
    assert img.shape == (32, 64, 32), f"the requested size: {img.shape}"
    assert np.allclose(img.header.get_zooms(), (2.0, 1.5, 2.0)), f"the requested spacing: {img.header.get_zooms()}"
    prov = json.loads((tmp_path / "flair.json").read_text())
    assert (prov["modality"], prov["skull_stripped"], prov["seed"]) == ("FLAIR", True, 1), f"provenance: {prov}"
