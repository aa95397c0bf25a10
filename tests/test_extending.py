"""The extension checklists of docs/extending.md, proven: a sampler, a dataset and a logger
that live outside the package (one module plus one yaml each, in a config folder added with
``hydra.searchpath``) train and sample through the real commands with no other change."""

import json
import logging
import textwrap

import pytest
import torch
from conftest import CONF, TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ddpm.run import run
from ddpm.runs.tracking import read_metrics

MODULE = '''
"""A toy sampler, dataset and logger, as a user would write them in their own project."""
import json

import torch

from ddpm.data.base import ImageDataset
from ddpm.samplers.base import Sampler
from ddpm.runs.tracking import Tracker


class ShrinkSampler(Sampler):
    """Deterministic: each row moves to the x0 estimate scaled to the next level, no noise."""

    def step(self, x0, x_t, i, generator):
        return x0 if i == 0 else self.table.alpha_bar_prev[i].sqrt() * x0


class Stripes:
    """One bright row per image; its class is the row's tenth of the height. No ``name``:
    it declares no evaluator."""

    def __init__(self, *, root, train, channels, image_size, num_classes, count):
        self.train, self.image_size, self.count = train, image_size, count

    def load(self):
        g = torch.Generator().manual_seed(0 if self.train else 1)
        s = self.image_size
        rows = torch.randint(0, s, (self.count,), generator=g)
        x = -torch.ones(self.count, 1, s, s)
        x[torch.arange(self.count), 0, rows, :] = 1.0
        return ImageDataset(x, rows * 10 // s, "stripes")


class EchoTracker(Tracker):
    """The local files, plus every logged row again in <prefix>.jsonl."""

    def __init__(self, run_dir, run_config=None, resume_step=None, resume_id=None, *, prefix):
        super().__init__(run_dir, run_config, resume_step, resume_id)
        self.echo = self.run_dir / f"{prefix}.jsonl"

    def log(self, metrics, step):
        super().log(metrics, step)
        with self.echo.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\\n")
'''

YAMLS = {
    "sampler/shrink.yaml": """
        _target_: toy_extension.ShrinkSampler
        steps: 3
        spacing: linspace
        plan: null
        clip_x0: true
        dynamic_threshold: null
        guidance_scale: 1.0
    """,
    "dataset/stripes.yaml": """
        _target_: toy_extension.Stripes
        root: null
        train: true
        channels: 1
        image_size: 28
        num_classes: 10
        count: 64
    """,
    "logger/echo.yaml": """
        _target_: toy_extension.EchoTracker
        prefix: echo
    """,
}


@pytest.fixture
def extension(tmp_path, monkeypatch):
    """The module on the import path and its yamls in a config folder; returns the folder."""
    (tmp_path / "toy_extension.py").write_text(MODULE)
    for name, text in YAMLS.items():
        path = tmp_path / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "conf"
    GlobalHydra.instance().clear()


def test_a_toy_sampler_dataset_and_logger_train_and_sample_with_no_other_change(
    extension, tmp_path, caplog
):
    search = f"hydra.searchpath=[file://{extension}]"
    ours = [o for o in TINY if not o.startswith(("dataset.", "logger="))]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[search, *ours, "sampler=shrink", "dataset=stripes", "logger=echo"],
        )
    with caplog.at_level(logging.INFO, logger="ddpm"):
        summary = run(cfg, tmp_path / "run")
    assert summary["steps"] == 4
    assert "final grid: 4 images with ShrinkSampler (3 network calls each)" in caplog.text
    echoed = [
        json.loads(line) for line in (tmp_path / "run" / "echo.jsonl").read_text().splitlines()
    ]
    assert echoed == read_metrics(tmp_path / "run") and len(echoed) == 4

    # The real command line, in process: the extension's options are found on the search path.
    from ddpm.sample import cli

    out = tmp_path / "drawn"
    cli(
        [search, f"run_dir={tmp_path / 'run'}", "sampler=shrink", "num_samples=5", f"out_dir={out}"]
    )
    info = json.loads((out / "sample.json").read_text())
    assert info["nfe"] == 3
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (5, 1, 28, 28) and torch.isfinite(samples).all()


def test_a_dataset_that_declares_no_evaluator_is_refused_for_quality_measurement(
    extension, tmp_path
):
    from ddpm.errors import UserError

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"hydra.searchpath=[file://{extension}]",
                "dataset=stripes",
                "trainer.eval_every=5",
            ],
        )
    with pytest.raises(
        UserError, match=r"^trainer.eval_every=5: no trained evaluator for toy_extension.Stripes"
    ):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_unknown_option_is_still_refused_with_the_search_path_in_the_list(extension):
    from ddpm.configs.run_config import check_command_line
    from ddpm.errors import UserError

    with pytest.raises(UserError) as err:
        check_command_line([f"hydra.searchpath=[file://{extension}]", "sampler=nope"])
    allowed = "sampler='nope': unknown sampler; allowed: adaptive, consistency, ddim"
    assert str(err.value).startswith(allowed)
    assert "shrink" in str(err.value)
