"""rcl.augment: per-sample randomness, parameter ranges, and agreement with torchvision's definitions."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from rcl.augment import (
    SimCLRAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    grayscale,
    hsv_to_rgb,
    pad_crop_flip,
    resized_crop,
    rgb_to_hsv,
    sample_crop_boxes,
    simclr_augment,
)

IDENTITY = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)


def _images(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random images (not symmetric, not constant) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen)
    return F.interpolate(coarse, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_shape_range_and_seeding():
    x = _images(32)
    a = simclr_augment(x, _gen(1))
    b = simclr_augment(x, _gen(1))
    c = simclr_augment(x, _gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    p = pad_crop_flip(x, _gen(1))
    assert torch.equal(p, pad_crop_flip(x, _gen(1))) and not torch.equal(p, pad_crop_flip(x, _gen(2)))


def test_views_are_random_per_sample():
    x = _images(1).expand(64, 3, 32, 32).contiguous()  # one image repeated
    views, params = simclr_augment(x, _gen(0), return_params=True)
    flat = views.flatten(1)
    distinct = torch.cdist(flat, flat) > 1e-3
    assert distinct.sum() >= 64 * 63 * 0.95  # almost every pair differs
    assert params["boxes"][:, 2:].std(0).min() > 1.0  # crop sizes vary across the batch
    assert 0 < params["flip"].sum() < 64 and 0 < params["gray"].sum() < 64 and 0 < params["jitter"].sum() < 64
    assert params["brightness"].std() > 0.1 and params["hue"].std() > 0.02
    shifted = pad_crop_flip(x, _gen(0))
    assert (torch.cdist(shifted.flatten(1), shifted.flatten(1)) > 1e-3).float().mean() > 0.8


def test_all_options_off_is_identity():
    x = _images(8)
    assert torch.allclose(simclr_augment(x, _gen(0), **IDENTITY), x, atol=1e-5)
    assert torch.equal(pad_crop_flip(x, _gen(0), padding=0, flip_p=0.0), x)


def test_flip_only_gives_exact_mirrors():
    x = _images(32)
    out, params = simclr_augment(x, _gen(3), **{**IDENTITY, "flip_p": 0.5}, return_params=True)
    flip = params["flip"]
    assert 0 < flip.sum() < 32
    assert torch.allclose(out[flip], x[flip].flip(-1), atol=1e-5)
    assert torch.allclose(out[~flip], x[~flip], atol=1e-5)
    assert not torch.allclose(out[flip], x[flip], atol=1e-2)  # the images are not symmetric


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.2, 0.5), (0.5, 2.0))])
def test_crop_boxes_respect_scale_and_ratio(scale, ratio):
    boxes = sample_crop_boxes(4000, 32, 32, _gen(0), scale=scale, ratio=ratio)
    top, left, h, w = boxes.unbind(1)
    area = h * w / (32 * 32)
    aspect = w / h
    assert area.min() >= scale[0] - 1e-6 and area.max() <= scale[1] + 1e-6
    assert aspect.min() >= ratio[0] - 1e-5 and aspect.max() <= ratio[1] + 1e-5
    assert top.min() >= 0 and left.min() >= 0 and (top + h).max() <= 32 + 1e-4 and (left + w).max() <= 32 + 1e-4
    # the whole range is used: areas spread over the scale interval, positions over the image
    span = scale[1] - scale[0]
    assert area.min() < scale[0] + 0.1 * span and area.max() > scale[1] - 0.2 * span
    assert (left + w / 2).std() > 2


def test_crop_boxes_fall_back_to_centre_when_nothing_fits():
    boxes = sample_crop_boxes(10, 32, 32, _gen(0), scale=(1.0, 1.0), ratio=(2.0, 3.0))
    # area 1 with aspect >= 2 never fits in a square: centre crop 32 wide, 16 high
    assert torch.allclose(boxes, torch.tensor([8.0, 0.0, 16.0, 32.0]).expand(10, 4))


def test_resized_crop_matches_crop_then_bilinear_resize():
    x = _images(4)
    boxes = torch.tensor([[8.0, 4.0, 16.0, 16.0]]).expand(4, 4)
    ours = resized_crop(x, boxes)
    reference = F.interpolate(x[:, :, 8:24, 4:20], size=32, mode="bilinear", align_corners=False)
    # identical away from the border (there torchvision clamps inside the crop, we read the true neighbours)
    assert torch.allclose(ours[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5)


def test_colour_ops_match_torchvision_per_image():
    x = _images(6)
    factors = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4, 0.0])
    hues = torch.tensor([-0.1, -0.03, 0.0, 0.05, 0.1, 0.5])
    cases = [
        (adjust_brightness, TF.adjust_brightness, factors),
        (adjust_contrast, TF.adjust_contrast, factors),
        (adjust_saturation, TF.adjust_saturation, factors),
        (adjust_hue, TF.adjust_hue, hues),
    ]
    for ours, theirs, values in cases:
        out = ours(x, values)
        for i in range(len(x)):
            expected = theirs(x[i], float(values[i]))
            assert torch.allclose(out[i], expected, atol=1e-4), ours.__name__
    assert torch.allclose(grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6)


def test_jitter_applies_documented_order_with_returned_params():
    x = _images(16)
    out, p = simclr_augment(x, _gen(5), **{**IDENTITY, "jitter_p": 0.5}, return_params=True)
    assert 0 < p["jitter"].sum() < 16
    for i in range(16):
        expected = x[i]
        if p["jitter"][i]:
            expected = TF.adjust_brightness(expected, float(p["brightness"][i]))
            expected = TF.adjust_contrast(expected, float(p["contrast"][i]))
            expected = TF.adjust_saturation(expected, float(p["saturation"][i]))
            expected = TF.adjust_hue(expected, float(p["hue"][i]))
        assert torch.allclose(out[i], expected, atol=1e-4)
    lo, hi = p["brightness"].min(), p["brightness"].max()
    assert 0.6 <= lo and hi <= 1.4 and p["hue"].abs().max() <= 0.1


def test_hsv_round_trip_and_zero_hue_shift():
    x = torch.rand(8, 3, 32, 32, generator=_gen(0))
    x[0] = 0.5  # gray pixels have no hue
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    assert torch.allclose(adjust_hue(x, torch.zeros(8)), x, atol=1e-5)
    hsv = rgb_to_hsv(x)
    assert hsv.min() >= 0 and hsv.max() <= 1
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(adjust_hue(red, torch.tensor([1 / 3])), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))


def test_grayscale_views_have_equal_channels():
    x = _images(16)
    out = simclr_augment(x, _gen(0), gray_p=1.0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    colour = simclr_augment(x, _gen(0), gray_p=0.0)
    assert (colour[:, 0] - colour[:, 1]).abs().max() > 0.05


def test_pad_crop_flip_is_an_exact_shifted_copy():
    x = _images(24) * 0.9 + 0.05  # no exact zeros inside the images
    out = pad_crop_flip(x, _gen(7), padding=4)
    padded = F.pad(x, (4, 4, 4, 4))
    shifts = set()
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(out[i], (padded[i].flip(-1) if flip else padded[i])[:, dy : dy + 32, dx : dx + 32])
        ]
        assert len(matches) == 1, f"sample {i} is not a shifted copy"
        shifts.add(matches[0])
    assert len(shifts) > 10  # offsets and flips differ from sample to sample


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        simclr_augment(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        simclr_augment(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="gray_p"):
        simclr_augment(torch.zeros(2, 3, 32, 32), gray_p=1.5)
    with pytest.raises(ValueError, match="scale"):
        simclr_augment(torch.zeros(2, 3, 32, 32), scale=(0.5, 0.2))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator"):
            simclr_augment(torch.zeros(2, 3, 32, 32), torch.Generator(device="cuda"))


def test_simclr_augment_object_and_throughput():
    aug = SimCLRAugment(scale=(0.1, 1.0))
    x = torch.rand(512, 3, 32, 32, generator=_gen(0))
    assert torch.equal(aug(x, _gen(4)), simclr_augment(x, _gen(4), scale=(0.1, 1.0)))
    v1, v2 = aug.views(x[:8], _gen(0))
    assert not torch.equal(v1, v2)
    start = time.perf_counter()
    gen = _gen(0)
    aug(x, gen)
    seconds = time.perf_counter() - start
    print(f"simclr_augment: {512 / seconds:,.0f} views/s (batch 512, CPU)")
