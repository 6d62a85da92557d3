"""The one reverse-diffusion loop every pipeline uses, and the schedulers it steps with.

Schedulers come from :mod:`monai.networks.schedulers` (DDPM, DDIM, PNDM, rectified flow) and, for
DPM-Solver++(2M), from :mod:`SynthBrainLib.pipelines.schedulers` (on MONAI's ``Scheduler`` base), all built
from the card's training noise schedule. The loop is ours rather than
``monai.inferers.LatentDiffusionInferer.sample`` because the published Brain LDM feeds its
conditions twice per step (concatenated channels *and* cross-attention context), which the inferer
does not do, and because interactive use needs a progress callback and a cancel check every step.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConditionError
from ..models.cards import Scheduler
from ..models.samplers import SAMPLER_CLASSES
from ..outputs.interrupts import CancelFlag, check_cancel, is_cancelled  # noqa: F401  (part of this API)
from . import schedulers as own_schedulers
from .device import Precision

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class NegativeBranch:
    """A condition sampling steers away from: every step adds ``scale * (cond - negative)``, where
    ``negative`` is the network's prediction for these inputs (negative prompting; the "NOT" of Liu
    et al. 2022, Composable Diffusion). ``concat`` / ``unet_kwargs``: same shapes as the conditions'."""

    scale: float
    concat: torch.Tensor | None
    unet_kwargs: Mapping[str, Any]


#: Extra kwargs that DDPM/DDIM/PNDM forward to their beta-schedule function.
_SCHEDULE_ARGS = ("beta_start", "beta_end", "sig_range")


def check_call(progress: Any, cancel: Any, preview: Any = False) -> None:
    """Arguments every generate call takes, checked when the call starts (not at its first step):
    ``progress`` None or callable; ``cancel`` None, a ``threading.Event`` or a callable; ``preview`` a bool."""
    if not isinstance(preview, (bool, np.bool_)):
        raise ConditionError(f"preview {preview!r} is not True or False")
    if progress is not None and not callable(progress):
        raise ConditionError(f"progress {progress!r} is not a function progress(step, total)")
    if cancel is not None and not isinstance(cancel, threading.Event) and not callable(cancel):
        raise ConditionError(f"cancel {cancel!r} is not a threading.Event or a function returning True to stop")


def make_scheduler(
    schedule: Scheduler, sampler: str, steps: int, device: torch.device, sample_numel: int | None = None
):
    """Build the ``monai.networks.schedulers`` object for ``sampler`` with ``steps`` inference steps.

    The card's training schedule (``num_train_timesteps``, betas, prediction type, clipping) is
    passed to whichever class the sampler uses; arguments a class does not take are left out
    (e.g. PNDM has no ``clip_sample``).
    """
    import monai.networks.schedulers as monai_schedulers

    name = SAMPLER_CLASSES[sampler]
    cls = getattr(monai_schedulers, name, None) or getattr(own_schedulers, name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "schedule_args"}
    takes_schedule_args = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    kwargs = {
        k: v for k, v in schedule.kwargs.items() if k in accepted or (takes_schedule_args and k in _SCHEDULE_ARGS)
    }
    scheduler = cls(**kwargs)
    if sampler == "rflow":
        scheduler.set_timesteps(num_inference_steps=steps, device=device, input_img_size_numel=sample_numel)
    else:
        scheduler.set_timesteps(num_inference_steps=steps, device=device)
    return scheduler


def noise_ratio(scheduler: Any, sampler: str, t: Any) -> float:
    """sigma_t / alpha_t of the sample at timestep ``t``: sqrt((1 - abar_t) / abar_t) for the
    DDPM-family schedules; t / (T - t) for rectified flow (x_t = (1 - t/T) x_0 + t/T noise)."""
    if sampler == "rflow":
        T = float(scheduler.num_train_timesteps)
        tt = float(t)
        return math.inf if tt >= T else tt / (T - tt)
    ac = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt(max(1.0 - ac, 0.0) / ac) if ac > 0 else math.inf


