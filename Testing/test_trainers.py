"""The training loop's pieces that the shipped demos rely on: EMA weights and the v-prediction target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthbrain_dev.training.trainers import FitConfig, fit, train_latent_diffusion
from SynthBrainLib.models.cards import NetworkSpec


def test_ema_weights_replace_the_last_weights():
    """With ema, the returned weights are the warm-up-decayed average of the weights after each step."""
    data = torch.linspace(-1, 1, 16).view(16, 1)

    def loss_fn(m, idx, gen):
        return ((m(data[idx]) - 3.0 * data[idx]) ** 2).mean()

    runs = {}
    for ema in (None, 0.9):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        trail = []
        original_step = torch.optim.AdamW.step

        def recording_step(self, *a, **k):
            out = original_step(self, *a, **k)
            trail.append(model.weight.detach().clone())
            return out

        torch.optim.AdamW.step = recording_step
        try:
            fit(model, loss_fn, 16, FitConfig(steps=20, batch=4, lr=0.05, ema=ema))
        finally:
            torch.optim.AdamW.step = original_step
        runs[ema] = (model.weight.detach().clone(), trail)
    last, trail = runs[None]
    assert torch.equal(last, trail[-1])
    torch.manual_seed(0)
    expected = torch.nn.Linear(1, 1).weight.detach().clone()  # the average starts from the initial weights
    for step, w in enumerate(runs[0.9][1]):
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * w
    assert torch.allclose(runs[0.9][0], expected, atol=1e-6)
    assert not torch.allclose(runs[0.9][0], runs[0.9][1][-1])


class _Recorder(torch.nn.Module):
    """A 'UNet' that predicts zeros and remembers the loss target implied by MSE(0, target)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, timesteps, context=None):
        self.seen = (x.detach().clone(), timesteps.clone())
        return torch.zeros_like(x[:, :2]) + self.bias


@pytest.fixture
def first_loss(monkeypatch):
    """(the recording network, the list that receives the diffusion loss of batch [0, 1]) with the
    trainer's network and fit loop replaced."""
    import synthbrain_dev.training.trainers as trainers

    recorder = _Recorder()
    monkeypatch.setattr(trainers, "build_network", lambda spec: recorder)
    losses = []
    monkeypatch.setattr(
        trainers,
        "fit",
        lambda model, loss_fn, n, config, log, name: losses.append(
            loss_fn(model, np.array([0, 1]), torch.Generator().manual_seed(3))
        ),
    )
    return recorder, losses


def test_v_prediction_target_follows_salimans_and_ho(first_loss):
    """loss = mean((0 - v)^2) with v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0, eps recovered from x_t."""
    from monai.networks.schedulers import DDPMScheduler

    recorder, losses = first_loss
    schedule = {
        "num_train_timesteps": 1000,
        "schedule": "scaled_linear_beta",
        "beta_start": 0.0015,
        "beta_end": 0.0205,
        "prediction_type": "v_prediction",
    }
    x0 = np.random.default_rng(0).normal(size=(2, 2, 4, 4, 4)).astype(np.float32)
    train_latent_diffusion(
        NetworkSpec("diffusion", "DiffusionModelUNet", {}, None),
        x0,
        np.zeros((2, 1), np.float32),
        schedule,
        ("crossattn",),
        FitConfig(steps=1, batch=2),
    )
    xt, t = recorder.seen
    abar = (
        DDPMScheduler(**{k: v for k, v in schedule.items() if k != "prediction_type"})
        .alphas_cumprod[t]
        .view(-1, 1, 1, 1, 1)
    )
    x0t = torch.from_numpy(x0)
    eps = (xt - abar.sqrt() * x0t) / (1 - abar).sqrt()
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0t
    assert torch.allclose(losses[0], (v**2).mean(), rtol=1e-4)
    # and the epsilon objective's target is the noise
    losses.clear()
    train_latent_diffusion(
        NetworkSpec("diffusion", "DiffusionModelUNet", {}, None),
        x0,
        np.zeros((2, 1), np.float32),
        dict(schedule, prediction_type="epsilon"),
        ("crossattn",),
        FitConfig(steps=1, batch=2),
    )
    xt, t = recorder.seen
    abar = (
        DDPMScheduler(**{k: v for k, v in schedule.items() if k != "prediction_type"})
        .alphas_cumprod[t]
        .view(-1, 1, 1, 1, 1)
    )
    eps = (xt - abar.sqrt() * x0t) / (1 - abar).sqrt()
    assert torch.allclose(losses[0], (eps**2).mean(), rtol=1e-4)


