"""``python -m ddpm.run +replicates=N``: the same config once per seed (conf/replicates/), beside
any other sweep, and ``ddpm.compare`` reads the seeds back as one setting."""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import CONF, TINY, needs_mnist, run_module
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from ddpm.compare import report
from ddpm.comparison.jobs import find_jobs, settings
from ddpm.frontend.cli import numbered_options


def sweep_of(*argv: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``argv``: the composed config's
    ``hydra.sweeper.params`` first, then the command line's overrides (as its sweep() does)."""
    args = numbered_options(list(argv))
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(args)
    fixed = [a for a, o in zip(args, parsed, strict=True) if not o.is_sweep_override()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    parsed = parser.parse_overrides([*params, *args])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


@pytest.mark.parametrize("n", [2, 3, 5])
def test_each_option_sweeps_seeds_0_to_n_minus_1(n):
    assert numbered_options([f"+replicates={n}"]) == [f"+replicates='{n}'"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+replicates='{n}'"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params == {"trainer.seed": ",".join(str(s) for s in range(n))}
    jobs = sweep_of(f"+replicates={n}")
    assert [j[0] for j in jobs] == [f"trainer.seed={s}" for s in range(n)]


def test_replicates_multiply_a_command_line_sweep_and_yield_to_its_seeds():
    jobs = sweep_of("+replicates=3", "optimizer.lr=1e-3,2e-3", "trainer.max_steps=2")
    assert len(jobs) == 6
    assert {(j[0], j[2]) for j in jobs} == {
        (f"trainer.seed={s}", f"optimizer.lr={lr}") for s in range(3) for lr in (0.001, 0.002)
    }
    assert all("trainer.max_steps=2" in j for j in jobs)
    # trainer.seed on the command line replaces the preset's seeds
    assert [j[0] for j in sweep_of("+replicates=3", "trainer.seed=7,8")] == [
        "trainer.seed=7",
        "trainer.seed=8",
    ]
    # beside an experiment preset's own sweep: every formulation x every seed
    both = sweep_of("+experiment=formulations", "+replicates=2")
    assert len(both) == 10 and {j[1] for j in both} == {"trainer.seed=0", "trainer.seed=1"}


def test_an_unknown_count_is_one_line_and_other_numbers_stay_numbers():
    from ddpm.run import cli

    with pytest.raises(SystemExit) as ended:
        cli(["+replicates=4"])
    assert ended.value.code == "error: replicates=4: unknown replicates; allowed: 2, 3, 5"
    args = ["trainer.max_steps=2", "+replicates=2,3", "trainer.seed=3"]
    assert numbered_options(args) == args  # no conf/trainer/2.yaml: a value, left alone


@needs_mnist
@pytest.mark.slow
def test_a_two_seed_sweep_is_one_compared_setting(tmp_path):
    """``+replicates=2`` with no ``-m`` (the preset sets MULTIRUN) trains seeds 0 and 1 of one
    tiny config; compare's row has n=2 and the mean of the two jobs' final losses."""
    tiny = [o for o in TINY if not o.startswith("trainer.max_steps")]
    done = run_module(
        "ddpm.run",
        "+replicates=2",
        *tiny,
        "trainer.max_steps=2",
        "trainer.sample_every=0",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    folders = sorted(d for d in tmp_path.iterdir() if (d / ".hydra").is_dir())
    assert [d.name for d in folders] == ["0", "1"]
    seeds = [OmegaConf.load(d / ".hydra" / "config.yaml").trainer.seed for d in folders]
    assert seeds == [0, 1]
    losses = [json.loads((d / "summary.json").read_text())["final_loss"] for d in folders]
    assert losses[0] != losses[1]  # two seeds, two runs

    result = report(tmp_path)
    head, _, row = (
        [c.strip() for c in line.strip("|").split("|")] for line in result.table.splitlines()
    )
    cells = dict(zip(head, row, strict=True))
    assert cells["n"] == "2" and cells["job"] == "trainer.seed=0,1" and cells["status"] == "ok"
    assert cells["final loss"].startswith(f"{statistics.mean(losses):.4f} ± ")
    (setting,) = settings(find_jobs(tmp_path, ["trainer.seed"]))
    values = setting.values(lambda j: j.summary["final_loss"])
    assert values == {("trainer.seed=0",): losses[0], ("trainer.seed=1",): losses[1]}
