"""Figures shared by the chapters (matplotlib). Each returns the Figure and, given ``save``, writes a PNG.

Images are float ``[N, 3, H, W]`` in [0, 1] or uint8; accuracies are fractions in [0, 1] and are shown
as percentages; eps values are in [0, 1] pixel units and are shown as k/255.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from rcl.fileio import write_atomic


def _finish(fig, save: str | Path | None):
    """Lay ``fig`` out and, given ``save``, write it atomically (a symbolic link at ``save`` is replaced, never
    written through)."""
    fig.tight_layout()
    if save is not None:
        path = Path(save)
        write_atomic(path, lambda f: fig.savefig(f, format=path.suffix[1:] or "png", dpi=120, bbox_inches="tight"))
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


def _colours(names) -> dict:
    """One fixed colour per name (tab10, in order), so a run keeps its colour in every panel of a figure."""
    palette = plt.get_cmap("tab10").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(names))}


def _chance_line(ax, chance: float | None, percent: bool = True) -> None:
    """A dashed grey line at the accuracy of guessing (``chance``: a fraction, e.g. 1 / classes)."""
    if chance is not None:
        ax.axhline(100 * chance if percent else chance, color="0.4", ls="--", lw=0.9, label="chance", zorder=1)


def caption(fig, text: str) -> None:
    """A one-line caption under the figure, in the saved PNG too, stating the numbers the figure shows."""
    import textwrap

    fig.tight_layout()  # first: laid out later, the axes rise over tall tick labels and leave the caption far below
    renderer = fig.canvas.get_renderer()
    bottom = fig.get_tightbbox(renderer).y0 / fig.get_figheight()  # below every axis label and tick, in figure units
    fig.text(
        0.0, min(0.0, bottom) - 0.02, textwrap.fill(text, 150), fontsize=7, ha="left", va="top", color="0.25",
        transform=fig.transFigure,
    )  # fmt: skip


AXIS_NAMES = {  # what a training history's keys measure, for the axis of training_curves
    "loss": "training loss",
    "acc": "accuracy on training batches (%)",
    "adv_acc": "accuracy on PGD examples of training batches (%)",
    "val_acc": "validation accuracy (%)",
    "val_robust_acc": "validation robust accuracy (%)",
}


def training_curves(
    histories: dict[str, list[dict]],
    keys: Sequence[str] = ("loss",),
    chance: float | None = None,
    save: str | Path | None = None,
    title: str = "",
    names: dict[str, str] | None = None,
):
    """One panel per key in ``keys``; one line per run in ``histories`` (name -> per-epoch records), each run in
    the same colour in every panel (a run without a key leaves its panel without its line, not a shifted colour).
    Accuracies (keys containing ``acc``, fractions in the records) are drawn in %; ``chance``: a fraction, the line
    drawn on their panels; ``names``: axis labels by key, over :data:`AXIS_NAMES` (a contrastive history's ``acc``
    is its positive-pair top-1, whose chance is 1 / batch size, not 1 / classes); ``title``: what the runs are
    (e.g. which model's fine-tuning). Epochs are whole numbers on the axis."""
    from matplotlib.ticker import MaxNLocator

    names = {**AXIS_NAMES, **(names or {})}

    def scale(key: str) -> float:
        return 100.0 if "acc" in key else 1.0

    colours = _colours(histories)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, history in histories.items():
            points = [(r["epoch"], scale(key) * r[key]) for r in history if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", color=colours[name], label=name)
        if "acc" in key:
            _chance_line(ax, chance)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(names.get(key, key))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    axes.flat[0].legend(handles.values(), handles.keys(), fontsize=8)
    last = []
    for name, history in histories.items():
        shown = [
            f"{key} {history[-1][key]:.3g}" if "acc" not in key else f"{key} {100 * history[-1][key]:.1f} %"
            for key in keys
            if history and history[-1].get(key) is not None
        ]
        if shown:
            last.append(f"{name}: {', '.join(shown)}")
    text = f"After epoch {max((len(h) for h in histories.values()), default=0)}: " + "; ".join(last)
    if chance is not None and any("acc" in key for key in keys):
        text += f"; chance {100 * chance:.2g} %"
    caption(fig, text)
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
    size = 8 if max(len(row_labels), len(col_labels)) <= 12 else 7  # readable at the figure's printed size
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=90, fontsize=size)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=size)
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
    chance: float | None = None,
    save: str | Path | None = None,
):
    """One line per series over ``x`` (e.g. per-layer CKA or probe accuracy, accuracy vs eps); ``chance``: the
    accuracy of guessing (a fraction), drawn as a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        values = [100 * v for v in values] if percent else list(values)
        ax.plot(range(len(x)), values, marker="o", label=name)
    _chance_line(ax, chance, percent)
    ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=45 if len(x) > 8 else 0, fontsize=7)
    if tick_labels_overlap(ax):  # many long names (every BatchNorm layer of a ResNet): upright, one per line
        fig.set_figwidth(max(6.0, 0.3 * len(x)))
        ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=90, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    unit, scale = (" %", 100) if percent else ("", 1)
    caption(
        fig,
        "; ".join(
            f"{name}: {scale * list(v)[0]:.3g}{unit} at {x[0]}, {scale * list(v)[-1]:.3g}{unit} at {x[-1]}"
            for name, v in series.items()
        )
        + (f"; chance {100 * chance:.0f} %" if chance is not None else ""),
    )
    return _finish(fig, save)


def eps_curves(
    frame,
    group: Sequence[str] = ("scheme", "scenario"),
    chance: float | None = None,
    save: str | Path | None = None,
):
    """Robust accuracy vs eps from tidy records with ``eps`` and ``robust_acc``: one panel per value of
    ``group[0]`` (e.g. scheme), one line per value of the rest (e.g. scenario) in the same colour in every panel,
    so no panel holds more than a handful of lines. ``chance``: a dashed line at the accuracy of guessing."""
    first, rest = group[0], list(group[1:])
    panels = list(dict.fromkeys(frame[first]))
    colours = _colours(frame[rest].astype(str).agg(" / ".join, axis=1)) if rest else {}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.6, 3.4), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        part = frame[frame[first] == panel]
        for key, line in part.groupby(rest, sort=False) if rest else [(panel, part)]:
            line = line.sort_values("eps")
            name = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            ax.plot(line["eps"] * 255, 100 * line["robust_acc"], marker="o", color=colours.get(name), label=name)
        _chance_line(ax, chance)
        ax.set_title(str(panel))
        ax.set_xlabel("eps (x/255)")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("robust accuracy (%)")
    axes.flat[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    largest = frame.eps.max()
    at_largest = frame[frame.eps == largest]
    names = at_largest[list(group)].astype(str).agg(" / ".join, axis=1)
    caption(
        fig,
        f"Robust accuracy at {largest * 255:g}/255: "
        + ", ".join(f"{n} {100 * v:.1f} %" for n, v in zip(names, at_largest.robust_acc))
        + (f"; chance {100 * chance:.0f} %" if chance is not None else ""),
    )
    return _finish(fig, save)


def _wrap(label: str, width: int = 12) -> str:
    """Break a tick label into lines of about ``width`` characters at spaces, slashes and before parentheses."""
    import re

    parts = [p for p in re.split(r"(?<=[ /])|(?=\()", str(label)) if p]
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    lines.append(line.rstrip())
    return "\n".join(lines)


def tick_labels_overlap(ax, axis: str = "x") -> bool:
    """True when two visible tick labels of ``ax``'s ``axis`` overlap on the drawn figure."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    boxes = [t.get_window_extent(renderer) for t in labels if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _fit_tick_labels(ax) -> None:
    """Wrap long x tick labels, and turn them if they still collide (e.g. chapter 08's scheme names)."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    ax.set_xticks(ax.get_xticks(), [_wrap(t) for t in labels], rotation=0, fontsize=8)
    if tick_labels_overlap(ax):
        ax.set_xticks(ax.get_xticks(), labels, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)


def accuracy_bars(
    frame,
    index: str,
    columns: str,
    value: str = "robust_acc",
    title: str = "",
    chance: float | None = None,
    n: int | None = None,
    save: str | Path | None = None,
):
    """Grouped bars of ``value`` (a fraction) with ``index`` on the x axis and one bar per ``columns`` value.

    Every bar is labelled with its value (a 0.0 bar still shows "0.0", a model that did not run "not run"); ``n``
    (test images behind each accuracy) adds error bars of two standard errors (``rcl.verdicts.noise``, cut at 0 and
    100 %), ``chance`` a
    dashed line at the accuracy of guessing. Long x labels are wrapped (and turned if they still collide); the
    legend sits outside the bars."""
    from rcl.verdicts import noise

    table = frame.pivot_table(index=index, columns=columns, values=value, sort=False)
    groups, bars = len(table), max(1, len(table.columns))
    fig, ax = plt.subplots(figsize=(min(12.0, max(5.0, 0.35 * groups * bars + 1.2 * groups)), 3.6))
    errors = None
    if n:  # [column, (below, above), row], cut at 0 and 100 %: no accuracy lies outside them
        band = table.map(lambda p: 100 * noise(p, n=n)).to_numpy().T
        percent = 100 * table.to_numpy().T
        errors = np.stack([np.minimum(band, percent), np.minimum(band, 100 - percent)], axis=1)
    (100 * table).plot.bar(ax=ax, rot=0, yerr=errors, capsize=2, error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
    bars_of = [c for c in ax.containers if hasattr(c, "datavalues")]  # one per column, in the table's order
    for container, column in zip(bars_of, table.columns):  # pandas draws a missing cell as a 0-high bar
        labels = ["not run" if math.isnan(v) else f"{100 * v:.1f}" for v in table[column]]
        for text in ax.bar_label(container, labels=labels, fontsize=6, padding=1):
            if text.get_text() == "not run":  # upright: two missing neighbours' labels would run into each other
                text.set_rotation(90)
    _chance_line(ax, chance)
    ax.set_xlabel(index)
    ax.set_ylabel(value.replace("_", " ") + " (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, title=columns, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _fit_tick_labels(ax)
    cells = table.stack().dropna()
    if not cells.empty:
        (hi_row, hi_col), (lo_row, lo_col) = cells.idxmax(), cells.idxmin()
        text = (
            f"{value.replace('_', ' ')}: highest {hi_row} / {hi_col} {100 * cells.max():.1f} %, lowest {lo_row} / "
            f"{lo_col} {100 * cells.min():.1f} %"
        )
        text += f"; chance {100 * chance:.0f} %" if chance is not None else ""
        text += f"; error bars: two standard errors on {n} test images" if n else ""
        caption(fig, text)
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


# --------------------------------------------------------------------------------------------- grouped lines
def grouped_lines(
    frame,
    x: str,
    values: dict[str, str],
    color_by: str = "scheme",
    marker_by: str | None = "scenario",
    x_order: Sequence | None = None,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    percent: bool = True,
    panel_by: str | None = None,
    chance: float | None = None,
    save: str | Path | None = None,
):
    """Lines from a tidy ``frame``: colour per ``color_by`` value, line style per entry of ``values``, marker per
    ``marker_by`` value; the legend sits outside the axes, one entry per colour, style and marker. ``panel_by``: one
    panel per value of that column (sharing the y axis), so no panel holds more than a handful of lines; a colour
    means the same value in every panel. ``chance``: a dashed line at the accuracy of guessing.

    ``values``: label -> column, e.g. ``{"clean": "clean_acc", "robust": "robust_acc"}`` (first solid, then
    dashed, dotted, ...). ``x``: the column on the x axis (categorical, in ``x_order`` or first-seen order).
    """
    from matplotlib.lines import Line2D

    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    x_order = list(dict.fromkeys(frame[x])) if x_order is None else list(x_order)
    colors = _colours(frame[color_by])
    marks = (
        {key: markers[i % len(markers)] for i, key in enumerate(dict.fromkeys(frame[marker_by]))} if marker_by else {}
    )
    line_style = {label: styles[i % len(styles)] for i, label in enumerate(values)}
    panels = list(dict.fromkeys(frame[panel_by])) if panel_by else [None]
    width = 7.2 if panel_by is None else 3.4 * len(panels) + 1.6
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.8), squeeze=False, sharey=True)
    keys = [color_by] + ([marker_by] if marker_by else [])
    for ax, panel in zip(axes.flat, panels):
        part_of_panel = frame if panel is None else frame[frame[panel_by] == panel]
        for key, part in part_of_panel.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            part = part.set_index(x).reindex(x_order)
            for label, column in values.items():
                ys = part[column].astype(float) * (100 if percent else 1)
                ax.plot(
                    range(len(x_order)),
                    ys.values,
                    color=colors[key[0]],
                    linestyle=line_style[label],
                    marker=marks.get(key[1]) if marker_by else "o",
                    markersize=4,
                    label=" / ".join(str(k) for k in key) + f" {label}",
                )
        _chance_line(ax, chance, percent)
        rotate = 45 if len(x_order) > 8 or panel_by else 0
        ax.set_xticks(range(len(x_order)), [str(v) for v in x_order], rotation=rotate, fontsize=7)
        ax.set_xlabel(xlabel or x)
        ax.set_title(str(panel) if panel is not None else title, fontsize=9 if panel is not None else None)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel(ylabel + (" (%)" if percent else ""))
    if panel_by is not None and title:
        fig.suptitle(title)
    handles = [Line2D([], [], color=c, lw=2, label=str(k)) for k, c in colors.items()]
    if len(values) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=s, label=str(k)) for k, s in line_style.items()]
    if marker_by and len(marks) > 1:
        handles += [Line2D([], [], color="0.3", marker=m, linestyle="", label=str(k)) for k, m in marks.items()]
    axes.flat[-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    first_label, first_column = next(iter(values.items()))
    end = frame[frame[x] == x_order[-1]]
    group = [c for c in (panel_by, color_by, marker_by) if c]
    scale = 100 if percent else 1
    shown = []
    for key, part in end.groupby(group, sort=False):
        name = " / ".join(map(str, key if isinstance(key, tuple) else (key,)))
        shown.append(f"{name} {scale * part[first_column].iloc[0]:.3g}" + (" %" if percent else ""))
    caption(fig, f"{first_label} at {x_order[-1]}: " + ", ".join(shown))
    return _finish(fig, save)


# --------------------------------------------------------------------------------------------------- diagrams
_STANDARD, _ADVERSARIAL, _NEUTRAL, _LOSS = "#cfe3f7", "#f7d0cb", "#eeeeee", "#fff1c2"


def _canvas(width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float]):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return fig, ax


def _box(ax, x: float, y: float, text: str, w: float = 1.4, h: float = 0.6, color: str = _NEUTRAL, size: int = 8):
    """A rounded box centred at (x, y) with ``text``; returns the box's (left, right, bottom, top)."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="0.3", lw=0.8
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)
    return (x - w / 2, x + w / 2, y - h / 2, y + h / 2)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", color: str = "0.25", style="-|>"):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle=style, color=color, lw=1.0, shrinkA=2, shrinkB=2))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center", va="bottom", fontsize=7)


