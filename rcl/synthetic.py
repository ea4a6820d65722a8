"""Images of the synthetic dataset: CIFAR-shaped pictures whose class is a shape, a texture and a colour pair.

Class ``c`` is the shape ``SHAPES[c % 8]`` with texture ``TEXTURES[(c // 8 + c) % 4]`` in a colour pair whose hue is
spaced by the golden ratio, drawn at a random position, scale and rotation over a random noisy gradient background,
with per-image colour variation and (half the time) a distractor shape, so a small CNN learns it well above chance
but not trivially, and crop/flip/colour augmentations keep the class. :func:`rcl.data.synthetic_dataset` draws the
labels and the splits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SHAPES = ("disc", "square", "triangle", "ring", "cross", "bar", "frame", "half-disc")
TEXTURES = ("solid", "stripes", "checks", "radial")


def _shape_sdf(kind: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (negative inside) of shape ``kind`` [M] at local coordinates u, v [M, H, W]."""
    sdf = torch.empty_like(u)
    r = torch.sqrt(u * u + v * v)
    au, av = u.abs(), v.abs()
    formulas = (
        lambda m: r[m] - 1.0,  # disc
        lambda m: torch.maximum(au[m], av[m]) - 0.8,  # square
        lambda m: torch.maximum(au[m] * 0.866 + v[m] * 0.5, -v[m]) - 0.5,  # triangle
        lambda m: (r[m] - 0.72).abs() - 0.28,  # ring
        lambda m: torch.minimum(
            torch.maximum(au[m] - 0.3, av[m] - 1.0), torch.maximum(au[m] - 1.0, av[m] - 0.3)
        ),  # cross
        lambda m: torch.maximum(au[m] - 1.0, av[m] - 0.35),  # bar
        lambda m: (torch.maximum(au[m], av[m]) - 0.68).abs() - 0.2,  # frame
        lambda m: torch.maximum(r[m] - 1.0, v[m] - 0.1),  # half-disc
    )
    for k, formula in enumerate(formulas):
        m = kind == k
        if bool(m.any()):
            sdf[m] = formula(m)
    return sdf


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """[..., 3] RGB in [0, 1] from hue (turns), saturation and value of equal shapes."""
    k = torch.tensor([5.0, 3.0, 1.0])
    kk = (k + h.unsqueeze(-1) * 6.0) % 6.0
    ramp = torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)
    return v.unsqueeze(-1) - v.unsqueeze(-1) * s.unsqueeze(-1) * ramp


def render_images(labels: Tensor, num_classes: int, gen: torch.Generator, size: int = 32) -> Tensor:
    """uint8 [N, 3, size, size] images of the given labels, every random draw from ``gen``."""
    n = labels.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=gen)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    gy, gx = lin.view(1, size, 1), lin.view(1, 1, size)

    # class attributes: shape, texture and a colour pair (golden-ratio spaced hues, so 100 classes differ)
    cls = torch.arange(num_classes)
    cls_shape = cls % len(SHAPES)
    cls_texture = (cls // len(SHAPES) + cls) % len(TEXTURES)
    cls_hue = (cls.float() * 0.618034) % 1.0
    cls_hue2 = (cls_hue + 0.25 + 0.5 * ((cls // 3) % 2).float()) % 1.0

    # background: a linear gradient between two random muted colours, plus pixel noise
    bg_a = _hsv_to_rgb(rand(n), 0.6 * rand(n), 0.2 + 0.7 * rand(n))
    bg_b = _hsv_to_rgb(rand(n), 0.6 * rand(n), 0.2 + 0.7 * rand(n))
    angle = 2 * math.pi * rand(n)
    t = (gx * torch.cos(angle).view(n, 1, 1) + gy * torch.sin(angle).view(n, 1, 1)) * 0.5 + 0.5
    img = bg_a.view(n, 3, 1, 1) + (bg_b - bg_a).view(n, 3, 1, 1) * t.unsqueeze(1)

    def draw(img: Tensor, kind: Tensor, texture: Tensor, rgb1: Tensor, rgb2: Tensor, scale: Tensor) -> Tensor:
        cx, cy = (1.0 - scale) * (2 * rand(n) - 1), (1.0 - scale) * (2 * rand(n) - 1)
        theta = 2 * math.pi * rand(n)
        c, s = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
        dx, dy = (gx - cx.view(n, 1, 1)) / scale.view(n, 1, 1), (gy - cy.view(n, 1, 1)) / scale.view(n, 1, 1)
        u, v = c * dx + s * dy, -s * dx + c * dy
        # anti-aliased coverage: one pixel is 2 / (size * scale) local units wide
        pixel = (2.0 / size) / scale.view(n, 1, 1)
        alpha = torch.clamp(0.5 - _shape_sdf(kind, u, v) / pixel, 0.0, 1.0)
        freq = (3.0 + 2.0 * rand(n)).view(n, 1, 1) * math.pi
        phase = 2 * math.pi * rand(n).view(n, 1, 1)
        su = torch.sin(u * freq + phase)
        sv = torch.sin(v * freq + phase)
        texture = texture.view(n, 1, 1)
        mix = torch.where(texture == 1, (su > 0).float(), torch.zeros_like(u))  # stripes
        mix = torch.where(texture == 2, (su * sv > 0).float(), mix)  # checks
        mix = torch.where(texture == 3, torch.clamp(torch.sqrt(u * u + v * v), 0.0, 1.0), mix)  # radial
        mix = mix.unsqueeze(1)
        fill = rgb1.view(n, 3, 1, 1) * (1 - mix) + rgb2.view(n, 3, 1, 1) * mix
        return img * (1 - alpha.unsqueeze(1)) + fill * alpha.unsqueeze(1)

    # a distractor: a random shape in random colours, half the time, drawn below the class object
    d_kind = torch.randint(len(SHAPES), (n,), generator=gen)
    d_tex = torch.randint(len(TEXTURES), (n,), generator=gen)
    d_rgb1 = _hsv_to_rgb(rand(n), 0.3 + 0.6 * rand(n), 0.3 + 0.7 * rand(n))
    d_rgb2 = _hsv_to_rgb(rand(n), 0.3 + 0.6 * rand(n), 0.3 + 0.7 * rand(n))
    d_scale = 0.2 + 0.25 * rand(n)
    with_distractor = rand(n) < 0.5
    drawn = draw(img, d_kind, d_tex, d_rgb1, d_rgb2, d_scale)
    img = torch.where(with_distractor.view(n, 1, 1, 1), drawn, img)

    # the class object: class shape, texture and colours, each image's colours varied
    hue_jitter = 0.08 * (2 * rand(n) - 1)
    sat = 0.55 + 0.45 * rand(n)
    val = 0.55 + 0.45 * rand(n)
    rgb1 = _hsv_to_rgb((cls_hue[labels] + hue_jitter) % 1.0, sat, val)
    rgb2 = _hsv_to_rgb((cls_hue2[labels] + hue_jitter) % 1.0, sat, 0.5 * val + 0.5 * rand(n))
    scale = 0.35 + 0.45 * rand(n)
    img = draw(img, cls_shape[labels], cls_texture[labels], rgb1, rgb2, scale)

    noise = (0.02 + 0.08 * rand(n)).view(n, 1, 1, 1) * torch.randn(img.shape, generator=gen)
    return torch.clamp(img + noise, 0.0, 1.0).mul_(255.0).round_().to(torch.uint8)


__all__ = ["SHAPES", "TEXTURES", "render_images"]
