"""rcl.data: datasets by name, class-balanced subsets, caches, and the device-resident loader."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN

from rcl.data import (
    DatasetUnavailable,
    DeviceLoader,
    Split,
    balanced_indices,
    load_dataset,
    synthetic_dataset,
    train_val_split,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _split(n: int, num_classes: int = 10) -> Split:
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32)
    return Split(images.contiguous(), torch.arange(n) % num_classes)


def _train_and_test(train: Split, test: Split, num_classes: int, epochs: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = TinyCNN((16, 32, 64), num_classes, batch_norm=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DeviceLoader(train, 64, shuffle=True, drop_last=True, seed=seed)
    # one-cycle schedule: ends at a small learning rate, so the final weights are not caught mid-spike
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * len(loader))
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = torch.zeros((), dtype=torch.int64)
    with torch.no_grad():
        for x, y in DeviceLoader(test, 500, shuffle=False, drop_last=False):
            correct += (model(x).argmax(1) == y).sum()
    return correct.item() / len(test)


# ---------------------------------------------------------------- Split and subsets


def test_split_validates_and_takes():
    split = _split(20)
    assert len(split) == 20 and split.labels.dtype == torch.int64
    sub = split.take(torch.tensor([3, 1]))
    assert sub.labels.tolist() == [3, 1] and int(sub.images[0, 0, 0, 0]) == 3
    with pytest.raises(ValueError, match="uint8"):
        Split(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_balanced_indices_balanced_seeded_unique():
    labels = torch.cat([torch.full((50,), c) for c in range(4)])[torch.randperm(200)]
    idx = balanced_indices(labels, 42, seed=3)
    assert idx.unique().numel() == 42
    counts = torch.bincount(labels[idx], minlength=4)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 42
    assert torch.equal(idx, balanced_indices(labels, 42, seed=3))
    assert not torch.equal(idx, balanced_indices(labels, 42, seed=4))
    with pytest.raises(ValueError, match="holds 200"):
        balanced_indices(labels, 201)


def test_balanced_indices_with_a_short_class_fills_from_the_others():
    labels = torch.tensor([0] * 3 + [1] * 40 + [2] * 40)
    counts = torch.bincount(labels[balanced_indices(labels, 30, seed=0)], minlength=3)
    assert counts.tolist()[0] == 3 and counts.sum() == 30 and abs(int(counts[1] - counts[2])) <= 1


def test_train_val_split_disjoint_balanced():
    split = _split(300, num_classes=10)
    split = Split(torch.arange(300).view(300, 1, 1, 1).expand(300, 3, 32, 32).to(torch.uint8), split.labels)
    rest, val = train_val_split(split, 50, seed=1)
    assert len(rest) == 250 and len(val) == 50
    assert torch.bincount(val.labels, minlength=10).tolist() == [5] * 10
    # ids 0..255 are unique per image, the rest repeat: check disjointness on labels+ids from the indices
    ids_val = set(zip(val.images[:, 0, 0, 0].tolist(), val.labels.tolist()))
    ids_rest = set(zip(rest.images[:, 0, 0, 0].tolist(), rest.labels.tolist()))
    assert len(ids_val & ids_rest) <= 300 - 256  # only duplicate ids could collide
    with pytest.raises(ValueError, match="n_val"):
        train_val_split(split, 0)


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_balanced_and_fast():
    start = time.perf_counter()
    a = synthetic_dataset(n_train=5000, n_test=500, num_classes=10, seed=7)
    seconds = time.perf_counter() - start
    print(f"synthetic 5,500 images: {seconds:.2f} s (about 0.5 s on an idle 2-core machine)")
    b = synthetic_dataset(n_train=5000, n_test=500, num_classes=10, seed=7)
    c = synthetic_dataset(n_train=5000, n_test=500, num_classes=10, seed=8)
    assert a.train.images.shape == (5000, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert torch.bincount(a.train.labels).tolist() == [500] * 10
    assert torch.bincount(a.test.labels).tolist() == [50] * 10
    assert a.num_classes == 10 and len(a.classes) == 10
    # images use the whole range and are not all alike
    assert a.train.images.float().std() > 30


def test_synthetic_train_and_test_differ_and_many_classes():
    ds = synthetic_dataset(n_train=300, n_test=300, num_classes=100, seed=0)
    assert ds.num_classes == 100 and torch.bincount(ds.train.labels, minlength=100).tolist() == [3] * 100
    assert not torch.equal(ds.train.images, ds.test.images)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_dataset(num_classes=1)


def test_synthetic_is_learnable_but_not_trivial():
    ds = synthetic_dataset(n_train=3000, n_test=1000, num_classes=10, seed=0)
    acc = _train_and_test(ds.train, ds.test, 10, epochs=2)
    print(f"tiny CNN on synthetic, 2 epochs: test accuracy {acc:.3f}")
    assert acc > 0.5  # chance is 0.1


def test_load_dataset_synthetic_by_name():
    ds = load_dataset("synthetic", n_train=200, n_test=100, num_classes=5, seed=2)
    assert ds.name == "synthetic" and ds.num_classes == 5 and len(ds.train) == 200 and len(ds.test) == 100


# ---------------------------------------------------------------- names and CIFAR offline


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar11")
    for name in ("cifar10", "cifar100", "imagefolder:", "synthetic"):
        assert name in str(err.value)


def test_cifar10_offline_without_files_raises_quickly(tmp_path: Path):
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert time.perf_counter() - start < 60
    message = str(err.value)
    assert str(tmp_path) in message and "cifar-10-batches-py" in message and "synthetic" in message
    with pytest.raises(DatasetUnavailable, match="download=False"):
        load_dataset("cifar100", root=tmp_path, download=False)


def test_cifar_cache_is_read_without_the_raw_files(tmp_path: Path):
    from rcl.data import Dataset, _save_cache

    fake = synthetic_dataset(n_train=40, n_test=20, num_classes=10, seed=0)
    fake = Dataset("cifar10", CIFAR10_CLASSES, fake.train, fake.test)
    _save_cache(tmp_path / "cifar10.rcl-cache.pt", fake, fingerprint="cifar10")
    ds = load_dataset("cifar10", root=tmp_path, download=False, n_train=20)
    assert ds.classes == CIFAR10_CLASSES and len(ds.train) == 20 and len(ds.test) == 20
    assert torch.bincount(ds.train.labels).tolist() == [2] * 10


# ---------------------------------------------------------------- imagefolder


def _write_tree(root: Path, classes: list[str], per_class: int, seed: int = 0) -> dict[str, torch.Tensor]:
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(seed)
    written = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen)
                write_png(img, str(root / split / c / f"{i:03d}.png"))
                written[f"{split}/{c}/{i}"] = img
    return written


def _order(n: int) -> list[int]:
    """The imagefolder loader's fixed shuffle: position k of a split holds file ``_order(n)[k]`` (class order)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()


