"""Image data sets for the class-conditional DDPM, as float32 tensors in [-1, 1] with int64 labels.

Two sources: scikit-learn's bundled 8×8 digits (no download, for fast CPU runs) and CIFAR-10 read by
torchvision from its official python pickles. A data config may keep a subset of classes (relabelled
0 … k-1 in the order given) and the first ``limit_per_class`` images of each class.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataError",
    "ImageData",
    "load_images",
    "select_classes",
    "validate_images",
    "write_fake_cifar10",
]

log = logging.getLogger(__name__)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_COMMON_KEYS = {"name", "classes", "limit_per_class"}
_SOURCE_KEYS = {"digits": _COMMON_KEYS, "cifar10": _COMMON_KEYS | {"root", "download", "train", "verify_checksums"}}


class DataError(ValueError):
    """The data set is missing, corrupt, or not a valid set of images and labels."""


def validate_images(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """Check that ``images`` (N, C, H, W) float32 lie in [-1, 1] and ``labels`` (N,) cover 0 … num_classes-1."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError("images and labels must be torch tensors")
    if images.ndim != 4 or min(images.shape[1:], default=0) < 1:
        raise DataError(f"images must have shape (N, C, H, W) with C, H, W >= 1, got {tuple(images.shape)}")
    if images.dtype != torch.float32:
        raise DataError(f"images must be float32, got {images.dtype}")
    if labels.ndim != 1 or labels.dtype != torch.int64:
        raise DataError(f"labels must be a 1-D int64 tensor, got shape {tuple(labels.shape)} {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    if not torch.isfinite(images).all():
        raise DataError(f"images contain {int((~torch.isfinite(images)).sum())} non-finite values")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1 - 1e-6 or hi > 1 + 1e-6:
        raise DataError(f"image values must lie in [-1, 1], got range [{lo:.6g}, {hi:.6g}]")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(f"labels must lie in 0 … {num_classes - 1}, found {labels[bad][0].item()}")
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        empty = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"class(es) {empty} have no images")


@dataclass(frozen=True)
class ImageData:
    """Images in [-1, 1] with their class labels; validated on construction."""

    images: torch.Tensor  # float32 (N, C, H, W) in [-1, 1]
    labels: torch.Tensor  # int64 (N,) in 0 … num_classes-1
    class_names: tuple[str, ...]  # name of class k at index k

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))
        validate_images(self.images, self.labels, len(self.class_names))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def load_images(cfg: dict) -> ImageData:
    """Load the data set a data config names ('digits' or 'cifar10'), then select classes and limit counts."""
    name = cfg.get("name")
    if name not in _SOURCE_KEYS:
        raise DataError(f"unknown data set {name!r} (expected one of {sorted(_SOURCE_KEYS)})")
    unknown = set(cfg) - _SOURCE_KEYS[name]
    if unknown:
        raise DataError(f"unknown key(s) {sorted(unknown)} in data config for {name!r}")
    images, labels, class_names = _load_digits() if name == "digits" else _load_cifar10(cfg)
    images, labels, class_names = select_classes(
        images, labels, class_names, cfg.get("classes"), cfg.get("limit_per_class")
    )
    data = ImageData(images, labels, class_names)
    log.info("loaded %s: %d images of shape %s, %d classes", name, len(labels), data.image_shape, data.num_classes)
    return data