def _thumb(ax, image: torch.Tensor, x: float, y: float, size: float = 0.7):
    ax.imshow(_to_hwc(image), extent=(x - size / 2, x + size / 2, y - size / 2, y + size / 2), zorder=3)


def simclr_diagram(
    image: torch.Tensor | None = None, views: torch.Tensor | None = None, save: str | Path | None = None
):
    """SimCLR's pipeline (Chen et al. 2020, Fig. 2): one image, two random views, a shared encoder ``f`` and
    projection head ``g``, and NT-Xent pulling the two embeddings together against the batch's other views.

    ``image``: optional ``[3, H, W]`` shown as ``x``; ``views``: optional ``[2, 3, H, W]`` shown as the two views.
    """
    fig, ax = _canvas(10, 3.4, (-0.6, 10.4), (-0.2, 3.4))
    rows = {"i": 2.4, "j": 0.8}
    if image is not None:
        _thumb(ax, image, 0.2, 1.6, 0.8)
        ax.text(0.2, 2.15, "x", ha="center", fontsize=9)
    else:
        _box(ax, 0.2, 1.6, "image x", w=0.9)
    for k, (name, y) in enumerate(rows.items()):
        t = "t ~ T" if name == "i" else "t' ~ T"
        _arrow(ax, (0.7, 1.6), (1.8, y), t)
        if views is not None:
            _thumb(ax, views[k], 2.25, y, 0.7)
        else:
            _box(ax, 2.25, y, f"view x̃_{name}", w=0.9)
        ax.text(2.25, y - 0.52, f"x̃_{name}", ha="center", fontsize=8)
        _arrow(ax, (2.7, y), (3.4, y))
        _box(ax, 4.1, y, "encoder f\n(ResNet)", w=1.3, color=_STANDARD)
        _arrow(ax, (4.8, y), (5.4, y), f"h_{name}")
        _box(ax, 6.1, y, "projection\nhead g", w=1.3, color=_STANDARD)
        _arrow(ax, (6.8, y), (7.6, y), f"z_{name}")
    ax.plot([4.1, 4.1], [2.1, 1.1], ls=":", color="0.4")
    ax.text(4.2, 1.6, "shared\nweights", fontsize=7, va="center")
    _box(ax, 8.8, 1.6, "NT-Xent: pull z_i, z_j\ntogether, push away the\n2N - 2 other views\nof the batch", w=2.3,
         h=1.6, color=_LOSS)  # fmt: skip
    ax.text(4.1, 0.0, "after pre-training: g is dropped; a linear classifier is trained on h = f(x)", ha="left",
            fontsize=7, style="italic")  # fmt: skip
    ax.set_title("SimCLR: two random views of one image, one encoder, one contrastive loss", fontsize=10)
    return _finish(fig, save)


