"""The runner under real mistakes (issue: nothing deleted, nothing mixed, nothing silently substituted).

Each test is one case users and their machines produced: a chapter edited between runs, files changed from
JupyterLab, a copy of a chapter beside it, chapters run out of order, damaged tables, a run started from another
folder, `--out .`, odd `--only` values, and a run folder shared by two image trees of one name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from test_reproduce import BASE_PARAMS, _fake_papermill, _notebook

from rcl import profiles, reproduce, results, verdicts
from rcl.reproduce import chapters, runner

PARAMS = BASE_PARAMS + "\noverrides = {}"


def _write_table(name, output, parameters):
    folder = Path(parameters["run_dir"]) / name[:-6]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.csv").write_text("a,b\n1,2\n")


def _course(tmp_path, *names):
    folder = tmp_path / "nb"
    folder.mkdir()
    for name in names:
        _notebook(folder / f"{name}.ipynb", "x = 1", params=PARAMS)
    return folder


def _run(folder, out, **kw):
    return reproduce.run("smoke", device="cpu", out=out, notebook_dir=folder, **kw)


def test_a_chapter_whose_notebook_changed_runs_again(tmp_path, monkeypatch):
    folder = _course(tmp_path, "00_a", "01_b")
    calls = _fake_papermill(monkeypatch, effect=_write_table)
    _run(folder, tmp_path / "run")
    calls.clear()
    _notebook(folder / "01_b.ipynb", "x = 1", "y = 2", params=PARAMS)  # a new cell
    _run(folder, tmp_path / "run")
    assert calls == ["01_b.ipynb"]


def test_a_chapter_run_with_other_rcl_code_runs_again(tmp_path, monkeypatch):
    folder = _course(tmp_path, "00_a")
    calls = _fake_papermill(monkeypatch, effect=_write_table)
    _run(folder, tmp_path / "run")
    monkeypatch.setattr(chapters, "code_version", lambda: "0" * 16)
    calls.clear()
    _run(folder, tmp_path / "run")
    assert calls == ["00_a.ipynb"]


def test_outputs_changed_from_outside_make_the_chapter_run_again(tmp_path, monkeypatch):
    """A table rewritten from JupyterLab with other settings must not be kept as this run's result."""
    folder = _course(tmp_path, "00_a", "01_b")
    calls = _fake_papermill(monkeypatch, effect=_write_table)
    out = tmp_path / "run"
    _run(folder, out)
    (out / "01_b" / "table.csv").write_text("a,b\n9,9\n9,9\n")
    calls.clear()
    _run(folder, out)
    assert calls == ["01_b.ipynb"]
    assert (out / "01_b" / "table.csv").read_text() == "a,b\n1,2\n"


def test_a_chapter_that_reads_another_runs_again_when_that_one_did(tmp_path, monkeypatch):
    """Chapter 09 (it reads every chapter) run before 01 must not stay stale once 01 has run."""
    folder = _course(tmp_path, "01_a", "09_summary")
    calls = _fake_papermill(monkeypatch, effect=_write_table)
    out = tmp_path / "run"
    _run(folder, out, only=["09"])
    calls.clear()
    _run(folder, out, only=["01"])
    _run(folder, out)
    assert calls == ["01_a.ipynb", "09_summary.ipynb"]
    calls.clear()
    _run(folder, out)
    assert calls == []  # and then both are complete


def test_copies_of_a_chapter_are_not_chapters(tmp_path):
    folder = _course(tmp_path, "01_a", "02_b")
    _notebook(folder / "02_b-Copy1.ipynb", "x = 1", params=PARAMS)
    (folder / ".ipynb_checkpoints").mkdir()
    assert [p.name for p in reproduce.find_notebooks(folder)] == ["01_a.ipynb", "02_b.ipynb"]
    _notebook(folder / "02_other.ipynb", "x = 1", params=PARAMS)
    with pytest.raises(reproduce.ReproduceError, match="two notebooks for chapter 02"):
        reproduce.find_notebooks(folder)


@pytest.mark.parametrize("only", ["", "01,", ",", "01,,02"])
def test_only_with_an_empty_entry_is_an_error_not_every_chapter(tmp_path, only, capsys):
    folder = _course(tmp_path, "00_a", "01_b", "02_c")
    with pytest.raises(reproduce.ReproduceError, match="--only needs chapter numbers"):
        reproduce.find_notebooks(folder, only.split(","))