def select_classes(images, labels, class_names, classes=None, limit_per_class=None):
    """Keep ``classes`` (relabelled 0 … k-1 in the given order) and the first ``limit_per_class`` of each.

    Images keep their order in the source, so the selection is deterministic.
    """
    classes = list(range(len(class_names))) if classes is None else [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise DataError(f"classes must be a non-empty list without repeats, got {classes}")
    if not all(0 <= c < len(class_names) for c in classes):
        raise DataError(f"classes must lie in 0 … {len(class_names) - 1}, got {classes}")
    if limit_per_class is not None and int(limit_per_class) < 1:
        raise DataError(f"limit_per_class must be >= 1, got {limit_per_class}")
    new_label = torch.full((len(class_names),), -1, dtype=torch.int64)
    new_label[classes] = torch.arange(len(classes))
    relabelled = new_label[labels]
    keep = relabelled >= 0
    if limit_per_class is not None:
        # Rank of each image within its class, in source order.
        one_hot = torch.nn.functional.one_hot(labels, len(class_names))
        rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
        keep &= rank < int(limit_per_class)
    return images[keep].contiguous(), relabelled[keep], tuple(class_names[c] for c in classes)


def _load_digits():
    """scikit-learn's 8×8 digits (values 0 … 16) as (N, 1, 8, 8) float32 ``x / 8 - 1``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).to(torch.float32).unsqueeze(1) / 8 - 1
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    return images, labels, tuple(str(c) for c in bunch.target_names)


def _load_cifar10(cfg: dict):
    """CIFAR-10 via torchvision as (N, 3, 32, 32) float32 ``x / 127.5 - 1``.

    With ``verify_checksums: false`` torchvision's loader runs with its table of expected MD5s blanked
    (``_unverified_cifar10``), for rebuilt copies or test fakes that cannot match the official release.
    The files are pickles, so unverified ones must come from a trusted source.
    """
    from torchvision.datasets import CIFAR10

    if "root" not in cfg:
        raise DataError("the cifar10 data config needs 'root', the folder that holds cifar-10-batches-py")
    root = Path(cfg["root"])
    download = bool(cfg.get("download", False))
    folder = root / CIFAR10_FOLDER
    if not download and not folder.is_dir():
        raise DataError(
            f"CIFAR-10 not found: {folder} does not exist. Place the files "
            f"{', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE} and {CIFAR10_META_FILE} in {folder} "
            "(as unpacked from the official cifar-10-python.tar.gz), or set `download: true` in the "
            "experiment's data config."
        )
    loader = CIFAR10 if cfg.get("verify_checksums", True) else _unverified_cifar10()
    try:
        dataset = loader(root, train=bool(cfg.get("train", True)), download=download)
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(
            f"torchvision could not load CIFAR-10 from {folder}: {err}. Re-extract cifar-10-python.tar.gz "
            "there, set `download: true` in the experiment's data config, or, for a copy that is not the "
            "official release, `verify_checksums: false`."
        ) from err
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return images.contiguous(), labels, tuple(dataset.classes)


def _unverified_cifar10():
    """torchvision's CIFAR10 with every expected MD5 set to None.

    torchvision's ``check_integrity(path, None)`` then only checks that the file exists; everything else
    (which files, unpickling, the metadata) is torchvision's own code. Only the class attributes of this
    subclass change, so the stock ``CIFAR10`` is untouched.
    """
    from torchvision.datasets import CIFAR10

    class UnverifiedCIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return UnverifiedCIFAR10


def write_fake_cifar10(root, n_per_class: int = 2, seed: int = 0, test_per_class: int = 1) -> Path:
    """Write a tiny random CIFAR-10 in the official on-disk format under ``root``; returns ``root``.

    Files are ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: pickled dicts with str
    keys (what torchvision reads after unpickling the official Python-2 pickles with latin1), ``data`` a
    uint8 (n, 3072) array of CHW-flattened images (all values 0 … 255 occur for large enough n), ``labels``
    a list of ints, and ``label_names`` in the meta file. The training images are spread over the five
    batches in shuffled class order.

    torchvision checks each file against the MD5 of the official release, which a fake can never match;
    load it with ``verify_checksums: false`` in the data config.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n_per: int, batch_label: str, parts: int):
        labels = rng.permutation(np.repeat(np.arange(10), n_per))
        data = rng.integers(0, 256, size=(labels.size, 3 * 32 * 32), dtype=np.uint8)
        for part, idx in enumerate(np.array_split(np.arange(labels.size), parts), start=1):
            yield (
                part,
                {
                    "batch_label": batch_label.format(part=part),
                    "labels": labels[idx].tolist(),
                    "data": data[idx],
                    "filenames": [f"fake_{i:05d}.png" for i in idx],
                },
            )

    for part, entry in batch(n_per_class, "training batch {part} of 5", len(CIFAR10_TRAIN_FILES)):
        _write_pickle(folder / f"data_batch_{part}", entry)
    for _, entry in batch(test_per_class, "testing batch 1 of 1", 1):
        _write_pickle(folder / CIFAR10_TEST_FILE, entry)
    meta = {"num_cases_per_batch": -(-10 * n_per_class // 5), "label_names": list(CIFAR10_LABEL_NAMES), "num_vis": 3072}
    _write_pickle(folder / CIFAR10_META_FILE, meta)
    return Path(root)


def _write_pickle(path: Path, obj) -> None:
    # Protocol 2 is what the official Python-2 files use.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
