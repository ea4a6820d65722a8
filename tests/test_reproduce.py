"""The headless runner: parameters reach the notebooks, finished chapters are skipped, failures name the cell."""

import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path

import nbformat
import pytest

from rcl import reproduce
from rcl.reproduce import cli
from rcl.results import collect, save_robustness, summary_markdown

BASE_PARAMS = 'profile = "auto"\ndataset = None\ndevice = "auto"\nrun_dir = None'


def _notebook(path, *cells, params=BASE_PARAMS):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell(params)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(source) for source in cells)]
    nbformat.write(nb, path)


def _fake_papermill(monkeypatch, effect=None):
    """papermill.execute_notebook without a kernel: writes the notebook as executed with its parameters, then
    calls ``effect(name, output_path, parameters)`` (write result files, fail, be interrupted). Returns the calls."""
    import papermill

    calls = []

    def execute_notebook(input_path, output_path, parameters=None, **kwargs):
        nb = nbformat.read(input_path, as_version=4)
        nb.metadata["papermill"] = {"parameters": parameters, "exception": None}
        for number, cell in enumerate(nb.cells, start=1):
            cell.execution_count = number
        nbformat.write(nb, output_path)
        calls.append(Path(input_path).name)
        if effect is not None:
            effect(Path(input_path).name, Path(output_path), parameters)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def _write_metrics(name, output, parameters):
    folder = Path(parameters["run_dir"]) / name[:-6]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(parameters))


def _chapters(folder, params=BASE_PARAMS):
    folder.mkdir()
    _notebook(folder / "00_a.ipynb", "x = 1", params=params)
    _notebook(folder / "01_b.ipynb", "x = 2", params=params)
    return folder


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
    assert "01_broken.failed.ipynb" in message  # the failed run is kept under a name that says so
    assert "Rerun the same command" not in message  # the same cell would fail again
    assert (out / "ok.txt").read_text() == "done"
    executed = out / "notebooks" / "00_ok.ipynb"
    params = {"profile": "smoke", "dataset": "synthetic", "device": "cpu", "run_dir": str(out.resolve())}
    assert reproduce.is_complete(executed, params)
    assert not reproduce.is_complete(executed, {**params, "seed": 1})
    assert not reproduce.is_complete(out / "notebooks" / "01_broken.ipynb", params)
    assert (out / "notebooks" / "01_broken.failed.ipynb").exists()


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


# ---- item 5: a failed or interrupted re-run never replaces a complete executed notebook -------------------------


def _fail_on_second_run(exception):
    runs = []

    def effect(name, output, parameters):
        _write_metrics(name, output, parameters)
        runs.append(name)
        if len(runs) == 2:
            partial = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("partial run")])
            nbformat.write(partial, output)  # what papermill leaves behind mid-run
            raise exception

    return effect


def test_a_failed_rerun_keeps_the_complete_notebook(tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    error = PapermillExecutionError(2, 1, "x = 1", "RuntimeError", "boom", [])
    calls = _fake_papermill(monkeypatch, _fail_on_second_run(error))
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"])
    executed = out / "notebooks" / "00_a.ipynb"
    complete = executed.read_bytes()
    with pytest.raises(SystemExit, match="FAILED: 00_a.ipynb, cell 2: RuntimeError: boom"):
        reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"], force=True)
    assert executed.read_bytes() == complete
    assert "partial run" in (out / "notebooks" / "00_a.failed.ipynb").read_text()
    assert not (out / "notebooks" / "00_a.running.ipynb").exists()
    # the failed run rewrote the chapter's metrics.json: the kept notebook no longer describes what is on disk
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"])
    assert calls == ["00_a.ipynb"] * 3
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"])
    assert calls == ["00_a.ipynb"] * 3  # then it is complete


def test_an_interrupted_rerun_keeps_the_complete_notebook_and_says_to_rerun(tmp_path, monkeypatch):
    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    _fake_papermill(monkeypatch, _fail_on_second_run(KeyboardInterrupt()))
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"])
    complete = (out / "notebooks" / "00_a.ipynb").read_bytes()
    with pytest.raises(SystemExit) as stop:
        reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"], force=True)
    assert "INTERRUPTED: 00_a.ipynb" in str(stop.value)
    assert "Rerun the same command to continue from 00_a.ipynb" in str(stop.value)  # a rerun can succeed
    assert (out / "notebooks" / "00_a.ipynb").read_bytes() == complete
    assert (out / "notebooks" / "00_a.failed.ipynb").exists()


def test_a_killed_runs_notebook_is_kept_as_failed(tmp_path, monkeypatch):
    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    calls = _fake_papermill(monkeypatch, _write_metrics)
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"])
    left = out / "notebooks" / "00_a.running.ipynb"  # what kill -9 of the runner mid-chapter leaves
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("killed run")]), left)
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, only=["00"])
    assert calls == ["00_a.ipynb"]  # the complete copy still counts
    assert not left.exists() and "killed run" in (out / "notebooks" / "00_a.failed.ipynb").read_text()