def scenarios_diagram(recipe: dict[str, tuple[bool, str, bool]], save: str | Path | None = None):
    """The training scenarios as rows: pre-training (standard or adversarial), then what is fine-tuned (the
    linear head on a frozen encoder, or the whole network) and how (standard or adversarial).

    ``recipe``: scenario -> ``(adversarial pre-training?, "linear" | "full", adversarial fine-tuning?)``, e.g.
    ``rcl.study.SCENARIO_RECIPE``, so the figure always draws the code's table.
    """
    n = len(recipe)
    fig, ax = _canvas(9, 0.62 * n + 1.0, (-0.2, 9.6), (-0.9, n))
    for row, (name, (adv_pre, mode, adv_fine)) in enumerate(recipe.items()):
        y = n - 1 - row + 0.2
        ax.text(0.0, y, name.replace("->", "→"), ha="left", va="center", fontsize=9, weight="bold")
        _box(ax, 3.0, y, ("adversarial" if adv_pre else "standard") + " pre-training", w=2.6, h=0.5,
             color=_ADVERSARIAL if adv_pre else _STANDARD)  # fmt: skip
        _arrow(ax, (4.35, y), (5.15, y))
        part = "linear head (encoder frozen)" if mode == "linear" else "whole network fine-tuned"
        _box(ax, 7.3, y, ("adversarial: " if adv_fine else "standard: ") + part, w=4.2, h=0.5,
             color=_ADVERSARIAL if adv_fine else _STANDARD)  # fmt: skip
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(fc=_STANDARD, ec="0.3", label="clean images"), Patch(fc=_ADVERSARIAL, ec="0.3",
                 label="clean + PGD adversarial images")],  # fmt: skip
        loc="lower center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02),
    )  # fmt: skip
    ax.set_title("where adversarial examples enter: the training scenarios", fontsize=10)
    return _finish(fig, save)


