"""Datasets beyond MNIST: Fashion-MNIST (Debian's files), CIFAR-10 (synthetic files in its
format), image folders (PNGs written here); the model following the dataset; training,
sampling, denoising and evaluating on each."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF, TINY, fast_only
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from ddpm.configs.presets import preset
from ddpm.configs.run_config import validate
from ddpm.data import ImageFolder, load_dataset
from ddpm.errors import UserError

FASHION = Path("/usr/share/datasets/fashion-mnist")
HAVE_FASHION = (FASHION / "t10k-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION,
    reason=f"no Fashion-MNIST in {FASHION} (apt-get install dataset-fashion-mnist)",
)
# TINY without its MNIST-only dataset keys (each test names its own dataset and root).
TINY_ANY = [o for o in TINY if not o.startswith("dataset.")]
PRESETS = ["small", "base", "large", "res_tiny", "res_small", "res_base", "res_large"]

pytestmark = pytest.mark.usefixtures("one_thread")


def compose_config(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---- Fashion-MNIST -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """torchvision's layout, <root>/FashionMNIST/raw/, linking Debian's gzipped files."""
    if not HAVE_FASHION:
        pytest.skip(f"no Fashion-MNIST in {FASHION} (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("fashion")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in FASHION.glob("*-ubyte.gz"):
        (raw / packed.name).symlink_to(packed)
    return root


@needs_fashion
def test_fashion_mnist_reads_debians_gzipped_files(fashion_root):
    ds = preset("dataset", "fashion_mnist", root=fashion_root, train=False, download=False).load()
    assert ds.name == "fashion_mnist" and ds.images.shape == (10_000, 1, 28, 28)
    assert ds.images.dtype == torch.float32
    assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
    assert ds.labels[:6].tolist() == [9, 2, 1, 1, 6, 1]  # ankle boot, pullover, trousers, ...
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert (fashion_root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()

    padded = preset(
        "dataset", "fashion_mnist", root=fashion_root, train=False, download=False, image_size=32
    ).load()
    assert padded.images.shape == (10_000, 1, 32, 32)
    assert torch.equal(padded.images[:, :, 2:30, 2:30], ds.images)
    assert (padded.images[:, :, :2] == -1).all() and (padded.images[:, :, :, 30:] == -1).all()

    two = preset(
        "dataset", "fashion_mnist", root=fashion_root, train=False, download=False, classes=[0, 9]
    ).load()
    assert len(two) == 2000 and set(two.labels.tolist()) == {0, 9}


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    msg = one_line_error(
        preset("dataset", "fashion_mnist", root=tmp_path / "none", download=False).load
    )
    assert str(tmp_path / "none" / "FashionMNIST" / "raw") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "t10k-labels-idx1-ubyte" in msg
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 3}, "dataset.channels=3: 1 (fashion_mnist is grey)"),
        ({"image_size": 30 + 1}, "dataset.image_size=31: an even integer >= 28"),
        ({"image_size": 24}, "dataset.image_size=24: an even integer >= 28"),
        ({"num_classes": 5}, "dataset.num_classes=5: 10 (fashion_mnist)"),
        ({"classes": [10]}, "dataset.classes=[10]: null or a non-empty list of classes 0..9"),
        ({"max_gib": 0}, "dataset.max_gib=0: a number > 0 (GiB)"),
    ],
)
def test_bad_fashion_mnist_settings_are_one_line(kwargs, message):
    msg = one_line_error(preset, "dataset", "fashion_mnist", root="data", **kwargs)
    assert msg.startswith(message)


@needs_fashion
def test_a_split_beyond_the_memory_bound_is_refused(fashion_root):
    msg = one_line_error(
        preset("dataset", "fashion_mnist", root=fashion_root, download=False, max_gib=0.1).load
    )
    # 60000 x 1 x 28 x 28 x 4 bytes = 0.175 GiB
    assert msg.startswith("dataset.max_gib=0.1: ") and "60000 images of 1x28x28, 0.18 GiB" in msg


# ---- CIFAR-10 (synthetic files in its pickle format) -------------------------------------------


def write_cifar(root: Path, per_batch: int = 4, test: int = 6, seed: int = 0) -> Path:
    """Five train batches, a test batch and batches.meta as the official python pickles hold
    them: ``data`` (N, 3072) uint8, the R, G and B planes row by row; ``labels`` a list."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(i * per_batch + j) % 10 for j in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    names10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [*names10, "ship", "truck"]}, f)
    return root


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    return write_cifar(tmp_path / "cifar")


