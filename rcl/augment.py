"""Batched data augmentation on the device, random per sample.

SimCLR's views (Chen et al., 2020, Sec. 3 and Appendix A; the main study of Ghofrani et al. uses the
same list) and the supervised baseline's pad-crop-flip, written as whole-batch tensor ops: every
image draws its own crop, flip, jitter factors and grayscale coin from one ``torch.Generator`` on
the input's device, with no Python loop over samples (torchvision's tensor transforms draw once per
call, i.e. one set of parameters for the whole batch).

SimCLR view of ``x`` (each step per sample):

1. RandomResizedCrop to the input size: area fraction ~ U(scale), log aspect ratio ~ U(log ratio),
   up to 10 tries like torchvision, then a centre crop; resampled bilinearly with
   ``affine_grid``/``grid_sample``. Boxes are continuous (not rounded to whole pixels), so the sampled
   area fraction lies exactly in ``scale``.
2. Horizontal flip with probability ``flip_p``.
3. With probability ``jitter_p``, ColorJitter(brightness, contrast, saturation, hue) with
   torchvision's definitions, applied in the fixed order brightness -> contrast -> saturation -> hue
   (torchvision shuffles the order on each call; we document a fixed one instead):
   brightness ``x * b``; contrast ``c * x + (1 - c) * mean(gray(x))``; saturation
   ``s * x + (1 - s) * gray(x)``; hue rotates H in HSV by ``h`` turns; factors b, c, s ~
   U[max(0, 1 - j), 1 + j], h ~ U[-j_h, j_h]; each step clamps to [0, 1].
4. Grayscale with probability ``gray_p`` (ITU-R 601-2 luma: 0.2989 R + 0.587 G + 0.114 B, like
   torchvision), copied to the three channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _check_images(x: Tensor, name: str = "x") -> None:
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor [B, 3, H, W] in [0, 1], got {x.dtype} {tuple(x.shape)}; "
            "convert uint8 images with x.float() / 255"
        )


def _check_generator(x: Tensor, generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device} but x is on {x.device}: "
            "make it with rcl.runtime.make_generator(x.device, seed)"
        )


def _uniform(n: int, low: float, high: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, device=x.device, generator=generator)


def _coin(n: int, p: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=x.device, generator=generator) < p


# --------------------------------------------------------------------------------------------
# colour operations (vectorised over the batch; factors are per sample)
# --------------------------------------------------------------------------------------------


def grayscale(x: Tensor) -> Tensor:
    """x [B, 3, H, W] -> luma [B, 1, H, W] with ITU-R 601-2 weights (torchvision's rgb_to_grayscale)."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """x [B, 3, H, W] RGB in [0, 1] -> HSV [B, 3, H, W], all channels in [0, 1] (hue in turns)."""
    r, g, b = x.unbind(1)
    maxc = x.max(dim=1).values
    minc = x.min(dim=1).values
    delta = maxc - minc
    gray = delta == 0
    safe_delta = torch.where(gray, torch.ones_like(delta), delta)
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(gray, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """x [B, 3, H, W] HSV in [0, 1] (hue in turns) -> RGB [B, 3, H, W] in [0, 1]."""
    h, s, v = x.unbind(1)
    k = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    kk = (k + 6.0 * h.unsqueeze(1)) % 6.0
    ramp = torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)
    return v.unsqueeze(1) * (1.0 - s.unsqueeze(1) * ramp)


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """x [B, 3, H, W] in [0, 1], factor [B] >= 0 -> clamp(x * factor, 0, 1)."""
    return torch.clamp(x * _per_sample(factor), 0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with each image's mean luma: clamp(c * x + (1 - c) * mean(gray(x)), 0, 1); factor [B]."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    c = _per_sample(factor)
    return torch.clamp(c * x + (1.0 - c) * mean, 0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image: clamp(s * x + (1 - s) * gray(x), 0, 1); factor [B]."""
    s = _per_sample(factor)
    return torch.clamp(s * x + (1.0 - s) * grayscale(x), 0.0, 1.0)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` [B] turns (in [-0.5, 0.5]) in HSV space."""
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return torch.clamp(hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1)), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    device: torch.device | str = "cpu",
    tries: int = 10,
) -> Tensor:
    """RandomResizedCrop boxes, one per sample: float [n, 4] = (top, left, h, w) in pixels.

    Like torchvision: ``tries`` candidates with area ``U(scale) * H * W`` and aspect ``w / h`` log-uniform
    in ``ratio``; the first that fits is used; if none fits, the largest centred box with aspect
    clamped to ``ratio``. Unlike torchvision, sizes and offsets are continuous.
    """
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must satisfy 0 < min <= max, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    dev = torch.device(device)
    area = float(height * width)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, device=dev, generator=generator)

    target = area * (scale[0] + (scale[1] - scale[0]) * rand(n, tries))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand(n, tries)
    aspect = torch.exp(log_r)
    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    ok = (w <= width) & (h <= height)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # first valid try (0 when none is valid)
    any_ok = ok.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # fallback: torchvision's centre crop with the image's aspect clamped into ratio
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = height * ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    pos = rand(n, 2)
    top = torch.where(any_ok, pos[:, 0] * (height - h), (height - h) / 2)
    left = torch.where(any_ok, pos[:, 1] * (width - w), (width - w) / 2)
    return torch.stack((top, left, h, w), dim=1)


