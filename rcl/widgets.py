"""Interactive explorers for JupyterLab (ipywidgets): augmentations, adversarial examples, CKA maps.

- :func:`augmentation_explorer`: one image and a grid of SimCLR views (Chen et al. 2020, Sec. 3 and
  App. A: random resized crop, flip, colour jitter of strength ``s``, random grayscale) as the crop
  scale, jitter strength, grayscale probability and seed move.
- :func:`attack_explorer`: clean vs PGD adversarial image (Madry et al. 2018, L-inf), the perturbation
  magnified, and the model's prediction with its confidence on each.
- :func:`cka_explorer`: layer-by-layer linear CKA heatmaps (Kornblith et al. 2019; minibatch unbiased
  estimator of Nguyen et al. 2021) on clean or adversarial inputs, and the diagonal of the
  clean-vs-adversarial map, as in Ghofrani et al.'s CKA study.

Each explorer is an :class:`Explorer`, a ``VBox`` that the notebook displays as its cell's last line.
Its ``controls`` are the sliders and menus (tests and a browser drive them), ``update()`` renders the
current setting, and ``state`` holds what was last rendered. Figures are drawn with matplotlib's
object API (no pyplot, so nothing leaks) into PNG bytes placed in an ``ipywidgets.Output``; this works
the same without a frontend (papermill, nbval, pytest). A missing checkpoint is shown as a message
naming the notebook to run, never raised.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from rcl import checks
from rcl.course import notebook_for
from rcl.runtime import make_generator, model_device

Input = str  # "clean" | "adversarial" | "clean-vs-adversarial"
INPUTS: tuple[str, ...] = ("clean", "adversarial", "clean-vs-adversarial")

# The schemes of the main study (rcl.study): (scheme, its name, the chapter that trains it). A run folder's
# classifier of a scheme lives in a folder named "<scheme>-<scenario>" (e.g. 04_scenarios/CL-ST).
EXPECTED_CLASSIFIERS: tuple[tuple[str, str, str], ...] = (
    ("SL", "supervised", "01_supervised"),
    ("CL", "SimCLR", "02_simclr"),
    ("SCL", "SupCon", "03_supcon"),
)


# --------------------------------------------------------------------------------------------- base
def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a matplotlib ``Figure`` (object API, not pyplot) to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _png_output(png: bytes, text: str) -> dict:
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text},
        "metadata": {},
    }


class Explorer(widgets.VBox):
    """A ``VBox`` of controls, a status line and an ``Output`` with the current figure.

    Attributes:
        controls: name -> control widget (``.value`` can be set programmatically; the figure follows).
        output: the ``ipywidgets.Output`` holding the last figure (``output.outputs``).
        status: an ``HTML`` line under the controls (predictions, messages).
        state: what was last rendered: the parameters, plus results such as predictions; ``state["png"]``
            holds the figure's PNG bytes, ``state["message"]`` a message shown instead of a figure.
        renders: how many times the figure has been rendered.
    """

    def __init__(self, controls: Mapping[str, widgets.Widget], render: Callable[[dict], tuple[Figure, dict]]):
        self.controls = dict(controls)
        self.output = widgets.Output(layout=widgets.Layout(min_height="120px"))
        self.status = widgets.HTML()
        self.state: dict = {}
        self.renders = 0
        self._render = render
        rows = [widgets.HBox(list(self.controls.values())[i : i + 3]) for i in range(0, len(self.controls), 3)]
        super().__init__([*rows, self.status, self.output])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.update()

    def __repr__(self) -> str:  # the text/plain a static rendering or a papermill log shows
        shown = self.state.get("message") or self.state.get("caption") or ", ".join(map(str, self.params().items()))
        return f"{type(self).__name__}({shown})"

    def params(self) -> dict:
        """The current value of every control."""
        return {name: control.value for name, control in self.controls.items()}

    def _on_change(self, _change: dict) -> None:
        self.update()

    def show_message(self, message: str) -> None:
        """Show ``message`` (bold, in the status line) instead of a figure (e.g. which notebook to run first)."""
        self.status.value = "<b>" + _escape(message).replace("\n", "<br>") + "</b>"
        self.output.outputs = ()
        self.state = {**self.params(), "message": message}

    def update(self) -> None:
        """Render the figure for the current control values into ``output``; errors become messages."""
        params = self.params()
        try:
            fig, results = self._render(params)
        except _Missing as missing:
            self.show_message(str(missing))
            return
        except (ValueError, RuntimeError) as err:
            self.show_message(f"could not render with {params}: {err}")
            return
        png = figure_png(fig)
        caption = results.pop("caption", "figure")
        self.output.outputs = (_png_output(png, caption),)
        self.status.value = results.pop("html", "")
        self.state = {**params, **results, "caption": caption, "png": png}
        self.renders += 1


class _Missing(Exception):
    """A checkpoint or matrix the explorer needs is not there; the message says what to run."""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _image(x: Tensor):
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` NumPy array for ``imshow``."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _split_of(data, split_name: str = "test"):
    """A ``Split`` from a ``Split`` or a ``Dataset`` (its ``split_name`` split), plus the class names."""
    classes = getattr(data, "classes", None)
    if hasattr(data, "train") and hasattr(data, "test"):
        data = getattr(data, split_name)
    if not hasattr(data, "images") or not hasattr(data, "labels"):
        raise TypeError(f"expected an rcl.data Split or Dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the split is empty: load a dataset with at least one image")
    return data, classes


def _float_image(split, index: int) -> tuple[Tensor, int]:
    """Image ``index`` of a uint8 split as float ``[1, 3, H, W]`` in [0, 1] and its label."""
    return split.images[index : index + 1].float().div(255.0), int(split.labels[index])


def _class_name(classes: Sequence[str] | None, label: int) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


# --------------------------------------------------------------------------------------------- augmentations
def jitter_of_strength(s: float) -> tuple[float, float, float, float]:
    """SimCLR's colour distortion of strength ``s`` (App. A): brightness, contrast, saturation ``0.8 s``, hue ``0.2 s``.

    ``s = 0.5`` gives the main study's ColorJitter(0.4, 0.4, 0.4, 0.1); hue is capped at 0.5.
    """
    checks.number("strength", s, low=0.0, hint="the colour-jitter strength s; 0.5 is the main study's")
    return (0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5))


def augmentation_explorer(
    data,
    *,
    index: int = 0,
    n_views: int = 8,
    scale_min: float = 0.08,
    strength: float = 0.5,
    gray_p: float = 0.2,
    seed: int = 0,
    split: str = "test",
) -> Explorer:
    """Sliders over SimCLR's augmentation; shows the original image and ``n_views`` random views of it.

    Args:
        data: an ``rcl.data`` ``Dataset`` (its ``split`` split is used, class names shown) or a ``Split``.
        index: the image shown first. n_views: views in the grid (>= 1).
        scale_min: lower end of RandomResizedCrop's area fraction (SimCLR: 0.08; ACL: 0.1).
        strength: colour-jitter strength ``s`` (see :func:`jitter_of_strength`; 0.5 = the main study).
        gray_p: probability of grayscale. seed: seeds the views, so the same setting redraws the same views.

    Controls: ``index``, ``scale_min``, ``strength``, ``gray_p``, ``seed``. ``state["views"]`` holds the
    last views, float ``[n_views, 3, H, W]`` in [0, 1].
    """
    from rcl.augment import simclr_augment

    images, classes = _split_of(data, split)
    checks.integer("n_views", n_views, 1)
    checks.integer("index", index, 0, maximum=len(images) - 1, hint=f"the split holds {len(images)} images")
    style = {"description_width": "initial"}
    controls = {
        "index": widgets.IntSlider(index, 0, len(images) - 1, description="image", continuous_update=False),
        "scale_min": widgets.FloatSlider(
            scale_min, min=0.02, max=1.0, step=0.02, description="crop scale min", style=style, continuous_update=False
        ),
        "strength": widgets.FloatSlider(
            strength, min=0.0, max=1.5, step=0.1, description="jitter strength", style=style, continuous_update=False
        ),
        "gray_p": widgets.FloatSlider(
            gray_p, min=0.0, max=1.0, step=0.05, description="grayscale p", style=style, continuous_update=False
        ),
        "seed": widgets.IntSlider(seed, 0, 99, description="seed", continuous_update=False),
    }

    def render(p: dict) -> tuple[Figure, dict]:
        x, label = _float_image(images, p["index"])
        generator = make_generator(x.device, p["seed"])
        views = simclr_augment(
            x.expand(n_views, -1, -1, -1).contiguous(),
            generator,
            scale=(p["scale_min"], 1.0),
            jitter=jitter_of_strength(p["strength"]),
            gray_p=p["gray_p"],
        )
        cols = min(n_views + 1, 5)
        rows = math.ceil((n_views + 1) / cols)
        fig = Figure(figsize=(1.8 * cols, 1.9 * rows))
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        name = _class_name(classes, label)
        for ax, img, title in zip(axes, [x[0], *views], ["original", *[f"view {i + 1}" for i in range(n_views)]]):
            ax.imshow(_image(img), interpolation="nearest")
            ax.set_title(title, fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"image {p['index']} ({name}): {n_views} SimCLR views", fontsize=10)
        caption = f"{n_views} SimCLR views of image {p['index']} ({name})"
        return fig, {"views": views, "caption": caption, "html": caption}

    return Explorer(controls, render)


# --------------------------------------------------------------------------------------------- attacks
def _checkpoint_kind(path: Path) -> str | None:
    """The ``"kind"`` of the model stored at ``path`` (``"classifier"``, ...), or None if unreadable."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a corrupt or foreign file is just not offered
        return None
    config = blob.get("config") if isinstance(blob, dict) else None
    if not isinstance(config, dict):
        return None
    return config.get("kind", "encoder" if "arch" in config else None)


