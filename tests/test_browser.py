"""Chapter 00 in a real browser: JupyterLab + headless Chromium, run all cells, move a widget slider.

Starts a private JupyterLab server (random token, free port, temporary config/runtime/data dirs, autosave
off), opens ``notebooks/00_setup_and_data.ipynb`` in Debian's Chromium driven by Playwright, runs every
cell from the Run menu, checks that the augmentation explorer rendered, presses an arrow key on its seed
slider and checks that the figure it shows changed. Screenshots land in ``runs/browser-artifacts/``
(git-ignored); with ``RCL_UPDATE_SCREENSHOTS=1`` the two used by the README are also copied to
``docs/img/``.

Needs ``/usr/bin/chromium`` (``tools/install_browser.sh``) and the ``playwright`` package (never
``playwright install``: its browser download does not work offline). Without them the test skips, except
with ``CI=true``, where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/00_setup_and_data.ipynb"
RUN_ALL = '.lm-Menu-item[data-command="runmenu:run-all"], .lm-Menu-item[data-command="notebook:run-all-cells"]'
# JupyterLab renders a traceback as stderr, like any stderr stream (the synthetic-data warning is one): tell
# them apart by IPython's traceback header. Wait until every code cell has run, or one has failed.
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
TRACEBACK = "Traceback (most recent call last)"
ALL_RAN_OR_FAILED = f"""() => {{
    const failed = [...document.querySelectorAll("{STDERR}")].some(e => e.textContent.includes("{TRACEBACK}"));
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
    return failed || (prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)));
}}"""
ARTIFACTS = ROOT / "runs" / "browser-artifacts"
DOCS_IMG = ROOT / "docs" / "img"
RUN_TIMEOUT_MS = 240_000  # all cells of chapter 00 on the smoke profile (about 20-40 s on 2 busy cores)


def _require_browser():
    """Playwright's sync API, or skip (fail under CI=true) naming what is missing and how to get it."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"no Chromium at {CHROMIUM} (run tools/install_browser.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright package is not installed (pip install -r requirements.txt)")
    if missing:
        reason = "browser test needs a browser: " + "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " -- CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_lab_settings(config_dir: Path) -> None:
    """User settings of the private server: no autosave (the committed notebook stays clean), no news."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "checkForUpdates": False,
            "fetchNews": "false",
        },
    }
    for relative, values in settings.items():
        path = config_dir / "lab" / "user-settings" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def jupyterlab(state_dir: Path):
    """A JupyterLab server on a free port with a random token; yields its base URL and token; stops it after."""
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR"):
        env[name] = str(state_dir / name.lower())
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    _write_lab_settings(Path(env["JUPYTER_CONFIG_DIR"]))
    log = open(state_dir / "jupyterlab.log", "wb")  # noqa: SIM115 - closed in finally
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--IdentityProvider.token={token}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={ROOT}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI runners often run as root
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {server.returncode}: {_tail(state_dir / 'jupyterlab.log')}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within 60 s: {_tail(state_dir / 'jupyterlab.log')}")
            time.sleep(0.3)
        yield base, token
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: it and its kernels
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)
        log.close()


def _tail(path: Path, n: int = 2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _output_png(page, explorer) -> str:
    """The ``src`` of the figure the explorer shows (a data: URL of the PNG)."""
    return explorer.locator(".widget-output img").first.get_attribute("src") or ""


def test_chapter_00_runs_in_jupyterlab_and_its_widget_reacts(tmp_path):
    sync_playwright = _require_browser()
    notebook_path = ROOT / NOTEBOOK
    committed = notebook_path.read_bytes()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="rcl-browser-"))
    try:
        with jupyterlab(state_dir) as (base, token), sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(state_dir / "chromium"),  # a throw-away profile: the test leaves no browser state
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = browser.pages[0] if browser.pages else browser.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}&reset")
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
                page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=120_000)

                page.keyboard.press("Control+b")  # close the file browser: more room for the chapter

                # Run > Run All Cells (JupyterLab 4.6: runmenu:run-all; older versions: notebook:run-all-cells)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(RUN_ALL).first.click()
                page.wait_for_function(ALL_RAN_OR_FAILED, timeout=RUN_TIMEOUT_MS)
                failed = page.locator(STDERR, has_text=TRACEBACK)
                assert failed.count() == 0, f"a cell of {NOTEBOOK} failed in JupyterLab:\n{failed.first.inner_text()}"

                # the augmentation explorer rendered: sliders and a figure
                explorer = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=page.locator(".widget-slider"))
                explorer.first.wait_for(state="visible")
                explorer = explorer.first
                sliders = explorer.locator(".widget-slider")
                assert sliders.count() == 5
                explorer.locator(".widget-output img").first.wait_for(state="visible")
                before = _output_png(page, explorer)
                assert before.startswith("data:image/png")
                shot_before = explorer.screenshot()

                # move the seed slider one step with the keyboard: the views are redrawn
                seed = sliders.filter(has_text="seed")
                seed.locator(".noUi-handle").focus()
                page.keyboard.press("ArrowRight")
                page.wait_for_function(
                    "([el, old]) => { const img = el.querySelector('.widget-output img');"
                    " return img && img.getAttribute('src') !== old; }",
                    arg=[explorer.element_handle(), before],
                    timeout=60_000,
                )
                assert seed.locator(".widget-readout").inner_text().strip() == "1"
                after = _output_png(page, explorer)
                assert after != before
                widget_png = ARTIFACTS / "widget.png"
                explorer.screenshot(path=str(widget_png))
                assert widget_png.read_bytes() != shot_before

                # the whole chapter: grow the window to the notebook's height and take one picture
                scroller = page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").first
                scroller.evaluate("el => el.scrollTo(0, 0)")
                height = scroller.evaluate("el => el.scrollHeight")
                page.set_viewport_size({"width": 1400, "height": min(height + 150, 16_000)})
                page.wait_for_timeout(1_000)  # let JupyterLab lay out the cells that just came into view
                chapter_png = ARTIFACTS / "chapter.png"
                page.screenshot(path=str(chapter_png))
            finally:
                browser.close()
        if os.environ.get("RCL_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chapter_png, DOCS_IMG / "chapter.png")
            shutil.copyfile(widget_png, DOCS_IMG / "widget.png")
    finally:
        if notebook_path.read_bytes() != committed:  # belt and braces: never leave outputs in the committed file
            notebook_path.write_bytes(committed)
        shutil.rmtree(state_dir, ignore_errors=True)