def test_out_at_the_checkout_would_overwrite_the_chapters_and_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    (root / "rcl").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    folder = root / "notebooks"
    folder.mkdir()
    _notebook(folder / "00_a.ipynb", "x = 1", params=PARAMS)
    before = (folder / "00_a.ipynb").read_text()
    calls = _fake_papermill(monkeypatch)
    for out in (root, tmp_path):
        with pytest.raises(reproduce.ReproduceError, match="course's own notebooks"):
            reproduce.run("smoke", device="cpu", out=out, notebook_dir=folder)
    assert calls == [] and (folder / "00_a.ipynb").read_text() == before


def test_damaged_tables_and_claims_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "04_scenarios").mkdir()
    (tmp_path / "04_scenarios" / results.ROBUSTNESS_FILE).write_text("")
    with pytest.raises(ValueError, match=r"04_scenarios/robustness.csv is damaged.*--only 04"):
        results.collect(tmp_path)
    (tmp_path / "04_scenarios" / results.ROBUSTNESS_FILE).unlink()
    (tmp_path / "04_scenarios" / verdicts.CLAIMS_FILE).write_text('[{"claim": "x"')
    with pytest.raises(ValueError, match=r"04_scenarios/claims.json is damaged"):
        verdicts.collect_claims(tmp_path)


def test_the_runner_hands_its_data_folder_to_every_chapter(tmp_path, monkeypatch):
    """Started from another folder, the chapters (whose kernels start in notebooks/) read the data the runner found."""
    folder = _course(tmp_path, "00_a")
    seen = {}
    _fake_papermill(monkeypatch, effect=lambda name, output, parameters: seen.update(parameters))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    _run(folder, tmp_path / "run", extra={"data_root": str(elsewhere / "data")})
    assert seen["overrides"]["data_root"] == str(elsewhere / "data")
    seen.clear()
    monkeypatch.setattr(chapters, "incomplete_reason", lambda *a, **k: "force")
    _run(folder, tmp_path / "run")
    assert Path(seen["overrides"]["data_root"]).is_absolute()


def test_the_chapters_import_the_rcl_that_runs_them(tmp_path, monkeypatch):
    """With rcl installed from another checkout, the kernels must import this one (PYTHONPATH leads with it)."""
    folder = _course(tmp_path, "00_a")
    seen = []
    _fake_papermill(monkeypatch, effect=lambda *a: seen.append(os.environ.get("PYTHONPATH", "")))
    _run(folder, tmp_path / "run")
    here = str(Path(reproduce.__file__).resolve().parents[2])
    assert seen and seen[0].split(os.pathsep)[0] == here


