"""Fixtures compose the real config (conf/) and override it small."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DATA_ROOT = Path(os.environ.get("DDPM_DATA_ROOT", REPO.parent / "shared" / "data"))
HAVE_MNIST = (DATA_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"no MNIST under {DATA_ROOT}")

# A run that finishes in seconds on a CPU: tiny widths, short schedule, few samples.
TINY = [
    "recipe=seed",
    "model.channels=[16,32]",
    "schedule.timesteps=20",
    "trainer.batch_size=16",
    "trainer.max_steps=4",
    "trainer.log_every=1",
    "trainer.num_samples=4",
    "device=cpu",
    f"dataset.root={DATA_ROOT}",
    "dataset.download=false",
    "logger=none",
]
# The same with an offline W&B run (what the tracking tests read back).
TINY_WANDB = [*TINY[:-1], "logger=wandb", "logger.mode=offline"]


# Every sampler option, found by listing its folder: a new yaml is tested with no table to extend.
SAMPLER_OPTIONS = sorted(p.stem for p in (CONF / "sampler").glob("*.yaml"))


def fast_only(values: Iterable[Any], fast: Callable[[Any], bool]) -> list[Any]:
    """``values`` for ``parametrize``, those for which ``fast`` is false marked slow: the fast
    loop (``pytest -m "not slow"``) runs a representative part of a grid, the full suite all.
    A tuple is one row of several arguments."""
    slow = pytest.mark.slow
    return [
        v if fast(v) else pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=slow)
        for v in values
    ]


@pytest.fixture
def make_cfg() -> Iterator[Callable[..., DictConfig]]:
    """``make_cfg("model=small", ...)`` composes conf/config.yaml with those overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Scalar batches are too small to gain from threads, and on a busy CPU they lose badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


class GaussianOracle(torch.nn.Module):
    """The exact predictor for data x0 ~ N(mu, s^2), for any schedule and target.

    eps*(x_t, t) = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
    """

    def __init__(self, schedule, mu: float, s: float, prediction: str = "eps") -> None:
        super().__init__()
        self.schedule, self.mu, self.s, self.prediction = schedule, mu, s, prediction
        self.in_channels, self.image_size = 1, 1

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        table = self.schedule.alpha_bar.to(torch.float64)
        if t.is_floating_point():  # the adaptive solver's fractional timesteps
            lo = t.floor().long().clamp(0, len(table) - 2)
            w = (t.to(torch.float64) - lo).reshape(-1, 1, 1, 1)
            ab = (1 - w) * table[lo].reshape(-1, 1, 1, 1) + w * table[lo + 1].reshape(-1, 1, 1, 1)
        else:
            ab = table[t].reshape(-1, 1, 1, 1)
        x = x_t.to(torch.float64)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        out = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}
        return out[self.prediction].to(x_t.dtype)


class ProcessOracle(torch.nn.Module):
    """The exact network of a continuous process (flow, EDM) for data x0 ~ N(mu, s^2).

    It is called as the process calls its network, with (c_in x, c_noise); it recovers the
    time from c_noise, the optimal x0 = mu + alpha s^2 (x - alpha mu) / (alpha^2 s^2 + sigma^2),
    and returns F = (x0 - c_skip x) / c_out.
    """

    def __init__(self, process, mu: float, s: float) -> None:
        super().__init__()
        self.process, self.mu, self.s, self.prediction = process, mu, s, "eps"
        self.in_channels, self.image_size = 1, 1
        # c_noise is increasing in t: invert it on a fine table (exact at the grid's levels)
        self._times = torch.cat(
            [process.times, process.time_of_sigma(torch.logspace(-4, 5, 4001, dtype=torch.float64))]
        ).unique()
        self._noise = process.coefficients(self._times)[3]
        order = self._noise.argsort()
        self._times, self._noise = self._times[order], self._noise[order]

    def _time(self, c_noise: torch.Tensor) -> torch.Tensor:
        c = c_noise.to(torch.float64)
        hi = torch.searchsorted(self._noise, c).clamp(1, len(self._noise) - 1)
        lo = hi - 1
        w = (c - self._noise[lo]) / (self._noise[hi] - self._noise[lo])
        return self._times[lo] + w.clamp(0, 1) * (self._times[hi] - self._times[lo])

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        p = self.process
        t = self._time(c_noise)
        c_in, c_skip, c_out, _ = (c.reshape(-1, 1, 1, 1) for c in p.coefficients(t))
        a, sg = p.alpha(t).reshape(-1, 1, 1, 1), p.sigma(t).reshape(-1, 1, 1, 1)
        x = x_in.to(torch.float64) / c_in
        x0 = self.mu + a * self.s**2 * (x - a * self.mu) / (a**2 * self.s**2 + sg**2)
        return ((x0 - c_skip * x) / c_out).to(x_in.dtype)


