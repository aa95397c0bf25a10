"""Sample-quality metrics: known answers on synthetic features, monotone on damaged digits.

Nothing here trains the real evaluator: metric tests use a small random-init network, cache
tests a stand-in build, and the real cache is only checked where it already exists.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import CONF, DATA_ROOT, HAVE_MNIST, TINY, needs_mnist
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torchvision.transforms.functional import gaussian_blur

from ddpm.data import ImageDataset, mnist
from ddpm.errors import UserError
from ddpm.evaluate import cache
from ddpm.evaluate.classifier import MnistClassifier, accuracy
from ddpm.evaluate.metrics import (
    Reference,
    class_coverage,
    compute_reference,
    evaluate_images,
    frechet_distance,
    kernel_distance,
    precision_recall,
)
from ddpm.runs import checkpoint

REAL_CACHE = (cache.default_dir() / cache.WEIGHTS).is_file()
needs_real_cache = pytest.mark.skipif(
    not REAL_CACHE,
    reason=f"no evaluator cache in {cache.default_dir()} (python -m ddpm.evaluate.classifier)",
)


def tiny_evaluator(seed: int = 0) -> MnistClassifier:
    """A random-init extractor: cheap, and its features still tell images apart."""
    torch.manual_seed(seed)
    return MnistClassifier(width=8, feature_dim=32).eval()


def moment_matched(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose sample mean and covariance are exactly ``mean`` and ``cov``."""
    z = torch.randn(
        n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    z = z - z.mean(0)
    white = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
    return white @ torch.linalg.cholesky(cov).T + mean


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T


# ---- FID -------------------------------------------------------------------------------------


def test_fid_of_a_feature_set_with_itself_is_zero():
    feats = torch.randn(500, 16).exp()  # skewed, non-Gaussian features
    assert abs(frechet_distance(feats, Reference.from_features(feats))) < 1e-6


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([2.0, 1.0, 1.0, 2.0])
    a = moment_matched(400, mu1.double(), torch.diag(s1).double(), seed=1)
    b = moment_matched(300, mu2.double(), torch.diag(s2).double(), seed=2)
    expected = float((mu1 - mu2).square().sum() + (s1.sqrt() - s2.sqrt()).square().sum())
    assert frechet_distance(a, Reference.from_features(b)) == pytest.approx(expected, rel=1e-6)


def test_fid_matches_the_closed_form_for_full_covariances():
    gen = torch.Generator().manual_seed(3)
    m1, m2 = (torch.randn(6, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    c1, c2 = m1 @ m1.T + 0.1 * torch.eye(6), m2 @ m2.T + 0.1 * torch.eye(6)
    mu1, mu2 = torch.randn(6, dtype=torch.float64, generator=gen), torch.zeros(6).double()
    r1 = sqrtm_psd(c1)
    expected = (mu1 - mu2).square().sum() + torch.trace(c1 + c2 - 2 * sqrtm_psd(r1 @ c2 @ r1))
    a, b = moment_matched(200, mu1, c1, seed=4), moment_matched(200, mu2, c2, seed=5)
    assert frechet_distance(a, Reference.from_features(b)) == pytest.approx(float(expected), 1e-6)


def noisy(images: torch.Tensor, sigma: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (images + sigma * torch.randn(images.shape, generator=gen)).clamp(-1, 1)


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    return images if sigma == 0 else gaussian_blur(images, [9, 9], [sigma, sigma])


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("which", ["random-init", "trained"])
def test_fid_rises_with_noise_and_blur_on_mnist_test(which, request):
    test = mnist(DATA_ROOT, train=False, download=False).images
    digits = test[5000:6000]
    if which == "trained":
        evaluator, reference = request.getfixturevalue("trained_evaluator")
        full = evaluator.meta.get("train_images", 60000) >= 60000  # else CI's small one
        noise_levels = (0.0, 0.1, 0.3, 0.6, 1.0) if full else (0.0, 0.3, 0.6, 1.0)
    else:  # untrained, same architecture: blind to sigma=0.1 (FID stays in its sampling noise)
        torch.manual_seed(0)
        evaluator = MnistClassifier().eval()
        reference = compute_reference(evaluator, test[:2000])
        noise_levels = (0.0, 0.3, 0.6, 1.0)

    def fid(images: torch.Tensor) -> float:
        return frechet_distance(compute_reference(evaluator, images).features, reference)

    by_noise = [fid(noisy(digits, s)) for s in noise_levels]
    by_blur = [fid(blurred(digits, s)) for s in (0.0, 0.7, 1.2, 2.0)]
    assert by_noise == sorted(by_noise) and by_noise[-1] > 5 * by_noise[0], by_noise
    assert by_blur == sorted(by_blur) and by_blur[-1] > 5 * by_blur[0], by_blur


# ---- KID, precision/recall, class coverage -----------------------------------------------------


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(800, 8, generator=gen), torch.randn(600, 8, generator=gen)
    ref = Reference.from_features(real)
    same, _ = kernel_distance(fake, ref, subsets=20, subset_size=300)
    shifted, std = kernel_distance(fake + 0.5, ref, subsets=20, subset_size=300)
    assert abs(same) < 0.02 and shifted > 10 * max(abs(same), 1e-3) and std > 0
    assert kernel_distance(fake, ref, subsets=5, seed=1) == kernel_distance(fake, ref, 5, seed=1)


def test_precision_recall_of_identical_and_of_far_apart_sets():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x + 100.0, x) == (0.0, 0.0)


def test_precision_recall_see_a_missing_mode_and_junk_samples():
    gen = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(200, 4, generator=gen), torch.randn(200, 4, generator=gen) + 50])
    one_mode = torch.randn(400, 4, generator=gen)  # covers half of real, all of it is real-like
    precision, recall = precision_recall(one_mode, real)
    assert precision > 0.9 and 0.4 < recall < 0.6
    junk = torch.cat([torch.randn(200, 4, generator=gen), torch.randn(200, 4, generator=gen) - 50])
    precision, _ = precision_recall(junk, real)
    assert 0.4 < precision < 0.6


def test_class_coverage_on_a_crafted_batch():
    sure, unsure = 10.0, 0.1
    logits = torch.zeros(20, 10)
    for i in range(20):  # two images per class; the odd ones barely above the rest
        logits[i, i % 10] = sure if i < 10 else unsure
    cov = class_coverage(logits)
    assert cov["class_entropy"] == pytest.approx(math.log(10))
    assert cov["class_entropy_norm"] == pytest.approx(1.0)
    assert cov["confident_share"] == pytest.approx(0.5)
    assert [cov[f"class_share_{c}"] for c in range(10)] == pytest.approx([0.1] * 10)

    one_class = torch.zeros(8, 10)
    one_class[:, 3] = sure
    cov = class_coverage(one_class)
    assert cov["class_entropy"] == 0.0 and cov["confident_share"] == 1.0
    assert cov["class_share_3"] == 1.0

    half = torch.zeros(4, 10)
    half[:2, 0], half[2:, 1] = sure, sure
    assert class_coverage(half)["class_entropy_norm"] == pytest.approx(math.log(2) / math.log(10))


def test_evaluate_images_returns_every_metric_deterministically():
    evaluator = tiny_evaluator()
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 28, 28, generator=gen) * 2 - 1
    images = torch.rand(100, 1, 28, 28, generator=gen) * 2.4 - 1.2  # outside [-1, 1]: clamped
    reference = compute_reference(evaluator, real)
    out = evaluate_images(images, evaluator, reference, kid_subsets=10)
    keys = {"fid", "kid", "kid_std", "precision", "recall", "class_entropy", "confident_share"}
    assert keys <= set(out) and all(isinstance(v, float) for v in out.values())
    assert out == evaluate_images(images, evaluator, reference, kid_subsets=10)


