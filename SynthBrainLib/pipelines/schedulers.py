"""Samplers that MONAI does not ship, built on MONAI's noise-schedule base class.

* :class:`DPMSolverPP2MScheduler` and :class:`DPMSolverPP3MScheduler`: DPM-Solver++(2M) and (3M)
  (Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
  arXiv:2211.01095, 2022: Algorithm 2 and its third-order multistep form, Appendix B), multistep
  solvers of the diffusion ODE in data-prediction form.
* :class:`UniPCScheduler`: UniPC (Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for
  Fast Sampling of Diffusion Models", NeurIPS 2023), the B(h) = e^h - 1 ("bh2") variant in data
  prediction: a multistep predictor (UniP) and a corrector (UniC) that reuses the next step's model
  evaluation, so the corrector costs no extra network call.

They reuse the model's training noise schedule exactly (``monai.networks.schedulers.Scheduler``
computes the same betas and ``alphas_cumprod`` as the card's DDPM/DDIM scheduler) and work with any
model trained for DDPM (epsilon, v or sample prediction): only the sampling changes, not the model.
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


class DPMSolverPPScheduler(Scheduler):
    """DPM-Solver++ of order :attr:`order` (multistep), deterministic, in data-prediction (x0) form;
    :class:`DPMSolverPP2MScheduler` and :class:`DPMSolverPP3MScheduler` fix the order.

    The equations below are the second-order case; the third order (:meth:`_update`) follows Lu et
    al.'s multistep third-order update with the two previous data predictions.

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

    The scheduler is stateful (it remembers the previous data predictions): build one per sample,
    call :meth:`set_timesteps`, then :meth:`step` once per timestep in order.

    Args:
        num_train_timesteps: steps of the training noise schedule.
        schedule: MONAI noise-schedule name (``linear_beta``, ``scaled_linear_beta``, ...).
        prediction_type: what the network predicts: ``epsilon``, ``v_prediction`` or ``sample``.
        clip_sample: clip the data prediction to ``[clip_sample_min, clip_sample_max]``.
        timestep_spacing: one of :data:`TIMESTEP_SPACINGS` (default :data:`DEFAULT_TIMESTEP_SPACING`).
        lower_order_final: below :data:`LOWER_ORDER_FINAL_BELOW` steps, a first-order step into
            t = 0 (and at most second order into the timestep before it).
        schedule_args: passed to the schedule function (``beta_start``, ``beta_end``, ...).
    """

    #: Highest order of the multistep update.
    order: int = 2

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
        #: data predictions and timesteps already evaluated, most recent last
        self._x0s: list[torch.Tensor] = []
        self._ts: list[int] = []

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
        self._x0s, self._ts = (self._x0s + [x0])[-3:], (self._ts + [t])[-3:]
        if i + 1 == n:
            return x0, x0
        order = min(self.order, len(self._x0s))
        if self.lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
            order = min(order, n - 1 - i)  # 1 into t = 0, at most 2 the step before
        return self._update(sample, int(self.timesteps[i + 1]), order), x0

    def _update(self, sample: torch.Tensor, t_next: int, order: int) -> torch.Tensor:
        """One multistep update of ``order`` from the last evaluated timestep to ``t_next``."""
        lam = self.lambda_t
        t0 = self._ts[-1]
        h = float(lam[t_next] - lam[t0])
        alpha_next, phi = float(self.alpha_t[t_next]), math.expm1(-h)
        x = float(self.sigma_t[t_next] / self.sigma_t[t0]) * sample - alpha_next * phi * self._x0s[-1]
        if order == 1:
            return x
        m0, m1 = self._x0s[-1], self._x0s[-2]
        r0 = float(lam[t0] - lam[self._ts[-2]]) / h
        d1_0 = (m0 - m1) / r0
        if order == 2:
            return x - 0.5 * alpha_next * phi * d1_0
        m2 = self._x0s[-3]
        r1 = float(lam[self._ts[-2]] - lam[self._ts[-3]]) / h
        d1_1 = (m1 - m2) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        return x + alpha_next * (phi / h + 1.0) * d1 - alpha_next * ((phi + h) / h**2 - 0.5) * d2


class DPMSolverPP2MScheduler(DPMSolverPPScheduler):
    """DPM-Solver++(2M) (see :class:`DPMSolverPPScheduler`)."""

    order = 2


class DPMSolverPP3MScheduler(DPMSolverPPScheduler):
    """DPM-Solver++(3M): the third-order multistep update (two previous data predictions)."""

    order = 3


class UniPCScheduler(DPMSolverPPScheduler):
    """UniPC-bh2 of :attr:`order` (predictor UniP-p, corrector UniC-p) in data prediction, on the same
    timesteps and noise schedule as :class:`DPMSolverPPScheduler`.

    Step ``i`` first *corrects* the sample it is given (the predictor's x at ``t_i``) with UniC, using
    the model's data prediction at ``t_i`` (the evaluation just made, so no extra call), then
    *predicts* x at ``t_{i+1}`` with UniP from the corrected sample. With ``m`` the data predictions,
    ``h = lambda_next - lambda_s0``, ``r_k = (lambda_{s_k} - lambda_{s0}) / h`` and
    ``D_k = (m_k - m_0) / r_k``, both are::

        x_next = sigma_next/sigma_s0 * x - alpha_next * (e^-h - 1) * m_0 - alpha_next * B(h) * sum_k rho_k D_k

    with ``B(h) = e^-h - 1`` and ``rho`` solving ``R rho = b`` (``R_jk = r_k^(j-1)``,
    ``b_j = h phi_(j+1)(h) j! / B(h)``; UniP uses the previous predictions, UniC adds ``m_t - m_0``
    with ``r = 1``), as in Zhao et al.'s Algorithms 1-2 and their reference code.
    """

    order = 2

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        super().set_timesteps(num_inference_steps, device)
        self._last_sample: torch.Tensor | None = None
        self._last_order = 1

    def _solve(self, h: float, rks: list[float], predictor: bool) -> list[float]:
        """The weights rho of the predictor (previous predictions) or corrector (plus the new one)."""
        hh = -h
        phi_k = math.expm1(hh) / hh - 1.0
        b_h = math.expm1(hh)
        factorial = 1
        rows, b = [], []
        for k in range(1, len(rks) + 1):
            rows.append([r ** (k - 1) for r in rks])
            b.append(phi_k * factorial / b_h)
            factorial *= k + 1
            phi_k = phi_k / hh - 1.0 / factorial
        R, bb = np.array(rows), np.array(b)
        if predictor:
            if len(rks) == 1:  # first order: no previous prediction to weigh (DPM-Solver++ 1 = DDIM)
                return []
            if len(rks) == 2:  # order 2: the reference code's closed form
                return [0.5]
            return list(np.linalg.solve(R[:-1, :-1], bb[:-1]))
        if len(rks) == 1:
            return [0.5]
        return list(np.linalg.solve(R, bb))

    def _unipc(self, x: torch.Tensor, t_next: int, order: int, m_t: torch.Tensor | None) -> torch.Tensor:
        """UniP (``m_t`` None: predict x at ``t_next``) or UniC (correct the sample at ``t_next``,
        whose data prediction ``m_t`` was just made) from the last sample ``x`` at ``self._ts[-1]``."""
        lam = self.lambda_t
        s0, m0 = self._ts[-1], self._x0s[-1]
        h = float(lam[t_next] - lam[s0])
        rks, d1s = [], []
        for k in range(1, order):
            rk = float(lam[self._ts[-(k + 1)]] - lam[s0]) / h
            rks.append(rk)
            d1s.append((self._x0s[-(k + 1)] - m0) / rk)
        rks.append(1.0)
        rho = self._solve(h, rks, predictor=m_t is None)
        alpha_next, b_h = float(self.alpha_t[t_next]), math.expm1(-h)
        out = float(self.sigma_t[t_next] / self.sigma_t[s0]) * x - alpha_next * b_h * m0
        residual = sum(r * d for r, d in zip(rho, d1s)) if d1s else 0.0
        if m_t is not None:
            residual = residual + rho[-1] * (m_t - m0)
        return out - alpha_next * b_h * residual

    def step(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct ``sample`` at ``timestep`` (after the first step), then predict the next timestep's
        (after the last one: the data prediction). Returns (next sample or result, data prediction)."""
        i, n = self._index, len(self.timesteps)
        if i >= n or int(timestep) != int(self.timesteps[i]):
            expected = int(self.timesteps[i]) if i < n else "none (all steps taken)"
            raise ValueError(f"timestep {int(timestep)} is out of order; expected {expected}")
        t = int(timestep)
        x0 = self.data_prediction(model_output, t, sample)
        if self._last_sample is not None:
            sample = self._unipc(self._last_sample, t, self._last_order, x0)
        self._index = i + 1
        self._x0s, self._ts = (self._x0s + [x0])[-3:], (self._ts + [t])[-3:]
        if i + 1 == n:  # the result: the data prediction of the corrected sample
            result = self.data_prediction(model_output, t, sample)
            return result, result
        order = min(self.order, len(self._x0s))
        if self.lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
            order = min(order, n - 1 - i)
        self._last_sample, self._last_order = sample, order
        return self._unipc(sample, int(self.timesteps[i + 1]), order, None), x0