def denoise(
    unet: torch.nn.Module,
    scheduler: Any,
    noise: torch.Tensor,
    *,
    sampler: str,
    precision: Precision,
    concat: torch.Tensor | None = None,
    unet_kwargs: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
    total: int | None = None,
    guidance: float = 1.0,
    null_concat: torch.Tensor | None = None,
    null_unet_kwargs: Mapping[str, Any] | None = None,
    negatives: Sequence[NegativeBranch] = (),
) -> torch.Tensor:
    """Run the reverse process from ``noise`` to a clean latent.

    Args:
        unet: the diffusion network (``DiffusionModelUNet`` or ``SPADEDiffusionModelUNet``).
        scheduler: from :func:`make_scheduler`, with its timesteps set.
        noise: starting latent, shape (B, C, X, Y, Z), float32 on the pipeline's device.
        sampler: the scheduler's sampler name (selects the step signature).
        precision: autocast dtype and memory layout of the network calls (``mixed``: per step,
            by :func:`noise_ratio`).
        concat: conditioning channels (B, K, X, Y, Z) concatenated to the latent at every step,
            built once by the caller.
        unet_kwargs: other network inputs, built once: ``context`` (B, 1, K) for cross-attention,
            ``seg`` for SPADE, ``class_labels``.
        generator: noise source for stochastic samplers (DDPM), seeded by the caller.
        progress: called as ``progress(step, total)`` after each step (step counts from 1).
        cancel: checked before every step; when set, :class:`SynthesisCancelled` is raised.
        total: the ``total`` passed to ``progress`` (default: the number of steps).
        guidance: classifier-free guidance scale ``w``: when not 1, every step evaluates the network
            on the conditions and on the null condition (``null_concat`` / ``null_unet_kwargs``, same
            shapes as ``concat`` / ``unet_kwargs``) in one batched call and steps with
            ``uncond + w * (cond - uncond)`` - for every sampler, since all of them step from the
            network output.
        negatives: with guidance (``w`` != 1) only: conditions to steer away from, evaluated in the
            same batched call; each adds ``scale * (cond - negative)`` to the guided prediction.

    Returns:
        The final latent, float32, same shape as ``noise``.
    """
    step = _NetworkStep(unet, precision, concat, unet_kwargs, guidance, null_concat, null_unet_kwargs, negatives)
    timesteps = scheduler.timesteps
    n = len(timesteps)
    total = n if total is None else total
    x = noise
    try:
        with torch.inference_mode():
            for i, t in enumerate(timesteps):
                check_cancel(cancel)
                output = step(x, t, noise_ratio(scheduler, sampler, t))
                if sampler == "rflow":
                    # The timestep as set (float16, not truncated), the next one as an integer:
                    # MONAI's RFlowScheduler.step and upstream MAISI's loop do the same.
                    next_t = int(timesteps[i + 1]) if i + 1 < n else 0
                    x, _ = scheduler.step(output, t, x, next_t)
                elif sampler == "ddpm":
                    x, _ = scheduler.step(output, int(t), x, generator=generator)
                else:
                    x, _ = scheduler.step(output, int(t), x)
                if progress is not None:
                    progress(i + 1, total)
    finally:
        step.close()
    return x