def test_imagefolder_paths_are_made_absolute_and_one_tree_is_one_dataset(tmp_path, monkeypatch):
    for name in ("a/cifar", "b/cifar"):
        (tmp_path / name / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    one = profiles.resolve("smoke", "imagefolder:a/cifar", "cpu")
    again = profiles.resolve("smoke", "imagefolder:a/cifar/", "cpu")
    other = profiles.resolve("smoke", "imagefolder:b/cifar", "cpu")
    assert one.dataset == again.dataset == f"imagefolder:{tmp_path / 'a' / 'cifar'}"
    assert one.run_dir == again.run_dir != other.run_dir  # same folder name, two trees: two run folders
    with pytest.raises(FileNotFoundError, match=r"no folder 'c/cifar' \(looked at .*c/cifar"):
        profiles.resolve("smoke", "imagefolder:c/cifar", "cpu")


def test_an_executed_copy_records_what_decides_its_completeness(tmp_path, monkeypatch):
    folder = _course(tmp_path, "00_a")
    _fake_papermill(monkeypatch, effect=_write_table)
    out = tmp_path / "run"
    _run(folder, out)
    record = nbformat.read(out / "notebooks" / "00_a.ipynb", as_version=4).metadata["rcl"]
    assert set(record) == {"outputs", "notebook", "code", "reads"}
    assert list(record["outputs"]) == ["00_a/table.csv"]
    assert record["code"] == reproduce.code_version() and record["notebook"] == reproduce.notebook_version(
        folder / "00_a.ipynb"
    )
    assert json.loads(json.dumps(record)) == record


def test_deleting_the_lock_file_does_not_let_a_second_run_in(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with reproduce.run_lock(out):
        (out / reproduce.LOCK_NAME).unlink()
        with pytest.raises(reproduce.RunFolderBusy, match="in use"):
            with reproduce.run_lock(out):
                pass


def test_a_run_folder_name_that_is_not_utf8_is_refused_up_front(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--out", "runs/caf\udce9"])  # b"caf\xe9" as Python passes it
    assert "--out b'runs/caf\\xe9' is not valid UTF-8" in capsys.readouterr().err


def test_a_publication_refuses_chapters_left_from_a_run_with_other_settings(tmp_path, monkeypatch):
    """`--only 00,01`, then `--only 00 -p seed=1 --publish P`: chapter 01 ran at seed 0 and must not be published as
    part of a seed-1 run."""
    import subprocess

    from rcl.reproduce import publish

    checkout = tmp_path / "repo"
    checkout.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@e.org"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(checkout), *args], check=True)
    (checkout / "a.py").write_text("x = 1\n")
    subprocess.run(["git", "-C", str(checkout), "add", "a.py"], check=True)
    subprocess.run(["git", "-C", str(checkout), "commit", "-q", "-m", "one"], check=True)
    monkeypatch.setattr(runner, "project_root", lambda *_: checkout)
    folder = _course(tmp_path, "00_a", "01_b")
    _fake_papermill(monkeypatch, effect=_write_table)
    out = tmp_path / "run"
    _run(folder, out, only=["00", "01"])
    with pytest.raises(publish.NotPublishable, match=r"01_b.ipynb \(its settings changed\)"):
        _run(folder, out, only=["00"], extra={"seed": 1}, publish_to=tmp_path / "pub")
    assert not (tmp_path / "pub").exists()
    _run(folder, out, extra={"seed": 1}, publish_to=tmp_path / "pub")  # the whole course at seed 1: published
    assert json.loads((tmp_path / "pub" / "run.json").read_text())["seed"] == 1


@pytest.mark.slow
def test_a_double_ctrl_c_stops_promptly_and_quietly(tmp_path):
    """Ctrl-C twice while a chapter's kernel runs a cell: the runner says INTERRUPTED and exits within seconds,
    without the kernel's ZMQ traceback (it used to hang about 50 s and print one)."""
    import signal
    import subprocess
    import sys
    import time

    folder = _course(tmp_path, "00_a")
    _notebook(folder / "00_a.ipynb", "import time\ntime.sleep(60)", params=PARAMS)
    code = (
        "from pathlib import Path; from rcl import reproduce; "
        f"reproduce.main_run = reproduce.run('smoke', device='cpu', out={str(tmp_path / 'run')!r}, "
        f"notebook_dir=Path({str(folder)!r}))"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal, also under `&`
    )
    deadline = time.time() + 60
    while not list((tmp_path / "run" / "notebooks").glob("*.running.ipynb")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the kernel is in the sleeping cell
    runner.send_signal(signal.SIGINT)
    time.sleep(0.3)
    runner.send_signal(signal.SIGINT)
    start = time.time()
    out, err = runner.communicate(timeout=60)
    assert time.time() - start < 15, err
    assert "INTERRUPTED" in out + err
    assert "ZMQError" not in err and "Traceback" not in err, err


def test_a_lock_file_with_terminal_escapes_is_printed_escaped(tmp_path, capsys):
    """Someone else's run folder: its lock file sets the window title, clears the screen, writes the clipboard."""
    out = tmp_path / "run"
    out.mkdir()
    hostile = "\x1b]0;owned\x07\x1b[2J\x1b]52;c;ZWNobyBoaQ==\x07"
    holder = {"pid": 1, "host": "box", "started": "now", "command": hostile}
    (out / reproduce.LOCK_NAME).write_text(json.dumps(holder))
    with reproduce.run_lock(out):
        pass
    printed = capsys.readouterr().out
    assert "taking over the lock" in printed
    assert "\x1b" not in printed and "\x07" not in printed
    assert "\\x1b]0;owned\\x07\\x1b[2J" in printed


def test_a_chapter_folder_linked_to_another_folder_is_refused_by_name(tmp_path, monkeypatch):
    """00_setup/ -> the user's other folder: the chapter would overwrite its claims.json."""
    folder = _course(tmp_path, "00_setup")
    calls = _fake_papermill(monkeypatch, effect=_write_table)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "claims.json").write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / "00_setup").symlink_to(elsewhere)
    with pytest.raises(reproduce.ReproduceError, match=r"run folder .* holds symbolic links \(00_setup -> .*mine\)"):
        _run(folder, out)
    assert calls == [] and (elsewhere / "claims.json").read_text() == "precious"


@pytest.mark.parametrize("link", ["notebooks", ".rcl-reproduce.lock", "01_b/table.csv"])
def test_any_link_inside_the_run_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch, link):
    folder = _course(tmp_path, "00_a")
    _fake_papermill(monkeypatch, effect=_write_table)
    target = tmp_path / "target"
    target.mkdir()
    out = tmp_path / "run"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(target if link == "notebooks" else target / "file")
    with pytest.raises(reproduce.ReproduceError, match=f"holds symbolic links \\({link} -> "):
        _run(folder, out)
    assert list(target.iterdir()) == []


def test_a_chapter_folder_that_is_a_link_is_refused_by_the_chapter_itself(tmp_path):
    """A chapter run from JupyterLab, without the runner: ``cfg.chapter_dir`` refuses the link."""
    cfg = profiles.resolve("smoke", "synthetic", "cpu", run_dir=tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "06_cka").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="chapter folder .*06_cka is a symbolic link"):
        cfg.chapter_dir("06_cka")


