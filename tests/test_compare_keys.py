"""``ddpm.compare`` keeps evaluations apart: one column per (sampler, calls, samples, ...).

A FID of 1000 samples from 50 SDE-solver calls and one of 200 samples from 20 Heun calls are
different numbers; a column that held both (the newest file of one job, the run's own summary
of another) would rank runs by how they were measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ddpm.compare import compare
from ddpm.comparison.jobs import find_jobs


def columns(text: str) -> dict[str, list[str]]:
    """A markdown table as header -> its cells, one per job row."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()]
    head, body = rows[0], rows[2:]
    assert len(set(head)) == len(head), head  # no header twice
    return {h: [r[i] for r in body] for i, h in enumerate(head)}


def make_job(
    root: Path,
    name: str,
    overrides: list[str],
    cfg: Any,
    summary: dict[str, float],
    choices: dict[str, str] | None,
) -> Path:
    """A finished job folder as a sweep leaves it (``choices`` None: no hydra.yaml, as a
    search trial)."""
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    if choices is not None:
        hydra = {"hydra": {"runtime": {"choices": choices}}}
        OmegaConf.save(OmegaConf.create(hydra), folder / ".hydra" / "hydra.yaml")
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 4, "loss": 0.5}) + "\n")
    (folder / "summary.json").write_text(json.dumps({"final_loss": 0.5, "steps": 4, **summary}))
    return folder


def eval_file(
    folder: Path, name: str, fid: float, mtime: float, **record: Any
) -> Path:  # fmt: skip
    """An ``eval/<name>.json`` as ddpm.evaluate writes it (``record``: its other fields)."""
    path = folder / "eval" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    metrics = {"fid": fid, "kid": fid / 1000, "precision": 0.5, "recall": 0.5}
    path.write_text(json.dumps({"metrics": metrics, **record}))
    os.utime(path, (mtime, mtime))
    return path


def record(make_cfg, option: str, nfe: int, samples: int, *overrides: str) -> dict[str, Any]:
    """What ddpm.evaluate records of ``sampler=<option>`` (and ``overrides``)."""
    sampler = make_cfg(f"sampler={option}", *overrides).sampler
    return {
        "checkpoint": "run/checkpoints/last.pt",
        "sampler": option,
        "steps": nfe,
        "nfe": nfe,
        "guidance_scale": None,
        "num_samples": samples,
        "evaluator": {"dataset": "mnist", "features": "classifier"},
        "config": {"sampler": OmegaConf.to_container(sampler, resolve=True), "ema": True},
    }


def test_each_evaluation_has_its_own_columns_and_no_column_mixes_two(tmp_path, make_cfg):
    # Both runs measured FID while training: 200 samples of Heun at 11 steps = 20 calls.
    cfg = make_cfg("sampler=heun", "trainer.eval_samples=200", "trainer.eval_every=4")
    choices = {"sampler": "heun", "model": "small"}
    job0 = make_job(tmp_path, "0", ["model=small"], cfg, {"fid": 40.0}, choices)
    job1 = make_job(tmp_path, "1", ["model=base"], cfg, {"fid": 45.0}, choices)
    sde = record(make_cfg, "dpm_solver_pp_sde", 50, 1000)
    ddim = record(make_cfg, "ddim", 10, 500, "sampler.steps=10")
    # Job 0: two evaluations afterwards, the 10-call one newest (today's pick).
    eval_file(job0, "dpm_solver_pp_sde_50_n1000", 30.0, 1000, **sde)
    eval_file(job0, "ddim_10_n500", 60.0, 2000, **ddim)
    # Job 1: the 50-call one, and a file from before sampler/calls/samples were recorded.
    eval_file(job1, "dpm_solver_pp_sde_50_n1000", 33.0, 1000, **sde)
    eval_file(job1, "old", 70.0, 3000)

    text = compare(tmp_path)
    table = columns(text)
    fids = {h: cells for h, cells in table.items() if h.startswith("FID")}
    assert fids == {
        "FID [training: heun/20 calls/200 samples]": ["40.00", "45.00"],
        "FID [dpm_solver_pp_sde/50 calls/1000 samples]": ["30.00", "33.00"],
        "FID [ddim/10 calls/500 samples]": ["60.00", "-"],
        "FID [unknown sampler/unknown calls/unknown samples]": ["-", "70.00"],
    }
    assert table["KID [ddim/10 calls/500 samples]"] == ["0.0600", "-"]
    assert table["final loss"] == ["0.5000", "0.5000"] and table["status"] == ["ok", "ok"]
    assert (
        "FID [dpm_solver_pp_sde/50 calls/1000 samples]" in (tmp_path / "comparison.md").read_text()
    )


