"""Datasets as uint8 tensors, and a loader that keeps a whole split on the device.

Every dataset is held as ``uint8 [N, 3, 32, 32]`` images with ``int64 [N]`` labels, the shape of
CIFAR-10/100 (Krizhevsky, 2009), which all three reproduced papers use. Names understood by
:func:`load_dataset`:

- ``"cifar10"`` / ``"cifar100"``: torchvision's official files under the data root, downloaded when
  missing and the network allows; decoded once and cached as ``<root>/<name>.rcl-cache.pt``.
- ``"imagefolder:<path>"``: a ``<path>/train/<class>/*`` and ``<path>/test/<class>/*`` tree of
  PNG/JPEG files (any size; resized to 32x32 when needed), decoded once in batches
  (:mod:`rcl.imagefolder`) and cached as ``<path>/.rcl-cache.pt``.
- ``"synthetic"``: generated from a seed, always available. Each class is a shape type, a colour
  pair and a texture, drawn at a random position, scale and rotation over a random noisy gradient
  background, with per-image colour variation and a distractor shape, so a small CNN learns it
  well above chance but not trivially, and crop/flip/colour augmentations keep the class
  (:mod:`rcl.synthetic` draws the images).

The :class:`DeviceLoader` moves a split to the device once (as uint8, a quarter of the float size)
and cuts batches there, so an epoch costs no host-to-device copies and no worker processes. Its
shuffle order depends only on ``(seed, epoch)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rcl import checks
from rcl.imagefolder import IMAGE_SUFFIXES, decode_files, folder_fingerprint, is_skipped
from rcl.runtime import pick_device, project_root
from rcl.synthetic import SHAPES, TEXTURES, render_images

CACHE_VERSION = 3  # 2: the fingerprint hashes the images' bytes, the cache a hash of its tensors; 3: shuffled order
VALID_NAMES = ("cifar10", "cifar100", "imagefolder:<path>", "synthetic")
_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz"),
}
_DOWNLOAD_TIMEOUT_S = 30.0


def parse_dataset_name(name: str) -> tuple[str, str | None]:
    """The one reading of a dataset name: ``"CIFAR10"`` -> ``("cifar10", None)``, ``"imagefolder:data/x"`` ->
    ``("imagefolder", "data/x")`` (the path as typed), ``"synthetic"`` -> ``("synthetic", None)``. A ValueError
    names the valid ones for anything else, and an ``imagefolder:`` without a path says what to give."""
    key = name.strip() if isinstance(name, str) else ""
    kind, colon, path = key.partition(":")
    if not colon and key.lower() in (*_CIFAR, "synthetic"):
        return key.lower(), None
    if colon and kind.lower() == "imagefolder":
        if not path:
            raise ValueError('dataset "imagefolder:" needs a path, e.g. "imagefolder:data/cifar10-jpeg"')
        return "imagefolder", path
    raise ValueError(f"unknown dataset {name!r}; valid names are: {', '.join(VALID_NAMES)}")


class DatasetUnavailable(RuntimeError):
    """A dataset's files are missing and cannot be downloaded; the message says what to do."""


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split of a dataset.

    images: uint8 [N, 3, 32, 32] (0..255); labels: int64 [N] in [0, num_classes).
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"Split.images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"Split.labels must be [N] with N={self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )
        if self.labels.is_floating_point() or self.labels.is_complex():
            raise ValueError(
                f"Split.labels must be integer class indices in [0, num_classes), got {self.labels.dtype} "
                "(a label like 1.7 would silently become class 1): pass labels.long() if they are whole numbers"
            )
        if self.labels.numel() and (lowest := int(self.labels.min())) < 0:
            raise ValueError(
                f"Split.labels must be class indices in [0, num_classes), got {lowest} "
                f"(at position {int(self.labels.argmin())}): drop or relabel unlabelled (-1) examples first"
            )
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device`` (still uint8)."""
        device = torch.device(device)
        return Split(self.images.to(device), self.labels.to(device))

    def take(self, index: Tensor) -> Split:
        """The examples at ``index`` (int64 [M] or bool [N]), in that order."""
        index = torch.as_tensor(index, device=self.images.device)
        return Split(self.images[index], self.labels[index])

    def class_counts(self, num_classes: int | None = None) -> Tensor:
        """int64 [num_classes]: examples per class."""
        return torch.bincount(self.labels.cpu(), minlength=num_classes or 0)


@dataclass
class Dataset:
    """A named dataset: class names and its train and test splits (uint8, see :class:`Split`)."""

    name: str
    classes: list[str]
    train: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
            f"train={len(self.train)}, test={len(self.test)})"
        )


# --------------------------------------------------------------------------------------------
# class-balanced subsets
# --------------------------------------------------------------------------------------------


def balanced_indices(labels: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices (int64 [n], ascending) of a class-balanced random subset of ``labels``.

    Classes get ``n // C`` examples each and the remainder goes to randomly chosen classes; a class
    with too few examples gives what it has and the others make up the difference. Depends only on
    ``labels``, ``n`` and ``seed``.
    """
    labels = labels.cpu()
    total = labels.shape[0]
    if not 0 <= n <= total:
        raise ValueError(f"asked for {n} examples, but the split holds {total}: use 0 <= n <= {total}")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=gen)
    num_classes = int(labels.max()) + 1 if total else 1
    priority = torch.randperm(num_classes, generator=gen)
    shuffled = labels[perm]
    sorted_labels, order = torch.sort(shuffled, stable=True)
    counts = torch.bincount(shuffled, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(total) - starts[sorted_labels]
    # round robin over classes: every class's k-th example before any class's (k+1)-th
    key = rank * num_classes + priority[shuffled]
    chosen = perm[torch.argsort(key)[:n]]
    return torch.sort(chosen).values


def balanced_subset(split: Split, n: int | None, seed: int = 0) -> Split:
    """A class-balanced, seeded subset of ``n`` examples (the whole split when ``n`` is None)."""
    if n is None or n == len(split):
        return split
    return split.take(balanced_indices(split.labels, n, seed).to(split.device))


def train_val_split(split: Split, n_val: int, seed: int = 0) -> tuple[Split, Split]:
    """Hold out ``n_val`` class-balanced examples: returns ``(train_rest, val)``, disjoint, seeded."""
    checks.integer("n_val", n_val, 1, maximum=len(split) - 1, hint=f"the split holds {len(split)} examples")
    val_idx = balanced_indices(split.labels, n_val, seed)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[val_idx] = False
    rest_idx = torch.nonzero(keep).squeeze(1)
    return split.take(rest_idx.to(split.device)), split.take(val_idx.to(split.device))


# --------------------------------------------------------------------------------------------
# cache files
# --------------------------------------------------------------------------------------------


def _content_digest(classes: list[str], *tensors: Tensor) -> str:
    """A hash of a cached dataset's own contents (class names, images, labels): a cache edited after it was written
    (tinted images, shifted labels) no longer matches it. A checksum finds damage, not a deliberate edit that also
    rewrites the hash: see data/README.md."""
    digest = hashlib.sha1("\0".join(classes).encode())
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().view(torch.uint8).reshape(-1).numpy().data)
    return digest.hexdigest()


