"""Noise processes: closed forms, conversions, the exact Gaussian oracle through every sampler,
today's DDPM values reproduced, and one-line errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import (
    DATA_ROOT,
    TINY,
    GaussianOracle,
    ProcessOracle,
    fast_only,
    needs_mnist,
    run_module,
    train_tiny,
)

from ddpm.configs.presets import preset
from ddpm.configs.run_config import build_parts, validate
from ddpm.denoise import denoise
from ddpm.diffusion.objective import diffusion_loss
from ddpm.errors import UserError
from ddpm.processes import DDPMProcess, EDMProcess, FlowProcess
from ddpm.runs import checkpoint

RECORDED = json.loads((Path(__file__).parent / "data" / "ddpm_before_processes.json").read_text())
SHARED_CKPT = DATA_ROOT.parent / "checkpoints" / "small-cosine-ema-22ep.pt"
MU, S = 0.3, 0.2

PROCESSES = {
    "ddpm": lambda: DDPMProcess(preset("schedule", "cosine", timesteps=1000)),
    "flow": lambda: preset("process", "flow"),
    "flow_uniform_shift3": lambda: preset("process", "flow", time_sampling="uniform", shift=3.0),
    "edm": lambda: preset("process", "edm", sigma_data=0.5),
}
CONTINUOUS = {k: v for k, v in PROCESSES.items() if k != "ddpm"}


def oracle(process):
    if isinstance(process, DDPMProcess):
        return GaussianOracle(process.grid, MU, S)
    return ProcessOracle(process, MU, S)


# --- closed forms -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_marginals_of_gaussian_data_match_the_closed_form(name):
    """x_t = alpha x0 + sigma eps: for x0 ~ N(mu, s^2), mean alpha mu, var alpha^2 s^2 + sigma^2."""
    process = CONTINUOUS[name]()
    n = 200_000
    for t in (0.05, 0.3, 0.7, 0.95) if "flow" in name else (0.01, 0.5, 2.0, 40.0):
        times = torch.full((n,), t, dtype=torch.float64)
        x0 = MU + S * torch.randn(n, 1, dtype=torch.float64)
        x = process.noised(x0, times, torch.randn_like(x0))
        a, sg = float(process.alpha(times[:1])), float(process.sigma(times[:1]))
        std = math.sqrt(a**2 * S**2 + sg**2)
        assert float(x.mean()) == pytest.approx(a * MU, abs=4 * std / math.sqrt(n))
        assert float(x.std()) == pytest.approx(std, rel=0.01)


def test_flow_noised_images_lie_on_the_straight_line_from_data_to_noise():
    process = preset("process", "flow")
    x0, eps = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    x = process.noised(x0, t, eps)
    torch.testing.assert_close(x, torch.lerp(x0, eps, t.reshape(-1, 1, 1, 1)))
    # the velocity target is the line's direction: x_t + (1 - t) v = eps, x_t - t v = x0
    v = process.target(x0, eps, x, t)
    torch.testing.assert_close(x - t.reshape(-1, 1, 1, 1) * v, x0)


@pytest.mark.parametrize("sigma_ratio", [0.1, 1.0, 10.0])
def test_edm_preconditioned_input_and_target_have_unit_variance(sigma_ratio):
    """Karras et al. 2022, appendix B.6: at every sigma (sigma = sigma_data included), for
    zero-mean data of std sigma_data, c_in x and the target (x0 - c_skip x)/c_out have unit
    variance."""
    sd = 0.5
    process = preset("process", "edm", sigma_data=sd)
    n = 400_000
    t = torch.full((n,), sigma_ratio * sd, dtype=torch.float64)
    x0 = sd * torch.randn(n, 1, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x = process.noised(x0, t, eps)
    c_in = process.coefficients(t)[0].reshape(-1, 1)
    assert float((c_in * x).var()) == pytest.approx(1.0, rel=0.01)
    assert float(process.target(x0, eps, x, t).var()) == pytest.approx(1.0, rel=0.01)


def test_training_draws_follow_each_process_distribution():
    n = 200_000
    uniform = preset("process", "flow", time_sampling="uniform").draw(n, torch.device("cpu"))
    assert float(uniform.mean()) == pytest.approx(0.5, abs=0.005)
    assert float(uniform.var()) == pytest.approx(1 / 12, rel=0.02)
    logit = preset("process", "flow", logit_mean=0.5, logit_std=0.8).draw(n, torch.device("cpu"))
    z = torch.logit(logit.double())
    assert float(z.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(z.std()) == pytest.approx(0.8, rel=0.01)
    shifted = preset("process", "flow", time_sampling="uniform", shift=3.0).draw(
        n, torch.device("cpu")
    )
    # t' = 3u / (1 + 2u): the median moves from 0.5 to 0.75
    assert float(shifted.median()) == pytest.approx(0.75, abs=0.005)
    sigma = preset("process", "edm", sigma_data=0.5).draw(n, torch.device("cpu"))
    assert float(sigma.log().mean()) == pytest.approx(-1.2, abs=0.01)
    assert float(sigma.log().std()) == pytest.approx(1.2, rel=0.01)


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_the_grid_is_the_process_seen_as_variance_preserving(name):
    process = CONTINUOUS[name]()
    a, sg = process.alpha(process.times), process.sigma(process.times)
    grid = process.grid
    torch.testing.assert_close(grid._alpha_bar64, a**2 / (a**2 + sg**2))
    # the same half log-SNR: lambda = log(alpha / sigma)
    torch.testing.assert_close(grid.half_log_snr.double(), (a / sg).log(), rtol=1e-6, atol=1e-6)
    assert bool((grid.half_log_snr[1:] < grid.half_log_snr[:-1]).all())  # noisier down the rows
    assert grid.precond is process


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_the_x0_estimate_of_the_true_target_is_the_data(name):
    """Round trip: a network that outputs the exact target F* = (x0 - c_skip x)/c_out gives
    back x0 from the sampler's VP-scaled state, at grid rows and between them."""
    process = CONTINUOUS[name]()
    x0, eps = (
        torch.randn(6, 1, 3, 3, dtype=torch.float64),
        torch.randn(6, 1, 3, 3, dtype=torch.float64),
    )
    rows = torch.tensor([0, 10, 200, 500, 800, 999])
    t = process.times[rows]
    x = process.noised(x0, t, eps)
    scale = (process.alpha(t) ** 2 + process.sigma(t) ** 2).sqrt().reshape(-1, 1, 1, 1)
    target = process.target(x0, eps, x, t)

    def net(x_in, c_noise):
        c_in, _, _, c = process.coefficients(t)
        torch.testing.assert_close(x_in, c_in.reshape(-1, 1, 1, 1) * x)  # the net sees c_in x
        torch.testing.assert_close(c_noise, c.float())
        return target

    torch.testing.assert_close(process.x0(net, x / scale, rows), x0)
    sigma = process.sigma(t) / process.alpha(t)
    torch.testing.assert_close(process.x0_at_sigma(net, x / scale, sigma), x0)


