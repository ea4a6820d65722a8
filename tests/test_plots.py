"""rcl.plots: the diagrams are drawn from code, and the figures issue 13 found hard to read are fixed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rcl import plots, study, verdicts  # noqa: E402


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts) + " " + fig.axes[0].get_title()


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_simclr_diagram_shows_two_views_a_shared_encoder_and_the_loss(tmp_path):
    fig = plots.simclr_diagram(save=tmp_path / "simclr.png")
    text = _texts(fig)
    assert isinstance(fig, Figure) and (tmp_path / "simclr.png").stat().st_size > 0
    for part in ("t ~ T", "t' ~ T", "x̃_i", "x̃_j", "encoder f", "projection", "NT-Xent", "shared"):
        assert part in text, part
    image = torch.rand(3, 32, 32)
    with_images = plots.simclr_diagram(image, torch.stack([image, image.flip(2)]))
    assert len(with_images.axes[0].images) == 3  # the image and its two views


def test_scenarios_diagram_draws_the_codes_recipe():
    fig = plots.scenarios_diagram(study.SCENARIO_RECIPE)
    text = _texts(fig)
    for name in study.SCENARIO_RECIPE:
        assert name.replace("->", "→") in text
    assert text.count("adversarial pre-training") == sum(adv for adv, _, _ in study.SCENARIO_RECIPE.values())
    assert text.count("whole network") == sum(mode == "full" for _, mode, _ in study.SCENARIO_RECIPE.values())
    one = plots.scenarios_diagram({"only": (True, "full", False)})
    assert "adversarial pre-training" in _texts(one) and "standard: whole network" in _texts(one)


def test_dual_bn_and_threat_model_diagrams():
    ds = _texts(plots.dual_bn_diagram())
    for part in ("BN_clean", "BN_adv", "same conv", "NT-Xent(v1, v2)", "L_DS"):
        assert part in ds, part
    tm = _texts(plots.threat_models_diagram())
    for part in ("threat model I", "threat model II", "SupCon(z', z; labels y) for SCL", "cross-entropy(logits, y)"):
        assert part in tm, part


def _probes() -> pd.DataFrame:
    rows = []
    for scheme in ("SL", "CL", "SCL"):
        for scenario in ("ST", "Full-AT"):
            for i, layer in enumerate(("stem", "layer1", "layer2", "pool")):
                rows.append(dict(scheme=scheme, scenario=scenario, layer=layer, clean_acc=0.1 * i, robust_acc=0.05 * i))
    return pd.DataFrame(rows)


def test_probe_lines_colour_per_scheme_dash_for_robust_legend_outside():
    """Issue 13: chapter 06's 12 probe lines repeated colours and the legend covered the data."""
    fig = plots.grouped_lines(_probes(), x="layer", values={"clean": "clean_acc", "robust": "robust_acc"})
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 12
    colour = {}
    for line in lines:
        scheme = line.get_label().split(" / ")[0]
        colour.setdefault(scheme, set()).add(mcolors.to_hex(line.get_color()))
        assert line.get_linestyle() == ("--" if line.get_label().endswith("robust") else "-")
    assert all(len(c) == 1 for c in colour.values())  # one colour per scheme
    assert len({next(iter(c)) for c in colour.values()}) == 3  # three different colours
    markers = {line.get_marker() for line in lines}
    assert len(markers) == 2  # one marker per scenario
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # outside the axes, right of the data
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["SL", "CL", "SCL", "clean", "robust", "ST", "Full-AT"]


def test_accuracy_bar_labels_do_not_overlap(tmp_path):
    """Issue 13: chapter 08's scheme names overlapped under the bars."""
    names = ["supervised", "SimCLR", "SimCLR-FN(labels)", "SimCLR-FN(kmeans)", "SimCLR +AT", "SimCLR-FN(kmeans) +AT"]
    frame = pd.DataFrame({"scheme": names, "kind": ["standard"] * 4 + ["adversarial"] * 2,
                          "robust_acc": [0.1, 0.2, 0.3, 0.2, 0.25, 0.3]})  # fmt: skip
    fig = plots.accuracy_bars(frame, index="scheme", columns="kind", save=tmp_path / "bars.png")
    ax = fig.axes[0]
    assert not plots.tick_labels_overlap(ax)
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1


def test_wrap_breaks_long_labels_only():
    assert plots._wrap("SL") == "SL"
    assert plots._wrap("SimCLR-FN(kmeans) +AT") == "SimCLR-FN\n(kmeans) +AT"


