import pytest
import torch

from gifcli.data.datasets import DatasetSpec, ImageTensors, Split, batches, load_data, train_validation_indices
from gifcli.errors import UsageError


def test_image_tensors_normalise_as_written():
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)  # (1, 1, 2, 2)
    ds = ImageTensors(images, torch.tensor([3]), mean=(0.5,), std=(0.25,))
    x, y = ds[[0]]
    torch.testing.assert_close(x, ((images.float() / 255) - 0.5) / 0.25)
    assert y.tolist() == [3]
    rgb = ImageTensors(images, torch.tensor([3]), mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0), channels=3)
    x3, _ = rgb[[0]]
    assert x3.shape == (1, 3, 2, 2)
    for c, (m, s) in enumerate(((0.1, 1.0), (0.2, 2.0), (0.3, 4.0))):
        torch.testing.assert_close(x3[0, c], (images[0, 0].float() / 255 - m) / s)


def test_validation_split_is_fixed_and_disjoint():
    fit, val = train_validation_indices(60000)
    assert len(val) == 5000 and len(fit) == 55000
    assert not set(fit.tolist()) & set(val.tolist())
    fit2, val2 = train_validation_indices(60000)
    assert torch.equal(val, val2)
    fit_small, val_small = train_validation_indices(600)
    assert len(val_small) == 60


def test_batches_walk_every_sample_once_in_order():
    ds = ImageTensors(torch.arange(10, dtype=torch.float32).view(10, 1), torch.arange(10))
    split = Split.of(ds).where(torch.tensor([1, 3, 4, 8, 9]))
    seen = torch.cat([y for _, y in batches(split, batch_size=2)])
    assert seen.tolist() == [1, 3, 4, 8, 9]
    relabelled = split.relabel(torch.zeros(5, dtype=torch.int64))
    assert torch.cat([y for _, y in batches(relabelled, 3)]).tolist() == [0] * 5
    assert split.sample(3, seed=0).indices.tolist() == sorted(split.sample(3, seed=0).indices.tolist())


def test_dataset_specs_are_checked():
    assert DatasetSpec.parse("mnist").name == "mnist"
    for bad in ("imagenet", "imagefolder", "mnist:/tmp/x"):
        with pytest.raises(UsageError):
            DatasetSpec.parse(bad)
    with pytest.raises(UsageError):
        DatasetSpec.parse("mnist", channels=2)


def test_mnist_with_three_channels(fake_mnist):
    one = load_data(DatasetSpec.parse("mnist"), str(fake_mnist))
    three = load_data(DatasetSpec.parse("mnist", channels=3), str(fake_mnist))
    x1, _ = one.train[[0, 1]]
    x3, _ = three.train[[0, 1]]
    assert three.input_shape == (3, 28, 28) and three.spec.mean == (0.1307,) * 3
    for c in range(3):
        torch.testing.assert_close(x3[:, c], x1[:, 0])