# ---- item 6: complete means the outputs are there too; the run folder's place is not a setting ------------------


def test_a_chapter_whose_outputs_were_deleted_runs_again(tmp_path, monkeypatch):
    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    calls = _fake_papermill(monkeypatch, _write_metrics)
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks)
    executed = json.loads((out / "notebooks" / "00_a.ipynb").read_text())
    assert list(executed["metadata"]["rcl"]["outputs"]) == ["00_a/metrics.json"]
    shutil.rmtree(out / "00_a")
    params = {"profile": "smoke", "dataset": "synthetic", "device": "cpu", "run_dir": str(out.resolve())}
    reason = reproduce.incomplete_reason(out / "notebooks" / "00_a.ipynb", params)
    assert reason == "its outputs are missing (00_a/metrics.json)"
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks)
    assert calls == ["00_a.ipynb", "01_b.ipynb", "00_a.ipynb"]
    assert (out / "00_a" / "metrics.json").exists()


def test_a_moved_run_folder_is_still_complete(tmp_path, monkeypatch):
    notebooks = _chapters(tmp_path / "nb")
    calls = _fake_papermill(monkeypatch, _write_metrics)
    reproduce.run(profile="smoke", device="cpu", out=tmp_path / "first", notebook_dir=notebooks)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    reproduce.run(profile="smoke", device="cpu", out=tmp_path / "moved", notebook_dir=notebooks)
    assert calls == ["00_a.ipynb", "01_b.ipynb"]
    assert "skipped (complete)" in (tmp_path / "moved" / "summary.md").read_text()


# ---- item 7: one run per run folder ------------------------------------------------------------------------------


def test_a_second_run_into_the_same_folder_says_which_process_holds_it(tmp_path, monkeypatch, capsys):
    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    calls = _fake_papermill(monkeypatch)
    out.mkdir()
    with reproduce.run_lock(out):
        argv = ["--profile", "smoke", "--device", "cpu", "--out", str(out)]
        _use_notebooks(monkeypatch, notebooks)
        with pytest.raises(reproduce.RunFolderBusy, match=f"in use by pid {os.getpid()} on .* since"):
            reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks)
        with pytest.raises(SystemExit) as busy:
            reproduce.main(argv)
    message = str(busy.value)
    assert message.startswith(f"rcl.reproduce: error: run folder {out.resolve()} is in use by pid {os.getpid()}")
    assert "--wait" in message and "\n" not in message
    assert calls == []


def test_wait_starts_when_the_other_run_has_finished(tmp_path, monkeypatch):
    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    calls = _fake_papermill(monkeypatch)
    out.mkdir()
    held, released = threading.Event(), []

    def other_run():
        with reproduce.run_lock(out):
            held.set()
            time.sleep(1.0)
            released.append(time.monotonic())

    thread = threading.Thread(target=other_run)
    thread.start()
    held.wait(10)
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks, wait=True)
    done = time.monotonic()
    thread.join()
    assert released and done >= released[0] and calls == ["00_a.ipynb", "01_b.ipynb"]


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, monkeypatch, capsys):
    notebooks, out = _chapters(tmp_path / "nb"), tmp_path / "run"
    calls = _fake_papermill(monkeypatch)
    out.mkdir()
    dead = {"pid": 999999, "host": "elsewhere", "started": "2020-01-01 00:00:00", "command": "python -m rcl.reproduce"}
    (out / reproduce.LOCK_NAME).write_text(json.dumps(dead))  # left by a run killed with kill -9: no flock held
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks)
    assert "taking over the lock left by pid 999999 on elsewhere" in capsys.readouterr().out
    assert calls == ["00_a.ipynb", "01_b.ipynb"]
    assert (out / reproduce.LOCK_NAME).read_text() == ""  # released


# ---- items 9 and 10: every setting from the command line, each value read with its type --------------------------


