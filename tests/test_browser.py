"""The widgets in a real JupyterLab, driven by headless Chromium.

Starts ``jupyter lab`` on 127.0.0.1 with a random token in a temporary folder holding a copy
of ``tests/notebooks/widgets_browser.ipynb``, opens it in Debian's Chromium through
Playwright, runs every cell from the Run menu, moves the controls the way a learner would and
checks what the page then shows. Screenshots go to ``test-artifacts/browser/`` (gitignored).

Needs a ``chromium`` executable (``make browser`` installs Debian's package when run as root);
skipped with the reason otherwise. Playwright's own browser downloads are never used.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

import tlkit
import tlkit.lessons

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "notebooks" / "widgets_browser.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # containers often have a tiny /dev/shm
BUDGET_S = 600          # the whole module, server start to last check
STEP_S = 150            # the longest any single wait may take (cell execution on 2 busy cores included)
ERROR_OUTPUT = ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"  # a cell's traceback

if CHROMIUM is None:
    pytest.skip("no chromium executable on PATH: install Debian's package (`make browser`, or "
                "`apt-get install chromium`) to run the JupyterLab browser test", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra (playwright) is not installed")
JUPYTER = Path(sys.executable).with_name("jupyter")
if not JUPYTER.exists():
    pytest.skip(f"no jupyter next to {sys.executable}: install the course extra (pip install -e '.[course]')",
                allow_module_level=True)

_deadline: float | None = None  # set when the server starts (not at collection: other tests run first)
_server_log: Path | None = None


def _ms() -> float:
    """Milliseconds a wait may take: at most STEP_S, and never past the module's budget."""
    left = (_deadline or time.monotonic() + BUDGET_S) - time.monotonic()
    if left <= 0:
        pytest.fail(f"the browser test ran past its budget of {BUDGET_S} s")
    return 1000 * min(STEP_S, left)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The learner's configuration, as `make lab` uses it (no news question, widget state saved,
# no instructor tools), plus: the notebook's kernel starts without a "Select Kernel" dialog.
CONFIG_PATH = os.pathsep.join(str(ROOT / "jupyter-config" / d) for d in ("learner", "common"))
STATE_NOTEBOOK = "widget_state.ipynb"
LESSON = ROOT / "course" / "source" / "00-welcome" / "00-welcome.ipynb"
_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"autoStartDefaultKernel": true}',
}


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port, serving a temporary copy of the test notebook."""
    global _deadline, _server_log
    _deadline = time.monotonic() + BUDGET_S
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    tlkit.lessons.write_lessons(root, lessons=[LESSON.parent.name])  # as `tlkit lessons` and `make lab` give it
    _write_state_notebook(root / STATE_NOTEBOOK)
    settings = root / ".settings"
    # A fresh settings folder (nothing of the user's), with the learner's course configuration.
    for name, text in _SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(text)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"), PYTHONUNBUFFERED="1", JUPYTER_CONFIG_PATH=CONFIG_PATH)
    cmd = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    _server_log = log_path = root / "jupyter.log"
    log = open(log_path, "w")
    # Its own process group, so that the kernel it starts can be ended with it if it hangs.
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                _ms()  # fails the test once the budget is spent
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "log": log_path}
    finally:
        server.terminate()  # jupyter shuts its kernel down on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def _wait_for_kernel(lab, page) -> None:
    """The status bar says "Idle" before the kernel is up: ask the server for the notebook's kernel."""
    url = f"{lab['base']}/api/sessions?token={lab['token']}"
    while not any(s["path"].endswith(NOTEBOOK.name) and s["kernel"]["execution_state"] == "idle"
                  for s in _get_json(url)):
        _ms()  # fails the test once the budget is spent
        page.wait_for_timeout(500)