def _shuffled_position(n: int) -> dict[int, int]:
    """File index (in class order) -> its position in the loaded split."""
    return {file: position for position, file in enumerate(_order(n))}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29's write_png
def test_imagefolder_loads_pngs_and_uses_its_cache(tmp_path: Path):
    written = _write_tree(tmp_path / "tree", ["b_cat", "a_dog"], per_class=3)
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert ds.classes == ["a_dog", "b_cat"]  # sorted like torchvision's ImageFolder
    assert len(ds.train) == 6 and len(ds.test) == 6
    # files in class order (a_dog 0-2, b_cat 0-2), then one fixed shuffle, so the first images hold every class
    at = _shuffled_position(6)
    assert ds.train.labels.tolist() == [[0, 0, 0, 1, 1, 1][i] for i in _order(6)]
    assert torch.equal(ds.train.images[at[0]], written["train/a_dog/0"])  # PNG is lossless
    assert torch.equal(ds.test.images[at[5]], written["test/b_cat/2"])
    cache = tmp_path / "tree" / ".rcl-cache.pt"
    assert cache.is_file()
    # the second load reads the cache: poison a decoded image inside it and see it come back
    from rcl.data import _content_digest

    payload = torch.load(cache, weights_only=True)
    payload["train_images"][0].zero_()
    tensors = [payload[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
    payload["content"] = _content_digest(payload["classes"], *tensors)  # poisoned, with a matching hash
    torch.save(payload, cache)
    again = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert int(again.train.images[0].sum()) == 0 and torch.equal(again.train.labels, ds.train.labels)
    # adding a file makes the cache stale: it is rebuilt from the images
    from torchvision.io import write_png

    write_png(torch.full((3, 40, 48), 200, dtype=torch.uint8), str(tmp_path / "tree" / "train" / "a_dog" / "x.png"))
    rebuilt = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    at = _shuffled_position(7)  # a_dog: 000, 001, 002, x; b_cat: 000, 001, 002
    assert len(rebuilt.train) == 7 and torch.equal(rebuilt.train.images[at[0]], written["train/a_dog/0"])
    assert rebuilt.train.images[at[3]].float().mean() == pytest.approx(200, abs=1)  # resized to 32x32


def test_imagefolder_errors_say_what_is_expected(tmp_path: Path):
    (tmp_path / "t" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="test/"):
        load_dataset(f"imagefolder:{tmp_path / 't'}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")


# ---------------------------------------------------------------- DeviceLoader


def test_loader_every_example_once_without_drop_last():
    split = _split(1003)
    ids = torch.arange(1003)
    loader = DeviceLoader(Split(split.images, ids), 100, shuffle=True, drop_last=False, seed=5)
    assert len(loader) == 11
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
        seen.append(y)
    seen = torch.cat(seen)
    assert sorted(seen.tolist()) == list(range(1003))
    assert not torch.equal(seen, ids)  # shuffled
    # pixel values follow their labels: x = uint8 / 255
    x, y = next(iter(DeviceLoader(Split(split.images, ids), 7, shuffle=True, drop_last=False)))
    assert torch.allclose(x[:, 0, 0, 0] * 255, (y % 256).float())


def test_loader_order_depends_only_on_seed_and_epoch():
    split = Split(_split(500).images, torch.arange(500))

    def order(seed: int, epoch: int) -> torch.Tensor:
        loader = DeviceLoader(split, 64, shuffle=True, drop_last=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader])

    assert torch.equal(order(0, 3), order(0, 3))
    assert not torch.equal(order(0, 3), order(0, 4))
    assert not torch.equal(order(1, 3), order(0, 3))
    # passes without set_epoch advance the epoch; a resumed loader pinned to epoch 1 repeats pass 2
    loader = DeviceLoader(split, 64, shuffle=True, drop_last=True, seed=0)
    first, second = torch.cat([y for _, y in loader]), torch.cat([y for _, y in loader])
    assert not torch.equal(first, second) and torch.equal(second, order(0, 1))


def test_loader_drop_last_drops_only_the_remainder():
    split = Split(_split(250).images, torch.arange(250))
    loader = DeviceLoader(split, 64, shuffle=True, drop_last=True, seed=0)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == 3 and sizes == [64, 64, 64]
    assert torch.cat([y for _, y in loader]).unique().numel() == 192
    ordered = DeviceLoader(split, 64, shuffle=False, drop_last=False)
    assert [len(y) for _, y in ordered] == [64, 64, 64, 58]
    assert torch.equal(torch.cat([y for _, y in ordered]), torch.arange(250))
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(split, 0, shuffle=False, drop_last=False)


# ---------------------------------------------------------------- real images (offline CIFAR-10 JPEG tree)


def test_cifar10_jpeg_imagefolder(cifar10_jpeg: Path):
    spec = f"imagefolder:{cifar10_jpeg}"
    start = time.perf_counter()
    ds = load_dataset(spec)
    first = time.perf_counter() - start
    start = time.perf_counter()
    ds = load_dataset(spec)
    second = time.perf_counter() - start
    print(f"cifar10-jpeg: first load {first:.2f} s (decode unless cached), second load {second:.2f} s")
    assert len(ds.train) == 50_000 and len(ds.test) == 10_000
    assert ds.classes == CIFAR10_CLASSES
    assert torch.bincount(ds.train.labels).tolist() == [5000] * 10
    # shuffled like torchvision's CIFAR files: a chapter's "first 100 test images" hold every class
    assert len(set(ds.test.labels[:100].tolist())) == 10 and len(set(ds.train.labels[:100].tolist())) == 10
    mean = ds.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=2e-3)
    assert second < 5.0


