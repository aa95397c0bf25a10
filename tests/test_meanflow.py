"""process=meanflow and sampler=one_step: the MeanFlow identity on a closed-form flow, the JVP
against finite differences, exact one-step sampling, the network's second time input, resume,
one-line refusals and a real training run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, MeanFlowOracle, train_tiny
from torch import Tensor, nn

from ddpm.configs.presets import preset
from ddpm.configs.run_config import build_parts, validate
from ddpm.configs.unread import check_named
from ddpm.errors import UserError
from ddpm.processes import MeanFlowProcess
from ddpm.runs import checkpoint
from ddpm.runs.tracking import read_metrics
from ddpm.samplers import OneStepSampler

S = 0.5  # the Gaussian data's std: x0 ~ N(0, S^2 I)


def a(t: Tensor, s: float = S) -> Tensor:
    """The std of z_t = (1 - t) x0 + t eps, x0 ~ N(0, s^2); the flow map: z_r = a(r)/a(t) z_t."""
    return ((1 - t) ** 2 * s**2 + t**2).sqrt()


def oracle(process: MeanFlowProcess, **wrong: float) -> MeanFlowOracle:
    """The exact u of this file's data (or a wrong one: ``scale``, ``ignore_r``)."""
    return MeanFlowOracle(process, S, **wrong)


