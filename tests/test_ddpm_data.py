import pickle

import numpy as np
import pytest
import torch

from seminfo.ddpm.data import (
    CIFAR10_FOLDER,
    CIFAR10_LABEL_NAMES,
    CIFAR10_TRAIN_FILES,
    DataError,
    ImageData,
    load_images,
    validate_images,
    write_fake_cifar10,
)


def test_digits_are_single_channel_8x8_in_range_with_ten_classes():
    data = load_images({"name": "digits"})
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == torch.float32
    assert data.image_shape == (1, 8, 8)
    assert data.images.min() == -1 and data.images.max() == 1
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) == set(range(10))
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    # Values are x / 8 - 1 for integer pixel values 0 … 16.
    assert torch.equal((data.images + 1) * 8, ((data.images + 1) * 8).round())


def test_class_subset_is_relabelled_in_the_given_order_and_limited_per_class():
    full = load_images({"name": "digits"})
    data = load_images({"name": "digits", "classes": [7, 2], "limit_per_class": 5})
    assert data.class_names == ("7", "2")
    assert torch.bincount(data.labels).tolist() == [5, 5]
    first_sevens = full.images[full.labels == 7][:5]
    assert torch.equal(data.images[data.labels == 0], first_sevens)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "mnist"}, "unknown data set"),
        ({"name": "digits", "root": "x"}, "unknown key"),
        ({"name": "digits", "classes": [1, 1]}, "without repeats"),
        ({"name": "digits", "classes": [3, 10]}, "must lie in 0 … 9"),
        ({"name": "digits", "limit_per_class": 0}, "limit_per_class"),
        ({"name": "cifar10"}, "needs 'root'"),
    ],
)
def test_bad_data_configs_are_rejected(cfg, message):
    with pytest.raises(DataError, match=message):
        load_images(cfg)


def _read_fake_batches(root, names):
    data, labels = [], []
    for name in names:
        with open(root / CIFAR10_FOLDER / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(entry["data"])
        labels.extend(entry["labels"])
    return np.concatenate(data), labels


@pytest.mark.parametrize("train", [True, False])
def test_fake_cifar10_round_trips_through_the_torchvision_loader(tmp_path, train):
    root = write_fake_cifar10(tmp_path, n_per_class=3, seed=1, test_per_class=2)
    data = load_images({"name": "cifar10", "root": str(root), "train": train, "verify_checksums": False})
    raw, labels = _read_fake_batches(root, CIFAR10_TRAIN_FILES if train else ["test_batch"])
    expected = torch.from_numpy(raw).reshape(-1, 3, 32, 32).to(torch.float32) / 127.5 - 1
    assert data.images.shape == (10 * (3 if train else 2), 3, 32, 32)
    assert torch.equal(data.images, expected)
    assert data.labels.tolist() == labels
    assert data.class_names == CIFAR10_LABEL_NAMES


def test_fake_cifar10_class_subset(tmp_path):
    root = write_fake_cifar10(tmp_path, n_per_class=4)
    cfg = {"name": "cifar10", "root": str(root), "classes": [9, 0], "limit_per_class": 2, "verify_checksums": False}
    data = load_images(cfg)
    assert data.class_names == ("truck", "airplane")
    assert torch.bincount(data.labels).tolist() == [2, 2]


def test_files_that_fail_torchvisions_integrity_check_raise_data_error_naming_the_folder(tmp_path):
    root = write_fake_cifar10(tmp_path)  # the official MD5s do not match these files
    with pytest.raises(DataError, match="could not load CIFAR-10") as err:
        load_images({"name": "cifar10", "root": str(root)})
    assert str(root / CIFAR10_FOLDER) in str(err.value) and "download: true" in str(err.value)


def test_unverified_loading_still_needs_every_file(tmp_path):
    root = write_fake_cifar10(tmp_path)
    (root / CIFAR10_FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="could not load CIFAR-10"):
        load_images({"name": "cifar10", "root": str(root), "verify_checksums": False})


def test_the_stock_torchvision_loader_keeps_its_checksums(tmp_path):
    from torchvision.datasets import CIFAR10

    root = write_fake_cifar10(tmp_path)
    load_images({"name": "cifar10", "root": str(root), "verify_checksums": False})
    assert all(md5 for _, md5 in CIFAR10.train_list + CIFAR10.test_list) and CIFAR10.meta["md5"]


def test_missing_cifar10_folder_says_where_to_put_the_files_or_to_download(tmp_path):
    with pytest.raises(DataError) as err:
        load_images({"name": "cifar10", "root": str(tmp_path / "data")})
    message = str(err.value)
    assert str(tmp_path / "data" / CIFAR10_FOLDER) in message
    assert "data_batch_1" in message and "batches.meta" in message and "download: true" in message


def _valid(n=6, k=3):
    return torch.zeros(n, 1, 4, 4), torch.arange(n) % k


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x, y: (x[:, 0], y), r"shape \(N, C, H, W\)"),
        (lambda x, y: (x.double(), y), "float32"),
        (lambda x, y: (x, y.int()), "1-D int64"),
        (lambda x, y: (x, y[:-1]), "6 images but 5 labels"),
        (lambda x, y: (x.index_fill(0, torch.tensor([2]), float("nan")), y), "non-finite"),
        (lambda x, y: (x + 1.5, y), r"\[-1, 1\]"),
        (lambda x, y: (x, y + 1), "labels must lie in 0 … 2, found 3"),
        (lambda x, y: (x, torch.where(y == 1, 0, y)), r"class\(es\) \[1\] have no images"),
    ],
)
def test_validate_images_rejects_bad_inputs(mutate, message):
    images, labels = mutate(*_valid())
    with pytest.raises(DataError, match=message):
        validate_images(images, labels, 3)


def test_validate_images_tolerates_rounding_at_the_range_ends():
    images, labels = _valid()
    validate_images(images + 1 + 1e-7, labels, 3)


def test_image_data_validates_on_construction():
    images, labels = _valid()
    with pytest.raises(DataError, match="have no images"):
        ImageData(images, labels, ("a", "b", "c", "d"))