def resized_crop(x: Tensor, boxes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Crop box ``(top, left, h, w)`` [B, 4] (pixels) of each image and resize it bilinearly to ``size``.

    x [B, C, H, W] -> [B, C, *size] (default: the input size). Output pixel centres map linearly onto
    the box, so the full box (0, 0, H, W) reproduces the image.
    """
    b, _, height, width = x.shape
    out_h, out_w = size if size is not None else (height, width)
    top, left, h, w = boxes.to(x.dtype).unbind(1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [b, x.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror the images where ``mask`` [B] (bool) is True; the others are returned unchanged."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


# --------------------------------------------------------------------------------------------
# the two pipelines
# --------------------------------------------------------------------------------------------


def simclr_augment(
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
    return_params: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """One SimCLR view of every image (see the module docstring for the steps and their order).

    x: float [B, 3, H, W] in [0, 1] on any device. generator: a torch.Generator on x's device (None:
    the global RNG); the same seed gives the same views. jitter: (brightness, contrast, saturation,
    hue) strengths as in torchvision's ColorJitter (hue <= 0.5).
    Returns the views, float [B, 3, H, W] in [0, 1]; with ``return_params`` also the sampled parameters
    (see :meth:`SimCLRAugment.sample`).
    """
    aug = SimCLRAugment(scale=scale, ratio=ratio, flip_p=flip_p, jitter=jitter, jitter_p=jitter_p, gray_p=gray_p)
    params = aug.sample(x, generator)
    out = aug.apply(x, params)
    return (out, params) if return_params else out


def pad_crop_flip(
    x: Tensor, generator: torch.Generator | None = None, *, padding: int = 4, flip_p: float = 0.5
) -> Tensor:
    """The supervised baseline: zero-pad by ``padding``, random crop back to H x W, horizontal flip.

    Same as torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` but drawn per
    sample: offsets are whole pixels in [0, 2 * padding], so the output is an exact shifted (and
    possibly mirrored) copy with zeros where the shift uncovers the border.
    x: float [B, C, H, W] in [0, 1]; generator on x's device. Returns [B, C, H, W].
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if not 0.0 <= flip_p <= 1.0:
        raise ValueError(f"flip_p must be a probability in [0, 1], got {flip_p}")
    _check_generator(x, generator)
    b, _, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), device=x.device, generator=generator)
    flip = _coin(b, flip_p, x, generator)
    padded = F.pad(x, (padding, padding, padding, padding))
    cols = torch.arange(width, device=x.device)
    cols = torch.where(flip.view(-1, 1), width - 1 - cols, cols) + offsets[:, 1:2]  # [B, W]
    rows = torch.arange(height, device=x.device) + offsets[:, 0:1]  # [B, H]
    batch = torch.arange(b, device=x.device).view(-1, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), cols.unsqueeze(1)]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class SimCLRAugment:
    """SimCLR's augmentation with its parameters held: ``aug(x, generator) -> views``.

    Defaults are the main study's (Ghofrani et al.): RandomResizedCrop scale (0.08, 1), flip 0.5,
    ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2. ACL (Jiang et al.) uses scale (0.1, 1).

    A view is ``apply(x, sample(x, generator))``: ``sample`` draws every random parameter (the only part that
    touches the generator), ``apply`` is a pure function of the images and the parameters, so it can be handed to
    ``torch.compile`` and fused into a few kernels (``rcl.train`` does that with ``TrainConfig(compile=True)``).
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "gray_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        bj, cj, sj, hj = self.jitter
        if min(bj, cj, sj) < 0 or not 0 <= hj <= 0.5:
            raise ValueError(
                f"jitter must be (brightness>=0, contrast>=0, saturation>=0, 0<=hue<=0.5), got {self.jitter}"
            )
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must satisfy 0 < min <= max, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")

    def sample(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Random parameters of one view of each image of x [B, 3, H, W], drawn on x's device.

        ``boxes`` [B, 4] (top, left, h, w in pixels), ``flip``, ``jitter`` and ``gray`` [B] bool, ``brightness``,
        ``contrast``, ``saturation``, ``hue`` [B] (the factors drawn; they act only where ``jitter`` is True).
        """
        _check_images(x)
        _check_generator(x, generator)
        b, _, height, width = x.shape
        bj, cj, sj, hj = self.jitter
        boxes = sample_crop_boxes(b, height, width, generator, scale=self.scale, ratio=self.ratio, device=x.device)
        return dict(
            boxes=boxes,
            flip=_coin(b, self.flip_p, x, generator),
            jitter=_coin(b, self.jitter_p, x, generator),
            brightness=_uniform(b, max(0.0, 1 - bj), 1 + bj, x, generator),
            contrast=_uniform(b, max(0.0, 1 - cj), 1 + cj, x, generator),
            saturation=_uniform(b, max(0.0, 1 - sj), 1 + sj, x, generator),
            hue=_uniform(b, -hj, hj, x, generator),
            gray=_coin(b, self.gray_p, x, generator),
        )

    def apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The views of x [B, 3, H, W] in [0, 1] for ``params`` from :meth:`sample`: float [B, 3, H, W] in [0, 1]."""
        _check_images(x)
        out = hflip(resized_crop(x, params["boxes"]), params["flip"])
        if self.jitter_p > 0:
            jittered = adjust_brightness(out, params["brightness"])
            jittered = adjust_contrast(jittered, params["contrast"])
            jittered = adjust_saturation(jittered, params["saturation"])
            if self.jitter[3] > 0:
                jittered = adjust_hue(jittered, params["hue"])
            out = torch.where(params["jitter"].view(-1, 1, 1, 1), jittered, out)
        if self.gray_p > 0:
            out = torch.where(params["gray"].view(-1, 1, 1, 1), grayscale(out).expand_as(out), out)
        return torch.clamp(out, 0.0, 1.0)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(x, self.sample(x, generator))

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two independent views of every image (the positive pair)."""
        return self(x, generator), self(x, generator)


__all__ = [
    "GRAY_WEIGHTS",
    "SimCLRAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "grayscale",
    "hflip",
    "hsv_to_rgb",
    "pad_crop_flip",
    "resized_crop",
    "rgb_to_hsv",
    "sample_crop_boxes",
    "simclr_augment",
]
