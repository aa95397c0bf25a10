"""Every invalid config is refused before anything runs, in one line naming key and value."""

import shutil
import subprocess
import sys

import pytest
from conftest import DATA_ROOT, REPO, fast_only, needs_mnist

from ddpm.configs.run_config import check_command_line, validate
from ddpm.data import MNIST_FILES, mnist
from ddpm.errors import UserError

MODELS = "base, large, res_base, res_large, res_small, res_tiny, small"
INVALID = [
    # (overrides, the start of the one-line message)
    (["model.channels=[]"], "model.channels=[]: a non-empty list"),
    (["model.channels=[30,60]"], "model.channels=[30, 60]: every width divisible"),
    (["model.channels=[0,8]"], "model.channels=[0, 8]: a non-empty list of positive"),
    (["model.channels=64"], "model.channels=64: a non-empty list"),
    (["model.norm_groups=0"], "model.norm_groups=0: an integer >= 1"),
    (["model.time_dim=33"], "model.time_dim=33: an even integer >= 4"),
    (["model.time_dim=2"], "model.time_dim=2: an even integer >= 4"),
    (["model.image_size=30"], "model.image_size=30: divisible by 2^(levels-1)=4"),
    (["model.in_channels=0"], "model.in_channels=0: an integer >= 1"),
    (["model.prediction=score"], "model.prediction='score': one of eps, x0, v"),
    (["+model.chanels=[8]"], "model.chanels=[8]: unknown key; allowed: channels"),
    (["schedule.timesteps=0"], "schedule.timesteps=0: an integer >= 1"),
    (["schedule.timesteps=1.5"], "schedule.timesteps=1.5: an integer >= 1"),
    (["schedule.beta_start=0"], "schedule.beta_start=0: 0 < beta_start < beta_end"),
    (["schedule.beta_start=0.05"], "schedule.beta_start=0.05: 0 < beta_start < beta_end=0.02"),
    (["schedule.beta_end=1.5"], "schedule.beta_start=0.0001: 0 < beta_start < beta_end=1.5 < 1"),
    (["schedule=cosine", "schedule.max_beta=1.5"], "schedule.max_beta=1.5: a number in (0, 1)"),
    (["schedule=cosine", "schedule.max_beta=1.0"], "schedule.max_beta=1.0: a number in (0, 1)"),
    (["schedule=sigmoid", "schedule.max_beta=1.0"], "schedule.max_beta=1.0: a number in (0, 1)"),
    (["schedule=sigmoid", "schedule.tau=0"], "schedule.tau=0: a number > 0"),
    (["schedule=cosine", "schedule.s=-0.1"], "schedule.s=-0.1: a number >= 0"),
    (["trainer.batch_size=0"], "trainer.batch_size=0: an integer >= 1"),
    (["trainer.batch_size=abc"], "trainer.batch_size='abc': an integer >= 1"),
    (["trainer.epochs=0"], "trainer.epochs=0: an integer >= 1"),
    (["trainer.max_steps=0"], "trainer.max_steps=0: an integer >= 1, or null"),
    (["trainer.max_minutes=0"], "trainer.max_minutes=0: a number > 0, or null"),
    (["trainer.grad_clip=0"], "trainer.grad_clip=0: a number > 0"),
    (["trainer.seed=-1"], "trainer.seed=-1: an integer >= 0"),
    (["trainer.log_every=0"], "trainer.log_every=0: an integer >= 1"),
    (["trainer.sample_every=-1"], "trainer.sample_every=-1: an integer >= 0"),
    (["trainer.checkpoint_every=-5"], "trainer.checkpoint_every=-5: an integer >= 0"),
    (["trainer.num_samples=0"], "trainer.num_samples=0: an integer >= 1"),
    (["trainer.keep_last=0"], "trainer.keep_last=0: an integer >= 1, or null"),
    (
        ["trainer.loss_weighting=snr"],
        "trainer.loss_weighting='snr': one of none, min_snr, soft_min_snr",
    ),
    (["device=tpu"], "device='tpu': auto, cpu, mps, cuda or cuda:<index>"),
    (["trainer.precision=fp8"], "trainer.precision='fp8': one of fp32, bf16, fp16"),
    (["trainer.compile=maybe"], "trainer.compile='maybe': true, false or a mode: default"),
    (["trainer.lr_batch_rule=cube"], "trainer.lr_batch_rule='cube': one of none, linear, sqrt"),
    (["trainer.lr_schedule=step"], "trainer.lr_schedule='step': one of constant, inverse_sqrt"),
    (["trainer.lr_warmup_steps=-1"], "trainer.lr_warmup_steps=-1: an integer >= 0"),
    (["trainer.lr_ref_steps=0"], "trainer.lr_ref_steps=0: an integer >= 1"),
    (
        ["trainer.posthoc_ema_stds=[0.05,0.3]"],
        "trainer.posthoc_ema_stds=[0.05, 0.3]: a list of distinct relative EMA stds in (0, 0.2887]",
    ),
    (["trainer.posthoc_ema_every=0"], "trainer.posthoc_ema_every=0: an integer >= 1"),
    (
        ["process=flow", "process.pairing=sinkhorn"],
        "process.pairing='sinkhorn': one of independent, ot",
    ),
    (["trainer.channels_last=1"], "trainer.channels_last=1: true or false"),
    (["trainer.ema_decay=1.0"], "trainer.ema_decay=1.0: a number in (0, 1), or null"),
    (["trainer.eval_every=-1"], "trainer.eval_every=-1: an integer >= 0"),
    (["trainer.eval_samples=3"], "trainer.eval_samples=3: an integer >= 4"),
    (["trainer.resume=5"], "trainer.resume=5: auto, never, or a checkpoint path"),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9]: two numbers in [0, 1)"),
    (["+optimizer.momentum=0.9"], "optimizer.momentum=0.9: unknown key; allowed: betas"),
    (  # a key the base class takes through **options is checked like the sampler's own
        ["sampler=ddim", "+sampler.stepz=5"],
        "sampler.stepz=5: unknown key; allowed: clip_x0, dynamic_threshold, eta, guidance_scale",
    ),
    (["+trainer.lr=1"], "trainer.lr=1: unknown key; allowed: batch_size"),
    (["+trainer.device=cpu"], "trainer.device='cpu': unknown key; allowed: batch_size"),
    (["optimizer.lr=0"], "optimizer.lr=0: a number > 0"),
    (["optimizer.lr=-1e-3"], "optimizer.lr=-0.001: a number > 0"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1: a number >= 0"),
    (["sampler.steps=0"], "sampler.steps=0: null or 1..schedule.timesteps=1000"),
    (["sampler.steps=2000"], "sampler.steps=2000: null or 1..schedule.timesteps=1000"),
    (["sampler=ddim", "sampler.eta=-1"], "sampler.eta=-1: a number in [0, 1]"),
    (["sampler=ddim", "sampler.eta=1.5"], "sampler.eta=1.5: a number in [0, 1]"),
    (["sampler.spacing=cubic"], "sampler.spacing='cubic': one of "),
    (["logger.mode=sometimes"], "logger.mode='sometimes': one of auto, online"),
    (["+lr=1"], "lr=1: unknown key; allowed: dataset"),
    (["model.num_classes=0"], "model.num_classes=0: an integer >= 1, or null"),
    (["model.norm_groups=3"], "model.channels=[64, 128, 256]: every width divisible by"),
    (["trainer.label_dropout=1.0"], "trainer.label_dropout=1.0: a probability in [0, 1)"),
    (["sampler.guidance_scale=-1"], "sampler.guidance_scale=-1: a number >= 0"),
    (["dataset.classes=3"], "dataset.classes=3: null or a non-empty list of digits 0..9"),
    (["dataset.classes=[1,12]"], "dataset.classes=[1, 12]: null or a non-empty list"),
]


