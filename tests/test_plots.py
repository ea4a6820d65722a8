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

from rcl import plots, study  # noqa: E402


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
