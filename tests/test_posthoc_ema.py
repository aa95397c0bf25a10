"""EDM2's post-hoc EMA: the power profiles, their snapshots, the rebuild of any length from
them, and the commands that load the rebuilt weights."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CONF, TINY, needs_mnist, run_module, train_tiny
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_evaluate import stand_in_build  # noqa: F401 - the fixture, for the evaluate command
from test_resume import losses

from ddpm.errors import UserError
from ddpm.run import run
from ddpm.runs import checkpoint
from ddpm.runs.load import load_trained
from ddpm.training.posthoc_ema import (
    PowerEMA,
    Snapshot,
    averaging_weights,
    gamma_of,
    reconstruct,
    sigma_rel_of,
)

STORED = (0.05, 0.10)  # the paper's pair


def test_gamma_and_sigma_rel_match_the_papers_pairs():
    assert gamma_of(0.05) == pytest.approx(16.97, abs=0.005)
    assert gamma_of(0.10) == pytest.approx(6.94, abs=0.005)
    for gamma in (0.0, 0.5, 6.94, 16.97, 300.0):
        assert gamma_of(sigma_rel_of(gamma)) == pytest.approx(gamma, rel=1e-9, abs=1e-9)
    assert sigma_rel_of(0.0) == pytest.approx(12**-0.5)  # gamma 0: a plain running mean
    with pytest.raises(UserError, match=r"^sigma_rel=0.3: a number in \(0, 0.2887\]$"):
        gamma_of(0.3)


def track(trajectory: torch.Tensor, stds, start: int = 0) -> list[PowerEMA]:
    """Power EMAs of ``trajectory`` (one row per training step after ``start``)."""
    emas = [PowerEMA(s, {"p": torch.zeros_like(trajectory[0])}, start) for s in stds]
    for theta in trajectory:
        for ema in emas:
            ema.update([theta])
    return emas


@pytest.mark.parametrize("start", [0, 7])
def test_the_closed_form_weights_are_what_the_recurrence_averages(start):
    """The EMA of one-hot 'weights' e_1..e_T is its weight on each step."""
    steps = 40
    (ema,) = track(torch.eye(steps, dtype=torch.float64), [0.1], start)
    closed = averaging_weights(ema.gamma, start, start + steps, torch.arange(1, start + steps + 1))
    assert not closed[:start].any()  # before the profile started
    torch.testing.assert_close(closed[start:], ema.average[0], rtol=1e-12, atol=1e-15)
    assert closed.sum().item() == pytest.approx(1.0, abs=1e-12)
    # the first update copied; each later one kept (1 - 1/n)^(gamma + 1) of it
    assert ema.average[0][0].item() == pytest.approx((1 / steps) ** (ema.gamma + 1), rel=1e-12)


def toy_run(steps: int, every: int, stds=STORED) -> tuple[torch.Tensor, list[Snapshot]]:
    """A 'parameter' trajectory like SGD's (a random walk plus noise, 32 numbers, float64)
    and snapshots of its power EMAs every ``every`` steps."""
    gen = torch.Generator().manual_seed(0)
    walk = torch.randn(steps, 32, generator=gen, dtype=torch.float64).cumsum(0) * 0.01
    trajectory = walk + 0.1 * torch.randn(steps, 32, generator=gen, dtype=torch.float64)
    emas = [PowerEMA(s, {"p": torch.zeros(32, dtype=torch.float64)}) for s in stds]
    snapshots = []
    for step, theta in enumerate(trajectory, start=1):
        for ema in emas:
            ema.update([theta])
            if step % every == 0:
                weights = {"p": ema.average[0].clone()}
                snapshots.append(Snapshot(ema.gamma, 0, step, weights, ema.sigma_rel))
    return trajectory, snapshots


def direct(trajectory: torch.Tensor, sigma_rel: float, step: int) -> torch.Tensor:
    (ema,) = track(trajectory[:step], [sigma_rel])
    return ema.average[0]


def test_a_stored_profile_at_a_snapshot_step_rebuilds_exactly():
    _, snapshots = toy_run(400, 25)
    stored = next(s for s in snapshots if s.step == 200 and s.sigma_rel == 0.10)
    rebuilt = reconstruct(snapshots, 0.10, step=200)
    assert rebuilt.step == 200 and rebuilt.snapshots == 16  # those at or before step 200
    assert rebuilt.fit_error < 1e-10
    torch.testing.assert_close(rebuilt.weights["p"], stored.weights["p"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("target", [0.08, 0.065, 0.13])
def test_another_length_from_dense_snapshots_matches_the_directly_tracked_ema(target):
    trajectory, snapshots = toy_run(1000, 10)
    want = direct(trajectory, target, 1000)
    rebuilt = reconstruct(snapshots, target)
    assert rebuilt.step == 1000 and rebuilt.fit_error < 1e-3

    def off(x: torch.Tensor) -> float:
        return ((x - want).norm() / want.norm()).item()

    assert off(rebuilt.weights["p"]) < 1e-4
    # ...where either stored length is far off: the test sees a wrong combination.
    last = [s.weights["p"] for s in snapshots if s.step == 1000]
    assert min(off(w) for w in last) > 2e-2
    # Mid-run (a snapshot step) too, from the snapshots up to there.
    mid = reconstruct(snapshots, target, step=500)
    assert ((mid.weights["p"] - direct(trajectory, target, 500)).norm() / want.norm()) < 1e-4


def test_sparse_snapshots_report_a_looser_fit():
    trajectory, snapshots = toy_run(1000, 250)
    rebuilt = reconstruct(snapshots, 0.08)
    want = direct(trajectory, 0.08, 1000)
    assert 1e-4 < rebuilt.fit_error < 0.2  # said, not hidden
    assert ((rebuilt.weights["p"] - want).norm() / want.norm()) < 0.05


def test_posthoc_ema_on_a_run_without_snapshots_is_one_error_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")  # never read: refused before
    with pytest.raises(UserError) as err:
        load_trained(tmp_path, posthoc_ema=0.08)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"posthoc_ema=0.08: {tmp_path / 'ema_profiles'} holds no snapshots")
    assert "trainer.posthoc_ema_stds=" in message
    with pytest.raises(UserError, match=r"^posthoc_ema=0.5: a relative EMA std sigma_rel in"):
        load_trained(tmp_path, posthoc_ema=0.5)
    with pytest.raises(UserError, match=r"^ema=False: posthoc_ema=0.08 replaces the EMA"):
        load_trained(tmp_path, ema=False, posthoc_ema=0.08)


@pytest.mark.slow
def test_the_evaluate_command_says_what_a_run_without_snapshots_needs(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    res = run_module("ddpm.evaluate", f"run_dir={tmp_path}", "posthoc_ema=0.05", "device=cpu")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: posthoc_ema=0.05: ")
    assert "holds no snapshots" in lines[0] and "trainer.posthoc_ema_stds" in lines[0]


def test_bad_trainer_settings_are_refused(make_cfg):
    from ddpm.configs.presets import build

    for value, shown in (("[0.5]", "[0.5]"), ("[0.05,0.05]", "[0.05, 0.05]"), ("[]", "[]")):
        with pytest.raises(UserError) as err:
            build(make_cfg(f"trainer.posthoc_ema_stds={value}").trainer)
        assert str(err.value).startswith(f"trainer.posthoc_ema_stds={shown}: a list of")
    with pytest.raises(UserError, match=r"^trainer.posthoc_ema_every=0: an integer >= 1$"):
        build(make_cfg("trainer.posthoc_ema_every=0").trainer)
    settings = build(make_cfg("trainer.posthoc_ema_stds=[0.05,0.1]").trainer)
    assert settings.posthoc_ema_stds == [0.05, 0.1]


POSTHOC = [
    *TINY,
    "trainer.posthoc_ema_stds=[0.05,0.1]",
    "trainer.posthoc_ema_every=2",
    "trainer.checkpoint_every=1",
    "trainer.keep_last=null",
]


@pytest.mark.slow
@needs_mnist
def test_posthoc_emas_follow_their_recursion_and_resume_bit_for_bit(make_cfg, tmp_path):
    run(make_cfg(*POSTHOC), tmp_path / "whole")
    whole = tmp_path / "whole"
    names = sorted(p.name for p in (whole / "ema_profiles").iterdir())
    assert names == [f"{s}_{n:07d}.pt" for s in ("0.05", "0.1") for n in (2, 4)]

    # The snapshot at step 4 is the power EMA of the weights after steps 1..4.
    ckpts = whole / "checkpoints"
    weights = [checkpoint.load(ckpts / f"step_{s:07d}.pt")["model"] for s in (1, 2, 3)]
    weights.append(checkpoint.load(ckpts / "last.pt")["model"])
    for std in (0.05, 0.1):
        snap = checkpoint.load(whole / "ema_profiles" / f"{std:g}_0000004.pt")
        assert (snap["step"], snap["start"], snap["sigma_rel"]) == (4, 0, std)
        w = averaging_weights(gamma_of(std), 0, 4, torch.arange(1, 5)).tolist()
        for k, v in snap["weights"].items():
            expected = sum(c * m[k].double() for c, m in zip(w, weights, strict=True))
            assert v.dtype == torch.float32
            torch.testing.assert_close(v, expected.float(), rtol=1e-5, atol=1e-6)

    # Two steps, then the same command with max_steps=4: the same profiles, bit for bit.
    halves = tmp_path / "halves"
    run(make_cfg(*POSTHOC, "trainer.max_steps=2"), halves)
    run(make_cfg(*POSTHOC), halves)
    assert losses(halves) == losses(whole)
    a = checkpoint.load(whole / "checkpoints" / "last.pt")["posthoc_ema"]
    b = checkpoint.load(halves / "checkpoints" / "last.pt")["posthoc_ema"]
    assert [(p["sigma_rel"], p["updates"]) for p in a] == [(0.05, 4), (0.1, 4)]
    for p, q in zip(a, b, strict=True):
        assert (p["start"], p["updates"]) == (q["start"], q["updates"])
        assert all(torch.equal(p["average"][k], q["average"][k]) for k in p["average"])
    for name in names:
        x = checkpoint.load(whole / "ema_profiles" / name)["weights"]
        y = checkpoint.load(halves / "ema_profiles" / name)["weights"]
        assert all(torch.equal(x[k], y[k]) for k in x)

    # A fresh start in a folder replaces its run: the earlier run's snapshots go with it.
    (whole / "ema_profiles" / "0.05_0000099.pt").write_bytes(b"an earlier run's")
    run(make_cfg(*POSTHOC, "trainer.resume=never"), whole)
    assert sorted(p.name for p in (whole / "ema_profiles").iterdir()) == names


def command_cfg(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


@pytest.mark.slow
@needs_mnist
@pytest.mark.usefixtures("stand_in_build")  # an evaluator of random weights: no training
def test_a_run_writes_snapshots_and_sample_and_evaluate_load_rebuilt_weights(tmp_path, monkeypatch):
    from ddpm.comparison.jobs import _from_eval_file
    from ddpm.evaluate.command import evaluate_run
    from ddpm.sample import sample

    run_dir = train_tiny(tmp_path / "run", *POSTHOC[len(TINY) :])
    snapshot = checkpoint.load(run_dir / "ema_profiles" / "0.1_0000004.pt")["weights"]
    _, stored, _ = load_trained(run_dir, posthoc_ema=0.1)  # a stored length: itself
    for k, v in stored.state_dict().items():
        torch.testing.assert_close(v, snapshot[k], rtol=1e-5, atol=1e-6)
    _, other, _ = load_trained(run_dir, posthoc_ema=0.07)
    assert any(not torch.allclose(v, snapshot[k]) for k, v in other.state_dict().items())

    # An earlier checkpoint: rebuilt at its step from the snapshots up to there.
    early = run_dir / "checkpoints" / "step_0000002.pt"
    at_two = checkpoint.load(run_dir / "ema_profiles" / "0.05_0000002.pt")["weights"]
    _, model, _ = load_trained(None, early, posthoc_ema=0.05)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, at_two[k], rtol=1e-5, atol=1e-6)

    common = [f"run_dir={run_dir}", "sampler=ddim", "sampler.steps=2", "device=cpu"]
    common += ["progress=false", "posthoc_ema=0.08"]
    sample(command_cfg("sample", *common, "num_samples=4"), "ddim")
    assert (run_dir / "samples" / "ddim_2_phema0.08" / "samples.pt").is_file()

    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = command_cfg("evaluate", *common, "num_samples=8", "batch_size=8", "wandb=false")
    evaluate_run(cfg, "ddim")
    path = run_dir / "eval" / "ddim_2_n8_phema0.08.json"
    assert json.loads(path.read_text())["config"]["posthoc_ema"] == 0.08
    assert "post-hoc EMA 0.08" in _from_eval_file(path).key.extra
    assert not (run_dir / "eval" / "ddim_2_n8.json").exists()  # the EMA's name stays free