def invert(
    unet: torch.nn.Module,
    scheduler: Any,
    latent: torch.Tensor,
    *,
    precision: Precision,
    concat: torch.Tensor | None = None,
    unet_kwargs: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
    done: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """DDIM inversion: run the deterministic DDIM process backwards, from a clean ``latent`` to the
    noise that :func:`denoise` with the same scheduler and conditions turns back into it
    (MONAI's ``DDIMScheduler.reversed_step``; Song et al. 2021, Dhariwal & Nichol 2021 app. F).

    Args:
        scheduler: a ``ddim`` scheduler from :func:`make_scheduler`, with its timesteps set.
        latent: (B, C, X, Y, Z) clean latent (scaled as the diffusion model takes it).
        concat / unet_kwargs / precision: as for :func:`denoise` (no guidance: inversion follows the
            conditional model itself).
        progress: ``progress(done + step, total)`` after each step.

    Returns:
        The latent at the scheduler's first (noisiest) timestep.
    """
    if not hasattr(scheduler, "reversed_step"):
        raise ConditionError("inversion needs the deterministic DDIM sampler")
    step = _NetworkStep(unet, precision, concat, unet_kwargs)
    timesteps = list(reversed(scheduler.timesteps))[:-1]  # from the cleanest up; the last step lands on the first
    total = done + len(timesteps) if total is None else total
    x = latent
    try:
        with torch.inference_mode():
            for i, t in enumerate(timesteps):
                check_cancel(cancel)
                x, _ = scheduler.reversed_step(step(x, t, noise_ratio(scheduler, "ddim", t)), int(t), x)
                if progress is not None:
                    progress(done + i + 1, total)
    finally:
        step.close()
    return x


class _NetworkStep:
    """One network evaluation of a sampling step: the conditioning inputs concatenated or passed as
    the card says, classifier-free guidance as one batched call (conditions first, null condition
    second, then any negative conditions; ``uncond + w * (cond - uncond) + sum(s * (cond - neg))``),
    and the precision for the step's noise level. One autocast context per run of steps in the same
    precision: autocast then casts the weights to bfloat16/float16 once per run instead of once per
    step (553 M weights: ~8 %)."""

    def __init__(
        self,
        unet,
        precision,
        concat=None,
        unet_kwargs=None,
        guidance=1.0,
        null_concat=None,
        null_unet_kwargs=None,
        negatives: Sequence[NegativeBranch] = (),
    ) -> None:
        kwargs = dict(unet_kwargs or {})
        self.guided = guidance != 1.0
        self.negative_scales = [n.scale for n in negatives] if self.guided else []
        self.branches = 1
        if self.guided:
            others = [(null_concat, dict(null_unet_kwargs or {}))]
            others += [(n.concat, dict(n.unet_kwargs)) for n in negatives]
            if any(set(k) != set(kwargs) or (c is None) != (concat is None) for c, k in others):
                raise ConditionError("classifier-free guidance needs null inputs matching the conditioning inputs")
            kwargs = {k: torch.cat([v, *(o[k] for _, o in others)], dim=0) for k, v in kwargs.items()}
            concat = None if concat is None else torch.cat([concat, *(c for c, _ in others)], dim=0)
            self.branches = 1 + len(others)
        self.unet, self.precision, self.concat, self.kwargs, self.guidance = unet, precision, concat, kwargs, guidance
        self.autocast = contextlib.ExitStack()
        self.current: Precision | None = None
        self.denormals = contextlib.ExitStack()
        self.denormals.enter_context(flush_denormals())

    def __call__(self, x: torch.Tensor, t, ratio: float) -> torch.Tensor:
        step_precision = self.precision.for_noise_ratio(ratio)
        if step_precision != self.current:
            self.autocast.close()
            self.autocast.enter_context(step_precision.autocast())
            self.current = step_precision
        xs = torch.cat([x] * self.branches, dim=0) if self.branches > 1 else x
        model_input = self.precision.layout(torch.cat([xs, self.concat], dim=1) if self.concat is not None else xs)
        if torch.is_tensor(t) and t.is_floating_point():  # rectified flow: continuous time, as MAISI feeds it
            t_batch = torch.full((xs.shape[0],), float(t), device=x.device, dtype=torch.float32)
        else:
            t_batch = torch.full((xs.shape[0],), int(t), device=x.device, dtype=torch.long)
        output = self.unet(model_input, timesteps=t_batch, **self.kwargs).float()
        if self.guided:
            cond_out, null_out, *negative_outs = output.split(x.shape[0], dim=0)
            output = null_out + self.guidance * (cond_out - null_out)
            for scale, negative_out in zip(self.negative_scales, negative_outs):
                output = output + scale * (cond_out - negative_out)
        return output.contiguous()

    def close(self) -> None:
        self.autocast.close()
        self.denormals.close()


@contextlib.contextmanager
def flush_denormals():
    """CPU arithmetic with denormal floats (below 1.2e-38) set to zero, for the network calls.

    Why: latents of real brains (flat background) drive activations into denormals, which x86 CPUs
    handle ~100x slower. Measured on AMD EPYC (2 cores), brain-ldm-demo: 10 DDIM inversion steps of an
    encoded scan took 10-28 s with denormals and 0.9 s without; generation from noise 3.0 -> 1.9 s with
    the same image. The flag is switched back off afterwards (torch's default; torch has no getter, so
    a caller who had switched it on finds it off). Where the CPU cannot flush, nothing changes."""
    switched = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if switched:
            torch.set_flush_denormal(False)