@pytest.mark.slow
def test_small_cnn_learns_real_cifar10(cifar10_jpeg: Path):
    ds = load_dataset(f"imagefolder:{cifar10_jpeg}", n_train=4000, n_test=1000, seed=0)
    acc = _train_and_test(ds.train, ds.test, 10, epochs=6)
    print(f"tiny CNN on 4,000 real CIFAR-10 images, 6 epochs: test accuracy {acc:.3f}")
    assert acc > 0.35


@pytest.mark.parametrize(
    "labels,match",
    [
        (torch.tensor([0.0, 1.7]), r"integer class indices.*got torch\.float32.*labels\.long\(\)"),
        (torch.tensor([2, -1]), r"\[0, num_classes\), got -1 \(at position 1\)"),
    ],
)
def test_split_refuses_float_and_negative_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        Split(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), labels)
    assert Split(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([1, 0], dtype=torch.uint8)).labels.dtype == (
        torch.int64
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29's write_png
def test_imagefolder_cache_notices_an_image_edited_in_place(tmp_path: Path):
    from torchvision.io import write_png

    _write_tree(tmp_path / "tree", ["a", "b"], per_class=2)
    first = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    target = tmp_path / "tree" / "train" / "b" / "001.png"
    folder_mtime = (target.parent.stat().st_atime_ns, target.parent.stat().st_mtime_ns)
    write_png(torch.full((3, 32, 32), 7, dtype=torch.uint8), str(target))  # same name, new content
    os.utime(target.parent, ns=folder_mtime)  # an in-place edit need not touch the folder's mtime
    edited = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    at = _shuffled_position(4)[3]  # b/001.png, the fourth file in class order
    assert not torch.equal(first.train.images[at], edited.train.images[at])
    assert torch.equal(edited.train.images[at], torch.full((3, 32, 32), 7, dtype=torch.uint8))


def test_class_count_reads_the_name_or_the_folder_without_loading_images(tmp_path: Path):
    from rcl.data import class_count

    assert class_count("cifar10") == 10 and class_count("CIFAR100") == 100 and class_count("synthetic", 4) == 4
    for name in ("b", "a", ".hidden", "__MACOSX"):
        (tmp_path / "tree" / "train" / name).mkdir(parents=True)
    assert class_count(f"imagefolder:{tmp_path / 'tree'}") == 2
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        class_count(f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="unknown dataset"):
        class_count("mnist")
