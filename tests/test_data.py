import pytest
import torch
from conftest import DATA_ROOT, needs_mnist

from ddpm.data import batch_stream, mnist
from ddpm.errors import UserError


def test_each_epoch_visits_every_item_once_in_a_new_order():
    stream = batch_stream(10, 4, seed=3)
    epochs = {0: [], 1: []}
    for _ in range(6):  # 3 batches per epoch: 4 + 4 + 2
        epoch, idx = next(stream)
        epochs[epoch].append(idx)
    for batches in epochs.values():
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))


def test_a_stream_can_start_where_another_left_off():
    full = batch_stream(10, 4, seed=1)
    seen = [next(full) for _ in range(7)]
    resumed = batch_stream(10, 4, seed=1, start_step=5)
    for epoch, idx in seen[5:]:
        e, i = next(resumed)
        assert e == epoch and torch.equal(i, idx)


@needs_mnist
def test_mnist_is_one_tensor_in_model_range():
    ds = mnist(DATA_ROOT, train=False, download=False)
    assert ds.images.shape == (10_000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.images.min().item() == -1.0 and ds.images.max().item() == 1.0
    # 0 -> -1 and 255 -> 1 exactly, as ToTensor + Normalize(0.5, 0.5) would map them.
    assert ds.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_missing_mnist_says_where_to_put_the_files(tmp_path):
    with pytest.raises(UserError) as err:
        mnist(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    for name in ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "DDPM_DATA_ROOT"]:
        assert name in msg
    assert not (tmp_path / "nowhere").exists()