def times(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(t, r) pairs from the whole interval to nearly none, the ends included."""
    t = torch.tensor([1.0, 0.9, 0.5, 0.3, 0.8, 0.05], dtype=dtype)
    r = torch.tensor([0.0, 0.2, 0.49, 0.1, 0.0, 0.0], dtype=dtype)
    return t, r


# --- (a) the MeanFlow identity on a closed-form flow --------------------------------------------


def test_the_training_target_of_the_exact_average_velocity_is_itself():
    """u_tgt = v - (t - r) du/dt with the marginal velocity v (the target is affine in v, so
    this is its mean given z_t over the data) equals u exactly: the exact u is what training
    converges to. A wrong u (scaled, or blind to r) misses its own target by far."""
    process = preset("process", "meanflow")
    t, r = times()
    z = torch.randn(6, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = oracle(process)
    v = exact(z, process.net_levels(t, t))  # the marginal velocity: u at r = t
    u = exact(z, process.net_levels(t, r))
    goal = process.mean_flow_target(exact, z, r, t, v)
    assert float((u - goal).pow(2).mean()) < 1e-20
    for wrong in (oracle(process, scale=1.1), oracle(process, ignore_r=True)):
        u_wrong = wrong(z, process.net_levels(t, r))
        miss = (u_wrong - process.mean_flow_target(wrong, z, r, t, v)).pow(2).mean()
        assert float(miss) > 1e-3 * float(u.pow(2).mean())


def test_the_exact_map_is_one_average_velocity_call_from_any_time():
    """The closed form itself: z_r = z_t - (t - r) u(z_t, r, t) is the linear map a(r)/a(t)."""
    process = preset("process", "meanflow")
    t, r = times()
    z = torch.randn(6, 1, 2, 2, dtype=torch.float64)
    u = oracle(process)(z, process.net_levels(t, r))
    mapped = z - (t - r).reshape(-1, 1, 1, 1) * u
    torch.testing.assert_close(mapped, (a(r) / a(t)).reshape(-1, 1, 1, 1) * z)


# --- (b) the JVP ----------------------------------------------------------------------------


def unzeroed(net: nn.Module) -> nn.Module:
    """Random weights where the net starts at zero (the residual U-Net's last convs), so every
    path moves the output."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.any():
                m.weight.normal_(0, 0.1, generator=gen)
    return net


def random_res_unet() -> nn.Module:
    """A small residual U-Net with attention (at 4x4) and the interval input, all random."""
    return unzeroed(
        preset(
            "model",
            "res_tiny",
            channels=[8, 16],
            num_res_blocks=1,
            attention_levels=None,
            attention_resolutions=[4],
            attention_heads=2,
            dropout=0.0,
            time_dim=None,
            norm_groups=4,
            image_size=8,
            interval_input=True,
        )  # fmt: skip
    )


def test_the_total_derivative_matches_central_differences_along_the_path():
    """du/dt with tangent (v, 0, 1) against (u(z + h v, r, t + h) - u(z - h v, r, t - h)) / 2h
    on a random network with attention (fp32: h = 1e-2, a 1% tolerance). With v = 0 it is the
    time part alone, d_t u: that against differences in t, and far from those of a wrong
    tangent, r moving with t (the interval held) or t held."""
    process = preset("process", "meanflow")
    net = random_res_unet()
    gen = torch.Generator().manual_seed(2)
    z, v = torch.randn(4, 1, 8, 8, generator=gen), torch.randn(4, 1, 8, 8, generator=gen)
    t, r = torch.tensor([0.9, 0.6, 0.35, 0.2]), torch.tensor([0.1, 0.3, 0.3, 0.0])

    def u(z_: Tensor, r_: Tensor, t_: Tensor) -> Tensor:
        with torch.no_grad():
            return net(z_, process.net_levels(t_, r_)).double()

    def close(a_: Tensor, b_: Tensor) -> float:
        return float((a_ - b_).norm() / b_.norm())

    h = 1e-2
    jvp = process.total_derivative(net, z, r, t, v, None, rows=4).double()
    assert close(jvp, (u(z + h * v, r, t + h) - u(z - h * v, r, t - h)) / (2 * h)) < 1e-2
    d_t = process.total_derivative(net, z, r, t, torch.zeros_like(v), None, rows=4).double()
    fd_t = (u(z, r, t + h) - u(z, r, t - h)) / (2 * h)
    assert close(d_t, fd_t) < 1e-2
    interval_held = (u(z, r + h, t + h) - u(z, r - h, t - h)) / (2 * h)
    assert close(interval_held, fd_t) > 0.1 and close(torch.zeros_like(fd_t), fd_t) == 1.0
    # only the first `rows` images get one: the rest have r = t, where (t - r) zeroes it
    part = process.total_derivative(net, z, r, t, v, None, rows=2)
    torch.testing.assert_close(part[:2], jvp[:2].float(), rtol=1e-4, atol=1e-4)  # batch of 2
    assert not part[2:].any()


# --- (c) sampling -----------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_one_step_sampling_of_the_exact_u_is_the_exact_map(steps):
    """From z_1 = eps, each call jumps exactly, so 1, 2 or 4 calls all give z_0 = a(0)/a(1) z_1
    = S z_1, with ``steps`` network calls."""
    process = preset("process", "meanflow")
    sampler = preset("sampler", "one_step", schedule=process.grid, steps=steps, clip_x0=False)
    net = oracle(process)
    x_T = torch.randn(500, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x, _ = sampler.sample(net, x_T.shape, x_T=x_T)
    torch.testing.assert_close(x, S * x_T, rtol=1e-5, atol=1e-6)
    assert len(net.calls) == sampler.nfe == steps
    assert abs(float(x.std()) / S - 1) < 0.05  # the data's std, which no ODE step recovers


def test_multi_call_samplers_read_the_velocity_at_r_equal_t():
    """The grid's x0 estimate is flow's with r = t: the posterior mean (1 - t) S^2 / a(t)^2 z of
    the Gaussian, exactly; Euler on it recovers the data's std as on process=flow."""
    process = preset("process", "meanflow")
    rows = torch.tensor([0, 200, 500, 999])
    t = process.times[rows].float()
    z = torch.randn(4, 1, 2, 2)
    scale = (process.alpha(t) ** 2 + process.sigma(t) ** 2).sqrt().reshape(-1, 1, 1, 1)
    x0 = process.x0(oracle(process), z / scale, rows)
    posterior = ((1 - t) * S**2 / a(t) ** 2).reshape(-1, 1, 1, 1) * z
    torch.testing.assert_close(x0, posterior, rtol=1e-4, atol=1e-5)
    euler = preset("sampler", "euler", schedule=process.grid)
    x, _ = euler.sample(
        oracle(process), (20_000, 1, 1, 1), generator=torch.Generator().manual_seed(0)
    )
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) / S - 1) < 0.15


# --- (e) refusals -------------------------------------------------------------------------


def test_one_step_on_a_run_without_average_velocities_is_one_line(make_cfg):
    for schedule in (preset("schedule", "cosine"), preset("process", "flow").grid):
        with pytest.raises(UserError) as err:
            preset("sampler", "one_step", schedule=schedule)
        message = str(err.value)
        assert message.startswith("sampler='one_step': needs a process that learns average")
        assert "\n" not in message
    with pytest.raises(UserError, match=r"^sampler='one_step': .*this run trains process=flow"):
        validate(make_cfg("sampler=one_step"))  # a training run's config: refused before it runs
    sampler = preset("sampler", "one_step", schedule=preset("process", "meanflow").grid)
    assert isinstance(sampler, OneStepSampler)
    with pytest.raises(UserError, match="^sampler='one_step': jumps from pure noise"):
        sampler.starting_at(500)  # ddpm.denoise starts partway


BAD = [
    (["process.ratio_r_neq_t=1.5"], "process.ratio_r_neq_t=1.5: a number in [0, 1]"),
    (["process.adaptive_p=-1"], "process.adaptive_p=-1: a number >= 0"),
    (["process.adaptive_c=0"], "process.adaptive_c=0: a number > 0"),
    (["process.time_sampling=beta"], "process.time_sampling='beta': one of uniform"),
    (["process.logit_std=0"], "process.logit_std=0: a number > 0"),
    (["model.interval_input=false"], "model.interval_input=False: true: process=meanflow's"),
    (["model.prediction=v"], "model.prediction='v': eps (the default)"),
    (["sampler=one_step", "sampler.steps=0"], "sampler.steps=0: an integer >= 1"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_meanflow_values_are_one_line_errors(make_cfg, overrides, message):
    with pytest.raises(UserError) as err:
        validate(make_cfg("process=meanflow", *overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_interval_input_and_the_loss_weighting_belong_to_their_processes(make_cfg):
    """model.interval_input is meanflow's (others refuse a net with it), trainer.loss_weighting
    every other process's (meanflow weights its own loss)."""
    argv = ["process=meanflow", "trainer.loss_weighting=min_snr"]
    with pytest.raises(UserError, match=r"^trainer.loss_weighting='min_snr': read by process=ddpm"):
        check_named(make_cfg(*argv), argv)
    for process in ("ddpm", "flow", "edm"):
        argv = [f"process={process}", "model.interval_input=true"]
        with pytest.raises(UserError, match=r"^model.interval_input='true': read by process=meanf"):
            check_named(make_cfg(*argv), argv)
        with pytest.raises(UserError, match=r"^model.interval_input=True: false: only process=m"):
            validate(make_cfg(*argv))  # named in a file instead: the process refuses the net
    process = preset("process", "meanflow")
    model = preset("model", "base", channels=[8, 16], interval_input=True)
    with pytest.raises(UserError, match=r"^trainer.loss_weighting='min_snr': none under"):
        process.loss(model, torch.zeros(2, 1, 28, 28), "min_snr")


# --- the network's second time input -------------------------------------------------------


@pytest.mark.parametrize("name", ["base", "res_tiny"])
def test_the_interval_input_is_one_more_embedding_and_off_by_default(make_cfg, name):
    off = build_parts(make_cfg(f"model={name}", "recipe=seed")).model
    assert off.interval_input is False and not hasattr(off, "interval_mlp")
    parts = build_parts(make_cfg(f"model={name}", "recipe=seed", "process=meanflow"))
    on, dim = unzeroed(parts.model), parts.model.time_dim
    assert on.interval_input is True  # the process's yaml switched it on
    extra = sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters())
    assert extra == 2 * (dim * dim + dim)  # Linear -> SiLU -> Linear on the same features
    x = torch.randn(2, 1, 28, 28)
    level = torch.tensor([300.0, 800.0])
    with torch.no_grad():
        on.interval_mlp[-1].bias.add_(1.0)  # so that the interval's embedding matters
        plain = on(x, level)
        assert torch.equal(plain, on(x, torch.stack([level, torch.zeros(2)], dim=1)))
        assert not torch.allclose(plain, on(x, torch.stack([level, level / 2], dim=1)))
    with pytest.raises(ValueError, match="interval_input=false"):
        off(x, torch.stack([level, level], dim=1))


def test_a_stored_config_without_the_key_rebuilds_its_network_without_the_input():
    """A checkpoint written before model.interval_input existed has no such key."""
    from omegaconf import OmegaConf

    from ddpm.configs.later_keys import completed

    node = OmegaConf.create({"_target_": "ddpm.models.unet.UNet", "channels": [8, 16]})
    assert completed("model", node).interval_input is False
    node.interval_input = True
    assert completed("model", node).interval_input is True


# --- training -------------------------------------------------------------------------------


def test_time_draws_are_sorted_pairs_with_the_configured_share_apart():
    process = preset("process", "meanflow")
    n = 100_000
    t, r = process.draw_pair(n, torch.device("cpu"))
    k = round(0.25 * n)
    assert bool((r[:k] < t[:k]).all()) and torch.equal(r[k:], t[k:])
    # each of the pair is a draw of sigmoid(-0.4 + n): their logits pool to that normal
    pooled = torch.logit(torch.cat([t[:k], r[:k]]).double())
    assert float(pooled.mean()) == pytest.approx(-0.4, abs=0.02)
    assert float(pooled.std()) == pytest.approx(1.0, rel=0.02)
    assert float(torch.logit(t[:k].double()).mean()) > 0  # the later of two: shifted up


def test_rank_parts_of_the_loss_add_up_to_the_whole_batch():
    """Data parallelism: the JVP rows (the first images of the whole batch) split with the
    batch, and the parts' values and gradients add up to the whole's."""
    process = preset("process", "meanflow")
    model = preset("model", "base", channels=[8, 16], num_classes=10, interval_input=True)
    x0, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)

    def loss_and_grad(part: slice) -> tuple[Tensor, Tensor]:
        model.zero_grad()
        torch.manual_seed(5)
        value = process.loss(model, x0, "none", labels, 0.5, part)
        value.backward()
        return value.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    whole = loss_and_grad(slice(None))
    first, second = loss_and_grad(slice(0, 1)), loss_and_grad(slice(1, 8))  # rows: 1 and 1
    torch.testing.assert_close(first[0] + second[0], whole[0])
    torch.testing.assert_close(first[1] + second[1], whole[1], rtol=1e-4, atol=1e-6)


def test_the_loss_value_is_the_plain_error_and_its_gradient_the_weighted_one():
    """The logged value: the mean squared error per pixel against the target, whatever p. The
    gradient: that of sg(w) ||delta||^2, w = 1 / (||delta||^2 + c)^p (the paper's ||.||^2 over
    pixels). One image (r < t, so the JVP runs), so w is one number: the gradients at p = 1
    and 0.5 are the p = 0 one divided by (pixels * mse + c) and its square root."""
    model = preset("model", "base", channels=[8, 16], interval_input=True)
    x0 = torch.rand(1, 1, 28, 28) * 2 - 1
    values, grads = [], []
    for p in (0.0, 1.0, 0.5):
        process = preset("process", "meanflow", adaptive_p=p, ratio_r_neq_t=1.0)
        model.zero_grad()
        torch.manual_seed(3)
        value = process.loss(model, x0)
        value.backward()
        values.append(float(value.detach()))
        grads.append(torch.cat([q.grad.flatten() for q in model.parameters()]))
    assert values[0] == values[1] == values[2]  # the same draws and error: p moves the gradient
    squared = 28 * 28 * values[0] + 1e-3  # ||delta||^2 + c
    for got, root in ((grads[1], 1.0), (grads[2], 0.5)):
        want = grads[0] / squared**root
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_a_bf16_step_stays_near_fp32():
    """Autocast touches the gradient's forward pass only: the JVP runs outside it, in fp32."""
    process = preset("process", "meanflow", ratio_r_neq_t=0.5)
    model = preset("model", "base", channels=[8, 16], interval_input=True)
    x0 = torch.rand(8, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    fp32 = process.loss(model, x0)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = process.loss(model, x0)
    got, want = float(bf16.detach()), float(fp32.detach())
    assert bf16.dtype == torch.float32 and got == pytest.approx(want, rel=0.02)


RUNS = ("whole", "halves")


@pytest.mark.slow
def test_a_meanflow_run_resumes_bit_for_bit(make_cfg, tmp_path):
    from ddpm.run import run

    base = [*TINY, "process=meanflow", "process.levels=20", "trainer.max_steps=4"]
    run(make_cfg(*base), tmp_path / "whole")
    run(make_cfg(*base[:-1], "trainer.max_steps=2"), tmp_path / "halves")
    run(make_cfg(*base), tmp_path / "halves")
    whole, halves = (checkpoint.load(tmp_path / d / "checkpoints" / "last.pt") for d in RUNS)
    assert whole["step"] == halves["step"] == 4
    assert all(torch.equal(whole["model"][k], halves["model"][k]) for k in whole["model"])
    state = whole["optimizer"]["state"]
    assert all(
        torch.equal(v["exp_avg"], halves["optimizer"]["state"][k]["exp_avg"])
        for k, v in state.items()
    )
    losses = [[(m["step"], m["loss"]) for m in read_metrics(tmp_path / d)] for d in RUNS]
    assert losses[0] == losses[1] and len(losses[0]) == 4


@pytest.mark.slow
def test_a_tiny_meanflow_run_learns_and_samples_in_one_call(tmp_path):
    """Through the config (process=meanflow switches the network's interval input on): the
    loss falls, and the saved run samples with sampler=one_step and with a multi-call sampler."""
    from ddpm.runs.load import load_trained

    run_dir = train_tiny(
        tmp_path / "run", "process=meanflow", "process.levels=20", "trainer.max_steps=40",
        "optimizer.lr=2e-3",
    )  # fmt: skip
    losses = [m["loss"] for m in read_metrics(run_dir) if "loss" in m]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5  # measured: 0.40
    _, model, schedule = load_trained(run_dir)
    assert model.interval_input is True and isinstance(schedule.precond, MeanFlowProcess)
    for sampler in (
        preset("sampler", "one_step", schedule=schedule),
        preset("sampler", "euler", schedule=schedule, steps=4),
    ):
        x, _ = sampler.sample(model, (3, 1, 28, 28), generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, 1, 28, 28) and bool(x.isfinite().all())