def _save_cache(path: Path, dataset: Dataset, fingerprint: str) -> None:
    """Write the cache atomically (tmp file + os.replace); warn and go on if the folder is read-only."""
    train, test = dataset.train, dataset.test
    payload = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "content": _content_digest(list(dataset.classes), train.images, train.labels, test.images, test.labels),
        "classes": list(dataset.classes),
        "train_images": dataset.train.images.contiguous(),
        "train_labels": dataset.train.labels,
        "test_images": dataset.test.images.contiguous(),
        "test_labels": dataset.test.labels,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as err:
        warnings.warn(f"could not write the dataset cache {path} ({err}); the next load decodes again", stacklevel=3)


def _load_cache(path: Path, name: str, fingerprint: str) -> Dataset | None:
    """The cached dataset, or None when absent, stale (fingerprint differs) or unreadable."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CACHE_VERSION or payload.get("fingerprint") != fingerprint:
            return None
        classes = list(payload["classes"])
        tensors = [payload[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
        if payload.get("content") != _content_digest(classes, *tensors):
            warnings.warn(f"the dataset cache {path} was changed after it was written; rebuilding it", stacklevel=3)
            return None
        return Dataset(name=name, classes=classes, train=Split(*tensors[:2]), test=Split(*tensors[2:]))
    except Exception as err:  # a truncated or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable dataset cache {path} ({err}); rebuilding it", stacklevel=3)
        return None


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (torchvision's official files)
# --------------------------------------------------------------------------------------------


def _unavailable(name: str, root: Path, reason: str) -> DatasetUnavailable:
    _, folder, tarball = _CIFAR[name]
    return DatasetUnavailable(
        f"{name} is not available: {reason}. Put torchvision's official files in {root} "
        f"(the folder {root / folder}, or the tarball {root / tarball}, which is unpacked on first use), "
        f"or run once with network access to download them; or pick another dataset: "
        f'dataset="synthetic" (always available) or dataset="imagefolder:<path>" '
        f"(a train/<class>/*.jpg and test/<class>/*.jpg tree)."
    )


def _load_cifar(name: str, root: Path, download: bool) -> Dataset:
    cls_name, folder, tarball = _CIFAR[name]
    cache = root / f"{name}.rcl-cache.pt"
    cached = _load_cache(cache, name, fingerprint=name)
    if cached is not None:
        return cached
    try:
        import torchvision.datasets as tvd
    except ImportError as err:  # pragma: no cover - torchvision is a dependency
        raise _unavailable(name, root, f"torchvision is not installed ({err})") from err
    cls = getattr(tvd, cls_name)
    have_files = (root / folder).is_dir()
    have_tarball = (root / tarball).is_file()
    if not (have_files or have_tarball or download):
        raise _unavailable(name, root, f"{root / folder} does not exist and download=False")
    splits = {}
    previous_timeout = socket.getdefaulttimeout()
    try:
        # torchvision opens its URL without a timeout; bound it so a dead network fails fast
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        for train in (True, False):
            ds = cls(str(root), train=train, download=not have_files)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            splits[train] = Split(images, torch.as_tensor(ds.targets, dtype=torch.int64))
            have_files = True
            classes = list(ds.classes)
    except Exception as err:
        raise _unavailable(name, root, f"reading or downloading failed ({type(err).__name__}: {err})") from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    dataset = Dataset(name=name, classes=classes, train=splits[True], test=splits[False])
    _save_cache(cache, dataset, fingerprint=name)
    return dataset


# --------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------


def _load_imagefolder(spec: str, path: Path) -> Dataset:
    name = f"imagefolder:{spec}"
    fingerprint, class_files = folder_fingerprint(path)
    cache = path / ".rcl-cache.pt"
    cached = _load_cache(cache, name, fingerprint)
    if cached is not None:
        return cached
    classes = list(class_files["train"])
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "test"):
        files, labels = [], []
        for cls, found in class_files[split].items():
            files += found
            labels += [index[cls]] * len(found)
        if not files:
            raise FileNotFoundError(f"imagefolder {path}/{split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        # a fixed shuffled order, as torchvision's CIFAR files have: the first images of a split then hold every
        # class (a gallery, a CKA batch or a check on "the first 256 images" is not one class)
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        splits[split] = Split(
            decode_files([files[i] for i in order]), torch.tensor([labels[i] for i in order], dtype=torch.int64)
        )
    dataset = Dataset(name=name, classes=classes, train=splits["train"], test=splits["test"])
    _save_cache(cache, dataset, fingerprint)
    return dataset


# --------------------------------------------------------------------------------------------
# synthetic data with real class structure
# --------------------------------------------------------------------------------------------

_SYNTH_CHUNK = 256


def _synthetic_split(n: int, num_classes: int, seed: int) -> Split:
    gen = torch.Generator().manual_seed(int(seed))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, n, _SYNTH_CHUNK):  # bounded memory; chunking is fixed, so output is too
        images[start : start + _SYNTH_CHUNK] = render_images(labels[start : start + _SYNTH_CHUNK], num_classes, gen)
    return Split(images, labels)


def synthetic_dataset(n_train: int = 5000, n_test: int = 1000, num_classes: int = 10, seed: int = 0) -> Dataset:
    """A CIFAR-shaped dataset (uint8 [N, 3, 32, 32]) drawn from ``seed``: same seed, same bytes.

    Class ``c`` is the shape ``SHAPES[c % 8]`` with texture ``TEXTURES[(c // 8 + c) % 4]`` in a colour
    pair whose hue is spaced by the golden ratio; each image draws its own position, scale, rotation,
    colour variation (hue +-0.08, saturation, value), stripe frequency, gradient background, noise
    level and (half the time) a distractor shape of any type. Labels are balanced (counts differ by at
    most one). Train and test come from independent streams of the same seed.
    """
    num_classes = checks.integer("num_classes", num_classes, 2)
    n_train = checks.integer("n_train", n_train, 0)
    n_test = checks.integer("n_test", n_test, 0)
    classes = [f"{SHAPES[c % len(SHAPES)]}-{c}" for c in range(num_classes)]
    train = _synthetic_split(n_train, num_classes, 2 * int(seed))
    test = _synthetic_split(n_test, num_classes, 2 * int(seed) + 1)
    return Dataset(name="synthetic", classes=classes, train=train, test=test)


# --------------------------------------------------------------------------------------------
# by name
# --------------------------------------------------------------------------------------------


def _resolve(path: Path | str) -> Path:
    """Relative paths: the working directory when they exist there, else the project root."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return project_root() / path


def class_count(name: str, num_classes: int = 10) -> int:
    """How many classes ``name`` (a :func:`load_dataset` name) has, without loading its images: 10 for CIFAR-10,
    100 for CIFAR-100, ``num_classes`` for ``synthetic``, the class folders of ``<path>/train`` for an imagefolder.
    For a chapter that reads results but no data (the chance line of chapter 09's figures)."""
    kind, path = parse_dataset_name(name)
    if kind in _CIFAR:
        return 100 if kind == "cifar100" else 10
    if kind == "synthetic":
        return num_classes
    train = _resolve(path) / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"imagefolder {train.parent} has no train/ folder to count the classes of")
    return sum(1 for d in train.iterdir() if d.is_dir() and not is_skipped(d.name))


def _check_every_class(name: str, split: str, n: int | None, classes: list[str]) -> None:
    """A class-balanced subset of ``n`` images must hold every class: else a ``ValueError`` naming the setting."""
    if n is not None and 0 < n < len(classes):
        raise ValueError(
            f"{name}: n_{split} = {n} cannot hold one image of each of its {len(classes)} classes, so a class-balanced "
            f"subset would leave {len(classes) - n} classes out; use n_{split} >= {len(classes)} (-p n_{split}=...)"
        )


def load_dataset(
    name: str,
    root: Path | str = "data",
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = True,
    num_classes: int = 10,
) -> Dataset:
    """Load a dataset by name (see the module docstring); images stay uint8 [N, 3, 32, 32].

    name: ``"cifar10"``, ``"cifar100"``, ``"imagefolder:<path>"`` or ``"synthetic"``.
    root: the data folder for CIFAR (a relative path is taken from the working directory when it
        exists there, else from the project root, so notebooks and the command line share ``data/``).
    n_train, n_test: take a class-balanced subset chosen by ``seed`` (None: the whole split; for
        ``synthetic`` they are the sizes generated, default 5,000 and 1,000).
    download: allow torchvision to download CIFAR when its files are missing.
    num_classes: only for ``synthetic``.

    Raises ValueError for an unknown name (listing the valid ones), DatasetUnavailable when CIFAR
    files are missing and cannot be downloaded, FileNotFoundError for a malformed image folder.
    """
    kind, spec = parse_dataset_name(name)
    if kind == "synthetic":
        dataset = synthetic_dataset(
            n_train=5000 if n_train is None else n_train,
            n_test=1000 if n_test is None else n_test,
            num_classes=num_classes,
            seed=seed,
        )
        for split, n in (("train", n_train), ("test", n_test)):
            _check_every_class(name, split, n, dataset.classes)
        return dataset
    if kind in _CIFAR:
        dataset = _load_cifar(kind, _resolve(root), download)
    else:
        path = _resolve(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"imagefolder path {path} does not exist (from {name!r})")
        dataset = _load_imagefolder(spec, path)
    for split, n in (("train", n_train), ("test", n_test)):
        have = len(getattr(dataset, split))
        if n is not None and n > have:
            raise ValueError(
                f"{name}: n_{split} = {n}, but its {split} split holds {have} images; lower it "
                f"(-p n_{split}={have}, or n_{split}=None for the whole split) or add images"
            )
        _check_every_class(name, split, n, dataset.classes)
    dataset.train = balanced_subset(dataset.train, n_train, seed)
    dataset.test = balanced_subset(dataset.test, n_test, seed + 1)
    return dataset


# --------------------------------------------------------------------------------------------
# device-resident loader
# --------------------------------------------------------------------------------------------


class DeviceLoader:
    """Batches of a split kept whole on ``device`` as uint8.

    Yields ``(x, y)``: x float32 [B, 3, H, W] in [0, 1] on the device, y int64 [B]. With ``shuffle``
    the order is a permutation drawn on the CPU from ``(seed, epoch)`` alone (so it is the same on
    every device and after a resume). Each pass uses the current epoch and then advances it by one;
    ``set_epoch`` pins it (call it at the top of every epoch, as with DistributedSampler).
    ``drop_last=True`` drops only the final partial batch; with ``drop_last=False`` every example
    appears exactly once per pass.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.batch_size = checks.integer("batch_size", batch_size, 1)
        self.device = pick_device(device)
        self.split = split.to(self.device)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch whose shuffle order the next pass uses."""
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> Tensor:
        """int64 [N] (CPU): the example order of ``epoch`` (default: the current one)."""
        n = len(self.split)
        if not self.shuffle:
            return torch.arange(n)
        epoch = self.epoch if epoch is None else int(epoch)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(n, generator=gen)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order().to(self.device)
        self.epoch += 1
        images, labels = self.split.images, self.split.labels
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield images[idx].float().div_(255.0), labels[idx]


__all__ = [
    "CACHE_VERSION",
    "class_count",
    "DatasetUnavailable",
    "Dataset",
    "DeviceLoader",
    "SHAPES",
    "Split",
    "TEXTURES",
    "VALID_NAMES",
    "balanced_indices",
    "balanced_subset",
    "load_dataset",
    "synthetic_dataset",
    "train_val_split",
]
