"""The seed's command trains what it names; a key the run's process does not read is refused;
``sampler.plan=auto`` fits once per set of weights and is read back after."""

import json

import pytest
import torch
from conftest import TINY, train_tiny

from ddpm.configs.presets import preset
from ddpm.configs.run_config import build_parts, check_command_line
from ddpm.configs.unread import check_named, named_process, readers, without_unread
from ddpm.errors import UserError
from ddpm.runs.load import load_for_sampling
from ddpm.samplers import auto_plan

PROCESSES = ("ddpm", "flow", "edm")


def test_the_seed_command_trains_a_ddpm_on_the_linear_schedule(make_cfg):
    """``python -m ddpm.run model=small schedule=linear``: the study note's network and betas,
    under the DDPM process, which reads both, though the default recipe trains flow: the
    command line names DDPM's schedule, so it picks process=ddpm and records it."""
    argv = named_process(["model=small", "schedule=linear"])
    assert argv == ["model=small", "schedule=linear", "process=ddpm"]
    cfg = make_cfg(*argv)
    parts = build_parts(without_unread(cfg))
    assert type(parts.process).__name__ == "DDPMProcess" and "schedule" in parts.process.reads
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # Ho et al.'s linear betas
    assert torch.allclose(parts.process.grid.betas.double(), betas, rtol=1e-5, atol=1e-7)
    assert type(parts.model).__name__ == "UNet" and list(cfg.model.channels) == [32, 64, 128]
    assert parts.model.prediction == "eps"
    assert sum(p.numel() for p in parts.model.parameters()) == 757_505


def test_the_default_run_records_only_the_groups_it_reads(make_cfg):
    ddpm = make_cfg("recipe=ddpm")
    assert ddpm.process._target_.endswith("DDPMProcess") and "schedule" in ddpm
    assert without_unread(ddpm) is ddpm  # nothing composed and then dropped
    flow = make_cfg()
    assert flow.process._target_.endswith("FlowProcess")
    assert "schedule" not in without_unread(flow)  # recorded as it runs: no schedule


@pytest.mark.parametrize(
    ("argv", "added"),
    [
        (["schedule=cosine"], ["process=ddpm"]),
        (["-m", "schedule=linear,cosine", "model=small,base"], ["process=ddpm"]),
        (["model.prediction=v", "trainer.loss_weighting=min_snr"], ["process=ddpm"]),
        (["model.interval_input=true"], ["process=meanflow"]),
        (["trainer.loss_weighting=min_snr"], []),  # three processes read it: none picked
        (["schedule=linear", "model.interval_input=true"], []),  # no one process reads both
        (["recipe=flow", "schedule=linear"], []),  # a recipe picks the process: refused later
        (["process=flow", "schedule=linear"], []),
        (["+formulation=ddpm_v", "schedule=linear"], []),
        (["model=small"], []),
    ],
)
def test_a_key_one_process_reads_picks_that_process_unless_one_is_named(argv, added):
    assert named_process(argv) == [*argv, *added]


# (override, which processes read it): a schedule group or key, and DDPM's target
NAMED = [
    ("schedule=cosine", {"ddpm"}),
    ("schedule=sigmoid", {"ddpm"}),
    ("schedule.timesteps=-5", {"ddpm"}),  # refused under flow before its range is checked
    ("schedule.timesteps=50", {"ddpm"}),
    ("model.prediction=x0", {"ddpm"}),
    ("model.prediction=v", {"ddpm"}),
    ("trainer.loss_weighting=min_snr", set(PROCESSES)),
    ("sampler=ddim", set(PROCESSES)),
    ("model=small", set(PROCESSES)),
    ("optimizer=adam", set(PROCESSES)),
]


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize(("override", "read_by"), NAMED)
def test_every_named_group_or_key_is_read_or_refused(make_cfg, process, override, read_by):
    """Refused in one line saying who reads it, or built into the run's parts."""
    argv = [f"process={process}", override]
    if process not in read_by:
        with pytest.raises(UserError) as err:
            check_named(make_cfg(*argv), argv)
        message = str(err.value)
        assert "\n" not in message and message.startswith(override.split("=")[0] + "=")
        assert f"read by process=ddpm only; this run trains process={process}" in message
        return
    if override == "schedule.timesteps=-5":  # read, so its range is checked: refused too
        with pytest.raises(UserError, match="schedule.timesteps"):
            build_parts(make_cfg(*argv))
        return
    check_named(make_cfg(*argv), argv)
    parts = build_parts(without_unread(make_cfg(*argv)))
    key, value = override.split("=")
    if key == "schedule.timesteps":
        assert len(parts.process.grid) == int(value)
    elif key == "schedule":
        built = preset("schedule", value)
        assert torch.equal(parts.process.grid.alpha_bar, built.alpha_bar)
    elif key == "model.prediction":
        assert parts.model.prediction == value
    elif key == "trainer.loss_weighting":
        assert parts.settings.loss_weighting == value
    else:
        target = make_cfg(f"{key}={value}")[key]._target_.rsplit(".", 1)[-1]
        built = {"sampler": parts.sampler, "model": parts.model, "optimizer": parts.optimizer}
        assert type(built[key]).__name__.lower() == target.lower()


def test_the_command_line_is_checked_before_hydra_makes_a_run_dir():
    with pytest.raises(UserError, match=r"^schedule.timesteps='-5': read by process=ddpm only"):
        check_command_line(["process=flow", "schedule.timesteps=-5"])
    check_command_line(named_process(["model=small", "schedule=linear"]))