# The fast loop checks the first case of each group; the full suite every case.
FIRST_OF_GROUP = {min(i for i, (o, _) in enumerate(INVALID) if o[-1].split(".")[0] == group)
                  for group in {o[-1].split(".")[0] for o, _ in INVALID}}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    fast_only(INVALID, lambda case: INVALID.index(case) in FIRST_OF_GROUP),
    ids=[" ".join(o) for o, _ in INVALID],
)
def test_an_invalid_config_is_one_line_naming_key_and_value(make_cfg, overrides, message):
    with pytest.raises(UserError) as err:
        validate(make_cfg("recipe=seed", *overrides))  # the seed's groups: linear, base
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_every_trainer_key_has_a_refused_value_in_the_table():
    """A new trainer key with a range gets a case above, or this fails."""
    from dataclasses import fields

    from ddpm.training.settings import TrainerSettings

    covered = {o.split("=", 1)[0].lstrip("+") for overrides, _ in INVALID for o in overrides}
    keys = {f"trainer.{f.name}" for f in fields(TrainerSettings)}
    assert sorted(keys - covered) == []


@pytest.mark.slow
def test_every_preset_and_option_is_valid(make_cfg):
    for option in [
        "model=small",
        "model=large",
        "schedule=cosine",
        "schedule=sigmoid",
        "optimizer=adam",
        "sampler=ddim",
        "sampler=dpm_solver_pp",
        "logger=none",
    ]:
        validate(make_cfg(option))
    for name in ["schedules", "lr", "model_size", "search", "cpu_budget"]:
        validate(make_cfg(f"+experiment={name}"))
    for recipe in ["seed", "fast", "cpu", "flow"]:
        validate(make_cfg(f"recipe={recipe}"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model=huge"], f"model='huge': unknown model; allowed: {MODELS}"),
        (
            ["-m", "sampler=ddim,plms"],
            "sampler='plms': unknown sampler; allowed: adaptive, consistency, ddim, ddpm",
        ),
        (["trainer.bs=1"], "Could not override 'trainer.bs'. To append to your config use"),
        (["model.channels=[1,2"], "no viable alternative at input '[1,2'"),
    ],
)
def test_the_command_line_is_checked_before_hydra_runs(argv, message):
    with pytest.raises(UserError) as err:
        check_command_line(argv)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.slow