def test_a_figure_saved_over_a_link_replaces_the_link_not_its_target(tmp_path):
    from rcl import plots

    private = tmp_path / "private.txt"
    private.write_text("keep")
    (tmp_path / "fig.png").symlink_to(private)
    plots.simclr_diagram(save=tmp_path / "fig.png")
    assert private.read_text() == "keep"
    assert not (tmp_path / "fig.png").is_symlink() and (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_file_names_from_a_run_folder_are_printed_escaped(tmp_path, monkeypatch):
    folder = _course(tmp_path, "00_a")
    name = "evil\x1b[2J.csv"

    def effect(nb, output, parameters):
        chapter = Path(parameters["run_dir"]) / "00_a"
        chapter.mkdir(parents=True, exist_ok=True)
        (chapter / name).write_text("a\n1\n")

    _fake_papermill(monkeypatch, effect=effect)
    out = tmp_path / "run"
    _run(folder, out)
    (out / "00_a" / name).unlink()
    executed = out / "notebooks" / "00_a.ipynb"
    parameters = json.loads(executed.read_text())["metadata"]["papermill"]["parameters"]
    reason = chapters.incomplete_reason(executed, parameters, out, folder / "00_a.ipynb")
    assert reason == "its outputs are missing (00_a/evil\\x1b[2J.csv)"


def test_editing_a_data_file_of_the_package_changes_the_code_version(tmp_path):
    """rcl/ghofrani_cka.json edited: chapter 06, which reads it, must not stay "complete"."""
    import shutil

    package = tmp_path / "rcl"
    shutil.copytree(Path(chapters.__file__).parents[1], package, ignore=shutil.ignore_patterns("__pycache__"))
    before = chapters.code_version(package)
    assert before == chapters.code_version()
    data = package / "ghofrani_cka.json"
    data.write_text(data.read_text().replace("0", "1", 1))
    edited = chapters.code_version(package)
    assert edited != before
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"compiled")  # compiled files are not the code
    assert chapters.code_version(package) == edited


def test_a_user_level_python3_kernel_from_another_environment_is_named_with_the_fix(tmp_path, monkeypatch):
    """R24: a ``python3`` kernelspec in the user's folder that starts another environment's Python wins over the
    project's; when a chapter's kernel dies, the runner names that kernel and says how to install the project's,
    instead of advising a smaller batch."""
    import json as jsonlib
    import sys

    from jupyter_client.kernelspec import KernelSpecManager

    data_dir = tmp_path / "jupyter"
    spec_dir = data_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    other = "/opt/another-env/bin/python3"
    spec = {
        "argv": [other, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "x",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(jsonlib.dumps(spec))
    monkeypatch.setattr(KernelSpecManager, "kernel_dirs", property(lambda self: [str(data_dir / "kernels")]))
    note = chapters.foreign_kernel()
    assert other in note and str(spec_dir) in note and f"{sys.executable} -m ipykernel install --sys-prefix" in note
    assert "batch_size" not in note
    spec["argv"][0] = sys.executable
    (spec_dir / "kernel.json").write_text(jsonlib.dumps(spec))
    assert chapters.foreign_kernel() == ""  # this environment's own kernel: nothing to say