def _rank(path: Path) -> tuple:
    name = path.stem.lower()
    return ("best" not in name, "final" not in name, -path.stat().st_mtime)


def find_checkpoints(run_dir: str | Path, kind: str = "classifier") -> dict[str, Path]:
    """Checkpoints of models of ``kind`` under ``run_dir``, labelled ``"<chapter>/<file stem>"``.

    ``kind``: ``"classifier"`` (logits), ``"contrastive"`` (encoder + head) or ``"encoder"``. Files are
    read memory-mapped, so finding them is cheap; loading happens when a model is chosen.
    """
    run_dir = Path(run_dir)
    found = {}
    if run_dir.is_dir():
        paths = [p for ext in ("*.pt", "*.pth") for p in run_dir.rglob(ext) if not p.name.endswith(".tmp")]
        for path in sorted(paths, key=_rank):
            if _checkpoint_kind(path) == kind:
                found.setdefault(path.relative_to(run_dir).with_suffix("").as_posix(), path)
    return dict(sorted(found.items()))


def missing_message(run_dir: str | Path, chapter: str, what: str) -> str:
    """``"no SimCLR checkpoint in runs/x/02_simclr: run notebooks/02_simclr.ipynb first"``."""
    return f"no {what} checkpoint in {Path(run_dir) / chapter}: run {notebook_for(chapter)} first"