# ---- the cache --------------------------------------------------------------------------------


@pytest.fixture
def stand_in_build(monkeypatch):
    """``cache.build`` with random weights and 64 random 'digits' instead of training."""
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    fake = ImageDataset(images=images, labels=torch.arange(64) % 10, name="mnist")
    monkeypatch.setattr(cache, "mnist", lambda *args, **kwargs: fake)
    monkeypatch.setattr(cache, "train_classifier", lambda *args, **kwargs: tiny_evaluator())


def test_cache_builds_on_first_use_and_loads_weights_only(stand_in_build, tmp_path, caplog):
    folder = tmp_path / "evaluator"
    with pytest.raises(UserError, match="python -m ddpm.evaluate.build"):
        cache.load_evaluator(folder, build_missing=False)
    with caplog.at_level("INFO", logger="ddpm"):
        model, ref = cache.load_evaluator(folder)
    assert "training the evaluator (one time" in caplog.text and str(folder) in caplog.text
    for name in (cache.WEIGHTS, cache.REFERENCE):
        torch.load(folder / name, weights_only=True)  # plain tensors and values only
    assert ref.mean.dtype == ref.cov.dtype == torch.float64 and ref.features.shape == (64, 32)
    again, ref2 = cache.load_evaluator(folder, build_missing=False)
    assert torch.equal(ref2.cov, ref.cov) and again.meta == model.meta

    # a reference left from other weights is recomputed, not trusted
    state = torch.load(folder / cache.REFERENCE, weights_only=True)
    checkpoint.save({**state, "build_id": "other"}, folder / cache.REFERENCE)
    with pytest.raises(UserError, match="belongs to other weights"):
        cache.load_evaluator(folder, build_missing=False)
    assert torch.equal(cache.load_evaluator(folder)[1].mean, ref.mean)

    checkpoint.save({"model": {}, "meta": {"format": 0}}, folder / cache.WEIGHTS)
    with pytest.raises(UserError, match="not a format-1 ddpm evaluator"):
        cache.load_evaluator(folder)


