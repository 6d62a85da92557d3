"""``synthbrain bench``: latency, end-to-end time and peak memory of synthesis paths, against the
model-zoo reference path, in one run.

Each (model, path) is measured in a fresh worker process (``python -m SynthBrainLib.tools.bench
--worker``), so peak memory is that path's alone: build (not timed) -> warm-up (not timed) ->
``repeats`` timed runs. Per run: time of every network step (from the progress callback), time of
the decode, end-to-end wall time, peak resident memory (sampled every 5 ms from /proc; CUDA: max
allocated). Medians over runs are reported; per-step latency is the median over all steps of all
timed runs.

The **reference path** is a plain loop written like the MONAI model-zoo bundle's
``scripts/sampler.py``: ``torch.no_grad``, float32, contiguous NCDHW tensors, MONAI's
``DDIMScheduler`` with the card's schedule, 50 steps, ``decode_stage_2_outputs`` on the whole
latent. It shares no code with the pipelines' loop; it sees the same starting noise and conditions,
so outputs can be compared voxel by voxel (PSNR, MS-SSIM, max abs difference).

Models whose weights are not installed (the published Brain LDM here) are built from their card with
random weights, perturbed (MONAI zero-initialises the UNet's last convolution, so an unperturbed
UNet predicts zeros and every sampler would return the same latent).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import monai
import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric
from monai.networks.schedulers import DDIMScheduler

from ..errors import ModelNotFoundError, SynthBrainError
from ..models.checkpoints import load_weights, read_state_dict
from ..models.conditioning import resolve_conditions, resolve_sampler
from ..models.networks import build_network, build_networks
from ..models.samplers import MIN_STEPS
from ..models.store import ModelStore
from ..pipelines import LatentDiffusionPipeline, load_pipeline, pipeline_class
from ..pipelines.base import SynthesisPipeline
from ..pipelines.decoding import TileSettings, decode, decode_full
from ..pipelines.device import Precision, resolve_device

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ----------------------------------------------------------------------------------------------
# What is measured
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathSpec:
    """One way of synthesising: ``reference`` (the bundle's plain loop) or a pipeline configuration.

    ``sampler``/``steps`` ``None`` mean the ``preset``'s (:mod:`SynthBrainLib.models.presets`);
    ``preview`` uses the pipeline's preview settings; ``decode``, ``precision`` and ``preset`` as the
    pipeline options.
    """

    name: str
    sampler: str | None = None
    steps: int | None = None
    precision: str = "auto"
    decode: str = "auto"
    preview: bool = False
    reference: bool = False
    repeats: int | None = None  # overrides the benchmark's repeat count for this path
    preset: str = "fast"
    guidance: float | None = None  # classifier-free guidance scale; None: the card's default

    def describe(self, card=None) -> str:
        if self.reference:
            return "bundle loop: ddim 50, float32, full decode"
        sampling = card.sampling if card is not None else None
        sampler, steps = self.sampler or "-", self.steps if self.steps is not None else "-"
        if sampling is not None:
            try:
                sampler, steps = resolve_sampler(sampling, card.scheduler, self.sampler, self.steps, self.preset)
            except SynthBrainError:
                pass
        precision = f"auto ({self.preset} preset)" if self.precision == "auto" else self.precision
        if self.preview and card is not None and sampling is not None:
            sampler = self.sampler or (
                SynthesisPipeline.preview_sampler
                if SynthesisPipeline.preview_sampler in sampling.samplers
                else sampling.default_sampler
            )
            steps = self.steps or SynthesisPipeline.preview_steps
        if sampling is None:
            return f"{precision}, decode {self.decode}"
        guided = ""
        if sampling.guidance is not None:
            guided = f", guidance {self.guidance if self.guidance is not None else sampling.guidance.default:g}"
        return f"{sampler} {steps}, {precision}, decode {self.decode}{guided}"


REFERENCE = PathSpec("reference", "ddim", 50, "float32", "full", reference=True, preset="published")


def parse_path(text: str) -> PathSpec:
    """``NAME=SAMPLER:STEPS:PRECISION:DECODE[:REPEATS[:GUIDANCE]]`` (empty fields: the fast preset's
    and the card's guidance), e.g. ``fast=unipc:12:bfloat16:auto``, ``unguided=::::1:1``,
    ``NAME=preview``, ``NAME=published`` (the published preset) or ``reference``."""
    if text == "reference":
        return REFERENCE
    if "=" not in text:
        raise SynthBrainError(f"path {text!r} is not NAME=SAMPLER:STEPS:PRECISION:DECODE (or 'reference')")
    name, spec = text.split("=", 1)
    if spec == "preview":
        return PathSpec(name, preview=True, precision="auto")
    if spec == "published":
        return PathSpec(name, preset="published")
    sampler, steps, precision, decode, repeats, guidance = (spec.split(":") + [""] * 6)[:6]
    numbers = []
    for what, value in (("steps", steps), ("repeats", repeats)):
        try:
            numbers.append(int(value) if value else None)
        except ValueError:
            raise SynthBrainError(f"path {text!r}: {what} {value!r} is not a whole number") from None
    try:
        scale = float(guidance) if guidance else None
    except ValueError:
        raise SynthBrainError(f"path {text!r}: guidance {guidance!r} is not a number") from None
    return PathSpec(
        name, sampler or None, numbers[0], precision or "auto", decode or "auto", repeats=numbers[1], guidance=scale
    )


def default_paths(card) -> list[PathSpec]:
    """Reference, the published preset (the card's sampler and steps in float32, through our loop),
    the library's default (the fast preset), and the preview for diffusion models."""
    paths = [
        REFERENCE if card.sampling is not None else replace(REFERENCE, sampler=None, steps=None),
        PathSpec("published", preset="published"),
        PathSpec("default"),
    ]
    if card.sampling is not None and card.sampling.guidance is not None:
        # The bundle loop has no guidance: the unguided twins check our loop against it, and the
        # guided paths' time against theirs is what guidance costs.
        paths.insert(2, PathSpec("published-unguided", preset="published", guidance=1.0))
        paths.append(PathSpec("default-unguided", guidance=1.0))
    if card.sampling is not None:
        paths.append(PathSpec("preview", preview=True))
    return paths


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------
def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:  # pragma: no cover - non-Linux
        return peak_rss_so_far()


def peak_rss_so_far() -> int:
    """Peak resident set size of this process since it started, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Samples RSS every ``interval`` s while active; ``peak`` is the highest seen (bytes)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        self.peak = current_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss())


# ----------------------------------------------------------------------------------------------
# Building what is measured
# ----------------------------------------------------------------------------------------------
def build_pipeline(
    model: str,
    *,
    device: str,
    precision: str,
    decode: str,
    random_weights: bool = False,
    store=None,
    preset: str = "fast",
):
    """The model's pipeline with its weights, or - when they are not installed or ``random_weights`` -
    from its card with perturbed random weights. Returns (pipeline, weights description)."""

    store = store or ModelStore()
    if not random_weights:
        try:
            pipe = load_pipeline(model, device=device, store=store, preset=preset, precision=precision, decode=decode)
            return pipe, "trained (installed)"
        except ModelNotFoundError:
            pass
    card = store.locate(model, require_complete=False).card

    torch.manual_seed(0)
    networks = build_networks(card)
    for net in networks.values():
        perturb(net)
    pipe = pipeline_class(card)(card, networks, device=device, preset=preset, precision=precision, decode=decode)
    return pipe, "random (perturbed, seed 0)"


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> torch.nn.Module:
    """Add ``scale`` x N(0, 1) noise to every parameter, so random-weight networks give non-zero,
    input-dependent outputs (MONAI zero-initialises some output convolutions)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))
    return module


def reference_sample(
    pipe,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    conditions: dict[str, Any] | None = None,
    steps: int = 50,
) -> np.ndarray:
    """The model-zoo bundle's path (``scripts/sampler.py``): a plain DDIM loop, 50 steps, float32,
    under ``torch.no_grad``, then ``decode_stage_2_outputs`` of the whole latent. Same starting noise
    and conditioning tensors as the pipelines (``conditions`` in real units; default: the card's).
    Returns the output (C, X, Y, Z) float32, post-processed as the pipeline does
    (``pipe.raw_output``: clipped to the card's intensity range; class probabilities for label
    generators)."""

    card = pipe.card
    unet, autoencoder = pipe.networks["diffusion"], pipe.networks["autoencoder"]
    for net in (unet, autoencoder):
        net.to(memory_format=torch.contiguous_format)
    kwargs = {
        k: v
        for k, v in card.scheduler.kwargs.items()
        if k in ("num_train_timesteps", "schedule", "beta_start", "beta_end", "clip_sample", "prediction_type")
    }
    scheduler = DDIMScheduler(**kwargs)
    scheduler.set_timesteps(steps)
    noise = pipe.seeded_normal((1, *card.latent.shape), seed)
    conditioning = torch.tensor(
        resolve_conditions(card.conditioning, conditions or {}, None).vector(), dtype=torch.float32, device=pipe.device
    ).view(1, 1, -1)
    image = noise
    with torch.no_grad():
        cond_concat = conditioning.squeeze(1).unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)
        cond_concat = cond_concat.expand(list(cond_concat.shape[0:2]) + list(noise.shape[2:]))
        for i, t in enumerate(scheduler.timesteps):
            x = torch.cat((image, cond_concat), dim=1) if "concat" in card.conditioning.inputs else image
            context = conditioning if "crossattn" in card.conditioning.inputs else None
            model_output = unet(x=x, timesteps=torch.Tensor((t,)).to(noise.device).long(), context=context)
            image, _ = scheduler.step(model_output, t, image)
            if progress is not None:
                progress(i + 1, steps + 1)
        sample = autoencoder.decode_stage_2_outputs(image / card.latent.scale_factor)
    if progress is not None:
        progress(steps + 1, steps + 1)
    return pipe.raw_output(sample)


