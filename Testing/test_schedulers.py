"""DPM-Solver++(2M) against the published update (Lu et al. 2022, Algorithm 2) and the exact ODE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from SynthBrainLib.errors import ConditionError
from SynthBrainLib.models.cards import builtin_cards
from SynthBrainLib.models.conditioning import resolve_sampler
from SynthBrainLib.pipelines.sampling import make_scheduler
from SynthBrainLib.pipelines.schedulers import DPMSolverPP2MScheduler

SCHEDULE = builtin_cards()["brain-ldm"].scheduler


def _scheduler(steps: int, **kwargs) -> DPMSolverPP2MScheduler:
    s = make_scheduler(SCHEDULE, "dpm++2m", steps, torch.device("cpu"))
    for k, v in kwargs.items():
        setattr(s, k, v)
    return s


def _alphas_cumprod_float64() -> np.ndarray:
    """The card's scaled-linear schedule computed independently in float64."""
    kw = SCHEDULE.kwargs
    betas = (
        np.linspace(kw["beta_start"] ** 0.5, kw["beta_end"] ** 0.5, kw["num_train_timesteps"], dtype=np.float64) ** 2
    )
    return np.cumprod(1.0 - betas)


def test_uses_the_cards_noise_schedule():
    s = _scheduler(10)
    ddim = make_scheduler(SCHEDULE, "ddim", 10, torch.device("cpu"))
    assert torch.equal(s.alphas_cumprod, ddim.alphas_cumprod)
    assert np.allclose(s.alphas_cumprod.double().numpy(), _alphas_cumprod_float64(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spacing", ["linspace", "quadratic", "logsnr"])
def test_timesteps_cover_the_schedule(spacing):
    for n in (1, 2, 3, 7, 10, 50, 333, 999, 1000):
        s = _scheduler(n, timestep_spacing=spacing)
        s.set_timesteps(n)
        t = s.timesteps.tolist()
        assert len(t) == n, f"{spacing}, {n} steps: {len(t)} timesteps"
        assert t[0] == 999, f"{spacing}, {n} steps: first timestep {t[0]}"
        assert n == 1 or t[-1] == 0, f"{spacing}, {n} steps: last timestep {t[-1]}"
        assert all(a > b for a, b in zip(t, t[1:])), f"{spacing}, {n} steps: timesteps do not decrease: {t}"
    s = _scheduler(10, timestep_spacing="linspace")
    s.set_timesteps(10)
    assert s.timesteps.tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]  # MONAI DDIM's grid


def _model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A smooth, non-linear stand-in for a noise-prediction network."""
    return 0.8 * torch.tanh(x) + 0.05 * math.sin(t / 97.0)


@pytest.mark.parametrize("steps", [7, 16])
def test_matches_hand_computed_algorithm_2_in_float64(steps):
    """Every step equals Algorithm 2 of Lu et al. (2022), written out here in float64 (with the
    reference code's first-order step into t = 0 below 15 steps)."""
    s = _scheduler(steps)
    ac = s.alphas_cumprod.double().numpy()
    alpha, sigma = np.sqrt(ac), np.sqrt(1.0 - ac)
    lam = np.log(alpha) - np.log(sigma)
    ts = s.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 4, generator=g, dtype=torch.float64)
    ours = x.clone()
    ref = x.clone()
    x0_prev = None
    h_prev = None
    for i, t in enumerate(ts):
        ours, x0_ours = s.step(_model(ours, t), t, ours)
        eps = _model(ref, t)
        x0 = (ref - sigma[t] * eps) / alpha[t]  # data prediction x_theta
        assert torch.allclose(x0_ours, x0, rtol=1e-12, atol=1e-12)
        if i + 1 == len(ts):  # at t = 0: the result is x_theta
            ref = x0
        else:
            tn = ts[i + 1]
            h = lam[tn] - lam[t]
            if x0_prev is None or (tn == 0 and steps < 15):  # line 4: first order
                ref = (sigma[tn] / sigma[t]) * ref - alpha[tn] * (np.exp(-h) - 1.0) * x0
            else:  # lines 7-9: r_i, D_i, x_{t_i}
                r = h_prev / h
                d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
                ref = (sigma[tn] / sigma[t]) * ref - alpha[tn] * (np.exp(-h) - 1.0) * d
            x0_prev, h_prev = x0, h
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12), f"step {i} (t={t})"