@needs_mnist
def test_a_second_evaluator_of_another_shape_builds_from_the_command(tmp_path, capsys):
    """``arch.width`` / ``arch.feature_dim`` shape the classifier; its cache rebuilds that shape
    and the reference has its feature width (a second evaluator checks the first one's verdict)."""
    from ddpm.evaluate import build

    def composed(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("evaluator", [f"dataset.root={DATA_ROOT}", "download=false", *overrides])

    folder = tmp_path / "second"
    args = ("epochs=1", "limit=200", "device=cpu", f"cache_dir={folder}")
    build.main(composed("arch.width=8", "arch.feature_dim=24", "seed=1", *args))
    model, ref = cache.load_evaluator(folder, build_missing=False)
    assert (model.width, model.feature_dim, model.meta["seed"]) == (8, 24, 1)
    assert ref.count == 10_000 and ref.features.shape == (10_000, 24)
    assert "test accuracy" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"arch\.width=0: an integer >= 1"):
        build.main(composed("arch.width=0", *args))


def test_cache_dir_follows_ddpm_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path))
    assert cache.default_dir() == tmp_path / "evaluator"
    monkeypatch.delenv("DDPM_CACHE_DIR")
    assert cache.default_dir().parts[-3:] == (".cache", "ddpm", "evaluator")


@pytest.mark.slow
@needs_mnist
def test_a_trained_evaluator_reads_test_digits(trained_evaluator):
    """The real cache (>= 99%) or the small one CI trains (1 epoch, 3000 digits: 85.5%)."""
    model, ref = trained_evaluator
    test = mnist(DATA_ROOT, train=False, download=False)
    floor = 0.99 if model.meta.get("train_images", 60000) >= 60000 else 0.8
    assert accuracy(model, test) >= floor
    assert ref.count == 10000 and ref.features.shape == (10000, model.feature_dim)


@pytest.mark.slow
@needs_real_cache
@pytest.mark.skipif(not HAVE_MNIST, reason=f"no MNIST under {DATA_ROOT}")
def test_the_cached_evaluator_is_at_least_99_percent_accurate():
    state = torch.load(cache.default_dir() / cache.WEIGHTS, weights_only=True)
    assert state["meta"]["test_accuracy"] >= 0.99
    model, ref = cache.load_evaluator(build_missing=False)
    assert accuracy(model, mnist(DATA_ROOT, train=False, download=False)) >= 0.99
    assert ref.count == 10_000


