"""FID's own sampling error (``ddpm.evaluate bootstrap=N``): known answers on synthetic
Gaussian features, seeded, and nothing changed at the default ``bootstrap=0``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import CONF, TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ddpm.errors import UserError
from ddpm.evaluate.metrics import Reference, evaluate_features, fid_bootstrap, frechet_distance

D = 4
pytestmark = pytest.mark.usefixtures("one_thread")  # 4-d FIDs: threads only cost


def gaussian(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """``n`` features from N(shift e_1, I) in D dimensions."""
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:, 0] += shift
    return x.float()


@pytest.fixture(scope="module")
def reference() -> Reference:
    """N(0, I), known to within 20000 draws."""
    return Reference.from_features(gaussian(20000, 123))


def test_the_bootstrap_std_of_a_mean_shift_is_2_delta_over_sqrt_n(reference):
    """Features from N(delta e_1, I) against N(0, I): FID ~ |mean - 0|^2 with the sample mean
    ~ N(delta, I/n), whose std is 2 delta / sqrt(n) = 0.1 at delta 1, n 400. The percentile
    interval holds both the full-sample FID and the true distance, 1."""
    features = gaussian(400, 1, shift=1.0)
    out = fid_bootstrap(features, reference, 400, seed=0)
    full = frechet_distance(features, reference)
    low, high = out["fid_bootstrap_ci95"]
    assert out["bootstrap"] == 400
    assert out["fid_bootstrap_std"] == pytest.approx(2 * 1.0 / math.sqrt(400), rel=0.25)
    assert low < full < high and low < 1.0 < high


def test_the_bootstrap_std_shrinks_as_the_sample_grows(reference):
    """Samples from the reference's own distribution: the resampled FIDs spread less with
    more samples (their noise terms fall as 1/n)."""
    stds = [
        fid_bootstrap(gaussian(n, 2), reference, 100, seed=0)["fid_bootstrap_std"]
        for n in (100, 400, 1600)
    ]
    assert stds[0] > 2 * stds[1] > 4 * stds[2] > 0


def test_the_bootstrap_is_seeded_and_leaves_the_global_rng_alone(reference):
    features = gaussian(200, 3, shift=0.5)
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    first = fid_bootstrap(features, reference, 50, seed=0)
    assert torch.rand(1) == before  # the global stream did not move
    assert fid_bootstrap(features, reference, 50, seed=0) == first
    assert fid_bootstrap(features, reference, 50, seed=1) != first


def test_off_by_default_and_added_keys_only_when_asked(reference):
    features = gaussian(64, 4, shift=0.5)
    default = evaluate_features(features, None, reference, kid_subsets=5, kid_subset_size=32)
    asked = evaluate_features(
        features, None, reference, kid_subsets=5, kid_subset_size=32, bootstrap=20
    )
    assert set(asked) - set(default) == {"fid_bootstrap_std", "fid_bootstrap_ci95", "bootstrap"}
    assert {k: asked[k] for k in default} == default  # the other numbers are untouched
    assert asked["bootstrap"] == 20 and len(asked["fid_bootstrap_ci95"]) == 2


def test_the_evaluate_command_writes_the_bootstrap(make_cfg, tmp_path, monkeypatch):
    """``ddpm.evaluate bootstrap=30`` on a stand-in evaluator (random weights, as
    tests/test_evaluate.py builds it): the three keys in the JSON, the rest as at bootstrap=0;
    a negative count is one error line."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ddpm.data import ImageDataset
    from ddpm.evaluate import cache
    from ddpm.evaluate.classifier import MnistClassifier
    from ddpm.evaluate.command import _scalars, evaluate_run
    from ddpm.runs import checkpoint

    images, labels = torch.rand(64, 1, 28, 28) * 2 - 1, torch.arange(64) % 10
    fake = ImageDataset(images=images, labels=labels, name="mnist")
    monkeypatch.setattr(cache, "mnist", lambda *args, **kwargs: fake)
    evaluator = MnistClassifier(width=8, feature_dim=32).eval()
    monkeypatch.setattr(cache, "train_classifier", lambda *args, **kwargs: evaluator)
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))
    train_cfg = make_cfg(*TINY)
    config = OmegaConf.to_container(train_cfg, resolve=True)
    state = {"model": instantiate(train_cfg.model).state_dict(), "config": config, "step": 4}
    run_dir = tmp_path / "run"
    checkpoint.save(state, run_dir / "checkpoints" / "last.pt")

    def evaluate(*extra: str) -> dict:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="evaluate",
                overrides=[f"run_dir={run_dir}", "sampler=ddim", "sampler.steps=2",
                           "num_samples=16", "batch_size=8", "device=cpu", "progress=false",
                           "wandb=false", *extra],
            )  # fmt: skip
        GlobalHydra.instance().clear()
        return evaluate_run(cfg, "ddim")

    plain = evaluate()["metrics"]
    assert not any("bootstrap" in k for k in plain)
    result = evaluate("bootstrap=30")
    saved = json.loads((run_dir / "eval" / "ddim_2_n16.json").read_text())
    assert saved["metrics"] == result["metrics"]
    assert {k: saved["metrics"][k] for k in plain} == plain
    assert saved["metrics"]["bootstrap"] == 30 and saved["config"]["bootstrap"] == 30
    low, high = saved["metrics"]["fid_bootstrap_ci95"]
    assert low <= high and saved["metrics"]["fid_bootstrap_std"] > 0
    scalars = _scalars(saved["metrics"])  # what W&B gets: the interval as two numbers
    assert (scalars["fid_bootstrap_ci95_low"], scalars["fid_bootstrap_ci95_high"]) == (low, high)
    with pytest.raises(UserError, match=r"bootstrap=-1: an integer >= 0 \(0 = off\)"):
        evaluate("bootstrap=-1")
