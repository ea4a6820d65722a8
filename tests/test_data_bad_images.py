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