def test_parse_params_reads_each_setting_with_its_type():
    params = reproduce.parse_params(
        ["width=4", "train_eps=8/255", "lr=3e-4", "eps_grid=0,4/255,8/255", "torch_compile=true", "n_train=None"]
    )
    assert params == {
        "width": 4,
        "train_eps": 8 / 255,
        "lr": 3e-4,
        "eps_grid": [0.0, 4 / 255, 8 / 255],
        "torch_compile": True,
        "n_train": None,
    }
    assert reproduce.parse_params(["eps_grid=[0, 0.5]", "arch=resnet50"]) == {
        "eps_grid": [0.0, 0.5],
        "arch": "resnet50",
    }
    chapter_own = reproduce.parse_params(["scenarios=ST,Full-AT", "train_missing=false", "eval_examples=64"])
    assert chapter_own == {"scenarios": ["ST", "Full-AT"], "train_missing": False, "eval_examples": 64}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("width=abc", "width must be an integer, got 'abc'"),
        ("epochs_typo=1", None),  # not a setting: parsed as a literal, route_params rejects it
        ("pretrain_epochs=1.5", "pretrain_epochs must be an integer, got '1.5'"),
        ("train_eps=eight", "train_eps must be a number \\(e.g. 0.001, 3e-4 or 8/255\\), got 'eight'"),
        ("lr=1/0", "lr divides by zero, got '1/0'"),
        ("torch_compile=maybe", "torch_compile must be true or false, got 'maybe'"),
        ("n_train=many", "n_train must be an integer, got 'many' \\(or None\\)"),
        ("eps_grid=0,x", "eps_grid must be numbers separated by commas"),
        ("dataset=cifar10", "use the option --dataset"),
        ("run_dir=/tmp/x", "use the option --out"),
    ],
)
def test_bad_values_name_the_setting(pair, message):
    if message is None:
        reproduce.parse_params([pair])
        return
    with pytest.raises((ValueError, reproduce.ReproduceError), match=message):
        reproduce.parse_params([pair])


def test_every_setting_reaches_every_chapter(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    _notebook(folder / "00_a.ipynb", params=BASE_PARAMS + "\nwidth = None\noverrides = {}")
    _notebook(folder / "01_b.ipynb", params=BASE_PARAMS + "\nscenarios = None\nn_train = None\noverrides = {}")
    nbs = reproduce.find_notebooks(folder)
    params = reproduce.parse_params(["width=4", "n_train=60", "scenarios=['ST']", "n_test=None"])
    routed = reproduce.route_params(params, nbs)
    assert routed[nbs[0]] == {"width": 4, "overrides": {"n_train": 60, "n_test": None}}
    assert routed[nbs[1]] == {"scenarios": ["ST"], "n_train": 60, "overrides": {"width": 4, "n_test": None}}
    with pytest.raises(reproduce.ReproduceError) as unknown:
        reproduce.route_params({"foo": 1, "batch_size": 8}, nbs)
    message = str(unknown.value)
    assert message.startswith("unknown parameter foo for -p. Valid names: any profile setting (")
    assert "batch_size" in message and "n_train" in message and "scenarios (01)" in message


def test_every_chapter_takes_the_overrides_parameter():
    chapters = reproduce.find_notebooks()
    assert len(chapters) == 10
    for notebook in chapters:
        assert "overrides" in reproduce.notebook_parameters(notebook), notebook.name
        cells = json.loads(notebook.read_text())["cells"]
        setup_cells = ["".join(c["source"]) for c in cells if "course.setup(" in "".join(c["source"])]
        assert setup_cells and "overrides=overrides" in setup_cells[0], notebook.name
    routed = reproduce.route_params({"n_train": 60, "eval_eps": 0.02, "width": 4}, chapters)
    for notebook, params in routed.items():
        seen = {**params.get("overrides", {}), **{k: v for k, v in params.items() if k != "overrides"}}
        assert seen == {"n_train": 60, "eval_eps": 0.02, "width": 4}, notebook.name


def test_a_bad_setting_stops_the_run_before_any_chapter(tmp_path, monkeypatch):
    notebooks = _chapters(tmp_path / "nb", params=BASE_PARAMS + "\noverrides = {}")
    _use_notebooks(monkeypatch, notebooks)
    calls = _fake_papermill(monkeypatch)
    argv = ["--profile", "smoke", "--device", "cpu", "--out", str(tmp_path / "run")]
    for pair, message in [
        ("batch_size=0", "rcl.reproduce: error: batch_size must be an integer >= 1, got 0"),
        ("width=abc", "rcl.reproduce: error: width must be an integer, got 'abc'"),
        ("foo=1", "rcl.reproduce: error: unknown parameter foo for -p. Valid names: any profile setting ("),
    ]:
        with pytest.raises(SystemExit) as stop:
            reproduce.main([*argv, "-p", pair])
        assert str(stop.value).startswith(message), str(stop.value)
    assert calls == []


def _use_notebooks(monkeypatch, notebooks):
    """Make reproduce.main run the chapters in ``notebooks``."""
    monkeypatch.setattr(cli, "run", functools.partial(reproduce.run, notebook_dir=notebooks))


# ---- item 15: one clear line instead of a traceback (the traceback with --debug) ---------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--profile", "fast"], "rcl.reproduce: error: unknown profile 'fast'; choose one of: auto, smoke"),
        (["--dataset", "bogus"], "rcl.reproduce: error: unknown dataset 'bogus'; valid names are: cifar10"),
        (
            ["--dataset", "imagefolder:/no/such/folder"],
            "rcl.reproduce: error: dataset 'imagefolder:/no/such/folder': no folder '/no/such/folder'",
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, options, message):
    argv = ["--device", "cpu", "--out", str(tmp_path / "run"), *options]
    with pytest.raises(SystemExit) as stop:
        reproduce.main(argv)
    assert str(stop.value).startswith(message) and "\n" not in str(stop.value), str(stop.value)
    with pytest.raises((ValueError, OSError)):
        reproduce.main([*argv, "--debug"])


def test_an_unwritable_run_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--profile", "smoke", "--device", "cpu", "--out", str(blocker / "run")])
    assert str(stop.value) == (
        f"rcl.reproduce: error: cannot write to the run folder {blocker / 'run'} (Not a directory): "
        "pick a writable folder with --out DIR"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match="cannot write to the run folder .*Permission denied"):
            reproduce.main(["--profile", "smoke", "--device", "cpu", "--out", str(out)])
    finally:
        out.chmod(0o755)


# ---- issue 13: a quiet terminal, and progress bars that show how they ended ---------------------------------------


def test_a_headless_run_is_quiet_and_keeps_the_final_progress_bars(tmp_path, capfd):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    _notebook(
        notebooks / "00_bars.ipynb",
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(32), desc='SL-ST 1/2'):\n    pass",
    )
    out = tmp_path / "run"
    reproduce.run(profile="smoke", device="cpu", out=out, notebook_dir=notebooks)
    terminal = capfd.readouterr()
    assert "without encryption" not in terminal.err + terminal.out
    executed = json.loads((out / "notebooks" / "00_bars.ipynb").read_text())
    shown = ["".join(o["data"]["text/plain"]) for c in executed["cells"] for o in c.get("outputs", []) if "data" in o]
    assert len(shown) == 1 and shown[0].startswith("SL-ST 1/2: 100%|██████████| 32/32 ["), shown