def run_request(pipe, path: PathSpec, seed: int, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """One synthesis along ``path``; returns the raw output (C, X, Y, Z) float32 for comparisons
    (image channel, or the label generator's partial volumes)."""
    if path.reference and has_reference_loop(pipe):
        return reference_sample(pipe, seed, progress)
    guidance = {} if path.guidance is None else {"guidance": path.guidance}
    result = pipe.generate(
        **pipe.example_request(),
        seed=seed,
        sampler=path.sampler,
        steps=path.steps,
        progress=progress,
        preview=path.preview,
        **guidance,
    )
    return result.channels()


def has_reference_loop(pipe) -> bool:
    """Whether the model-zoo bundle's plain DDIM loop (:func:`reference_sample`) runs this pipeline:
    latent diffusion of the whole output from conditions."""
    return isinstance(pipe, LatentDiffusionPipeline)


# ----------------------------------------------------------------------------------------------
# Worker: one (model, path) in its own process
# ----------------------------------------------------------------------------------------------
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
        if big and pipe.card.latent is not None:
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
        "unet_call_s": unet_call_seconds(pipe) if guided and not path.preview else None,
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
        weights = "random (perturbed, seed 0)"
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


def _worker_main(spec: dict[str, Any]) -> dict[str, Any]:
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
    cmd = [sys.executable, "-m", "SynthBrainLib.tools.bench", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SynthBrainError(
            f"benchmark worker for {spec.get('model')} "
            f"({spec.get('path', {}).get('name', spec.get('mode'))}) failed: {tail}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Comparing outputs
# ----------------------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """3D MS-SSIM (MONAI), Gaussian kernel 5, four scales (the demo grids are 64 voxels wide);
    NaN for volumes under 37 voxels along an axis, which four scales do not fit."""

    if min(np.shape(a)) < 37:
        return float("nan")
    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=data_range, kernel_size=5, weights=(0.0448, 0.2856, 0.3001, 0.2363)
    )
    x = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(b, np.float32))[None, None]
    return float(metric(x, y).mean())


def compare(out: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> dict[str, float]:
    """Max abs difference, PSNR (over ``data_range``, default the reference's range) and, for
    single-channel volumes, MS-SSIM."""
    rng = float(ref.max() - ref.min()) if data_range is None else data_range
    res = {"max_abs": float(np.abs(out - ref).max()), "psnr_db": psnr(out, ref, rng or 1.0)}
    if out.shape[0] == 1 and min(out.shape[1:]) >= 37:
        res["ms_ssim"] = ms_ssim(np.clip(out[0], 0, 1), np.clip(ref[0], 0, 1))
    return res


# ----------------------------------------------------------------------------------------------
# The whole benchmark
# ----------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model, cores, memory, GPU and library versions."""

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    except OSError:
        isa = []
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_flags": isa,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": mem,
        "gpu": gpu,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


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
            ref_out = None
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


#: (mode, precision, norm) of ``--decode-check``; norm: ``global`` (bf16 statistics where native),
#: ``global-exact`` (statistics in the decode's precision) or ``window``.
DECODE_VARIANTS = (
    ("full", "float32", "global"),
    ("slab", "float32", "global"),
    ("full", "bfloat16", "global"),
    ("slab", "bfloat16", "global"),
    ("maisi4", "bfloat16", "global"),
)


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


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _gb(x: int | None) -> str:
    return "-" if not x else f"{x / 1e9:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per model and path)."""
    rows = [
        "| model | path | sampler, steps, precision, decode | weights | step (s) | decode (s) | end to end "
        "(s) | peak RSS (GB) | CUDA max alloc (GB) | vs reference | PSNR / MS-SSIM / max abs vs reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
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
            step = "-" if e["step_s_median"] is None else f"{e['step_s_median']:.3f}"
            rows.append(
                f"| {m['model']} | {e['path']['name']} | {e['describe']} | {e['weights']} | {step} | "
                f"{e['decode_s_median']:.2f} | {e['end_to_end_s_median']:.2f} | "
                f"{_gb(e['peak_rss_bytes'])} | {_gb(e['cuda_max_allocated_bytes'])} | {speed} | {quality} |"
            )
    notes = []
    for m in report["models"]:
        for e in m["paths"]:
            calls = e.get("unet_call_s")
            if calls:
                notes.append(
                    f"- {m['model']}, {e['path']['name']}: one UNet call takes {calls['batch_1'] * 1e3:.1f} ms on "
                    f"batch 1 and {calls['batch_2'] * 1e3:.1f} ms on batch 2 - guidance as one batched call costs "
                    f"{calls['batch_2'] / calls['batch_1']:.2f}x an unguided call, as two calls 2x."
                )
    return "\n".join(rows + ([""] + notes if notes else []))


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
    rows = [
        "| model | decode | precision | weights | time (s) | peak RSS (GB) | CUDA max alloc (GB) | PSNR vs "
        "first (dB) | max abs vs first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in report["variants"]:
        q = v.get("vs_first")
        how = decode_description(v["mode"])
        rows.append(
            f"| {v['model']} | {how} | {v['precision']} | {v['weights']} | {v['decode_s']:.1f} | "
            f"{_gb(v['peak_rss_bytes'])} | {_gb(v['cuda_max_allocated_bytes'])} | "
            f"{'-' if not q else format(q['psnr_db'], '.1f')} | {'-' if not q else format(q['max_abs'], '.3g')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":  # worker entry point
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker_main(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python -m SynthBrainLib.tools.bench --worker JSON (use 'synthbrain bench')")
