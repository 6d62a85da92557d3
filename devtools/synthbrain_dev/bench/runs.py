"""The whole benchmark: every path of every model, each in its own worker process, compared with the
reference path's output; the report and its Markdown table."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, replace
from typing import Any, Callable, Sequence

import numpy as np

from SynthBrainLib.models.store import ModelStore
from SynthBrainLib.outputs.markdown import markdown_table
from SynthBrainLib.pipelines import pipeline_class

from ..evaluation.metrics import compare
from ..machine import machine
from .decode import DECODE_VARIANTS
from .memory import gigabytes
from .paths import PathSpec, default_paths
from .workers import run_worker


def bench(
    models: Sequence[str],
    *,
    paths: Sequence[PathSpec] | None = None,
    repeats: int = 3,
    reference_repeats: int = 1,
    seed: int = 0,
    device: str = "cpu",
    random_weights: bool = False,
    log: Callable[[str], None] = lambda line: None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Measure every path of every model (each in its own process) and compare outputs to the
    reference path's. Returns the JSON-ready report (see :func:`format_table`)."""

    store = ModelStore()
    report: dict[str, Any] = {
        "machine": machine(),
        "seed": seed,
        "repeats": repeats,
        "reference_repeats": reference_repeats,
        "models": [],
    }
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    try:
        for model in models:
            card = store.locate(model, require_complete=False).card
            chosen = list(paths) if paths else default_paths(card)
            if card.sampling is None:  # one network pass (SPADE generator): no sampler or steps to vary
                chosen = [replace(p, sampler=None, steps=None) for p in chosen]
            entries = []
            ref_out = first_out = None
            for path in chosen:
                n = path.repeats or (reference_repeats if path.reference else repeats)
                out_file = os.path.join(tmp.name, f"{card.id}-{path.name}.npy")
                log(f"{card.id}: {path.name} ({path.describe(card)}), {n} run(s) ...")
                spec = {
                    "kind": "path",
                    "model": model,
                    "path": asdict(path),
                    "repeats": n,
                    "seed": seed,
                    "device": device,
                    "output": out_file,
                    "random_weights": random_weights,
                }
                res = run_worker(spec)
                out = np.load(out_file)
                if path.reference:
                    ref_out = out
                elif ref_out is not None:
                    lo, hi = card.output.intensity_range
                    labels_out = pipeline_class(card).output_type == "labels"  # probabilities: range 1
                    res["vs_reference"] = compare(out, ref_out, None if labels_out else hi - lo)
                elif first_out is None:
                    first_out = out
                else:  # no reference loop (NV-Generate): each path against the first one, scaled to its maximum
                    top = float(first_out.max()) or 1.0
                    res["vs_first_path"] = compare(out / top, first_out / top, 1.0)
                res.pop("output", None)
                log(f"  {res['end_to_end_s_median']:.2f} s end to end, peak {res['peak_rss_bytes'] / 1e9:.2f} GB")
                entries.append(res)
            ref = next((e for e in entries if e["path"]["reference"]), None)
            for e in entries:
                if ref is not None and not e["path"]["reference"]:
                    e["speedup_vs_reference"] = ref["end_to_end_s_median"] / e["end_to_end_s_median"]
            report["models"].append({"model": card.id, "output_shape": list(card.output.shape), "paths": entries})
    finally:
        tmp.cleanup()
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per model and path), with a note on what guidance costs
    for each guided path."""
    header = (
        "model | path | sampler, steps, precision, decode | weights | step (s) | decode (s) | "
        "end to end (s) | peak RSS (GB) | CUDA max alloc (GB) | vs reference | "
        "PSNR / MS-SSIM / max abs vs reference"
    ).split(" | ")
    rows, notes = [], []
    for m in report["models"]:
        for e in m["paths"]:
            q = e.get("vs_reference")
            quality = (
                "-" if not q else f"{q['psnr_db']:.1f} dB / {q.get('ms_ssim', float('nan')):.4f} / {q['max_abs']:.3g}"
            )
            speed = (
                "1.00x"
                if e["path"]["reference"]
                else (f"{e['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in e else "-")
            )
            rows.append(
                (
                    m["model"],
                    e["path"]["name"],
                    e["describe"],
                    e["weights"],
                    "-" if e["step_s_median"] is None else f"{e['step_s_median']:.3f}",
                    f"{e['decode_s_median']:.2f}",
                    f"{e['end_to_end_s_median']:.2f}",
                    gigabytes(e["peak_rss_bytes"]),
                    gigabytes(e["cuda_max_allocated_bytes"]),
                    speed,
                    quality,
                )
            )
            calls = e.get("unet_call_s")
            if calls:
                notes.append(
                    f"- {m['model']}, {e['path']['name']}: one UNet call takes {calls['batch_1'] * 1e3:.1f} ms on "
                    f"batch 1 and {calls['batch_2'] * 1e3:.1f} ms on batch 2 - guidance as one batched call costs "
                    f"{calls['batch_2'] / calls['batch_1']:.2f}x an unguided call, as two calls 2x."
                )
    return "\n".join(markdown_table(header, rows) + ([""] + notes if notes else []))


def bench_decode(
    model: str,
    *,
    device: str = "cpu",
    random_weights: bool = False,
    variants: Sequence[tuple[str, str, str]] = DECODE_VARIANTS,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Decode-only measurements (time, peak RSS) of ``variants`` = (mode, precision, norm; see
    :data:`DECODE_VARIANTS`), each in its own process, compared with the first (the full float32
    decode)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = None
        for mode, precision, norm in variants:
            log(f"{model}: decode {mode} {precision} norm={norm} ...")
            out_file = os.path.join(tmp, f"{mode}-{precision}-{norm}.npy")
            res = run_worker(
                {
                    "kind": "decode",
                    "model": model,
                    "mode": mode,
                    "precision": precision,
                    "norm": norm,
                    "device": device,
                    "output": out_file,
                    "random_weights": random_weights,
                }
            )
            out = np.load(out_file)
            if ref is None:
                ref = out
            else:
                res["vs_first"] = compare(out, ref)
            res.pop("output", None)
            log(f"  {res['decode_s']:.1f} s, peak {res['peak_rss_bytes'] / 1e9:.2f} GB")
            results.append(res)
    return {"machine": machine(), "model": model, "variants": results}