def test_a_run_keeps_its_colour_in_every_panel_of_the_training_curves():
    """Issue 25: the adversarial run's panel drew it in the standard run's colour (the cycle restarted)."""
    histories = {
        "standard (ST)": [{"epoch": 1, "loss": 2.0, "acc": 0.3}, {"epoch": 2, "loss": 1.5, "acc": 0.4}],
        "adversarial (AT)": [{"epoch": 1, "loss": 2.2, "acc": 0.2, "adv_acc": 0.1}, {"epoch": 2, "loss": 2.0,
                             "acc": 0.3, "adv_acc": 0.15}],
    }  # fmt: skip
    fig = plots.training_curves(histories, keys=("loss", "acc", "adv_acc"), chance=0.1)
    colour = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label() != "chance":
                colour.setdefault(line.get_label(), set()).add(mcolors.to_hex(line.get_color()))
    assert all(len(c) == 1 for c in colour.values()) and colour["standard (ST)"] != colour["adversarial (AT)"]
    assert [line.get_label() for line in fig.axes[2].get_lines()] == ["adversarial (AT)", "chance"]
    assert "chance" not in [line.get_label() for line in fig.axes[0].get_lines()]  # no chance line on a loss


def test_accuracy_bars_label_every_bar_even_at_zero_and_draw_chance_and_noise():
    frame = pd.DataFrame({"scheme": ["SL", "SL", "CL", "CL"], "kind": ["ST", "AT", "ST", "AT"],
                          "robust_acc": [0.0, 0.3, 0.05, 0.25]})  # fmt: skip
    fig = plots.accuracy_bars(frame, index="scheme", columns="kind", chance=0.1, n=1000)
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["0.0", "25.0", "30.0", "5.0"]  # the 0 % bar is labelled, not invisible
    assert any(line.get_label() == "chance" and line.get_ydata()[0] == pytest.approx(10) for line in ax.get_lines())
    errorbars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert errorbars  # two standard errors on 1,000 images
    spans = [(seg[0][1], seg[1][1]) for c in errorbars for seg in c.lines[2][0].get_segments()]  # (bottom, top)
    band = 100 * verdicts.noise(0.05, n=1000)
    assert min(bottom for bottom, _ in spans) == 0.0  # the 0 % bar's band stops at 0, not below
    assert any(bottom == pytest.approx(5 - band) and top == pytest.approx(5 + band) for bottom, top in spans)


def test_eps_curves_give_each_scheme_its_own_panel_with_a_chance_line():
    frame = pd.DataFrame(
        [{"scheme": s, "scenario": c, "eps": e, "robust_acc": r}
         for s in ("SL", "CL", "SCL") for c in ("ST", "AT", "Full-AT") for e, r in ((0.0, 0.5), (8 / 255, 0.1))]
    )  # fmt: skip
    fig = plots.eps_curves(frame, chance=0.1)
    assert [ax.get_title() for ax in fig.axes] == ["SL", "CL", "SCL"]
    for ax in fig.axes:
        lines = [line.get_label() for line in ax.get_lines()]
        assert lines == ["ST", "AT", "Full-AT", "chance"]
    first = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    last = {line.get_label(): line.get_color() for line in fig.axes[2].get_lines()}
    assert first == last  # a scenario has one colour across the panels


def test_heatmap_tick_labels_are_readable():
    fig = plots.heatmap(torch.eye(6), [f"layer{i}" for i in range(6)])
    assert min(t.get_fontsize() for t in fig.axes[0].get_xticklabels()) >= 7


def test_grouped_lines_in_panels_keep_a_handful_of_lines_each():
    """Issue 25: chapter 06's probe plot put 18 lines in one panel."""
    fig = plots.grouped_lines(
        _probes(), x="layer", values={"clean": "clean_acc", "robust": "robust_acc"}, color_by="scenario",
        marker_by=None, panel_by="scheme", chance=0.1,
    )  # fmt: skip
    assert [ax.get_title() for ax in fig.axes] == ["SL", "CL", "SCL"]
    for ax in fig.axes:
        drawn = [line for line in ax.get_lines() if line.get_label() != "chance"]
        assert len(drawn) == 4  # two scenarios, clean and robust
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes]
    assert colours[0] == colours[1] == colours[2]  # a scenario keeps its colour across the panels


def test_every_figure_states_its_numbers_in_a_caption(tmp_path):
    """Issue 25: each figure is followed by a line with this run's numbers (in the saved PNG too)."""

    def caption(fig) -> str:
        return " ".join(t.get_text() for t in fig.texts)

    frame = pd.DataFrame({"scheme": ["SL", "SL", "CL", "CL"], "kind": ["ST", "AT", "ST", "AT"],
                          "robust_acc": [0.0, 0.3, 0.05, 0.25]})  # fmt: skip
    bars = plots.accuracy_bars(frame, index="scheme", columns="kind", chance=0.1, n=1000, save=tmp_path / "b.png")
    assert "highest SL / AT 30.0 %, lowest SL / ST 0.0 %; chance 10 %; error bars" in caption(bars)
    curves = plots.training_curves({"run": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.25}]})
    assert caption(curves) == "After epoch 2: run: loss 1.25"
    eps = pd.DataFrame(
        [{"scheme": "SL", "scenario": "ST", "eps": e, "robust_acc": r} for e, r in ((0, 0.5), (8 / 255, 0.1))]
    )
    assert "Robust accuracy at 8/255: SL / ST 10.0 %" in caption(plots.eps_curves(eps))
    lines = plots.grouped_lines(
        _probes(), x="layer", values={"clean": "clean_acc"}, panel_by="scheme", color_by="scenario", marker_by=None
    )
    assert caption(lines).startswith("clean at pool: SL / ST 30 %")
    assert "a: 10 % at 0, 50 % at 2" in caption(plots.line_plot({"a": [0.1, 0.3, 0.5]}, [0, 1, 2], "x", "y"))