def test_the_ddpm_process_is_todays_loss_bit_for_bit():

    sch = preset("schedule", "linear", timesteps=50)
    for prediction, weighting in (("eps", "none"), ("v", "min_snr"), ("x0", "none")):
        torch.manual_seed(0)
        model = preset("model", "base", channels=[8, 16], prediction=prediction)
        x0 = torch.rand(6, 1, 28, 28) * 2 - 1
        torch.manual_seed(3)
        ours = DDPMProcess(sch).loss(model, x0, weighting)
        torch.manual_seed(3)
        today = diffusion_loss(model, sch, x0, weighting)
        assert torch.equal(ours, today)


@pytest.mark.parametrize("case", sorted(RECORDED["tiny"]))
def test_process_ddpm_reproduces_the_values_recorded_before_processes(make_cfg, case):
    """Losses of three training steps and four samplers' images, recorded from the code before
    processes existed (tests/data). Bit-identical on the machine that recorded them; the
    tolerance only allows another CPU's kernels their last bits."""
    from ddpm.training.state import TrainState
    from ddpm.training.step import make_train_step

    sched, pred, weighting = case.split("-")
    cfg = make_cfg(
        "recipe=seed", "model=small", "model.channels=[8,16]", f"schedule={sched}",
        f"model.prediction={pred}", f"trainer.loss_weighting={weighting}", "logger=none",
        "device=cpu",
    )  # fmt: skip
    parts = build_parts(cfg)
    state = TrainState.create(parts.model, parts.optimizer, None)
    step = make_train_step(state, parts.process, parts.settings, torch.device("cpu"))
    x0 = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = [float(step(x0, None)[0]) for _ in range(3)]
    assert losses == pytest.approx(RECORDED["tiny"][case]["losses"], rel=1e-4)
    parts.model.eval()
    samplers = {
        "ddim5": preset("sampler", "ddim", schedule=parts.schedule, steps=5),
        "sde10": preset("sampler", "dpm_solver_pp_sde", schedule=parts.schedule, steps=10),
        "heun6": preset("sampler", "heun", schedule=parts.schedule, steps=6),
        "anc8": preset("sampler", "ddpm", schedule=parts.schedule, steps=8),
    }
    for name, sampler in samplers.items():
        x, _ = sampler.sample(
            parts.model, (2, 1, 28, 28), generator=torch.Generator().manual_seed(3)
        )
        got = [float(x.double().sum()), float(x.double().abs().sum()), float(x[0, 0, 10, 10])]
        assert got == pytest.approx(RECORDED["tiny"][case]["samples"][name], rel=1e-3, abs=1e-3)


