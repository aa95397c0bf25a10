"""``python -m ddpm.search``: an Optuna study whose trials are ordinary runs."""

import json

import optuna
import pytest
from conftest import TINY, needs_mnist, run_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from wandb_files import read_runs

from ddpm.compare import compare
from ddpm.configs.run_config import validate
from ddpm.errors import UserError
from ddpm.run import objective
from ddpm.search import Choice, Range, override, parse_space, run_trial
from ddpm.training.state import NonFiniteLoss

# The conftest's tiny run, scored by its final loss (no FID), with an offline W&B run.
SEARCH_TINY = [o for o in TINY if not o.startswith("logger")] + [
    "logger.mode=offline",
    "trainer.eval_every=0",
    "sampler.steps=10",  # the preset's 50 DDIM steps exceed the tiny schedule's 20
]


def test_the_space_flattens_to_keys():
    space = parse_space(
        OmegaConf.create(
            {
                "optimizer": {"lr": {"low": 1e-4, "high": 3e-3, "log": True}},
                "schedule": ["linear", "cosine"],
                "trainer": {
                    "ema_decay": [None, 0.999],
                    "batch_size": {"low": 16, "high": 64, "int": True},
                },
            }
        )
    )
    assert space == {
        "optimizer.lr": Range(1e-4, 3e-3, log=True),
        "schedule": Choice(("linear", "cosine")),
        "trainer.ema_decay": Choice((None, 0.999)),
        "trainer.batch_size": Range(16, 64, int=True),
    }


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer": {"lr": {"low": 1e-3, "high": 1e-4}}}, "search.space.optimizer.lr={'low'"),
        (
            {"optimizer": {"lr": {"low": 0, "high": 1, "log": True}}},
            "search.space.optimizer.lr.low=0",
        ),
        ({"schedule": []}, "search.space.schedule=[]: a non-empty list"),
        ({"trainer": {"seed": 3}}, "search.space.trainer.seed=3: a list of choices or {low, high}"),
        ({}, "search.space is empty"),
    ],
)
def test_a_bad_space_is_one_line(space, message):
    with pytest.raises(UserError) as err:
        parse_space(OmegaConf.create(space))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", [None, True, 0.00123, 64, "cosine", "a b,c"])
def test_an_override_parses_back_to_its_value(value):
    (parsed,) = OverridesParser.create().parse_overrides([override("trainer.x", value)])
    assert parsed.key_or_group == "trainer.x" and parsed.value() == value


def test_the_objective_is_the_fid_when_measured_else_the_loss(make_cfg):
    summary = {"final_loss": 0.5, "fid": 30.0}
    assert objective(make_cfg("trainer.eval_every=0"), summary) == 0.5
    assert objective(make_cfg("trainer.eval_every=100"), summary) == 30.0


def test_the_trial_preset_is_a_valid_run_scored_by_fid(make_cfg):
    cfg = make_cfg("+experiment=search")
    validate(cfg)
    assert cfg.trainer.eval_every == cfg.trainer.max_steps == 2000
    assert list(cfg.model.channels) == [32, 64, 128] and cfg.sampler.steps == 50


@pytest.mark.usefixtures("make_cfg")  # trials compose through Hydra's global instance
def test_a_diverging_trial_fails_and_the_study_goes_on(tmp_path, monkeypatch):
    def diverge(cfg, run_dir):
        raise NonFiniteLoss("loss=nan at step 3")

    monkeypatch.setattr("ddpm.search.run", diverge)
    study = optuna.create_study()
    space = {"optimizer.lr": Range(1e-4, 1e-3)}
    study.optimize(lambda t: run_trial(t, space, SEARCH_TINY, tmp_path, "g"), n_trials=2)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert (tmp_path / "1" / "FAILED").read_text() == "NonFiniteLoss: loss=nan at step 3\n"
    assert "optimizer.lr=" in (tmp_path / "1" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_a_bad_choice_stops_the_study_before_training(tmp_path):
    res = run_module(
        "ddpm.search", "search.space.schedule=[linear,cosin]", f"hydra.run.dir={tmp_path}"
    )
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: schedule='cosin': unknown schedule; allowed: cosine, linear, sigmoid"
    ], res.stderr
    assert not any(p.is_dir() and p.name.isdigit() for p in tmp_path.iterdir())


@needs_mnist
@pytest.mark.slow
def test_a_3_trial_search_reports_its_best_trial(make_cfg, tmp_path):
    res = run_module("ddpm.search", *SEARCH_TINY, "search.n_trials=3", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    best = json.loads((tmp_path / "best.json").read_text())
    trials = best["trials"]
    assert best["objective"] == "final_loss" and [t["state"] for t in trials] == ["COMPLETE"] * 3
    winner = min(trials, key=lambda t: t["value"])
    assert best["best_value"] == winner["value"] == min(t["value"] for t in trials)
    assert best["best_trial"] == winner["number"] and best["best_params"] == winner["params"]
    assert set(winner["params"]) == {
        "optimizer.lr",
        "schedule",
        "model.prediction",
        "trainer.ema_decay",
    }

    runs = []
    for t in trials:
        run_dir = tmp_path / str(t["number"])
        assert t["run_dir"] == str(run_dir)
        assert json.loads((run_dir / "summary.json").read_text())["final_loss"] == t["value"]
        (wb,) = read_runs(run_dir)
        assert wb.exit_code == 0 and wb.name.startswith(f"trial {t['number']}: optimizer.lr=")
        assert {"model:small", f"schedule:{t['params']['schedule']}"} <= set(wb.tags)
        runs.append(wb)
    assert len({r.run_id for r in runs}) == 3 and {r.group for r in runs} == {
        f"search-{tmp_path.name}"
    }

    # The reported overrides train the best trial again with ddpm.run.
    assert best["best_overrides"][0] == "+experiment=search"
    again = make_cfg(*best["best_overrides"])
    assert again.optimizer.lr == best["best_params"]["optimizer.lr"]
    assert again.model.prediction == best["best_params"]["model.prediction"]
    assert (tmp_path / "trials.md").read_text().count("| COMPLETE |") == 3
    assert compare(tmp_path).count("| ok |") == 3
