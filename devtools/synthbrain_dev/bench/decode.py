"""Decoding alone: full, slab and tiled decodes and MONAI's ``AutoencoderKlMaisi``, each in its own
process with only the autoencoder loaded (``--decode-check``): time, peak memory, and the difference
from the full float32 decode."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.models.checkpoints import load_weights, read_state_dict
from SynthBrainLib.models.networks import build_network
from SynthBrainLib.models.store import ModelStore
from SynthBrainLib.outputs.markdown import markdown_table
from SynthBrainLib.pipelines.decoding import TileSettings, decode, decode_full
from SynthBrainLib.pipelines.device import Precision, resolve_device

from ..random_weights import RANDOM_WEIGHTS, perturb
from .memory import PeakMemory, current_rss, gigabytes, peak_rss_so_far


def measure_decode(
    model: str,
    *,
    mode: str,
    precision: str,
    norm: str,
    device: str,
    output: str | None,
    random_weights: bool,
    seed: int = 0,
    max_window_voxels: int | None = None,
) -> dict[str, Any]:
    """Decode one seeded latent (unit normal, the card's latent shape) with only the autoencoder
    loaded: time and peak memory of the decode alone (this process builds nothing else)."""

    store = ModelStore()
    installed = store.locate(model, require_complete=False)
    card = installed.card
    torch.manual_seed(0)
    ae = build_network(card.networks["autoencoder"], card.id)
    if not random_weights and "autoencoder" in installed.weights:
        load_weights(
            ae,
            read_state_dict(installed.weights["autoencoder"].path),
            card.weights["autoencoder"].format,
            name="autoencoder",
        )
        weights = "trained (installed)"
    else:
        perturb(ae)
        weights = RANDOM_WEIGHTS
    dev = resolve_device(device)
    prec = Precision.for_device(dev, precision)
    ae = prec.prepare(ae.to(dev).eval())
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn((1, *card.latent.shape), generator=g).to(dev)
    settings = TileSettings(
        norm="window" if norm == "window" else "global",
        fast_stats=norm != "global-exact",
        max_window_voxels=max_window_voxels,
    )
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    base = current_rss()
    if mode.startswith("maisi"):
        ae = prec.prepare(maisi_autoencoder(ae, card.networks["autoencoder"].kwargs, int(mode[5:] or 4)).to(dev).eval())
    with PeakMemory() as mem:
        start = time.perf_counter()
        if mode.startswith("maisi"):
            out, how = decode_full(ae, latent, prec), {"mode": "maisi", "num_splits": int(mode[5:] or 4)}
        else:
            out, how = decode(ae, latent, prec, mode=mode, output_shape=card.output.shape, settings=settings)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    if output is not None:
        np.save(output, out[0].cpu().numpy())
    return {
        "model": card.id,
        "weights": weights,
        "mode": how,
        "precision": prec.name,
        "decode_s": seconds,
        "peak_rss_bytes": int(mem.peak),
        "rss_before_bytes": int(base),
        "process_peak_rss_bytes": peak_rss_so_far(),
        "cuda_max_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)) if cuda else None,
        "output": output,
        "output_shape": list(out.shape[1:]),
    }


def maisi_autoencoder(ae: torch.nn.Module, kwargs: dict[str, Any], num_splits: int) -> torch.nn.Module:
    """The same autoencoder as MONAI's ``AutoencoderKlMaisi`` (splits its convolutions and norms into
    ``num_splits`` pieces along the first spatial axis), with ``ae``'s weights: the comparison the
    slab decode is measured against. Its parameters are ``ae``'s in the same order and shapes, only
    nested one module deeper."""
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    kw = {k: v for k, v in kwargs.items() if k != "channels"}
    kw["num_res_blocks"] = kw.get("num_res_blocks", 2)
    if isinstance(kw["num_res_blocks"], int):
        kw["num_res_blocks"] = [kw["num_res_blocks"]] * len(kwargs["channels"])
    channels = kwargs["channels"]
    maisi = AutoencoderKlMaisi(num_channels=channels, num_splits=num_splits, dim_split=0, save_mem=False, **kw)
    ours, theirs = ae.state_dict(), maisi.state_dict()
    if [v.shape for v in ours.values()] != [v.shape for v in theirs.values()]:
        raise SynthBrainError("the MAISI autoencoder's parameters do not line up with this autoencoder's")
    maisi.load_state_dict(dict(zip(theirs, ours.values())))
    return maisi


#: (mode, precision, norm) of ``--decode-check``; norm: ``global`` (bf16 statistics where native),
#: ``global-exact`` (statistics in the decode's precision) or ``window``.
DECODE_VARIANTS = (
    ("full", "float32", "global"),
    ("slab", "float32", "global"),
    ("full", "bfloat16", "global"),
    ("slab", "bfloat16", "global"),
    ("maisi4", "bfloat16", "global"),
)


def decode_description(how: dict[str, Any]) -> str:
    """One table cell for a decode record."""
    mode = how["mode"]
    if mode == "tiled":
        return f"tiled ({how['max_window_voxels'] / 1e6:g} M voxels/window, norm {how['norm']})"
    if mode == "slab":
        return f"slab ({how['slab_bytes'] / 2**20:g} MB slabs, {how['levels']} levels)"
    if mode == "maisi":
        return f"MONAI AutoencoderKlMaisi, num_splits={how['num_splits']}"
    return mode


def format_decode_table(report: dict[str, Any]) -> str:
    """The decode-only report as a Markdown table (one row per variant)."""
    header = (
        "model | decode | precision | weights | time (s) | peak RSS (GB) | CUDA max alloc (GB) | "
        "PSNR vs first (dB) | max abs vs first"
    ).split(" | ")
    rows = []
    for v in report["variants"]:
        q = v.get("vs_first")
        rows.append(
            (
                v["model"],
                decode_description(v["mode"]),
                v["precision"],
                v["weights"],
                f"{v['decode_s']:.1f}",
                gigabytes(v["peak_rss_bytes"]),
                gigabytes(v["cuda_max_allocated_bytes"]),
                "-" if not q else format(q["psnr_db"], ".1f"),
                "-" if not q else format(q["max_abs"], ".3g"),
            )
        )
    return "\n".join(markdown_table(header, rows))