def dual_bn_diagram(save: str | Path | None = None):
    """ACL's dual-stream (DS) network: clean views through the clean BatchNorm, adversarial views through the
    adversarial one, every convolution shared, and the two NT-Xent losses averaged."""
    fig, ax = _canvas(10, 3.6, (-0.4, 10.4), (-0.3, 3.5))
    streams = {"clean": (2.6, "views v1, v2", _STANDARD), "adv": (0.7, "adversarial views\nṽ1, ṽ2 (PGD on NT-Xent)",
               _ADVERSARIAL)}  # fmt: skip
    for route, (y, text, color) in streams.items():
        _box(ax, 0.8, y, text, w=2.0, h=0.8, color=color)
        _arrow(ax, (1.8, y), (2.7, y))
        _box(ax, 3.4, y, "conv", w=1.2, h=0.6, color=_NEUTRAL)
        _arrow(ax, (4.0, y), (4.6, y))
        _box(ax, 5.3, y, f"BN_{route}", w=1.2, h=0.6, color=color)
        _arrow(ax, (5.9, y), (6.5, y))
        ax.text(6.2, y - 0.45, "(every layer)", ha="center", fontsize=6)
        _box(ax, 7.2, y, f"NT-Xent({'v1, v2' if route == 'clean' else 'ṽ1, ṽ2'})", w=1.6, h=0.6, color=_LOSS)
        _arrow(ax, (8.0, y), (8.7, 1.65))
    ax.plot([3.4, 3.4], [2.3, 1.0], ls=":", color="0.4")
    ax.text(3.5, 1.65, "same conv\nweights", fontsize=7, va="center")
    ax.plot([5.3, 5.3], [2.3, 1.0], ls=":", color="0.75")
    ax.text(5.4, 1.65, "separate\nstatistics", fontsize=7, va="center")
    _box(ax, 9.4, 1.65, "L_DS =\n½ (clean\n+ adv)", w=1.2, h=1.2, color=_LOSS)
    ax.text(0.0, -0.15, "fine-tuning and evaluation keep the adversarial branch BN_adv", fontsize=7, style="italic")
    ax.set_title("ACL's dual stream (DS): one network, two sets of BatchNorm statistics", fontsize=10)
    return _finish(fig, save)


