"""Samplers that MONAI does not ship, built on MONAI's noise-schedule base class.

:class:`DPMSolverPP2MScheduler` is DPM-Solver++(2M) (Lu et al., "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models", arXiv:2211.01095, 2022, Algorithm 2): a
second-order multistep solver of the diffusion ODE in data-prediction form. It reuses the model's
training noise schedule exactly (``monai.networks.schedulers.Scheduler`` computes the same betas and
``alphas_cumprod`` as the card's DDPM/DDIM scheduler) and works with any model trained for DDPM
(epsilon, v or sample prediction): only the sampling changes, not the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.networks.schedulers import Scheduler

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


#: How :class:`DPMSolverPP2MScheduler` spaces its evaluation timesteps between T - 1 and 0.
TIMESTEP_SPACINGS = ("linspace", "quadratic", "logsnr")

#: Spacing used when none is given (chosen on the demo models: docs/benchmarks.md).
DEFAULT_TIMESTEP_SPACING = "logsnr"

#: Below this many steps the step into t = 0 is first order (Lu et al.'s ``lower_order_final``).
LOWER_ORDER_FINAL_BELOW = 15


class DPMSolverPP2MScheduler(Scheduler):
    """DPM-Solver++(2M), deterministic, in data-prediction (x0) form.

    Notation of Lu et al. (variance-preserving schedule): ``alpha_t = sqrt(alphas_cumprod[t])``,
    ``sigma_t = sqrt(1 - alphas_cumprod[t])``, ``lambda_t = log(alpha_t / sigma_t)``. With model
    evaluations at timesteps ``t_0 = T - 1 > t_1 > ... > t_{M-1} = 0``, step ``i`` (from ``t_{i-1}``
    to ``t_i``, ``h_i = lambda_{t_i} - lambda_{t_{i-1}}``) is::

        first step:   x_{t_1} = sigma_1/sigma_0 * x_{t_0} - alpha_1 * (exp(-h_1) - 1) * x0_0
        later steps:  r_i = h_{i-1} / h_i
                      D_i = (1 + 1/(2 r_i)) * x0_{i-1} - 1/(2 r_i) * x0_{i-2}
                      x_{t_i} = sigma_i/sigma_{i-1} * x_{t_{i-1}} - alpha_i * (exp(-h_i) - 1) * D_i

    where ``x0_j`` is the model's data prediction at ``t_j``. As in Lu et al.'s reference code
    (``lower_order_final``), the step into ``t = 0`` is first order (``D = x0``) when fewer than
    :data:`LOWER_ORDER_FINAL_BELOW` steps are taken: the last ``h`` is then much longer than the one
    before and the extrapolation in ``D`` overshoots. The evaluation at ``t = 0`` gives the result,
    ``x0`` there (the last step of MONAI's DDIM with ``set_alpha_to_one`` does the same).

    Evaluation timesteps (always from ``T - 1`` down to 0, strictly decreasing):

    * ``linspace``: uniform in t (MONAI DDIM's grid);
    * ``quadratic``: uniform in sqrt(t), denser at low noise (Lu et al.'s ``time_quadratic``);
    * ``logsnr``: uniform in lambda (Lu et al.'s ``logSNR``).

    The scheduler is stateful (it remembers the previous data prediction): build one per sample,
    call :meth:`set_timesteps`, then :meth:`step` once per timestep in order.

    Args:
        num_train_timesteps: steps of the training noise schedule.
        schedule: MONAI noise-schedule name (``linear_beta``, ``scaled_linear_beta``, ...).
        prediction_type: what the network predicts: ``epsilon``, ``v_prediction`` or ``sample``.
        clip_sample: clip the data prediction to ``[clip_sample_min, clip_sample_max]``.
        timestep_spacing: one of :data:`TIMESTEP_SPACINGS` (default :data:`DEFAULT_TIMESTEP_SPACING`).
        lower_order_final: first-order step into t = 0 below :data:`LOWER_ORDER_FINAL_BELOW` steps.
        schedule_args: passed to the schedule function (``beta_start``, ``beta_end``, ...).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_min: float = -1.0,
        clip_sample_max: float = 1.0,
        timestep_spacing: str | None = None,
        lower_order_final: bool = True,
        **schedule_args,
    ) -> None:
        super().__init__(num_train_timesteps, schedule, **schedule_args)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        timestep_spacing = timestep_spacing or DEFAULT_TIMESTEP_SPACING
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing {timestep_spacing!r} is not one of {', '.join(TIMESTEP_SPACINGS)}")
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_values = (clip_sample_min, clip_sample_max)
        self.timestep_spacing = timestep_spacing
        self.lower_order_final = lower_order_final
        self.init_noise_sigma = 1.0
        ac = self.alphas_cumprod.double()
        #: alpha_t, sigma_t and lambda_t of every training timestep, float64 (T,).
        self.alpha_t = ac.sqrt()
        self.sigma_t = (1.0 - ac).sqrt()
        self.lambda_t = self.alpha_t.log() - self.sigma_t.log()
        self.set_timesteps(num_train_timesteps)

    # ---- schedule -----------------------------------------------------------------------------
    def evaluation_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """The ``num_inference_steps`` timesteps of :attr:`timestep_spacing`, from T - 1 to 0."""
        T, n = self.num_train_timesteps, num_inference_steps
        if n == 1:
            return np.array([T - 1])
        if self.timestep_spacing == "linspace":
            grid = np.linspace(T - 1, 0, n)
        elif self.timestep_spacing == "quadratic":
            grid = np.linspace(np.sqrt(T - 1), 0, n) ** 2
        else:
            lam = self.lambda_t.numpy()
            targets = np.linspace(lam[T - 1], lam[0], n)
            grid = np.interp(targets, lam[::-1], np.arange(T - 1, -1, -1, dtype=np.float64))  # lambda decreases with t
        i = np.arange(n)
        grid = np.clip(np.round(grid).astype(np.int64), n - 1 - i, T - 1 - i)  # room for distinct steps on both sides
        grid[0], grid[-1] = T - 1, 0
        for k in range(n - 2, -1, -1):  # strictly decreasing: crowded low-noise steps move up
            grid[k] = max(grid[k], grid[k + 1] + 1)
        return grid

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose ``num_inference_steps`` evaluation timesteps (descending) and reset the solver state."""
        T = self.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps {num_inference_steps} is outside 1–{T}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(self.evaluation_timesteps(num_inference_steps)).to(device)
        self._index = 0
        self._previous_x0: torch.Tensor | None = None
        self._previous_h: float | None = None

    def _coefficients(self, t: int, t_next: int) -> tuple[float, float, float]:
        """(sigma_next / sigma_t, alpha_next * (exp(-h) - 1), h) for a step from ``t`` to ``t_next``."""
        h = float(self.lambda_t[t_next] - self.lambda_t[t])
        return float(self.sigma_t[t_next] / self.sigma_t[t]), float(self.alpha_t[t_next]) * math.expm1(-h), h

    def data_prediction(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        """The network's estimate of the clean sample x0 at ``timestep`` (clipped if configured)."""
        alpha, sigma = float(self.alpha_t[timestep]), float(self.sigma_t[timestep])
        if self.prediction_type == "epsilon":
            x0 = (sample - sigma * model_output) / alpha
        elif self.prediction_type == "v_prediction":
            x0 = alpha * sample - sigma * model_output
        else:
            x0 = model_output
        if self.clip_sample:
            x0 = x0.clamp(*self.clip_sample_values)
        return x0

    # ---- one step -----------------------------------------------------------------------------
    def step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance from ``timestep`` to the next evaluation timestep (after the last one: the result).

        Args:
            model_output: network output at ``timestep`` for ``sample``, same shape as ``sample``.
            timestep: must be the next of :attr:`timesteps` (steps are taken in order).
            sample: current noisy sample x_t.

        Returns:
            (x at the next timestep - or, after the last timestep, the data prediction there -,
            data prediction x0 at ``timestep``).
        """
        i = self._index
        n = len(self.timesteps)
        if i >= n or int(timestep) != int(self.timesteps[i]):
            expected = int(self.timesteps[i]) if i < n else "none (all steps taken)"
            raise ValueError(f"timestep {int(timestep)} is out of order; expected {expected}")
        t = int(timestep)
        x0 = self.data_prediction(model_output, t, sample)
        self._index = i + 1
        if i + 1 == n:
            return x0, x0
        t_next = int(self.timesteps[i + 1])
        ratio, coef, h = self._coefficients(t, t_next)
        final_low_order = self.lower_order_final and i + 2 == n and n < LOWER_ORDER_FINAL_BELOW
        if self._previous_x0 is None or final_low_order:
            d = x0
        else:
            r = self._previous_h / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * self._previous_x0
        prev_sample = ratio * sample - coef * d
        self._previous_x0, self._previous_h = x0, h
        return prev_sample, x0
