"""Slab decoding against MONAI's own AutoencoderKL decode (the full decode is the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import AutoencoderKL

from SynthBrainLib import ConditionError, load_pipeline
from SynthBrainLib.pipelines import decoding
from SynthBrainLib.pipelines.decoding import decode, decode_full
from SynthBrainLib.pipelines.device import Precision
from SynthBrainLib.pipelines.slab_decoding import (
    ChannelSums,
    SlabSettings,
    decode_slabs,
    transposed_upsampling_weight,
)

CPU = torch.device("cpu")


def _autoencoder(channels=(16, 16, 32), res_blocks=(1, 2, 1), attention=(False, False, False), seed=0):
    torch.manual_seed(seed)
    ae = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        latent_channels=3,
        channels=list(channels),
        num_res_blocks=list(res_blocks),
        norm_num_groups=8,
        norm_eps=1e-6,
        attention_levels=list(attention),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from the initialisation, so that every block matters
        for p in ae.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return ae


def _psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float(((a - ref) ** 2).mean())
    return 10 * np.log10(float(ref.max() - ref.min()) ** 2 / mse)


def test_transposed_convolution_equals_nearest_upsampling_then_convolution():
    conv = torch.nn.Conv3d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, 5, 6, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
        weight = transposed_upsampling_weight(conv)
        got = torch.nn.functional.conv_transpose3d(x, weight, conv.bias, stride=2, padding=1)
    assert got.shape == expected.shape, f"same output grid: {got.shape} vs {expected.shape}"
    assert float((got - expected).abs().max()) < 1e-5, "the phase-summed kernel is the same linear map"


def test_channel_sums_of_slabs_give_the_whole_volume_group_norm():
    gn = torch.nn.GroupNorm(4, 12, eps=1e-6)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-1, 1)
    x = 3 + 2 * torch.randn(2, 12, 10, 6, 5, generator=torch.Generator().manual_seed(0))
    sums = ChannelSums()
    for lo in range(0, 10, 3):
        sums.add(x[:, :, lo : lo + 3].contiguous(memory_format=torch.channels_last_3d))
    scale, shift = sums.norm_affine(gn)
    with torch.no_grad():
        expected = gn(x)
    assert float((x * scale + shift - expected).abs().max()) < 1e-4, "slab sums reproduce GroupNorm over the volume"


@pytest.mark.parametrize(
    "settings",
    [
        SlabSettings(),  # one slab per level at this size
        SlabSettings(slab_bytes=1),  # thinnest slabs (4 rows): every halo is exercised
        SlabSettings(slab_bytes=1, second_tensor_bytes=0),  # residual blocks recompute conv1, write over x
        SlabSettings(slab_bytes=1, levels=3),  # every level in slabs
    ],
    ids=["thick", "thin", "recompute", "all-levels"],
)
def test_slab_decode_equals_monai_decode_in_float32(settings):
    ae = _autoencoder()
    latent = torch.randn(2, 3, 9, 7, 6, generator=torch.Generator().manual_seed(3))
    prec = Precision(CPU)
    full = decode_full(ae, latent, prec)
    slab = decode_slabs(ae, latent, prec, settings)
    assert slab.shape == full.shape == (2, 1, 36, 28, 24), f"same output grid: {slab.shape}"
    assert slab.dtype == torch.float32, "float32 output like the full decode"
    assert float((slab - full).abs().max()) < 1e-4, f"float rounding only: {float((slab - full).abs().max())}"


def test_slab_decode_in_bfloat16_is_as_close_to_float32_as_the_full_bfloat16_decode():
    ae = _autoencoder()
    latent = torch.randn(1, 3, 10, 8, 6, generator=torch.Generator().manual_seed(4))
    ref = decode_full(ae, latent, Precision(CPU))
    bf16 = Precision(CPU, torch.bfloat16, channels_last=True)
    ae_bf16 = bf16.prepare(ae)
    full = decode_full(ae_bf16, latent, bf16)
    thin = SlabSettings(slab_bytes=1, second_tensor_bytes=0)
    slab = decode_slabs(ae_bf16, latent, bf16, thin)
    slab_db, full_db = _psnr(slab, ref), _psnr(full, ref)
    assert slab_db > full_db - 1.0, f"slab {slab_db:.1f} dB vs full {full_db:.1f} dB from float32"
    assert torch.equal(slab, decode_slabs(ae_bf16, latent, bf16, thin)), "the same latent decodes to the same volume"


def test_blocks_slabs_cannot_run_are_refused_and_auto_decodes_those_whole_or_in_windows():
    ae = _autoencoder(attention=(True, False, False))  # attention on the highest-resolution level
    latent = torch.randn(1, 3, 4, 4, 4)
    with pytest.raises(ConditionError, match="decode 'slab' cannot run a SpatialAttentionBlock block in slabs"):
        decode_slabs(ae, latent, Precision(CPU))
    assert decoding.auto_decode_mode(ae, (16, 16, 16), Precision(CPU)) == "full", "auto falls back to full"
    assert decoding.auto_decode_mode(ae, (1000, 1000, 1000), Precision(CPU)) == "windows", (
        "where a full decode would not fit either, auto decodes in overlapping windows"
    )
    with pytest.raises(ConditionError, match="decode 'slab' needs a monai AutoencoderKL decoder"):
        decode_slabs(torch.nn.Conv3d(3, 1, 1), latent, Precision(CPU))


def test_auto_decodes_large_outputs_in_slabs(monkeypatch):
    ae = _autoencoder()
    latent = torch.randn(1, 3, 4, 4, 4)
    out, how = decode(ae, latent, Precision(CPU), mode="auto", output_shape=(16, 16, 16))
    assert how == {"mode": "full"}, f"a small output decodes whole: {how}"
    monkeypatch.setattr(decoding, "SLAB_ABOVE_BYTES", 1000)
    slab, how = decode(ae, latent, Precision(CPU), mode="auto", output_shape=(16, 16, 16))
    assert how["mode"] == "slab", f"above the threshold auto decodes in slabs: {how}"
    assert float((slab - out).abs().max()) < 1e-4, "and gets the same volume"


def test_pipeline_records_slab_decoding_and_refuses_it_for_spade(model_folders):
    pipe = load_pipeline(str(model_folders["brain"]), device="cpu", decode="slab", precision="float32")
    full = load_pipeline(str(model_folders["brain"]), device="cpu", decode="full", precision="float32")
    r = pipe.generate(seed=1, steps=2)
    assert r.provenance["decode"]["mode"] == "slab", f"provenance records the slab decode: {r.provenance['decode']}"
    assert np.abs(r.image - full.generate(seed=1, steps=2).image).max() < 1e-4, "same image as the full decode"
    spade = load_pipeline(str(model_folders["spade_ldm"]), device="cpu", decode="slab")
    with pytest.raises(ConditionError, match="decode 'slab' is not available for SPADE decoders"):
        spade.generate(np.zeros((16, 16, 16), np.uint8), seed=1)
