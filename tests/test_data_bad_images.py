"""An ImageFolder with broken files says which files, and how many, instead of torchvision's bare message."""

from __future__ import annotations

import pytest
from PIL import Image

from rcl.data import load_dataset


def _folder(root, per_class=4):
    for split in ("train", "test"):
        for c, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 40), colour).save(folder / f"{i}.jpg")
                Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
    return root


def test_a_bad_image_is_named_with_the_count(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "train" / "cat" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # fails the batched JPEG decode
    (root / "train" / "dog" / "2.png").write_bytes(b"garbage")
    (root / "train" / "dog" / "3.jpg").write_bytes(b"")
    with pytest.raises(ValueError) as failure:
        load_dataset(f"imagefolder:{root}")
    message = str(failure.value)
    assert message.startswith("3 of 16 image files could not be decoded")
    for name in ("train/cat/1.jpg", "train/dog/2.png", "train/dog/3.jpg (empty file)"):
        assert name in message, message
    assert "Remove or replace them" in message


def test_the_good_files_still_load_once_the_bad_ones_are_gone(tmp_path):
    root = _folder(tmp_path / "pets")
    bad = root / "test" / "dog" / "0.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ValueError, match="1 of 16 image files could not be decoded: .*test/dog/0.jpg"):
        load_dataset(f"imagefolder:{root}")
    bad.unlink()
    data = load_dataset(f"imagefolder:{root}")
    assert (len(data.train), len(data.test)) == (16, 15)
    assert data.train.images[data.train.labels == 0].float().mean(dim=(0, 2, 3))[0] > 150  # the cats stay red


# --------------------------------------------------------------------------------------------- odd trees
def test_16_bit_images_are_scaled_not_cut_to_their_low_byte(tmp_path):
    import numpy as np

    root = _folder(tmp_path / "pets", per_class=1)
    grey = np.full((32, 32), 40000, dtype=np.uint16)  # 40000/65535 of full scale: 156 in 8 bits, not 40000 % 256
    Image.fromarray(grey).save(root / "train" / "cat" / "deep.png")
    Image.fromarray(grey).save(root / "train" / "cat" / "deep.tif")
    data = load_dataset(f"imagefolder:{root}")
    expected = round(40000 * 255 / 65535)
    values = {int(v) for v in data.train.images.reshape(len(data.train), -1).max(dim=1).values}
    assert expected in values and 40000 % 256 not in values


def test_nested_subfolders_and_tiff_images_count_for_their_class(tmp_path):
    root = _folder(tmp_path / "pets", per_class=1)
    (root / "train" / "cat" / "more").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "train" / "cat" / "more" / "x.png")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "train" / "cat" / "y.tif")
    data = load_dataset(f"imagefolder:{root}")
    assert int((data.train.labels == 0).sum()) == 4 and int((data.train.labels == 1).sum()) == 2


def test_macos_zip_leftovers_are_not_a_class(tmp_path):
    root = _folder(tmp_path / "pets", per_class=1)
    junk = root / "train" / "__MACOSX" / "cat"
    junk.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(junk / "._0.png")
    assert load_dataset(f"imagefolder:{root}").classes == ["cat", "dog"]


def test_a_one_class_tree_is_refused(tmp_path):
    root = tmp_path / "one"
    for split in ("train", "test"):
        (root / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(root / split / "cat" / "0.png")
    with pytest.raises(ValueError, match=r"1 class folder\(s\) \(cat\).*at least two"):
        load_dataset(f"imagefolder:{root}")


def test_a_class_folder_without_images_is_refused_by_name(tmp_path):
    root = _folder(tmp_path / "pets", per_class=1)
    (root / "train" / "bird").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*train/bird has no images \(it is empty\)"):
        load_dataset(f"imagefolder:{root}")
    (root / "train" / "bird" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"train/bird has no images \(it holds notes.txt\)"):
        load_dataset(f"imagefolder:{root}")


def test_an_animated_gif_is_refused_by_name(tmp_path):
    root = _folder(tmp_path / "pets", per_class=1)
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(root / "train" / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=r"train/dog/anim.gif \(ValueError: an animated image \(2 frames\)"):
        load_dataset(f"imagefolder:{root}")


def test_an_edit_that_keeps_size_and_time_is_seen(tmp_path):
    import os

    root = _folder(tmp_path / "pets", per_class=1)
    load_dataset(f"imagefolder:{root}")
    path = root / "train" / "cat" / "0.png"
    info = path.stat()
    Image.new("RGB", (32, 32), (30, 200, 30)).save(path)  # same size as the red square's PNG
    assert path.stat().st_size == info.st_size
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    data = load_dataset(f"imagefolder:{root}")
    assert data.train.images[data.train.labels == 0].float().mean(dim=(0, 2, 3))[1] > 100  # the green one


def test_an_altered_cache_beside_a_copied_tree_is_not_trusted(tmp_path):
    import shutil

    import torch

    root = _folder(tmp_path / "pets", per_class=1)
    load_dataset(f"imagefolder:{root}")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy2)  # cp -a: names, sizes and times kept
    cache = copy / ".rcl-cache.pt"
    payload = torch.load(cache, weights_only=True)
    payload["train_labels"] = 1 - payload["train_labels"]  # shifted labels
    torch.save(payload, cache)
    with pytest.warns(UserWarning, match="changed after it was written"):
        data = load_dataset(f"imagefolder:{copy}")
    assert data.train.images[data.train.labels == 0].float().mean(dim=(0, 2, 3))[0] > 150  # cats are red again