def threat_models_diagram(save: str | Path | None = None):
    """The main study's two threat models: I maximises the contrastive loss between the representation of the
    perturbed image and that of the clean one (encoder and projection head); II maximises the classifier's
    cross-entropy end to end. Either way the classifier then labels the perturbed image."""
    fig, ax = _canvas(10, 4.2, (-0.4, 10.4), (-0.6, 4.4))
    # threat model I
    ax.text(-0.3, 4.15, "threat model I: attack the representation", fontsize=9, weight="bold")
    for y, text, color in ((3.3, "x + δ", _ADVERSARIAL), (2.3, "x (clean)", _STANDARD)):
        _box(ax, 0.6, y, text, w=1.2, h=0.55, color=color)
        _arrow(ax, (1.2, y), (1.9, y))
        _box(ax, 2.6, y, "encoder f", w=1.3, h=0.55, color=_NEUTRAL)
        _arrow(ax, (3.25, y), (3.9, y))
        _box(ax, 4.6, y, "projection g", w=1.3, h=0.55, color=_NEUTRAL)
        _arrow(ax, (5.25, y), (6.1, 2.8), "z'" if y > 3 else "z")
    tm1 = (
        "maximise over δ:\nNT-Xent(z', z) for CL and SL\n(SL: z = f(x), no projection)\nSupCon(z', z; labels y) for SCL"
    )
    _box(ax, 7.6, 2.8, tm1, w=2.9, h=1.2, color=_LOSS, size=7)
    # threat model II
    ax.text(-0.3, 1.35, "threat model II: attack the classifier end to end", fontsize=9, weight="bold")
    _box(ax, 0.6, 0.5, "x + δ", w=1.2, h=0.55, color=_ADVERSARIAL)
    _arrow(ax, (1.2, 0.5), (1.9, 0.5))
    _box(ax, 2.6, 0.5, "encoder f", w=1.3, h=0.55, color=_NEUTRAL)
    _arrow(ax, (3.25, 0.5), (3.9, 0.5))
    _box(ax, 4.6, 0.5, "linear head h", w=1.3, h=0.55, color=_NEUTRAL)
    _arrow(ax, (5.25, 0.5), (6.1, 0.5), "logits")
    _box(ax, 7.6, 0.5, "maximise over δ:\ncross-entropy(logits, y)", w=2.9, h=0.75, color=_LOSS, size=7)
    ax.text(-0.3, -0.45, "both: ||δ||∞ ≤ ε, found by PGD; robust accuracy = how often h(f(x + δ)) is still y",
            fontsize=7, style="italic")  # fmt: skip
    ax.set_title("what the attacker maximises", fontsize=10)
    return _finish(fig, save)