def _models_from_run_dir(run_dir: Path) -> tuple[dict[str, object], list[str]]:
    """Classifier checkpoints under ``run_dir`` and a message for each scheme that has none."""
    found = find_checkpoints(run_dir, "classifier")
    parts = [part for label in found for part in Path(label).parts]
    messages = [
        f"no {name} ({scheme}) classifier checkpoint in {run_dir}: run {notebook_for(chapter)} first"
        for scheme, name, chapter in EXPECTED_CLASSIFIERS
        if not any(part.startswith(f"{scheme}-") for part in parts)
    ]
    return dict(found), messages


def _offered_models(models: Mapping[str, nn.Module | str | Path] | str | Path) -> tuple[Mapping, list[str]]:
    """The models to choose from and the messages shown beside them: ``models`` itself, or the classifier
    checkpoints of a run folder (with a message for each scheme that has none, or for the empty folder)."""
    if not isinstance(models, (str, Path)):
        return models, []
    run_dir = Path(models)
    found, messages = _models_from_run_dir(run_dir)
    if not found:
        messages = messages or [missing_message(run_dir, EXPECTED_CLASSIFIERS[0][2], "classifier")]
    return found, messages


def _loaded_on_demand(models: Mapping[str, nn.Module | str | Path]) -> Callable[[str], nn.Module]:
    """``model_named(name)``: the model itself, or its checkpoint loaded the first time it is chosen."""
    loaded: dict[str, nn.Module] = {}

    def model_named(name: str) -> nn.Module:
        if name not in loaded:
            entry = models[name]
            if isinstance(entry, nn.Module):
                loaded[name] = entry
            else:
                from rcl.checkpoint import load_model

                loaded[name] = load_model(entry)
        return loaded[name]

    return model_named


