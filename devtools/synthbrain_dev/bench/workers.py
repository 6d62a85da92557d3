"""One (model, path) measured in its own process, so that its peak memory is its own: build (not
timed), warm-up (not timed), then ``repeats`` timed runs. ``python -m synthbrain_dev.bench --worker
JSON`` runs one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from SynthBrainLib.errors import SynthBrainError
from SynthBrainLib.models.samplers import MIN_STEPS

from ..random_weights import build_pipeline
from .decode import measure_decode
from .memory import PeakMemory, peak_rss_so_far
from .paths import PathSpec
from .reference import run_request


def measure(
    model: str,
    path: PathSpec,
    *,
    repeats: int,
    seed: int,
    device: str,
    output: str | None,
    random_weights: bool,
    warmup: bool = True,
) -> dict[str, Any]:
    """Build, warm up and time one path (in this process). Returns the measurements."""
    t0 = time.perf_counter()
    precision = "float32" if path.reference else path.precision
    pipe, weights = build_pipeline(
        model,
        device=device,
        precision=precision,
        decode="full" if path.reference else path.decode,
        random_weights=random_weights,
        preset=path.preset,
    )
    if path.reference:  # the bundle runs plain NCDHW float32
        for net in pipe.networks.values():
            net.to(memory_format=torch.contiguous_format)
        pipe.precision = replace(pipe.precision, channels_last=False)
    build_s = time.perf_counter() - t0
    cuda = pipe.device.type == "cuda"
    big = int(np.prod(pipe.card.output.shape)) > 2_000_000
    if warmup:  # small models: one whole request; Brain LDM: one UNet call (a warm-up decode costs a minute)
        if big:
            if pipe.card.latent is not None:  # a model whose request sets the grid (NV-Generate): none
                _unet_call(pipe)
        else:
            run_request(
                pipe,
                path if pipe.card.sampling is None else replace(path, steps=_min_steps(pipe, path), preview=False),
                seed + 1,
            )
    runs = []
    out = None
    for _ in range(repeats):
        marks: list[float] = []
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(pipe.device)
        with PeakMemory() as mem:
            start = time.perf_counter()

            def progress(step: int, total: int) -> None:
                if cuda:
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())

            out = run_request(pipe, path, seed, progress)
            end = time.perf_counter()
        times = np.diff([start] + marks) if marks else np.array([end - start])
        has_steps = pipe.card.sampling is not None
        runs.append(
            {
                "end_to_end_s": end - start,
                "step_s": [float(x) for x in times[:-1]] if has_steps else [],
                "decode_s": float(end - marks[-2]) if has_steps and len(marks) >= 2 else float(end - start),
                "peak_rss_bytes": int(mem.peak),
                "cuda_max_allocated_bytes": int(torch.cuda.max_memory_allocated(pipe.device)) if cuda else None,
            }
        )
    if output is not None and out is not None:
        np.save(output, out)
    sampling = pipe.card.sampling
    guided = sampling is not None and sampling.guidance is not None and not path.reference and path.guidance is None
    steps = [s for r in runs for s in r["step_s"]]
    return {
        "model": pipe.card.id,
        "path": asdict(path),
        "describe": path.describe(pipe.card),
        "weights": weights,
        "device": str(pipe.device),
        "precision": pipe.precision.name,
        "build_s": build_s,
        "repeats": repeats,
        "steps_run": len(runs[0]["step_s"]) if runs else 0,
        "step_s_median": float(np.median(steps)) if steps else None,
        "decode_s_median": float(np.median([r["decode_s"] for r in runs])),
        "end_to_end_s_median": float(np.median([r["end_to_end_s"] for r in runs])),
        "end_to_end_s_all": [r["end_to_end_s"] for r in runs],
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "process_peak_rss_bytes": peak_rss_so_far(),
        "cuda_max_allocated_bytes": max((r["cuda_max_allocated_bytes"] or 0) for r in runs) if cuda else None,
        "output": output,
        # what the guided path's batched call costs against one unguided call (and two separate ones)
        "unet_call_s": unet_call_seconds(pipe)
        if guided and not path.preview and pipe.card.latent is not None
        else None,
    }


def _min_steps(pipe, path: PathSpec) -> int:

    sampler = path.sampler or pipe.card.sampling.default_sampler
    if path.preview:
        sampler = pipe.preview_settings(path.sampler, path.steps)[0]
    return MIN_STEPS.get(sampler, 1) + 1


def _unet_call(pipe, batch: int = 1) -> None:
    """One diffusion UNet call on a batch of zero latents, as the sampling loop makes it."""
    card = pipe.card
    k = len(card.conditioning.variables)
    shape = (batch, card.networks["diffusion"].kwargs["in_channels"], *card.latent.shape[1:])
    x = torch.zeros(shape, device=pipe.device)
    ctx = torch.zeros(batch, 1, k, device=pipe.device) if "crossattn" in card.conditioning.inputs else None
    with torch.inference_mode(), pipe.precision.autocast():
        pipe.networks["diffusion"](
            pipe.precision.layout(x), timesteps=torch.full((batch,), 500, device=pipe.device), context=ctx
        )
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()


def unet_call_seconds(pipe, repeats: int = 10) -> dict[str, float]:
    """Median seconds of one UNet call on batch 1 (unguided, or one of two separate guided calls)
    and on batch 2 (the guided loop's one call on conditions and null condition together)."""
    out = {}
    for batch in (1, 2):
        _unet_call(pipe, batch)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            _unet_call(pipe, batch)
            times.append(time.perf_counter() - t)
        out[f"batch_{batch}"] = float(np.median(times))
    return out


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement described by ``spec`` (``kind``: ``path`` or ``decode``), in this process."""
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    if spec["kind"] == "decode":
        return measure_decode(
            spec["model"],
            mode=spec["mode"],
            precision=spec["precision"],
            norm=spec.get("norm", "window"),
            device=spec["device"],
            output=spec.get("output"),
            random_weights=spec["random_weights"],
            max_window_voxels=spec.get("max_window_voxels"),
        )
    return measure(
        spec["model"],
        PathSpec(**spec["path"]),
        repeats=spec["repeats"],
        seed=spec["seed"],
        device=spec["device"],
        output=spec.get("output"),
        random_weights=spec["random_weights"],
        warmup=spec.get("warmup", True),
    )


def run_worker(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; returns its JSON result."""
    cmd = [sys.executable, "-m", "synthbrain_dev.bench", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SynthBrainError(
            f"benchmark worker for {spec.get('model')} "
            f"({spec.get('path', {}).get('name', spec.get('mode'))}) failed: {tail}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])
