"""Checkpoint reading, verification and the GenerativeModels -> MONAI conversion.

The conversion tests build a network with the *old* GenerativeModels package (monai-generative
0.2.3), perturb its weights (MONAI zero-initialises some layers, which would hide mistakes), save
its state dict, load that through our converter into the current MONAI class and require the same
outputs (max abs difference <= 1e-5) on random inputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from SynthBrainLib.errors import CheckpointError
from SynthBrainLib.models.checkpoints import convert_generative_state_dict, load_weights, read_state_dict
from SynthBrainLib.outputs.digests import verify_file

warnings.filterwarnings("ignore", category=DeprecationWarning)
generative = pytest.importorskip("generative.networks.nets", reason="monai-generative 0.2.3 is a test dependency")
import monai.networks.nets as nets  # noqa: E402
from tiny_models import TINY_NOISE, perturb  # noqa: E402

TOL = 1e-5


def _old_kwargs(kwargs: dict) -> dict:
    """Current MONAI calls it ``channels``; GenerativeModels called it ``num_channels``."""
    out = dict(kwargs)
    out["num_channels"] = out.pop("channels")
    return out


def _roundtrip(old_cls, new_cls, kwargs, tmp_path):
    old = perturb(old_cls(**_old_kwargs(kwargs)).eval(), seed=1, scale=TINY_NOISE)
    path = tmp_path / "old.pt"
    torch.save(old.state_dict(), path)
    new = new_cls(**kwargs).eval()
    layout = load_weights(new, read_state_dict(path), "auto", name="old.pt")
    return old, new, layout


AE_KW = dict(
    spatial_dims=3,
    in_channels=1,
    out_channels=1,
    latent_channels=3,
    channels=[8, 16, 16],
    num_res_blocks=1,
    norm_num_groups=8,
)
UNET_KW = dict(
    spatial_dims=3,
    in_channels=7,
    out_channels=3,
    channels=[16, 32, 32],
    num_res_blocks=1,
    attention_levels=[False, True, True],
    norm_num_groups=8,
    resblock_updown=True,
    num_head_channels=[0, 16, 32],
    upcast_attention=True,
)


@pytest.mark.parametrize("attention", [False, True], ids=["no-attention", "attention"])
def test_autoencoder_old_checkpoint_gives_identical_outputs(tmp_path, attention):
    kw = dict(
        AE_KW,
        attention_levels=[False, False, attention],
        with_encoder_nonlocal_attn=attention,
        with_decoder_nonlocal_attn=attention,
    )
    old, new, layout = _roundtrip(generative.AutoencoderKL, nets.AutoencoderKL, kw, tmp_path)
    assert layout == "generative" if attention else layout in ("monai", "generative")
    x = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # encode() returns the posterior mean and std: deterministic (encode_stage_2_inputs samples).
        z_old, z_new = old.encode(x)[0], new.encode(x)[0]
        rec_old, rec_new = old.decode(z_old), new.decode(z_new)
    assert (z_old - z_new).abs().max().item() <= TOL
    assert (rec_old - rec_new).abs().max().item() <= TOL


def test_monai_converter_is_wrong_for_autoencoder_attention(tmp_path):
    """Documents why we convert ourselves: MONAI's load_old_state_dict applies the unused proj_attn."""
    kw = dict(
        AE_KW, attention_levels=[False, False, True], with_encoder_nonlocal_attn=True, with_decoder_nonlocal_attn=True
    )
    old = perturb(generative.AutoencoderKL(**_old_kwargs(kw)).eval(), seed=1, scale=TINY_NOISE)
    theirs = nets.AutoencoderKL(**kw).eval()
    theirs.load_old_state_dict(dict(old.state_dict()))
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (old.decode(old.encode(x)[0]) - theirs.decode(theirs.encode(x)[0])).abs().max().item()
    assert diff > 1e-2


@pytest.mark.parametrize("conditioning", [True, False], ids=["cross-attention", "self-attention"])
def test_diffusion_unet_old_checkpoint_gives_identical_outputs(tmp_path, conditioning):
    kw = dict(
        UNET_KW,
        with_conditioning=conditioning,
        cross_attention_dim=4 if conditioning else None,
        transformer_num_layers=1,
    )
    old, new, layout = _roundtrip(generative.DiffusionModelUNet, nets.DiffusionModelUNet, kw, tmp_path)
    assert layout == "generative"
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 7, 8, 8, 8, generator=g), torch.tensor([10, 700])
    context = torch.rand(2, 1, 4, generator=g) if conditioning else None
    with torch.no_grad():
        diff = (old(x, t, context=context) - new(x, t, context=context)).abs().max().item()
    assert diff <= TOL