@pytest.fixture(scope="module")
def browser(lab):
    """One headless Chromium for the module (Playwright's sync API allows one at a time)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(lab, browser):
    """The test notebook open in headless Chromium, with every cell run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = None
    try:
        page = browser.new_page(viewport={"width": 1360, "height": 1300})
        page.set_default_timeout(_ms())
        page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=_ms())
        _wait_for_kernel(lab, page)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached",
                               timeout=_ms())
        # Run > Run All Cells, as a learner would.
        page.click("div.lm-MenuBar-itemLabel:text-is('Run')", timeout=_ms())
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']", timeout=_ms())
        yield page
    except Exception:
        if page is not None:
            page.screenshot(path=str(ARTIFACTS / "setup-FAILED.png"), full_page=True)
        _print_server_log()
        raise
    finally:
        if page is not None:
            page.close()


def _print_server_log() -> None:
    if _server_log is not None and _server_log.exists():
        print(f"--- jupyter lab log (tail) ---\n{_server_log.read_text()[-4000:]}")


@contextmanager
def _screenshot_on_failure(page, name: str):
    """Keep a picture of the page, and show the server's log, when a check fails."""
    try:
        yield
    except BaseException:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}-FAILED.png"), full_page=True)
        except Exception:
            pass
        _print_server_log()
        raise


def _wait_for_widget(page, selector: str):
    """Wait until ``selector`` is on the page; fail with the cell's traceback if a cell raised instead."""
    page.wait_for_selector(f"{selector}, {ERROR_OUTPUT}", timeout=_ms())
    errors = page.locator(ERROR_OUTPUT)
    if errors.count():
        pytest.fail("a notebook cell raised:\n" + errors.first.inner_text())
    return page.locator(selector).first


def _shot(page, locator, name: str) -> None:
    locator.scroll_into_view_if_needed(timeout=_ms())
    locator.screenshot(path=str(ARTIFACTS / f"{name}.png"), timeout=_ms())
    page.screenshot(path=str(ARTIFACTS / f"{name}-page.png"))


def _expected_trainable(until: str) -> int:
    """What tlkit.trainable_summary reports for the notebook's model frozen at ``until``, computed here."""
    model = tlkit.load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
    tlkit.freeze(model, until=until)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_freeze_explorer_follows_the_dropdown_and_runs(page):
    with _screenshot_on_failure(page, "freeze_explorer"):
        _check_freeze_explorer(page)


def _check_freeze_explorer(page):
    explorer = _wait_for_widget(page, ".tlkit-freeze-explorer")
    headline = page.locator(".tlkit-freeze-headline")
    head_only = f"{_expected_trainable('head'):,} of"
    sync_api.expect(headline).to_contain_text(head_only, timeout=_ms())
    _shot(page, explorer, "freeze_explorer-head")

    # Move the freeze point: the trainable count and the shaded part of the diagram follow.
    page.locator(".tlkit-freeze-point select").select_option(label="blocks.5")
    blocks5 = f"{_expected_trainable('blocks.5'):,} of"
    assert blocks5 != head_only
    sync_api.expect(headline).to_contain_text(blocks5, timeout=_ms())
    stages = [s.name for s in tlkit.list_stages(tlkit.load_backbone("efficientnet_lite0", pretrained=False))]
    sync_api.expect(page.locator(".tlkit-stage[data-frozen='1']")).to_have_count(stages.index("blocks.5"),
                                                                                 timeout=_ms())
    sync_api.expect(page.locator(".tlkit-stage[data-frozen='0']")).to_have_count(
        len(stages) - stages.index("blocks.5"), timeout=_ms())

    # Run: trains in the kernel's background thread; the page gets the result and the chart.
    results = page.locator(".tlkit-freeze-results")
    sync_api.expect(results).to_contain_text("No runs yet", timeout=_ms())
    explorer.locator("button:has-text('Run')").click(timeout=_ms())
    sync_api.expect(page.locator(".tlkit-freeze-explorer .tlkit-status")).to_contain_text(
        re.compile(r"training from blocks\.5|blocks\.5: val accuracy"), timeout=_ms())
    sync_api.expect(results).to_contain_text(re.compile(r"blocks\.5\s+" + blocks5.split()[0]), timeout=_ms())
    sync_api.expect(page.locator(".tlkit-freeze-chart")).to_be_visible(timeout=_ms())
    sync_api.expect(explorer.locator("button:has-text('Run')")).to_be_enabled(timeout=_ms())
    _shot(page, explorer, "freeze_explorer-after-run")


