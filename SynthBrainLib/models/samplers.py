"""The samplers: one registry that cards, checks, the command line and the Slicer panel read.

Plain Python (no numpy, no torch), so the command line's ``--help`` and the Slicer module list the
samplers without importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: the scheduler class it steps with, the training objectives it fits, and the
    fewest steps it can take. :data:`SAMPLERS` is the one list every face and check reads.

    ``scheduler_class`` names a ``monai.networks.schedulers`` class or, for solvers MONAI lacks, one
    of :mod:`SynthBrainLib.pipelines.schedulers` (built on MONAI's ``Scheduler`` base with the
    card's noise schedule).
    """

    name: str
    scheduler_class: str
    objectives: tuple[str, ...]
    label: str
    min_steps: int = 1
    stochastic: bool = False


_DDPM_OBJECTIVES = ("epsilon", "v_prediction", "sample")

#: Every sampler, by the name cards, the CLI, the API and the panel use.
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("ddpm", "DDPMScheduler", _DDPM_OBJECTIVES, "DDPM", stochastic=True),
        SamplerSpec("ddim", "DDIMScheduler", _DDPM_OBJECTIVES, "DDIM"),
        # PNDM's Runge-Kutta warm-up needs 4 timesteps; MONAI's PNDM handles epsilon prediction only
        SamplerSpec("pndm", "PNDMScheduler", ("epsilon",), "PNDM", min_steps=4),
        SamplerSpec("rflow", "RFlowScheduler", ("rflow",), "Rectified flow"),
        SamplerSpec("dpm++2m", "DPMSolverPP2MScheduler", _DDPM_OBJECTIVES, "DPM-Solver++(2M)"),
        SamplerSpec("dpm++3m", "DPMSolverPP3MScheduler", _DDPM_OBJECTIVES, "DPM-Solver++(3M)"),
        SamplerSpec("unipc", "UniPCScheduler", _DDPM_OBJECTIVES, "UniPC (bh2)"),
    )
}

#: Sampler name -> scheduler class name (derived from :data:`SAMPLERS`).
SAMPLER_CLASSES = {name: spec.scheduler_class for name, spec in SAMPLERS.items()}

#: How the model was trained decides which samplers fit it (derived from :data:`SAMPLERS`).
TRAINING_OBJECTIVES = {
    objective: tuple(name for name, spec in SAMPLERS.items() if objective in spec.objectives)
    for objective in (*_DDPM_OBJECTIVES, "rflow")
}

#: Fewest steps each sampler can take.
MIN_STEPS = {name: spec.min_steps for name, spec in SAMPLERS.items()}
