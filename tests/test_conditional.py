"""Class-conditional models and classifier-free guidance: dropout, exact limits, separation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SAMPLER_OPTIONS, fast_only, needs_average_velocity, needs_mnist, run_module

from ddpm.configs.presets import preset
from ddpm.diffusion.objective import diffusion_loss, drop_labels
from ddpm.models.unet import UNet
from ddpm.samplers import auto_plan


class CountingUNet(UNet):
    """A tiny conditional U-Net that records the batch size of every forward call
    (``interval_input``: one that process=meanflow trains, for ``sampler=one_step``)."""

    def __init__(self, interval_input: bool = False) -> None:
        super().__init__(
            channels=(8, 16),
            time_dim=8,
            norm_groups=4,
            in_channels=1,
            image_size=28,
            prediction="eps",
            num_classes=10,
            interval_input=interval_input,
        )
        self.calls: list[int] = []

    def forward(self, x, t, labels=None):
        self.calls.append(x.shape[0])
        return super().forward(x, t, labels)


def test_label_dropout_rate_is_honoured() -> None:
    labels = torch.randint(0, 10, (200_000,))
    out = drop_labels(labels, 0.1, null_label=10)
    dropped = out == 10
    assert abs(dropped.float().mean().item() - 0.1) < 0.003
    assert torch.equal(out[~dropped], labels[~dropped])  # the rest keep their class
    assert torch.equal(drop_labels(labels, 0.0, null_label=10), labels)


def test_training_loss_uses_dropped_labels() -> None:
    """With dropout 1 every training label is the null one: the loss is the unconditional one
    (t and noise are drawn before the dropout, so both calls see the same ones)."""
    model = CountingUNet()
    schedule = preset("schedule", "linear", timesteps=50)
    x0 = torch.rand(8, 1, 28, 28) * 2 - 1
    labels = torch.arange(8)
    torch.manual_seed(3)
    with_labels = diffusion_loss(model, schedule, x0, labels=labels, label_dropout=1.0)
    torch.manual_seed(3)
    unconditional = diffusion_loss(model, schedule, x0)
    assert with_labels.item() == pytest.approx(unconditional.item(), rel=1e-6)


def test_unconditional_model_refuses_labels_and_null_label_is_unconditional() -> None:
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 9])
    plain = preset("model", "base", channels=(8, 16), time_dim=8, norm_groups=4)
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, torch.tensor([1, 2]))
    model = CountingUNet()
    assert torch.equal(model(x, t), model(x, t, torch.full((2,), model.null_label)))
    assert not torch.allclose(model(x, t, torch.tensor([1, 2])), model(x, t))


def with_steps(option: str, steps: int) -> dict:
    """``steps`` for every sampler that has the key (the adaptive solver picks its own)."""
    return {} if option == "adaptive" else {"steps": steps}


def served(option: str, timesteps: int) -> tuple[CountingUNet, object]:
    """A counting network and the table ``option`` samples on: a DDPM schedule of
    ``timesteps``, or for a sampler that needs average velocities (``one_step``) the meanflow
    grid and a network with the interval input."""
    if needs_average_velocity(option):
        return CountingUNet(interval_input=True).eval(), preset("process", "meanflow").grid
    return CountingUNet().eval(), preset("schedule", "linear", timesteps=timesteps)


@pytest.mark.parametrize("option", SAMPLER_OPTIONS)
def test_every_sampler_draws_guided_labels_in_one_doubled_call_per_evaluation(
    option, tmp_path
) -> None:
    model, schedule = served(option, 20)
    sampler = preset(
        "sampler", option, schedule=schedule, guidance_scale=2.0, **with_steps(option, 3)
    )
    sampler = auto_plan.resolve(sampler, model, tmp_path, "cpu", progress=False)  # plan: auto
    model.calls.clear()  # the fit's own calls
    images, _ = sampler.sample(model, (4, 1, 28, 28), labels=torch.tensor([0, 1, 2, 3]))
    assert images.shape == (4, 1, 28, 28) and torch.isfinite(images).all()
    assert model.calls == [8] * len(model.calls) and len(model.calls) == sampler.nfe


@pytest.mark.parametrize("option", fast_only(SAMPLER_OPTIONS, lambda o: o in ("ddim", "unipc")))
def test_guidance_scale_limits_are_exact_and_batched(option) -> None:
    model, schedule = served(option, 50)
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([40, 40, 40]), torch.tensor([7, 1, 7])
    null = torch.full_like(y, model.null_label)
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, null)
        for scale, expected in ((0.0, uncond), (1.0, cond)):
            model.calls.clear()
            sampler = preset(
                "sampler", option, schedule=schedule, guidance_scale=scale, **with_steps(option, 10)
            )
            out = sampler.predict(model, x, t, y)
            assert torch.equal(out, expected)  # bit for bit
            assert model.calls == [3]  # one plain call, no doubled batch
        model.calls.clear()
        sampler = preset(
            "sampler", option, schedule=schedule, guidance_scale=3.0, **with_steps(option, 10)
        )
        guided = sampler.predict(model, x, t, y)
    assert model.calls == [6]  # conditional and unconditional in one batched call
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_sampling_with_labels_checks_their_shape() -> None:
    model = CountingUNet().eval()
    schedule = preset("schedule", "linear", timesteps=20)
    sampler = preset("sampler", "ddim", schedule=schedule, steps=2, guidance_scale=2.0)
    images, _ = sampler.sample(model, (4, 1, 28, 28), labels=torch.tensor([0, 1, 2, 3]))
    assert images.shape == (4, 1, 28, 28)
    assert model.calls == [8, 8]  # two steps, each one doubled call
    with pytest.raises(ValueError, match="one per image"):
        sampler.sample(model, (4, 1, 28, 28), labels=torch.tensor([0, 1]))


def halves(num: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 8x8 images: 0 = left half lit, 1 = right half lit, with pixel noise."""
    labels = torch.randint(0, 2, (num,), generator=gen)
    left = (torch.arange(8) < 4).float().expand(num, 1, 8, 8)
    lit = torch.where(labels[:, None, None, None] == 0, left, 1 - left)
    images = lit * 1.6 - 0.8
    return images + 0.1 * torch.randn(images.shape, generator=gen), labels