def test_augmentation_explorer_follows_its_controls(page):
    with _screenshot_on_failure(page, "augmentation_explorer"):
        explorer = _wait_for_widget(page, ".tlkit-augmentation-explorer")
        code = page.locator(".tlkit-aug-code")
        grid = page.locator(".tlkit-aug-grid")
        sync_api.expect(code).to_contain_text("RandomResizedCrop(224, scale=(0.7, 1.0)", timeout=_ms())
        sync_api.expect(grid).to_be_visible(timeout=_ms())
        before = grid.get_attribute("src")
        # A preset from the dropdown: the code and the picture change.
        page.locator(".tlkit-aug-preset select").select_option(label="strong")
        sync_api.expect(code).to_contain_text("RandomGrayscale(p=0.1)", timeout=_ms())
        sync_api.expect(code).to_contain_text("scale=(0.1, 1.0)", timeout=_ms())
        page.wait_for_function("([el, old]) => el.src && el.src !== old", arg=[grid.element_handle(), before],
                               timeout=_ms())
        # A toggle: vertical flip joins the pipeline, and the preset becomes "custom".
        explorer.get_by_text("vertical flip").click(timeout=_ms())
        sync_api.expect(code).to_contain_text("RandomVerticalFlip(p=0.5)", timeout=_ms())
        sync_api.expect(page.locator(".tlkit-aug-preset select")).to_have_value(re.compile("custom|4"), timeout=_ms())
        _shot(page, explorer, "augmentation_explorer")


def test_advisor_widget_updates_the_advice_live(page):
    with _screenshot_on_failure(page, "advisor_widget"):
        widget = _wait_for_widget(page, ".tlkit-advisor-widget")
        card = page.locator(".tlkit-advisor-card")
        sync_api.expect(card).to_contain_text("feature extraction", timeout=_ms())
        # Different from ImageNet: the table's next column.
        widget.get_by_role("button", name="different").click(timeout=_ms())
        sync_api.expect(card).to_contain_text("early features", timeout=_ms())
        # The size slider, moved with the keyboard to its end (about 30,000 images per class): large data.
        handle = page.locator(".tlkit-advisor-size .noUi-handle")
        handle.focus(timeout=_ms())
        handle.press("End")
        sync_api.expect(card).to_contain_text("retrain all", timeout=_ms())
        _shot(page, widget, "advisor_widget")


def test_lr_explorer_runs_in_the_background_and_draws_curves(page):
    with _screenshot_on_failure(page, "lr_explorer"):
        explorer = _wait_for_widget(page, ".tlkit-lr-explorer")
        results = page.locator(".tlkit-lr-results")
        sync_api.expect(results).to_contain_text("No runs yet", timeout=_ms())
        explorer.locator("button:has-text('Run')").click(timeout=_ms())
        sync_api.expect(results).to_contain_text(re.compile(r"1e-3\s+1e-4\s+blocks\.6.*\s2\s"), timeout=_ms())
        sync_api.expect(page.locator(".tlkit-lr-curves")).to_be_visible(timeout=_ms())
        explorer.locator("button:has-text('lr_find')").click(timeout=_ms())
        sync_api.expect(page.locator(".tlkit-lr-finder")).to_be_visible(timeout=_ms())
        sync_api.expect(explorer.locator("button:has-text('use ')")).to_be_enabled(timeout=_ms())
        sync_api.expect(explorer.locator("button:has-text('Run')")).to_be_enabled(timeout=_ms())
        sync_api.expect(page.locator(".tlkit-lr-explorer .tlkit-status")).to_contain_text("suggested", timeout=_ms())
        # Figures drawn in the kernel's background thread stay inside the widget: none leaks into an output.
        assert page.locator(".jp-OutputArea-output[data-mime-type='image/png']").count() == 0
        _shot(page, explorer, "lr_explorer")


# ---------------------------------------------------------------------------
# The learner's JupyterLab: no instructor tools, clean lessons, widgets that reopen
# ---------------------------------------------------------------------------