@pytest.mark.slow
def test_a_small_image_folder_runs_from_the_command_line(tmp_path):
    from PIL import Image

    root = tmp_path / "pets"
    for split, n in (("train", 30), ("test", 10)):
        for c, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), tuple(min(255, v + i) for v in colour)).save(root / split / c / f"{i}.png")
    out = tmp_path / "run"
    argv = ["--profile", "smoke", "--dataset", f"imagefolder:{root}", "--device", "cpu", "--out", str(out)]
    reproduce.main([*argv, "--only", "00", "-p", "n_train=60", "-p", "n_test=20"])
    executed = json.loads((out / "notebooks" / "00_setup_and_data.ipynb").read_text())
    overrides = executed["metadata"]["papermill"]["parameters"]["overrides"]
    assert overrides == {"n_train": 60, "n_test": 20, "data_root": str(reproduce.NOTEBOOK_DIR.parent / "data")}
    text = "".join(
        "".join(o.get("text", "")) for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]
    )
    assert "changed: n_test=20 n_train=60" in text and "train images per class: [30, 30]" in text


def test_auto_profile_is_the_laptop_reproduction_where_real_data_is_at_hand(tmp_path, monkeypatch, capsys):
    """Issue 25: `make reproduce` on a CPU runs the laptop profile when real images are there, says up front how long
    the committed reference run took, and falls back to smoke loudly when they are not."""
    from PIL import Image

    import rcl.course
    import rcl.data

    root = tmp_path / "pets"
    for split in ("train", "test"):
        for c, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(12):
                Image.new("RGB", (32, 32), colour).save(root / split / c / f"{i}.png")
    checkout = tmp_path / "checkout"
    (checkout / "results" / "laptop-cifar10").mkdir(parents=True)
    (checkout / "results" / "laptop-cifar10" / "run.json").write_text(
        json.dumps({"wall_seconds": 5400, "machine_at_start": {"cpu_count": 2, "cpu": "Intel Xeon"}})
    )
    assert reproduce.auto_profile("cpu", f"imagefolder:{root}", checkout) == "laptop"
    out = capsys.readouterr().out
    assert "--profile auto -> laptop" in out and "took 1.5 h on a 2-core Intel Xeon" in out
    assert reproduce.auto_profile("cpu", "synthetic", checkout) == "smoke"

    def offline(name, *args, **kwargs):
        raise rcl.data.DatasetUnavailable(f"{name} is not available: no files and no network (test)")

    monkeypatch.setattr(rcl.data, "load_dataset", offline)
    assert reproduce.auto_profile("cpu", None, checkout) == "smoke"
    err = " ".join(line.strip("! ") for line in capsys.readouterr().err.splitlines())  # the banner's text, unwrapped
    assert "--profile auto -> smoke: cifar10 is not here" in err and "cannot confirm or refute the papers" in err
    with pytest.raises(ValueError, match="unknown dataset"):
        reproduce.auto_profile("cpu", "bogus", checkout)
