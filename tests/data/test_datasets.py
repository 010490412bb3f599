import pytest
import torch

from gifcli.data.datasets import (DatasetSpec, ImageTensors, Split, batches, concat, load_data,
                                  train_validation_indices)
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


def test_concat_of_two_datasets_yields_both_in_order():
    """Splits over different datasets (a gif tensor set and a plain per-sample dataset, as the Python
    API's retained and forget loaders give) join into one split: a's samples, then b's."""
    xa, ya = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    xb, yb = -torch.arange(3 * 4, dtype=torch.float32).reshape(3, 1, 2, 2), torch.tensor([2, 2, 0])
    a = Split.of(ImageTensors(xa, ya), torch.tensor([4, 1]))
    b = Split.of(torch.utils.data.TensorDataset(xb, yb), torch.tensor([2, 0]))
    joined = concat(a, b)
    x, y = torch.cat([xb for xb, _ in batches(joined, 3)]), torch.cat([yb for _, yb in batches(joined, 3)])
    torch.testing.assert_close(x, torch.cat([xa[[4, 1]], xb[[2, 0]]]))
    assert y.tolist() == [1, 1, 0, 2] and joined.labels.tolist() == [1, 1, 0, 2]


def test_tensor_file_statistics_are_exact_and_the_same_on_any_thread_count(tmp_path):
    """The mean/std gif computes for a uint8 tensors file is recorded in every checkpoint and
    forget set made from it: it must not depend on the reduction order (thread count)."""
    from fractions import Fraction

    from gifcli.data.tensorfile import write_tensors

    gen = torch.Generator().manual_seed(0)
    tx = torch.randint(0, 256, (300, 2, 9, 9), generator=gen, dtype=torch.uint8)
    ty = torch.randint(0, 3, (300,), generator=gen)
    path = tmp_path / "d.safetensors"
    write_tensors(path, tx, ty, tx[:10].clone(), ty[:10].clone())
    threads = torch.get_num_threads()
    try:
        got = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            spec = load_data(DatasetSpec.parse(f"tensors:{path}")).spec
            got.append((spec.mean, spec.std))
    finally:
        torch.set_num_threads(threads)
    assert got[0] == got[1] == got[2]
    for c in range(2):  # by hand, in exact rationals: sum(v) / n / 255 and the unbiased variance
        v = [int(a) for a in tx[:, c].reshape(-1).tolist()]
        n, s1, s2 = len(v), sum(v), sum(a * a for a in v)
        mean = Fraction(s1, n * 255)
        var = Fraction(n * s2 - s1 * s1, n * (n - 1) * 255 * 255)
        assert got[0][0][c] == float(mean)
        assert abs(got[0][1][c] - float(var) ** 0.5) <= 1e-15


def test_a_computed_mean_or_std_matches_its_record_to_rounding_only(tmp_path):
    from gifcli.data.tensorfile import write_tensors
    from gifcli.errors import UsageError as Usage

    tx = torch.randint(0, 256, (50, 1, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    ty = torch.arange(50) % 2
    path = tmp_path / "d.safetensors"
    write_tensors(path, tx, ty, tx[:5].clone(), ty[:5].clone())
    data = load_data(DatasetSpec.parse(f"tensors:{path}"))
    record = data.record()
    nudged = {**record, "std": [record["std"][0] * (1 + 3e-10)]}  # another machine's last digits
    data.check_record(nudged, "the checkpoint")
    moved = {**record, "std": [record["std"][0] * (1 + 1e-6)]}
    with pytest.raises(Usage, match="was made with std"):
        data.check_record(moved, "the checkpoint")


def test_a_folder_that_links_back_into_the_image_folder_is_refused(tmp_path, fake_mnist):
    """torchvision's walk follows links: a class folder linking to itself would count its images about forty
    times, silently, and move the split. gif refuses such a link by name; a link to a folder outside the tree
    is read once."""
    from gifcli.data.datasets import DatasetSpec, load_data
    from gifcli.errors import InputFileError
    from tests.userdata import digits, write_image_folder

    root = write_image_folder(tmp_path / "digits", digits(fake_mnist, 6, 2, [0, 1]), ["a", "b"])
    spec = DatasetSpec.parse(f"imagefolder:{root}")
    before = len(load_data(spec).fit) + len(load_data(spec).validation)
    (root / "train" / "a" / "again").symlink_to(root / "train" / "a", target_is_directory=True)
    with pytest.raises(InputFileError, match="links back into"):
        load_data(spec)
    (root / "train" / "a" / "again").unlink()
    outside = tmp_path / "more_b"
    outside.mkdir()
    for i, png in enumerate(sorted((root / "train" / "b").glob("*.png"))[:2]):
        (outside / f"x{i}.png").write_bytes(png.read_bytes())
    (root / "train" / "b" / "more").symlink_to(outside, target_is_directory=True)
    data = load_data(spec)
    assert len(data.fit) + len(data.validation) == before + 2
