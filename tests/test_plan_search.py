"""The plan optimizer (ddpm.samplers.plan_search, python -m ddpm.plan) and plan files."""

import itertools
import json

import pytest
import torch
from conftest import GaussianOracle, ProcessOracle, fast_only, run_module

from ddpm.configs.presets import preset
from ddpm.diffusion.plans import fingerprint, read_plan, write_plan
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import UserError
from ddpm.samplers import plan_search as search

MU, S = 0.3, 0.2


def test_best_path_is_the_exact_minimum_over_every_path():
    gen = torch.Generator().manual_seed(0)
    count, calls = 9, 4
    cost = torch.rand(count, count, generator=gen, dtype=torch.float64).triu(1)
    cost[torch.tril(torch.ones(count, count, dtype=torch.bool))] = float("inf")
    end = torch.rand(count, generator=gen, dtype=torch.float64)

    def total(path):
        return sum(float(cost[a, b]) for a, b in itertools.pairwise(path)) + float(end[path[-1]])

    paths = [(0, *rest) for rest in itertools.combinations(range(1, count), calls - 1)]
    brute = min(paths, key=total)
    found = search.best_path(cost, end, calls)
    assert found[0] == 0 and len(found) == calls and found == sorted(found)
    assert total(found) == pytest.approx(total(brute), abs=1e-12)


def test_jump_costs_vanish_on_a_ddim_consistent_trajectory_and_see_a_bad_state():
    sch = preset("schedule", "cosine", timesteps=100)
    rows = [99, 70, 40, 10, 0]
    x0 = torch.randn(3, 1, 2, 2)
    eps = torch.randn(3, 1, 2, 2)
    states = torch.stack(
        [sch.sqrt_alpha_bar[t] * x0 + sch.sqrt_one_minus_alpha_bar[t] * eps for t in rows]
    )
    ref = search.Reference(rows, states.clone(), x0.expand(len(rows), -1, -1, -1, -1), x0)
    cost, end = search.jump_costs(ref, sch)
    finite = cost[torch.isfinite(cost)]
    assert finite.numel() == len(rows) * (len(rows) - 1) // 2
    assert finite.abs().max() < 1e-9 and end.abs().max() < 1e-12
    ref.states[2] += 0.5  # 12 pixel-values of 0.5 per image: squared error 4 * 0.25 = 1
    cost, _ = search.jump_costs(ref, sch)
    assert cost[0, 2] == pytest.approx(1.0, rel=1e-5) and cost[1, 2] == pytest.approx(1.0, rel=1e-5)
    assert cost[0, 1] < 1e-9 and cost[3, 4] < 1e-9


def _oracle_and_grid(process: str):
    if process == "ddpm":
        sch = preset("schedule", "cosine", timesteps=1000)
        return GaussianOracle(sch, MU, S), sch
    proc = preset("process", process)
    return ProcessOracle(proc, MU, S), proc.grid


