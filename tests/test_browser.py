"""The editor works in a real browser: JupyterLab + headless Chromium run notebook 06, a slider moves,
and the displayed image changes.

Chromium is Debian's (`scripts/install_browser.sh` installs it with apt-get when missing; Playwright
drives it through `executable_path`, no browser download). The notebook runs in its SMOKE setting from
a temporary folder, on the demo model when `checkpoints/synthscenes_clvae.pt` exists and otherwise on
an untrained one (the test checks the plumbing from slider to pixels, not image quality).
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from smis.utils import project_root

ROOT = project_root()
CHROMIUM = Path(os.environ.get("SMIS_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
pytestmark = pytest.mark.slow


def chromium() -> Path:
    """The system Chromium, installed with scripts/install_browser.sh when missing; skip only if that fails."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], check=False, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and scripts/install_browser.sh could not install it "
                    "(needs root and apt-get)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_copy(folder: Path) -> Path:
    """Notebook 06 with SMOKE parameters injected (as papermill would), written into `folder`."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    model = ROOT / "checkpoints" / "synthscenes_clvae.pt"
    params = {"SMOKE": True, "MODEL": str(model) if model.exists() else "", "BASELINE": "",
              "OUT_DIR": str(folder / "out")}
    nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / "06_interactive_editing.ipynb")), params)
    path = folder / "06_interactive_editing.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free localhost port with a random token, serving tmp_path."""
    port, token = free_port(), secrets.token_hex(16)
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath,
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("MPLBACKEND", None)                       # the kernel's inline backend shows the figures
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--ServerApp.port_retries=0",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, token, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_all_cells(page):
    """Run > Run All Cells once the kernel is idle; retried if no cell starts within a minute."""
    page.wait_for_selector("#jp-main-statusbar :text('Idle')", timeout=120_000)
    for attempt in range(3):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_selector(".jp-InputPrompt:text-matches('\\[(\\*|\\d+)\\]')", timeout=60_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start the notebook")


def test_slider_changes_the_displayed_image(jupyterlab):
    from playwright.sync_api import sync_playwright

    url, token, folder = jupyterlab
    browser_path = chromium()
    notebook_copy(folder)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(browser_path), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{url}/lab/tree/06_interactive_editing.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
            run_all_cells(page)
            # the last code cell prints "undone" once the notebook has run to the end
            page.wait_for_selector(".jp-OutputArea-output pre:has-text('undone')", timeout=300_000)
            stderr = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
            assert not page.locator(f"{stderr} :text('Traceback')").count()
            after = page.locator(".smis-editor img.smis-after").first
            after.wait_for(state="visible", timeout=60_000)
            after.scroll_into_view_if_needed()
            readout = page.locator(".smis-editor .smis-pc0 .widget-readout").first
            assert float(readout.inner_text()) == 0.0, "the editor should start with its sliders at 0"
            before_png, before_src = after.screenshot(), after.get_attribute("src")
            page.wait_for_timeout(1000)
            assert after.get_attribute("src") == before_src, "the image changes without any input"
            handle = page.locator(".smis-editor .smis-pc0 .noUi-handle").first
            handle.scroll_into_view_if_needed()
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            deadline = time.time() + 60
            while time.time() < deadline:                                 # the kernel renders, the front end shows it
                if after.get_attribute("src") != before_src and after.screenshot() != before_png:
                    break
                page.wait_for_timeout(250)
            value = readout.inner_text()
            assert float(value) > 0, f"the slider did not move (readout {value!r})"
            assert after.get_attribute("src") != before_src, "the after image was not replaced"
            assert after.screenshot() != before_png, "the displayed image did not change"
            assert not errors, f"page errors: {errors}"
        except BaseException:
            page.screenshot(path=str(folder / "failure.png"), full_page=True)
            log = (folder / "jupyterlab.log").read_text()[-3000:]
            print(f"screenshot: {folder / 'failure.png'}; JupyterLab log:\n" + log)
            raise
        finally:
            browser.close()