def test_a_non_finite_step_is_skipped_not_applied():
    """A NaN loss (bf16 overflow) must not reach the weights: the update is skipped and counted."""
    data = torch.linspace(-1, 1, 16).view(16, 1)
    calls = []

    def loss_fn(m, idx, gen):
        calls.append(1)
        loss = ((m(data[idx]) - 3.0 * data[idx]) ** 2).mean()
        return loss * float("nan") if len(calls) in (3, 7) else loss

    model = torch.nn.Linear(1, 1)
    report = fit(model, loss_fn, 16, FitConfig(steps=20, batch=4, lr=0.05))
    assert report.skipped_steps == 2, f"two NaN steps were skipped: {report.skipped_steps}"
    assert torch.isfinite(model.weight).all() and torch.isfinite(model.bias).all(), "the weights stay finite"
    assert report.as_json()["skipped_steps"] == 2, "the training record counts them"


def test_decoder_fine_tuning_keeps_the_encoder():
    from synthbrain_dev.training.trainers import finetune_decoder_adversarial
    from SynthBrainLib.models.networks import build_network

    kwargs = dict(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        latent_channels=2,
        channels=[4, 8],
        num_res_blocks=1,
        norm_num_groups=4,
        attention_levels=[False, False],
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )
    torch.manual_seed(0)
    ae = build_network(NetworkSpec("autoencoder", "AutoencoderKL", kwargs, "autoencoder"))
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    images = np.random.default_rng(0).random((4, 1, 32, 32, 32), dtype=np.float32)
    _, report, extra = finetune_decoder_adversarial(ae, images, FitConfig(steps=3, batch=2, lr=1e-3))
    after = ae.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), sorted(changed)[:5]
    assert len(extra["discriminator_loss_curve"]) >= 1, "the discriminator's losses are recorded"
    assert all(p.requires_grad for p in ae.parameters()), "every parameter is trainable again afterwards"


def test_lesion_loss_weights_mark_the_latent_blocks_around_a_lesion():
    """A lesion voxel marks its 4x4x4 block and the neighbouring blocks; far blocks keep weight 1."""
    from synthbrain_dev.training.trainers import lesion_loss_weights

    pv = np.zeros((2, 3, 32, 32, 32), np.float16)
    pv[0, 2, 13, 13, 13] = 1.0  # one lesion voxel in latent block (3, 3, 3) of subject 0
    pv[1, 1, 0, 0, 0] = 0.4  # a partial volume that stays below 0.5: no lesion
    w = lesion_loss_weights(pv, [1, 2], (8, 8, 8))
    share = 27 / (2 * 8**3)
    expected = float(np.clip(share**-0.5, 1, 10))
    assert w.shape == (2, 1, 8, 8, 8), f"shape {w.shape}"
    assert np.isclose(w[0, 0, 3, 3, 3], expected), f"lesion block weight {w[0, 0, 3, 3, 3]} != {expected}"
    assert np.isclose(w[0, 0, 2, 4, 2], expected), "a neighbouring block is weighted too"
    assert w[0, 0, 5, 3, 3] == 1.0, "a block two away keeps weight 1"
    assert (w[1] == 1.0).all(), "a partial volume below 0.5 is not a lesion"


def test_weighted_diffusion_loss_counts_the_weighted_voxels_more(first_loss):
    """With weights, the loss is the weighted mean of the squared error (normalised by the weights' mean)."""
    recorder, losses = first_loss
    schedule = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "prediction_type": "epsilon"}
    x0 = np.random.default_rng(0).normal(size=(2, 2, 4, 4, 4)).astype(np.float32)
    weights = np.ones((2, 1, 4, 4, 4), np.float32)
    weights[0, 0, :2] = 5.0
    args = (NetworkSpec("diffusion", "DiffusionModelUNet", {}, None), x0, np.zeros((2, 1), np.float32), schedule)
    train_latent_diffusion(*args, ("crossattn",), FitConfig(steps=1, batch=2), loss_weights=weights)
    xt, t = recorder.seen
    from monai.networks.schedulers import DDPMScheduler

    abar = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta").alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    eps = (xt - abar.sqrt() * torch.from_numpy(x0)) / (1 - abar).sqrt()
    w = torch.from_numpy(weights)
    expected = (eps**2 * w).mean() / w.mean()
    assert torch.allclose(losses[0], expected, rtol=1e-4), f"loss {losses[0]} != weighted mean {expected}"
    assert not torch.allclose(losses[0], (eps**2).mean(), rtol=1e-3), "the weights change the loss"
    with pytest.raises(ValueError, match="loss_weights"):
        train_latent_diffusion(*args, ("crossattn",), FitConfig(steps=1, batch=2), loss_weights=weights[:1])