def _write_state_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from tlkit import widgets\n"
        "aw = widgets.advisor_widget(per_class=100, num_classes=2, similarity='similar')\naw")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def fresh_page(lab, browser):
    """Another page of the same browser, for tests that open their own notebook."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    page.set_default_timeout(_ms())
    try:
        yield page
    finally:
        page.close()


def _open(lab, page, name: str) -> None:
    # Its own workspace: the first page's notebook (and its dialogs) do not come along.
    workspace = re.sub(r"\W", "-", Path(name).stem)
    page.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=_ms())
    url = f"{lab['base']}/api/sessions?token={lab['token']}"
    while not any(s["path"].endswith(name) and s["kernel"]["execution_state"] == "idle" for s in _get_json(url)):
        _ms()
        page.wait_for_timeout(500)


def _shutdown_kernels(lab) -> None:
    for s in _get_json(f"{lab['base']}/api/sessions?token={lab['token']}"):
        req = urllib.request.Request(f"{lab['base']}/api/sessions/{s['id']}?token={lab['token']}", method="DELETE")
        urllib.request.urlopen(req, timeout=30)


def test_learner_lab_shows_no_instructor_tools_and_no_unsaved_lesson(lab, fresh_page):
    page = fresh_page
    with _screenshot_on_failure(page, "learner_lab"):
        _open(lab, page, f"{LESSON.parent.name}/{LESSON.name}")
        config = json.loads(page.locator("#jupyter-config-data").text_content())
        for plugin in ("formgrader", "create-assignment", "course-list"):
            assert f"@jupyter/nbgrader:{plugin}" in config["disabledExtensions"]
        page.click("div.lm-MenuBar-itemLabel:text-is('Nbgrader')", timeout=_ms())
        menu = page.locator(".lm-Menu").last
        sync_api.expect(menu).to_contain_text("Assignment List", timeout=_ms())
        assert "Formgrader" not in menu.inner_text() and "Create Assignment" not in menu.inner_text()
        page.keyboard.press("Escape")
        assert page.locator("#create_assignment, .nbgrader-CreateAssignmentWidget").count() == 0
        assert urllib.request.urlopen(f"{lab['base']}/api/status?token={lab['token']}").status == 200
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{lab['base']}/formgrader?token={lab['token']}")
        # A lesson just opened, its kernel started, is not "modified" (no dot on its tab), and no
        # news question is shown.
        page.wait_for_timeout(1500)
        tab = page.locator(f".lm-TabBar-tab:has-text('{LESSON.name}')").first
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), "a freshly opened lesson shows unsaved changes"
        assert page.locator("text=official Jupyter news").count() == 0
        _shot(page, page.locator(".jp-NotebookPanel").first, "learner_lab")
        _shutdown_kernels(lab)


def test_a_saved_widget_reopens_after_the_kernel_is_gone(lab, fresh_page):
    page = fresh_page
    with _screenshot_on_failure(page, "widget_state"):
        _open(lab, page, STATE_NOTEBOOK)
        page.click("div.lm-MenuBar-itemLabel:text-is('Run')", timeout=_ms())
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']", timeout=_ms())
        _wait_for_widget(page, ".tlkit-advisor-widget")
        sync_api.expect(page.locator(".tlkit-advisor-card")).to_contain_text("feature extraction", timeout=_ms())
        page.keyboard.press("Control+s")
        saved = lab["root"] / STATE_NOTEBOOK
        deadline = time.monotonic() + 60
        while "widget-state+json" not in saved.read_text() and time.monotonic() < deadline:
            page.wait_for_timeout(300)
        assert "application/vnd.jupyter.widget-state+json" in saved.read_text(), "widget state was not saved"
        # Close everything: the kernel is gone, as when a learner comes back the next day.
        _shutdown_kernels(lab)
        page.reload()
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=_ms())
        sync_api.expect(page.locator(".tlkit-advisor-card").first).to_contain_text("feature extraction", timeout=_ms())
        assert page.locator("text=model not found").count() == 0
        _shot(page, page.locator(".jp-NotebookPanel").first, "widget_state-reopened")