def test_first_step_equals_monai_ddim():
    """First-order DPM-Solver++ is DDIM (eta = 0): on DDIM's grid (10 steps: 999 -> 888 -> ...) the
    first step equals MONAI's DDIMScheduler step from 999 to 999 - 1000 // 10 = 899 when the grids agree."""
    ours = _scheduler(11, timestep_spacing="linspace")
    ours.set_timesteps(11)  # 999, 899, 799, ...
    assert ours.timesteps.tolist()[:2] == [999, 899]
    ddim = make_scheduler(SCHEDULE, "ddim", 10, torch.device("cpu"))  # steps 999 -> 899
    x = torch.randn(1, 3, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    eps = _model(x, 999)
    a, _ = ours.step(eps, 999, x)
    b, _ = ddim.step(eps, 999, x)
    assert torch.allclose(a, b, atol=1e-5)


def _gaussian_data_eps(mu: float, s: float, ac: torch.Tensor):
    """Exact epsilon prediction for data x0 ~ N(mu, s^2): E[eps | x_t]."""

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        a, v = float(ac[t]) ** 0.5, 1.0 - float(ac[t])
        return v**0.5 * (x - a * mu) / (a * a * s * s + v)

    return model


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_converges_to_the_exact_ode_solution_at_second_order(prediction):
    """For Gaussian data the probability-flow ODE is solved in closed form; DPM-Solver++(2M) reaches
    it faster than DDIM and its error falls ~4x when the steps double (second order)."""
    mu, s = 0.3, 0.5
    probe = _scheduler(10)
    ac = probe.alphas_cumprod.double()
    eps_model = _gaussian_data_eps(mu, s, ac)

    def model(x, t):
        eps = eps_model(x, t)
        a, sg = float(ac[t]) ** 0.5, (1 - float(ac[t])) ** 0.5
        if prediction == "epsilon":
            return eps
        x0 = (x - sg * eps) / a
        return x0 if prediction == "sample" else a * eps - sg * x0  # v = alpha * eps - sigma * x0

    x_T = torch.randn(4096, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a_T, v_T = float(ac[999]) ** 0.5, 1.0 - float(ac[999])
    z = (x_T - a_T * mu) / math.sqrt(a_T**2 * s**2 + v_T)  # the ODE keeps this quantile fixed
    a_0, v_0 = float(ac[0]) ** 0.5, 1.0 - float(ac[0])
    x_0 = a_0 * mu + math.sqrt(a_0**2 * s**2 + v_0) * z  # exact state at t = 0
    exact = (x_0 - v_0**0.5 * eps_model(x_0, 0)) / a_0  # every sampler ends with x0 predicted at t = 0

    def run(sampler, steps):
        sch = make_scheduler(SCHEDULE, sampler, steps, torch.device("cpu"))
        sch.prediction_type = prediction
        x = x_T.clone()
        for t in sch.timesteps.tolist():
            x, _ = sch.step(model(x, t), t, x)
        return float((x - exact).abs().max())

    e20, e40, e80 = run("dpm++2m", 20), run("dpm++2m", 40), run("dpm++2m", 80)
    assert e80 < e40 < e20 < 0.05, f"errors at 20/40/80 steps: {e20}, {e40}, {e80}"
    # second order: ~4x per doubling
    assert e20 / e40 > 3.0, f"error falls {e20 / e40:.2f}x from 20 to 40 steps"
    assert e40 / e80 > 2.5, f"error falls {e40 / e80:.2f}x from 40 to 80 steps"
    assert e20 < run("ddim", 20) / 5


def test_steps_must_be_taken_in_order():
    s = _scheduler(4)
    x = torch.zeros(1, 3, 2, 2, 2)
    with pytest.raises(ValueError, match="timestep 500 is out of order; expected 999"):
        s.step(x, 500, x)


def test_sampler_resolution():
    card = builtin_cards()["brain-ldm"]
    assert resolve_sampler(card.sampling, card.scheduler, "dpm++2m", 10) == ("dpm++2m", 10)
    assert resolve_sampler(card.sampling, card.scheduler, "DPM++2M", 1) == ("dpm++2m", 1)
    with pytest.raises(ConditionError, match="steps 0 is outside 1–1000"):
        resolve_sampler(card.sampling, card.scheduler, "dpm++2m", 0)


def _gaussian_run(sampler: str, steps: int) -> float:
    """Max error of ``sampler`` after ``steps`` against the exact ODE solution for Gaussian data."""
    mu, s = 0.3, 0.5
    sch = make_scheduler(SCHEDULE, sampler, steps, torch.device("cpu"))
    ac = sch.alphas_cumprod.double()
    model = _gaussian_data_eps(mu, s, ac)
    x_T = torch.randn(4096, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a_T, v_T = float(ac[999]) ** 0.5, 1.0 - float(ac[999])
    z = (x_T - a_T * mu) / math.sqrt(a_T**2 * s**2 + v_T)
    a_0, v_0 = float(ac[0]) ** 0.5, 1.0 - float(ac[0])
    x_0 = a_0 * mu + math.sqrt(a_0**2 * s**2 + v_0) * z
    exact = (x_0 - v_0**0.5 * model(x_0, 0)) / a_0
    x = x_T.clone()
    calls = 0
    for t in sch.timesteps.tolist():
        calls += 1
        x, _ = sch.step(model(x, t), t, x)
    assert calls == steps, f"{sampler}: {calls} network evaluations for {steps} steps"
    return float((x - exact).abs().max())


@pytest.mark.parametrize("sampler", ["dpm++3m", "unipc"])
def test_third_order_solvers_converge_faster_than_the_second_order_one(sampler):
    """Asymptotically (20 -> 40 -> 80 steps, beyond the low-order final steps) the error of
    DPM-Solver++(3M) and of UniPC-2 with its corrector falls by more than DPM-Solver++(2M)'s ~4x
    per doubling, and ends below it; each step is one network evaluation (UniC reuses it)."""
    e = {n: _gaussian_run(sampler, n) for n in (20, 40, 80)}
    base = {n: _gaussian_run("dpm++2m", n) for n in (40, 80)}
    assert e[40] / e[80] > 4.5, f"{sampler}: error falls {e[40] / e[80]:.2f}x from 40 to 80 steps"
    assert e[20] / e[40] > 4.5, f"{sampler}: error falls {e[20] / e[40]:.2f}x from 20 to 40 steps"
    assert e[80] < base[80] / 2, f"{sampler} at 80 steps: {e[80]:.2e} vs dpm++2m {base[80]:.2e}"
    assert e[40] < base[40], f"{sampler} at 40 steps: {e[40]:.2e} vs dpm++2m {base[40]:.2e}"


@pytest.mark.parametrize("steps", [7, 16])
def test_dpmpp3m_matches_the_third_order_multistep_update_in_float64(steps):
    """Every step equals Lu et al.'s multistep third-order DPM-Solver++ update (first step first
    order, second step second order; below 15 steps first order into t = 0 and at most second order
    the step before), written out here in float64."""
    s = make_scheduler(SCHEDULE, "dpm++3m", steps, torch.device("cpu"))
    ac = s.alphas_cumprod.double().numpy()
    alpha, sigma = np.sqrt(ac), np.sqrt(1.0 - ac)
    lam = np.log(alpha) - np.log(sigma)
    ts = s.timesteps.tolist()
    x = torch.randn(2, 3, 4, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, ref = x.clone(), x.clone()
    ms, lams = [], []
    for i, t in enumerate(ts):
        ours, _ = s.step(_model(ours, t), t, ours)
        m0 = (ref - sigma[t] * _model(ref, t)) / alpha[t]
        ms, lams = [m0] + ms[:2], [lam[t]] + lams[:2]
        if i + 1 == len(ts):
            ref = m0
        else:
            tn = ts[i + 1]
            h = lam[tn] - lam[t]
            order = min(3, len(ms))
            if steps < 15:
                order = min(order, len(ts) - 1 - i)
            base = (sigma[tn] / sigma[t]) * ref - alpha[tn] * np.expm1(-h) * m0
            if order == 1:
                ref = base
            else:
                r0 = (lams[0] - lams[1]) / h
                d1_0 = (ms[0] - ms[1]) / r0
                if order == 2:
                    ref = base - 0.5 * alpha[tn] * np.expm1(-h) * d1_0
                else:
                    r1 = (lams[1] - lams[2]) / h
                    d1_1 = (ms[1] - ms[2]) / r1
                    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    phi = np.expm1(-h)
                    ref = base + alpha[tn] * (phi / h + 1) * d1 - alpha[tn] * ((phi + h) / h**2 - 0.5) * d2
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12), f"step {i} (t={t})"


def test_unipc_starts_as_ddim_and_its_corrector_changes_the_next_sample():
    """UniPC's first prediction is first order (DPM-Solver++(1) = DDIM); from the second step on,
    the corrector moves the sample it was given, using that step's own evaluation."""
    uni = make_scheduler(SCHEDULE, "unipc", 10, torch.device("cpu"))
    dpm = make_scheduler(SCHEDULE, "dpm++2m", 10, torch.device("cpu"))
    x = torch.randn(1, 3, 6, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t0, t1, t2 = uni.timesteps.tolist()[:3]
    a, _ = uni.step(_model(x, t0), t0, x)
    b, _ = dpm.step(_model(x, t0), t0, x)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), "first step: the same first-order update"
    a2, _ = uni.step(_model(a, t1), t1, a)
    b2, _ = dpm.step(_model(b, t1), t1, b)
    assert not torch.allclose(a2, b2, atol=1e-6), "second step: UniC corrects, so UniPC leaves DPM-Solver++"


def test_every_registered_sampler_builds_and_is_listed_for_its_objectives():
    from SynthBrainLib.models.samplers import SAMPLERS, TRAINING_OBJECTIVES

    for name, spec in SAMPLERS.items():
        if "rflow" in spec.objectives:
            continue
        sch = make_scheduler(SCHEDULE, name, max(spec.min_steps, 5), torch.device("cpu"))
        assert type(sch).__name__ == spec.scheduler_class, f"{name} builds {type(sch).__name__}"
        for objective in spec.objectives:
            assert name in TRAINING_OBJECTIVES[objective], f"{name} is listed for {objective}"