def test_the_entry_point_prints_one_line_and_exits_nonzero(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "ddpm.run", "model=huge", f"hydra.run.dir={tmp_path / 'r'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        f"error: model='huge': unknown model; allowed: {MODELS}"
    ]
    assert not (tmp_path / "r").exists()  # nothing was written


@needs_mnist
@pytest.mark.parametrize("damage", ["truncated", "corrupt", "missing"])
def test_damaged_mnist_files_are_one_clear_line(tmp_path, damage):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(DATA_ROOT / "MNIST" / "raw" / name, raw / name)
    target = raw / "train-images-idx3-ubyte"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:100_000])
    elif damage == "corrupt":
        target.write_bytes(b"\x00\x01\x02\x03" * 1000)
    else:
        target.unlink()
    with pytest.raises(UserError) as err:
        mnist(tmp_path, download=False)
    text = str(err.value)
    assert "\n" not in text and str(raw) in text and "train-images-idx3-ubyte" in text


def test_naming_a_model_changes_the_model_and_nothing_else(make_cfg) -> None:
    """No hidden recipe switch: the defaults list alone picks every default."""
    from omegaconf import OmegaConf

    bare = OmegaConf.to_container(make_cfg(), resolve=True)
    for option in ("small", "base", "large"):
        named = OmegaConf.to_container(make_cfg(f"model={option}"), resolve=True)
        assert {k for k in bare if bare[k] != named[k]} <= {"model"}, option
    assert bare["trainer"]["max_minutes"] == 30  # the default run is bounded


