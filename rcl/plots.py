"""Figures shared by the chapters (matplotlib). Each returns the Figure and, given ``save``, writes a PNG.

Images are float ``[N, 3, H, W]`` in [0, 1] or uint8; accuracies are fractions in [0, 1] and are shown
as percentages; eps values are in [0, 1] pixel units and are shown as k/255.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch


def _finish(fig, save: str | Path | None):
    fig.tight_layout()
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _to_hwc(image: torch.Tensor):
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        image = image.float() / 255
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    scale: float = 1.4,
    suptitle: str | None = None,
    save: str | Path | None = None,
):
    """Show ``images`` ``[N, 3, H, W]`` in a grid with optional per-image titles."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < n:
            ax.imshow(_to_hwc(images[index]), interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[index]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, save)


def training_curves(histories: dict[str, list[dict]], keys: Sequence[str] = ("loss",), save: str | Path | None = None):
    """One panel per key in ``keys``; one line per run in ``histories`` (name -> per-epoch records)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, history in histories.items():
            points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    return _finish(fig, save)


def embedding_scatter(
    points: dict[str, torch.Tensor],
    labels: torch.Tensor,
    classes: Sequence[str],
    save: str | Path | None = None,
):
    """2-D scatter per panel (name -> ``[N, 2]`` points, e.g. from ``pca_2d``), coloured by label."""
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4), squeeze=False)
    labels = labels.cpu()
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (name, xy) in zip(axes.flat, points.items()):
        xy = xy.detach().cpu()
        for c, cls in enumerate(classes):
            mask = labels == c
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=cmap(c % cmap.N), label=cls, alpha=0.7)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 20:
        axes.flat[-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return _finish(fig, save)


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """Project ``[N, D]`` features on their first two principal components -> ``[N, 2]``."""
    x = features.detach().double().cpu()
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).float()


def heatmap(
    matrix: torch.Tensor,
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    title: str = "",
    ax=None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    save: str | Path | None = None,
):
    """A CKA-style heatmap of ``matrix`` ``[R, C]`` with the origin at the bottom left (layer 0 first)."""
    col_labels = row_labels if col_labels is None else col_labels
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(4.6, 4))
    else:
        fig = ax.figure
    image = ax.imshow(torch.as_tensor(matrix).cpu().numpy(), origin="lower", cmap="magma", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _finish(fig, save) if own else fig


def heatmap_grid(
    matrices: dict[str, torch.Tensor],
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    ncols: int = 3,
    save: str | Path | None = None,
):
    """Several heatmaps (title -> matrix) side by side."""
    n = len(matrices)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (title, matrix) in zip(axes.flat, matrices.items()):
        heatmap(matrix, row_labels, col_labels, title=title, ax=ax)
    return _finish(fig, save)


def line_plot(
    series: dict[str, Sequence[float]],
    x: Sequence,
    xlabel: str,
    ylabel: str,
    title: str = "",
    percent: bool = True,
    save: str | Path | None = None,
):
    """One line per series over ``x`` (e.g. per-layer CKA or probe accuracy, accuracy vs eps)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        values = [100 * v for v in values] if percent else list(values)
        ax.plot(range(len(x)), values, marker="o", label=name)
    ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=45 if len(x) > 8 else 0, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, save)


def eps_curves(frame, group: Sequence[str] = ("scheme", "scenario"), save: str | Path | None = None):
    """Robust accuracy vs eps, one line per group, from tidy records with ``eps`` and ``robust_acc``."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, part in frame.groupby(list(group)):
        part = part.sort_values("eps")
        name = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        ax.plot(part["eps"] * 255, 100 * part["robust_acc"], marker="o", label=name)
    ax.set_xlabel("eps (x/255)")
    ax.set_ylabel("robust accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _finish(fig, save)


def accuracy_bars(
    frame,
    index: str,
    columns: str,
    value: str = "robust_acc",
    title: str = "",
    save: str | Path | None = None,
):
    """Grouped bars of ``value`` (a fraction) with ``index`` on the x axis and one bar per ``columns`` value."""
    table = frame.pivot_table(index=index, columns=columns, values=value, sort=False) * 100
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(table) * max(1, len(table.columns)) / 2), 3.6))
    table.plot.bar(ax=ax, rot=0)
    ax.set_ylabel(value.replace("_", " ") + " (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, save)


def adversarial_gallery(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    clean_titles: Sequence[str],
    adv_titles: Sequence[str],
    magnify: float = 10.0,
    save: str | Path | None = None,
):
    """Rows: clean image, adversarial image, perturbation magnified (x ``magnify``, centred at grey)."""
    n = len(clean)
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n, 4.8), squeeze=False)
    delta = (adversarial - clean) * magnify + 0.5
    for column in range(n):
        for row, (images, title) in enumerate(((clean, clean_titles), (adversarial, adv_titles), (delta, None))):
            ax = axes[row, column]
            ax.imshow(_to_hwc(images[column]), interpolation="nearest")
            ax.axis("off")
            if title is not None:
                ax.set_title(str(title[column]), fontsize=7)
    axes[2, 0].set_title(f"perturbation x{magnify:g}", fontsize=7, loc="left")
    return _finish(fig, save)