def test_a_sweep_needs_m_unless_a_preset_makes_the_run_a_sweep():
    with pytest.raises(UserError, match=r"^optimizer.lr='1e-4,2e-3': a sweep: add -m"):
        check_command_line(["optimizer.lr=1e-4,2e-3"])
    check_command_line(["+replicates='3'", "optimizer.lr=1e-4,2e-3"])  # MULTIRUN preset


def test_a_sweep_job_is_checked_on_its_own_overrides(make_cfg):
    flow = make_cfg("process=flow")
    check_named(flow, ["process=flow", "trainer.seed=1"])
    with pytest.raises(UserError, match=r"^schedule='linear': read by process=ddpm only"):
        check_named(flow, ["process=flow", "schedule=linear"])
    assert readers() == {
        "schedule": ("ddpm",),
        "model.prediction": ("ddpm",),
        "trainer.loss_weighting": ("ddpm", "edm", "flow"),
        "model.interval_input": ("meanflow",),
    }


# --- sampler.plan=auto ----------------------------------------------------------------------


def test_plan_auto_fits_once_and_reads_the_cache_bit_for_bit(tmp_path, monkeypatch):
    """A real (tiny) run: the first ``nfe5`` use fits and writes the plan; the second reads it
    (fitting again would raise) and samples bit for bit the same; other weights or another
    call count fit anew, beside it."""
    run = train_tiny(tmp_path / "run", "sampler=nfe5")
    plans = run / "plans"
    first = sorted(plans.glob("auto_ipndm_nfe5_*.json"))
    assert len(first) == 1  # the run's final grid fitted it, to its EMA-less final weights
    about = json.loads(first[0].read_text())
    assert len(about["timesteps"]) == 5 and about["rms_error"]["fitted"] > 0

    def job(*extra: str):
        from omegaconf import OmegaConf

        node = {"run_dir": str(run), "checkpoint": None, "device": "cpu", "ema": True}
        cfg = OmegaConf.merge(node, {"sampler": OmegaConf.to_container(
            _sampler_node(*extra), resolve=True)})  # fmt: skip
        return load_for_sampling(cfg)

    def refuse(*args, **kwargs):
        raise AssertionError("fitted again instead of reading the cache")

    monkeypatch.setattr(auto_plan, "fit", refuse)
    a, b = job(), job()
    assert a.sampler.timesteps == b.sampler.timesteps == sorted(about["timesteps"])[::-1]
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    draws = [j.sampler.sample(j.model, x_T.shape, x_T=x_T)[0] for j in (a, b)]
    assert torch.equal(*draws)

    monkeypatch.undo()
    job("steps=4")  # another call count: a new plan beside the first
    assert len(list(plans.glob("auto_ipndm_nfe4_*.json"))) == 1
    with torch.no_grad():  # other weights: fitted anew
        model = a.model
        next(model.parameters()).add_(0.01)
        again = auto_plan.resolve(a.sampler, model, plans, "cpu", progress=False)
    assert len(list(plans.glob("auto_ipndm_nfe5_*.json"))) == 2
    assert len(again.timesteps) == 5


def _sampler_node(*extra: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ddpm.configs.presets import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = ["sampler=nfe5", *(f"sampler.{e}" for e in extra)]
        cfg = compose(config_name="sample", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg.sampler


def test_an_unresolved_auto_plan_refuses_to_sample():
    sch = preset("schedule", "linear", timesteps=20)
    sampler = preset("sampler", "nfe5", schedule=sch)
    assert sampler.plan_file == "auto"
    with pytest.raises(UserError, match=r"^sampler.plan='auto': the plan is fitted"):
        sampler.sample(torch.nn.Identity(), (1, 1, 2, 2))
    adaptive = preset("sampler", "adaptive", schedule=sch)
    with pytest.raises(UserError, match="adaptive sampler chooses its own steps"):
        auto_plan.plan_solver(adaptive)


@pytest.mark.parametrize("process", PROCESSES)
def test_the_presets_resolve_on_each_process_to_a_plan_of_its_own_grid(process, tmp_path):
    """nfe5, nfe10 and ode10 on a flow or EDM run fit their plans on that process's grid,
    to its exact network (the Gaussian oracle): at their budgets, sampling the mean."""
    from conftest import GaussianOracle, ProcessOracle

    extra = {"schedule": preset("schedule", "cosine")} if process == "ddpm" else {}
    proc = preset("process", process, **extra)
    model = (
        GaussianOracle(proc.grid, 0.3, 0.5) if process == "ddpm" else ProcessOracle(proc, 0.3, 0.5)
    )
    x_T = torch.randn(2000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    for option, calls in (("nfe5", 5), ("nfe10", 10), ("ode10", 10)):
        sampler = auto_plan.resolve(
            preset("sampler", option, schedule=proc.grid), model, tmp_path, "cpu"
        )
        assert sampler.nfe == calls and len(sampler.planned) == calls
        x, _ = sampler.sample(model, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(1))
        mean, std = float(x.mean()), float(x.std())  # 2000 draws: standard error ~0.011
        assert abs(mean - 0.3) < 0.05 and abs(std / 0.5 - 1) < 0.2, (option, mean, std)
    assert len(list(tmp_path.glob("auto_*.json"))) == 3


def test_tiny_overrides_are_a_ddpm_run():
    """The test suite's TINY run names a schedule key: it is a DDPM recipe (recipe=seed)."""
    assert "recipe=seed" in TINY and "schedule.timesteps=20" in TINY