def test_accuracy_bars_label_a_model_that_did_not_run_as_not_run_never_0():
    """Issue 33: a scheme x scenario cell with no model drew a bar labelled "0.0", read as a measured 0 %."""
    frame = pd.DataFrame({"scheme": ["SL", "SL", "CL"], "kind": ["ST", "AT", "ST"], "robust_acc": [0.0, 0.3, 0.05]})
    ax = plots.accuracy_bars(frame, index="scheme", columns="kind").axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.0", "30.0", "5.0", "not run"]
    # chapter 09's ACL figure: two modes missing side by side printed "not runnot run"
    frame = pd.DataFrame({"scheme": ["DS"] * 3 + ["DS-single-BN"], "mode": ["linear", "partial", "full", "linear"],
                          "robust_acc": [0.17, 0.18, 0.19, 0.18]})  # fmt: skip
    fig = plots.accuracy_bars(frame, index="scheme", columns="mode")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    missing = [t.get_window_extent(renderer) for t in fig.axes[0].texts if t.get_text() == "not run"]
    assert len(missing) == 2 and not missing[0].overlaps(missing[1])


def test_a_caption_sits_below_the_axis_labels_and_long_layer_names_do_not_collide():
    """Issue 33: chapter 08's caption was drawn over the x-axis label, and chapter 07's BatchNorm layer names over
    each other."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].set_xlabel("eps (x/255)")
    plots.caption(fig, "mean robust accuracy over the radii: supervised 23.5 %, SimCLR 20.9 %, SupCon 16.7 %")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    caption_box = fig.texts[-1].get_window_extent(renderer)
    label_box = axes[0].xaxis.label.get_window_extent(renderer)
    assert caption_box.y1 <= label_box.y0  # the caption's top is under the label's bottom
    layers = [f"layer{i}.{j}.{name}" for i in range(1, 5) for j in range(2) for name in ("bn1", "bn2", "shortcut.1")]
    fig = plots.line_plot({"shift": [0.1] * len(layers)}, layers, "BatchNorm layer", "value", percent=False)
    assert not plots.tick_labels_overlap(fig.axes[0])
    fig.canvas.draw()  # the caption follows the upright layer names closely, not a quarter of the figure below them
    renderer = fig.canvas.get_renderer()
    gap = fig.axes[0].get_tightbbox(renderer).y0 - fig.texts[-1].get_window_extent(renderer).y1
    assert 0 <= gap < 0.1 * fig.bbox.height


def test_training_curves_show_whole_epochs_and_say_what_ran():
    history = [{"epoch": e, "val_acc": 0.2 + 0.05 * e} for e in range(1, 5)]
    fig = plots.training_curves({"linear": history}, keys=("val_acc",), title="DS: TRADES fine-tuning")
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all("." not in t for t in ticks) and fig._suptitle.get_text() == "DS: TRADES fine-tuning"


def test_training_curves_draw_accuracies_in_percent_with_named_axes_and_their_own_chance():
    """A contrastive history's "acc" (positive-pair top-1) was drawn as a fraction under a 10 % "chance" line that
    belongs to class accuracy; its chance is 1 / batch size."""
    history = [{"epoch": e, "loss": 5.0 - e, "acc": 0.1 * e} for e in range(1, 4)]
    fig = plots.training_curves(
        {"SimCLR": history}, keys=("loss", "acc"), chance=1 / 128, names={"acc": "positive pair found (%)"}
    )
    loss, acc = fig.axes
    assert loss.get_ylabel() == "training loss" and acc.get_ylabel() == "positive pair found (%)"
    line = next(line for line in acc.get_lines() if line.get_label() == "SimCLR")
    assert list(line.get_ydata()) == pytest.approx([10.0, 20.0, 30.0])
    chance = next(line for line in acc.get_lines() if line.get_label() == "chance")
    assert chance.get_ydata()[0] == pytest.approx(100 / 128)
    assert fig.texts[-1].get_text() == "After epoch 3: SimCLR: loss 2, acc 30.0 %; chance 0.78 %"