def test_asking_for_more_images_than_the_tree_holds_names_the_setting(tmp_path):
    root = _folder(tmp_path / "pets", per_class=1)
    with pytest.raises(ValueError, match=r"n_train = 100, but its train split holds 4 images.*-p n_train=4"):
        load_dataset(f"imagefolder:{root}", n_train=100)


# --------------------------------------------------------------------------------------------- round 4
def test_n_train_below_the_number_of_classes_is_refused_not_trained_on_fewer_classes(tmp_path):
    from rcl.data import load_dataset as load

    with pytest.raises(ValueError, match=r"n_train = 5 cannot hold one image of each of its 10 classes.*n_train >= 10"):
        load("synthetic", n_train=5, n_test=10)
    root = _folder(tmp_path / "pets", per_class=2)
    with pytest.raises(ValueError, match=r"n_test = 1 cannot hold one image of each of its 2 classes"):
        load(f"imagefolder:{root}", n_train=2, n_test=1)
    assert load(f"imagefolder:{root}", n_train=2, n_test=2).train.labels.unique().tolist() == [0, 1]


def test_a_linked_subfolder_inside_a_class_folder_is_read_as_imagefolder_reads_it(tmp_path):
    root = _folder(tmp_path / "pets")
    extra = tmp_path / "more-cats"
    extra.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (200, 30, 30)).save(extra / f"{i}.png")
    (root / "train" / "cat" / "more").symlink_to(extra)
    (root / "train" / "cat" / "loop").symlink_to(root / "train" / "cat")  # a link back up is read once
    data = load_dataset(f"imagefolder:{root}")
    assert (data.train.labels == 0).sum() == 8 + 3


def test_jfif_jpegs_are_read_and_unreadable_image_formats_are_reported(tmp_path):
    root = _folder(tmp_path / "pets")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "train" / "cat" / "photo.jfif", format="JPEG")
    (root / "train" / "dog" / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipping 1 image file\(s\) of a format rcl does not read \(train/dog/phone"):
        data = load_dataset(f"imagefolder:{root}")
    assert (data.train.labels == 0).sum() == 9


def test_a_named_pipe_called_jpg_is_refused_by_name_not_read_forever(tmp_path):
    import os

    root = _folder(tmp_path / "pets")
    os.mkfifo(root / "train" / "cat" / "pipe.jpg")
    with pytest.raises(ValueError, match=r"1 image file\(s\) not read: .*train/cat/pipe.jpg \(not a regular file"):
        load_dataset(f"imagefolder:{root}")


def test_a_jpg_linked_to_dev_zero_is_refused_by_name_not_read_until_memory_runs_out(tmp_path, monkeypatch):
    from rcl import imagefolder

    root = _folder(tmp_path / "pets")
    (root / "train" / "dog" / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"train/dog/zero.jpg \(not a regular file"):
        load_dataset(f"imagefolder:{root}")
    (root / "train" / "dog" / "zero.jpg").unlink()
    (root / "train" / "dog" / "huge.jpg").write_bytes(b"\xff\xd8" + bytes(2000))
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(ValueError, match=r"train/dog/huge.jpg \(2.0 KiB, above the 1000 bytes an image may have"):
        load_dataset(f"imagefolder:{root}")


def test_class_names_that_differ_only_in_unicode_normalisation_are_one_class(tmp_path):
    import unicodedata

    root = tmp_path / "tree"
    for split, form in (("train", "NFC"), ("test", "NFD")):
        for name in ("café", "thé"):
            folder = root / split / unicodedata.normalize(form, name)
            folder.mkdir(parents=True)
            Image.new("RGB", (32, 32), (len(name) * 20, 0, 0)).save(folder / "0.png")
    data = load_dataset(f"imagefolder:{root}")
    assert data.classes == ["café", "thé"] and sorted(data.test.labels.tolist()) == [0, 1]


def test_a_tree_with_8_test_images_and_n_test_8_is_accepted(tmp_path):
    """The set-up's availability check loads the sizes the run asks for, not 10 regardless."""
    from rcl.course import setup

    root = _folder(tmp_path / "pets", per_class=2)  # 8 test images
    cfg = setup("smoke", f"imagefolder:{root}", "cpu", run_dir=tmp_path / "run", overrides={"n_train": 8, "n_test": 8})
    assert (cfg.n_train, cfg.n_test) == (8, 8)
    with pytest.raises(ValueError, match="n_test = 9, but its test split holds 8 images"):
        setup("smoke", f"imagefolder:{root}", "cpu", run_dir=tmp_path / "run", overrides={"n_train": 8, "n_test": 9})