def test_differing_sampler_settings_weights_and_guidance_are_kept_apart(tmp_path, make_cfg):
    cfg = make_cfg("sampler=ddim")  # no quality during training: no training column
    job0 = make_job(tmp_path, "0", ["seed=1"], cfg, {}, {"sampler": "ddim"})
    job1 = make_job(tmp_path, "1", ["seed=2"], cfg, {}, {"sampler": "ddim"})
    eta0 = record(make_cfg, "ddim", 50, 1000)
    eta1 = record(make_cfg, "ddim", 50, 1000, "sampler.eta=1.0")
    eval_file(job0, "ddim_50_n1000", 20.0, 1000, **eta0)
    eval_file(job1, "ddim_50_n1000", 25.0, 1000, **eta1)
    # Job 0 measured again the same way (newer file): that one is shown, in the same column.
    eval_file(job0, "ddim_50_n1000_copy", 21.0, 2000, **eta0)
    # The raw weights, a conditional run's guidance, an older checkpoint: each their own.
    raw = {**eta0, "config": {**eta0["config"], "ema": False}}
    eval_file(job1, "ddim_50_n1000_raw", 26.0, 1000, **raw)
    guided = {**eta0, "guidance_scale": 2.0}
    eval_file(job1, "ddim_50_n1000_w2", 27.0, 1000, **guided)
    early = {**eta0, "checkpoint": "run/checkpoints/step_0000100.pt"}
    eval_file(job1, "ddim_50_n1000_step_0000100", 90.0, 1000, **early)

    fids = {h: c for h, c in columns(compare(tmp_path)).items() if h.startswith("FID")}
    assert fids == {
        "FID [ddim/50 calls/1000 samples/eta=0]": ["21.00", "-"],
        "FID [ddim/50 calls/1000 samples/eta=1]": ["-", "25.00"],
        "FID [ddim/50 calls/1000 samples/raw weights]": ["-", "26.00"],
        "FID [ddim/50 calls/1000 samples/w2]": ["-", "27.00"],
        "FID [ddim/50 calls/1000 samples/@step_0000100]": ["-", "90.00"],
    }


def test_a_training_evaluation_without_a_recorded_sampler_reads_unknown(tmp_path, make_cfg):
    """A search trial keeps config.yaml and overrides.yaml only: its sampler's option name is
    not recorded, so it is not guessed; its calls come from the sampler its config builds; a
    ``sampler=`` override names it."""
    cfg = make_cfg("sampler=ddim", "sampler.steps=7", "trainer.eval_samples=300")
    make_job(tmp_path, "0", ["optimizer.lr=1e-3"], cfg, {"fid": 50.0}, None)
    make_job(tmp_path, "1", ["optimizer.lr=1e-4", "sampler=ddim"], cfg, {"fid": 55.0}, None)
    jobs = find_jobs(tmp_path)
    labels = [[e.label for e in j.evals] for j in jobs]
    assert labels == [
        ["training: unknown sampler/7 calls/300 samples"],
        ["training: ddim/7 calls/300 samples"],
    ]
    assert [list(j.evals.values())[0]["fid"] for j in jobs] == [50.0, 55.0]


def test_real_evaluation_files_land_in_their_own_columns(make_cfg, tmp_path, monkeypatch):
    """ddpm.evaluate's own JSON, twice on one run (a stand-in evaluator, as tests/
    test_evaluate.py builds it), read back by compare next to the run's training FID."""
    from conftest import CONF, TINY
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from ddpm.data import ImageDataset
    from ddpm.evaluate import cache
    from ddpm.evaluate.classifier import MnistClassifier
    from ddpm.evaluate.command import evaluate_run
    from ddpm.runs import checkpoint

    images = torch.rand(64, 1, 28, 28) * 2 - 1
    fake = ImageDataset(images=images, labels=torch.arange(64) % 10, name="mnist")
    monkeypatch.setattr(cache, "mnist", lambda *args, **kwargs: fake)
    evaluator = MnistClassifier(width=8, feature_dim=32).eval()
    monkeypatch.setattr(cache, "train_classifier", lambda *args, **kwargs: evaluator)
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))

    train_cfg = make_cfg(*TINY, "sampler=ddim", "sampler.steps=3", "trainer.eval_samples=8")
    run_dir = make_job(
        tmp_path / "sweep",
        "0",
        ["model.time_dim=16"],
        train_cfg,
        {"fid": 123.0},
        {"sampler": "ddim"},
    )
    config = OmegaConf.to_container(train_cfg, resolve=True)
    state = {"model": instantiate(train_cfg.model).state_dict(), "config": config, "step": 4}
    checkpoint.save(state, run_dir / "checkpoints" / "last.pt")

    def evaluate(option: str, steps: int, num: int) -> float:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="evaluate",
                overrides=[
                    f"run_dir={run_dir}", f"sampler={option}", f"sampler.steps={steps}",
                    f"num_samples={num}", "batch_size=8", "device=cpu", "progress=false",
                    "wandb=false",
                ],
            )  # fmt: skip
        GlobalHydra.instance().clear()
        return evaluate_run(cfg, option)["metrics"]["fid"]

    ddim = evaluate("ddim", 2, 12)
    sde = evaluate("dpm_solver_pp_sde", 3, 16)
    (job,) = find_jobs(tmp_path / "sweep")
    assert {e.label: m["fid"] for e, m in job.evals.items()} == {
        "training: ddim/3 calls/8 samples": 123.0,
        "ddim/2 calls/12 samples": ddim,
        "dpm_solver_pp_sde/3 calls/16 samples": sde,
    }
    assert ddim != sde
    fids = {h: c for h, c in columns(compare(tmp_path / "sweep")).items() if h.startswith("FID")}
    assert fids == {
        "FID [training: ddim/3 calls/8 samples]": ["123.00"],
        "FID [ddim/2 calls/12 samples]": [f"{ddim:.2f}"],
        "FID [dpm_solver_pp_sde/3 calls/16 samples]": [f"{sde:.2f}"],
    }