@pytest.mark.slow
def test_conditional_model_separates_two_classes(tmp_path, make_cfg, one_thread) -> None:
    """Trained briefly (the real loop, label dropout on) on two classes, each label gives its
    own class: the brighter half of each sample is the asked-for one."""
    from ddpm.configs.run_config import build_parts
    from ddpm.data import ImageDataset
    from ddpm.runs.tracking import Tracker
    from ddpm.samplers.generate import generate
    from ddpm.training.loop import train
    from ddpm.training.outputs import RunOutputs
    from ddpm.training.state import TrainState

    cfg = make_cfg(
        "recipe=seed",
        "model.channels=[16,32]",
        "model.image_size=8",
        "model.num_classes=2",
        "schedule=cosine",
        "schedule.timesteps=100",
        "optimizer.lr=2e-3",
        "trainer.batch_size=32",
        "trainer.max_steps=200",
        "trainer.log_every=50",
        "device=cpu",
        "logger=none",
    )
    images, labels = halves(2048, torch.Generator().manual_seed(0))
    data = ImageDataset(images=images, labels=labels, name="halves")
    parts, cpu = build_parts(cfg), torch.device("cpu")
    model, schedule = parts.model, parts.schedule
    state = TrainState.create(model, parts.optimizer, parts.settings.ema_decay)
    sampler = preset("sampler", "ddim", schedule=schedule, steps=20)
    with Tracker(run_dir=tmp_path, run_config={}) as tracker:
        out = RunOutputs(tmp_path, state, sampler, parts.settings, tracker, cpu, {})
        train(parts.settings, state, parts.process, data, out, cpu)

    asked = torch.tensor([0, 1]).repeat(50)
    accuracy = {}
    for scale in (0.0, 1.0, 3.0):
        sampler = preset("sampler", "ddim", schedule=schedule, steps=20, guidance_scale=scale)
        out, _ = generate(model, sampler, len(asked), 1, cpu, labels=asked)
        left, right = out[..., :4].mean((1, 2, 3)), out[..., 4:].mean((1, 2, 3))
        accuracy[scale] = ((right > left).long() == asked).float().mean().item()
    assert accuracy[1.0] >= 0.9 and accuracy[3.0] >= 0.9, accuracy  # chance is 0.5
    assert 0.3 <= accuracy[0.0] <= 0.7, accuracy  # unconditional: the label is ignored
    # the training grid of a conditional run: one row per class
    assert (tmp_path / "samples" / "grid_0000200.png").is_file()


@needs_mnist
@pytest.mark.slow
def test_sample_command_draws_the_requested_label(tiny_conditional_run) -> None:
    out = tiny_conditional_run / "out7"
    res = run_module(
        "ddpm.sample",
        f"run_dir={tiny_conditional_run}",
        "label=7",
        "num_samples=6",
        "sampler.steps=3",
        "sampler.guidance_scale=2",
        f"out_dir={out}",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((out / "sample.json").read_text())
    assert info["labels"] == [7] * 6 and info["guidance_scale"] == 2.0
    assert torch.equal(torch.load(out / "labels.pt"), torch.full((6,), 7))

    grid = tiny_conditional_run / "all"
    res = run_module(
        "ddpm.sample",
        f"run_dir={tiny_conditional_run}",
        "labels=all",
        "sampler.steps=2",
        f"out_dir={grid}",
        "progress=false",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((grid / "sample.json").read_text())["labels"] == [
        c for c in range(10) for _ in range(10)
    ]


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [("label=12", "label=12: a class 0..9"), ("labels=some", "labels='some': allowed all")],
)
def test_sample_command_refuses_bad_labels(tiny_conditional_run, override, message) -> None:
    res = run_module("ddpm.sample", f"run_dir={tiny_conditional_run}", "sampler.steps=2", override)
    assert res.returncode == 1
    assert message in res.stderr.strip().splitlines()[-1]


@needs_mnist
@pytest.mark.slow
def test_sample_command_refuses_labels_for_unconditional_runs(tiny_run) -> None:
    res = run_module("ddpm.sample", f"run_dir={tiny_run}", "sampler.steps=2", "label=7")
    assert res.returncode == 1
    assert "unconditional" in res.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_conditional_run(tmp_path_factory: pytest.TempPathFactory):
    """A TINY conditional run (10 classes, 4 steps) for the sample command tests."""
    from conftest import train_tiny

    return train_tiny(tmp_path_factory.mktemp("tiny_conditional"), "model.num_classes=10")