@pytest.mark.skipif(not SHARED_CKPT.is_file(), reason=f"no {SHARED_CKPT}")
def test_a_checkpoint_written_before_processes_samples_unchanged():
    from ddpm.runs.load import load_trained

    cfg, model, schedule = load_trained(None, SHARED_CKPT)
    assert "process" not in cfg and schedule.precond is None  # read as the DDPM process
    for name, sampler in (
        ("sde10", preset("sampler", "dpm_solver_pp_sde", schedule=schedule, steps=10)),
        ("ddim5", preset("sampler", "ddim", schedule=schedule, steps=5)),
    ):
        x, _ = sampler.sample(model, (4, 1, 28, 28), generator=torch.Generator().manual_seed(7))
        got = [float(x.double().sum()), float(x.double().abs().sum()), float(x[1, 0, 14, 14])]
        assert got == pytest.approx(RECORDED["shared_checkpoint"][name], rel=1e-3, abs=1e-3)


# --- every sampler on every process: the exact Gaussian oracle --------------------------------

SAMPLERS = {
    "ancestral_1000": lambda g: preset("sampler", "ddpm", schedule=g),
    "ancestral_50": lambda g: preset("sampler", "ddpm", schedule=g, steps=50),
    "ddim_50": lambda g: preset("sampler", "ddim", schedule=g),
    "ddim_eta1_50": lambda g: preset("sampler", "ddim", schedule=g, eta=1.0),
    "euler_50": lambda g: preset("sampler", "euler", schedule=g),
    "midpoint_20": lambda g: preset("sampler", "midpoint", schedule=g),
    "dpm_2m_20": lambda g: preset("sampler", "dpm_solver_pp", schedule=g, spacing="logsnr"),
    "dpm_3m_20": lambda g: preset("sampler", "dpm_solver_pp_3m", schedule=g),
    "dpm_sde_50": lambda g: preset("sampler", "dpm_solver_pp_sde", schedule=g),
    "heun_20": lambda g: preset("sampler", "heun", schedule=g),
    "adaptive": lambda g: preset("sampler", "adaptive", schedule=g),
    "ipndm_5": lambda g: preset("sampler", "ipndm", schedule=g, steps=5),
    "ipndm_10": lambda g: preset("sampler", "ipndm", schedule=g),
    "unipc_10": lambda g: preset("sampler", "unipc", schedule=g),
}
# Bounds on the relative error of the std (the mean is within 0.006 everywhere). Worst case
# measured over the four processes, plus 3%: ancestral-1000 -1.6%, ancestral-50 -20% (flow with
# shift 3, which puts the grid's levels toward noise), DDIM/Euler-50 -12% (the same), DDIM eta 1
# -25%, midpoint +14%, 2M +2.3%, 3M +1.8%, SDE +1.7%, Heun (churn 2) +32%, dopri5 +1.4%.
# Heun and midpoint over-disperse at 10 steps on this data; the 2nd-order multistep solvers
# and the adaptive solver hold within 2.5%. iPNDM (4th order, log-SNR plan): -9.3% at 5 calls
# (flow with shift 3), +6.3% at 10 (flow); UniPC (order 2, bh2) at 10: +5.2% (EDM, flow).
STD_BOUND = {
    "ancestral_1000": 0.05, "ancestral_50": 0.23, "ddim_50": 0.15, "ddim_eta1_50": 0.30,
    "euler_50": 0.15, "midpoint_20": 0.17, "dpm_2m_20": 0.055, "dpm_3m_20": 0.05,
    "dpm_sde_50": 0.05, "heun_20": 0.35, "adaptive": 0.045, "ipndm_5": 0.125, "ipndm_10": 0.095,
    "unipc_10": 0.085,
}  # fmt: skip


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("sampler", fast_only(sorted(SAMPLERS), lambda s: s != "ancestral_1000"))
@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_every_sampler_recovers_the_gaussian_on_every_process(process, sampler):
    proc = PROCESSES[process]()
    smp = SAMPLERS[sampler](proc.grid)
    x, _ = smp.sample(oracle(proc), (20_000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    assert float(x.mean()) == pytest.approx(MU, abs=0.006)
    assert abs(float(x.std()) / S - 1) < STD_BOUND[sampler]


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_the_adaptive_solver_reports_the_network_calls_it_made(process):
    proc = PROCESSES[process]()
    net = oracle(proc)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    sampler = preset("sampler", "adaptive", schedule=proc.grid, rtol=1e-4, atol=1e-4)
    assert sampler.nfe is None  # nothing solved yet
    sampler.sample(net, (64, 1, 1, 1))
    assert sampler.nfe == len(calls) > 10
    loose = preset("sampler", "adaptive", schedule=proc.grid, rtol=1e-2, atol=1e-2)
    loose.sample(net, (64, 1, 1, 1))
    assert loose.nfe < sampler.nfe  # looser tolerances, fewer calls


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_denoising_maps_the_noise_std_to_the_process_level(process):
    """y = x0 + 0.3 n: every process finds the grid level with sigma/alpha nearest 0.3 and its
    oracle's DDIM path from there removes most of the noise (the posterior-mean limit)."""
    proc = PROCESSES[process]()
    x0 = MU + S * torch.randn(4000, 1, 1, 1)
    noisy = x0 + 0.3 * torch.randn_like(x0)
    out, t = denoise(
        oracle(proc), preset("sampler", "ddim", schedule=proc.grid, steps=20), noisy, 0.3
    )
    grid = proc.grid
    assert float(grid.sqrt_one_minus_alpha_bar[t] / grid.sqrt_alpha_bar[t]) == pytest.approx(
        0.3, rel=0.02
    )
    mse_noisy, mse_out = float((noisy - x0).pow(2).mean()), float((out - x0).pow(2).mean())
    assert mse_out < 0.5 * mse_noisy


# --- the config group, training and the commands ---------------------------------------------

BAD = [
    (["process.sigma_data=-1", "process=edm"], "process.sigma_data=-1: a number > 0"),
    (["process=flow", "process.logit_std=0"], "process.logit_std=0: a number > 0"),
    (["process=flow", "process.time_sampling=beta"], "process.time_sampling='beta': one of"),
    (["process=flow", "process.shift=0"], "process.shift=0: a number > 0"),
    (["process=edm", "process.sigma_max=0.001"], "process.sigma_max=0.001: a number >"),
    (["process=edm", "process.levels=1"], "process.levels=1: an integer >= 2"),
    (["process=flow", "model.prediction=v"], "model.prediction='v': eps (the default)"),
    (["process=edm", "+process.rho=7"], "process.rho=7: unknown key"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_process_values_are_one_line_errors(make_cfg, overrides, message):
    with pytest.raises(UserError) as err:
        validate(make_cfg(*overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.slow
def test_an_unknown_process_is_one_error_line_and_writes_nothing(tmp_path):
    result = run_module("ddpm.run", "process=nope", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: process='nope': unknown process;")
    assert "ddpm, edm, flow" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_group_default_is_ddpm_the_default_recipe_flow_and_every_option_builds(make_cfg):
    assert isinstance(build_parts(make_cfg("recipe=seed")).process, DDPMProcess)
    assert isinstance(build_parts(make_cfg()).process, FlowProcess)  # recipe=cpu
    assert isinstance(build_parts(make_cfg("recipe=ddpm")).process, DDPMProcess)
    for name, cls in (("ddpm", DDPMProcess), ("flow", FlowProcess), ("edm", EDMProcess)):
        parts = build_parts(make_cfg(f"process={name}"))
        assert isinstance(parts.process, cls) and parts.sampler.schedule is parts.process.grid


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("process", ["flow", "edm"])
def test_a_run_records_its_process_and_the_commands_need_no_override(tmp_path, process):
    run_dir = train_tiny(tmp_path / "run", f"process={process}", "process.levels=20")
    saved = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert saved["config"]["process"]["_target_"].endswith(f"{process.capitalize()}Process") or (
        process == "edm" and saved["config"]["process"]["_target_"].endswith("EDMProcess")
    )
    result = run_module(
        "ddpm.sample", f"run_dir={run_dir}", "num_samples=4", "sampler=euler",
        "sampler.steps=3", "device=cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(next((run_dir / "samples").rglob("sample.json")).read_text())
    assert out["nfe"] == 3


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("process", ["flow", "edm"])
def test_conditional_guided_ema_runs_resume_exactly_on_every_process(make_cfg, tmp_path, process):
    from ddpm.run import run
    from ddpm.runs.load import load_trained
    from ddpm.samplers.generate import generate

    base = [*TINY, f"process={process}", "process.levels=20", "model.num_classes=10"]
    base.append("trainer.ema_decay=0.5")
    run(make_cfg(*base), tmp_path / "whole")
    run(make_cfg(*base, "trainer.max_steps=2"), tmp_path / "halves")
    run(make_cfg(*base), tmp_path / "halves")
    a = checkpoint.load(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "halves" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    _, model, schedule = load_trained(tmp_path / "whole")
    sampler = preset(
        "sampler",
        "dpm_solver_pp",
        schedule=schedule,
        steps=4,
        guidance_scale=3.0,
        spacing="linspace",
    )
    images, _ = generate(model, sampler, 4, 0, torch.device("cpu"), labels=torch.arange(4))
    assert images.shape == (4, 1, 28, 28) and bool(images.isfinite().all())


def test_min_snr_weights_a_continuous_process_in_x0_units():
    """min(SNR, 5) on the x0 error: F's error is c_out times smaller, so the weight on F is
    min(SNR, 5) c_out^2 (for flow: min(((1-t)/t)^2, 5) t^2)."""
    process = preset("process", "flow")
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    c_out = process.coefficients(t)[2]
    got = process.weight(t, c_out, "min_snr")
    snr = ((1 - t) / t) ** 2
    torch.testing.assert_close(got, snr.clamp(max=5) * t**2)
    assert torch.equal(process.weight(t, c_out, "none"), torch.ones_like(t))


def test_sigmoid_and_linear_ddpm_processes_use_their_schedule():
    for option in ("linear", "sigmoid"):
        sch = preset("schedule", option, timesteps=1000)
        assert DDPMProcess(sch).grid is sch


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_rank_parts_of_a_continuous_loss_add_up_to_the_whole_batch(name):
    """Data parallelism: every rank draws times, noise and label dropout for the whole batch and
    returns its part's sum over the whole batch's size, so the parts add up to the whole."""

    process = CONTINUOUS[name]()
    torch.manual_seed(0)
    model = preset("model", "base", channels=[8, 16], num_classes=10)
    x0, labels = torch.rand(6, 1, 28, 28) * 2 - 1, torch.arange(6)
    for weighting in ("none", "min_snr"):
        torch.manual_seed(5)
        whole = process.loss(model, x0, weighting, labels, 0.5)
        parts = []
        for part in (slice(0, 2), slice(2, 6)):
            torch.manual_seed(5)
            parts.append(process.loss(model, x0, weighting, labels, 0.5, part))
        torch.testing.assert_close(parts[0] + parts[1], whole)


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_a_bf16_step_of_a_continuous_process_stays_near_fp32(name):

    process = CONTINUOUS[name]()
    torch.manual_seed(0)
    model = preset("model", "base", channels=[8, 16])
    x0 = torch.rand(8, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    fp32 = process.loss(model, x0)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = process.loss(model, x0)
    assert bf16.dtype == torch.float32 and float(bf16) == pytest.approx(float(fp32), rel=0.05)


FORMULATIONS = {
    "ddpm_eps": (DDPMProcess, "eps"),
    "ddpm_v": (DDPMProcess, "v"),
    "flow_uniform": (FlowProcess, "eps"),
    "flow_logit_normal": (FlowProcess, "eps"),
    "edm": (EDMProcess, "eps"),
}


def test_every_formulation_preset_builds_its_process_on_the_same_network(make_cfg):
    from conftest import CONF

    assert {p.stem for p in (CONF / "formulation").glob("*.yaml")} == set(FORMULATIONS)
    for name, (cls, prediction) in FORMULATIONS.items():
        cfg = make_cfg(f"+formulation={name}")
        parts = build_parts(cfg)
        assert isinstance(parts.process, cls) and parts.model.prediction == prediction
        assert cfg.model._target_.endswith("ResUNet") and cfg.model.channels == [16, 32, 64]
    uniform = build_parts(make_cfg("+formulation=flow_uniform")).process
    assert uniform.time_sampling == "uniform"


def test_a_plan_started_partway_counts_its_own_network_calls():
    proc = preset("process", "flow")
    net = oracle(proc)
    sampler = preset("sampler", "adaptive", schedule=proc.grid)
    sampler.sample(net, (16, 1, 1, 1))
    plan = sampler.starting_at(300)
    assert plan.nfe is None and sampler.nfe is not None  # not the whole sampler's count
    x = MU + S * torch.randn(16, 1, 1, 1)
    from ddpm.denoise import denoise_from

    denoise_from(net, plan, x, 300)
    assert plan.nfe < sampler.nfe  # a shorter solve from t=300 down
