import pytest
import torch

from ddpm.configs.presets import preset
from ddpm.diffusion.objective import diffusion_loss, loss_weight, target, to_eps, to_x0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_the_target_converts_back_to_x0_and_eps(prediction):
    sch = preset("schedule", "linear", timesteps=1000)
    x0, noise = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    t = torch.randint(0, 1000, (8,))
    x_t = sch.q_sample(x0, t, noise)
    out = target(prediction, x0, noise, t, sch)
    x0_hat = to_x0(prediction, out, x_t, t, sch)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(to_eps(x0_hat, x_t, t, sch), noise, rtol=1e-3, atol=2e-3)


def test_min_snr_weights():
    sch = preset("schedule", "linear", timesteps=1000)
    t = torch.tensor([0, 999])
    snr = sch.snr[t]
    assert snr[0] > 5 > snr[1]
    w_eps = loss_weight("eps", "min_snr", t, sch)
    assert w_eps.tolist() == pytest.approx([5 / snr[0].item(), 1.0])
    assert loss_weight("x0", "min_snr", t, sch).tolist() == pytest.approx([5.0, snr[1].item()])
    with pytest.raises(ValueError, match="trainer.loss_weighting='snr'"):
        loss_weight("eps", "snr", t, sch)


def test_a_perfect_eps_model_has_zero_loss():
    sch = preset("schedule", "linear", timesteps=100)

    class Perfect(torch.nn.Module):
        """Knows x0 = 0, so x_t = sqrt(1-ab) eps."""

        prediction = "eps"

        def forward(self, x_t, t):
            return x_t / sch.sqrt_one_minus_alpha_bar[t].reshape(-1, 1, 1, 1)

    loss = diffusion_loss(Perfect(), sch, torch.zeros(64, 1, 2, 2))
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