def test_recipes_compose_to_their_settings(make_cfg) -> None:
    cpu = make_cfg()  # the default recipe: rectified flow, logit-normal times, res_tiny, batch 64
    assert cpu.model._target_.endswith("ResUNet") and list(cpu.model.channels) == [16, 32, 64]
    assert cpu.model.dropout == 0 and cpu.model.prediction == "eps"
    assert cpu.process._target_.endswith("FlowProcess")
    assert (cpu.process.time_sampling, cpu.process.logit_mean, cpu.process.logit_std) == (
        "logit_normal",
        0.0,
        1.0,
    )
    assert (cpu.optimizer.lr, cpu.trainer.ema_decay, cpu.trainer.max_minutes) == (1e-3, 0.999, 30)
    assert cpu.trainer.batch_size == 64
    ddpm = make_cfg("recipe=ddpm")  # the default before: DDPM (eps, cosine) at batch 128
    assert ddpm.process._target_.endswith("DDPMProcess")
    assert ddpm.schedule._target_.endswith("cosine") and ddpm.trainer.batch_size == 128
    assert list(ddpm.model.channels) == [16, 32, 64] and ddpm.optimizer.lr == 1e-3
    assert (ddpm.trainer.ema_decay, ddpm.trainer.max_minutes) == (0.999, 30)
    flow = make_cfg("recipe=flow")  # the default at batch 128
    assert flow.process == cpu.process and flow.trainer.batch_size == 128
    assert (flow.model, flow.optimizer) == (cpu.model, cpu.optimizer)
    fast = make_cfg("recipe=fast")  # the same with the quarter-width seed net
    assert fast.model._target_.endswith(".UNet") and list(fast.model.channels) == [32, 64, 128]
    assert (fast.optimizer.lr, fast.trainer.ema_decay) == (1e-3, 0.999)
    seed = make_cfg("recipe=seed")  # the study note's recipe, model base included
    assert list(seed.model.channels) == [64, 128, 256]
    assert seed.schedule._target_.endswith("linear")
    assert seed.sampler._target_.endswith("AncestralSampler") and seed.sampler.steps is None
    assert (seed.optimizer.lr, seed.trainer.ema_decay, seed.trainer.max_minutes) == (
        2e-4,
        None,
        None,
    )
    mixed = make_cfg("model=base")  # the command line wins over the recipe's model only
    assert list(mixed.model.channels) == [64, 128, 256] and mixed.optimizer.lr == 1e-3


def test_the_gpu_recipe_composes_to_its_settings_and_needs_a_gpu(make_cfg) -> None:
    import torch

    from ddpm.configs.run_config import build_parts, validate
    from ddpm.errors import UserError

    gpu = make_cfg("recipe=gpu")
    assert gpu.model._target_.endswith("ResUNet") and list(gpu.model.channels) == [64, 128, 128]
    assert gpu.schedule._target_.endswith("cosine")
    trainer = gpu.trainer
    assert (trainer.batch_size, trainer.precision, trainer.compile) == (
        256,
        "bf16",
        "reduce-overhead",
    )
    assert (trainer.max_minutes, trainer.ema_decay, gpu.device) == (10, 0.9995, "cuda")
    optimizer = build_parts(make_cfg("recipe=gpu", "device=cpu")).optimizer
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 * 2**0.5, rel=1e-12)  # sqrt rule
    if not torch.cuda.is_available():  # one line, before anything is built
        with pytest.raises(UserError, match=r"^device='cuda': no CUDA device here"):
            validate(gpu)


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_the_lr_follows_the_batch_size_by_the_stated_rule(make_cfg, rule, factor):
    from ddpm.configs.run_config import build_parts

    cfg = make_cfg("recipe=seed", "trainer.batch_size=512", f"trainer.lr_batch_rule={rule}")
    optimizer = build_parts(cfg).optimizer
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 * factor, rel=1e-12)