@pytest.mark.parametrize("process", fast_only(["ddpm", "flow", "edm"], lambda p: p == "ddpm"))
@pytest.mark.parametrize("name", ["ipndm", "unipc", "dpm_solver_pp"])
@pytest.mark.parametrize("nfe", [3, 5])
def test_the_fitted_plan_beats_every_fixed_spacing_on_the_gaussian_oracle(process, name, nfe):
    """Held-out x_T, every process; measured (2 passes): 0.74x down to 0.00x the error of the
    best fixed plan."""
    model, sch = _oracle_and_grid(process)
    sampler = preset("sampler", name, schedule=sch, steps=nfe, clip_x0=False)
    x_T = torch.randn(400, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    teacher = search.reference_sampler(sch, 100, sampler)
    fit = search.reference(model, teacher, x_T[:200])
    held = search.reference(model, teacher, x_T[200:])
    cost, end = search.jump_costs(fit, sch)
    path, _ = search.refine(model, sampler, fit, search.best_path(cost, end, nfe), passes=2)
    fitted = sampler.on_plan([fit.timesteps[k] for k in path])
    assert fitted.nfe == nfe and fitted.timesteps[0] == len(sch) - 1
    error = search.plan_error(model, fitted, held.states[0], held.images)
    fixed = {
        spacing: search.plan_error(model, sampler.on_plan(rows), held.states[0], held.images)
        for spacing, rows in search.fixed_plans(sampler, nfe).items()
    }
    assert error < 0.9 * min(fixed.values()), (error, fixed)


def test_a_plan_file_sets_the_samplers_timesteps_and_calls(tmp_path):
    sch = preset("schedule", "cosine", timesteps=1000)
    path = tmp_path / "plan.json"
    write_plan(path, sch, [999, 600, 300, 40], sampler="ipndm")
    assert json.loads(path.read_text())["fingerprint"] == fingerprint(sch)
    for name in ["ipndm", "unipc", "dpm_solver_pp", "ddim", "dpm_solver_pp_sde"]:
        sampler = preset("sampler", name, schedule=sch, plan=str(path))
        assert sampler.timesteps == [999, 600, 300, 40] and sampler.nfe == 4
    # denoising starts lower: the plan's rows below the start, then the start itself
    assert preset("sampler", "ipndm", schedule=sch, plan=str(path)).starting_at(500).timesteps == [
        500,
        300,
        40,
    ]


def test_bad_plan_files_are_one_line_errors(tmp_path):
    cosine = preset("schedule", "cosine", timesteps=1000)
    linear = preset("schedule", "linear", timesteps=1000)
    good = tmp_path / "cosine.json"
    write_plan(good, cosine, [999, 500, 0])
    assert read_plan(good, cosine) == [0, 500, 999]
    with pytest.raises(UserError, match=r"fitted on another noise schedule \(levels 1000"):
        read_plan(good, linear)
    with pytest.raises(UserError, match="no such file"):
        read_plan(tmp_path / "missing.json", cosine)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a plan file"):
        read_plan(tmp_path / "bad.json", cosine)
    record = json.loads(good.read_text())
    (tmp_path / "range.json").write_text(json.dumps({**record, "timesteps": [0, 1000]}))
    with pytest.raises(UserError, match=r"increasing integers in 0..999"):
        read_plan(tmp_path / "range.json", cosine)
    short = NoiseSchedule(cosine._alpha_bar64[:999])  # the same levels, one fewer
    write_plan(good, cosine, [500, 0])
    with pytest.raises(UserError, match="fitted on another noise schedule"):
        read_plan(good, short)


@pytest.mark.slow
def test_plan_command_writes_a_plan_the_sampler_reads(tiny_run, tmp_path):
    out = tmp_path / "p.json"
    res = run_module(
        "ddpm.plan",
        f"run_dir={tiny_run}",
        "nfe=4",
        "num=8",
        "num_check=4",
        "reference_steps=20",
        "sampler=unipc",
        f"out={out}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["nfe"] == 4 and len(record["timesteps"]) == 4 and record["timesteps"][-1] == 19
    assert set(record["rms_error"]) == {
        "fitted",
        "linspace",
        "leading",
        "trailing",
        "quadratic",
        "logsnr",
        "karras",
    }
    assert all(v >= 0 for v in record["rms_error"].values())
    assert "fitted" in res.stdout and str(out) in res.stdout
    # the default place is inside the run, and ddpm.sample reads the plan back
    res = run_module(
        "ddpm.plan",
        f"run_dir={tiny_run}",
        "nfe=3",
        "num=4",
        "num_check=2",
        "reference_steps=10",
        "refine=0",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tiny_run / "plans" / "ipndm_nfe3.json").is_file()
    res = run_module(
        "ddpm.sample",
        f"run_dir={tiny_run}",
        "sampler=ipndm",
        f"sampler.plan={out}",
        "num_samples=2",
        f"out_dir={tmp_path / 's'}",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "s" / "sample.json").read_text())["nfe"] == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run_dir=/nonexistent/run"], "error: run_dir='/nonexistent/run': no such directory"),
        (["nfe=0"], "error: nfe=0: an integer in 1..reference_steps=100"),
        (["nfe=5", "reference_steps=40"], "error: reference_steps=40: at most 20"),
        (
            ["sampler=dpm_solver_pp_sde"],
            "error: sampler='dpm_solver_pp_sde': stochastic or adaptive",
        ),
        (
            ["sampler=heun", "sampler.churn=0", "nfe=4", "reference_steps=10"],
            "error: nfe=4: sampler=heun cannot make exactly 4",
        ),
    ],
)
def test_plan_command_bad_input_is_one_line_and_writes_nothing(
    tiny_run, tmp_path, overrides, message
):
    out = tmp_path / "p.json"
    args = [f"run_dir={tiny_run}", f"out={out}", *overrides]
    res = run_module("ddpm.plan", *args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert not out.exists()


def test_a_plan_of_another_schedule_is_refused_by_the_sampler_command(tiny_run, tmp_path):
    path = tmp_path / "cosine.json"
    write_plan(path, preset("schedule", "cosine", timesteps=1000), [999, 0])
    res = run_module(
        "ddpm.sample", f"run_dir={tiny_run}", f"sampler.plan={path}", f"out_dir={tmp_path / 's'}"
    )
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        .splitlines()[0]
        .startswith(f"error: sampler.plan={path}: fitted on another")
    )
    assert not (tmp_path / "s").exists()


def test_outputs_of_a_plan_are_named_for_it(tiny_run, tmp_path):
    """Two plans of one length never share an output folder: the plan file's stem is in it."""
    from omegaconf import OmegaConf

    from ddpm.configs.presets import _preset_config
    from ddpm.runs.load import load_for_sampling, load_trained

    path = tmp_path / "mine.json"
    write_plan(path, load_trained(tiny_run)[2], [19, 12, 5, 1])
    node = OmegaConf.to_container(_preset_config("sampler", "ipndm").sampler)

    def setting(**keys):
        cfg = {"run_dir": str(tiny_run), "checkpoint": None, "device": "cpu"}
        return load_for_sampling(OmegaConf.create({**cfg, "sampler": {**node, **keys}})).setting(
            "ipndm"
        )

    assert setting(plan=str(path)) == "ipndm_4_plan-mine"
    assert setting(steps=4) == "ipndm_4"