def test_cifar10_reads_its_pickles_pixel_for_pixel(cifar_root):
    ds = preset("dataset", "cifar10", root=cifar_root, download=False, checksums=False).load()
    assert ds.name == "cifar10" and ds.images.shape == (20, 3, 32, 32)
    assert ds.labels.tolist() == [i % 10 for i in range(20)]
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        raw = pickle.load(f)["data"]  # the 5th..8th images
    planes = torch.from_numpy(raw[1]).reshape(3, 32, 32).float()
    assert torch.equal(ds.images[5], planes / 255 * 2 - 1)

    test = preset(
        "dataset", "cifar10", root=cifar_root, train=False, download=False, checksums=False
    ).load()
    assert test.images.shape == (6, 3, 32, 32)
    grey = preset(
        "dataset", "cifar10", root=cifar_root, download=False, checksums=False, channels=1
    ).load()
    luma = 0.299 * ds.images[:, 0] + 0.587 * ds.images[:, 1] + 0.114 * ds.images[:, 2]
    assert grey.images.shape == (20, 1, 32, 32)
    assert torch.allclose(grey.images[:, 0], luma, atol=1e-6)
    big = preset(
        "dataset", "cifar10", root=cifar_root, download=False, checksums=False, image_size=36
    ).load()
    assert torch.equal(big.images[:, :, 2:34, 2:34], ds.images)


def test_cifar10_checks_the_official_checksums_by_default(cifar_root):
    msg = one_line_error(preset("dataset", "cifar10", root=cifar_root, download=False).load)
    assert msg.startswith(f"dataset.root={str(cifar_root)!r}: CIFAR-10 is missing or unreadable")
    assert "corrupted" in msg and "cifar-10-batches-py" in msg


def test_a_damaged_cifar10_file_is_one_line(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    msg = one_line_error(
        preset("dataset", "cifar10", root=cifar_root, download=False, checksums=False).load
    )
    assert "CIFAR-10 is missing or unreadable in" in msg


def test_missing_cifar10_names_the_files(tmp_path):
    msg = one_line_error(preset("dataset", "cifar10", root=tmp_path / "none", download=False).load)
    assert str(tmp_path / "none" / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "batches.meta" in msg and "DDPM_DATA_ROOT" in msg
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 4}, "dataset.channels=4: 3 (RGB) or 1 (grey)"),
        ({"image_size": 28}, "dataset.image_size=28: an even integer >= 32"),
        ({"num_classes": 100}, "dataset.num_classes=100: 10 (cifar10)"),
        ({"checksums": "no"}, "dataset.checksums='no': true or false"),
    ],
)
def test_bad_cifar10_settings_are_one_line(kwargs, message):
    assert one_line_error(preset, "dataset", "cifar10", root="data", **kwargs).startswith(message)


# ---- image folders ---------------------------------------------------------------------------