def attack_explorer(
    models: Mapping[str, nn.Module | str | Path] | str | Path,
    data,
    *,
    index: int = 0,
    eps: float = 8.0,
    steps: int = 10,
    seed: int = 0,
    split: str = "test",
) -> Explorer:
    """PGD (L-inf) on one image: clean vs adversarial, the perturbation magnified, both predictions.

    Args:
        models: name -> classifier (``x [B, 3, H, W] in [0, 1] -> logits``) or a checkpoint path; or a
            run folder, whose classifier checkpoints are offered (missing chapters are named in a message).
        data: an ``rcl.data`` ``Dataset`` or ``Split``.
        eps: the first radius, in pixel levels out of 255 (8 = 8/255). steps: PGD iterations.
        seed: PGD's random start.

    Controls: ``model``, ``index``, ``eps`` (in /255), ``steps``. The step size is
    ``alpha = 2.5 eps / steps`` (Madry et al.'s rule). ``state`` holds ``clean_pred``, ``adv_pred``,
    ``clean_conf``, ``adv_conf`` (the predicted class's probability), ``clean_true_prob``, ``adv_true_prob``
    (the true class's), ``label`` and ``linf`` (the perturbation's size, pixel units).
    """
    images, classes = _split_of(data, split)
    models, messages = _offered_models(models)
    model_named = _loaded_on_demand(models)
    names = list(models) or ["(none)"]
    style = {"description_width": "initial"}
    controls = {
        "model": widgets.Dropdown(options=names, value=names[0], description="model"),
        "index": widgets.IntSlider(index, 0, len(images) - 1, description="image", continuous_update=False),
        "eps": widgets.FloatSlider(
            eps, min=0.0, max=32.0, step=1.0, description="eps (/255)", style=style, continuous_update=False
        ),
        "steps": widgets.IntSlider(steps, 0, 50, description="PGD steps", style=style, continuous_update=False),
    }

    def render(p: dict) -> tuple[Figure, dict]:
        if not models:
            raise _Missing("\n".join(messages))
        x, label = _float_image(images, p["index"])
        steps_ = int(p["steps"])
        x, x_adv, probs = _attack_one_image(model_named(p["model"]), x, label, p["eps"] / 255.0, steps_, seed)
        conf, pred = probs.max(dim=1)
        clean_name, adv_name = _class_name(classes, int(pred[0])), _class_name(classes, int(pred[1]))
        true_name = _class_name(classes, label)
        titles = [f"clean: {clean_name} ({conf[0]:.0%})", f"adversarial: {adv_name} ({conf[1]:.0%})"]
        title = f"{p['model']}: image {p['index']} (true: {true_name}), eps {p['eps']:g}/255, {steps_} steps"
        fig, linf = _attack_figure(x, x_adv, titles, title)
        html = (
            f"true <b>{_escape(true_name)}</b> · clean → <b>{_escape(clean_name)}</b> ({conf[0]:.1%}) · "
            f"adversarial → <b>{_escape(adv_name)}</b> ({conf[1]:.1%})"
            + (" · <b>the attack changed the prediction</b>" if int(pred[0]) != int(pred[1]) else "")
        )
        if messages:
            html += "<br>" + "<br>".join(_escape(m) for m in messages)
        results = {
            "label": label,
            "clean_pred": int(pred[0]),
            "adv_pred": int(pred[1]),
            "clean_conf": float(conf[0]),
            "adv_conf": float(conf[1]),
            "clean_true_prob": float(probs[0, label]),
            "adv_true_prob": float(probs[1, label]),
            "linf": linf,
            "caption": titles[0] + "; " + titles[1],
            "html": html,
        }
        return fig, results

    return Explorer(controls, render)


