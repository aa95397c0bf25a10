"""The benchmark times the training loop's own step, and its table adds up."""

import pytest
import torch
from conftest import TINY, needs_mnist

from ddpm.configs.presets import preset
from ddpm.errors import UserError

BENCH = [
    *TINY,
    "bench.train_steps=1",
    "bench.warmup=1",
    "bench.rounds=1",
    "bench.sample_images=2",
    "bench.ancestral_steps_timed=2",
    "sampler.steps=2",
]


@pytest.fixture
def make_bench_cfg():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ddpm.configs.presets import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda *o: compose(config_name="bench", overrides=[*BENCH, *o])
    GlobalHydra.instance().clear()


@needs_mnist
def test_every_pipeline_and_variant_runs_the_loops_own_step(make_bench_cfg, monkeypatch):
    import ddpm.bench
    from ddpm.models.flops import flops_per_image
    from ddpm.training.step import make_train_step

    built = []

    def counting(state, schedule, settings, device, *args):
        built.append((settings.precision, settings.compile))
        return make_train_step(state, schedule, settings, device, *args)

    monkeypatch.setattr(ddpm.bench, "make_train_step", counting)
    cfg = make_bench_cfg("bench.variants=[fp32,bf16,graphed]")
    result = ddpm.bench.bench(cfg)
    # one step per variant that can run on a CPU, one per process, then the reference and ours
    assert built == [("fp32", False), ("bf16", False)] + [("fp32", False)] * 3 + [
        ("fp32", False),
        ("fp32", False),
    ]
    assert [r["process"] for r in result["processes"]] == ["ddpm", "flow", "edm"]
    assert result["processes"][0]["vs_first"] == 1.0
    for row in result["processes"]:
        ddpm_rate = result["processes"][0]["images_per_s"]
        assert row["vs_first"] == pytest.approx(row["images_per_s"] / ddpm_rate)
    fp32, bf16, graphed = result["variants"]
    model = preset("model", "base", channels=[16, 32])
    flops = flops_per_image(model, (1, 28, 28))["forward_backward"]
    for row in (fp32, bf16):
        assert row["flops_per_image"] == flops
        assert row["seconds_per_epoch"] == pytest.approx(60000 / row["images_per_s"])
        assert row["achieved_tflops"] == pytest.approx(row["images_per_s"] * flops / 1e12)
    assert graphed["skipped"] == "CUDA graphs need a CUDA device"
    forward = flops_per_image(model, (1, 28, 28))["forward"]
    train = 1e3 * fp32["achieved_tflops"]
    assert [(r["call_batch"], r["layout"]) for r in result["sampling"]] == [
        (n, layout) for layout in ("contiguous", "channels_last") for n in (32, 128, 500)
    ]
    for row in result["sampling"]:
        assert row["gflops"] == pytest.approx(row["images_per_s"] * forward / 1e9)
        assert row["vs_training_step"] == pytest.approx(row["gflops"] / train)
    assert result["train_ratio"] == pytest.approx(
        result["train_images_per_s"]["ours"] / result["train_images_per_s"]["reference"]
    )


def test_an_unknown_variant_is_one_line(make_bench_cfg):
    from ddpm.bench import variant_table

    with pytest.raises(
        UserError, match=r"^bench.variants=\[.fp8.\]: a list of fp32, channels_last"
    ):
        variant_table(make_bench_cfg("bench.variants=[fp8]"), torch.device("cpu"), iter, 1)


def test_an_unknown_process_in_the_table_is_one_line(make_bench_cfg):
    from ddpm.bench import process_table

    with pytest.raises(
        UserError, match=r"^bench.processes=\['vp'\]: a list of ddpm, edm, flow, meanflow$"
    ):
        process_table(make_bench_cfg("bench.processes=[vp]"), torch.device("cpu"), iter)


def test_another_dataset_is_one_line(make_bench_cfg):
    from ddpm.bench import bench

    with pytest.raises(UserError) as err:
        bench(make_bench_cfg("dataset=cifar10"))
    assert str(err.value) == (
        "dataset='cifar10': mnist only: the reference side is the seed's MNIST DataLoader pipeline"
    )


def test_a_process_that_refuses_the_model_is_skipped_with_its_reason(make_bench_cfg):
    from ddpm.bench import process_table

    def batches():
        return iter(lambda: torch.rand(4, 1, 28, 28) * 2 - 1, None)

    rows = process_table(make_bench_cfg("model.prediction=v"), torch.device("cpu"), batches)
    ddpm, flow, edm = rows
    assert ddpm["process"] == "ddpm" and ddpm["vs_first"] == 1.0 and ddpm["images_per_s"] > 0
    for row in (flow, edm):
        assert row["skipped"].startswith("model.prediction='v': eps (the default)")
