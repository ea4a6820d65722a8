"""The headless runner: parameters reach the notebooks, finished chapters are skipped, failures name the cell."""

import json

import nbformat
import pytest

from rcl import reproduce
from rcl.results import collect, save_robustness, summary_markdown


def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell('profile = "auto"\ndataset = None\ndevice = "auto"\nrun_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(source) for source in cells)]
    nbformat.write(nb, path)


def test_parse_params_reads_python_literals():
    assert reproduce.parse_params(["epochs=3", "eps=0.5", "name=abc", "grid=[1, 2]"]) == {
        "epochs": 3,
        "eps": 0.5,
        "name": "abc",
        "grid": [1, 2],
    }
    with pytest.raises(SystemExit, match="name=value"):
        reproduce.parse_params(["epochs"])


def test_only_rejects_unknown_chapters(tmp_path):
    _notebook(tmp_path / "00_a.ipynb", "x = 1")
    _notebook(tmp_path / "01_b.ipynb", "x = 2")
    assert [p.name for p in reproduce.find_notebooks(tmp_path, ["1"])] == ["01_b.ipynb"]
    with pytest.raises(SystemExit, match="do not exist"):
        reproduce.find_notebooks(tmp_path, ["07"])


def test_failing_cell_is_named_and_finished_work_kept(tmp_path):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    _notebook(notebooks / "00_ok.ipynb", "import pathlib\npathlib.Path(run_dir, 'ok.txt').write_text('done')")
    _notebook(notebooks / "01_broken.ipynb", "x = 1", "raise RuntimeError('boom in the middle')")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as failure:
        reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks)
    message = str(failure.value)
    assert "01_broken.ipynb" in message and "cell 3" in message and "boom in the middle" in message
    assert (out / "ok.txt").read_text() == "done"
    executed = out / "notebooks" / "00_ok.ipynb"
    params = {"profile": "smoke", "dataset": "synthetic", "device": "cpu", "run_dir": str(out.resolve())}
    assert reproduce.is_complete(executed, params)
    assert not reproduce.is_complete(executed, {**params, "seed": 1})
    assert not reproduce.is_complete(out / "notebooks" / "01_broken.ipynb", params)


def test_results_collect_into_one_table(tmp_path):
    save_robustness(
        [{"scheme": "CL", "scenario": "ST", "attack": "pgd", "eps": 4 / 255, "steps": 10, "clean_acc": 0.5}],
        tmp_path / "04_scenarios",
    )
    save_robustness([{"scheme": "SL", "scenario": "AT", "robust_acc": 0.25}], tmp_path / "05_robustness")
    frame = collect(tmp_path)
    assert list(frame["chapter"]) == ["04_scenarios", "05_robustness"]
    text = summary_markdown(frame)
    assert "4/255" in text and "50.0" in text and "25.0" in text


@pytest.mark.slow
def test_reproduce_two_chapters_with_non_default_parameters(tmp_path):
    out = tmp_path / "study"
    argv = ["--profile", "smoke", "--device", "cpu", "--out", str(out), "--only", "00,01"]
    argv += ["-p", "seed=3", "-p", "width=4", "-p", "supervised_epochs=1", "-p", "linear_epochs=1"]
    reproduce.main(argv)
    for name in ("00_setup_and_data.ipynb", "01_supervised_baseline.ipynb"):
        executed = json.loads((out / "notebooks" / name).read_text())
        assert executed["metadata"]["papermill"]["parameters"]["width"] == 4
        text = "".join(
            "".join(o.get("text", "")) for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]
        )
        assert "seed=3" in text and "width 4" in text, f"{name}: parameters did not reach the set-up cell"
    history = json.loads(next((out / "01_supervised").rglob("history.json")).read_text())
    assert len(history) == 1, "supervised_epochs=1 did not reach the training loop"
    assert (out / "summary.md").exists() and (out / "summary.csv").exists()
    # a second run skips the finished chapters
    reproduce.main(argv)
    assert "skipped" in (out / "summary.md").read_text()