class MeanFlowOracle(torch.nn.Module):
    """The exact average velocity of x0 ~ N(0, s^2 I) on process=meanflow's path, counting
    calls; called as the process calls its network: (z, rows of (c t, c (t - r))), c the
    process's ``time_scale``, or a plain level c t for r = t.

    The flow map is linear, z_r = a(r)/a(t) z_t with a(t)^2 = (1 - t)^2 s^2 + t^2, so
    u = (1 - a(r)/a(t)) z / (t - r), and at r = t the velocity (t - (1 - t) s^2) z / a(t)^2.
    ``scale`` != 1 makes it wrong; so does ``ignore_r`` (the velocity at t whatever r, as a
    flow-matching network gives).
    """

    def __init__(self, process, s: float, scale: float = 1.0, ignore_r: bool = False) -> None:
        super().__init__()
        self.time_scale, self.s, self.scale, self.ignore_r = process.time_scale, s, scale, ignore_r
        self.prediction, self.in_channels, self.image_size = "eps", 1, 1
        self.calls: list[int] = []

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """a(t): the std of z_t."""
        return ((1 - t) ** 2 * self.s**2 + t**2).sqrt()

    def forward(self, z: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.shape[0])
        if levels.ndim == 1:
            levels = torch.stack([levels, torch.zeros_like(levels)], dim=1)
        t, gap = levels[:, 0] / self.time_scale, levels[:, 1] / self.time_scale
        if self.ignore_r:
            gap = torch.zeros_like(gap)
        positive = gap > 0
        ratio = self.std(t - gap) / self.std(t)
        average = (1 - ratio) / torch.where(positive, gap, torch.ones_like(gap))
        instantaneous = (t - (1 - t) * self.s**2) / self.std(t) ** 2
        coef = torch.where(positive, average, instantaneous)
        return self.scale * coef.reshape(-1, *([1] * (z.ndim - 1))) * z


def sampler_class(option: str) -> type:
    """The class ``conf/sampler/<option>.yaml`` builds (a preset's defaults list followed)."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF / "sampler" / f"{option}.yaml")
    while "_target_" not in node:
        parent = next(entry for entry in node.defaults if entry != "_self_")
        node = OmegaConf.load(CONF / "sampler" / f"{parent}.yaml")
    return get_object(node._target_)


def needs_average_velocity(option: str) -> bool:
    """Sampler options that only a process learning average velocities serves
    (``sampler=one_step``): the tests that run every option give them process=meanflow."""
    from ddpm.samplers import OneStepSampler

    return issubclass(sampler_class(option), OneStepSampler)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished TINY training run (T=20, 4 steps) for the commands that read runs back."""
    return train_tiny(tmp_path_factory.mktemp("tiny_run"))


def train_tiny(run_dir: Path, *overrides: str) -> Path:
    """Trains TINY (plus ``overrides``) into ``run_dir``; skips the test without MNIST."""
    if not HAVE_MNIST:
        pytest.skip(f"no MNIST under {DATA_ROOT}")
    from ddpm.run import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, "logger=none", *overrides])
    GlobalHydra.instance().clear()
    run(cfg, run_dir)
    return run_dir


def run_module(module: str, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m <module> overrides...`` from the repo root, as a user types it.

    One intra-op thread: the tiny models gain nothing from more, and a busy CPU makes
    spinning threads very slow.
    """
    env = {**os.environ, "DDPM_DATA_ROOT": str(DATA_ROOT), "HYDRA_FULL_ERROR": "0"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_evaluator(tmp_path_factory: pytest.TempPathFactory):
    """The evaluator and its test-split reference: the real cache when this machine has one,
    else a small one trained here, once per test run (1 epoch on 3000 digits, seconds), so CI
    runs the tests that need a trained evaluator too."""
    from ddpm.evaluate import cache

    if not HAVE_MNIST:
        pytest.skip(f"no MNIST under {DATA_ROOT}")
    if (cache.default_dir() / cache.WEIGHTS).is_file():
        return cache.load_evaluator(build_missing=False)
    folder = tmp_path_factory.mktemp("evaluator")
    cache.build(folder, DATA_ROOT, epochs=1, limit=3000, download=False)
    return cache.load_evaluator(folder, build_missing=False)