def solid(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Two classes, PNG and JPEG, three sizes (resized and cropped to one)."""
    root = tmp_path / "pets"
    solid(root / "cat" / "a.png", (40, 30), (255, 0, 0))
    solid(root / "cat" / "b.png", (32, 32), (0, 255, 0))
    solid(root / "cat" / "c.PNG", (64, 64), (0, 0, 255))
    solid(root / "dog" / "d.png", (20, 50), (255, 255, 255))
    solid(root / "dog" / "e.jpg", (32, 32), (0, 0, 0))
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_an_image_folder_with_classes(class_folder):
    ds = preset("dataset", "image_folder", root=class_folder, image_size=16).load()
    assert ds.name == "image_folder" and ds.images.shape == (5, 3, 16, 16)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]  # cat, dog: sorted folder names
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, 16, 16)
    assert torch.equal(ds.images[0], red)  # a solid image stays exactly its colour
    assert torch.equal(ds.images[3], torch.ones(3, 16, 16))
    assert ds.images[4].abs().max() <= 1 and ds.images[4].mean() < -0.95  # JPEG black

    grey = preset(
        "dataset", "image_folder", root=class_folder, image_size=16, channels=1, num_classes=2
    ).load()
    assert grey.images.shape == (5, 1, 16, 16)
    assert grey.images[0, 0, 0, 0].item() == pytest.approx(76 / 255 * 2 - 1)  # L of red: 76
    node = OmegaConf.load(CONF / "dataset" / "image_folder.yaml")
    node.root, node.image_size, node.train = str(class_folder), 16, False
    assert torch.equal(load_dataset(node).images, ds.images)


def test_resize_then_centre_crop(tmp_path):
    img = Image.new("RGB", (80, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # a white left quarter: cropped away (40x10
    # after the resize, columns 15..24 kept)
    img.save(tmp_path / "wide.png")
    ds = preset("dataset", "image_folder", root=tmp_path, image_size=10).load()
    assert ds.images.shape == (1, 3, 10, 10) and ds.images.max().item() == -1.0


def test_a_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        solid(tmp_path / f"{i}.png", (8, 8), (10 * i, 0, 0))
    ds = preset("dataset", "image_folder", root=tmp_path, image_size=8).load()
    assert ds.labels.tolist() == [0, 0, 0] and ImageFolder.num_classes is None
    msg = one_line_error(
        preset("dataset", "image_folder", root=tmp_path, image_size=8, num_classes=3).load
    )
    assert msg.startswith("dataset.num_classes=3: ") and "flat folder" in msg


def test_bad_image_folders_are_one_line_naming_the_folder_or_file(tmp_path, class_folder):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert one_line_error(preset("dataset", "image_folder", root=empty).load) == (
        f"dataset.root={str(empty)!r}: no images (.png, .jpg, .jpeg) in it or in its sub-folders"
    )
    missing = tmp_path / "missing"
    assert (
        one_line_error(preset("dataset", "image_folder", root=missing).load)
        == f"dataset.root={str(missing)!r}: no such folder"
    )

    broken = class_folder / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    msg = one_line_error(preset("dataset", "image_folder", root=class_folder).load)
    assert msg.startswith(f"dataset file {str(broken)!r}: not a readable image")
    broken.unlink()

    msg = one_line_error(
        preset("dataset", "image_folder", root=class_folder, image_size=32, resize=False).load
    )
    assert msg.startswith(f"dataset file {str(class_folder / 'cat' / 'a.png')!r}: 40x30, not 32x32")

    msg = one_line_error(preset("dataset", "image_folder", root=class_folder, num_classes=3).load)
    assert msg == f"dataset.num_classes=3: {class_folder} has 2 class folders (cat, dog)"

    solid(class_folder / "stray.png", (8, 8), (0, 0, 0))
    msg = one_line_error(preset("dataset", "image_folder", root=class_folder).load)
    assert "holds both images and class folders (cat, dog); use one layout" in msg

    (class_folder / "stray.png").unlink()
    msg = one_line_error(
        preset("dataset", "image_folder", root=class_folder, image_size=1024, max_gib=0.01).load
    )
    assert msg.startswith("dataset.max_gib=0.01: ") and "5 images of 3x1024x1024" in msg


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "dataset.root=None: the folder of images (dataset.root=DIR)"),
        ({"root": "x", "channels": 2}, "dataset.channels=2: 3 (RGB) or 1 (grey)"),
        ({"root": "x", "image_size": 2}, "dataset.image_size=2: an integer >= 4"),
        ({"root": "x", "num_classes": 0}, "dataset.num_classes=0: null (no labels used)"),
        ({"root": "x", "resize": "yes"}, "dataset.resize='yes': true or false"),
    ],
)
def test_bad_image_folder_settings_are_one_line(kwargs, message):
    assert one_line_error(preset, "dataset", "image_folder", **kwargs).startswith(message)


# ---- the model follows the dataset -------------------------------------------------------------


@pytest.mark.parametrize("option", fast_only(PRESETS, lambda o: o in ("small", "res_tiny")))
@pytest.mark.parametrize(
    ("dataset", "shape"),
    [
        (["dataset=mnist"], (1, 28)),
        (["dataset=fashion_mnist", "dataset.image_size=32"], (1, 32)),
        (["dataset=cifar10"], (3, 32)),
        (["dataset=image_folder", "dataset.root=x", "dataset.channels=1"], (1, 32)),
        (["dataset=image_folder", "dataset.root=x", "dataset.image_size=28"], (3, 28)),
    ],
)
def test_every_preset_follows_the_dataset(option, dataset, shape):
    cfg = compose_config("config", f"model={option}", *dataset)
    assert (cfg.model.in_channels, cfg.model.image_size) == shape
    assert cfg.model.num_classes is None
    validate(cfg)


def test_a_conditional_model_can_follow_the_dataset_classes():
    cfg = compose_config(
        "config", "dataset=image_folder", "dataset.root=x", "dataset.num_classes=4",
        "model.num_classes=${dataset.num_classes}",
    )  # fmt: skip
    assert cfg.model.num_classes == 4


def test_mnist_refuses_three_channels_in_one_line():
    cfg = compose_config("config", "dataset.channels=3")
    assert one_line_error(validate, cfg).startswith("dataset.channels=3: 1 (mnist is grey)")


def test_resunet_attention_levels_are_checked():
    res = ("model", "res_base")
    msg = one_line_error(preset, *res, channels=[8, 16], attention_levels=[2], norm_groups=4)
    assert msg == "model.attention_levels=[2]: a list of levels 0..1 (0 = full size), or []"
    msg = one_line_error(preset, *res, attention_levels=[1], attention_resolutions=[14])
    assert msg.startswith("model.attention_levels=[1]: null when model.attention_resolutions")
    lowest = {"attention_levels": None, "time_dim": None}  # null: attention at the lowest level
    net = preset("model", "res_base", channels=[8, 16], norm_groups=4, image_size=8, **lowest)
    assert net.attention_resolutions == [4]


# ---- training, sampling, denoising, evaluating on each dataset ---------------------------------


def train(run_dir: Path, *overrides: str) -> Path:
    from ddpm.run import run

    run(compose_config("config", *TINY_ANY, *overrides), run_dir)
    return run_dir


def grid_colours(run_dir: Path) -> tuple[str, bool]:
    """The last grid's PIL mode and whether any pixel has R != G (colour, not grey)."""
    grid = sorted((run_dir / "samples").glob("grid_*.png"))[-1]
    pixels = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    return Image.open(grid).mode, bool((pixels[..., 0] != pixels[..., 1]).any())


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> Path:
    """24 colour PNGs (noise of six hues) in two class folders."""
    root = tmp_path_factory.mktemp("rgb_folder")
    rng = np.random.default_rng(0)
    for i in range(24):
        pixels = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
        pixels[..., i % 3] = 255
        path = root / ("warm" if i % 2 else "cool") / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(path)
    return root


@pytest.mark.slow
def test_an_rgb_image_folder_trains_at_32_with_no_model_override(rgb_folder, tmp_path):
    from ddpm.runs.checkpoint import load

    run_dir = train(
        tmp_path / "run",
        "dataset=image_folder",
        f"dataset.root={rgb_folder}",
        "dataset.image_size=32",
        "dataset.channels=3",
    )
    state = load(run_dir / "checkpoints" / "last.pt")
    assert (
        state["config"]["model"]["in_channels"] == 3
        and state["config"]["model"]["image_size"] == 32
    )
    assert grid_colours(run_dir) == ("RGB", True)
    progress = np.asarray(Image.open(run_dir / "samples" / "progress.png").convert("RGB"))
    assert (progress[..., 0].astype(int) != progress[..., 2]).any()

    from ddpm.denoise import run_denoise

    cfg = compose_config(
        "denoise", f"run_dir={run_dir}", "noise_std=[0.3]", "num_images=2", "num_eval=4",
        "sampler.steps=2", "device=cpu",
    )  # fmt: skip
    info = run_denoise(cfg, "ddim")
    assert info["levels"][0]["noise_std"] == 0.3
    assert Image.open(Path(info["out_dir"]) / "denoise.png").mode == "RGBA"

    from ddpm.evaluate.command import evaluate_run

    cfg = compose_config(
        "evaluate", f"run_dir={run_dir}", "num_samples=8", "sampler.steps=2", "device=cpu",
        "progress=false", "wandb=false",
    )  # fmt: skip
    msg = one_line_error(evaluate_run, cfg, "ddim")
    assert msg.startswith("features='classifier': no trained evaluator for image folders")
    eval_msg = one_line_error(
        train, tmp_path / "again", "dataset=image_folder", f"dataset.root={rgb_folder}",
        "trainer.eval_every=2",
    )  # fmt: skip
    assert eval_msg.startswith("trainer.eval_every=2: no trained evaluator for image folders")
    assert "(one is trained for mnist, fashion_mnist, cifar10 only)" in msg
    assert "apply with features=inception" in msg and "label_accuracy do not apply" in msg


@pytest.mark.slow
def test_a_synthetic_cifar10_trains_samples_labels_and_evaluates(tmp_path, monkeypatch):
    from ddpm.evaluate import cache
    from ddpm.evaluate.command import evaluate_run
    from ddpm.sample import sample

    root = write_cifar(tmp_path / "data", per_batch=8, test=20)
    run_dir = train(
        tmp_path / "run",
        "dataset=cifar10",
        f"dataset.root={root}",
        "dataset.download=false",
        "dataset.checksums=false",
        "model.num_classes=${dataset.num_classes}",
    )
    assert grid_colours(run_dir) == ("RGB", True)

    cfg = compose_config(
        "sample", f"run_dir={run_dir}", "label=3", "num_samples=4", "sampler.steps=2",
        "device=cpu", "progress=false",
    )  # fmt: skip
    info = sample(cfg, "ddim")
    assert info["labels"] == [3, 3, 3, 3]
    assert torch.load(Path(info["out_dir"]) / "samples.pt").shape == (4, 3, 32, 32)

    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose_config(
        "evaluate", f"run_dir={run_dir}", "num_samples=10", "sampler.steps=2", "device=cpu",
        "progress=false", "wandb=false",
    )  # fmt: skip
    result = evaluate_run(cfg, "ddim")  # builds the cifar10 evaluator from the synthetic files
    folder = tmp_path / "cache" / "evaluator" / "cifar10"
    assert result["evaluator"]["dataset"] == "cifar10"
    assert result["evaluator"]["features"] == "classifier"
    assert result["evaluator"]["dir"] == str(folder)
    assert {"fid", "kid", "precision", "recall", "label_accuracy"} <= set(result["metrics"])
    model, reference = cache.load_evaluator(build_missing=False, dataset="cifar10")
    assert model.arch()["in_channels"] == 3 and model.arch()["image_size"] == 32
    assert model.meta["dataset"] == "cifar10" and reference.features.shape == (20, 128)
    saved = json.loads((run_dir / "eval" / "ddim_2_n10_w1.json").read_text())
    assert saved["evaluator"] == result["evaluator"]

    # the MNIST evaluator keeps its folder; asking it to score CIFAR-10 is one line
    shutil.copytree(folder, tmp_path / "cache" / "other")
    msg = one_line_error(cache.load_evaluator, tmp_path / "cache" / "other", dataset="mnist")
    assert "trained on cifar10, not mnist" in msg

    cfg.features = "inception"
    msg = one_line_error(evaluate_run, cfg, "ddim")
    assert msg.startswith("features='inception': needs ")
    assert "weights-inception-2015-12-05-6726825d.pth" in msg
    assert str(tmp_path / "cache" / "inception") in msg


@needs_fashion
@pytest.mark.slow
def test_fashion_mnist_trains_with_no_model_override(fashion_root, tmp_path):
    run_dir = train(
        tmp_path / "run", "dataset=fashion_mnist", f"dataset.root={fashion_root}",
        "dataset.download=false",
    )  # fmt: skip
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["dataset"]["_target_"] == "ddpm.data.idx.FashionMnist"
    assert (state["config"]["model"]["in_channels"], state["config"]["model"]["image_size"]) == (
        1,
        28,
    )
    assert grid_colours(run_dir) == ("RGB", False)  # grey, saved as RGB by torchvision


def test_a_model_forced_off_the_dataset_is_one_line(tmp_path, cifar_root):
    from ddpm.run import run

    cfg = compose_config(
        "config", *TINY_ANY, "dataset=cifar10", f"dataset.root={cifar_root}",
        "dataset.download=false", "dataset.checksums=false", "model.in_channels=1",
    )  # fmt: skip
    msg = one_line_error(run, cfg, tmp_path / "run")
    assert msg == ("model.image_size/in_channels=(1, 32, 32): the dataset's images are (3, 32, 32)")


def test_an_evaluator_refuses_images_of_another_shape_in_one_line():
    from ddpm.evaluate.classifier import Classifier
    from ddpm.evaluate.metrics import extract

    rgb = Classifier(width=8, feature_dim=16, in_channels=3, image_size=32).eval()
    features, logits = extract(rgb, torch.zeros(5, 3, 32, 32))
    assert features.shape == (5, 16) and logits.shape == (5, 10)
    msg = one_line_error(extract, Classifier(width=8, feature_dim=16), torch.zeros(5, 1, 32, 32))
    assert msg.startswith("images of (1, 32, 32): the mnist evaluator takes (1, 28, 28)")


class Nameless:
    """A dataset class that declares no ``name``: it has no evaluator of its own."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root


def test_a_dataset_without_a_declared_evaluator_is_never_scored_on_mnists():
    from ddpm.errors import UserError
    from ddpm.evaluate.cache import dataset_of, evaluator_for

    node = {"_target_": f"{__name__}.Nameless", "root": None}
    assert dataset_of(node)[0] == f"{__name__}.Nameless"  # not "mnist"
    with pytest.raises(UserError) as err:
        evaluator_for(node, "trainer.eval_every", 5)
    assert str(err.value).startswith(
        f"trainer.eval_every=5: no trained evaluator for {__name__}.Nameless"
    )
    assert evaluator_for({"_target_": "ddpm.data.Mnist"}, "features", "classifier")[0] == "mnist"
    assert (
        evaluator_for(None, "features", "classifier")[0] == "mnist"
    )  # checkpoints before datasets