# ---- the command ------------------------------------------------------------------------------


def test_evaluate_command_writes_json_and_logs_into_the_runs_wandb_run(
    make_cfg, stand_in_build, tmp_path, monkeypatch
):
    import wandb
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from wandb_files import read_runs

    from ddpm.evaluate.command import evaluate_run

    # a "trained" run: a tiny untrained net in a checkpoint, plus an offline W&B run
    run_dir = tmp_path / "run"
    train_cfg = make_cfg(*TINY[:-1], "logger=wandb", "logger.mode=offline")
    model = instantiate(train_cfg.model)
    config = OmegaConf.to_container(train_cfg, resolve=True)
    first = wandb.init(mode="offline", dir=str(run_dir), project="ddpm", config=config)
    first.log({"loss": 1.0}, step=4)
    first.finish()
    checkpoint.save(
        {"model": model.state_dict(), "config": config, "step": 4, "tracker_run_id": first.id},
        run_dir / "checkpoints" / "last.pt",
    )

    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            overrides=[
                f"run_dir={run_dir}",
                "sampler=ddim",
                "sampler.steps=2",
                "num_samples=12",
                "batch_size=5",
                "device=cpu",
                "progress=false",
            ],
        )
    GlobalHydra.instance().clear()
    result = evaluate_run(cfg, "ddim")

    saved = json.loads((run_dir / "eval" / "ddim_2_n12.json").read_text())
    assert saved["metrics"] == result["metrics"] and saved["step"] == 4
    assert saved["nfe"] == 2  # DDIM, two steps
    assert saved["evaluator"]["arch"]["width"] == 8  # which classifier measured: the stand-in
    assert {"fid", "kid", "precision", "recall", "confident_share"} <= set(saved["metrics"])
    runs = read_runs(run_dir)
    assert len(runs) == 2 and runs[0].run_id == runs[1].run_id == first.id
    evaluated = runs[1].summary
    assert evaluated["eval/ddim_2_n12/fid"] == pytest.approx(result["metrics"]["fid"])

    with pytest.raises(UserError, match="num_samples=2: an integer >= 4"):
        evaluate_run(OmegaConf.merge(cfg, {"num_samples": 2}), "ddim")


@needs_mnist
def test_training_with_eval_every_logs_fid_over_steps(
    make_cfg, stand_in_build, tmp_path, monkeypatch
):
    from conftest import TINY_WANDB
    from wandb_files import read_runs

    from ddpm.run import run
    from ddpm.runs.tracking import read_metrics

    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = make_cfg(
        *TINY_WANDB,
        "trainer.eval_every=2",
        "trainer.eval_samples=8",
        "sampler=ddim",
        "sampler.steps=3",
    )
    summary = run(cfg, tmp_path / "run")
    rows = [r for r in read_metrics(tmp_path / "run") if "fid" in r]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(r["fid"] > 0 and 0 <= r["precision"] <= 1 for r in rows)
    assert summary["fid"] == rows[-1]["fid"]  # the final measurement is the summary's
    (wb,) = read_runs(tmp_path / "run")
    assert [h["fid"] for h in wb.history if "fid" in h] == [r["fid"] for r in rows]
    assert wb.summary["fid"] == summary["fid"]


def test_inception_features_say_what_is_missing_in_one_line(tmp_path, monkeypatch):
    """Without the weights file (never on this machine) the Inception path stops before
    loading anything, naming the package and the file and where the file goes."""
    from ddpm.evaluate.inception import InceptionFeatures, missing

    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path))
    message = missing()
    assert message.startswith("features='inception': needs ") and "\n" not in message
    assert str(tmp_path / "inception") in message and message.endswith("(read offline)")
    with pytest.raises(UserError, match="^features='inception': needs "):
        InceptionFeatures()