def test_spade_autoencoder_and_unet_old_checkpoints(tmp_path):
    ae_kw = dict(
        spatial_dims=3,
        label_nc=10,
        in_channels=1,
        out_channels=1,
        latent_channels=3,
        channels=[8, 16, 16],
        num_res_blocks=[1, 1, 1],
        norm_num_groups=8,
        attention_levels=[False, False, True],
    )
    old, new, _ = _roundtrip(generative.SPADEAutoencoderKL, nets.SPADEAutoencoderKL, ae_kw, tmp_path)
    # Keys alone are not enough here: the old SPADE norms used eps 1e-5 (see match_generative_numerics).
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 16, 16, 16, generator=g)
    seg = torch.softmax(torch.randn(1, 10, 16, 16, 16, generator=g), 1)
    with torch.no_grad():
        assert (old.decode(old.encode(x)[0], seg) - new.decode(new.encode(x)[0], seg)).abs().max().item() <= TOL

    unet_kw = dict(
        UNET_KW,
        in_channels=3,
        label_nc=10,
        with_conditioning=True,
        cross_attention_dim=4,
        transformer_num_layers=1,
        num_class_embeds=3,
    )
    old, new, layout = _roundtrip(generative.SPADEDiffusionModelUNet, nets.SPADEDiffusionModelUNet, unet_kw, tmp_path)
    assert layout == "generative"
    z, t, c = torch.randn(1, 3, 8, 8, 8, generator=g), torch.tensor([300]), torch.rand(1, 1, 4, generator=g)
    with torch.no_grad():
        a = old(z, t, seg=seg, context=c, class_labels=torch.tensor([2]))
        b = new(z, t, seg=seg, context=c, class_labels=torch.tensor([2]))
    assert (a - b).abs().max().item() <= TOL


def test_spadenet_old_checkpoint(tmp_path):
    kw = dict(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        label_nc=10,
        input_shape=[16, 16, 16],
        channels=[8, 16],
        z_dim=8,
        spade_intermediate_channels=8,
    )
    old = perturb(generative.SPADENet(**_old_kwargs(kw)).eval(), seed=1, scale=TINY_NOISE)
    torch.save(old.state_dict(), tmp_path / "old.pt")
    new = nets.SPADENet(**dict(kw, channels=[8, 16])).eval()
    load_weights(new, read_state_dict(tmp_path / "old.pt"), "auto")
    g = torch.Generator().manual_seed(0)
    seg, z = torch.softmax(torch.randn(1, 10, 16, 16, 16, generator=g), 1), torch.randn(1, 8, generator=g)
    with torch.no_grad():
        assert (old.decode(seg, z) - new.decode(seg, z)).abs().max().item() <= TOL


def test_converter_reports_unused_old_keys():
    model = nets.AutoencoderKL(
        **dict(
            AE_KW,
            attention_levels=[False, False, False],
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )
    )
    sd = dict(model.state_dict())
    sd["stray.weight"] = torch.zeros(1)
    converted, unused = convert_generative_state_dict(sd, model)
    assert unused == ["stray.weight"]
    assert set(converted) == set(model.state_dict())


# ---- strict loading errors ----------------------------------------------------------------------
def _small_ae():
    return nets.AutoencoderKL(
        **dict(
            AE_KW,
            attention_levels=[False, False, False],
            with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False,
        )
    ).eval()


def test_missing_and_unexpected_keys_are_named():
    model = _small_ae()
    sd = dict(model.state_dict())
    removed = sorted(sd)[0]
    del sd[removed]
    sd["extra.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_weights(model, sd, name="model.pt")
    msg = str(err.value)
    assert "1 missing key(s)" in msg, f"the error counts the missing key: {msg}"
    assert removed in msg, f"the error names the missing key {removed}: {msg}"
    assert "1 unexpected key(s) (extra.bias)" in msg, f"the error names the unexpected key: {msg}"
    assert "\n" not in msg, f"the error is one line: {msg!r}"


def test_shape_mismatch_is_named():
    model = _small_ae()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k, v in sd.items() if v.ndim == 5)
    sd[key] = torch.zeros(1, 1, 1, 1, 1)
    with pytest.raises(CheckpointError, match=f"{key} has shape"):
        load_weights(model, sd)


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_small_ae().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read .truncated or not a PyTorch checkpoint."):
        read_state_dict(path)


def test_truncated_safetensors_gives_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _small_ae().state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="safetensors"):
        read_state_dict(path)


class _Evil:
    def __reduce__(self):
        return (print, ("code executed from a checkpoint",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Evil()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert "code executed" not in capsys.readouterr().out


def test_wrapped_state_dict_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    model = perturb(_small_ae(), scale=TINY_NOISE)
    torch.save({"state_dict": model.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "wrapped.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    for name in ("wrapped.pt", "m.safetensors"):
        fresh = _small_ae()
        assert load_weights(fresh, read_state_dict(tmp_path / name)) == "monai"
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_verify_file_checksums(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    import hashlib

    good_sha, good_md5 = hashlib.sha256(b"weights").hexdigest(), hashlib.md5(b"weights").hexdigest()
    assert verify_file(path, sha256=good_sha, md5=good_md5) == good_sha
    with pytest.raises(CheckpointError, match="sha256 .* does not match the expected 0+"):
        verify_file(path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="md5"):
        verify_file(path, md5="0" * 32)