def _attack_one_image(
    model: nn.Module, x: Tensor, label: int, eps: float, steps: int, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """PGD (L-inf, ``alpha = 2.5 eps / steps``, seeded random start) on one image ``x [1, 3, H, W]`` in [0, 1].

    Returns ``x`` and ``x_adv`` on the model's device and the model's softmax ``[2, C]`` on both (eval mode; the
    model's train/eval flags are given back).
    """
    from rcl.attacks import pgd

    device = model_device(model)
    x = x.to(device)
    y = torch.tensor([label], device=device)
    alpha = 2.5 * eps / steps if steps > 0 and eps > 0 else 1.0 / 255
    generator = make_generator(device, seed)
    x_adv = pgd(model, x, y, eps, alpha, steps, generator=generator)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.cat([x, x_adv])).float(), dim=1).cpu()
    model.train(was_training)
    return x, x_adv, probs


def _attack_figure(x: Tensor, x_adv: Tensor, titles: list[str], title: str) -> tuple[Figure, float]:
    """Clean image, adversarial image and their difference magnified to fill [0, 1]; and the difference's L-inf."""
    delta = (x_adv - x)[0].float()
    linf = float(delta.abs().max())
    magnified = delta / (2 * max(linf, 1e-12)) + 0.5
    fig = Figure(figsize=(7.5, 2.8))
    axes = fig.subplots(1, 3)
    for ax, img, text in zip(
        axes, [x[0], x_adv[0], magnified], [*titles, f"perturbation x{0.5 / max(linf, 1e-12):.0f}"]
    ):
        ax.imshow(_image(img), interpolation="nearest")
        ax.set_title(text, fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    return fig, linf


# --------------------------------------------------------------------------------------------- CKA
def _as_matrix(value) -> Tensor:
    matrix = torch.as_tensor(value, dtype=torch.float64).cpu()
    if matrix.dim() != 2:
        raise ValueError(f"a CKA matrix must be 2-D [layers, layers], got shape {tuple(matrix.shape)}")
    return matrix


def _adversarial_inputs(model: nn.Module, x: Tensor, y: Tensor, attack, temperature: float) -> Tensor:
    """PGD inputs for ``model``: cross-entropy on labels for a classifier, the contrastive loss otherwise."""
    from rcl.attacks import contrastive_loss_fn

    if hasattr(model, "fc"):
        return attack.run(model, x, y)
    with torch.no_grad():
        z_clean = model(x).detach()
    return attack.run(model, x, z_clean, loss_fn=contrastive_loss_fn(temperature))


def compute_cka_matrices(
    models: Mapping[tuple[str, str], nn.Module],
    data,
    attack,
    *,
    n: int = 128,
    split: str = "test",
    temperature: float = 0.5,
) -> tuple[dict[tuple[str, str, str], Tensor], list[str]]:
    """Layer-by-layer CKA of each model on clean inputs, on adversarial inputs, and clean vs adversarial.

    Args:
        models: ``(scheme, scenario)`` -> classifier, contrastive net or encoder (the encoder's taps are used).
        data: ``Dataset`` or ``Split``; the first ``n`` images are used.
        attack: an ``rcl.attacks.AttackConfig``: PGD on cross-entropy for classifiers, on the contrastive
            loss (``temperature``) for contrastive nets.

    Returns ``({(scheme, scenario, input): [L, L] float64}, tap names)`` with ``input`` in :data:`INPUTS`.
    """
    from rcl.cka import layer_cka

    images, _ = _split_of(data, split)
    x = images.images[:n].float().div(255.0)
    y = images.labels[:n]
    matrices: dict[tuple[str, str, str], Tensor] = {}
    names: list[str] = []
    for (scheme, scenario), model in models.items():
        device = model_device(model)
        xd, yd = x.to(device), y.to(device)
        x_adv = _adversarial_inputs(model, xd, yd, attack, temperature).detach()
        encoder = getattr(model, "encoder", model)
        clean = layer_cka(encoder, xd)
        adv = layer_cka(encoder, x_adv)
        offset = [0]

        def adversarial_of(batch: Tensor, x_adv: Tensor = x_adv, offset: list = offset) -> Tensor:
            # layer_cka reads the data in order, so batch k is x[offset : offset + len(batch)]
            out = x_adv[offset[0] : offset[0] + len(batch)]
            offset[0] += len(batch)
            return out

        cross = layer_cka(encoder, xd, inputs_b=adversarial_of)
        names = list(clean.taps_a)
        matrices[(scheme, scenario, "clean")] = _as_matrix(clean.matrix)
        matrices[(scheme, scenario, "adversarial")] = _as_matrix(adv.matrix)
        matrices[(scheme, scenario, "clean-vs-adversarial")] = _as_matrix(cross.matrix)
    return matrices, list(names)


def cka_explorer(
    matrices: Mapping[tuple[str, str, str], object] | None = None,
    *,
    layer_names: Sequence[str] | None = None,
    models: Mapping[tuple[str, str], nn.Module] | None = None,
    data=None,
    attack=None,
    n: int = 128,
    run_dir: str | Path | None = None,
    chapter: str = "06_cka",
) -> Explorer:
    """Heatmap of a layer-by-layer CKA matrix and the clean-vs-adversarial diagonal per scheme.

    Pass either ``matrices``: ``{(scheme, scenario, input): [L, L]}`` (tensor or array, ``input`` one of
    :data:`INPUTS`), as chapter 06 computes them, with their ``layer_names``; or ``models``
    (``(scheme, scenario)`` -> model), ``data`` and ``attack`` to compute them here with
    :func:`compute_cka_matrices`. With neither, the explorer shows which notebook to run
    (``chapter`` in ``run_dir``).

    Controls: ``scheme``, ``scenario``, ``input``. The right panel plots, for every scheme of the chosen
    scenario, the diagonal of its clean-vs-adversarial matrix: how similar each layer's representation of
    an adversarial image is to its representation of the clean one (1 = unchanged).
    """
    if matrices is None and models is not None:
        if data is None or attack is None:
            raise ValueError("computing CKA needs data= (a Dataset or Split) and attack= (an AttackConfig)")
        matrices, layer_names = compute_cka_matrices(models, data, attack, n=n)
    matrices = _keyed_matrices(matrices or {})
    schemes = sorted({k[0] for k in matrices}) or ["(none)"]
    scenarios = sorted({k[1] for k in matrices}) or ["(none)"]
    controls = {
        "scheme": widgets.Dropdown(options=schemes, value=schemes[0], description="scheme"),
        "scenario": widgets.Dropdown(options=scenarios, value=scenarios[0], description="scenario"),
        "input": widgets.ToggleButtons(options=list(INPUTS), value="clean", description="input"),
    }
    where = Path(run_dir) if run_dir is not None else Path("runs/<profile>-<dataset>")

    def render(p: dict) -> tuple[Figure, dict]:
        if not matrices:
            raise _Missing(missing_message(where, chapter, "CKA") + " (or pass matrices= / models=)")
        key = (p["scheme"], p["scenario"], p["input"])
        if key not in matrices:
            have = sorted(k[2] for k in matrices if k[:2] == key[:2])
            raise _Missing(f"no {p['input']} CKA matrix for {key[0]} / {key[1]}; available inputs: {have or 'none'}")
        matrix = matrices[key]
        names = list(layer_names) if layer_names is not None else [str(i) for i in range(matrix.shape[0])]
        fig = Figure(figsize=(10, 4.2))
        ax_map, ax_diag = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
        _draw_cka_map(fig, ax_map, matrix, names, key)
        crosses = {scheme: matrices.get((scheme, p["scenario"], "clean-vs-adversarial")) for scheme in schemes}
        diagonals = _draw_diagonals(ax_diag, crosses, names, p["scheme"], p["scenario"])
        fig.tight_layout()
        mean_offdiag = float((matrix.sum() - torch.diagonal(matrix).sum()) / max(matrix.numel() - len(matrix), 1))
        html = f"{_escape(key[0])} / {_escape(key[1])}, {p['input']}: mean off-diagonal CKA {mean_offdiag:.2f}"
        return fig, {
            "matrix": matrix,
            "diagonals": diagonals,
            "mean_offdiagonal": mean_offdiag,
            "caption": html,
            "html": html,
        }

    return Explorer(controls, render)


def _keyed_matrices(matrices: Mapping[tuple[str, str, str], object]) -> dict[tuple[str, str, str], Tensor]:
    """The matrices as float64 ``[L, L]`` tensors keyed ``(scheme, scenario, input)``, ``input`` in :data:`INPUTS`."""
    matrices = {tuple(k): _as_matrix(v) for k, v in matrices.items()}
    for key in matrices:
        if len(key) != 3 or key[2] not in INPUTS:
            raise ValueError(f"CKA matrices are keyed (scheme, scenario, input) with input in {INPUTS}, got {key}")
    return matrices


def _draw_cka_map(fig: Figure, ax, matrix: Tensor, names: list[str], key: tuple[str, str, str]) -> None:
    """The heatmap of one ``[L, L]`` CKA matrix, rows and columns labelled by layer and by input."""
    image = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="magma", origin="lower")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(0, len(names), max(1, len(names) // 10))
    ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=7)
    inputs = key[2]
    rows, cols = inputs.split("-vs-") if "-vs-" in inputs else (inputs, inputs)
    ax.set_xlabel(f"layer ({cols})")
    ax.set_ylabel(f"layer ({rows})")
    ax.set_title(f"{key[0]} / {key[1]}: CKA, {inputs}", fontsize=10)


def _draw_diagonals(
    ax, crosses: Mapping[str, Tensor | None], names: list[str], chosen: str, scenario: str
) -> dict[str, list[float]]:
    """Per scheme, the diagonal of its clean-vs-adversarial matrix (``None``: the scheme has none); the chosen
    scheme's line drawn thicker. Returns the diagonals drawn."""
    diagonals = {}
    for scheme, cross in crosses.items():
        if cross is not None:
            diagonals[scheme] = torch.diagonal(cross).tolist()
            ax.plot(diagonals[scheme], marker="o", label=scheme, linewidth=2.5 if scheme == chosen else 1.2)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("CKA(clean, adversarial)")
    ax.set_title(f"{scenario}: per-layer clean-vs-adversarial similarity", fontsize=10)
    if diagonals:
        ax.legend(fontsize=8)
        n_layers = len(next(iter(diagonals.values())))
        ticks = range(0, n_layers, max(1, n_layers // 10))
        if len(names) == n_layers:
            ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=90, fontsize=7)
    else:
        ax.text(0.5, 0.5, "no clean-vs-adversarial matrix", ha="center", transform=ax.transAxes)
    return diagonals


__all__ = [
    "Explorer",
    "INPUTS",
    "augmentation_explorer",
    "attack_explorer",
    "cka_explorer",
    "compute_cka_matrices",
    "find_checkpoints",
    "figure_png",
    "jitter_of_strength",
    "missing_message",
]
